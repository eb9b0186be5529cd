package flashcache

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"vpool/vfs"
)

// ErrFull is returned when the local flash device itself has no space.
var ErrFull = errors.New("flashcache: no space left on local flash")

// Throttle tuning.
const (
	SoftFraction    = 0.5                    // fill level where throttling starts
	maxDelayPerMiB  = 20 * time.Millisecond  // delay per MiB written at a full buffer
	minSleep        = 500 * time.Microsecond // delays are batched into sleeps of at least this
	fairShareMinima = 64 << 20               // an owner may always hold this much
)

// WriteBuffer is the accounting and file store of SCOs on local flash.
// Below the soft mark a reservation is two atomic adds and takes no lock;
// above it, reservations go through the mutex (delays, waits, fair share).
type WriteBuffer struct {
	fs    vfs.FS
	dir   string
	limit int64
	soft  int64

	used    atomic.Int64 // dirty bytes: what throttling looks at
	waiters atomic.Int64 // reservations waiting for space
	lookup  sync.Map     // owner -> *ownerState, read without the mutex

	mu struct {
		sync.Mutex
		clean  int64
		owners map[uint64]*ownerState
		freed  chan struct{} // closed and replaced when space is released
	}
	throttledNanos atomic.Int64
	blockedWaits   atomic.Int64
	space          flashSpace

	spare struct {
		sync.Mutex
		files []string // in spareDir, each a dropped SCO's file
		next  int      // name of the next one
		size  int64    // of the SCOs created last
	}
}

// The write buffer keeps the files of dropped SCOs for new SCOs. The disk
// overwrites blocks written before faster than it fills preallocated ones,
// which ext4 turns from unwritten into written extents at each write's
// completion, in its journal: direct 1 MiB writes at queue depth 16 ran at
// 1762-2058 MiB/s over a file written once against 1348-1409 into a new
// preallocated one, here; vpool's sequential writes through FUSE went from
// 947-1163 to 1323-1409 MiB/s. In steady writing each upload drops an SCO
// whose file the next new SCO takes, so a few spares do: they are kept up
// to a sixteenth of the limit. (Counting them in the quarter kept for
// uploaded SCOs instead cost those SCOs room, and random reads of recent
// writes went to the backend: 40-55k reads/s instead of 136k.)
func (w *WriteBuffer) maxSpares() int {
	if w.spare.size <= 0 {
		return 0
	}
	return int(w.limit / 16 / w.spare.size)
}

type ownerState struct {
	used  atomic.Int64 // dirty: in SCOs not yet on the backend
	clean int64        // uploaded SCOs kept as a cache of recent writes; guarded by mu
	debt  time.Duration
}

// Stats is what the write buffer is doing, for status and metrics.
type Stats struct {
	UsedBytes, LimitBytes int64
	CleanBytes            int64 // uploaded SCOs kept as a cache
	ThrottledNanos        int64 // total time writers were delayed
	BlockedWaits          int64 // times a writer waited for space
	FlashFreeBytes        int64 // the flash filesystem's, at the last look (0: not looked)
	FlashReserveBytes     int64 // kept free for the metadata stores
	FlashLow              bool  // new SCOs are refused: the filesystem is within the reserve
}

// NewWriteBuffer opens the write buffer in dir with a limit in bytes.
func NewWriteBuffer(fsys vfs.FS, dir string, limitBytes int64) (*WriteBuffer, error) {
	if limitBytes < 1<<20 {
		return nil, fmt.Errorf("flashcache: write buffer limit %d bytes is below 1 MiB", limitBytes)
	}
	if err := fsys.MkdirAll(filepath.Join(dir, "sco"), 0o700); err != nil {
		return nil, fmt.Errorf("flashcache: write buffer dir: %w", err)
	}
	w := &WriteBuffer{fs: fsys, dir: dir, limit: limitBytes, soft: int64(float64(limitBytes) * SoftFraction)}
	w.mu.owners = map[uint64]*ownerState{}
	w.mu.freed = make(chan struct{})
	// Spare files of an earlier run are not worth the bookkeeping.
	names, err := fsys.ReadDir(w.spareDir())
	if err != nil && !errors.Is(err, vfs.ErrNotExist) {
		return nil, fmt.Errorf("flashcache: write buffer spare SCOs: %w", err)
	}
	for _, n := range names {
		if err := fsys.Remove(filepath.Join(w.spareDir(), n)); err != nil && !errors.Is(err, vfs.ErrNotExist) {
			return nil, fmt.Errorf("flashcache: remove spare SCO: %w", err)
		}
	}
	return w, nil
}

