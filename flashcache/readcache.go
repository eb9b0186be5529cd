package flashcache

import (
	"fmt"
	"hash/maphash"
	"io"
	"os"
	"sync"
	"sync/atomic"

	"vpool/vfs"
)

// Key names one cached cluster: the vDisk (Owner), the SCO (Object) and
// the cluster's slot in it (Index). Keys are immutable: an SCO is never
// rewritten under the same number.
type Key struct {
	Owner  uint64
	Object uint32
	Index  uint32
}

const cacheShards = 16

// ReadCache caches clusters read from the backend; see the package doc.
type ReadCache struct {
	file     vfs.File
	read     io.ReaderAt // the file, mapped if it can be (a hit then costs no system call)
	slotSize int64
	seed     maphash.Seed
	shards   []*cacheShard
	hits     atomic.Int64
	misses   atomic.Int64
}

// CacheStats counts hits and misses since open.
type CacheStats struct {
	Hits, Misses  int64
	CapacityBytes int64
}

// OpenReadCache creates (or empties) the cache file at path with room for
// capacityBytes of clusters of slotSize bytes.
func OpenReadCache(fsys vfs.FS, path string, capacityBytes, slotSize int64) (*ReadCache, error) {
	slots := capacityBytes / slotSize
	if slots < cacheShards*4 {
		return nil, fmt.Errorf("flashcache: read cache of %d bytes holds %d clusters of %d bytes, want at least %d",
			capacityBytes, slots, slotSize, cacheShards*4)
	}
	f, err := fsys.OpenFile(path, os.O_CREATE|os.O_RDWR|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("flashcache: open read cache: %w", err)
	}
	if err := f.Truncate(slots * slotSize); err != nil {
		f.Close()
		return nil, fmt.Errorf("flashcache: size read cache: %w", err)
	}
	c := &ReadCache{file: f, read: f, slotSize: slotSize, seed: maphash.MakeSeed()}
	if m, err := f.MapRead(); err == nil {
		c.read = m
	}
	per := slots / cacheShards
	for i := int64(0); i < cacheShards; i++ {
		c.shards = append(c.shards, newCacheShard(i*per, per))
	}
	return c, nil
}

func (c *ReadCache) shard(k Key) *cacheShard {
	var h maphash.Hash
	h.SetSeed(c.seed)
	var b [16]byte
	for i := 0; i < 8; i++ {
		b[i] = byte(k.Owner >> (8 * i))
	}
	for i := 0; i < 4; i++ {
		b[8+i] = byte(k.Object >> (8 * i))
		b[12+i] = byte(k.Index >> (8 * i))
	}
	h.Write(b[:])
	return c.shards[h.Sum64()%cacheShards]
}

// Get copies the cluster into dst (slotSize bytes) if cached. The bytes
// must be verified by the caller (see the package doc).
func (c *ReadCache) Get(k Key, dst []byte) bool {
	slot, ok := c.shard(k).lookup(k)
	if !ok {
		c.misses.Add(1)
		return false
	}
	if _, err := c.read.ReadAt(dst[:c.slotSize], slot*c.slotSize); err != nil {
		c.misses.Add(1)
		return false
	}
	c.hits.Add(1)
	return true
}

// Put caches a cluster (len(data) == slotSize). Errors only lose caching.
func (c *ReadCache) Put(k Key, data []byte) {
	slot, ok := c.shard(k).insert(k)
	if !ok {
		return
	}
	if _, err := c.file.WriteAt(data[:c.slotSize], slot*c.slotSize); err != nil {
		c.shard(k).remove(k)
	}
}

// Forget drops a cluster that failed verification.
func (c *ReadCache) Forget(k Key) { c.shard(k).remove(k) }

// Stats returns hit and miss counts.
func (c *ReadCache) Stats() CacheStats {
	return CacheStats{Hits: c.hits.Load(), Misses: c.misses.Load(),
		CapacityBytes: int64(len(c.shards)) * c.shards[0].slots * c.slotSize}
}

// Close closes the cache file.
func (c *ReadCache) Close() error { return c.file.Close() }

// cacheShard is one S3-FIFO over a range of slots.
type cacheShard struct {
	mu       sync.Mutex
	base     int64
	slots    int64
	free     []int64
	index    map[Key]*cacheEntry
	small    fifo
	main     fifo
	smallCap int
	ghost    map[Key]uint64
	ghostQ   []ghostEntry
	ghostSeq uint64
}

type cacheEntry struct {
	key   Key
	slot  int64
	freq  uint8
	small bool
	dead  bool
}

type ghostEntry struct {
	key Key
	seq uint64
}

func newCacheShard(base, slots int64) *cacheShard {
	s := &cacheShard{base: base, slots: slots, index: map[Key]*cacheEntry{}, ghost: map[Key]uint64{}}
	s.smallCap = max(1, int(slots/10))
	for i := slots - 1; i >= 0; i-- {
		s.free = append(s.free, base+i)
	}
	return s
}

func (s *cacheShard) lookup(k Key) (int64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.index[k]
	if !ok {
		return 0, false
	}
	if e.freq < 3 {
		e.freq++
	}
	return e.slot, true
}

func (s *cacheShard) insert(k Key) (int64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.index[k]; ok {
		return e.slot, true
	}
	for len(s.free) == 0 {
		s.evictLocked()
	}
	slot := s.free[len(s.free)-1]
	s.free = s.free[:len(s.free)-1]
	e := &cacheEntry{key: k, slot: slot}
	if _, ghost := s.ghost[k]; ghost {
		delete(s.ghost, k)
		s.main.push(e)
	} else {
		e.small = true
		s.small.push(e)
	}
	s.index[k] = e
	return slot, true
}

func (s *cacheShard) remove(k Key) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.index[k]; ok {
		e.dead = true // left in its queue; skipped when it reaches the head
		delete(s.index, k)
		s.free = append(s.free, e.slot)
	}
}

func (s *cacheShard) evictLocked() {
	if s.small.len() >= s.smallCap || s.main.len() == 0 {
		for s.small.len() > 0 {
			e := s.small.pop()
			if e.dead {
				continue
			}
			if e.freq > 0 {
				e.small, e.freq = false, 0
				s.main.push(e)
				continue
			}
			s.dropLocked(e)
			s.ghostSeq++
			s.ghost[e.key] = s.ghostSeq
			s.ghostQ = append(s.ghostQ, ghostEntry{e.key, s.ghostSeq})
			for int64(len(s.ghost)) > s.slots {
				g := s.ghostQ[0]
				s.ghostQ = s.ghostQ[1:]
				if s.ghost[g.key] == g.seq {
					delete(s.ghost, g.key)
				}
			}
			return
		}
	}
	for s.main.len() > 0 {
		e := s.main.pop()
		if e.dead {
			continue
		}
		if e.freq > 0 {
			e.freq--
			s.main.push(e)
			continue
		}
		s.dropLocked(e)
		return
	}
}

func (s *cacheShard) dropLocked(e *cacheEntry) {
	delete(s.index, e.key)
	s.free = append(s.free, e.slot)
}

// fifo is a queue of entries backed by a slice that is compacted as it
// drains.
type fifo struct {
	q    []*cacheEntry
	head int
}

func (f *fifo) push(e *cacheEntry) { f.q = append(f.q, e) }
func (f *fifo) len() int           { return len(f.q) - f.head }
func (f *fifo) pop() *cacheEntry {
	e := f.q[f.head]
	f.q[f.head] = nil
	f.head++
	if f.head > 1024 && f.head*2 > len(f.q) {
		f.q = append(f.q[:0], f.q[f.head:]...)
		f.head = 0
	}
	return e
}
