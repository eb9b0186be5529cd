package nfsd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"slices"
	"syscall"

	"vpool/fs"
)

// NFS version 3 (RFC 1813): the 22 procedures.

const (
	maxName = 4096 // longer names are garbage; fs refuses more than 255 bytes with NAMETOOLONG
	maxIO   = 1 << 20

	unstable = 0
	dataSync = 1
	fileSync = 2
)

var procNames = [...]string{"NULL", "GETATTR", "SETATTR", "LOOKUP", "ACCESS", "READLINK", "READ", "WRITE", "CREATE",
	"MKDIR", "SYMLINK", "MKNOD", "REMOVE", "RMDIR", "RENAME", "LINK", "READDIR", "READDIRPLUS", "FSSTAT", "FSINFO",
	"PATHCONF", "COMMIT"}

// nfs3 answers one NFS call. Each procedure decodes its arguments fully
// before it acts: a call that does not decode changes nothing.
func (s *Server) nfs3(c *call) []byte {
	if c.proc >= uint32(len(procNames)) {
		return accepted(c.xid, acceptProcUnavail, 0).b
	}
	if c.cred.ro {
		if n, ok := changeFailWords[c.proc]; ok {
			return s.readOnly(c, n)
		}
	}
	ctx := context.Background()
	r := &c.args
	switch c.proc {
	case 0:
		if r.done() != nil {
			return garbage(c)
		}
		return accepted(c.xid, acceptSuccess, 0).b
	case 1:
		return s.getattr(ctx, c)
	case 2:
		return s.setattr(ctx, c)
	case 3:
		return s.lookup(ctx, c)
	case 4:
		return s.access(ctx, c)
	case 5:
		return s.readlink(ctx, c)
	case 6:
		return s.read(ctx, c)
	case 7:
		return s.write(ctx, c)
	case 8, 9, 10, 11:
		return s.create(ctx, c)
	case 12, 13:
		return s.remove(ctx, c)
	case 14:
		return s.rename(ctx, c)
	case 15:
		return s.link(ctx, c)
	case 16, 17:
		return s.readdir(ctx, c)
	case 18, 19, 20:
		return s.fsinfo(ctx, c)
	case 21:
		return s.commit(ctx, c)
	}
	return accepted(c.xid, acceptProcUnavail, 0).b
}

// changeFailWords are the procedures that change something, with the
// number of empty words (wcc_data, post_op_attr) of their failure reply.
var changeFailWords = map[uint32]int{2: 2, 7: 2, 8: 2, 9: 2, 10: 2, 11: 2, 12: 2, 13: 2, 14: 4, 15: 3}

// readOnly refuses a change on a read-only export.
func (s *Server) readOnly(c *call, words int) []byte {
	w := s.reply(c, nfs3ErrROFS, 4*words)
	for range words {
		w.uint32(0)
	}
	return w.b
}

// reply starts a successful RPC reply carrying NFS status st.
func (s *Server) reply(c *call, st uint32, size int) *writer {
	if st != nfs3OK {
		s.Stats.Errors.Add(1)
	}
	w := accepted(c.xid, acceptSuccess, size)
	w.uint32(st)
	return w
}

func (s *Server) fh(r *reader) []byte { return r.opaque(64) }

// attrOrNil is a pointer to a when err is nil.
func attrOrNil(a fs.Attr, err error) *fs.Attr {
	if err != nil {
		return nil
	}
	return &a
}

func (s *Server) getattr(ctx context.Context, c *call) []byte {
	h := s.fh(&c.args)
	if c.args.done() != nil {
		return garbage(c)
	}
	a, err := s.inode(ctx, h)
	w := s.reply(c, status(err), fattr3Size)
	if err == nil {
		s.fattr3(w, &a)
	}
	return w.b
}

// sattr3 is a decoded set of attributes to change.
type sattr3 struct {
	in              fs.SetAttrIn
	anyButTimeToNow bool // something other than times set to server time
}

