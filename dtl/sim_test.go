package dtl

import (
	"encoding/binary"
	"flag"
	"fmt"
	"math/rand/v2"
	"sort"
	"testing"
	"time"
)

// A deterministic simulation of the DTL protocol: owners (Tracker) and
// one DTL server (Core over a store that loses unsynced entries on power
// loss) on a seeded fake network that delays and cuts connections, with
// uploads, seals, server kills and power losses, and takeovers by new
// owners on new hosts (the old one lives on, fenced, as a zombie). After
// every takeover it checks that every write acknowledged as held (sync)
// and every write before a flush acknowledged as held (async) is in the
// new owner's restored state, and that the server never accepted an
// entry from a fenced owner. A power loss of the DTL host drops, from
// what must survive, the acknowledged writes it had not synced (a flush
// protects against both hosts losing power; a sync write alone, against
// one). Time is steps; randomness is the seed's.
//
//	go test ./dtl -run TestSimulation -sim.seeds=100000
//	go test ./dtl -run TestSimulation -sim.seed=1234 -v   (replays one seed, with a trace)

var (
	simSeeds = flag.Int("sim.seeds", 20000, "seeds the DTL simulation runs")
	simSeed  = flag.Int64("sim.seed", -1, "run only this seed, with a trace")
)

const (
	simSteps      = 400
	simSlots      = 64 // records per TLog in the simulation
	simVDisk      = 7
	simCluster    = 4096
	simSCO        = simSlots * simCluster
	simPool       = "vp"
	simMaxWaiting = 8
)

type pos struct{ seq, rec uint32 }

// simConn is one connection: FIFO queues each way.
type simConn struct {
	id        ConnID
	gen       uint64
	owner     *simOwner
	toServer  []Msg
	toOwner   []Msg
	lossesAt  []int // per reply in toOwner: the DTL's power losses when it was sent
	alive     bool
	ownerGone bool // the owner has seen it end
}

type simWrite struct {
	id   uint64
	at   pos
	n    uint32
	val  uint64
	prot bool // acknowledged as held by the DTL
}

type simOwner struct {
	epoch   uint64
	t       *Tracker
	local   map[pos]uint64 // its flash: every record it wrote or restored
	cur     pos            // next position
	conn    *simConn
	waiting map[uint64]*simWrite // sync writes waiting for release
	flushes map[uint64]int       // flush id → writes issued before it
	writes  []*simWrite          // in issue order
	pending map[uint64]*simWrite // LSN → the write (or catch-up entry) it carries
	zombie  bool
	fetched bool // it read the DTL back (a takeover): its Open says so
	// the Have of its session
	haveRuns    []Run
	haveTrimmed uint32
}

type simWorld struct {
	t       *testing.T
	rng     *rand.Rand
	trace   bool
	core    *Core
	synced  map[pos]uint64 // the server's disk: synced entries
	written map[pos]uint64 // ... and written, not yet synced
	trimmed uint32
	epoch   uint64 // the pool epoch the server has persisted
	dataEp  uint64 // the epoch the vDisk's entries were written under
	conns   []*simConn
	nextID  ConnID
	gens    uint64
	owner   *simOwner   // the current owner
	zombies []*simOwner // taken-over owners, still running
	backend map[pos]uint64
	upTo    uint32 // TLogs through it are on the backend
	// protected is every write acknowledged as held, by any owner: it
	// must survive every takeover (or be on the backend).
	protected map[pos]uint64
	mode      Mode
	onLoss    OnLoss
	ids       uint64
	step      int
	losses    int // power losses of the DTL host so far
	// replyLosses is, while a reply is handled, the power losses there
	// had been when the server sent it: a write that a reply says is
	// held, and that the DTL had not synced, is not held after a power
	// loss since.
	replyLosses int
}

func (w *simWorld) logf(format string, args ...any) {
	if w.trace {
		w.t.Logf("step %d: %s", w.step, fmt.Sprintf(format, args...))
	}
}

func (w *simWorld) fail(format string, args ...any) {
	w.t.Helper()
	w.t.Fatalf("step %d: %s (replay: go test ./dtl -run TestSimulation -sim.seed=N -v)", w.step, fmt.Sprintf(format, args...))
}

