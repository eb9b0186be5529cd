package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"vpool/dtl"
	"vpool/vfs"
	"vpool/volume"
)

// DTLConfig is the DTL's part: where this host's vDisks ship their
// writes (peers), and whether this host holds DTLs for others (listen).
type DTLConfig struct {
	Mode   string    `mapstructure:"mode"`    // none, async or sync: vDisks without their own
	Peers  []string  `mapstructure:"peers"`   // host:port of DTL servers; empty: no DTL
	Listen string    `mapstructure:"listen"`  // host:port to serve DTLs on; "" or "off": none
	Dir    string    `mapstructure:"dir"`     // where a DTL server keeps entries; "": <data_dir>/dtl
	OnLoss string    `mapstructure:"on_loss"` // degrade or block
	TLS    TLSConfig `mapstructure:"tls"`
}

// TLSConfig names PEM files; with all three set, DTL traffic is TLS with
// mutual authentication: each side presents a certificate signed by CA.
type TLSConfig struct {
	CA   string `mapstructure:"ca"`
	Cert string `mapstructure:"cert"`
	Key  string `mapstructure:"key"`
}

func dtlDefaults() map[string]any {
	return map[string]any{
		"dtl.mode":     "sync",
		"dtl.peers":    []string{},
		"dtl.listen":   "",
		"dtl.dir":      "",
		"dtl.on_loss":  "degrade",
		"dtl.tls.ca":   "",
		"dtl.tls.cert": "",
		"dtl.tls.key":  "",
	}
}

func (d *DTLConfig) check(dataDir string) error {
	if _, err := dtl.ParseMode(d.Mode); err != nil {
		return fmt.Errorf("config: dtl.mode: %w", err)
	}
	if _, err := dtl.ParseOnLoss(d.OnLoss); err != nil {
		return fmt.Errorf("config: dtl.on_loss: %w", err)
	}
	for _, p := range d.Peers {
		if _, _, err := net.SplitHostPort(p); err != nil {
			return fmt.Errorf("config: dtl.peers: %q: want host:port: %w", p, err)
		}
	}
	if d.Listen == "off" {
		d.Listen = ""
	}
	if d.Listen != "" {
		if _, _, err := net.SplitHostPort(d.Listen); err != nil {
			return fmt.Errorf("config: dtl.listen: %q: want host:port: %w", d.Listen, err)
		}
	}
	if d.Dir == "" {
		d.Dir = filepath.Join(dataDir, "dtl")
	}
	t := d.TLS
	if set := b2i(t.CA != "") + b2i(t.Cert != "") + b2i(t.Key != ""); set != 0 && set != 3 {
		return errors.New("config: dtl.tls: give ca, cert and key together (or none, for plain TCP)")
	}
	return nil
}

// tlsConfigs loads the DTL's certificates: nil, nil for plain TCP.
func (d *DTLConfig) tlsConfigs() (server, client *tls.Config, err error) {
	t := d.TLS
	if t.CA == "" {
		return nil, nil, nil
	}
	caPEM, err := os.ReadFile(t.CA)
	if err != nil {
		return nil, nil, fmt.Errorf("config: dtl.tls.ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, nil, fmt.Errorf("config: dtl.tls.ca: %s holds no PEM certificate", t.CA)
	}
	cert, err := tls.LoadX509KeyPair(t.Cert, t.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("config: dtl.tls.cert/key: %w", err)
	}
	server = &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13}
	// Peers are named by address, often an IP: the proof of identity is
	// a certificate of the vPool's CA, checked here rather than by name.
	client = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13,
		InsecureSkipVerify: true, VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("dtl: the peer presented no certificate")
			}
			opts := x509.VerifyOptions{Roots: pool, Intermediates: x509.NewCertPool(),
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
			for _, c := range cs.PeerCertificates[1:] {
				opts.Intermediates.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(opts)
			return err
		}}
	return server, client, nil
}

