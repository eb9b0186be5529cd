package nfsd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"vpool/fs"
)

// Directory cookies: 1 is ".", 2 is "..", and an entry's is its inode
// number + 2, so a listing resumes after any entry even when entries come
// and go in between (fs.ReadDirOrder). The cookie verifier is the vPool's
// id: cookies never go bad, so it only catches another server's.
const cookieBase = 2

func (s *Server) readdir(ctx context.Context, c *call) []byte {
	r := &c.args
	plus := c.proc == 17
	h := s.fh(r)
	cookie := r.uint64()
	verf := r.fixed(8)
	dircount := r.uint32()
	maxcount := dircount
	if plus {
		maxcount = r.uint32()
	}
	if r.done() != nil {
		return garbage(c)
	}
	maxcount = min(maxcount, maxIO)
	d, err := s.inode(ctx, h)
	if err == nil && !d.IsDir() {
		err = fs.ErrNotDir
	}
	if err == nil {
		err = check(&d, &c.cred, 4)
	}
	if err == nil {
		err = c.reserve(int(maxcount))
	}
	var myVerf [8]byte
	binary.BigEndian.PutUint64(myVerf[:], s.fsid)
	if err == nil && cookie != 0 && !bytes.Equal(verf, myVerf[:]) && !bytes.Equal(verf, make([]byte, 8)) {
		w := s.reply(c, nfs3ErrBadCookie, fattr3Size)
		s.postOp(w, &d)
		return w.b
	}
	if err != nil {
		w := s.reply(c, status(err), fattr3Size)
		s.postOp(w, known(d))
		return w.b
	}
	w := s.reply(c, nfs3OK, int(min(maxcount, 64<<10)))
	s.postOp(w, &d)
	w.fixed(myVerf[:])
	// Sizes as RFC 1813 counts them: maxcount is the whole reply, dircount
	// (READDIRPLUS) only the entries' fileid, name and cookie.
	size, dsize := len(w.b)-4+8, 0
	entries, full := 0, false
	// The names one inode has in the directory (hard links) share its
	// cookie, so they go in one reply or none: a name that does not fit
	// takes the inode's names already written out again.
	type mark struct {
		ck                       uint64
		at, entries, size, dsize int
	}
	var group mark
	add := func(name string, ino, ck uint64, a *fs.Attr) bool {
		esize := 4 + 8 + 4 + len(name) + pad4(len(name)) + 8
		dsz := esize
		if plus {
			esize += 4 + 4 + fattr3Size + 4 + 4 + handleSize
		}
		if ck != group.ck {
			group = mark{ck, len(w.b), entries, size, dsize}
		}
		if size+esize > int(maxcount) || plus && dsize+dsz > int(dircount) {
			w.b, entries, size, dsize = w.b[:group.at], group.entries, group.size, group.dsize
			full = true
			return false
		}
		size, dsize = size+esize, dsize+dsz
		w.bool(true)
		w.uint64(ino)
		w.string(name)
		w.uint64(ck)
		if plus {
			s.postOp(w, a)
			w.bool(a != nil)
			if a != nil {
				w.opaque(s.handle(a.Ino, a.Gen))
			}
		}
		entries++
		return true
	}
	ok := true
	if cookie == 0 {
		ok = add(".", d.Ino, 1, &d)
	}
	if ok && cookie <= 1 {
		pa, perr := s.ns.GetAttr(ctx, d.Parent)
		if d.Ino == fs.RootIno {
			pa, perr = d, nil
		}
		ok = add("..", pa.Ino, 2, attrOrNil(pa, perr))
	}
	if ok {
		after := uint64(0)
		if cookie > cookieBase {
			after = cookie - cookieBase
		}
		err = s.ns.ReadDirOrder(ctx, d.Ino, after, func(e fs.DirEntry) bool {
			var a *fs.Attr
			if plus {
				if ea, err := s.ns.GetAttr(ctx, e.Ino); err == nil {
					a = &ea
				}
			}
			return add(e.Name, e.Ino, e.Ino+cookieBase, a)
		})
	}
	if err == nil && entries == 0 && full {
		err = errTooSmall
	}
	if err != nil {
		w := s.reply(c, status(err), fattr3Size)
		s.postOp(w, &d)
		return w.b
	}
	w.bool(false)
	w.bool(!full)
	return w.b
}

var errTooSmall = errors.New("nfsd: directory reply buffer too small")

// link makes another name for a file (not a directory) in a directory
// the caller may write.
func (s *Server) link(ctx context.Context, c *call) []byte {
	r := &c.args
	h := s.fh(r)
	hd := s.fh(r)
	name := r.string(maxName)
	if r.done() != nil {
		return garbage(c)
	}
	a, err := s.inode(ctx, h)
	var pre fs.Attr
	if err == nil {
		pre, err = s.dirFor(ctx, hd, &c.cred)
	}
	if err == nil {
		var la fs.Attr
		if la, err = s.ns.Link(ctx, a.Ino, pre.Ino, name); err == nil {
			a, err = la, s.ns.SyncMeta()
		}
		s.changedEntry(pre.Ino, name)
		s.cfg.Notify.InvalidateInode(a.Ino, -1, 0) // its link count
	}
	post, perr := s.ns.GetAttr(ctx, pre.Ino)
	w := s.reply(c, status(err), 3*fattr3Size)
	s.postOp(w, known(a))
	s.wcc(w, known(pre), attrOrNil(post, perr))
	return w.b
}
