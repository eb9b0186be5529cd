package dtl

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Server serves DTLs to owners: the driver of Core, with Store as its disk.
type Server struct {
	store *Store
	log   *slog.Logger
	tls   *tls.Config // nil: plain TCP

	mu struct {
		sync.Mutex
		core  *Core
		conns map[ConnID]net.Conn
		lns   []net.Listener
		next  ConnID
	}
	wg     sync.WaitGroup
	closed atomic.Bool

	// figures for status and metrics
	appends, appendBytes, syncs, refused atomic.Int64
}

// helloTimeout bounds how long a new connection may take to say hello.
const helloTimeout = 10 * time.Second

// maxConns bounds the connections a server holds (each may buffer one
// frame of up to MaxFrame).
const maxConns = 256

// NewServer loads the store and returns a server; tlsConf (may be nil)
// must require client certificates.
func NewServer(store *Store, tlsConf *tls.Config, log *slog.Logger) (*Server, error) {
	evs, err := store.Load()
	if err != nil {
		return nil, err
	}
	s := &Server{store: store, log: log, tls: tlsConf}
	s.mu.core = NewCore()
	s.mu.conns = map[ConnID]net.Conn{}
	for _, ev := range evs {
		s.mu.core.Step(ev)
	}
	return s, nil
}

// Serve accepts connections on ln until Close.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	s.mu.lns = append(s.mu.lns, ln)
	s.mu.Unlock()
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.closed.Load() {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		s.mu.Lock()
		if len(s.mu.conns) >= maxConns {
			s.mu.Unlock()
			s.log.Warn("dtl: too many connections; refusing one", "remote", c.RemoteAddr(), "limit", maxConns)
			c.Close()
			continue
		}
		s.mu.next++
		id := s.mu.next
		s.mu.conns[id] = c
		s.mu.Unlock()
		s.wg.Add(1)
		go s.serveConn(id, c)
	}
}

// Close stops listening, ends every session and waits for them; a nil
// server is a no-op.
func (s *Server) Close() {
	if s == nil {
		return
	}
	s.closed.Store(true)
	s.mu.Lock()
	for _, ln := range s.mu.lns {
		ln.Close()
	}
	for _, c := range s.mu.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	s.store.Close()
}

// ServerStats are a server's figures.
type ServerStats struct {
	Sessions    int
	VDisks      int
	HeldBytes   uint64
	Appends     int64
	AppendBytes int64
	Syncs       int64
	Refused     int64
}

// Stats returns the server's figures.
func (s *Server) Stats() ServerStats {
	s.mu.Lock()
	st := ServerStats{Sessions: len(s.mu.core.conns)}
	for _, p := range s.mu.core.pools {
		for _, v := range p.vdisks {
			st.VDisks++
			st.HeldBytes += v.info.Bytes
		}
	}
	s.mu.Unlock()
	st.Appends, st.AppendBytes, st.Syncs, st.Refused = s.appends.Load(), s.appendBytes.Load(), s.syncs.Load(), s.refused.Load()
	return st
}

func (s *Server) step(ev Event) []Action {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.core.Step(ev)
}

func (s *Server) serveConn(id ConnID, c net.Conn) {
	defer s.wg.Done()
	defer func() {
		c.Close()
		s.step(Event{Kind: EvClosed, Conn: id})
		s.mu.Lock()
		delete(s.mu.conns, id)
		s.mu.Unlock()
	}()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
		tc.SetKeepAlivePeriod(15 * time.Second)
	}
	c.SetDeadline(time.Now().Add(helloTimeout))
	if s.tls != nil {
		t := tls.Server(c, s.tls)
		if err := t.HandshakeContext(context.Background()); err != nil {
			s.refused.Add(1)
			s.log.Warn("dtl: TLS handshake failed; connection closed", "remote", c.RemoteAddr(), "err", err)
			return
		}
		c = t
	}
	r := bufio.NewReaderSize(c, 256<<10)
	fr := NewReader(r)
	cs := &connIO{id: id, c: c}
	hello := false
	for {
		m, err := fr.Next()
		if err != nil {
			if !errors.Is(err, io.EOF) && !s.closed.Load() && !errors.Is(err, net.ErrClosed) {
				s.refused.Add(1)
				s.log.Warn("dtl: bad input; connection closed", "remote", c.RemoteAddr(), "err", err)
			}
			return
		}
		if !hello {
			hello = true
			c.SetDeadline(time.Time{})
		}
		if !s.do(cs, s.step(Event{Kind: EvReceived, Conn: id, Msg: m})) {
			return
		}
		// Appends are written, and replies sent, when the input runs dry:
		// under load one write per log and one send carry many entries.
		if r.Buffered() == 0 || len(cs.replies) > 64<<10 || cs.batchBytes > 1<<20 {
			if !s.flush(cs) {
				return
			}
		}
	}
}

