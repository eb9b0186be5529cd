package dtl

import (
	"fmt"
	"sort"
)

// ConnID names one connection to a DTL server.
type ConnID uint64

// EventKind says what happened to the server.
type EventKind uint8

// Server events.
const (
	EvReceived EventKind = iota + 1 // a message arrived on Conn
	EvClosed                        // Conn is gone
	EvFailed                        // an action for Conn failed (Err): its effects are undone
	EvLoaded                        // the store found a vDisk (Info, Epoch, Runs) or a pool epoch (VDisk 0) at start
)

// Event is one input to Core.Step.
type Event struct {
	Kind   EventKind
	Conn   ConnID
	Msg    Msg
	Action Action // EvFailed: the action that failed
	Err    error  // EvFailed
	Pool   string // EvLoaded
	Info   VDiskInfo
	Epoch  uint64
	Runs   []Run
	Bytes  map[uint32]uint64 // EvLoaded: bytes of entries held, per TLog
}

// ActionKind says what the driver must do.
type ActionKind uint8

// Server actions, executed in order; an action that fails is reported
// back as EvFailed and the ones after it for that connection are dropped.
const (
	ActReply     ActionKind = iota + 1 // send Msg on Conn
	ActClose                           // log Reason and close Conn
	ActSaveEpoch                       // make Pool's epoch Epoch durable
	ActSaveVDisk                       // make the vDisk's record (Info, Epoch) durable
	ActAppend                          // append Msg (an Append) to the vDisk's TLog file Msg.Seq
	ActSync                            // sync the vDisk's files
	ActTrim                            // remove the vDisk's files of TLogs through Seq
	ActDrop                            // remove everything of the vDisk
	ActFetch                           // send every held entry of the vDisk after Seq, then FetchEnd
)

// Action is one output of Core.Step.
type Action struct {
	Kind   ActionKind
	Conn   ConnID
	Msg    Msg
	Pool   string
	VDisk  uint64
	Seq    uint32
	Epoch  uint64
	Info   VDiskInfo
	Reason string
}

// Core is the DTL server's protocol logic, without I/O: which sessions
// are allowed (epochs), which vDisks each one has open, and which record
// positions of which TLogs are held. A driver feeds it events and does
// what the returned actions say.
//
// Durability order: the actions that make something durable come before
// the reply that depends on it (epoch before Welcome, entry before Ack,
// sync before Synced), and the driver runs them in order.
type Core struct {
	pools map[string]*poolState
	conns map[ConnID]*connState
}

type poolState struct {
	epoch  uint64
	vdisks map[uint64]*vdiskState
}

type vdiskState struct {
	info  VDiskInfo
	epoch uint64            // the owner epoch the entries were written under
	held  map[uint32][]Run  // per TLog: sorted, disjoint runs
	bytes map[uint32]uint64 // per TLog: bytes of its entries (info.Bytes is their sum)
}

type connState struct {
	pool  string
	epoch uint64
	open  map[uint64]bool
}

// NewCore returns an empty core.
func NewCore() *Core {
	return &Core{pools: map[string]*poolState{}, conns: map[ConnID]*connState{}}
}

func (c *Core) pool(name string) *poolState {
	p := c.pools[name]
	if p == nil {
		p = &poolState{vdisks: map[uint64]*vdiskState{}}
		c.pools[name] = p
	}
	return p
}

// Step applies one event and returns what to do.
func (c *Core) Step(ev Event) []Action {
	switch ev.Kind {
	case EvLoaded:
		p := c.pool(ev.Pool)
		if ev.Info.VDisk == 0 {
			p.epoch = max(p.epoch, ev.Epoch)
			return nil
		}
		v := &vdiskState{info: ev.Info, epoch: ev.Epoch, held: map[uint32][]Run{}, bytes: map[uint32]uint64{}}
		for _, r := range ev.Runs {
			v.add(r)
		}
		v.info.Bytes = 0
		for s, n := range ev.Bytes {
			v.bytes[s] = n
			v.info.Bytes += n
		}
		p.vdisks[ev.Info.VDisk] = v
		return nil
	case EvClosed:
		delete(c.conns, ev.Conn)
		return nil
	case EvFailed:
		return c.failed(ev)
	case EvReceived:
		return c.received(ev.Conn, ev.Msg)
	}
	return nil
}

