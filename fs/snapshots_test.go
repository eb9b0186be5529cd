package fs

import (
	"bytes"
	"errors"
	"fmt"
	"syscall"
	"testing"
)

// The snapshot tree: hidden from the root's listing, found by lookup, a
// read-only mirror of directories and vDisks with one file per snapshot.
func TestSnapshotTree(t *testing.T) {
	e := newEnv(t)
	dir := e.mk(RootIno, "vms", syscall.S_IFDIR|0o755)
	vd := e.mk(dir.Ino, "vm1.raw", syscall.S_IFREG|0o644)
	e.mk(dir.Ino, "notes.txt", syscall.S_IFREG|0o644)
	one := bytes.Repeat([]byte("one!"), 4096)
	e.write(vd.Ino, one, 0)
	v, err := e.pool.VDisk(vd.VDisk)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.CreateSnapshot(bg, "first"); err != nil {
		t.Fatal(err)
	}
	e.write(vd.Ino, bytes.Repeat([]byte("two!"), 4096), 0)
	if _, err := v.CreateSnapshot(bg, "second"); err != nil {
		t.Fatal(err)
	}

	for _, n := range e.names(RootIno) {
		if n == SnapshotsDir {
			t.Fatal(".snapshots listed in the root")
		}
	}
	path := func(names ...string) (Attr, error) {
		a, err := e.ns.Lookup(bg, RootIno, SnapshotsDir)
		for _, n := range names {
			if err != nil {
				break
			}
			a, err = e.ns.Lookup(bg, a.Ino, n)
		}
		return a, err
	}
	top, err := path()
	if err != nil || !top.IsDir() {
		t.Fatalf(".snapshots: %+v, %v", top, err)
	}
	if got := fmt.Sprint(e.names(top.Ino)); got != "[vms]" {
		t.Fatalf(".snapshots lists %s", got)
	}
	mdir, _ := path("vms")
	if got := fmt.Sprint(e.names(mdir.Ino)); got != "[vm1.raw]" {
		t.Fatalf(".snapshots/vms lists %s (regular files have no snapshots)", got)
	}
	vdir, err := path("vms", "vm1.raw")
	if err != nil || !vdir.IsDir() {
		t.Fatalf(".snapshots/vms/vm1.raw: %+v, %v", vdir, err)
	}
	if got := fmt.Sprint(e.names(vdir.Ino)); got != "[first second]" {
		t.Fatalf("snapshots listed: %s", got)
	}
	var order []string
	if err := e.ns.ReadDirOrder(bg, vdir.Ino, 0, func(d DirEntry) bool { order = append(order, d.Name); return true }); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(order) != "[first second]" {
		t.Fatalf("in inode order: %v", order)
	}
	first, err := path("vms", "vm1.raw", "first")
	if err != nil || !first.IsRegular() || first.Size != int64(len(one)) || first.Mode&0o222 != 0 {
		t.Fatalf("snapshot file: %+v, %v", first, err)
	}
	if got := e.read(first.Ino, len(one), 0); !bytes.Equal(got, one) {
		t.Fatal("snapshot first does not read what was written before it")
	}
	if up, err := e.ns.Lookup(bg, vdir.Ino, ".."); err != nil || up.Ino != mdir.Ino {
		t.Fatalf(".. of the vDisk's snapshot directory: %+v, %v", up, err)
	}
	if up, err := e.ns.Lookup(bg, top.Ino, ".."); err != nil || up.Ino != RootIno {
		t.Fatalf(".. of .snapshots: %+v, %v", up, err)
	}
	if _, err := path("vms", "notes.txt"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("regular file in the mirror: %v", err)
	}
	if _, err := path("vms", "vm1.raw", "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown snapshot: %v", err)
	}

	// read-only, everywhere
	for what, err := range map[string]error{
		"open for writing": func() error { _, err := e.ns.Open(bg, first.Ino, true); return err }(),
		"create in it":     func() error { _, _, err := e.ns.Create(bg, vdir.Ino, "x", NewNode{Mode: syscall.S_IFREG}); return err }(),
		"unlink":           e.ns.Unlink(bg, vdir.Ino, "first"),
		"rmdir":            e.ns.Rmdir(bg, top.Ino, "vms"),
		"rename out":       e.ns.Rename(bg, vdir.Ino, "first", RootIno, "x", 0),
		"setattr":          func() error { _, err := e.ns.SetAttr(bg, first.Ino, SetAttrIn{SetSize: true}); return err }(),
	} {
		if Errno(err) != syscall.EROFS {
			t.Fatalf("%s: %v, want EROFS", what, err)
		}
	}
	if _, _, err := e.ns.Create(bg, RootIno, SnapshotsDir, NewNode{Mode: syscall.S_IFDIR | 0o755}); !errors.Is(err, ErrExist) {
		t.Fatalf("mkdir /.snapshots: %v", err)
	}

	// an open snapshot file cannot be deleted; a deleted one is stale
	f, err := e.ns.Open(bg, first.Ino, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.DeleteSnapshot(bg, "first"); Errno(err) != syscall.EBUSY {
		t.Fatalf("delete an open snapshot: %v", err)
	}
	f.Release(bg)
	if err := v.DeleteSnapshot(bg, "first"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ns.GetAttr(bg, first.Ino); !errors.Is(err, ErrStale) {
		t.Fatalf("attributes of a deleted snapshot: %v", err)
	}

	// across a restart, the same inode numbers
	second, _ := path("vms", "vm1.raw", "second")
	e.restart()
	again, err := e.ns.GetAttr(bg, second.Ino)
	if err != nil || again.Size != second.Size {
		t.Fatalf("snapshot file after a restart: %+v, %v", again, err)
	}
}

// Nothing in the snapshot tree gives more than the tree: a snapshot file
// has its vDisk's owner, group and mode at snapshot time without write
// bits; mirrored directories keep their directory's owner and read and
// search bits; a vDisk's directory of snapshots is listable by whoever
// may read the vDisk.
func TestSnapshotTreePermissions(t *testing.T) {
	e := newEnv(t)
	dir := e.mk(RootIno, "private", syscall.S_IFDIR|0o700)
	vd := e.mk(dir.Ino, "db.raw", syscall.S_IFREG|0o640)
	if _, err := e.ns.SetAttr(bg, vd.Ino, SetAttrIn{SetUid: true, SetGid: true, Uid: 1000, Gid: 100}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ns.CreateSnapshot(bg, "private/db.raw", "before"); err != nil {
		t.Fatal(err)
	}
	// Changed after the snapshot: the snapshot keeps what it was.
	if _, err := e.ns.SetAttr(bg, vd.Ino, SetAttrIn{SetMode: true, SetUid: true, Mode: 0o4604, Uid: 2000}); err != nil {
		t.Fatal(err)
	}
	v, err := e.pool.VDisk(vd.VDisk)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.CreateSnapshot(bg, "unowned"); err != nil { // no owner recorded: the file's
		t.Fatal(err)
	}
	top, err := e.ns.Lookup(bg, RootIno, SnapshotsDir)
	if err != nil {
		t.Fatal(err)
	}
	mdir, err := e.ns.Lookup(bg, top.Ino, "private")
	if err != nil || mdir.Mode != syscall.S_IFDIR|0o500 || mdir.Uid != dir.Uid {
		t.Fatalf(".snapshots/private: mode %#o uid %d, %v; want 0500 like private's 0700", mdir.Mode, mdir.Uid, err)
	}
	vdir, err := e.ns.Lookup(bg, mdir.Ino, "db.raw")
	if err != nil || vdir.Mode != syscall.S_IFDIR|0o505 || vdir.Uid != 2000 {
		t.Fatalf(".snapshots/private/db.raw: mode %#o uid %d, %v; want 0505 (the vDisk is now 04604), uid 2000", vdir.Mode, vdir.Uid, err)
	}
	for name, want := range map[string]Attr{"before": {Mode: syscall.S_IFREG | 0o440, Uid: 1000, Gid: 100},
		"unowned": {Mode: syscall.S_IFREG | 0o404, Uid: 2000, Gid: 100}} {
		a, err := e.ns.Lookup(bg, vdir.Ino, name)
		if err != nil || a.Mode != want.Mode || a.Uid != want.Uid || a.Gid != want.Gid {
			t.Fatalf("snapshot %s: mode %#o uid %d gid %d, %v; want %#o %d %d", name, a.Mode, a.Uid, a.Gid, err, want.Mode, want.Uid, want.Gid)
		}
	}
	if m := snapDirMode(0o600); m != 0o500 {
		t.Fatalf("the snapshot directory of a 0600 vDisk is %#o, want 0500", m)
	}
}
