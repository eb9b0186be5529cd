package fs

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
	"syscall"

	"vpool/volume"
)

// Regular files keep their data in the file store, a vDisk of the vPool,
// in 1 MiB chunks handed out on first write: a 1 KiB file costs one
// cluster, a 4 GiB ISO 4096 chunk entries. Freed chunks are discarded at
// once and reused only after a backup no longer names them (quarantine),
// and every backup waits for the file store's uploads first, so a restore
// never shows one file's data in another.
const (
	chunkShift = 20
	chunkSize  = 1 << chunkShift
)

func beUint64(b []byte) uint64 { return binary.BigEndian.Uint64(b) }

// File is an open file: a vDisk or a regular file.
type File struct {
	n     *Namespace
	ino   uint64
	vdisk *volume.VDisk    // vDisk files
	snap  *volume.Snapshot // snapshot files (read-only; no openInode)
	oi    *openInode
	write bool
	// kernel: the FUSE mount's handle. Writes through others (NFS, and
	// any front end to come) tell the kernel to drop the pages a mapping
	// of the vDisk may hold; the kernel keeps its own writes coherent.
	kernel bool
}

// invalidateMapped tells the FUSE mount, if any, that length bytes of
// the vDisk of inode ino at off changed outside it.
func (n *Namespace) invalidateMapped(ino uint64, off, length int64) {
	if m := n.kernel.Load(); m != nil {
		m.InvalidateVDisk(ino, off, length)
	}
}

// Open opens a regular file (or vDisk) for I/O; write asks for writing.
func (n *Namespace) Open(ctx context.Context, ino uint64, write bool) (*File, error) {
	if isSnapIno(ino) {
		return n.openSnapshot(ino, write)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	a, err := n.attrLocked(ino)
	if err != nil {
		return nil, err
	}
	if a.IsDir() {
		return nil, fmt.Errorf("%w: inode %d", ErrIsDir, ino)
	}
	f := &File{n: n, ino: ino, write: write}
	if a.IsVDisk() {
		if f.vdisk, err = n.pool.VDisk(a.VDisk); err != nil {
			return nil, fmt.Errorf("fs: inode %d: %w", ino, err)
		}
	}
	oi := n.mu.open[ino]
	if oi == nil {
		oi = &openInode{}
		n.mu.open[ino] = oi
	}
	oi.refs++
	if write {
		oi.writers++
	}
	f.oi = oi
	return f, nil
}

// IsSnapshot reports whether the file is a snapshot (read-only).
func (f *File) IsSnapshot() bool { return f.snap != nil }

// IsVDisk reports whether the file is a vDisk.
func (f *File) IsVDisk() bool { return f.vdisk != nil }

// Changes counts the changes to what the file reads, as
// volume.VDisk.Changes does: a snapshot never changes; a regular file
// counts the file store's changes (every regular file's), and a change
// of its size alone is not counted.
func (f *File) Changes() uint64 {
	switch {
	case f.snap != nil:
		return 0
	case f.vdisk != nil:
		return f.vdisk.Changes()
	}
	return f.n.files.Changes()
}

// Ino is the file's inode number.
func (f *File) Ino() uint64 { return f.ino }

// Release closes the handle; the last one of an unlinked file frees it.
func (f *File) Release(ctx context.Context) error {
	if f.snap != nil {
		return f.snap.Close()
	}
	n := f.n
	f.n.storeMtime(f.ino)
	n.mu.Lock()
	f.oi.refs--
	if f.write {
		f.oi.writers--
	}
	last := f.oi.refs == 0
	if last {
		delete(n.mu.open, f.ino)
	}
	var free *Attr
	if last {
		if a, err := n.attrLocked(f.ino); err == nil && a.Nlink == 0 {
			free = &a
		}
	}
	n.mu.Unlock()
	if free != nil {
		return n.freeInode(ctx, *free)
	}
	return nil
}

// storeMtime stores an open vDisk's newest write time.
func (n *Namespace) storeMtime(ino uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	oi := n.mu.open[ino]
	if oi == nil {
		return
	}
	m := oi.mtime.Swap(0)
	if m == 0 {
		return
	}
	a, err := n.attrLocked(ino)
	if err != nil || a.Mtime >= m {
		return
	}
	a.Mtime, a.Ctime = m, max(a.Ctime, m)
	if err := n.commit([]volume.MetaOp{{Key: key(kindInode, ino), Value: a.encode()}}); err != nil {
		n.log.Warn("fs: store mtime", "inode", ino, "err", err)
	}
}

func (n *Namespace) dropPendingMtimeLocked(ino uint64) {
	if oi := n.mu.open[ino]; oi != nil {
		oi.mtime.Store(0)
	}
}

// ReadAt reads from the file; it returns fewer bytes only at the end.
func (f *File) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("%w: offset %d", ErrInvalid, off)
	}
	if f.snap != nil {
		return readFull(ctx, f.snap.ReadAt, f.snap.Size(), p, off)
	}
	if f.vdisk != nil {
		return readFull(ctx, f.vdisk.ReadAt, f.vdisk.Size(), p, off)
	}
	l := f.n.dataLock(f.ino)
	l.RLock()
	defer l.RUnlock()
	a, err := f.n.GetAttr(ctx, f.ino)
	if err != nil {
		return 0, err
	}
	if off >= a.Size {
		return 0, nil
	}
	if int64(len(p)) > a.Size-off {
		p = p[:a.Size-off]
	}
	err = forChunks(off, int64(len(p)), func(idx uint64, o, n, inner int64) error {
		seg := p[o-off : o-off+n]
		c, ok, err := f.n.chunk(f.ino, idx)
		if err != nil || !ok {
			clear(seg)
			return err
		}
		_, err = f.n.files.ReadAt(ctx, seg, int64(c)<<chunkShift+inner)
		return err
	})
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// readFull reads from an image of size bytes: fewer bytes only at the end.
func readFull(ctx context.Context, read func(context.Context, []byte, int64) (int, error), size int64, p []byte, off int64) (int, error) {
	if off >= size {
		return 0, nil
	}
	if int64(len(p)) > size-off {
		p = p[:size-off]
	}
	return read(ctx, p, off)
}

