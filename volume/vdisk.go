package volume

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"vpool/flashcache"
	"vpool/vfs"
)

// VDisk is one thin virtual disk. All methods are safe for concurrent use.
type VDisk struct {
	pool    *Pool
	id      uint64
	log     *slog.Logger
	cs      int64  // cluster size in bytes
	shift   uint   // log2(cs)
	slots   uint32 // clusters per SCO
	created time.Time

	size       atomic.Int64
	stripes    stripeLocks
	resizeMu   sync.RWMutex  // I/O holds it shared; Resize holds it alone
	flushSem   chan struct{} // one device flush at a time, others share it (a channel: a waiter can give up)
	wbSem      chan struct{} // one block-map write-back at a time (a channel: a waiter can give up)
	recMu      sync.Mutex    // one change of the stored record at a time (snapshots, template)
	upStateMu  sync.Mutex    // one commit of the upload state at a time (saveUploadState)
	manifestMu sync.Mutex    // one manifest write at a time
	completed  atomic.Uint64 // writes and map records done (Flush's target)
	rollbacks  atomic.Uint64 // counted at a rollback's start and end (Changes)
	durable    atomic.Uint64
	lastWrite  atomic.Int64              // newest write, unmap or resize (UnixNano): idleness
	template   atomic.Bool               // read-only for good
	parent     atomic.Pointer[parentRef] // clones: the snapshot read through to
	stream     ReplicaStream             // its DTL (nil: none); set by start
	dtlMode    string                    // the record's DTL mode (recMu)
	kick       chan struct{}             // wakes the uploader
	wbKick     chan struct{}             // wakes the block-map writer
	done       chan struct{}             // closed when the vDisk closes
	bg         sync.WaitGroup
	stats      ioStats

	mu struct {
		sync.RWMutex          // readers of the block map share it (withPages)
		allocated       int64 // mapped clusters
		pages           pageCache
		cur             *segment // open SCO and its TLog
		spare           *segment // the next one, made ahead of time
		creating        bool     // a goroutine is creating the next segment
		segCond         *sync.Cond
		segs            map[uint32]*segment
		tickets         []*ticket
		watermark       marker // during recovery: every record before it is applied
		committed       marker // the marker in the meta store
		uploadedThrough uint32
		syncedThrough   uint32
		manifestGen     uint64
		manifestThrough uint32   // UploadedThrough of the newest manifest written
		manifestStale   bool     // settings changed since the newest manifest
		tlogTrash       []uint32 // uploaded TLogs whose local files wait for the marker
		recountPending  bool     // the stored allocated count may be off (see writeBack)
		epoch           uint32   // the head's epoch: snapshots so far, counting deleted ones
		replayEpoch     uint32   // during recovery: the epoch of the TLog being replayed
		snaps           []SnapshotInfo
		dead            []TLogRange    // TLogs that a rollback undid: never replayed
		written         int64          // clusters written in the head's epoch
		readers         map[uint32]int // open Snapshot views by epoch
		closed          bool
		uploadErr       error
	}
}

// segment is an SCO and its TLog (same sequence number) on local flash.
type segment struct {
	seq      uint32
	sco      vfs.File
	scoMap   io.ReaderAt // the SCO mapped for small reads (nil: use sco)
	tlog     vfs.File
	slots    uint32       // SCO slots handed out
	recs     uint32       // TLog record positions handed out
	tlogCap  uint32       // record positions the TLog file has room for
	tlogMap  vfs.Mapping  // the TLog file, mapped (nil for recovered segments)
	writers  int32        // writes between reservation and apply
	refs     atomic.Int32 // reads and flushes in flight: the files stay open; taken under VDisk.mu, given back without it
	sealed   bool
	synced   bool // sealed, and SCO + TLog fsynced
	reserved int64
	// direct is the SCO opened with O_DIRECT for large writes (nil: none,
	// or closed once the segment is sealed and its writers are done).
	direct   vfs.File
	sealedAt time.Time
}

