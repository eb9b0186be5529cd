// Package metastore holds vpool's local metadata in two embedded
// key-value stores (badger on local flash, or memory for tests), each
// behind an interface its consumer declares:
//
//   - The block-map store (Badger, Mem; volume.MetaStore): block-map pages
//     and markers, a replayable cache of the TLogs. Writes are not synced:
//     a power loss may forget the newest commits, and the engine replays
//     TLogs from the stored marker. Sync is for the rare catalog change
//     that relies on the stored map.
//   - The catalog (Catalog, MemCatalog; volume.Catalog, fs.Catalog): the
//     truth nothing rebuilds (vDisk records, snapshots, epochs, upload
//     state, the namespace). Commit is durable when it returns; Stage is
//     atomic, survives a process crash and becomes durable at the next
//     Commit or Sync. Keys carry revisions for compare-and-set commits,
//     the form a cluster store (etcd) will take when a vPool spans hosts.
//
// Badger's own Sync leaves out the log of a full memtable that waits to be
// written as a table; both stores sync every log file of their directory
// instead (logSyncer). Badger writes those logs through mappings of sparse
// files, where a full disk is a SIGBUS: both stores preallocate them
// (logPreallocator), and bulk data on their filesystem leaves SpaceReserve
// free for them.
//
// Badger maps its tables into memory (v4 has no other mode): the table
// pages it reads count in the process's resident set as file-backed pages
// (page cache the kernel can reclaim), so RSS would grow with the amount
// of metadata even though the heap does not. A trimmer (trim_linux.go)
// keeps the resident part of the block-map store's tables and value-log
// files under a budget (64 MiB by default).
//
// Badger is tuned for bounded memory: small memtables and tables (its
// table builders keep a pool of buffers as large as the largest table), no
// compression, a small block cache and a bounded index cache, so that
// memory does not grow with the amount of metadata. A transaction holds at
// most 15% of a memtable (about 2.4 MB): the engine commits block-map
// pages in chunks below that.
//
// Values stay in the LSM tree (value threshold 4 KiB), the 1 KiB
// block-map pages included. In badger's value log they made 4 KiB random
// writes over a 4 GiB vDisk 30–50% faster in-process (flushes and
// compactions would move pointers, not pages), but with unsynced writes a
// power loss can keep a WAL entry whose value-log bytes were lost, which
// badger leaves to the application: the engine would read a garbage page
// where it now finds an older, consistent one.
//
// This package imports the standard library and badger only.
package metastore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// Op is one change of a Commit; a nil Value deletes Key. It has the shape
// of volume.MetaOp.
type Op = struct{ Key, Value []byte }

// Badger is the production store.
type Badger struct {
	db       *badger.DB
	dir      string
	log      *slog.Logger
	logs     logSyncer
	prealloc *logPreallocator

	residentTables int64    // budget of table pages in memory
	mapsPrefix     string   // the directory as /proc/self/maps names it, with a trailing /
	pagemap        *os.File // the trimmer's /proc/self/pagemap
	pagemapBuf     []byte
	tablesResident atomic.Int64   // at the trimmer's last look
	stop           chan struct{}  // closed by Close
	loops          sync.WaitGroup // the trimmer
}

// SpaceReserve is the room the two stores may need on their filesystem
// beyond what they hold: badger writes its logs through mappings of
// sparse files (two write-ahead logs per store at twice the memtable, a
// value log) and writes new tables on compaction; a write into a mapping
// that finds the disk full faults (SIGBUS) and kills the process. Bulk
// data on the same filesystem (SCOs, backend fragments) leaves this free.
const SpaceReserve = 256 << 20

// DefaultResidentTables is the default budget of resident table pages.
const DefaultResidentTables = 64 << 20

