package volume

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"vpool/vfs"
)

// recoverVDisk brings one vDisk back: its settings from the metadata
// store (or, with local flash lost, from its newest manifest), its block
// map from the stored pages plus a replay of every TLog record after the
// stored marker (local TLog files first, the backend's copies otherwise).
// It returns nil for a vDisk that was being deleted (the deletion is
// finished) or that never got past creation.
func (p *Pool) recoverVDisk(ctx context.Context, id uint64, needParent func(uint64) error) (*VDisk, error) {
	var rec vdiskRecord
	var up uploadState
	var sm storedMarker
	hasMarker := false
	rb, _, ok, err := p.catalog.Get(metaKey(metaKeyVDisk, id))
	if err != nil {
		return nil, err
	}
	if ok {
		if err := json.Unmarshal(rb, &rec); err != nil {
			return nil, errCorruptf("vDisk record: %v", err)
		}
		if b, _, ok, err := p.catalog.Get(metaKey(metaKeyUpload, id)); err != nil {
			return nil, err
		} else if ok {
			if up, err = decodeUploadState(b); err != nil {
				return nil, err
			}
		}
		sm.size = rec.InitialSize
		if b, ok, err := p.meta.Get(metaKey(metaKeyMarker, id)); err != nil {
			return nil, err
		} else if ok {
			if sm, err = decodeMarker(b); err != nil {
				return nil, err
			}
			hasMarker = true
		}
	} else {
		man, err := p.latestManifest(ctx, id)
		if errors.Is(err, ErrNotFound) {
			// Not on the backend yet: its first TLog on local flash says
			// what it is; without that, it never got past creation.
			man, err = p.manifestFromLocalTLog(id)
			if errors.Is(err, ErrNotFound) {
				p.log.Warn("volume: removing local files of a vDisk that was never completed", "vdisk", FormatID(id))
				return nil, p.finishDelete(ctx, id)
			}
		}
		if err != nil {
			return nil, err
		}
		rec = vdiskRecord{ClusterSize: man.ClusterSize, SCOSize: man.SCOSize, InitialSize: man.Size,
			Created: man.Created, Deleting: man.Deleting, Template: man.Template,
			Epoch: man.Epoch, Snapshots: man.Snapshots, Dead: man.Dead, Parent: man.Parent}
		up = uploadState{UploadedThrough: man.UploadedThrough, ManifestGen: man.Generation}
		sm.size = man.Size
		rb, _ := json.Marshal(rec)
		if err := p.commitCatalog([]MetaOp{{Key: metaKey(metaKeyVDisk, id), Value: rb},
			{Key: metaKey(metaKeyUpload, id), Value: up.encode()}}); err != nil {
			return nil, err
		}
		p.log.Info("volume: rebuilding vDisk from the backend", "vdisk", FormatID(id),
			"tlogs", man.UploadedThrough, "manifest", man.Generation)
	}
	if rec.Deleting {
		p.log.Info("volume: finishing an interrupted delete", "vdisk", FormatID(id))
		return nil, p.finishDelete(ctx, id)
	}
	if err := checkGeometry(rec.ClusterSize, rec.SCOSize); err != nil {
		return nil, errCorruptf("vDisk record: %v", err)
	}
	if rec.Parent != nil { // a clone reads through its parent, even while it recovers
		pid, err := parseID(rec.Parent.ID)
		if err == nil {
			err = needParent(pid)
		}
		if err != nil {
			return nil, fmt.Errorf("clone of %s: %w", rec.Parent.ID, err)
		}
	}
	v, err := p.newVDisk(id, rec)
	if err != nil {
		return nil, err
	}
	v.size.Store(sm.size)
	if hasMarker {
		v.mu.allocated = sm.allocated
	}
	if sm.epoch == v.mu.epoch {
		v.mu.written = sm.written // else counted from zero by the replay
	}
	m := sm.pos
	v.mu.committed, v.mu.watermark = m, m
	v.mu.uploadedThrough, v.mu.syncedThrough, v.mu.manifestGen = up.UploadedThrough, up.SyncedThrough, up.ManifestGen
	v.mu.manifestThrough = up.UploadedThrough
	if rec.Rollback != nil { // interrupted: the block map first, then the TLogs after it
		v.log.Info("volume: finishing an interrupted rollback", "vdisk", FormatID(id), "epoch", rec.Rollback.Epoch)
		if err := v.rollbackPages(ctx, rec.Rollback.Epoch); err != nil {
			v.closeFiles()
			p.wb.Unregister(id)
			return nil, err
		}
		v.size.Store(rec.Rollback.Size)
		v.mu.recountPending = true
	}
	if _, ok, err := p.meta.Get(metaKey(metaKeyRecount, id)); err != nil {
		return nil, err
	} else if ok {
		v.mu.recountPending = true
	}
	if err := v.replayAll(ctx, m); err != nil {
		v.closeFiles()
		p.wb.Unregister(id)
		return nil, err
	}
	if rec.Rollback != nil {
		v.recMu.Lock()
		err := v.syncBlockMap() // replayAll stored the rolled-back map
		if err == nil {
			err = v.updateRecordLocked(func(r *vdiskRecord) { r.Rollback = nil })
		}
		v.recMu.Unlock()
		if err != nil {
			v.closeFiles()
			p.wb.Unregister(id)
			return nil, err
		}
	}
	return v, nil
}