// marker is a position in the TLog stream: record Rec of TLog Seq.
type marker struct{ Seq, Rec uint32 }

func (m marker) less(o marker) bool { return m.Seq < o.Seq || m.Seq == o.Seq && m.Rec < o.Rec }

// ticket is one write's claim on TLog positions, queued in the order of
// its first reservation: start is a position at or before all of them.
type ticket struct {
	start marker
	done  bool
}

type ioStats struct {
	reads, writes, flushes         atomic.Int64
	readBytes, writtenBytes        atomic.Int64
	readNanos, writeNanos          atomic.Int64
	cacheHits, cacheMiss, backendR atomic.Int64
	readErrors                     atomic.Int64 // reads that failed (EIO to a client)
	readErrorLog, spareErrorLog    burstLog
	noSpaceLog                     burstLog
}

// burstLog lets the first of a burst of like errors be logged: at most
// one every burstLogEvery (the counts are in Stats).
type burstLog struct{ last atomic.Int64 } // UnixNano

const burstLogEvery = 10 * time.Second

func (b *burstLog) first() bool {
	now, last := time.Now().UnixNano(), b.last.Load()
	return now-last >= int64(burstLogEvery) && b.last.CompareAndSwap(last, now)
}

// readFailed counts a failed read and logs the first of a burst.
func (v *VDisk) readFailed(ctx context.Context, off int64, n int, err error) {
	if ctx.Err() != nil || errors.Is(err, ErrOutOfRange) || errors.Is(err, ErrClosed) {
		return // the caller's doing, not the data's
	}
	count := v.stats.readErrors.Add(1)
	if v.stats.readErrorLog.first() {
		v.log.Error("volume: read failed", "vdisk", FormatID(v.id), "offset", off, "bytes", n,
			"failed_reads", count, "err", err)
	}
}

// Dirty block-map pages: at the soft mark a background write-back
// starts; at dirtyHardLocked writers write back before going on. Each
// write-back costs a flush and stores every dirty page, so random writes
// want it rare: at half the cache rather than a fixed 4096 pages, 4 KiB
// random writes over a 4 GiB vDisk went 10% faster in-process.
//
// A vDisk whose whole map is in the cache has no soft mark: its dirty
// pages take no room that clean ones would not, so only the map writer's
// tick (every 5 s, which moves the recovery marker) writes them back.
// Random writes dirty pages all over the map and store each again at
// every write-back: 4 KiB random writes over NFS to a 4 GiB vDisk (its
// 16384 pages, the whole default cache) wrote back 8 MiB about every
// 0.6 s at half the cache, and badger's writes and compactions took a
// quarter of the daemon's CPU.
func (v *VDisk) dirtyMarksLocked() (soft, hard int) {
	hard = v.dirtyHardLocked()
	if v.mapPages() <= v.mu.pages.limit {
		return math.MaxInt, hard
	}
	return v.pool.cfg.MapCachePages / 2, hard
}

// mapPages is the number of block-map pages the vDisk's size spans.
func (v *VDisk) mapPages() int {
	return int((v.size.Load()>>v.shift + pageEntries - 1) >> pageShift)
}

// dirtyHardLocked keeps a quarter of the cache clean or free for misses to
// evict or fill, or as many slots as the vDisk has pages outside the
// cache when that is fewer: writers of a vDisk whose whole map is cached
// never wait for a write-back, which includes a flush, so that their speed
// is not the disk's sequential bandwidth (4 KiB random writes to a 1 GiB
// vDisk in-process: about 100k/s waiting at three quarters, as the
// flushes wrote the SCOs out).
func (v *VDisk) dirtyHardLocked() int {
	c := &v.mu.pages
	outside := max(0, v.mapPages()-len(c.pages)) // 0 with pages past a shrunk end still cached
	return c.limit - min(c.limit/4, outside)
}

// ID returns the vDisk's id.
func (v *VDisk) ID() uint64 { return v.id }