// WriteAt writes to the file, extending it when the write ends past it.
func (f *File) WriteAt(ctx context.Context, p []byte, off int64) (int, error) {
	if f.snap != nil {
		return 0, ErrReadOnly
	}
	if !f.write {
		return 0, fmt.Errorf("%w: not open for writing", ErrBadFD)
	}
	end := off + int64(len(p))
	if off < 0 || end < off {
		return 0, fmt.Errorf("%w: offset %d", ErrInvalid, off)
	}
	if f.vdisk != nil {
		if end > f.vdisk.Size() {
			if err := f.growVDisk(ctx, end); err != nil {
				return 0, err
			}
		}
		if !f.kernel {
			// Pages a mapping dirtied go back to the vDisk before this
			// write, not over it; the same call after the write drops
			// what was read in between.
			f.n.invalidateMapped(f.ino, off, int64(len(p)))
			defer f.n.invalidateMapped(f.ino, off, int64(len(p)))
		}
		if err := f.vdisk.WriteAt(ctx, p, off); err != nil {
			return 0, err
		}
		f.oi.mtime.Store(nowNanos())
		return len(p), nil
	}
	if end > int64(f.n.chunks)<<chunkShift {
		return 0, fmt.Errorf("%w: write ends at %d bytes", ErrTooBig, end)
	}
	l := f.n.dataLock(f.ino)
	l.RLock()
	defer l.RUnlock()
	if err := forChunks(off, int64(len(p)), func(idx uint64, o, n, inner int64) error {
		c, err := f.n.chunkForWrite(f.ino, idx)
		if err != nil {
			return err
		}
		return f.n.files.WriteAt(ctx, p[o-off:o-off+n], int64(c)<<chunkShift+inner)
	}); err != nil {
		return 0, err
	}
	// Durability order: the data first, then the size that shows it.
	n := f.n
	n.mu.Lock()
	defer n.mu.Unlock()
	a, err := n.attrLocked(f.ino)
	if err != nil {
		return 0, err
	}
	now := nowNanos()
	a.Size = max(a.Size, end)
	a.Mtime, a.Ctime = now, now
	a.Mode &^= syscall.S_ISUID // writes drop set-user-id, as local filesystems do
	if err := n.commit([]volume.MetaOp{{Key: key(kindInode, f.ino), Value: a.encode()}}); err != nil {
		return 0, err
	}
	return len(p), nil
}

