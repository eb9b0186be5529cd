package dtl_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"vpool/dtl"
	"vpool/fs"
	"vpool/metastore"
	"vpool/objstore"
	"vpool/vfs"
	"vpool/volume"
)

// A seeded simulation of whole hosts in one process, on testing/synctest's
// fake clock: an owner (the real volume engine over in-memory flash, with
// a real dtl.Client) writes to a vDisk from several writers while a fault
// schedule cuts its network, kills the DTL server (a real dtl.Server over
// an in-memory disk) and restarts it as after a kill -9 or a power loss of
// its host, and stops uploads now and then so that the DTL holds more.
// Then the owner's host dies (or, in a third of the seeds, is cut off and
// lives on as a zombie) and a new host takes over from the backend plus
// the DTL. The checks: every acknowledged write (sync) or every write
// before an acknowledged flush (async) reads back; nothing the zombie
// wrote after it was cut off appears; the zombie's writes fail once the
// DTL tells it it is fenced.
//
// Where dtl's own simulation (sim_test.go) drives the protocol's state
// machines through a model of the drivers, this one runs the drivers and
// the engine themselves, with goroutines, timers and system calls on
// fakes. A seed fixes the data, the fault schedule and the network's
// delays; goroutine interleavings are the runtime's, so a failing seed
// replays its schedule, not every step of it.
//
//	go test ./dtl -run TestHostSimulation -hostsim.seeds=2000
//	go test ./dtl -run TestHostSimulation -hostsim.seed=17 -v   (one seed, with its schedule)
var (
	hostSimSeeds = flag.Int("hostsim.seeds", 0, "seeds the host simulation runs (default 60, 20 with -race)")
	hostSimSeed  = flag.Int64("hostsim.seed", -1, "run only this seed of the host simulation, with its schedule")
)

func TestHostSimulation(t *testing.T) {
	if *hostSimSeed >= 0 {
		synctest.Test(t, func(t *testing.T) { runHostSim(t, uint64(*hostSimSeed), true) })
		return
	}
	n := *hostSimSeeds
	if n == 0 {
		n = 60
		if raceBuild {
			n = 20
		}
	}
	if testing.Short() {
		n = min(n, 10)
	}
	for seed := range uint64(n) {
		ok := t.Run(fmt.Sprint(seed), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { runHostSim(t, seed, false) })
		})
		if !ok {
			t.Fatalf("seed %d failed; replay: go test ./dtl -run TestHostSimulation -hostsim.seed=%d -v", seed, seed)
		}
	}
}

// simNet is an in-memory network: hosts by name, listeners by address,
// connections as net.Pipe with a seeded delay on every write. A cut host
// can neither dial nor be dialled, and its connections are closed.
type simNet struct {
	mu    sync.Mutex
	rng   *rand.Rand
	lns   map[string]*simListener
	cut   map[string]bool
	conns map[string][]net.Conn // by host, both ends
}

func newSimNet(seed uint64) *simNet {
	return &simNet{rng: rand.New(rand.NewPCG(seed, 3)), lns: map[string]*simListener{}, cut: map[string]bool{},
		conns: map[string][]net.Conn{}}
}

type simListener struct {
	addr string
	ch   chan net.Conn
	once sync.Once
	done chan struct{}
}

func (l *simListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *simListener) Close() error   { l.once.Do(func() { close(l.done) }); return nil }
func (l *simListener) Addr() net.Addr { return simAddr(l.addr) }

type simAddr string

func (a simAddr) Network() string { return "sim" }
func (a simAddr) String() string  { return string(a) }

func (n *simNet) listen(addr string) *simListener {
	n.mu.Lock()
	defer n.mu.Unlock()
	l := &simListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
	n.lns[addr] = l
	return l
}

