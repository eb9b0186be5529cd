package nfsd

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"vpool/fs"
)

// NFS has no open and close, so the gateway keeps files open between
// calls: a file is opened at its first READ, WRITE or COMMIT and released
// after fileIdle without calls. While it is held, a REMOVE leaves it an
// orphan that existing handles still read and write, as a local open
// file would be.
const (
	fileIdle  = 10 * time.Second
	fileSweep = 2 * time.Second
)

type cachedFile struct {
	f        *fs.File
	refs     int
	lastUsed time.Time
	reads    readState // guarded by fileCache.mu
}

type fileCache struct {
	ns    *fs.Namespace
	log   *slog.Logger
	stop  chan struct{}
	done  chan struct{}
	held  atomic.Int32 // buffers held by read-ahead
	stats *Stats
	mu    struct {
		sync.Mutex
		files map[uint64]*cachedFile
	}
}

func newFileCache(ns *fs.Namespace, log *slog.Logger, stats *Stats) *fileCache {
	c := &fileCache{ns: ns, log: log, stats: stats, stop: make(chan struct{}), done: make(chan struct{})}
	c.mu.files = map[uint64]*cachedFile{}
	go c.sweeper()
	return c
}

// get returns the open file of ino; put gives it back.
func (c *fileCache) get(ctx context.Context, ino uint64) (*fs.File, error) {
	c.mu.Lock()
	if cf := c.mu.files[ino]; cf != nil {
		cf.refs++
		c.mu.Unlock()
		return cf.f, nil
	}
	c.mu.Unlock()
	f, err := c.ns.Open(ctx, ino, true)
	if errors.Is(err, fs.ErrReadOnly) { // a snapshot
		f, err = c.ns.Open(ctx, ino, false)
	}
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if cf := c.mu.files[ino]; cf != nil { // opened meanwhile
		cf.refs++
		c.mu.Unlock()
		f.Release(ctx)
		return cf.f, nil
	}
	c.mu.files[ino] = &cachedFile{f: f, refs: 1, reads: readState{next: -1}}
	c.mu.Unlock()
	return f, nil
}

// ReleaseIdleFiles closes the files the gateway keeps open between calls
// and no call uses now (before a rollback, which open writers prevent).
func (s *Server) ReleaseIdleFiles() {
	s.files.release(func(cf *cachedFile) bool { return cf.refs == 0 })
}

func (c *fileCache) put(f *fs.File) {
	c.mu.Lock()
	if cf := c.mu.files[f.Ino()]; cf != nil && cf.f == f {
		cf.refs--
		cf.lastUsed = time.Now()
	}
	c.mu.Unlock()
	if f.IsSnapshot() { // an open snapshot cannot be deleted: do not keep it
		c.release(func(cf *cachedFile) bool { return cf.f == f && cf.refs == 0 })
	}
}

func (c *fileCache) sweeper() {
	defer close(c.done)
	t := time.NewTicker(fileSweep)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case now := <-t.C:
			c.release(func(cf *cachedFile) bool { return cf.refs == 0 && now.Sub(cf.lastUsed) > fileIdle })
		}
	}
}

// release closes the idle files that match.
func (c *fileCache) release(match func(*cachedFile) bool) {
	var out []*fs.File
	c.mu.Lock()
	for ino, cf := range c.mu.files {
		if match(cf) {
			if p := cf.reads.ahead; p != nil {
				c.drop(p)
			}
			out = append(out, cf.f)
			delete(c.mu.files, ino)
		}
	}
	c.mu.Unlock()
	for _, f := range out {
		if err := f.Release(context.Background()); err != nil {
			c.log.Warn("nfs: release file", "inode", f.Ino(), "err", err)
		}
	}
}

// close releases every file (the server has stopped: none is in use).
func (c *fileCache) close(ctx context.Context) error {
	select {
	case <-c.stop:
	default:
		close(c.stop)
	}
	<-c.done
	c.release(func(*cachedFile) bool { return true })
	return nil
}