func refuse(conn ConnID, format string, args ...any) []Action {
	reason := fmt.Sprintf(format, args...)
	return []Action{{Kind: ActReply, Conn: conn, Msg: Msg{Type: MsgRefuse, Reason: reason}},
		{Kind: ActClose, Conn: conn, Reason: reason}}
}

func fenced(conn ConnID, pool string, epoch, current uint64) []Action {
	acts := refuse(conn, "owner epoch %d of vPool %s is fenced: epoch %d took over", epoch, pool, current)
	acts[0].Msg.Flags = RefuseFenced
	return acts
}

func (c *Core) received(conn ConnID, m Msg) []Action {
	cs := c.conns[conn]
	if m.Type == MsgHello {
		if cs != nil {
			return refuse(conn, "a second hello")
		}
		return c.hello(conn, m)
	}
	if cs == nil {
		return refuse(conn, "%s before hello", m.Type)
	}
	p := c.pool(cs.pool)
	if cs.epoch < p.epoch {
		delete(c.conns, conn)
		return fenced(conn, cs.pool, cs.epoch, p.epoch)
	}
	if m.Type == MsgList {
		return []Action{{Kind: ActReply, Conn: conn, Msg: Msg{Type: MsgListing, VDisks: p.list()}}}
	}
	if m.Type == MsgOpen {
		return c.open(conn, cs, p, m)
	}
	v := p.vdisks[m.VDisk]
	if v == nil || !cs.open[m.VDisk] && m.Type != MsgFetch && m.Type != MsgDrop {
		return refuse(conn, "%s for vDisk %016x, which this session has not opened", m.Type, m.VDisk)
	}
	switch m.Type {
	case MsgAppend:
		if m.Seq <= v.info.Trimmed {
			// on the backend already: acknowledged, not kept
			return []Action{{Kind: ActReply, Conn: conn, Msg: Msg{Type: MsgAck, VDisk: m.VDisk, LSN: m.LSN, Count: 1}}}
		}
		if err := v.check(m); err != nil {
			return refuse(conn, "vDisk %016x: %v", m.VDisk, err)
		}
		v.add(Run{m.Seq, m.Rec0, m.Rec0 + uint32(len(m.Recs)/RecordSize)})
		v.addBytes(m.Seq, int64(len(m.Recs)+len(m.Data)))
		return []Action{{Kind: ActAppend, Conn: conn, Pool: cs.pool, VDisk: m.VDisk, Msg: m},
			{Kind: ActReply, Conn: conn, Msg: Msg{Type: MsgAck, VDisk: m.VDisk, LSN: m.LSN, Count: 1}}}
	case MsgSync:
		return []Action{{Kind: ActSync, Conn: conn, Pool: cs.pool, VDisk: m.VDisk},
			{Kind: ActReply, Conn: conn, Msg: Msg{Type: MsgSynced, VDisk: m.VDisk, LSN: m.LSN}}}
	case MsgTrim:
		if m.Seq <= v.info.Trimmed {
			return nil
		}
		v.info.Trimmed = m.Seq
		for s := range v.held {
			if s <= m.Seq {
				delete(v.held, s)
			}
		}
		for s, n := range v.bytes {
			if s <= m.Seq {
				v.info.Bytes -= n
				delete(v.bytes, s)
			}
		}
		return []Action{{Kind: ActSaveVDisk, Conn: conn, Pool: cs.pool, VDisk: m.VDisk, Info: v.info, Epoch: v.epoch},
			{Kind: ActTrim, Conn: conn, Pool: cs.pool, VDisk: m.VDisk, Seq: m.Seq}}
	case MsgFetch:
		return []Action{{Kind: ActFetch, Conn: conn, Pool: cs.pool, VDisk: m.VDisk, Seq: v.info.Trimmed}}
	case MsgDrop:
		delete(p.vdisks, m.VDisk)
		for _, o := range c.conns {
			if o.pool == cs.pool {
				delete(o.open, m.VDisk)
			}
		}
		return []Action{{Kind: ActDrop, Conn: conn, Pool: cs.pool, VDisk: m.VDisk}}
	}
	return refuse(conn, "unexpected %s", m.Type)
}

