package dtl

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"

	"vpool/vfs"
)

// Store keeps a DTL server's entries on its disk:
//
//	<dir>/<pool>/epoch                  "VPDTLE01" | epoch:8 | crc32c:4
//	<dir>/<pool>/<vdisk:016x>/vdisk     "VPDTLV01" | cluster:4 | sco:4 | trimmed:4 | epoch:8 | crc32c:4
//	<dir>/<pool>/<vdisk:016x>/<seq:010d>.log   Entry frames, appended
//
// An entry is written (not synced) before it is acknowledged, so a kill of
// the server loses none; Sync makes a vDisk's files durable. At start every
// log is read back: a torn or corrupt tail (a crash mid-append) is cut off.
// Methods are safe for concurrent use; each vDisk has its own lock.
type Store struct {
	fs  vfs.FS
	dir string
	log *slog.Logger

	mu     sync.Mutex
	vdisks map[storeKey]*storeVDisk
}

type storeKey struct {
	pool  string
	vdisk uint64
}

type storeVDisk struct {
	mu       sync.Mutex
	dir      string
	files    map[uint32]*logFile
	dirDirty bool // a log was created since the last sync of the directory
}

type logFile struct {
	f     vfs.File
	size  int64
	alloc int64 // space reserved up to here (keep-size): appends below it need no fallocate
	dirty bool
}

// allocStep is how far ahead a log's space is reserved.
const allocStep = 4 << 20

var framePool = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

// OpenStore opens the store in dir (created if missing).
func OpenStore(fsys vfs.FS, dir string, log *slog.Logger) (*Store, error) {
	if err := fsys.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("dtl: store %s: %w", dir, err)
	}
	return &Store{fs: fsys, dir: dir, log: log, vdisks: map[storeKey]*storeVDisk{}}, nil
}

const (
	epochMagic = "VPDTLE01"
	vdiskMagic = "VPDTLV01"
)

// Load reads every pool and vDisk back and returns them as EvLoaded
// events for Core. Logs are checked frame by frame; a bad tail is cut.
func (s *Store) Load() ([]Event, error) {
	pools, err := s.fs.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("dtl: store %s: %w", s.dir, err)
	}
	var evs []Event
	for _, pool := range pools {
		if !validPool(pool) {
			continue
		}
		pdir := filepath.Join(s.dir, pool)
		if b, err := vfs.ReadFile(s.fs, filepath.Join(pdir, "epoch")); err == nil {
			e, err := decodeSmall(b, epochMagic, 8)
			if err != nil {
				return nil, fmt.Errorf("dtl: %s: %w", filepath.Join(pdir, "epoch"), err)
			}
			evs = append(evs, Event{Kind: EvLoaded, Pool: pool, Epoch: binary.LittleEndian.Uint64(e)})
		}
		names, err := s.fs.ReadDir(pdir)
		if err != nil {
			continue // a file, not a pool
		}
		for _, name := range names {
			id, err := strconv.ParseUint(name, 16, 64)
			if err != nil || len(name) != 16 || id == 0 {
				continue
			}
			ev, err := s.loadVDisk(pool, id)
			if err != nil {
				return nil, err
			}
			if ev != nil {
				evs = append(evs, *ev)
			}
		}
	}
	return evs, nil
}

