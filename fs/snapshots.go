package fs

import (
	"context"
	"fmt"
	"path"
	"slices"
	"strings"
	"syscall"

	"vpool/volume"
)

// Snapshots as files. /.snapshots (hidden from the root's listing, found
// by lookup) mirrors the tree read-only: every directory, and for every
// vDisk a directory of its snapshots, so that snapshot NAME of dir/vm1.raw
// is /.snapshots/dir/vm1.raw/NAME, a read-only file of the snapshot's
// size. Regular files are not mirrored. Nothing there gives more than
// the tree gives: a mirrored directory has its directory's owner and
// mode without the write bits; a vDisk's directory of snapshots may be
// listed by whoever may read the vDisk; a snapshot file has the owner,
// group and mode (without write bits) its vDisk had when it was taken.
//
// Their inode numbers are synthetic and never stored: the mirror of
// inode i is snapBit|i; snapshot epoch e of the vDisk file of inode i is
// snapBit|snapFileBit|i<<snapEpochBits|e. NFS handles built on them stay
// valid as long as the inode and the snapshot exist.

// SnapshotsDir is the name of the snapshot tree in the root.
const SnapshotsDir = ".snapshots"

const (
	snapBit       = 1 << 63
	snapFileBit   = 1 << 62
	snapEpochBits = 22
	snapMaxIno    = 1 << (62 - snapEpochBits)
)

// ErrReadOnly: the snapshot tree cannot be changed.
var ErrReadOnly = fmt.Errorf("%w (snapshots are read-only)", volume.ErrReadOnly)

func isSnapIno(ino uint64) bool { return ino&snapBit != 0 }

func mirrorIno(ino uint64) uint64 { return snapBit | ino }

func snapFileIno(ino uint64, epoch uint32) (uint64, error) {
	if ino >= snapMaxIno || epoch >= 1<<snapEpochBits {
		return 0, fmt.Errorf("%w: snapshot epoch %d of inode %d has no inode number", ErrTooBig, epoch, ino)
	}
	return snapBit | snapFileBit | ino<<snapEpochBits | uint64(epoch), nil
}

func splitSnapFileIno(ino uint64) (real uint64, epoch uint32) {
	ino &^= snapBit | snapFileBit
	return ino >> snapEpochBits, uint32(ino & (1<<snapEpochBits - 1))
}

// writableEntry fails for a change of an entry in the snapshot tree, and
// for the name of the snapshot tree itself.
func writableEntry(parent uint64, name string) error {
	switch {
	case isSnapIno(parent):
		return ErrReadOnly
	case parent == RootIno && name == SnapshotsDir:
		return fmt.Errorf("%w: %s is the snapshot tree", ErrExist, SnapshotsDir)
	}
	return nil
}

// snapshotOf finds snapshot epoch of the vDisk file of inode ino.
func (n *Namespace) snapshotOf(ino uint64, epoch uint32) (Attr, *volume.VDisk, volume.SnapshotInfo, error) {
	a, v, err := n.vdiskAttr(ino)
	if err != nil {
		return a, nil, volume.SnapshotInfo{}, err
	}
	snaps := v.Snapshots()
	i := slices.IndexFunc(snaps, func(s volume.SnapshotInfo) bool { return s.Epoch == epoch })
	if i < 0 {
		return a, nil, volume.SnapshotInfo{}, fmt.Errorf("%w: snapshot epoch %d of inode %d", ErrStale, epoch, ino)
	}
	return a, v, snaps[i], nil
}

func (n *Namespace) vdiskAttr(ino uint64) (Attr, *volume.VDisk, error) {
	n.mu.Lock()
	a, err := n.attrLocked(ino)
	n.mu.Unlock()
	if err != nil {
		return a, nil, err
	}
	if !a.IsVDisk() {
		return a, nil, fmt.Errorf("%w: inode %d is not a vDisk", ErrStale, ino)
	}
	v, err := n.pool.VDisk(a.VDisk)
	if err != nil {
		return a, nil, fmt.Errorf("%w: inode %d: %v", ErrStale, ino, err)
	}
	return a, v, nil
}

