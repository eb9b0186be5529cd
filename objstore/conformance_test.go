package objstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
)

// store is the contract every backend keeps; the conformance suite runs
// against each implementation.
type store interface {
	Put(ctx context.Context, name string, src io.ReaderAt, size int64) error
	GetRange(ctx context.Context, name string, p []byte, off int64) error
	Size(ctx context.Context, name string) (int64, error)
	Delete(ctx context.Context, name string) error
	List(ctx context.Context, prefix string) ([]string, error)
	Usage(ctx context.Context) (Usage, error)
}

func implementations(t *testing.T) map[string]func(t *testing.T) store {
	return map[string]func(t *testing.T) store{
		"mem": func(t *testing.T) store { return NewMem() },
		"ec-2+1": func(t *testing.T) store {
			s, err := OpenEC(tempDirs(t, 3), Preset{Data: 2, Parity: 1, FragmentSize: 8192}, nil)
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		"ec-4+2-over-7": func(t *testing.T) store {
			s, err := OpenEC(tempDirs(t, 7), Preset{Data: 4, Parity: 2, FragmentSize: 4096}, nil)
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		"ec-1+0": func(t *testing.T) store {
			s, err := OpenEC(tempDirs(t, 1), Preset{Data: 1, Parity: 0, FragmentSize: 1 << 20}, nil)
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
	}
}

func tempDirs(t *testing.T, n int) []string {
	base := t.TempDir()
	dirs := make([]string, n)
	for i := range dirs {
		dirs[i] = fmt.Sprintf("%s/asd%d", base, i)
	}
	return dirs
}

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestConformance(t *testing.T) {
	ctx := context.Background()
	for name, mk := range implementations(t) {
		t.Run(name, func(t *testing.T) {
			s := mk(t)
			r := rand.New(rand.NewPCG(1, 2))
			sizes := []int{0, 1, 4095, 4096, 4097, 8192 * 2, 8192*2 + 1, 100_000, 1 << 20}
			objs := map[string][]byte{}
			for i, n := range sizes {
				data := randBytes(r, n)
				key := fmt.Sprintf("pool/vd%d/sco/%010d", i%3, i)
				if err := s.Put(ctx, key, bytes.NewReader(data), int64(n)); err != nil {
					t.Fatalf("put %s: %v", key, err)
				}
				objs[key] = data
			}
			for key, data := range objs {
				if sz, err := s.Size(ctx, key); err != nil || sz != int64(len(data)) {
					t.Fatalf("size %s = %d, %v; want %d", key, sz, err, len(data))
				}
				// whole object, then random ranges
				got := make([]byte, len(data))
				if err := s.GetRange(ctx, key, got, 0); err != nil || !bytes.Equal(got, data) {
					t.Fatalf("get %s whole: %v", key, err)
				}
				for j := 0; j < 50 && len(data) > 0; j++ {
					off := r.IntN(len(data))
					n := r.IntN(len(data) - off + 1)
					got := make([]byte, n)
					if err := s.GetRange(ctx, key, got, int64(off)); err != nil {
						t.Fatalf("get %s [%d,+%d): %v", key, off, n, err)
					}
					if !bytes.Equal(got, data[off:off+n]) {
						t.Fatalf("get %s [%d,+%d): wrong bytes", key, off, n)
					}
				}
				if err := s.GetRange(ctx, key, make([]byte, 2), int64(len(data))-1); !errors.Is(err, ErrRange) {
					t.Fatalf("read past end of %s: %v, want ErrRange", key, err)
				}
			}
			names, err := s.List(ctx, "pool/vd1/")
			if err != nil {
				t.Fatal(err)
			}
			if want := []string{"pool/vd1/sco/0000000001", "pool/vd1/sco/0000000004", "pool/vd1/sco/0000000007"}; fmt.Sprint(names) != fmt.Sprint(want) {
				t.Fatalf("list = %v, want %v", names, want)
			}
			// replace, delete, reuse a name
			key := "pool/vd1/sco/0000000004"
			data := randBytes(r, 3000)
			if err := s.Put(ctx, key, bytes.NewReader(data), 3000); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, 3000)
			if err := s.GetRange(ctx, key, got, 0); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("replaced object reads wrong: %v", err)
			}
			if err := s.Delete(ctx, key); err != nil {
				t.Fatal(err)
			}
			if err := s.Delete(ctx, key); err != nil {
				t.Fatalf("second delete: %v", err)
			}
			if _, err := s.Size(ctx, key); !errors.Is(err, ErrNotFound) {
				t.Fatalf("size after delete: %v, want ErrNotFound", err)
			}
			if err := s.GetRange(ctx, key, got[:1], 0); !errors.Is(err, ErrNotFound) {
				t.Fatalf("get after delete: %v, want ErrNotFound", err)
			}
			if u, err := s.Usage(ctx); err != nil || u.TotalBytes == 0 || u.DataFraction <= 0 {
				t.Fatalf("usage = %+v, %v", u, err)
			}
		})
	}
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
func TestConformancePutFailureKeepsThePreviousObject(t *testing.T) {
	for name, mk := range implementations(t) {
		t.Run(name, func(t *testing.T) {
			s := mk(t)
			r := rand.New(rand.NewPCG(3, 4))
			old, nw := randBytes(r, 100_000), randBytes(r, 100_000)
			if err := s.Put(context.Background(), "p/v/sco/1", bytes.NewReader(old), int64(len(old))); err != nil {
				t.Fatal(err)
			}
			if err := s.Put(context.Background(), "p/v/sco/1", failingReader{nw, 60_000}, int64(len(nw))); err == nil {
				t.Fatal("a Put whose source failed succeeded")
			}
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			if err := s.Put(ctx, "p/v/sco/1", bytes.NewReader(nw), int64(len(nw))); err == nil {
				t.Fatal("a Put with its context ended succeeded")
			}
			got := make([]byte, len(old))
			if err := s.GetRange(context.Background(), "p/v/sco/1", got, 0); err != nil || !bytes.Equal(got, old) {
				t.Fatalf("after failed Puts: %v (the previous object is not whole)", err)
			}
		})
	}
}
