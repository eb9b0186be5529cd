package dtl

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Entry is one shipped piece of a write: TLog records as the owner wrote
// them at positions [Rec0, Rec0+len(Recs)/RecordSize) of TLog Seq, and the
// data of their write records, in record order.
type Entry struct {
	Seq, Rec0  uint32
	Recs, Data []byte
}

// Source is the owner's local flash, read when a session lacks entries.
type Source interface {
	// Lacking calls fn with the entries of TLogs after trimmed that are on
	// local flash at positions held does not report; first it calls total
	// with their bytes.
	Lacking(ctx context.Context, trimmed uint32, held func(seq, rec uint32) bool, total func(bytes int64), fn func(Entry) error) error
}

// ClientConfig configures an owner's side of the DTL.
type ClientConfig struct {
	Pool   string
	Epoch  uint64 // the owner epoch; a DTL refuses lower ones once it saw this
	Owner  string // for the servers' logs
	Peers  []string
	TLS    *tls.Config // nil: plain TCP
	OnLoss OnLoss
	Log    *slog.Logger
	// OnFenced, if set, is called once when a DTL says a newer owner
	// epoch holds the vPool; from then on every write and flush fails
	// with ErrFenced.
	OnFenced func(reason string)
	// Dial, if set, connects to a peer instead of TCP (the simulation's
	// network).
	Dial func(ctx context.Context, addr string) (net.Conn, error)
}

// Client ships vDisks' entries to DTL servers.
type Client struct {
	cfg   ClientConfig
	peers []*peer
	gens  atomic.Uint64
	ids   atomic.Uint64
	// fenced is set when a DTL refused this owner's epoch
	fenced atomic.Bool
	stop   chan struct{}
	wg     sync.WaitGroup

	mu struct {
		sync.Mutex
		streams map[uint64]*Stream
		fetched map[string]map[uint64]bool // peer → vDisks read back
		closed  bool
	}
}

// errStreamClosed fails a write or flush waiting for the DTL when its
// vDisk's stream closes (the vDisk closes or is deleted): acknowledging it
// would promise a copy that no DTL holds.
var errStreamClosed = errors.New("dtl: the vDisk's DTL stream closed before the DTL held the write")

// maxQueued bounds the bytes queued for one peer; writers wait for room.
const maxQueued = 16 << 20

// holdBytes is how much the writer holds back while replies are in
// flight; more goes out at once.
const holdBytes = 256 << 10

// writeTimeout bounds how long a peer may take to accept queued bytes
// before its session is given up.
const writeTimeout = 20 * time.Second

// replyTimeout is how long a peer may owe a reply before its session is
// given up (and, in sync mode with on_loss degrade, writes go on).
const replyTimeout = 10 * time.Second

// dialTimeout bounds connecting to a peer.
const dialTimeout = 5 * time.Second

// NewClient returns a client; its sessions start with Attach.
func NewClient(cfg ClientConfig) *Client {
	c := &Client{cfg: cfg, stop: make(chan struct{})}
	c.mu.streams = map[uint64]*Stream{}
	c.mu.fetched = map[string]map[uint64]bool{}
	for _, a := range cfg.Peers {
		p := &peer{c: c, addr: a, streams: map[uint64]*Stream{}}
		p.cond = sync.NewCond(&p.mu)
		c.peers = append(c.peers, p)
	}
	for _, p := range c.peers {
		c.wg.Add(1)
		go p.run()
	}
	return c
}

// Close ends every session.
func (c *Client) Close() {
	c.mu.Lock()
	if c.mu.closed {
		c.mu.Unlock()
		return
	}
	c.mu.closed = true
	c.mu.Unlock()
	close(c.stop)
	for _, p := range c.peers {
		p.mu.Lock()
		if p.conn != nil {
			p.conn.Close()
		}
		p.cond.Broadcast()
		p.mu.Unlock()
	}
	c.wg.Wait()
}

