package test

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"vpool/nfsd"
)

// dialNetns connects to addr from inside the daemon's network namespace,
// from a privileged port as root's NFS clients do.
func (d *daemon) dialNetns(addr string) (net.Conn, error) {
	return d.netnsDo(func() (net.Conn, error) { return nfsd.DialPrivileged(addr, 5*time.Second) })
}

// dialNetnsUnprivileged connects from a port any user may have.
func (d *daemon) dialNetnsUnprivileged(addr string) (net.Conn, error) {
	return d.netnsDo(func() (net.Conn, error) { return net.DialTimeout("tcp", addr, 5*time.Second) })
}

// netnsDo runs dial in the daemon's network namespace; the socket stays
// there when the thread goes back.
func (d *daemon) netnsDo(dial func() (net.Conn, error)) (net.Conn, error) {
	runtime.LockOSThread()
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer self.Close()
	target, err := os.Open(d.netnsPath())
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer target.Close()
	if e := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); e != nil {
		runtime.UnlockOSThread()
		return nil, e
	}
	conn, err := dial()
	if e := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); e != nil {
		// This thread is stuck in the other namespace: leave it locked,
		// so that it ends with the goroutine.
		if conn != nil {
			conn.Close()
		}
		return nil, fmt.Errorf("setns back: %v", e)
	}
	runtime.UnlockOSThread()
	return conn, err
}

