package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"vpool/objstore"
	"vpool/objstore/objstoretest"
	"vpool/objstore/s3/s3test"
	"vpool/volume/backend"
)

var _ backend.Store = (*Store)(nil)

var buckets atomic.Int64

// newStore returns a store over a new bucket of srv.
func newStore(t *testing.T, srv *s3test.Server) *Store {
	t.Helper()
	s, err := New(Config{Endpoint: srv.Endpoint, Bucket: fmt.Sprintf("bucket%d", buckets.Add(1)),
		AccessKey: s3test.AccessKey, SecretKey: s3test.SecretKey})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	srv := s3test.Start(t)
	objstoretest.Run(t, func(t *testing.T) backend.Store { return newStore(t, srv) }, objstoretest.Options{})
}

// A read miss fetches the blocks it needs and nothing more: one ranged GET
// of the 4 KiB blocks (with their CRCs) covering the range, and the
// object's 64-byte header once.
func TestRangedReadsFetchOnlyTheirBlocks(t *testing.T) {
	srv := s3test.Start(t)
	s := newStore(t, srv)
	r := rand.New(rand.NewPCG(1, 2))
	data := objstoretest.RandBytes(r, 8<<20)
	if err := s.Put(bg, "p/v/sco/1", bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	fresh := newStoreOn(t, srv, s.bucket) // no size known: reads the header first
	const reads = 200
	var needed int64
	for i := range reads {
		off := int64(r.IntN(len(data)/4096)) * 4096
		n := 4096 * (1 + i%4) // 4 to 16 KiB, cluster aligned
		if off+int64(n) > int64(len(data)) {
			off = int64(len(data) - n)
		}
		got := make([]byte, n)
		if err := fresh.GetRange(bg, "p/v/sco/1", got, off); err != nil || !bytes.Equal(got, data[off:off+int64(n)]) {
			t.Fatalf("read [%d,+%d): %v", off, n, err)
		}
		needed += int64(n)
	}
	st := fresh.Stats()
	if st.Gets.Load() != reads+1 {
		t.Fatalf("%d GETs for %d reads, want one each and one for the header", st.Gets.Load(), reads)
	}
	if got, max := st.GetBytes.Load(), needed+needed/4096*4+64; got > max {
		t.Fatalf("fetched %d bytes for %d needed (%.3fx), want at most %d", got, needed, float64(got)/float64(needed), max)
	}
	t.Logf("fetched %d bytes for %d needed: %.4fx", st.GetBytes.Load(), needed, float64(st.GetBytes.Load())/float64(needed))
}

func newStoreOn(t *testing.T, srv *s3test.Server, bucket string) *Store {
	t.Helper()
	s, err := New(Config{Endpoint: srv.Endpoint, Bucket: bucket, AccessKey: s3test.AccessKey, SecretKey: s3test.SecretKey, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var bg = context.Background()

// A flipped bit or a truncated object in the bucket is found, never read
// as data.
func TestCorruptAndTruncatedObjectsAreFound(t *testing.T) {
	srv := s3test.Start(t)
	s := newStore(t, srv)
	r := rand.New(rand.NewPCG(3, 4))
	data := objstoretest.RandBytes(r, 1<<20)
	for _, name := range []string{"p/v/sco/1", "p/v/sco/2"} {
		if err := s.Put(bg, name, bytes.NewReader(data), int64(len(data))); err != nil {
			t.Fatal(err)
		}
	}
	// versitygw's posix backend keeps an object as a file of its name
	file := func(name string) string { return filepath.Join(srv.Dir, s.bucket, name) }
	f, err := os.OpenFile(file("p/v/sco/1"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := []byte{0}
	f.ReadAt(b, 64+5*4100+17)
	b[0] ^= 0x20
	f.WriteAt(b, 64+5*4100+17)
	f.Close()
	if err := os.Truncate(file("p/v/sco/2"), 64+100*4100); err != nil {
		t.Fatal(err)
	}
	fresh := newStoreOn(t, srv, s.bucket)
	got := make([]byte, 4096)
	if err := fresh.GetRange(bg, "p/v/sco/1", got, 5*4096); !errors.Is(err, objstore.ErrCorrupt) {
		t.Fatalf("read of a flipped bit: %v, want ErrCorrupt", err)
	}
	if err := fresh.GetRange(bg, "p/v/sco/1", got, 6*4096); err != nil || !bytes.Equal(got, data[6*4096:7*4096]) {
		t.Fatalf("read of the next block: %v", err)
	}
	if err := fresh.GetRange(bg, "p/v/sco/2", got, 200*4096); !errors.Is(err, objstore.ErrCorrupt) {
		t.Fatalf("read past a truncation: %v, want ErrCorrupt", err)
	}
	if err := fresh.GetRange(bg, "p/v/sco/2", make([]byte, 2*4096), 99*4096); !errors.Is(err, objstore.ErrCorrupt) {
		t.Fatalf("read across a truncation: %v, want ErrCorrupt", err)
	}
}

// An object above the part size goes up as a multipart upload and reads
// back whole.
func TestMultipart(t *testing.T) {
	srv := s3test.Start(t)
	s := newStore(t, srv)
	s.partSize = 5 << 20
	r := rand.New(rand.NewPCG(5, 6))
	data := objstoretest.RandBytes(r, 12<<20+3)
	if err := s.Put(bg, "p/v/sco/1", bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	fresh := newStoreOn(t, srv, s.bucket)
	got := make([]byte, len(data))
	if err := fresh.GetRange(bg, "p/v/sco/1", got, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("multipart object reads back wrong: %v", err)
	}
}

// A server that stops answering fails each request after its timeout,
// never hangs it; once it answers again, so does the store.
func TestHungServerTimesOut(t *testing.T) {
	srv := s3test.Start(t)
	s := newStore(t, srv)
	s.timeout = time.Second
	if err := s.Put(bg, "p/v/sco/1", bytes.NewReader([]byte("before")), 6); err != nil {
		t.Fatal(err)
	}
	srv.Pause()
	for name, err := range map[string]error{
		"Put":  s.Put(bg, "p/v/sco/2", bytes.NewReader(make([]byte, 1<<20)), 1<<20),
		"Size": second(s.Size(bg, "p/v/sco/3")),
		"List": second(s.List(bg, "p/")),
	} {
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s to a hung server: %v, want a timeout", name, err)
		}
	}
	srv.Resume()
	got := make([]byte, 6)
	if err := s.GetRange(bg, "p/v/sco/1", got, 0); err != nil || string(got) != "before" {
		t.Fatalf("after the server came back: %q, %v", got, err)
	}
}

func second[T any](_ T, err error) error { return err }
