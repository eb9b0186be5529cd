package volume

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"vpool/vfs"
)

// Backend object names (see ARCHITECTURE.md, "Backend layout").
func scoName(pool string, id uint64, seq uint32) string {
	return fmt.Sprintf("%s/%016x/sco/%010d", pool, id, seq)
}

func tlogName(pool string, id uint64, seq uint32) string {
	return fmt.Sprintf("%s/%016x/tlog/%010d", pool, id, seq)
}

func manifestName(pool string, id uint64, gen uint64) string {
	return fmt.Sprintf("%s/%016x/manifest.%020d", pool, id, gen)
}

func (v *VDisk) tlogDir() string { return filepath.Join(v.pool.cfg.Dir, "tlogs", FormatID(v.id)) }

func (v *VDisk) tlogPath(seq uint32) string {
	return filepath.Join(v.tlogDir(), fmt.Sprintf("%010d.tlog", seq))
}

// createSegment makes SCO seq (preallocated) and its TLog on local flash.
func (v *VDisk) createSegment(seq uint32) (*segment, error) {
	fsys := v.pool.fs
	if err := fsys.MkdirAll(v.tlogDir(), 0o700); err != nil {
		return nil, v.ioErr("create TLog dir", seq, err)
	}
	sco, err := v.pool.wb.CreateSCO(v.id, seq, int64(v.slots)*v.cs)
	if err != nil {
		return nil, v.ioErr("create SCO", seq, err)
	}
	tl, err := fsys.OpenFile(v.tlogPath(seq), os.O_CREATE|os.O_TRUNC|os.O_RDWR, 0o600)
	if err != nil {
		sco.Close()
		return nil, v.ioErr("create TLog", seq, err)
	}
	var hdr [tlogHeaderSize]byte
	h := tlogHeader{VDisk: v.id, Seq: seq, ClusterSize: uint32(v.cs), SCOSize: v.slots * uint32(v.cs)}
	h.encode(hdr[:])
	seg := &segment{seq: seq, sco: sco, tlog: tl, tlogCap: v.slots + tlogSpareRecords}
	seg.mapSCO()
	size := tlogHeaderSize + int64(seg.tlogCap+1)*recordSize // records and the seal
	err = tl.Allocate(0, size)
	if err == nil {
		err = tl.Truncate(size)
	}
	if err == nil {
		_, err = tl.WriteAt(hdr[:], 0)
	}
	if err == nil {
		seg.tlogMap, err = tl.Map(size)
	}
	if err != nil {
		sco.Close()
		tl.Close()
		return nil, v.ioErr("create TLog", seq, err)
	}
	// The header is durable before the name is: a TLog that exists after a
	// power loss always parses.
	if err := tl.Sync(); err != nil {
		sco.Close()
		tl.Close()
		return nil, v.ioErr("create TLog", seq, err)
	}
	if err := fsys.SyncDir(v.tlogDir()); err != nil {
		sco.Close()
		tl.Close()
		return nil, v.ioErr("create TLog", seq, err)
	}
	if d, err := v.pool.wb.OpenSCODirect(v.id, seq); err == nil {
		seg.direct = d
	} else {
		v.log.Debug("volume: no direct I/O for SCOs", "vdisk", FormatID(v.id), "err", err)
	}
	return seg, nil
}

// tlogSpareRecords is the room a TLog has for records beyond one per SCO
// slot (Unmap and Resize records). Its file is sized once and mapped; when
// it fills up, the segment is sealed early.
const tlogSpareRecords = 1024

// reserveRecsLocked hands out n record positions in the current TLog,
// sealing it first when they would not fit.
func (v *VDisk) reserveRecsLocked(n uint32) (*segment, uint32, error) {
	if n > tlogSpareRecords {
		return nil, 0, fmt.Errorf("volume: %d records do not fit a TLog", n)
	}
	for v.mu.cur.recs+n > v.mu.cur.tlogCap {
		if err := v.sealLocked(); err != nil {
			return nil, 0, err
		}
	}
	seg := v.mu.cur
	first := seg.recs
	seg.recs += n
	return seg, first, nil
}