// startDTLServer serves DTLs on c.DTL.Listen; nil when it is off.
func startDTLServer(c *Config, log *slog.Logger) (*dtl.Server, error) {
	if c.DTL.Listen == "" {
		return nil, nil
	}
	serverTLS, _, err := c.DTL.tlsConfigs()
	if err != nil {
		return nil, err
	}
	store, err := dtl.OpenStore(vfs.OS{}, c.DTL.Dir, log)
	if err != nil {
		return nil, err
	}
	srv, err := dtl.NewServer(store, serverTLS, log)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", c.DTL.Listen)
	if err != nil {
		srv.Close()
		return nil, fmt.Errorf("dtl.listen %s: %w", c.DTL.Listen, err)
	}
	go func() {
		if err := srv.Serve(ln); err != nil {
			log.Error("dtl: server stopped", "err", err)
		}
	}()
	st := srv.Stats()
	log.Info("dtl: serving DTLs", "listen", ln.Addr().String(), "dir", c.DTL.Dir, "tls", serverTLS != nil,
		"vdisks", st.VDisks, "held_bytes", st.HeldBytes)
	return srv, nil
}

// newDTLClient is this host's side of its vDisks' DTLs; nil without peers.
func newDTLClient(c *Config, epoch uint64, onFenced func(string), log *slog.Logger) (*dtl.Replicator, error) {
	if len(c.DTL.Peers) == 0 {
		return nil, nil
	}
	if epoch == 0 {
		return nil, errors.New("dtl: the backend is not claimed yet (unreachable at start): the DTL needs the owner epoch")
	}
	_, clientTLS, err := c.DTL.tlsConfigs()
	if err != nil {
		return nil, err
	}
	mode, _ := dtl.ParseMode(c.DTL.Mode)
	onLoss, _ := dtl.ParseOnLoss(c.DTL.OnLoss)
	host, _ := os.Hostname()
	cl := dtl.NewClient(dtl.ClientConfig{Pool: c.Name, Epoch: epoch, Owner: host, Peers: c.DTL.Peers, TLS: clientTLS,
		OnLoss: onLoss, Log: log, OnFenced: onFenced})
	return &dtl.Replicator{Client: cl, Default: mode}, nil
}

func dtlCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "dtl", Short: "the Distributed Transaction Log: copies of other hosts' newest writes"}
	cmd.AddCommand(&cobra.Command{
		Use:   "serve",
		Short: "serve DTLs for other hosts' vDisks, without serving a vPool",
		Long: "serve holds, on dtl.listen, the writes that other hosts' vDisks have not yet uploaded, in\n" +
			"dtl.dir (default <data_dir>/dtl), so that a restore on a new host loses none of them.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loadConfig(g.config, g.dataDir)
			if err != nil {
				return err
			}
			if c.DTL.Listen == "" {
				return errors.New("dtl serve: dtl.listen is not set (e.g. VPOOL_DTL_LISTEN=0.0.0.0:7411)")
			}
			log, err := newLogger(c.Log.Level)
			if err != nil {
				return err
			}
			if err := os.MkdirAll(c.DTL.Dir, 0o700); err != nil {
				return fmt.Errorf("dtl.dir %s: %w", c.DTL.Dir, err)
			}
			daemonProcs()
			srv, err := startDTLServer(c, log)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			tick := time.NewTicker(time.Minute)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					srv.Close()
					log.Info("dtl: stopped")
					return nil
				case <-tick.C:
					st := srv.Stats()
					log.Debug("dtl: serving", "sessions", st.Sessions, "vdisks", st.VDisks, "held_bytes", st.HeldBytes)
				}
			}
		},
	})
	return cmd
}

