package test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// qemu-img and qemu-io on vDisks in the mount: every I/O mode qemu uses.
func TestQemuClients(t *testing.T) {
	d := startDaemon(t)
	img := d.path("vm1.raw")
	run(t, time.Minute, "qemu-img", "create", "-f", "raw", img, "1G")
	if out := run(t, time.Minute, "qemu-img", "info", "--output=json", img); !strings.Contains(out, `"virtual-size": 1073741824`) {
		t.Fatalf("qemu-img info: %s", out)
	}
	io := func(args ...string) string {
		t.Helper()
		out := run(t, 2*time.Minute, "qemu-io", append([]string{"-f", "raw"}, args...)...)
		if strings.Contains(out, "failed") || strings.Contains(out, "error") {
			t.Fatalf("qemu-io %v: %s", args, out)
		}
		return out
	}
	io("-c", "write -P 0xa1 0 4M", "-c", "write -P 0xa2 5M 4k", "-c", "read -P 0xa1 0 4M", img)                                 // buffered
	io("--cache=none", "-i", "native", "-c", "write -P 0xb1 16M 1M", "-c", "aio_write -P 0xb2 20M 64k", "-c", "aio_flush", img) // O_DIRECT + libaio
	io("--cache=none", "-i", "io_uring", "-c", "write -P 0xc1 32M 512k", "-c", "read -P 0xc1 32M 512k", img)
	io("-c", "write -z 0 1M", "-c", "discard 2M 1M", "-c", "read -P 0 0 1M", "-c", "read -P 0xa1 1M 1M", "-c", "read -P 0 2M 1M", img)
	io("--cache=none", "-i", "native", "-c", "read -P 0xb1 16M 1M", "-c", "read -P 0xb2 20M 64k", "-c", "read -P 0xa2 5M 4k", img)

	// map shows data only where it was written (SEEK_DATA/SEEK_HOLE).
	m := run(t, time.Minute, "qemu-img", "map", "--output=json", img)
	if !strings.Contains(m, `"start": 0, "length": 1048576, "depth": 0, "present": false, "zero": true`) &&
		!strings.Contains(m, `"start": 0, "length": 1048576, "depth": 0, "present": true, "zero": true`) {
		t.Fatalf("qemu-img map: the zeroed first MiB is not a hole:\n%s", m)
	}
	if !strings.Contains(m, `"start": 16777216, "length": 1048576, "depth": 0, "present": true, "zero": false, "data": true`) {
		t.Fatalf("qemu-img map: the written MiB at 16M is not data:\n%s", m)
	}
	// convert between vDisks (and to a plain file outside the mount), compare.
	run(t, 2*time.Minute, "qemu-img", "convert", "-O", "raw", img, d.path("copy.raw"))
	run(t, 2*time.Minute, "qemu-img", "compare", img, d.path("copy.raw"))
	outside := filepath.Join(d.root, "outside.raw")
	run(t, 2*time.Minute, "qemu-img", "convert", "-t", "none", "-O", "raw", img, outside)
	run(t, 2*time.Minute, "qemu-img", "compare", "-f", "raw", "-F", "raw", outside, d.path("copy.raw"))
	st, err := os.Stat(d.path("copy.raw"))
	if err != nil || st.Size() != 1<<30 {
		t.Fatalf("copy: %v %v", st, err)
	}
	d.restart()
	run(t, 2*time.Minute, "qemu-img", "compare", "-f", "raw", "-F", "raw", outside, img)
}

// fio random writes with crc32c verification, libaio, O_DIRECT, depth 16.
func TestFioVerify(t *testing.T) {
	d := startDaemon(t)
	img := d.path("fio.raw")
	run(t, time.Minute, "truncate", "-s", "1G", img)
	out := runIn(t, d.root, 5*time.Minute, "fio", "--name=verify", "--filename="+img, "--rw=randwrite", "--bs=4k",
		"--size=256M", "--direct=1", "--ioengine=libaio", "--iodepth=16", "--verify=crc32c", "--do_verify=1",
		"--verify_fatal=1", "--randrepeat=0")
	if !strings.Contains(out, "err= 0") {
		t.Fatalf("fio: %s", out)
	}
	// Mixed block sizes, verified after a restart.
	run(t, time.Minute, "truncate", "-s", "1G", d.path("mixed.raw"))
	args := []string{"--name=mixed", "--filename=" + d.path("mixed.raw"), "--rw=randwrite", "--bsrange=4k-1m", "--size=128M",
		"--direct=1", "--ioengine=libaio", "--iodepth=16", "--verify=crc32c", "--verify_state_save=1", "--do_verify=0"}
	runIn(t, d.root, 5*time.Minute, "fio", args...)
	d.restart()
	runIn(t, d.root, 5*time.Minute, "fio", append(args[:len(args)-2], "--verify_only", "--verify_state_load=1", "--verify_fatal=1")...)
}