// sealLocked closes the current SCO for writing and makes the next one
// current. Only one goroutine creates a segment at a time (v.mu.creating):
// while the background creates the spare, sealLocked waits for it, which
// releases v.mu; if another writer sealed meanwhile, it returns without
// sealing again, so callers re-check for room after it.
func (v *VDisk) sealLocked() error {
	cur := v.mu.cur
	for v.mu.spare == nil && v.mu.creating {
		v.mu.segCond.Wait()
	}
	if v.mu.cur != cur {
		return nil
	}
	next := v.mu.spare
	if next == nil { // no spare ready: create it here, with v.mu held
		var err error
		if next, err = v.createSegment(cur.seq + 1); err != nil {
			return err
		}
	}
	v.mu.spare = nil
	cur.sealed = true
	cur.sealedAt = time.Now()
	v.mu.segs[next.seq] = next
	v.mu.cur = next
	select {
	case v.kick <- struct{}{}:
	default:
	}
	return nil
}

// Seal seals the open SCO now (as a full one would be), so that it is
// uploaded; an empty one is left open.
func (v *VDisk) Seal() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	_, err := v.sealOpenLocked()
	return err
}

// lastTLogLocked is the newest TLog that holds records: the open one
// unless it is empty.
func (v *VDisk) lastTLogLocked() uint32 {
	if cur := v.mu.cur; cur.slots != 0 || cur.recs != 0 {
		return cur.seq
	}
	return v.mu.cur.seq - 1
}

// sealOpenLocked seals the open SCO unless it is empty, and returns the
// last TLog of what was written before: a TLog boundary.
func (v *VDisk) sealOpenLocked() (uint32, error) {
	last := v.lastTLogLocked()
	for v.mu.cur.seq == last {
		if err := v.sealLocked(); err != nil {
			return 0, err
		}
	}
	return last, nil
}

// pageImage is a dirty page as a write-back found it.
type pageImage struct {
	idx    uint64
	p      *page     // the cached page, pinned until it is stored
	frozen []version // its versions to store with it
	head   page      // its entries, mapped count and epoch (nothing else set)
}