// growVDisk extends a vDisk to at least size (a write past its end, as a
// file would grow).
func (f *File) growVDisk(ctx context.Context, size int64) error {
	l := f.n.dataLock(f.ino)
	l.Lock()
	defer l.Unlock()
	if size <= f.vdisk.Size() {
		return nil
	}
	return f.vdisk.Resize(ctx, size)
}

// Sync makes the file's data and the namespace durable (fsync). A vDisk's
// newest mtime is stored at close, not here: fsync is on the guest's hot
// path and must not cost a metadata sync.
func (f *File) Sync(ctx context.Context) error {
	if f.snap != nil {
		return nil // nothing to make durable
	}
	if f.vdisk != nil {
		if err := f.vdisk.Flush(ctx); err != nil {
			return err
		}
	} else if err := f.n.files.Flush(ctx); err != nil {
		return err
	}
	return f.n.SyncMeta()
}

// Fallocate modes (as fallocate(2)).
const (
	FallocKeepSize  = 0x01
	FallocPunchHole = 0x02
	FallocZeroRange = 0x10
)

// Allocate implements fallocate: plain and keep-size allocation (vDisks
// are thin, so only the size changes), punch-hole and zero-range (a
// discard). Other modes are ErrNotSupp.
func (f *File) Allocate(ctx context.Context, mode uint32, off, length int64) error {
	if off < 0 || length <= 0 || off+length < off {
		return fmt.Errorf("%w: fallocate [%d, +%d)", ErrInvalid, off, length)
	}
	if f.snap != nil {
		return ErrReadOnly
	}
	if !f.write {
		return fmt.Errorf("%w: not open for writing", ErrBadFD)
	}
	end := off + length
	switch mode {
	case 0, FallocKeepSize, FallocZeroRange, FallocZeroRange | FallocKeepSize, FallocPunchHole | FallocKeepSize:
	default:
		return fmt.Errorf("%w: fallocate mode %#x", ErrNotSupp, mode)
	}
	a, err := f.n.GetAttr(ctx, f.ino)
	if err != nil {
		return err
	}
	if mode&(FallocPunchHole|FallocZeroRange) != 0 && off < a.Size {
		if err := f.discard(ctx, off, min(end, a.Size)-off); err != nil {
			return err
		}
	}
	if mode&FallocKeepSize == 0 && end > a.Size {
		if f.vdisk != nil {
			err = f.growVDisk(ctx, end)
		} else {
			err = f.n.resizeFile(ctx, f.ino, end)
		}
	}
	return err
}

func (f *File) discard(ctx context.Context, off, n int64) error {
	if f.vdisk != nil {
		err := f.vdisk.Discard(ctx, off, n)
		f.oi.mtime.Store(nowNanos())
		return err
	}
	l := f.n.dataLock(f.ino)
	l.RLock()
	defer l.RUnlock()
	if err := forChunks(off, n, func(idx uint64, _, n, inner int64) error {
		c, ok, err := f.n.chunk(f.ino, idx)
		if err != nil || !ok {
			return err
		}
		return f.n.files.Discard(ctx, int64(c)<<chunkShift+inner, n)
	}); err != nil {
		return err
	}
	return f.n.touch(f.ino) // a punched hole is a change of the data
}

