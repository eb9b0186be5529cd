package flashcache

import (
	"context"
	"errors"
	"testing"

	"vpool/vfs"
)

// With the flash filesystem within the reserve, a new SCO is refused and
// a writer that would wait for room fails (ErrFull) instead of waiting
// for uploads that cannot come; when space returns, both go on.
func TestReserveRefusesNewSCOsAndHopelessWaits(t *testing.T) {
	fs := vfs.NewMem()
	w, err := NewWriteBuffer(fs, "/wb", 16<<20)
	if err != nil {
		t.Fatal(err)
	}
	w.SetReserve(256 << 20)
	w.Register(1)
	fs.SetFreeForTesting(260 << 20) // room for less than one 8 MiB SCO above the reserve
	if _, err := w.CreateSCO(1, 1, 8<<20); !errors.Is(err, ErrFull) {
		t.Fatalf("new SCO within the reserve: %v", err)
	}
	if st := w.Stats(); !st.FlashLow || st.FlashFreeBytes != 260<<20 {
		t.Fatalf("stats: %+v", st)
	}
	if err := w.Reserve(context.Background(), 1, 16<<20); err != nil { // up to the limit: no wait
		t.Fatal(err)
	}
	if err := w.Reserve(context.Background(), 1, 1<<20); !errors.Is(err, ErrFull) {
		t.Fatalf("a writer that would wait while flash is full: %v", err)
	}
	fs.SetFreeForTesting(1 << 30)
	if f, err := w.CreateSCO(1, 1, 8<<20); err != nil {
		t.Fatalf("new SCO with room again: %v", err)
	} else {
		f.Close()
	}
	if st := w.Stats(); st.FlashLow {
		t.Fatal("still low with room again")
	}
	w.Release(1, 16<<20)
	if err := w.Reserve(context.Background(), 1, 1<<20); err != nil {
		t.Fatal(err)
	}
}