// connIO is what a connection has done but not yet written or sent.
type connIO struct {
	id         ConnID
	c          net.Conn
	replies    []byte        // encoded replies, sent after the batch is written
	ack        Msg           // an Ack not yet encoded, while acking
	acking     bool          //
	batch      []appendGroup // entries to append, by log, in arrival order (their buffers reused)
	batchBytes int
}

// reply queues a reply. Consecutive Acks of one vDisk become one, which
// names the last LSN and counts the Appends it answers: under load one
// Ack answers a whole burst.
func (cs *connIO) reply(m Msg) {
	if m.Type == MsgAck && cs.acking && cs.ack.VDisk == m.VDisk {
		cs.ack.LSN, cs.ack.Count = m.LSN, cs.ack.Count+m.Count
		return
	}
	cs.endAck()
	if m.Type == MsgAck {
		cs.ack, cs.acking = m, true
		return
	}
	cs.replies = m.Encode(cs.replies)
}

func (cs *connIO) endAck() {
	if cs.acking {
		cs.replies = cs.ack.Encode(cs.replies)
		cs.acking = false
	}
}

// dropReplies forgets the queued replies (what they answer failed).
func (cs *connIO) dropReplies() {
	cs.replies, cs.acking = cs.replies[:0], false
}

// appendGroup is consecutive entries for one log.
type appendGroup struct {
	pool   string
	vdisk  uint64
	seq    uint32
	frames []byte
	acts   []Action
}

func (cs *connIO) add(a Action) {
	e := a.Msg
	e.Type, e.LSN = MsgEntry, 0
	n := len(cs.batch)
	if n == 0 || cs.batch[n-1].pool != a.Pool || cs.batch[n-1].vdisk != a.VDisk || cs.batch[n-1].seq != a.Msg.Seq {
		if n < cap(cs.batch) { // a group of an earlier batch: its buffers serve again
			cs.batch = cs.batch[:n+1]
			g := &cs.batch[n]
			*g = appendGroup{pool: a.Pool, vdisk: a.VDisk, seq: a.Msg.Seq, frames: g.frames[:0], acts: g.acts[:0]}
		} else {
			cs.batch = append(cs.batch, appendGroup{pool: a.Pool, vdisk: a.VDisk, seq: a.Msg.Seq})
		}
		n++
	}
	g := &cs.batch[n-1]
	before := len(g.frames)
	g.frames = e.Encode(g.frames)
	// The action outlives the frame buffer: its records point into the
	// group's copy (len 4, type 1, vdisk 8, lsn 8, seq 4, rec0 4, n 4).
	const hdr = 33
	a.Msg = Msg{Type: MsgAppend, VDisk: a.VDisk, Seq: e.Seq, Rec0: e.Rec0, Recs: g.frames[before+hdr : before+hdr+len(e.Recs)]}
	g.acts = append(g.acts, a)
	cs.batchBytes += len(g.frames) - before
}

