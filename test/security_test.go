package test

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Every file and directory the daemon keeps (stores, SCOs, TLogs, the
// read cache, backend objects, its socket) gives nothing to other users,
// although the daemon was started with umask 022 and a data dir it did
// not make private; the mountpoint's parents it made are 0755, so users
// reach the mount.
func TestDaemonFileModes(t *testing.T) {
	d := startDaemonOn(t, "", "", "VPOOL_ENGINE_SCO_SIZE=4MiB")
	d.stop()
	if err := os.Chmod(d.dataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	d.mnt = filepath.Join(d.root, "mnt-parent", "mnt")
	d.start()
	run(t, time.Minute, "qemu-img", "create", "-f", "raw", d.path("vm.raw"), "64M")
	run(t, time.Minute, "qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 12M", d.path("vm.raw"))
	if err := os.WriteFile(d.path("notes.txt"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, time.Minute, vpoolBin, "snapshot", "create", "vm.raw", "s1", "--data-dir", d.dataDir)
	d.nfs(time.Minute, "nfs-ls", nfsURL)
	waitUploaded(t, d)
	var open []string
	n := 0
	err := filepath.WalkDir(d.dataDir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		n++
		if fi.Mode().Perm()&0o077 != 0 {
			open = append(open, fi.Mode().String()+" "+strings.TrimPrefix(p, d.dataDir))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(open) > 0 || n < 20 {
		t.Fatalf("%d of %d daemon files give rights to other users:\n%s", len(open), n, strings.Join(open, "\n"))
	}
	if fi, err := os.Stat(filepath.Join(d.root, "mnt-parent")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("the mountpoint's parent the daemon made: %v, %v; want 0755", fi.Mode(), err)
	}
}
