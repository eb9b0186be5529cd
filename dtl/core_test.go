package dtl

import (
	"errors"
	"strings"
	"testing"
)

func kinds(acts []Action) string {
	var s []string
	for _, a := range acts {
		switch a.Kind {
		case ActReply:
			s = append(s, "reply:"+a.Msg.Type.String())
		case ActClose:
			s = append(s, "close")
		case ActSaveEpoch:
			s = append(s, "save-epoch")
		case ActSaveVDisk:
			s = append(s, "save-vdisk")
		case ActAppend:
			s = append(s, "append")
		case ActSync:
			s = append(s, "sync")
		case ActTrim:
			s = append(s, "trim")
		case ActDrop:
			s = append(s, "drop")
		case ActFetch:
			s = append(s, "fetch")
		}
	}
	return strings.Join(s, " ")
}

func recv(c *Core, conn ConnID, m Msg) string {
	return kinds(c.Step(Event{Kind: EvReceived, Conn: conn, Msg: m}))
}

func hello(epoch uint64) Msg {
	return Msg{Type: MsgHello, Version: Version, Epoch: epoch, Pool: "vp", Owner: "a"}
}

func open(id uint64, epoch uint64, flags uint8) Msg {
	return Msg{Type: MsgOpen, VDisk: id, ClusterSize: 4096, SCOSize: 4 << 20, Epoch: epoch, Flags: flags}
}

func appendMsg(id uint64, lsn uint64, seq, rec0 uint32, n int) Msg {
	return Msg{Type: MsgAppend, VDisk: id, LSN: lsn, Seq: seq, Rec0: rec0, Recs: make([]byte, n*RecordSize), Data: make([]byte, n*4096)}
}

// Step by step: a session's life, and the fencing of an older owner.
func TestCoreSession(t *testing.T) {
	c := NewCore()
	steps := []struct {
		conn ConnID
		m    Msg
		want string
	}{
		{1, appendMsg(5, 1, 1, 0, 1), "reply:refuse close"}, // before hello
		{2, Msg{Type: MsgHello, Version: 9, Epoch: 1, Pool: "vp"}, "reply:refuse close"},
		{2, Msg{Type: MsgHello, Version: Version, Epoch: 1, Pool: "../x"}, "reply:refuse close"},
		{3, hello(1), "save-epoch reply:welcome"},
		{3, hello(1), "reply:refuse close"},                 // a second hello
		{3, appendMsg(5, 1, 1, 0, 1), "reply:refuse close"}, // not opened
		{4, hello(1), "reply:welcome"},                      // same epoch: nothing to save
		{4, open(5, 1, 0), "save-vdisk reply:have"},
		{4, appendMsg(5, 1, 1, 0, 2), "append reply:ack"},
		{4, appendMsg(5, 2, 1, 2, 1), "append reply:ack"},
		{4, Msg{Type: MsgSync, VDisk: 5, LSN: 3}, "sync reply:synced"},
		{4, Msg{Type: MsgAppend, VDisk: 5, LSN: 4, Seq: 1, Rec0: 3, Recs: make([]byte, RecordSize), Data: make([]byte, 100)}, "reply:refuse close"},
		{6, hello(1), "reply:welcome"},
		{6, open(5, 1, 0), "reply:have"},
		{6, Msg{Type: MsgTrim, VDisk: 5, Seq: 1}, "save-vdisk trim"},
		{6, Msg{Type: MsgTrim, VDisk: 5, Seq: 1}, ""},
		{6, appendMsg(5, 9, 1, 7, 1), "reply:ack"}, // trimmed already: acknowledged, not kept
		{7, hello(2), "save-epoch reply:welcome"},  // a takeover
		{6, appendMsg(5, 10, 2, 0, 1), "reply:refuse close"},
		{8, hello(1), "reply:refuse close"},
		{7, open(5, 2, 0), "drop save-vdisk reply:have"}, // entries of epoch 1, not read back: dropped
		{7, Msg{Type: MsgList}, "reply:listing"},
		{7, Msg{Type: MsgFetch, VDisk: 5}, "fetch"},
		{7, Msg{Type: MsgDrop, VDisk: 5}, "drop"},
		{7, appendMsg(5, 1, 3, 0, 1), "reply:refuse close"},
	}
	for i, s := range steps {
		if got := recv(c, s.conn, s.m); got != s.want {
			t.Fatalf("step %d (%s on %d): %q, want %q", i, s.m.Type, s.conn, got, s.want)
		}
	}
}

