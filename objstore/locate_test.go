package objstore

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// Objects stay readable, whole, through any change of the ASD list or the
// preset: an ASD added, the list reordered, the preset changed, the added
// ASD dropped again (a lost ASD: parity covers it). Each step opens a new
// store, as a restart with the new configuration does.
func TestPlacementSurvivesConfigChanges(t *testing.T) {
	dirs := tempDirs(t, 5)
	r := rand.New(rand.NewPCG(9, 9))
	want := map[string][]byte{}
	check := func(step string, s *EC) {
		t.Helper()
		for name, data := range want {
			got := make([]byte, len(data))
			if err := s.GetRange(context.Background(), name, got, 0); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("%s: %s reads wrong: %v", step, name, err)
			}
		}
	}
	for i, step := range []struct {
		name   string
		asds   []string
		preset Preset
	}{
		{"2+1 over 3 ASDs", dirs[:3], Preset{Data: 2, Parity: 1, FragmentSize: 8192}},
		{"a fourth ASD added", dirs[:4], Preset{Data: 2, Parity: 1, FragmentSize: 8192}},
		{"the list reordered", []string{dirs[3], dirs[1], dirs[0], dirs[2]}, Preset{Data: 2, Parity: 1, FragmentSize: 8192}},
		{"preset 2+1 to 2+0", dirs[:4], Preset{Data: 2, Parity: 0, FragmentSize: 4096}},
		{"preset 3+1 over 5", dirs[:5], Preset{Data: 3, Parity: 1, FragmentSize: 16384}},
	} {
		s, err := OpenEC(step.asds, step.preset, nil)
		if err != nil {
			t.Fatal(err)
		}
		check(step.name+" (before writing)", s)
		for j := range 6 {
			name := fmt.Sprintf("p/v/sco/%d", i*10+j)
			want[name] = randBytes(r, 1+r.IntN(100_000))
			if err := s.Put(context.Background(), name, bytes.NewReader(want[name]), int64(len(want[name]))); err != nil {
				t.Fatal(err)
			}
		}
		check(step.name, s)
	}
	// Back to 2+1 over the first three: every object written with parity
	// survives losing ASDs 3 and 4 only where it lost at most m fragments
	// of a stripe; the 2+0 and 3+1 ones written over them do not, and say
	// so (never wrong data).
	s, err := OpenEC(dirs[:3], Preset{Data: 2, Parity: 1, FragmentSize: 8192}, nil)
	if err != nil {
		t.Fatal(err)
	}
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range want {
			if !yield(n) {
				return
			}
		}
	})
	for _, name := range names {
		data := want[name]
		got := make([]byte, len(data))
		err := s.GetRange(context.Background(), name, got, 0)
		if err == nil && !bytes.Equal(got, data) {
			t.Fatalf("back to 3 ASDs: %s reads wrong data", name)
		}
		var seq int
		fmt.Sscanf(name, "p/v/sco/%d", &seq)
		if seq < 30 && err != nil { // written with parity over at most one ASD now gone
			t.Fatalf("back to 3 ASDs: %s (2+1) unreadable: %v", name, err)
		}
	}
}

// A stale fragment of an older version, left on an ASD that was away
// during a Delete, is never read as the new object's.
func TestStaleFragmentElsewhereIgnored(t *testing.T) {
	dirs := tempDirs(t, 4)
	p := Preset{Data: 2, Parity: 1, FragmentSize: 8192}
	s, _ := OpenEC(dirs[:3], p, nil)
	r := rand.New(rand.NewPCG(1, 7))
	old, nw := randBytes(r, 20_000), randBytes(r, 20_000)
	ctx := context.Background()
	if err := s.Put(ctx, "o", bytes.NewReader(old), int64(len(old))); err != nil {
		t.Fatal(err)
	}
	// the old version's fragments also sit on a fourth ASD, as if the
	// object had been written under another list and not deleted there
	copyDir(t, s.objDir(0, "o"), filepath4(dirs[3], "o"))
	if err := s.Put(ctx, "o", bytes.NewReader(nw), int64(len(nw))); err != nil {
		t.Fatal(err)
	}
	s4, _ := OpenEC(dirs, p, nil)
	got := make([]byte, len(nw))
	if err := s4.GetRange(ctx, "o", got, 0); err != nil || !bytes.Equal(got, nw) {
		t.Fatalf("new version with stale fragments elsewhere: %v", err)
	}
}

func filepath4(asd, name string) string { return filepath.Join(asd, "objects", url.PathEscape(name)) }

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	if err := os.MkdirAll(to, 0o700); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}