// A guest filesystem on a loop device over a vDisk survives a restart.
func TestGuestExt4(t *testing.T) {
	d := startDaemon(t)
	img := d.path("ext4.raw")
	run(t, time.Minute, "truncate", "-s", "2G", img)
	dev := loop(t, img)
	run(t, 2*time.Minute, "mkfs.ext4", "-q", dev)
	g := filepath.Join(d.root, "guest")
	mount(t, dev, g)
	src, err := filepath.Abs("..") // the source tree: a few hundred files of all sizes
	if err != nil {
		t.Fatal(err)
	}
	tree := filepath.Join(g, "tree")
	run(t, 2*time.Minute, "cp", "-a", src, tree)
	os.RemoveAll(filepath.Join(tree, ".git"))
	run(t, time.Minute, "sync")
	run(t, time.Minute, "umount", g)
	if out := run(t, 2*time.Minute, "e2fsck", "-fn", dev); !strings.Contains(out, "clean") && !strings.Contains(out, "files") {
		t.Fatalf("e2fsck: %s", out)
	}
	run(t, time.Minute, "losetup", "-d", dev)
	d.restart()
	dev = loop(t, img)
	run(t, 2*time.Minute, "e2fsck", "-fn", dev)
	mount(t, dev, g)
	out, err := runErr(2*time.Minute, "", "diff", "-r", "--exclude=.git", src, tree)
	if err != nil {
		t.Fatalf("the tree differs after a restart:\n%s", out)
	}
}

// kill -9 during fio writes with fsyncs: after a restart every write fio
// completed verifies (completed writes survive a daemon crash even
// without a flush). fio's saved state also counts the writes that failed
// with ECONNABORTED when the daemon died (at most iodepth of them), so
// those few may read as never written; TestCrashAcknowledgedWrites checks
// the exact rule write by write.
func TestCrashDuringFio(t *testing.T) {
	d := startDaemon(t)
	img := d.path("crash.raw")
	run(t, time.Minute, "truncate", "-s", "1G", img)
	const iodepth = 16
	args := []string{"--name=crash", "--filename=" + img, "--rw=randwrite", "--bs=4k", "--size=256M", "--direct=1",
		"--ioengine=libaio", fmt.Sprintf("--iodepth=%d", iodepth), "--verify=crc32c", "--fsync=16", "--rate_iops=4000"}
	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := runErr(5*time.Minute, d.root, "fio", append(args, "--do_verify=0", "--verify_state_save=1")...)
		done <- result{out, err}
	}()
	time.Sleep(4 * time.Second)
	d.kill()
	r := <-done
	if r.err == nil {
		t.Fatalf("fio finished before the crash; the test proves nothing:\n%s", r.out)
	}
	if _, err := os.Stat(filepath.Join(d.root, "local-crash-0-verify.state")); err != nil {
		t.Fatalf("fio saved no verify state: %v\n%s", err, r.out)
	}
	t.Logf("fio before the crash: %s", grepLine(r.out, "issued rwts"))
	d.start() // over the stale mount the kill left
	out, _ := runErr(5*time.Minute, d.root, "fio", append(args, "--verify_only", "--verify_state_load=1")...)
	bad := strings.Count(out, "verify: bad")
	if bad > iodepth || !strings.Contains(out, "READ:") {
		t.Fatalf("fio verify after the crash: %d bad blocks (at most %d writes were in flight):\n%s", bad, iodepth, out)
	}
	t.Logf("verified after kill -9: %s; %d blocks in flight at the crash", grepLine(out, "READ:"), bad)
}

