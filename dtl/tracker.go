package dtl

import (
	"fmt"
	"time"
)

// Mode is a vDisk's DTL mode.
type Mode uint8

// Modes (see ARCHITECTURE.md, "DTL").
const (
	ModeNone  Mode = iota // no DTL: a host loss loses what is not on the backend
	ModeAsync             // shipped in the background; a flush waits for the DTL
	ModeSync              // a write waits for the DTL
)

func (m Mode) String() string {
	switch m {
	case ModeAsync:
		return "async"
	case ModeSync:
		return "sync"
	}
	return "none"
}

// ParseMode parses "none", "async" or "sync".
func ParseMode(s string) (Mode, error) {
	switch s {
	case "none", "":
		return ModeNone, nil
	case "async":
		return ModeAsync, nil
	case "sync":
		return ModeSync, nil
	}
	return ModeNone, fmt.Errorf("dtl: mode %q: want none, async or sync", s)
}

// OnLoss says what writes do while a vDisk's DTL cannot be reached.
type OnLoss uint8

// Choices for OnLoss.
const (
	LossDegrade OnLoss = iota // go on locally, marked degraded; catch up later
	LossBlock                 // wait for a DTL
)

// ParseOnLoss parses "degrade" or "block".
func ParseOnLoss(s string) (OnLoss, error) {
	switch s {
	case "degrade", "":
		return LossDegrade, nil
	case "block":
		return LossBlock, nil
	}
	return LossDegrade, fmt.Errorf("dtl: on_loss %q: want degrade or block", s)
}

func (o OnLoss) String() string {
	if o == LossBlock {
		return "block"
	}
	return "degrade"
}

// TEventKind says what happened to one vDisk's DTL stream.
type TEventKind uint8

// Tracker events.
const (
	TWrite        TEventKind = iota + 1 // N entries of a write are ready to ship (ID waits, 0: nobody)
	TFlush                              // a flush (ID waits)
	TConnected                          // a session (Gen) opened the vDisk and got its Have: catch up
	TCaughtUp                           // every lacking entry of the catch-up has been queued
	TAck                                // Ack of LSN on session Gen
	TSynced                             // Synced of LSN on session Gen
	TDisconnected                       // session Gen is gone
	TSetMode                            // Mode changes
	TTrim                               // TLogs through Seq are on the backend
)

// TEvent is one input to Tracker.Step.
type TEvent struct {
	Kind TEventKind
	ID   uint64 // TWrite, TFlush: the waiter to release
	N    int    // TWrite: entries
	Gen  uint64 // session
	LSN  uint64
	Seq  uint32
	Mode Mode
	Now  time.Time
}

// TActionKind says what the driver must do.
type TActionKind uint8

// Tracker actions.
const (
	TSend     TActionKind = iota + 1 // send N entries numbered from LSN on session Gen
	TSendSync                        // send Sync(LSN) on session Gen
	TSendTrim                        // send Trim(Seq) on session Gen
	TCatchUp                         // send what session Gen lacks (per its Have), then step TCaughtUp
	TRelease                         // the waiter ID may return
	TDrop                            // the DTL may forget the vDisk
)

// TAction is one output of Tracker.Step.
type TAction struct {
	Kind TActionKind
	ID   uint64
	N    int
	Gen  uint64
	LSN  uint64
	Seq  uint32
}

// Tracker is one vDisk's side of the DTL protocol, without I/O: it numbers
// entries (LSNs), knows which are held by the DTL, and decides when a
// write or a flush may return.
//
// Entries are numbered in the order they are queued on a session, and a
// session delivers them in order, so an Ack of LSN n on session g says
// that every entry queued on g up to n is held. Entries numbered while no
// session was up are not sent; the next session's catch-up sends them
// from local flash, and a barrier Sync at its end makes everything up to
// it held and synced.
type Tracker struct {
	mode     Mode
	onLoss   OnLoss
	gen      uint64 // the session up (0: none)
	catching bool   // gen is catching up
	barrier  uint64 // the Sync that ends the catch-up
	lostAt   time.Time
	next     uint64 // last LSN handed out
	acked    uint64 // newest Ack on gen
	held     uint64 // every entry up to it is held by the DTL
	synced   uint64 // ... and synced
	trimmed  uint32
	waits    []twait
}

type twait struct {
	id    uint64
	lsn   uint64
	gen   uint64 // session the entries went out on (0: not sent)
	flush bool
}

// NewTracker returns a tracker for a vDisk in mode, with no session yet
// (lost since now).
func NewTracker(mode Mode, onLoss OnLoss, now time.Time) *Tracker {
	return &Tracker{mode: mode, onLoss: onLoss, lostAt: now}
}