func (s *Store) loadVDisk(pool string, id uint64) (*Event, error) {
	vd := s.vdisk(pool, id)
	b, err := vfs.ReadFile(s.fs, filepath.Join(vd.dir, "vdisk"))
	if errors.Is(err, vfs.ErrNotExist) {
		return nil, nil // never opened to the end: holds nothing acknowledged
	}
	if err != nil {
		return nil, err
	}
	p, err := decodeSmall(b, vdiskMagic, 20)
	if err != nil {
		return nil, fmt.Errorf("dtl: %s: %w", filepath.Join(vd.dir, "vdisk"), err)
	}
	le := binary.LittleEndian
	ev := &Event{Kind: EvLoaded, Pool: pool, Epoch: le.Uint64(p[12:]),
		Info: VDiskInfo{VDisk: id, ClusterSize: le.Uint32(p), SCOSize: le.Uint32(p[4:]), Trimmed: le.Uint32(p[8:])}}
	seqs, err := vfs.ListSeq(s.fs, vd.dir, ".log")
	if err != nil {
		return nil, err
	}
	for _, seq := range seqs {
		path := filepath.Join(vd.dir, fmt.Sprintf("%010d.log", seq))
		if seq <= ev.Info.Trimmed {
			s.fs.Remove(path) // a trim that a crash interrupted
			continue
		}
		f, err := s.fs.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			return nil, fmt.Errorf("dtl: %s: %w", path, err)
		}
		size, err := f.Size()
		if err != nil {
			f.Close()
			return nil, err
		}
		r := &offsetReader{f: f}
		fr := NewReader(r)
		var runs []Run
		for r.off < size {
			start := r.off
			m, err := fr.Next()
			if err == nil && (m.Type != MsgEntry || m.Seq != seq || m.VDisk != id) {
				err = fmt.Errorf("%w: %s for vDisk %016x TLog %d", ErrFrame, m.Type, m.VDisk, m.Seq)
			}
			if err != nil {
				s.log.Warn("dtl: cutting a torn or corrupt tail off a log (a crash mid-append)",
					"path", path, "offset", start, "bytes", size-start, "err", err)
				if err := f.Truncate(start); err != nil {
					f.Close()
					return nil, err
				}
				size = start
				break
			}
			runs = addRun(runs, Run{seq, m.Rec0, m.Rec0 + uint32(len(m.Recs)/RecordSize)})
			if ev.Bytes == nil {
				ev.Bytes = map[uint32]uint64{}
			}
			ev.Bytes[seq] += uint64(len(m.Recs) + len(m.Data))
			ev.Info.Bytes += uint64(len(m.Recs) + len(m.Data))
		}
		ev.Runs = append(ev.Runs, runs...)
		vd.files[seq] = &logFile{f: f, size: size}
	}
	return ev, nil
}

type offsetReader struct {
	f   vfs.File
	off int64
}

func (r *offsetReader) Read(p []byte) (int, error) {
	n, err := r.f.ReadAt(p, r.off)
	r.off += int64(n)
	if n > 0 && errors.Is(err, io.EOF) {
		err = nil
	}
	return n, err
}

func (s *Store) vdisk(pool string, id uint64) *storeVDisk {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := storeKey{pool, id}
	vd := s.vdisks[k]
	if vd == nil {
		vd = &storeVDisk{dir: filepath.Join(s.dir, pool, fmt.Sprintf("%016x", id)), files: map[uint32]*logFile{}}
		s.vdisks[k] = vd
	}
	return vd
}

