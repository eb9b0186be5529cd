// Package objstoretest is the conformance suite of the backend contract
// (volume/backend.Store): every store (memory, EC over ASDs, S3) runs it
// from its own tests with Run(t, newStore).
//
// It pins what the engine relies on: read-after-write of whole objects and
// of any range, sorted and complete List (across an S3 listing's pages),
// ListDirs, idempotent Delete, ErrNotFound and ErrRange as the engine's
// sentinels, a failed Put leaving the previous object whole, Create
// refusing a taken name, and every call giving up when its context ends.
package objstoretest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"vpool/volume/backend"
)

// NewStore returns an empty store for one subtest; the store's own
// cleanup goes through t.Cleanup.
type NewStore func(t *testing.T) backend.Store

// Options tune the suite to a store's costs.
type Options struct {
	// ListNames is how many objects the complete-listing check writes; 0
	// means 1100, more than one page of an S3 listing (1000 keys).
	ListNames int
}

// Run checks every rule of the contract against fresh stores from mk.
func Run(t *testing.T, mk NewStore, o Options) {
	if o.ListNames == 0 {
		o.ListNames = 1100
	}
	t.Run("ReadAfterWrite", func(t *testing.T) { readAfterWrite(t, mk(t)) })
	t.Run("ReplaceDeleteReuse", func(t *testing.T) { replaceDeleteReuse(t, mk(t)) })
	t.Run("ListComplete", func(t *testing.T) { listComplete(t, mk(t), o.ListNames) })
	t.Run("FailedPutKeepsPrevious", func(t *testing.T) { failedPutKeepsPrevious(t, mk(t)) })
	t.Run("Create", func(t *testing.T) { create(t, mk(t)) })
	t.Run("ContextEnded", func(t *testing.T) { contextEnded(t, mk(t)) })
}

// RandBytes returns n bytes from r.
func RandBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func put(t *testing.T, s backend.Store, name string, data []byte) {
	t.Helper()
	if err := s.Put(context.Background(), name, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatalf("put %s (%d bytes): %v", name, len(data), err)
	}
}

// mustRead checks that name holds exactly data.
func mustRead(t *testing.T, s backend.Store, name string, data []byte) {
	t.Helper()
	ctx := context.Background()
	if n, err := s.Size(ctx, name); err != nil || n != int64(len(data)) {
		t.Fatalf("size of %s = %d, %v; want %d", name, n, err, len(data))
	}
	got := make([]byte, len(data))
	if err := s.GetRange(ctx, name, got, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read %s whole: err %v, bytes equal %v", name, err, bytes.Equal(got, data))
	}
}

func readAfterWrite(t *testing.T, s backend.Store) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(1, 2))
	sizes := []int{0, 1, 4095, 4096, 4097, 8192 * 2, 8192*2 + 1, 100_000, 1 << 20, 3<<20 + 17}
	objs := map[string][]byte{}
	for i, n := range sizes {
		key := fmt.Sprintf("pool/vd%d/sco/%010d", i%3, i)
		objs[key] = RandBytes(r, n)
		put(t, s, key, objs[key])
	}
	for _, key := range slices.Sorted(mapsKeys(objs)) {
		data := objs[key]
		mustRead(t, s, key, data)
		for j := 0; j < 50 && len(data) > 0; j++ {
			off := r.IntN(len(data))
			n := r.IntN(min(len(data)-off, 64<<10) + 1)
			got := make([]byte, n)
			if err := s.GetRange(ctx, key, got, int64(off)); err != nil {
				t.Fatalf("get %s [%d,+%d): %v", key, off, n, err)
			}
			if !bytes.Equal(got, data[off:off+n]) {
				t.Fatalf("get %s [%d,+%d): wrong bytes", key, off, n)
			}
		}
		for _, bad := range [][2]int64{{int64(len(data)) - 1, 2}, {int64(len(data)) + 1, 1}, {-1, 1}} {
			if err := s.GetRange(ctx, key, make([]byte, bad[1]), bad[0]); !errors.Is(err, backend.ErrRange) {
				t.Fatalf("read [%d,+%d) of %s (%d bytes): %v, want ErrRange", bad[0], bad[1], key, len(data), err)
			}
		}
	}
	names, err := s.List(ctx, "pool/vd1/")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"pool/vd1/sco/0000000001", "pool/vd1/sco/0000000004", "pool/vd1/sco/0000000007"}; !slices.Equal(names, want) {
		t.Fatalf("list = %v, want %v", names, want)
	}
	dirs, err := s.ListDirs(ctx, "pool/")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"pool/vd0/", "pool/vd1/", "pool/vd2/"}; !slices.Equal(dirs, want) {
		t.Fatalf("list dirs = %v, want %v", dirs, want)
	}
	if dirs, err := s.ListDirs(ctx, "nothing/"); err != nil || len(dirs) != 0 {
		t.Fatalf("list dirs of an empty prefix = %v, %v", dirs, err)
	}
}

