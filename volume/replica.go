package volume

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"vpool/vfs"
)

// Replicator is the DTL as the engine sees it: a second copy, on another
// host, of the TLog records and data not yet on the backend.
type Replicator interface {
	// ReadBack calls fn with every entry held for this vPool. Open calls
	// it before anything is appended, and lays the entries into local
	// flash, where recovery replays them.
	ReadBack(ctx context.Context, fn func(ReplicaEntry) error) error
	// Attach starts a vDisk's stream in mode ("none", "async", "sync";
	// "" is the vPool's default). src is read when the DTL lacks entries.
	Attach(id uint64, clusterSize, scoSize int64, mode string, src ReplicaSource) (ReplicaStream, error)
}

// ReplicaStream is one vDisk's DTL.
type ReplicaStream interface {
	// Ship hands over a write's entries after they are on local flash
	// (copied before it returns) and returns when the mode allows the
	// write to be acknowledged.
	Ship(ctx context.Context, entries []ReplicaEntry) error
	// Flush returns when everything shipped before it is held and synced
	// by the DTL (or the DTL is lost and the vPool says to go on).
	Flush(ctx context.Context) error
	// Trim says that TLogs through seq are on the backend.
	Trim(seq uint32)
	SetMode(mode string) error
	// Close ends the stream; with drop, the DTL forgets the vDisk.
	Close(drop bool)
}

// ReplicaSource is a vDisk's local flash, as the DTL reads it to catch up.
type ReplicaSource interface {
	// Lacking calls fn with the entries of local TLogs after trimmed at
	// positions held does not report; first it calls total with their
	// bytes.
	Lacking(ctx context.Context, trimmed uint32, held func(seq, rec uint32) bool, total func(int64), fn func(ReplicaEntry) error) error
}

// ReplicaEntry is one piece of a write as the DTL carries it: encoded TLog
// records at positions [Rec0, Rec0+len(Recs)/RecordSize) of TLog Seq, and
// the data of their write records, in record order. VDisk and geometry are
// set on entries read back.
type ReplicaEntry struct {
	VDisk                uint64
	ClusterSize, SCOSize int64
	Seq, Rec0            uint32
	Recs, Data           []byte
}

// RecordSize is the size of one encoded TLog record.
const RecordSize = recordSize

// maxEntryBytes bounds an entry's data (the DTL's frame limit).
const maxEntryBytes = 4 << 20

// ship sends a write's records and data to the vDisk's DTL. Write records
// across recw correspond, in order, to the clusters across datas.
func (v *VDisk) ship(ctx context.Context, datas []dataWrite, recw []tlogWrite, encoded [][]byte) error {
	st := v.stream
	if st == nil {
		return nil
	}
	var arr [2]ReplicaEntry
	entries := arr[:0]
	di, doff := 0, 0 // the next write record's cluster: datas[di].data[doff:]
	perEntry := int(maxEntryBytes / v.cs)
	cs := int(v.cs)
	for k, rw := range recw {
		for i := 0; i < len(rw.recs); {
			j := min(len(rw.recs), i+perEntry)
			e := ReplicaEntry{Seq: rw.seg.seq, Rec0: rw.rec0 + uint32(i), Recs: encoded[k][i*recordSize : j*recordSize]}
			d0, off0, n, one := di, doff, 0, true
			for _, r := range rw.recs[i:j] {
				if r.Type != recWrite {
					continue
				}
				one = one && di == d0
				n++
				if doff += cs; doff == len(datas[di].data) {
					di, doff = di+1, 0
				}
			}
			switch {
			case n == 0:
			case one: // the common case: the clusters are one piece of the write's buffer
				e.Data = datas[d0].data[off0 : off0+n*cs]
			default:
				e.Data = make([]byte, 0, n*cs)
				for x, off := d0, off0; len(e.Data) < n*cs; x, off = x+1, 0 {
					e.Data = append(e.Data, datas[x].data[off:min(len(datas[x].data), off+n*cs-len(e.Data))]...)
				}
			}
			entries = append(entries, e)
			i = j
		}
	}
	if err := st.Ship(ctx, entries); err != nil {
		return fmt.Errorf("volume: vDisk %s: DTL: %w", FormatID(v.id), err)
	}
	return nil
}

