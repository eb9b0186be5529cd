package vfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
)

// ErrCrashed is returned by files opened before the last Crash.
var ErrCrashed = errors.New("vfs: file handle from before a crash")

// Mem is an in-memory FS that remembers what is durable: Crash forgets
// every unsynced write and every unsynced directory change, as a power
// loss would; PowerLoss keeps a random part of them, as a power loss may.
//
// Directory changes (create, remove, rename of a file) are kept in the
// order they were made until SyncDir of a directory they touch makes them
// durable; directories themselves are durable at once.
type Mem struct {
	mu struct {
		sync.Mutex
		names   map[string]*memInode // the namespace as seen now
		durable map[string]*memInode // the namespace after a crash
		pending []memOp              // directory changes not durable yet, oldest first
		dirs    map[string]bool
		epoch   int
		inject  func(op, name string) error
		free    int64 // FreeBytes; 0: as good as unlimited
	}
}

// memOp is one unsynced directory change: name (and for a rename, to)
// bound to ino, or name unbound from ino (remove).
type memOp struct {
	remove   bool
	name, to string // to: a rename's new name
	ino      *memInode
}

func (o memOp) touches(dir string) bool {
	return filepath.Dir(o.name) == dir || o.to != "" && filepath.Dir(o.to) == dir
}

// applyTo makes the change in a namespace: a name is unbound only if it
// is still bound to the change's inode.
func (o memOp) applyTo(names map[string]*memInode) {
	unbind := func(n string) {
		if names[n] == o.ino {
			delete(names, n)
		}
	}
	switch {
	case o.remove:
		unbind(o.name)
	case o.to != "":
		unbind(o.name)
		names[o.to] = o.ino
	default:
		names[o.name] = o.ino
	}
}

type memInode struct {
	mu      sync.Mutex
	mapped  int64 // bytes mapped: data's array must not move under them
	data    []byte
	synced  []byte
	dirty   map[int64]struct{} // blocks (memCrashBlock) changed since the last sync
	reserve int64
}

// changed notes that [off, off+n) of data changed; the caller holds ino.mu.
func (ino *memInode) changed(off, n int64) {
	if n <= 0 {
		return
	}
	if ino.dirty == nil {
		ino.dirty = map[int64]struct{}{}
	}
	for b := off / memCrashBlock; b <= (off+n-1)/memCrashBlock; b++ {
		ino.dirty[b] = struct{}{}
	}
}

// syncLocked makes synced equal data, copying only what changed.
func (ino *memInode) syncLocked() {
	grownFrom := int64(min(len(ino.synced), len(ino.data))) // past it, the append below copies all
	switch d, s := len(ino.data), len(ino.synced); {
	case s > d:
		ino.synced = ino.synced[:d]
	case s < d:
		ino.synced = append(ino.synced, ino.data[s:]...)
	}
	for b := range ino.dirty {
		if off := b * memCrashBlock; off < grownFrom {
			copy(ino.synced[off:], ino.data[off:min(off+memCrashBlock, int64(len(ino.data)))])
		}
	}
	clear(ino.dirty)
}

// NewMem returns an empty in-memory filesystem.
func NewMem() *Mem {
	m := &Mem{}
	m.mu.names = map[string]*memInode{}
	m.mu.durable = map[string]*memInode{}
	m.mu.dirs = map[string]bool{"/": true, ".": true}
	return m
}

// InjectForTesting calls fn before every operation (op is "open", "write",
// "sync", "allocate", "remove", "rename", "syncdir"); a non-nil result is
// returned as that operation's error.
func (m *Mem) InjectForTesting(fn func(op, name string) error) {
	m.mu.Lock()
	m.mu.inject = fn
	m.mu.Unlock()
}

// Crash drops everything that was not synced and invalidates open files.
func (m *Mem) Crash() { m.crash(nil) }

// PowerLoss invalidates open files and keeps or drops, at random from
// rng, each unsynced directory change (applied in order) and each unsynced
// 4 KiB block of every file (and its unsynced length): what a power loss
// may leave of the work in flight.
func (m *Mem) PowerLoss(rng *rand.Rand) { m.crash(rng) }

