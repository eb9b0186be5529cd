package volume

import (
	"errors"
	"sync"
	"syscall"
	"unsafe"
)

// Large writes go to the SCO with O_DIRECT: they are mostly streams
// (image copies, backups, guest sequential I/O) that gain nothing from
// the page cache, and a log-structured write buffer would otherwise fill
// the page cache with new pages for every byte (each a fresh allocation:
// on this project's VMs, whose freed memory goes back to the hypervisor,
// that doubled the kernel's time per MiB). Small writes stay buffered:
// they are cheap there, and a flush makes them durable together.
//
// Direct writes are durable on the device when they return (a flush still
// syncs the device cache through the buffered handle: one inode), and the
// kernel keeps the page cache coherent for the buffered readers.

// directMin is the smallest write that goes direct.
const directMin = 128 << 10

// directAlign is what O_DIRECT needs of a buffer's address (offsets and
// lengths are whole clusters, at least 4 KiB).
const directAlign = 4096

// directBufSize is the size of the pooled aligned buffers; a longer write
// goes in pieces of it.
const directBufSize = 1 << 20

var directBufs = sync.Pool{New: func() any {
	raw := make([]byte, directBufSize+directAlign)
	off := int(-uintptr(unsafe.Pointer(&raw[0])) & (directAlign - 1))
	b := raw[off : off+directBufSize]
	return &b
}}

// writeData writes whole clusters at off: direct when large and the
// segment has a direct handle, else through the page cache.
func (s *segment) writeData(p []byte, off int64) error {
	if s.direct == nil || len(p) < directMin {
		_, err := s.sco.WriteAt(p, off)
		return err
	}
	bp := directBufs.Get().(*[]byte)
	defer directBufs.Put(bp)
	for len(p) > 0 {
		n := copy(*bp, p)
		if _, err := s.direct.WriteAt((*bp)[:n], off); err != nil {
			if !errors.Is(err, syscall.EINVAL) {
				return err
			}
			// the filesystem refuses this direct write: buffered it is
			if _, err := s.sco.WriteAt(p, off); err != nil {
				return err
			}
			return nil
		}
		p, off = p[n:], off+int64(n)
	}
	return nil
}

// closeDirect closes the direct handle; the caller knows no writer uses
// it (the segment is sealed and its writers are done, or it is closing).
func (s *segment) closeDirect() {
	if s.direct != nil {
		s.direct.Close()
		s.direct = nil
	}
}