// writeBack stores the dirty block-map pages with the watermark in one
// atomic commit, after the TLog records behind them are durable.
//
// Durability order: (1) snapshot dirty pages and the watermark, pinned so
// they stay cached; (2) Flush, so every record the snapshot reflects is on
// flash; (3) commit pages + marker. The store thus never holds a mapping
// whose TLog record could be lost, and replay from the marker is
// idempotent for whatever the pages already show.
func (v *VDisk) writeBack(ctx context.Context) error {
	select {
	case v.wbSem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-v.wbSem }()
	// The dirty pages are copied under the lock, all at one instant with
	// the marker, and encoded after it: writers wait for a copy of each
	// page, not for its encoding.
	v.mu.Lock()
	imgs := make([]pageImage, len(v.mu.pages.dirty))
	for i, idx := range v.mu.pages.dirty {
		p := v.mu.pages.pages[idx]
		img := &imgs[i]
		img.idx, img.p = idx, p
		img.head.e, img.head.mapped, img.head.epoch = p.e, p.mapped, p.epoch
		// The versions stay on the page until they are stored: a
		// snapshot reader finds them there meanwhile. They never change
		// once frozen; more may be appended.
		img.frozen = p.frozen[:len(p.frozen):len(p.frozen)]
		p.dirty = false
		p.pins++
	}
	v.mu.pages.dirty = v.mu.pages.dirty[:0]
	m := v.watermarkLocked()
	mark := storedMarker{pos: m, size: v.size.Load(), allocated: v.mu.allocated, epoch: v.mu.epoch, written: v.mu.written}.encode()
	v.mu.Unlock()
	// groups: a page's new versions and its head, never split between
	// commits (a head stored without the version it replaced would make a
	// snapshot read an older one)
	groups := make([][]MetaOp, len(imgs))
	for i := range imgs {
		img := &imgs[i]
		g := make([]MetaOp, 0, len(img.frozen)+1)
		for _, f := range img.frozen {
			g = append(g, MetaOp{Key: versionKey(v.id, img.idx, f.epoch), Value: encodeEntries(&f.e, f.epoch)})
		}
		groups[i] = append(g, MetaOp{Key: pageKey(v.id, img.idx), Value: v.encodePage(&img.head)})
	}
	unpin := func(failed bool) {
		v.mu.Lock()
		for i := range imgs {
			img := &imgs[i]
			img.p.pins--
			if failed {
				v.mu.pages.markDirty(img.idx, img.p)
			} else {
				img.p.frozen = img.p.frozen[len(img.frozen):]
			}
		}
		v.mu.Unlock()
	}
	if err := v.Flush(ctx); err != nil {
		unpin(true)
		return err
	}
	// One commit when it fits a transaction. A larger write-back goes in
	// chunks with the marker in the last; a crash between chunks leaves
	// pages newer than the marker (harmless: replay is idempotent) but the
	// stored allocated count off, so the first chunk sets a recount flag
	// that recovery obeys and the last chunk clears.
	recountKey := metaKey(metaKeyRecount, v.id)
	v.mu.Lock()
	clearFlag := v.mu.recountPending
	v.mu.Unlock()
	var ops []MetaOp
	for _, g := range groups {
		if len(ops) > 0 && len(ops)+len(g) > maxCommitPages {
			chunk := append([]MetaOp{{Key: recountKey, Value: []byte{1}}}, ops...)
			if err := v.pool.meta.Commit(chunk); err != nil {
				unpin(true)
				return fmt.Errorf("volume: vDisk %s: store block map: %w", FormatID(v.id), err)
			}
			ops = ops[:0]
			clearFlag = true
		}
		ops = append(ops, g...)
	}
	ops = append(ops, MetaOp{Key: metaKey(metaKeyMarker, v.id), Value: mark})
	if clearFlag {
		ops = append(ops, MetaOp{Key: recountKey})
	}
	if err := v.pool.meta.Commit(ops); err != nil {
		unpin(true)
		return fmt.Errorf("volume: vDisk %s: store block map: %w", FormatID(v.id), err)
	}
	if clearFlag {
		v.mu.Lock()
		v.mu.recountPending = false
		v.mu.Unlock()
	}
	unpin(false)
	v.mu.Lock()
	if v.mu.committed.less(m) {
		v.mu.committed = m
	}
	trash := v.trashTLogsLocked()
	v.mu.Unlock()
	v.removeTLogs(trash)
	return nil
}

// storedMarker is what the marker key holds: the replay position and the
// counters that belong with the stored block map.
type storedMarker struct {
	pos       marker
	size      int64
	allocated int64  // mapped clusters
	epoch     uint32 // the head's epoch when it was stored
	written   int64  // clusters written in that epoch
}

// encode writes 24 bytes, or 40 when there is an epoch or a written count.
func (m storedMarker) encode() []byte {
	n := 24
	if m.epoch != 0 || m.written != 0 {
		n = 40
	}
	b := make([]byte, n)
	binary.LittleEndian.PutUint32(b, m.pos.Seq)
	binary.LittleEndian.PutUint32(b[4:], m.pos.Rec)
	binary.LittleEndian.PutUint64(b[8:], uint64(m.size))
	binary.LittleEndian.PutUint64(b[16:], uint64(m.allocated))
	if n == 40 {
		binary.LittleEndian.PutUint32(b[24:], m.epoch)
		binary.LittleEndian.PutUint64(b[32:], uint64(m.written))
	}
	return b
}

