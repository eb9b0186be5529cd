package fs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"syscall"
	"testing"

	"vpool/volume"
)

var bg = context.Background()

func (e *env) mk(parent uint64, name string, mode uint32) Attr {
	e.t.Helper()
	a, _, err := e.ns.Create(bg, parent, name, NewNode{Mode: mode, Caller: Caller{Uid: 1000, Gid: 1000}})
	if err != nil {
		e.t.Fatalf("create %s: %v", name, err)
	}
	return a
}

func (e *env) write(ino uint64, p []byte, off int64) {
	e.t.Helper()
	f, err := e.ns.Open(bg, ino, true)
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Release(bg)
	if n, err := f.WriteAt(bg, p, off); err != nil || n != len(p) {
		e.t.Fatalf("write %d at %d: %d, %v", len(p), off, n, err)
	}
}

func (e *env) read(ino uint64, n int, off int64) []byte {
	e.t.Helper()
	f, err := e.ns.Open(bg, ino, false)
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Release(bg)
	b := make([]byte, n)
	got, err := f.ReadAt(bg, b, off)
	if err != nil {
		e.t.Fatal(err)
	}
	return b[:got]
}

func (e *env) names(dir uint64) []string {
	var out []string
	if err := e.ns.ReadDir(bg, dir, "", func(d DirEntry) bool { out = append(out, d.Name); return true }); err != nil {
		e.t.Fatal(err)
	}
	return out
}

