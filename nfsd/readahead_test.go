package nfsd

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
)

// prefetchOf waits until the read-ahead of inode ino is done and
// returns its offset (-1: none is held).
func (e *env) prefetchOf(ino uint64) int64 {
	c := e.srv.files
	c.mu.Lock()
	var p *prefetch
	if cf := c.mu.files[ino]; cf != nil {
		p = cf.reads.ahead
	}
	c.mu.Unlock()
	if p == nil {
		return -1
	}
	<-p.done
	return p.off
}

func randBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, 1))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// writeFile creates name with data, committed.
func writeFile(t *testing.T, c *Client, root []byte, name string, data []byte) ([]byte, Attr) {
	t.Helper()
	var noVerf [8]byte
	fh, a, err := c.Create(root, name, Guarded, 0o644, noVerf)
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off < len(data); off += maxIO {
		if _, _, err := c.Write(fh, uint64(off), data[off:min(off+maxIO, len(data))], Unstable); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Commit(fh); err != nil {
		t.Fatal(err)
	}
	return fh, a
}

func readWant(t *testing.T, c *Client, fh []byte, off int, count int, want []byte, what string) {
	t.Helper()
	got, _, err := c.Read(fh, uint64(off), uint32(count))
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: %d bytes read do not match the %d expected", what, len(got), len(want))
	}
}

// A client reading a file in sequential 1 MiB READs, one at a time, gets
// every READ after the second from data read ahead, and the right data.
func TestReadAheadServesSequentialReads(t *testing.T) {
	e := newEnv(t, Config{})
	c, root := e.client(0, 0)
	for _, name := range []string{"disk.raw", "image.iso"} { // a vDisk and a regular file
		data := randBytes(1, 4<<20+5000)
		fh, _ := writeFile(t, c, root, name, data)
		used := e.srv.Stats.ReadAheadUsed.Load()
		for off := 0; off < len(data); off += maxIO {
			readWant(t, c, fh, off, maxIO, data[off:min(off+maxIO, len(data))], name)
		}
		// READs at 2, 3 and 4 MiB (the last one 5000 bytes) came from read-ahead.
		if got, want := e.srv.Stats.ReadAheadUsed.Load()-used, uint64(2<<20+5000); got != want {
			t.Fatalf("%s: %d bytes read ahead and used, want %d", name, got, want)
		}
	}
	// A snapshot's file is released after each call (so that it can be
	// deleted): no read-ahead, which the release would waste.
	a, err := e.ns.Resolve(context.Background(), "disk.raw")
	if err != nil {
		t.Fatal(err)
	}
	v, err := e.pool.VDisk(a.VDisk)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.CreateSnapshot(context.Background(), "s1"); err != nil {
		t.Fatal(err)
	}
	dir, _ := must2(t)(c.Lookup(root, ".snapshots"))
	dir, _ = must2(t)(c.Lookup(dir, "disk.raw"))
	snap, _ := must2(t)(c.Lookup(dir, "s1"))
	data := randBytes(1, 4<<20+5000)
	used := e.srv.Stats.ReadAheadUsed.Load()
	for off := 0; off < len(data); off += maxIO {
		readWant(t, c, snap, off, maxIO, data[off:min(off+maxIO, len(data))], "snapshot")
	}
	if u := e.srv.Stats.ReadAheadUsed.Load(); u != used {
		t.Fatalf("snapshot read ahead: %d bytes", u-used)
	}
	if w := e.srv.Stats.ReadAheadWasted.Load(); w != 0 {
		t.Fatalf("%d bytes read ahead and wasted by sequential readers that read to the end", w)
	}
	if h := e.srv.files.held.Load(); h != 0 {
		t.Fatalf("read-ahead holds %d buffers after every READ took its data", h)
	}
}

// Data read ahead is never the answer once the file has changed: a write
// over NFS or through the namespace (as the FUSE mount writes), a
// truncation and a regrowth each make the next READ read again.
func TestReadAheadNeverServesChangedData(t *testing.T) {
	ctx := context.Background()
	for _, name := range []string{"disk.raw", "image.iso"} {
		for _, change := range []string{"nfs write", "namespace write", "shrink and grow", "grow", "other file written"} {
			t.Run(name+"/"+change, func(t *testing.T) {
				e := newEnv(t, Config{})
				c, root := e.client(0, 0)
				data := randBytes(2, 4<<20)
				fh, a := writeFile(t, c, root, name, data)
				if change == "grow" { // read ahead short, at the end
					if _, err := c.SetSize(fh, 2<<20+512<<10); err != nil {
						t.Fatal(err)
					}
				}
				readWant(t, c, fh, 0, maxIO, data[:1<<20], "first READ")
				readWant(t, c, fh, 1<<20, maxIO, data[1<<20:2<<20], "second READ")
				if off := e.prefetchOf(a.Fileid); off != 2<<20 {
					t.Fatalf("read ahead at %d after sequential READs of 0 and 1 MiB, want 2 MiB", off)
				}
				want := bytes.Clone(data[2<<20 : 3<<20])
				switch change {
				case "nfs write":
					copy(want[100:], "changed over NFS")
					if _, _, err := c.Write(fh, 2<<20+100, []byte("changed over NFS"), Unstable); err != nil {
						t.Fatal(err)
					}
				case "namespace write":
					copy(want[4096:], "changed through the namespace")
					f, err := e.ns.Open(ctx, a.Fileid, true)
					if err != nil {
						t.Fatal(err)
					}
					if _, err := f.WriteAt(ctx, []byte("changed through the namespace"), 2<<20+4096); err != nil {
						t.Fatal(err)
					}
					f.Release(ctx)
				case "shrink and grow":
					clear(want[512<<10:])
					if _, err := c.SetSize(fh, 2<<20+512<<10); err != nil {
						t.Fatal(err)
					}
					if _, err := c.SetSize(fh, 4<<20); err != nil {
						t.Fatal(err)
					}
				case "grow":
					clear(want[512<<10:])
					if _, err := c.SetSize(fh, 4<<20); err != nil {
						t.Fatal(err)
					}
				case "other file written":
					// Regular files share the file store, whose changes
					// count for all of them; vDisks count their own.
					writeFile(t, c, root, "other.iso", []byte("x"))
					writeFile(t, c, root, "other.raw", []byte("x"))
				}
				wasted := e.srv.Stats.ReadAheadWasted.Load()
				readWant(t, c, fh, 2<<20, maxIO, want, "READ after the change")
				dropped := e.srv.Stats.ReadAheadWasted.Load() > wasted
				if wantDrop := change != "other file written" || name == "image.iso"; dropped != wantDrop {
					t.Fatalf("data read ahead dropped: %v, want %v", dropped, wantDrop)
				}
			})
		}
	}
}

// A client with several READs in flight, out of order, reads the right
// data whatever read-ahead does.
func TestReadAheadWithConcurrentReads(t *testing.T) {
	e := newEnv(t, Config{})
	c, root := e.client(0, 0)
	data := randBytes(3, 16<<20)
	fh, _ := writeFile(t, c, root, "disk.raw", data)
	for round := range 4 {
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		for i := range 16 {
			wg.Go(func() {
				off := i << 20 // in order, as a sequential reader with a deep queue
				if round%2 == 1 {
					off = (i*7 + round) % 16 << 20 // jumping about
				}
				got, _, err := c.Read(fh, uint64(off), maxIO)
				if err == nil && !bytes.Equal(got, data[off:off+maxIO]) {
					err = fmt.Errorf("READ at %d: wrong data", off)
				}
				if err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	}
}