func encodeSmall(magic string, p []byte) []byte {
	b := append([]byte(magic), p...)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

func decodeSmall(b []byte, magic string, n int) ([]byte, error) {
	if len(b) != len(magic)+n+4 || string(b[:len(magic)]) != magic ||
		crc32.Checksum(b[:len(b)-4], castagnoli) != binary.LittleEndian.Uint32(b[len(b)-4:]) {
		return nil, fmt.Errorf("%w: unreadable record", ErrFrame)
	}
	return b[len(magic) : len(magic)+n], nil
}

// SaveEpoch makes a pool's epoch durable.
func (s *Store) SaveEpoch(pool string, epoch uint64) error {
	dir := filepath.Join(s.dir, pool)
	if err := s.fs.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return vfs.WriteFileDurably(s.fs, filepath.Join(dir, "epoch"),
		encodeSmall(epochMagic, binary.LittleEndian.AppendUint64(nil, epoch)), 0o600)
}

// SaveVDisk makes a vDisk's record durable.
func (s *Store) SaveVDisk(pool string, info VDiskInfo, epoch uint64) error {
	vd := s.vdisk(pool, info.VDisk)
	if err := s.fs.MkdirAll(vd.dir, 0o700); err != nil {
		return err
	}
	le := binary.LittleEndian
	p := le.AppendUint32(nil, info.ClusterSize)
	p = le.AppendUint32(p, info.SCOSize)
	p = le.AppendUint32(p, info.Trimmed)
	p = le.AppendUint64(p, epoch)
	return vfs.WriteFileDurably(s.fs, filepath.Join(vd.dir, "vdisk"), encodeSmall(vdiskMagic, p), 0o600)
}

// Append writes an entry (an Append message) to its TLog's log.
func (s *Store) Append(pool string, m Msg) error {
	e := m
	e.Type, e.LSN = MsgEntry, 0
	bp := framePool.Get().(*[]byte)
	defer framePool.Put(bp)
	*bp = e.Encode((*bp)[:0])
	return s.AppendFrames(pool, m.VDisk, m.Seq, *bp)
}

// AppendFrames writes encoded Entry frames, all of TLog seq, to its log in
// one write.
func (s *Store) AppendFrames(pool string, id uint64, seq uint32, frames []byte) error {
	vd := s.vdisk(pool, id)
	vd.mu.Lock()
	defer vd.mu.Unlock()
	lf := vd.files[seq]
	if lf == nil {
		f, err := s.fs.OpenFile(filepath.Join(vd.dir, fmt.Sprintf("%010d.log", seq)), os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return fmt.Errorf("dtl: vDisk %016x TLog %d: %w", id, seq, err)
		}
		lf = &logFile{f: f}
		vd.files[seq] = lf
		vd.dirDirty = true
	}
	// Space first, so that a full disk fails here and not with half a frame.
	if end := lf.size + int64(len(frames)); end > lf.alloc {
		if err := lf.f.Allocate(lf.size, int64(len(frames))); err != nil {
			return fmt.Errorf("dtl: vDisk %016x TLog %d: %w", id, seq, err)
		}
		lf.alloc = end
		if lf.f.Allocate(end, allocStep) == nil { // ahead, if there is room
			lf.alloc = end + allocStep
		}
	}
	if _, err := lf.f.WriteAt(frames, lf.size); err != nil {
		lf.f.Truncate(lf.size)
		return fmt.Errorf("dtl: vDisk %016x TLog %d: %w", id, seq, err)
	}
	lf.size += int64(len(frames))
	lf.dirty = true
	return nil
}

// Sync makes everything appended to a vDisk's logs durable.
func (s *Store) Sync(pool string, id uint64) error {
	vd := s.vdisk(pool, id)
	vd.mu.Lock()
	defer vd.mu.Unlock()
	for seq, lf := range vd.files {
		if lf.dirty {
			if err := lf.f.Sync(); err != nil {
				return fmt.Errorf("dtl: sync vDisk %016x TLog %d: %w", id, seq, err)
			}
			lf.dirty = false
		}
	}
	if vd.dirDirty {
		if err := s.fs.SyncDir(vd.dir); err != nil {
			return fmt.Errorf("dtl: sync vDisk %016x: %w", id, err)
		}
		vd.dirDirty = false
	}
	return nil
}

// Trim removes the logs of TLogs through seq.
func (s *Store) Trim(pool string, id uint64, seq uint32) error {
	vd := s.vdisk(pool, id)
	vd.mu.Lock()
	defer vd.mu.Unlock()
	var errs []error
	for sq, lf := range vd.files {
		if sq <= seq {
			lf.f.Close()
			delete(vd.files, sq)
			if err := s.fs.Remove(filepath.Join(vd.dir, fmt.Sprintf("%010d.log", sq))); err != nil && !errors.Is(err, vfs.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// Drop removes everything of a vDisk.
func (s *Store) Drop(pool string, id uint64) error {
	vd := s.vdisk(pool, id)
	vd.mu.Lock()
	defer vd.mu.Unlock()
	for sq, lf := range vd.files {
		lf.f.Close()
		delete(vd.files, sq)
	}
	names, _ := s.fs.ReadDir(vd.dir)
	var errs []error
	for _, n := range names {
		if err := s.fs.Remove(filepath.Join(vd.dir, n)); err != nil && !errors.Is(err, vfs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := s.fs.Remove(vd.dir); err != nil && !errors.Is(err, vfs.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Fetch calls fn with every entry held for TLogs after seq, in TLog order.
func (s *Store) Fetch(pool string, id uint64, after uint32, fn func(Msg) error) error {
	vd := s.vdisk(pool, id)
	vd.mu.Lock()
	seqs := make([]uint32, 0, len(vd.files))
	for sq := range vd.files {
		if sq > after {
			seqs = append(seqs, sq)
		}
	}
	vd.mu.Unlock()
	slices.Sort(seqs)
	for _, sq := range seqs {
		vd.mu.Lock()
		lf := vd.files[sq]
		var size int64
		if lf != nil {
			size = lf.size
		}
		vd.mu.Unlock()
		if lf == nil {
			continue // trimmed meanwhile
		}
		r := &offsetReader{f: lf.f}
		fr := NewReader(r)
		for r.off < size {
			m, err := fr.Next()
			if err != nil {
				return fmt.Errorf("dtl: vDisk %016x TLog %d at %d: %w", id, sq, r.off, err)
			}
			if err := fn(m); err != nil {
				return err
			}
		}
	}
	return nil
}

// Close closes every open log.
func (s *Store) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, vd := range s.vdisks {
		vd.mu.Lock()
		for sq, lf := range vd.files {
			lf.f.Close()
			delete(vd.files, sq)
		}
		vd.mu.Unlock()
	}
}

// validPool says whether name may be a pool's directory.
func validPool(name string) bool {
	if name == "" || len(name) > 128 || name[0] == '.' {
		return false
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}
