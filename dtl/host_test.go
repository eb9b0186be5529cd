package dtl_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"vpool/dtl"
	"vpool/flashcache"
	"vpool/metastore"
	"vpool/objstore"
	"vpool/vfs"
	"vpool/volume"
)

var bg = context.Background()

func testLog() *slog.Logger {
	if os.Getenv("VPOOL_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// dtlHost is a DTL server over its own in-memory disk.
type dtlHost struct {
	t    *testing.T
	fs   *vfs.Mem
	addr string
	srv  *dtl.Server
	done chan struct{}
}

func startDTL(t *testing.T, fs *vfs.Mem, addr string) *dtlHost {
	t.Helper()
	if fs == nil {
		fs = vfs.NewMem()
	}
	store, err := dtl.OpenStore(fs, "/dtl", testLog())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := dtl.NewServer(store, nil, testLog())
	if err != nil {
		t.Fatal(err)
	}
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	h := &dtlHost{t: t, fs: fs, addr: ln.Addr().String(), srv: srv, done: make(chan struct{})}
	go func() { defer close(h.done); srv.Serve(ln) }()
	t.Cleanup(h.stop)
	return h
}

func (h *dtlHost) stop() {
	select {
	case <-h.done:
		return
	default:
	}
	h.srv.Close()
	<-h.done
}

// owner is a host serving a vPool over in-memory flash, with a DTL client.
type owner struct {
	t      *testing.T
	dial   func(ctx context.Context, addr string) (net.Conn, error) // nil: TCP
	fs     *vfs.Mem
	meta   *metastore.Mem
	cat    *metastore.MemCatalog
	pool   *volume.Pool
	client *dtl.Client
}

func openOwner(t *testing.T, backend volume.Backend, epoch uint64, mode dtl.Mode, onLoss dtl.OnLoss, peers ...string) *owner {
	t.Helper()
	o := &owner{t: t, fs: vfs.NewMem(), meta: metastore.NewMem(), cat: metastore.NewMemCatalog()}
	o.open(backend, epoch, mode, onLoss, peers...)
	t.Cleanup(o.kill)
	return o
}

// open starts the owner's pool over its flash and stores.
func (o *owner) open(backend volume.Backend, epoch uint64, mode dtl.Mode, onLoss dtl.OnLoss, peers ...string) {
	t := o.t
	t.Helper()
	wb, err := flashcache.NewWriteBuffer(o.fs, "/flash/wb", 256<<20)
	if err != nil {
		t.Fatal(err)
	}
	o.client = dtl.NewClient(dtl.ClientConfig{Pool: "vp", Epoch: epoch, Owner: fmt.Sprintf("owner-%d", epoch),
		Peers: peers, OnLoss: onLoss, Log: testLog(), Dial: o.dial})
	ctx, cancel := context.WithTimeout(bg, time.Minute)
	defer cancel()
	o.pool, err = volume.Open(ctx, volume.Config{Name: "vp", Dir: "/flash", SCOSize: 4 << 20, MapCachePages: 64, Log: testLog()},
		volume.Deps{FS: o.fs, Backend: backend, Catalog: o.cat, Meta: o.meta, WriteBuffer: wb,
			Replicator: dtl.Replicator{Client: o.client, Default: mode}})
	if err != nil {
		o.client.Close()
		t.Fatalf("open: %v", err)
	}
}

// create makes a vDisk of size bytes and waits until its DTL is ok.
func (o *owner) create(size int64) *volume.VDisk {
	o.t.Helper()
	v, err := o.pool.Create(bg, size)
	if err != nil {
		o.t.Fatal(err)
	}
	waitState(o.t, v, "ok")
	return v
}

// stop closes the owner cleanly (its flash stays).
func (o *owner) stop() {
	if err := o.pool.Close(bg); err != nil {
		o.t.Fatal(err)
	}
	o.client.Close()
	o.pool = nil
}

// kill drops the owner as kill -9 would (its flash is never used again).
func (o *owner) kill() {
	if o.pool != nil {
		o.pool.AbandonForTesting()
		o.client.Close()
		o.pool = nil
	}
}

type statuser interface{ DTLStatus() dtl.StreamStatus }

func status(v *volume.VDisk) dtl.StreamStatus { return v.DTL().(statuser).DTLStatus() }

// waitState waits (a hang guard, not a timing) for the vDisk's DTL state.
func waitState(t *testing.T, v *volume.VDisk, want string) {
	t.Helper()
	for i := 0; ; i++ {
		st := status(v)
		if st.State == want {
			return
		}
		if i > 6000 {
			t.Fatalf("DTL state %q after a minute, want %q", st.State, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type model map[int64][]byte // cluster offset → 4 KiB

func writeRandom(t *testing.T, v *volume.VDisk, rng *rand.Rand, m model, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		off := rng.Int64N(v.Size()/4096) * 4096
		b := make([]byte, 4096*(1+rng.IntN(4)))
		for k := range b {
			b[k] = byte(rng.Uint32())
		}
		if off+int64(len(b)) > v.Size() {
			b = b[:v.Size()-off]
		}
		if err := v.WriteAt(bg, b, off); err != nil {
			t.Fatal(err)
		}
		for k := 0; k < len(b); k += 4096 {
			m[off+int64(k)] = b[k : k+4096]
		}
	}
}

func verify(t *testing.T, v *volume.VDisk, m model) {
	t.Helper()
	got := make([]byte, 4096)
	for off, want := range m {
		if _, err := v.ReadAt(bg, got, off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("offset %d: restored data differs from the last acknowledged write", off)
		}
	}
}

// A vDisk in sync mode comes back on a new host from the backend plus the
// DTL, up to its last acknowledged write, and the old owner is fenced.
func TestRestoreOnNewHost(t *testing.T) {
	for _, mode := range []dtl.Mode{dtl.ModeSync, dtl.ModeAsync} {
		t.Run(mode.String(), func(t *testing.T) {
			b := startDTL(t, nil, "")
			backend := objstore.NewMem()
			a := openOwner(t, backend, 1, mode, dtl.LossDegrade, b.addr)
			v := a.create(64 << 20)
			id := v.ID()
			rng := rand.New(rand.NewPCG(1, uint64(mode)))
			m := model{}
			writeRandom(t, v, rng, m, 300)
			if mode == dtl.ModeAsync {
				if err := v.Flush(bg); err != nil {
					t.Fatal(err)
				}
			}
			a.kill() // and its flash is gone: c starts empty

			c := openOwner(t, backend, 2, mode, dtl.LossDegrade, b.addr)
			w, err := c.pool.VDisk(id)
			if err != nil {
				t.Fatalf("restored pool lacks the vDisk: %v", err)
			}
			verify(t, w, m)

			// The old owner's epoch is refused from now on.
			old := dtl.NewClient(dtl.ClientConfig{Pool: "vp", Epoch: 1, Peers: []string{b.addr}, Log: testLog()})
			defer old.Close()
			err = old.ReadBack(bg, func(dtl.VDiskInfo, dtl.Entry) error { return nil })
			if !errors.Is(err, dtl.ErrFenced) {
				t.Fatalf("old owner's read-back: %v, want fenced", err)
			}
		})
	}
}

// The DTL server restarts while the owner writes: the owner degrades,
// catches up from local flash, and a restore loses nothing.
func TestDTLRestartCatchUp(t *testing.T) {
	dfs := vfs.NewMem()
	b := startDTL(t, dfs, "")
	backend := objstore.NewMem()
	a := openOwner(t, backend, 1, dtl.ModeSync, dtl.LossDegrade, b.addr)
	v := a.create(64 << 20)
	rng := rand.New(rand.NewPCG(2, 2))
	m := model{}
	writeRandom(t, v, rng, m, 100)
	b.stop()
	dfs.Crash() // power loss of the DTL host: what it did not sync is gone, and caught up again
	writeRandom(t, v, rng, m, 100)
	if st := status(v); st.State != "degraded" {
		t.Fatalf("with the DTL down: state %q, want degraded", st.State)
	}
	b = startDTL(t, dfs, b.addr)
	waitState(t, v, "ok")
	writeRandom(t, v, rng, m, 50)
	id := v.ID()
	a.kill()
	c := openOwner(t, backend, 2, dtl.ModeSync, dtl.LossDegrade, b.addr)
	w, err := c.pool.VDisk(id)
	if err != nil {
		t.Fatal(err)
	}
	verify(t, w, m)
}

// A takeover fences the old owner, which is still running: its next sync
// write fails, and so does every one after it.
func TestOldOwnerFenced(t *testing.T) {
	b := startDTL(t, nil, "")
	backend := objstore.NewMem()
	a := openOwner(t, backend, 1, dtl.ModeSync, dtl.LossDegrade, b.addr)
	v := a.create(16 << 20)
	rng := rand.New(rand.NewPCG(3, 3))
	m := model{}
	writeRandom(t, v, rng, m, 20)
	c := openOwner(t, backend, 2, dtl.ModeSync, dtl.LossDegrade, b.addr)
	w, err := c.pool.VDisk(v.ID())
	if err != nil {
		t.Fatal(err)
	}
	verify(t, w, m)
	err = v.WriteAt(bg, make([]byte, 4096), 0)
	if !errors.Is(err, dtl.ErrFenced) {
		t.Fatalf("old owner's write after the takeover: %v, want fenced", err)
	}
	if err := v.WriteAt(bg, []byte("x"), 4096); !errors.Is(err, dtl.ErrFenced) {
		t.Fatalf("second write: %v, want fenced", err)
	}
	if !a.client.Fenced() {
		t.Fatal("the old owner's client does not know it is fenced")
	}
}

// flakyBackend refuses SCO and TLog uploads while down is set.
type flakyBackend struct {
	*objstore.Mem
	down atomic.Bool
}

func (f *flakyBackend) Put(ctx context.Context, name string, r io.ReaderAt, size int64) error {
	if f.down.Load() {
		return errors.New("backend down")
	}
	return f.Mem.Put(ctx, name, r, size)
}

// After clean restarts (each leaving an empty open TLog and spare behind)
// and with the backend refusing uploads, several SCOs' worth of writes
// are held only by local flash and the DTL: a restore on a new host gets
// every one of them.
func TestRestoreAfterRestarts(t *testing.T) {
	b := startDTL(t, nil, "")
	backend := &flakyBackend{Mem: objstore.NewMem()}
	a := openOwner(t, backend, 1, dtl.ModeSync, dtl.LossDegrade, b.addr)
	v := a.create(64 << 20)
	id := v.ID()
	rng := rand.New(rand.NewPCG(4, 4))
	m := model{}
	writeRandom(t, v, rng, m, 50)
	for epoch := uint64(2); epoch <= 3; epoch++ {
		a.stop()
		a.open(backend, epoch, dtl.ModeSync, dtl.LossDegrade, b.addr)
		var err error
		if v, err = a.pool.VDisk(id); err != nil {
			t.Fatal(err)
		}
		waitState(t, v, "ok")
	}
	backend.down.Store(true)
	big := make([]byte, 1<<20)
	for i := 0; i < 12; i++ { // three 4 MiB SCOs
		for k := range big {
			big[k] = byte(rng.Uint32())
		}
		off := int64(i) << 20
		if err := v.WriteAt(bg, big, off); err != nil {
			t.Fatal(err)
		}
		for k := 0; k < len(big); k += 4096 {
			m[off+int64(k)] = append([]byte(nil), big[k:k+4096]...)
		}
	}
	a.kill()
	backend.down.Store(false)
	c := openOwner(t, backend, 4, dtl.ModeSync, dtl.LossDegrade, b.addr)
	w, err := c.pool.VDisk(id)
	if err != nil {
		t.Fatalf("restored pool lacks the vDisk: %v (damaged: %v)", err, c.pool.Damaged())
	}
	verify(t, w, m)
}

// A vDisk with two peers moves its DTL to the other when its own is lost,
// catches it up, and a restore from that one (the lost peer left out of
// the peers) loses nothing.
func TestMoveToAnotherPeer(t *testing.T) {
	b1, b2 := startDTL(t, nil, ""), startDTL(t, nil, "")
	backend := objstore.NewMem()
	a := openOwner(t, backend, 1, dtl.ModeSync, dtl.LossDegrade, b1.addr, b2.addr)
	v := a.create(64 << 20)
	rng := rand.New(rand.NewPCG(5, 5))
	m := model{}
	writeRandom(t, v, rng, m, 100)
	first, other := b1, b2
	if status(v).Peer == b2.addr {
		first, other = b2, b1
	}
	first.stop()
	for i := 0; status(v).Peer != other.addr || status(v).State != "ok"; i++ {
		if i > 6000 {
			t.Fatalf("the DTL did not move to %s: %+v", other.addr, status(v))
		}
		time.Sleep(10 * time.Millisecond)
	}
	writeRandom(t, v, rng, m, 100)
	id := v.ID()
	a.kill()
	c := openOwner(t, backend, 2, dtl.ModeSync, dtl.LossDegrade, other.addr)
	w, err := c.pool.VDisk(id)
	if err != nil {
		t.Fatal(err)
	}
	verify(t, w, m)
}

// With on_loss block, a sync write waits while the DTL is unreachable and
// returns once a DTL holds it; with degrade it returns at once.
func TestOnLossBlock(t *testing.T) {
	dfs := vfs.NewMem()
	b := startDTL(t, dfs, "")
	backend := objstore.NewMem()
	a := openOwner(t, backend, 1, dtl.ModeSync, dtl.LossBlock, b.addr)
	v := a.create(16 << 20)
	b.stop()
	waitState(t, v, "blocked")
	done := make(chan error, 1)
	go func() { done <- v.WriteAt(bg, bytes.Repeat([]byte{7}, 4096), 0) }()
	for i := 0; status(v).Waiting == 0; i++ { // the write is waiting for a DTL
		if i > 6000 {
			t.Fatal("the write did not wait")
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case err := <-done:
		t.Fatalf("a sync write returned (%v) with no DTL and on_loss block", err)
	default:
	}
	startDTL(t, dfs, b.addr)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st := status(v); st.State != "ok" {
		t.Fatalf("after the DTL came back: %+v", st)
	}
}

// A power loss of the owner's host (its unsynced file data and metadata
// lost, at random) after sync-mode writes that were never flushed: the
// restart on the same host fills from the DTL what local flash lost, and
// every acknowledged write reads back.
func TestOwnerPowerLoss(t *testing.T) {
	for seed := uint64(1); seed <= 5; seed++ {
		b := startDTL(t, nil, "")
		backend := objstore.NewMem()
		a := openOwner(t, backend, 1, dtl.ModeSync, dtl.LossDegrade, b.addr)
		v := a.create(16 << 20)
		id := v.ID()
		rng := rand.New(rand.NewPCG(seed, 6))
		m := model{}
		writeRandom(t, v, rng, m, 200)
		a.pool.AbandonForTesting()
		a.client.Close()
		a.pool = nil
		a.fs.PowerLoss(rng)
		a.meta.PowerLoss(rng)
		a.cat.PowerLoss(rng)
		a.open(backend, 1, dtl.ModeSync, dtl.LossDegrade, b.addr)
		w, err := a.pool.VDisk(id)
		if err != nil {
			t.Fatalf("seed %d: after the power loss: %v (damaged: %v)", seed, err, a.pool.Damaged())
		}
		verify(t, w, m)
	}
}
