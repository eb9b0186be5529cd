package volume

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ScrubResult is what one scrub pass did.
type ScrubResult struct {
	SCOsScanned   int   `json:"scos_scanned"`   // uploaded SCOs looked at
	SCOsDeleted   int   `json:"scos_deleted"`   // no cluster of them was live
	BytesFreed    int64 `json:"bytes_freed"`    // their size
	PartlyLive    int   `json:"partly_live"`    // SCOs with garbage that a rewrite would free (not done yet)
	GarbageBytes  int64 `json:"garbage_bytes"`  // the garbage in them (taking them as full SCOs)
	SCOsRewritten int   `json:"scos_rewritten"` // partly live SCOs whose live clusters were written again
	// Waiting counts vDisks whose garbage waits for the next pass: what
	// made it garbage is not on the backend yet.
	Waiting int `json:"waiting_vdisks"`
	// ReclaimableBytes is the garbage this pass left: SCOs nothing reads
	// that it did not delete (a dry run, or waiting) and GarbageBytes;
	// Reclaimable splits it by vDisk (FormatID).
	ReclaimableBytes int64            `json:"reclaimable_bytes"`
	Reclaimable      map[string]int64 `json:"reclaimable_by_vdisk,omitempty"`
	Took             time.Duration    `json:"took_ns"`
}

// reclaimable adds n bytes of garbage of vDisk id.
func (r *ScrubResult) reclaimable(id uint64, n int64) {
	if r.Reclaimable == nil {
		r.Reclaimable = map[string]int64{}
	}
	r.Reclaimable[FormatID(id)] += n
	r.ReclaimableBytes += n
}

type scoKey struct {
	vdisk uint64
	seq   uint32
}

// Scrub frees the backend space that nothing reads any more: every SCO
// of the pool's vDisks none of whose clusters is mapped by a head, a
// snapshot's block-map version or a clone. Garbage comes from overwrites,
// discards, deleted snapshots and rolled-back history.
//
// Safety: the scan misses no reference that moves meanwhile (see
// countLive); a new reference can only be to an SCO not uploaded yet,
// which a scrub never touches. After the scan each vDisk's I/O is
// drained once, so that a read that looked its location up before an
// overwrite has finished before the SCO goes. Deleting is idempotent: a
// crash part way leaves garbage for the next pass.
//
// Partly live SCOs (live fraction under o.Threshold) are compacted: the
// clusters the head still maps there are written again, through the
// write path, as new data (a snapshot or clone that reads them keeps its
// own reference: the page's old version is kept as for any write). The
// old SCO is then garbage, freed once the new records are on the
// backend: by this pass when o.Wait (it seals and waits for the uploads),
// else by the next.
func (p *Pool) Scrub(ctx context.Context, o ScrubOptions) (ScrubResult, error) {
	start := time.Now()
	p.scrubMu.Lock()
	defer p.scrubMu.Unlock()
	var res ScrubResult
	pc := newPacer(o.Pace)
	var vds []*VDisk
	for _, id := range p.List() {
		if v, err := p.VDisk(id); err == nil {
			vds = append(vds, v)
		}
	}
	for id := range p.scrubMarks { // of vDisks deleted since
		if !slices.ContainsFunc(vds, func(v *VDisk) bool { return v.id == id }) {
			delete(p.scrubMarks, id)
		}
	}
	judged := func(v *VDisk) bool { return o.Only == 0 || v.id == o.Only }
	free := func() (*liveCount, error) {
		live, err := p.countLive(ctx, vds, pc, !o.DryRun)
		if err != nil {
			return nil, err
		}
		if !o.DryRun {
			if err := crashPoint("scrub counted"); err != nil {
				return nil, err
			}
			for _, v := range vds { // drain reads that may still use a dead location
				v.resizeMu.Lock()
				v.resizeMu.Unlock()
			}
		}
		for _, v := range vds {
			if judged(v) {
				if err := v.freeDead(ctx, live, &res, pc, o.DryRun); err != nil {
					return nil, err
				}
			}
		}
		return live, nil
	}
	live, err := free()
	if err != nil {
		return res, err
	}
	if o.DryRun {
		res.Took = time.Since(start)
		return res, nil
	}
	if o.Threshold > 0 {
		var compacted []*VDisk
		for _, v := range vds {
			if !judged(v) || v.IsTemplate() {
				continue
			}
			n, err := v.compact(ctx, live, o.Threshold, pc, o.Rate)
			if err != nil {
				return res, fmt.Errorf("volume: scrub: compact vDisk %s: %w", FormatID(v.id), err)
			}
			if n > 0 {
				res.SCOsRewritten += n
				compacted = append(compacted, v)
			}
		}
		if err := crashPoint("scrub compacted"); err != nil {
			return res, err
		}
		if o.Wait && len(compacted) > 0 {
			for _, v := range compacted {
				if err := v.Seal(); err != nil {
					return res, err
				}
				if err := v.WaitUploaded(ctx); err != nil {
					return res, err
				}
			}
			// what the rewrite made garbage, now that it is safe to free
			res.SCOsScanned, res.PartlyLive, res.GarbageBytes, res.Waiting = 0, 0, 0, 0
			res.ReclaimableBytes, res.Reclaimable = 0, nil
			if _, err := free(); err != nil {
				return res, err
			}
		}
	}
	res.Took = time.Since(start)
	p.log.Info("volume: scrub pass", "scos_scanned", res.SCOsScanned, "scos_deleted", res.SCOsDeleted,
		"bytes_freed", res.BytesFreed, "scos_rewritten", res.SCOsRewritten, "partly_live", res.PartlyLive,
		"garbage_bytes", res.GarbageBytes, "took", res.Took)
	return res, nil
}

