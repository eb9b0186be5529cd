package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// asdDirs returns n ASD directories (not made yet) under a new directory
// that the test removes at its end.
func asdDirs(t *testing.T, n int) []string {
	t.Helper()
	root, err := os.MkdirTemp("/var/tmp", "vpool-e2e-asds-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	var list []string
	for i := range n {
		list = append(list, filepath.Join(root, strconv.Itoa(i)))
	}
	return list
}

// serveOnce runs `vpool serve` for d in its namespace and expects it to
// exit (refused) within the bound; it returns the output.
func (d *daemon) serveOnce(t *testing.T, extra ...string) (string, error) {
	t.Helper()
	args := []string{"--net=" + d.netnsPath(), "--", vpoolBin, "serve", "--data-dir", d.dataDir, "--mountpoint", d.mnt}
	if d.config != "" {
		args = append(args, "--config", d.config)
	}
	cmd := exec.Command("nsenter", append(args, extra...)...)
	cmd.Env = append(os.Environ(), d.env...)
	return runCmd(cmd, 2*time.Minute)
}

// One backend, one daemon: a second daemon (another data dir, the same
// ASDs) is refused with the holder's name; a holder killed -9 stays the
// holder until another daemon is started with --takeover; the old one is
// refused from then on, and a holder that is taken over while it runs
// finds out and stops, writing nothing more.
func TestBackendHeldByOneDaemon(t *testing.T) {
	yaml := "backend:\n  asds: [" + strings.Join(asdDirs(t, 3), ", ") + "]\n"
	env := []string{"VPOOL_ENGINE_SEAL_IDLE=1s", "VPOOL_FS_BACKUP_INTERVAL=1s", "VPOOL_ENGINE_SCO_SIZE=4MiB"}
	a := startDaemonConfig(t, yaml, env...)
	run(t, time.Minute, "qemu-img", "create", "-f", "raw", a.path("a.raw"), "64M")
	run(t, time.Minute, "qemu-io", "-f", "raw", "-t", "none", "-c", "write -P 0x3c 0 12M", a.path("a.raw"))
	waitUploaded(t, a)

	b := newDaemon(t, yaml, "", env...)
	out, err := b.serveOnce(t)
	if err == nil || !strings.Contains(out, "held by another daemon") || !strings.Contains(out, a.dataDir) || !strings.Contains(out, "--takeover") {
		t.Fatalf("a second daemon on the same ASDs: %v\n%s", err, out)
	}
	a.kill()
	if out, err := b.serveOnce(t); err == nil || !strings.Contains(out, "held by another daemon") {
		t.Fatalf("after the holder's kill -9, without --takeover: %v\n%s", err, out)
	}
	b.args = []string{"--takeover"}
	b.start()
	if !strings.Contains(b.log(), "took the backend over") {
		t.Fatalf("no takeover in the log:\n%s", b.log())
	}
	run(t, time.Minute, "qemu-io", "-f", "raw", "-c", "read -P 0x3c 0 12M", b.path("a.raw"))
	if out, err := a.serveOnce(t); err == nil || !strings.Contains(out, "held by another daemon") || !strings.Contains(out, b.dataDir) {
		t.Fatalf("the old holder restarted: %v\n%s", err, out)
	}

	// c takes over from b while b serves: b finds out and stops
	run(t, time.Minute, "qemu-io", "-f", "raw", "-t", "none", "-c", "write -P 0x4d 16M 4M", "-c", "flush", b.path("a.raw"))
	waitUploaded(t, b)
	c := newDaemon(t, yaml, "", env...)
	c.args = []string{"--takeover"}
	c.start()
	select {
	case err := <-b.done:
		b.cmd = nil
		if err == nil || !strings.Contains(b.log(), "another daemon took the backend over") {
			t.Fatalf("the fenced daemon exited with %v\n%s", err, b.log())
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("the fenced daemon still runs 2 minutes after the takeover\n%s", b.log())
	}
	run(t, time.Minute, "qemu-io", "-f", "raw", "-c", "read -P 0x3c 0 12M", "-c", "read -P 0x4d 16M 4M", c.path("a.raw"))
	st := c.status()["backend"].(map[string]any)
	if h, _ := st["holder"].(string); !strings.Contains(h, "held by this daemon, epoch") {
		t.Fatalf("holder in status: %v", st)
	}
}

// The ASDs' disks are not mounted when the daemon starts (empty
// directories in their place): it serves from local flash, never writes a
// fragment into the empty directories, says which ASDs are missing, and
// once the disks are back every write, old and new, is on them: a restore
// from the backend alone reads it all.
func TestASDsNotMountedAtStart(t *testing.T) {
	list := asdDirs(t, 3)
	yaml := "backend:\n  asds: [" + strings.Join(list, ", ") + "]\n"
	d := startDaemonConfig(t, yaml, "VPOOL_ENGINE_SEAL_IDLE=1s", "VPOOL_FS_BACKUP_INTERVAL=1s", "VPOOL_ENGINE_SCO_SIZE=4MiB")
	img := d.path("vm.raw")
	run(t, time.Minute, "qemu-img", "create", "-f", "raw", img, "64M")
	run(t, time.Minute, "qemu-io", "-f", "raw", "-t", "none", "-c", "write -P 0x11 0 8M", "-c", "flush", img)
	waitUploaded(t, d)
	d.stop()
	for _, a := range list { // the disks are not mounted
		if err := os.Rename(a, a+".disk"); err != nil {
			t.Fatal(err)
		}
		os.Mkdir(a, 0o755)
	}
	d.start()
	run(t, time.Minute, "qemu-io", "-f", "raw", "-t", "none", "-c", "write -P 0x22 16M 8M", "-c", "flush", img)
	run(t, time.Minute, "touch", d.path("made-meanwhile"))
	time.Sleep(3 * time.Second) // uploads and a backup would have run by now
	text := run(t, 30*time.Second, vpoolBin, "backend", "status", "--data-dir", d.dataDir)
	for _, a := range list {
		if !strings.Contains(text, a) || !strings.Contains(text, "missing") {
			t.Fatalf("backend status does not say %s is missing:\n%s", a, text)
		}
		if n := countRegular(a); n != 0 {
			t.Fatalf("%d files written into the empty directory %s", n, a)
		}
	}
	d.stop()
	for _, a := range list { // mounted again
		os.Remove(a)
		if err := os.Rename(a+".disk", a); err != nil {
			t.Fatal(err)
		}
	}
	d.start()
	waitUploaded(t, d)
	d.stop()
	d.wipeLocalState()
	d.start()
	run(t, time.Minute, "qemu-io", "-f", "raw", "-c", "read -P 0x11 0 8M", "-c", "read -P 0x22 16M 8M", img)
	if _, err := os.Stat(d.path("made-meanwhile")); err != nil {
		t.Fatalf("file made while the disks were away: %v", err)
	}
}

func countRegular(dir string) int {
	n := 0
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n++
		}
		return nil
	})
	return n
}

