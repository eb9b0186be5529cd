package test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A snapshot of a vDisk holding a mounted ext4 filesystem, taken while
// fio writes to a file in it, is a crash-consistent image: a clone of it
// reads over NFS as the snapshot file does through FUSE, recovers its
// journal with e2fsck and is then clean, and holds the tree synced before
// the snapshot. Snapshots are read-only, hidden from the root's listing,
// survive a restart, cannot be deleted while cloned, and can be deleted.
func TestSnapshotOfLiveExt4(t *testing.T) {
	d := startDaemon(t)
	img := d.path("ext4.raw")
	run(t, time.Minute, "truncate", "-s", "512M", img)
	dev := loop(t, img)
	run(t, time.Minute, "mkfs.ext4", "-q", dev)
	g := filepath.Join(d.root, "guest")
	mount(t, dev, g)
	src, err := filepath.Abs("../volume")
	if err != nil {
		t.Fatal(err)
	}
	run(t, time.Minute, "cp", "-a", src, filepath.Join(g, "tree"))
	run(t, time.Minute, "sync")

	fio := make(chan string, 1)
	go func() {
		out, _ := runErr(2*time.Minute, g, "fio", "--name=busy", "--filename=busy.dat", "--rw=randwrite", "--bs=4k",
			"--size=64M", "--direct=1", "--ioengine=libaio", "--iodepth=8", "--time_based", "--runtime=6")
		fio <- out
	}()
	time.Sleep(2 * time.Second)
	start := time.Now()
	out := run(t, time.Minute, vpoolBin, "snapshot", "create", img, "live", "--data-dir", d.dataDir)
	took := time.Since(start)
	if !strings.Contains(out, "@live") {
		t.Fatalf("snapshot create: %s", out)
	}
	t.Logf("snapshot taken in %v while fio wrote", took)
	if out := <-fio; !strings.Contains(out, "WRITE:") {
		t.Fatalf("fio did not run:\n%s", out)
	}
	if out, err := runErr(time.Minute, "", vpoolBin, "snapshot", "create", img, "live", "--data-dir", d.dataDir); err == nil || !strings.Contains(out, "already exists") {
		t.Fatalf("a second snapshot of the same name: %v\n%s", err, out)
	}
	list := run(t, time.Minute, vpoolBin, "snapshot", "list", "ext4.raw", "--data-dir", d.dataDir)
	if !strings.Contains(list, "live") || !strings.Contains(list, "512MiB") {
		t.Fatalf("snapshot list:\n%s", list)
	}

	names, err := os.ReadDir(d.mnt)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if n.Name() == ".snapshots" {
			t.Fatal(".snapshots is listed in the root")
		}
	}
	snap := d.path(".snapshots/ext4.raw/live")
	if fi, err := os.Stat(snap); err != nil || fi.Size() != 512<<20 || fi.Mode().Perm()&0o222 != 0 {
		t.Fatalf("snapshot file: %v, %v", fi, err)
	}
	if _, err := os.OpenFile(snap, os.O_WRONLY, 0); !isErrno(err, syscall.EROFS) {
		t.Fatalf("open a snapshot for writing: %v, want EROFS", err)
	}

	// A clone of the snapshot, in another directory: ready at once; read
	// over NFS (as a VM booting from it would), it is the snapshot.
	if err := os.Mkdir(d.path("vms"), 0o755); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	out = run(t, time.Minute, vpoolBin, "clone", "ext4.raw@live", "vms/clone.raw", "--data-dir", d.dataDir)
	t.Logf("clone made in %v: %s", time.Since(start), strings.TrimSpace(out))
	clone := d.path("vms/clone.raw")
	d.nfs(2*time.Minute, "qemu-img", "compare", "-f", "raw", "-F", "raw", nfsURL+"vms/clone.raw", snap)
	d.nfs(2*time.Minute, "qemu-img", "compare", "-f", "raw", "-F", "raw", nfsURL+".snapshots/ext4.raw/live", snap)
	// Its journal recovers (a crash-consistent image), then it is clean
	// and holds the tree synced before the snapshot.
	cdev := loop(t, clone)
	if out, err := runErr(2*time.Minute, "", "e2fsck", "-fy", cdev); err != nil {
		if ee, ok := err.(interface{ ExitCode() int }); !ok || ee.ExitCode() > 1 {
			t.Fatalf("e2fsck -fy of the clone: %v\n%s", err, out)
		}
	}
	if out := run(t, 2*time.Minute, "e2fsck", "-fn", cdev); !strings.Contains(out, "files") {
		t.Fatalf("e2fsck -fn: %s", out)
	}
	cg := filepath.Join(d.root, "clone")
	mount(t, cdev, cg)
	if out, err := runErr(time.Minute, "", "diff", "-r", src, filepath.Join(cg, "tree")); err != nil {
		t.Fatalf("the clone's tree differs:\n%s", out)
	}
	run(t, time.Minute, "umount", cg)
	run(t, time.Minute, "losetup", "-d", cdev)
	// The snapshot has a clone: it cannot be deleted, nor the vDisk.
	if out, err := runErr(time.Minute, "", vpoolBin, "snapshot", "delete", img, "live", "--data-dir", d.dataDir); err == nil || !strings.Contains(out, "has clones") {
		t.Fatalf("delete a snapshot with a clone: %v\n%s", err, out)
	}

	sum := run(t, time.Minute, "md5sum", snap)
	run(t, time.Minute, "umount", g)
	run(t, time.Minute, "losetup", "-d", dev)
	d.restart()
	if again := run(t, time.Minute, "md5sum", snap); again != sum {
		t.Fatalf("the snapshot changed across a restart: %s, then %s", sum, again)
	}
	if err := os.Remove(img); !isErrno(err, syscall.EBUSY) {
		t.Fatalf("rm of a vDisk with a clone: %v, want EBUSY", err)
	}
	if again := run(t, time.Minute, "md5sum", snap); again != sum {
		t.Fatal("the snapshot changed when its clone was written")
	}
	if err := os.Remove(clone); err != nil {
		t.Fatal(err)
	}
	run(t, time.Minute, vpoolBin, "snapshot", "delete", img, "live", "--data-dir", d.dataDir)
	if _, err := os.Stat(snap); !os.IsNotExist(err) {
		t.Fatalf("deleted snapshot still there: %v", err)
	}
	if out, err := runErr(time.Minute, "", vpoolBin, "snapshot", "delete", img, "live", "--data-dir", d.dataDir); err == nil || !strings.Contains(out, "no such snapshot") {
		t.Fatalf("delete a deleted snapshot: %v\n%s", err, out)
	}
}

