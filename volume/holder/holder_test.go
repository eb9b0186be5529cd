package holder

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"vpool/objstore"
)

var bg = context.Background()

func me(id, host string) Record {
	return Record{ID: id, Host: host, DataDir: "/var/lib/" + host, PID: 1}
}

// The lifecycle step by step: claim, restart, refuse, take over, fence,
// release, claim after a release.
func TestHolderLifecycle(t *testing.T) {
	store := objstore.NewMem()
	a := New(store, "vp", me("a", "hostA"))
	guarded := a.Guard(store)
	if err := guarded.Put(bg, "vp/x/sco/1", bytes.NewReader(nil), 0); !errors.Is(err, ErrNotClaimed) {
		t.Fatalf("put before the claim: %v", err)
	}
	prev, err := a.Claim(bg, false)
	if err != nil || prev != nil || a.Epoch() != 1 || !a.Claimed() {
		t.Fatalf("first claim: epoch %d, prev %v, %v", a.Epoch(), prev, err)
	}
	if _, err := New(store, "vp", me("a", "hostA")).Claim(bg, false); err != nil {
		t.Fatalf("restart of the holder: %v", err)
	}
	b := New(store, "vp", me("b", "hostB"))
	cur, err := b.Claim(bg, false)
	if !errors.Is(err, ErrHeld) || cur == nil || cur.ID != "a" || !strings.Contains(err.Error(), "hostA (data dir /var/lib/hostA") ||
		!strings.Contains(err.Error(), "--takeover") {
		t.Fatalf("a second daemon: %v", err)
	}
	if err := a.Check(bg); err != nil {
		t.Fatalf("holder's check before a takeover: %v", err)
	}
	if _, err := b.Claim(bg, true); err != nil || b.Epoch() != 2 {
		t.Fatalf("takeover: %v", err)
	}
	// the old holder's next manifest finds it out, and then nothing goes
	if err := guarded.Create(bg, "vp/x/manifest.1", bytes.NewReader(nil), 0); !errors.Is(err, ErrFenced) || !strings.Contains(err.Error(), "hostB") {
		t.Fatalf("fenced holder's create: %v", err)
	}
	if err := guarded.Put(bg, "vp/x/sco/1", bytes.NewReader(nil), 0); !errors.Is(err, ErrFenced) {
		t.Fatalf("fenced holder's put: %v", err)
	}
	if err := guarded.Delete(bg, "vp/x/sco/1"); !errors.Is(err, ErrFenced) {
		t.Fatalf("fenced holder's delete: %v", err)
	}
	if _, err := store.Size(bg, "vp/x/manifest.1"); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatal("a fenced holder wrote")
	}
	if err := a.Release(bg); err != nil { // not its to release
		t.Fatal(err)
	}
	if _, err := New(store, "vp", me("a", "hostA")).Claim(bg, false); !errors.Is(err, ErrHeld) {
		t.Fatalf("the old holder restarted: %v, want held by hostB", err)
	}
	if err := b.Release(bg); err != nil {
		t.Fatal(err)
	}
	c := New(store, "vp", me("c", "hostC"))
	prev, err = c.Claim(bg, false)
	if err != nil || c.Epoch() != 4 || prev == nil || !prev.Released {
		t.Fatalf("claim after a release: %v (prev %+v)", err, prev)
	}
	names, _ := store.List(bg, "vp/holder.")
	if len(names) > 2 {
		t.Fatalf("old records kept: %v", names)
	}
}

// Two daemons claiming one free backend at once: exactly one wins.
func TestHolderRace(t *testing.T) {
	for range 20 {
		store := objstore.NewMem()
		errs := make(chan error, 2)
		for _, id := range []string{"a", "b"} {
			go func() {
				_, err := New(store, "vp", me(id, "host"+id)).Claim(bg, false)
				errs <- err
			}()
		}
		e1, e2 := <-errs, <-errs
		if (e1 == nil) == (e2 == nil) {
			t.Fatalf("both or neither claimed: %v / %v", e1, e2)
		}
	}
}

func TestID(t *testing.T) {
	dir := t.TempDir()
	id, err := ID(dir)
	if err != nil || len(id) != 32 {
		t.Fatalf("%q %v", id, err)
	}
	if again, err := ID(dir); err != nil || again != id {
		t.Fatalf("second read: %q %v", again, err)
	}
}