// ScrubOptions says what a scrub pass does.
type ScrubOptions struct {
	Only      uint64  // judge only this vDisk's SCOs (the scan still covers all: clones read their parents')
	Pace      float64 // (0, 1]: the share of time it works; it sleeps the rest
	Threshold float64 // rewrite SCOs whose live fraction is under it; 0: never
	Wait      bool    // after rewriting, wait for the uploads and free the old SCOs in this pass
	Rate      int64   // bytes per second a compaction rewrites at most; 0: no limit
	// DryRun counts the garbage (ReclaimableBytes) and changes nothing.
	// Its scan takes no lock: a write meanwhile may make the count a
	// little off, which is what an estimate may be.
	DryRun bool
}

// countLive counts the live clusters of every SCO. A reference can
// move while it counts; the scan never misses one that moves:
//   - a write-back moves a page's old entries from the cache (or the
//     stored head) into a stored version, in one commit: the cache is
//     counted first, then the stored heads, then the stored versions,
//     each stored scan one consistent snapshot;
//   - writes add references only to SCOs not uploaded yet, which a scrub
//     does not judge; deletes of versions only drop references;
//   - a rollback moves entries from versions back into heads, the other
//     way: with lock, every vDisk's record lock keeps rollbacks (and
//     snapshot and clone changes) out meanwhile (the pacer's sleeps hold
//     it too). Writers never wait for it.
//
// It also notes, before it starts, the last SCO each vDisk has uploaded:
// only SCOs up to it are judged by this count. A later one may have been
// open during the count, and written to after its vDisk was counted.
func (p *Pool) countLive(ctx context.Context, vds []*VDisk, pc *pacer, lock bool) (*liveCount, error) {
	live := &liveCount{n: map[scoKey]int{}, through: map[uint64]uint32{}, last: map[uint64]uint32{}}
	for _, v := range vds {
		v.mu.RLock()
		live.through[v.id] = v.mu.uploadedThrough
		v.mu.RUnlock()
	}
	if lock {
		for _, v := range vds {
			v.recMu.Lock()
		}
		defer func() {
			for _, v := range vds {
				v.recMu.Unlock()
			}
		}()
	}
	for _, v := range vds {
		if err := v.countLive(ctx, live.n, pc); err != nil {
			return nil, fmt.Errorf("volume: scrub: vDisk %s: %w", FormatID(v.id), err)
		}
		v.mu.RLock()
		live.last[v.id] = v.lastTLogLocked()
		v.mu.RUnlock()
	}
	return live, nil
}

// liveCount is countLive's result: the live clusters per SCO, and the
// SCOs it may judge.
type liveCount struct {
	n       map[scoKey]int
	through map[uint64]uint32 // per vDisk: the last SCO uploaded when the count began
	// last is, per vDisk, its newest TLog when its count ended: every
	// record that made an SCO of it garbage in this count is in a TLog
	// up to it.
	last map[uint64]uint32
}

// scrubMark is what a pass left for the next one of a vDisk: the SCOs it
// found garbage and could not free yet, and the TLog that every record
// which made them garbage is in or before (liveCount.last).
type scrubMark struct {
	through uint32
	dead    map[uint32]bool
}