func decodeSattr(r *reader) sattr3 {
	var s sattr3
	in := &s.in
	if in.SetMode = r.bool(); in.SetMode {
		in.Mode = r.uint32() & 0o7777
	}
	if in.SetUid = r.bool(); in.SetUid {
		in.Uid = r.uint32()
	}
	if in.SetGid = r.bool(); in.SetGid {
		in.Gid = r.uint32()
	}
	if in.SetSize = r.bool(); in.SetSize {
		sz := r.uint64()
		if sz > 1<<62 {
			sz = 1 << 62 // the namespace refuses it as too large
		}
		in.Size = int64(sz)
	}
	s.anyButTimeToNow = in.SetMode || in.SetUid || in.SetGid || in.SetSize
	for _, t := range []struct {
		set *bool
		ns  *int64
	}{{&in.SetAtime, &in.Atime}, {&in.SetMtime, &in.Mtime}} {
		switch r.uint32() {
		case 0: // DONT_CHANGE
		case 1: // SET_TO_SERVER_TIME
			*t.set, *t.ns = true, -1
		case 2: // SET_TO_CLIENT_TIME
			sec, nsec := r.uint32(), r.uint32()
			*t.set, *t.ns = true, int64(sec)*1e9+int64(nsec%1e9)
			s.anyButTimeToNow = true
		default:
			r.fail("time_how")
		}
	}
	return s
}

func (st *sattr3) empty() bool {
	in := &st.in
	return !(in.SetMode || in.SetUid || in.SetGid || in.SetSize || in.SetAtime || in.SetMtime)
}

// setattrAllowed applies POSIX's rules: the owner (or root) changes mode
// and times; only root changes the owner, and the owner may change the
// group to one of their own; size and times-to-now need write access.
func setattrAllowed(a *fs.Attr, cr *cred, st *sattr3) error {
	if cr.uid == 0 {
		return nil
	}
	in := &st.in
	owner := cr.uid == a.Uid
	switch {
	case in.SetUid && in.Uid != a.Uid:
		return errAccess
	case in.SetGid && in.Gid != a.Gid && !(owner && (in.Gid == cr.gid || containsGid(cr.gids, in.Gid))):
		return errAccess
	case (in.SetMode || st.anyButTimeToNow && (in.SetAtime || in.SetMtime)) && !owner:
		return errAccess
	case in.SetSize && a.IsDir():
		return fs.ErrIsDir
	case in.SetSize:
		return check(a, cr, 2)
	case (in.SetAtime || in.SetMtime) && !owner:
		return check(a, cr, 2)
	}
	return nil
}

func (s *Server) setattr(ctx context.Context, c *call) []byte {
	r := &c.args
	h := s.fh(r)
	st := decodeSattr(r)
	var guard int64 = -1
	if r.bool() {
		sec, nsec := r.uint32(), r.uint32()
		guard = int64(sec)*1e9 + int64(nsec)
	}
	if r.done() != nil {
		return garbage(c)
	}
	pre, err := s.inode(ctx, h)
	var post fs.Attr
	if err == nil && guard >= 0 && (pre.Ctime/1e9 != guard/1e9 || pre.Ctime%1e9 != guard%1e9) {
		w := s.reply(c, nfs3ErrNotSync, 2*fattr3Size)
		s.wcc(w, &pre, &pre)
		return w.b
	}
	if err == nil {
		err = setattrAllowed(&pre, &c.cred, &st)
	}
	if err == nil {
		post, err = s.ns.SetAttr(ctx, pre.Ino, st.in)
		if err == nil {
			err = s.ns.SyncMeta()
		}
		if st.in.SetSize && pre.IsRegular() && !pre.IsVDisk() {
			s.cfg.Notify.InvalidateInode(pre.Ino, min(st.in.Size, pre.Size), 0)
		} else {
			s.cfg.Notify.InvalidateInode(pre.Ino, -1, 0)
		}
	}
	w := s.reply(c, status(err), 2*fattr3Size)
	if err != nil {
		post, err = s.ns.GetAttr(ctx, pre.Ino)
	}
	s.wcc(w, known(pre), attrOrNil(post, err))
	return w.b
}

func (s *Server) lookup(ctx context.Context, c *call) []byte {
	r := &c.args
	h := s.fh(r)
	name := r.string(maxName)
	if r.done() != nil {
		return garbage(c)
	}
	d, err := s.inode(ctx, h)
	var a fs.Attr
	if err == nil && !d.IsDir() {
		err = fs.ErrNotDir
	}
	if err == nil {
		err = check(&d, &c.cred, 1)
	}
	if err == nil {
		a, err = s.ns.Lookup(ctx, d.Ino, name)
	}
	w := s.reply(c, status(err), 2*fattr3Size+64)
	if err == nil {
		w.opaque(s.handle(a.Ino, a.Gen))
		s.postOp(w, &a)
	}
	s.postOp(w, known(d))
	return w.b
}