// Lacking reads entries back from local flash for the DTL (ReplicaSource).
func (v *VDisk) Lacking(ctx context.Context, trimmed uint32, held func(seq, rec uint32) bool, total func(int64), fn func(ReplicaEntry) error) error {
	v.mu.Lock()
	var segs []*segment
	for s, seg := range v.mu.segs {
		if s > trimmed && s > v.mu.uploadedThrough {
			seg.refs.Add(1) // the files stay open
			segs = append(segs, seg)
		}
	}
	recsOf := map[*segment]uint32{}
	for _, seg := range segs {
		recsOf[seg] = seg.recs
	}
	v.mu.Unlock()
	defer func() {
		for _, seg := range segs {
			seg.refs.Add(-1)
		}
	}()
	sort.Slice(segs, func(i, j int) bool { return segs[i].seq < segs[j].seq })
	type run struct {
		seg    *segment
		r0, r1 uint32
		img    []byte
	}
	var runs []run
	var bytes int64
	perEntry := uint32(maxEntryBytes / v.cs)
	for _, seg := range segs {
		n := recsOf[seg]
		img := make([]byte, int(n)*recordSize)
		if _, err := seg.tlog.ReadAt(img, tlogHeaderSize); err != nil && len(img) > 0 {
			return v.ioErr("read TLog for the DTL", seg.seq, err)
		}
		for i := uint32(0); i < n; {
			r, ok := decodeRecord(img[i*recordSize:])
			if !ok || r.Type == recSeal || held(seg.seq, i) {
				i++
				continue
			}
			j := i
			for j < n && j-i < perEntry {
				r, ok = decodeRecord(img[j*recordSize:])
				if !ok || r.Type == recSeal || held(seg.seq, j) {
					break
				}
				bytes += recordSize
				if r.Type == recWrite {
					bytes += v.cs
				}
				j++
			}
			runs = append(runs, run{seg, i, j, img})
			i = j
		}
	}
	total(bytes)
	for _, ru := range runs {
		if err := ctx.Err(); err != nil {
			return err
		}
		e := ReplicaEntry{Seq: ru.seg.seq, Rec0: ru.r0, Recs: ru.img[ru.r0*recordSize : ru.r1*recordSize]}
		for i := ru.r0; i < ru.r1; i++ {
			r, _ := decodeRecord(ru.img[i*recordSize:])
			if r.Type != recWrite {
				continue
			}
			cl := make([]byte, v.cs)
			src := ru.seg
			if r.SCO != ru.seg.seq {
				if src = segByRef(segs, r.SCO); src == nil {
					return fmt.Errorf("volume: vDisk %s: TLog %d names SCO %d, not on local flash", FormatID(v.id), ru.seg.seq, r.SCO)
				}
			}
			if _, err := src.sco.ReadAt(cl, int64(r.Count)*v.cs); err != nil {
				return v.ioErr("read SCO for the DTL", r.SCO, err)
			}
			e.Data = append(e.Data, cl...)
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	return nil
}

func segByRef(segs []*segment, seq uint32) *segment {
	for _, s := range segs {
		if s.seq == seq {
			return s
		}
	}
	return nil
}

// layHeld writes entries read back from the DTL into local flash as TLog
// and SCO files, at the positions the owner wrote them, wherever the local
// TLog does not hold a valid record already; recovery then replays them as
// it replays what a killed process left. Called by Open before anything
// else touches the files.
func (p *Pool) layHeld(ctx context.Context) error {
	open := map[[2]uint64]*heldSegment{}
	dirs := map[string]bool{}
	defer func() {
		for _, f := range open {
			f.tlog.Close()
			f.sco.Close()
		}
	}()
	// With local state, a vDisk without a record was deleted (the DTL
	// may not have heard yet): its entries must not bring it back.
	local, err := p.catalogVDisks()
	if err != nil {
		return err
	}
	skipped := map[uint64]bool{}
	var entries, written int
	var bytes int64
	lastLog := time.Now()
	err = p.repl.ReadBack(ctx, func(e ReplicaEntry) error {
		bytes += int64(len(e.Recs) + len(e.Data))
		if time.Since(lastLog) > 2*time.Second {
			lastLog = time.Now()
			p.log.Info("volume: reading back the DTL", "vpool", p.cfg.Name, "entries", entries, "bytes", bytes)
		}
		if len(local) > 0 && !local[e.VDisk] {
			if !skipped[e.VDisk] {
				skipped[e.VDisk] = true
				p.log.Info("volume: the DTL holds entries of a deleted vDisk; ignored", "vdisk", FormatID(e.VDisk))
			}
			return nil
		}
		entries++
		if err := checkGeometry(e.ClusterSize, e.SCOSize); err != nil {
			return fmt.Errorf("DTL entry of vDisk %s: %w", FormatID(e.VDisk), err)
		}
		k := [2]uint64{e.VDisk, uint64(e.Seq)}
		f := open[k]
		if f == nil {
			var err error
			if f, err = p.openHeldSegment(e); err != nil {
				return err
			}
			open[k] = f
			dirs[f.dir] = true
		}
		n := len(e.Recs) / recordSize
		data := e.Data
		for i := 0; i < n; i++ {
			b := e.Recs[i*recordSize : (i+1)*recordSize]
			r, ok := decodeRecord(b)
			var cl []byte
			if ok && r.Type == recWrite {
				if len(data) < int(e.ClusterSize) {
					return fmt.Errorf("%w: DTL entry of vDisk %s TLog %d: data short", ErrCorrupt, FormatID(e.VDisk), e.Seq)
				}
				cl, data = data[:e.ClusterSize], data[e.ClusterSize:]
			}
			if !ok {
				continue
			}
			if cl != nil {
				if checksum(cl) != r.DataCRC {
					return fmt.Errorf("%w: DTL entry of vDisk %s TLog %d: data checksum", ErrCorrupt, FormatID(e.VDisk), e.Seq)
				}
				if r.SCO != e.Seq {
					return fmt.Errorf("%w: DTL entry of vDisk %s TLog %d names SCO %d", ErrCorrupt, FormatID(e.VDisk), e.Seq, r.SCO)
				}
			}
			laid, err := f.lay(b, r, cl, tlogHeaderSize+int64(e.Rec0+uint32(i))*recordSize, int64(r.Count)*e.ClusterSize)
			if err != nil {
				return err
			}
			if laid {
				written++
			}
		}
		return nil
	})
	if err != nil && len(local) == 0 {
		// Nothing local to fall back on: unless the vPool is new (no
		// vDisk on the backend either), starting would lose what the
		// DTL holds.
		if ids, lerr := p.backendVDisks(ctx); lerr != nil || len(ids) > 0 {
			return fmt.Errorf("%w (a restore needs every DTL peer: start again when it answers, or leave it out of dtl.peers to accept losing its writes)", err)
		}
	}
	if err != nil {
		p.log.Warn("volume: could not read back the whole DTL; local flash holds what this host acknowledged",
			"vpool", p.cfg.Name, "err", err)
	}
	for _, f := range open {
		if err := f.sco.Sync(); err != nil {
			return err
		}
		if err := f.tlog.Sync(); err != nil {
			return err
		}
	}
	for d := range dirs {
		if err := p.fs.SyncDir(d); err != nil {
			return err
		}
	}
	if entries > 0 {
		p.log.Info("volume: read back the DTL", "vpool", p.cfg.Name, "entries", entries, "bytes", bytes,
			"records_restored", written, "tlogs", len(open))
	}
	return nil
}

// heldSegment is a TLog and SCO being laid from DTL entries.
type heldSegment struct {
	tlog, sco vfs.File
	dir       string
}

// lay writes a DTL record (and its cluster, cl, for a write) at its
// place unless local flash holds it whole already. After a power loss a
// local record may have survived while its data did not: then the data is
// written, as recovery would otherwise erase the record.
func (f *heldSegment) lay(rec []byte, r record, cl []byte, recOff, dataOff int64) (bool, error) {
	var have [recordSize]byte
	if m, _ := f.tlog.ReadAt(have[:], recOff); m == recordSize {
		if _, valid := decodeRecord(have[:]); valid {
			if cl == nil || !bytes.Equal(have[:], rec) {
				return false, nil // local flash has it (or a record of its own there: it wins)
			}
			buf := make([]byte, len(cl))
			if m, _ := f.sco.ReadAt(buf, dataOff); m == len(buf) && checksum(buf) == r.DataCRC {
				return false, nil
			}
		}
	}
	if cl != nil {
		if _, err := f.sco.WriteAt(cl, dataOff); err != nil {
			return false, err
		}
	}
	if _, err := f.tlog.WriteAt(rec, recOff); err != nil {
		return false, err
	}
	return true, nil
}

func (p *Pool) openHeldSegment(e ReplicaEntry) (*heldSegment, error) {
	dir := filepath.Join(p.cfg.Dir, "tlogs", FormatID(e.VDisk))
	if err := p.fs.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, fmt.Sprintf("%010d.tlog", e.Seq))
	tl, err := p.fs.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, vfs.ErrNotExist) {
		if tl, err = p.fs.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600); err == nil {
			var hdr [tlogHeaderSize]byte
			h := tlogHeader{VDisk: e.VDisk, Seq: e.Seq, ClusterSize: uint32(e.ClusterSize), SCOSize: uint32(e.SCOSize)}
			h.encode(hdr[:])
			_, err = tl.WriteAt(hdr[:], 0)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("volume: lay DTL entries of vDisk %s into TLog %d: %w", FormatID(e.VDisk), e.Seq, err)
	}
	p.wb.Register(e.VDisk)
	sco, err := p.wb.OpenSCO(e.VDisk, e.Seq)
	if errors.Is(err, vfs.ErrNotExist) {
		sco, err = p.wb.CreateSCO(e.VDisk, e.Seq, e.SCOSize)
	}
	if err != nil {
		tl.Close()
		return nil, fmt.Errorf("volume: lay DTL entries of vDisk %s into SCO %d: %w", FormatID(e.VDisk), e.Seq, err)
	}
	return &heldSegment{tl, sco, dir}, nil
}