// spareDir holds the files of dropped SCOs kept for new ones.
func (w *WriteBuffer) spareDir() string { return filepath.Join(w.dir, "sco-spare") }

// owner returns owner's state, adding it if new.
func (w *WriteBuffer) owner(owner uint64) *ownerState {
	if o, ok := w.lookup.Load(owner); ok {
		return o.(*ownerState)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ownerLocked(owner)
}

func (w *WriteBuffer) ownerLocked(owner uint64) *ownerState {
	o := w.mu.owners[owner]
	if o == nil {
		o = &ownerState{}
		w.mu.owners[owner] = o
		w.lookup.Store(owner, o)
	}
	return o
}

// Register adds an owner (a vDisk) to the fair-share count.
func (w *WriteBuffer) Register(owner uint64) { w.owner(owner) }

// Unregister removes an owner and what it holds.
func (w *WriteBuffer) Unregister(owner uint64) {
	w.mu.Lock()
	if o := w.mu.owners[owner]; o != nil {
		w.used.Add(-o.used.Load())
		w.mu.clean -= o.clean
		delete(w.mu.owners, owner)
		w.lookup.Delete(owner)
		w.wakeLocked()
	}
	w.mu.Unlock()
}

func (w *WriteBuffer) wakeLocked() {
	close(w.mu.freed)
	w.mu.freed = make(chan struct{})
}

// Account adds n bytes found on disk at open (SCOs not yet uploaded);
// it never blocks.
func (w *WriteBuffer) Account(owner uint64, n int64) {
	w.owner(owner).used.Add(n)
	w.used.Add(n)
}

// Reserve accounts n bytes to owner, delaying or blocking as the buffer
// fills. It returns only ctx's error.
func (w *WriteBuffer) Reserve(ctx context.Context, owner uint64, n int64) error {
	o := w.owner(owner)
	if w.used.Add(n) <= w.soft {
		o.used.Add(n)
		return nil
	}
	w.used.Add(-n)
	return w.reserveSlow(ctx, o, n)
}

func (w *WriteBuffer) reserveSlow(ctx context.Context, o *ownerState, n int64) error {
	for {
		w.mu.Lock()
		w.waiters.Add(1) // before looking, so that a Release after the look wakes us
		used, mine := w.used.Load(), o.used.Load()
		share := max(w.limit/int64(max(1, len(w.mu.owners))), fairShareMinima)
		full := used+n > w.limit && used > 0
		unfair := used+n > w.soft && mine+n > share && mine > 0
		if !full && !unfair {
			w.waiters.Add(-1)
			o.used.Add(n)
			used = w.used.Add(n)
			var sleep time.Duration
			if used > w.soft {
				f := float64(used-w.soft) / float64(w.limit-w.soft)
				o.debt += time.Duration(f * f * float64(maxDelayPerMiB) * float64(n) / (1 << 20))
				if o.debt >= minSleep {
					sleep, o.debt = o.debt, 0
				}
			}
			w.mu.Unlock()
			if sleep > 0 {
				w.throttledNanos.Add(int64(sleep))
				t := time.NewTimer(sleep)
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
				}
			}
			return nil
		}
		freed := w.mu.freed
		w.mu.Unlock()
		// Waiting is for uploads to make room; when the flash filesystem
		// could not even take what the buffer holds once more (a backend
		// on it is full, or flash filled up otherwise), none will come.
		if err := w.checkSpace(w.limit); err != nil {
			w.waiters.Add(-1)
			return err
		}
		w.blockedWaits.Add(1)
		start := time.Now()
		select {
		case <-freed:
		case <-ctx.Done():
			w.waiters.Add(-1)
			return ctx.Err()
		}
		w.waiters.Add(-1)
		w.throttledNanos.Add(int64(time.Since(start)))
	}
}

// Release gives back n bytes of owner's reservations.
func (w *WriteBuffer) Release(owner uint64, n int64) {
	o := w.owner(owner)
	n = min(n, o.used.Load())
	o.used.Add(-n)
	w.used.Add(-n)
	w.wakeWaiters()
}

func (w *WriteBuffer) wakeWaiters() {
	if w.waiters.Load() > 0 {
		w.mu.Lock()
		w.wakeLocked()
		w.mu.Unlock()
	}
}