// known is a pointer to attributes that were read (Ino set), else nil:
// the attributes of a handle that did not resolve are not sent.
func known(a fs.Attr) *fs.Attr {
	if a.Ino == 0 {
		return nil
	}
	return &a
}

func (s *Server) access(ctx context.Context, c *call) []byte {
	r := &c.args
	h := s.fh(r)
	want := r.uint32()
	if r.done() != nil {
		return garbage(c)
	}
	a, err := s.inode(ctx, h)
	w := s.reply(c, status(err), fattr3Size+8)
	s.postOp(w, attrOrNil(a, err))
	if err == nil {
		p := perm(&a, &c.cred)
		got := uint32(0)
		if p&4 != 0 {
			got |= access3Read
		}
		if p&2 != 0 {
			got |= access3Modify | access3Extend
			if a.IsDir() {
				got |= access3Delete
			}
		}
		if p&1 != 0 {
			got |= access3Lookup | access3Execute
		}
		if !a.IsDir() {
			got &^= access3Lookup
		} else {
			got &^= access3Execute
		}
		w.uint32(got & want)
	}
	return w.b
}

func (s *Server) readlink(ctx context.Context, c *call) []byte {
	h := s.fh(&c.args)
	if c.args.done() != nil {
		return garbage(c)
	}
	a, err := s.inode(ctx, h)
	var target string
	if err == nil {
		target, err = s.ns.Readlink(ctx, a.Ino)
	}
	w := s.reply(c, status(err), fattr3Size+len(target)+8)
	s.postOp(w, known(a))
	if err == nil {
		w.string(target)
	}
	return w.b
}

func (s *Server) read(ctx context.Context, c *call) []byte {
	r := &c.args
	h := s.fh(r)
	off := r.uint64()
	count := min(r.uint32(), maxIO)
	if r.done() != nil {
		return garbage(c)
	}
	a, err := s.inode(ctx, h)
	if err == nil {
		err = ioAllowed(&a, &c.cred, off, 4)
	}
	if err == nil {
		err = c.reserve(fattr3Size + 16 + int(count))
	}
	if err != nil {
		w := s.reply(c, status(err), fattr3Size)
		s.postOp(w, known(a))
		return w.b
	}
	w := s.reply(c, nfs3OK, fattr3Size+16+int(count))
	s.postOp(w, &a)
	at := len(w.b)
	w.b = slices.Grow(w.b, 12+int(count)+4)[:at+12+int(count)] // count, eof, data length, data: all written or cut below
	n := 0
	if int64(off) < a.Size {
		var f *fs.File
		if f, err = s.files.get(ctx, a.Ino); err == nil {
			hdr := at + 12
			var buf []byte
			var p *prefetch
			large := count >= readAheadMin // small READs (random I/O) skip the bookkeeping
			if large {
				var ahead bool
				p, ahead = s.files.beginRead(f, int64(off), int(count))
				if ahead {
					s.readAhead(f, int64(off)+int64(count), int(count), hdr, a.Size)
				}
				if p != nil {
					buf = s.files.usePrefetch(p, f, hdr, int(min(int64(count), a.Size-int64(off))))
				}
			}
			if buf != nil {
				copy(buf, w.b[:hdr])
				putBig(w.b)
				w.b, n = buf, p.n
			} else {
				n, err = f.ReadAt(ctx, w.b[hdr:], int64(off))
			}
			if large {
				s.files.endRead(f)
			}
			s.files.put(f)
		}
	}
	if err != nil {
		putBig(w.b)
		w := s.reply(c, status(err), fattr3Size)
		s.postOp(w, &a)
		return w.b
	}
	s.Stats.ReadBytes.Add(uint64(n))
	eof := int64(off)+int64(n) >= a.Size
	binary.BigEndian.PutUint32(w.b[at:], uint32(n))
	binary.BigEndian.PutUint32(w.b[at+4:], b2u(eof))
	binary.BigEndian.PutUint32(w.b[at+8:], uint32(n))
	w.b = w.b[:at+12+n]
	w.b = append(w.b, make([]byte, pad4(n))...)
	return w.b
}