func (v *VDisk) localTLogs() ([]uint32, error) {
	return vfs.ListSeq(v.pool.fs, v.tlogDir(), ".tlog")
}

func (v *VDisk) replayAll(ctx context.Context, m marker) error {
	local, err := v.localTLogs()
	if err != nil {
		return err
	}
	if local, err = v.dropEmptyTail(ctx, local); err != nil {
		return err
	}
	isLocal := map[uint32]bool{}
	last := v.mu.uploadedThrough
	for _, s := range local {
		isLocal[s] = true
		last = max(last, s)
	}
	// SCO files of TLogs that never got written, and of uploaded TLogs,
	// are not needed.
	if seqs, err := v.pool.wb.ListSCOs(v.id); err == nil {
		for _, s := range seqs {
			if !isLocal[s] || s <= v.mu.uploadedThrough {
				v.pool.wb.RemoveSCO(v.id, s)
			}
		}
	}
	// Local segments not yet uploaded are write-buffer contents again.
	for _, s := range local {
		if s <= v.mu.uploadedThrough {
			continue
		}
		seg := &segment{seq: s, sealed: true, synced: s <= v.mu.syncedThrough}
		if seg.tlog, err = v.pool.fs.OpenFile(v.tlogPath(s), os.O_RDWR, 0); err != nil {
			return v.ioErr("open TLog", s, err)
		}
		if seg.sco, err = v.pool.wb.OpenSCO(v.id, s); err != nil {
			if !errors.Is(err, vfs.ErrNotExist) {
				seg.tlog.Close()
				return v.ioErr("open SCO", s, err)
			}
			if seg.sco, err = v.scoFromBackend(ctx, s); err != nil {
				seg.tlog.Close()
				return err
			}
		}
		seg.mapSCO()
		v.mu.segs[s] = seg
	}
	if err := v.dropLostSnapshots(last); err != nil {
		return err
	}
	start := max(m.Seq, 1)
	// Segments before the marker are not replayed, but still need their
	// sizes for upload; they were flushed before the marker was stored.
	for s, seg := range v.mu.segs {
		if s < start {
			recs, err := v.readTLog(ctx, s, true)
			if err != nil {
				return err
			}
			v.sizeSegment(seg, recs)
		}
	}
	lastLog := time.Now()
	for s := start; s <= last; s++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		if time.Since(lastLog) > 2*time.Second {
			v.log.Info("volume: rebuilding block map", "vdisk", FormatID(v.id), "tlog", s, "of", last)
			lastLog = time.Now()
		}
		if v.isDead(s) { // undone by a rollback: sized for upload, never replayed
			if seg := v.mu.segs[s]; seg != nil {
				recs, err := v.readTLog(ctx, s, true)
				if err != nil {
					return err
				}
				v.sizeSegment(seg, recs)
			}
			continue
		}
		recs, err := v.readTLog(ctx, s, isLocal[s])
		if err != nil {
			return err
		}
		v.mu.Lock()
		v.mu.replayEpoch = v.epochOfLocked(s)
		v.mu.Unlock()
		seg := v.mu.segs[s]
		if seg != nil && !seg.synced {
			if err := v.checkUnsynced(seg, recs); err != nil {
				return err
			}
		}
		from := 0
		if s == m.Seq {
			from = int(m.Rec)
		}
		for i := from; i < len(recs); i++ {
			if err := v.replay(ctx, recs[i]); err != nil {
				return err
			}
			v.mu.Lock()
			v.mu.watermark = marker{s, uint32(i + 1)}
			v.mu.Unlock()
		}
		if seg != nil {
			v.sizeSegment(seg, recs)
		}
	}
	if start <= last {
		v.log.Info("volume: vDisk recovered", "vdisk", FormatID(v.id), "tlogs_replayed", last-start+1,
			"size", v.size.Load(), "uploaded_through", v.mu.uploadedThrough)
	}
	cur, err := v.createSegment(last + 1)
	if err != nil {
		return err
	}
	v.mu.Lock()
	v.mu.cur = cur
	v.mu.segs[cur.seq] = cur
	v.mu.watermark = marker{last + 1, 0}
	for _, s := range local {
		if s <= v.mu.uploadedThrough {
			v.mu.tlogTrash = append(v.mu.tlogTrash, s)
		}
	}
	for s, seg := range v.mu.segs {
		if s != cur.seq {
			seg.reserved = int64(seg.slots) * v.cs
			v.pool.wb.Account(v.id, seg.reserved)
		}
	}
	segs := make([]*segment, 0, len(v.mu.segs))
	for _, seg := range v.mu.segs {
		segs = append(segs, seg)
	}
	v.mu.Unlock()
	if v.mu.recountPending {
		if err := v.recountAllocated(); err != nil {
			return err
		}
	}
	// What a killed process left in the page cache is replayed now, so it
	// must be durable before the block map that shows it is stored.
	for _, seg := range segs {
		if err := seg.sco.Sync(); err != nil {
			return v.ioErr("sync recovered SCO", seg.seq, err)
		}
		if err := seg.tlog.Sync(); err != nil {
			return v.ioErr("sync recovered TLog", seg.seq, err)
		}
	}
	return v.writeBack(ctx)
}