// attachDTL starts the vDisk's DTL stream (before its background work and
// any front-end write). A stream that cannot start leaves the vDisk
// without a DTL, loudly.
func (v *VDisk) attachDTL() {
	if v.pool.repl == nil {
		return
	}
	st, err := v.pool.repl.Attach(v.id, v.cs, int64(v.slots)*v.cs, v.dtlMode, v)
	if err != nil {
		v.log.Error("volume: vDisk without a DTL", "vdisk", FormatID(v.id), "err", err)
		return
	}
	v.stream = st
	v.mu.Lock()
	up := v.mu.uploadedThrough
	v.mu.Unlock()
	if up > 0 {
		st.Trim(up)
	}
}

func (v *VDisk) closeDTL(drop bool) {
	if v.stream != nil {
		v.stream.Close(drop)
	}
}

// DTLMode returns the vDisk's own DTL mode ("" : the vPool's default).
func (v *VDisk) DTLMode() string {
	v.recMu.Lock()
	defer v.recMu.Unlock()
	return v.dtlMode
}

// SetDTLMode changes the vDisk's DTL mode ("none", "async", "sync"; "":
// the vPool's default), kept in its record.
func (v *VDisk) SetDTLMode(mode string) error {
	if v.stream == nil {
		return fmt.Errorf("%w: no DTL is configured (dtl.peers)", ErrBadConfig)
	}
	v.recMu.Lock()
	defer v.recMu.Unlock()
	if err := v.stream.SetMode(mode); err != nil {
		return fmt.Errorf("%w: %w", ErrBadConfig, err)
	}
	if err := v.updateRecordLocked(func(r *vdiskRecord) { r.DTL = mode }); err != nil {
		return fmt.Errorf("volume: set DTL mode: %w", err)
	}
	v.dtlMode = mode
	return nil
}

// DTL returns the vDisk's DTL stream (nil: none), for status.
func (v *VDisk) DTL() ReplicaStream { return v.stream }
