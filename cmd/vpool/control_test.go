package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"vpool/volume"
)

func testConfig(t *testing.T) *Config {
	c, err := loadConfig("", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c.WriteBuffer.Size = 256 << 20
	c.ReadCache.Size = 16 << 20
	c.Engine.SCOSize = 4 << 20
	c.Mountpoint = filepath.Join(t.TempDir(), "mnt")
	c.NFS.Listen, c.NFS.Portmap = "127.0.0.1:0", false // tests run side by side
	return c
}

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

// The daemon serves its control socket; status shows every vDisk with
// its I/O rates; /metrics speaks Prometheus; a second daemon on the same
// data dir is refused; status without a daemon says so.
func TestControlSocketStatusAndMetrics(t *testing.T) {
	c := testConfig(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e, err := openEngine(ctx, c, false, nil, quietLog)
	if err != nil {
		t.Fatal(err)
	}
	defer e.close(context.Background())
	v, err := e.pool.Create(ctx, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	l, err := listenControl(c.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	cs := &controlServer{c: c, e: e, started: time.Now(), log: quietLog}
	if err := cs.serve(ctx, l, ""); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 500; i++ {
		if err := v.WriteAt(ctx, bytes.Repeat([]byte{1}, 4096), int64(i)*4096); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(1100 * time.Millisecond) // one rate sample
	st, err := getStatus(c.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.VDisks) != 1 || st.VDisks[0].ID != volume.FormatID(v.ID()) || st.VDisks[0].AllocatedBytes != 500*4096 ||
		st.VDisks[0].Writes != 500 || st.VDisks[0].SizeBytes != 64<<20 {
		t.Fatalf("status %+v", st)
	}
	var out bytes.Buffer
	printStatus(&out, st)
	if !strings.Contains(out.String(), volume.FormatID(v.ID())) || !strings.Contains(out.String(), "2.0MiB") ||
		!strings.Contains(out.String(), "of its tables in memory (limit 64MiB)") {
		t.Fatalf("printed status:\n%s", out.String())
	}
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", socketPath(c.DataDir))
	}}}
	resp, err := client.Get("http://vpool/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := `vpool_vdisk_writes_total{vdisk="` + volume.FormatID(v.ID()) + `",path=""} 500`; !strings.Contains(string(body), want) {
		t.Fatalf("metrics lack %q:\n%s", want, body)
	}
	for _, want := range []string{"# TYPE vpool_vdisk_writes_total counter", "# TYPE vpool_write_buffer_bytes gauge",
		"# TYPE vpool_map_store_resident_bytes gauge"} {
		if !strings.Contains(string(body), want) {
			t.Fatalf("metrics lack %q:\n%s", want, body)
		}
	}
	if _, err := listenControl(c.DataDir); err == nil || !strings.Contains(err.Error(), "another vpool daemon is running") {
		t.Fatalf("second daemon: %v", err)
	}
	if _, err := getStatus(filepath.Join(t.TempDir(), "none")); err == nil || !strings.Contains(err.Error(), "no vpool daemon running") {
		t.Fatalf("status without a daemon: %v", err)
	}
}

// runDaemon starts, serves status, and stops cleanly on cancel, leaving
// no socket behind.
func TestRunDaemonStartsAndStops(t *testing.T) {
	c := testConfig(t)
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- runDaemon(ctx, c, false, quietLog, ready) }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatal(err)
	case <-time.After(20 * time.Second):
		t.Fatal("daemon did not start")
	}
	if st, err := getStatus(c.DataDir); err != nil || st.VPool != "vpool" {
		t.Fatalf("status: %+v %v", st, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := getStatus(c.DataDir); err == nil {
		t.Fatal("status answered after stop")
	}
}

// A name with a newline or a very long path stays in its table cell.
func TestDisplayPath(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"vms/db.raw", "vms/db.raw"},
		{"evil\nname.raw", `evil\nname.raw`},
		{"tab\there.raw", `tab\there.raw`},
		{strings.Repeat("d/", 50) + "disk.raw", strings.Repeat("d/", 10) + "…/" + strings.Repeat("d/", 15) + "disk.raw"},
	} {
		got := displayPath(tc.in)
		if got != tc.want {
			t.Errorf("displayPath(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if n := len([]rune(got)); n > displayPathMax {
			t.Errorf("displayPath(%q) is %d runes long", tc.in, n)
		}
	}
	var b bytes.Buffer
	printStatus(&b, &Status{VDisks: []VDiskStatus{{Path: "a\nb.raw"}}, Damaged: []DamagedStatus{{ID: "00000000000000aa", Path: "x.raw", Error: "volume: vDisk damaged: SCO 3"}}})
	out := b.String()
	if strings.Contains(out, "a\nb.raw") || !strings.Contains(out, `a\nb.raw`) || !strings.Contains(out, "DAMAGED: x.raw 00000000000000aa: volume: vDisk damaged: SCO 3") {
		t.Fatalf("status:\n%s", out)
	}
}

// The TCP metrics listener serves GET /metrics and nothing of the control
// API: every control path answers 404 there, whatever the method.
func TestMetricsListenerServesOnlyMetrics(t *testing.T) {
	h := metricsOnly(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "vpool_up 1\n") })
	paths := []string{"/status", "/template", "/snapshot/create", "/snapshot/list", "/snapshot/delete",
		"/snapshot/rollback", "/clone", "/clone/flatten", "/scrub", "/debug/pprof/", "/debug/pprof/profile",
		"/debug/pprof/trace", "/"}
	for _, p := range paths {
		for _, m := range []string{"GET", "POST"} {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(m, p, strings.NewReader(`{"path":"victim.raw","name":"before"}`)))
			if rec.Code != http.StatusNotFound {
				t.Errorf("%s %s on the metrics listener: %d, want 404", m, p, rec.Code)
			}
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != http.StatusOK || rec.Body.String() != "vpool_up 1\n" {
		t.Fatalf("GET /metrics: %d %q", rec.Code, rec.Body.String())
	}
}