// VDiskDTL is one vDisk's DTL in /status.
type VDiskDTL struct {
	Mode         string     `json:"mode"`            // none, async, sync
	OwnMode      string     `json:"own_mode"`        // "" : the vPool's default (dtl.mode)
	State        string     `json:"state"`           // off, ok, catching up, degraded, blocked
	Since        *time.Time `json:"since,omitempty"` // degraded, blocked or catching up since
	Peer         string     `json:"peer,omitempty"`
	CatchUpLeft  int64      `json:"catch_up_left_bytes"`
	LagEntries   uint64     `json:"lag_entries"` // entries not yet known to be held
	Waiting      int        `json:"waiting"`     // writes and flushes waiting for the DTL
	TLS          bool       `json:"tls"`
	SinceSeconds float64    `json:"since_seconds"`
}

// DTLServerStatus is this host's DTL server in /status.
type DTLServerStatus struct {
	Listen string `json:"listen"`
	TLS    bool   `json:"tls"`
	dtl.ServerStats
}

type dtlStatuser interface{ DTLStatus() dtl.StreamStatus }

// vdiskDTL is a vDisk's DTL status; nil without a DTL.
func vdiskDTL(v *volume.VDisk) *VDiskDTL {
	st, ok := v.DTL().(dtlStatuser)
	if !ok {
		return nil
	}
	s := st.DTLStatus()
	d := &VDiskDTL{Mode: s.Mode.String(), OwnMode: v.DTLMode(), State: s.State, Peer: s.Peer, CatchUpLeft: s.CatchUpLeft,
		LagEntries: s.LagEntries, Waiting: s.Waiting, TLS: s.TLS}
	if !s.Since.IsZero() {
		d.Since = &s.Since
		d.SinceSeconds = time.Since(s.Since).Seconds()
	}
	return d
}

// dtlCell is a vDisk's DTL for the status table.
func dtlCell(d *VDiskDTL) string {
	if d == nil {
		return "-"
	}
	s := d.Mode
	if d.Mode == "none" {
		return s
	}
	s += " " + d.State
	switch d.State {
	case "catching up":
		s += fmt.Sprintf(" (%s left)", human(d.CatchUpLeft))
	case "degraded", "blocked":
		if d.Since != nil {
			s += " for " + time.Since(*d.Since).Round(time.Second).String()
		}
	}
	if d.Peer != "" {
		s += " @" + d.Peer
	}
	return s
}

func (s *controlServer) dtlCalls(mux *http.ServeMux) {
	mux.HandleFunc("POST /vdisk/set", func(w http.ResponseWriter, r *http.Request) {
		req, v, ok := s.vdiskOf(w, r, false)
		if !ok {
			return
		}
		mode := req.Name
		if mode == "default" {
			mode = ""
		}
		if err := v.SetDTLMode(mode); err != nil {
			http.Error(w, fmt.Sprintf("%s: %v", req.Path, err), httpStatus(err))
			return
		}
		s.log.Info("vpool: vDisk DTL mode set", "path", req.Path, "vdisk", volume.FormatID(v.ID()), "dtl", req.Name)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(vdiskDTL(v))
	})
}

func vdiskCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "vdisk", Short: "settings of one vDisk"}
	var mode string
	set := &cobra.Command{
		Use:   "set PATH --dtl none|async|sync|default",
		Short: "change a vDisk's settings while it runs",
		Long: "set --dtl changes how the vDisk at PATH is protected against the loss of this host:\n" +
			"none (only the backend), async (a flush waits for the DTL), sync (every write waits for the DTL),\n" +
			"or default (the vPool's dtl.mode). It is kept with the vDisk.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if mode == "" {
				return errors.New("vdisk set: nothing to set (--dtl none|async|sync|default)")
			}
			if mode != "default" {
				if _, err := dtl.ParseMode(mode); err != nil {
					return fmt.Errorf("vdisk set: %w", err)
				}
			}
			var out VDiskDTL
			if err := g.vdiskCall("/vdisk/set", vdiskRequest{Path: args[0], Name: mode}, time.Minute, &out); err != nil {
				return fmt.Errorf("vdisk set: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: DTL %s\n", args[0], dtlCell(&out))
			return nil
		},
	}
	set.Flags().StringVar(&mode, "dtl", "", "DTL mode: none, async, sync or default")
	cmd.AddCommand(set)
	return cmd
}

