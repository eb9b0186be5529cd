package flashcache

import (
	"fmt"
	"sync/atomic"
)

// flashSpace keeps part of the flash filesystem free for the metadata
// stores. They write through mappings of sparse files (badger's logs),
// which fault (SIGBUS) instead of failing when the filesystem is full;
// so no bulk data may take the last reserve bytes: a new SCO that would
// is refused with ErrFull, and so is a writer that must wait for room in
// the write buffer while the filesystem could not take what the buffer
// holds once more (uploads to a backend on it are not coming, or flash
// filled up otherwise).
type flashSpace struct {
	reserve atomic.Int64 // bytes kept free; 0: none
	free    atomic.Int64 // at the last look
	low     atomic.Bool  // set by a refusal; cleared by a look that finds room for every check
}

// SetReserve keeps reserveBytes free on the flash filesystem (see
// flashSpace); 0 turns the check off.
func (w *WriteBuffer) SetReserve(reserveBytes int64) { w.space.reserve.Store(reserveBytes) }

// Space reports the flash filesystem's free bytes at the last look, and
// whether writes are refused: since a refusal, until a look finds room
// for the write buffer's contents above the reserve.
func (w *WriteBuffer) Space() (freeBytes int64, low bool) {
	return w.space.free.Load(), w.space.low.Load()
}

// checkSpace looks at the filesystem: an error (ErrFull) when taking need
// more bytes would leave less than the reserve free.
func (w *WriteBuffer) checkSpace(need int64) error {
	reserve := w.space.reserve.Load()
	if reserve <= 0 {
		return nil
	}
	free, err := w.fs.FreeBytes(w.dir)
	if err != nil {
		return nil // cannot tell: the writes themselves will say
	}
	w.space.free.Store(free)
	if free-need < reserve {
		w.space.low.Store(true)
		return fmt.Errorf("%w: the flash filesystem has %d bytes free, and %d are kept for the metadata stores",
			ErrFull, free, reserve)
	}
	if free-w.limit >= reserve { // room for a writer that waits, too: no refusal anywhere
		w.space.low.Store(false)
	}
	return nil
}
