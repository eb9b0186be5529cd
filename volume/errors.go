package volume

import (
	"errors"
	"fmt"

	"vpool/volume/backend"
)

// Errors of the volume package; test with errors.Is. Every error a caller
// sees wraps one of these or an error of the layer below (flashcache,
// objstore, the filesystem).
var (
	ErrCorrupt      = errors.New("volume: corrupt data (checksum mismatch)")
	ErrOutOfRange   = errors.New("volume: offset or length outside the vDisk")
	ErrBadSize      = errors.New("volume: impossible size")
	ErrBadConfig    = errors.New("volume: bad configuration")
	ErrNotFound     = errors.New("volume: no such vDisk")
	ErrClosed       = errors.New("volume: vDisk or pool closed")
	ErrNoSpace      = errors.New("volume: no space left on local flash")
	ErrBackendRead  = errors.New("volume: backend read failed")
	ErrReadOnly     = errors.New("volume: vDisk is read-only")
	ErrBusy         = errors.New("volume: vDisk is in use")
	ErrMissingTLogs = errors.New("volume: TLogs missing locally and on the backend")
	ErrNoSnapshot   = errors.New("volume: no such snapshot")
	ErrExists       = errors.New("volume: already exists")
	ErrBadName      = errors.New("volume: bad name")
	// ErrDamaged is returned for a vDisk that could not be recovered at
	// Open (its record, manifest or data is unreadable or gone); the rest
	// of the pool serves on.
	ErrDamaged = errors.New("volume: vDisk damaged")
)

// Errors every Backend returns (declared in volume/backend).
var (
	ErrObjectNotFound = backend.ErrNotFound
	ErrObjectRange    = backend.ErrRange
	ErrObjectExists   = backend.ErrExists
)

func errCorruptf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...)
}
