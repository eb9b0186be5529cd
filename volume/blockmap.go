package volume

import (
	"encoding/binary"
	"slices"
	"sync/atomic"
)

// MetaStore is the embedded key-value store that holds the block map on
// local flash (badger in production): a cache that TLogs rebuild. Commit
// is atomic and survives a process crash; a power loss may forget the
// newest commits (all after some point, never a part of one) unless Sync
// came after them.
type MetaStore interface {
	Get(key []byte) (value []byte, found bool, err error)
	Commit(ops []MetaOp) error
	// Sync makes every commit so far survive a power loss. The engine
	// calls it only before a catalog change that relies on the block map
	// as stored (the end of a rollback or a flatten, a deletion).
	Sync() error
	// Scan calls fn for each key with prefix that is >= start, ascending,
	// until fn returns false. key and value are valid only during fn.
	Scan(prefix, start []byte, fn func(key, value []byte) bool) error
	Close() error
}

// MetaOp is one change in an atomic Commit; a nil Value deletes Key. It is
// an alias of a plain struct so that stores need not import this package.
type MetaOp = struct{ Key, Value []byte }

// loc is where one cluster's data lives: SCO 0 means unmapped (zeros).
type loc struct {
	SCO   uint32
	Slot  uint32
	CRC   uint32
	Owner uint16
}

const (
	pageEntries    = 64
	pageShift      = 6
	locSize        = 16
	pageBytes      = pageEntries * locSize
	metaKeyVDisk   = 'v' // v<id> -> vdiskRecord (JSON)
	metaKeyMarker  = 'w' // w<id> -> marker
	metaKeyPage    = 'm' // m<id><page> -> page
	metaKeyUpload  = 'u' // u<id> -> upload state
	metaKeyRecount = 'r' // r<id> present: recount allocated clusters at recovery
	metaKeyVersion = 's' // s<id><page><^epoch> -> the page as it was at the end of that epoch

	maxCommitPages = 1536 // pages per metadata commit: one badger transaction (see metastore)
)

// page is 64 consecutive entries of a vDisk's block map: the head's
// version, last changed in epoch.
type page struct {
	e      [pageEntries]loc
	mapped int32 // entries with SCO != 0
	epoch  uint32
	frozen []version // older versions a snapshot still reads, not yet stored
	dirty  bool
	ref    atomic.Bool // CLOCK reference bit: set by readers under VDisk.mu's read lock
	pins   int32       // writers between reservation and apply
}

// version is a page as it was at the end of an epoch.
type version struct {
	epoch  uint32
	mapped int32
	e      [pageEntries]loc
}

// pageBytes with the epoch trailer (epoch u32, 0 u32); a page without one
// is of epoch 0.
const versionedPageBytes = pageBytes + 8

// encode is the page's stored form. An empty page of epoch 0 is deleted
// from the store (no snapshot can read an older version of it); an empty
// page of a later epoch stays, so that snapshots do not read through it.
func (p *page) encode() []byte {
	if p.mapped == 0 && p.epoch == 0 {
		return nil
	}
	return encodeEntries(&p.e, p.epoch)
}

func encodeEntries(e *[pageEntries]loc, epoch uint32) []byte {
	n := pageBytes
	if epoch != 0 {
		n = versionedPageBytes
	}
	b := make([]byte, n)
	if epoch != 0 {
		binary.LittleEndian.PutUint32(b[pageBytes:], epoch)
	}
	for i, l := range e {
		o := b[i*locSize:]
		binary.LittleEndian.PutUint32(o, l.SCO)
		binary.LittleEndian.PutUint32(o[4:], l.Slot)
		binary.LittleEndian.PutUint32(o[8:], l.CRC)
		binary.LittleEndian.PutUint16(o[12:], l.Owner)
	}
	return b
}

func decodePage(b []byte) (*page, error) {
	p := &page{}
	switch len(b) {
	case pageBytes:
	case versionedPageBytes:
		p.epoch = binary.LittleEndian.Uint32(b[pageBytes:])
		if p.epoch == 0 || binary.LittleEndian.Uint32(b[pageBytes+4:]) != 0 {
			return nil, errCorruptf("block map page trailer")
		}
	default:
		return nil, errCorruptf("block map page of %d bytes, want %d or %d", len(b), pageBytes, versionedPageBytes)
	}
	for i := range p.e {
		o := b[i*locSize:]
		p.e[i] = loc{SCO: binary.LittleEndian.Uint32(o), Slot: binary.LittleEndian.Uint32(o[4:]),
			CRC: binary.LittleEndian.Uint32(o[8:]), Owner: binary.LittleEndian.Uint16(o[12:])}
		if o[14] != 0 || o[15] != 0 || (p.e[i].SCO == 0 && p.e[i] != loc{}) {
			return nil, errCorruptf("block map page entry %d", i)
		}
		if p.e[i].SCO != 0 {
			p.mapped++
		}
	}
	return p, nil
}