// snapAttr returns the attributes of an inode of the snapshot tree.
func (n *Namespace) snapAttr(ino uint64) (Attr, error) {
	if ino&snapFileBit != 0 {
		real, epoch := splitSnapFileIno(ino)
		a, _, s, err := n.snapshotOf(real, epoch)
		if err != nil {
			return Attr{}, err
		}
		t := s.Created.UnixNano()
		// Blocks as if fully allocated: backup tools must not take the
		// file for a hole.
		own := volume.Owner{Uid: a.Uid, Gid: a.Gid, Mode: a.Mode}
		if s.Owner != nil {
			own = *s.Owner
		}
		return Attr{Ino: ino, Gen: a.Gen, Parent: mirrorIno(real), Mode: syscall.S_IFREG | own.Mode&0o555,
			Uid: own.Uid, Gid: own.Gid, Nlink: 1, Size: s.Size, Atime: t, Mtime: t, Ctime: t, Blocks: (s.Size + 511) / 512}, nil
	}
	real := ino &^ snapBit
	n.mu.Lock()
	a, err := n.attrLocked(real)
	n.mu.Unlock()
	if err != nil {
		return Attr{}, err
	}
	if !a.IsDir() && !a.IsVDisk() {
		return Attr{}, fmt.Errorf("%w: inode %d has no snapshots", ErrStale, real)
	}
	parent := mirrorIno(a.Parent)
	if real == RootIno {
		parent = RootIno
	}
	mode := a.Mode & 0o555
	if a.IsVDisk() {
		mode = snapDirMode(a.Mode)
	}
	return Attr{Ino: ino, Gen: a.Gen, Parent: parent, Mode: syscall.S_IFDIR | mode, Uid: a.Uid, Gid: a.Gid,
		Nlink: 2, Size: 4096, Blocks: 8, Atime: a.Atime, Mtime: a.Mtime, Ctime: a.Ctime}, nil
}

// snapDirMode is the mode of a vDisk's directory of snapshots: whoever
// may read the vDisk may list and open its snapshots (r becomes r-x).
func snapDirMode(fileMode uint32) uint32 {
	var m uint32
	for _, shift := range []uint32{6, 3, 0} {
		if fileMode>>shift&4 != 0 {
			m |= 5 << shift
		}
	}
	return m
}

// CreateSnapshot takes snapshot name of the vDisk at path (see
// volume.VDisk.CreateSnapshot). Its file in the snapshot tree keeps the
// vDisk file's owner, group and mode of now, without the write bits.
func (n *Namespace) CreateSnapshot(ctx context.Context, path, name string) (volume.SnapshotInfo, error) {
	a, v, err := n.vdiskAt(ctx, path)
	if err != nil {
		return volume.SnapshotInfo{}, err
	}
	return v.CreateSnapshotOwned(ctx, name, &volume.Owner{Uid: a.Uid, Gid: a.Gid, Mode: a.Mode & 0o7777})
}

// snapLookup finds name in a directory of the snapshot tree.
func (n *Namespace) snapLookup(ctx context.Context, parent uint64, name string) (Attr, error) {
	if parent&snapFileBit != 0 {
		return Attr{}, fmt.Errorf("%w: inode %#x", ErrNotDir, parent)
	}
	d, err := n.snapAttr(parent)
	switch {
	case err != nil:
		return Attr{}, err
	case name == ".":
		return d, nil
	case name == "..":
		return n.GetAttr(ctx, d.Parent)
	}
	if err := checkName(name); err != nil {
		return Attr{}, err
	}
	real := parent &^ snapBit
	n.mu.Lock()
	a, err := n.attrLocked(real)
	var c Attr
	if err == nil && a.IsDir() {
		var ino uint64
		if ino, _, err = n.entryLocked(real, name); err == nil {
			c, err = n.attrLocked(ino)
		}
	}
	n.mu.Unlock()
	if err != nil {
		return Attr{}, err
	}
	if a.IsDir() {
		if !c.IsDir() && !c.IsVDisk() {
			return Attr{}, fmt.Errorf("%w: %q has no snapshots", ErrNotFound, name)
		}
		return n.snapAttr(mirrorIno(c.Ino))
	}
	_, v, err := n.vdiskAttr(real)
	if err != nil {
		return Attr{}, err
	}
	for _, s := range v.Snapshots() {
		if s.Name == name {
			ino, err := snapFileIno(real, s.Epoch)
			if err != nil {
				return Attr{}, err
			}
			return n.snapAttr(ino)
		}
	}
	return Attr{}, fmt.Errorf("%w: snapshot %q", ErrNotFound, name)
}