// What is held: runs merge, a takeover that read back keeps them, a failed
// append is forgotten.
func TestCoreHeld(t *testing.T) {
	c := NewCore()
	recv(c, 1, hello(1))
	recv(c, 1, open(5, 1, 0))
	recv(c, 1, appendMsg(5, 1, 1, 0, 2))
	recv(c, 1, appendMsg(5, 2, 1, 4, 2))
	acts := c.Step(Event{Kind: EvReceived, Conn: 1, Msg: appendMsg(5, 3, 1, 2, 2)})
	recv(c, 1, appendMsg(5, 4, 2, 0, 1))
	got := c.pools["vp"].vdisks[5].runs()
	want := []Run{{1, 0, 6}, {2, 0, 1}}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("runs %v, want %v", got, want)
	}
	if k := kinds(c.Step(Event{Kind: EvFailed, Conn: 1, Action: acts[0]})); k != "reply:refuse close" {
		t.Fatalf("failed append: %q", k)
	}
	got = c.pools["vp"].vdisks[5].runs()
	if len(got) != 3 || got[0] != (Run{1, 0, 2}) || got[1] != (Run{1, 4, 6}) {
		t.Fatalf("after a failed append: %v", got)
	}
	recv(c, 2, hello(2))
	if k := recv(c, 2, open(5, 2, OpenFetched)); k != "save-vdisk reply:have" {
		t.Fatalf("open after read-back: %q", k)
	}
	if !Holds(c.pools["vp"].vdisks[5].runs(), 1, 5) || Holds(c.pools["vp"].vdisks[5].runs(), 1, 3) {
		t.Fatal("Holds disagrees with the runs")
	}
}

func TestRuns(t *testing.T) {
	var r []Run
	for _, x := range []Run{{1, 10, 20}, {1, 0, 5}, {1, 5, 10}, {1, 30, 40}, {1, 15, 35}} {
		r = addRun(r, x)
	}
	if len(r) != 1 || r[0] != (Run{1, 0, 40}) {
		t.Fatalf("merged %v", r)
	}
	r = removeRun(r, Run{1, 10, 20})
	if len(r) != 2 || r[0] != (Run{1, 0, 10}) || r[1] != (Run{1, 20, 40}) {
		t.Fatalf("removed %v", r)
	}
}

// The held-bytes figure follows appends, trims and failed appends, and is
// rebuilt from a store's per-TLog counts at load.
func TestCoreHeldBytes(t *testing.T) {
	entry := func(n int) uint64 { return uint64(n * (RecordSize + 4096)) }
	held := func(c *Core) uint64 {
		var b uint64
		for _, v := range c.pool("vp").list() {
			b += v.Bytes
		}
		return b
	}
	c := NewCore()
	recv(c, 1, hello(1))
	recv(c, 1, open(5, 1, 0))
	recv(c, 1, appendMsg(5, 1, 1, 0, 2))
	recv(c, 1, appendMsg(5, 2, 2, 0, 3))
	acts := c.Step(Event{Kind: EvReceived, Conn: 1, Msg: appendMsg(5, 3, 3, 0, 1)})
	if got, want := held(c), entry(6); got != want {
		t.Fatalf("after appends: %d bytes held, want %d", got, want)
	}
	recv(c, 1, Msg{Type: MsgTrim, VDisk: 5, Seq: 1})
	if got, want := held(c), entry(4); got != want {
		t.Fatalf("after a trim of TLog 1: %d bytes held, want %d", got, want)
	}
	c.Step(Event{Kind: EvFailed, Conn: 1, Action: acts[0], Err: errTest}) // TLog 3's append was not written
	if got, want := held(c), entry(3); got != want {
		t.Fatalf("after a failed append: %d bytes held, want %d", got, want)
	}
	c2 := NewCore()
	c2.Step(Event{Kind: EvLoaded, Pool: "vp", Info: VDiskInfo{VDisk: 5, ClusterSize: 4096, SCOSize: 4 << 20, Trimmed: 1, Bytes: 99},
		Epoch: 1, Runs: []Run{{2, 0, 3}}, Bytes: map[uint32]uint64{2: entry(3)}})
	if got, want := held(c2), entry(3); got != want {
		t.Fatalf("after a load: %d bytes held, want %d", got, want)
	}
	recv(c2, 1, hello(1))
	recv(c2, 1, open(5, 1, 0))
	recv(c2, 1, Msg{Type: MsgTrim, VDisk: 5, Seq: 2})
	if got := held(c2); got != 0 {
		t.Fatalf("after a trim of everything: %d bytes held, want 0", got)
	}
}

var errTest = errors.New("test: the disk is full")
