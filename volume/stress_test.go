package volume

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"vpool/flashcache"
	"vpool/metastore"
	"vpool/objstore"
	"vpool/vfs"
)

// Concurrent writers to disjoint regions and readers everywhere: every
// read of a region returns one of the values written to it; at the end
// each region holds its last write.
func TestConcurrentWritersAndReaders(t *testing.T) {
	e := newEnv(t)
	v, _ := e.pool.Create(bg, 16<<20)
	const writers = 4
	region := int64(4 << 20)
	var wg sync.WaitGroup
	last := make([][]byte, writers)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for i := 0; i < 200; i++ {
				n := 512 * (1 + r.IntN(64))
				off := int64(w)*region + int64(r.IntN(int(region)-n))
				p := bytes.Repeat([]byte{byte(w*50 + i%50 + 1)}, n)
				if err := v.WriteAt(bg, p, off); err != nil {
					t.Error(err)
					return
				}
				if i%20 == 0 {
					if err := v.Flush(bg); err != nil {
						t.Error(err)
					}
				}
			}
			p := pattern(int(region), byte(w))
			if err := v.WriteAt(bg, p, int64(w)*region); err != nil {
				t.Error(err)
			}
			last[w] = p
		}()
	}
	for rd := 0; rd < 2; rd++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(rd), 2))
			buf := make([]byte, 64<<10)
			for i := 0; i < 300; i++ {
				if _, err := v.ReadAt(bg, buf, int64(r.IntN(16<<20-len(buf)))); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	for w := 0; w < writers; w++ {
		if got := mustRead(t, v, int64(w)*region, int(region)); !bytes.Equal(got, last[w]) {
			t.Fatalf("region %d lost its last write", w)
		}
	}
}

// Two unaligned writes to different bytes of one cluster, at the same
// time, many times: both always survive (read-modify-write is serialised).
func TestConcurrentPartialWritesSameCluster(t *testing.T) {
	e := newEnv(t)
	v, _ := e.pool.Create(bg, 1<<20)
	for i := 0; i < 200; i++ {
		var wg sync.WaitGroup
		for half := 0; half < 2; half++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := v.WriteAt(bg, bytes.Repeat([]byte{byte(i + half + 1)}, 2048), int64(half*2048)); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		got := mustRead(t, v, 0, 4096)
		if got[0] != byte(i+1) || got[2048] != byte(i+2) {
			t.Fatalf("round %d: a concurrent partial write was lost: %d %d", i, got[0], got[2048])
		}
	}
}

// An unreachable backend fills the write buffer: writes slow down and then
// wait; they never fail. When the backend returns, they go on and nothing
// is lost.
func TestBackpressureNeverFails(t *testing.T) {
	e := newEnv(t)
	e.pool.Close(bg)
	e.wbLimit = 16 << 20
	e.open()
	v, _ := e.pool.Create(bg, 64<<20)
	e.backend.SetFailForTesting(errors.New("backend unreachable"))
	data := pattern(40<<20, 7)
	done := make(chan error, 1)
	go func() {
		for off := 0; off < len(data); off += 1 << 20 {
			if err := v.WriteAt(bg, data[off:off+1<<20], int64(off)); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		t.Fatalf("40 MiB went into a 16 MiB write buffer with no backend: %v", err)
	case <-time.After(1500 * time.Millisecond):
	}
	st := v.Stats()
	if !st.Throttling || st.UploadError == "" || st.WriteBufferBytes > 16<<20 {
		t.Fatalf("stats while the backend is away: %+v", st)
	}
	e.backend.SetFailForTesting(nil)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("writes did not resume after the backend came back")
	}
	if got := mustRead(t, v, 0, len(data)); !bytes.Equal(got, data) {
		t.Fatal("data lost across backpressure")
	}
}

// A full local disk is a clear error naming the cause; nothing already
// acknowledged is lost.
func TestFullLocalFlash(t *testing.T) {
	e := newEnv(t)
	v, _ := e.pool.Create(bg, 64<<20)
	a := pattern(1<<20, 3)
	if err := v.WriteAt(bg, a, 0); err != nil {
		t.Fatal(err)
	}
	v.Flush(bg)
	e.fs.InjectForTesting(func(op, name string) error {
		if op == "write" || op == "allocate" {
			return syscall.ENOSPC
		}
		return nil
	})
	var err error
	for off := int64(1 << 20); off < 40<<20 && err == nil; off += 1 << 20 {
		err = v.WriteAt(bg, pattern(1<<20, 4), off)
	}
	if !errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), "no space left") {
		t.Fatalf("write on a full disk: %v", err)
	}
	e.fs.InjectForTesting(nil)
	e.kill()
	if got := mustRead(t, e.vdisk(v.ID()), 0, len(a)); !bytes.Equal(got, a) {
		t.Fatal("acknowledged data lost after a full disk")
	}
}