// touch sets an inode's mtime and ctime to now.
func (n *Namespace) touch(ino uint64) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	a, err := n.attrLocked(ino)
	if err != nil {
		return err
	}
	now := nowNanos()
	a.Mtime, a.Ctime = now, now
	return n.commit([]volume.MetaOp{{Key: key(kindInode, ino), Value: a.encode()}})
}

// forChunks splits [off, off+n) at chunk boundaries and calls fn for each
// piece: the file's chunk index, the piece's file offset and length, and
// its offset inside the chunk.
func forChunks(off, n int64, fn func(idx uint64, o, n, inner int64) error) error {
	for o := off; o < off+n; {
		e := min(off+n, (o>>chunkShift+1)<<chunkShift)
		if err := fn(uint64(o>>chunkShift), o, e-o, o%chunkSize); err != nil {
			return err
		}
		o = e
	}
	return nil
}

// Seek answers SEEK_DATA (whence 3) and SEEK_HOLE (4); for vDisks from
// the block map, for other files treating all of the file as data.
func (f *File) Seek(ctx context.Context, off int64, whence int) (int64, error) {
	if f.snap != nil { // all data, as far as SEEK_DATA/SEEK_HOLE tell
		if off < 0 || off >= f.snap.Size() {
			return 0, fmt.Errorf("%w: offset %d of %d", ErrNoData, off, f.snap.Size())
		}
		switch whence {
		case 3:
			return off, nil
		case 4:
			return f.snap.Size(), nil
		}
		return 0, fmt.Errorf("%w: whence %d", ErrInvalid, whence)
	}
	if f.vdisk != nil {
		switch whence { // past the data, volume.ErrOutOfRange: ENXIO
		case 3:
			return f.vdisk.SeekData(ctx, off)
		case 4:
			return f.vdisk.SeekHole(ctx, off)
		}
		return 0, fmt.Errorf("%w: whence %d", ErrInvalid, whence)
	}
	a, err := f.n.GetAttr(ctx, f.ino)
	if err != nil {
		return 0, err
	}
	if off < 0 || off >= a.Size {
		return 0, fmt.Errorf("%w: offset %d of %d", ErrNoData, off, a.Size)
	}
	switch whence {
	case 3:
		return off, nil
	case 4:
		return a.Size, nil
	}
	return 0, fmt.Errorf("%w: whence %d", ErrInvalid, whence)
}

func (n *Namespace) dataLock(ino uint64) *sync.RWMutex {
	return &n.dataLocks[ino%uint64(len(n.dataLocks))]
}

// chunk finds the file-store chunk of a file's chunk index.
func (n *Namespace) chunk(ino, idx uint64) (uint64, bool, error) {
	b, _, ok, err := n.meta.Get(key(kindChunk, ino, idx))
	if err != nil || !ok {
		return 0, false, err
	}
	if len(b) != 8 {
		return 0, false, fmt.Errorf("%w: chunk entry of %d bytes", ErrCorrupt, len(b))
	}
	return beUint64(b), true, nil
}

