package fs

import (
	"context"
	"errors"
	"fmt"

	"vpool/volume"
)

// Unlink removes a non-directory. Its data is freed at once, or at the
// last release when it is open.
func (n *Namespace) Unlink(ctx context.Context, parent uint64, name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	if err := writableEntry(parent, name); err != nil {
		return err
	}
	n.mu.Lock()
	free, err := n.unlinkLocked(parent, name, nil)
	n.mu.Unlock()
	if err == nil && free != nil {
		err = n.freeInode(ctx, *free)
	}
	return err
}

// unlinkLocked drops the entry of a non-directory, adding the changes to
// ops when not nil (else committing them). Durability order: the entry
// goes and the inode becomes an orphan in one commit; the data is freed
// after it (free is returned when no handle holds the inode), and the
// inode record last, so a crash in between leaves an orphan that the next
// Open frees.
func (n *Namespace) unlinkLocked(parent uint64, name string, ops *[]volume.MetaOp) (free *Attr, err error) {
	d, a, err := n.childLocked(parent, name)
	if err != nil {
		return nil, err
	}
	ino := a.Ino
	if a.IsDir() {
		return nil, fmt.Errorf("%w: %q", ErrIsDir, name)
	}
	last := a.Nlink <= 1
	if a.IsVDisk() && last {
		if c := n.pool.Clones(a.VDisk); len(c) > 0 {
			return nil, fmt.Errorf("%q: %w", name, &volume.ClonesError{Clones: c})
		}
	}
	now := nowNanos()
	d.Mtime, d.Ctime = now, now
	mine := []volume.MetaOp{{Key: key(kindInode, parent), Value: d.encode()}}
	mine, err = n.dropName(mine, parent, name, &a, now)
	if err != nil {
		return nil, err
	}
	if ops != nil {
		*ops = append(*ops, mine...)
	} else if err := n.commit(mine); err != nil {
		return nil, err
	}
	if last && n.mu.open[ino] == nil {
		return &a, nil
	}
	return nil, nil
}

// dropName adds the ops that take name in parent from the non-directory
// a: one name fewer, or, for its last name, the inode becomes an orphan
// (freed by the caller, or at the last release).
func (n *Namespace) dropName(ops []volume.MetaOp, parent uint64, name string, a *Attr, now int64) ([]volume.MetaOp, error) {
	only := oneName(a)
	if a.Nlink > 1 {
		a.Nlink--
	} else {
		a.Nlink = 0
		ops = append(ops, volume.MetaOp{Key: key(kindOrphan, a.Ino), Value: []byte{}})
	}
	a.Ctime = now
	ops = append(ops, volume.MetaOp{Key: key(kindInode, a.Ino), Value: a.encode()})
	return n.delEntry(ops, parent, name, a.Ino, only)
}

// freeInode frees an orphan's data, then its record.
func (n *Namespace) freeInode(ctx context.Context, a Attr) error {
	if a.IsVDisk() {
		if err := n.pool.Delete(ctx, a.VDisk); err != nil && !errors.Is(err, volume.ErrNotFound) {
			return fmt.Errorf("fs: delete vDisk %s of inode %d: %w", volume.FormatID(a.VDisk), a.Ino, err)
		}
	} else if a.IsRegular() {
		if err := n.truncateChunks(ctx, a.Ino, 0); err != nil {
			return err
		}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.commit([]volume.MetaOp{{Key: key(kindInode, a.Ino)}, {Key: key(kindOrphan, a.Ino)}})
}

// freeOrphans finishes unlinks a crash interrupted.
func (n *Namespace) freeOrphans(ctx context.Context) error {
	var inos []uint64
	if err := n.meta.Scan(key(kindOrphan), nil, func(k, _ []byte) bool {
		inos = append(inos, beUint64(k[2:]))
		return true
	}); err != nil {
		return err
	}
	for _, ino := range inos {
		n.mu.Lock()
		a, err := n.attrLocked(ino)
		n.mu.Unlock()
		if errors.Is(err, ErrStale) {
			err = n.commit([]volume.MetaOp{{Key: key(kindOrphan, ino)}})
		} else if err == nil {
			n.log.Info("fs: freeing a file unlinked before the restart", "inode", ino)
			err = n.freeInode(ctx, a)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Rmdir removes an empty directory.
func (n *Namespace) Rmdir(ctx context.Context, parent uint64, name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	if err := writableEntry(parent, name); err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	d, a, err := n.childLocked(parent, name)
	if err == nil && !a.IsDir() {
		err = fmt.Errorf("%w: %q", ErrNotDir, name)
	}
	if err != nil {
		return err
	}
	if err := n.emptyLocked(a.Ino, name); err != nil {
		return err
	}
	now := nowNanos()
	d.Nlink--
	d.Mtime, d.Ctime = now, now
	ops, err := n.delEntry([]volume.MetaOp{{Key: key(kindInode, a.Ino)},
		{Key: key(kindInode, parent), Value: d.encode()}}, parent, name, a.Ino, true)
	if err != nil {
		return err
	}
	return n.commit(ops)
}

func (n *Namespace) emptyLocked(ino uint64, name string) error {
	empty := true
	if err := n.meta.Scan(key(kindEntry, ino), nil, func(_, _ []byte) bool { empty = false; return false }); err != nil {
		return err
	}
	if !empty {
		return fmt.Errorf("%w: %q", ErrNotEmpty, name)
	}
	return nil
}
