package fs

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"vpool/flashcache"
	"vpool/metastore"
	"vpool/objstore"
	"vpool/vfs"
	"vpool/volume"
)

var _ Catalog = (*metastore.Catalog)(nil)
var _ Catalog = (*metastore.MemCatalog)(nil)
var _ Backend = (*objstore.EC)(nil)

// env is a namespace over an engine on in-memory flash, metadata and
// backend, which tests restart, kill and wipe.
type env struct {
	t       *testing.T
	fsys    *vfs.Mem
	meta    *metastore.Mem
	cat     *metastore.MemCatalog
	backend *objstore.Mem
	pool    *volume.Pool
	ns      *Namespace
}

func testLogger() *slog.Logger {
	if os.Getenv("VPOOL_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func newEnv(t *testing.T) *env {
	e := &env{t: t, fsys: vfs.NewMem(), meta: metastore.NewMem(), cat: metastore.NewMemCatalog(), backend: objstore.NewMem()}
	e.open()
	t.Cleanup(func() {
		if e.ns != nil {
			e.ns.Close(context.Background())
			e.pool.Close(context.Background())
		}
	})
	return e
}

func (e *env) open() {
	e.t.Helper()
	wb, err := flashcache.NewWriteBuffer(e.fsys, "/flash/wb", 256<<20)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e.pool, err = volume.Open(ctx, volume.Config{Name: "vp", Dir: "/flash", SCOSize: 4 << 20, MapCachePages: 64,
		MaxVDiskSize: 1 << 40, Log: testLogger()},
		volume.Deps{FS: e.fsys, Backend: e.backend, Catalog: e.cat, Meta: e.meta, WriteBuffer: wb})
	if err != nil {
		e.t.Fatalf("open pool: %v", err)
	}
	e.ns, err = Open(ctx, Config{Name: "vp", BackupInterval: time.Hour, Log: testLogger()}, e.pool, e.cat, e.backend)
	if err != nil {
		e.t.Fatalf("open namespace: %v", err)
	}
}

func (e *env) restart() {
	e.t.Helper()
	ctx := context.Background()
	if err := e.ns.Close(ctx); err != nil {
		e.t.Fatal(err)
	}
	if err := e.pool.Close(ctx); err != nil {
		e.t.Fatal(err)
	}
	e.open()
}

// kill stops without closing anything (kill -9): metadata and the page
// cache survive.
func (e *env) kill() {
	e.ns.AbandonForTesting()
	e.pool.AbandonForTesting()
	e.open()
}

// powerLoss stops as kill does and loses what was not synced: a random
// part of it, from rng, in the filesystem, the catalog and the block-map
// store.
func (e *env) powerLoss(rng *rand.Rand) {
	e.ns.AbandonForTesting()
	e.pool.AbandonForTesting()
	e.fsys.PowerLoss(rng)
	e.cat.PowerLoss(rng)
	e.meta.PowerLoss(rng)
	e.open()
}

// wipe loses local flash and metadata: the backend is all there is.
func (e *env) wipe() {
	e.ns.AbandonForTesting()
	e.pool.AbandonForTesting()
	e.fsys, e.meta, e.cat = vfs.NewMem(), metastore.NewMem(), metastore.NewMemCatalog()
	e.open()
}