func decodeMarker(b []byte) (storedMarker, error) {
	var m storedMarker
	if len(b) != 24 && len(b) != 40 {
		return m, errCorruptf("block map marker of %d bytes", len(b))
	}
	m.pos = marker{binary.LittleEndian.Uint32(b), binary.LittleEndian.Uint32(b[4:])}
	m.size, m.allocated = int64(binary.LittleEndian.Uint64(b[8:])), int64(binary.LittleEndian.Uint64(b[16:]))
	if len(b) == 40 {
		m.epoch, m.written = binary.LittleEndian.Uint32(b[24:]), int64(binary.LittleEndian.Uint64(b[32:]))
		if m.epoch == 0 && m.written == 0 || binary.LittleEndian.Uint32(b[28:]) != 0 {
			return m, errCorruptf("block map marker trailer")
		}
	}
	return m, nil
}

type uploadState struct {
	UploadedThrough, SyncedThrough uint32
	ManifestGen                    uint64
}

func (u uploadState) encode() []byte {
	b := make([]byte, 16)
	binary.LittleEndian.PutUint32(b, u.UploadedThrough)
	binary.LittleEndian.PutUint32(b[4:], u.SyncedThrough)
	binary.LittleEndian.PutUint64(b[8:], u.ManifestGen)
	return b
}

func decodeUploadState(b []byte) (uploadState, error) {
	if len(b) != 16 {
		return uploadState{}, errCorruptf("upload state of %d bytes", len(b))
	}
	return uploadState{binary.LittleEndian.Uint32(b), binary.LittleEndian.Uint32(b[4:]), binary.LittleEndian.Uint64(b[8:])}, nil
}

// doneContext is a context that ends when the vDisk closes.
func (v *VDisk) doneContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-v.done:
		case <-ctx.Done():
		}
		cancel()
	}()
	return ctx, cancel
}

// background runs the vDisk's uploader until close.
func (v *VDisk) background() {
	defer v.bg.Done()
	ctx, cancel := v.doneContext()
	defer cancel()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	backoff := time.Duration(0)
	for {
		select {
		case <-v.done:
			return
		case <-v.kick:
		case <-tick.C:
		}
		v.prepareSpare()
		v.sealIfIdle()
		if err := v.trimClean(ctx); err != nil && ctx.Err() == nil {
			v.log.Warn("volume: trim uploaded SCOs", "vdisk", FormatID(v.id), "err", err)
		}
		for {
			err := v.uploadNext(ctx)
			if errors.Is(err, errNothingToUpload) || ctx.Err() != nil {
				backoff = 0
				v.setUploadErr(nil)
				break
			}
			if err != nil {
				backoff = min(max(2*backoff, 100*time.Millisecond), 30*time.Second)
				v.setUploadErr(err)
				v.log.Warn("volume: upload failed, retrying", "vdisk", FormatID(v.id), "in", backoff, "err", err)
				select {
				case <-time.After(backoff):
				case <-v.done:
					return
				}
			}
		}
	}
}

// mapWriter writes the block map back when writers say it is dirty enough
// (and every few seconds), apart from the uploader so that a slow or
// absent backend never delays it.
func (v *VDisk) mapWriter() {
	defer v.bg.Done()
	ctx, cancel := v.doneContext()
	defer cancel()
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-v.done:
			return
		case <-v.wbKick:
		case <-tick.C:
			v.mu.Lock()
			dirty := len(v.mu.pages.dirty)
			v.mu.Unlock()
			if dirty == 0 {
				continue
			}
		}
		if err := v.writeBack(ctx); err != nil && ctx.Err() == nil {
			v.log.Error("volume: block map write-back failed", "vdisk", FormatID(v.id), "err", err)
		}
	}
}

func (v *VDisk) setUploadErr(err error) {
	v.mu.Lock()
	v.mu.uploadErr = err
	v.mu.Unlock()
}

