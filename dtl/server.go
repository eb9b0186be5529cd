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
	w := bufio.NewWriterSize(c, 64<<10)
	fr := NewReader(r)
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
		if !s.do(id, c, w, s.step(Event{Kind: EvReceived, Conn: id, Msg: m})) {
			w.Flush()
			return
		}
		if r.Buffered() == 0 { // replies go out when the input runs dry: acks batch under load
			if err := w.Flush(); err != nil {
				return
			}
		}
	}
}

// do runs actions in order; false: the connection ends.
func (s *Server) do(id ConnID, c net.Conn, w *bufio.Writer, acts []Action) bool {
	var out []byte
	for i := 0; i < len(acts); i++ {
		a := acts[i]
		var err error
		switch a.Kind {
		case ActReply:
			out = a.Msg.Encode(out[:0])
			_, err = w.Write(out)
			if err != nil {
				return false
			}
			continue
		case ActClose:
			s.refused.Add(1)
			s.log.Warn("dtl: session refused", "remote", c.RemoteAddr(), "reason", a.Reason)
			return false
		case ActSaveEpoch:
			err = s.store.SaveEpoch(a.Pool, a.Epoch)
			if err == nil {
				s.log.Info("dtl: new owner epoch", "vpool", a.Pool, "epoch", a.Epoch, "remote", c.RemoteAddr())
			}
		case ActSaveVDisk:
			err = s.store.SaveVDisk(a.Pool, a.Info, a.Epoch)
		case ActAppend:
			err = s.store.Append(a.Pool, a.Msg)
			if err == nil {
				s.appends.Add(1)
				s.appendBytes.Add(int64(len(a.Msg.Recs) + len(a.Msg.Data)))
			}
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
			err = s.fetch(w, a)
		}
		if err != nil {
			s.log.Error("dtl: store failed; the session ends and its owner sees the DTL as lost",
				"vpool", a.Pool, "vdisk", fmt.Sprintf("%016x", a.VDisk), "err", err)
			acts = append(acts[:i+1:i+1], s.step(Event{Kind: EvFailed, Conn: id, Action: a, Err: err})...)
		}
	}
	return true
}

func (s *Server) fetch(w *bufio.Writer, a Action) error {
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
	_, err = w.Write(out)
	return err
}
