package volume

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"
)

// SnapshotInfo describes one snapshot of a vDisk.
//
// Snapshot of epoch k holds every write applied before it was taken: the
// records of TLogs up to and including TLog. Its block map is, page by
// page, the newest version whose epoch is <= k.
type SnapshotInfo struct {
	Name    string    `json:"name"`
	Epoch   uint32    `json:"epoch"`
	TLog    uint32    `json:"tlog"` // the snapshot's last TLog
	Created time.Time `json:"created"`
	Size    int64     `json:"size"`    // the vDisk's size when it was taken
	Written int64     `json:"written"` // bytes written since the previous snapshot
	// Allocated is the bytes mapped when it was taken.
	Allocated int64 `json:"allocated"`
	// Owner is who the front end's file of the vDisk belonged to when the
	// snapshot was taken; nil when not given (snapshot files then take
	// the vDisk file's current owner).
	Owner *Owner `json:"owner,omitempty"`
	// OnBackend: every TLog of the snapshot (and its SCOs) is uploaded.
	// Set by Snapshots; not stored.
	OnBackend bool `json:"on_backend,omitempty"`
}

// Owner is a file's owner, group and permission bits.
type Owner struct {
	Uid  uint32 `json:"uid"`
	Gid  uint32 `json:"gid"`
	Mode uint32 `json:"mode"`
}

// MaxSnapshots is how many snapshots one vDisk may have.
const MaxSnapshots = 1024

// checkSnapshotName accepts names that can be file names and cannot be
// confused with a path@name argument.
func checkSnapshotName(name string) error {
	switch {
	case name == "", name == ".", name == "..", len(name) > 200,
		strings.ContainsAny(name, "/@\x00"), strings.TrimSpace(name) != name:
		return fmt.Errorf("%w: %q (1 to 200 bytes, no '/', '@' or NUL, no leading or trailing space, not . or ..)", ErrBadName, name)
	}
	return nil
}

// snapshotLocked finds snapshot name in v.mu.snaps.
func (v *VDisk) snapshotLocked(name string) (int, error) {
	if i := findSnapshot(v.mu.snaps, name); i >= 0 {
		return i, nil
	}
	return -1, fmt.Errorf("%w: %q of vDisk %s", ErrNoSnapshot, name, FormatID(v.id))
}

func findSnapshot(snaps []SnapshotInfo, name string) int {
	return slices.IndexFunc(snaps, func(s SnapshotInfo) bool { return s.Name == name })
}

// defaultSnapshotName is the UTC time, made unique among snaps.
func defaultSnapshotName(snaps []SnapshotInfo, now time.Time) string {
	base := now.UTC().Format("20060102-150405")
	name := base
	for i := 2; findSnapshot(snaps, name) >= 0; i++ {
		name = fmt.Sprintf("%s-%d", base, i)
	}
	return name
}

// manifestChanged makes the uploader write a new manifest soon.
func (v *VDisk) manifestChanged() {
	v.mu.Lock()
	v.mu.manifestStale = true
	v.mu.Unlock()
	select {
	case v.kick <- struct{}{}:
	default:
	}
}

// CreateSnapshot takes a snapshot named name (a UTC time stamp when empty).
// It is crash-consistent: it waits for the I/O in flight, so it holds
// every write acknowledged before it and none after. It copies nothing:
// it seals the open SCO and flushes, like Flush.
func (v *VDisk) CreateSnapshot(ctx context.Context, name string) (SnapshotInfo, error) {
	return v.CreateSnapshotOwned(ctx, name, nil)
}

