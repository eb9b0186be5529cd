package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"vpool/objstore/s3/s3test"
)

// s3Daemon starts a versitygw in a new daemon's network namespace and the
// daemon on a bucket of it.
func s3Daemon(t *testing.T, env ...string) (*daemon, *s3test.Server) {
	t.Helper()
	yaml := "backend:\n  type: s3\n  s3:\n    endpoint: http://127.0.0.1:7070\n    bucket: vpool-e2e\n" +
		"    access_key: " + s3test.AccessKey + "\n    timeout: 5s\n"
	d := newDaemon(t, yaml, "", append([]string{"VPOOL_BACKEND_S3_SECRET_KEY=" + s3test.SecretKey}, env...)...)
	srv := s3test.StartIn(t, d.netnsPath(), d.dialNetnsUnprivileged)
	d.start()
	return d, srv
}

// A vPool on S3: qemu-io and fio --verify through FUSE, kill -9 and
// restart, a restore onto an empty data dir from the bucket alone, and an
// S3 server that stops answering: writes go on into the write buffer,
// status says since when the backend is unreachable, and uploads finish
// once it answers again.
func TestS3Backend(t *testing.T) {
	d, srv := s3Daemon(t, "VPOOL_ENGINE_SEAL_IDLE=1s", "VPOOL_FS_BACKUP_INTERVAL=1s", "VPOOL_ENGINE_SCO_SIZE=8MiB")
	if err := os.MkdirAll(d.path("vms"), 0o755); err != nil {
		t.Fatal(err)
	}
	img := d.path("vms/vm1.raw")
	run(t, time.Minute, "qemu-img", "create", "-f", "raw", img, "256M")
	run(t, time.Minute, "qemu-io", "-f", "raw", "-t", "none", "-c", "write -P 0x5a 0 40M", "-c", "write -P 0x6b 100M 3M", "-c", "flush", img)
	if err := os.WriteFile(d.path("vms/vm1.vmx"), []byte("memsize = \"2048\"\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	fio := d.path("vms/fio.raw")
	run(t, time.Minute, "truncate", "-s", "64M", fio)
	fioArgs := []string{"--name=v", "--filename=" + fio, "--size=64M", "--bs=4k", "--rw=randwrite", "--direct=1",
		"--ioengine=libaio", "--iodepth=16", "--verify=crc32c", "--verify_fatal=1", "--randseed=7"}
	run(t, 3*time.Minute, "fio", fioArgs...)

	// kill -9 with writes flushed: they survive
	d.kill()
	d.start()
	run(t, time.Minute, "qemu-io", "-f", "raw", "-c", "read -P 0x5a 0 40M", "-c", "read -P 0x6b 100M 3M", img)
	run(t, 3*time.Minute, "fio", append(fioArgs, "--verify_only")...)

	waitUploaded(t, d)
	objects := bucketObjects(t, srv, "vpool-e2e")
	if !containsAll(objects, "/sco/", "/tlog/", "/manifest.") {
		t.Fatalf("the bucket lacks SCOs, TLogs or manifests: %v", objects)
	}

	// restore onto an empty data dir from the bucket alone
	d.stop()
	if err := os.RemoveAll(d.dataDir); err != nil {
		t.Fatal(err)
	}
	d.start()
	if !strings.Contains(d.log(), "restoring the namespace from the backend") {
		t.Fatalf("no restore in the log:\n%s", d.log())
	}
	run(t, time.Minute, "qemu-io", "-f", "raw", "-c", "read -P 0x5a 0 40M", "-c", "read -P 0x6b 100M 3M", "-c", "read -P 0 50M 1M", img)
	run(t, 3*time.Minute, "fio", append(fioArgs, "--verify_only")...)
	if b, err := os.ReadFile(d.path("vms/vm1.vmx")); err != nil || string(b) != "memsize = \"2048\"\n" {
		t.Fatalf("vmx after restore: %q %v", b, err)
	}

	// the server stops answering: writes go on, status says so
	srv.Pause()
	paused := time.Now()
	run(t, 2*time.Minute, "qemu-io", "-f", "raw", "-t", "none", "-c", "write -P 0x7c 150M 24M", "-c", "flush", img)
	var since string
	for deadline := time.Now().Add(2 * time.Minute); since == ""; time.Sleep(500 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("status never said the backend is unreachable: %v", d.status()["backend"])
		}
		if b, ok := d.status()["backend"].(map[string]any); ok && b["failing_since"] != nil {
			since = b["failing_since"].(string)
		}
	}
	if ts, err := time.Parse(time.RFC3339Nano, since); err != nil || ts.Before(paused.Add(-time.Second)) {
		t.Fatalf("failing since %q (%v), paused at %s", since, err, paused)
	}
	text := run(t, 30*time.Second, vpoolBin, "status", "--data-dir", d.dataDir)
	if !strings.Contains(text, "UNREACHABLE since") {
		t.Fatalf("vpool status does not say the backend is unreachable:\n%s", text)
	}
	metrics := run(t, 30*time.Second, "curl", "-s", "--unix-socket", filepath.Join(d.dataDir, "vpool.sock"), "http://vpool/metrics")
	if !strings.Contains(metrics, "vpool_backend_ok 0") {
		t.Fatalf("metrics do not say the backend fails:\n%s", grepLine(metrics, "vpool_backend"))
	}
	run(t, time.Minute, "qemu-io", "-f", "raw", "-c", "read -P 0x7c 150M 24M", img)
	srv.Resume()
	waitUploaded(t, d)
	if b := d.status()["backend"].(map[string]any); b["ok"] != true {
		t.Fatalf("backend after the server came back: %v", b)
	}
	d.stop()
	if err := os.RemoveAll(d.dataDir); err != nil {
		t.Fatal(err)
	}
	d.start()
	run(t, time.Minute, "qemu-io", "-f", "raw", "-c", "read -P 0x5a 0 40M", "-c", "read -P 0x7c 150M 24M", img)
}

// bucketObjects lists a bucket of a versitygw posix server by its files.
func bucketObjects(t *testing.T, srv *s3test.Server, bucket string) []string {
	t.Helper()
	root := filepath.Join(srv.Dir, bucket)
	var out []string
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			rel, _ := filepath.Rel(root, p)
			out = append(out, rel)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func containsAll(names []string, subs ...string) bool {
	for _, s := range subs {
		found := false
		for _, n := range names {
			found = found || strings.Contains(n, s)
		}
		if !found {
			return false
		}
	}
	return true
}

// A pool that has never been opened cannot start while its S3 bucket is
// unreachable (it might hold the pool to restore): a clear error, at once
// after the requests' timeout, not a hang.
func TestS3UnreachableAtFirstStart(t *testing.T) {
	yaml := "backend:\n  type: s3\n  s3:\n    endpoint: http://127.0.0.1:7071\n    bucket: nobody-home\n" +
		"    access_key: a\n    timeout: 2s\n"
	d := newDaemon(t, yaml, "", "VPOOL_BACKEND_S3_SECRET_KEY=s")
	out, err := d.serveOnce(t)
	if err == nil || !strings.Contains(out, "needed before a new data dir serves it") || !strings.Contains(out, "127.0.0.1:7071") {
		t.Fatalf("serve with an unreachable bucket: %v\n%s", err, out)
	}
	if strings.Contains(out, "VPOOL_BACKEND_S3_SECRET_KEY=s") || strings.Contains(out, "secret") && strings.Contains(out, "=s ") {
		t.Fatalf("the secret is in the output:\n%s", out)
	}
}

// runCmd runs cmd with a bound, returning its output.
func runCmd(cmd *exec.Cmd, limit time.Duration) (string, error) {
	var buf strings.Builder
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Start(); err != nil {
		return "", err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return buf.String(), err
	case <-time.After(limit):
		cmd.Process.Kill()
		<-done
		return buf.String(), fmt.Errorf("still running after %s", limit)
	}
}