// dropEmptyTail removes the newest local TLogs that hold no record (the
// open one and the spare of a stopped or killed process): the next
// segment takes the first one's number. A vDisk's TLogs thus never
// include an empty one, of which a DTL, holding records, would know
// nothing: a restore from the backend and the DTL needs every TLog after
// the backend's last.
func (v *VDisk) dropEmptyTail(ctx context.Context, local []uint32) ([]uint32, error) {
	for len(local) > 0 {
		s := local[len(local)-1]
		if s <= v.mu.uploadedThrough || s <= v.mu.syncedThrough {
			break
		}
		recs, err := v.readTLog(ctx, s, true)
		if err != nil {
			return nil, err
		}
		for _, r := range recs {
			if r.Type != 0 {
				return local, nil
			}
		}
		if err := v.pool.fs.Remove(v.tlogPath(s)); err != nil && !errors.Is(err, vfs.ErrNotExist) {
			return nil, v.ioErr("remove empty TLog", s, err)
		}
		if err := v.pool.wb.RemoveSCO(v.id, s); err != nil && !errors.Is(err, vfs.ErrNotExist) {
			return nil, v.ioErr("remove empty SCO", s, err)
		}
		local = local[:len(local)-1]
	}
	return local, nil
}

// dropLostSnapshots forgets snapshots whose TLogs are gone: after the
// loss of local flash, those not yet on the backend. Keeping them would
// make them partial, and their epoch would claim the TLogs written next.
func (v *VDisk) dropLostSnapshots(last uint32) error {
	v.mu.Lock()
	var keep []SnapshotInfo
	for _, s := range v.mu.snaps {
		if s.TLog <= last {
			keep = append(keep, s)
		} else {
			v.log.Error("volume: snapshot lost with local flash (it was not on the backend yet)",
				"vdisk", FormatID(v.id), "snapshot", s.Name, "tlog", s.TLog, "last_tlog", last)
		}
	}
	lost := len(keep) != len(v.mu.snaps)
	v.mu.snaps = keep
	v.mu.Unlock()
	if !lost {
		return nil
	}
	v.recMu.Lock()
	defer v.recMu.Unlock()
	if err := v.updateRecordLocked(func(r *vdiskRecord) { r.Snapshots = keep }); err != nil {
		return err
	}
	v.mu.Lock()
	v.mu.manifestStale = true
	v.mu.Unlock()
	return nil
}

