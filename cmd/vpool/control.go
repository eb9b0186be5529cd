package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"
	"unicode"

	"vpool/nfsd"
	"vpool/volume"
)

// The control socket, <data_dir>/vpool.sock (mode 0600: root only), serves
// HTTP: GET /status (JSON) for `vpool status` and the other subcommands,
// GET /metrics (Prometheus text). /metrics can also be served on a TCP
// address (metrics.listen).

func socketPath(dataDir string) string { return filepath.Join(dataDir, "vpool.sock") }

// VDiskStatus is one vDisk in /status.
type VDiskStatus struct {
	Path string `json:"path"` // in the vPool's tree; "(file store)" for the store of regular files
	volume.Stats
	ReadIOPS        float64 `json:"read_iops"`
	WriteIOPS       float64 `json:"write_iops"`
	ReadLatencyUs   float64 `json:"read_latency_us"`
	WriteLatencyUs  float64 `json:"write_latency_us"`
	CacheHitPercent float64 `json:"cache_hit_percent"`
	// ReclaimableBytes is the vDisk's garbage at the newest count.
	ReclaimableBytes int64     `json:"reclaimable_bytes"`
	DTL              *VDiskDTL `json:"dtl,omitempty"` // nil: no DTL peers
}

// Status is the daemon's answer to GET /status.
type Status struct {
	VPool            string           `json:"vpool"`
	DataDir          string           `json:"data_dir"`
	Uptime           string           `json:"uptime"`
	WriteBufferBytes int64            `json:"write_buffer_bytes"`
	WriteBufferLimit int64            `json:"write_buffer_limit"`
	Throttling       bool             `json:"throttling"`
	FlashFree        int64            `json:"flash_free_bytes"`    // at the last look (new SCOs)
	FlashReserve     int64            `json:"flash_reserve_bytes"` // kept free for the metadata stores
	FlashFull        bool             `json:"flash_full"`          // new SCOs refused: writes fail with ENOSPC
	BackendTotal     uint64           `json:"backend_total_bytes"`
	BackendFree      uint64           `json:"backend_free_bytes"`
	RepairedReads    int64            `json:"backend_repaired_reads"`
	Backend          *BackendStatus   `json:"backend"`
	MapStoreResident int64            `json:"map_store_resident_bytes"`
	MapStoreLimit    int64            `json:"map_store_limit_bytes"`
	NFS              *NFSStatus       `json:"nfs,omitempty"`         // nil: the gateway is off
	Scrub            *ScrubStatus     `json:"scrub,omitempty"`       // nil: no pass yet
	Reclaimable      *ReclaimStatus   `json:"reclaimable,omitempty"` // nil: not counted yet
	VDisks           []VDiskStatus    `json:"vdisks"`
	DTLPeers         []string         `json:"dtl_peers,omitempty"`
	DTLMode          string           `json:"dtl_mode,omitempty"`
	DTLOnLoss        string           `json:"dtl_on_loss,omitempty"`
	DTLTLS           bool             `json:"dtl_tls,omitempty"`
	DTLServer        *DTLServerStatus `json:"dtl_server,omitempty"` // nil: this host serves no DTLs
	// Damaged are the vDisks that could not be recovered at start: every
	// access to them fails (EIO) until they are deleted or repaired.
	Damaged []DamagedStatus `json:"damaged,omitempty"`
}

// DamagedStatus is one damaged vDisk and why.
type DamagedStatus struct {
	ID    string `json:"id"`
	Path  string `json:"path,omitempty"`
	Error string `json:"error"`
}

// rates turns the engine's counters into per-second figures, sampled
// once a second.
type rates struct {
	mu   sync.Mutex
	prev map[string]volume.Stats
	at   time.Time
	last map[string]VDiskStatus
}