// ioAllowed checks a READ (want 4) or WRITE (want 2) at off: only of a
// regular file, inside the largest size, by a caller allowed to.
func ioAllowed(a *fs.Attr, cr *cred, off uint64, want uint32) error {
	switch {
	case a.IsDir():
		return fs.ErrIsDir
	case !a.IsRegular():
		return fs.ErrInvalid
	case off > 1<<62 && want == 2:
		return fs.ErrTooBig
	case off > 1<<62:
		return fs.ErrInvalid
	}
	return check(a, cr, want)
}

func b2u(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}

func (s *Server) write(ctx context.Context, c *call) []byte {
	r := &c.args
	h := s.fh(r)
	off := r.uint64()
	count := r.uint32()
	stable := r.uint32()
	data := r.opaque(maxIO)
	if r.done() != nil || stable > fileSync {
		return garbage(c)
	}
	if int(count) < len(data) {
		data = data[:count]
	}
	pre, err := s.inode(ctx, h)
	if err == nil {
		err = ioAllowed(&pre, &c.cred, off, 2)
	}
	committed := uint32(unstable)
	if err == nil {
		var f *fs.File
		if f, err = s.files.get(ctx, pre.Ino); err == nil {
			_, err = f.WriteAt(ctx, data, int64(off))
			if err == nil && stable != unstable {
				err, committed = f.Sync(ctx), fileSync
			}
			s.files.put(f)
		}
	}
	post, perr := s.ns.GetAttr(ctx, pre.Ino)
	switch {
	case err != nil:
	case !pre.IsVDisk():
		s.cfg.Notify.InvalidateInode(pre.Ino, int64(off), int64(len(data)))
	case perr == nil && post.Size != pre.Size:
		// vDisks: their data is fs's (File.WriteAt); a new size is ours.
		s.cfg.Notify.InvalidateInode(pre.Ino, -1, 0)
	}
	w := s.reply(c, status(err), 2*fattr3Size+32)
	s.wcc(w, known(pre), attrOrNil(post, perr))
	if err == nil {
		s.Stats.WriteBytes.Add(uint64(len(data)))
		w.uint32(uint32(len(data)))
		w.uint32(committed)
		w.fixed(s.verf[:])
	}
	return w.b
}

func (s *Server) commit(ctx context.Context, c *call) []byte {
	r := &c.args
	h := s.fh(r)
	r.uint64()
	r.uint32()
	if r.done() != nil {
		return garbage(c)
	}
	pre, err := s.inode(ctx, h)
	if err == nil && pre.IsRegular() {
		var f *fs.File
		if f, err = s.files.get(ctx, pre.Ino); err == nil {
			err = f.Sync(ctx)
			s.files.put(f)
		}
	} else if err == nil {
		err = s.ns.SyncMeta()
	}
	post, perr := s.ns.GetAttr(ctx, pre.Ino)
	w := s.reply(c, status(err), 2*fattr3Size+8)
	s.wcc(w, known(pre), attrOrNil(post, perr))
	if err == nil {
		w.fixed(s.verf[:])
	}
	return w.b
}

// dirFor checks a directory handle and that cr may change the directory.
func (s *Server) dirFor(ctx context.Context, h []byte, cr *cred) (fs.Attr, error) {
	d, err := s.inode(ctx, h)
	if err != nil {
		return d, err
	}
	if !d.IsDir() {
		return d, fs.ErrNotDir
	}
	return d, check(&d, cr, 3)
}

// Exclusive create keeps the client's verifier in atime and mtime (seconds),
// as Linux's server does, so that a retransmitted CREATE finds it.
func verfTimes(v []byte) (atime, mtime int64) {
	return int64(binary.BigEndian.Uint32(v[:4])) * 1e9, int64(binary.BigEndian.Uint32(v[4:8])) * 1e9
}