func mapsKeys(m map[string][]byte) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func replaceDeleteReuse(t *testing.T, s backend.Store) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(5, 6))
	key := "p/v/sco/4"
	put(t, s, key, RandBytes(r, 70_000))
	data := RandBytes(r, 3000)
	put(t, s, key, data)
	mustRead(t, s, key, data)
	if err := s.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, key); err != nil {
		t.Fatalf("second delete: %v", err)
	}
	if err := s.Delete(ctx, "p/never/was"); err != nil {
		t.Fatalf("delete of a name never written: %v", err)
	}
	if _, err := s.Size(ctx, key); !errors.Is(err, backend.ErrNotFound) {
		t.Fatalf("size after delete: %v, want ErrNotFound", err)
	}
	if err := s.GetRange(ctx, key, make([]byte, 1), 0); !errors.Is(err, backend.ErrNotFound) {
		t.Fatalf("get after delete: %v, want ErrNotFound", err)
	}
	if names, err := s.List(ctx, "p/"); err != nil || len(names) != 0 {
		t.Fatalf("list after delete = %v, %v", names, err)
	}
	data = RandBytes(r, 5000)
	put(t, s, key, data)
	mustRead(t, s, key, data)
}

func listComplete(t *testing.T, s backend.Store, n int) {
	ctx := context.Background()
	want := make([]string, 0, n)
	for i := range n {
		name := fmt.Sprintf("pool/%016x/tlog/%d", i%7, i)
		put(t, s, name, []byte{byte(i)})
		if i%7 == 3 {
			want = append(want, name)
		}
	}
	put(t, s, "pool2/x", nil) // "pool/" is not its prefix

	slices.Sort(want)
	got, err := s.List(ctx, "pool/0000000000000003/")
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("list of %d names: got %d, %v; first difference at %d", len(want), len(got), err, firstDiff(got, want))
	}
	all, err := s.List(ctx, "pool/")
	if err != nil || len(all) != n || !slices.IsSorted(all) {
		t.Fatalf("list of all: %d names (want %d), sorted %v, %v", len(all), n, slices.IsSorted(all), err)
	}
	dirs, err := s.ListDirs(ctx, "pool/")
	if err != nil || len(dirs) != 7 || dirs[3] != "pool/0000000000000003/" {
		t.Fatalf("list dirs = %v, %v; want the 7 vDisk prefixes", dirs, err)
	}
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// failingReader fails its reads from off on, as a source whose disk
// failed part way through an upload.
type failingReader struct {
	data []byte
	off  int64
}

func (f failingReader) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > f.off {
		return 0, errors.New("source failed")
	}
	return copy(p, f.data[off:]), nil
}

// A Put that fails part way, or whose context ends, leaves the previous
// object of that name readable, whole.
func failedPutKeepsPrevious(t *testing.T, s backend.Store) {
	r := rand.New(rand.NewPCG(3, 4))
	old, nw := RandBytes(r, 100_000), RandBytes(r, 100_000)
	put(t, s, "p/v/sco/1", old)
	if err := s.Put(context.Background(), "p/v/sco/1", failingReader{nw, 60_000}, int64(len(nw))); err == nil {
		t.Fatal("a Put whose source failed succeeded")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Put(ctx, "p/v/sco/1", bytes.NewReader(nw), int64(len(nw))); err == nil {
		t.Fatal("a Put with its context ended succeeded")
	}
	mustRead(t, s, "p/v/sco/1", old)
}

func create(t *testing.T, s backend.Store) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(7, 8))
	first, second := RandBytes(r, 9000), RandBytes(r, 9000)
	if err := s.Create(ctx, "p/v/manifest.1", bytes.NewReader(first), int64(len(first))); err != nil {
		t.Fatalf("create of a new name: %v", err)
	}
	mustRead(t, s, "p/v/manifest.1", first)
	if err := s.Create(ctx, "p/v/manifest.1", bytes.NewReader(second), int64(len(second))); !errors.Is(err, backend.ErrExists) {
		t.Fatalf("create of a taken name: %v, want ErrExists", err)
	}
	mustRead(t, s, "p/v/manifest.1", first)
	if err := s.Delete(ctx, "p/v/manifest.1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(ctx, "p/v/manifest.1", bytes.NewReader(second), int64(len(second))); err != nil {
		t.Fatalf("create after delete: %v", err)
	}
	mustRead(t, s, "p/v/manifest.1", second)
}

// Every call gives up when its context has ended, and says so.
func contextEnded(t *testing.T, s backend.Store) {
	put(t, s, "p/v/sco/1", []byte("data"))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	b := make([]byte, 4)
	for name, err := range map[string]error{
		"Put":      s.Put(ctx, "p/v/sco/2", bytes.NewReader(b), 4),
		"Create":   s.Create(ctx, "p/v/sco/3", bytes.NewReader(b), 4),
		"GetRange": s.GetRange(ctx, "p/v/sco/1", b, 0),
		"Size":     second(s.Size(ctx, "p/v/sco/1")),
		"List":     second(s.List(ctx, "p/")),
		"ListDirs": second(s.ListDirs(ctx, "p/")),
		"Delete":   s.Delete(ctx, "p/v/sco/1"),
	} {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with its context ended: %v, want context.Canceled", name, err)
		}
	}
	if _, err := s.Size(context.Background(), "p/v/sco/2"); !errors.Is(err, backend.ErrNotFound) {
		t.Errorf("a Put with its context ended left an object: %v", err)
	}
	mustRead(t, s, "p/v/sco/1", []byte("data"))
}

func second[T any](_ T, err error) error { return err }
