package volume

import (
	"context"
	"fmt"
	"slices"
)

// TLogRange is TLogs From..To, both included.
type TLogRange struct {
	From uint32 `json:"from"`
	To   uint32 `json:"to"`
}

// crashHook, in tests, is called at each step of a rollback or flatten;
// an error stops it there, as a crash would.
var crashHook func(step string) error

func crashPoint(step string) error {
	if crashHook != nil {
		return crashHook(step)
	}
	return nil
}

// rollbackState is a rollback in progress, in the vDisk's record.
type rollbackState struct {
	Epoch uint32 `json:"epoch"` // of the snapshot rolled back to
	Size  int64  `json:"size"`
}

func (v *VDisk) isDead(seq uint32) bool {
	v.mu.RLock()
	defer v.mu.RUnlock()
	for _, r := range v.mu.dead {
		if seq >= r.From && seq <= r.To {
			return true
		}
	}
	return false
}

// Rollback makes the vDisk what snapshot name holds again; the snapshots
// taken after it are deleted. The caller makes sure nothing has the vDisk
// open for writing (I/O in flight is waited for).
//
// Order: the open SCO is sealed and the block map stored; the backend's
// manifest learns first that the TLogs since the snapshot are dead (so
// that a rebuild from the backend never replays them), then the record
// (with the rollback marked in progress); the block map is rewritten page
// by page, each page in one commit (idempotent: recovery finishes an
// interrupted rollback); last the mark is cleared.
func (v *VDisk) Rollback(ctx context.Context, name string) error {
	if err := v.writable(); err != nil {
		return err
	}
	v.recMu.Lock()
	defer v.recMu.Unlock()
	v.resizeMu.Lock()
	defer v.resizeMu.Unlock()
	v.rollbacks.Add(1)
	defer v.rollbacks.Add(1)
	v.mu.Lock()
	i, err := v.snapshotLocked(name)
	if err != nil {
		v.mu.Unlock()
		return err
	}
	target := v.mu.snaps[i]
	for _, s := range v.mu.snaps[i+1:] {
		if v.mu.readers[s.Epoch] > 0 {
			v.mu.Unlock()
			return fmt.Errorf("%w: snapshot %q, which the rollback would delete, is open", ErrBusy, s.Name)
		}
		if c := v.pool.clonesOf(v.id, s.Epoch); len(c) > 0 {
			v.mu.Unlock()
			return &ClonesError{Snapshot: s.Name, Clones: c}
		}
	}
	last, err := v.sealOpenLocked()
	v.mu.Unlock()
	if err != nil {
		return err
	}
	if err := v.writeBack(ctx); err != nil {
		return err
	}
	v.mu.Lock()
	old := struct {
		snaps []SnapshotInfo
		dead  []TLogRange
		epoch uint32
	}{v.mu.snaps, v.mu.dead, v.mu.epoch}
	snaps := slices.Clone(v.mu.snaps[:i+1])
	dead := slices.Clone(v.mu.dead)
	if last > target.TLog {
		dead = append(dead, TLogRange{target.TLog + 1, last})
	}
	v.mu.snaps, v.mu.dead, v.mu.epoch = snaps, dead, target.Epoch+1
	up := v.mu.uploadedThrough
	v.mu.Unlock()
	if err := v.writeManifest(ctx, up, false); err != nil {
		v.mu.Lock()
		v.mu.snaps, v.mu.dead, v.mu.epoch = old.snaps, old.dead, old.epoch
		v.mu.Unlock()
		return fmt.Errorf("volume: rollback of vDisk %s: the backend must learn of it first: %w", FormatID(v.id), err)
	}
	err = v.saveUploadState()
	if err == nil {
		err = v.updateRecordLocked(func(r *vdiskRecord) {
			r.Snapshots, r.Dead, r.Epoch = snaps, dead, target.Epoch+1
			r.Rollback = &rollbackState{Epoch: target.Epoch, Size: target.Size}
		})
	}
	if err == nil {
		err = crashPoint("rollback record")
	}
	if err != nil {
		return fmt.Errorf("volume: rollback of vDisk %s: %w", FormatID(v.id), err)
	}
	// The block map, from the store: every cached page is clean now.
	v.mu.Lock()
	v.mu.pages = newPageCache(v.pool.cfg.MapCachePages)
	v.mu.written = 0
	v.mu.Unlock()
	if err := v.rollbackPages(ctx, target.Epoch); err != nil {
		return fmt.Errorf("volume: rollback of vDisk %s (it is finished at the next start): %w", FormatID(v.id), err)
	}
	v.size.Store(target.Size)
	if err := v.recountAllocated(); err != nil {
		return err
	}
	if err := v.writeBack(ctx); err != nil {
		return err
	}
	if err := v.syncBlockMap(); err != nil {
		return err
	}
	if err := v.updateRecordLocked(func(r *vdiskRecord) { r.Rollback = nil }); err != nil {
		return err
	}
	v.log.Info("volume: rolled back", "vdisk", FormatID(v.id), "snapshot", name, "dead_tlogs", fmt.Sprintf("%d-%d", target.TLog+1, last))
	return nil
}