// recountAllocated counts mapped clusters over the whole block map, after
// a crash in the middle of a chunked write-back.
func (v *VDisk) recountAllocated() error {
	var n int64
	err := v.forEachPage(0, func(_ uint64, p *page) bool {
		n += int64(p.mapped)
		return true
	})
	if err != nil {
		return err
	}
	v.log.Info("volume: recounted allocated clusters", "vdisk", FormatID(v.id), "clusters", n)
	v.mu.Lock()
	v.mu.allocated = n
	v.mu.Unlock()
	return nil
}

// readTLog returns the records of TLog s, from local flash or the backend.
func (v *VDisk) readTLog(ctx context.Context, s uint32, local bool) ([]record, error) {
	var img []byte
	var err error
	if local {
		img, err = vfs.ReadFile(v.pool.fs, v.tlogPath(s))
		if err != nil {
			return nil, v.ioErr("read TLog", s, err)
		}
	} else if s <= v.mu.uploadedThrough {
		name := tlogName(v.pool.cfg.Name, v.id, s)
		n, err := v.pool.backend.Size(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrBackendRead, name, err)
		}
		img = make([]byte, n)
		if err := v.pool.backend.GetRange(ctx, name, img, 0); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrBackendRead, name, err)
		}
	} else {
		return nil, fmt.Errorf("%w: TLog %d of vDisk %s (uploaded through %d)", ErrMissingTLogs, s, FormatID(v.id), v.mu.uploadedThrough)
	}
	recs, _, err := parseTLog(img, v.id, s)
	if err != nil && local && s > v.mu.syncedThrough && len(img) < tlogHeaderSize+recordSize {
		// Never flushed (a flush syncs the header with the records), so it
		// holds nothing acknowledged: an empty TLog.
		v.log.Warn("volume: empty TLog with a torn header after a crash", "vdisk", FormatID(v.id), "tlog", s)
		var hdr [tlogHeaderSize]byte
		h := tlogHeader{VDisk: v.id, Seq: s, ClusterSize: uint32(v.cs), SCOSize: v.slots * uint32(v.cs)}
		h.encode(hdr[:])
		if seg := v.mu.segs[s]; seg != nil {
			if _, err := seg.tlog.WriteAt(hdr[:], 0); err != nil {
				return nil, v.ioErr("repair TLog header", s, err)
			}
		}
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("vDisk %s TLog %d: %w", FormatID(v.id), s, err)
	}
	return recs, nil
}

// checkUnsynced verifies, for a TLog that may not have been flushed
// before a power loss, that every write record's data is really in its
// SCO; a record whose data is not (it was never flushed) is erased, as if
// the write had not happened.
func (v *VDisk) checkUnsynced(seg *segment, recs []record) error {
	buf := make([]byte, v.cs)
	var zero [recordSize]byte
	for i, r := range recs {
		if r.Type != recWrite || r.Owner != 0 {
			continue
		}
		if n, _ := seg.sco.ReadAt(buf, int64(r.Count)*v.cs); n == len(buf) && checksum(buf) == r.DataCRC {
			continue
		}
		// short read or wrong data: the write never reached the SCO
		if _, err := seg.tlog.WriteAt(zero[:], tlogHeaderSize+int64(i)*recordSize); err != nil {
			return v.ioErr("erase unflushed TLog record", seg.seq, err)
		}
		recs[i] = record{}
	}
	return nil
}

// sizeSegment sets a recovered segment's slot and record counts.
func (v *VDisk) sizeSegment(seg *segment, recs []record) {
	n := len(recs)
	for n > 0 && recs[n-1].Type == 0 {
		n--
	}
	for i, r := range recs[:n] {
		switch r.Type {
		case recWrite:
			if r.SCO == seg.seq && r.Owner == 0 {
				seg.slots = max(seg.slots, r.Count+1)
			}
		case recSeal:
			seg.slots = max(seg.slots, r.Count)
			n = i // the seal record is rewritten at the same place
		}
	}
	seg.recs = uint32(n)
}

// replay applies one record during recovery.
func (v *VDisk) replay(ctx context.Context, r record) error {
	switch r.Type {
	case recWrite:
		return v.withPages(ctx, r.Cluster, r.Cluster+1, false, func() { v.applyLocked(r) })
	case recUnmap:
		c0, c1 := r.Cluster, r.Cluster+uint64(r.Count)
		idx, err := v.existingPages(c0>>pageShift, (c1-1)>>pageShift)
		if err != nil {
			return err
		}
		for _, pi := range idx {
			lo, hi := max(c0, pi<<pageShift), min(c1, (pi+1)<<pageShift)
			if err := v.withPages(ctx, lo, hi, false, func() {
				v.applyLocked(record{Type: recUnmap, Cluster: lo, Count: uint32(hi - lo)})
			}); err != nil {
				return err
			}
		}
	case recResize:
		v.size.Store(int64(r.Cluster))
	}
	return nil
}

