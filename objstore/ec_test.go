package objstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

func newEC(t *testing.T, n, k, m int, frag int64) (*EC, []string) {
	dirs := tempDirs(t, n)
	s, err := OpenEC(dirs, Preset{Data: k, Parity: m, FragmentSize: frag}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s, dirs
}

func readAll(t *testing.T, s *EC, key string, n int) ([]byte, error) {
	t.Helper()
	got := make([]byte, n)
	err := s.GetRange(context.Background(), key, got, 0)
	return got, err
}

func TestECSurvivesLosingMASDs(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct{ n, k, m int }{{3, 2, 1}, {6, 4, 2}, {20, 16, 4}} {
		s, dirs := newEC(t, tc.n, tc.k, tc.m, 4096)
		r := rand.New(rand.NewPCG(3, 4))
		data := randBytes(r, 300_000)
		if err := s.Put(ctx, "p/v/sco/1", bytes.NewReader(data), int64(len(data))); err != nil {
			t.Fatal(err)
		}
		// lose m ASDs: every read still succeeds, by decoding
		for i := 0; i < tc.m; i++ {
			if err := os.RemoveAll(dirs[i]); err != nil {
				t.Fatal(err)
			}
		}
		fresh, err := OpenEC(dirs, Preset{Data: tc.k, Parity: tc.m, FragmentSize: 4096}, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := readAll(t, fresh, "p/v/sco/1", len(data))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%d+%d with %d ASDs lost: %v", tc.k, tc.m, tc.m, err)
		}
		for j := 0; j < 100; j++ {
			off := r.IntN(len(data))
			n := r.IntN(min(20000, len(data)-off))
			p := make([]byte, n)
			if err := fresh.GetRange(ctx, "p/v/sco/1", p, int64(off)); err != nil || !bytes.Equal(p, data[off:off+n]) {
				t.Fatalf("%d+%d range [%d,+%d) with %d ASDs lost: %v", tc.k, tc.m, off, n, tc.m, err)
			}
		}
		if tc.m > 0 && fresh.RepairedReads() == 0 {
			t.Fatalf("%d+%d: no repaired read reported", tc.k, tc.m)
		}
		// lose one more: a clear error, never wrong data
		if err := os.RemoveAll(dirs[tc.m]); err != nil {
			t.Fatal(err)
		}
		fresh, _ = OpenEC(dirs, Preset{Data: tc.k, Parity: tc.m, FragmentSize: 4096}, nil)
		_, err = readAll(t, fresh, "p/v/sco/1", len(data))
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("%d+%d with %d ASDs lost: err %v, want ErrUnavailable", tc.k, tc.m, tc.m+1, err)
		}
	}
}

func TestECCorruptFragmentIsRepairedNotReturned(t *testing.T) {
	s, dirs := newEC(t, 3, 2, 1, 8192)
	r := rand.New(rand.NewPCG(5, 6))
	data := randBytes(r, 50_000)
	if err := s.Put(context.Background(), "p/v/tlog/1", bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	frags, _ := filepath.Glob(filepath.Join(dirs[0], "objects", "*", "*"))
	if len(frags) == 0 {
		t.Fatal("no fragments on ASD 0")
	}
	for _, f := range frags {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 0x5a // bit rot in the middle of a data block
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	got, err := readAll(t, s, "p/v/tlog/1", len(data))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read with corrupt fragments: %v", err)
	}
	if s.RepairedReads() == 0 {
		t.Fatal("corruption not reported")
	}
	// corrupt a second ASD's copy of the same stripes: detected, not returned
	frags1, _ := filepath.Glob(filepath.Join(dirs[1], "objects", "*", "*"))
	for _, f := range frags1 {
		b, _ := os.ReadFile(f)
		for i := headerSize; i < len(b); i += 1000 {
			b[i] ^= 1
		}
		os.WriteFile(f, b, 0o600)
	}
	if _, err := readAll(t, s, "p/v/tlog/1", len(data)); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("two corrupt fragments per stripe with m=1: err %v, want ErrUnavailable", err)
	}
}

func TestECStaleFragmentIgnored(t *testing.T) {
	ctx := context.Background()
	s, dirs := newEC(t, 3, 2, 1, 4096)
	old := bytes.Repeat([]byte{1}, 10000)
	if err := s.Put(ctx, "o", bytes.NewReader(old), int64(len(old))); err != nil {
		t.Fatal(err)
	}
	// ASD 0 is away during delete + re-put: keep a copy of its fragments
	saved := filepath.Join(t.TempDir(), "saved")
	if err := os.Rename(dirs[0], saved); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "o"); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(dirs[0], "objects"), 0o700)
	nw := bytes.Repeat([]byte{2}, 10000)
	if err := s.Put(ctx, "o", bytes.NewReader(nw), int64(len(nw))); err != nil {
		t.Fatal(err)
	}
	// the old fragments come back over the new ones on ASD 0
	os.RemoveAll(dirs[0])
	os.Rename(saved, dirs[0])
	fresh, _ := OpenEC(dirs, Preset{Data: 2, Parity: 1, FragmentSize: 4096}, nil)
	got, err := readAll(t, fresh, "o", len(nw))
	if err != nil || !bytes.Equal(got, nw) {
		t.Fatalf("read with a stale fragment: %v (first byte %d)", err, got[0])
	}
}

