// Package metastore holds vpool's local metadata (block maps, markers,
// upload state) in an embedded key-value store: badger on local flash,
// or memory for tests. It implements volume.MetaStore; the engine depends
// only on that interface, so a cluster store (etcd) can replace badger
// when a vPool spans hosts.
//
// Badger maps its tables into memory (v4 has no other mode): the table
// pages it reads count in the process's resident set as file-backed pages
// (page cache the kernel can reclaim), so RSS would grow with the amount
// of metadata even though the heap does not. A trimmer (trim_linux.go)
// keeps the resident part of the tables and value-log files under a
// budget (64 MiB by default).
//
// Badger is tuned for bounded memory: small memtables and tables (its
// table builders keep a pool of buffers as large as the largest table), no
// compression, a small block cache and a bounded index cache, so that
// memory does not grow with the amount of metadata. A transaction holds at
// most 15% of a memtable (about 2.4 MB): the engine commits block-map
// pages in chunks below that. Writes are not synced: the engine's durability comes
// from TLogs, and the store is a replayable cache of them (see the volume
// package's doc).
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
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
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
	db  *badger.DB
	dir string
	log *slog.Logger

	residentTables int64    // budget of table pages in memory
	mapsPrefix     string   // the directory as /proc/self/maps names it, with a trailing /
	pagemap        *os.File // the trimmer's /proc/self/pagemap
	pagemapBuf     []byte
	tablesResident atomic.Int64   // at the trimmer's last look
	stop           chan struct{}  // closed by Close
	loops          sync.WaitGroup // the trimmer
}

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
	opts := badger.DefaultOptions(dir).
		WithLogger(badgerLog{log}).
		WithSyncWrites(false).
		WithMemTableSize(16 << 20).
		WithBaseTableSize(2 << 20).
		WithCompression(options.None).
		WithNumMemtables(2).
		WithNumLevelZeroTables(2).
		WithNumLevelZeroTablesStall(8).
		WithBlockCacheSize(8 << 20).
		WithIndexCacheSize(16 << 20).
		WithValueThreshold(4 << 10).
		WithValueLogFileSize(64 << 20).
		WithNumCompactors(2).
		WithCompactL0OnClose(false)
	db, err := badger.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("metastore: open %s: %w", dir, err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := &Badger{db: db, dir: dir, log: log, residentTables: residentTables, stop: make(chan struct{})}
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
	err := b.db.Update(func(txn *badger.Txn) error {
		for _, op := range ops {
			var err error
			if op.Value == nil {
				err = txn.Delete(op.Key)
			} else {
				err = txn.Set(op.Key, op.Value)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("metastore: commit %d changes: %w", len(ops), err)
	}
	return nil
}

func (b *Badger) Scan(prefix, start []byte, fn func(k, v []byte) bool) error {
	return b.db.View(func(txn *badger.Txn) error {
		o := badger.DefaultIteratorOptions
		o.Prefix = prefix
		o.PrefetchValues = false
		it := txn.NewIterator(o)
		defer it.Close()
		seek := prefix
		if bytes.Compare(start, prefix) > 0 {
			seek = start
		}
		for it.Seek(seek); it.ValidForPrefix(prefix); it.Next() {
			item := it.Item()
			var stop bool
			if err := item.Value(func(v []byte) error {
				stop = !fn(item.Key(), v)
				return nil
			}); err != nil {
				return fmt.Errorf("metastore: scan: %w", err)
			}
			if stop {
				return nil
			}
		}
		return nil
	})
}

// TablesResident returns the bytes of the store's tables in memory, as the
// trimmer last saw them (its budget is OpenBadger's residentTables).
func (b *Badger) TablesResident() int64 { return b.tablesResident.Load() }

// Sync makes every committed change durable (Commit alone survives a
// process crash, not a power loss).
func (b *Badger) Sync() error {
	if err := b.db.Sync(); err != nil {
		return fmt.Errorf("metastore: sync: %w", err)
	}
	return nil
}

// closeTimeout bounds Close: badger retries a memtable flush that cannot
// be written (full disk, directory gone) for ever, which would keep the
// daemon from exiting. Giving up is safe: what the memtable holds is in
// badger's write-ahead log, replayed at the next open as after a crash.
var closeTimeout = 30 * time.Second

// Close flushes and closes the store, or gives up after closeTimeout.
func (b *Badger) Close() error {
	close(b.stop)
	b.loops.Wait()
	if b.pagemap != nil {
		b.pagemap.Close()
	}
	done := make(chan error, 1)
	go func() { done <- b.db.Close() }()
	select {
	case err := <-done:
		return err
	case <-time.After(closeTimeout):
		return fmt.Errorf("metastore: close of %s did not finish in %s (badger could not write its tables; see the log): "+
			"left for the next open to recover", b.dir, closeTimeout)
	}
}

type badgerLog struct{ l *slog.Logger }

func (b badgerLog) Errorf(f string, a ...any)   { b.log(slog.LevelError, f, a...) }
func (b badgerLog) Warningf(f string, a ...any) { b.log(slog.LevelWarn, f, a...) }
func (b badgerLog) Infof(f string, a ...any)    {}
func (b badgerLog) Debugf(f string, a ...any)   {}
func (b badgerLog) log(l slog.Level, f string, a ...any) {
	if b.l != nil {
		b.l.Log(context.Background(), l, "metastore: badger: "+fmt.Sprintf(f, a...))
	}
}

// Mem is an in-memory store for tests. It survives a simulated process
// crash (the test keeps the value), like badger's WAL in the page cache.
type Mem struct {
	mu sync.Mutex
	m  map[string][]byte
}

// NewMem returns an empty in-memory store.
func NewMem() *Mem { return &Mem{m: map[string][]byte{}} }

func (s *Mem) Get(key []byte) ([]byte, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[string(key)]
	return append([]byte(nil), v...), ok, nil
}

func (s *Mem) Commit(ops []Op) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, op := range ops {
		if op.Value == nil {
			delete(s.m, string(op.Key))
		} else {
			s.m[string(op.Key)] = append([]byte(nil), op.Value...)
		}
	}
	return nil
}

func (s *Mem) Scan(prefix, start []byte, fn func(k, v []byte) bool) error {
	s.mu.Lock()
	var keys []string
	for k := range s.m {
		if bytes.HasPrefix([]byte(k), prefix) && bytes.Compare([]byte(k), start) >= 0 {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	vals := make([][]byte, len(keys))
	for i, k := range keys {
		vals[i] = s.m[k]
	}
	s.mu.Unlock()
	for i, k := range keys {
		if !fn([]byte(k), vals[i]) {
			return nil
		}
	}
	return nil
}

func (s *Mem) Close() error { return nil }

// Sync does nothing: the in-memory store has no durability to give.
func (s *Mem) Sync() error { return nil }

// Len returns the number of keys (tests).
func (s *Mem) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}