func (c *Core) hello(conn ConnID, m Msg) []Action {
	if m.Version != Version {
		return refuse(conn, "protocol version %d (this server speaks %d)", m.Version, Version)
	}
	if !validPool(m.Pool) || m.Epoch == 0 {
		return refuse(conn, "hello with vPool name %q and epoch %d: want a name and an epoch", m.Pool, m.Epoch)
	}
	p := c.pool(m.Pool)
	if m.Epoch < p.epoch {
		return fenced(conn, m.Pool, m.Epoch, p.epoch)
	}
	c.conns[conn] = &connState{pool: m.Pool, epoch: m.Epoch, open: map[uint64]bool{}}
	var acts []Action
	if m.Epoch > p.epoch {
		p.epoch = m.Epoch
		acts = append(acts, Action{Kind: ActSaveEpoch, Conn: conn, Pool: m.Pool, Epoch: m.Epoch})
	}
	return append(acts, Action{Kind: ActReply, Conn: conn, Msg: Msg{Type: MsgWelcome, Version: Version, Epoch: m.Epoch}})
}

// open starts appending to a vDisk. Entries written under an older owner
// epoch are dropped unless the owner says it read them back: positions
// are unique only within one owner's history.
func (c *Core) open(conn ConnID, cs *connState, p *poolState, m Msg) []Action {
	if m.VDisk == 0 || m.ClusterSize == 0 || m.ClusterSize&(m.ClusterSize-1) != 0 || m.ClusterSize > 1<<20 ||
		m.SCOSize == 0 || m.SCOSize%m.ClusterSize != 0 {
		return refuse(conn, "open of vDisk %016x: bad geometry (cluster %d, SCO %d bytes)", m.VDisk, m.ClusterSize, m.SCOSize)
	}
	if m.Epoch > cs.epoch {
		return refuse(conn, "open of vDisk %016x under epoch %d, above the session's %d", m.VDisk, m.Epoch, cs.epoch)
	}
	var acts []Action
	v := p.vdisks[m.VDisk]
	switch {
	case v != nil && (v.info.ClusterSize != m.ClusterSize || v.info.SCOSize != m.SCOSize):
		return refuse(conn, "open of vDisk %016x: geometry %d/%d, held entries have %d/%d",
			m.VDisk, m.ClusterSize, m.SCOSize, v.info.ClusterSize, v.info.SCOSize)
	case v != nil && v.epoch < m.Epoch && m.Flags&OpenFetched == 0:
		acts = append(acts, Action{Kind: ActDrop, Conn: conn, Pool: cs.pool, VDisk: m.VDisk})
		v = nil
	}
	if v == nil {
		v = &vdiskState{info: VDiskInfo{VDisk: m.VDisk, ClusterSize: m.ClusterSize, SCOSize: m.SCOSize},
			held: map[uint32][]Run{}, bytes: map[uint32]uint64{}}
		p.vdisks[m.VDisk] = v
	}
	if v.epoch != m.Epoch || len(acts) > 0 {
		v.epoch = m.Epoch
		acts = append(acts, Action{Kind: ActSaveVDisk, Conn: conn, Pool: cs.pool, VDisk: m.VDisk, Info: v.info, Epoch: v.epoch})
	}
	cs.open[m.VDisk] = true
	return append(acts, Action{Kind: ActReply, Conn: conn,
		Msg: Msg{Type: MsgHave, VDisk: m.VDisk, Seq: v.info.Trimmed, Runs: v.runs()}})
}

// failed undoes what a failed action's message did to memory, and ends the
// session: its owner sees the DTL as lost and catches up elsewhere or
// later.
func (c *Core) failed(ev Event) []Action {
	a := ev.Action
	if a.Kind == ActAppend {
		if p := c.pools[a.Pool]; p != nil {
			if v := p.vdisks[a.VDisk]; v != nil {
				v.remove(Run{a.Msg.Seq, a.Msg.Rec0, a.Msg.Rec0 + uint32(len(a.Msg.Recs)/RecordSize)})
				v.addBytes(a.Msg.Seq, -int64(len(a.Msg.Recs)+len(a.Msg.Data)))
			}
		}
	}
	delete(c.conns, ev.Conn)
	return refuse(ev.Conn, "%v", ev.Err)
}