func TestPresetErrorsNameTheValue(t *testing.T) {
	for _, tc := range []struct {
		p    Preset
		asds int
		want string
	}{
		{Preset{Data: 16, Parity: 4, FragmentSize: 4 << 20}, 3, "k+m=16+4=20 fragments need as many ASDs, have 3"},
		{Preset{Data: 0, Parity: 1, FragmentSize: 4096}, 3, "k=0"},
		{Preset{Data: 2, Parity: 1, FragmentSize: 100}, 3, "fragment size 100"},
	} {
		_, err := OpenEC(tempDirs(t, tc.asds), tc.p, nil)
		if !errors.Is(err, ErrBadPreset) || !bytes.Contains([]byte(err.Error()), []byte(tc.want)) {
			t.Errorf("preset %+v over %d ASDs: %v, want %q", tc.p, tc.asds, err, tc.want)
		}
	}
}

// Fragment files are written with O_DIRECT, padded and cut back: every
// length reads back exactly, from aligned and unaligned buffers.
func TestWriteFragmentFileLengths(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []int64{1, 64, 4095, 4096, 4097, 100003, 1 << 20} {
		for _, aligned := range []bool{true, false} {
			var b []byte
			if aligned {
				b = alignedBuffer(n)
			} else {
				b = make([]byte, n+1)[1:]
			}
			for i := range b {
				b[i] = byte(i*7 + int(n))
			}
			p := filepath.Join(dir, fmt.Sprintf("f-%d-%v", n, aligned))
			if err := writeFragmentFile(p, b); err != nil {
				t.Fatalf("%d bytes (aligned %v): %v", n, aligned, err)
			}
			got, err := os.ReadFile(p)
			if err != nil || !bytes.Equal(got, b) {
				t.Fatalf("%d bytes (aligned %v): read back %d bytes, equal %v, %v", n, aligned, len(got), bytes.Equal(got, b), err)
			}
		}
	}
}

// A Put stopped at any rename of its switch leaves exactly one whole
// version readable, the old one up to some point and the new one after,
// never an error (a fresh store, with nothing cached, reads it).
func TestECPutStoppedAtAnyStepLeavesOneVersion(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct{ n, k, m int }{{3, 2, 1}, {7, 4, 2}} {
		old := bytes.Repeat([]byte{1}, 50000)
		nw := bytes.Repeat([]byte{2}, 50000)
		sawNew := false
		for stop := 0; ; stop++ {
			s, dirs := newEC(t, tc.n, tc.k, tc.m, 4096)
			if err := s.Put(ctx, "o", bytes.NewReader(old), int64(len(old))); err != nil {
				t.Fatal(err)
			}
			calls := 0
			putStepHook = func(string) error {
				calls++
				if calls > stop {
					return errors.New("crash")
				}
				return nil
			}
			err := s.Put(ctx, "o", bytes.NewReader(nw), int64(len(nw)))
			putStepHook = nil
			fresh, _ := OpenEC(dirs, Preset{Data: tc.k, Parity: tc.m, FragmentSize: 4096}, nil)
			got, rerr := readAll(t, fresh, "o", len(nw))
			switch {
			case rerr != nil:
				t.Fatalf("%d+%d stopped before rename %d: read: %v", tc.k, tc.m, stop, rerr)
			case bytes.Equal(got, nw):
				sawNew = true
			case bytes.Equal(got, old) && !sawNew:
			default:
				t.Fatalf("%d+%d stopped before rename %d: neither version whole, or back to the old one", tc.k, tc.m, stop)
			}
			if err == nil {
				if !sawNew {
					t.Fatal("a finished Put reads the old version")
				}
				break
			}
		}
	}
}

// A Put that would leave less than the reserve free on an ASD's
// filesystem is refused (ErrNoSpace), and the previous object stays.
func TestECPutKeepsTheReserve(t *testing.T) {
	ctx := context.Background()
	s, _ := newEC(t, 3, 2, 1, 4096)
	old := bytes.Repeat([]byte{1}, 10000)
	if err := s.Put(ctx, "o", bytes.NewReader(old), int64(len(old))); err != nil {
		t.Fatal(err)
	}
	s.SetReserve(1 << 62)
	if err := s.Put(ctx, "o", bytes.NewReader(old[:5000]), 5000); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("put past the reserve: %v", err)
	}
	if got, err := readAll(t, s, "o", len(old)); err != nil || !bytes.Equal(got, old) {
		t.Fatalf("previous object after a refused put: %v", err)
	}
	s.SetReserve(0)
	if err := s.Put(ctx, "p", bytes.NewReader(old), int64(len(old))); err != nil {
		t.Fatal(err)
	}
}