func (c *Client) dial(ctx context.Context, addr string) (net.Conn, *bufio.Reader, error) {
	var conn net.Conn
	var err error
	if c.cfg.Dial != nil {
		conn, err = c.cfg.Dial(ctx, addr)
	} else {
		d := net.Dialer{Timeout: dialTimeout, KeepAlive: 15 * time.Second}
		conn, err = d.DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return nil, nil, err
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	conn.SetDeadline(time.Now().Add(helloTimeout))
	if c.cfg.TLS != nil {
		t := tls.Client(conn, c.cfg.TLS)
		if err := t.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, nil, fmt.Errorf("dtl: TLS with %s: %w", addr, err)
		}
		conn = t
	}
	hello := Msg{Type: MsgHello, Version: Version, Epoch: c.cfg.Epoch, Pool: c.cfg.Pool, Owner: c.cfg.Owner}
	if _, err := conn.Write(hello.Encode(nil)); err != nil {
		conn.Close()
		return nil, nil, err
	}
	r := bufio.NewReaderSize(conn, 64<<10)
	m, err := NewReader(r).Next()
	if err == nil && m.Type == MsgRefuse {
		err = fmt.Errorf("%w by %s: %s", ErrRefused, addr, m.Reason)
		if m.Flags&RefuseFenced != 0 {
			c.fence(m.Reason)
			err = fmt.Errorf("%w (%s: %s)", ErrFenced, addr, m.Reason)
		}
	} else if err == nil && m.Type != MsgWelcome {
		err = fmt.Errorf("%w: %s answered hello with %s", ErrFrame, addr, m.Type)
	}
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	conn.SetDeadline(time.Time{})
	return conn, r, nil
}

// fence makes every write and flush fail from now on.
func (c *Client) fence(reason string) {
	if c.fenced.Swap(true) {
		return
	}
	c.cfg.Log.Error("dtl: this owner is fenced: a newer owner epoch holds the vPool; writes fail from now on", "reason", reason)
	c.mu.Lock()
	streams := make([]*Stream, 0, len(c.mu.streams))
	for _, s := range c.mu.streams {
		streams = append(streams, s)
	}
	c.mu.Unlock()
	for _, s := range streams {
		s.mu.Lock()
		for id, ch := range s.mu.waiters {
			close(ch)
			delete(s.mu.waiters, id)
		}
		s.mu.Unlock()
	}
	if c.cfg.OnFenced != nil {
		go c.cfg.OnFenced(reason)
	}
}

// Fenced reports whether a DTL refused this owner's epoch.
func (c *Client) Fenced() bool { return c.fenced.Load() }

// ReadBack calls fn with every entry the peers hold for the pool, peer by
// peer, before any session appends (a restore). An unreachable peer is an
// error naming it; the others are still read.
func (c *Client) ReadBack(ctx context.Context, fn func(VDiskInfo, Entry) error) error {
	var errs []error
	for _, p := range c.peers {
		if err := c.readBack(ctx, p.addr, fn); err != nil {
			errs = append(errs, fmt.Errorf("DTL peer %s: %w", p.addr, err))
		}
	}
	return errors.Join(errs...)
}