// OpenBadger opens (creating) the store in dir. At most residentTables
// bytes of its tables stay in memory (0: DefaultResidentTables).
func OpenBadger(dir string, residentTables int64, log *slog.Logger) (*Badger, error) {
	if residentTables < 0 {
		return nil, fmt.Errorf("metastore: resident table budget %d: want 0 or more bytes", residentTables)
	}
	if residentTables == 0 {
		residentTables = DefaultResidentTables
	}
	db, err := badger.Open(boundedOptions(dir, log, storeSizes{memTable: 16 << 20, blockCache: 8 << 20,
		indexCache: 16 << 20, valueThreshold: 4 << 10, valueLogFile: 64 << 20}))
	if err != nil {
		return nil, fmt.Errorf("metastore: open %s: %w", dir, err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := &Badger{db: db, dir: dir, log: log, residentTables: residentTables, stop: make(chan struct{})}
	b.logs = logSyncer{db: db, dir: dir}
	b.prealloc = startPreallocator(dir, log)
	b.mapsPrefix = dir
	if abs, err := filepath.Abs(dir); err == nil {
		b.mapsPrefix = abs
		if real, err := filepath.EvalSymlinks(abs); err == nil {
			b.mapsPrefix = real
		}
	}
	b.mapsPrefix = strings.TrimSuffix(b.mapsPrefix, "/") + "/"
	b.startTrimmer()
	return b, nil
}

func (b *Badger) Get(key []byte) ([]byte, bool, error) {
	var val []byte
	err := b.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(key)
		if err != nil {
			return err
		}
		val, err = it.ValueCopy(nil)
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("metastore: get: %w", err)
	}
	return val, true, nil
}

// Commit applies ops atomically.
func (b *Badger) Commit(ops []Op) error {
	defer b.logs.committed()
	err := b.db.Update(func(txn *badger.Txn) error { return applyTxn(txn, ops) })
	if err != nil {
		return fmt.Errorf("metastore: commit %d changes: %w", len(ops), err)
	}
	return nil
}

func (b *Badger) Scan(prefix, start []byte, fn func(k, v []byte) bool) error {
	return scan(b.db, prefix, start, fn)
}

// TablesResident returns the bytes of the store's tables in memory, as the
// trimmer last saw them (its budget is OpenBadger's residentTables).
func (b *Badger) TablesResident() int64 { return b.tablesResident.Load() }

// Sync makes every committed change durable (Commit alone survives a
// process crash, not a power loss).
func (b *Badger) Sync() error { return b.logs.sync() }

// closeTimeout bounds Close: badger retries a memtable flush that cannot
// be written (full disk, directory gone) for ever, which would keep the
// daemon from exiting. Giving up is safe: what the memtable holds is in
// badger's write-ahead log, replayed at the next open as after a crash.
var closeTimeout = 30 * time.Second

// Close flushes and closes the store, or gives up after closeTimeout.
func (b *Badger) Close() error {
	close(b.stop)
	b.loops.Wait()
	b.prealloc.close()
	if b.pagemap != nil {
		b.pagemap.Close()
	}
	return closeBounded(b.db, b.dir)
}

func closeBounded(db *badger.DB, dir string) error {
	done := make(chan error, 1)
	go func() { done <- db.Close() }()
	select {
	case err := <-done:
		return err
	case <-time.After(closeTimeout):
		return fmt.Errorf("metastore: close of %s did not finish in %s (badger could not write its tables; see the log): "+
			"left for the next open to recover", dir, closeTimeout)
	}
}

// storeSizes are what sets one store's memory apart from the other's.
type storeSizes struct{ memTable, blockCache, indexCache, valueThreshold, valueLogFile int64 }

// boundedOptions are badger's options for both stores: bounded memory
// (see the package doc) and unsynced writes (logSyncer syncs).
func boundedOptions(dir string, log *slog.Logger, s storeSizes) badger.Options {
	return badger.DefaultOptions(dir).
		WithLogger(badgerLog{log}).
		WithSyncWrites(false).
		WithMemTableSize(s.memTable).
		WithBaseTableSize(2 << 20).
		WithCompression(options.None).
		WithNumMemtables(2).
		WithNumLevelZeroTables(2).
		WithNumLevelZeroTablesStall(8).
		WithBlockCacheSize(s.blockCache).
		WithIndexCacheSize(s.indexCache).
		WithValueThreshold(s.valueThreshold).
		WithValueLogFileSize(s.valueLogFile).
		WithNumCompactors(2).
		WithCompactL0OnClose(false)
}

type badgerLog struct{ l *slog.Logger }

func (b badgerLog) Errorf(f string, a ...any) { b.log(slog.LevelError, f, a...) }
func (b badgerLog) Warningf(f string, a ...any) {
	level := slog.LevelWarn
	if strings.Contains(f, "might be too small") { // "Block cache might be too small"
		level = slog.LevelDebug // by design (bounded memory): nothing an operator can act on
	}
	b.log(level, f, a...)
}
func (b badgerLog) Infof(f string, a ...any)  {}
func (b badgerLog) Debugf(f string, a ...any) {}
func (b badgerLog) log(l slog.Level, f string, a ...any) {
	if b.l != nil {
		b.l.Log(context.Background(), l, "metastore: badger: "+fmt.Sprintf(f, a...))
	}
}
