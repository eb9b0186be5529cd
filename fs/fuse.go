package fs

import (
	"context"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// fuseFS serves a Namespace to the kernel through go-fuse's raw API: node
// ids are inode numbers, file handles index open Files. Every error goes
// through status (Errno), never go-fuse's own conversion.
type fuseFS struct {
	fuse.RawFileSystem // ENOSYS for what the mount never negotiates
	ns                 *Namespace

	mu struct {
		sync.RWMutex
		files  map[uint64]*File
		dirs   map[uint64][]DirEntry
		vdisks map[uint64]int // vDisk inode -> its open handles: only these can be mapped
		next   uint64
	}
}

const attrTimeout = time.Second

func newFuseFS(ns *Namespace) *fuseFS {
	f := &fuseFS{RawFileSystem: fuse.NewDefaultRawFileSystem(), ns: ns}
	f.mu.files = map[uint64]*File{}
	f.mu.dirs = map[uint64][]DirEntry{}
	f.mu.vdisks = map[uint64]int{}
	return f
}

// vdiskOpen reports whether the kernel holds a handle of vDisk inode ino:
// vDisks are direct I/O, so only a mapping (which holds a handle) keeps
// their pages in the kernel.
func (f *fuseFS) vdiskOpen(ino uint64) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.mu.vdisks[ino] > 0
}

func status(err error) fuse.Status { return fuse.Status(Errno(err)) }

func (f *fuseFS) String() string { return "vpool" }

func fillAttr(a *Attr, out *fuse.Attr) {
	*out = fuse.Attr{Ino: a.Ino, Size: uint64(a.Size), Blocks: uint64(a.Blocks),
		Atime: uint64(a.Atime / 1e9), Atimensec: uint32(a.Atime % 1e9),
		Mtime: uint64(a.Mtime / 1e9), Mtimensec: uint32(a.Mtime % 1e9),
		Ctime: uint64(a.Ctime / 1e9), Ctimensec: uint32(a.Ctime % 1e9),
		Mode: a.Mode, Nlink: a.Nlink, Owner: fuse.Owner{Uid: a.Uid, Gid: a.Gid}, Rdev: a.Rdev, Blksize: 4096}
}

func fillEntry(a *Attr, out *fuse.EntryOut) {
	out.NodeId, out.Generation = a.Ino, a.Gen
	out.SetEntryTimeout(attrTimeout)
	out.SetAttrTimeout(attrTimeout)
	fillAttr(a, &out.Attr)
}

func (f *fuseFS) entry(a Attr, err error, out *fuse.EntryOut) fuse.Status {
	if err != nil {
		return status(err)
	}
	fillEntry(&a, out)
	return fuse.OK
}

func (f *fuseFS) Lookup(_ <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	a, err := f.ns.Lookup(context.Background(), h.NodeId, name)
	return f.entry(a, err, out)
}

func (f *fuseFS) Forget(nodeid, nlookup uint64) {}

func (f *fuseFS) GetAttr(_ <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	a, err := f.ns.GetAttr(context.Background(), in.NodeId)
	if err != nil {
		return status(err)
	}
	out.SetTimeout(attrTimeout)
	fillAttr(&a, &out.Attr)
	return fuse.OK
}

func fuseTime(now bool, sec uint64, nsec uint32) int64 {
	if now {
		return -1
	}
	return int64(sec)*1e9 + int64(nsec)
}

func (f *fuseFS) SetAttr(_ <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	v := in.Valid
	s := SetAttrIn{
		SetMode: v&fuse.FATTR_MODE != 0, Mode: in.Mode,
		SetUid: v&fuse.FATTR_UID != 0, Uid: in.Uid,
		SetGid: v&fuse.FATTR_GID != 0, Gid: in.Gid,
		SetSize: v&fuse.FATTR_SIZE != 0, Size: int64(in.Size),
		SetAtime: v&(fuse.FATTR_ATIME|fuse.FATTR_ATIME_NOW) != 0, Atime: fuseTime(v&fuse.FATTR_ATIME_NOW != 0, in.Atime, in.Atimensec),
		SetMtime: v&(fuse.FATTR_MTIME|fuse.FATTR_MTIME_NOW) != 0, Mtime: fuseTime(v&fuse.FATTR_MTIME_NOW != 0, in.Mtime, in.Mtimensec),
	}
	if s.SetSize && int64(in.Size) < 0 {
		return fuse.Status(syscall.EFBIG)
	}
	a, err := f.ns.SetAttr(context.Background(), in.NodeId, s)
	if err != nil {
		return status(err)
	}
	out.SetTimeout(attrTimeout)
	fillAttr(&a, &out.Attr)
	return fuse.OK
}

