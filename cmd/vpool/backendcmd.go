package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"vpool/objstore"

	"github.com/spf13/cobra"
)

// backendCalls registers the control calls on the backend: POST
// /backend/join and /backend/remove {"path": ASD}, /backend/pass {"kind"}.
func (s *controlServer) backendCalls(mux *http.ServeMux) {
	// asdCall is a call on one ASD: act on it, then start a pass of kind.
	asdCall := func(route, kind string, act func(path string) error) {
		mux.HandleFunc("POST "+route, func(w http.ResponseWriter, r *http.Request) {
			var req struct {
				Path string `json:"path"`
			}
			if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil || req.Path == "" {
				http.Error(w, `want {"path": "ASD directory"}`, http.StatusBadRequest)
				return
			}
			if s.e.be.ec == nil {
				http.Error(w, "the backend is "+s.e.be.kind+": it has no ASDs", http.StatusBadRequest)
				return
			}
			if err := act(req.Path); err != nil {
				http.Error(w, err.Error(), http.StatusConflict)
				return
			}
			s.log.Info("vpool: "+route, "asd", req.Path, "pass", kind)
			if err := s.e.be.healer.Start(kind); err != nil && !errors.Is(err, objstore.ErrPassRunning) {
				s.log.Warn("vpool: start a pass", "kind", kind, "err", err)
			}
			w.WriteHeader(http.StatusOK)
		})
	}
	// a joined ASD gets its share of the fragments; a draining one gives
	// its fragments away (any pass moves them)
	asdCall("/backend/join", objstore.PassRebalance, func(p string) error { return s.e.be.ec.Join(p) })
	asdCall("/backend/remove", objstore.PassRepair, func(p string) error { return s.e.be.ec.Drain(p) })
	mux.HandleFunc("POST /backend/pass", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Kind string `json:"kind"`
		}
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil {
			http.Error(w, `want {"kind": "repair" or "verify"}`, http.StatusBadRequest)
			return
		}
		if s.e.be.healer == nil {
			http.Error(w, "the backend is "+s.e.be.kind+": it protects its objects itself (no repair or verify here)", http.StatusBadRequest)
			return
		}
		if err := s.e.be.healer.Start(req.Kind); err != nil {
			http.Error(w, err.Error(), http.StatusConflict)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
}

// passCmd starts a repair or verify pass and shows its progress until it
// ends (or only starts it: --no-wait).
func passCmd(kind, short string, dataDir func() string) *cobra.Command {
	var noWait bool
	cmd := &cobra.Command{
		Use:   kind,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			resp, err := controlCall(dataDir(), "POST", "/backend/pass", map[string]string{"kind": kind}, time.Minute)
			if err != nil {
				return fmt.Errorf("%s: %w", kind, err)
			}
			resp.Body.Close()
			if noWait {
				fmt.Fprintf(out, "%s pass started; vpool status shows its progress\n", kind)
				return nil
			}
			return waitPass(out, dataDir(), kind, time.Now().UTC())
		},
	}
	cmd.Flags().BoolVar(&noWait, "no-wait", false, "start the pass and return")
	return cmd
}

// waitPass shows the progress of the pass of kind started at started
// until it ends; kind "": the first pass of any kind that ends after
// started (one running already drains too).
func waitPass(out io.Writer, dataDir, kind string, started time.Time) error {
	for {
		time.Sleep(500 * time.Millisecond)
		st, err := getStatus(dataDir)
		if err != nil {
			return err
		}
		b := st.Backend
		if b.Pass != nil && (kind == "" || b.Pass.Kind == kind) {
			fmt.Fprintf(out, "\r%s   ", progressBar(b.Pass))
			continue
		}
		if l := b.LastPass; l != nil && (kind == "" && l.Finished.After(started) || l.Kind == kind && !l.Started.Before(started.Add(-time.Second))) {
			fmt.Fprintf(out, "\r%s\n%s\n", progressBar(l), passLine(l))
			if l.Error != "" || l.Unrepairable > 0 {
				return fmt.Errorf("%s: %d objects could not be made whole%s", kind, l.Unrepairable, errSuffix(l.Error))
			}
			return nil
		}
	}
}