// set changes one entry and returns the change in mapped clusters.
func (p *page) set(i int, l loc) int64 {
	was := p.e[i].SCO != 0
	p.e[i] = l
	switch now := l.SCO != 0; {
	case now && !was:
		p.mapped++
		return 1
	case !now && was:
		p.mapped--
		return -1
	}
	return 0
}

func metaKey(kind byte, id uint64) []byte {
	k := make([]byte, 9)
	k[0] = kind
	binary.BigEndian.PutUint64(k[1:], id)
	return k
}

func pageKey(id, idx uint64) []byte {
	k := make([]byte, 17)
	k[0] = metaKeyPage
	binary.BigEndian.PutUint64(k[1:], id)
	binary.BigEndian.PutUint64(k[9:], idx)
	return k
}

// versionKey names version epoch of a page; epochs sort newest first, so
// a scan from versionKey(id, idx, k) finds the newest version <= k.
func versionKey(id, idx uint64, epoch uint32) []byte {
	k := make([]byte, 21)
	k[0] = metaKeyVersion
	binary.BigEndian.PutUint64(k[1:], id)
	binary.BigEndian.PutUint64(k[9:], idx)
	binary.BigEndian.PutUint32(k[17:], ^epoch)
	return k
}

func versionEpoch(k []byte) uint32 { return ^binary.BigEndian.Uint32(k[17:]) }

// minCachePages holds the pages of the largest I/O step (maxStepClusters,
// unaligned: 17 pages) several times over.
const minCachePages = 64

// pageCache is a vDisk's bounded in-memory window on its block map, with
// CLOCK eviction of clean, unpinned pages. Guarded by VDisk.mu.
type pageCache struct {
	pages map[uint64]*page
	ring  []uint64
	hand  int
	limit int
	// dirty lists the dirty pages' indices, each once: a write-back
	// visits them without walking the whole cache.
	dirty []uint64
}

func newPageCache(limit int) pageCache {
	return pageCache{pages: make(map[uint64]*page), limit: max(limit, minCachePages)}
}

func (c *pageCache) get(idx uint64) *page {
	p := c.pages[idx]
	if p != nil && !p.ref.Load() {
		p.ref.Store(true)
	}
	return p
}

// insert adds a loaded page, evicting a clean one if full. It returns false
// when every page is dirty or pinned: the caller must write back first.
func (c *pageCache) insert(idx uint64, p *page) bool {
	if _, ok := c.pages[idx]; ok {
		return true
	}
	if len(c.ring) < c.limit {
		c.ring = append(c.ring, idx)
		c.pages[idx] = p
		return true
	}
	for n := 0; n < 2*len(c.ring); n++ {
		c.hand = (c.hand + 1) % len(c.ring)
		victim := c.pages[c.ring[c.hand]]
		if victim.dirty || victim.pins > 0 {
			continue
		}
		if victim.ref.Load() {
			victim.ref.Store(false)
			continue
		}
		delete(c.pages, c.ring[c.hand])
		c.ring[c.hand] = idx
		c.pages[idx] = p
		return true
	}
	return false
}

func (c *pageCache) markDirty(idx uint64, p *page) {
	if !p.dirty {
		c.dirty = append(c.dirty, idx)
	}
	p.dirty = true
}

// sortedIn is the cached pages with index in [from, to], ascending. A
// range narrower than the cache is probed page by page (freeing one 1 MiB
// chunk of the file store looks at 4 pages, not at every cached one).
func (c *pageCache) sortedIn(from, to uint64) []uint64 {
	var idx []uint64
	if to-from < uint64(len(c.pages)) {
		for i := from; ; i++ {
			if _, ok := c.pages[i]; ok {
				idx = append(idx, i)
			}
			if i == to {
				return idx
			}
		}
	}
	for i := range c.pages {
		if i >= from && i <= to {
			idx = append(idx, i)
		}
	}
	slices.Sort(idx)
	return idx
}
