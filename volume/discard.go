// Discard, unmap records and resize.

package volume

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"
)

// Discard makes [off, off+n) read as zeros. Whole clusters are unmapped;
// partial ones are zeroed in place.
func (v *VDisk) Discard(ctx context.Context, off, n int64) error {
	if err := v.writable(); err != nil {
		return err
	}
	v.resizeMu.RLock()
	defer v.resizeMu.RUnlock()
	size := v.size.Load()
	if off < 0 || n < 0 || off > size {
		return fmt.Errorf("%w: discard [%d, +%d) of %d bytes", ErrOutOfRange, off, n, size)
	}
	return v.discardLocked(ctx, off, min(off+n, size))
}

func (v *VDisk) discardLocked(ctx context.Context, off, end int64) error {
	cs := v.cs
	first := (off + cs - 1) / cs * cs
	last := end / cs * cs
	if first >= last { // within one cluster
		return v.writeLocked(ctx, make([]byte, end-off), off)
	}
	if off < first {
		if err := v.writeLocked(ctx, make([]byte, first-off), off); err != nil {
			return err
		}
	}
	if last < end {
		if err := v.writeLocked(ctx, make([]byte, end-last), last); err != nil {
			return err
		}
	}
	return v.unmapRange(ctx, uint64(first>>v.shift), uint64(last>>v.shift))
}

// unmapRange unmaps clusters [c0, c1): Unmap records, then every block-map
// page that exists in the range is cleared.
func (v *VDisk) unmapRange(ctx context.Context, c0, c1 uint64) error {
	if c0 >= c1 {
		return nil
	}
	held := v.stripes.lock(c0, c1, false, false, true, nil)
	defer v.stripes.unlock(held)
	finish, err := v.logRecords(unmapRecords(c0, c1))
	if err != nil {
		return err
	}
	// The records' ticket finishes only when the map is changed, so that
	// the watermark never passes an Unmap that the pages do not show yet.
	defer finish()
	idx, err := v.existingPages(c0>>pageShift, (c1-1)>>pageShift)
	if err != nil {
		return err
	}
	for _, pi := range idx {
		lo, hi := max(c0, pi<<pageShift), min(c1, (pi+1)<<pageShift)
		err := v.withPages(ctx, lo, hi, false, func() {
			v.applyLocked(record{Type: recUnmap, Cluster: lo, Count: uint32(hi - lo)})
		})
		if err != nil {
			return err
		}
		v.mu.Lock()
		dirty := len(v.mu.pages.dirty)
		soft, hard := v.dirtyMarksLocked()
		v.mu.Unlock()
		if err := v.afterApply(ctx, dirty, soft, hard); err != nil {
			return err
		}
	}
	return nil
}

func unmapRecords(c0, c1 uint64) []record {
	var recs []record
	for c := c0; c < c1; {
		n := min(c1-c, math.MaxUint32)
		recs = append(recs, record{Type: recUnmap, Cluster: c, Count: uint32(n)})
		c += n
	}
	return recs
}

// logRecords appends records that carry no data to the current TLog. The
// caller changes the map and then calls finish, which lets the watermark
// pass the records.
func (v *VDisk) logRecords(recs []record) (finish func(), err error) {
	v.mu.Lock()
	if v.mu.closed {
		v.mu.Unlock()
		return nil, ErrClosed
	}
	t := v.newTicketLocked()
	seg, pos, err := v.reserveRecsLocked(uint32(len(recs)))
	if err != nil {
		t.done = true
		v.advanceLocked()
		v.mu.Unlock()
		return nil, err
	}
	rw := tlogWrite{seg: seg, rec0: pos, recs: recs}
	seg.writers++
	v.mu.Unlock()
	err = v.doWrites(context.Background(), nil, []tlogWrite{rw})
	// A stream of unmaps or resizes keeps the vDisk busy as writes do: an
	// idle seal after each few records would fill flash with SCOs.
	v.lastWrite.Store(time.Now().UnixNano())
	done := func() {
		v.mu.Lock()
		t.done = true
		v.advanceLocked()
		v.mu.Unlock()
	}
	v.mu.Lock()
	seg.writers--
	v.mu.Unlock()
	if err != nil {
		done()
		return nil, err
	}
	return func() {
		done()
		v.completed.Add(1)
	}, nil
}

// existingPages lists the block-map pages in [p0, p1] that hold anything:
// cached ones and stored ones.
func (v *VDisk) existingPages(p0, p1 uint64) ([]uint64, error) {
	v.mu.Lock()
	cached := v.mu.pages.sortedIn(p0, p1)
	v.mu.Unlock()
	seen := map[uint64]bool{}
	out := cached
	for _, i := range cached {
		seen[i] = true
	}
	prefix := metaKey(metaKeyPage, v.id)
	err := v.pool.meta.Scan(prefix, pageKey(v.id, p0), func(k, _ []byte) bool {
		i := pageIndex(k)
		if i > p1 {
			return false
		}
		if !seen[i] {
			out = append(out, i)
		}
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("volume: vDisk %s: scan block map: %w", FormatID(v.id), err)
	}
	if pr := v.parent.Load(); pr != nil { // a clone also reads its parent's pages
		more, err := pr.v.anyPages(p0, p1)
		if err != nil {
			return nil, err
		}
		for _, i := range more {
			if !seen[i] {
				seen[i] = true
				out = append(out, i)
			}
		}
	}
	sortU64(out)
	return out, nil
}

// anyPages lists the pages in [p0, p1] that any version of the vDisk (or
// of its parents) holds: what a clone of it may read.
func (v *VDisk) anyPages(p0, p1 uint64) ([]uint64, error) {
	out, err := v.existingPages(p0, p1)
	if err != nil {
		return nil, err
	}
	err = v.pool.meta.Scan(metaKey(metaKeyVersion, v.id), versionKey(v.id, p0, 0)[:17], func(k, _ []byte) bool {
		i := pageIndex(k)
		if i > p1 {
			return false
		}
		if len(out) == 0 || out[len(out)-1] != i {
			out = append(out, i)
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	sortU64(out)
	return slices.Compact(out), nil
}

// Resize grows or shrinks the vDisk. Shrinking drops the data past the new
// end: growing again reads zeros there.
func (v *VDisk) Resize(ctx context.Context, size int64) error {
	if size < 0 || size > v.pool.cfg.MaxVDiskSize {
		return fmt.Errorf("%w: %d bytes (the maximum is %d)", ErrBadSize, size, v.pool.cfg.MaxVDiskSize)
	}
	if err := v.writable(); err != nil {
		return err
	}
	v.resizeMu.Lock()
	defer v.resizeMu.Unlock()
	old := v.size.Load()
	if size == old {
		return nil
	}
	if size < old {
		cs := v.cs
		if size%cs != 0 {
			if err := v.writeLocked(ctx, make([]byte, min(old, (size+cs-1)/cs*cs)-size), size); err != nil {
				return err
			}
		}
		if err := v.unmapRange(ctx, uint64((size+cs-1)/cs), uint64((old+cs-1)/cs)); err != nil {
			return err
		}
	}
	finish, err := v.logRecords([]record{{Type: recResize, Cluster: uint64(size)}})
	if err != nil {
		return err
	}
	v.size.Store(size)
	finish()
	return nil
}
