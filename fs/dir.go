package fs

import (
	"context"
	"fmt"
)

// ReadDir calls fn for each entry of a directory whose name sorts after
// after ("" for the start), in name order, until fn returns false. The
// order is stable, so a name is a resumable cookie.
func (n *Namespace) ReadDir(ctx context.Context, ino uint64, after string, fn func(DirEntry) bool) error {
	if isSnapIno(ino) {
		return n.snapReadDir(ctx, ino, after, fn)
	}
	return n.readDir(ctx, ino, after, fn)
}

func (n *Namespace) readDir(ctx context.Context, ino uint64, after string, fn func(DirEntry) bool) error {
	n.mu.Lock()
	_, err := n.dirLocked(ino)
	n.mu.Unlock()
	if err != nil {
		return err
	}
	prefix := key(kindEntry, ino)
	var start []byte
	if after != "" {
		start = append(append(append([]byte(nil), prefix...), after...), 0)
	}
	var derr error
	err = n.meta.Scan(prefix, start, func(k, v []byte) bool {
		cino, mode, err := decodeEntry(v)
		if err != nil {
			derr = err
			return false
		}
		return fn(DirEntry{Name: string(k[len(prefix):]), Ino: cino, Mode: mode})
	})
	if err == nil {
		err = derr
	}
	return err
}

// ReadDirOrder calls fn for each entry of a directory in inode order,
// starting after inode after (0 for the start), until fn returns false.
// An entry's inode number is a cookie that stays valid while entries come
// and go (NFS READDIR).
func (n *Namespace) ReadDirOrder(ctx context.Context, ino, after uint64, fn func(DirEntry) bool) error {
	if isSnapIno(ino) {
		return n.snapReadDirOrder(ctx, ino, after, fn)
	}
	return n.readDirOrder(ctx, ino, after, fn)
}

func (n *Namespace) readDirOrder(ctx context.Context, ino, after uint64, fn func(DirEntry) bool) error {
	n.mu.Lock()
	_, err := n.dirLocked(ino)
	n.mu.Unlock()
	if err != nil || after == ^uint64(0) {
		return err
	}
	prefix := key(kindDirOrder, ino)
	var derr error
	err = n.meta.Scan(prefix, key(kindDirOrder, ino, after+1), func(k, v []byte) bool {
		if len(k) != len(prefix)+8 || len(v) < 2 {
			derr = fmt.Errorf("%w: directory %d order key %x", ErrCorrupt, ino, k)
			return false
		}
		typ, names := decodeOrder(v)
		for _, name := range names { // the names of one inode (hard links) come together
			if !fn(DirEntry{Name: name, Ino: beUint64(k[len(prefix):]), Mode: uint32(typ) << 12}) {
				return false
			}
		}
		return true
	})
	if err == nil {
		err = derr
	}
	return err
}