// rollbackPages rewrites the stored block map as snapshot epoch k reads
// it: each page's head becomes its newest version <= k (keeping that
// version's epoch), and the versions after k go. A page's changes are one
// commit, and running it again changes nothing more.
func (v *VDisk) rollbackPages(ctx context.Context, k uint32) error {
	versions := map[uint64][]uint32{} // page -> epochs, newest first
	var idxs []uint64
	err := v.pool.meta.Scan(metaKey(metaKeyVersion, v.id), nil, func(key, _ []byte) bool {
		idx := pageIndex(key)
		if versions[idx] == nil {
			idxs = append(idxs, idx)
		}
		versions[idx] = append(versions[idx], versionEpoch(key))
		return true
	})
	if err == nil {
		err = v.pool.meta.Scan(metaKey(metaKeyPage, v.id), nil, func(key, _ []byte) bool {
			if idx := pageIndex(key); versions[idx] == nil {
				idxs = append(idxs, idx)
			}
			return true
		})
	}
	if err != nil {
		return err
	}
	sortU64(idxs)
	var ops []MetaOp
	for n, idx := range idxs {
		if err := ctx.Err(); err != nil {
			return err
		}
		head, err := v.loadPage(idx)
		if err != nil {
			return err
		}
		for _, e := range versions[idx] {
			if e > k {
				ops = append(ops, MetaOp{Key: versionKey(v.id, idx, e)})
			}
		}
		if head.epoch > k { // the head is newer: its version <= k takes its place
			var nh *page
			if j := slices.IndexFunc(versions[idx], func(e uint32) bool { return e <= k }); j >= 0 {
				e := versions[idx][j]
				b, ok, err := v.pool.meta.Get(versionKey(v.id, idx, e))
				if err != nil {
					return err
				}
				if !ok {
					return errCorruptf("vDisk %s: version %d of block map page %d vanished", FormatID(v.id), e, idx)
				}
				if nh, err = decodePage(b); err != nil {
					return err
				}
				nh.epoch = e
				ops = append(ops, MetaOp{Key: versionKey(v.id, idx, e)},
					MetaOp{Key: pageKey(v.id, idx), Value: v.encodePage(nh)})
			} else { // not written then: zeros, or a clone's parent's
				ops = append(ops, MetaOp{Key: pageKey(v.id, idx)})
			}
		}
		if len(ops) >= 1000 || n == len(idxs)-1 || crashHook != nil {
			if len(ops) > 0 {
				if err := v.pool.meta.Commit(ops); err != nil {
					return err
				}
			}
			ops = ops[:0]
			if err := crashPoint("rollback page"); err != nil {
				return err
			}
		}
	}
	return nil
}
