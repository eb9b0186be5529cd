// Package flashcache manages vpool's local flash: the write buffer (open
// and sealed SCO files not yet disposable) with its space accounting and
// backpressure, and the read cache of clusters fetched from the backend.
//
// # Write buffer
//
// Every byte appended to an SCO is reserved first with Reserve, and given
// back with Release when the SCO has left the buffer. Reserve never fails
// for a slow backend: above SoftFraction of the limit it delays the caller
// smoothly (the delay grows with the square of the fill level above the
// soft mark), and at the limit it blocks until space is released or the
// context ends. A writer that holds more than its fair share (limit /
// active owners) is blocked first, so one busy vDisk cannot starve the
// others.
//
// An uploaded SCO may stay on flash as a cache of recent writes: MarkClean
// moves its bytes from dirty to clean, which throttling ignores; each owner
// keeps at most its share of a quarter of the limit (CleanExcess).
//
// SCO files live at <dir>/sco/<owner:016x>/<seq:010d>.sco and are
// preallocated at creation, so that a full disk is reported when an SCO is
// opened, not halfway through a write. An uploaded SCO that leaves flash
// (RetireSCO) leaves its file in <dir>/sco-spare for the next new SCO of
// the same size: overwriting blocks written before is cheaper for the
// filesystem than filling preallocated ones. Spare files are kept up to
// a sixteenth of the limit, and a restart removes them. So the flash holds
// at most 1.3125 times the limit, plus per vDisk its open SCO and the next
// one, made ahead of time (both preallocated; a partly filled SCO gives
// back what it did not use when it is sealed).
//
// # Space reserve
//
// SetReserve keeps part of the flash filesystem free for the metadata
// stores, which write through mappings that a full disk would crash (see
// space.go): a new SCO that would take it is refused (ErrFull), and so is
// a writer that would wait for room while the filesystem could not take
// the buffer's contents once more. Space reports it for status.
//
// # Read cache
//
// A fixed set of slots (one cluster each) in one file, with an in-memory
// index. Eviction is S3-FIFO (Yang et al., SOSP 2023): new clusters enter a
// small FIFO (10% of the slots); those read again before they reach its
// end move to the main FIFO, the rest leave and are remembered in a ghost
// list, from which a repeat miss enters main directly. Main evicts with
// second chances (a 2-bit frequency). Why: a VM's working set is read
// again and again, while backups, clones and scans read each cluster once;
// S3-FIFO keeps the first and lets the second pass through the small
// queue, where plain LRU would flush the working set on every scan.
// The index is sharded (16 locks); data I/O happens outside the locks, so
// a slot can be reused while it is being read: callers verify every
// cluster they get against its checksum and treat a mismatch as a miss.
// The cache starts empty at every open: losing it loses nothing.
//
// This package imports only the standard library and vpool/vfs.
package flashcache