// nfsClient connects a Go NFS client to the daemon's gateway as uid/gid,
// waiting for it to listen, and mounts /vpool.
func (d *daemon) nfsClient(uid, gid uint32) (*nfsd.Client, []byte) {
	d.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		conn, err := d.dialNetns("127.0.0.1:2049")
		if err == nil {
			c := nfsd.NewClient(conn, uid, gid)
			d.t.Cleanup(func() { c.Close() })
			root, err := c.Mount("/vpool")
			if err != nil {
				d.t.Fatalf("mount /vpool: %v", err)
			}
			return c, root
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("the NFS gateway does not answer on 127.0.0.1:2049: %v\n%s", err, d.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// nfs runs an NFS client tool in the daemon's network namespace.
func (d *daemon) nfs(limit time.Duration, name string, args ...string) string {
	d.t.Helper()
	if d.nfsUp != d.starts { // wait for the gateway once per start
		d.nfsClient(0, 0)
		d.nfsUp = d.starts
	}
	cmd, argv := d.inNetns(name, args...)
	return run(d.t, limit, cmd, argv...)
}

const nfsURL = "nfs://127.0.0.1/vpool/"

func randomFile(t *testing.T, path string, size int) {
	t.Helper()
	b := make([]byte, size)
	rand.Read(b)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func sameFiles(t *testing.T, a, b string) {
	t.Helper()
	run(t, 5*time.Minute, "cmp", a, b)
}

// libnfs's tools: nfs-cp of 1 GiB in and out of the export (a vDisk and a
// regular file; the copies out through read-ahead), read back through
// the FUSE mount too; nfs-ls lists both with their sizes. (Debian 12's
// libnfs-utils 4.0 has no nfs-stat; nfs-ls shows the same attributes.)
func TestNFSLibnfsTools(t *testing.T) {
	d := startDaemon(t)
	src := filepath.Join(d.root, "src.bin")
	randomFile(t, src, 1<<30)
	d.nfs(5*time.Minute, "nfs-cp", src, nfsURL+"big.raw")
	d.nfs(5*time.Minute, "nfs-cp", src, nfsURL+"disk.iso")
	sameFiles(t, src, d.path("big.raw"))
	sameFiles(t, src, d.path("disk.iso"))
	out := filepath.Join(d.root, "out.bin")
	d.nfs(5*time.Minute, "nfs-cp", nfsURL+"big.raw", out)
	sameFiles(t, src, out)
	os.Remove(out)
	d.nfs(5*time.Minute, "nfs-cp", nfsURL+"disk.iso", out)
	sameFiles(t, src, out)
	ls := d.nfs(time.Minute, "nfs-ls", "nfs://127.0.0.1/vpool")
	for _, name := range []string{"big.raw", "disk.iso"} {
		if !strings.Contains(ls, name) || !strings.Contains(ls, "1073741824") {
			t.Fatalf("nfs-ls does not show %s with 1073741824 bytes:\n%s", name, ls)
		}
	}
	st := d.status()
	if n, _ := st["nfs"].(map[string]any); n == nil || n["written_bytes_total"].(float64) < 2<<30 {
		t.Fatalf("status does not count the NFS writes: %v", st["nfs"])
	}
	// nfs-cp reads one 1 MiB READ at a time: all but the first two of
	// each copy out come from read-ahead (and the copies compared equal).
	if n, _ := st["nfs"].(map[string]any); n["read_ahead_used_bytes_total"].(float64) < 2*(1<<30-2<<20) {
		t.Fatalf("the copies out were not read ahead: %v", st["nfs"])
	}
}

// qemu over nfs:// (portmapper, MOUNT EXPORT and MNT, then NFS): create,
// info, pattern writes and reads, convert between the FUSE and the NFS
// side both ways, compare.
func TestNFSQemu(t *testing.T) {
	d := startDaemon(t)
	d.nfs(time.Minute, "qemu-img", "create", "-f", "raw", nfsURL+"d.raw", "1G")
	info := d.nfs(time.Minute, "qemu-img", "info", nfsURL+"d.raw")
	if !strings.Contains(info, "virtual size: 1 GiB") {
		t.Fatalf("qemu-img info over NFS:\n%s", info)
	}
	d.nfs(time.Minute, "qemu-io", "-f", "raw", "-c", "write -P 0xab 0 4M", "-c", "write -P 0xcd 512M 1M",
		nfsURL+"d.raw")
	d.nfs(time.Minute, "qemu-io", "-f", "raw", "-c", "read -P 0xab 0 4M", "-c", "read -P 0xcd 512M 1M",
		"-c", "read -P 0 8M 1M", nfsURL+"d.raw")
	// What NFS wrote, FUSE reads.
	run(t, time.Minute, "qemu-io", "-f", "raw", "-c", "read -P 0xab 0 4M", "-c", "read -P 0xcd 512M 1M", d.path("d.raw"))
	// And the other way: a FUSE-side vDisk converted to NFS and back.
	run(t, time.Minute, "qemu-img", "create", "-f", "raw", d.path("fuse.raw"), "256M")
	run(t, time.Minute, "qemu-io", "-f", "raw", "-c", "write -P 0x5a 1M 3M", "-c", "write -P 0x11 200M 64k", d.path("fuse.raw"))
	d.nfs(2*time.Minute, "qemu-img", "convert", "-f", "raw", "-O", "raw", d.path("fuse.raw"), nfsURL+"copy.raw")
	d.nfs(2*time.Minute, "qemu-img", "compare", "-f", "raw", "-F", "raw", d.path("fuse.raw"), nfsURL+"copy.raw")
	d.nfs(2*time.Minute, "qemu-img", "convert", "-f", "raw", "-O", "raw", nfsURL+"copy.raw", d.path("back.raw"))
	run(t, time.Minute, "qemu-img", "compare", "-f", "raw", "-F", "raw", d.path("fuse.raw"), d.path("back.raw"))
	run(t, time.Minute, "qemu-io", "-f", "raw", "-c", "read -P 0x5a 1M 3M", d.path("copy.raw"))
}

// A Go client holds a file handle across a daemon restart and keeps
// using it; the write verifier changes, so it resends its uncommitted
// writes, and everything reads back through NFS and FUSE.
func TestNFSHandleAcrossRestart(t *testing.T) {
	d := startDaemon(t)
	c, root := d.nfsClient(0, 0)
	fh, _, err := c.Create(root, "held.raw", nfsd.Guarded, 0o644, [8]byte{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetSize(fh, 64<<20); err != nil {
		t.Fatal(err)
	}
	committed := bytes.Repeat([]byte("C"), 64<<10)
	if _, _, err := c.Write(fh, 0, committed, nfsd.Unstable); err != nil {
		t.Fatal(err)
	}
	v1, err := c.Commit(fh)
	if err != nil {
		t.Fatal(err)
	}
	pending := bytes.Repeat([]byte("U"), 64<<10)
	if _, v, err := c.Write(fh, 1<<20, pending, nfsd.Unstable); err != nil || v != v1 {
		t.Fatalf("unstable write: %v (verifier %x, commit's %x)", err, v, v1)
	}
	d.restart()
	c2, _ := d.nfsClient(0, 0)
	v2, err := c2.Commit(fh)
	if err != nil {
		t.Fatalf("COMMIT with a handle from before the restart: %v", err)
	}
	if v2 == v1 {
		t.Fatal("the write verifier did not change across the restart")
	}
	// The client's duty on a new verifier: resend, commit again.
	if _, _, err := c2.Write(fh, 1<<20, pending, nfsd.Unstable); err != nil {
		t.Fatal(err)
	}
	if v, err := c2.Commit(fh); err != nil || v != v2 {
		t.Fatalf("second commit: %v (%x, want %x)", err, v, v2)
	}
	for _, w := range []struct {
		off  uint64
		data []byte
	}{{0, committed}, {1 << 20, pending}} {
		got, _, err := c2.Read(fh, w.off, uint32(len(w.data)))
		if err != nil || !bytes.Equal(got, w.data) {
			t.Fatalf("read at %d over NFS: %v", w.off, err)
		}
		f, err := os.ReadFile(d.path("held.raw"))
		if err != nil || !bytes.Equal(f[w.off:int(w.off)+len(w.data)], w.data) {
			t.Fatalf("read at %d through FUSE: %v", w.off, err)
		}
	}
	// Deleted: the handle is stale.
	if err := os.Remove(d.path("held.raw")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second) // the gateway releases idle files after 10 s
	for {
		_, err := c2.GetAttr(fh)
		if st, ok := err.(nfsd.Status); ok && st == 70 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GETATTR of a deleted file: %v, want NFS3ERR_STALE", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// What an ESXi host does with a datastore: a VM directory, a .vmx
// written FILE_SYNC, a -flat.vmdk sized and written with COMMIT, the
// .lck-<fileid> lock made exclusive and removed, renames, and a listing
// of a directory of 10,000 entries in READDIRPLUS pages.
func TestNFSESXiSession(t *testing.T) {
	d := startDaemon(t)
	c, root := d.nfsClient(0, 0)
	vm, _, err := c.Mkdir(root, "vm1", 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Mkdir(root, "vm1", 0o755); err == nil {
		t.Fatal("MKDIR of an existing directory succeeded")
	}
	vmx, _, err := c.Create(vm, "vm1.vmx", nfsd.Guarded, 0o644, [8]byte{})
	if err != nil {
		t.Fatal(err)
	}
	config := []byte("config.version = \"8\"\nvirtualHW.version = \"19\"\n")
	if st, _, err := c.Write(vmx, 0, config, nfsd.FileSync); err != nil || st != nfsd.FileSync {
		t.Fatalf("FILE_SYNC write: %v, committed %d", err, st)
	}
	disk, _, err := c.Create(vm, "vm1-flat.vmdk", nfsd.Guarded, 0o600, [8]byte{})
	if err != nil {
		t.Fatal(err)
	}
	a, err := c.SetSize(disk, 8<<30)
	if err != nil || a.Size != 8<<30 || a.Used != 0 {
		t.Fatalf("sized vmdk: %+v %v (want 8 GiB, nothing used)", a, err)
	}
	lck := fmt.Sprintf(".lck-%016x", a.Fileid)
	lh, _, err := c.Create(vm, lck, nfsd.Exclusive, 0, [8]byte{7, 7, 7})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Create(vm, lck, nfsd.Exclusive, 0, [8]byte{8, 8, 8}); err == nil {
		t.Fatal("a second host took the lock")
	}
	if _, _, err := c.Write(lh, 0, []byte("lock"), nfsd.FileSync); err != nil {
		t.Fatal(err)
	}
	block := bytes.Repeat([]byte{0x42}, 1<<20)
	for i := range 8 {
		if _, _, err := c.Write(disk, uint64(i)<<27, block, nfsd.Unstable); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Commit(disk); err != nil {
		t.Fatal(err)
	}
	if err := c.Remove(vm, lck); err != nil {
		t.Fatal(err)
	}
	if err := c.Rename(vm, "vm1.vmx", vm, "vm1.vmx~"); err != nil {
		t.Fatal(err)
	}
	if err := c.Rename(vm, "vm1.vmx~", vm, "vm1.vmx"); err != nil {
		t.Fatal(err)
	}
	if a2, err := c.GetAttr(disk); err != nil || a2.Fileid != a.Fileid || a2.Used != 8<<20 {
		t.Fatalf("vmdk after writes: %+v %v (want fileid %d, 8 MiB used)", a2, err, a.Fileid)
	}
	got, err := os.ReadFile(d.path("vm1/vm1.vmx"))
	if err != nil || !bytes.Equal(got, config) {
		t.Fatalf(".vmx through FUSE: %q %v", got, err)
	}
	// 10,000 entries, made over 16 concurrent calls on the one connection.
	big, _, err := c.Mkdir(root, "many", 0o755)
	if err != nil {
		t.Fatal(err)
	}
	const n = 10000
	errs := make(chan error, 16)
	for w := range 16 {
		go func() {
			for i := w; i < n; i += 16 {
				if _, _, err := c.Create(big, fmt.Sprintf("f%05d.vmx", i), nfsd.Guarded, 0o644, [8]byte{}); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 16 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	ents, err := c.ReadDirAll(big, 32<<10)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range ents {
		if seen[e.Name] {
			t.Fatalf("%s listed twice", e.Name)
		}
		seen[e.Name] = true
	}
	if len(seen) != n+2 {
		t.Fatalf("READDIRPLUS listed %d entries, want %d and . and ..", len(seen), n)
	}
	fuse, err := os.ReadDir(d.path("many"))
	if err != nil || len(fuse) != n {
		t.Fatalf("FUSE lists %d entries (%v), want %d", len(fuse), err, n)
	}
}

// Over NFS, a local user cannot be someone else: calls from an
// unprivileged port are refused (libnfs run as nobody, and a hand-made
// RPC); a privileged caller claiming uid 1000 cannot read root's 0600
// file; with root_squash, root is the anonymous user.
func TestNFSIdentities(t *testing.T) {
	d := startDaemon(t)
	if err := os.WriteFile(d.path("secret"), []byte("root's secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(d.path("pub"), 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(d.path("pub"), 0o777)       // past the umask
	d.nfs(time.Minute, "nfs-ls", nfsURL) // root's libnfs: a privileged port
	cmd, argv := d.inNetns("runuser", append([]string{"-u", "nobody", "--", "nfs-cat"}, nfsURL+"secret")...)
	if out, err := runErr(time.Minute, "", cmd, argv...); err == nil || strings.Contains(out, "root's secret") {
		t.Fatalf("nfs-cat as nobody: %v\n%s", err, out)
	}
	conn, err := d.dialNetnsUnprivileged("127.0.0.1:2049")
	if err != nil {
		t.Fatal(err)
	}
	hand := nfsd.NewClient(conn, 0, 0)
	defer hand.Close()
	var ae nfsd.AuthError
	if _, err := hand.Mount("/vpool"); !errors.As(err, &ae) || ae != 5 {
		t.Fatalf("MNT as uid 0 from an unprivileged port: %v, want AUTH_TOOWEAK (5)", err)
	}
	uc, uroot := d.nfsClient(1000, 1000)
	fh, _, err := uc.Lookup(uroot, "secret")
	if err != nil {
		t.Fatal(err)
	}
	if data, _, err := uc.Read(fh, 0, 100); err == nil {
		t.Fatalf("uid 1000 read root's 0600 file: %q", data)
	}

	d.stop()
	d.env = append(d.env, "VPOOL_NFS_ALLOW=127.0.0.1(root_squash)")
	d.start()
	rc, root := d.nfsClient(0, 0)
	if fh, _, err = rc.Lookup(root, "secret"); err != nil {
		t.Fatal(err)
	}
	if data, _, err := rc.Read(fh, 0, 100); err == nil {
		t.Fatalf("squashed root read root's 0600 file: %q", data)
	}
	pub, _, err := rc.Lookup(root, "pub")
	if err != nil {
		t.Fatal(err)
	}
	if _, a, err := rc.Create(pub, "by-root", nfsd.Guarded, 0o644, [8]byte{}); err != nil || a.Uid != 65534 || a.Gid != 65534 {
		t.Fatalf("a file created by squashed root: %+v %v, want uid and gid 65534", a, err)
	}
	if st := stat(t, d.path("pub/by-root")); st.Uid != 65534 {
		t.Fatalf("FUSE shows the squashed root's file owned by %d", st.Uid)
	}
}

// memory reads one figure of the daemon's /proc/PID/status (VmRSS: now,
// VmHWM: the peak), in bytes.
func (d *daemon) memory(key string) int64 {
	d.t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.cmd.Process.Pid))
	if err != nil {
		d.t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[0] == key+":" {
			var kb int64
			fmt.Sscan(f[1], &kb)
			return kb << 10
		}
	}
	d.t.Fatalf("no %s in /proc/PID/status", key)
	return 0
}

// The three attacks of issue 18 on the gateway, from connections it
// trusts (nfs.insecure_ports, so that every port may send calls): 1100
// idle connections, 1000 senders that announce 1 MiB calls and stall,
// one connection that pipelines 1 MiB READs and reads no reply. A
// legitimate client goes on working through each, and the daemon's peak
// RSS grows by less than 256 MiB.
func TestNFSResourceBounds(t *testing.T) {
	d := startDaemon(t, "VPOOL_NFS_INSECURE_PORTS=true")
	c, root := d.nfsClient(0, 0)
	fh, _, err := c.Create(root, "legit", nfsd.Guarded, 0o644, [8]byte{})
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("legit!!\n"), 128<<10)
	if _, _, err := c.Write(fh, 0, data, nfsd.FileSync); err != nil {
		t.Fatal(err)
	}
	peak := d.memory("VmHWM")
	legit := func(attack string) {
		t.Helper()
		lc, lroot := d.nfsClient(0, 0)
		defer lc.Close()
		lfh, _, err := lc.Lookup(lroot, "legit")
		if err == nil {
			var got []byte
			if got, _, err = lc.Read(lfh, 0, 4096); err == nil && !bytes.Equal(got, data[:4096]) {
				err = fmt.Errorf("read %q", got[:16])
			}
		}
		if err == nil {
			_, _, err = lc.Create(lroot, "during-"+attack, nfsd.Guarded, 0o644, [8]byte{})
		}
		if err != nil {
			t.Fatalf("a legitimate client during %s: %v", attack, err)
		}
		t.Logf("%s: peak RSS %d MiB, now %d MiB", attack, d.memory("VmHWM")>>20, d.memory("VmRSS")>>20)
	}
	var conns []net.Conn
	dropAll := func() {
		for _, c := range conns {
			c.Close()
		}
		conns = nil
	}
	defer dropAll()
	dial := func() net.Conn {
		conn, err := d.dialNetnsUnprivileged("127.0.0.1:2049")
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, conn)
		return conn
	}

	for range 1100 {
		dial()
	}
	legit("1100 idle connections")
	dropAll()

	for range 1000 {
		var hdr [4]byte
		binary.BigEndian.PutUint32(hdr[:], 1<<31|1<<20)
		dial().Write(append(hdr[:], make([]byte, 1024)...))
	}
	legit("1000 stalled senders")
	dropAll()

	p := dial()
	w := &bytes.Buffer{}
	for i := range 1000 {
		w.Write(nfsReadCall(uint32(i), fh, 0, 1<<20))
	}
	for range 1000 { // until the gateway stops reading it
		p.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := p.Write(w.Bytes()); err != nil {
			break
		}
	}
	legit("a pipelining connection that reads no reply")
	dropAll()

	if grown := d.memory("VmHWM") - peak; grown > 256<<20 {
		t.Fatalf("the daemon's peak RSS grew by %d MiB under the attacks", grown>>20)
	}
	t.Logf("peak RSS %d MiB before the attacks, %d MiB after", peak>>20, d.memory("VmHWM")>>20)
}

// nfsReadCall is a framed NFS READ call from uid 0.
func nfsReadCall(xid uint32, fh []byte, off uint64, count uint32) []byte {
	var b []byte
	u32 := func(v uint32) { b = binary.BigEndian.AppendUint32(b, v) }
	u32(0) // the record mark, below
	u32(xid)
	u32(0) // CALL
	u32(2)
	u32(100003)
	u32(3)
	u32(6) // READ
	u32(1) // AUTH_SYS: stamp, machine "", uid 0, gid 0, no groups
	u32(20)
	for range 5 {
		u32(0)
	}
	u32(0) // verifier: AUTH_NONE
	u32(0)
	u32(uint32(len(fh)))
	b = append(b, fh...)
	b = append(b, make([]byte, (4-len(fh)%4)%4)...)
	b = binary.BigEndian.AppendUint64(b, off)
	u32(count)
	binary.BigEndian.PutUint32(b, 1<<31|uint32(len(b)-4))
	return b
}

// Garbage, truncated records, huge record lengths and undecodable
// arguments on the live port: the daemon survives, its memory stays
// bounded, and well-formed clients go on being served.
func TestNFSMalformedInput(t *testing.T) {
	d := startDaemon(t)
	c, root := d.nfsClient(0, 0)
	rss := func() int64 { return d.memory("VmRSS") }
	before := rss()
	send := func(b []byte, hold bool) {
		conn, err := d.dialNetns("127.0.0.1:2049")
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(2 * time.Second))
		conn.Write(b)
		if hold {
			buf := make([]byte, 4096)
			conn.Read(buf) // the server answers or closes
		}
	}
	rec := func(body []byte, mark uint32) []byte {
		return append([]byte{byte(mark >> 24), byte(mark >> 16), byte(mark >> 8), byte(mark)}, body...)
	}
	junk := make([]byte, 4096)
	for i := range 20 {
		rand.Read(junk)
		send(junk, false)                                     // garbage
		send(rec(junk[:100], 0x80000000|1000), false)         // truncated record
		send(rec(nil, 0xffffffff), true)                      // a 2 GiB record: closed at once
		send(rec(nil, 0x7fffffff), true)                      // a 2 GiB non-last fragment: closed at once
		send(rec(junk[:64], 0x80000000|64), i%5 == 0)         // a random call
		send(append(rec(junk[:8], 8), rec(nil, 0)...), false) // empty fragments
	}
	// A valid call header with arguments that do not decode.
	call := []byte{0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1, 0x86, 0xa3, 0, 0, 0, 3, 0, 0, 0, 7,
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}
	send(rec(call, 0x80000000|uint32(len(call))), true)
	after := rss()
	if after > before+256<<20 {
		t.Fatalf("RSS grew from %d MiB to %d MiB under malformed input", before>>20, after>>20)
	}
	if _, err := c.GetAttr(root); err != nil {
		t.Fatalf("an established client after the garbage: %v", err)
	}
	c2, root2 := d.nfsClient(0, 0)
	if _, _, err := c2.Create(root2, "after-garbage", nfsd.Guarded, 0o644, [8]byte{}); err != nil {
		t.Fatalf("a new client after the garbage: %v", err)
	}
	d.stop() // and it still stops cleanly
}

// A change made over NFS shows through the FUSE mount at once, although
// the kernel caches attributes, names and file pages: the gateway
// invalidates them.
func TestNFSChangesShowThroughFUSE(t *testing.T) {
	d := startDaemon(t)
	c, root := d.nfsClient(0, 0)
	if err := os.WriteFile(d.path("vm.vmx"), []byte("version = 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The kernel now holds the page, the size, and "new.vmx" as missing.
	if b, err := os.ReadFile(d.path("vm.vmx")); err != nil || string(b) != "version = 1\n" {
		t.Fatalf("read: %q %v", b, err)
	}
	if _, err := os.Stat(d.path("new.vmx")); !os.IsNotExist(err) {
		t.Fatalf("stat of a missing file: %v", err)
	}
	fh, _, err := c.Lookup(root, "vm.vmx")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Write(fh, 0, []byte("version = 2, longer\n"), nfsd.FileSync); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Create(root, "new.vmx", nfsd.Guarded, 0o644, [8]byte{}); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(d.path("vm.vmx")); err != nil || string(b) != "version = 2, longer\n" {
		t.Fatalf("FUSE read right after an NFS write: %q %v", b, err)
	}
	if _, err := os.Stat(d.path("new.vmx")); err != nil {
		t.Fatalf("FUSE stat right after an NFS create: %v", err)
	}
	if err := c.Rename(root, "new.vmx", root, "renamed.vmx"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(d.path("new.vmx")); !os.IsNotExist(err) {
		t.Fatalf("FUSE stat of the old name right after an NFS rename: %v", err)
	}
	if err := c.Remove(root, "renamed.vmx"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(d.path("renamed.vmx")); !os.IsNotExist(err) {
		t.Fatalf("FUSE stat right after an NFS remove: %v", err)
	}
	// And the other way: what FUSE writes, NFS reads at once.
	if err := os.WriteFile(d.path("vm.vmx"), []byte("version = 3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, _, err := c.Read(fh, 0, 100); err != nil || string(b) != "version = 3\n" {
		t.Fatalf("NFS read right after a FUSE write: %q %v", b, err)
	}
}
