package nfsd

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// rawConn is a connection from a privileged port that the test drives
// by hand.
func rawConn(t *testing.T, e *env) net.Conn {
	t.Helper()
	needRoot(t)
	conn, err := DialPrivileged(e.addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func readCall(xid uint32, fh []byte, off uint64, count uint32) []byte {
	w := &writer{}
	w.opaque(fh)
	w.uint64(off)
	w.uint32(count)
	return frame(encodeCall(xid, progNFS, 3, 6, 0, 0, w.b).b)
}

// waitFor polls cond until it holds; the bound only keeps a broken
// server from hanging the test.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Minute); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("still not %s after 2 minutes", what)
		}
	}
}

// A client that pipelines READs and never reads the replies holds at
// most its connection's share of the buffer: the server stops reading
// it. Others are served meanwhile, and its share comes back when it goes.
func TestPipeliningClientIsBounded(t *testing.T) {
	e := newEnv(t, Config{Buffer: MinBuffer})
	c, root := e.client(0, 0)
	fh, _ := must2(t)(c.Create(root, "big", Guarded, 0o644, [8]byte{}))
	data := make([]byte, 1<<20)
	for off := uint64(0); off < 4<<20; off += 1 << 20 {
		if _, _, err := c.Write(fh, off, data, FileSync); err != nil {
			t.Fatal(err)
		}
	}
	bad := rawConn(t, e)
	sent := make(chan int, 1)
	const calls = 1 << 20 // more than the sockets' buffers hold
	go func() {
		n := 0
		for ; n < calls; n += 1000 {
			var batch []byte
			for i := range 1000 {
				batch = append(batch, readCall(uint32(n+i), fh, uint64(i%4)<<20, 1<<20)...)
			}
			bad.SetWriteDeadline(time.Now().Add(5 * time.Second)) // until the server stops reading
			if _, err := bad.Write(batch); err != nil {
				break
			}
		}
		sent <- n
	}()
	n := <-sent
	bound := e.srv.lim.perConnBuffer
	if got := e.srv.Stats.Buffered.Load(); got > bound {
		t.Fatalf("a connection holds %d bytes, more than its share %d", got, bound)
	}
	if n == calls {
		t.Fatalf("all %d READs of 1 MiB were taken in: the server kept reading a client that reads no replies", n)
	}
	if got, _, err := c.Read(fh, 0, 1<<20); err != nil || len(got) != 1<<20 {
		t.Fatalf("another client's READ while one holds its share: %d bytes, %v", len(got), err)
	}
	bad.Close()
	waitFor(t, "given back", func() bool { return e.srv.Stats.Buffered.Load() == 0 })
}

// Senders that announce 1 MiB calls and stall hold at most the buffer;
// small calls of other clients go on (their allowance is not charged);
// a client with a call waiting for buffer is not idle; the stalled ones
// are closed when their calls are not received in time.
func TestStalledSendersAreBounded(t *testing.T) {
	e := newEnv(t, Config{Buffer: MinBuffer}) // idle: 6 min until the READ below
	e.srv.lim.record = 2 * time.Second
	c, root := e.client(0, 0)
	fh, _ := must2(t)(c.Create(root, "f", Guarded, 0o644, [8]byte{}))
	if _, _, err := c.Write(fh, 0, make([]byte, 1<<20), FileSync); err != nil {
		t.Fatal(err)
	}
	var stalled []net.Conn
	for range 24 { // 24 MiB announced against a 16 MiB buffer
		s := rawConn(t, e)
		var hdr [4]byte
		binary.BigEndian.PutUint32(hdr[:], lastFragment|1<<20)
		s.Write(append(hdr[:], make([]byte, 1024)...))
		stalled = append(stalled, s)
	}
	waitFor(t, "buffer held by the stalled senders", func() bool { return e.srv.Stats.Buffered.Load() > MinBuffer-1<<20 })
	if got := e.srv.Stats.Buffered.Load(); got > MinBuffer {
		t.Fatalf("buffered %d bytes, more than the buffer %d", got, MinBuffer)
	}
	if _, err := c.GetAttr(fh); err != nil {
		t.Fatalf("GETATTR while the buffer is held: %v", err)
	}
	if got, _, err := c.Read(fh, 0, 4096); err != nil || len(got) != 4096 {
		t.Fatalf("a 4 KiB READ while the buffer is held: %v", err)
	}
	// A 1 MiB READ waits for buffer: its connection has a call in flight
	// and outlives an idle timeout shorter than the wait (the stalled
	// senders are dropped at 2 s); it is answered then.
	e.srv.lim.idle.Store(int64(200 * time.Millisecond))
	if got, _, err := c.Read(fh, 0, 1<<20); err != nil || len(got) != 1<<20 {
		t.Fatalf("a 1 MiB READ after the stalled senders: %d bytes, %v", len(got), err)
	}
	for _, s := range stalled {
		s.SetReadDeadline(time.Now().Add(time.Minute))
		if _, err := s.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !isReset(err) {
			t.Fatalf("a stalled sender: %v, want closed", err)
		}
	}
	waitFor(t, "given back", func() bool { return e.srv.Stats.Buffered.Load() == 0 })
}

// A connection that sends nothing for the idle timeout is closed.
func TestIdleConnectionClosed(t *testing.T) {
	e := newEnv(t, Config{IdleTimeout: time.Second})
	idle := rawConn(t, e)
	idle.SetReadDeadline(time.Now().Add(time.Minute))
	if _, err := idle.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !isReset(err) {
		t.Fatalf("an idle connection: %v, want closed by the server", err)
	}
	waitFor(t, "forgotten", func() bool { return e.srv.Stats.OpenConns.Load() == 0 })
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && !op.Timeout()
}