func (f *fuseFS) create(h *fuse.InHeader, name string, nn NewNode, out *fuse.EntryOut) fuse.Status {
	nn.Caller = Caller{Uid: h.Uid, Gid: h.Gid}
	a, _, err := f.ns.Create(context.Background(), h.NodeId, name, nn)
	return f.entry(a, err, out)
}

func (f *fuseFS) Mknod(_ <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	return f.create(&in.InHeader, name, NewNode{Mode: in.Mode, Rdev: in.Rdev, Exclusive: true}, out)
}

func (f *fuseFS) Mkdir(_ <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	return f.create(&in.InHeader, name, NewNode{Mode: in.Mode&^syscall.S_IFMT | syscall.S_IFDIR}, out)
}

func (f *fuseFS) Symlink(_ <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	return f.create(h, name, NewNode{Mode: syscall.S_IFLNK | 0o777, Target: target}, out)
}

func (f *fuseFS) Readlink(_ <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	t, err := f.ns.Readlink(context.Background(), h.NodeId)
	return []byte(t), status(err)
}

func (f *fuseFS) Unlink(_ <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	return status(f.ns.Unlink(context.Background(), h.NodeId, name))
}

func (f *fuseFS) Rmdir(_ <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	return status(f.ns.Rmdir(context.Background(), h.NodeId, name))
}

func (f *fuseFS) Rename(_ <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	return status(f.ns.Rename(context.Background(), in.NodeId, oldName, in.Newdir, newName, in.Flags))
}

func (f *fuseFS) Link(_ <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	a, err := f.ns.Link(context.Background(), in.Oldnodeid, in.NodeId, name)
	return f.entry(a, err, out)
}

// Access is answered by the kernel (default_permissions); this allows
// what the kernel already allowed.
func (f *fuseFS) Access(_ <-chan struct{}, in *fuse.AccessIn) fuse.Status { return fuse.OK }

func (f *fuseFS) addFile(h *File, out *fuse.OpenOut) {
	f.mu.Lock()
	f.mu.next++
	fh := f.mu.next
	f.mu.files[fh] = h
	h.kernel = true
	if h.IsVDisk() {
		f.mu.vdisks[h.ino]++
	}
	f.mu.Unlock()
	out.Fh = fh
	if h.IsVDisk() {
		out.OpenFlags |= fuse.FOPEN_DIRECT_IO | fuse.FOPEN_PARALLEL_DIRECT_WRITES
	}
}

func (f *fuseFS) file(fh uint64) *File {
	f.mu.RLock()
	h := f.mu.files[fh]
	f.mu.RUnlock()
	return h
}

func writable(flags uint32) bool { return flags&syscall.O_ACCMODE != syscall.O_RDONLY }

func (f *fuseFS) Create(_ <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	ctx := context.Background()
	a, created, err := f.ns.Create(ctx, in.NodeId, name, NewNode{Mode: in.Mode&^syscall.S_IFMT | syscall.S_IFREG,
		Exclusive: in.Flags&syscall.O_EXCL != 0, Caller: Caller{Uid: in.Uid, Gid: in.Gid}})
	if err == nil && !created && in.Flags&syscall.O_TRUNC != 0 {
		a, err = f.ns.SetAttr(ctx, a.Ino, SetAttrIn{SetSize: true})
	}
	if err != nil {
		return status(err)
	}
	h, err := f.ns.Open(ctx, a.Ino, writable(in.Flags))
	if err != nil {
		return status(err)
	}
	fillEntry(&a, &out.EntryOut)
	f.addFile(h, &out.OpenOut)
	return fuse.OK
}

func (f *fuseFS) Open(_ <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	h, err := f.ns.Open(context.Background(), in.NodeId, writable(in.Flags))
	if err != nil {
		return status(err)
	}
	f.addFile(h, out)
	return fuse.OK
}

func (f *fuseFS) Read(_ <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	h := f.file(in.Fh)
	if h == nil {
		return nil, fuse.EBADF
	}
	if len(buf) > int(in.Size) {
		buf = buf[:in.Size]
	}
	n, err := h.ReadAt(context.Background(), buf, int64(in.Offset))
	if err != nil {
		return nil, status(err)
	}
	return fuse.ReadResultData(buf[:n]), fuse.OK
}