// CreateSnapshotOwned is CreateSnapshot recording the owner of the
// vDisk's file (SnapshotInfo.Owner).
func (v *VDisk) CreateSnapshotOwned(ctx context.Context, name string, owner *Owner) (SnapshotInfo, error) {
	v.recMu.Lock()
	defer v.recMu.Unlock()
	v.mu.RLock()
	snaps := v.mu.snaps
	v.mu.RUnlock()
	if name == "" {
		name = defaultSnapshotName(snaps, time.Now())
	} else if err := checkSnapshotName(name); err != nil {
		return SnapshotInfo{}, err
	}
	if findSnapshot(snaps, name) >= 0 {
		return SnapshotInfo{}, fmt.Errorf("%w: snapshot %q of vDisk %s", ErrExists, name, FormatID(v.id))
	}
	if len(snaps) >= MaxSnapshots {
		return SnapshotInfo{}, fmt.Errorf("%w: vDisk %s has %d snapshots (the most it may have)", ErrBusy, FormatID(v.id), len(snaps))
	}
	v.resizeMu.Lock() // no I/O in flight: the snapshot's boundary is exact
	defer v.resizeMu.Unlock()
	v.mu.Lock()
	if v.mu.closed {
		v.mu.Unlock()
		return SnapshotInfo{}, ErrClosed
	}
	// The boundary is the end of a TLog.
	last, err := v.sealOpenLocked()
	if err != nil {
		v.mu.Unlock()
		return SnapshotInfo{}, err
	}
	info := SnapshotInfo{Name: name, Epoch: v.mu.epoch, TLog: last, Created: time.Now().UTC(),
		Size: v.size.Load(), Written: v.mu.written * v.cs, Allocated: v.mu.allocated * v.cs, Owner: owner}
	v.mu.Unlock()
	// Durable before it is recorded: a snapshot does not lose writes in
	// a power loss (the head keeps its usual promise too).
	if err := v.Flush(ctx); err != nil {
		return SnapshotInfo{}, err
	}
	next := append(slices.Clip(snaps), info)
	if err := v.updateRecordLocked(func(r *vdiskRecord) { r.Epoch, r.Snapshots = info.Epoch+1, next }); err != nil {
		return SnapshotInfo{}, err
	}
	v.mu.Lock()
	v.mu.epoch = info.Epoch + 1
	v.mu.snaps = next
	v.mu.written = 0
	v.mu.Unlock()
	v.manifestChanged()
	v.log.Info("volume: snapshot created", "vdisk", FormatID(v.id), "snapshot", name, "epoch", info.Epoch, "tlog", last)
	return info, nil
}

// Snapshots lists the vDisk's snapshots, oldest first.
func (v *VDisk) Snapshots() []SnapshotInfo {
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := slices.Clone(v.mu.snaps)
	for i := range out {
		out[i].OnBackend = out[i].TLog <= v.mu.uploadedThrough
	}
	return out
}

// DeleteSnapshot removes a snapshot, then the block-map versions only it
// read. It fails with ErrBusy while the snapshot is open for reading. The
// SCO space it held comes back at the next scrub.
func (v *VDisk) DeleteSnapshot(ctx context.Context, name string) error {
	v.recMu.Lock()
	defer v.recMu.Unlock()
	v.mu.Lock()
	i, err := v.snapshotLocked(name)
	if err != nil {
		v.mu.Unlock()
		return err
	}
	if n := v.mu.readers[v.mu.snaps[i].Epoch]; n > 0 {
		v.mu.Unlock()
		return fmt.Errorf("%w: snapshot %q of vDisk %s is open %d times", ErrBusy, name, FormatID(v.id), n)
	}
	if c := v.pool.clonesOf(v.id, v.mu.snaps[i].Epoch); len(c) > 0 {
		v.mu.Unlock()
		return &ClonesError{Snapshot: name, Clones: c}
	}
	next := slices.Delete(slices.Clone(v.mu.snaps), i, i+1)
	v.mu.Unlock()
	if err := v.updateRecordLocked(func(r *vdiskRecord) { r.Snapshots = next }); err != nil {
		return err
	}
	v.mu.Lock()
	v.mu.snaps = next
	v.mu.Unlock()
	v.manifestChanged()
	n, err := v.pruneVersions(ctx)
	if err != nil {
		return fmt.Errorf("volume: snapshot %q deleted, but its block map was not cleaned up (the next scrub will): %w", name, err)
	}
	v.log.Info("volume: snapshot deleted", "vdisk", FormatID(v.id), "snapshot", name, "map_versions_freed", n)
	return nil
}

// epochOfLocked is the epoch that the records of TLog seq belong to.
func (v *VDisk) epochOfLocked(seq uint32) uint32 {
	for _, s := range v.mu.snaps { // ascending by epoch and by TLog
		if seq <= s.TLog {
			return s.Epoch
		}
	}
	return v.mu.epoch
}