// compact rewrites the head's clusters in this vDisk's uploaded SCOs
// whose live fraction is under threshold, and returns how many SCOs.
func (v *VDisk) compact(ctx context.Context, live *liveCount, threshold float64, pc *pacer, rate int64) (int, error) {
	up := live.through[v.id]
	cand := map[uint32]bool{}
	for k, n := range live.n {
		if k.vdisk != v.id || k.seq > up || n == 0 || float64(n) >= threshold*float64(v.slots) {
			continue
		}
		// an SCO sealed early is smaller: judge it by its real size
		size, err := v.pool.backend.Size(ctx, scoName(v.pool.cfg.Name, v.id, k.seq))
		if err != nil {
			continue // gone already
		}
		if float64(n) < threshold*float64(size/v.cs) {
			cand[k.seq] = true
		}
	}
	if len(cand) == 0 {
		return 0, nil
	}
	var pages []uint64
	err := v.forEachPage(0, func(idx uint64, p *page) bool {
		for _, l := range p.e {
			if l.SCO != 0 && l.Owner == 0 && cand[l.SCO] {
				pages = append(pages, idx)
				break
			}
		}
		return true
	})
	if err != nil {
		return 0, err
	}
	start := time.Now()
	var written int64
	for _, pi := range pages {
		if err := pc.step(ctx, 1); err != nil {
			return 0, err
		}
		n, err := v.rewritePage(ctx, pi, func(l loc) bool { return l.Owner == 0 && cand[l.SCO] })
		if err != nil {
			return 0, err
		}
		if err := crashPoint("scrub rewrite"); err != nil {
			return 0, err
		}
		written += n
		if rate > 0 { // at most rate bytes a second
			if ahead := time.Duration(float64(written)/float64(rate)*float64(time.Second)) - time.Since(start); ahead > 0 {
				select {
				case <-time.After(ahead):
				case <-ctx.Done():
					return 0, ctx.Err()
				}
			}
		}
	}
	v.log.Info("volume: scrub rewrote partly live SCOs", "vdisk", FormatID(v.id), "scos", len(cand), "pages", len(pages))
	return len(cand), nil
}

// countLive adds the clusters that the vDisk's block map (head and
// versions, cached and stored) maps, by SCO.
func (v *VDisk) countLive(ctx context.Context, live map[scoKey]int, pc *pacer) error {
	add := func(e *[pageEntries]loc) {
		for _, l := range e {
			if l.SCO != 0 {
				if id := v.ownerID(l.Owner); id != 0 {
					live[scoKey{id, l.SCO}]++
				}
			}
		}
	}
	v.mu.RLock()
	cached := map[uint64]bool{}
	for idx, p := range v.mu.pages.pages {
		cached[idx] = true
		add(&p.e)
		for i := range p.frozen {
			add(&p.frozen[i].e)
		}
	}
	v.mu.RUnlock()
	var derr error
	scan := func(kind byte, skipCached bool) error {
		return v.pool.meta.Scan(metaKey(kind, v.id), nil, func(k, val []byte) bool {
			if derr = pc.step(ctx, 256); derr != nil {
				return false
			}
			if skipCached && cached[pageIndex(k)] {
				return true // the cached copy is newer
			}
			p, err := decodePage(val)
			if err != nil {
				derr = err
				return false
			}
			add(&p.e)
			return true
		})
	}
	if err := scan(metaKeyPage, true); err != nil {
		return err
	}
	if derr != nil {
		return derr
	}
	if err := scan(metaKeyVersion, false); err != nil {
		return err
	}
	return derr
}

