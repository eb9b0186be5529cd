package fs

import (
	"context"
	"errors"
	"fmt"

	"vpool/volume"
)

// Rename flags (as renameat2).
const (
	RenameNoReplace = 1 << 0
	RenameExchange  = 1 << 1
)

// Rename moves an entry, atomically replacing a target of the same kind
// (an empty directory for a directory). Only the namespace changes: a
// vDisk keeps its id, data and open handles.
func (n *Namespace) Rename(ctx context.Context, p1 uint64, n1 string, p2 uint64, n2 string, flags uint32) error {
	if err := checkName(n1); err != nil {
		return err
	}
	if err := checkName(n2); err != nil {
		return err
	}
	if err := errors.Join(writableEntry(p1, n1), writableEntry(p2, n2)); err != nil {
		return err
	}
	if flags&^(RenameNoReplace|RenameExchange) != 0 || flags == RenameNoReplace|RenameExchange {
		return fmt.Errorf("%w: rename flags %#x", ErrInvalid, flags)
	}
	n.mu.Lock()
	free, err := n.renameLocked(p1, n1, p2, n2, flags)
	n.mu.Unlock()
	if err == nil && free != nil {
		err = n.freeInode(ctx, *free)
	}
	return err
}

func (n *Namespace) renameLocked(p1 uint64, n1 string, p2 uint64, n2 string, flags uint32) (*Attr, error) {
	d1, err := n.dirLocked(p1)
	if err != nil {
		return nil, err
	}
	d2, err := n.dirLocked(p2)
	if err != nil {
		return nil, err
	}
	ino, _, err := n.entryLocked(p1, n1)
	if err != nil {
		return nil, err
	}
	src, err := n.attrLocked(ino)
	if err != nil {
		return nil, err
	}
	if src.IsDir() && p1 != p2 {
		for up := p2; ; { // a directory cannot move under itself
			if up == ino {
				return nil, fmt.Errorf("%w: move %q under itself", ErrInvalid, n1)
			}
			if up == RootIno {
				break
			}
			a, err := n.attrLocked(up)
			if err != nil {
				return nil, err
			}
			up = a.Parent
		}
	}
	now := nowNanos()
	var ops []volume.MetaOp
	var free *Attr
	tino, _, err := n.entryLocked(p2, n2)
	switch {
	case err == nil && tino == ino:
		return nil, nil // the same file: nothing to do
	case err == nil && flags&RenameNoReplace != 0:
		return nil, fmt.Errorf("%w: %q", ErrExist, n2)
	case err == nil && flags&RenameExchange != 0:
		dst, err := n.attrLocked(tino)
		if err != nil {
			return nil, err
		}
		if src.IsDir() != dst.IsDir() && p1 != p2 {
			nl := int32(1)
			if dst.IsDir() {
				nl = -1
			}
			d1.Nlink, d2.Nlink = uint32(int32(d1.Nlink)-nl), uint32(int32(d2.Nlink)+nl)
		}
		dst.Parent, dst.Ctime = p1, now
		// Later ops win: both old names go, then both new ones are set.
		if ops, err = n.delEntry(ops, p1, n1, ino, oneName(&src)); err == nil {
			ops, err = n.delEntry(ops, p2, n2, dst.Ino, oneName(&dst))
		}
		if err == nil {
			ops, err = n.setEntry(ops, p1, n1, dst.Ino, dst.Mode, oneName(&dst))
		}
		if err != nil {
			return nil, err
		}
		ops = append(ops, volume.MetaOp{Key: key(kindInode, dst.Ino), Value: dst.encode()})
	case err == nil:
		dst, err := n.attrLocked(tino)
		if err != nil {
			return nil, err
		}
		switch {
		case src.IsDir() && !dst.IsDir():
			return nil, fmt.Errorf("%w: %q", ErrNotDir, n2)
		case !src.IsDir() && dst.IsDir():
			return nil, fmt.Errorf("%w: %q", ErrIsDir, n2)
		case dst.IsDir():
			if err := n.emptyLocked(tino, n2); err != nil {
				return nil, err
			}
			d2.Nlink--
			ops = append(ops, volume.MetaOp{Key: key(kindInode, tino)})
			if ops, err = n.delEntry(ops, p2, n2, tino, true); err != nil {
				return nil, err
			}
		default: // the target loses a name: its last makes it an orphan
			last := dst.Nlink <= 1
			if ops, err = n.dropName(ops, p2, n2, &dst, now); err != nil {
				return nil, err
			}
			if last && n.mu.open[tino] == nil {
				free = &dst
			}
		}
		if ops, err = n.delEntry(ops, p1, n1, ino, oneName(&src)); err != nil {
			return nil, err
		}
	case errors.Is(err, ErrNotFound):
		if flags&RenameExchange != 0 {
			return nil, err
		}
		if ops, err = n.delEntry(ops, p1, n1, ino, oneName(&src)); err != nil {
			return nil, err
		}
	default:
		return nil, err
	}
	if src.IsDir() && p1 != p2 && flags&RenameExchange == 0 {
		d1.Nlink--
		d2.Nlink++
	}
	src.Parent, src.Ctime = p2, now
	d1.Mtime, d1.Ctime, d2.Mtime, d2.Ctime = now, now, now, now
	if ops, err = n.setEntry(ops, p2, n2, src.Ino, src.Mode, oneName(&src)); err != nil {
		return nil, err
	}
	ops = append(ops, volume.MetaOp{Key: key(kindInode, src.Ino), Value: src.encode()})
	if p1 == p2 {
		ops = append(ops, volume.MetaOp{Key: key(kindInode, p1), Value: d2.encode()})
	} else {
		ops = append(ops, volume.MetaOp{Key: key(kindInode, p1), Value: d1.encode()},
			volume.MetaOp{Key: key(kindInode, p2), Value: d2.encode()})
	}
	return free, n.commit(ops)
}