// dialer is host's Dial.
func (n *simNet) dialer(host string) func(ctx context.Context, addr string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		n.mu.Lock()
		l := n.lns[addr]
		if n.cut[host] || n.cut[addr] || l == nil {
			n.mu.Unlock()
			return nil, fmt.Errorf("sim: %s cannot reach %s", host, addr)
		}
		c, s := net.Pipe()
		dc, ds := &delayConn{Conn: c, d: n.delay()}, &delayConn{Conn: s, d: n.delay()}
		n.conns[host] = append(n.conns[host], dc)
		n.conns[addr] = append(n.conns[addr], ds)
		n.mu.Unlock()
		select {
		case l.ch <- ds:
			return dc, nil
		case <-l.done:
			c.Close()
			return nil, fmt.Errorf("sim: %s refused", addr)
		case <-ctx.Done():
			c.Close()
			return nil, ctx.Err()
		}
	}
}

// delay is a connection's one-way delay per write.
func (n *simNet) delay() time.Duration { return time.Duration(n.rng.IntN(300)) * time.Microsecond }

// setCut cuts a host (or a listening address) off, or joins it again.
func (n *simNet) setCut(host string, cut bool) {
	n.mu.Lock()
	n.cut[host] = cut
	conns := n.conns[host]
	if cut {
		delete(n.conns, host)
	}
	n.mu.Unlock()
	if cut {
		for _, c := range conns {
			c.Close()
		}
	}
}

// delayConn delays each write, as a link with latency would.
type delayConn struct {
	net.Conn
	d time.Duration
}

func (c *delayConn) Write(p []byte) (int, error) {
	time.Sleep(c.d)
	return c.Conn.Write(p)
}

// epochBackend is one owner's view of the shared backend: once a newer
// owner took over, its writes fail (the holder fencing of the backend).
type epochBackend struct {
	*objstore.Mem
	epoch   uint64
	current *atomic.Uint64
	down    *atomic.Bool // uploads fail for a while: the DTL holds more
	cut     atomic.Bool  // the owner is cut off from the backend too
}

var errSimBackend = errors.New("sim: backend refuses")

func (b *epochBackend) ok() error {
	if b.current.Load() > b.epoch || b.down.Load() || b.cut.Load() {
		return errSimBackend
	}
	return nil
}

func (b *epochBackend) Put(ctx context.Context, name string, r io.ReaderAt, size int64) error {
	if err := b.ok(); err != nil {
		return err
	}
	return b.Mem.Put(ctx, name, r, size)
}

func (b *epochBackend) Create(ctx context.Context, name string, r io.ReaderAt, size int64) error {
	if err := b.ok(); err != nil {
		return err
	}
	return b.Mem.Create(ctx, name, r, size)
}

func (b *epochBackend) Delete(ctx context.Context, name string) error {
	if err := b.ok(); err != nil {
		return err
	}
	return b.Mem.Delete(ctx, name)
}

// simDTL is the DTL host: a server over a disk that outlives it.
type simDTL struct {
	t    *testing.T
	net  *simNet
	fs   *vfs.Mem
	srv  *dtl.Server
	done chan struct{}
}

const simDTLAddr = "dtl-host:7411"

func (d *simDTL) start() {
	store, err := dtl.OpenStore(d.fs, "/dtl", testLog())
	if err != nil {
		d.t.Fatalf("DTL restart: %v", err)
	}
	srv, err := dtl.NewServer(store, nil, testLog())
	if err != nil {
		d.t.Fatalf("DTL restart: %v", err)
	}
	d.srv, d.done = srv, make(chan struct{})
	ln := d.net.listen(simDTLAddr)
	go func() { defer close(d.done); srv.Serve(ln) }()
}

func (d *simDTL) stop() {
	d.srv.Close()
	<-d.done
}

// simWrite is one 4 KiB write of a cluster, in its writer's order.
type simWrite struct {
	data  []byte
	acked bool // the write returned success
	safe  bool // must survive: acknowledged (sync) or before an acknowledged flush (async)
	late  bool // issued after the owner was cut off for good (a zombie's)
}