// chunkForWrite finds or allocates the chunk for a write: a free one, else
// the next never used one.
func (n *Namespace) chunkForWrite(ino, idx uint64) (uint64, error) {
	if c, ok, err := n.chunk(ino, idx); err != nil || ok {
		return c, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if c, ok, err := n.chunk(ino, idx); err != nil || ok {
		return c, err
	}
	if err := n.loadFreeLocked(); err != nil {
		return 0, err
	}
	var c uint64
	found := len(n.mu.free) > 0
	if found {
		c = n.mu.free[len(n.mu.free)-1]
	}
	sb := n.mu.sb
	ops := []volume.MetaOp{{Key: key(kindChunk, ino, idx), Value: binary.BigEndian.AppendUint64(nil, c)}}
	if found {
		ops = append(ops, volume.MetaOp{Key: key(kindFree, c)})
	} else {
		if sb.NextChunk >= n.chunks {
			return 0, fmt.Errorf("%w: all %d chunks of the file store are in use", ErrNoSpace, n.chunks)
		}
		c = sb.NextChunk
		sb.NextChunk++
		ops[0].Value = binary.BigEndian.AppendUint64(nil, c)
		ops = append(ops, volume.MetaOp{Key: key(kindSuper), Value: sb.encode()})
	}
	if err := n.commit(ops); err != nil {
		n.mu.freeLoaded = false // not known which part landed: read it again
		return 0, err
	}
	if found {
		n.mu.free = n.mu.free[:len(n.mu.free)-1]
	}
	n.mu.sb = sb
	return c, nil
}

// loadFreeLocked reads the free chunks into n.mu.free once.
func (n *Namespace) loadFreeLocked() error {
	if n.mu.freeLoaded {
		return nil
	}
	var free []uint64
	if err := n.meta.Scan(key(kindFree), nil, func(k, _ []byte) bool {
		free = append(free, beUint64(k[2:]))
		return true
	}); err != nil {
		return err
	}
	slices.Reverse(free) // the lowest is taken first, from the end
	n.mu.free, n.mu.freeLoaded = free, true
	return nil
}

// chunksFreedLocked records chunks that became free ('n f' keys staged).
func (n *Namespace) chunksFreedLocked(cs []uint64) {
	if n.mu.freeLoaded {
		n.mu.free = append(n.mu.free, cs...) // taken before the lower ones: order does not matter
	}
}

// resizeFile sets a regular file's size: chunks past the end are freed
// and the tail of the last one zeroed, so growing again reads zeros.
func (n *Namespace) resizeFile(ctx context.Context, ino uint64, size int64) error {
	if size > int64(n.chunks)<<chunkShift {
		return fmt.Errorf("%w: %d bytes", ErrTooBig, size)
	}
	l := n.dataLock(ino)
	l.Lock()
	defer l.Unlock()
	a, err := n.GetAttr(ctx, ino)
	if err != nil {
		return err
	}
	if size < a.Size {
		if err := n.truncateChunks(ctx, ino, size); err != nil {
			return err
		}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if a, err = n.attrLocked(ino); err != nil {
		return err
	}
	now := nowNanos()
	a.Size, a.Mtime, a.Ctime = size, now, now
	return n.commit([]volume.MetaOp{{Key: key(kindInode, ino), Value: a.encode()}})
}

// truncateChunks frees a file's chunks past size (discarded in the file
// store, then quarantined) and zeroes the rest of the chunk size ends in.
func (n *Namespace) truncateChunks(ctx context.Context, ino uint64, size int64) error {
	first := uint64((size + chunkSize - 1) >> chunkShift)
	if size%chunkSize != 0 {
		if c, ok, err := n.chunk(ino, uint64(size>>chunkShift)); err != nil {
			return err
		} else if ok {
			if err := n.files.Discard(ctx, int64(c)<<chunkShift+size%chunkSize, chunkSize-size%chunkSize); err != nil {
				return err
			}
		}
	}
	for {
		var idx, cs []uint64
		prefix := key(kindChunk, ino)
		if err := n.meta.Scan(prefix, key(kindChunk, ino, first), func(k, v []byte) bool {
			idx, cs = append(idx, beUint64(k[10:])), append(cs, beUint64(v))
			return len(idx) < 4096
		}); err != nil {
			return err
		}
		if len(idx) == 0 {
			return nil
		}
		ops := make([]volume.MetaOp, 0, 2*len(idx))
		for i := range idx {
			if err := n.files.Discard(ctx, int64(cs[i])<<chunkShift, chunkSize); err != nil {
				return err
			}
			ops = append(ops, volume.MetaOp{Key: key(kindChunk, ino, idx[i])},
				volume.MetaOp{Key: key(kindQuarantine, cs[i]), Value: []byte{}})
		}
		n.mu.Lock()
		err := n.commit(ops)
		n.mu.Unlock()
		if err != nil {
			return err
		}
	}
}