// freeDead deletes the vDisk's uploaded SCOs that nothing maps (with
// dry, it only counts them).
func (v *VDisk) freeDead(ctx context.Context, live *liveCount, res *ScrubResult, pc *pacer, dry bool) error {
	judge := live.through[v.id]
	v.mu.RLock()
	up := v.mu.uploadedThrough
	local := map[uint32]*segment{}
	for s, seg := range v.mu.segs {
		local[s] = seg
	}
	// A rebuild from the backend replays only uploaded TLogs and reads
	// the newest manifest: an SCO that records after them made garbage
	// (or a snapshot deleted since) must stay until those are on the
	// backend too, or the rebuilt block map would name an SCO gone. Every
	// such record of this count is in a TLog up to live.last; of the
	// previous pass's, up to its mark. So garbage of a vDisk that is
	// always written is freed one pass after it is found, once the TLogs
	// that made it so are uploaded, not when every TLog is.
	manifestCurrent := !v.mu.manifestStale && v.mu.manifestGen > 0
	safe := manifestCurrent && up >= live.last[v.id]
	v.mu.RUnlock()
	prev := v.pool.scrubMarks[v.id]
	safeBefore := manifestCurrent && prev.dead != nil && up >= prev.through
	waiting := map[uint32]bool{}
	defer func() {
		if dry {
			return
		}
		v.pool.scrubMarks[v.id] = scrubMark{through: live.last[v.id], dead: waiting}
		if len(waiting) > 0 {
			res.Waiting++
			// The TLog that holds the mark must reach the backend for the
			// next pass to free them: seal it now if it is still open.
			v.mu.RLock()
			open := v.mu.cur.seq == live.last[v.id]
			v.mu.RUnlock()
			if open {
				if err := v.Seal(); err != nil {
					v.log.Warn("volume: scrub: seal", "vdisk", FormatID(v.id), "err", err)
				}
			}
		}
	}()
	prefix := fmt.Sprintf("%s/%016x/sco/", v.pool.cfg.Name, v.id)
	names, err := v.pool.backend.List(ctx, prefix)
	if err != nil {
		return fmt.Errorf("volume: scrub: list SCOs of %s: %w", FormatID(v.id), err)
	}
	slices.Sort(names)
	for _, name := range names {
		n, err := strconv.ParseUint(strings.TrimPrefix(name, prefix), 10, 32)
		seq := uint32(n)
		if err != nil || seq > judge {
			continue // not ours to judge, or not uploaded when the count began
		}
		res.SCOsScanned++
		if err := pc.step(ctx, 1); err != nil {
			return err
		}
		if n := live.n[scoKey{v.id, seq}]; n > 0 {
			if n < int(v.slots) {
				// an SCO sealed early is smaller: its garbage is what it holds
				if garbage := v.scoBytes(ctx, name) - int64(n)*v.cs; garbage > 0 {
					res.PartlyLive++
					res.GarbageBytes += garbage
					res.reclaimable(v.id, garbage)
				}
			}
			continue
		}
		if !safe && !(safeBefore && prev.dead[seq]) && !dry { // left for the next pass
			waiting[seq] = true
			res.reclaimable(v.id, v.scoBytes(ctx, name))
			continue
		}
		size, err := v.pool.backend.Size(ctx, name)
		if err != nil {
			if dry && errors.Is(err, ErrObjectNotFound) {
				continue // the vDisk was deleted meanwhile
			}
			return fmt.Errorf("volume: scrub: %s: %w", name, err)
		}
		if dry {
			res.reclaimable(v.id, size)
			continue
		}
		if seg := local[seq]; seg != nil { // uploaded, but still in the write buffer
			if err := v.dispose(ctx, seg); err != nil {
				return err
			}
		}
		if err := v.pool.backend.Delete(ctx, name); err != nil {
			return fmt.Errorf("volume: scrub: delete %s: %w", name, err)
		}
		if err := crashPoint("scrub delete"); err != nil {
			return err
		}
		res.SCOsDeleted++
		res.BytesFreed += size
	}
	return nil
}

// pacer makes a scrub work only a share of the time: every so many
// steps it sleeps in proportion to the time it worked since.
type pacer struct {
	pace  float64
	steps int
	since time.Time
}

func newPacer(pace float64) *pacer {
	if pace <= 0 || pace > 1 {
		pace = 1
	}
	return &pacer{pace: pace, since: time.Now()}
}

// step counts one unit of work; after every `every` of them it sleeps.
func (p *pacer) step(ctx context.Context, every int) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p.steps++
	if p.steps%every != 0 || p.pace >= 1 {
		return nil
	}
	worked := time.Since(p.since)
	select {
	case <-time.After(time.Duration(float64(worked) * (1 - p.pace) / p.pace)):
	case <-ctx.Done():
		return ctx.Err()
	}
	p.since = time.Now()
	return nil
}

// scoBytes is an uploaded SCO's size on the backend, or a full SCO's when
// the backend cannot say (an estimate is what it is used for).
func (v *VDisk) scoBytes(ctx context.Context, name string) int64 {
	if n, err := v.pool.backend.Size(ctx, name); err == nil {
		return n
	}
	return int64(v.slots) * v.cs
}