func (p *poolState) list() []VDiskInfo {
	out := make([]VDiskInfo, 0, len(p.vdisks))
	for _, v := range p.vdisks {
		out = append(out, v.info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].VDisk < out[j].VDisk })
	return out
}

// check validates an Append against the vDisk's geometry: positions
// within a TLog, data a whole number of clusters.
func (v *vdiskState) check(m Msg) error {
	slots := v.info.SCOSize / v.info.ClusterSize
	n := uint32(len(m.Recs) / RecordSize)
	if uint64(m.Rec0)+uint64(n) > uint64(slots)+maxSpareRecords {
		return fmt.Errorf("records [%d, %d) of TLog %d past its end", m.Rec0, m.Rec0+n, m.Seq)
	}
	if len(m.Data)%int(v.info.ClusterSize) != 0 {
		return fmt.Errorf("%d bytes of data: not whole clusters of %d", len(m.Data), v.info.ClusterSize)
	}
	return nil
}

// maxSpareRecords bounds the records a TLog holds beyond one per SCO slot
// (unmaps, resizes, the seal).
const maxSpareRecords = 1 << 16

// runs returns the held positions, by TLog.
func (v *vdiskState) runs() []Run {
	seqs := make([]uint32, 0, len(v.held))
	for s := range v.held {
		seqs = append(seqs, s)
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	var out []Run
	for _, s := range seqs {
		out = append(out, v.held[s]...)
	}
	return out
}

// add merges r into the held runs of its TLog.
func (v *vdiskState) add(r Run) {
	v.held[r.Seq] = addRun(v.held[r.Seq], r)
}

// addBytes counts n more (or, negative, fewer) bytes held in TLog seq.
func (v *vdiskState) addBytes(seq uint32, n int64) {
	n = max(n, -int64(v.bytes[seq]))
	v.bytes[seq] = uint64(int64(v.bytes[seq]) + n)
	v.info.Bytes = uint64(int64(v.info.Bytes) + n)
}

func (v *vdiskState) remove(r Run) {
	v.held[r.Seq] = removeRun(v.held[r.Seq], r)
}

// addRun merges r into sorted disjoint runs.
func addRun(runs []Run, r Run) []Run {
	if n := len(runs); n > 0 && runs[n-1].Rec1 == r.Rec0 { // the common case: appends in order
		runs[n-1].Rec1 = r.Rec1
		return runs
	}
	if n := len(runs); n == 0 || runs[n-1].Rec1 < r.Rec0 {
		return append(runs, r)
	}
	out := runs[:0:0]
	for _, x := range runs {
		switch {
		case x.Rec1 < r.Rec0 || x.Rec0 > r.Rec1:
			out = append(out, x)
		default: // overlapping or adjacent: absorb
			r.Rec0, r.Rec1 = min(r.Rec0, x.Rec0), max(r.Rec1, x.Rec1)
		}
	}
	out = append(out, r)
	sort.Slice(out, func(i, j int) bool { return out[i].Rec0 < out[j].Rec0 })
	return out
}

// removeRun takes r out of sorted disjoint runs.
func removeRun(runs []Run, r Run) []Run {
	var out []Run
	for _, x := range runs {
		if x.Rec1 <= r.Rec0 || x.Rec0 >= r.Rec1 {
			out = append(out, x)
			continue
		}
		if x.Rec0 < r.Rec0 {
			out = append(out, Run{x.Seq, x.Rec0, r.Rec0})
		}
		if x.Rec1 > r.Rec1 {
			out = append(out, Run{x.Seq, r.Rec1, x.Rec1})
		}
	}
	return out
}

// Holds reports whether runs (sorted, of one TLog or several) cover
// position rec of TLog seq.
func Holds(runs []Run, seq, rec uint32) bool {
	i := sort.Search(len(runs), func(i int) bool {
		return runs[i].Seq > seq || runs[i].Seq == seq && runs[i].Rec1 > rec
	})
	return i < len(runs) && runs[i].Seq == seq && runs[i].Rec0 <= rec
}
