package test

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Hard links through the FUSE mount and over NFS, kept across kill -9:
// ln and a link-based lock file protocol, nlink and ctime, a vDisk with
// two names (snapshots and clones accept either), unlink of one name.
func TestHardLinksEndToEnd(t *testing.T) {
	d := startDaemon(t)
	if err := os.WriteFile(d.path("data.txt"), []byte("one inode"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(d.path("other"), 0o755); err != nil {
		t.Fatal(err)
	}
	before := stat(t, d.path("data.txt"))
	run(t, time.Minute, "ln", d.path("data.txt"), d.path("other/alias.txt"))
	st := stat(t, d.path("other/alias.txt"))
	if st.Ino != before.Ino || st.Nlink != 2 || stat(t, d.path("data.txt")).Nlink != 2 {
		t.Fatalf("after ln: inode %d (want %d), nlink %d", st.Ino, before.Ino, st.Nlink)
	}
	// A lock file as NFS-safe lockers make it: link a unique file to the
	// lock's name; a second link to that name fails with EEXIST.
	if err := os.WriteFile(d.path("tmp.1234"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(d.path("tmp.1234"), d.path("vm.lck")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(d.path("data.txt"), d.path("vm.lck")); !isErrno(err, syscall.EEXIST) {
		t.Fatalf("a second link to the lock: %v, want EEXIST", err)
	}
	if err := os.Link(d.path("other"), d.path("dirlink")); !isErrno(err, syscall.EPERM) {
		t.Fatalf("a link to a directory: %v, want EPERM", err)
	}
	// A vDisk with two names.
	run(t, time.Minute, "qemu-img", "create", "-f", "raw", d.path("vm.raw"), "16M")
	run(t, time.Minute, "qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 1M", d.path("vm.raw"))
	run(t, time.Minute, "ln", d.path("vm.raw"), d.path("other/vm-alias.raw"))
	run(t, time.Minute, vpoolBin, "snapshot", "create", "other/vm-alias.raw", "s1", "--data-dir", d.dataDir)
	if out := run(t, time.Minute, vpoolBin, "snapshot", "list", "vm.raw", "--data-dir", d.dataDir); !strings.Contains(out, "s1") {
		t.Fatalf("a snapshot taken by one name is not listed by the other:\n%s", out)
	}
	run(t, time.Minute, vpoolBin, "clone", "vm.raw@s1", "clone.raw", "--data-dir", d.dataDir)
	run(t, time.Minute, "qemu-io", "-f", "raw", "-c", "read -P 0x5a 0 1M", d.path("clone.raw"))

	// Over NFS: LINK, and FUSE sees the new name and link count.
	c, root := d.nfsClient(0, 0)
	fh, _, err := c.Lookup(root, "data.txt")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Link(fh, root, "via-nfs.txt"); err != nil {
		t.Fatal(err)
	}
	if st := stat(t, d.path("via-nfs.txt")); st.Ino != before.Ino || st.Nlink != 3 {
		t.Fatalf("FUSE after an NFS LINK: inode %d nlink %d", st.Ino, st.Nlink)
	}
	if err := c.Remove(root, "data.txt"); err != nil {
		t.Fatal(err)
	}

	d.kill()
	d.start()
	for _, p := range []string{"other/alias.txt", "via-nfs.txt"} {
		st := stat(t, d.path(p))
		if b, err := os.ReadFile(d.path(p)); err != nil || string(b) != "one inode" || st.Nlink != 2 {
			t.Fatalf("%s after kill -9: %q %v, nlink %d", p, b, err, st.Nlink)
		}
	}
	if _, err := os.Stat(d.path("data.txt")); !os.IsNotExist(err) {
		t.Fatalf("the name removed over NFS: %v", err)
	}
	run(t, time.Minute, "qemu-io", "-f", "raw", "-c", "read -P 0x5a 0 1M", d.path("other/vm-alias.raw"))
	if st := stat(t, d.path("vm.raw")); st.Nlink != 2 {
		t.Fatalf("the vDisk's link count after kill -9: %d", st.Nlink)
	}
}
