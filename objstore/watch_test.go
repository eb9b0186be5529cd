package objstore

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"vpool/objstore/objstoretest"
	"vpool/volume/backend"
)

func TestWatchedConformance(t *testing.T) {
	objstoretest.Run(t, func(t *testing.T) backend.Store { return Watch(NewMem()) }, objstoretest.Options{})
}

// A store failing every request is failing since the first failure, with
// the last error; "not found" is an answer, and one answer ends the run.
func TestWatchedHealth(t *testing.T) {
	m := NewMem()
	w := Watch(m)
	ctx := context.Background()
	if _, err := w.Size(ctx, "missing"); !errors.Is(err, ErrNotFound) || !w.Health().OK {
		t.Fatalf("not found: %v, health %+v", err, w.Health())
	}
	m.SetFailForTesting(errors.New("connection refused"))
	w.Put(ctx, "a", bytes.NewReader(nil), 0)
	first := w.Health()
	if first.OK || first.FailingSince.IsZero() || first.LastError != "connection refused" || first.Failures != 1 {
		t.Fatalf("after a failure: %+v", first)
	}
	w.List(ctx, "")
	if h := w.Health(); h.FailingSince != first.FailingSince || h.Failures != 2 {
		t.Fatalf("after a second failure: %+v (the run began at the first)", h)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	m.SetFailForTesting(nil)
	w.Size(cctx, "a")
	if w.Health().OK {
		t.Fatal("a request its caller gave up counted as an answer")
	}
	w.Size(ctx, "a")
	if h := w.Health(); !h.OK || h.Failures != 2 {
		t.Fatalf("after an answer: %+v", h)
	}
}