const (
	simWriters  = 3
	simClusters = 96 // clusters written, a few writes each
)

// simRun is one seed's run: the hosts, what was written, and the flags
// the writers read.
type simRun struct {
	t      *testing.T
	seed   uint64
	mode   dtl.Mode
	onLoss dtl.OnLoss
	logf   func(format string, args ...any)
	net    *simNet
	dtl    *simDTL
	down   atomic.Bool // uploads fail
	v      *volume.VDisk

	histMu sync.Mutex
	hist   [][]simWrite // per cluster, in its writer's order

	// A zombie's writes acknowledged once cutting is set are not safe in
	// degrade mode, and those issued once late is set must never appear;
	// once dying is set a failing write ends its writer quietly.
	cutting, late, dying atomic.Bool
	stop                 chan struct{} // the writers stop
	wg                   sync.WaitGroup
}

func runHostSim(t *testing.T, seed uint64, trace bool) {
	rng := rand.New(rand.NewPCG(seed, 1))
	r := &simRun{t: t, seed: seed, hist: make([][]simWrite, simClusters), stop: make(chan struct{})}
	r.logf = func(format string, args ...any) {
		if trace {
			t.Logf("%v "+format, append([]any{time.Now().Format("15:04:05.000000")}, args...)...)
		}
	}
	r.mode = []dtl.Mode{dtl.ModeSync, dtl.ModeAsync}[rng.IntN(2)]
	r.onLoss = []dtl.OnLoss{dtl.LossDegrade, dtl.LossBlock}[rng.IntN(2)]
	zombie := rng.IntN(3) == 0
	r.logf("seed %d: mode %s, on_loss %s, zombie %v", seed, r.mode, r.onLoss, zombie)

	r.net = newSimNet(seed)
	r.dtl = &simDTL{t: t, net: r.net, fs: vfs.NewMem()}
	r.dtl.start()
	defer func() { r.dtl.stop() }()
	mem := objstore.NewMem()
	var current atomic.Uint64
	current.Store(1)

	a := &owner{t: t, fs: vfs.NewMem(), meta: metastore.NewMem(), cat: metastore.NewMemCatalog(), dial: r.net.dialer("host-a")}
	aBackend := &epochBackend{Mem: mem, epoch: 1, current: &current, down: &r.down}
	a.open(aBackend, 1, r.mode, r.onLoss, simDTLAddr)
	defer a.kill()
	v, err := a.pool.Create(bg, 16<<20)
	if err != nil {
		t.Fatal(err)
	}
	r.v = v
	waitState(t, v, "ok")
	nsA, err := fs.Open(bg, simNSConfig, a.pool, a.cat, aBackend)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if nsA != nil {
			nsA.AbandonForTesting()
		}
	}()

	for w := range simWriters {
		r.wg.Go(func() { r.writer(w) })
	}
	nsm := &simNS{ns: nsA, mode: r.mode, rng: rand.New(rand.NewPCG(seed, 99)), logf: r.logf}
	r.wg.Go(func() { r.changeNamespace(nsm) })
	r.faults(rng)

	// The DTL catches up (what a power loss dropped, what a cut link
	// missed) before the owner's host goes: writes acknowledged while
	// degraded are safe only from then on, and a power loss of the DTL
	// host followed by the owner's loss before a catch-up is a double
	// fault no mode covers.
	for _, vid := range a.pool.List() {
		if x, err := a.pool.VDisk(vid); err == nil {
			waitState(t, x, "ok")
		}
	}
	nsm.caughtUp()
	r.histMu.Lock()
	if r.mode == dtl.ModeSync {
		for c := range r.hist {
			for k := range r.hist[c] {
				r.hist[c][k].safe = r.hist[c][k].acked
			}
		}
	}
	r.histMu.Unlock()
	time.Sleep(time.Duration(rng.IntN(10)) * time.Millisecond)

	if zombie {
		r.logf("owner cut off for good; it lives on")
		r.cutting.Store(true)
		aBackend.cut.Store(true)
		r.net.setCut("host-a", true)
		r.late.Store(true)
	} else {
		r.logf("owner's host dies")
		if rng.IntN(2) == 0 {
			close(r.stop)
			r.wg.Wait()
		}
		r.dying.Store(true)
		nsA.AbandonForTesting()
		nsA = nil
		a.kill()
	}

	// The new host takes over.
	current.Store(2)
	c := &owner{t: t, fs: vfs.NewMem(), meta: metastore.NewMem(), cat: metastore.NewMemCatalog(), dial: r.net.dialer("host-c")}
	cBackend := &epochBackend{Mem: mem, epoch: 2, current: &current, down: &r.down}
	c.open(cBackend, 2, r.mode, r.onLoss, simDTLAddr)
	defer c.kill()
	r.logf("new owner open")
	if zombie {
		r.net.setCut("host-a", false) // the zombie reaches the DTL again, and is told it is fenced
		for i := 0; !a.client.Fenced(); i++ {
			if i == 6000 { // a minute of the fake clock
				t.Fatal("the old owner was never told it is fenced")
			}
			time.Sleep(10 * time.Millisecond)
		}
		r.logf("zombie fenced")
	}
	select {
	case <-r.stop:
	default:
		close(r.stop)
	}
	r.dying.Store(true)
	r.wg.Wait()
	if nsA != nil {
		nsA.AbandonForTesting()
		nsA = nil
	}
	a.kill()

	w, err := c.pool.VDisk(v.ID())
	if err != nil {
		t.Fatalf("the new owner lacks the vDisk: %v", err)
	}
	r.check(w)
	nsC, err := fs.Open(bg, simNSConfig, c.pool, c.cat, cBackend)
	if err != nil {
		t.Fatalf("the new owner's namespace: %v", err)
	}
	defer nsC.AbandonForTesting()
	nsm.check(t, nsC)
	r.logf("namespace: %d changes, %d safe", len(nsm.ops), nsm.safe)
}

