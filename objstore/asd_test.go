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

func put(t *testing.T, s *EC, name string, data []byte) {
	t.Helper()
	if err := s.Put(context.Background(), name, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatalf("put %s: %v", name, err)
	}
}

func mustReadEC(t *testing.T, s *EC, name string, data []byte) {
	t.Helper()
	got := make([]byte, len(data))
	if err := s.GetRange(context.Background(), name, got, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read %s: %v", name, err)
	}
}

func countFiles(t *testing.T, dir string) int {
	n := 0
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n++
		}
		return nil
	})
	return n
}

// An ASD whose disk is not mounted (an empty directory in its place) is
// never written to: new objects go to the others, with less redundancy
// and saying so, and every object reads; once the disk is back, it is
// used again and old and new objects read whole.
func TestASDNotMountedIsNeverWritten(t *testing.T) {
	dirs := tempDirs(t, 3)
	p := Preset{Data: 2, Parity: 1, FragmentSize: 8192}
	s, err := OpenEC(dirs, p, nil)
	if err != nil {
		t.Fatal(err)
	}
	pool := s.PoolID()
	r := rand.New(rand.NewPCG(2, 3))
	want := map[string][]byte{}
	for i := range 5 {
		name := fmt.Sprintf("p/v/sco/%d", i)
		want[name] = randBytes(r, 50_000)
		put(t, s, name, want[name])
	}
	// the disk of ASD 2 is not mounted: an empty directory in its place
	if err := os.Rename(dirs[2], dirs[2]+".disk"); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(dirs[2], 0o700)
	s, err = OpenECPool(dirs, p, pool, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.asds.every = 0
	if st := s.state(2); st != ASDMissing {
		t.Fatalf("ASD without identity: %s, want missing", st)
	}
	for i := 5; i < 10; i++ {
		name := fmt.Sprintf("p/v/sco/%d", i)
		want[name] = randBytes(r, 50_000)
		put(t, s, name, want[name])
	}
	if n := countFiles(t, dirs[2]); n != 0 {
		t.Fatalf("%d files written into the empty mount point", n)
	}
	if s.DegradedPuts() != 5 {
		t.Fatalf("degraded puts %d, want 5", s.DegradedPuts())
	}
	for name, data := range want {
		mustReadEC(t, s, name, data)
	}
	// the disk is mounted again
	os.Remove(dirs[2])
	if err := os.Rename(dirs[2]+".disk", dirs[2]); err != nil {
		t.Fatal(err)
	}
	if st := s.ASDs()[2].State; st != ASDOK {
		t.Fatalf("ASD back: %s", st)
	}
	put(t, s, "p/v/sco/10", want["p/v/sco/0"])
	if s.DegradedPuts() != 5 {
		t.Fatal("a put with every ASD back was degraded")
	}
	fresh, _ := OpenECPool(dirs, p, pool, nil)
	for name, data := range want {
		mustReadEC(t, fresh, name, data)
	}
}

// putRetrying puts as the uploader does: a failed Put is tried again.
func putRetrying(t *testing.T, s *EC, name string, data []byte) {
	t.Helper()
	var err error
	for attempt := 0; attempt < 4; attempt++ {
		if err = s.Put(context.Background(), name, bytes.NewReader(data), int64(len(data))); err == nil {
			return
		}
		if !errors.Is(err, ErrNoASD) {
			t.Fatalf("put %s: %v", name, err)
		}
	}
	t.Fatalf("put %s never went around the failing ASD: %v", name, err)
}

// An ASD that fails writes is left out of the next Put (the uploader's
// retry), and one of another pool is never used.
func TestFailingAndForeignASDs(t *testing.T) {
	dirs := tempDirs(t, 4)
	p := Preset{Data: 2, Parity: 1, FragmentSize: 8192}
	s, err := OpenEC(dirs, p, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.asds.every = 1 << 62 // no look again during the test
	// ASD 1 fails every write: its objects directory is a file
	os.RemoveAll(filepath.Join(dirs[1], "objects"))
	os.WriteFile(filepath.Join(dirs[1], "objects"), nil, 0o600)
	data := randBytes(rand.New(rand.NewPCG(1, 1)), 40_000)
	putRetrying(t, s, "o", data)
	if st := s.state(1); st != ASDFailing {
		t.Fatalf("failing ASD: %s", st)
	}
	mustReadEC(t, s, "o", data)
	if s.DegradedPuts() != 0 {
		t.Fatal("three ASDs left for 2+1, and the put was degraded")
	}

	// another pool's disk in the list
	other := tempDirs(t, 1)
	if _, err := OpenEC(other, Preset{Data: 1, FragmentSize: 4096}, nil); err != nil {
		t.Fatal(err)
	}
	mixed := append(append([]string(nil), dirs[:3]...), other[0])
	if _, err := OpenEC(mixed, p, nil); !errors.Is(err, ErrForeignASD) {
		t.Fatalf("ASDs of two pools with no pool known: %v", err)
	}
	s2, err := OpenECPool(mixed, p, s.PoolID(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if st := s2.state(3); st != ASDForeign {
		t.Fatalf("another pool's ASD: %s", st)
	}
	before := countFiles(t, other[0])
	putRetrying(t, s2, "o2", data)
	if countFiles(t, other[0]) != before {
		t.Fatal("a fragment went to another pool's ASD")
	}
	if err := s2.Join(other[0]); !errors.Is(err, ErrForeignASD) {
		t.Fatalf("join of another pool's ASD: %v", err)
	}
}

// Join makes a new empty directory of the list an ASD; one holding
// objects without an identity is refused.
func TestJoin(t *testing.T) {
	dirs := tempDirs(t, 3)
	p := Preset{Data: 2, Parity: 1, FragmentSize: 8192}
	s, _ := OpenEC(dirs, p, nil)
	pool := s.PoolID()
	put(t, s, "o", randBytes(rand.New(rand.NewPCG(4, 4)), 30_000))
	os.RemoveAll(dirs[2]) // a failed disk, replaced by a new one
	os.Mkdir(dirs[2], 0o700)
	s, _ = OpenECPool(dirs, p, pool, nil)
	if s.state(2) != ASDMissing {
		t.Fatal("new disk used before it joined")
	}
	if err := s.Join("/elsewhere"); err == nil {
		t.Fatal("joined a directory not in the list")
	}
	if err := s.Join(dirs[2]); err != nil {
		t.Fatal(err)
	}
	if s.state(2) != ASDOK {
		t.Fatalf("joined ASD: %s", s.state(2))
	}
	os.Remove(filepath.Join(dirs[1], identityFile))
	s, _ = OpenECPool(dirs, p, pool, nil)
	if err := s.Join(dirs[1]); err == nil {
		t.Fatal("joined a directory holding objects without an identity")
	}
}