func TestTreeOperations(t *testing.T) {
	e := newEnv(t)
	d := e.mk(RootIno, "vms", syscall.S_IFDIR|0o755)
	f := e.mk(d.Ino, "vm1.vmx", 0o644)
	v := e.mk(d.Ino, "vm1.raw", 0o600)
	if f.IsVDisk() || !v.IsVDisk() {
		t.Fatalf("vDisk by suffix: vmx %v raw %v", f.IsVDisk(), v.IsVDisk())
	}
	if f.Uid != 1000 || f.Mode != syscall.S_IFREG|0o644 {
		t.Fatalf("attrs %+v", f)
	}
	for _, c := range []struct {
		name string
		err  error
		got  error
	}{
		{"exclusive create of an existing name", ErrExist, func() error {
			_, _, err := e.ns.Create(bg, d.Ino, "vm1.vmx", NewNode{Mode: 0o644, Exclusive: true})
			return err
		}()},
		{"mkdir over a file", ErrExist, func() error {
			_, _, err := e.ns.Create(bg, d.Ino, "vm1.vmx", NewNode{Mode: syscall.S_IFDIR | 0o755})
			return err
		}()},
		{"rmdir non-empty", ErrNotEmpty, e.ns.Rmdir(bg, RootIno, "vms")},
		{"unlink a directory", ErrIsDir, e.ns.Unlink(bg, RootIno, "vms")},
		{"long name", ErrNameTooLong, e.ns.Unlink(bg, RootIno, string(bytes.Repeat([]byte("a"), 256)))},
		{"lookup missing", ErrNotFound, func() error { _, err := e.ns.Lookup(bg, d.Ino, "nope"); return err }()},
		{"lookup in a file", ErrNotDir, func() error { _, err := e.ns.Lookup(bg, f.Ino, "x"); return err }()},
		{"hard link of a directory", ErrPerm, func() error { _, err := e.ns.Link(bg, d.Ino, RootIno, "l"); return err }()},
		{"hard link over a name", ErrExist, func() error { _, err := e.ns.Link(bg, f.Ino, d.Ino, "vm1.vmx"); return err }()},
		{"dir under itself", ErrInvalid, func() error {
			sub := e.mk(d.Ino, "sub", syscall.S_IFDIR|0o755)
			return e.ns.Rename(bg, RootIno, "vms", sub.Ino, "x", 0)
		}()},
	} {
		if !errors.Is(c.got, c.err) {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.err)
		}
	}
	if Errno(ErrPerm) != syscall.EPERM || Errno(ErrMLink) != syscall.EMLINK || Errno(fmt.Errorf("wrapped: %w", ErrNotEmpty)) != syscall.ENOTEMPTY ||
		Errno(errors.New("unknown")) != syscall.EIO || Errno(syscall.ENOSYS) != syscall.EIO {
		t.Fatal("errno mapping")
	}
	// Rename keeps the inode; rename over a file replaces it.
	if err := e.ns.Rename(bg, d.Ino, "vm1.raw", RootIno, "moved.raw", 0); err != nil {
		t.Fatal(err)
	}
	m, err := e.ns.Lookup(bg, RootIno, "moved.raw")
	if err != nil || m.Ino != v.Ino || m.VDisk != v.VDisk || m.Parent != RootIno {
		t.Fatalf("after rename: %+v %v", m, err)
	}
	if err := e.ns.Rename(bg, d.Ino, "vm1.vmx", RootIno, "moved.raw", RenameNoReplace); !errors.Is(err, ErrExist) {
		t.Fatalf("noreplace: %v", err)
	}
	if err := e.ns.Rename(bg, d.Ino, "vm1.vmx", RootIno, "moved.raw", 0); err != nil {
		t.Fatal(err)
	}
	if got := len(e.pool.List()); got != 2 { // the file store and the journal only: the replaced vDisk is gone
		t.Fatalf("vDisks after replacing one: %d", got)
	}
	root, _ := e.ns.GetAttr(bg, RootIno)
	vms, _ := e.ns.GetAttr(bg, d.Ino)
	if root.Nlink != 3 || vms.Nlink != 3 {
		t.Fatalf("nlink root %d vms %d", root.Nlink, vms.Nlink)
	}
	sym, _, err := e.ns.Create(bg, RootIno, "link", NewNode{Mode: syscall.S_IFLNK | 0o777, Target: "vms/sub"})
	if err != nil {
		t.Fatal(err)
	}
	if tg, err := e.ns.Readlink(bg, sym.Ino); err != nil || tg != "vms/sub" {
		t.Fatalf("readlink %q %v", tg, err)
	}
	if got := fmt.Sprint(e.names(RootIno)); got != "[link moved.raw vms]" {
		t.Fatalf("root: %s", got)
	}
	// A page-at-a-time listing resumes after a name.
	var after []string
	e.ns.ReadDir(bg, RootIno, "link", func(d DirEntry) bool { after = append(after, d.Name); return true })
	if fmt.Sprint(after) != "[moved.raw vms]" {
		t.Fatalf("resume: %v", after)
	}
	ino := sym.Ino
	e.restart()
	a, err := e.ns.Lookup(bg, RootIno, "link")
	if err != nil || a.Ino != ino || a.Target != "vms/sub" {
		t.Fatalf("after restart: %+v %v", a, err)
	}
	n := e.mk(RootIno, "new", 0o644)
	if n.Ino <= ino {
		t.Fatalf("inode %d reused after restart (had %d)", n.Ino, ino)
	}
}

