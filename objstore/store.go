package objstore

import (
	"errors"
	"fmt"
	"hash/crc32"
	"sort"
	"strings"

	"vpool/volume/backend"
)

// Errors returned by every store; test with errors.Is. Not found, out of
// range and exists are the engine's own sentinels (volume declares the
// contract it needs).
var (
	ErrNotFound    = backend.ErrNotFound
	ErrRange       = backend.ErrRange
	ErrExists      = backend.ErrExists
	ErrCorrupt     = errors.New("objstore: object corrupt (checksum mismatch)")
	ErrUnavailable = errors.New("objstore: not enough fragments readable")
	ErrBadPreset   = errors.New("objstore: bad preset")
	ErrNoASD       = errors.New("objstore: ASD unavailable")
	ErrNoSpace     = errors.New("objstore: no space left on an ASD")
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func crc(p []byte) uint32 { return crc32.Checksum(p, castagnoli) }

// Usage is the backend's raw capacity, as the filesystems under it report.
type Usage struct {
	TotalBytes uint64 // raw capacity of the distinct filesystems holding the store
	FreeBytes  uint64 // raw bytes still free there
	// DataFraction is the share of raw bytes that holds data (k/(k+m)):
	// usable capacity is TotalBytes*DataFraction.
	DataFraction float64
}

func checkRange(name string, size, off int64, n int) error {
	if off < 0 || n < 0 || off+int64(n) > size {
		return fmt.Errorf("%w: %s: [%d, %d) of %d bytes", ErrRange, name, off, off+int64(n), size)
	}
	return nil
}

// dirsOf returns, sorted and once each, prefix plus the part up to and
// including the next '/' of each name under prefix that has one.
func dirsOf(names []string, prefix string) []string {
	seen := map[string]bool{}
	var out []string
	for _, n := range names {
		rest, ok := strings.CutPrefix(n, prefix)
		if i := strings.IndexByte(rest, '/'); ok && i >= 0 && !seen[rest[:i+1]] {
			seen[rest[:i+1]] = true
			out = append(out, prefix+rest[:i+1])
		}
	}
	sort.Strings(out)
	return out
}
