package volume

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"vpool/flashcache"
	"vpool/metastore"
	"vpool/objstore"
	"vpool/vfs"
)

var _ Backend = (*objstore.EC)(nil)
var _ Backend = (*objstore.Mem)(nil)
var _ MetaStore = (*metastore.Badger)(nil)
var _ MetaStore = (*metastore.Mem)(nil)
var _ Catalog = (*metastore.Catalog)(nil)
var _ Catalog = (*metastore.MemCatalog)(nil)
var _ WriteBuffer = (*flashcache.WriteBuffer)(nil)
var _ ReadCache = (*flashcache.ReadCache)(nil)

// env is a vPool engine over in-memory flash, metadata and backend, which
// tests can crash, wipe and reopen.
type env struct {
	t       *testing.T
	fs      *vfs.Mem
	meta    *metastore.Mem
	cat     *metastore.MemCatalog
	backend *objstore.Mem
	// be, when set, is the backend the pool gets (a wrapper of backend)
	be      Backend
	cfg     Config
	wbLimit int64
	cache   int64
	pool    *Pool
	wb      *flashcache.WriteBuffer
	// rng, when set, decides what a power loss keeps of the unsynced
	// changes of the filesystem and the block-map store; nil: nothing.
	rng *rand.Rand
}

func testLogger() *slog.Logger {
	if os.Getenv("VPOOL_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(discard{}, nil))
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func newEnv(t *testing.T) *env {
	e := &env{t: t, fs: vfs.NewMem(), meta: metastore.NewMem(), cat: metastore.NewMemCatalog(), backend: objstore.NewMem(),
		wbLimit: 256 << 20, cache: 1 << 20}
	e.cfg = Config{Name: "vp", Dir: "/flash", SCOSize: 4 << 20, MapCachePages: 64, Log: testLogger()}
	e.open()
	t.Cleanup(func() {
		if e.pool != nil {
			e.pool.Close(context.Background())
		}
	})
	return e
}

func (e *env) open() {
	e.t.Helper()
	wb, err := flashcache.NewWriteBuffer(e.fs, "/flash/wb", e.wbLimit)
	if err != nil {
		e.t.Fatal(err)
	}
	cache, err := flashcache.OpenReadCache(e.fs, "/flash/readcache", e.cache, 4096)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var be Backend = e.backend
	if e.be != nil {
		be = e.be
	}
	p, err := Open(ctx, e.cfg, Deps{FS: e.fs, Backend: be, Catalog: e.cat, Meta: e.meta, WriteBuffer: wb, ReadCache: cache})
	if err != nil {
		e.t.Fatalf("open pool: %v", err)
	}
	e.pool, e.wb = p, wb
}

// restart closes cleanly and reopens.
func (e *env) restart() {
	e.t.Helper()
	if err := e.pool.Close(context.Background()); err != nil {
		e.t.Fatalf("close: %v", err)
	}
	e.open()
}

// kill drops the process without a flush (kill -9): the page cache keeps
// everything written.
func (e *env) kill() {
	e.pool.AbandonForTesting()
	e.open()
}

// powerLoss is kill plus the loss of what was not synced: all of it, or
// with e.rng a random part of it.
func (e *env) powerLoss() {
	e.pool.AbandonForTesting()
	if e.rng != nil {
		e.fs.PowerLoss(e.rng)
		e.meta.PowerLoss(e.rng)
	} else {
		e.fs.Crash()
		e.meta.PowerLoss(nil)
	}
	e.open()
}

// disposeUploaded makes every uploaded SCO of v leave flash, as the
// write buffer's clean budget would.
func (e *env) disposeUploaded(v *VDisk) {
	e.t.Helper()
	v.mu.Lock()
	var segs []*segment
	for s, seg := range v.mu.segs {
		if s <= v.mu.uploadedThrough {
			segs = append(segs, seg)
		}
	}
	v.mu.Unlock()
	for _, seg := range segs {
		if err := v.dispose(bg, seg); err != nil {
			e.t.Fatal(err)
		}
	}
}

// wipeFlash loses all local state: flash files and metadata.
func (e *env) wipeFlash() {
	e.pool.AbandonForTesting()
	e.fs = vfs.NewMem()
	e.wipeMeta()
	e.open()
}

// wipeMeta loses the metadata stores (catalog and block maps).
func (e *env) wipeMeta() {
	e.meta, e.cat = metastore.NewMem(), metastore.NewMemCatalog()
}

func (e *env) vdisk(id uint64) *VDisk {
	e.t.Helper()
	v, err := e.pool.VDisk(id)
	if err != nil {
		e.t.Fatal(err)
	}
	return v
}

// crashAt makes step stop of a rollback, flatten, clone or scrub fail as
// a crash there would (reset crashHook after). The step counted repeats:
// its n-th time is named name+n ("page3").
func crashAt(stop, counted, name string) {
	n := 0
	crashHook = func(step string) error {
		if step == counted {
			n++
			step = fmt.Sprintf("%s%d", name, n)
		}
		if step == stop {
			return errors.New("crash")
		}
		return nil
	}
}

// hangGuard is a context for a test bounded by its steps: it ends only a
// minute before the test binary's deadline (-timeout), so that a hung
// test fails with its own message instead of the binary's panic.
func hangGuard(t *testing.T) (context.Context, context.CancelFunc) {
	if d, ok := t.Deadline(); ok {
		return context.WithDeadline(context.Background(), d.Add(-time.Minute))
	}
	return context.WithCancel(context.Background())
}