// applyEpochLocked is the epoch of the records being applied: the head's,
// or during recovery that of the TLog being replayed.
func (v *VDisk) applyEpochLocked() uint32 {
	if v.mu.cur == nil {
		return v.mu.replayEpoch
	}
	return v.mu.epoch
}

// seenLocked reports whether a snapshot reads epochs [from, to).
func (v *VDisk) seenLocked(from, to uint32) bool {
	for _, s := range v.mu.snaps {
		if s.Epoch >= from && s.Epoch < to {
			return true
		}
	}
	return false
}

// cowLocked is called before page p changes: the first change in a new
// epoch keeps the page's old version when a snapshot reads it.
func (v *VDisk) cowLocked(p *page) {
	e := v.applyEpochLocked()
	if p.epoch >= e {
		return // this epoch's version, or (replay after a lagging marker) a newer one
	}
	// An empty page of epoch 0 reads as zeros without a version, except
	// in a clone, where no version means the parent's.
	if (p.mapped != 0 || p.epoch != 0 || v.parent.Load() != nil) && v.seenLocked(p.epoch, e) {
		p.frozen = append(p.frozen, version{epoch: p.epoch, mapped: p.mapped, e: p.e})
	}
	p.epoch = e
}

// versionAt returns page idx as snapshot epoch k reads it.
func (v *VDisk) versionAt(idx uint64, k uint32) (*[pageEntries]loc, error) {
	v.mu.RLock()
	if p := v.mu.pages.pages[idx]; p != nil {
		if p.epoch <= k {
			e := p.e
			v.mu.RUnlock()
			return &e, nil
		}
		for i := len(p.frozen) - 1; i >= 0; i-- {
			if p.frozen[i].epoch <= k {
				e := p.frozen[i].e
				v.mu.RUnlock()
				return &e, nil
			}
		}
		v.mu.RUnlock()
	} else {
		// Not cached, so the stored head is current; a change from now on
		// is of a newer epoch than k and stores the version k reads.
		v.mu.RUnlock()
		head, err := v.loadPage(idx)
		if err != nil {
			return nil, err
		}
		if head.epoch <= k {
			return &head.e, nil
		}
	}
	var out *[pageEntries]loc
	var derr error
	err := v.pool.meta.Scan(versionKey(v.id, idx, 0)[:17], versionKey(v.id, idx, k), func(key, val []byte) bool {
		var p *page
		if p, derr = decodePage(val); derr == nil {
			out = &p.e
		}
		return false
	})
	if err = firstErr(err, derr); err != nil {
		return nil, fmt.Errorf("volume: vDisk %s: block map page %d of epoch %d: %w", FormatID(v.id), idx, k, err)
	}
	if out == nil { // the page had not been written then: zeros, or a clone's parent's
		p, err := v.inherited(idx)
		if err != nil {
			return nil, err
		}
		out = &p.e
	}
	return out, nil
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// headEpochOf is the epoch of the oldest version of page idx that is not
// stored yet: the version after the newest stored one.
func (v *VDisk) headEpochOf(idx uint64) (uint32, error) {
	v.mu.RLock()
	if p := v.mu.pages.pages[idx]; p != nil {
		e := p.epoch
		if len(p.frozen) > 0 {
			e = p.frozen[0].epoch
		}
		v.mu.RUnlock()
		return e, nil
	}
	v.mu.RUnlock()
	b, ok, err := v.pool.meta.Get(pageKey(v.id, idx))
	if err != nil || !ok {
		return ^uint32(0), err // no head: keep every version (never expected)
	}
	p, err := decodePage(b)
	if err != nil {
		return 0, err
	}
	return p.epoch, nil
}

// pruneVersions deletes the stored page versions that no snapshot reads:
// version e is read by snapshot j when e <= j < the next newer version's
// epoch. It is idempotent, so a crash part way only leaves garbage for the
// next run. It returns how many versions went.
func (v *VDisk) pruneVersions(ctx context.Context) (int, error) {
	v.mu.RLock()
	snaps := slices.Clone(v.mu.snaps)
	v.mu.RUnlock()
	read := func(from, to uint32) bool {
		for _, s := range snaps {
			if s.Epoch >= from && s.Epoch < to {
				return true
			}
		}
		return false
	}
	type ver struct {
		idx   uint64
		epoch uint32
	}
	var all []ver
	err := v.pool.meta.Scan(metaKey(metaKeyVersion, v.id), nil, func(k, _ []byte) bool {
		all = append(all, ver{pageIndex(k), versionEpoch(k)})
		return true
	})
	if err != nil {
		return 0, err
	}
	var ops []MetaOp
	deleted := 0
	commit := func() error {
		if len(ops) == 0 {
			return nil
		}
		err := v.pool.meta.Commit(ops)
		deleted += len(ops)
		ops = ops[:0]
		return err
	}
	for i := 0; i < len(all); {
		if err := ctx.Err(); err != nil {
			return deleted, err
		}
		idx := all[i].idx
		next, err := v.headEpochOf(idx)
		if err != nil {
			return deleted, err
		}
		for ; i < len(all) && all[i].idx == idx; i++ { // newest first
			e := all[i].epoch
			if !read(e, next) {
				ops = append(ops, MetaOp{Key: versionKey(v.id, idx, e)})
			}
			next = e
		}
		if len(ops) >= 1000 {
			if err := commit(); err != nil {
				return deleted, err
			}
		}
	}
	return deleted, commit()
}

// Snapshot is an open, read-only view of one snapshot.
type Snapshot struct {
	v    *VDisk
	info SnapshotInfo

	mu     sync.Mutex
	pages  map[uint64]*[pageEntries]loc // versions read so far (immutable)
	closed bool
}

// snapshotCachePages bounds an open snapshot's cache of block-map pages.
const snapshotCachePages = 512

// OpenSnapshot opens snapshot name for reading. While it is open the
// snapshot cannot be deleted.
func (v *VDisk) OpenSnapshot(name string) (*Snapshot, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	i, err := v.snapshotLocked(name)
	if err != nil {
		return nil, err
	}
	if v.mu.readers == nil {
		v.mu.readers = map[uint32]int{}
	}
	v.mu.readers[v.mu.snaps[i].Epoch]++
	return &Snapshot{v: v, info: v.mu.snaps[i], pages: map[uint64]*[pageEntries]loc{}}, nil
}

// Info describes the snapshot.
func (s *Snapshot) Info() SnapshotInfo { return s.info }

// Size is the vDisk's size when the snapshot was taken.
func (s *Snapshot) Size() int64 { return s.info.Size }

// Close ends the view.
func (s *Snapshot) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.v.mu.Lock()
	s.v.mu.readers[s.info.Epoch]--
	if s.v.mu.readers[s.info.Epoch] == 0 {
		delete(s.v.mu.readers, s.info.Epoch)
	}
	s.v.mu.Unlock()
	return nil
}