func (r *rates) sample(pool *volume.Pool) {
	now := time.Now()
	cur := map[string]volume.Stats{}
	for _, id := range pool.List() {
		if v, err := pool.VDisk(id); err == nil {
			st := v.Stats()
			cur[st.ID] = st
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	dt := now.Sub(r.at).Seconds()
	last := map[string]VDiskStatus{}
	for id, st := range cur {
		s := VDiskStatus{Stats: st}
		if p, ok := r.prev[id]; ok && dt > 0 {
			dr, dw := st.Reads-p.Reads, st.Writes-p.Writes
			s.ReadIOPS, s.WriteIOPS = float64(dr)/dt, float64(dw)/dt
			if dr > 0 {
				s.ReadLatencyUs = float64(st.ReadNanos-p.ReadNanos) / float64(dr) / 1e3
			}
			if dw > 0 {
				s.WriteLatencyUs = float64(st.WriteNanos-p.WriteNanos) / float64(dw) / 1e3
			}
		}
		if n := st.CacheHits + st.CacheMisses; n > 0 {
			s.CacheHitPercent = 100 * float64(st.CacheHits) / float64(n)
		}
		last[id] = s
	}
	r.prev, r.at, r.last = cur, now, last
}

// snapshot is the last sample, plus vDisks created since (without rates).
func (r *rates) snapshot(pool *volume.Pool) []VDiskStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]VDiskStatus, 0, len(r.last))
	for _, s := range r.last {
		out = append(out, s)
	}
	for _, id := range pool.List() {
		if _, ok := r.last[volume.FormatID(id)]; !ok {
			if v, err := pool.VDisk(id); err == nil {
				out = append(out, VDiskStatus{Stats: v.Stats()})
			}
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].ID < out[b].ID })
	return out
}

// NFSStatus is what the NFS gateway has done since the start.
type NFSStatus struct {
	Export      string `json:"export"`
	Port        int    `json:"port"`
	Connections uint64 `json:"connections_total"`
	OpenConns   int64  `json:"connections_open"`
	Buffered    int64  `json:"buffered_bytes"` // of calls and replies in flight (bounded by nfs.buffer)
	Calls       uint64 `json:"calls_total"`
	Errors      uint64 `json:"errors_total"` // replies with an NFS error status
	ReadBytes   uint64 `json:"read_bytes_total"`
	WriteBytes  uint64 `json:"written_bytes_total"`
	// Read-ahead for sequential readers: bytes READs took from it, and
	// bytes read ahead that no READ took.
	ReadAheadUsed   uint64 `json:"read_ahead_used_bytes_total"`
	ReadAheadWasted uint64 `json:"read_ahead_wasted_bytes_total"`
}

type controlServer struct {
	c       *Config
	e       *engine
	nfs     *nfsd.Server // nil: off
	started time.Time
	rates   rates
	log     *slog.Logger
	scrub   atomic.Pointer[ScrubStatus] // the newest scrub pass
	reclaim atomic.Pointer[ReclaimStatus]
	// recountCh asks reclaimCounter for a count
	recountCh chan struct{}
}