// kill -9 while writers do O_DIRECT writes with a flush every 32: every
// write acknowledged before the crash reads back after the restart; a
// write in flight at the crash reads as either its old or new data.
func TestCrashAcknowledgedWrites(t *testing.T) {
	d := startDaemon(t)
	img := d.path("acked.raw")
	const blocks, writers = 16384, 4 // 64 MiB
	run(t, time.Minute, "truncate", "-s", fmt.Sprint(blocks*4096), img)
	type state struct {
		acked    map[int]uint64 // block -> last acknowledged sequence number
		inflight int            // block of the write that failed, -1: none
		inSeq    uint64
		writes   int
	}
	states := make([]*state, writers)
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		st := &state{acked: map[int]uint64{}, inflight: -1}
		states[w] = st
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			f, err := os.OpenFile(img, os.O_RDWR|syscall.O_DIRECT, 0)
			if err != nil {
				t.Error(err)
				return
			}
			defer f.Close()
			buf := alignedBlock()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for seq := uint64(1); ; seq++ {
				b := rng.IntN(blocks/writers)*writers + w // each writer owns its blocks
				fillBlock(buf, b, seq)
				if _, err := f.WriteAt(buf, int64(b)*4096); err != nil {
					st.inflight, st.inSeq = b, seq
					return
				}
				st.acked[b] = seq
				st.writes++
				if seq%32 == 0 {
					if err := f.Sync(); err != nil {
						return
					}
				}
			}
		}(w)
	}
	time.Sleep(3 * time.Second)
	d.kill()
	wg.Wait()
	d.start()
	if !strings.Contains(d.log(), "detaching a stale mount") {
		t.Errorf("the restart did not report the stale mount the kill left:\n%s", d.log())
	}
	f, err := os.OpenFile(img, os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := alignedBlock()
	total := 0
	for _, st := range states {
		total += st.writes
		for b, seq := range st.acked {
			if _, err := f.ReadAt(buf, int64(b)*4096); err != nil {
				t.Fatal(err)
			}
			got := binary.LittleEndian.Uint64(buf[8:])
			ok := binary.LittleEndian.Uint64(buf) == uint64(b) && got == seq
			if b == st.inflight && got == st.inSeq {
				ok = true
			}
			if !ok || !checkBlock(buf) {
				t.Fatalf("block %d: read block %d seq %d, want seq %d (acknowledged before the crash)",
					b, binary.LittleEndian.Uint64(buf), got, seq)
			}
		}
	}
	if total < 1000 {
		t.Fatalf("only %d writes before the crash; the test proves little", total)
	}
	t.Logf("%d acknowledged writes verified after kill -9", total)
}

func alignedBlock() []byte { return alignedBuf(4096) }

// alignedBuf is n bytes aligned for O_DIRECT (anonymous memory, never
// freed: tests use few).
func alignedBuf(n int) []byte {
	b, err := syscall.Mmap(-1, 0, n, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		panic(err)
	}
	return b
}

// fillBlock writes block number, sequence number, and a pattern derived
// from both, so that a torn or misplaced block is detected.
func fillBlock(buf []byte, b int, seq uint64) {
	binary.LittleEndian.PutUint64(buf, uint64(b))
	binary.LittleEndian.PutUint64(buf[8:], seq)
	x := uint64(b)*0x9E3779B97F4A7C15 ^ seq
	for i := 16; i < len(buf); i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		binary.LittleEndian.PutUint64(buf[i:], x)
	}
}

func checkBlock(buf []byte) bool {
	want := make([]byte, len(buf))
	fillBlock(want, int(binary.LittleEndian.Uint64(buf)), binary.LittleEndian.Uint64(buf[8:]))
	return bytes.Equal(want, buf)
}

func grepLine(s, sub string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return strings.TrimSpace(l)
		}
	}
	return ""
}