// Promise 5 through repair, with the real daemon: lose one ASD of a 2+1
// pool over four while it serves, `vpool backend repair` rebuilds what it
// held onto the others (a progress bar, a summary), then lose another:
// a restore from the backend alone reads everything back.
func TestBackendRepair(t *testing.T) {
	list := asdDirs(t, 4)
	yaml := "backend:\n  asds: [" + strings.Join(list, ", ") + "]\n  repair:\n    rate: 0\n"
	d := startDaemonConfig(t, yaml, "VPOOL_ENGINE_SEAL_IDLE=1s", "VPOOL_FS_BACKUP_INTERVAL=1s", "VPOOL_ENGINE_SCO_SIZE=4MiB")
	img := d.path("vm.raw")
	run(t, time.Minute, "qemu-img", "create", "-f", "raw", img, "128M")
	run(t, time.Minute, "qemu-io", "-f", "raw", "-t", "none", "-c", "write -P 0x61 0 40M", "-c", "write -P 0x62 64M 8M", "-c", "flush", img)
	waitUploaded(t, d)
	if err := os.RemoveAll(list[0]); err != nil { // the disk dies
		t.Fatal(err)
	}
	out := run(t, 5*time.Minute, vpoolBin, "backend", "repair", "--data-dir", d.dataDir)
	if !strings.Contains(out, "100%") || !strings.Contains(out, "last repair pass") || !strings.Contains(out, "0 unrepairable") {
		t.Fatalf("vpool backend repair:\n%s", out)
	}
	var repaired float64
	if lp, ok := d.status()["backend"].(map[string]any)["last_pass"].(map[string]any); ok {
		repaired, _ = lp["repaired"].(float64)
	}
	if repaired < 10 {
		t.Fatalf("repair made %v objects whole; the lost ASD held fragments of at least 10: %v", repaired, d.status()["backend"])
	}
	if err := os.RemoveAll(list[1]); err != nil { // and another
		t.Fatal(err)
	}
	d.stop()
	d.wipeLocalState()
	d.start()
	run(t, time.Minute, "qemu-io", "-f", "raw", "-c", "read -P 0x61 0 40M", "-c", "read -P 0x62 64M 8M", "-c", "read -P 0 48M 8M", img)
	text := run(t, 30*time.Second, vpoolBin, "backend", "status", "--data-dir", d.dataDir)
	if !strings.Contains(text, list[0]) || !strings.Contains(text, "missing") {
		t.Fatalf("backend status:\n%s", text)
	}
}