// prepareSpare creates the next segment ahead of time, outside v.mu.
func (v *VDisk) prepareSpare() {
	v.mu.Lock()
	if v.mu.spare != nil || v.mu.creating || v.mu.closed {
		v.mu.Unlock()
		return
	}
	v.mu.creating = true
	seq := v.mu.cur.seq + 1
	v.mu.Unlock()
	s, err := v.createSegment(seq)
	v.mu.Lock()
	v.mu.creating = false
	if err == nil && v.mu.cur.seq+1 == seq && !v.mu.closed {
		v.mu.spare = s
		s = nil
	}
	v.mu.segCond.Broadcast()
	v.mu.Unlock()
	if err != nil && v.stats.spareErrorLog.first() {
		v.log.Warn("volume: cannot prepare the next SCO; writes that need it fail until there is room", "vdisk", FormatID(v.id), "err", err)
	}
	if s != nil { // cannot happen: nobody else creates while creating is set
		s.closeDirect()
		s.sco.Close()
		s.tlog.Close()
	}
}

func (v *VDisk) sealIfIdle() {
	idle := v.pool.cfg.SealIdle
	if idle <= 0 || time.Since(time.Unix(0, v.lastWrite.Load())) < idle {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.mu.closed || v.mu.cur.recs == 0 || v.mu.spare == nil {
		return
	}
	if err := v.sealLocked(); err != nil {
		v.log.Warn("volume: idle seal failed", "vdisk", FormatID(v.id), "err", err)
	}
}

var errNothingToUpload = errors.New("volume: nothing to upload")

// uploadNext uploads the oldest sealed segment not yet on the backend:
// SCO, then TLog, then a new manifest generation; only then the segment is
// disposable and leaves local flash.
func (v *VDisk) uploadNext(ctx context.Context) error {
	v.mu.Lock()
	if v.mu.manifestGen == 0 || v.mu.manifestStale { // a new vDisk, or new settings: tell the backend
		up := v.mu.uploadedThrough
		v.mu.manifestStale = false
		v.mu.Unlock()
		if err := v.writeManifest(ctx, up, false); err != nil {
			v.mu.Lock()
			v.mu.manifestStale = true
			v.mu.Unlock()
			return err
		}
		return v.saveUploadState()
	}
	seg := v.mu.segs[v.mu.uploadedThrough+1]
	if seg == nil || !seg.sealed {
		v.mu.Unlock()
		return errNothingToUpload
	}
	v.mu.Unlock()
	for v.deferUpload(seg) {
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	select {
	case v.pool.uploads <- struct{}{}:
		defer func() { <-v.pool.uploads }()
	case <-ctx.Done():
		return ctx.Err()
	}
	// Writers that reserved space in the segment before it was sealed
	// finish their I/O first.
	for {
		v.mu.Lock()
		w := seg.writers
		v.mu.Unlock()
		if w == 0 {
			break
		}
		select {
		case <-time.After(time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	seg.closeDirect() // sealed, and its writers are done
	if !seg.synced {
		// A partly filled SCO (an idle seal, a snapshot) gives back the
		// flash preallocated past its last slot. Reads stay below it.
		if used := int64(seg.slots) * v.cs; seg.slots < v.slots {
			if err := seg.sco.Truncate(used); err != nil {
				return v.ioErr("trim SCO", seg.seq, err)
			}
		}
		var b [recordSize]byte
		r := record{Type: recSeal, SCO: seg.seq, Count: seg.slots}
		r.encode(b[:])
		if _, err := seg.tlogWriter().WriteAt(b[:], tlogHeaderSize+int64(seg.recs)*recordSize); err != nil {
			return v.ioErr("seal TLog", seg.seq, err)
		}
		if err := seg.sco.Sync(); err != nil {
			return v.ioErr("sync SCO", seg.seq, err)
		}
		if err := seg.tlog.Sync(); err != nil {
			return v.ioErr("sync TLog", seg.seq, err)
		}
		v.mu.Lock()
		seg.synced = true
		v.mu.syncedThrough = max(v.mu.syncedThrough, seg.seq)
		v.mu.Unlock()
		if err := v.saveUploadState(); err != nil {
			return err
		}
	}
	be := v.pool.backend
	name := v.pool.cfg.Name
	if err := be.Put(ctx, scoName(name, v.id, seg.seq), seg.sco, int64(seg.slots)*v.cs); err != nil {
		return fmt.Errorf("volume: upload SCO %d: %w", seg.seq, err)
	}
	tsize := tlogHeaderSize + int64(seg.recs+1)*recordSize // records and the seal
	if err := be.Put(ctx, tlogName(name, v.id, seg.seq), seg.tlog, tsize); err != nil {
		return fmt.Errorf("volume: upload TLog %d: %w", seg.seq, err)
	}
	if err := v.writeManifest(ctx, seg.seq, false); err != nil {
		return err
	}
	v.mu.Lock()
	v.mu.uploadedThrough = seg.seq
	v.mu.Unlock()
	// The upload state is durable before the SCO may leave flash: a power
	// loss that forgot it would find a local TLog whose SCO is gone.
	if err := v.saveUploadState(); err != nil {
		return err
	}
	if v.stream != nil { // the manifest names the TLog: the DTL may let it go
		v.stream.Trim(seg.seq)
	}
	// Disposable now; it stays on flash while the clean budget allows,
	// so that recent writes still read locally.
	v.pool.wb.MarkClean(v.id, seg.reserved)
	return v.trimClean(ctx)
}

// Uploads give way to a burst of writes, as the kernel's writeback gives
// way to a writer until dirty pages pass a share of memory or grow old:
// while the vDisk was written in the last deferWhileWritten, the write
// buffer is under deferBelowFill full, and the SCO was sealed less than
// Config.UploadDefer ago, its upload waits. Uploads on the same flash
// device as the write buffer otherwise halve a burst's bandwidth, and
// encoding takes the CPU the writer needs; in steady writing the buffer's
// fill or the SCO's age starts them, long before throttling would.
const (
	deferWhileWritten  = 100 * time.Millisecond
	deferBelowFill     = 0.25
	DefaultUploadDefer = 5 * time.Second
)

func (v *VDisk) deferUpload(seg *segment) bool {
	return time.Since(time.Unix(0, v.lastWrite.Load())) < deferWhileWritten &&
		v.pool.wb.Fill() < deferBelowFill && time.Since(seg.sealedAt) < v.pool.cfg.UploadDefer
}

// trimClean disposes of the oldest uploaded SCOs beyond the clean budget.
func (v *VDisk) trimClean(ctx context.Context) error {
	for v.pool.wb.CleanExcess(v.id) > 0 {
		v.mu.Lock()
		var oldest *segment
		for s, seg := range v.mu.segs {
			if s <= v.mu.uploadedThrough && (oldest == nil || s < oldest.seq) {
				oldest = seg
			}
		}
		v.mu.Unlock()
		if oldest == nil {
			return nil
		}
		if err := v.dispose(ctx, oldest); err != nil {
			return err
		}
	}
	return nil
}

// writeManifest writes generation gen+1 naming uploadedThrough, then
// deletes generation gen.
func (v *VDisk) writeManifest(ctx context.Context, uploadedThrough uint32, deleting bool) error {
	v.manifestMu.Lock() // the uploader and a rollback write manifests
	defer v.manifestMu.Unlock()
	v.mu.Lock()
	gen := v.mu.manifestGen + 1
	uploadedThrough = max(uploadedThrough, v.mu.manifestThrough) // never backwards
	v.mu.Unlock()
	m := &Manifest{VDisk: FormatID(v.id), Generation: gen, UploadedThrough: uploadedThrough,
		ClusterSize: v.cs, SCOSize: int64(v.slots) * v.cs, Size: v.size.Load(), Created: v.created, Deleting: deleting,
		Template: v.template.Load()}
	v.mu.RLock()
	m.Epoch, m.Snapshots, m.Dead, m.Parent = v.mu.epoch, v.mu.snaps, v.mu.dead, v.parentRecord()
	v.mu.RUnlock()
	prev := gen - 1
	for {
		// Create, never Put: a generation is written once. One that is
		// there already was written before a crash that the upload state
		// never heard of; it is older than what this one says.
		m.Generation = gen
		b := encodeManifest(m)
		err := v.pool.backend.Create(ctx, manifestName(v.pool.cfg.Name, v.id, gen), bytesReaderAt(b), int64(len(b)))
		if err == nil {
			break
		}
		if !errors.Is(err, ErrObjectExists) || gen-prev >= maxManifestSkip {
			return fmt.Errorf("volume: write manifest %d: %w", gen, err)
		}
		v.log.Info("volume: manifest generation on the backend already (written before a crash); writing the next",
			"vdisk", FormatID(v.id), "generation", gen)
		gen++
	}
	v.mu.Lock()
	v.mu.manifestGen, v.mu.manifestThrough = gen, uploadedThrough
	v.mu.Unlock()
	for g := max(prev, 1); g < gen; g++ {
		if err := v.pool.backend.Delete(ctx, manifestName(v.pool.cfg.Name, v.id, g)); err != nil {
			v.log.Warn("volume: delete old manifest", "vdisk", FormatID(v.id), "generation", g, "err", err)
		}
	}
	return nil
}

// maxManifestSkip bounds the generations writeManifest steps over: a crash
// leaves at most one unrecorded.
const maxManifestSkip = 8

// dispose removes an uploaded segment's SCO from local flash once no read
// uses it. Its TLog file stays until the stored block-map marker is past
// it (see trashTLogsLocked): until then it is the fast way to replay.
func (v *VDisk) dispose(ctx context.Context, seg *segment) error {
	v.mu.Lock()
	if v.mu.segs[seg.seq] != seg { // disposed of already (the uploader and a scrub both do)
		v.mu.Unlock()
		return nil
	}
	delete(v.mu.segs, seg.seq) // new reads go to the backend
	v.mu.Unlock()
	for seg.refs.Load() != 0 { // no new reference: the segment left v.mu.segs
		select {
		case <-time.After(time.Millisecond):
		case <-ctx.Done():
			// Closing: the files close with the vDisk; the SCO is removed at
			// the next open, as an uploaded one.
			return ctx.Err()
		}
	}
	seg.closeDirect()
	seg.sco.Close()
	seg.tlog.Close()
	if err := v.pool.wb.RetireSCO(v.id, seg.seq); err != nil {
		v.log.Warn("volume: remove uploaded SCO", "vdisk", FormatID(v.id), "sco", seg.seq, "err", err)
	}
	v.pool.wb.DropClean(v.id, seg.reserved)
	v.mu.Lock()
	v.mu.tlogTrash = append(v.mu.tlogTrash, seg.seq)
	trash := v.trashTLogsLocked()
	v.mu.Unlock()
	v.removeTLogs(trash)
	return nil
}

// trashTLogsLocked takes the uploaded TLogs that the stored marker has
// passed: their local files can go.
func (v *VDisk) trashTLogsLocked() []uint32 {
	var out, keep []uint32
	for _, s := range v.mu.tlogTrash {
		if s < v.mu.committed.Seq {
			out = append(out, s)
		} else {
			keep = append(keep, s)
		}
	}
	v.mu.tlogTrash = keep
	return out
}

func (v *VDisk) removeTLogs(seqs []uint32) {
	for _, s := range seqs {
		if err := v.pool.fs.Remove(v.tlogPath(s)); err != nil && !errors.Is(err, vfs.ErrNotExist) {
			v.log.Warn("volume: remove uploaded TLog", "vdisk", FormatID(v.id), "tlog", s, "err", err)
		}
	}
}

type bytesReaderAt []byte

func (b bytesReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(b)) {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, errors.New("volume: read past end of buffer")
	}
	n := copy(p, b[off:])
	if n < len(p) {
		return n, errors.New("volume: read past end of buffer")
	}
	return n, nil
}