func (c *Client) readBack(ctx context.Context, addr string, fn func(VDiskInfo, Entry) error) error {
	conn, r, err := c.dial(ctx, addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if _, err := conn.Write((&Msg{Type: MsgList}).Encode(nil)); err != nil {
		return err
	}
	fr := NewReader(r)
	m, err := fr.Next()
	if err != nil {
		return err
	}
	if m.Type != MsgListing {
		return fmt.Errorf("%w: list answered with %s %s", ErrFrame, m.Type, m.Reason)
	}
	for _, info := range m.VDisks {
		if _, err := conn.Write((&Msg{Type: MsgFetch, VDisk: info.VDisk}).Encode(nil)); err != nil {
			return err
		}
		for {
			e, err := fr.Next()
			if err != nil {
				return err
			}
			if e.Type == MsgFetchEnd {
				break
			}
			if e.Type != MsgEntry || e.VDisk != info.VDisk {
				return fmt.Errorf("%w: fetch of %016x answered with %s %s", ErrFrame, info.VDisk, e.Type, e.Reason)
			}
			if err := fn(info, Entry{Seq: e.Seq, Rec0: e.Rec0, Recs: e.Recs, Data: e.Data}); err != nil {
				return err
			}
		}
		c.mu.Lock()
		if c.mu.fetched[addr] == nil {
			c.mu.fetched[addr] = map[uint64]bool{}
		}
		c.mu.fetched[addr][info.VDisk] = true
		c.mu.Unlock()
	}
	return nil
}

// Stream is one vDisk's DTL: the Tracker and its driver.
//
// Lock order: Stream.mu before peer.mu; Client.mu is never held with
// either.
type Stream struct {
	c           *Client
	id          uint64
	clusterSize uint32
	scoSize     uint32
	epoch       uint64
	src         Source

	mu struct {
		sync.Mutex
		t       *Tracker
		peer    *peer
		gen     uint64
		waiters map[uint64]chan struct{}
		aborted map[uint64]bool // waiters released by Close, not by the DTL
		left    int64           // catch-up bytes not yet queued
		closed  bool
		// the Have of the session: what the DTL holds
		haveRuns    []Run
		haveTrimmed uint32
	}
}

// Attach starts shipping a vDisk's entries in mode.
func (c *Client) Attach(id uint64, clusterSize, scoSize uint32, mode Mode, src Source) *Stream {
	s := &Stream{c: c, id: id, clusterSize: clusterSize, scoSize: scoSize, epoch: c.cfg.Epoch, src: src}
	s.mu.t = NewTracker(mode, c.cfg.OnLoss, time.Now())
	s.mu.waiters = map[uint64]chan struct{}{}
	c.mu.Lock()
	c.mu.streams[id] = s
	c.mu.Unlock()
	if mode != ModeNone {
		c.place(s)
	}
	return s
}

// place puts a stream without a session on a peer that is up, trying
// them in an order of the vDisk's own (so vDisks spread over peers).
func (c *Client) place(s *Stream) {
	n := len(c.peers)
	if n == 0 {
		return
	}
	s.mu.Lock()
	if s.mu.peer != nil || s.mu.closed {
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	start := int(s.id % uint64(n))
	for i := 0; i < n; i++ {
		p := c.peers[(start+i)%n]
		if p.attach(s) {
			return
		}
	}
	// none is up: the first to come up takes it
	for _, p := range c.peers {
		p.attachDown(s)
	}
}

func (s *Stream) step(ev TEvent) []TAction {
	return s.mu.t.Step(ev)
}

// doLocked runs a tracker's actions; the caller holds s.mu.
func (s *Stream) doLocked(acts []TAction, entries []Entry) {
	for _, a := range acts {
		switch a.Kind {
		case TSend:
			if p := s.mu.peer; p != nil {
				p.enqueueFn(a.Gen, len(entries), func(b []byte) []byte {
					for i, e := range entries {
						m := Msg{Type: MsgAppend, VDisk: s.id, LSN: a.LSN + uint64(i), Seq: e.Seq, Rec0: e.Rec0, Recs: e.Recs, Data: e.Data}
						b = m.Encode(b)
					}
					return b
				})
			}
		case TSendSync:
			if p := s.mu.peer; p != nil {
				p.enqueue(a.Gen, 1, (&Msg{Type: MsgSync, VDisk: s.id, LSN: a.LSN}).Encode(nil))
			}
		case TSendTrim:
			if p := s.mu.peer; p != nil {
				p.enqueue(a.Gen, 0, (&Msg{Type: MsgTrim, VDisk: s.id, Seq: a.Seq}).Encode(nil))
			}
		case TCatchUp:
			s.c.wg.Add(1)
			go s.catchUp(a.Gen)
		case TRelease:
			if ch := s.mu.waiters[a.ID]; ch != nil {
				close(ch)
				delete(s.mu.waiters, a.ID)
			}
		case TDrop:
			if p := s.mu.peer; p != nil {
				p.enqueue(s.mu.gen, 0, (&Msg{Type: MsgDrop, VDisk: s.id}).Encode(nil))
				p.detach(s)
				s.mu.peer, s.mu.gen = nil, 0
			}
		}
	}
}

func (s *Stream) wait(ctx context.Context, id uint64, ch chan struct{}) error {
	select {
	case <-ch:
		if s.c.fenced.Load() {
			return ErrFenced
		}
		s.mu.Lock()
		aborted := s.mu.aborted[id]
		delete(s.mu.aborted, id)
		s.mu.Unlock()
		if aborted {
			return errStreamClosed
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-s.c.stop:
		return fmt.Errorf("dtl: client closed")
	}
}

// Ship hands over one write's entries (copied before it returns) and
// returns when the mode allows the write to be acknowledged.
func (s *Stream) Ship(ctx context.Context, entries []Entry) error {
	if s.c.fenced.Load() {
		return ErrFenced
	}
	s.mu.Lock()
	p := s.mu.peer
	mode := s.mu.t.mode
	s.mu.Unlock()
	if mode == ModeNone {
		return nil
	}
	if p != nil {
		p.waitRoom(ctx) // outside s.mu: acks must get through meanwhile
	}
	var ch chan struct{}
	id := s.c.ids.Add(1)
	s.mu.Lock()
	if s.mu.t.mode == ModeSync {
		ch = make(chan struct{})
		s.mu.waiters[id] = ch
	} else {
		id = 0
	}
	s.doLocked(s.step(TEvent{Kind: TWrite, ID: id, N: len(entries)}), entries)
	s.mu.Unlock()
	if ch == nil {
		return nil
	}
	return s.wait(ctx, id, ch)
}

// Flush returns when every entry shipped before it is held and synced by
// the DTL (or the DTL is lost and OnLoss says to go on).
func (s *Stream) Flush(ctx context.Context) error {
	if s.c.fenced.Load() {
		return ErrFenced
	}
	ch := make(chan struct{})
	id := s.c.ids.Add(1)
	s.mu.Lock()
	s.mu.waiters[id] = ch
	s.doLocked(s.step(TEvent{Kind: TFlush, ID: id}), nil)
	s.mu.Unlock()
	return s.wait(ctx, id, ch)
}

// Trim says that TLogs through seq are on the backend.
func (s *Stream) Trim(seq uint32) {
	s.mu.Lock()
	s.doLocked(s.step(TEvent{Kind: TTrim, Seq: seq}), nil)
	s.mu.Unlock()
}

// SetMode changes the vDisk's mode.
func (s *Stream) SetMode(m Mode) {
	s.mu.Lock()
	s.doLocked(s.step(TEvent{Kind: TSetMode, Mode: m}), nil)
	placed := s.mu.peer != nil
	s.mu.Unlock()
	if m != ModeNone && !placed {
		s.c.place(s)
	}
}

// Close ends the stream; with drop, the DTL forgets the vDisk (deleted).
func (s *Stream) Close(drop bool) {
	s.mu.Lock()
	if drop {
		s.doLocked(s.step(TEvent{Kind: TSetMode, Mode: ModeNone}), nil)
	}
	s.mu.closed = true
	p := s.mu.peer
	s.mu.peer = nil
	for id, ch := range s.mu.waiters {
		if s.mu.aborted == nil {
			s.mu.aborted = map[uint64]bool{}
		}
		s.mu.aborted[id] = true // the write or flush fails: nothing holds it
		close(ch)
		delete(s.mu.waiters, id)
	}
	s.mu.Unlock()
	if p != nil {
		p.detach(s)
	}
	s.c.mu.Lock()
	if s.c.mu.streams[s.id] == s {
		delete(s.c.mu.streams, s.id)
	}
	s.c.mu.Unlock()
}

// StreamStatus is what status shows of a vDisk's DTL.
type StreamStatus struct {
	TrackerStatus
	Peer          string
	CatchUpLeft   int64 // bytes
	TLS           bool
	LagEntries    uint64
	WaitingWrites int
}

// Status reports the stream's state.
func (s *Stream) Status() StreamStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := StreamStatus{TrackerStatus: s.mu.t.Status(), CatchUpLeft: s.mu.left, TLS: s.c.cfg.TLS != nil}
	if s.mu.peer != nil {
		st.Peer = s.mu.peer.addr
	}
	return st
}

// opened is the Have of a new session.
func (s *Stream) opened(p *peer, gen uint64, have Msg) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.peer != p || s.mu.closed {
		return
	}
	s.mu.gen = gen
	s.mu.haveRuns = have.Runs
	s.mu.haveTrimmed = have.Seq
	s.doLocked(s.step(TEvent{Kind: TConnected, Gen: gen}), nil)
}

func (s *Stream) catchUp(gen uint64) {
	defer s.c.wg.Done()
	s.mu.Lock()
	runs, trimmed, p := s.mu.haveRuns, s.mu.haveTrimmed, s.mu.peer
	s.mu.Unlock()
	if p == nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-s.c.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	errStale := errors.New("session gone")
	err := s.src.Lacking(ctx, trimmed, func(seq, rec uint32) bool { return Holds(runs, seq, rec) },
		func(n int64) {
			s.mu.Lock()
			s.mu.left = n
			s.mu.Unlock()
		},
		func(e Entry) error {
			p.waitRoom(ctx)
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.mu.gen != gen || s.mu.peer != p {
				return errStale
			}
			s.doLocked(s.step(TEvent{Kind: TWrite, N: 1}), []Entry{e})
			s.mu.left -= int64(len(e.Recs) + len(e.Data))
			return nil
		})
	if errors.Is(err, errStale) || ctx.Err() != nil {
		return
	}
	if err != nil {
		s.c.cfg.Log.Error("dtl: catch-up could not read local flash; the session ends and will try again",
			"vdisk", fmt.Sprintf("%016x", s.id), "err", err)
		p.fail(gen)
		return
	}
	s.mu.Lock()
	s.mu.left = 0
	s.doLocked(s.step(TEvent{Kind: TCaughtUp, Gen: gen}), nil)
	s.mu.Unlock()
}

// peer is one DTL server and the session with it.
type peer struct {
	c    *Client
	addr string

	mu   sync.Mutex
	cond *sync.Cond
	conn net.Conn
	gen  uint64
	up   bool
	out  []byte
	// outstanding counts the replies the session owes (Ack, Synced,
	// Have): a link that drops packets silently shows up as a reply
	// overdue, not after TCP's minutes of retries.
	outstanding int
	// queued counts the replies owed for what is in out; inflight, for
	// what was sent. The writer holds a small queue back while replies
	// are in flight (ack-clocked batching, as Nagle's algorithm): a
	// lone write goes out at once, and under load one send and one Ack
	// carry a burst instead of a system call and a wakeup per write on
	// both hosts.
	queued, inflight int
	deadline         time.Time // the read deadline set on conn
	streams          map[uint64]*Stream
	down             map[uint64]*Stream // waiting for this peer to come up
}

func (p *peer) attach(s *Stream) bool {
	p.mu.Lock()
	up, gen := p.up, p.gen
	p.mu.Unlock()
	if !up {
		return false
	}
	s.mu.Lock()
	claimed := s.mu.peer == nil && !s.mu.closed
	if claimed {
		s.mu.peer = p
	}
	s.mu.Unlock()
	if !claimed {
		return false
	}
	p.mu.Lock()
	p.streams[s.id] = s
	still := p.up && p.gen == gen
	p.mu.Unlock()
	if !still { // the session ended meanwhile, perhaps without seeing the stream
		p.detach(s)
		s.mu.Lock()
		if s.mu.peer == p {
			s.mu.peer = nil
		}
		s.mu.Unlock()
		return false
	}
	p.open(s, gen)
	return true
}

func (p *peer) attachDown(s *Stream) {
	p.mu.Lock()
	if p.down == nil {
		p.down = map[uint64]*Stream{}
	}
	p.down[s.id] = s
	up := p.up
	p.mu.Unlock()
	if up { // came up meanwhile
		p.mu.Lock()
		delete(p.down, s.id)
		p.mu.Unlock()
		p.attach(s)
	}
}

func (p *peer) detach(s *Stream) {
	p.mu.Lock()
	delete(p.streams, s.id)
	delete(p.down, s.id)
	p.mu.Unlock()
}

// open sends a stream's Open on session gen.
func (p *peer) open(s *Stream, gen uint64) {
	flags := uint8(0)
	p.c.mu.Lock()
	if p.c.mu.fetched[p.addr][s.id] {
		flags = OpenFetched
	}
	p.c.mu.Unlock()
	p.enqueue(gen, 1, (&Msg{Type: MsgOpen, VDisk: s.id, ClusterSize: s.clusterSize, SCOSize: s.scoSize,
		Epoch: s.epoch, Flags: flags}).Encode(nil))
}

// waitRoom waits until the queue has room (or the session is gone).
func (p *peer) waitRoom(ctx context.Context) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.up && len(p.out) >= maxQueued && ctx.Err() == nil {
		p.cond.Wait()
	}
}

