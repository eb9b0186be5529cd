package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"text/tabwriter"
	"time"

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
		s.log.Info("vpool: ASD joined", "asd", req.Path)
		w.WriteHeader(http.StatusOK)
	})
}

func backendCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "backend", Short: "the backend: its ASDs and their state"}
	dataDir := func() string {
		if g.dataDir != "" {
			return g.dataDir
		}
		return DefaultDataDir
	}
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