// Restart with local flash and metadata wiped: the tree and the uploaded
// vDisks come back from the backend.
func TestRestoreFromBackendAlone(t *testing.T) {
	d := startDaemon(t, "VPOOL_ENGINE_SEAL_IDLE=1s", "VPOOL_FS_BACKUP_INTERVAL=1s", "VPOOL_ENGINE_SCO_SIZE=8MiB")
	if err := os.MkdirAll(d.path("vms/vm1"), 0o755); err != nil {
		t.Fatal(err)
	}
	img := d.path("vms/vm1/disk.raw")
	run(t, time.Minute, "qemu-img", "create", "-f", "raw", img, "256M")
	run(t, time.Minute, "qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 20M", "-c", "write -P 0x6b 100M 1M", img)
	if err := os.WriteFile(d.path("vms/vm1/vm1.vmx"), []byte("memsize = \"1024\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("vm1/disk.raw", d.path("vms/current")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d.path("vms/vm1/vm1.vmx"), 0o640); err != nil {
		t.Fatal(err)
	}
	before, err := os.Stat(d.path("vms/vm1/disk.raw"))
	if err != nil {
		t.Fatal(err)
	}
	waitUploaded(t, d)
	d.stop()
	d.wipeLocalState()
	d.start()
	if !strings.Contains(d.log(), "restoring the namespace from the backend") {
		t.Fatalf("no restore in the log:\n%s", d.log())
	}
	run(t, time.Minute, "qemu-io", "-f", "raw", "-c", "read -P 0x5a 0 20M", "-c", "read -P 0x6b 100M 1M", "-c", "read -P 0 50M 1M", img)
	b, err := os.ReadFile(d.path("vms/vm1/vm1.vmx"))
	if err != nil || string(b) != "memsize = \"1024\"\n" {
		t.Fatalf("vmx after restore: %q %v", b, err)
	}
	if st, err := os.Stat(d.path("vms/vm1/vm1.vmx")); err != nil || st.Mode().Perm() != 0o640 {
		t.Fatalf("vmx mode after restore: %v %v", st, err)
	}
	if l, err := os.Readlink(d.path("vms/current")); err != nil || l != "vm1/disk.raw" {
		t.Fatalf("symlink after restore: %q %v", l, err)
	}
	after, err := os.Stat(img)
	if err != nil || inode(after) != inode(before) || after.Size() != before.Size() {
		t.Fatalf("vDisk after restore: inode %d size %d, was %d %d", inode(after), after.Size(), inode(before), before.Size())
	}
}

// wipeLocalState loses the stopped daemon's local flash and metadata
// stores (its data dir's identity files stay): what is left to start from
// is the backend.
func (d *daemon) wipeLocalState() {
	d.t.Helper()
	for _, dir := range []string{"flash", "meta", "catalog"} {
		if err := os.RemoveAll(filepath.Join(d.dataDir, dir)); err != nil {
			d.t.Fatal(err)
		}
	}
}

// waitUploaded waits until every vDisk's data is on the backend and the
// namespace was backed up after it.
func waitUploaded(t *testing.T, d *daemon) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		st := d.status()
		pending := 0.0
		for _, v := range st["vdisks"].([]any) {
			m := v.(map[string]any)
			pending += m["write_buffer_bytes"].(float64)
		}
		if pending == 0 {
			time.Sleep(3 * time.Second) // one more namespace backup after the last upload
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("uploads did not finish in 2 minutes: %v", d.status())
}

// Bad input: a one-line error naming the cause, exit status non-zero.
func TestBadInput(t *testing.T) {
	root := t.TempDir()
	cfg := filepath.Join(root, "bad.yaml")
	os.WriteFile(cfg, []byte("engine:\n  sco_sise: 8MiB\n"), 0o600)
	file := filepath.Join(root, "a-file")
	os.WriteFile(file, nil, 0o600)
	d := startDaemon(t)
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown key", []string{"serve", "--config", cfg, "--data-dir", filepath.Join(root, "d1")}, "unknown key engine.sco_sise"},
		{"busy mountpoint", []string{"serve", "--data-dir", filepath.Join(root, "d2"), "--mountpoint", d.mnt}, "mountpoint is busy"},
		{"unusable data dir", []string{"serve", "--data-dir", filepath.Join(file, "data")}, "data dir"},
		{"bad size", []string{"serve", "--data-dir", filepath.Join(root, "d3")}, "write_buffer.size"},
		{"negative number", []string{"serve", "--data-dir", filepath.Join(root, "d4")}, "engine.upload_concurrency -1: want 1 to 64"},
		{"mountpoint in the data dir", []string{"serve", "--data-dir", filepath.Join(root, "d5"), "--mountpoint", filepath.Join(root, "d5", "mnt")},
			"overlap"},
		{"flash too small", []string{"serve", "--data-dir", filepath.Join(root, "d6")}, "do not fit the flash filesystem"},
	} {
		env := []string{}
		switch c.name {
		case "bad size":
			env = append(env, "VPOOL_WRITE_BUFFER_SIZE=lots")
		case "negative number":
			env = append(env, "VPOOL_ENGINE_UPLOAD_CONCURRENCY=-1")
		case "flash too small":
			env = append(env, "VPOOL_WRITE_BUFFER_SIZE=512TiB")
		}
		out, err := runEnv(30*time.Second, "", env, vpoolBin, c.args...)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		last := lines[len(lines)-1]
		if err == nil || !strings.Contains(last, c.want) || !strings.HasPrefix(last, "vpool: ") {
			t.Errorf("%s: exit %v, last line %q, want a line with %q\n%s", c.name, err, last, c.want, out)
		}
	}
	if _, err := os.ReadDir(d.mnt); err != nil {
		t.Fatalf("the running daemon's mount after a refused second daemon: %v", err)
	}
}

