package metastore

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/dgraph-io/badger/v4"
)

// Cond is a condition of a catalog commit: Key still has revision Rev (0:
// Key is absent). It has the shape of volume.CatalogCond.
type Cond = struct {
	Key []byte
	Rev uint64
}

// Catalog is the truth about a vPool besides its data (vDisk records,
// snapshots, upload state, the namespace), in a badger store of its own.
// Commit is on disk when it returns; Stage is atomic and survives a
// process crash, and is on disk after the next Commit or Sync (the
// namespace stages each change and syncs where NFS or an fsync needs it).
// Syncs are group-committed: callers that arrive while one runs share the
// next. Every key has a revision, the commit that last wrote it, so that a
// commit can be made conditional on what it read (compare-and-set), as a
// cluster store's transactions are.
type Catalog struct {
	db       *badger.DB
	dir      string
	logs     logSyncer
	prealloc *logPreallocator
}

// OpenCatalog opens (creating) the catalog in dir.
func OpenCatalog(dir string, log *slog.Logger) (*Catalog, error) {
	db, err := badger.Open(boundedOptions(dir, log, storeSizes{memTable: 8 << 20, blockCache: 4 << 20,
		indexCache: 4 << 20, valueThreshold: 64 << 10, valueLogFile: 16 << 20}))
	if err != nil {
		return nil, fmt.Errorf("metastore: open catalog %s: %w", dir, err)
	}
	return &Catalog{db: db, dir: dir, logs: logSyncer{db: db, dir: dir}, prealloc: startPreallocator(dir, log)}, nil
}

// Get returns key's value and revision.
func (c *Catalog) Get(key []byte) ([]byte, uint64, bool, error) {
	var val []byte
	var rev uint64
	err := c.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(key)
		if err != nil {
			return err
		}
		rev = it.Version()
		val, err = it.ValueCopy(nil)
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, 0, false, nil
	}
	if err != nil {
		return nil, 0, false, fmt.Errorf("metastore: catalog get: %w", err)
	}
	return val, rev, true, nil
}

var errCondFailed = errors.New("metastore: condition failed")

// Commit applies ops atomically and durably if every condition holds;
// ok is false, and nothing is applied, when one does not.
func (c *Catalog) Commit(conds []Cond, ops []Op) (bool, error) {
	ok, err := c.update(conds, ops)
	if ok && err == nil {
		err = c.logs.sync()
	}
	return ok, err
}

// Stage applies ops atomically; they survive a power loss only after the
// next Commit or Sync.
func (c *Catalog) Stage(ops []Op) error {
	_, err := c.update(nil, ops)
	return err
}

// Sync makes every staged change so far durable.
func (c *Catalog) Sync() error { return c.logs.sync() }

func (c *Catalog) update(conds []Cond, ops []Op) (bool, error) {
	defer c.logs.committed()
	for {
		err := c.db.Update(func(txn *badger.Txn) error {
			for _, cd := range conds {
				var rev uint64
				it, err := txn.Get(cd.Key)
				switch {
				case err == nil:
					rev = it.Version()
				case !errors.Is(err, badger.ErrKeyNotFound):
					return err
				}
				if rev != cd.Rev {
					return errCondFailed
				}
			}
			return applyTxn(txn, ops)
		})
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, errCondFailed):
			return false, nil
		case errors.Is(err, badger.ErrConflict): // a commit wrote what the conditions read: judge again
			continue
		}
		return false, fmt.Errorf("metastore: catalog commit of %d changes: %w", len(ops), err)
	}
}

func applyTxn(txn *badger.Txn, ops []Op) error {
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
}

// Scan calls fn for each key with prefix that is >= start, ascending, from
// one consistent view, until fn returns false.
func (c *Catalog) Scan(prefix, start []byte, fn func(k, v []byte) bool) error {
	return scan(c.db, prefix, start, fn)
}

func scan(db *badger.DB, prefix, start []byte, fn func(k, v []byte) bool) error {
	return db.View(func(txn *badger.Txn) error {
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

// Close closes the catalog (every commit is durable already).
func (c *Catalog) Close() error {
	c.prealloc.close()
	return closeBounded(c.db, c.dir)
}

// MigrateToCatalog moves the keys under prefixes from a block-map store of
// an older layout, which held everything, into the catalog: each key the
// catalog lacks is copied (durably) and then deleted from the store. It is
// idempotent, so a crash part way is finished by the next call. It
// returns the number of keys moved.
func MigrateToCatalog(from *Badger, to *Catalog, prefixes [][]byte) (int, error) {
	moved := 0
	for _, prefix := range prefixes {
		for {
			var ops []Op
			err := from.Scan(prefix, nil, func(k, v []byte) bool {
				ops = append(ops, Op{Key: append([]byte(nil), k...), Value: append([]byte{}, v...)})
				return len(ops) < 512
			})
			if err != nil || len(ops) == 0 {
				if err != nil {
					return moved, fmt.Errorf("metastore: migrate to the catalog: %w", err)
				}
				break
			}
			var copyOps, delOps []Op
			for _, op := range ops {
				if _, _, ok, err := to.Get(op.Key); err != nil {
					return moved, err
				} else if !ok {
					copyOps = append(copyOps, op)
				}
				delOps = append(delOps, Op{Key: op.Key})
			}
			if err := to.Stage(copyOps); err != nil {
				return moved, err
			}
			if err := to.Sync(); err != nil {
				return moved, err
			}
			if err := from.Commit(delOps); err != nil {
				return moved, err
			}
			moved += len(copyOps)
		}
	}
	if moved > 0 {
		if err := from.Sync(); err != nil {
			return moved, err
		}
	}
	return moved, nil
}

// logSyncer makes a badger store's commits durable. Badger's own Sync
// flushes the active memtable's write-ahead log and the value log, but
// not the log of a memtable that filled up and waits to be written as a
// table: a commit that landed there just before would stay in the page
// cache. So sync also flushes every log file in the directory (the
// kernel writes back a mapped file's dirty pages on fsync) and the
// directory itself (a new log's name).
type logSyncer struct {
	db      *badger.DB
	dir     string
	commits atomic.Uint64 // commits finished so far
	mu      sync.Mutex    // one sync at a time; held across it
	synced  uint64        // commits known durable; guarded by mu
	logs    string        // the log files at the last directory sync; guarded by mu
}

func (l *logSyncer) committed() { l.commits.Add(1) }

func (l *logSyncer) sync() error {
	want := l.commits.Load()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.synced >= want {
		return nil // a sync that started after those commits covered them
	}
	upto := l.commits.Load()
	if err := l.db.Sync(); err != nil {
		return fmt.Errorf("metastore: sync %s: %w", l.dir, err)
	}
	names, err := os.ReadDir(l.dir)
	if err != nil {
		return fmt.Errorf("metastore: sync %s: %w", l.dir, err)
	}
	var logs strings.Builder
	for _, e := range names {
		if n := e.Name(); strings.HasSuffix(n, ".mem") || strings.HasSuffix(n, ".vlog") {
			if err := fsyncPath(filepath.Join(l.dir, n)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("metastore: sync %s: %w", l.dir, err) // gone: written as a table, which badger synced
			}
			logs.WriteString(n + "/")
		}
	}
	if logs.String() != l.logs { // a new log's name must be durable too
		if err := fsyncPath(l.dir); err != nil {
			return fmt.Errorf("metastore: sync %s: %w", l.dir, err)
		}
		l.logs = logs.String()
	}
	l.synced = upto
	return nil
}

func fsyncPath(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
