package metastore

import (
	"bytes"
	"math/rand/v2"
	"sort"
	"sync"
)

// memStore is the core of the in-memory stores: a map as seen now, the
// map a power loss leaves, and the commits in between, oldest first.
// Like badger without synced writes, it keeps every commit through a
// process crash (the test keeps the value) but not through a power loss:
// powerLoss keeps a random prefix of the commits made since the last
// sync, as badger's write-ahead log replays the entries up to the first
// one that did not reach the disk.
type memStore struct {
	mu      sync.Mutex
	live    map[string]revValue
	durable map[string]revValue
	pending [][]Op
	rev     uint64 // of the newest commit
}

type revValue struct {
	v   []byte
	rev uint64
}

// memPendingMax bounds the commits kept apart from the durable state;
// older ones are folded in, as badger's flushed tables are synced.
const memPendingMax = 4096

func newMemStore() memStore {
	return memStore{live: map[string]revValue{}, durable: map[string]revValue{}}
}

func (s *memStore) get(key []byte) ([]byte, uint64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rv, ok := s.live[string(key)]
	return append([]byte(nil), rv.v...), rv.rev, ok
}

// commitLocked applies ops as one commit, durable at once or not.
func (s *memStore) commitLocked(ops []Op, durable bool) {
	s.rev++
	cp := make([]Op, len(ops))
	for i, op := range ops {
		cp[i] = Op{Key: append([]byte(nil), op.Key...)}
		if op.Value != nil {
			cp[i].Value = append([]byte{}, op.Value...)
		}
	}
	applyOps(s.live, cp, s.rev)
	s.pending = append(s.pending, cp)
	switch {
	case durable:
		s.foldLocked(len(s.pending))
	case len(s.pending) > memPendingMax:
		s.foldLocked(len(s.pending) / 2)
	}
}

func applyOps(m map[string]revValue, ops []Op, rev uint64) {
	for _, op := range ops {
		if op.Value == nil {
			delete(m, string(op.Key))
		} else {
			m[string(op.Key)] = revValue{op.Value, rev}
		}
	}
}

// foldLocked makes the oldest n pending commits durable.
func (s *memStore) foldLocked(n int) {
	rev := s.rev - uint64(len(s.pending))
	for _, ops := range s.pending[:n] {
		rev++
		applyOps(s.durable, ops, rev)
	}
	s.pending = append(s.pending[:0], s.pending[n:]...)
}

func (s *memStore) scan(prefix, start []byte, fn func(k, v []byte) bool) error {
	s.mu.Lock()
	var keys []string
	for k := range s.live {
		if bytes.HasPrefix([]byte(k), prefix) && bytes.Compare([]byte(k), start) >= 0 {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	vals := make([][]byte, len(keys))
	for i, k := range keys {
		vals[i] = s.live[k].v
	}
	s.mu.Unlock()
	for i, k := range keys {
		if !fn([]byte(k), vals[i]) {
			return nil
		}
	}
	return nil
}

func (s *memStore) sync() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.foldLocked(len(s.pending))
}

func (s *memStore) powerLoss(rng *rand.Rand) {
	s.mu.Lock()
	defer s.mu.Unlock()
	keep := 0
	if rng != nil {
		keep = rng.IntN(len(s.pending) + 1)
	}
	s.foldLocked(keep)
	s.pending = nil // revisions are never handed out again
	s.live = make(map[string]revValue, len(s.durable))
	for k, v := range s.durable {
		s.live[k] = v
	}
}

func (s *memStore) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.live)
}

// Mem is an in-memory block-map store for tests, which a simulated power
// loss can make forget its newest commits.
type Mem struct{ s memStore }

// NewMem returns an empty in-memory store.
func NewMem() *Mem { return &Mem{s: newMemStore()} }

func (m *Mem) Get(key []byte) ([]byte, bool, error) {
	v, _, ok := m.s.get(key)
	return v, ok, nil
}

func (m *Mem) Commit(ops []Op) error {
	m.s.mu.Lock()
	defer m.s.mu.Unlock()
	m.s.commitLocked(ops, false)
	return nil
}

func (m *Mem) Scan(prefix, start []byte, fn func(k, v []byte) bool) error {
	return m.s.scan(prefix, start, fn)
}

func (m *Mem) Close() error { return nil }

// Sync makes every commit so far survive PowerLoss.
func (m *Mem) Sync() error { m.s.sync(); return nil }

// PowerLoss forgets the commits since the last Sync but a random prefix
// of them (from rng; nil: all of them).
func (m *Mem) PowerLoss(rng *rand.Rand) { m.s.powerLoss(rng) }

// Len returns the number of keys (tests).
func (m *Mem) Len() int { return m.s.len() }

// MemCatalog is an in-memory catalog for tests, with Catalog's contract:
// Commit is durable when it returns, Stage only after the next Commit or
// Sync; PowerLoss keeps a random prefix of the staged commits since.
type MemCatalog struct{ s memStore }

// NewMemCatalog returns an empty in-memory catalog.
func NewMemCatalog() *MemCatalog { return &MemCatalog{s: newMemStore()} }

func (c *MemCatalog) Get(key []byte) ([]byte, uint64, bool, error) {
	v, rev, ok := c.s.get(key)
	return v, rev, ok, nil
}

func (c *MemCatalog) Commit(conds []Cond, ops []Op) (bool, error) {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	for _, cd := range conds {
		if c.s.live[string(cd.Key)].rev != cd.Rev {
			return false, nil
		}
	}
	c.s.commitLocked(ops, true)
	return true, nil
}

func (c *MemCatalog) Stage(ops []Op) error {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	c.s.commitLocked(ops, false)
	return nil
}

func (c *MemCatalog) Sync() error { c.s.sync(); return nil }

func (c *MemCatalog) Scan(prefix, start []byte, fn func(k, v []byte) bool) error {
	return c.s.scan(prefix, start, fn)
}

func (c *MemCatalog) Close() error { return nil }

// PowerLoss forgets the staged commits since the last Commit or Sync but
// a random prefix of them (from rng; nil: all of them).
func (c *MemCatalog) PowerLoss(rng *rand.Rand) { c.s.powerLoss(rng) }

// Len returns the number of keys (tests).
func (c *MemCatalog) Len() int { return c.s.len() }
