package objstore

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"vpool/volume/backend"
)

// Watched is a store whose answers are watched: it knows whether the
// store works and, when every request since some moment has failed,
// since when and why, for status and metrics.
type Watched struct {
	backend.Store
	mu struct {
		sync.Mutex
		failingSince time.Time // zero: the last request was answered
		lastErr      string
		failures     int64
	}
}

// Watch wraps s.
func Watch(s backend.Store) *Watched { return &Watched{Store: s} }

// Health is a Watched store's state.
type Health struct {
	OK bool
	// FailingSince is the first failure of the current run of failures.
	FailingSince time.Time
	LastError    string
	Failures     int64 // requests failed since the process started
}

// Health returns the store's state now.
func (w *Watched) Health() Health {
	w.mu.Lock()
	defer w.mu.Unlock()
	return Health{OK: w.mu.failingSince.IsZero(), FailingSince: w.mu.failingSince, LastError: w.mu.lastErr, Failures: w.mu.failures}
}

// note records one request's outcome. The store answered when it said
// "not there", "out of range", "exists" or "corrupt" (an object is bad,
// not the store); a caller giving up is no answer either way.
func (w *Watched) note(err error) error {
	if errors.Is(err, context.Canceled) {
		return err
	}
	answered := err == nil || errors.Is(err, ErrNotFound) || errors.Is(err, ErrRange) ||
		errors.Is(err, ErrExists) || errors.Is(err, ErrCorrupt)
	w.mu.Lock()
	defer w.mu.Unlock()
	if answered {
		w.mu.failingSince = time.Time{}
		return err
	}
	w.mu.failures++
	w.mu.lastErr = err.Error()
	if w.mu.failingSince.IsZero() {
		w.mu.failingSince = time.Now()
	}
	return err
}

func (w *Watched) Put(ctx context.Context, name string, src io.ReaderAt, size int64) error {
	return w.note(w.Store.Put(ctx, name, src, size))
}

func (w *Watched) Create(ctx context.Context, name string, src io.ReaderAt, size int64) error {
	return w.note(w.Store.Create(ctx, name, src, size))
}

func (w *Watched) GetRange(ctx context.Context, name string, p []byte, off int64) error {
	return w.note(w.Store.GetRange(ctx, name, p, off))
}

func (w *Watched) Size(ctx context.Context, name string) (int64, error) {
	n, err := w.Store.Size(ctx, name)
	return n, w.note(err)
}

func (w *Watched) Delete(ctx context.Context, name string) error {
	return w.note(w.Store.Delete(ctx, name))
}

func (w *Watched) List(ctx context.Context, prefix string) ([]string, error) {
	names, err := w.Store.List(ctx, prefix)
	return names, w.note(err)
}

func (w *Watched) ListDirs(ctx context.Context, prefix string) ([]string, error) {
	names, err := w.Store.ListDirs(ctx, prefix)
	return names, w.note(err)
}