func isErrno(err error, want syscall.Errno) bool {
	var e syscall.Errno
	for err != nil {
		if x, ok := err.(syscall.Errno); ok {
			e = x
			break
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			break
		}
		err = u.Unwrap()
	}
	return e == want
}

// `vpool snapshot rollback` restores a vDisk and drops later snapshots;
// it is refused while the vDisk is open for writing, and works right
// after NFS writes (the gateway's idle handles do not hold it).
func TestSnapshotRollback(t *testing.T) {
	d := startDaemon(t)
	img := d.path("r.raw")
	io := func(cmd, file string) { run(t, time.Minute, "qemu-io", "-f", "raw", "-c", cmd, file) }
	cli := func(args ...string) string {
		return run(t, time.Minute, vpoolBin, append(args, "--data-dir", d.dataDir)...)
	}
	run(t, time.Minute, "qemu-img", "create", "-f", "raw", img, "64M")
	io("write -P 0x11 0 4M", img)
	cli("snapshot", "create", "r.raw", "s1")
	io("write -P 0x22 0 2M", img)
	cli("snapshot", "create", "r.raw", "s2")
	run(t, time.Minute, "truncate", "-s", "128M", img)
	io("write -P 0x33 100M 1M", img)

	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	out, err := runErr(time.Minute, "", vpoolBin, "snapshot", "rollback", "r.raw", "s1", "--data-dir", d.dataDir)
	f.Close()
	if err == nil || !strings.Contains(out, "open for writing") {
		t.Fatalf("rollback while open for writing: %v\n%s", err, out)
	}
	cli("snapshot", "rollback", img, "s1")
	io("read -P 0x11 0 4M", img)
	if fi, err := os.Stat(img); err != nil || fi.Size() != 64<<20 {
		t.Fatalf("size after the rollback: %v, %v", fi, err)
	}
	if list := cli("snapshot", "list", "r.raw"); strings.Contains(list, "s2") || !strings.Contains(list, "s1") {
		t.Fatalf("snapshots after the rollback:\n%s", list)
	}
	if _, err := os.Stat(d.path(".snapshots/r.raw/s2")); !os.IsNotExist(err) {
		t.Fatalf("the dropped snapshot's file: %v", err)
	}

	d.nfs(time.Minute, "qemu-io", "-f", "raw", "-c", "write -P 0x44 0 1M", nfsURL+"r.raw")
	cli("snapshot", "rollback", "r.raw", "s1")
	d.nfs(time.Minute, "qemu-io", "-f", "raw", "-c", "read -P 0x11 0 4M", nfsURL+"r.raw")
	d.restart()
	io("read -P 0x11 0 4M", img)
	io("read -P 0 4M 60M", img)
}