func (f *fuseFS) Write(_ <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	h := f.file(in.Fh)
	if h == nil {
		return 0, fuse.EBADF
	}
	n, err := h.WriteAt(context.Background(), data, int64(in.Offset))
	return uint32(n), status(err)
}

func (f *fuseFS) Flush(_ <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	if h := f.file(in.Fh); h != nil {
		f.ns.storeMtime(h.ino)
	}
	return fuse.OK
}

func (f *fuseFS) Fsync(_ <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	h := f.file(in.Fh)
	if h == nil {
		return status(f.ns.SyncMeta())
	}
	return status(h.Sync(context.Background()))
}

func (f *fuseFS) Fallocate(_ <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	h := f.file(in.Fh)
	if h == nil {
		return fuse.EBADF
	}
	return status(h.Allocate(context.Background(), in.Mode, int64(in.Offset), int64(in.Length)))
}

func (f *fuseFS) Lseek(_ <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	h := f.file(in.Fh)
	if h == nil {
		return fuse.EBADF
	}
	off, err := h.Seek(context.Background(), int64(in.Offset), int(in.Whence))
	out.Offset = uint64(off)
	return status(err)
}

func (f *fuseFS) Release(_ <-chan struct{}, in *fuse.ReleaseIn) {
	f.mu.Lock()
	h := f.mu.files[in.Fh]
	delete(f.mu.files, in.Fh)
	if h != nil && h.IsVDisk() {
		if f.mu.vdisks[h.ino]--; f.mu.vdisks[h.ino] <= 0 {
			delete(f.mu.vdisks, h.ino)
		}
	}
	f.mu.Unlock()
	if h != nil {
		if err := h.Release(context.Background()); err != nil {
			f.ns.log.Error("fs: release", "inode", h.ino, "err", err)
		}
	}
}

func (f *fuseFS) OpenDir(_ <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	var ents []DirEntry
	if err := f.ns.ReadDir(context.Background(), in.NodeId, "", func(e DirEntry) bool {
		ents = append(ents, e)
		return true
	}); err != nil {
		return status(err)
	}
	f.mu.Lock()
	f.mu.next++
	out.Fh = f.mu.next
	f.mu.dirs[out.Fh] = ents
	f.mu.Unlock()
	return fuse.OK
}

func (f *fuseFS) readDir(in *fuse.ReadIn, out *fuse.DirEntryList, plus bool) fuse.Status {
	f.mu.RLock()
	ents, ok := f.mu.dirs[in.Fh]
	f.mu.RUnlock()
	if !ok {
		return fuse.EBADF
	}
	ctx := context.Background()
	for i := in.Offset; i < uint64(len(ents))+2; i++ {
		e := DirEntry{Name: ".", Ino: in.NodeId, Mode: syscall.S_IFDIR}
		if i == 1 {
			e.Name = ".."
		} else if i > 1 {
			e = ents[i-2]
		}
		de := fuse.DirEntry{Name: e.Name, Ino: e.Ino, Mode: e.Mode, Off: i + 1}
		if !plus {
			if !out.AddDirEntry(de) {
				break
			}
			continue
		}
		eo := out.AddDirLookupEntry(de)
		if eo == nil {
			break
		}
		if i > 1 {
			if a, err := f.ns.GetAttr(ctx, e.Ino); err == nil {
				fillEntry(&a, eo)
			}
		}
	}
	return fuse.OK
}

func (f *fuseFS) ReadDir(_ <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return f.readDir(in, out, false)
}

func (f *fuseFS) ReadDirPlus(_ <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return f.readDir(in, out, true)
}

func (f *fuseFS) ReleaseDir(in *fuse.ReleaseIn) {
	f.mu.Lock()
	delete(f.mu.dirs, in.Fh)
	f.mu.Unlock()
}

func (f *fuseFS) FsyncDir(_ <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	return status(f.ns.SyncMeta())
}

func (f *fuseFS) StatFs(_ <-chan struct{}, in *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	st, err := f.ns.StatFS(context.Background())
	if err != nil {
		return status(err)
	}
	const bs = 4096
	*out = fuse.StatfsOut{Blocks: uint64(st.TotalBytes) / bs, Bfree: uint64(st.FreeBytes) / bs, Bavail: uint64(st.FreeBytes) / bs,
		Files: st.Inodes + 1<<32, Ffree: 1 << 32, Bsize: bs, Frsize: bs, NameLen: 255}
	return fuse.OK
}
