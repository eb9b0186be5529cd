package volume

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// ParentRef names the snapshot a clone reads through to.
type ParentRef struct {
	ID        string `json:"id"`        // the parent vDisk (FormatID)
	Epoch     uint32 `json:"epoch"`     // its snapshot's epoch
	Allocated int64  `json:"allocated"` // mapped clusters of the snapshot: the clone's at creation
}

type parentRef struct {
	v     *VDisk
	epoch uint32
	alloc int64 // ParentRef.Allocated
}

func (v *VDisk) parentRecord() *ParentRef {
	pr := v.parent.Load()
	if pr == nil {
		return nil
	}
	return &ParentRef{ID: FormatID(pr.v.id), Epoch: pr.epoch, Allocated: pr.alloc}
}

// Parent returns the vDisk and snapshot epoch a clone reads through to
// (nil for a vDisk that is not a clone).
func (v *VDisk) Parent() (*VDisk, uint32) {
	pr := v.parent.Load()
	if pr == nil {
		return nil, 0
	}
	return pr.v, pr.epoch
}

// inherited is page idx as a page never written reads: zeros, or in a
// clone the parent's snapshot version, its owners one level further up.
func (v *VDisk) inherited(idx uint64) (*page, error) {
	pr := v.parent.Load()
	if pr == nil {
		return &page{}, nil
	}
	e, err := pr.v.versionAt(idx, pr.epoch)
	if err != nil {
		return nil, err
	}
	p := &page{e: *e}
	for i := range p.e {
		if p.e[i].SCO != 0 {
			if p.e[i].Owner == 1<<16-1 {
				return nil, fmt.Errorf("volume: vDisk %s: clones nested too deep", FormatID(v.id))
			}
			p.e[i].Owner++
			p.mapped++
		}
	}
	return p, nil
}

// encodePage is the stored form of a head page. A clone keeps its empty
// pages: without one, the page would read through to the parent.
func (v *VDisk) encodePage(p *page) []byte {
	if b := p.encode(); b != nil || v.parent.Load() == nil {
		return b
	}
	return encodeEntries(&p.e, p.epoch)
}

// syncManifest writes a new manifest now when the newest one is out of
// date.
func (v *VDisk) syncManifest(ctx context.Context) error {
	v.mu.Lock()
	stale := v.mu.manifestStale || v.mu.manifestGen == 0
	v.mu.manifestStale = false
	up := v.mu.uploadedThrough
	v.mu.Unlock()
	if !stale {
		return nil
	}
	if err := v.writeManifest(ctx, up, false); err != nil {
		v.mu.Lock()
		v.mu.manifestStale = true
		v.mu.Unlock()
		return err
	}
	return v.saveUploadState()
}

// anyEpoch asks clonesOf for the clones of any snapshot.
const anyEpoch = ^uint32(0)

// Clones lists the clones that read through any snapshot of vDisk id.
func (p *Pool) Clones(id uint64) []uint64 { return p.clonesOf(id, anyEpoch) }

// clonesOf lists the clones that read through snapshot epoch of vDisk id.
func (p *Pool) clonesOf(id uint64, epoch uint32) []uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []uint64
	for cid, c := range p.mu.vdisks {
		if pr := c.parent.Load(); pr != nil && pr.v.id == id && (epoch == anyEpoch || pr.epoch == epoch) {
			out = append(out, cid)
		}
	}
	sortU64(out)
	return out
}

// ClonesError is ErrBusy because clones read through a snapshot (or, with
// no Snapshot, through the vDisk).
type ClonesError struct {
	Snapshot string
	Clones   []uint64
}

func (e *ClonesError) Error() string {
	ids := make([]string, len(e.Clones))
	for i, c := range e.Clones {
		ids[i] = FormatID(c)
	}
	what := "the vDisk"
	if e.Snapshot != "" {
		what = fmt.Sprintf("snapshot %q", e.Snapshot)
	}
	return fmt.Sprintf("%v: %s has clones: %s (flatten or delete them first)", ErrBusy, what, strings.Join(ids, ", "))
}

func (e *ClonesError) Is(target error) bool { return target == ErrBusy }

// TemplateSnapshot is the snapshot a template's clones read through to,
// taken at the first clone.
const TemplateSnapshot = "template"