func newOwner(w *simWorld, epoch uint64, local map[pos]uint64) *simOwner {
	o := &simOwner{epoch: epoch, t: NewTracker(w.mode, w.onLoss, time.Unix(0, 0)), local: local,
		waiting: map[uint64]*simWrite{}, flushes: map[uint64]int{}, pending: map[uint64]*simWrite{}}
	for p := range local {
		if p.seq >= o.cur.seq {
			o.cur = pos{p.seq + 1, 0}
		}
	}
	if o.cur.seq == 0 {
		o.cur = pos{1, 0}
	}
	o.t.Step(TEvent{Kind: TTrim, Seq: w.upTo})
	return o
}

// ownerDo runs a tracker's actions for owner o; entries are what a TSend
// carries.
func (w *simWorld) ownerDo(o *simOwner, acts []TAction, entries []*simWrite) {
	for _, a := range acts {
		switch a.Kind {
		case TSend:
			for i, e := range entries {
				lsn := a.LSN + uint64(i)
				o.pending[lsn] = e
				w.send(o, Msg{Type: MsgAppend, VDisk: simVDisk, LSN: lsn, Seq: e.at.seq, Rec0: e.at.rec,
					Recs: recsOf(e), Data: nil}, a.Gen)
			}
		case TSendSync:
			w.send(o, Msg{Type: MsgSync, VDisk: simVDisk, LSN: a.LSN}, a.Gen)
		case TSendTrim:
			w.send(o, Msg{Type: MsgTrim, VDisk: simVDisk, Seq: a.Seq}, a.Gen)
		case TCatchUp:
			w.catchUp(o, a.Gen)
		case TRelease:
			prot := o.t.gen != 0 || o.t.onLoss == LossBlock
			// A release while a session is up (or with on_loss block)
			// says the DTL holds the write, for a zombie too: its entry
			// was appended before the takeover's hello, so the read-back
			// had it.
			if wr := o.waiting[a.ID]; wr != nil {
				delete(o.waiting, a.ID)
				if prot {
					wr.prot = true
					w.protect(o, wr)
				}
			}
			if n, ok := o.flushes[a.ID]; ok {
				delete(o.flushes, a.ID)
				if prot {
					for _, wr := range o.writes[:n] {
						w.protect(o, wr)
					}
				}
			}
		}
	}
}

func (w *simWorld) protect(o *simOwner, wr *simWrite) {
	w.logf("owner %d: write %v+%d held", o.epoch, wr.at, wr.n)
	for i := uint32(0); i < wr.n; i++ {
		p := pos{wr.at.seq, wr.at.rec + i}
		if _, synced := w.synced[p]; w.replyLosses < w.losses && !synced {
			continue // lost with the DTL host's power since the reply was sent
		}
		w.protected[p] = o.local[p]
	}
}

// recsOf encodes a write's records: the value in each.
func recsOf(e *simWrite) []byte {
	b := make([]byte, int(e.n)*RecordSize)
	for i := uint32(0); i < e.n; i++ {
		binary.LittleEndian.PutUint64(b[int(i)*RecordSize:], e.val+uint64(i))
	}
	return b
}

func (w *simWorld) send(o *simOwner, m Msg, gen uint64) {
	if c := o.conn; c != nil && c.alive && c.gen == gen {
		c.toServer = append(c.toServer, m)
	}
}

// catchUp sends what the session's Have lacks, from the owner's flash.
func (w *simWorld) catchUp(o *simOwner, gen uint64) {
	c := o.conn
	if c == nil || c.gen != gen {
		return
	}
	runs, trimmed := o.haveRuns, o.haveTrimmed
	var lacking []pos
	for p := range o.local {
		if p.seq > trimmed && p.seq > w.upTo && !Holds(runs, p.seq, p.rec) {
			lacking = append(lacking, p)
		}
	}
	sort.Slice(lacking, func(i, j int) bool {
		return lacking[i].seq < lacking[j].seq || lacking[i].seq == lacking[j].seq && lacking[i].rec < lacking[j].rec
	})
	for _, p := range lacking {
		e := &simWrite{at: p, n: 1, val: o.local[p]}
		w.ownerDo(o, o.t.Step(TEvent{Kind: TWrite, N: 1}), []*simWrite{e})
	}
	w.ownerDo(o, o.t.Step(TEvent{Kind: TCaughtUp, Gen: gen}), nil)
}