// create serves CREATE, MKDIR, SYMLINK and MKNOD.
func (s *Server) create(ctx context.Context, c *call) []byte {
	r := &c.args
	h := s.fh(r)
	name := r.string(maxName)
	nn := fs.NewNode{Caller: fs.Caller{Uid: c.cred.uid, Gid: c.cred.gid}}
	var st sattr3
	var verf []byte
	guarded := false
	switch c.proc {
	case 8: // CREATE
		nn.Mode = syscall.S_IFREG
		switch how := r.uint32(); how {
		case 0, 1: // UNCHECKED, GUARDED
			st = decodeSattr(r)
			guarded = how == 1
		case 2: // EXCLUSIVE
			verf = r.fixed(8)
		default:
			r.fail("createmode3")
		}
	case 9: // MKDIR
		nn.Mode = syscall.S_IFDIR
		st = decodeSattr(r)
	case 10: // SYMLINK
		nn.Mode = syscall.S_IFLNK
		st = decodeSattr(r)
		nn.Target = r.string(maxName)
	case 11: // MKNOD
		switch t := r.uint32(); t {
		case 3, 4: // BLK, CHR
			st = decodeSattr(r)
			major, minor := r.uint32(), r.uint32()
			nn.Rdev = minor&0xff | major<<8 | (minor&^0xff)<<12
			nn.Mode = map[uint32]uint32{3: syscall.S_IFBLK, 4: syscall.S_IFCHR}[t]
		case 6, 7: // SOCK, FIFO
			st = decodeSattr(r)
			nn.Mode = map[uint32]uint32{6: syscall.S_IFSOCK, 7: syscall.S_IFIFO}[t]
		default:
			if r.err != nil {
				break
			}
			if r.done() != nil {
				return garbage(c)
			}
			w := s.reply(c, nfs3ErrBadType, 2*fattr3Size)
			s.wcc(w, nil, nil)
			return w.b
		}
	}
	if r.done() != nil {
		return garbage(c)
	}
	pre, err := s.dirFor(ctx, h, &c.cred)
	perm := uint32(0o644)
	switch {
	case nn.Mode == syscall.S_IFDIR:
		perm = 0o755
	case nn.Mode == syscall.S_IFLNK:
		perm = 0o777
	case verf != nil:
		perm = 0o600
	}
	if st.in.SetMode {
		perm = st.in.Mode
		st.in.SetMode = false
	}
	nn.Mode |= perm
	// The caller owns what it creates; root may give it away at once.
	if st.in.SetUid && c.cred.uid == 0 {
		nn.Uid, st.in.SetUid = st.in.Uid, false
	}
	if st.in.SetGid && (c.cred.uid == 0 || st.in.Gid == c.cred.gid || containsGid(c.cred.gids, st.in.Gid)) {
		nn.Gid, st.in.SetGid = st.in.Gid, false
	}
	nn.Exclusive = guarded || verf != nil
	if verf != nil {
		nn.Atime, nn.Mtime = verfTimes(verf)
	}
	var a fs.Attr
	if err == nil {
		var created bool
		a, created, err = s.ns.Create(ctx, pre.Ino, name, nn)
		if errors.Is(err, fs.ErrExist) && verf != nil {
			// A retransmitted exclusive create: the same verifier
			// finds the file it made.
			if e, lerr := s.ns.Lookup(ctx, pre.Ino, name); lerr == nil && e.IsRegular() {
				at, mt := verfTimes(verf)
				if e.Atime == at && e.Mtime == mt {
					a, err = e, nil
				}
			}
		}
		if err == nil && !created && !st.empty() { // UNCHECKED on an existing file
			if err = setattrAllowed(&a, &c.cred, &st); err == nil {
				a, err = s.ns.SetAttr(ctx, a.Ino, st.in)
			}
		} else if err == nil && created && !st.empty() {
			a, err = s.ns.SetAttr(ctx, a.Ino, st.in)
		}
		if err == nil {
			err = s.ns.SyncMeta()
		}
		s.changedEntry(pre.Ino, name)
	}
	post, perr := s.ns.GetAttr(ctx, pre.Ino)
	w := s.reply(c, status(err), 4*fattr3Size+64)
	if err == nil {
		w.bool(true)
		w.opaque(s.handle(a.Ino, a.Gen))
		s.postOp(w, &a)
	}
	s.wcc(w, known(pre), attrOrNil(post, perr))
	return w.b
}