// snapEntries lists a directory of the snapshot tree: a mirrored
// directory's subdirectories and vDisks, in name order (ReadDir) or in
// inode order (ReadDirOrder), or a vDisk's snapshots.
func (n *Namespace) snapEntries(ctx context.Context, ino uint64, inodeOrder bool, fn func(DirEntry) bool) error {
	if ino&snapFileBit != 0 {
		return fmt.Errorf("%w: inode %#x", ErrNotDir, ino)
	}
	real := ino &^ snapBit
	n.mu.Lock()
	a, err := n.attrLocked(real)
	n.mu.Unlock()
	if err != nil {
		return err
	}
	if a.IsVDisk() {
		_, v, err := n.vdiskAttr(real)
		if err != nil {
			return err
		}
		snaps := v.Snapshots() // epoch order: inode order too
		if !inodeOrder {
			slices.SortFunc(snaps, func(x, y volume.SnapshotInfo) int { return strings.Compare(x.Name, y.Name) })
		}
		for _, s := range snaps {
			sino, err := snapFileIno(real, s.Epoch)
			if err != nil {
				return err
			}
			if !fn(DirEntry{Name: s.Name, Ino: sino, Mode: syscall.S_IFREG}) {
				return nil
			}
		}
		return nil
	}
	mirror := func(e DirEntry) bool {
		if e.Mode != syscall.S_IFDIR {
			if e.Mode != syscall.S_IFREG {
				return true
			}
			n.mu.Lock()
			c, err := n.attrLocked(e.Ino)
			n.mu.Unlock()
			if err != nil || !c.IsVDisk() {
				return true
			}
		}
		return fn(DirEntry{Name: e.Name, Ino: mirrorIno(e.Ino), Mode: syscall.S_IFDIR})
	}
	if inodeOrder {
		return n.readDirOrder(ctx, real, 0, mirror)
	}
	return n.readDir(ctx, real, "", mirror)
}

// snapReadDir and snapReadDirOrder skip what a cookie says was listed.
func (n *Namespace) snapReadDir(ctx context.Context, ino uint64, after string, fn func(DirEntry) bool) error {
	return n.snapEntries(ctx, ino, false, func(e DirEntry) bool { return e.Name <= after && after != "" || fn(e) })
}

func (n *Namespace) snapReadDirOrder(ctx context.Context, ino, after uint64, fn func(DirEntry) bool) error {
	return n.snapEntries(ctx, ino, true, func(e DirEntry) bool { return e.Ino <= after && after != 0 || fn(e) })
}

// openSnapshot opens a snapshot file for reading.
func (n *Namespace) openSnapshot(ino uint64, write bool) (*File, error) {
	if write {
		return nil, ErrReadOnly
	}
	if ino&snapFileBit == 0 {
		return nil, fmt.Errorf("%w: inode %#x", ErrIsDir, ino)
	}
	real, epoch := splitSnapFileIno(ino)
	_, v, s, err := n.snapshotOf(real, epoch)
	if err != nil {
		return nil, err
	}
	snap, err := v.OpenSnapshot(s.Name)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrStale, err)
	}
	return &File{n: n, ino: ino, snap: snap}, nil
}

// Clone makes dst (a new vDisk file: its name has a vDisk suffix) a clone
// of snapshot name of the vDisk at src; for a template, name may be
// empty. The new file takes src's mode and owner.
func (n *Namespace) Clone(ctx context.Context, src, name, dst string) (Attr, error) {
	sa, err := n.Resolve(ctx, src)
	if err != nil {
		return Attr{}, fmt.Errorf("%s: %w", src, err)
	}
	pv, err := n.VDiskOf(ctx, src)
	if err != nil {
		return Attr{}, err
	}
	dir, base := path.Split(strings.Trim(dst, "/"))
	d, err := n.Resolve(ctx, dir)
	if err == nil && !d.IsDir() {
		err = ErrNotDir
	}
	if err == nil {
		err = checkName(base)
	}
	if err == nil {
		err = writableEntry(d.Ino, base)
	}
	if err == nil && !n.isVDiskName(base) {
		err = fmt.Errorf("%w: a clone is a vDisk: its name must end in %s", ErrInvalid, strings.Join(n.cfg.VDiskSuffixes, " or "))
	}
	if err != nil {
		return Attr{}, fmt.Errorf("%s: %w", dst, err)
	}
	cv, err := n.pool.Clone(ctx, pv, name)
	if err != nil {
		return Attr{}, fmt.Errorf("%s: %w", src, err)
	}
	n.mu.Lock()
	a, _, err := n.createLocked(d.Ino, base, NewNode{Mode: syscall.S_IFREG | sa.Mode&0o7777, Exclusive: true,
		Caller: Caller{Uid: sa.Uid, Gid: sa.Gid}}, cv)
	n.mu.Unlock()
	if err != nil {
		if derr := n.pool.Delete(ctx, cv.ID()); derr != nil {
			n.log.Warn("fs: drop unused clone", "vdisk", volume.FormatID(cv.ID()), "err", derr)
		}
		return Attr{}, fmt.Errorf("%s: %w", dst, err)
	}
	if err := n.SyncMeta(); err != nil {
		return Attr{}, err
	}
	n.fill(&a)
	return a, nil
}