func (w *simWorld) connect(o *simOwner) {
	w.nextID++
	w.gens++
	c := &simConn{id: w.nextID, gen: w.gens, owner: o, alive: true}
	w.conns = append(w.conns, c)
	o.conn = c
	flags := uint8(0)
	if o.fetched {
		flags = OpenFetched
	}
	c.toServer = append(c.toServer, Msg{Type: MsgHello, Version: Version, Epoch: o.epoch, Pool: simPool},
		Msg{Type: MsgOpen, VDisk: simVDisk, ClusterSize: simCluster, SCOSize: simSCO, Epoch: o.epoch, Flags: flags})
	w.logf("owner %d connects (conn %d)", o.epoch, c.id)
}

func (w *simWorld) cut(c *simConn) {
	if !c.alive {
		return
	}
	c.alive = false
	c.toServer, c.toOwner, c.lossesAt = nil, nil, nil
	w.core.Step(Event{Kind: EvClosed, Conn: c.id})
	w.logf("conn %d cut", c.id)
}

// ownerNotices tells a connection's owner it ended.
func (w *simWorld) ownerNotices(c *simConn) {
	if c.alive || c.ownerGone {
		return
	}
	c.ownerGone = true
	o := c.owner
	if o.conn == c {
		o.conn = nil
	}
	w.ownerDo(o, o.t.Step(TEvent{Kind: TDisconnected, Gen: c.gen, Now: time.Unix(int64(w.step), 0)}), nil)
}

// deliverToServer hands the server the next message of c.
func (w *simWorld) deliverToServer(c *simConn) {
	m := c.toServer[0]
	c.toServer = c.toServer[1:]
	for _, a := range w.core.Step(Event{Kind: EvReceived, Conn: c.id, Msg: m}) {
		w.serverDo(c, a)
		if !c.alive {
			return
		}
	}
}

func (w *simWorld) serverDo(c *simConn, a Action) {
	switch a.Kind {
	case ActReply:
		c.toOwner = append(c.toOwner, a.Msg)
		c.lossesAt = append(c.lossesAt, w.losses)
	case ActClose:
		// the refusal gets through, then the connection ends
		w.logf("server closes conn %d: %s", c.id, a.Reason)
		c.alive = false
		w.core.Step(Event{Kind: EvClosed, Conn: c.id})
	case ActSaveEpoch:
		w.epoch = a.Epoch
	case ActSaveVDisk:
		w.dataEp, w.trimmed = a.Epoch, a.Info.Trimmed
	case ActAppend:
		if c.owner.epoch < w.epoch {
			w.fail("the server appended an entry of owner epoch %d after epoch %d took over", c.owner.epoch, w.epoch)
		}
		n := uint32(len(a.Msg.Recs) / RecordSize)
		for i := uint32(0); i < n; i++ {
			w.written[pos{a.Msg.Seq, a.Msg.Rec0 + i}] = binary.LittleEndian.Uint64(a.Msg.Recs[int(i)*RecordSize:])
		}
	case ActSync:
		for p, v := range w.written {
			w.synced[p] = v
		}
	case ActTrim:
		w.dropWhere(func(p pos) bool { return p.seq <= a.Seq })
	case ActDrop:
		w.dropWhere(func(pos) bool { return true })
	}
}

func (w *simWorld) dropWhere(f func(pos) bool) {
	for p := range w.written {
		if f(p) {
			delete(w.written, p)
		}
	}
	for p := range w.synced {
		if f(p) {
			delete(w.synced, p)
		}
	}
}

// deliverToOwner hands the owner the next reply on c.
func (w *simWorld) deliverToOwner(c *simConn) {
	m := c.toOwner[0]
	w.replyLosses = c.lossesAt[0]
	defer func() { w.replyLosses = w.losses }()
	c.toOwner, c.lossesAt = c.toOwner[1:], c.lossesAt[1:]
	o := c.owner
	if o.conn != c {
		return
	}
	switch m.Type {
	case MsgWelcome:
	case MsgRefuse:
		w.logf("owner %d refused: %s", o.epoch, m.Reason)
		c.alive = false
		w.ownerNotices(c)
	case MsgHave:
		w.logf("owner %d: have %v trimmed %d", o.epoch, m.Runs, m.Seq)
		o.haveRuns, o.haveTrimmed = m.Runs, m.Seq
		w.ownerDo(o, o.t.Step(TEvent{Kind: TConnected, Gen: c.gen}), nil)
	case MsgAck:
		w.ownerDo(o, o.t.Step(TEvent{Kind: TAck, Gen: c.gen, LSN: m.LSN}), nil)
	case MsgSynced:
		w.ownerDo(o, o.t.Step(TEvent{Kind: TSynced, Gen: c.gen, LSN: m.LSN}), nil)
	}
}