// enqueue queues frames for session gen; dropped if it is gone (the next
// session's catch-up sends them).
func (p *peer) enqueue(gen uint64, replies int, b []byte) {
	p.enqueueFn(gen, replies, func(out []byte) []byte { return append(out, b...) })
}

// enqueueFn queues what fn appends (encoded straight into the queue),
// frames that the server answers with replies messages.
func (p *peer) enqueueFn(gen uint64, replies int, fn func([]byte) []byte) {
	p.mu.Lock()
	if p.up && p.gen == gen {
		p.out = fn(p.out)
		p.cond.Broadcast()
		p.queued += replies
		if replies > 0 {
			if p.outstanding == 0 {
				p.setDeadlineLocked(time.Now().Add(replyTimeout))
			}
			p.outstanding += replies
		}
	}
	p.mu.Unlock()
}

// replied counts n replies (an Ack answers several Appends): while
// replies are due, the next must come within replyTimeout.
func (p *peer) replied(n int) {
	p.mu.Lock()
	p.outstanding = max(0, p.outstanding-n)
	if p.inflight > 0 {
		if p.inflight = max(0, p.inflight-n); p.inflight == 0 && len(p.out) > 0 {
			p.cond.Broadcast() // the writer may send
		}
	}
	if p.conn != nil {
		if p.outstanding == 0 {
			p.setDeadlineLocked(time.Time{})
		} else if now := time.Now(); p.deadline.Sub(now) < replyTimeout-time.Second {
			p.setDeadlineLocked(now.Add(replyTimeout)) // at most about once a second under load
		}
	}
	p.mu.Unlock()
}