// printDTL prints the DTL lines of status.
func printDTL(w io.Writer, st *Status) {
	if d := st.DTLServer; d != nil {
		fmt.Fprintf(w, "dtl server: %s (%s), %d sessions, %d vDisks, %s held\n", d.Listen, tlsWord(d.TLS), d.Sessions, d.VDisks, human(int64(d.HeldBytes)))
	}
	if len(st.DTLPeers) == 0 {
		fmt.Fprintln(w, "dtl: off (no dtl.peers): a host loss loses what is not on the backend")
		return
	}
	var degraded []string
	for _, v := range st.VDisks {
		if v.DTL != nil && (v.DTL.State == "degraded" || v.DTL.State == "blocked") {
			degraded = append(degraded, pathOf(v))
		}
	}
	fmt.Fprintf(w, "dtl: peers %s (%s), mode %s, on loss %s", strings.Join(st.DTLPeers, ", "), tlsWord(st.DTLTLS), st.DTLMode, st.DTLOnLoss)
	if len(degraded) > 0 {
		fmt.Fprintf(w, "; UNPROTECTED: %s", strings.Join(degraded, ", "))
	}
	fmt.Fprintln(w)
}

func tlsWord(on bool) string {
	if on {
		return "TLS"
	}
	return "plain TCP"
}

// writeDTLMetrics writes the DTL series.
func writeDTLMetrics(w io.Writer, st Status) {
	states := []string{"ok", "catching up", "degraded", "blocked"}
	fmt.Fprintf(w, "# HELP vpool_vdisk_dtl_state 1 for the vDisk's DTL state.\n# TYPE vpool_vdisk_dtl_state gauge\n")
	for _, v := range st.VDisks {
		if v.DTL == nil || v.DTL.Mode == "none" {
			continue
		}
		for _, s := range states {
			fmt.Fprintf(w, "vpool_vdisk_dtl_state{vdisk=%q,path=%q,mode=%q,state=%q} %d\n", v.ID, v.Path, v.DTL.Mode, s, b2i(v.DTL.State == s))
		}
	}
	for _, m := range []struct {
		name, help string
		val        func(*VDiskDTL) any
	}{
		{"vpool_vdisk_dtl_lag_entries", "Entries shipped to the DTL and not yet known to be held.", func(d *VDiskDTL) any { return d.LagEntries }},
		{"vpool_vdisk_dtl_catch_up_left_bytes", "Bytes the DTL's catch-up has yet to send.", func(d *VDiskDTL) any { return d.CatchUpLeft }},
		{"vpool_vdisk_dtl_unprotected_seconds", "How long the vDisk's DTL has been lost or catching up; 0 while ok.", func(d *VDiskDTL) any { return d.SinceSeconds }},
	} {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s gauge\n", m.name, m.help, m.name)
		for _, v := range st.VDisks {
			if v.DTL != nil && v.DTL.Mode != "none" {
				fmt.Fprintf(w, "%s{vdisk=%q,path=%q} %v\n", m.name, v.ID, v.Path, m.val(v.DTL))
			}
		}
	}
	if d := st.DTLServer; d != nil {
		g := func(name, help string, v any) {
			fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n%s %v\n", name, help, name, metricType(name), name, v)
		}
		g("vpool_dtl_server_sessions", "Owner sessions this host's DTL server holds.", d.Sessions)
		g("vpool_dtl_server_held_bytes", "Bytes of entries this host holds for other hosts.", d.HeldBytes)
		g("vpool_dtl_server_appends_total", "Entries appended.", d.Appends)
		g("vpool_dtl_server_append_bytes_total", "Bytes of entries appended.", d.AppendBytes)
		g("vpool_dtl_server_syncs_total", "Syncs asked by owners.", d.Syncs)
		g("vpool_dtl_server_refused_total", "Connections closed for bad input, fencing or TLS.", d.Refused)
	}
}