func (s *controlServer) status(ctx context.Context) Status {
	st := Status{VPool: s.c.Name, DataDir: s.c.DataDir, Uptime: time.Since(s.started).Round(time.Second).String(),
		VDisks: s.rates.snapshot(s.e.pool), RepairedReads: s.e.be.repairedReads(), Backend: s.e.be.status(s.e.holder), MapStoreResident: s.e.meta.TablesResident(),
		MapStoreLimit: int64(s.c.Engine.MapStoreMemory)}
	var names map[uint64]string
	for id, err := range s.e.pool.Damaged() {
		st.Damaged = append(st.Damaged, DamagedStatus{ID: volume.FormatID(id), Error: err.Error()})
	}
	slices.SortFunc(st.Damaged, func(a, b DamagedStatus) int { return strings.Compare(a.ID, b.ID) })
	if s.e.ns != nil {
		names = s.e.ns.VDiskNames(ctx)
		for i := range st.Damaged {
			if id, err := volume.ParseID(st.Damaged[i].ID); err == nil {
				st.Damaged[i].Path = names[id]
			}
		}
		fsid, jid := volume.FormatID(s.e.ns.FileStoreID()), volume.FormatID(s.e.ns.JournalID())
		for i := range st.VDisks {
			v := &st.VDisks[i]
			if id, err := volume.ParseID(v.ID); err == nil {
				v.Path = names[id]
			}
			switch v.ID {
			case fsid:
				v.Path = "(file store)"
			case jid:
				v.Path = "(namespace journal)"
			}
		}
	}
	st.Scrub = s.scrub.Load()
	if r := s.reclaim.Load(); r != nil {
		st.Reclaimable = r
		for i := range st.VDisks {
			st.VDisks[i].ReclaimableBytes = r.ByVDisk[st.VDisks[i].ID]
		}
	}
	if s.nfs != nil {
		n := &s.nfs.Stats
		st.NFS = &NFSStatus{Export: "/" + s.c.Name, Port: s.nfs.Port(), Connections: n.Conns.Load(), Calls: n.Calls.Load(),
			OpenConns: n.OpenConns.Load(), Buffered: n.Buffered.Load(),
			Errors: n.Errors.Load(), ReadBytes: n.ReadBytes.Load(), WriteBytes: n.WriteBytes.Load(),
			ReadAheadUsed: n.ReadAheadUsed.Load(), ReadAheadWasted: n.ReadAheadWasted.Load()}
	}
	for i := range st.VDisks {
		if id, err := volume.ParseID(st.VDisks[i].ID); err == nil {
			if v, err := s.e.pool.VDisk(id); err == nil {
				st.VDisks[i].DTL = vdiskDTL(v)
			}
		}
	}
	if len(s.c.DTL.Peers) > 0 {
		st.DTLPeers, st.DTLMode, st.DTLOnLoss, st.DTLTLS = s.c.DTL.Peers, s.c.DTL.Mode, s.c.DTL.OnLoss, s.c.DTL.TLS.CA != ""
	}
	if s.e.dtlSrv != nil {
		st.DTLServer = &DTLServerStatus{Listen: s.c.DTL.Listen, TLS: s.c.DTL.TLS.CA != "", ServerStats: s.e.dtlSrv.Stats()}
	}
	wb := s.e.wb.Stats()
	st.WriteBufferBytes, st.WriteBufferLimit, st.Throttling = wb.UsedBytes, wb.LimitBytes, s.e.wb.Throttling()
	st.FlashFree, st.FlashReserve, st.FlashFull = wb.FlashFreeBytes, wb.FlashReserveBytes, wb.FlashLow
	if u, err := s.e.be.usage(ctx); err == nil {
		st.BackendTotal, st.BackendFree = u.TotalBytes, u.FreeBytes
	}
	return st
}

func (s *controlServer) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(s.status(r.Context()))
	})
	s.vdiskCalls(mux)
	s.backendCalls(mux)
	s.dtlCalls(mux)
	mux.HandleFunc("GET /metrics", s.metrics)
	// Profiles of the running daemon (root only, as the socket is):
	// curl --unix-socket <data_dir>/vpool.sock http://vpool/debug/pprof/profile?seconds=10
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	return mux
}

func (s *controlServer) metrics(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	writeMetrics(w, s.status(r.Context()))
}

// metricsOnly is the handler of the TCP metrics listener (metrics.listen):
// GET /metrics and nothing else. The control API (snapshots, rollback,
// templates, clones, scrub, status) and the profiles stay on the Unix
// socket, which only root can open.
func metricsOnly(metrics http.HandlerFunc) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", metrics)
	return mux
}

// listenControl opens the control socket; a live daemon on it is an
// error, a stale socket file is replaced.
func listenControl(dataDir string) (net.Listener, error) {
	path := socketPath(dataDir)
	if conn, err := net.DialTimeout("unix", path, time.Second); err == nil {
		conn.Close()
		return nil, fmt.Errorf("another vpool daemon is running with data dir %s (%s answers)", dataDir, path)
	}
	os.Remove(path)
	old := syscall.Umask(0o077)
	l, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	return l, nil
}