// writeBatch appends the batch to the logs; false when one failed (the
// session then ends, its pending replies unsent).
func (s *Server) writeBatch(cs *connIO) bool {
	for i, g := range cs.batch {
		err := s.store.AppendFrames(g.pool, g.vdisk, g.seq, g.frames)
		if err == nil {
			s.appends.Add(int64(len(g.acts)))
			s.appendBytes.Add(int64(len(g.frames)))
			continue
		}
		s.log.Error("dtl: store failed; the session ends and its owner sees the DTL as lost",
			"vpool", g.pool, "vdisk", fmt.Sprintf("%016x", g.vdisk), "err", err)
		var refusal []Action
		for _, rest := range cs.batch[i:] {
			for _, a := range rest.acts {
				if acts := s.step(Event{Kind: EvFailed, Conn: cs.id, Action: a, Err: err}); refusal == nil {
					refusal = acts
				}
			}
		}
		cs.batch, cs.batchBytes = cs.batch[:0], 0
		cs.dropReplies()
		for _, a := range refusal {
			if a.Kind == ActReply {
				cs.c.Write(a.Msg.Encode(nil))
			}
		}
		return false
	}
	cs.batch, cs.batchBytes = cs.batch[:0], 0
	return true
}

// flush writes the batch, then sends the replies.
func (s *Server) flush(cs *connIO) bool {
	if !s.writeBatch(cs) {
		return false
	}
	cs.endAck()
	if len(cs.replies) > 0 {
		if _, err := cs.c.Write(cs.replies); err != nil {
			return false
		}
		cs.replies = cs.replies[:0]
	}
	return true
}

// do runs actions in order; false: the connection ends. Appends join the
// batch; anything else that touches the store writes the batch first.
//
// Durability order: a reply goes out only after the batch before it is
// written (flush), and a Synced only after the sync of what came before.
func (s *Server) do(cs *connIO, acts []Action) bool {
	for i := 0; i < len(acts); i++ {
		a := acts[i]
		var err error
		switch a.Kind {
		case ActReply:
			cs.reply(a.Msg)
			continue
		case ActAppend:
			cs.add(a)
			continue
		case ActClose:
			s.refused.Add(1)
			s.log.Warn("dtl: session refused", "remote", cs.c.RemoteAddr(), "reason", a.Reason)
			s.flush(cs)
			return false
		}
		if !s.writeBatch(cs) {
			return false
		}
		switch a.Kind {
		case ActSaveEpoch:
			err = s.store.SaveEpoch(a.Pool, a.Epoch)
			if err == nil {
				s.log.Info("dtl: new owner epoch", "vpool", a.Pool, "epoch", a.Epoch, "remote", cs.c.RemoteAddr())
			}
		case ActSaveVDisk:
			err = s.store.SaveVDisk(a.Pool, a.Info, a.Epoch)
		case ActSync:
			err = s.store.Sync(a.Pool, a.VDisk)
			s.syncs.Add(1)
		case ActTrim:
			err = s.store.Trim(a.Pool, a.VDisk, a.Seq)
			if err != nil { // the files are retried at the next start; memory has moved on
				s.log.Warn("dtl: trim", "vpool", a.Pool, "vdisk", fmt.Sprintf("%016x", a.VDisk), "err", err)
				err = nil
			}
		case ActDrop:
			err = s.store.Drop(a.Pool, a.VDisk)
		case ActFetch:
			if !s.flush(cs) {
				return false
			}
			err = s.fetch(cs.c, a)
		}
		if err != nil {
			s.log.Error("dtl: store failed; the session ends and its owner sees the DTL as lost",
				"vpool", a.Pool, "vdisk", fmt.Sprintf("%016x", a.VDisk), "err", err)
			cs.dropReplies() // what depended on it is not sent
			acts = append(acts[:i+1:i+1], s.step(Event{Kind: EvFailed, Conn: cs.id, Action: a, Err: err})...)
		}
	}
	return true
}

func (s *Server) fetch(c net.Conn, a Action) error {
	w := bufio.NewWriterSize(c, 256<<10)
	var n uint64
	var out []byte
	err := s.store.Fetch(a.Pool, a.VDisk, a.Seq, func(m Msg) error {
		n++
		out = m.Encode(out[:0])
		_, err := w.Write(out)
		return err
	})
	if err != nil {
		return err
	}
	out = (&Msg{Type: MsgFetchEnd, VDisk: a.VDisk, LSN: n}).Encode(out[:0])
	if _, err = w.Write(out); err != nil {
		return err
	}
	return w.Flush()
}