// Step applies one event and returns what to do.
func (t *Tracker) Step(ev TEvent) []TAction {
	var acts []TAction
	switch ev.Kind {
	case TWrite:
		lsn := t.next + 1
		t.next += uint64(ev.N)
		var sent uint64
		if t.gen != 0 && t.mode != ModeNone {
			acts = append(acts, TAction{Kind: TSend, Gen: t.gen, LSN: lsn, N: ev.N})
			sent = t.gen
		}
		if ev.ID != 0 {
			t.waits = append(t.waits, twait{id: ev.ID, lsn: t.next, gen: sent})
		}
	case TFlush:
		if t.mode != ModeNone && t.gen != 0 {
			t.next++
			acts = append(acts, TAction{Kind: TSendSync, Gen: t.gen, LSN: t.next})
		}
		t.waits = append(t.waits, twait{id: ev.ID, lsn: t.next, flush: true})
	case TConnected:
		t.gen, t.catching, t.acked, t.barrier = ev.Gen, true, 0, 0
		if t.trimmed > 0 {
			acts = append(acts, TAction{Kind: TSendTrim, Gen: t.gen, Seq: t.trimmed})
		}
		acts = append(acts, TAction{Kind: TCatchUp, Gen: t.gen})
	case TCaughtUp:
		if ev.Gen == t.gen && t.catching {
			t.next++
			t.barrier = t.next
			acts = append(acts, TAction{Kind: TSendSync, Gen: t.gen, LSN: t.barrier})
		}
	case TAck:
		if ev.Gen == t.gen {
			t.acked = max(t.acked, ev.LSN)
			if !t.catching {
				t.held = max(t.held, ev.LSN)
			}
		}
	case TSynced:
		if ev.Gen == t.gen {
			if t.catching && ev.LSN == t.barrier {
				t.catching = false
				t.lostAt = time.Time{}
			}
			if !t.catching {
				t.held = max(t.held, ev.LSN)
				t.synced = max(t.synced, ev.LSN)
			}
		}
	case TDisconnected:
		if ev.Gen == t.gen && t.gen != 0 {
			t.gen, t.catching = 0, false
			if t.lostAt.IsZero() {
				t.lostAt = ev.Now
			}
		}
	case TSetMode:
		if t.mode != ModeNone && ev.Mode == ModeNone {
			acts = append(acts, TAction{Kind: TDrop}) // and the session ends
			t.gen, t.catching = 0, false
		}
		if t.mode == ModeNone && ev.Mode != ModeNone && t.gen != 0 {
			// what was written meanwhile was never sent: catch up
			t.catching, t.acked, t.barrier = true, 0, 0
			acts = append(acts, TAction{Kind: TCatchUp, Gen: t.gen})
		}
		t.mode = ev.Mode
	case TTrim:
		if ev.Seq > t.trimmed {
			t.trimmed = ev.Seq
			if t.gen != 0 {
				acts = append(acts, TAction{Kind: TSendTrim, Gen: t.gen, Seq: ev.Seq})
			}
		}
	}
	return t.release(acts)
}

// release lets go of the waiters whose condition holds.
func (t *Tracker) release(acts []TAction) []TAction {
	keep := t.waits[:0]
	for _, w := range t.waits {
		if t.done(w) {
			acts = append(acts, TAction{Kind: TRelease, ID: w.id})
		} else {
			keep = append(keep, w)
		}
	}
	t.waits = keep
	return acts
}

func (t *Tracker) done(w twait) bool {
	switch {
	case t.mode == ModeNone:
		return true
	case t.gen == 0 && t.onLoss == LossDegrade:
		return true // lost: go on locally
	case w.flush:
		return t.held >= w.lsn && t.synced >= w.lsn
	case t.mode == ModeAsync:
		return true
	}
	return t.held >= w.lsn || w.gen != 0 && w.gen == t.gen && t.acked >= w.lsn
}

// TrackerStatus is what status shows of a stream.
type TrackerStatus struct {
	Mode       Mode
	State      string    // off, ok, catching up, degraded, blocked
	Since      time.Time // degraded or blocked since
	LagEntries uint64    // entries not yet known to be held
	Waiting    int       // writes and flushes waiting for the DTL
}

// Status reports the stream's state.
func (t *Tracker) Status() TrackerStatus {
	s := TrackerStatus{Mode: t.mode, LagEntries: t.next - t.held, Waiting: len(t.waits)}
	switch {
	case t.mode == ModeNone:
		s.State, s.LagEntries = "off", 0
	case t.gen != 0 && !t.catching:
		s.State = "ok"
	case t.gen != 0:
		s.State, s.Since = "catching up", t.lostAt
	case t.onLoss == LossBlock:
		s.State, s.Since = "blocked", t.lostAt
	default:
		s.State, s.Since = "degraded", t.lostAt
	}
	return s
}