// MarkClean moves n of owner's bytes from dirty (not on the backend) to
// clean (uploaded, kept on flash as a cache of recent writes). Clean bytes
// do not count for throttling; the owner drops them when CleanExcess says.
func (w *WriteBuffer) MarkClean(owner uint64, n int64) {
	o := w.owner(owner)
	n = min(n, o.used.Load())
	o.used.Add(-n)
	w.used.Add(-n)
	w.mu.Lock()
	o.clean += n
	w.mu.clean += n
	w.mu.Unlock()
	w.wakeWaiters()
}

// DropClean forgets n clean bytes of owner (the SCO left flash).
func (w *WriteBuffer) DropClean(owner uint64, n int64) {
	w.mu.Lock()
	if o := w.mu.owners[owner]; o != nil {
		n = min(n, o.clean)
		o.clean -= n
		w.mu.clean -= n
	}
	w.mu.Unlock()
}

// CleanExcess is how many clean bytes owner holds beyond its share of a
// quarter of the buffer.
func (w *WriteBuffer) CleanExcess(owner uint64) int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	o := w.mu.owners[owner]
	if o == nil {
		return 0
	}
	allowance := w.limit / 4 / int64(max(1, len(w.mu.owners)))
	return max(0, o.clean-allowance)
}

// OwnerUsed returns the dirty bytes owner holds in the buffer.
func (w *WriteBuffer) OwnerUsed(owner uint64) int64 {
	if o, ok := w.lookup.Load(owner); ok {
		return o.(*ownerState).used.Load()
	}
	return 0
}

// Throttling reports whether writers are being slowed right now.
func (w *WriteBuffer) Throttling() bool { return w.used.Load() > w.soft }

// Fill is the share of the buffer that holds data not yet on the backend.
func (w *WriteBuffer) Fill() float64 { return float64(w.used.Load()) / float64(w.limit) }

// Stats returns the buffer's counters.
func (w *WriteBuffer) Stats() Stats {
	w.mu.Lock()
	defer w.mu.Unlock()
	return Stats{UsedBytes: w.used.Load(), LimitBytes: w.limit, CleanBytes: w.mu.clean,
		ThrottledNanos: w.throttledNanos.Load(), BlockedWaits: w.blockedWaits.Load(),
		FlashFreeBytes: w.space.free.Load(), FlashReserveBytes: w.space.reserve.Load(), FlashLow: w.space.low.Load()}
}

func (w *WriteBuffer) ownerDir(owner uint64) string {
	return filepath.Join(w.dir, "sco", fmt.Sprintf("%016x", owner))
}

// SCOPath is where SCO seq of owner lives on flash.
func (w *WriteBuffer) SCOPath(owner uint64, seq uint32) string {
	return filepath.Join(w.ownerDir(owner), fmt.Sprintf("%010d.sco", seq))
}

// CreateSCO creates SCO seq of owner, preallocating sizeBytes.
func (w *WriteBuffer) CreateSCO(owner uint64, seq uint32, sizeBytes int64) (vfs.File, error) {
	dir := w.ownerDir(owner)
	if err := w.fs.MkdirAll(dir, 0o700); err != nil {
		return nil, wrapFull(fmt.Errorf("flashcache: create SCO dir: %w", err))
	}
	if f := w.reuse(dir, w.SCOPath(owner, seq), sizeBytes); f != nil {
		return f, nil
	}
	if err := w.checkSpace(sizeBytes); err != nil {
		return nil, fmt.Errorf("flashcache: create SCO %d: %w", seq, err)
	}
	f, err := w.fs.OpenFile(w.SCOPath(owner, seq), os.O_CREATE|os.O_TRUNC|os.O_RDWR, 0o600)
	if err != nil {
		return nil, wrapFull(fmt.Errorf("flashcache: create SCO %d: %w", seq, err))
	}
	// Preallocated and at full size from the start: writes then never
	// extend the file, so they need no journal update of its size (which
	// would wait for every concurrent fsync's journal commit).
	if err := f.Allocate(0, sizeBytes); err != nil {
		f.Close()
		w.fs.Remove(w.SCOPath(owner, seq))
		return nil, wrapFull(fmt.Errorf("flashcache: preallocate SCO %d (%d bytes): %w", seq, sizeBytes, err))
	}
	if err := f.Truncate(sizeBytes); err != nil {
		f.Close()
		w.fs.Remove(w.SCOPath(owner, seq))
		return nil, wrapFull(fmt.Errorf("flashcache: size SCO %d (%d bytes): %w", seq, sizeBytes, err))
	}
	if err := w.fs.SyncDir(dir); err != nil {
		f.Close()
		return nil, wrapFull(fmt.Errorf("flashcache: create SCO %d: %w", seq, err))
	}
	return f, nil
}