// A template is cloned without a snapshot name; the clone is flattened
// (with progress) and then stands alone: the template can go.
func TestCloneTemplateAndFlatten(t *testing.T) {
	d := startDaemon(t)
	base, vm := d.path("base.raw"), d.path("vm1.raw")
	io := func(cmd, file string) { run(t, time.Minute, "qemu-io", "-f", "raw", "-c", cmd, file) }
	run(t, time.Minute, "qemu-img", "create", "-f", "raw", base, "256M")
	io("write -P 0x5a 0 64M", base)
	run(t, time.Minute, vpoolBin, "template", "set", base, "--data-dir", d.dataDir)
	run(t, time.Minute, vpoolBin, "clone", "base.raw", "vm1.raw", "--data-dir", d.dataDir)
	io("read -P 0x5a 0 64M", vm)
	io("write -P 0x6b 0 1M", vm)
	io("read -P 0x5a 0 1M", base)
	if err := os.Remove(base); !isErrno(err, syscall.EBUSY) {
		t.Fatalf("rm of a template with a clone: %v, want EBUSY", err)
	}
	if out, err := runErr(time.Minute, "", vpoolBin, "clone", "base.raw@nope", "vm2.raw", "--data-dir", d.dataDir); err == nil || !strings.Contains(out, "no such snapshot") {
		t.Fatalf("clone of a snapshot that does not exist: %v\n%s", err, out)
	}
	if out, err := runErr(time.Minute, "", vpoolBin, "clone", "base.raw", "vm2.txt", "--data-dir", d.dataDir); err == nil || !strings.Contains(out, "must end in") {
		t.Fatalf("clone to a name that is not a vDisk's: %v\n%s", err, out)
	}
	out := run(t, 5*time.Minute, vpoolBin, "clone", "flatten", vm, "--data-dir", d.dataDir)
	if !strings.Contains(out, "of 256 block-map pages (100%)") || !strings.Contains(out, "is flattened") {
		t.Fatalf("clone flatten: %s", out)
	}
	if err := os.Remove(base); err != nil {
		t.Fatalf("rm of the template after its clone was flattened: %v", err)
	}
	io("read -P 0x6b 0 1M", vm)
	io("read -P 0x5a 1M 63M", vm)
	d.restart()
	io("read -P 0x6b 0 1M", vm)
	io("read -P 0x5a 1M 63M", vm)
}

// `vpool scrub` frees the space of overwritten data once it is on the
// backend, and what the vDisk reads does not change; status shows it.
func TestScrubCommand(t *testing.T) {
	d := startDaemon(t, "VPOOL_ENGINE_SCO_SIZE=4MiB", "VPOOL_ENGINE_SEAL_IDLE=1s")
	img := d.path("s.raw")
	run(t, time.Minute, "truncate", "-s", "32M", img)
	for i := 1; i <= 4; i++ {
		run(t, time.Minute, "qemu-io", "-f", "raw", "-c", fmt.Sprintf("write -P %d 0 32M", i), img)
	}
	waitUploaded(t, d)
	out := run(t, 5*time.Minute, vpoolBin, "scrub", "s.raw", "--data-dir", d.dataDir)
	var scanned, freed int
	if _, err := fmt.Sscanf(out, "scrubbed %d SCOs", &scanned); err != nil {
		t.Fatalf("scrub: %s", out)
	}
	if i := strings.Index(out, ": "); i > 0 {
		fmt.Sscanf(out[i+2:], "%d freed", &freed)
	}
	// three rounds of 8 SCOs are garbage
	if freed < 22 {
		t.Fatalf("scrub freed %d SCOs, want about 24:\n%s", freed, out)
	}
	run(t, time.Minute, "qemu-io", "-f", "raw", "-c", "read -P 4 0 32M", img)
	st := run(t, time.Minute, vpoolBin, "status", "--data-dir", d.dataDir)
	if !strings.Contains(st, "scrub: last pass") {
		t.Fatalf("status does not show the scrub:\n%s", st)
	}
	d.restart()
	run(t, time.Minute, "qemu-io", "-f", "raw", "-c", "read -P 4 0 32M", img)
}
