// Package backend is the contract between the engine (package volume) and
// the stores of immutable objects it writes SCOs, TLogs and manifests to
// (package objstore: EC over ASDs, S3, memory). It is volume's own: the
// engine declares what it needs, and stores implement it, with
// objstore/objstoretest checking that they do.
//
// It is a package apart from volume only so that stores can name its
// errors without importing the engine (and the engine's tests can use the
// stores).
package backend

import (
	"context"
	"errors"
	"io"
)

// Errors every Store returns (or wraps), so that the engine tells "not
// there" from "unreachable" without knowing the store; test with
// errors.Is.
var (
	ErrNotFound = errors.New("backend: object not found")
	ErrRange    = errors.New("backend: range outside object")
	// ErrExists is Create's answer when the name is taken.
	ErrExists = errors.New("backend: object exists")
)

// Store is a store of immutable, checksummed objects.
type Store interface {
	// Put stores size bytes of src as name, replacing any earlier object
	// whole; a Put that fails leaves the previous object readable.
	Put(ctx context.Context, name string, src io.ReaderAt, size int64) error
	// Create is Put of a name that must not exist (S3's If-None-Match: *):
	// ErrExists if it does, and the object there stays as it was.
	Create(ctx context.Context, name string, src io.ReaderAt, size int64) error
	// GetRange fills p from offset off: ErrNotFound, ErrRange past the
	// end, and never data that fails its checksum.
	GetRange(ctx context.Context, name string, p []byte, off int64) error
	// Size returns the object's length, or ErrNotFound.
	Size(ctx context.Context, name string) (int64, error)
	// Delete removes name; deleting what is not there is no error.
	Delete(ctx context.Context, name string) error
	// List returns every name starting with prefix, sorted.
	List(ctx context.Context, prefix string) ([]string, error)
	// ListDirs returns, sorted and once each, prefix plus the part up to
	// and including the next '/' of every name under prefix that has one:
	// the "directories" below prefix (S3's common prefixes), so that a
	// caller finds the vDisks of a pool without listing their objects.
	ListDirs(ctx context.Context, prefix string) ([]string, error)
}
