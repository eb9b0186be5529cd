package fs

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"syscall"
	"testing"
)

// Hard links: one inode, several names, in one directory and across
// directories; nlink and ctime; unlink of one name; rename over a link
// and onto another name of the same inode; the last name frees the data;
// kept across a restart and a restore from the backend.
func TestHardLinks(t *testing.T) {
	e := newEnv(t)
	a := e.mk(RootIno, "a", syscall.S_IFDIR|0o755)
	b := e.mk(RootIno, "b", syscall.S_IFDIR|0o755)
	f := e.mk(a.Ino, "f", 0o644)
	e.write(f.Ino, []byte("shared data"), 0)
	l1, err := e.ns.Link(bg, f.Ino, b.Ino, "g")
	if err != nil || l1.Ino != f.Ino || l1.Nlink != 2 || l1.Ctime <= f.Ctime || l1.Size != 11 {
		t.Fatalf("link a/f as b/g: %+v, %v", l1, err)
	}
	if _, err := e.ns.Link(bg, f.Ino, a.Ino, "h"); err != nil { // the same directory
		t.Fatal(err)
	}
	if got := fmt.Sprint(e.names(a.Ino)); got != "[f h]" {
		t.Fatalf("a lists %s", got)
	}
	var order []DirEntry
	e.ns.ReadDirOrder(bg, a.Ino, 0, func(d DirEntry) bool { order = append(order, d); return true })
	if len(order) != 2 || order[0].Ino != f.Ino || order[1].Ino != f.Ino {
		t.Fatalf("a in inode order: %+v", order)
	}
	for _, p := range [][2]any{{a.Ino, "h"}, {b.Ino, "g"}} {
		g, err := e.ns.Lookup(bg, p[0].(uint64), p[1].(string))
		if err != nil || g.Ino != f.Ino || g.Nlink != 3 {
			t.Fatalf("lookup %v: %+v, %v", p, g, err)
		}
	}
	if err := e.ns.Unlink(bg, a.Ino, "f"); err != nil {
		t.Fatal(err)
	}
	if got := e.read(f.Ino, 100, 0); string(got) != "shared data" {
		t.Fatalf("after unlinking one name: %q", got)
	}
	// rename onto another name of the same inode changes nothing.
	if err := e.ns.Rename(bg, b.Ino, "g", a.Ino, "h", 0); err != nil {
		t.Fatal(err)
	}
	if g, err := e.ns.Lookup(bg, b.Ino, "g"); err != nil || g.Nlink != 2 {
		t.Fatalf("b/g after rename onto a/h: %+v, %v", g, err)
	}
	// rename of another file over a link: the inode keeps its other name.
	x := e.mk(RootIno, "x", 0o644)
	if err := e.ns.Rename(bg, RootIno, "x", a.Ino, "h", 0); err != nil {
		t.Fatal(err)
	}
	if h, _ := e.ns.Lookup(bg, a.Ino, "h"); h.Ino != x.Ino {
		t.Fatalf("a/h is inode %d, want %d", h.Ino, x.Ino)
	}
	g, err := e.ns.Lookup(bg, b.Ino, "g")
	if err != nil || g.Nlink != 1 {
		t.Fatalf("b/g after a rename over its other name: %+v, %v", g, err)
	}
	// Moving a linked name keeps the inode's other names in place.
	if _, err := e.ns.Link(bg, f.Ino, b.Ino, "g2"); err != nil {
		t.Fatal(err)
	}
	if err := e.ns.Rename(bg, b.Ino, "g2", a.Ino, "moved", 0); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(e.names(b.Ino)); got != "[g]" {
		t.Fatalf("b lists %s", got)
	}

	// A vDisk with two names is one vDisk; it goes with its last name.
	v := e.mk(a.Ino, "disk.raw", 0o600)
	e.write(v.Ino, bytes.Repeat([]byte("V"), 4096), 0)
	if _, err := e.ns.Link(bg, v.Ino, b.Ino, "same-disk"); err != nil {
		t.Fatal(err)
	}
	byOther, err := e.ns.VDiskOf(bg, "b/same-disk")
	if err != nil || byOther.ID() != v.VDisk {
		t.Fatalf("the vDisk by its other name: %v", err)
	}

	e.restart()
	for _, p := range []string{"a/moved", "b/g"} {
		if a, err := e.ns.Resolve(bg, p); err != nil || a.Ino != f.Ino || a.Nlink != 2 {
			t.Fatalf("%s after a restart: %+v, %v", p, a, err)
		}
	}
	if err := e.ns.Unlink(bg, a.Ino, "disk.raw"); err != nil {
		t.Fatal(err)
	}
	if got := e.read(v.Ino, 4096, 0); !bytes.Equal(got, bytes.Repeat([]byte("V"), 4096)) {
		t.Fatal("the vDisk after unlinking one of its names")
	}
	if err := e.ns.Unlink(bg, b.Ino, "same-disk"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pool.VDisk(v.VDisk); err == nil {
		t.Fatal("the vDisk outlived its last name")
	}

	if err := e.ns.Backup(bg); err != nil {
		t.Fatal(err)
	}
	e.ns.files.Flush(bg)
	e.ns.files.Seal()
	e.ns.files.WaitUploaded(bg)
	e.wipe()
	for _, p := range []string{"a/moved", "b/g"} {
		if a, err := e.ns.Resolve(bg, p); err != nil || a.Ino != f.Ino || a.Nlink != 2 {
			t.Fatalf("%s after a restore: %+v, %v", p, a, err)
		}
	}
	if got := e.read(f.Ino, 100, 0); string(got) != "shared data" {
		t.Fatalf("linked file after a restore: %q", got)
	}
	if err := e.ns.Unlink(bg, a.Ino, "moved"); err != nil {
		t.Fatal(err)
	}
	if err := e.ns.Unlink(bg, b.Ino, "g"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ns.GetAttr(bg, f.Ino); !errors.Is(err, ErrStale) {
		t.Fatalf("the inode after its last name went: %v", err)
	}
}

// Link's errors are a local filesystem's.
func TestHardLinkErrors(t *testing.T) {
	e := newEnv(t)
	d := e.mk(RootIno, "d", syscall.S_IFDIR|0o755)
	f := e.mk(RootIno, "f", 0o644)
	v := e.mk(RootIno, "v.raw", 0o644)
	vd, _ := e.pool.VDisk(v.VDisk)
	if _, err := vd.CreateSnapshot(bg, "s"); err != nil {
		t.Fatal(err)
	}
	snap, err := e.ns.Resolve(bg, ".snapshots/v.raw/s")
	if err != nil {
		t.Fatal(err)
	}
	top, _ := e.ns.Resolve(bg, ".snapshots")
	open, err := e.ns.Open(bg, f.Ino, false)
	if err != nil {
		t.Fatal(err)
	}
	defer open.Release(bg)
	link := func(ino, parent uint64, name string) error { _, err := e.ns.Link(bg, ino, parent, name); return err }
	for _, c := range []struct {
		name  string
		err   error
		errno syscall.Errno
	}{
		{"a directory", link(d.Ino, RootIno, "d2"), syscall.EPERM},
		{"onto a name", link(f.Ino, RootIno, "v.raw"), syscall.EEXIST},
		{"into a file", link(f.Ino, f.Ino, "x"), syscall.ENOTDIR},
		{"a long name", link(f.Ino, RootIno, string(bytes.Repeat([]byte("n"), 256))), syscall.ENAMETOOLONG},
		{"a snapshot", link(snap.Ino, RootIno, "s"), syscall.EROFS},
		{"into the snapshot tree", link(f.Ino, top.Ino, "x"), syscall.EROFS},
		{"as .snapshots", link(f.Ino, RootIno, SnapshotsDir), syscall.EEXIST},
		{"an unlinked file", func() error { e.ns.Unlink(bg, RootIno, "f"); return link(f.Ino, RootIno, "back") }(), syscall.ENOENT},
	} {
		if got := Errno(c.err); got != c.errno {
			t.Errorf("link of %s: %v (%v), want %v", c.name, c.err, got, c.errno)
		}
	}
}

// Power loss: a link made durable (SyncMeta, as fsync of the directory
// and NFS do) survives; links and unlinks not yet synced are kept whole
// or not at all, and the link count always equals the names there are.
func TestHardLinksPowerLoss(t *testing.T) {
	for seed := range uint64(20) {
		e := newEnv(t)
		f := e.mk(RootIno, "f", 0o644)
		e.write(f.Ino, []byte("kept"), 0)
		if err := e.ns.files.Flush(bg); err != nil {
			t.Fatal(err)
		}
		if _, err := e.ns.Link(bg, f.Ino, RootIno, "g"); err != nil {
			t.Fatal(err)
		}
		if err := e.ns.SyncMeta(); err != nil {
			t.Fatal(err)
		}
		if _, err := e.ns.Link(bg, f.Ino, RootIno, "h"); err != nil { // not synced
			t.Fatal(err)
		}
		if err := e.ns.Unlink(bg, RootIno, "f"); err != nil { // not synced
			t.Fatal(err)
		}
		e.powerLoss(rand.New(rand.NewPCG(seed, 7)))
		names := 0
		for _, name := range []string{"f", "g", "h"} {
			a, err := e.ns.Lookup(bg, RootIno, name)
			if errors.Is(err, ErrNotFound) {
				if name == "g" {
					t.Fatalf("seed %d: the synced link g is gone", seed)
				}
				continue
			}
			if err != nil || a.Ino != f.Ino {
				t.Fatalf("seed %d: %s: %+v %v", seed, name, a, err)
			}
			names++
		}
		a, err := e.ns.GetAttr(bg, f.Ino)
		if err != nil || a.Nlink != uint32(names) {
			t.Fatalf("seed %d: nlink %d with %d names (%v)", seed, a.Nlink, names, err)
		}
		if got := e.read(f.Ino, 10, 0); string(got) != "kept" {
			t.Fatalf("seed %d: data %q", seed, got)
		}
	}
}