func TestRegularFileData(t *testing.T) {
	e := newEnv(t)
	f := e.mk(RootIno, "iso", 0o644)
	big := bytes.Repeat([]byte("0123456789abcdef"), 3<<16) // 3 MiB: crosses chunks
	e.write(f.Ino, big, 1000)
	a, _ := e.ns.GetAttr(bg, f.Ino)
	if a.Size != int64(len(big))+1000 {
		t.Fatalf("size %d", a.Size)
	}
	got := e.read(f.Ino, len(big)+5000, 0)
	if len(got) != len(big)+1000 || !bytes.Equal(got[:1000], make([]byte, 1000)) || !bytes.Equal(got[1000:], big) {
		t.Fatalf("read back %d bytes, mismatch", len(got))
	}
	// Shrink into the middle of a chunk, then grow: the tail reads zeros.
	if _, err := e.ns.SetAttr(bg, f.Ino, SetAttrIn{SetSize: true, Size: chunkSize + 10}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ns.SetAttr(bg, f.Ino, SetAttrIn{SetSize: true, Size: 2 * chunkSize}); err != nil {
		t.Fatal(err)
	}
	got = e.read(f.Ino, 2*chunkSize, 0)
	if !bytes.Equal(got[1000:chunkSize+10], big[:chunkSize+10-1000]) || !bytes.Equal(got[chunkSize+10:], make([]byte, chunkSize-10)) {
		t.Fatal("data after shrink and grow")
	}
	// Punch a hole.
	h, _ := e.ns.Open(bg, f.Ino, true)
	if err := h.Allocate(bg, FallocPunchHole|FallocKeepSize, 2000, 3000); err != nil {
		t.Fatal(err)
	}
	if err := h.Allocate(bg, 0x8, 0, 1); !errors.Is(err, ErrNotSupp) || Errno(err) != syscall.EOPNOTSUPP {
		t.Fatalf("unsupported fallocate mode: %v", err)
	}
	h.Release(bg)
	if got := e.read(f.Ino, 3000, 2000); !bytes.Equal(got, make([]byte, 3000)) {
		t.Fatal("punched range not zero")
	}
	e.kill()
	if got := e.read(f.Ino, 100, 5000); !bytes.Equal(got, big[4000:4100]) {
		t.Fatal("data lost by kill")
	}
}

func TestUnlinkWhileOpen(t *testing.T) {
	e := newEnv(t)
	v := e.mk(RootIno, "d.raw", 0o644)
	e.write(v.Ino, []byte("hello"), 0)
	f := e.mk(RootIno, "log", 0o644)
	e.write(f.Ino, []byte("line"), 0)
	hv, _ := e.ns.Open(bg, v.Ino, false)
	hf, _ := e.ns.Open(bg, f.Ino, false)
	if err := e.ns.Unlink(bg, RootIno, "d.raw"); err != nil {
		t.Fatal(err)
	}
	if err := e.ns.Unlink(bg, RootIno, "log"); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 5)
	if n, err := hv.ReadAt(bg, b, 0); err != nil || string(b[:n]) != "hello" {
		t.Fatalf("read unlinked vDisk: %q %v", b[:n], err)
	}
	if n, err := hf.ReadAt(bg, b, 0); err != nil || string(b[:n]) != "line" {
		t.Fatalf("read unlinked file: %q %v", b[:n], err)
	}
	hf.Release(bg)
	if _, err := e.ns.GetAttr(bg, f.Ino); !errors.Is(err, ErrStale) {
		t.Fatalf("released orphan still there: %v", err)
	}
	// A kill with the vDisk still open: the next start frees it.
	e.kill()
	if _, err := e.ns.GetAttr(bg, v.Ino); !errors.Is(err, ErrStale) {
		t.Fatalf("orphan after kill: %v", err)
	}
	if got := len(e.pool.List()); got != 2 { // the file store and the journal
		t.Fatalf("vDisks after freeing the orphan: %d", got)
	}
}