// The data dir (flash, metadata and the default ASDs) on a small
// filesystem: writing more than it holds fails with ENOSPC, never kills
// the daemon; reads go on, status and the log say so, a restart while it
// is full works, and writes go on once room returns.
func TestFullDataDir(t *testing.T) {
	d := startDaemonOn(t, "", "700M", "VPOOL_WRITE_BUFFER_SIZE=64MiB", "VPOOL_READ_CACHE_SIZE=8MiB", "VPOOL_ENGINE_SCO_SIZE=8MiB")
	keep := d.path("keep.raw")
	run(t, time.Minute, "qemu-img", "create", "-f", "raw", keep, "16M")
	run(t, time.Minute, "qemu-io", "-f", "raw", "-c", "write -P 0x33 0 16M", keep)
	out, err := runErr(10*time.Minute, "", "dd", "if=/dev/urandom", "of="+d.path("big.raw"), "bs=1M", "count=1024", "conv=fsync")
	if err == nil || !strings.Contains(out, "No space left on device") {
		t.Fatalf("1 GiB into a 700 MiB data dir: %v\n%s", err, out)
	}
	st := d.status()
	if st["flash_full"] != true {
		t.Fatalf("status after ENOSPC does not say flash is full: %v", st)
	}
	if !strings.Contains(d.log(), "no space left on local flash") {
		t.Fatalf("the log does not say why writes fail:\n%s", d.log())
	}
	run(t, time.Minute, "qemu-io", "-f", "raw", "-c", "read -P 0x33 0 16M", keep)
	d.kill() // a restart while the data dir is full
	d.start()
	run(t, time.Minute, "qemu-io", "-f", "raw", "-c", "read -P 0x33 0 16M", keep)
	if err := os.Remove(d.path("big.raw")); err != nil {
		t.Fatal(err)
	}
	run(t, 2*time.Minute, "dd", "if=/dev/urandom", "of="+d.path("again.raw"), "bs=1M", "count=32", "conv=fsync")
	if st := d.status(); st["flash_full"] == true {
		t.Fatalf("status still says flash is full after room came back: %v", st)
	}
}

// rm -rf of a directory of small files after a quiet spell (the idle seal
// on) does not fill flash with SCOs: flash stays within its documented
// bound (1.3125 x write_buffer.size + two SCOs per vDisk).
func TestRmAfterIdleKeepsFlashBounded(t *testing.T) {
	const wb, sco = 64 << 20, 8 << 20
	d := startDaemon(t, "VPOOL_WRITE_BUFFER_SIZE=64MiB", "VPOOL_ENGINE_SCO_SIZE=8MiB", "VPOOL_ENGINE_SEAL_IDLE=1s")
	dir := d.path("logs")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3000; i++ {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%04d.log", i)), []byte(strings.Repeat("x", 2000)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A quiet spell longer than engine.seal_idle: the idle seal comes. (A
	// slower machine only makes the spell longer.)
	time.Sleep(2 * time.Second)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	out := run(t, 30*time.Second, "du", "-s", "--block-size=1", filepath.Join(d.dataDir, "flash"))
	used, err := strconv.ParseInt(strings.Fields(out)[0], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	vdisks := int64(len(d.status()["vdisks"].([]any)))
	readCache := int64(128 << 20) // the harness's read_cache.size
	if bound := wb*21/16 + 2*sco*vdisks + readCache + 16<<20; used > bound {
		t.Fatalf("flash holds %d bytes after rm -rf of 3000 files, over the bound %d", used, bound)
	}
}