// serveControl runs the control server until ctx ends.
func (s *controlServer) serve(ctx context.Context, l net.Listener, metricsListen string) error {
	srv := &http.Server{Handler: s.handler(), ReadHeaderTimeout: 5 * time.Second}
	var ml net.Listener
	if metricsListen != "" {
		var err error
		if ml, err = net.Listen("tcp", metricsListen); err != nil {
			return fmt.Errorf("metrics.listen %s: %w", metricsListen, err)
		}
	}
	s.rates.sample(s.e.pool)
	go func() {
		every(ctx, time.Second, func() { s.rates.sample(s.e.pool) })
	}()
	msrv := &http.Server{Handler: metricsOnly(s.metrics), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(l)
	if ml != nil {
		go msrv.Serve(ml)
	}
	go func() {
		<-ctx.Done()
		srv.Close()
		msrv.Close()
		os.Remove(socketPath(s.c.DataDir))
	}()
	return nil
}

// getStatus asks the daemon of dataDir for its status.
// controlCall makes one request to the daemon's control socket; a
// daemon that is not running, or a caller that is not root, is a clear
// error, and so is an answer other than 200 (its text is the error).
func controlCall(dataDir, method, what string, body any, timeout time.Duration) (*http.Response, error) {
	path := socketPath(dataDir)
	client := &http.Client{Timeout: timeout, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		}}}
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://vpool"+what, rd)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT) {
			return nil, fmt.Errorf("no vpool daemon running with data dir %s (%s)", dataDir, path)
		}
		if errors.Is(err, os.ErrPermission) || errors.Is(err, syscall.EACCES) {
			return nil, fmt.Errorf("%s: permission denied (the control socket is root's)", path)
		}
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		return nil, errors.New(strings.TrimSpace(string(b)))
	}
	return resp, nil
}

func getStatus(dataDir string) (*Status, error) {
	resp, err := controlCall(dataDir, "GET", "/status", nil, 10*time.Second)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	path := socketPath(dataDir)
	var st Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return nil, fmt.Errorf("control socket %s: bad answer: %w", path, err)
	}
	return &st, nil
}