func TestRestoreFromBackend(t *testing.T) {
	e := newEnv(t)
	d := e.mk(RootIno, "vms", syscall.S_IFDIR|0o755)
	v := e.mk(d.Ino, "vm1.raw", 0o600)
	f := e.mk(d.Ino, "vm1.vmx", 0o644)
	gone := e.mk(RootIno, "gone", 0o644)
	e.write(gone.Ino, bytes.Repeat([]byte("G"), 5000), 0)
	e.write(v.Ino, bytes.Repeat([]byte("V"), 8192), 1<<20)
	e.write(f.Ino, []byte("config"), 0)
	if err := e.ns.Unlink(bg, RootIno, "gone"); err != nil {
		t.Fatal(err)
	}
	vd, _ := e.pool.VDisk(v.VDisk)
	vd.Flush(bg)
	vd.Seal()
	if err := vd.WaitUploaded(bg); err != nil {
		t.Fatal(err)
	}
	if err := e.ns.Backup(bg); err != nil {
		t.Fatal(err)
	}
	// After the backup: a file whose chunk reuses gone's (freed) chunk, and
	// a vDisk the backup does not know.
	reuse := e.mk(RootIno, "reuse", 0o644)
	e.write(reuse.Ino, bytes.Repeat([]byte("R"), 5000), 0)
	late := e.mk(RootIno, "late.raw", 0o644)
	e.write(late.Ino, []byte("late"), 0)
	lv, _ := e.pool.VDisk(late.VDisk)
	lv.Flush(bg)
	lv.Seal()
	lv.WaitUploaded(bg)
	e.ns.files.Flush(bg)
	e.ns.files.Seal()
	e.ns.files.WaitUploaded(bg)
	epoch := e.ns.mu.sb.Epoch

	e.wipe()
	a, err := e.ns.Lookup(bg, d.Ino, "vm1.raw")
	if err != nil || a.Ino != v.Ino || a.Size != 1<<20+8192 {
		t.Fatalf("vDisk after restore: %+v %v", a, err)
	}
	if got := e.read(v.Ino, 8192, 1<<20); !bytes.Equal(got, bytes.Repeat([]byte("V"), 8192)) {
		t.Fatal("vDisk data after restore")
	}
	if got := e.read(f.Ino, 100, 0); string(got) != "config" {
		t.Fatalf("file data after restore: %q", got)
	}
	if _, err := e.ns.Lookup(bg, RootIno, "reuse"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a file created after the backup: %v", err)
	}
	lost, err := e.ns.Lookup(bg, RootIno, LostFound)
	if err != nil {
		t.Fatal(err)
	}
	if got := e.names(lost.Ino); len(got) != 1 {
		t.Fatalf("lost+found: %v", got)
	}
	if e.ns.mu.sb.Epoch != epoch+1 {
		t.Fatalf("epoch %d after restore, was %d", e.ns.mu.sb.Epoch, epoch)
	}
	n := e.mk(RootIno, "new", 0o644)
	if n.Gen != epoch+1 {
		t.Fatalf("new inode generation %d", n.Gen)
	}
	// Every chunk handed out now reads zeros where nothing was written.
	e.write(n.Ino, []byte("x"), 0)
	e.ns.SetAttr(bg, n.Ino, SetAttrIn{SetSize: true, Size: 6000})
	if got := e.read(n.Ino, 6000, 0); !bytes.Equal(got[1:], make([]byte, 5999)) {
		t.Fatal("a reused chunk shows another file's data")
	}
}

// A namespace from before the inode-order entries and the id gets both
// when it is opened.
func TestUpgradeOldNamespace(t *testing.T) {
	e := newEnv(t)
	var want []string
	for _, name := range []string{"b", "a.raw", "c"} {
		mode := uint32(syscall.S_IFREG | 0o644)
		if name == "c" {
			mode = syscall.S_IFDIR | 0o755
		}
		if _, _, err := e.ns.Create(bg, RootIno, name, NewNode{Mode: mode}); err != nil {
			t.Fatal(err)
		}
		want = append(want, name)
	}
	e.restart()
	// The backup every start makes, now, so that the namespace writes no
	// superblock of its own over the old one staged below when it closes.
	if err := e.ns.Backup(bg); err != nil {
		t.Fatal(err)
	}
	// Rewrite the store as the first format had it.
	var ops []volume.MetaOp
	e.cat.Scan(key(kindDirOrder), nil, func(k, _ []byte) bool {
		ops = append(ops, volume.MetaOp{Key: append([]byte(nil), k...)})
		return true
	})
	if len(ops) != 3 {
		t.Fatalf("%d inode-order entries, want 3", len(ops))
	}
	e.ns.mu.Lock()
	old := e.ns.mu.sb.encode()[:sbSizeV1]
	journal := e.ns.mu.sb.Journal
	e.ns.mu.Unlock()
	if err := e.cat.Stage(append(ops, volume.MetaOp{Key: key(kindSuper), Value: old})); err != nil {
		t.Fatal(err)
	}
	if err := e.pool.Delete(bg, journal); err != nil { // the first format had none
		t.Fatal(err)
	}
	e.restart()
	if e.ns.ID() == 0 {
		t.Fatal("no namespace id after the upgrade")
	}
	var got []string
	if err := e.ns.ReadDirOrder(bg, RootIno, 0, func(d DirEntry) bool { got = append(got, d.Name); return true }); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("inode order after the upgrade: %v, want %v", got, want)
	}
	id := e.ns.ID()
	e.restart()
	if e.ns.ID() != id {
		t.Fatalf("namespace id changed across a restart: %x -> %x", id, e.ns.ID())
	}
}

