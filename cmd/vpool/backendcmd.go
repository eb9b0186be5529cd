package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"
	"vpool/objstore"

	"github.com/spf13/cobra"
)

// backendCalls registers the control calls on the backend: POST
// /backend/join {"path": ASD}.
func (s *controlServer) backendCalls(mux *http.ServeMux) {
	mux.HandleFunc("POST /backend/join", func(w http.ResponseWriter, r *http.Request) {
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
		if err := s.e.be.ec.Join(req.Path); err != nil {
			http.Error(w, err.Error(), http.StatusConflict)
			return
		}
		s.log.Info("vpool: ASD joined; a repair pass rebuilds fragments onto it", "asd", req.Path)
		if err := s.e.be.healer.Start(objstore.PassRepair); err != nil && !errors.Is(err, objstore.ErrPassRunning) {
			s.log.Warn("vpool: start a repair pass", "err", err)
		}
		w.WriteHeader(http.StatusOK)
	})
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
			started := time.Now().UTC()
			if noWait {
				fmt.Fprintf(out, "%s pass started; vpool status shows its progress\n", kind)
				return nil
			}
			for {
				time.Sleep(500 * time.Millisecond)
				st, err := getStatus(dataDir())
				if err != nil {
					return err
				}
				b := st.Backend
				if b.Pass != nil && b.Pass.Kind == kind {
					fmt.Fprintf(out, "\r%s   ", progressBar(b.Pass))
					continue
				}
				if l := b.LastPass; l != nil && l.Kind == kind && !l.Started.Before(started.Add(-time.Second)) {
					fmt.Fprintf(out, "\r%s\n%s\n", progressBar(l), passLine(l))
					if l.Error != "" || l.Unrepairable > 0 {
						return fmt.Errorf("%s: %d objects could not be made whole%s", kind, l.Unrepairable, errSuffix(l.Error))
					}
					return nil
				}
			}
		},
	}
	cmd.Flags().BoolVar(&noWait, "no-wait", false, "start the pass and return")
	return cmd
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
		passCmd(objstore.PassVerify, "read every fragment and check its CRCs now, rewriting the bad ones from parity", dataDir))
	cmd.AddCommand(&cobra.Command{
		Use:   "status",
		Short: "show the backend and each ASD's state (ok, missing, foreign, failing, full) and capacity",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := getStatus(dataDir())
			if err != nil {
				return err
			}
			printBackendDetail(cmd.OutOrStdout(), st)
			return nil
		},
	}, &cobra.Command{
		Use:   "join ASD",
		Short: "make a directory of backend.asds (a replaced disk, mounted and empty) an ASD of this pool",
		Long: "join writes the pool's identity into ASD, which must be listed in backend.asds and hold no objects.\n" +
			"Until then, a directory without the identity is never written to: an empty mount point whose disk\n" +
			"is not mounted must not take fragments.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := filepath.Abs(args[0])
			if err != nil {
				return err
			}
			resp, err := controlCall(dataDir(), "POST", "/backend/join", map[string]string{"path": p}, time.Minute)
			if err != nil {
				return fmt.Errorf("join %s: %w", p, err)
			}
			resp.Body.Close()
			fmt.Fprintf(cmd.OutOrStdout(), "%s joined the pool: new fragments go there\n", p)
			return nil
		},
	})
	return cmd
}

func printBackendDetail(w io.Writer, st *Status) {
	printBackend(w, st)
	b := st.Backend
	if b == nil || len(b.ASDs) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ASD\tSTATE\tSINCE\tFREE\tSIZE\tWHY")
	for _, a := range b.ASDs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", a.Path, a.State, a.Since.Local().Format(time.DateTime),
			human(int64(a.FreeBytes)), human(int64(a.TotalBytes)), a.Detail)
	}
	tw.Flush()
}
