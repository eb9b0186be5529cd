package nfsd

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"
)

// What clients can make the gateway hold, and for how long. Memory is
// bounded by three things: connections (each a reader goroutine and a
// connReadBuf buffer), calls in flight (each with a free allowance of
// freeBytes for its call and freeBytes for its reply), and the bytes of
// calls and replies beyond those allowances, which come out of one buffer
// budget for the gateway and a quarter of it per connection. A
// connection that may not have more stops being read: backpressure
// through TCP, never growth.
const (
	DefaultMaxConns          = 1024
	DefaultMaxConnsPerClient = 256
	DefaultIdleTimeout       = 6 * time.Minute // knfsd's; ESXi's NULL pings come far more often
	DefaultBuffer            = 32 << 20
	MinBuffer                = 16 << 20 // the per-connection quarter holds a whole 1 MiB WRITE and READ

	perConnInFlight = 64   // calls at once per connection
	inFlight        = 1024 // calls at once in all: their memory is the budget's, these are goroutines
	connReadBuf     = 32 << 10
	freeBytes       = 4 << 10 // twice this per call is not charged to the budget
	recordTimeout   = 30 * time.Second
	writeTimeout    = 60 * time.Second
	// A connection from an unprivileged port that the rule does not let
	// in can send the portmapper's calls and be told AUTH_TOOWEAK: its
	// records are small.
	untrustedRecord = 8 << 10
)

// limits are a server's bounds, from Config with defaults filled in.
type limits struct {
	maxConns, perClient int
	idle                atomic.Int64 // ns; atomic so that a test can shorten it on a live server
	record              time.Duration
	buffer              *semaphore.Weighted
	perConnBuffer       int64
}

func newLimits(cfg *Config) *limits {
	l := &limits{maxConns: cfg.MaxConns, perClient: cfg.MaxConnsPerClient, record: recordTimeout}
	if l.maxConns <= 0 {
		l.maxConns = DefaultMaxConns
	}
	if l.perClient <= 0 {
		l.perClient = DefaultMaxConnsPerClient
	}
	l.perClient = min(l.perClient, l.maxConns)
	idle := cfg.IdleTimeout
	if idle <= 0 {
		idle = DefaultIdleTimeout
	}
	l.idle.Store(int64(idle))
	b := max(cfg.Buffer, MinBuffer)
	if cfg.Buffer == 0 {
		b = DefaultBuffer
	}
	l.buffer = semaphore.NewWeighted(b)
	l.perConnBuffer = b / 4
	return l
}

// charge is what one call holds of the buffer budgets until its reply
// is written.
type charge struct {
	cn   *conn
	free int // what is left of the call's allowance
	held int64
}

func newCharge(cn *conn) *charge { return &charge{cn: cn, free: 2 * freeBytes} }

// take holds n more bytes, past the call's allowance, of the
// connection's and the gateway's budget, waiting for them.
func (ch *charge) take(n int) error {
	if ch == nil {
		return nil
	}
	use := min(n, ch.free)
	ch.free -= use
	b := int64(n - use)
	if b == 0 {
		return nil
	}
	cn := ch.cn
	if ch.held+b > cn.s.lim.perConnBuffer {
		return errRecordTooBig
	}
	if err := cn.budget.Acquire(cn.ctx, b); err != nil {
		return err
	}
	if err := cn.s.lim.buffer.Acquire(cn.ctx, b); err != nil {
		cn.budget.Release(b)
		return err
	}
	ch.held += b
	cn.s.Stats.Buffered.Add(b)
	return nil
}

// release gives back what the call held.
func (ch *charge) release() {
	if ch == nil || ch.held == 0 {
		return
	}
	ch.cn.budget.Release(ch.held)
	ch.cn.s.lim.buffer.Release(ch.held)
	ch.cn.s.Stats.Buffered.Add(-ch.held)
	ch.held = 0
}

// reserve holds room for a reply of n bytes (READ, READDIR) before it is
// built; calls without a connection (UDP, tests) have none to hold.
func (c *call) reserve(n int) error { return c.charge.take(n) }

// waitCall waits until the next call's first bytes are there. A
// connection with no call in flight that sends nothing for the idle
// timeout is closed.
func (cn *conn) waitCall() error {
	for {
		cn.c.SetReadDeadline(time.Now().Add(time.Duration(cn.s.lim.idle.Load())))
		_, err := cn.br.Peek(4)
		if err == nil || !errors.Is(err, os.ErrDeadlineExceeded) || cn.inflight.Load() == 0 {
			return err
		}
	}
}

// busy reports whether the connection has calls in flight.
func (cn *conn) busy() bool { return cn.inflight.Load() > 0 }

// admit makes room for a new connection from addr, under s.mu: when the
// gateway or the client is at its limit, the connection idle longest
// (no call in flight) goes, of the same client when the client is at
// its limit. false: every connection there is busy; refuse.
func (s *Server) admitLocked(addr netip.Addr) bool {
	overClient := s.mu.perClient[addr] >= s.lim.perClient
	if len(s.mu.conns) < s.lim.maxConns && !overClient {
		return true
	}
	var victim *conn
	for _, cn := range s.mu.conns {
		if cn.busy() || overClient && cn.addr != addr {
			continue
		}
		if victim == nil || cn.last.Load() < victim.last.Load() {
			victim = cn
		}
	}
	if victim == nil {
		return false
	}
	s.dropLocked(victim)
	victim.c.Close()
	victim.cancel() // a reader waiting for buffer gives up
	s.warnLimited("nfs: at the connection limit: the connection idle longest was closed (raise nfs.max_connections or nfs.max_connections_per_client if clients need more)",
		"client", victim.peer.addr, "new_client", addr.String(), "limit", s.lim.maxConns, "per_client", s.lim.perClient)
	return true
}

// addLocked and dropLocked keep the connection counts (s.mu held).
func (s *Server) addLocked(cn *conn) {
	s.mu.conns[cn.c] = cn
	s.mu.perClient[cn.addr]++
	s.Stats.OpenConns.Add(1)
}

func (s *Server) dropLocked(cn *conn) {
	if _, ok := s.mu.conns[cn.c]; !ok {
		return
	}
	delete(s.mu.conns, cn.c)
	s.Stats.OpenConns.Add(-1)
	if s.mu.perClient[cn.addr]--; s.mu.perClient[cn.addr] <= 0 {
		delete(s.mu.perClient, cn.addr)
	}
}

// connState is a connection's bookkeeping for the limits.
type connState struct {
	addr     netip.Addr
	inflight atomic.Int32 // calls received and not yet answered
	last     atomic.Int64 // unix ns of the last call received
	budget   *semaphore.Weighted
	ctx      context.Context // ends with the server, or when the connection goes
	cancel   context.CancelFunc
}