// writer w writes the clusters c with c % simWriters == w (so that each
// cluster's writes have one order) until stopped, and in async mode
// flushes now and then.
func (r *simRun) writer(w int) {
	wrng := rand.New(rand.NewPCG(r.seed, uint64(10+w)))
	var mine []int // clusters written since this writer's last flush
	for i := 0; ; i++ {
		select {
		case <-r.stop:
			return
		default:
		}
		c := w + simWriters*wrng.IntN(simClusters/simWriters)
		b := make([]byte, 4096)
		binary.LittleEndian.PutUint64(b, r.seed)
		binary.LittleEndian.PutUint64(b[8:], uint64(c))
		binary.LittleEndian.PutUint64(b[16:], uint64(i))
		for k := 24; k < len(b); k += 8 {
			binary.LittleEndian.PutUint64(b[k:], wrng.Uint64())
		}
		r.histMu.Lock()
		r.hist[c] = append(r.hist[c], simWrite{data: b, late: r.late.Load()})
		n := len(r.hist[c]) - 1
		r.histMu.Unlock()
		if err := r.v.WriteAt(bg, b, int64(c)*4096); err != nil {
			if !r.cutting.Load() && !r.dying.Load() {
				r.t.Errorf("write of cluster %d: %v", c, err)
			}
			return // fenced or killed: the run goes on without this writer
		}
		r.histMu.Lock()
		r.hist[c][n].acked = true
		r.hist[c][n].safe = r.mode == dtl.ModeSync && !r.degraded()
		r.histMu.Unlock()
		mine = append(mine, c)
		if r.mode == dtl.ModeAsync && wrng.IntN(8) == 0 {
			if !r.flush(mine) {
				return
			}
			mine = mine[:0]
		}
		time.Sleep(time.Duration(wrng.IntN(200)) * time.Microsecond)
	}
}

