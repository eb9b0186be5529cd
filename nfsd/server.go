package nfsd

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"vpool/fs"

	"golang.org/x/sync/semaphore"
)

// Program numbers.
const (
	progPortmap = 100000
	progNFS     = 100003
	progMount   = 100005
)

// Config is the gateway's settings.
type Config struct {
	// Listen is the address of the NFS and MOUNT services ("host" or
	// "host:port"; the default port is 2049).
	Listen string
	// PortmapPort is where the portmapper listens on Listen's host (TCP and
	// UDP); 0 turns it off.
	PortmapPort int
	// Allow lists the client networks and how each is served; empty
	// serves every client under Default (its Net is ignored).
	Allow   []Rule
	Default Rule
	// Export is the path clients mount: "/" + the vPool's name.
	Export string
	// Bounds on what clients can make the gateway hold (0: the Default*
	// constants): connections in all and per client address, the idle
	// time after which a connection with no call in flight is closed,
	// and the bytes of calls and replies in flight (at least MinBuffer).
	MaxConns, MaxConnsPerClient int
	IdleTimeout                 time.Duration
	Buffer                      int64
	// Notify, when set, is told of every change the gateway makes, so
	// that the FUSE mount's kernel caches show it at once (fs.Mount).
	Notify Notifier
	Log    *slog.Logger
}

// Notifier invalidates another view's caches of the namespace.
type Notifier interface {
	InvalidateInode(ino uint64, off, length int64) // off < 0: attributes only; length 0: to the end
	InvalidateEntry(parent uint64, name string)
}

type noNotify struct{}

func (noNotify) InvalidateInode(uint64, int64, int64) {}
func (noNotify) InvalidateEntry(uint64, string)       {}

// Server serves one vPool's namespace over NFSv3, MOUNT v3 and the
// portmapper.
type Server struct {
	cfg   Config
	ns    *fs.Namespace
	log   *slog.Logger
	fsid  uint64
	verf  [8]byte // write verifier: new at every start
	files *fileCache
	sem   chan struct{}
	work  chan func() // to idle workers

	nfsPort    int
	lim        *limits
	rules      []Rule
	ctx        context.Context // ends at Close: calls waiting for buffer budget give up
	cancel     context.CancelFunc
	registered string // host of the portmapper MOUNT and NFS are registered with, if not ours
	closing    atomic.Bool
	wg         sync.WaitGroup
	warnState
	mu struct {
		sync.Mutex
		listeners []net.Listener
		packets   []net.PacketConn
		conns     map[net.Conn]*conn
		perClient map[netip.Addr]int
		mounts    map[string]string // client address -> mounted path (DUMP)
	}
	Stats Stats
}

// Stats counts what the gateway did.
type Stats struct {
	Calls, Errors, ReadBytes, WriteBytes, Conns atomic.Uint64
	// OpenConns are the connections open now; Buffered the bytes calls
	// and replies in flight hold of the buffer budget (nfs.buffer).
	OpenConns, Buffered atomic.Int64
	// Read-ahead: bytes READs took from it, and bytes it read that no
	// READ took (the file changed, or the client stopped or jumped).
	ReadAheadUsed, ReadAheadWasted atomic.Uint64
}

// New makes a server; Start opens its ports.
func New(cfg Config, ns *fs.Namespace) *Server {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Notify == nil {
		cfg.Notify = noNotify{}
	}
	s := &Server{cfg: cfg, ns: ns, log: cfg.Log, fsid: ns.ID(), sem: make(chan struct{}, inFlight), work: make(chan func()),
		lim: newLimits(&cfg), rules: rulesOf(&cfg)}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	rand.Read(s.verf[:])
	s.files = newFileCache(ns, cfg.Log, &s.Stats)
	s.mu.conns = map[net.Conn]*conn{}
	s.mu.perClient = map[netip.Addr]int{}
	s.mu.mounts = map[string]string{}
	return s
}