func (p *peer) setDeadlineLocked(t time.Time) {
	if !t.Equal(p.deadline) {
		p.conn.SetReadDeadline(t)
		p.deadline = t
	}
}

// fail ends session gen.
func (p *peer) fail(gen uint64) {
	p.mu.Lock()
	if p.gen == gen && p.conn != nil {
		p.conn.Close()
	}
	p.mu.Unlock()
}

// run keeps a session with the peer, reconnecting with backoff.
func (p *peer) run() {
	defer p.c.wg.Done()
	backoff := 100 * time.Millisecond
	var lastErr string
	for {
		select {
		case <-p.c.stop:
			return
		default:
		}
		if p.c.fenced.Load() {
			return // nothing more to ship, ever
		}
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			select {
			case <-p.c.stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		conn, r, err := p.c.dial(ctx, p.addr)
		cancel()
		if err != nil {
			if msg := err.Error(); msg != lastErr {
				p.c.cfg.Log.Warn("dtl: peer unreachable; will retry", "peer", p.addr, "err", err)
				lastErr = msg
			}
			select {
			case <-p.c.stop:
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		if lastErr != "" {
			p.c.cfg.Log.Info("dtl: peer reachable again", "peer", p.addr)
		}
		lastErr, backoff = "", 100*time.Millisecond
		p.session(conn, r)
	}
}

// session runs one connection until it fails.
func (p *peer) session(conn net.Conn, r *bufio.Reader) {
	gen := p.c.gens.Add(1)
	p.mu.Lock()
	select {
	case <-p.c.stop: // Close ran after the dial: it did not see this conn
		p.mu.Unlock()
		conn.Close()
		return
	default:
	}
	p.conn, p.gen, p.up, p.out, p.outstanding, p.deadline = conn, gen, true, nil, 0, time.Time{}
	p.queued, p.inflight = 0, 0
	waiting := make([]*Stream, 0, len(p.down))
	for id, s := range p.down {
		waiting = append(waiting, s)
		delete(p.down, id)
	}
	p.mu.Unlock()
	sort.Slice(waiting, func(i, j int) bool { return waiting[i].id < waiting[j].id })
	for _, s := range waiting {
		p.attach(s) // unless another peer took it meanwhile
	}
	done := make(chan struct{})
	go p.writer(conn, gen, done)
	err := p.reader(r, gen)
	p.mu.Lock()
	p.up = false
	conn.Close()
	p.cond.Broadcast()
	lost := make([]*Stream, 0, len(p.streams))
	for _, s := range p.streams {
		lost = append(lost, s)
	}
	p.streams = map[uint64]*Stream{}
	p.mu.Unlock()
	<-done
	select {
	case <-p.c.stop:
		return
	default:
	}
	p.c.cfg.Log.Warn("dtl: session with peer lost", "peer", p.addr, "vdisks", len(lost), "err", err)
	now := time.Now()
	for _, s := range lost {
		s.mu.Lock()
		if s.mu.peer == p {
			s.mu.peer, s.mu.gen = nil, 0
		}
		s.doLocked(s.step(TEvent{Kind: TDisconnected, Gen: gen, Now: now}), nil)
		s.mu.Unlock()
		p.c.place(s) // another peer, if one is up
	}
}

func (p *peer) writer(conn net.Conn, gen uint64, done chan struct{}) {
	defer close(done)
	var buf []byte
	for {
		p.mu.Lock()
		for p.up && p.gen == gen && (len(p.out) == 0 || p.inflight > 0 && len(p.out) < holdBytes) {
			p.cond.Wait()
		}
		if !p.up || p.gen != gen {
			p.mu.Unlock()
			return
		}
		buf, p.out = p.out, buf[:0]
		p.inflight += p.queued
		p.queued = 0
		p.cond.Broadcast() // room again
		p.mu.Unlock()
		conn.SetWriteDeadline(time.Now().Add(writeTimeout))
		if _, err := conn.Write(buf); err != nil {
			conn.Close()
			return
		}
	}
}

func (p *peer) reader(r *bufio.Reader, gen uint64) error {
	fr := NewReader(r)
	for {
		m, err := fr.Next()
		if err != nil {
			return err
		}
		if m.Type == MsgRefuse {
			if m.Flags&RefuseFenced != 0 {
				p.c.fence(m.Reason)
				return fmt.Errorf("%w: %s", ErrFenced, m.Reason)
			}
			p.c.cfg.Log.Error("dtl: the DTL server refused this owner", "peer", p.addr, "reason", m.Reason)
			return fmt.Errorf("%w: %s", ErrRefused, m.Reason)
		}
		n := 1
		if m.Type == MsgAck {
			n = int(m.Count)
		}
		p.replied(n)
		p.c.mu.Lock()
		s := p.c.mu.streams[m.VDisk]
		p.c.mu.Unlock()
		if s == nil {
			continue
		}
		switch m.Type {
		case MsgHave:
			s.opened(p, gen, m)
		case MsgAck, MsgSynced:
			kind := TAck
			if m.Type == MsgSynced {
				kind = TSynced
			}
			s.mu.Lock()
			s.doLocked(s.step(TEvent{Kind: kind, Gen: gen, LSN: m.LSN}), nil)
			s.mu.Unlock()
		default:
			return fmt.Errorf("%w: unexpected %s from the DTL", ErrFrame, m.Type)
		}
	}
}