// remove serves REMOVE and RMDIR.
func (s *Server) remove(ctx context.Context, c *call) []byte {
	r := &c.args
	h := s.fh(r)
	name := r.string(maxName)
	if r.done() != nil {
		return garbage(c)
	}
	pre, err := s.dirFor(ctx, h, &c.cred)
	if err == nil {
		if c.proc == 12 {
			gone, lerr := s.ns.Lookup(ctx, pre.Ino, name)
			if err = s.ns.Unlink(ctx, pre.Ino, name); err == nil && lerr == nil && gone.Nlink > 1 {
				s.cfg.Notify.InvalidateInode(gone.Ino, -1, 0) // its other names: one link fewer
			}
		} else {
			err = s.ns.Rmdir(ctx, pre.Ino, name)
		}
		if err == nil {
			err = s.ns.SyncMeta()
		}
		s.changedEntry(pre.Ino, name)
	}
	post, perr := s.ns.GetAttr(ctx, pre.Ino)
	w := s.reply(c, status(err), 2*fattr3Size)
	s.wcc(w, known(pre), attrOrNil(post, perr))
	return w.b
}

func (s *Server) rename(ctx context.Context, c *call) []byte {
	r := &c.args
	h1 := s.fh(r)
	n1 := r.string(maxName)
	h2 := s.fh(r)
	n2 := r.string(maxName)
	if r.done() != nil {
		return garbage(c)
	}
	pre1, err := s.dirFor(ctx, h1, &c.cred)
	var pre2 fs.Attr
	if err == nil {
		pre2, err = s.dirFor(ctx, h2, &c.cred)
	}
	if err == nil && !bytes.Equal(h1[4:12], h2[4:12]) {
		err = fs.ErrInvalid
	}
	if err == nil {
		err = s.ns.Rename(ctx, pre1.Ino, n1, pre2.Ino, n2, 0)
		if err == nil {
			err = s.ns.SyncMeta()
		}
		s.changedEntry(pre1.Ino, n1)
		s.changedEntry(pre2.Ino, n2)
	}
	post1, err1 := s.ns.GetAttr(ctx, pre1.Ino)
	post2, err2 := s.ns.GetAttr(ctx, pre2.Ino)
	w := s.reply(c, status(err), 4*fattr3Size)
	s.wcc(w, known(pre1), attrOrNil(post1, err1))
	s.wcc(w, known(pre2), attrOrNil(post2, err2))
	return w.b
}

// changedEntry tells the other view that dir/name changed.
func (s *Server) changedEntry(dir uint64, name string) {
	s.cfg.Notify.InvalidateEntry(dir, name)
	s.cfg.Notify.InvalidateInode(dir, -1, 0)
}

// fsinfo serves FSSTAT, FSINFO and PATHCONF.
func (s *Server) fsinfo(ctx context.Context, c *call) []byte {
	h := s.fh(&c.args)
	if c.args.done() != nil {
		return garbage(c)
	}
	a, err := s.inode(ctx, h)
	var st fs.StatFS
	if err == nil && c.proc == 18 {
		st, err = s.ns.StatFS(ctx)
	}
	w := s.reply(c, status(err), fattr3Size+64)
	s.postOp(w, known(a))
	if err != nil {
		return w.b
	}
	switch c.proc {
	case 18: // FSSTAT
		w.uint64(uint64(st.TotalBytes))
		w.uint64(uint64(st.FreeBytes))
		w.uint64(uint64(st.FreeBytes))
		const files = 1 << 40 // inode numbers are never short
		w.uint64(files)
		w.uint64(files - st.Inodes)
		w.uint64(files - st.Inodes)
		w.uint32(0) // invarsec
	case 19: // FSINFO
		w.uint32(maxIO) // rtmax
		w.uint32(maxIO) // rtpref
		w.uint32(4096)  // rtmult
		w.uint32(maxIO) // wtmax
		w.uint32(maxIO) // wtpref
		w.uint32(4096)  // wtmult
		w.uint32(64 << 10)
		w.uint64(uint64(s.ns.MaxFileSize()))
		w.uint32(0) // time_delta: 1 ns
		w.uint32(1)
		const homogeneous, canSetTime, symlink, link = 0x8, 0x10, 0x2, 0x1
		w.uint32(homogeneous | canSetTime | symlink | link)
	case 20: // PATHCONF
		w.uint32(fs.MaxLinks) // linkmax
		w.uint32(255)         // name_max
		w.bool(true)          // no_trunc
		w.bool(true)          // chown_restricted
		w.bool(false)         // case_insensitive
		w.bool(true)          // case_preserving
	}
	return w.b
}