func printStatus(w io.Writer, st *Status) {
	fmt.Fprintf(w, "vPool %s (data dir %s), up %s\n", st.VPool, st.DataDir, st.Uptime)
	throttle := "no"
	switch {
	case st.Throttling && st.Backend != nil && st.Backend.FailingSince != nil:
		throttle = "yes: writes are slowed, uploads fail (backend below)"
	case st.Throttling:
		throttle = "yes: writes are slowed, the backend is behind"
	}
	fmt.Fprintf(w, "write buffer: %s of %s not yet on the backend; throttling: %s\n",
		human(st.WriteBufferBytes), human(st.WriteBufferLimit), throttle)
	if st.FlashFull {
		fmt.Fprintf(w, "flash: FULL: %s free, %s kept for the metadata stores: writes fail with ENOSPC, reads go on; writes resume when there is room\n",
			human(st.FlashFree), human(st.FlashReserve))
	}
	printBackend(w, st)
	printDTL(w, st)
	fmt.Fprintf(w, "block-map store: %s of its tables in memory (limit %s)\n", human(st.MapStoreResident), human(st.MapStoreLimit))
	if n := st.NFS; n != nil {
		fmt.Fprintf(w, "nfs: export %s on port %d; %d connections open (%d in all), %s in calls in flight; %d calls (%d errors), %s read (%s of it read ahead; %s read ahead unused), %s written\n",
			n.Export, n.Port, n.OpenConns, n.Connections, human(n.Buffered), n.Calls, n.Errors, human(int64(n.ReadBytes)), human(int64(n.ReadAheadUsed)),
			human(int64(n.ReadAheadWasted)), human(int64(n.WriteBytes)))
	} else {
		fmt.Fprintln(w, "nfs: off")
	}
	if sc := st.Scrub; sc != nil {
		fmt.Fprintf(w, "scrub: last pass %s ago: %s freed; %s of garbage left in %d partly live SCOs%s\n",
			time.Since(sc.At).Round(time.Second), human(sc.BytesFreed), human(sc.GarbageBytes), sc.PartlyLive, errSuffix(sc.Error))
	} else {
		fmt.Fprintln(w, "scrub: no pass yet")
	}
	if r := st.Reclaimable; r != nil {
		fmt.Fprintf(w, "reclaimable: %s (counted %s ago), %s of it in partly live SCOs\n",
			human(r.Bytes), time.Since(r.At).Round(time.Second), human(r.PartlyLive))
	} else {
		fmt.Fprintln(w, "reclaimable: not counted yet")
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PATH\tVDISK\tSIZE\tALLOCATED\tRECLAIMABLE\tSNAPSHOTS\tWRITE BUFFER\tTHROTTLED\tCACHE HIT\tREAD IOPS\tWRITE IOPS\tREAD LAT\tWRITE LAT\tREAD ERRORS\tUPLOAD\tDTL")
	for _, v := range st.VDisks {
		upload := "ok"
		if v.UploadError != "" {
			upload = "retrying: " + v.UploadError
		} else if v.SCOsNotUploaded > 0 {
			upload = fmt.Sprintf("%d SCOs queued", v.SCOsNotUploaded)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%v\t%.0f%%\t%.0f\t%.0f\t%.0fµs\t%.0fµs\t%d\t%s\t%s\n", pathOf(v), v.ID, human(v.SizeBytes), human(v.AllocatedBytes),
			human(v.ReclaimableBytes), v.Snapshots, human(v.WriteBufferBytes), v.Throttling, v.CacheHitPercent, v.ReadIOPS, v.WriteIOPS, v.ReadLatencyUs, v.WriteLatencyUs,
			v.ReadErrors, upload, dtlCell(v.DTL))
	}
	tw.Flush()
	if len(st.VDisks) == 0 {
		fmt.Fprintln(w, "(no vDisks)")
	}
	for _, d := range st.Damaged {
		fmt.Fprintf(w, "DAMAGED: %s %s: %s\n", displayPath(d.Path), d.ID, d.Error)
	}
}

// displayPathMax is the widest path the status table shows.
const displayPathMax = 60

// displayPath makes a file name safe for one table cell: control
// characters (a newline in a name) escaped, and a long path cut in the
// middle with an ellipsis, keeping its start and its file name.
func displayPath(p string) string {
	if strings.ContainsFunc(p, func(r rune) bool { return !unicode.IsPrint(r) }) {
		q := strconv.Quote(p)
		p = q[1 : len(q)-1]
	}
	r := []rune(p)
	if len(r) <= displayPathMax {
		return p
	}
	head := displayPathMax / 3
	return string(r[:head]) + "…" + string(r[len(r)-(displayPathMax-head-1):])
}

// metricType is a series' Prometheus type: counters end in _total.
func metricType(name string) string {
	if strings.HasSuffix(name, "_total") {
		return "counter"
	}
	return "gauge"
}

func writeMetrics(w io.Writer, st Status) {
	g := func(name, help string, v any, labels string) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n%s%s %v\n", name, help, name, metricType(name), name, labels, v)
	}
	g("vpool_write_buffer_bytes", "Bytes in SCOs not yet on the backend.", st.WriteBufferBytes, "")
	g("vpool_write_buffer_limit_bytes", "Write buffer size.", st.WriteBufferLimit, "")
	g("vpool_throttling", "1 while writers are slowed because the backend is behind.", b2i(st.Throttling), "")
	g("vpool_flash_full", "1 while the flash filesystem is within the metadata stores' reserve: writes fail with ENOSPC.", b2i(st.FlashFull), "")
	g("vpool_flash_free_bytes", "Free bytes of the flash filesystem at the last look.", st.FlashFree, "")
	g("vpool_backend_free_bytes", "Raw free bytes under the backend.", st.BackendFree, "")
	g("vpool_backend_repaired_reads_total", "Fragment reads rebuilt from parity.", st.RepairedReads, "")
	if b := st.Backend; b != nil {
		g("vpool_backend_ok", "0 while every backend request since some moment has failed (unreachable, timing out, refusing).", b2i(b.OK), "")
		failing := 0.0
		if b.FailingSince != nil {
			failing = time.Since(*b.FailingSince).Seconds()
		}
		g("vpool_backend_failing_seconds", "How long every backend request has failed; 0 while it answers.", failing, "")
		g("vpool_backend_failures_total", "Backend requests failed.", b.Failures, "")
		if p := b.Pass; p != nil {
			g("vpool_backend_pass_objects", "Objects in the running repair or verify pass.", p.Objects, `{kind="`+p.Kind+`"}`)
			g("vpool_backend_pass_checked", "Objects the running pass has looked at.", p.Checked, `{kind="`+p.Kind+`"}`)
			g("vpool_backend_pass_repaired", "Objects the running pass made whole.", p.Repaired, `{kind="`+p.Kind+`"}`)
			g("vpool_backend_pass_unrepairable", "Objects the running pass could not make whole.", p.Unrepairable, `{kind="`+p.Kind+`"}`)
			g("vpool_backend_pass_bytes_written", "Fragment bytes the running pass wrote.", p.BytesWritten, `{kind="`+p.Kind+`"}`)
			g("vpool_backend_pass_rate_bytes", "The running pass's paced bytes a second.", p.Rate(), `{kind="`+p.Kind+`"}`)
			g("vpool_backend_pass_eta_seconds", "Time the running pass needs yet, at its pace.", p.ETA().Seconds(), `{kind="`+p.Kind+`"}`)
		}
		if r := b.Requests; r != nil {
			g("vpool_backend_s3_gets_total", "S3 GET requests.", r.Gets, "")
			g("vpool_backend_s3_get_bytes_total", "Bytes of S3 GETs.", r.GetBytes, "")
			g("vpool_backend_s3_puts_total", "S3 PUT requests.", r.Puts, "")
			g("vpool_backend_s3_put_bytes_total", "Bytes of S3 PUTs.", r.PutBytes, "")
		}
	}
	g("vpool_map_store_resident_bytes", "Bytes of the block-map store's tables in memory (bounded by engine.map_store_memory).", st.MapStoreResident, "")
	if sc := st.Scrub; sc != nil {
		g("vpool_scrub_last_freed_bytes", "Bytes the newest scrub pass freed.", sc.BytesFreed, "")
	}
	if r := st.Reclaimable; r != nil {
		g("vpool_reclaimable_bytes", "Garbage on the backend that scrubs would free, at the newest count.", r.Bytes, "")
	}
	g("vpool_vdisks_damaged", "vDisks that could not be recovered at start (every access fails).", len(st.Damaged), "")
	if n := st.NFS; n != nil {
		g("vpool_nfs_connections_total", "NFS connections accepted.", n.Connections, "")
		g("vpool_nfs_connections_open", "NFS connections open now.", n.OpenConns, "")
		g("vpool_nfs_buffered_bytes", "Bytes held by NFS calls and replies in flight (bounded by nfs.buffer).", n.Buffered, "")
		g("vpool_nfs_calls_total", "RPC calls answered (portmapper, MOUNT, NFS).", n.Calls, "")
		g("vpool_nfs_errors_total", "NFS replies with an error status.", n.Errors, "")
		g("vpool_nfs_read_bytes_total", "Bytes read over NFS.", n.ReadBytes, "")
		g("vpool_nfs_written_bytes_total", "Bytes written over NFS.", n.WriteBytes, "")
		g("vpool_nfs_read_ahead_used_bytes_total", "Bytes of NFS READs answered from data read ahead.", n.ReadAheadUsed, "")
		g("vpool_nfs_read_ahead_wasted_bytes_total", "Bytes read ahead for NFS READs that no READ took.", n.ReadAheadWasted, "")
	}
	series := []struct {
		name, help string
		val        func(VDiskStatus) any
	}{
		{"vpool_vdisk_size_bytes", "vDisk size.", func(v VDiskStatus) any { return v.SizeBytes }},
		{"vpool_vdisk_allocated_bytes", "Bytes of mapped clusters.", func(v VDiskStatus) any { return v.AllocatedBytes }},
		{"vpool_vdisk_reclaimable_bytes", "The vDisk's garbage on the backend at the newest count.", func(v VDiskStatus) any { return v.ReclaimableBytes }},
		{"vpool_vdisk_snapshots", "Snapshots of the vDisk.", func(v VDiskStatus) any { return v.Snapshots }},
		{"vpool_vdisk_write_buffer_bytes", "vDisk bytes not yet on the backend.", func(v VDiskStatus) any { return v.WriteBufferBytes }},
		{"vpool_vdisk_reads_total", "Reads.", func(v VDiskStatus) any { return v.Reads }},
		{"vpool_vdisk_writes_total", "Writes.", func(v VDiskStatus) any { return v.Writes }},
		{"vpool_vdisk_read_bytes_total", "Bytes read.", func(v VDiskStatus) any { return v.ReadBytes }},
		{"vpool_vdisk_written_bytes_total", "Bytes written.", func(v VDiskStatus) any { return v.WrittenBytes }},
		{"vpool_vdisk_flushes_total", "Flushes that synced.", func(v VDiskStatus) any { return v.Flushes }},
		{"vpool_vdisk_cache_hits_total", "Read-cache hits.", func(v VDiskStatus) any { return v.CacheHits }},
		{"vpool_vdisk_cache_misses_total", "Read-cache misses.", func(v VDiskStatus) any { return v.CacheMisses }},
		{"vpool_vdisk_scos_not_uploaded", "Sealed SCOs waiting for upload.", func(v VDiskStatus) any { return v.SCOsNotUploaded }},
		{"vpool_vdisk_read_errors_total", "Reads that failed (EIO to the client).", func(v VDiskStatus) any { return v.ReadErrors }},
	}
	for _, s := range series {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", s.name, s.help, s.name, metricType(s.name))
		for _, v := range st.VDisks {
			fmt.Fprintf(w, "%s{vdisk=%q,path=%q} %v\n", s.name, v.ID, v.Path, s.val(v))
		}
	}
	writeDTLMetrics(w, st)
}

