package nfsd

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"path"
	"sort"
	"strings"

	"vpool/fs"
)

// File handles are (version, vPool namespace id, inode, generation): they
// stay valid across restarts, and become stale when the inode is deleted
// or the vPool was restored from the backend since (a new epoch).
const (
	handleVersion = 1
	handleSize    = 28
)

func (s *Server) handle(ino, gen uint64) []byte {
	h := make([]byte, handleSize)
	h[0] = handleVersion
	binary.BigEndian.PutUint64(h[4:], s.fsid)
	binary.BigEndian.PutUint64(h[12:], ino)
	binary.BigEndian.PutUint64(h[20:], gen)
	return h
}

var errBadHandle = errors.New("nfsd: malformed file handle")

// inode checks a handle and returns its inode's attributes.
func (s *Server) inode(ctx context.Context, h []byte) (fs.Attr, error) {
	if len(h) != handleSize || h[0] != handleVersion || h[1]|h[2]|h[3] != 0 {
		return fs.Attr{}, errBadHandle
	}
	if binary.BigEndian.Uint64(h[4:]) != s.fsid {
		return fs.Attr{}, fs.ErrStale // another vPool's handle
	}
	a, err := s.ns.GetAttr(ctx, binary.BigEndian.Uint64(h[12:]))
	if err != nil {
		return fs.Attr{}, err
	}
	if a.Gen != binary.BigEndian.Uint64(h[20:]) {
		return fs.Attr{}, fs.ErrStale
	}
	return a, nil
}

// MOUNT v3 (RFC 1813, appendix I).
const (
	mnt3OK          = 0
	mnt3ErrNoEnt    = 2
	mnt3ErrAccess   = 13
	mnt3ErrNotDir   = 20
	mnt3ErrInval    = 22
	mnt3ErrTooLong  = 63
	mnt3ErrServer   = 10006
	maxMountPathLen = 1024
)

func (s *Server) mount(c *call) []byte {
	r := &c.args
	ctx := context.Background()
	switch c.proc {
	case 0: // NULL
		if r.done() != nil {
			return garbage(c)
		}
		return accepted(c.xid, acceptSuccess, 0).b
	case 1: // MNT
		p := r.string(maxMountPathLen)
		if r.done() != nil {
			return garbage(c)
		}
		w := accepted(c.xid, acceptSuccess, 64)
		a, stat := s.resolveExport(ctx, p)
		w.uint32(stat)
		if stat == mnt3OK {
			w.opaque(s.handle(a.Ino, a.Gen))
			w.uint32(1) // auth flavors: AUTH_SYS
			w.uint32(authSys)
			s.mu.Lock()
			s.mu.mounts[hostOf(c.peer.addr)] = p
			s.mu.Unlock()
			s.log.Info("nfs: mount", "client", c.peer.addr, "path", p)
		} else {
			s.log.Info("nfs: mount refused", "client", c.peer.addr, "path", p, "status", stat)
		}
		return w.b
	case 2: // DUMP
		if r.done() != nil {
			return garbage(c)
		}
		w := accepted(c.xid, acceptSuccess, 256)
		s.mu.Lock()
		hosts := make([]string, 0, len(s.mu.mounts))
		for h := range s.mu.mounts {
			hosts = append(hosts, h)
		}
		sort.Strings(hosts)
		for _, h := range hosts {
			w.bool(true)
			w.string(h)
			w.string(s.mu.mounts[h])
		}
		s.mu.Unlock()
		w.bool(false)
		return w.b
	case 3, 4: // UMNT (of a path), UMNTALL: this client's entry goes
		if c.proc == 3 {
			r.string(maxMountPathLen)
		}
		if r.done() != nil {
			return garbage(c)
		}
		s.mu.Lock()
		delete(s.mu.mounts, hostOf(c.peer.addr))
		s.mu.Unlock()
		return accepted(c.xid, acceptSuccess, 0).b
	case 5: // EXPORT
		if r.done() != nil {
			return garbage(c)
		}
		w := accepted(c.xid, acceptSuccess, 128)
		w.bool(true)
		w.string(s.cfg.Export)
		for _, r := range s.cfg.Allow { // no groups: every client
			w.bool(true)
			w.string(r.Net.String())
		}
		w.bool(false)
		w.bool(false)
		return w.b
	}
	return accepted(c.xid, acceptProcUnavail, 0).b
}

func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// resolveExport finds the directory a MNT path names: the export or a
// directory under it.
func (s *Server) resolveExport(ctx context.Context, p string) (fs.Attr, uint32) {
	if p == "" || p[0] != '/' {
		return fs.Attr{}, mnt3ErrInval
	}
	p = path.Clean(p)
	rest, ok := strings.CutPrefix(p, s.cfg.Export)
	if !ok || (rest != "" && rest[0] != '/') {
		return fs.Attr{}, mnt3ErrNoEnt
	}
	a, err := s.ns.Resolve(ctx, rest)
	switch {
	case errors.Is(err, fs.ErrNotFound):
		return fs.Attr{}, mnt3ErrNoEnt
	case errors.Is(err, fs.ErrNotDir):
		return fs.Attr{}, mnt3ErrNotDir
	case errors.Is(err, fs.ErrNameTooLong):
		return fs.Attr{}, mnt3ErrTooLong
	case err != nil:
		s.log.Warn("nfs: mount", "path", p, "err", err)
		return fs.Attr{}, mnt3ErrServer
	case !a.IsDir():
		return fs.Attr{}, mnt3ErrNotDir
	}
	return a, mnt3OK
}