// degraded: the owner may be cut off and on_loss lets I/O go on without
// its DTL.
func (r *simRun) degraded() bool { return r.cutting.Load() && r.onLoss == dtl.LossDegrade }

// flush flushes, then marks the newest acknowledged write before it of
// each cluster in mine as safe; false when the writer is to stop.
func (r *simRun) flush(mine []int) bool {
	marks := map[int]int{}
	r.histMu.Lock()
	for _, c := range mine {
		for k := len(r.hist[c]) - 1; k >= 0; k-- {
			if r.hist[c][k].acked && !r.hist[c][k].late {
				marks[c] = k
				break
			}
		}
	}
	r.histMu.Unlock()
	if err := r.v.Flush(bg); err != nil {
		if !r.cutting.Load() && !r.dying.Load() {
			r.t.Errorf("flush: %v", err)
		}
		return false
	}
	if r.degraded() {
		return true // the flush may have returned without the DTL
	}
	r.histMu.Lock()
	for c, k := range marks {
		r.hist[c][k].safe = true
	}
	r.histMu.Unlock()
	return true
}

// changeNamespace changes the namespace until stopped.
func (r *simRun) changeNamespace(nsm *simNS) {
	for {
		select {
		case <-r.stop:
			return
		default:
		}
		if !nsm.step(r.late.Load(), r.degraded) {
			if !r.cutting.Load() && !r.dying.Load() {
				r.t.Errorf("namespace: %v", nsm.err)
			}
			return
		}
		time.Sleep(time.Duration(nsm.rng.IntN(500)) * time.Microsecond)
	}
}

// faults runs 2-6 faults on the fake clock.
func (r *simRun) faults(rng *rand.Rand) {
	for range 2 + rng.IntN(5) {
		time.Sleep(time.Duration(1+rng.IntN(30)) * time.Millisecond)
		switch rng.IntN(4) {
		case 0:
			d := time.Duration(1+rng.IntN(50)) * time.Millisecond
			r.logf("owner cut off the network for %v", d)
			r.net.setCut("host-a", true)
			time.Sleep(d)
			r.net.setCut("host-a", false)
		case 1:
			r.logf("DTL server killed (kill -9) and restarted")
			r.dtl.stop()
			r.net.setCut(simDTLAddr, true) // its connections end with it
			time.Sleep(time.Duration(rng.IntN(20)) * time.Millisecond)
			r.net.setCut(simDTLAddr, false)
			r.dtl.start()
		case 2:
			r.logf("DTL host power loss")
			r.dtl.stop()
			r.net.setCut(simDTLAddr, true)
			r.dtl.fs.PowerLoss(rand.New(rand.NewPCG(r.seed, rng.Uint64())))
			time.Sleep(time.Duration(rng.IntN(20)) * time.Millisecond)
			r.net.setCut(simDTLAddr, false)
			r.dtl.start()
		case 3:
			d := time.Duration(1+rng.IntN(100)) * time.Millisecond
			r.logf("uploads fail for %v", d)
			r.down.Store(true)
			time.Sleep(d)
			r.down.Store(false)
		}
	}
}