// memCrashBlock is the unit PowerLoss keeps or drops of a file's data.
const memCrashBlock = 4096

func (m *Mem) crash(rng *rand.Rand) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.mu.epoch++
	if rng != nil {
		for _, op := range m.mu.pending {
			if rng.IntN(2) == 0 {
				op.applyTo(m.mu.durable)
			}
		}
	}
	m.mu.pending = nil
	m.mu.names = map[string]*memInode{}
	seen := map[*memInode]bool{}
	for n, ino := range m.mu.durable {
		m.mu.names[n] = ino
		if seen[ino] {
			continue
		}
		seen[ino] = true
		ino.mu.Lock()
		ino.data = ino.survivor(rng)
		ino.synced = append(ino.synced[:0], ino.data...)
		clear(ino.dirty)
		ino.mapped = 0 // mappings die with the process
		ino.mu.Unlock()
	}
}

// survivor is what a crash leaves of the inode's data: its synced bytes,
// and with rng a random part of the rest.
func (ino *memInode) survivor(rng *rand.Rand) []byte {
	out := append([]byte(nil), ino.synced...)
	if rng == nil {
		return out
	}
	if rng.IntN(2) == 0 && len(ino.data) != len(out) {
		if len(ino.data) < len(out) {
			out = out[:len(ino.data)]
		} else {
			out = append(out, make([]byte, len(ino.data)-len(out))...)
		}
	}
	for off := 0; off < len(out) && off < len(ino.data); off += memCrashBlock {
		end := min(off+memCrashBlock, len(out), len(ino.data))
		if rng.IntN(2) == 0 {
			copy(out[off:end], ino.data[off:end])
		}
	}
	return out
}

func (m *Mem) check(op, name string) error {
	m.mu.Lock()
	fn := m.mu.inject
	m.mu.Unlock()
	if fn != nil {
		return fn(op, name)
	}
	return nil
}

func clean(name string) string { return filepath.Clean(name) }

func (m *Mem) OpenFile(name string, flag int, perm os.FileMode) (File, error) {
	name = clean(name)
	if err := m.check("open", name); err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.mu.dirs[filepath.Dir(name)] {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	ino, ok := m.mu.names[name]
	switch {
	case ok && flag&os.O_CREATE != 0 && flag&os.O_EXCL != 0:
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrExist}
	case !ok && flag&os.O_CREATE == 0:
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	case !ok:
		ino = &memInode{}
		m.mu.names[name] = ino
		m.mu.pending = append(m.mu.pending, memOp{name: name, ino: ino})
	}
	if flag&os.O_TRUNC != 0 {
		ino.mu.Lock()
		ino.changed(0, int64(len(ino.data)))
		ino.data = nil
		ino.mu.Unlock()
	}
	return &memFile{fs: m, ino: ino, name: name, epoch: m.mu.epoch}, nil
}

func (m *Mem) Remove(name string) error {
	name = clean(name)
	if err := m.check("remove", name); err != nil {
		return &fs.PathError{Op: "remove", Path: name, Err: err}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.mu.names[name]; !ok {
		if m.mu.dirs[name] {
			for n := range m.mu.names {
				if strings.HasPrefix(n, name+"/") {
					return &fs.PathError{Op: "remove", Path: name, Err: errors.New("directory not empty")}
				}
			}
			delete(m.mu.dirs, name)
			return nil
		}
		return &fs.PathError{Op: "remove", Path: name, Err: fs.ErrNotExist}
	}
	m.mu.pending = append(m.mu.pending, memOp{remove: true, name: name, ino: m.mu.names[name]})
	delete(m.mu.names, name)
	return nil
}

func (m *Mem) Rename(oldname, newname string) error {
	oldname, newname = clean(oldname), clean(newname)
	if err := m.check("rename", oldname); err != nil {
		return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: err}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	ino, ok := m.mu.names[oldname]
	if !ok {
		return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: fs.ErrNotExist}
	}
	if !m.mu.dirs[filepath.Dir(newname)] {
		return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: fs.ErrNotExist}
	}
	delete(m.mu.names, oldname)
	m.mu.names[newname] = ino
	m.mu.pending = append(m.mu.pending, memOp{name: oldname, to: newname, ino: ino})
	return nil
}

