package fs

import (
	"context"
	"errors"
	"fmt"
	"vpool/volume"
)

// MaxLinks is the most names one file may have (ext4's limit).
const MaxLinks = 65000

// Link gives the file of inode ino another name, parent/name (a hard
// link): one inode, its data and (a vDisk) its vDisk, reached by either
// name until the last goes. Directories cannot be linked.
func (n *Namespace) Link(ctx context.Context, ino, parent uint64, name string) (Attr, error) {
	if err := checkName(name); err != nil {
		return Attr{}, err
	}
	if isSnapIno(ino) {
		return Attr{}, ErrReadOnly
	}
	if err := writableEntry(parent, name); err != nil {
		return Attr{}, err
	}
	n.mu.Lock()
	a, err := n.linkLocked(ino, parent, name)
	n.mu.Unlock()
	if err != nil {
		return Attr{}, err
	}
	n.fill(&a)
	return a, nil
}

func (n *Namespace) linkLocked(ino, parent uint64, name string) (Attr, error) {
	a, err := n.attrLocked(ino)
	switch {
	case err != nil:
		return Attr{}, err
	case a.IsDir():
		return Attr{}, fmt.Errorf("%w: a directory cannot be linked (inode %d)", ErrPerm, ino)
	case a.Nlink == 0:
		return Attr{}, fmt.Errorf("%w: inode %d was unlinked", ErrNotFound, ino)
	case a.Nlink >= MaxLinks:
		return Attr{}, fmt.Errorf("%w: inode %d has %d names", ErrMLink, ino, a.Nlink)
	}
	d, err := n.dirLocked(parent)
	if err != nil {
		return Attr{}, err
	}
	if _, _, err := n.entryLocked(parent, name); err == nil {
		return Attr{}, fmt.Errorf("%w: %q", ErrExist, name)
	} else if !errors.Is(err, ErrNotFound) {
		return Attr{}, err
	}
	now := nowNanos()
	a.Nlink++
	a.Ctime = now
	d.Mtime, d.Ctime = now, now
	ops, err := n.setEntry([]volume.MetaOp{{Key: key(kindInode, ino), Value: a.encode()},
		{Key: key(kindInode, parent), Value: d.encode()}}, parent, name, ino, a.Mode, false)
	if err == nil {
		err = n.commit(ops)
	}
	return a, err
}
