package fs

import (
	"context"
	"errors"
	"syscall"

	"vpool/volume"
)

// Errors of the namespace; test with errors.Is. Errno maps every error a
// caller can see to the errno a local filesystem would return.
var (
	ErrNotFound    = errors.New("fs: no such file or directory")
	ErrExist       = errors.New("fs: file exists")
	ErrNotDir      = errors.New("fs: not a directory")
	ErrIsDir       = errors.New("fs: is a directory")
	ErrNotEmpty    = errors.New("fs: directory not empty")
	ErrNameTooLong = errors.New("fs: name longer than 255 bytes")
	ErrInvalid     = errors.New("fs: invalid argument")
	ErrPerm        = errors.New("fs: operation not permitted")
	ErrMLink       = errors.New("fs: too many links")
	ErrNoSpace     = errors.New("fs: no space left for file data")
	ErrNotSupp     = errors.New("fs: operation not supported")
	ErrNoData      = errors.New("fs: no data past this offset")
	ErrStale       = errors.New("fs: stale file handle (inode deleted)")
	ErrTooBig      = errors.New("fs: file too large")
	ErrBadFD       = errors.New("fs: file not open for this operation")
	ErrNotLink     = errors.New("fs: not a symbolic link")
	ErrCorrupt     = errors.New("fs: corrupt namespace record")
)

// errnoTable is the one place where errors become errnos; order matters
// only where one error wraps another.
var errnoTable = []struct {
	err   error
	errno syscall.Errno
}{
	{ErrNotFound, syscall.ENOENT},
	{ErrExist, syscall.EEXIST},
	{ErrNotDir, syscall.ENOTDIR},
	{ErrIsDir, syscall.EISDIR},
	{ErrNotEmpty, syscall.ENOTEMPTY},
	{ErrNameTooLong, syscall.ENAMETOOLONG},
	{ErrInvalid, syscall.EINVAL},
	{ErrPerm, syscall.EPERM},
	{ErrMLink, syscall.EMLINK},
	{ErrNoSpace, syscall.ENOSPC},
	{ErrNotSupp, syscall.EOPNOTSUPP},
	{ErrNoData, syscall.ENXIO},
	{ErrStale, syscall.ESTALE},
	{ErrTooBig, syscall.EFBIG},
	{ErrBadFD, syscall.EBADF},
	{ErrNotLink, syscall.EINVAL},
	{ErrCorrupt, syscall.EIO},
	{volume.ErrNoSpace, syscall.ENOSPC},
	{volume.ErrOutOfRange, syscall.ENXIO},
	{volume.ErrBadSize, syscall.EFBIG},
	{volume.ErrReadOnly, syscall.EROFS},
	{volume.ErrBusy, syscall.EBUSY},
	{volume.ErrDamaged, syscall.EIO},
	{volume.ErrNotFound, syscall.ESTALE},
	{volume.ErrClosed, syscall.EIO},
	{volume.ErrCorrupt, syscall.EIO},
	{volume.ErrBackendRead, syscall.EIO},
	{context.Canceled, syscall.EINTR},
	{context.DeadlineExceeded, syscall.ETIMEDOUT},
	{syscall.ENOSPC, syscall.ENOSPC},
}

// Errno returns the errno for err: 0 for nil, EIO for anything unknown
// (never ENOSYS, which the kernel would remember for the operation).
func Errno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	for _, e := range errnoTable {
		if errors.Is(err, e.err) {
			return e.errno
		}
	}
	var en syscall.Errno
	if errors.As(err, &en) && en != syscall.ENOSYS {
		return en
	}
	return syscall.EIO
}