// Start listens on the NFS port (TCP for NFS and MOUNT, UDP for MOUNT)
// and the portmapper's port (TCP and UDP). A port that is taken is an
// error naming it.
func (s *Server) Start() error {
	host, port, err := SplitListen(s.cfg.Listen)
	if err != nil {
		return err
	}
	if err := s.listen(host, port); err != nil {
		s.Close(context.Background())
		return err
	}
	if s.cfg.PortmapPort != 0 {
		if err := s.listen(host, s.cfg.PortmapPort); err != nil {
			// Another portmapper (rpcbind) holds the port: register with it.
			if rerr := s.register(host, true); rerr != nil {
				s.Close(context.Background())
				return fmt.Errorf("%w; registering with the portmapper there failed too: %v (set nfs.portmap: false to run without one)", err, rerr)
			}
			s.registered = host
			s.log.Info("nfs: port 111 is another portmapper's: MOUNT and NFS registered with it", "addr", host)
		}
	}
	s.log.Info("nfs: serving", "export", s.cfg.Export, "addr", net.JoinHostPort(host, strconv.Itoa(s.nfsPort)),
		"portmap", s.cfg.PortmapPort, "allow", s.rules)
	return nil
}

// SplitListen reads "host" or "host:port" (port 2049 by default).
func SplitListen(l string) (string, int, error) {
	if l == "" {
		return "", 0, errors.New("nfs: no listen address")
	}
	host, p, err := net.SplitHostPort(l)
	if err != nil {
		if ip := net.ParseIP(l); ip != nil || !strings.Contains(l, ":") {
			return l, 2049, nil
		}
		return "", 0, fmt.Errorf("nfs: listen address %q: %v", l, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("nfs: listen address %q: bad port", l)
	}
	return host, port, nil
}

func (s *Server) listen(host string, port int) error {
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("nfs: listen on tcp %s: %w", addr, err)
	}
	port = l.Addr().(*net.TCPAddr).Port // port 0 picks one (tests): UDP takes the same
	addr = net.JoinHostPort(host, strconv.Itoa(port))
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		l.Close()
		return fmt.Errorf("nfs: listen on udp %s: %w", addr, err)
	}
	if s.nfsPort == 0 {
		s.nfsPort = port
	}
	s.mu.Lock()
	s.mu.listeners = append(s.mu.listeners, l)
	s.mu.packets = append(s.mu.packets, pc)
	s.mu.Unlock()
	s.wg.Add(2)
	go s.acceptLoop(l)
	go s.packetLoop(pc)
	return nil
}

// Port is the TCP port of the NFS service.
func (s *Server) Port() int { return s.nfsPort }

// Verifier is the write verifier of this run.
func (s *Server) Verifier() [8]byte { return s.verf }

