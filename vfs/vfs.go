// Package vfs is the seam between vpool and the local filesystem: SCO
// files, TLogs and the read cache go through FS, so that tests can crash a
// process mid-write (only synced data and synced directory entries
// survive) and inject I/O errors such as a full disk.
//
// # Caller's obligations
//
//  1. File data is durable only after File.Sync.
//  2. A created, renamed or removed name is durable only after SyncDir of
//     its directory.
//
// OS is the real filesystem; Mem is an in-memory one with Crash and error
// injection for tests. This package imports only the standard library.
package vfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// File is an open file.
type File interface {
	io.ReaderAt
	io.WriterAt
	// Sync makes the file's data durable (fdatasync).
	Sync() error
	Truncate(size int64) error
	// Allocate reserves space for [off, off+n) without changing the size,
	// so that a full disk shows up here and not in the middle of writes.
	Allocate(off, n int64) error
	Size() (int64, error)
	// Map maps [0, size) of the file shared and writable (the file must be
	// at least that long and must not change size while mapped). Writes
	// through the mapping are in the page cache at once, like WriteAt, but
	// cost no system call and take no inode lock; Sync makes them durable.
	// The mapping lives until Close.
	Map(size int64) (Mapping, error)
	// MapRead maps the whole file read-only for random reads: a small
	// read of cached data then costs a copy instead of a system call. The
	// file must not shrink while mapped; reads past the mapping return
	// io.EOF, and an I/O error under the mapping is returned as an error
	// (never a crash). The mapping lives until Close.
	MapRead() (io.ReaderAt, error)
	Close() error
}

// Mapping writes into a mapped file.
type Mapping interface {
	io.WriterAt
}

type osMapping []byte

func (m osMapping) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m)) {
		return 0, errors.New("vfs: write past the end of a mapping")
	}
	return copy(m[off:], p), nil
}

// FS is the set of filesystem calls vpool's local state uses.
type FS interface {
	OpenFile(name string, flag int, perm os.FileMode) (File, error)
	Remove(name string) error
	Rename(oldname, newname string) error
	MkdirAll(dir string, perm os.FileMode) error
	// ReadDir returns the names in dir, sorted.
	ReadDir(dir string) ([]string, error)
	SyncDir(dir string) error
	// FreeBytes is the space left to unprivileged writers on dir's
	// filesystem.
	FreeBytes(dir string) (int64, error)
}

// ErrNotExist is returned for a missing name (it is fs.ErrNotExist).
var ErrNotExist = fs.ErrNotExist

// OS is the real filesystem.
type OS struct{}

type osFile struct {
	*os.File
	maps *[][]byte
}

func (f osFile) Map(size int64) (Mapping, error) {
	b, err := syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return nil, err
	}
	*f.maps = append(*f.maps, b)
	return osMapping(b), nil
}

func (f osFile) MapRead() (io.ReaderAt, error) {
	size, err := f.Size()
	if err != nil {
		return nil, err
	}
	if size == 0 || int64(int(size)) != size {
		return nil, fmt.Errorf("vfs: cannot map %s of %d bytes", f.Name(), size)
	}
	b, err := syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("vfs: map %s: %w", f.Name(), err)
	}
	// Random access: a fault reads in its own page, not a readahead window
	// (large reads go through ReadAt and its readahead instead).
	if err := syscall.Madvise(b, syscall.MADV_RANDOM); err != nil {
		syscall.Munmap(b)
		return nil, fmt.Errorf("vfs: madvise %s: %w", f.Name(), err)
	}
	*f.maps = append(*f.maps, b)
	return osReadMapping(b), nil
}

// osReadMapping reads a read-only mapping; a fault under it (an I/O error
// or a truncated file: SIGBUS) becomes an error.
type osReadMapping []byte

func (m osReadMapping) ReadAt(p []byte, off int64) (n int, err error) {
	if off < 0 {
		return 0, errors.New("vfs: read at a negative offset")
	}
	if off >= int64(len(m)) {
		return 0, io.EOF
	}
	old := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(old)
		if r := recover(); r != nil {
			n, err = 0, fmt.Errorf("vfs: read of a mapped file at %d: %v: %w", off, r, syscall.EIO)
		}
	}()
	n = copy(p, m[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f osFile) Close() error {
	for _, b := range *f.maps {
		syscall.Munmap(b)
	}
	*f.maps = nil
	return f.File.Close()
}

func (f osFile) Sync() error { return syscall.Fdatasync(int(f.Fd())) }

func (f osFile) Allocate(off, n int64) error {
	err := syscall.Fallocate(int(f.Fd()), 1 /* FALLOC_FL_KEEP_SIZE */, off, n)
	if errors.Is(err, syscall.EOPNOTSUPP) {
		return nil // the filesystem cannot reserve: writes will report ENOSPC themselves
	}
	return err
}

func (f osFile) Size() (int64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

func (OS) OpenFile(name string, flag int, perm os.FileMode) (File, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return osFile{File: f, maps: new([][]byte)}, nil
}

func (OS) Remove(name string) error                    { return os.Remove(name) }
func (OS) Rename(o, n string) error                    { return os.Rename(o, n) }
func (OS) MkdirAll(dir string, perm os.FileMode) error { return os.MkdirAll(dir, perm) }

func (OS) ReadDir(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(ents))
	for i, e := range ents {
		names[i] = e.Name()
	}
	sort.Strings(names)
	return names, nil
}

func (OS) FreeBytes(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, &fs.PathError{Op: "statfs", Path: dir, Err: err}
	}
	return int64(st.Bavail) * st.Bsize, nil
}

func (OS) SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// WriteFileAtomic writes data to name through a temporary file, syncs it,
// renames it into place and syncs the directory.
func WriteFileAtomic(fsys FS, name string, data []byte) error {
	tmp := name + ".tmp"
	f, err := fsys.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(data, 0); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := fsys.Rename(tmp, name); err != nil {
		return err
	}
	return fsys.SyncDir(filepath.Dir(name))
}

// ReadFile reads a whole file.
func ReadFile(fsys FS, name string) ([]byte, error) {
	f, err := fsys.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	n, err := f.Size()
	if err != nil {
		return nil, err
	}
	b := make([]byte, n)
	if _, err := f.ReadAt(b, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return b, nil
}

// ListSeq returns the numbers n of the files "<n><suffix>" in dir,
// ascending (SCOs, TLogs). A missing dir holds none.
func ListSeq(fsys FS, dir, suffix string) ([]uint32, error) {
	names, err := fsys.ReadDir(dir)
	if errors.Is(err, ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var seqs []uint32
	for _, n := range names {
		if s, ok := strings.CutSuffix(n, suffix); ok {
			if x, err := strconv.ParseUint(s, 10, 32); err == nil {
				seqs = append(seqs, uint32(x))
			}
		}
	}
	return seqs, nil
}

// WriteFileDurably replaces the small file at path with b so that a crash
// or power loss leaves the old content or the new, whole: a temporary
// file, synced, renamed over path, and the directory synced.
func WriteFileDurably(fsys FS, path string, b []byte, perm os.FileMode) error {
	tmp := path + ".tmp"
	f, err := fsys.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, perm)
	if err != nil {
		return err
	}
	_, err = f.WriteAt(b, 0)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = fsys.Rename(tmp, path)
	}
	if err == nil {
		err = fsys.SyncDir(filepath.Dir(path))
	}
	return err
}