// progressBar draws a pass's progress on one line.
func progressBar(p *objstore.PassStatus) string {
	const width = 30
	frac := 1.0
	if p.Objects > 0 {
		frac = float64(p.Checked) / float64(p.Objects)
	}
	n := int(frac * width)
	return fmt.Sprintf("[%s%s] %3.0f%% %d/%d objects, %d repaired, %s/s, ETA %s",
		strings.Repeat("#", n), strings.Repeat(".", width-n), 100*frac, p.Checked, p.Objects, p.Repaired,
		human(int64(p.Rate())), p.ETA().Round(time.Second))
}

func backendCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "backend", Short: "the backend: its ASDs and their state"}
	dataDir := func() string {
		if g.dataDir != "" {
			return g.dataDir
		}
		return DefaultDataDir
	}
	cmd.AddCommand(passCmd(objstore.PassRepair, "rebuild the fragments the backend lacks (lost or replaced ASDs) now, with a progress bar", dataDir),
		passCmd(objstore.PassVerify, "read every fragment and check its CRCs now, rewriting the bad ones from parity", dataDir),
		passCmd(objstore.PassRebalance, "even out the fragments over the ASDs (after one was added), repairing what lacks", dataDir),
		asdCmd("remove", "drain an ASD: no new fragments go there, and its fragments move to the others (with a progress bar)",
			"remove marks ASD draining (kept across restarts) and runs a pass that moves every fragment it holds to\n"+
				"the other ASDs. Once it holds none, take it out of backend.asds. It is refused when fewer than k+m\n"+
				"writable ASDs would be left. `vpool backend join ASD` takes a draining ASD back.",
			"%s is drained: take it out of backend.asds\n", dataDir),
		asdCmd("join", "make a directory of backend.asds (a replaced or added disk, mounted and empty) an ASD of this pool",
			"join writes the pool's identity into ASD, which must be listed in backend.asds and hold no objects,\n"+
				"and runs a rebalance pass that moves its share of the fragments onto it. Until then, a directory\n"+
				"without the identity is never written to: an empty mount point whose disk is not mounted must not\n"+
				"take fragments.",
			"%s joined the pool: new fragments go there\n", dataDir),
		&cobra.Command{
			Use:   "status",
			Short: "show the backend and each ASD's state (ok, missing, foreign, failing, full, draining), capacity and fragments",
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				st, err := getStatus(dataDir())
				if err != nil {
					return err
				}
				printBackendDetail(cmd.OutOrStdout(), st)
				return nil
			},
		})
	return cmd
}

// asdCmd is `vpool backend VERB ASD`: the control call /backend/VERB, then
// the progress of the pass it starts until it ends.
func asdCmd(verb, short, long, done string, dataDir func() string) *cobra.Command {
	return &cobra.Command{
		Use:   verb + " ASD",
		Short: short,
		Long:  long,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := filepath.Abs(args[0])
			if err != nil {
				return err
			}
			started := time.Now().UTC()
			resp, err := controlCall(dataDir(), "POST", "/backend/"+verb, map[string]string{"path": p}, time.Minute)
			if err != nil {
				return fmt.Errorf("%s %s: %w", verb, p, err)
			}
			resp.Body.Close()
			if err := waitPass(cmd.OutOrStdout(), dataDir(), "", started); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), done, p)
			return nil
		},
	}
}

func printBackendDetail(w io.Writer, st *Status) {
	printBackend(w, st)
	b := st.Backend
	if b == nil || len(b.ASDs) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ASD\tSTATE\tSINCE\tFREE\tSIZE\tFRAGMENTS\tWHY")
	for _, a := range b.ASDs {
		held := "?" // counted by passes
		if l := b.LastPass; l != nil {
			held = strconv.FormatInt(l.Held[a.Path], 10)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.Path, a.State, a.Since.Local().Format(time.DateTime),
			human(int64(a.FreeBytes)), human(int64(a.TotalBytes)), held, a.Detail)
	}
	if l := b.LastPass; l != nil {
		fmt.Fprintf(tw, "(fragments as counted by the last %s pass, %s ago; %d objects it could not make whole)\n",
			l.Kind, time.Since(l.Finished).Round(time.Second), l.Unrepairable)
	}
	tw.Flush()
}