// Punching a hole changes a file's data: its mtime and ctime move.
func TestPunchHoleTouches(t *testing.T) {
	e := newEnv(t)
	a, _, err := e.ns.Create(bg, RootIno, "log.txt", NewNode{Mode: syscall.S_IFREG | 0o644})
	if err != nil {
		t.Fatal(err)
	}
	f, err := e.ns.Open(bg, a.Ino, true)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Release(bg)
	if _, err := f.WriteAt(bg, bytes.Repeat([]byte{1}, 3*chunkSize), 0); err != nil {
		t.Fatal(err)
	}
	before, _ := e.ns.GetAttr(bg, a.Ino)
	if err := f.Allocate(bg, FallocPunchHole|FallocKeepSize, chunkSize, chunkSize); err != nil {
		t.Fatal(err)
	}
	after, _ := e.ns.GetAttr(bg, a.Ino)
	if after.Mtime <= before.Mtime || after.Ctime <= before.Ctime || after.Size != before.Size {
		t.Fatalf("after a punched hole: %+v, before %+v", after, before)
	}
}

// What SyncMeta made durable (an NFS reply, an fsync, a FUSE fsyncdir)
// survives a power loss that keeps a random part of everything else; a
// file whose creation was not synced may be gone, never half there.
func TestSyncedNamespaceChangesSurvivePowerLoss(t *testing.T) {
	for seed := uint64(1); seed <= 8; seed++ {
		e := newEnv(t)
		d := e.mk(RootIno, "vms", syscall.S_IFDIR|0o755)
		synced := e.mk(d.Ino, "vm1.vmx", 0o644)
		e.write(synced.Ino, []byte("memsize = 1024\n"), 0)
		vd := e.mk(d.Ino, "disk.raw", 0o644)
		f, err := e.ns.Open(bg, synced.Ino, true)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(bg); err != nil { // fsync: data and names so far
			t.Fatal(err)
		}
		f.Release(bg)
		if err := e.ns.Rename(bg, d.Ino, "vm1.vmx", d.Ino, "vm1-renamed.vmx", 0); err != nil {
			t.Fatal(err)
		}
		if err := e.ns.SyncMeta(); err != nil {
			t.Fatal(err)
		}
		e.mk(d.Ino, "unsynced.log", 0o644)
		e.powerLoss(rand.New(rand.NewPCG(seed, 5)))
		got, err := e.ns.Lookup(bg, d.Ino, "vm1-renamed.vmx")
		if err != nil || got.Ino != synced.Ino || got.Size != 15 {
			t.Fatalf("seed %d: a synced rename after a power loss: %+v %v", seed, got, err)
		}
		if _, err := e.ns.Lookup(bg, d.Ino, "vm1.vmx"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("seed %d: the old name of a synced rename: %v", seed, err)
		}
		if a, err := e.ns.Lookup(bg, d.Ino, "disk.raw"); err != nil || a.VDisk != vd.VDisk {
			t.Fatalf("seed %d: a synced vDisk: %+v %v", seed, a, err)
		}
		if a, err := e.ns.Lookup(bg, d.Ino, "unsynced.log"); err == nil && a.Ino == 0 {
			t.Fatalf("seed %d: half a file", seed)
		}
	}
}