// manifestFromLocalTLog rebuilds a vDisk's settings from its local TLog 1,
// for a vDisk whose metadata was lost before its first manifest reached
// the backend. Generation 0 makes the uploader write the first manifest.
func (p *Pool) manifestFromLocalTLog(id uint64) (*Manifest, error) {
	path := filepath.Join(p.cfg.Dir, "tlogs", FormatID(id), fmt.Sprintf("%010d.tlog", 1))
	b, err := vfs.ReadFile(p.fs, path)
	if errors.Is(err, vfs.ErrNotExist) {
		return nil, fmt.Errorf("%w: no manifest and no TLog 1 for %s", ErrNotFound, FormatID(id))
	}
	if err != nil {
		return nil, err
	}
	h, err := decodeTLogHeader(b)
	if err != nil || h.VDisk != id || h.Seq != 1 {
		return nil, fmt.Errorf("%w: no manifest, and TLog 1 of %s is unreadable: %v", ErrNotFound, FormatID(id), err)
	}
	if err := checkGeometry(int64(h.ClusterSize), int64(h.SCOSize)); err != nil {
		return nil, errCorruptf("TLog 1 of %s: %v", FormatID(id), err)
	}
	p.log.Warn("volume: rebuilding a vDisk from its local TLogs (metadata lost before its first upload)", "vdisk", FormatID(id))
	return &Manifest{VDisk: FormatID(id), ClusterSize: int64(h.ClusterSize), SCOSize: int64(h.SCOSize), Created: time.Now().UTC()}, nil
}

// latestManifest returns the newest readable manifest of a vDisk.
func (p *Pool) latestManifest(ctx context.Context, id uint64) (*Manifest, error) {
	names, err := p.backend.List(ctx, fmt.Sprintf("%s/%016x/manifest.", p.cfg.Name, id))
	if err != nil {
		return nil, fmt.Errorf("volume: list manifests of %s: %w", FormatID(id), err)
	}
	var errs []error
	for i := len(names) - 1; i >= 0; i-- {
		n, err := p.backend.Size(ctx, names[i])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		b := make([]byte, n)
		if err := p.backend.GetRange(ctx, names[i], b, 0); err != nil {
			errs = append(errs, err)
			continue
		}
		m, err := decodeManifest(b)
		if err != nil {
			p.log.Error("volume: unreadable manifest", "name", names[i], "err", err)
			errs = append(errs, err)
			continue
		}
		return m, nil
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("volume: no readable manifest for vDisk %s: %w", FormatID(id), errors.Join(errs...))
	}
	return nil, fmt.Errorf("%w: no manifest for %s", ErrNotFound, FormatID(id))
}

// scoFromBackend brings back SCO s of a local TLog whose SCO file is gone
// from flash, from its copy on the backend: recovery never reads a
// missing SCO as zeros. Without a copy, the vDisk is damaged.
func (v *VDisk) scoFromBackend(ctx context.Context, s uint32) (vfs.File, error) {
	name := scoName(v.pool.cfg.Name, v.id, s)
	size, err := v.pool.backend.Size(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("%w: SCO %d of vDisk %s is neither on local flash nor readable on the backend (%s): %w",
			ErrDamaged, s, FormatID(v.id), name, err)
	}
	v.log.Warn("volume: SCO missing from flash for a local TLog; copying it back from the backend",
		"vdisk", FormatID(v.id), "sco", s, "bytes", size)
	f, err := v.pool.wb.CreateSCO(v.id, s, int64(v.slots)*v.cs)
	if err != nil {
		return nil, v.ioErr("create SCO", s, err)
	}
	buf := make([]byte, min(size, 4<<20))
	for off := int64(0); off < size; off += int64(len(buf)) {
		b := buf[:min(int64(len(buf)), size-off)]
		if err := v.pool.backend.GetRange(ctx, name, b, off); err != nil {
			f.Close()
			return nil, fmt.Errorf("%w: %s: %w", ErrBackendRead, name, err)
		}
		if _, err := f.WriteAt(b, off); err != nil {
			f.Close()
			return nil, v.ioErr("write SCO", s, err)
		}
	}
	return f, nil // synced with the other recovered segments
}
