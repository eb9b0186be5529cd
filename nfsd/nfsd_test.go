package nfsd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"vpool/flashcache"
	"vpool/fs"
	"vpool/metastore"
	"vpool/objstore"
	"vpool/vfs"
	"vpool/volume"
)

// env is a gateway over a namespace on an in-memory engine, restartable.
type env struct {
	t       testing.TB
	fsys    *vfs.Mem
	meta    *metastore.Mem
	cat     *metastore.MemCatalog
	backend *objstore.Mem
	pool    *volume.Pool
	ns      *fs.Namespace
	srv     *Server
	addr    string
}

func testLogger() *slog.Logger {
	if os.Getenv("VPOOL_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func newEnv(t testing.TB, cfg Config) *env {
	e := &env{t: t, fsys: vfs.NewMem(), meta: metastore.NewMem(), cat: metastore.NewMemCatalog(), backend: objstore.NewMem()}
	e.start(cfg)
	t.Cleanup(e.stop)
	return e
}

func (e *env) start(cfg Config) {
	e.t.Helper()
	wb, err := flashcache.NewWriteBuffer(e.fsys, "/flash/wb", 256<<20)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx := context.Background()
	e.pool, err = volume.Open(ctx, volume.Config{Name: "vp", Dir: "/flash", SCOSize: 4 << 20, MapCachePages: 64,
		MaxVDiskSize: 1 << 40, Log: testLogger()},
		volume.Deps{FS: e.fsys, Backend: e.backend, Catalog: e.cat, Meta: e.meta, WriteBuffer: wb})
	if err != nil {
		e.t.Fatal(err)
	}
	if e.ns, err = fs.Open(ctx, fs.Config{Name: "vp", BackupInterval: time.Hour, Log: testLogger()}, e.pool, e.cat, e.backend); err != nil {
		e.t.Fatal(err)
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	cfg.Export, cfg.Log = "/vp", testLogger()
	e.srv = New(cfg, e.ns)
	if err := e.srv.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.addr = fmt.Sprintf("127.0.0.1:%d", e.srv.Port())
}

func (e *env) stop() {
	if e.srv == nil {
		return
	}
	ctx := context.Background()
	e.srv.Close(ctx)
	e.ns.Close(ctx)
	e.pool.Close(ctx)
	e.srv = nil
}

func (e *env) restart(cfg Config) {
	e.stop()
	e.start(cfg)
}

func (e *env) client(uid, gid uint32) (*Client, []byte) {
	e.t.Helper()
	c, err := Dial(e.addr, uid, gid)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	root, err := c.Mount("/vp")
	if err != nil {
		e.t.Fatal(err)
	}
	return c, root
}

func wantStatus(t *testing.T, err error, want Status, what string) {
	t.Helper()
	var st Status
	if !errors.As(err, &st) || st != want {
		t.Fatalf("%s: %v, want %v", what, err, want)
	}
}

func TestFileLifecycle(t *testing.T) {
	e := newEnv(t, Config{})
	c, root := e.client(0, 0)
	var noVerf [8]byte
	fh, a, err := c.Create(root, "vm1-flat.vmdk", Guarded, 0o644, noVerf)
	if err != nil {
		t.Fatal(err)
	}
	if a.Type != 1 || a.Mode != 0o644 || a.Size != 0 {
		t.Fatalf("created %+v", a)
	}
	_, _, err = c.Create(root, "vm1-flat.vmdk", Guarded, 0o644, noVerf)
	wantStatus(t, err, 17, "guarded create of an existing file")
	a, err = c.SetSize(fh, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	if a.Size != 1<<30 || a.Used != 0 {
		t.Fatalf("after SETATTR size: size %d used %d, want 1 GiB and 0 (thin)", a.Size, a.Used)
	}
	data := bytes.Repeat([]byte("vpool-nfs"), 1<<14)
	committed, verf, err := c.Write(fh, 4096, data, Unstable)
	if err != nil || committed != Unstable {
		t.Fatalf("unstable write: %v, committed %d", err, committed)
	}
	if cv, err := c.Commit(fh); err != nil || cv != verf {
		t.Fatalf("commit verifier %x, write verifier %x", cv, verf)
	}
	if committed, _, err = c.Write(fh, 1<<20, data[:100], FileSync); err != nil || committed != FileSync {
		t.Fatalf("file-sync write: %v, committed %d", err, committed)
	}
	got, eof, err := c.Read(fh, 4096, uint32(len(data)))
	if err != nil || eof || !bytes.Equal(got, data) {
		t.Fatalf("read back: %v, eof %v, equal %v", err, eof, bytes.Equal(got, data))
	}
	if got, eof, err = c.Read(fh, 1<<30-10, 100); err != nil || !eof || len(got) != 10 {
		t.Fatalf("read at the end: %d bytes, eof %v, %v", len(got), eof, err)
	}
	if a, err = c.GetAttr(fh); err != nil {
		t.Fatal(err)
	}
	if a.Used == 0 || a.Used > 1<<21 {
		t.Fatalf("used %d after writing about 150 KiB", a.Used)
	}
	// Rename keeps the fileid; the old handle stays valid.
	dir, _ := must2(t)(c.Mkdir(root, "vm1", 0o755))
	if err := c.Rename(root, "vm1-flat.vmdk", dir, "vm1-flat.vmdk"); err != nil {
		t.Fatal(err)
	}
	_, moved, err := c.Lookup(dir, "vm1-flat.vmdk")
	if err != nil || moved.Fileid != a.Fileid {
		t.Fatalf("after rename: fileid %d (%v), want %d", moved.Fileid, err, a.Fileid)
	}
	if _, err := c.GetAttr(fh); err != nil {
		t.Fatalf("handle after rename: %v", err)
	}
	_, _, err = c.Mkdir(root, "vm1", 0o755)
	wantStatus(t, err, 17, "mkdir of an existing directory")
	wantStatus(t, c.Rmdir(root, "vm1"), 66, "rmdir of a full directory")
	if err := c.Remove(dir, "vm1-flat.vmdk"); err != nil {
		t.Fatal(err)
	}
	// The gateway holds the file open (it was read): still readable.
	if got, _, err := c.Read(fh, 4096, 9); err != nil || string(got) != "vpool-nfs" {
		t.Fatalf("read of a removed file held open: %q, %v", got, err)
	}
	e.srv.files.release(func(*cachedFile) bool { return true })
	_, err = c.GetAttr(fh)
	wantStatus(t, err, 70, "handle of a removed and released file")
	_, _, err = c.Lookup(dir, "vm1-flat.vmdk")
	wantStatus(t, err, 2, "lookup of a removed file")
}

func must2(t *testing.T) func([]byte, Attr, error) ([]byte, Attr) {
	return func(h []byte, a Attr, err error) ([]byte, Attr) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return h, a
	}
}

// Handles survive a restart; the write verifier changes, so a client
// resends what it had not committed.
func TestRestartKeepsHandlesAndChangesVerifier(t *testing.T) {
	e := newEnv(t, Config{})
	c, root := e.client(0, 0)
	fh, _ := must2(t)(c.Create(root, "d.raw", Unchecked, 0o644, [8]byte{}))
	_, v1, err := c.Write(fh, 0, []byte("before"), Unstable)
	if err != nil {
		t.Fatal(err)
	}
	e.restart(Config{})
	c2, err := Dial(e.addr, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	v2, err := c2.Commit(fh)
	if err != nil {
		t.Fatalf("commit with a handle from before the restart: %v", err)
	}
	if v1 == v2 {
		t.Fatal("write verifier did not change across a restart")
	}
	if _, _, err := c2.Write(fh, 0, []byte("before"), Unstable); err != nil { // the resend
		t.Fatal(err)
	}
	got, _, err := c2.Read(fh, 0, 6)
	if err != nil || string(got) != "before" {
		t.Fatalf("read after resend: %q, %v", got, err)
	}
}

// An exclusive create that is retransmitted with the same verifier
// succeeds; another verifier gets EXIST.
func TestExclusiveCreate(t *testing.T) {
	e := newEnv(t, Config{})
	c, root := e.client(0, 0)
	v := [8]byte{1, 2, 3, 4, 5, 6, 7, 8}
	h1, a1 := must2(t)(c.Create(root, ".lck-1234", Exclusive, 0, v))
	h2, a2, err := c.Create(root, ".lck-1234", Exclusive, 0, v)
	if err != nil || !bytes.Equal(h1, h2) || a1.Fileid != a2.Fileid {
		t.Fatalf("retransmitted exclusive create: %v", err)
	}
	_, _, err = c.Create(root, ".lck-1234", Exclusive, 0, [8]byte{9})
	wantStatus(t, err, 17, "exclusive create with another verifier")
}

// READDIRPLUS pages through a large directory with cookies that stay
// valid while entries are removed and added between pages.
func TestReadDirPlusPaging(t *testing.T) {
	e := newEnv(t, Config{})
	c, root := e.client(0, 0)
	dir, _ := must2(t)(c.Mkdir(root, "big", 0o755))
	const n = 1500
	for i := range n {
		if _, _, err := c.Create(dir, fmt.Sprintf("f%05d", i), Guarded, 0o644, [8]byte{}); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]int{}
	var verf [8]byte
	cookie, pages := uint64(0), 0
	for {
		ents, v, eof, err := c.ReadDirPlus(dir, cookie, verf, 8192)
		if err != nil {
			t.Fatal(err)
		}
		for _, en := range ents {
			seen[en.Name]++
			if en.Name != "." && en.Name != ".." && (en.Attr == nil || en.Handle == nil || en.Attr.Fileid != en.Fileid) {
				t.Fatalf("entry %s without attributes or handle", en.Name)
			}
		}
		pages++
		if pages == 3 { // churn between pages
			if err := c.Remove(dir, "f00000"); err != nil {
				t.Fatal(err)
			}
			must2(t)(c.Create(dir, "late", Guarded, 0o644, [8]byte{}))
		}
		if eof {
			break
		}
		verf, cookie = v, ents[len(ents)-1].Cookie
	}
	if pages < 5 {
		t.Fatalf("%d pages for %d entries of 8 KiB replies", pages, n)
	}
	for i := 1; i < n; i++ {
		if name := fmt.Sprintf("f%05d", i); seen[name] != 1 {
			t.Fatalf("%s listed %d times", name, seen[name])
		}
	}
	if seen["late"] != 1 || seen["."] != 1 || seen[".."] != 1 {
		t.Fatalf("late %d, . %d, .. %d times", seen["late"], seen["."], seen[".."])
	}
	_, _, _, err := c.ReadDirPlus(dir, cookie, [8]byte{1}, 8192)
	wantStatus(t, err, 10003, "a cookie with another server's verifier")
	// A count too small for one entry is NFS3ERR_TOOSMALL (RFC 1813).
	_, _, _, err = c.ReadDirPlus(dir, 0, [8]byte{}, 100)
	wantStatus(t, err, nfs3ErrTooSmall, "READDIRPLUS with maxcount 100")
	w := &writer{}
	w.opaque(dir)
	w.uint64(0)
	w.fixed(make([]byte, 8))
	w.uint32(100) // room for the header and attributes, not for an entry
	_, err = c.nfs(16, w)
	wantStatus(t, err, nfs3ErrTooSmall, "READDIR with count 100")
}

// LINK gives a file more names; a directory listed in small pages shows
// every name once, the names of one inode in the same reply.
func TestLinks(t *testing.T) {
	e := newEnv(t, Config{})
	c, root := e.client(0, 0)
	dir, _ := must2(t)(c.Mkdir(root, "d", 0o755))
	for i := range 40 {
		fh, _ := must2(t)(c.Create(dir, fmt.Sprintf("f%02d", i), Guarded, 0o644, [8]byte{}))
		for j := range 3 {
			if err := c.Link(fh, dir, fmt.Sprintf("f%02d-link%d", i, j)); err != nil {
				t.Fatal(err)
			}
		}
		if a, err := c.GetAttr(fh); err != nil || a.Nlink != 4 {
			t.Fatalf("nlink %d, %v; want 4", a.Nlink, err)
		}
	}
	fh, _, err := c.Lookup(dir, "f00")
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, c.Link(dir, root, "dir-link"), nfs3ErrPerm, "LINK of a directory")
	wantStatus(t, c.Link(fh, dir, "f01"), nfs3ErrExist, "LINK onto a name")
	uc, _ := e.client(1000, 1000)
	wantStatus(t, uc.Link(fh, dir, "by-user"), nfs3ErrAccess, "LINK into root's 0755 directory by uid 1000")
	ents, err := c.ReadDirAll(dir, 1024)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, en := range ents {
		seen[en.Name]++
	}
	if len(seen) != 2+160 {
		t.Fatalf("%d names listed, want 162", len(seen))
	}
	for n, k := range seen {
		if k != 1 {
			t.Fatalf("%s listed %d times", n, k)
		}
	}
}

// Calls on one connection are processed concurrently: a slow COMMIT does
// not hold up reads behind it.
func TestConcurrentCallsOnOneConnection(t *testing.T) {
	e := newEnv(t, Config{})
	c, root := e.client(0, 0)
	fh, _ := must2(t)(c.Create(root, "c.raw", Unchecked, 0o644, [8]byte{}))
	if _, err := c.SetSize(fh, 64<<20); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := bytes.Repeat([]byte{byte(i)}, 4096)
			if _, _, err := c.Write(fh, uint64(i)*4096, buf, Unstable); err != nil {
				errs <- err
				return
			}
			got, _, err := c.Read(fh, uint64(i)*4096, 4096)
			if err != nil || !bytes.Equal(got, buf) {
				errs <- fmt.Errorf("block %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// A user other than the owner cannot write a 0644 file or create in a
// 0755 directory it does not own; root squash makes root nobody.
func TestPermissions(t *testing.T) {
	e := newEnv(t, Config{})
	rc, root := e.client(0, 0)
	fh, _ := must2(t)(rc.Create(root, "owned", Guarded, 0o644, [8]byte{}))
	uc, uroot := e.client(1000, 1000)
	_, _, err := uc.Write(fh, 0, []byte("x"), FileSync)
	wantStatus(t, err, 13, "write by another user")
	_, _, err = uc.Create(uroot, "mine", Guarded, 0o644, [8]byte{})
	wantStatus(t, err, 13, "create in root's 0755 directory")
	if _, _, err := uc.Read(fh, 0, 1); err != nil {
		t.Fatalf("read of a 0644 file: %v", err)
	}
	e.restart(Config{Default: Rule{RootSquash: true}})
	sc, sroot := e.client(0, 0)
	_, _, err = sc.Create(sroot, "squashed", Guarded, 0o644, [8]byte{})
	wantStatus(t, err, 13, "create by squashed root")
}

func TestMountPaths(t *testing.T) {
	e := newEnv(t, Config{})
	c, root := e.client(0, 0)
	must2(t)(c.Mkdir(root, "sub", 0o755))
	if _, err := c.Mount("/vp/sub/"); err != nil {
		t.Fatalf("mount of a subdirectory: %v", err)
	}
	for _, p := range []string{"/other", "/vp/missing", "/vpx"} {
		if _, err := c.Mount(p); err == nil {
			t.Fatalf("mount of %s succeeded", p)
		}
	}
}

// A client outside nfs.allow is refused at connect; inside, it is served.
func TestAllowList(t *testing.T) {
	e := newEnv(t, Config{Allow: []Rule{DefaultRule(netip.MustParsePrefix("10.0.0.0/8"))}})
	c, err := Dial(e.addr, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Mount("/vp"); err == nil {
		t.Fatal("a client from 127.0.0.1 mounted with nfs.allow 10.0.0.0/8")
	}
	e.restart(Config{Allow: []Rule{DefaultRule(netip.MustParsePrefix("10.0.0.0/8")), DefaultRule(netip.MustParsePrefix("127.0.0.1/32"))}})
	e.client(0, 0)
}

// When another portmapper holds its port, the gateway registers MOUNT and
// NFS with it (from a privileged port, as rpcbind wants) and unregisters
// at close.
func TestRegisterWithRunningPortmapper(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("registering needs a privileged source port: run as root (scripts/test.sh does)")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var mu sync.Mutex
	var calls []string
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				if p := conn.RemoteAddr().(*net.TCPAddr).Port; p >= 1024 {
					return // rpcbind's rule
				}
				for {
					rec, err := readRecord(conn, 1<<16, nil)
					if err != nil {
						return
					}
					c, _, err := parseCall(rec)
					if err != nil {
						return
					}
					prog, vers, prot, port := c.args.uint32(), c.args.uint32(), c.args.uint32(), c.args.uint32()
					mu.Lock()
					calls = append(calls, fmt.Sprintf("%d %d/%d/%d/%d", c.proc, prog, vers, prot, port))
					mu.Unlock()
					w := accepted(c.xid, acceptSuccess, 4)
					w.bool(true)
					conn.Write(frame(w.b))
				}
			}()
		}
	}()
	pm := l.Addr().(*net.TCPAddr).Port
	e := newEnv(t, Config{PortmapPort: pm})
	p := e.srv.Port()
	mu.Lock()
	got := strings.Join(calls, ", ")
	mu.Unlock()
	want := fmt.Sprintf("2 100003/3/6/%d, 2 100005/3/6/%d, 2 100005/3/17/%d, 1 100003/3/6/%d, 1 100005/3/6/%d, 1 100005/3/17/%d",
		p, p, p, p, p, p)
	if got != want {
		t.Fatalf("portmapper calls at start:\n%s\nwant\n%s", got, want)
	}
	e.stop()
	mu.Lock()
	defer mu.Unlock()
	if n := len(calls); n != 9 || !strings.HasPrefix(calls[6], "2 ") || !strings.HasPrefix(calls[8], "2 ") {
		t.Fatalf("portmapper calls after close: %v (want three UNSETs more)", calls)
	}
}

// The portmapper answers GETPORT and DUMP over TCP and UDP, versions 3
// and 4 get PROG_MISMATCH (clients fall back to 2), and MOUNT answers
// over UDP too.
func TestPortmapperAndMountOverUDP(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pm := l.Addr().(*net.TCPAddr).Port
	l.Close()
	e := newEnv(t, Config{PortmapPort: pm, Default: Rule{Insecure: true}}) // UDP from any port
	nfsPort := uint32(e.srv.Port())
	udpCall := func(port int, prog, vers, proc uint32, args []byte) *reader {
		t.Helper()
		conn, err := net.Dial("udp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Write(encodeCall(7, prog, vers, proc, 0, 0, args).b[4:]); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 65536)
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		r := &reader{b: buf[:n]}
		if r.uint32() != 7 || r.uint32() != msgReply || r.uint32() != replyAccepted {
			t.Fatal("not an accepted reply to xid 7")
		}
		r.uint32()
		r.opaque(400)
		return r
	}
	getport := func(prog, prot uint32) uint32 {
		w := &writer{}
		w.uint32(prog)
		w.uint32(3)
		w.uint32(prot)
		w.uint32(0)
		r := udpCall(pm, progPortmap, 2, 3, w.b)
		if st := r.uint32(); st != acceptSuccess {
			t.Fatalf("GETPORT: accept status %d", st)
		}
		return r.uint32()
	}
	if p := getport(progMount, ipprotoUDP); p != nfsPort {
		t.Fatalf("GETPORT MOUNT/UDP: %d, want %d", p, nfsPort)
	}
	if p := getport(progNFS, ipprotoTCP); p != nfsPort {
		t.Fatalf("GETPORT NFS/TCP: %d, want %d", p, nfsPort)
	}
	if p := getport(progNFS, ipprotoUDP); p != 0 {
		t.Fatalf("GETPORT NFS/UDP: %d, want 0 (not served)", p)
	}
	r := udpCall(pm, progPortmap, 4, 3, nil)
	if st := r.uint32(); st != acceptProgMismatch || r.uint32() != 2 || r.uint32() != 2 {
		t.Fatalf("rpcbind v4: accept status %d, want PROG_MISMATCH 2..2", st)
	}
	// DUMP over TCP lists five mappings.
	conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", pm))
	if err != nil {
		t.Fatal(err)
	}
	c := NewClient(conn, 0, 0)
	defer c.Close()
	dr, err := c.rpc(progPortmap, 2, 4, nil)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for dr.bool() {
		dr.uint32()
		dr.uint32()
		dr.uint32()
		dr.uint32()
		n++
	}
	if n != 5 || dr.err != nil {
		t.Fatalf("DUMP: %d mappings (%v), want 5", n, dr.err)
	}
	// MNT over UDP returns the root handle.
	w := &writer{}
	w.string("/vp")
	mr := udpCall(int(nfsPort), progMount, 3, 1, w.b)
	if st := mr.uint32(); st != acceptSuccess || mr.uint32() != mnt3OK || !bytes.Equal(mr.opaque(64), e.srv.handle(1, 1)) {
		t.Fatal("MNT over UDP did not return the root handle")
	}
	// NFS over UDP is not served.
	if st := udpCall(int(nfsPort), progNFS, 3, 0, nil).uint32(); st != acceptProgUnavail {
		t.Fatalf("NFS over UDP: accept status %d, want PROG_UNAVAIL", st)
	}
}

// At the connection limit a new client is served and the connection idle
// longest is closed; the others go on.
func TestConnectionLimit(t *testing.T) {
	e := newEnv(t, Config{MaxConns: 3})
	var cs []*Client
	for range 3 {
		c, _ := e.client(0, 0)
		cs = append(cs, c)
	}
	if _, err := cs[1].Mount("/vp"); err != nil { // cs[0] is now the idlest
		t.Fatal(err)
	}
	if _, err := cs[2].Mount("/vp"); err != nil {
		t.Fatal(err)
	}
	e.client(0, 0) // a fourth
	if _, err := cs[0].Mount("/vp"); err == nil {
		t.Fatal("the idlest connection still served with a fourth past a limit of 3")
	}
	for _, c := range cs[1:] {
		if _, err := c.Mount("/vp"); err != nil {
			t.Fatalf("a connection within the limit: %v", err)
		}
	}
}

// admit picks the idlest connection with no call in flight, of the same
// client when that client is at its limit, and refuses when all are busy.
func TestAdmit(t *testing.T) {
	s := &Server{lim: newLimits(&Config{MaxConns: 3, MaxConnsPerClient: 2}), log: testLogger()}
	s.mu.conns, s.mu.perClient = map[net.Conn]*conn{}, map[netip.Addr]int{}
	a, b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	mk := func(addr netip.Addr, last int64, busy bool) *conn {
		c1, c2 := net.Pipe()
		t.Cleanup(func() { c1.Close(); c2.Close() })
		cn := &conn{s: s, c: c1, peer: &peer{addr: addr.String() + ":900"}}
		cn.addr, cn.cancel = addr, func() {}
		cn.last.Store(last)
		if busy {
			cn.inflight.Store(1)
		}
		s.addLocked(cn)
		return cn
	}
	a1 := mk(a, 1, false)
	a2 := mk(a, 2, true)
	b1 := mk(b, 3, false)
	in := func(cn *conn) bool { _, ok := s.mu.conns[cn.c]; return ok }
	if !s.admitLocked(b) || in(a1) || !in(a2) || !in(b1) { // full: a1 is the idlest
		t.Fatalf("at the limit: a1 %v a2 %v b1 %v", in(a1), in(a2), in(b1))
	}
	b2 := mk(b, 4, false)
	if !s.admitLocked(b) || in(b1) || !in(b2) || !in(a2) { // b at its limit: b's idlest
		t.Fatalf("at b's limit: b1 %v b2 %v a2 %v", in(b1), in(b2), in(a2))
	}
	b3 := mk(b, 5, true)
	b2.inflight.Store(1)
	if s.admitLocked(b) || !in(b2) || !in(b3) {
		t.Fatal("admitted with every connection of the client busy")
	}
	if s.perClientCount(b) != 2 || s.perClientCount(a) != 1 {
		t.Fatalf("counts: a %d b %d", s.perClientCount(a), s.perClientCount(b))
	}
}

func (s *Server) perClientCount(a netip.Addr) int { return s.mu.perClient[a] }