// ReadAt reads the snapshot's content, like VDisk.ReadAt.
func (s *Snapshot) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return 0, ErrClosed
	}
	n, err := s.v.readAt(ctx, p, off, s.info.Size, s.readClusters)
	if err != nil && !errors.Is(err, io.EOF) {
		s.v.readFailed(ctx, off, len(p), err)
	}
	return n, err
}

func (s *Snapshot) page(idx uint64) (*[pageEntries]loc, error) {
	s.mu.Lock()
	e := s.pages[idx]
	s.mu.Unlock()
	if e != nil {
		return e, nil
	}
	e, err := s.v.versionAt(idx, s.info.Epoch)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if len(s.pages) >= snapshotCachePages {
		clear(s.pages)
	}
	s.pages[idx] = e
	s.mu.Unlock()
	return e, nil
}

func (s *Snapshot) readClusters(ctx context.Context, c0 uint64, dst []byte) error {
	v := s.v
	n := len(dst) / int(v.cs)
	locs := make([]loc, n)
	for i := 0; i < n; {
		c := c0 + uint64(i)
		e, err := s.page(c >> pageShift)
		if err != nil {
			return err
		}
		for ; i < n && (c0+uint64(i))>>pageShift == c>>pageShift; i++ {
			locs[i] = e[(c0+uint64(i))&(pageEntries-1)]
		}
	}
	segs := make([]*segment, n)
	v.mu.RLock()
	for i, l := range locs {
		segs[i] = v.refSegmentLocked(l)
	}
	v.mu.RUnlock()
	return v.fetch(ctx, locs, segs, dst)
}