// Clone makes a new vDisk that reads as snapshot name of parent (for a
// template, name may be empty) and then goes its own way: writes to
// either never show in the other. It copies nothing.
func (p *Pool) Clone(ctx context.Context, parent *VDisk, name string) (*VDisk, error) {
	if name == "" {
		if !parent.IsTemplate() {
			return nil, fmt.Errorf("%w: a snapshot name is needed to clone vDisk %s (not a template)", ErrBadName, FormatID(parent.id))
		}
		name = TemplateSnapshot
		if _, err := parent.CreateSnapshot(ctx, name); err != nil && !errors.Is(err, ErrExists) {
			return nil, err
		}
	}
	var snap *SnapshotInfo
	for _, s := range parent.Snapshots() {
		if s.Name == name {
			snap = &s
			break
		}
	}
	if snap == nil {
		return nil, fmt.Errorf("%w: %q of vDisk %s", ErrNoSnapshot, name, FormatID(parent.id))
	}
	// The backend must know the parent's snapshot and the clone's parent
	// before anyone relies on the clone: a rebuild needs both.
	if err := parent.syncManifest(ctx); err != nil {
		return nil, err
	}
	rec := vdiskRecord{ClusterSize: parent.cs, SCOSize: p.cfg.SCOSize, InitialSize: snap.Size, Created: time.Now().UTC(),
		Parent: &ParentRef{ID: FormatID(parent.id), Epoch: snap.Epoch, Allocated: snap.Allocated / parent.cs}}
	v, err := p.create(ctx, rec)
	if err != nil {
		return nil, err
	}
	if err := crashPoint("clone created"); err != nil {
		return nil, err
	}
	if err := v.syncManifest(ctx); err != nil {
		if derr := p.Delete(ctx, v.id); derr != nil {
			v.log.Error("volume: remove a clone whose manifest failed", "vdisk", FormatID(v.id), "err", derr)
		}
		return nil, err
	}
	v.log.Info("volume: clone created", "vdisk", FormatID(v.id), "parent", FormatID(parent.id), "snapshot", name)
	return v, nil
}

// FlattenProgress reports pages done of total.
type FlattenProgress func(done, total int)

// Flatten copies into the clone every cluster it still reads from a
// parent, page by page, while the clone is in use; then it drops the
// parent reference in one commit. Cut short (an error, a cancel, a
// crash), it is resumed by running it again: pages already copied are
// skipped. A clone with snapshots cannot be flattened (they read through
// the parent too).
func (v *VDisk) Flatten(ctx context.Context, progress FlattenProgress) error {
	if v.parent.Load() == nil {
		return nil
	}
	if err := v.writable(); err != nil {
		return err
	}
	v.recMu.Lock()
	defer v.recMu.Unlock()
	v.mu.RLock()
	nsnaps := len(v.mu.snaps)
	v.mu.RUnlock()
	if nsnaps > 0 {
		return fmt.Errorf("%w: clone %s has %d snapshots, which read through its parent: delete them first", ErrBusy, FormatID(v.id), nsnaps)
	}
	idx, err := v.existingPages(0, ^uint64(0)>>pageShift)
	if err != nil {
		return err
	}
	for n, pi := range idx {
		if err := ctx.Err(); err != nil {
			return err
		}
		if _, err := v.rewritePage(ctx, pi, func(l loc) bool { return l.Owner > 0 }); err != nil {
			return fmt.Errorf("volume: flatten clone %s, page %d: %w", FormatID(v.id), pi, err)
		}
		if progress != nil {
			progress(n+1, len(idx))
		}
		if err := crashPoint("flatten page"); err != nil {
			return err
		}
	}
	if err := v.writeBack(ctx); err != nil {
		return err
	}
	if err := crashPoint("flatten stored"); err != nil {
		return err
	}
	if err := v.syncBlockMap(); err != nil {
		return err
	}
	if err := v.updateRecordLocked(func(r *vdiskRecord) { r.Parent = nil }); err != nil {
		return err
	}
	if err := crashPoint("flatten record"); err != nil {
		return err
	}
	parent := v.parent.Swap(nil)
	v.mu.Lock()
	v.mu.manifestStale = true
	v.mu.Unlock()
	if err := v.syncManifest(ctx); err != nil {
		v.log.Warn("volume: flattened; the manifest follows at the next upload round", "vdisk", FormatID(v.id), "err", err)
	}
	v.log.Info("volume: clone flattened", "vdisk", FormatID(v.id), "parent", FormatID(parent.v.id), "pages", len(idx))
	return nil
}

// rewritePage writes again, as new data, the clusters of page pi whose
// location want picks (flatten: those a parent holds; scrub: those in
// SCOs to compact), under the stripe locks of the page, so that no write
// to them runs meanwhile.
func (v *VDisk) rewritePage(ctx context.Context, pi uint64, want func(loc) bool) (int64, error) {
	v.resizeMu.RLock()
	defer v.resizeMu.RUnlock()
	end := uint64((v.size.Load() + v.cs - 1) >> v.shift)
	c0, c1 := pi<<pageShift, min((pi+1)<<pageShift, end)
	if c0 >= c1 {
		return 0, nil
	}
	held := v.stripes.lock(c0, c1, false, false, true, nil)
	defer v.stripes.unlock(held)
	var pick [pageEntries]bool
	err := v.withPages(ctx, c0, c1, true, func() {
		p := v.mu.pages.pages[pi]
		for i := range pick {
			pick[i] = p.e[i].SCO != 0 && want(p.e[i])
		}
	})
	if err != nil {
		return 0, err
	}
	var written int64
	for i := 0; i < int(c1-c0); {
		if !pick[i] {
			i++
			continue
		}
		j := i + 1
		for j < int(c1-c0) && pick[j] {
			j++
		}
		buf := make([]byte, int64(j-i)*v.cs)
		if err := v.readClusters(ctx, c0+uint64(i), buf); err != nil {
			return written, err
		}
		if err := v.writeClusters(ctx, c0+uint64(i), buf); err != nil {
			return written, err
		}
		written += int64(len(buf))
		i = j
	}
	return written, nil
}