// ASDs come and go: a fourth directory added to backend.asds joins with
// `vpool backend join` and gets its share; `vpool backend remove` drains
// another, which then leaves the list; a restore from the backend alone
// reads everything.
func TestBackendAddAndRemoveASD(t *testing.T) {
	list := asdDirs(t, 4)
	cfg := func(asds []string) string {
		return "backend:\n  asds: [" + strings.Join(asds, ", ") + "]\n  repair:\n    rate: 0\n"
	}
	d := startDaemonConfig(t, cfg(list[:3]), "VPOOL_ENGINE_SEAL_IDLE=1s", "VPOOL_FS_BACKUP_INTERVAL=1s", "VPOOL_ENGINE_SCO_SIZE=4MiB")
	img := d.path("vm.raw")
	run(t, time.Minute, "qemu-img", "create", "-f", "raw", img, "64M")
	run(t, time.Minute, "qemu-io", "-f", "raw", "-t", "none", "-c", "write -P 0x71 0 32M", "-c", "flush", img)
	waitUploaded(t, d)
	d.stop()
	os.MkdirAll(list[3], 0o755) // a new disk, mounted
	os.WriteFile(d.config, []byte(cfg(list)), 0o644)
	d.start()
	out := run(t, 5*time.Minute, vpoolBin, "backend", "join", list[3], "--data-dir", d.dataDir)
	if !strings.Contains(out, "joined the pool") || !strings.Contains(out, "last rebalance pass") {
		t.Fatalf("join:\n%s", out)
	}
	if n := countRegular(filepath.Join(list[3], "objects")); n < 5 {
		t.Fatalf("the joined ASD holds %d fragments after the rebalance", n)
	}
	out = run(t, 5*time.Minute, vpoolBin, "backend", "remove", list[0], "--data-dir", d.dataDir)
	if !strings.Contains(out, "is drained") {
		t.Fatalf("remove:\n%s", out)
	}
	if n := countRegular(filepath.Join(list[0], "objects")); n != 0 {
		t.Fatalf("%d fragments left on the drained ASD", n)
	}
	if out, err := runErr(time.Minute, "", vpoolBin, "backend", "remove", list[1], "--data-dir", d.dataDir); err == nil {
		t.Fatalf("a remove leaving 2 ASDs for 2+1 went through:\n%s", out)
	}
	d.stop()
	os.WriteFile(d.config, []byte(cfg(list[1:])), 0o644)
	os.RemoveAll(list[0])
	d.wipeLocalState()
	d.start()
	run(t, time.Minute, "qemu-io", "-f", "raw", "-c", "read -P 0x71 0 32M", img)
}

// One ASD goes read-only (its filesystem remounted ro): uploads go on to
// the others with full redundancy, writers never wait on it, status names
// the ASD and why; once it is writable again it is used again.
func TestReadOnlyASD(t *testing.T) {
	list := asdDirs(t, 4)
	ro := list[3]
	os.MkdirAll(ro, 0o755)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=512m", "tmpfs", ro).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v\n%s", err, out)
	}
	t.Cleanup(func() { syscall.Unmount(ro, syscall.MNT_DETACH) })
	yaml := "backend:\n  asds: [" + strings.Join(list, ", ") + "]\n"
	d := startDaemonConfig(t, yaml, "VPOOL_ENGINE_SEAL_IDLE=1s", "VPOOL_FS_BACKUP_INTERVAL=1s", "VPOOL_ENGINE_SCO_SIZE=4MiB")
	img := d.path("vm.raw")
	run(t, time.Minute, "qemu-img", "create", "-f", "raw", img, "128M")
	run(t, time.Minute, "qemu-io", "-f", "raw", "-t", "none", "-c", "write -P 0x51 0 8M", "-c", "flush", img)
	waitUploaded(t, d)
	if out, err := exec.Command("mount", "-o", "remount,ro", ro).CombinedOutput(); err != nil {
		t.Fatalf("remount ro: %v\n%s", err, out)
	}
	before := countRegular(ro)
	run(t, 2*time.Minute, "qemu-io", "-f", "raw", "-t", "none", "-c", "write -P 0x52 16M 48M", "-c", "flush", img)
	waitUploaded(t, d)
	if n := countRegular(ro); n != before {
		t.Fatalf("fragments on the read-only ASD went from %d to %d", before, n)
	}
	text := run(t, 30*time.Second, vpoolBin, "backend", "status", "--data-dir", d.dataDir)
	if !strings.Contains(text, ro) || !strings.Contains(text, "failing") || !strings.Contains(text, "read-only") {
		t.Fatalf("backend status does not name the read-only ASD:\n%s", text)
	}
	if b := d.status()["backend"].(map[string]any); b["degraded_puts"] != nil && b["degraded_puts"].(float64) > 0 {
		t.Fatalf("objects written with less redundancy while 3 ASDs could take 2+1: %v", b["degraded_puts"])
	}
	if out, err := exec.Command("mount", "-o", "remount,rw", ro).CombinedOutput(); err != nil {
		t.Fatalf("remount rw: %v\n%s", err, out)
	}
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(time.Second) {
		text = run(t, 30*time.Second, vpoolBin, "backend", "status", "--data-dir", d.dataDir)
		if !strings.Contains(text, "failing") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the ASD stays failing after it is writable again:\n%s", text)
		}
	}
	run(t, time.Minute, "qemu-io", "-f", "raw", "-t", "none", "-c", "write -P 0x53 80M 8M", "-c", "flush", img)
	waitUploaded(t, d)
	if countRegular(ro) == before {
		t.Fatal("the ASD takes no fragments after it is writable again")
	}
	run(t, time.Minute, "qemu-io", "-f", "raw", "-c", "read -P 0x51 0 8M", "-c", "read -P 0x52 16M 48M", "-c", "read -P 0x53 80M 8M", img)
}
