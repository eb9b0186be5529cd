package dtl

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func tkinds(acts []TAction) string {
	var s []string
	for _, a := range acts {
		switch a.Kind {
		case TSend:
			s = append(s, fmt.Sprintf("send:%d+%d", a.LSN, a.N))
		case TSendSync:
			s = append(s, fmt.Sprintf("sync:%d", a.LSN))
		case TSendTrim:
			s = append(s, fmt.Sprintf("trim:%d", a.Seq))
		case TCatchUp:
			s = append(s, "catch-up")
		case TRelease:
			s = append(s, fmt.Sprintf("release:%d", a.ID))
		case TDrop:
			s = append(s, "drop")
		}
	}
	return strings.Join(s, " ")
}

type tstep struct {
	ev    TEvent
	want  string
	state string
}

func runTracker(t *testing.T, tr *Tracker, steps []tstep) {
	t.Helper()
	for i, s := range steps {
		got := tkinds(tr.Step(s.ev))
		if got != s.want {
			t.Fatalf("step %d (event %d): %q, want %q", i, s.ev.Kind, got, s.want)
		}
		if s.state != "" && tr.Status().State != s.state {
			t.Fatalf("step %d: state %q, want %q", i, tr.Status().State, s.state)
		}
	}
}

var t0 = time.Unix(1000, 0)

// Sync mode, degrade on loss: writes wait for their Ack; a lost session
// lets them go; the catch-up's barrier makes the backlog held.
func TestTrackerSyncDegrade(t *testing.T) {
	tr := NewTracker(ModeSync, LossDegrade, t0)
	runTracker(t, tr, []tstep{
		{TEvent{Kind: TWrite, ID: 1, N: 1}, "release:1", "degraded"}, // no session yet: local only
		{TEvent{Kind: TConnected, Gen: 7}, "catch-up", "catching up"},
		{TEvent{Kind: TWrite, ID: 2, N: 2}, "send:2+2", ""},
		{TEvent{Kind: TAck, Gen: 7, LSN: 2}, "", ""},
		{TEvent{Kind: TAck, Gen: 7, LSN: 3}, "release:2", "catching up"}, // its own ack, during catch-up
		{TEvent{Kind: TWrite, N: 1}, "send:4+1", ""},                     // a catch-up entry
		{TEvent{Kind: TCaughtUp, Gen: 7}, "sync:5", ""},
		{TEvent{Kind: TFlush, ID: 3}, "sync:6", ""},
		{TEvent{Kind: TSynced, Gen: 7, LSN: 5}, "", "ok"},
		{TEvent{Kind: TSynced, Gen: 7, LSN: 6}, "release:3", "ok"},
		{TEvent{Kind: TWrite, ID: 4, N: 1}, "send:7+1", ""},
		{TEvent{Kind: TAck, Gen: 6, LSN: 7}, "", ""}, // an old session's: ignored
		{TEvent{Kind: TDisconnected, Gen: 7, Now: t0.Add(time.Second)}, "release:4", "degraded"},
		{TEvent{Kind: TTrim, Seq: 3}, "", ""},
		{TEvent{Kind: TConnected, Gen: 8}, "trim:3 catch-up", "catching up"},
	})
	if st := tr.Status(); !st.Since.Equal(t0.Add(time.Second)) {
		t.Fatalf("lost since %v", st.Since)
	}
}

// Sync mode, block on loss: a write sent before the loss waits for the
// next session's catch-up to finish.
func TestTrackerSyncBlock(t *testing.T) {
	tr := NewTracker(ModeSync, LossBlock, t0)
	runTracker(t, tr, []tstep{
		{TEvent{Kind: TWrite, ID: 1, N: 1}, "", "blocked"},
		{TEvent{Kind: TConnected, Gen: 1}, "catch-up", "catching up"},
		{TEvent{Kind: TWrite, N: 1}, "send:2+1", ""}, // catch-up sends write 1's entry again
		{TEvent{Kind: TWrite, ID: 2, N: 1}, "send:3+1", ""},
		{TEvent{Kind: TAck, Gen: 1, LSN: 3}, "release:2", ""},
		{TEvent{Kind: TDisconnected, Gen: 1, Now: t0}, "", "blocked"},
		{TEvent{Kind: TFlush, ID: 3}, "", "blocked"},
		{TEvent{Kind: TConnected, Gen: 2}, "catch-up", ""},
		{TEvent{Kind: TCaughtUp, Gen: 1}, "", ""}, // the old session's
		{TEvent{Kind: TCaughtUp, Gen: 2}, "sync:4", ""},
		{TEvent{Kind: TSynced, Gen: 2, LSN: 4}, "release:1 release:3", "ok"},
	})
}

// Async mode: writes never wait; a flush waits for everything before it
// to be held and synced.
func TestTrackerAsync(t *testing.T) {
	tr := NewTracker(ModeAsync, LossBlock, t0)
	runTracker(t, tr, []tstep{
		{TEvent{Kind: TConnected, Gen: 1}, "catch-up", ""},
		{TEvent{Kind: TCaughtUp, Gen: 1}, "sync:1", ""},
		{TEvent{Kind: TSynced, Gen: 1, LSN: 1}, "", "ok"},
		{TEvent{Kind: TWrite, ID: 1, N: 3}, "send:2+3 release:1", ""},
		{TEvent{Kind: TFlush, ID: 2}, "sync:5", ""},
		{TEvent{Kind: TAck, Gen: 1, LSN: 4}, "", ""},
		{TEvent{Kind: TSynced, Gen: 1, LSN: 5}, "release:2", "ok"},
		{TEvent{Kind: TSetMode, Mode: ModeNone}, "drop", "off"},
		{TEvent{Kind: TFlush, ID: 3}, "release:3", ""},
		{TEvent{Kind: TWrite, ID: 4, N: 1}, "release:4", ""},
		{TEvent{Kind: TSetMode, Mode: ModeAsync}, "", "blocked"},
		{TEvent{Kind: TConnected, Gen: 2}, "catch-up", "catching up"},
	})
}