// human prints a byte count for people: 0, 812KiB, 3.4GiB.
func human(n int64) string {
	const units = "KMGTPE"
	if n < 1024 {
		return fmt.Sprintf("%dB", n)
	}
	f, i := float64(n)/1024, 0
	for f >= 1024 && i < len(units)-1 {
		f /= 1024
		i++
	}
	if f < 10 {
		return fmt.Sprintf("%.1f%ciB", f, units[i])
	}
	return fmt.Sprintf("%.0f%ciB", f, units[i])
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// vpoolPath turns a path given to the CLI into one in the vPool's tree:
// an absolute path under the mountpoint loses the mountpoint; anything
// else is taken from the vPool's root.
func (s *controlServer) vpoolPath(p string) string {
	if rest, ok := strings.CutPrefix(filepath.Clean(p), filepath.Clean(s.c.Mountpoint)+"/"); ok {
		return rest
	}
	return p
}

func pathOf(v VDiskStatus) string {
	p := displayPath(v.Path)
	if v.Template {
		return p + " (template)"
	}
	if v.Parent != "" {
		return p + " (clone of " + v.Parent + ")"
	}
	return p
}

func errSuffix(e string) string {
	if e == "" {
		return ""
	}
	return " (failed: " + e + ")"
}

// every calls fn every d until ctx ends.
func every(ctx context.Context, d time.Duration, fn func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn()
		}
	}
}
