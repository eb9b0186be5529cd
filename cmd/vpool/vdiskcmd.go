package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"vpool/volume"
)

// vdiskRequest is the body of every control call about one vDisk.
type vdiskRequest struct {
	Path string `json:"path"`
	Name string `json:"name,omitempty"`
	Dest string `json:"dest,omitempty"` // clone: the new vDisk's path
}

// vdiskCalls registers the control calls that act on one vDisk, named by
// its path: POST /template, /snapshot/create, /snapshot/list and
// /snapshot/delete.
func (s *controlServer) vdiskCalls(mux *http.ServeMux) {
	type call func(ctx context.Context, v *volume.VDisk, req vdiskRequest) (any, error)
	handle := func(route string, fn call) {
		mux.HandleFunc("POST "+route, func(w http.ResponseWriter, r *http.Request) {
			req, v, ok := s.vdiskOf(w, r, false)
			if !ok {
				return
			}
			out, err := fn(r.Context(), v, req)
			if err != nil {
				http.Error(w, fmt.Sprintf("%s: %v", req.Path, err), httpStatus(err))
				return
			}
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(out)
		})
	}
	handle("/template", func(ctx context.Context, v *volume.VDisk, req vdiskRequest) (any, error) {
		if err := v.SetTemplate(ctx); err != nil {
			return nil, err
		}
		s.log.Info("vpool: vDisk is now a template", "path", req.Path, "vdisk", volume.FormatID(v.ID()))
		return map[string]string{"path": req.Path, "vdisk": volume.FormatID(v.ID())}, nil
	})
	handle("/snapshot/create", func(ctx context.Context, v *volume.VDisk, req vdiskRequest) (any, error) {
		return s.e.ns.CreateSnapshot(ctx, s.vpoolPath(req.Path), req.Name)
	})
	handle("/snapshot/list", func(ctx context.Context, v *volume.VDisk, req vdiskRequest) (any, error) {
		return v.Snapshots(), nil
	})
	handle("/snapshot/delete", func(ctx context.Context, v *volume.VDisk, req vdiskRequest) (any, error) {
		defer s.recount()
		return struct{}{}, v.DeleteSnapshot(ctx, req.Name)
	})
	handle("/clone", func(ctx context.Context, v *volume.VDisk, req vdiskRequest) (any, error) {
		start := time.Now()
		a, err := s.e.ns.Clone(ctx, s.vpoolPath(req.Path), req.Name, s.vpoolPath(req.Dest))
		if err != nil {
			return nil, err
		}
		s.log.Info("vpool: clone created", "from", req.Path, "snapshot", req.Name, "path", req.Dest, "took", time.Since(start))
		return map[string]any{"path": req.Dest, "vdisk": volume.FormatID(a.VDisk), "size": a.Size}, nil
	})
	mux.HandleFunc("POST /scrub", func(w http.ResponseWriter, r *http.Request) {
		_, v, ok := s.vdiskOf(w, r, true) // no path: every vDisk
		if !ok {
			return
		}
		var only uint64
		if v != nil {
			only = v.ID()
		}
		res, err := s.runScrub(r.Context(), only, true)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(res)
	})
	// Flatten streams its progress: lines "progress DONE TOTAL", then
	// "done" or "error: ...".
	mux.HandleFunc("POST /clone/flatten", func(w http.ResponseWriter, r *http.Request) {
		req, v, ok := s.vdiskOf(w, r, false)
		if !ok {
			return
		}
		if p, _ := v.Parent(); p == nil {
			http.Error(w, req.Path+": not a clone", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		fl, _ := w.(http.Flusher)
		last := time.Time{}
		start := time.Now()
		defer s.recount()
		err := v.Flatten(r.Context(), func(done, total int) {
			if time.Since(last) < time.Second && done != total {
				return
			}
			last = time.Now()
			fmt.Fprintf(w, "progress %d %d\n", done, total)
			if fl != nil {
				fl.Flush()
			}
			s.log.Info("vpool: flattening", "path", req.Path, "pages", done, "of", total)
		})
		if err != nil {
			fmt.Fprintf(w, "error: %s: %v\n", req.Path, err)
			return
		}
		s.log.Info("vpool: clone flattened", "path", req.Path, "took", time.Since(start).Round(time.Millisecond))
		fmt.Fprintln(w, "done")
	})
	handle("/snapshot/rollback", func(ctx context.Context, v *volume.VDisk, req vdiskRequest) (any, error) {
		if s.nfs != nil {
			s.nfs.ReleaseIdleFiles() // NFS keeps files open between calls
		}
		defer s.recount()
		if err := s.e.ns.Rollback(ctx, s.vpoolPath(req.Path), req.Name); err != nil {
			return nil, err
		}
		s.log.Info("vpool: vDisk rolled back", "path", req.Path, "snapshot", req.Name)
		return struct{}{}, nil
	})
}

// ScrubStatus is the newest scrub pass, for status and metrics.
type ScrubStatus struct {
	At time.Time `json:"at"`
	volume.ScrubResult
	Error string `json:"error,omitempty"`
}

// runScrub runs one pass (of one vDisk's SCOs when only != 0).
func (s *controlServer) runScrub(ctx context.Context, only uint64, wait bool) (volume.ScrubResult, error) {
	start := time.Now()
	res, err := s.e.pool.Scrub(ctx, volume.ScrubOptions{Only: only, Pace: s.c.Scrub.Pace, Threshold: s.c.Scrub.Threshold, Wait: wait, Rate: int64(s.c.Scrub.Rate)})
	st := &ScrubStatus{At: time.Now(), ScrubResult: res}
	if err != nil {
		st.Error = err.Error()
	}
	s.scrub.Store(st)
	if err == nil {
		s.storeReclaim(start, res)
	}
	return res, err
}

// ReclaimStatus is the newest count of the garbage on the backend: what
// scrubs would free.
type ReclaimStatus struct {
	At         time.Time        `json:"at"` // when the count started: it shows the vDisks as they were then
	Bytes      int64            `json:"bytes"`
	PartlyLive int64            `json:"partly_live_bytes"` // of Bytes: in SCOs still partly live
	ByVDisk    map[string]int64 `json:"by_vdisk,omitempty"`
}

// storeReclaim keeps the count that started at start unless a count that
// started later is already kept (counts and scrubs can overlap).
func (s *controlServer) storeReclaim(start time.Time, res volume.ScrubResult) {
	r := &ReclaimStatus{At: start, Bytes: res.ReclaimableBytes, PartlyLive: res.GarbageBytes, ByVDisk: res.Reclaimable}
	for {
		old := s.reclaim.Load()
		if old != nil && old.At.After(start) || s.reclaim.CompareAndSwap(old, r) {
			return
		}
	}
}

// recount asks the reclaim counter for a count soon.
func (s *controlServer) recount() {
	select {
	case s.recountCh <- struct{}{}:
	default:
	}
}

// reclaimCounter keeps the reclaimable bytes in status current without
// a scrub: it counts (a dry-run scrub pass, paced like one) a few seconds
// after a snapshot delete, rollback or flatten, and while the vDisks
// change (uploads, snapshots, vDisks created or deleted) at most every
// 10 s or 4 times as long as the last count took, whichever is longer:
// paced at scrub.pace (0.25), counting then works at most 5% of the time.
func (s *controlServer) reclaimCounter(ctx context.Context) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	var seen string
	var last time.Time
	gap := 10 * time.Second
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.recountCh:
			select { // let a burst of deletes settle
			case <-time.After(2 * time.Second):
			case <-ctx.Done():
				return
			}
		case <-t.C:
			if f := s.fingerprint(); f == seen || time.Since(last) < gap {
				continue
			}
		}
		seen, last = s.fingerprint(), time.Now()
		res, err := s.e.pool.Scrub(ctx, volume.ScrubOptions{DryRun: true, Pace: s.c.Scrub.Pace})
		gap = max(10*time.Second, 4*time.Since(last))
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("vpool: counting reclaimable bytes", "err", err)
			}
			continue
		}
		s.storeReclaim(last, res) // last: when this count started
	}
}

