// The read path: head and snapshot reads through the block map, from the
// write buffer, the read cache or the backend.

package volume

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"vpool/flashcache"
)

// ReadAt reads len(p) bytes at off; unwritten ranges read as zeros. Like
// io.ReaderAt it returns io.EOF with fewer bytes at the end of the vDisk.
func (v *VDisk) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	start := time.Now()
	v.resizeMu.RLock()
	defer v.resizeMu.RUnlock()
	n, err := v.readAt(ctx, p, off, v.size.Load(), v.readClusters)
	if n > 0 {
		v.stats.reads.Add(1)
		v.stats.readBytes.Add(int64(n))
		v.stats.readNanos.Add(int64(time.Since(start)))
	}
	if err != nil && !errors.Is(err, io.EOF) {
		v.readFailed(ctx, off, len(p), err)
	}
	return n, err
}

// readAt reads [off, off+len(p)) of an image of size bytes whose whole
// clusters readClusters returns (the head or a snapshot).
func (v *VDisk) readAt(ctx context.Context, p []byte, off, size int64, readClusters func(context.Context, uint64, []byte) error) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("%w: read at %d", ErrOutOfRange, off)
	}
	if off >= size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), size-off))
	if n == 0 {
		return 0, nil
	}
	cs := v.cs
	c0 := uint64(off >> v.shift)
	c1 := uint64((off + int64(n) + cs - 1) >> v.shift)
	read := func(c0 uint64, dst []byte) error {
		for len(dst) > maxStepClusters*int(cs) {
			if err := readClusters(ctx, c0, dst[:maxStepClusters*cs]); err != nil {
				return err
			}
			c0 += maxStepClusters
			dst = dst[maxStepClusters*cs:]
		}
		return readClusters(ctx, c0, dst)
	}
	if off%cs == 0 && int64(n)%cs == 0 {
		if err := read(c0, p[:n]); err != nil {
			return 0, err
		}
	} else {
		buf := make([]byte, int64(c1-c0)*cs)
		if err := read(c0, buf); err != nil {
			return 0, err
		}
		copy(p[:n], buf[off-int64(c0)*cs:])
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// maxStepClusters bounds the clusters one step of I/O maps at once, so
// that their block-map pages always fit in the page cache together.
const maxStepClusters = 16 * pageEntries

// readClusters fills dst with whole clusters from c0, at most
// maxStepClusters of them, from the head's block map.
func (v *VDisk) readClusters(ctx context.Context, c0 uint64, dst []byte) error {
	cs := int(v.cs)
	n := len(dst) / cs
	var locsBuf [8]loc
	var segsBuf [8]*segment
	locs, segs := locsBuf[:0], segsBuf[:0]
	if n <= len(locsBuf) { // small reads, the common case, allocate nothing
		locs, segs = locsBuf[:n], segsBuf[:n]
	} else {
		locs, segs = make([]loc, n), make([]*segment, n)
	}
	err := v.withPages(ctx, c0, c0+uint64(n), true, func() {
		for i := 0; i < n; i++ {
			c := c0 + uint64(i)
			locs[i] = v.mu.pages.pages[c>>pageShift].e[c&(pageEntries-1)]
			segs[i] = v.refSegmentLocked(locs[i])
		}
	})
	if err != nil {
		return err
	}
	return v.fetch(ctx, locs, segs, dst)
}

// refSegmentLocked takes a reference on the local segment that holds l,
// if any (v.mu held, read or write).
func (v *VDisk) refSegmentLocked(l loc) *segment {
	if l.SCO == 0 {
		return nil
	}
	if l.Owner == 0 {
		if s := v.mu.segs[l.SCO]; s != nil {
			s.refs.Add(1)
			return s
		}
		return nil
	}
	// a clone's parent's SCO, maybe not uploaded yet (locks go from a
	// clone to its parents, never back)
	d := v.ancestor(l.Owner)
	if d == nil {
		return nil
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	if s := d.mu.segs[l.SCO]; s != nil {
		s.refs.Add(1)
		return s
	}
	return nil
}

// fetch reads the clusters at locs into dst: zeros, local segments (whose
// references it gives back) or the read cache and backend.
func (v *VDisk) fetch(ctx context.Context, locs []loc, segs []*segment, dst []byte) error {
	cs := int(v.cs)
	n := len(locs)
	defer func() {
		for _, s := range segs {
			if s != nil {
				s.refs.Add(-1)
			}
		}
	}()
	for i := 0; i < n; {
		l := locs[i]
		if l.SCO == 0 {
			clear(dst[i*cs : (i+1)*cs])
			i++
			continue
		}
		j := i + 1
		for j < n && locs[j].SCO == l.SCO && locs[j].Owner == l.Owner &&
			locs[j].Slot == locs[j-1].Slot+1 && (segs[j] == nil) == (segs[i] == nil) {
			j++
		}
		var err error
		if segs[i] != nil {
			err = v.readLocal(segs[i], locs[i:j], dst[i*cs:j*cs])
		} else {
			err = v.readRemote(ctx, locs[i:j], dst[i*cs:j*cs])
		}
		if err != nil {
			return err
		}
		i = j
	}
	return nil
}

func (v *VDisk) readLocal(s *segment, locs []loc, dst []byte) error {
	if _, err := s.reader(len(dst)).ReadAt(dst, int64(locs[0].Slot)*v.cs); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("volume: vDisk %s: read SCO %d: %w", FormatID(v.id), s.seq, err)
	}
	for k, l := range locs {
		if checksum(dst[k*int(v.cs):(k+1)*int(v.cs)]) != l.CRC {
			return errCorruptf("vDisk %s: SCO %d slot %d on local flash", FormatID(v.id), l.SCO, l.Slot)
		}
	}
	return nil
}

// readRemote reads clusters that left the write buffer: the read cache
// first, then only the missing clusters' bytes from the backend, adjacent
// ones in one request.
func (v *VDisk) readRemote(ctx context.Context, locs []loc, dst []byte) error {
	cs := int(v.cs)
	cache := v.pool.cache
	owner := v.ownerID(locs[0].Owner)
	miss := make([]bool, len(locs))
	for k, l := range locs {
		b := dst[k*cs : (k+1)*cs]
		key := flashcache.Key{Owner: owner, Object: l.SCO, Index: l.Slot}
		if cache != nil && cache.Get(key, b) {
			if checksum(b) == l.CRC {
				v.stats.cacheHits.Add(1)
				continue
			}
			cache.Forget(key) // overwritten while read, or bad: a miss
		}
		miss[k] = true
		v.stats.cacheMiss.Add(1)
	}
	for i := 0; i < len(locs); {
		if !miss[i] {
			i++
			continue
		}
		j := i + 1
		for j < len(locs) && miss[j] {
			j++
		}
		v.stats.backendR.Add(1)
		name := scoName(v.pool.cfg.Name, owner, locs[i].SCO)
		if err := v.pool.backend.GetRange(ctx, name, dst[i*cs:j*cs], int64(locs[i].Slot)*v.cs); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrBackendRead, name, err)
		}
		for k := i; k < j; k++ {
			b := dst[k*cs : (k+1)*cs]
			if checksum(b) != locs[k].CRC {
				return errCorruptf("vDisk %s: %s slot %d from the backend", FormatID(v.id), name, locs[k].Slot)
			}
			if cache != nil {
				cache.Put(flashcache.Key{Owner: owner, Object: locs[k].SCO, Index: locs[k].Slot}, b)
			}
		}
		i = j
	}
	return nil
}

// ownerID maps a block-map owner index to a vDisk id (clones read their
// ancestors' SCOs; index 0 is this vDisk, 1 its parent, and so on).
func (v *VDisk) ownerID(owner uint16) uint64 {
	if d := v.ancestor(owner); d != nil {
		return d.id
	}
	return 0 // a flattened clone has no such reference left
}

// ancestor is the vDisk n parents up (0: v itself), nil past the top.
func (v *VDisk) ancestor(n uint16) *VDisk {
	d := v
	for ; n > 0 && d != nil; n-- {
		if pr := d.parent.Load(); pr != nil {
			d = pr.v
		} else {
			d = nil
		}
	}
	return d
}
