package test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The tree behaves like a local POSIX filesystem for what VMs and admins
// do, and all of it survives a restart with the same inode numbers.
func TestPOSIXTree(t *testing.T) {
	d := startDaemon(t)
	p := d.path
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	wantErr := func(what string, err, want error) {
		t.Helper()
		if !errors.Is(err, want) {
			t.Errorf("%s: got %v, want %v", what, err, want)
		}
	}
	must(os.Mkdir(p("vm1"), 0o755))
	wantErr("mkdir existing", os.Mkdir(p("vm1"), 0o755), syscall.EEXIST)
	must(os.WriteFile(p("vm1/vm1.vmx"), []byte("a = 1\n"), 0o644))
	_, err := os.OpenFile(p("vm1/vm1.vmx"), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	wantErr("O_EXCL on existing", err, syscall.EEXIST)
	wantErr("rmdir non-empty", syscall.Rmdir(p("vm1")), syscall.ENOTEMPTY)
	wantErr("hard link of a directory", os.Link(p("vm1"), p("vm1-hard")), syscall.EPERM)
	wantErr("long name", os.WriteFile(p(strings.Repeat("n", 256)), nil, 0o644), syscall.ENAMETOOLONG)
	wantErr("unlink a directory", syscall.Unlink(p("vm1")), syscall.EISDIR)
	_, err = os.ReadFile(p("missing"))
	wantErr("missing file", err, syscall.ENOENT)

	// Atomic replace (how editors and VMware save .vmx files).
	must(os.WriteFile(p("vm1/vm1.vmx.tmp"), []byte("a = 2\n"), 0o644))
	must(os.Rename(p("vm1/vm1.vmx.tmp"), p("vm1/vm1.vmx")))
	if b, _ := os.ReadFile(p("vm1/vm1.vmx")); string(b) != "a = 2\n" {
		t.Fatalf("after rename over: %q", b)
	}
	// Unlink while open: still readable and writable through the handle.
	f, err := os.OpenFile(p("vm1/vmware.log"), os.O_CREATE|os.O_RDWR|os.O_APPEND, 0o644)
	must(err)
	_, err = f.WriteString("line 1\n")
	must(err)
	must(os.Remove(p("vm1/vmware.log")))
	_, err = f.WriteString("line 2\n")
	must(err)
	b := make([]byte, 64)
	n, _ := f.ReadAt(b, 0)
	if string(b[:n]) != "line 1\nline 2\n" {
		t.Fatalf("unlinked open file reads %q", b[:n])
	}
	must(f.Close())
	// Lock files, modes, owners, times, symlinks.
	lck, err := os.OpenFile(p("vm1/vm1.vmdk.lck"), os.O_CREATE|os.O_RDWR, 0o600)
	must(err)
	must(syscall.Flock(int(lck.Fd()), syscall.LOCK_EX|syscall.LOCK_NB))
	lck.Close()
	must(os.Chmod(p("vm1/vm1.vmx"), 0o600))
	must(os.Chown(p("vm1/vm1.vmx"), 1234, 5678))
	when := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	must(os.Chtimes(p("vm1/vm1.vmx"), when, when))
	must(os.Symlink("vm1/vm1.vmx", p("current.vmx")))
	if b, err := os.ReadFile(p("current.vmx")); err != nil || string(b) != "a = 2\n" {
		t.Fatalf("through the symlink: %q %v", b, err)
	}
	// A vDisk: thin, resizable, renamed while open.
	must(run1(t, "truncate", "-s", "100G", p("vm1/disk.raw")))
	v, err := os.OpenFile(p("vm1/disk.raw"), os.O_RDWR, 0)
	must(err)
	_, err = v.WriteAt(bytes.Repeat([]byte{7}, 1<<20), 50<<30)
	must(err)
	must(os.Rename(p("vm1/disk.raw"), p("vm1/renamed.raw")))
	_, err = v.WriteAt(bytes.Repeat([]byte{8}, 4096), 1<<20)
	must(err)
	must(v.Sync())
	if off, err := v.Seek(0, 3 /* SEEK_DATA */); err != nil || off != 1<<20 {
		t.Fatalf("SEEK_DATA: %d %v", off, err)
	}
	if off, err := v.Seek(1<<20, 4 /* SEEK_HOLE */); err != nil || off != 1<<20+4096 {
		t.Fatalf("SEEK_HOLE: %d %v", off, err)
	}
	must(syscall.Fallocate(int(v.Fd()), 0x02|0x01 /* PUNCH_HOLE|KEEP_SIZE */, 50<<30, 4096))
	wantErr("fallocate collapse-range", syscall.Fallocate(int(v.Fd()), 0x08, 0, 4096), syscall.EOPNOTSUPP)
	must(v.Close())
	st := stat(t, p("vm1/renamed.raw"))
	if st.Size != 100<<30 || st.Blocks*512 != 1<<20 { // 1 MiB + 4 KiB written, 4 KiB punched
		t.Fatalf("vDisk size %d, allocated %d bytes", st.Size, st.Blocks*512)
	}
	must(run1(t, "truncate", "-s", "10G", p("vm1/renamed.raw")))
	if st := stat(t, p("vm1/renamed.raw")); st.Size != 10<<30 || st.Blocks*512 != 4096 {
		t.Fatalf("after shrinking: size %d, allocated %d", st.Size, st.Blocks*512)
	}
	// Permissions are enforced for other users (default_permissions).
	must(os.WriteFile(p("secret"), []byte("x"), 0o600))
	if out, err := runErr(time.Minute, "", "runuser", "-u", "nobody", "--", "cat", p("secret")); err == nil ||
		!strings.Contains(out, "Permission denied") {
		t.Errorf("another user read a 0600 file of root's: %v %s", err, out)
	}
	if out, err := runErr(time.Minute, "", "runuser", "-u", "nobody", "--", "touch", p("vm1/nobody")); err == nil {
		t.Errorf("another user created a file in root's 0755 directory: %s", out)
	}
	// rm of a vDisk deletes its backend objects.
	must(run1(t, "truncate", "-s", "1G", p("gone.raw")))
	g, err := os.OpenFile(p("gone.raw"), os.O_RDWR, 0)
	must(err)
	_, err = g.WriteAt(bytes.Repeat([]byte{9}, 1<<20), 0)
	must(err)
	must(g.Close())
	id := vdiskID(t, d, "/gone.raw")
	for start := time.Now(); backendObjects(t, d, id) == 0; time.Sleep(100 * time.Millisecond) {
		if time.Since(start) > 10*time.Second {
			t.Fatalf("vDisk %s has no backend objects (manifest) 10 s after its creation", id)
		}
	}
	must(os.Remove(p("gone.raw")))
	if n := backendObjects(t, d, id); n != 0 {
		t.Fatalf("vDisk %s still has %d backend objects after rm", id, n)
	}
	// Many small files stay cheap.
	must(os.Mkdir(p("many"), 0o755))
	start := time.Now()
	for i := 0; i < 2000; i++ {
		must(os.WriteFile(p(fmt.Sprintf("many/f%04d", i)), []byte(fmt.Sprintf("file %d\n", i)), 0o644))
	}
	ents, err := os.ReadDir(p("many"))
	if err != nil || len(ents) != 2000 {
		t.Fatalf("readdir of 2000 files: %d %v", len(ents), err)
	}
	t.Logf("2000 small files created and listed in %s", time.Since(start).Round(time.Millisecond))
	var fs syscall.Statfs_t
	must(syscall.Statfs(d.mnt, &fs))
	if fs.Blocks == 0 || fs.Bavail == 0 || fs.Bavail > fs.Blocks {
		t.Fatalf("statfs: %+v", fs)
	}

	inodes := map[string]uint64{}
	for _, name := range []string{"vm1", "vm1/vm1.vmx", "vm1/renamed.raw", "current.vmx", "many/f1999"} {
		inodes[name] = lstat(t, p(name)).Ino
	}
	d.restart()
	for name, ino := range inodes {
		if got := lstat(t, p(name)).Ino; got != ino {
			t.Errorf("%s: inode %d after restart, was %d", name, got, ino)
		}
	}
	st = stat(t, p("vm1/vm1.vmx"))
	if st.Mode&0o7777 != 0o600 || st.Uid != 1234 || st.Gid != 5678 || st.Mtim.Sec != when.Unix() {
		t.Fatalf("attributes after restart: mode %o uid %d gid %d mtime %d", st.Mode, st.Uid, st.Gid, st.Mtim.Sec)
	}
	if b, _ := os.ReadFile(p("many/f1234")); string(b) != "file 1234\n" {
		t.Fatalf("small file after restart: %q", b)
	}
	if _, err := os.Stat(p("vm1/vmware.log")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("unlinked file after restart: %v", err)
	}
}

// A multi-GiB regular file (an ISO image) is written, read back and kept.
func TestLargeRegularFile(t *testing.T) {
	d := startDaemon(t)
	iso := d.path("install.iso")
	const size = 2<<30 + 12345
	f, err := os.Create(iso)
	if err != nil {
		t.Fatal(err)
	}
	want := crc32.New(crc32.MakeTable(crc32.Castagnoli))
	buf := make([]byte, 1<<20)
	x := uint64(0x2545F4914F6CDD1D)
	for done := 0; done < size; {
		chunk := buf[:min(len(buf), size-done)]
		for i := 0; i+8 <= len(chunk); i += 8 {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			binary.LittleEndian.PutUint64(chunk[i:], x)
		}
		if _, err := f.Write(chunk); err != nil {
			t.Fatal(err)
		}
		want.Write(chunk)
		done += len(chunk)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		t.Helper()
		f, err := os.Open(iso)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		got := crc32.New(crc32.MakeTable(crc32.Castagnoli))
		n, err := io.Copy(got, f)
		if err != nil || n != size || got.Sum32() != want.Sum32() {
			t.Fatalf("%s: read %d bytes (%v), crc %08x, want %d bytes crc %08x", when, n, err, got.Sum32(), size, want.Sum32())
		}
	}
	t0 := time.Now()
	check("after writing")
	t1 := time.Now()
	d.restart()
	t2 := time.Now()
	check("after a restart")
	t.Logf("read %s, restart %s, read %s", t1.Sub(t0), t2.Sub(t1), time.Since(t2))
}

// vdiskID finds a vDisk's id in `vpool status` by its path.
func vdiskID(t *testing.T, d *daemon, path string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, v := range d.status()["vdisks"].([]any) {
			if m := v.(map[string]any); m["path"] == path {
				return m["id"].(string)
			}
		}
		time.Sleep(200 * time.Millisecond) // status samples once a second
	}
	t.Fatalf("no vDisk %s in vpool status", path)
	return ""
}

// backendObjects counts the objects of a vDisk on the ASDs (their
// directories are named by the escaped object name, which holds the id).
func backendObjects(t *testing.T, d *daemon, id string) int {
	t.Helper()
	dirs, _ := filepath.Glob(filepath.Join(d.dataDir, "asd", "*", "objects", "*"+id+"*"))
	return len(dirs)
}

func run1(t *testing.T, name string, args ...string) error {
	t.Helper()
	out, err := runErr(time.Minute, "", name, args...)
	if err != nil {
		return fmt.Errorf("%s: %w: %s", name, err, out)
	}
	return nil
}

func stat(t *testing.T, path string) syscall.Stat_t {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func lstat(t *testing.T, path string) syscall.Stat_t {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st
}