// MkdirAll creates directories; in this model directories themselves are
// durable at once (only file entries need SyncDir).
func (m *Mem) MkdirAll(dir string, perm os.FileMode) error {
	dir = clean(dir)
	m.mu.Lock()
	defer m.mu.Unlock()
	for d := dir; !m.mu.dirs[d]; d = filepath.Dir(d) {
		m.mu.dirs[d] = true
	}
	return nil
}

func (m *Mem) ReadDir(dir string) ([]string, error) {
	dir = clean(dir)
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.mu.dirs[dir] {
		return nil, &fs.PathError{Op: "readdir", Path: dir, Err: fs.ErrNotExist}
	}
	seen := map[string]bool{}
	for n := range m.mu.names {
		if filepath.Dir(n) == dir {
			seen[filepath.Base(n)] = true
		}
	}
	for d := range m.mu.dirs {
		if d != dir && filepath.Dir(d) == dir {
			seen[filepath.Base(d)] = true
		}
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

func (m *Mem) SyncDir(dir string) error {
	dir = clean(dir)
	if err := m.check("syncdir", dir); err != nil {
		return &fs.PathError{Op: "syncdir", Path: dir, Err: err}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	keep := m.mu.pending[:0]
	for _, op := range m.mu.pending {
		if op.touches(dir) {
			op.applyTo(m.mu.durable)
		} else {
			keep = append(keep, op)
		}
	}
	clear(m.mu.pending[len(keep):])
	m.mu.pending = keep
	return nil
}

type memFile struct {
	fs     *Mem
	ino    *memInode
	name   string
	epoch  int
	closed atomic.Bool
}

func (f *memFile) live(op string) error {
	if f.closed.Load() {
		return &fs.PathError{Op: op, Path: f.name, Err: fs.ErrClosed}
	}
	f.fs.mu.Lock()
	e := f.fs.mu.epoch
	f.fs.mu.Unlock()
	if e != f.epoch {
		return &fs.PathError{Op: op, Path: f.name, Err: ErrCrashed}
	}
	return nil
}

func (f *memFile) ReadAt(p []byte, off int64) (int, error) {
	if err := f.live("read"); err != nil {
		return 0, err
	}
	f.ino.mu.Lock()
	defer f.ino.mu.Unlock()
	if off >= int64(len(f.ino.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.ino.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *memFile) WriteAt(p []byte, off int64) (int, error) {
	if err := f.live("write"); err != nil {
		return 0, err
	}
	if err := f.fs.check("write", f.name); err != nil {
		return 0, &fs.PathError{Op: "write", Path: f.name, Err: err}
	}
	f.ino.mu.Lock()
	defer f.ino.mu.Unlock()
	if end := off + int64(len(p)); end > int64(len(f.ino.data)) {
		if f.ino.mapped > 0 && end > int64(cap(f.ino.data)) {
			return 0, &fs.PathError{Op: "write", Path: f.name, Err: errors.New("vfs: mem: cannot grow a mapped file")}
		}
		if end <= int64(cap(f.ino.data)) {
			f.ino.data = f.ino.data[:end]
		} else {
			nd := make([]byte, end, max(end, 2*int64(cap(f.ino.data))))
			copy(nd, f.ino.data)
			f.ino.data = nd
		}
	}
	copy(f.ino.data[off:], p)
	f.ino.changed(off, int64(len(p)))
	return len(p), nil
}

func (f *memFile) Sync() error {
	if err := f.live("sync"); err != nil {
		return err
	}
	if err := f.fs.check("sync", f.name); err != nil {
		return &fs.PathError{Op: "sync", Path: f.name, Err: err}
	}
	f.ino.mu.Lock()
	f.ino.syncLocked()
	f.ino.mu.Unlock()
	return nil
}

func (f *memFile) Truncate(size int64) error {
	if err := f.live("truncate"); err != nil {
		return err
	}
	f.ino.mu.Lock()
	defer f.ino.mu.Unlock()
	f.ino.reserve = min(f.ino.reserve, size) // blocks past the end are freed
	if old := int64(len(f.ino.data)); old != size {
		f.ino.changed(min(old, size), max(old, size)-min(old, size))
	}
	switch {
	case f.ino.mapped > 0 && size < f.ino.mapped:
		return &fs.PathError{Op: "truncate", Path: f.name, Err: errors.New("vfs: mem: cannot shrink a mapped file")}
	case size <= int64(len(f.ino.data)):
		clear(f.ino.data[size:])
		f.ino.data = f.ino.data[:size]
	case size <= int64(cap(f.ino.data)):
		f.ino.data = f.ino.data[:size]
	case f.ino.mapped > 0:
		return &fs.PathError{Op: "truncate", Path: f.name, Err: errors.New("vfs: mem: cannot grow a mapped file")}
	default:
		f.ino.data = append(f.ino.data, make([]byte, size-int64(len(f.ino.data)))...)
	}
	return nil
}

// Map writes into the file's own bytes: unsynced until Sync, lost by Crash
// like any other write.
func (f *memFile) Map(size int64) (Mapping, error) {
	if err := f.live("mmap"); err != nil {
		return nil, err
	}
	f.ino.mu.Lock()
	defer f.ino.mu.Unlock()
	if size > int64(len(f.ino.data)) {
		return nil, &fs.PathError{Op: "mmap", Path: f.name, Err: errors.New("vfs: mem: mapping past the end")}
	}
	f.ino.mapped = max(f.ino.mapped, size)
	return &memMapping{f: f, size: size}, nil
}

// MapRead reads through the file itself (with its crash and error checks).
func (f *memFile) MapRead() (io.ReaderAt, error) {
	if err := f.live("mmap"); err != nil {
		return nil, err
	}
	return f, nil
}

type memMapping struct {
	f    *memFile
	size int64
}

func (m *memMapping) WriteAt(p []byte, off int64) (int, error) {
	if err := m.f.live("write"); err != nil {
		return 0, err
	}
	if off < 0 || off+int64(len(p)) > m.size {
		return 0, errors.New("vfs: write past the end of a mapping")
	}
	if err := m.f.fs.check("write", m.f.name); err != nil {
		return 0, &fs.PathError{Op: "write", Path: m.f.name, Err: err}
	}
	m.f.ino.mu.Lock()
	defer m.f.ino.mu.Unlock()
	m.f.ino.changed(off, int64(len(p)))
	return copy(m.f.ino.data[off:], p), nil
}

func (f *memFile) Allocate(off, n int64) error {
	if err := f.live("allocate"); err != nil {
		return err
	}
	if err := f.fs.check("allocate", f.name); err != nil {
		return &fs.PathError{Op: "allocate", Path: f.name, Err: err}
	}
	f.ino.mu.Lock()
	f.ino.reserve = max(f.ino.reserve, off+n)
	f.ino.mu.Unlock()
	return nil
}

func (f *memFile) Size() (int64, error) {
	if err := f.live("stat"); err != nil {
		return 0, err
	}
	f.ino.mu.Lock()
	defer f.ino.mu.Unlock()
	return int64(len(f.ino.data)), nil
}

func (f *memFile) Close() error {
	if f.closed.Swap(true) {
		return fmt.Errorf("vfs: %s: %w", f.name, fs.ErrClosed)
	}
	return nil
}

// AllocatedForTesting returns the bytes that files whose names start with
// prefix take: their length or their preallocation, whichever is larger.
func (m *Mem) AllocatedForTesting(prefix string) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	var n int64
	for name, ino := range m.mu.names {
		if strings.HasPrefix(name, prefix) {
			ino.mu.Lock()
			n += max(int64(len(ino.data)), ino.reserve)
			ino.mu.Unlock()
		}
	}
	return n
}

// FreeBytes reports what SetFreeForTesting set, or 1 PiB.
func (m *Mem) FreeBytes(dir string) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.mu.free != 0 {
		return m.mu.free, nil
	}
	return 1 << 50, nil
}

// SetFreeForTesting sets what FreeBytes reports (0: 1 PiB).
func (m *Mem) SetFreeForTesting(n int64) {
	m.mu.Lock()
	m.mu.free = n
	m.mu.Unlock()
}
