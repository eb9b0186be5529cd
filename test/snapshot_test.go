package test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
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

// Snapshots give nobody more than their vDisks: as user nobody, a 0600
// vDisk's snapshot and a snapshot under a 0700 directory cannot be read,
// over FUSE or NFS; a 0644 vDisk's snapshot can.
func TestSnapshotPermissions(t *testing.T) {
	d := startDaemon(t)
	if err := os.Chmod(d.root, 0o711); err != nil { // nobody may reach the mount
		t.Fatal(err)
	}
	cli := func(args ...string) string {
		return run(t, time.Minute, vpoolBin, append(args, "--data-dir", d.dataDir)...)
	}
	if err := os.Mkdir(d.path("private"), 0o700); err != nil {
		t.Fatal(err)
	}
	for name, mode := range map[string]os.FileMode{"priv.raw": 0o600, "pub.raw": 0o644, "private/in.raw": 0o644} {
		if err := os.WriteFile(d.path(name), bytes.Repeat([]byte("secret!\n"), 512), mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(d.path(name), mode) // past the umask
		cli("snapshot", "create", name, "snapA")
	}
	asNobody := func(path string) (string, error) {
		return runErr(time.Minute, "", "runuser", "-u", "nobody", "--", "head", "-c", "8", d.path(path))
	}
	if out, err := asNobody(".snapshots/pub.raw/snapA"); err != nil || out != "secret!\n" {
		t.Fatalf("nobody cannot read a 0644 vDisk's snapshot: %v\n%s", err, out)
	}
	for _, p := range []string{".snapshots/priv.raw/snapA", ".snapshots/private/in.raw/snapA"} {
		if out, err := asNobody(p); err == nil || strings.Contains(out, "secret") {
			t.Fatalf("nobody read %s: %v\n%s", p, err, out)
		}
	}
	if st := stat(t, d.path(".snapshots/priv.raw/snapA")); st.Mode&0o777 != 0o400 || st.Uid != 0 {
		t.Fatalf("snapshot of a 0600 vDisk: mode %#o uid %d, want 0400 and root", st.Mode&0o777, st.Uid)
	}
	c, root := d.nfsClient(1000, 1000)
	for _, p := range [][]string{{"priv.raw", "snapA"}, {"private", "in.raw", "snapA"}} {
		fh, _, err := c.Lookup(root, ".snapshots")
		for _, n := range p {
			if err == nil {
				fh, _, err = c.Lookup(fh, n)
			}
		}
		if err == nil {
			var data []byte
			if data, _, err = c.Read(fh, 0, 8); err == nil {
				t.Fatalf("uid 1000 read .snapshots/%s over NFS: %q", strings.Join(p, "/"), data)
			}
		}
	}
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
// backend, and what the vDisk reads does not change; status shows the
// garbage a deleted snapshot leaves within seconds, and the scrub.
func TestScrubCommand(t *testing.T) {
	d := startDaemon(t, "VPOOL_ENGINE_SCO_SIZE=4MiB", "VPOOL_ENGINE_SEAL_IDLE=1s")
	img := d.path("s.raw")
	run(t, time.Minute, "truncate", "-s", "32M", img)
	for i := 1; i <= 4; i++ {
		run(t, time.Minute, "qemu-io", "-f", "raw", "-c", fmt.Sprintf("write -P %d 0 32M", i), img)
		if i == 1 {
			run(t, time.Minute, vpoolBin, "snapshot", "create", "s.raw", "first", "--data-dir", d.dataDir)
		}
	}
	waitUploaded(t, d)
	// reclaimable is the status's newest count: after a snapshot delete,
	// a count comes within seconds (without a scrub)
	reclaimable := func(after time.Time) (total, vdisk float64) {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for time.Now().Before(deadline) {
			st := d.status()
			if r, ok := st["reclaimable"].(map[string]any); ok {
				if at, err := time.Parse(time.RFC3339Nano, r["at"].(string)); err == nil && at.After(after) {
					for _, v := range st["vdisks"].([]any) {
						if m := v.(map[string]any); m["path"] == "/s.raw" {
							vdisk = m["reclaimable_bytes"].(float64)
						}
					}
					return r["bytes"].(float64), vdisk
				}
			}
			time.Sleep(500 * time.Millisecond)
		}
		t.Fatalf("no count of reclaimable bytes in a minute: %v", d.status())
		return 0, 0
	}
	deleted := time.Now()
	run(t, time.Minute, vpoolBin, "snapshot", "delete", "s.raw", "first", "--data-dir", d.dataDir)
	// three rounds of 32 MiB are garbage now
	if total, vd := reclaimable(deleted); total < 90<<20 || total > 100<<20 || vd != total {
		t.Fatalf("after the snapshot's delete: reclaimable %.0f bytes, of s.raw %.0f; want about 96 MiB", total, vd)
	}
	if st := run(t, time.Minute, vpoolBin, "status", "--data-dir", d.dataDir); !strings.Contains(st, "reclaimable: 9") {
		t.Fatalf("status does not show the reclaimable bytes:\n%s", st)
	}
	scrubbed := time.Now()
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
	if total, _ := reclaimable(scrubbed); total > 8<<20 {
		t.Fatalf("after the scrub: reclaimable %.0f bytes", total)
	}
	d.restart()
	run(t, time.Minute, "qemu-io", "-f", "raw", "-c", "read -P 4 0 32M", img)
}

// Scheduled snapshots from the config file: taken every interval of the
// vDisks the schedule covers, expired by its retention, readable as
// files, and kept across a restart.
func TestScheduledSnapshots(t *testing.T) {
	d := startDaemonConfig(t, "snapshots:\n  schedules:\n    - path: vms/\n      every: 2s\n      keep: {last: 4}\n")
	if err := os.Mkdir(d.path("vms"), 0o755); err != nil {
		t.Fatal(err)
	}
	img, other := d.path("vms/a.raw"), d.path("b.raw")
	run(t, time.Minute, "truncate", "-s", "16M", img, other)
	snaps := func(rel string) []string { // oldest first
		t.Helper()
		ents, err := os.ReadDir(d.path(".snapshots/" + rel))
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		var names []string
		for _, e := range ents {
			if !strings.HasPrefix(e.Name(), "auto-") {
				t.Fatalf("a scheduled snapshot named %q", e.Name())
			}
			names = append(names, e.Name())
		}
		return names
	}
	// waitNewer waits for a scheduled snapshot taken after the moment
	// (the names have whole seconds).
	waitNewer := func(after time.Time) string {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for time.Now().Before(deadline) {
			for _, n := range snaps("vms/a.raw") {
				at, err := time.Parse("20060102-150405", strings.TrimPrefix(n, "auto-"))
				if err != nil {
					t.Fatalf("snapshot %s: %v", n, err)
				}
				if at.After(after.UTC().Truncate(time.Second)) {
					return n
				}
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Fatalf("no scheduled snapshot after %s in a minute: %v", after, snaps("vms/a.raw"))
		return ""
	}
	read := func(pattern, name string) {
		t.Helper()
		run(t, time.Minute, "qemu-io", "-f", "raw", "-r", "-c", "read -P "+pattern+" 0 16M", d.path(".snapshots/vms/a.raw/"+name))
	}
	run(t, time.Minute, "qemu-io", "-f", "raw", "-c", "write -P 0x31 0 16M", img)
	first := waitNewer(time.Now())
	run(t, time.Minute, "qemu-io", "-f", "raw", "-c", "write -P 0x32 0 16M", img)
	read("0x31", first)
	read("0x32", waitNewer(time.Now()))

	// more intervals: the oldest go, four stay
	waitNewer(time.Now().Add(8 * time.Second))
	var got []string
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		if got = snaps("vms/a.raw"); len(got) == 4 { // not between a snapshot and the expiry after it
			break
		}
	}
	if len(got) != 4 || slices.Contains(got, first) {
		t.Fatalf("with keep last 4: %v (the first was %s)", got, first)
	}
	if n := snaps("b.raw"); len(n) != 0 {
		t.Fatalf("b.raw is outside the schedule's directory and has snapshots %v", n)
	}
	restarted := time.Now()
	d.restart()
	after := snaps("vms/a.raw")
	if len(after) < 3 || after[0] < got[0] {
		t.Fatalf("after a restart: %v, before %v", after, got)
	}
	read("0x32", after[len(after)-1])
	waitNewer(restarted) // the schedule goes on
}
