package nfsd

import (
	"errors"
	"syscall"

	"vpool/fs"
)

// NFSv3 status codes (RFC 1813, 2.6).
const (
	nfs3OK             = 0
	nfs3ErrPerm        = 1
	nfs3ErrNoEnt       = 2
	nfs3ErrIO          = 5
	nfs3ErrNXIO        = 6
	nfs3ErrAccess      = 13
	nfs3ErrExist       = 17
	nfs3ErrXDev        = 18
	nfs3ErrNotDir      = 20
	nfs3ErrIsDir       = 21
	nfs3ErrInval       = 22
	nfs3ErrFBig        = 27
	nfs3ErrNoSpc       = 28
	nfs3ErrROFS        = 30
	nfs3ErrMLink       = 31
	nfs3ErrNameTooLong = 63
	nfs3ErrNotEmpty    = 66
	nfs3ErrStale       = 70
	nfs3ErrBadHandle   = 10001
	nfs3ErrNotSync     = 10002
	nfs3ErrBadCookie   = 10003
	nfs3ErrNotSupp     = 10004
	nfs3ErrTooSmall    = 10005
	nfs3ErrServerFault = 10006
	nfs3ErrBadType     = 10007
	nfs3ErrJukebox     = 10008
)

// errnoStatus maps errnos (fs.Errno) to NFS statuses.
var errnoStatus = map[syscall.Errno]uint32{
	syscall.EPERM: nfs3ErrPerm, syscall.ENOENT: nfs3ErrNoEnt, syscall.EIO: nfs3ErrIO, syscall.ENXIO: nfs3ErrNXIO,
	syscall.EACCES: nfs3ErrAccess, syscall.EEXIST: nfs3ErrExist, syscall.EXDEV: nfs3ErrXDev,
	syscall.ENOTDIR: nfs3ErrNotDir, syscall.EISDIR: nfs3ErrIsDir, syscall.EINVAL: nfs3ErrInval,
	syscall.EFBIG: nfs3ErrFBig, syscall.ENOSPC: nfs3ErrNoSpc, syscall.EROFS: nfs3ErrROFS,
	syscall.EMLINK: nfs3ErrMLink, syscall.ENAMETOOLONG: nfs3ErrNameTooLong,
	syscall.ENOTEMPTY: nfs3ErrNotEmpty, syscall.ESTALE: nfs3ErrStale, syscall.EOPNOTSUPP: nfs3ErrNotSupp,
	syscall.EINTR: nfs3ErrJukebox, syscall.ETIMEDOUT: nfs3ErrJukebox, syscall.EBUSY: nfs3ErrJukebox,
}

var errAccess = errors.New("nfsd: permission denied")

// status is the one place where errors become NFS statuses.
func status(err error) uint32 {
	switch {
	case err == nil:
		return nfs3OK
	case errors.Is(err, errBadHandle):
		return nfs3ErrBadHandle
	case errors.Is(err, errAccess):
		return nfs3ErrAccess
	case errors.Is(err, errTooSmall):
		return nfs3ErrTooSmall
	}
	if st, ok := errnoStatus[fs.Errno(err)]; ok {
		return st
	}
	return nfs3ErrIO
}

// ftype3 of a mode.
func ftype(mode uint32) uint32 {
	switch mode & syscall.S_IFMT {
	case syscall.S_IFREG:
		return 1
	case syscall.S_IFDIR:
		return 2
	case syscall.S_IFBLK:
		return 3
	case syscall.S_IFCHR:
		return 4
	case syscall.S_IFLNK:
		return 5
	case syscall.S_IFSOCK:
		return 6
	case syscall.S_IFIFO:
		return 7
	}
	return 1
}

func nfstime(w *writer, ns int64) {
	if ns < 0 {
		ns = 0
	}
	w.uint32(uint32(ns / 1e9))
	w.uint32(uint32(ns % 1e9))
}

// fattr3 writes the attributes: used is the allocated size, fileid the
// inode number, fsid the vPool's.
func (s *Server) fattr3(w *writer, a *fs.Attr) {
	w.uint32(ftype(a.Mode))
	w.uint32(a.Mode & 0o7777)
	w.uint32(a.Nlink)
	w.uint32(a.Uid)
	w.uint32(a.Gid)
	w.uint64(uint64(a.Size))
	w.uint64(uint64(a.Blocks) * 512)
	w.uint32(a.Rdev >> 8 & 0xfff) // major, minor as Linux's old encoding
	w.uint32(a.Rdev&0xff | a.Rdev>>12&0xfff00)
	w.uint64(s.fsid)
	w.uint64(a.Ino)
	nfstime(w, a.Atime)
	nfstime(w, a.Mtime)
	nfstime(w, a.Ctime)
}

const fattr3Size = 84

// postOp writes post_op_attr: attributes when a is not nil.
func (s *Server) postOp(w *writer, a *fs.Attr) {
	w.bool(a != nil)
	if a != nil {
		s.fattr3(w, a)
	}
}

// wcc writes wcc_data from the attributes before and after a change.
func (s *Server) wcc(w *writer, pre, post *fs.Attr) {
	w.bool(pre != nil)
	if pre != nil {
		w.uint64(uint64(pre.Size))
		nfstime(w, pre.Mtime)
		nfstime(w, pre.Ctime)
	}
	s.postOp(w, post)
}

// Access bits (ACCESS3_*).
const (
	access3Read    = 0x01
	access3Lookup  = 0x02
	access3Modify  = 0x04
	access3Extend  = 0x08
	access3Delete  = 0x10
	access3Execute = 0x20
)

// perm returns the rwx bits (4, 2, 1) that cr has on a: owner, group or
// other bits as POSIX picks them; root has all but execute on a file with
// no execute bit. The owner may always read and write a file (as Linux's
// NFS server allows): NFS clients check permissions at open, and a file
// opened before a chmod must stay usable.
func perm(a *fs.Attr, cr *cred) uint32 {
	if cr.ro {
		return perm(a, &cred{uid: cr.uid, gid: cr.gid, gids: cr.gids}) &^ 2
	}
	if cr.uid == 0 {
		if a.IsDir() || a.Mode&0o111 != 0 {
			return 7
		}
		return 6
	}
	switch {
	case cr.uid == a.Uid && a.IsDir():
		return a.Mode >> 6 & 7
	case cr.uid == a.Uid:
		return a.Mode>>6&7 | 6
	case cr.gid == a.Gid || containsGid(cr.gids, a.Gid):
		return a.Mode >> 3 & 7
	}
	return a.Mode & 7
}

func containsGid(gids []uint32, g uint32) bool {
	for _, x := range gids {
		if x == g {
			return true
		}
	}
	return false
}

// check fails with errAccess unless cr has every bit of want (rwx) on a.
func check(a *fs.Attr, cr *cred, want uint32) error {
	if perm(a, cr)&want != want {
		return errAccess
	}
	return nil
}
