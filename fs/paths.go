package fs

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"vpool/volume"
)

// VDiskNames maps vDisk ids to their paths in the tree (status).
func (n *Namespace) VDiskNames(ctx context.Context) map[uint64]string {
	out := map[uint64]string{}
	var walk func(dir uint64, path string, depth int)
	walk = func(dir uint64, path string, depth int) {
		if depth > 64 {
			return
		}
		var subdirs []DirEntry
		n.ReadDir(ctx, dir, "", func(e DirEntry) bool {
			if e.Mode == syscall.S_IFDIR {
				subdirs = append(subdirs, e)
			} else if e.Mode == syscall.S_IFREG {
				if a, err := n.GetAttr(ctx, e.Ino); err == nil && a.IsVDisk() {
					out[a.VDisk] = path + e.Name
				}
			}
			return true
		})
		for _, d := range subdirs {
			walk(d.Ino, path+d.Name+"/", depth+1)
		}
	}
	walk(RootIno, "/", 0)
	return out
}

// Resolve finds a path in the tree ("dir/vm1.raw" or "/dir/vm1.raw",
// from the vPool's root), following no symlinks.
func (n *Namespace) Resolve(ctx context.Context, path string) (Attr, error) {
	a, err := n.GetAttr(ctx, RootIno)
	for _, name := range strings.Split(path, "/") {
		if err != nil {
			return Attr{}, err
		}
		if name == "" || name == "." {
			continue
		}
		if !a.IsDir() {
			return Attr{}, fmt.Errorf("%w: %q in %q", ErrNotDir, name, path)
		}
		a, err = n.Lookup(ctx, a.Ino, name)
	}
	return a, err
}

// VDiskOf returns the vDisk a path names, or an error naming the path.
func (n *Namespace) VDiskOf(ctx context.Context, path string) (*volume.VDisk, error) {
	_, v, err := n.vdiskAt(ctx, path)
	return v, err
}

// vdiskAt is VDiskOf with the file's attributes.
func (n *Namespace) vdiskAt(ctx context.Context, path string) (Attr, *volume.VDisk, error) {
	a, err := n.Resolve(ctx, path)
	if err != nil {
		return a, nil, fmt.Errorf("%s: %w", path, err)
	}
	if !a.IsVDisk() {
		return a, nil, fmt.Errorf("%s: %w: not a vDisk (names ending in %s are)", path, ErrInvalid, strings.Join(n.cfg.VDiskSuffixes, " or "))
	}
	v, err := n.pool.VDisk(a.VDisk)
	return a, v, err
}

// Rollback rolls the vDisk at path back to its snapshot name (see
// volume.VDisk.Rollback), unless it is open for writing.
func (n *Namespace) Rollback(ctx context.Context, path, name string) error {
	a, v, err := n.vdiskAt(ctx, path)
	if err != nil {
		return err
	}
	n.mu.Lock()
	w := 0
	if oi := n.mu.open[a.Ino]; oi != nil {
		w = oi.writers
	}
	n.mu.Unlock()
	if w > 0 {
		return fmt.Errorf("%w: %s is open for writing (%d handles): stop what writes to it first", volume.ErrBusy, path, w)
	}
	if err := v.Rollback(ctx, name); err != nil {
		return err
	}
	if m := n.kernel.Load(); m != nil { // a read-only mapping must not show what was rolled away
		m.InvalidateInode(a.Ino, 0, 0)
	}
	return nil
}
