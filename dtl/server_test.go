package dtl

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"vpool/vfs"
)

func quietLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

func startServer(t *testing.T, fs vfs.FS) (*Server, string) {
	t.Helper()
	store, err := OpenStore(fs, "/dtl", quietLog())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := NewServer(store, nil, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(srv.Close)
	return srv, ln.Addr().String()
}

// session is a raw client connection.
type session struct {
	t  *testing.T
	c  net.Conn
	fr *Reader
}

func dialRaw(t *testing.T, addr string) *session {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(time.Minute)) // a hang guard
	return &session{t: t, c: c, fr: NewReader(bufio.NewReader(c))}
}

func (s *session) send(m Msg) {
	s.t.Helper()
	if _, err := s.c.Write(m.Encode(nil)); err != nil {
		s.t.Fatal(err)
	}
}

func (s *session) recv() Msg {
	s.t.Helper()
	m, err := s.fr.Next()
	if err != nil {
		s.t.Fatalf("recv: %v", err)
	}
	return m
}

// closed says whether the server closed the connection (after any
// replies it sent first).
func (s *session) closed() bool {
	for {
		if _, err := s.fr.Next(); err != nil {
			return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed)
		}
	}
}

func (s *session) open(epoch uint64, id uint64) {
	s.t.Helper()
	s.send(hello(epoch))
	if m := s.recv(); m.Type != MsgWelcome {
		s.t.Fatalf("hello: %s %s", m.Type, m.Reason)
	}
	s.send(open(id, epoch, 0))
	if m := s.recv(); m.Type != MsgHave {
		s.t.Fatalf("open: %s %s", m.Type, m.Reason)
	}
}