// Close stops listening, lets calls in progress finish, closes the
// connections and releases the files the gateway holds open.
func (s *Server) Close(ctx context.Context) error {
	if s.closing.Swap(true) {
		return nil
	}
	s.cancel()
	if s.registered != "" {
		if err := s.register(s.registered, false); err != nil {
			s.log.Warn("nfs: unregister from the portmapper", "err", err)
		}
	}
	s.mu.Lock()
	for _, l := range s.mu.listeners {
		l.Close()
	}
	for _, pc := range s.mu.packets {
		pc.Close()
	}
	for c := range s.mu.conns {
		c.Close() // the reader stops; calls already read still finish
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	return s.files.close(ctx)
}

func (s *Server) acceptLoop(l net.Listener) {
	defer s.wg.Done()
	for {
		c, err := l.Accept()
		if err != nil {
			if s.closing.Load() {
				return
			}
			s.log.Warn("nfs: accept", "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		p, ok := s.ruleFor(c.RemoteAddr())
		if !ok {
			s.warnLimited("nfs: client not in nfs.allow: connection refused", "client", c.RemoteAddr().String())
			c.Close()
			continue
		}
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetNoDelay(true)
		}
		cn := s.newConn(c, p)
		s.mu.Lock()
		if s.closing.Load() {
			s.mu.Unlock()
			c.Close()
			return
		}
		if !s.admitLocked(cn.addr) {
			s.mu.Unlock()
			s.warnLimited("nfs: at the connection limit with every connection busy: refused", "client", p.addr,
				"limit", s.lim.maxConns, "per_client", s.lim.perClient)
			c.Close()
			continue
		}
		s.addLocked(cn)
		s.mu.Unlock()
		s.Stats.Conns.Add(1)
		s.wg.Add(1)
		go s.serveConn(cn)
	}
}

func (s *Server) newConn(c net.Conn, p *peer) *conn {
	cn := &conn{s: s, c: c, peer: p, perConn: make(chan struct{}, perConnInFlight), maxRecord: maxRecord}
	if !p.trusted() {
		cn.maxRecord = untrustedRecord
	}
	cn.addr = p.ip
	cn.ctx, cn.cancel = context.WithCancel(s.ctx)
	cn.budget = semaphore.NewWeighted(s.lim.perConnBuffer)
	cn.last.Store(time.Now().UnixNano())
	return cn
}

// serveConn reads calls from one connection and processes up to
// perConnInFlight of them at once; replies go out as they are ready,
// matched by XID. A record that cannot be read ends the connection after
// the calls already read are answered.
func (s *Server) serveConn(cn *conn) {
	defer s.wg.Done()
	cn.br = bufio.NewReaderSize(cn.c, connReadBuf)
	cn.calls.Add(1) // the reader
	s.run(cn.read)
	cn.calls.Wait()
	cn.c.Close()
	cn.cancel()
	s.mu.Lock()
	s.dropLocked(cn)
	s.mu.Unlock()
}

// conn is one TCP connection's state.
type conn struct {
	s    *Server
	c    net.Conn
	peer *peer
	br   *bufio.Reader
	connState
	maxRecord int
	perConn   chan struct{}  // calls in flight
	calls     sync.WaitGroup // calls in flight, and the reader
	qmu       sync.Mutex
	queue     []reply    // replies waiting for the writer (qmu)
	wmu       sync.Mutex // held by the goroutine writing to c
	failed    bool       // a write failed: replies are dropped (wmu)
}

// read is the connection's reader: it waits for a call, takes a slot
// for it (so a call received always runs), reads it, hands the reading
// on to another goroutine and answers the call itself. So a call starts
// on the goroutine the network woke, with no hand-off before it, and a
// client that waits for each reply (a sequential nfs-cp) pays no
// goroutine switch on the way in or, see send, out.
func (cn *conn) read() {
	if err := cn.waitCall(); err != nil {
		cn.calls.Done() // no more calls: idle, closed or gone
		return
	}
	cn.perConn <- struct{}{}
	cn.s.sem <- struct{}{}
	ch := newCharge(cn)
	cn.c.SetReadDeadline(time.Now().Add(cn.s.lim.record))
	rec, err := readRecord(cn.br, cn.maxRecord, ch.take)
	if err != nil {
		<-cn.s.sem
		<-cn.perConn
		ch.release()
		switch {
		case errors.Is(err, errRecordTooBig) || errors.Is(err, errGarbage):
			cn.s.warnLimited("nfs: bad record: connection closed", "client", cn.peer.addr, "err", err)
		case errors.Is(err, os.ErrDeadlineExceeded):
			cn.s.warnLimited("nfs: a call was not received within its time: connection closed", "client", cn.peer.addr,
				"timeout", cn.s.lim.record)
		}
		cn.calls.Done() // no more calls: the connection closes once the calls read are answered
		return
	}
	cn.inflight.Add(1)
	cn.last.Store(time.Now().UnixNano())
	cn.calls.Add(1) // the next reader; this call keeps the reader's count
	cn.s.run(cn.read)
	defer func() { cn.inflight.Add(-1); <-cn.s.sem; <-cn.perConn; cn.calls.Done() }()
	out, err := cn.s.serveCall(rec, cn.peer, true, ch)
	putBig(rec)
	if err != nil {
		ch.release()
		cn.s.warnLimited("nfs: not an RPC call: connection closed", "client", cn.peer.addr, "err", err)
		cn.c.Close()
		return
	}
	if out == nil {
		ch.release()
		return
	}
	cn.send(reply{b: frame(out), ch: ch})
}

// reply is a framed reply and what its call holds of the budgets.
type reply struct {
	b  []byte
	ch *charge
}

// send queues a reply and, unless another goroutine is writing (which
// then sends it too), writes every queued reply in one writev.
func (cn *conn) send(r reply) {
	cn.qmu.Lock()
	cn.queue = append(cn.queue, r)
	cn.qmu.Unlock()
	for cn.wmu.TryLock() {
		cn.qmu.Lock()
		batch := cn.queue
		cn.queue = nil
		cn.qmu.Unlock()
		if len(batch) > 0 {
			cn.write(batch)
		}
		cn.wmu.Unlock()
		// A reply queued while this goroutine held wmu was left to it.
		cn.qmu.Lock()
		idle := len(cn.queue) == 0
		cn.qmu.Unlock()
		if idle {
			return
		}
	}
}

// write sends replies (wmu held) and gives their buffers and budgets
// back.
func (cn *conn) write(batch []reply) {
	if !cn.failed { // else drop: the calls still finish
		cn.c.SetWriteDeadline(time.Now().Add(writeTimeout))
		bufs := make(net.Buffers, len(batch))
		for i, r := range batch {
			bufs[i] = r.b
		}
		if _, err := bufs.WriteTo(cn.c); err != nil {
			cn.failed = true
			cn.c.Close()
		}
	}
	for _, r := range batch {
		putBig(r.b)
		r.ch.release()
	}
}

// run hands a job to an idle worker, or starts one. Workers live on for
// workerIdle: a call on a fresh goroutine spends a tenth of its CPU
// growing the goroutine's stack.
func (s *Server) run(job func()) {
	select {
	case s.work <- job:
	default:
		go s.worker(job)
	}
}

const workerIdle = 10 * time.Second

func (s *Server) worker(job func()) {
	t := time.NewTimer(workerIdle)
	defer t.Stop()
	for {
		job()
		t.Reset(workerIdle)
		select {
		case job = <-s.work:
		case <-t.C:
			return
		}
	}
}

func (s *Server) packetLoop(pc net.PacketConn) {
	defer s.wg.Done()
	buf := make([]byte, 64<<10)
	for {
		n, addr, err := pc.ReadFrom(buf)
		if err != nil {
			if s.closing.Load() {
				return
			}
			continue
		}
		p, ok := s.ruleFor(addr)
		if !ok {
			continue
		}
		rec := append([]byte(nil), buf[:n]...)
		reply, err := s.serveCall(rec, p, false, nil)
		if err == nil && reply != nil {
			pc.WriteTo(reply[4:], addr) // no record mark over UDP
		}
	}
}

// handle decodes and answers one call; an error means the record was
// not an RPC call at all.
func (s *Server) serveCall(rec []byte, p *peer, tcp bool, ch *charge) ([]byte, error) {
	c, deny, err := parseCall(rec)
	if err != nil {
		return nil, err
	}
	if deny != nil {
		return deny, nil
	}
	c.peer, c.tcp, c.charge = p, tcp, ch
	p.rule.squash(&c.cred)
	s.Stats.Calls.Add(1)
	if !p.trusted() && (c.prog == progNFS || c.prog == progMount && c.proc == 1) {
		return s.refusedPort(&c), nil
	}
	switch c.prog {
	case progPortmap:
		return s.portmap(&c), nil
	case progMount:
		if c.vers != 3 {
			return progMismatch(c.xid, 3, 3), nil
		}
		return s.mount(&c), nil
	case progNFS:
		if !tcp {
			return accepted(c.xid, acceptProgUnavail, 0).b, nil
		}
		if c.vers != 3 {
			return progMismatch(c.xid, 3, 3), nil
		}
		return s.nfs3(&c), nil
	}
	return accepted(c.xid, acceptProgUnavail, 0).b, nil
}

// garbage is the reply to a call whose arguments do not decode.
func garbage(c *call) []byte { return accepted(c.xid, acceptGarbageArgs, 0).b }