// check reads every cluster from the new owner's vDisk: it holds the
// last write that had to survive or a later one, never a late one.
func (r *simRun) check(w *volume.VDisk) {
	got := make([]byte, 4096)
	var writes, acked, safe int
	for cl, ws := range r.hist {
		if _, err := w.ReadAt(bg, got, int64(cl)*4096); err != nil {
			r.t.Fatal(err)
		}
		last, found := -1, -1
		for k, x := range ws {
			if x.safe {
				last = k
			}
			if bytes.Equal(got, x.data) {
				found = k
			}
			writes++
			acked += b2i(x.acked)
			safe += b2i(x.safe)
		}
		switch {
		case found >= 0 && ws[found].late:
			r.t.Errorf("cluster %d: reads write %d, which the fenced owner made after it was cut off", cl, found)
		case found >= 0 && found < last:
			r.t.Errorf("cluster %d: reads write %d of %d, older than write %d, which must have survived", cl, found, len(ws), last)
		case found < 0 && last >= 0:
			r.t.Errorf("cluster %d: reads none of its %d writes; write %d must have survived", cl, len(ws), last)
		}
	}
	r.logf("checked %d clusters: %d writes, %d acknowledged, %d safe", len(r.hist), writes, acked, safe)
	if safe == 0 {
		r.t.Errorf("no write had to survive: the run checked nothing")
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// simNSConfig: no periodic backup during a run. A namespace change holds
// the namespace lock while its journal record waits for the DTL, and a
// backup waiting for that lock is not durably blocked for synctest, whose
// clock then stops while the DTL's restart waits for it. A restore here
// is the first backup plus the journal's replay.
var simNSConfig = fs.Config{Name: "vp", BackupInterval: time.Hour, Log: testLog()}

// simNS changes the namespace (files in the root: create, write, rename
// over, remove) from one goroutine, so that its changes have one order,
// and knows after each change what the tree must be.
type simNS struct {
	ns   *fs.Namespace
	mode dtl.Mode
	rng  *rand.Rand
	err  error

	fsynced bool              // the last change's do ended with an fsync
	partial map[string]string // for the next change (simNSOp.partial)
	logf    func(format string, args ...any)

	mu    sync.Mutex
	ops   []simNSOp
	safe  int               // ops[:safe] must survive
	state map[string]string // name → content, after the last acknowledged op
}

type simNSOp struct {
	after map[string]string // the tree after it
	// partial, for a write: the tree if its data landed but not the size
	// it gave the file (a crash in between: no write is atomic)
	partial map[string]string
	acked   bool
	late    bool // made after the owner was cut off for good
}

const simNSFiles = 12

// step makes one change (a new file is two: its create and its write);
// false when one failed (err). late: the owner is cut off for good;
// degraded, after a change returned: the DTL may have been lost and
// on_loss let the change go on without it.
func (m *simNS) step(late bool, degraded func() bool) bool {
	m.mu.Lock()
	if m.state == nil {
		m.state = map[string]string{}
	}
	cur := m.state
	m.mu.Unlock()
	next := func(change func(map[string]string)) map[string]string {
		t := make(map[string]string, len(cur)+1)
		for k, v := range cur {
			t[k] = v
		}
		change(t)
		return t
	}
	name := fmt.Sprintf("f%d", m.rng.IntN(simNSFiles))
	_, exists := cur[name]
	switch k := m.rng.IntN(10); {
	case !exists || k < 4:
		content := fmt.Sprintf("%s-%d-", name, m.rng.Uint64()) +
			string(bytes.Repeat([]byte{byte('a' + m.rng.IntN(26))}, m.rng.IntN(3000)))
		var ino uint64
		if !exists {
			if !m.apply(next(func(t map[string]string) { t[name] = "" }), late, degraded, func() error {
				a, _, err := m.ns.Create(bg, fs.RootIno, name, fs.NewNode{Mode: 0o100644})
				ino = a.Ino
				return err
			}) {
				return false
			}
			cur = m.state
		} else {
			a, err := m.ns.Lookup(bg, fs.RootIno, name)
			if err != nil {
				m.err = err
				return false
			}
			ino = a.Ino
		}
		old := cur[name]
		m.partial = next(func(t map[string]string) { t[name] = (content + old[min(len(old), len(content)):])[:len(old)] })
		return m.apply(next(func(t map[string]string) { t[name] = content + old[min(len(old), len(content)):] }),
			late, degraded, func() error {
				f, err := m.ns.Open(bg, ino, true)
				if err != nil {
					return err
				}
				defer f.Release(bg)
				if _, err := f.WriteAt(bg, []byte(content), 0); err != nil {
					return err
				}
				if m.mode == dtl.ModeAsync && m.rng.IntN(3) == 0 {
					if err := f.Sync(bg); err != nil { // fsync: every change so far must survive
						return err
					}
					m.fsynced = true
				}
				return nil
			})
	case k < 7:
		to := fmt.Sprintf("f%d", m.rng.IntN(simNSFiles))
		if to == name {
			return true
		}
		return m.apply(next(func(t map[string]string) { t[to] = t[name]; delete(t, name) }), late, degraded, func() error {
			return m.ns.Rename(bg, fs.RootIno, name, fs.RootIno, to, 0)
		})
	default:
		return m.apply(next(func(t map[string]string) { delete(t, name) }), late, degraded, func() error {
			return m.ns.Unlink(bg, fs.RootIno, name)
		})
	}
}

// apply records a change, makes it, and marks what must survive now.
func (m *simNS) apply(after map[string]string, late bool, degraded func() bool, do func() error) bool {
	m.logf("namespace change %d: %v", len(m.ops), treeString(after))
	m.mu.Lock()
	m.ops = append(m.ops, simNSOp{after: after, partial: m.partial, late: late})
	m.partial = nil
	i := len(m.ops) - 1
	m.mu.Unlock()
	m.fsynced = false
	if err := do(); err != nil {
		m.err = err
		return false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ops[i].acked = true
	m.state = after
	if !degraded() && !late && (m.mode == dtl.ModeSync || m.fsynced) {
		m.safe = i + 1
	}
	return true
}

// caughtUp: every DTL is ok again, so in sync mode every change so far
// must survive.
func (m *simNS) caughtUp() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.mode != dtl.ModeSync {
		return
	}
	for i := range m.ops {
		if m.ops[i].acked {
			m.safe = i + 1
		}
	}
}

// check: the restored tree is the tree after the last change that had to
// survive, or after a later one (not made by a fenced owner).
func (m *simNS) check(t *testing.T, ns *fs.Namespace) {
	m.mu.Lock()
	defer m.mu.Unlock()
	got := map[string]string{}
	for i := range simNSFiles {
		name := fmt.Sprintf("f%d", i)
		a, err := ns.Lookup(bg, fs.RootIno, name)
		if errors.Is(err, fs.ErrNotFound) {
			continue
		}
		if err != nil {
			t.Fatalf("namespace: lookup %s: %v", name, err)
		}
		f, err := ns.Open(bg, a.Ino, false)
		if err != nil {
			t.Fatalf("namespace: open %s: %v", name, err)
		}
		b := make([]byte, a.Size)
		n, err := f.ReadAt(bg, b, 0)
		f.Release(bg)
		if err != nil && !errors.Is(err, io.EOF) {
			t.Fatalf("namespace: read %s: %v", name, err)
		}
		got[name] = string(b[:n])
	}
	candidates := []map[string]string{{}}
	if m.safe > 0 {
		candidates[0] = m.ops[m.safe-1].after
	}
	for i := m.safe; i < len(m.ops) && !m.ops[i].late; i++ {
		candidates = append(candidates, m.ops[i].after)
		if m.ops[i].partial != nil {
			candidates = append(candidates, m.ops[i].partial)
		}
	}
	for _, want := range candidates {
		if maps.Equal(got, want) {
			return
		}
	}
	var diff []string
	for name, w := range candidates[0] {
		if g, ok := got[name]; ok && g != w {
			diff = append(diff, fmt.Sprintf("%s reads %.30q…, want %.30q…", name, g, w))
		}
	}
	t.Errorf("namespace: the restored tree %v is none of those after the last change that had to survive (%d of %d changes): that one is %v %v",
		treeString(got), m.safe, len(m.ops), treeString(candidates[0]), diff)
}

// treeString shows a tree by names and content lengths.
func treeString(t map[string]string) string {
	names := slices.Sorted(maps.Keys(t))
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "%s:%d:%.25s ", n, len(t[n]), t[n])
	}
	return "{" + strings.TrimSpace(b.String()) + "}"
}