// OpenSCODirect opens an existing SCO for writing with O_DIRECT: large
// writes then bypass the page cache. It fails where the filesystem has no
// direct I/O (tmpfs); writers then use the buffered handle.
func (w *WriteBuffer) OpenSCODirect(owner uint64, seq uint32) (vfs.File, error) {
	return w.fs.OpenFile(w.SCOPath(owner, seq), os.O_WRONLY|syscall.O_DIRECT, 0)
}

// OpenSCO opens an existing SCO.
func (w *WriteBuffer) OpenSCO(owner uint64, seq uint32) (vfs.File, error) {
	return w.fs.OpenFile(w.SCOPath(owner, seq), os.O_RDWR, 0)
}

// reuse makes a spare file of sizeBytes the SCO at path, or returns nil.
// Its old contents are never read: reads go through the block map to
// written slots, and uploads read only those.
func (w *WriteBuffer) reuse(dir, path string, sizeBytes int64) vfs.File {
	if sizeBytes <= 0 {
		return nil
	}
	w.spare.Lock()
	defer w.spare.Unlock()
	w.spare.size = sizeBytes
	for len(w.spare.files) > 0 {
		name := w.spare.files[len(w.spare.files)-1]
		w.spare.files = w.spare.files[:len(w.spare.files)-1]
		f, err := w.fs.OpenFile(name, os.O_RDWR, 0)
		if err != nil {
			w.fs.Remove(name)
			continue
		}
		// one of another size (sco_size changed) is of no use
		if size, err := f.Size(); err != nil || size != sizeBytes {
			f.Close()
			w.fs.Remove(name)
			continue
		}
		if err := w.fs.Rename(name, path); err != nil {
			f.Close()
			w.fs.Remove(name)
			continue
		}
		if err := w.fs.SyncDir(dir); err != nil {
			f.Close()
			w.fs.Remove(path)
			continue
		}
		return f
	}
	return nil
}

// RetireSCO drops an SCO that is on the backend: its file is kept as a
// spare for a new SCO while there is room (maxSpares), else removed.
func (w *WriteBuffer) RetireSCO(owner uint64, seq uint32) error {
	w.spare.Lock()
	if len(w.spare.files) < w.maxSpares() && w.fs.MkdirAll(w.spareDir(), 0o700) == nil {
		name := filepath.Join(w.spareDir(), fmt.Sprintf("%d.sco", w.spare.next))
		if w.fs.Rename(w.SCOPath(owner, seq), name) == nil {
			w.spare.next++
			w.spare.files = append(w.spare.files, name)
			w.spare.Unlock()
			return nil
		}
	}
	w.spare.Unlock()
	return w.RemoveSCO(owner, seq)
}

// RemoveSCO deletes an SCO file (missing is not an error).
func (w *WriteBuffer) RemoveSCO(owner uint64, seq uint32) error {
	if err := w.fs.Remove(w.SCOPath(owner, seq)); err != nil && !errors.Is(err, vfs.ErrNotExist) {
		return err
	}
	return nil
}

// RemoveOwner deletes the owner's SCO directory, which must be empty.
func (w *WriteBuffer) RemoveOwner(owner uint64) error {
	if err := w.fs.Remove(w.ownerDir(owner)); err != nil && !errors.Is(err, vfs.ErrNotExist) {
		return err
	}
	return nil
}

// ListSCOs returns the sequence numbers of owner's SCO files, ascending.
func (w *WriteBuffer) ListSCOs(owner uint64) ([]uint32, error) {
	return vfs.ListSeq(w.fs, w.ownerDir(owner), ".sco")
}

func wrapFull(err error) error {
	if errors.Is(err, syscall.ENOSPC) {
		return fmt.Errorf("%w: %w", ErrFull, err)
	}
	return err
}

// IsFull reports whether err means the local flash device is full.
func IsFull(err error) bool { return errors.Is(err, ErrFull) || errors.Is(err, syscall.ENOSPC) }