// write makes a write of 1-3 records at the owner's next positions.
func (w *simWorld) write(o *simOwner) {
	n := uint32(1 + w.rng.IntN(3))
	if o.cur.rec+n > simSlots {
		o.cur = pos{o.cur.seq + 1, 0}
	}
	w.ids++
	wr := &simWrite{id: w.ids, at: o.cur, n: n, val: w.rng.Uint64() &^ 0xff}
	o.cur.rec += n
	for i := uint32(0); i < n; i++ {
		o.local[pos{wr.at.seq, wr.at.rec + i}] = wr.val + uint64(i)
	}
	o.writes = append(o.writes, wr)
	id := uint64(0)
	if o.t.mode == ModeSync {
		id = wr.id
		o.waiting[id] = wr
	}
	w.ownerDo(o, o.t.Step(TEvent{Kind: TWrite, ID: id, N: 1}), []*simWrite{wr})
}

// takeover: the owner's host is lost (its flash with it); a new owner
// with the next epoch reads back the DTL and starts from the backend
// plus what it read.
func (w *simWorld) takeover() {
	old := w.owner
	old.zombie = true
	w.zombies = append(w.zombies, old)
	epoch := old.epoch + 1
	// read-back: hello, then fetch, on a connection of its own
	w.nextID++
	rb := &simConn{id: w.nextID, owner: old, alive: true}
	var got []Msg
	listed := false
	for _, m := range []Msg{{Type: MsgHello, Version: Version, Epoch: epoch, Pool: simPool}, {Type: MsgList}, {Type: MsgFetch, VDisk: simVDisk}} {
		if m.Type == MsgFetch && !listed {
			break // as the client: only what the listing names
		}
		for _, a := range w.core.Step(Event{Kind: EvReceived, Conn: rb.id, Msg: m}) {
			if a.Kind == ActReply && a.Msg.Type == MsgListing {
				listed = len(a.Msg.VDisks) > 0
			}
			switch a.Kind {
			case ActSaveEpoch:
				w.epoch = a.Epoch
			case ActFetch:
				for p, v := range w.written {
					if p.seq > a.Seq {
						got = append(got, Msg{Seq: p.seq, Rec0: p.rec, LSN: v})
					}
				}
			case ActReply:
				if a.Msg.Type == MsgRefuse {
					w.fail("read-back refused: %s", a.Msg.Reason)
				}
			}
		}
	}
	w.core.Step(Event{Kind: EvClosed, Conn: rb.id})
	local := map[pos]uint64{}
	for p, v := range w.backend {
		local[p] = v
	}
	for _, m := range got {
		local[pos{m.Seq, m.Rec0}] = m.LSN
	}
	for p, v := range w.protected {
		if p.seq <= w.upTo {
			if w.backend[p] != v {
				w.fail("acknowledged record %v is not on the backend after its upload", p)
			}
			continue
		}
		if got, ok := local[p]; !ok || got != v {
			w.fail("takeover by epoch %d lost acknowledged record %v (mode %s, on_loss %s)", epoch, p, w.mode, w.onLoss)
		}
	}
	o := newOwner(w, epoch, local)
	o.fetched = true
	w.owner = o
	w.logf("takeover: epoch %d restored %d records (%d from the DTL)", epoch, len(local), len(got))
}

// serverRestart: kill -9 of the server (powerLoss: its unsynced entries
// are gone too); every connection ends.
func (w *simWorld) serverRestart(powerLoss bool) {
	for _, c := range w.conns {
		w.cut(c)
	}
	if powerLoss {
		w.losses++
		w.replyLosses = w.losses
		w.written = map[pos]uint64{}
		for p, v := range w.synced {
			w.written[p] = v
		}
		// A sync write is held once written on the DTL host; only a
		// flush makes it survive that host's power loss too. Until a
		// catch-up or a flush holds them again, losing the owner now
		// may lose the acknowledged writes that were not flushed: two
		// hosts lost, as the modes' table allows.
		for p := range w.protected {
			if _, ok := w.synced[p]; !ok && p.seq > w.upTo {
				delete(w.protected, p)
			}
		}
	}
	w.core = NewCore()
	w.core.Step(Event{Kind: EvLoaded, Pool: simPool, Epoch: w.epoch})
	var runs []Run
	for p := range w.written {
		runs = addRun(runs, Run{p.seq, p.rec, p.rec + 1})
	}
	sort.Slice(runs, func(i, j int) bool {
		return runs[i].Seq < runs[j].Seq || runs[i].Seq == runs[j].Seq && runs[i].Rec0 < runs[j].Rec0
	})
	w.core.Step(Event{Kind: EvLoaded, Pool: simPool, Epoch: w.dataEp, Runs: runs,
		Info: VDiskInfo{VDisk: simVDisk, ClusterSize: simCluster, SCOSize: simSCO, Trimmed: w.trimmed}})
	w.logf("server restart (power loss %v): %d entries kept", powerLoss, len(w.written))
}