// Size returns the vDisk's size in bytes.
func (v *VDisk) Size() int64 { return v.size.Load() }

// Changes counts the changes to what the vDisk reads: writes, unmaps,
// resizes and rollbacks. A write or unmap is counted (in completed) after
// reads show it and before it returns; a rollback both when it starts and
// when it ends. So data read after Changes returned g is still what the
// vDisk holds if Changes returns g again, except for changes still in
// progress. (Both counters only grow, so their sum moves when either does.)
func (v *VDisk) Changes() uint64 { return v.completed.Load() + v.rollbacks.Load() }

// ClusterSize returns the mapping unit in bytes.
func (v *VDisk) ClusterSize() int64 { return v.cs }

// Allocated returns the bytes of mapped clusters (st_blocks).
func (v *VDisk) Allocated() int64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.mu.allocated * v.cs
}

func isZero(b []byte) bool {
	for len(b) >= 8 {
		if b[0]|b[1]|b[2]|b[3]|b[4]|b[5]|b[6]|b[7] != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// WriteAt writes p at off. Unaligned edges are read-modify-write of their
// clusters; all-zero clusters are unmapped instead of stored. When it
// returns nil the write survives a kill of the process; Flush makes it
// survive a power loss.
func (v *VDisk) WriteAt(ctx context.Context, p []byte, off int64) error {
	if err := v.writable(); err != nil {
		return err
	}
	start := time.Now()
	v.resizeMu.RLock()
	defer v.resizeMu.RUnlock()
	if err := v.writeLocked(ctx, p, off); err != nil {
		if flashcache.IsFull(err) && !errors.Is(err, ErrNoSpace) {
			err = fmt.Errorf("%w: vDisk %s: %w", ErrNoSpace, FormatID(v.id), err)
		}
		if errors.Is(err, ErrNoSpace) && v.stats.noSpaceLog.first() {
			v.log.Error("volume: write refused: no space left on local flash (it serves reads; writes go on when there is room)",
				"vdisk", FormatID(v.id), "err", err)
		}
		return err
	}
	v.stats.writes.Add(1)
	v.stats.writtenBytes.Add(int64(len(p)))
	v.stats.writeNanos.Add(int64(time.Since(start)))
	return nil
}

func (v *VDisk) writeLocked(ctx context.Context, p []byte, off int64) error {
	if len(p) == 0 {
		return nil
	}
	if off < 0 || off+int64(len(p)) > v.size.Load() {
		return fmt.Errorf("%w: write [%d, %d) of vDisk %s (%d bytes)", ErrOutOfRange, off, off+int64(len(p)), FormatID(v.id), v.size.Load())
	}
	cs := v.cs
	c0 := uint64(off >> v.shift)
	c1 := uint64((off + int64(len(p)) + cs - 1) >> v.shift)
	var heldBuf [24]int
	end := off + int64(len(p))
	held := v.stripes.lock(c0, c1, off%cs != 0, end%cs != 0, false, heldBuf[:0])
	defer v.stripes.unlock(held)
	buf := p
	if off%cs != 0 || int64(len(p))%cs != 0 {
		buf = make([]byte, int64(c1-c0)*cs)
		if off%cs != 0 {
			if err := v.readClusters(ctx, c0, buf[:cs]); err != nil {
				return fmt.Errorf("volume: read-modify-write: %w", err)
			}
		}
		if end%cs != 0 && (c1-1 != c0 || off%cs == 0) {
			if err := v.readClusters(ctx, c1-1, buf[len(buf)-int(cs):]); err != nil {
				return fmt.Errorf("volume: read-modify-write: %w", err)
			}
		}
		copy(buf[off-int64(c0)*cs:], p)
	}
	return v.writeClusters(ctx, c0, buf)
}

// plan is the I/O one write does once its positions are reserved.
type dataWrite struct {
	seg   *segment
	slot0 uint32
	data  []byte
}

type tlogWrite struct {
	seg  *segment
	rec0 uint32
	recs []record
}

// writeClusters stores whole clusters from c0; the caller holds their
// stripe locks.
func (v *VDisk) writeClusters(ctx context.Context, c0 uint64, buf []byte) error {
	cs := v.cs
	for len(buf) > maxStepClusters*int(cs) {
		if err := v.writeClusters(ctx, c0, buf[:maxStepClusters*int(cs)]); err != nil {
			return err
		}
		c0 += maxStepClusters
		buf = buf[maxStepClusters*int(cs):]
	}
	n := len(buf) / int(cs)
	// Small writes (the common case) plan on the stack.
	var crcArr [16]uint32
	var zeroArr [16]bool
	var dataArr [2]dataWrite
	var recwArr [2]tlogWrite
	var recArr [16]record
	crcs, zero := crcArr[:0], zeroArr[:0]
	if n > len(crcArr) {
		crcs, zero = make([]uint32, 0, n), make([]bool, 0, n)
	}
	crcs, zero = crcs[:n], zero[:n]
	dataCount := 0
	for i := 0; i < n; i++ {
		cl := buf[i*int(cs) : (i+1)*int(cs)]
		if isZero(cl) {
			zero[i] = true
		} else {
			crcs[i] = checksum(cl)
			dataCount++
		}
	}
	if dataCount > 0 {
		if err := v.pool.wb.Reserve(ctx, v.id, int64(dataCount)*cs); err != nil {
			return err
		}
	}
	datas, recw := dataArr[:0], recwArr[:0]
	v.mu.Lock()
	if v.cachedLocked(c0, c0+uint64(n)) {
		v.pinLocked(c0, c0+uint64(n))
	} else { // load the pages first
		v.mu.Unlock()
		if err := v.pinPages(ctx, c0, c0+uint64(n)); err != nil {
			if dataCount > 0 {
				v.pool.wb.Release(v.id, int64(dataCount)*cs)
			}
			return err
		}
		v.mu.Lock()
	}
	if v.mu.closed {
		v.unpinLocked(c0, c0+uint64(n))
		v.mu.Unlock()
		return ErrClosed
	}
	t := v.newTicketLocked()
	var err error
	var attached int64 // write-buffer bytes now accounted to segments
	addRec := func(r record) {
		seg, pos, rerr := v.reserveRecsLocked(1)
		if rerr != nil {
			err = rerr
			return
		}
		if len(recw) == 0 || recw[len(recw)-1].seg != seg {
			w := tlogWrite{seg: seg, rec0: pos}
			if len(recw) == 0 {
				w.recs = recArr[:0]
			}
			recw = append(recw, w)
			seg.writers++
		}
		recw[len(recw)-1].recs = append(recw[len(recw)-1].recs, r)
	}
	for i := 0; i < n && err == nil; {
		j := i + 1
		if zero[i] {
			for j < n && zero[j] {
				j++
			}
			addRec(record{Type: recUnmap, Cluster: c0 + uint64(i), Count: uint32(j - i)})
			i = j
			continue
		}
		// The SCO and its TLog need room for at least one more cluster.
		for err == nil && (v.mu.cur.slots == v.slots || v.mu.cur.recs+1 > v.mu.cur.tlogCap) {
			err = v.sealLocked()
		}
		if err != nil {
			break
		}
		seg := v.mu.cur
		for j < n && !zero[j] && j-i < int(v.slots-seg.slots) && j-i < int(seg.tlogCap-seg.recs) {
			j++
		}
		datas = append(datas, dataWrite{seg: seg, slot0: seg.slots, data: buf[i*int(cs) : j*int(cs)]})
		for k := i; k < j && err == nil; k++ {
			addRec(record{Type: recWrite, SCO: seg.seq, Cluster: c0 + uint64(k), Count: seg.slots, DataCRC: crcs[k]})
			seg.slots++
		}
		seg.reserved += int64(j-i) * cs
		attached += int64(j-i) * cs
		i = j
	}
	if unattached := int64(dataCount)*cs - attached; unattached > 0 {
		// reserved up front, but the write stopped before its slots: give
		// back what no segment accounts for
		defer v.pool.wb.Release(v.id, unattached)
	}
	v.mu.Unlock()

	if err == nil {
		err = v.doWrites(ctx, datas, recw)
	}

	v.mu.Lock()
	if err == nil {
		for _, rw := range recw {
			for _, r := range rw.recs {
				v.applyLocked(r)
			}
		}
	}
	for _, rw := range recw {
		rw.seg.writers--
	}
	v.unpinLocked(c0, c0+uint64(n))
	t.done = true
	v.advanceLocked()
	dirty := len(v.mu.pages.dirty)
	soft, hard := v.dirtyMarksLocked()
	v.mu.Unlock()
	if err != nil {
		return err
	}
	v.completed.Add(1)
	v.lastWrite.Store(time.Now().UnixNano())
	return v.afterApply(ctx, dirty, soft, hard)
}

// doWrites writes a write's data and TLog records to local flash, then
// ships them to the DTL (which, in sync mode, waits until it holds them).
func (v *VDisk) doWrites(ctx context.Context, datas []dataWrite, recw []tlogWrite) error {
	for _, d := range datas {
		if err := d.seg.writeData(d.data, int64(d.slot0)*v.cs); err != nil {
			return v.ioErr("write SCO", d.seg.seq, err)
		}
	}
	var one [recordSize]byte
	var encArr [2][]byte
	encoded := encArr[:0]
	for _, rw := range recw {
		b := one[:]
		if len(rw.recs) > 1 || len(recw) > 1 {
			b = make([]byte, len(rw.recs)*recordSize)
		}
		for i := range rw.recs {
			rw.recs[i].encode(b[i*recordSize:])
		}
		if _, err := rw.seg.tlogWriter().WriteAt(b, tlogHeaderSize+int64(rw.rec0)*recordSize); err != nil {
			return v.ioErr("write TLog", rw.seg.seq, err)
		}
		encoded = append(encoded, b)
	}
	return v.ship(ctx, datas, recw, encoded)
}

// mapReadMax is the largest read served from an SCO's mapping: a small
// random read costs a copy instead of a system call, while larger ones go
// through pread and its readahead.
const mapReadMax = 64 << 10

// mapSCO maps the segment's SCO for small reads; without a mapping they
// use pread.
func (s *segment) mapSCO() {
	if m, err := s.sco.MapRead(); err == nil {
		s.scoMap = m
	}
}

// reader is what reads n bytes of the SCO.
func (s *segment) reader(n int) io.ReaderAt {
	if s.scoMap != nil && n <= mapReadMax {
		return s.scoMap
	}
	return s.sco
}

// tlogWriter is where the segment's TLog is written: its mapping when it
// has one, the file otherwise.
func (s *segment) tlogWriter() io.WriterAt {
	if s.tlogMap != nil {
		return s.tlogMap
	}
	return s.tlog
}

func (v *VDisk) ioErr(what string, seq uint32, err error) error {
	if flashcache.IsFull(err) {
		return fmt.Errorf("%w: vDisk %s: %s %d: %w", ErrNoSpace, FormatID(v.id), what, seq, err)
	}
	return fmt.Errorf("volume: vDisk %s: %s %d: %w", FormatID(v.id), what, seq, err)
}

// afterApply keeps the dirty part of the block map bounded.
func (v *VDisk) afterApply(ctx context.Context, dirty, soft, hard int) error {
	switch {
	case dirty >= hard:
		return v.writeBack(ctx)
	case dirty >= soft:
		select {
		case v.wbKick <- struct{}{}:
		default:
		}
	}
	return nil
}

// applyLocked changes the block map as record r says.
func (v *VDisk) applyLocked(r record) {
	switch r.Type {
	case recWrite:
		p := v.mu.pages.pages[r.Cluster>>pageShift]
		v.cowLocked(p)
		if v.applyEpochLocked() == v.mu.epoch {
			v.mu.written++
		}
		v.mu.allocated += p.set(int(r.Cluster&(pageEntries-1)), loc{SCO: r.SCO, Slot: r.Count, CRC: r.DataCRC, Owner: r.Owner})
		v.mu.pages.markDirty(r.Cluster>>pageShift, p)
	case recUnmap:
		for c := r.Cluster; c < r.Cluster+uint64(r.Count); c++ {
			if p := v.mu.pages.pages[c>>pageShift]; p != nil {
				v.cowLocked(p)
				v.mu.allocated += p.set(int(c&(pageEntries-1)), loc{})
				v.mu.pages.markDirty(c>>pageShift, p)
			}
		}
	}
}

// newTicketLocked queues a ticket for a write about to reserve positions.
func (v *VDisk) newTicketLocked() *ticket {
	t := &ticket{start: marker{v.mu.cur.seq, v.mu.cur.recs}}
	v.mu.tickets = append(v.mu.tickets, t)
	return t
}

// advanceLocked drops the finished tickets at the head of the queue.
func (v *VDisk) advanceLocked() {
	i := 0
	for i < len(v.mu.tickets) && v.mu.tickets[i].done {
		i++
	}
	if i > 0 {
		v.mu.tickets = append(v.mu.tickets[:0], v.mu.tickets[i:]...)
	}
}

// watermarkLocked is a position such that every record before it is in
// the block map: the start of the oldest unfinished write, or the next
// free position when none is in flight.
func (v *VDisk) watermarkLocked() marker {
	switch {
	case v.mu.cur == nil: // recovering
		return v.mu.watermark
	case len(v.mu.tickets) > 0:
		return v.mu.tickets[0].start
	}
	return marker{v.mu.cur.seq, v.mu.cur.recs}
}

// withPages loads the block-map pages of clusters [c0, c1) and calls fn
// with v.mu held and all of them in the cache.
//
// With shared, fn runs under v.mu's read lock: it may only read the pages
// and segments (and take segment references, which are atomic).
func (v *VDisk) withPages(ctx context.Context, c0, c1 uint64, shared bool, fn func()) error {
	p0, p1 := c0>>pageShift, (c1-1)>>pageShift
	lock, unlock := v.mu.Lock, v.mu.Unlock
	if shared {
		lock, unlock = v.mu.RLock, v.mu.RUnlock
	}
	for {
		lock()
		var missing []uint64
		for i := p0; i <= p1; i++ {
			if v.mu.pages.get(i) == nil {
				missing = append(missing, i)
			}
		}
		if len(missing) == 0 {
			fn()
			unlock()
			return nil
		}
		unlock()
		loaded := make([]*page, len(missing))
		for k, idx := range missing {
			p, err := v.loadPage(idx)
			if err != nil {
				return err
			}
			loaded[k] = p
		}
		full := false
		v.mu.Lock()
		for k, idx := range missing {
			if !v.mu.pages.insert(idx, loaded[k]) {
				full = true
				break
			}
		}
		v.mu.Unlock()
		if full {
			if err := v.writeBack(ctx); err != nil {
				return err
			}
		}
	}
}

func (v *VDisk) loadPage(idx uint64) (*page, error) {
	b, ok, err := v.pool.meta.Get(pageKey(v.id, idx))
	if err != nil {
		return nil, fmt.Errorf("volume: vDisk %s: block map page %d: %w", FormatID(v.id), idx, err)
	}
	if !ok {
		return v.inherited(idx)
	}
	return decodePage(b)
}

// cachedLocked says whether the pages of clusters [c0, c1) are all in the
// cache (marking them referenced); the caller holds v.mu, shared or not.
func (v *VDisk) cachedLocked(c0, c1 uint64) bool {
	for i := c0 >> pageShift; i <= (c1-1)>>pageShift; i++ {
		if v.mu.pages.get(i) == nil {
			return false
		}
	}
	return true
}

func (v *VDisk) pinPages(ctx context.Context, c0, c1 uint64) error {
	return v.withPages(ctx, c0, c1, false, func() { v.pinLocked(c0, c1) })
}

func (v *VDisk) pinLocked(c0, c1 uint64) {
	for i := c0 >> pageShift; i <= (c1-1)>>pageShift; i++ {
		v.mu.pages.pages[i].pins++
	}
}

func (v *VDisk) unpinLocked(c0, c1 uint64) {
	for i := c0 >> pageShift; i <= (c1-1)>>pageShift; i++ {
		v.mu.pages.pages[i].pins--
	}
}

// Flush makes every write that returned before it durable on local flash.
// Concurrent flushes share one device flush. It never waits for the
// backend.
func (v *VDisk) Flush(ctx context.Context) error {
	target := v.completed.Load()
	if v.durable.Load() >= target {
		return nil
	}
	select {
	case v.flushSem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-v.flushSem }()
	if v.durable.Load() >= target {
		return nil
	}
	now := v.completed.Load()
	v.mu.Lock()
	var segs []*segment
	for _, s := range v.mu.segs {
		if !s.synced {
			s.refs.Add(1) // held so that the uploader does not close it meanwhile
			segs = append(segs, s)
		}
	}
	v.mu.Unlock()
	defer func() {
		for _, s := range segs {
			s.refs.Add(-1)
		}
	}()
	for _, s := range segs {
		if err := s.sco.Sync(); err != nil {
			return v.ioErr("flush SCO", s.seq, err)
		}
		if err := s.tlog.Sync(); err != nil {
			return v.ioErr("flush TLog", s.seq, err)
		}
	}
	if st := v.stream; st != nil {
		if err := st.Flush(ctx); err != nil {
			return fmt.Errorf("volume: vDisk %s: DTL flush: %w", FormatID(v.id), err)
		}
	}
	v.durable.Store(now)
	v.stats.flushes.Add(1)
	return nil
}

// SeekData returns the first offset >= off that holds data (a mapped
// cluster), or ErrOutOfRange (ENXIO) when there is none before the end.
func (v *VDisk) SeekData(ctx context.Context, off int64) (int64, error) {
	size := v.size.Load()
	if off < 0 || off >= size {
		return 0, fmt.Errorf("%w: seek data at %d of %d", ErrOutOfRange, off, size)
	}
	c := uint64(off >> v.shift)
	found := int64(-1)
	err := v.forEachPage(c>>pageShift, func(idx uint64, p *page) bool {
		for i := 0; i < pageEntries; i++ {
			cl := idx<<pageShift + uint64(i)
			if cl >= c && p.e[i].SCO != 0 {
				found = max(off, int64(cl)<<v.shift)
				return false
			}
		}
		return true
	})
	if err != nil {
		return 0, err
	}
	if found < 0 || found >= size {
		return 0, fmt.Errorf("%w: no data after %d", ErrOutOfRange, off)
	}
	return found, nil
}

// SeekHole returns the first offset >= off in a hole; the end of the vDisk
// counts as one.
func (v *VDisk) SeekHole(ctx context.Context, off int64) (int64, error) {
	size := v.size.Load()
	if off < 0 || off >= size {
		return 0, fmt.Errorf("%w: seek hole at %d of %d", ErrOutOfRange, off, size)
	}
	next := uint64(off >> v.shift) // first cluster not yet known to be mapped
	hole := int64(-1)
	err := v.forEachPage(next>>pageShift, func(idx uint64, p *page) bool {
		if idx > next>>pageShift {
			hole = int64(next) << v.shift
			return false
		}
		for i := int(next & (pageEntries - 1)); i < pageEntries; i++ {
			if p.e[i].SCO == 0 {
				hole = int64(idx<<pageShift+uint64(i)) << v.shift
				return false
			}
		}
		next = (idx + 1) << pageShift
		return true
	})
	if err != nil {
		return 0, err
	}
	if hole < 0 {
		hole = int64(next) << v.shift
	}
	return min(max(hole, off), size), nil
}

// forEachPage calls fn for every existing block-map page from index from,
// ascending, with the cached copy where there is one.
func (v *VDisk) forEachPage(from uint64, fn func(idx uint64, p *page) bool) error {
	if v.parent.Load() != nil {
		return v.forEachPageOfClone(from, fn)
	}
	v.mu.Lock()
	cached := v.mu.pages.sortedIn(from, math.MaxUint64)
	v.mu.Unlock()
	visit := func(idx uint64, stored []byte) (bool, error) {
		v.mu.Lock()
		p := v.mu.pages.pages[idx]
		var cp *page
		if p != nil {
			cp = &page{e: p.e, mapped: p.mapped} // a copy: fn runs without the lock
		}
		v.mu.Unlock()
		if p == nil {
			if stored == nil {
				return true, nil
			}
			var err error
			if cp, err = decodePage(stored); err != nil {
				return false, err
			}
		}
		if cp.mapped == 0 {
			return true, nil
		}
		return fn(idx, cp), nil
	}
	var ferr error
	stop := false
	prefix := metaKey(metaKeyPage, v.id)
	err := v.pool.meta.Scan(prefix, pageKey(v.id, from), func(k, val []byte) bool {
		idx := pageIndex(k)
		for len(cached) > 0 && cached[0] < idx {
			more, err := visit(cached[0], nil)
			cached = cached[1:]
			if err != nil || !more {
				ferr, stop = err, true
				return false
			}
		}
		if len(cached) > 0 && cached[0] == idx {
			cached = cached[1:]
		}
		more, err := visit(idx, val)
		if err != nil || !more {
			ferr, stop = err, true
			return false
		}
		return true
	})
	if err != nil {
		return err
	}
	if ferr != nil || stop {
		return ferr
	}
	for _, idx := range cached {
		more, err := visit(idx, nil)
		if err != nil || !more {
			return err
		}
	}
	return nil
}

// forEachPageOfClone is forEachPage for a clone, whose pages not written
// yet read through to its parent.
func (v *VDisk) forEachPageOfClone(from uint64, fn func(idx uint64, p *page) bool) error {
	idx, err := v.existingPages(from, math.MaxUint64>>pageShift)
	if err != nil {
		return err
	}
	for _, i := range idx {
		v.mu.Lock()
		var cp *page
		if p := v.mu.pages.pages[i]; p != nil {
			cp = &page{e: p.e, mapped: p.mapped}
		}
		v.mu.Unlock()
		if cp == nil {
			if cp, err = v.loadPage(i); err != nil {
				return err
			}
		}
		if cp.mapped != 0 && !fn(i, cp) {
			return nil
		}
	}
	return nil
}

// writable fails for a template.
func (v *VDisk) writable() error {
	if v.template.Load() {
		return fmt.Errorf("%w: vDisk %s is a template", ErrReadOnly, FormatID(v.id))
	}
	return nil
}

// IsTemplate reports whether the vDisk is a read-only template.
func (v *VDisk) IsTemplate() bool { return v.template.Load() }

// SetTemplate makes the vDisk a template: read-only for good (writes,
// discards and resizes fail with ErrReadOnly), the base that clones are
// made from. It is kept in the vDisk's record and, at the next upload
// round, in its manifest, so a restore from the backend keeps it.
// Writes already in progress may still finish.
func (v *VDisk) SetTemplate(ctx context.Context) error {
	v.recMu.Lock()
	defer v.recMu.Unlock()
	if v.template.Load() {
		return nil
	}
	if err := v.updateRecordLocked(func(r *vdiskRecord) { r.Template = true }); err != nil {
		return fmt.Errorf("volume: set template: %w", err)
	}
	v.template.Store(true)
	v.manifestChanged()
	return nil
}