// Corruption on the backend is detected, never returned as data.
func TestBackendCorruptionDetected(t *testing.T) {
	e := newEnv(t)
	v, _ := e.pool.Create(bg, 16<<20)
	id := v.ID()
	v.WriteAt(bg, pattern(5<<20, 1), 0)
	v.Seal()
	v.WaitUploaded(bg)
	e.backend.CorruptForTesting(scoName("vp", id, 1), 4096*3+5)
	e.wipeFlash() // no local copy, no cache
	_, err := e.vdisk(id).ReadAt(bg, make([]byte, 4096), 4096*3)
	if !errors.Is(err, objstore.ErrCorrupt) {
		t.Fatalf("read of a corrupt object: %v", err)
	}
	e.vdisk(id).ReadAt(bg, make([]byte, 4096), 4096*3)
	e.vdisk(id).ReadAt(bg, make([]byte, 4096), 4096*9) // a good one
	if n := e.vdisk(id).Stats().ReadErrors; n != 2 {
		t.Fatalf("failed reads counted: %d, want 2", n)
	}
}

// The engine over the real local EC store: lose m ASDs and the local
// flash, and every uploaded byte comes back.
func TestECBackendLoseASDsAndFlash(t *testing.T) {
	dir := t.TempDir()
	asds := []string{filepath.Join(dir, "a0"), filepath.Join(dir, "a1"), filepath.Join(dir, "a2"), filepath.Join(dir, "a3")}
	preset := objstore.Preset{Data: 2, Parity: 2, FragmentSize: 1 << 20}
	ec, err := objstore.OpenEC(asds, preset, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	open := func(flash string) *Pool {
		fs := vfs.OS{}
		meta, err := metastore.OpenBadger(filepath.Join(flash, "meta"), 0, testLogger())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { meta.Close() })
		cat, err := metastore.OpenCatalog(filepath.Join(flash, "catalog"), testLogger())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cat.Close() })
		wb, _ := flashcache.NewWriteBuffer(fs, flash, 64<<20)
		rc, _ := flashcache.OpenReadCache(fs, filepath.Join(flash, "cache"), 4<<20, 4096)
		p, err := Open(bg, Config{Name: "vp", Dir: flash, SCOSize: 4 << 20, Log: testLogger()},
			Deps{FS: fs, Backend: ec, Catalog: cat, Meta: meta, WriteBuffer: wb, ReadCache: rc})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	flash := filepath.Join(dir, "flash1")
	p := open(flash)
	v, _ := p.Create(bg, 32<<20)
	data := pattern(9<<20, 2)
	v.WriteAt(bg, data, 1<<20)
	v.Seal()
	if err := v.WaitUploaded(bg); err != nil {
		t.Fatal(err)
	}
	p.Close(bg)
	os.RemoveAll(asds[0])
	os.RemoveAll(asds[3])
	p = open(filepath.Join(dir, "flash2")) // a new host: empty flash
	defer p.Close(bg)
	v2, err := p.VDisk(v.ID())
	if err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, v2, 1<<20, len(data)); !bytes.Equal(got, data) {
		t.Fatal("data differs after losing 2 of 4 ASDs and the local flash")
	}
	if ec.RepairedReads() == 0 {
		t.Fatal("no repaired read reported")
	}
}

func TestBadInputNamesTheValue(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Name: "p", Dir: "/d", ClusterSize: 3000}, "cluster size 3000"},
		{Config{Name: "p", Dir: "/d", SCOSize: 5<<20 + 4096*3, ClusterSize: 8192}, "not a multiple of the cluster size 8192"},
		{Config{Name: "p", Dir: "/d", SCOSize: 1 << 30}, "SCO size 1073741824"},
		{Config{Name: "a/b", Dir: "/d"}, `vPool name "a/b"`},
	} {
		err := tc.cfg.fill()
		if !errors.Is(err, ErrBadConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.cfg, err, tc.want)
		}
	}
	e := newEnv(t)
	if _, err := e.pool.Create(bg, 65<<40); !errors.Is(err, ErrBadSize) {
		t.Errorf("65 TiB vDisk: %v", err)
	}
	v, _ := e.pool.Create(bg, 1<<20)
	if err := v.WriteAt(bg, []byte{1}, 1<<20); !errors.Is(err, ErrOutOfRange) || !strings.Contains(err.Error(), fmt.Sprint(1<<20)) {
		t.Errorf("write past the end: %v", err)
	}
}

var _ = context.Background