// upload puts the oldest sealed TLog on the backend, then trims.
func (w *simWorld) upload() {
	o := w.owner
	if w.upTo+1 >= o.cur.seq {
		return
	}
	w.upTo++
	for p, v := range o.local {
		if p.seq == w.upTo {
			w.backend[p] = v
		}
	}
	w.ownerDo(o, o.t.Step(TEvent{Kind: TTrim, Seq: w.upTo}), nil)
}

func (w *simWorld) owners() []*simOwner { return append([]*simOwner{w.owner}, w.zombies...) }

func runSim(t *testing.T, seed int64, trace bool) {
	rng := rand.New(rand.NewPCG(uint64(seed), 0x5d71))
	w := &simWorld{t: t, rng: rng, trace: trace, core: NewCore(), synced: map[pos]uint64{}, written: map[pos]uint64{},
		backend: map[pos]uint64{}, protected: map[pos]uint64{}}
	w.mode = []Mode{ModeSync, ModeAsync}[rng.IntN(2)]
	w.onLoss = []OnLoss{LossDegrade, LossBlock}[rng.IntN(2)]
	w.owner = newOwner(w, 1, map[pos]uint64{})
	w.logf("seed %d: mode %s, on_loss %s", seed, w.mode, w.onLoss)
	for w.step = 0; w.step < simSteps; w.step++ {
		o := w.owners()[rng.IntN(len(w.owners()))]
		switch r := rng.IntN(100); {
		case r < 25:
			if len(o.waiting) < simMaxWaiting {
				w.write(o)
			}
		case r < 30:
			w.ids++
			o.flushes[w.ids] = len(o.writes)
			w.ownerDo(o, o.t.Step(TEvent{Kind: TFlush, ID: w.ids}), nil)
		case r < 55: // the network delivers something
			var live []*simConn
			for _, c := range w.conns {
				if len(c.toServer) > 0 || len(c.toOwner) > 0 {
					live = append(live, c)
				}
			}
			if len(live) == 0 {
				continue
			}
			c := live[rng.IntN(len(live))]
			if len(c.toServer) > 0 && (len(c.toOwner) == 0 || rng.IntN(2) == 0) {
				w.deliverToServer(c)
			} else {
				w.deliverToOwner(c)
			}
		case r < 62: // owners notice dead connections, and reconnect
			for _, c := range w.conns {
				if !c.alive && len(c.toOwner) == 0 {
					w.ownerNotices(c)
				}
			}
			if o.conn == nil && (o.t.mode != ModeNone) {
				w.connect(o)
			}
		case r < 64:
			if c := o.conn; c != nil {
				w.cut(c)
			}
		case r < 70:
			w.upload()
		case r < 73:
			if w.owner.cur.rec > 0 {
				w.owner.cur = pos{w.owner.cur.seq + 1, 0}
			}
		case r < 74:
			w.serverRestart(rng.IntN(2) == 0)
		case r < 75:
			w.takeover()
		}
	}
	// the end: deliver everything, then a last takeover checks it all
	for i := 0; i < 10000; i++ {
		busy := false
		for _, c := range w.conns {
			for len(c.toServer) > 0 || len(c.toOwner) > 0 {
				busy = true
				if len(c.toServer) > 0 {
					w.deliverToServer(c)
				} else {
					w.deliverToOwner(c)
				}
			}
		}
		if !busy {
			break
		}
	}
	w.takeover()
}

func TestSimulation(t *testing.T) {
	if *simSeed >= 0 {
		runSim(t, *simSeed, true)
		return
	}
	n := *simSeeds
	if testing.Short() {
		n = 300
	}
	for seed := int64(0); seed < int64(n); seed++ {
		ok := t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { runSim(t, seed, false) })
		if !ok {
			t.Fatalf("seed %d failed: replay with go test ./dtl -run TestSimulation -sim.seed=%d -v", seed, seed)
		}
	}
}
