package objstore

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"
)

// Mem is an in-memory store for tests. It checks the same contract as EC
// and can be told to fail or stall every call, to stand for an unreachable
// or slow backend.
type Mem struct {
	mu struct {
		sync.RWMutex
		objects map[string]memObject
		fail    error
		delay   time.Duration
	}
}

// memObject is an object with a checksum per block, as EC keeps: a
// ranged read checks only the blocks it covers.
type memObject struct {
	data []byte
	sums []uint32
}

func newMemObject(data []byte) memObject {
	o := memObject{data: data, sums: make([]uint32, (len(data)+blockSize-1)/blockSize)}
	for b := range o.sums {
		o.sums[b] = crc(data[b*blockSize : min((b+1)*blockSize, len(data))])
	}
	return o
}

// check verifies the blocks that hold [off, off+n).
func (o memObject) check(off int64, n int) bool {
	for b := off / blockSize; b < (off+int64(n)+blockSize-1)/blockSize; b++ {
		if crc(o.data[b*blockSize:min((b+1)*blockSize, int64(len(o.data)))]) != o.sums[b] {
			return false
		}
	}
	return true
}

// NewMem returns an empty in-memory store.
func NewMem() *Mem {
	m := &Mem{}
	m.mu.objects = make(map[string]memObject)
	return m
}

// SetFailForTesting makes every call return err (nil clears it).
func (m *Mem) SetFailForTesting(err error) {
	m.mu.Lock()
	m.mu.fail = err
	m.mu.Unlock()
}

// SetDelayForTesting makes every Put wait d first (a slow backend).
func (m *Mem) SetDelayForTesting(d time.Duration) {
	m.mu.Lock()
	m.mu.delay = d
	m.mu.Unlock()
}

// CorruptForTesting flips one byte of an object, as bit rot would.
func (m *Mem) CorruptForTesting(name string, off int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if o, ok := m.mu.objects[name]; ok && off < int64(len(o.data)) {
		o.data[off] ^= 0xff
	}
}

func (m *Mem) gate(ctx context.Context, put bool) error {
	m.mu.RLock()
	fail, delay := m.mu.fail, m.mu.delay
	m.mu.RUnlock()
	if put && delay > 0 {
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if fail != nil {
		return fail
	}
	return ctx.Err()
}

// Put stores size bytes read from src under name.
func (m *Mem) Put(ctx context.Context, name string, src io.ReaderAt, size int64) error {
	return m.put(ctx, name, src, size, false)
}

// Create is Put of a name that must not exist.
func (m *Mem) Create(ctx context.Context, name string, src io.ReaderAt, size int64) error {
	return m.put(ctx, name, src, size, true)
}

func (m *Mem) put(ctx context.Context, name string, src io.ReaderAt, size int64, excl bool) error {
	if err := m.gate(ctx, true); err != nil {
		return err
	}
	data := make([]byte, size)
	if _, err := src.ReadAt(data, 0); err != nil && !(err == io.EOF && size == 0) {
		return fmt.Errorf("objstore: put %s: read source: %w", name, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.mu.objects[name]; ok && excl {
		return fmt.Errorf("%w: %s", ErrExists, name)
	}
	m.mu.objects[name] = newMemObject(data)
	return nil
}

// GetRange fills p from the object's bytes at off.
func (m *Mem) GetRange(ctx context.Context, name string, p []byte, off int64) error {
	if err := m.gate(ctx, false); err != nil {
		return err
	}
	m.mu.RLock()
	o, ok := m.mu.objects[name]
	m.mu.RUnlock()
	if !ok {
		return fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	if err := checkRange(name, int64(len(o.data)), off, len(p)); err != nil {
		return err
	}
	if !o.check(off, len(p)) {
		return fmt.Errorf("%w: %s", ErrCorrupt, name)
	}
	copy(p, o.data[off:])
	return nil
}

// Size returns the object's length.
func (m *Mem) Size(ctx context.Context, name string) (int64, error) {
	if err := m.gate(ctx, false); err != nil {
		return 0, err
	}
	m.mu.RLock()
	o, ok := m.mu.objects[name]
	m.mu.RUnlock()
	if !ok {
		return 0, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	return int64(len(o.data)), nil
}

// Delete removes the object; deleting a missing object is not an error.
func (m *Mem) Delete(ctx context.Context, name string) error {
	if err := m.gate(ctx, false); err != nil {
		return err
	}
	m.mu.Lock()
	delete(m.mu.objects, name)
	m.mu.Unlock()
	return nil
}

// List returns the names that start with prefix, sorted.
func (m *Mem) List(ctx context.Context, prefix string) ([]string, error) {
	if err := m.gate(ctx, false); err != nil {
		return nil, err
	}
	m.mu.RLock()
	var names []string
	for n := range m.mu.objects {
		if strings.HasPrefix(n, prefix) {
			names = append(names, n)
		}
	}
	m.mu.RUnlock()
	sort.Strings(names)
	return names, nil
}

// ListDirs returns the "directories" right below prefix.
func (m *Mem) ListDirs(ctx context.Context, prefix string) ([]string, error) {
	names, err := m.List(ctx, prefix)
	return dirsOf(names, prefix), err
}

// Usage reports the bytes held; capacity is unbounded and shown as 1 TiB.
func (m *Mem) Usage(ctx context.Context) (Usage, error) {
	m.mu.RLock()
	var used uint64
	for _, o := range m.mu.objects {
		used += uint64(len(o.data))
	}
	m.mu.RUnlock()
	const total = 1 << 40
	return Usage{TotalBytes: total, FreeBytes: total - used, DataFraction: 1}, nil
}