// fingerprint changes when the vDisks change in a way that may make
// garbage on the backend.
func (s *controlServer) fingerprint() string {
	var b strings.Builder
	for _, id := range s.e.pool.List() {
		if v, err := s.e.pool.VDisk(id); err == nil {
			st := v.Stats()
			fmt.Fprintf(&b, "%s:%d:%d:%d;", st.ID, st.UploadedThrough, st.Snapshots, st.AllocatedBytes)
		}
	}
	return b.String()
}

// scrubber runs a scrub pass every interval until ctx ends.
func (s *controlServer) scrubber(ctx context.Context, interval time.Duration) {
	every(ctx, interval, func() {
		if _, err := s.runScrub(ctx, 0, false); err != nil && ctx.Err() == nil {
			s.log.Error("vpool: background scrub", "err", err)
		}
	})
}

func scrubCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "scrub [PATH]",
		Short: "free the backend space nothing reads any more (of one vDisk, or all), now",
		Long: "scrub deletes the SCOs that no vDisk, snapshot or clone reads any more: garbage from overwrites,\n" +
			"discards, deleted snapshots and rolled-back history. SCOs less live than scrub.threshold are\n" +
			"compacted: their live data is written again and they are freed once that is on the backend.\n" +
			"A background scrubber runs every scrub.interval.",
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := vdiskRequest{}
			if len(args) == 1 {
				req.Path = args[0]
			}
			dir := g.dataDir
			if dir == "" {
				dir = DefaultDataDir
			}
			if req.Path != "" {
				req.Path = cliPath(req.Path)
			}
			resp, err := controlCall(dir, "POST", "/scrub", req, time.Hour)
			if err != nil {
				return fmt.Errorf("scrub: %w", err)
			}
			defer resp.Body.Close()
			var res volume.ScrubResult
			if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
				return fmt.Errorf("scrub: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "scrubbed %d SCOs in %s: %d freed (%s reclaimed), %d rewritten; %d partly garbage left (%s, above scrub.threshold)\n",
				res.SCOsScanned, res.Took.Round(time.Millisecond), res.SCOsDeleted, human(res.BytesFreed), res.SCOsRewritten, res.PartlyLive, human(res.GarbageBytes))
			if res.Waiting > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "%d vDisks have garbage made by writes not on the backend yet: the next pass frees it once they are\n", res.Waiting)
			}
			return nil
		},
	}
}