// Bad input closes its connection with a reason, holds no more than a
// frame's worth of memory, and leaves other sessions alone.
func TestServerBadInput(t *testing.T) {
	srv, addr := startServer(t, vfs.NewMem())
	good := dialRaw(t, addr)
	good.open(1, 5)
	var huge [4]byte
	binary.LittleEndian.PutUint32(huge[:], 1<<31)
	cases := map[string]func(s *session){
		"garbage":      func(s *session) { s.c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")) },
		"huge length":  func(s *session) { s.c.Write(huge[:]) },
		"bad checksum": func(s *session) { h := hello(1); b := h.Encode(nil); b[len(b)-1] ^= 1; s.c.Write(b) },
		"truncated": func(s *session) {
			h := hello(1)
			b := h.Encode(nil)
			s.c.Write(b[:len(b)-3])
			s.c.(*net.TCPConn).CloseWrite()
		},
		"before hello":  func(s *session) { s.send(appendMsg(5, 1, 1, 0, 1)) },
		"unknown vDisk": func(s *session) { s.send(hello(1)); s.recv(); s.send(appendMsg(77, 1, 1, 0, 1)) },
		"bad geometry": func(s *session) {
			s.send(hello(1))
			s.recv()
			s.send(Msg{Type: MsgOpen, VDisk: 6, ClusterSize: 3000, SCOSize: 4 << 20, Epoch: 1})
		},
		"past the TLog": func(s *session) { s.open(1, 6); s.send(appendMsg(6, 1, 1, 1<<20, 1)) },
		"unknown type":  func(s *session) { s.c.Write((&Msg{Type: MsgType(99)}).Encode(nil)) },
	}
	for name, bad := range cases {
		s := dialRaw(t, addr)
		before := srv.refused.Load()
		bad(s)
		if !s.closed() {
			t.Errorf("%s: connection not closed", name)
		}
		if srv.refused.Load() == before && name != "truncated" {
			t.Errorf("%s: not counted as refused", name)
		}
	}
	// the good session still works
	good.send(appendMsg(5, 1, 1, 0, 2))
	if m := good.recv(); m.Type != MsgAck || m.LSN != 1 {
		t.Fatalf("good session after the bad ones: %s %d %s", m.Type, m.LSN, m.Reason)
	}
	// an older epoch is refused as fenced once a newer one said hello
	newer := dialRaw(t, addr)
	newer.send(hello(2))
	newer.recv()
	good.send(appendMsg(5, 2, 1, 2, 1))
	if m := good.recv(); m.Type != MsgRefuse || m.Flags&RefuseFenced == 0 {
		t.Fatalf("old epoch after a newer hello: %s flags %d", m.Type, m.Flags)
	}
	old := dialRaw(t, addr)
	old.send(hello(1))
	if m := old.recv(); m.Type != MsgRefuse || m.Flags&RefuseFenced == 0 {
		t.Fatalf("hello with the old epoch: %s", m.Type)
	}
}

// Entries survive a restart of the server; a torn tail (a crash mid-
// append) is cut off at start; synced entries survive a power loss.
func TestStoreRestart(t *testing.T) {
	fs := vfs.NewMem()
	srv, addr := startServer(t, fs)
	s := dialRaw(t, addr)
	s.open(1, 5)
	for i := uint32(0); i < 4; i++ {
		s.send(appendMsg(5, uint64(i+1), 1, i*2, 2))
		s.recv()
	}
	s.send(Msg{Type: MsgSync, VDisk: 5, LSN: 5})
	if m := s.recv(); m.Type != MsgSynced {
		t.Fatalf("sync: %s", m.Type)
	}
	s.send(appendMsg(5, 6, 2, 0, 3)) // written, not synced
	s.recv()
	srv.Close()

	// kill -9: the page cache keeps everything written (the server just
	// stops); then a torn append at the end of a log.
	path := filepath.Join("/dtl", "vp", "0000000000000005", "0000000002.log")
	f, err := fs.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	size, _ := f.Size()
	f.WriteAt([]byte{9, 9, 9, 9, 9}, size) // a torn append
	f.Close()
	srv2, addr2 := startServer(t, fs)
	if st := srv2.Stats(); st.VDisks != 1 {
		t.Fatalf("after restart: %+v", st)
	}
	s2 := dialRaw(t, addr2)
	s2.send(hello(1))
	s2.recv()
	s2.send(open(5, 1, 0))
	have := s2.recv()
	want := []Run{{1, 0, 8}, {2, 0, 3}}
	if len(have.Runs) != 2 || have.Runs[0] != want[0] || have.Runs[1] != want[1] {
		t.Fatalf("held after restart: %v, want %v", have.Runs, want)
	}
	if size2, _ := mustSize(t, fs, path); size2 != size {
		t.Fatalf("torn tail not cut: %d bytes, want %d", size2, size)
	}
	srv2.Close()

	fs.PowerLoss(nil) // only synced data survives
	srv3, addr3 := startServer(t, fs)
	_ = srv3
	s3 := dialRaw(t, addr3)
	s3.send(hello(1))
	s3.recv()
	s3.send(open(5, 1, 0))
	if have := s3.recv(); len(have.Runs) < 1 || have.Runs[0] != want[0] {
		t.Fatalf("held after a power loss: %v, want at least %v", have.Runs, want[0])
	}
}

func mustSize(t *testing.T, fs vfs.FS, path string) (int64, error) {
	t.Helper()
	f, err := fs.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return f.Size()
}

// A full DTL disk ends the session with a reason: its owner sees the DTL
// as lost, never silently unprotected.
func TestStoreFull(t *testing.T) {
	fs := vfs.NewMem()
	_, addr := startServer(t, fs)
	s := dialRaw(t, addr)
	s.open(1, 5)
	fs.InjectForTesting(func(op, name string) error {
		if op == "allocate" || op == "write" {
			return syscall.ENOSPC
		}
		return nil
	})
	s.send(appendMsg(5, 1, 1, 0, 1))
	m := s.recv()
	if m.Type != MsgRefuse {
		t.Fatalf("append on a full disk: %s", m.Type)
	}
	if !s.closed() {
		t.Fatal("session not ended")
	}
	t.Logf("refused: %s", m.Reason)
}
