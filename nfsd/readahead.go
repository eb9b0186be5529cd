package nfsd

import (
	"context"

	"vpool/fs"
)

// Read-ahead. A client that reads a file in large READs, one at a time
// (libnfs's nfs-cp and nfs-cat, each READ sent when the last reply has
// come), waits out each READ's time in the server: reading the range
// and checking its checksums is on the copy's critical path. So when a
// READ of at least readAheadMin starts where the file's last READ ended
// and no other READ of the file is in flight, the gateway reads the next
// range of the same size on another goroutine while this reply goes
// out. The next READ takes that data if the file has not changed since
// it was read (fs.File.Changes) and its size still gives the same
// count; otherwise it reads as usual. A client that keeps several large
// READs in flight gets no read-ahead: it does not wait for each one; nor
// do snapshot files (see beginRead). READs under readAheadMin are not
// recorded at all.
const (
	readAheadMin = 64 << 10
	readAheadMax = 32 // buffers held by read-ahead at once, in all
)

// prefetch is a READ's data read before its call came.
type prefetch struct {
	off     int64
	count   int
	hdr     int    // room left in buf before the data, for the reply's header
	changes uint64 // the file's Changes before it was read
	done    chan struct{}
	buf     []byte // set before done is closed, as are n and err
	n       int
	err     error
}

// readState is a cached file's READ history.
type readState struct {
	next     int64     // where the last READ ended (-1: none yet)
	inFlight int       // READs of the file in progress
	ahead    *prefetch // the next range, read ahead
}

// beginRead records a READ of [off, off+count) of f, count at least
// readAheadMin. It returns the data
// read ahead for it, if there is any, and whether to read ahead the
// range after it. endRead must follow.
func (c *fileCache) beginRead(f *fs.File, off int64, count int) (p *prefetch, ahead bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cf := c.mu.files[f.Ino()]
	if cf == nil || cf.f != f {
		return nil, false
	}
	r := &cf.reads
	// Not snapshots: the gateway releases a snapshot file after each
	// call (so that it can be deleted), and its read-ahead with it.
	ahead = r.next == off && r.inFlight == 0 && !f.IsSnapshot()
	r.next = off + int64(count)
	r.inFlight++
	if p = r.ahead; p != nil {
		r.ahead = nil
		if p.off == off && p.count == count {
			return p, ahead
		}
		c.drop(p)
	}
	return nil, ahead
}

// endRead records the end of a READ of f.
func (c *fileCache) endRead(f *fs.File) {
	c.mu.Lock()
	if cf := c.mu.files[f.Ino()]; cf != nil && cf.f == f {
		cf.reads.inFlight--
	}
	c.mu.Unlock()
}

// readAhead starts reading [off, off+count) of f, a file of size bytes
// as a READ saw it, for the READ that will ask for it.
func (s *Server) readAhead(f *fs.File, off int64, count, hdr int, size int64) {
	if off >= size || s.closing.Load() {
		return
	}
	c := s.files
	if c.held.Add(1) > readAheadMax {
		c.held.Add(-1)
		return
	}
	p := &prefetch{off: off, count: count, hdr: hdr, done: make(chan struct{})}
	c.mu.Lock()
	cf := c.mu.files[f.Ino()]
	if cf == nil || cf.f != f || cf.reads.ahead != nil {
		c.mu.Unlock()
		c.held.Add(-1)
		return
	}
	cf.reads.ahead = p
	cf.refs++ // the file stays open while it is read
	c.mu.Unlock()
	s.wg.Add(1)
	s.run(func() {
		defer s.wg.Done()
		p.changes = f.Changes()
		p.buf = getBig()[:hdr+count]
		p.n, p.err = f.ReadAt(context.Background(), p.buf[hdr:], off)
		close(p.done)
		c.put(f)
	})
}

// usePrefetch waits for p and returns its buffer, the data after hdr
// bytes, if it holds what a READ of f reading want bytes would read now;
// else it gives the buffer back and returns nil.
func (c *fileCache) usePrefetch(p *prefetch, f *fs.File, hdr, want int) []byte {
	<-p.done
	if p.err != nil || p.hdr != hdr || p.n != want || f.Changes() != p.changes {
		c.drop(p)
		return nil
	}
	c.held.Add(-1)
	c.stats.ReadAheadUsed.Add(uint64(p.n))
	return p.buf
}

// drop gives p's buffer back when it has been read.
func (c *fileCache) drop(p *prefetch) {
	free := func() {
		c.stats.ReadAheadWasted.Add(uint64(p.n))
		putBig(p.buf)
		c.held.Add(-1)
	}
	select {
	case <-p.done:
		free()
	default:
		go func() { <-p.done; free() }()
	}
}