// vdiskOf reads a control call's request and finds the vDisk it names;
// with optional, a request without a path is fine (v is nil). When it
// returns false it has answered the call.
func (s *controlServer) vdiskOf(w http.ResponseWriter, r *http.Request, optional bool) (vdiskRequest, *volume.VDisk, bool) {
	var req vdiskRequest
	err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req)
	if optional && req.Path == "" {
		return req, nil, true
	}
	if err != nil || req.Path == "" {
		http.Error(w, `want {"path": "...", "name": "..."}`, http.StatusBadRequest)
		return req, nil, false
	}
	if s.e.ns == nil {
		http.Error(w, "the namespace is not open yet", http.StatusServiceUnavailable)
		return req, nil, false
	}
	v, err := s.e.ns.VDiskOf(r.Context(), s.vpoolPath(req.Path))
	if err != nil {
		http.Error(w, err.Error(), httpStatus(err))
		return req, nil, false
	}
	return req, v, true
}

func httpStatus(err error) int {
	switch {
	case errors.Is(err, volume.ErrNoSnapshot), errors.Is(err, volume.ErrNotFound), errors.Is(err, os.ErrNotExist):
		return http.StatusNotFound
	case errors.Is(err, volume.ErrExists), errors.Is(err, volume.ErrBusy):
		return http.StatusConflict
	case errors.Is(err, volume.ErrBadName), errors.Is(err, volume.ErrReadOnly), errors.Is(err, volume.ErrBadConfig):
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}

// cliPath is a path for the daemon: one that exists here (or whose
// directory does) is made absolute, so that the daemon can strip its
// mountpoint; anything else is taken from the vPool's root.
func cliPath(p string) string {
	if _, err := os.Stat(filepath.Dir(p)); err == nil && (filepath.IsAbs(p) || strings.HasPrefix(p, ".")) {
		if abs, err := filepath.Abs(p); err == nil {
			return abs
		}
	}
	if _, err := os.Stat(p); err == nil {
		if abs, err := filepath.Abs(p); err == nil {
			return abs
		}
	}
	return p
}

// vdiskCall sends a control call about the vDisk at path (in the vPool's
// tree, or under its mountpoint) and decodes the answer into out.
func (g *globalFlags) vdiskCall(route string, req vdiskRequest, timeout time.Duration, out any) error {
	req.Path = cliPath(req.Path)
	if req.Dest != "" {
		req.Dest = cliPath(req.Dest)
	}
	dir := g.dataDir
	if dir == "" {
		dir = DefaultDataDir
	}
	resp, err := controlCall(dir, "POST", route, req, timeout)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

func templateCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "template", Short: "read-only template vDisks (the base of clones)"}
	cmd.AddCommand(&cobra.Command{
		Use:   "set PATH",
		Short: "make a vDisk a read-only template, for good",
		Long: "set makes the vDisk at PATH (in the vPool's tree, or under its mountpoint) a template: writes,\n" +
			"discards and resizes fail with EROFS through FUSE and NFS from then on; reads go on.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := g.vdiskCall("/template", vdiskRequest{Path: args[0]}, time.Minute, nil); err != nil {
				return fmt.Errorf("template set: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s is a template\n", args[0])
			return nil
		},
	})
	return cmd
}

func snapshotCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "snapshot", Short: "point-in-time snapshots of vDisks",
		Long: "Snapshots are instant, crash-consistent and copy nothing. A vDisk's snapshots are readable as\n" +
			"files under <mountpoint>/.snapshots/<path of the vDisk>/<name>."}
	create := &cobra.Command{
		Use:   "create PATH [NAME]",
		Short: "take a snapshot of the vDisk at PATH (NAME defaults to the UTC time)",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := ""
			if len(args) == 2 {
				name = args[1]
			}
			var info volume.SnapshotInfo
			if err := g.vdiskCall("/snapshot/create", vdiskRequest{Path: args[0], Name: name}, time.Minute, &info); err != nil {
				return fmt.Errorf("snapshot create: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s@%s\n", args[0], info.Name)
			return nil
		},
	}
	var asJSON bool
	list := &cobra.Command{
		Use:   "list PATH",
		Short: "list the snapshots of the vDisk at PATH, oldest first",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var snaps []volume.SnapshotInfo
			if err := g.vdiskCall("/snapshot/list", vdiskRequest{Path: args[0]}, 10*time.Second, &snaps); err != nil {
				return fmt.Errorf("snapshot list: %w", err)
			}
			w := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				return enc.Encode(snaps)
			}
			tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tCREATED\tSIZE\tWRITTEN\tON BACKEND")
			for _, s := range snaps {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.Name, s.Created.Local().Format(time.DateTime), human(s.Size), human(s.Written), yesNo(s.OnBackend))
			}
			tw.Flush()
			if len(snaps) == 0 {
				fmt.Fprintln(w, "(no snapshots)")
			}
			return nil
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	del := &cobra.Command{
		Use:   "delete PATH NAME",
		Short: "delete a snapshot (its space comes back at the next scrub)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := g.vdiskCall("/snapshot/delete", vdiskRequest{Path: args[0], Name: args[1]}, 10*time.Minute, nil); err != nil {
				return fmt.Errorf("snapshot delete: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deleted %s@%s\n", args[0], args[1])
			return nil
		},
	}
	rollback := &cobra.Command{
		Use:   "rollback PATH NAME",
		Short: "make the vDisk what snapshot NAME holds again; later snapshots are deleted",
		Long: "rollback restores the vDisk at PATH to snapshot NAME. It is refused while the vDisk is open for\n" +
			"writing (stop the VM first). The snapshots taken after NAME are deleted.",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := g.vdiskCall("/snapshot/rollback", vdiskRequest{Path: args[0], Name: args[1]}, 30*time.Minute, nil); err != nil {
				return fmt.Errorf("snapshot rollback: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "rolled %s back to %s\n", args[0], args[1])
			return nil
		},
	}
	cmd.AddCommand(create, list, del, rollback)
	return cmd
}

func cloneCmd(g *globalFlags) *cobra.Command {
	flatten := &cobra.Command{
		Use:   "flatten PATH",
		Short: "copy into a clone everything it still reads from its parent, so that it stands alone",
		Long: "flatten runs while the clone is in use and shows its progress. Interrupted, it resumes where it\n" +
			"stopped when run again. A clone with snapshots cannot be flattened (delete them first).",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := g.dataDir
			if dir == "" {
				dir = DefaultDataDir
			}
			resp, err := controlCall(dir, "POST", "/clone/flatten", vdiskRequest{Path: cliPath(args[0])}, 24*time.Hour)
			if err != nil {
				return fmt.Errorf("clone flatten: %w", err)
			}
			defer resp.Body.Close()
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				line := sc.Text()
				var done, total int
				switch {
				case line == "done":
					fmt.Fprintf(cmd.OutOrStdout(), "%s is flattened: it no longer depends on its parent\n", args[0])
					return nil
				case strings.HasPrefix(line, "error: "):
					return fmt.Errorf("clone flatten: %s", strings.TrimPrefix(line, "error: "))
				default:
					if _, err := fmt.Sscanf(line, "progress %d %d", &done, &total); err == nil && total > 0 {
						fmt.Fprintf(cmd.ErrOrStderr(), "flatten %s: %d of %d block-map pages (%.0f%%)\n", args[0], done, total, 100*float64(done)/float64(total))
					}
				}
			}
			return fmt.Errorf("clone flatten: the daemon stopped answering (run it again to resume): %v", sc.Err())
		},
	}
	cmd := &cobra.Command{
		Use:   "clone PATH@SNAPSHOT NEWPATH",
		Short: "make a new vDisk that starts as a snapshot (or a template: PATH alone) and then goes its own way",
		Long: "clone creates NEWPATH (any directory of the vPool; a name with a vDisk suffix) reading as\n" +
			"snapshot SNAPSHOT of the vDisk at PATH, sharing its data: nothing is copied, and writes to either\n" +
			"never show in the other. A template (vpool template set) is cloned without a snapshot name.",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			src, name := args[0], ""
			if i := strings.LastIndex(src, "@"); i >= 0 {
				src, name = src[:i], src[i+1:]
			}
			var out struct {
				VDisk string `json:"vdisk"`
			}
			if err := g.vdiskCall("/clone", vdiskRequest{Path: src, Name: name, Dest: args[1]}, time.Minute, &out); err != nil {
				return fmt.Errorf("clone: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s is a clone of %s (vDisk %s)\n", args[1], args[0], out.VDisk)
			return nil
		},
	}
	cmd.AddCommand(flatten)
	return cmd
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
