package nfsd

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"
)

// Client is a small NFSv3 client over one TCP connection, for tests and
// tools: calls may be issued concurrently and are matched by XID. It
// speaks to the port that serves both MOUNT and NFS.
type Client struct {
	conn     net.Conn
	uid, gid uint32
	wmu      sync.Mutex
	mu       sync.Mutex
	xid      uint32
	pending  map[uint32]chan []byte
	err      error
}

// Status is an NFS (or MOUNT) status other than OK.
type Status uint32

var statusNames = map[Status]string{1: "PERM", 2: "NOENT", 5: "IO", 6: "NXIO", 13: "ACCES", 17: "EXIST", 18: "XDEV",
	20: "NOTDIR", 21: "ISDIR", 22: "INVAL", 27: "FBIG", 28: "NOSPC", 30: "ROFS", 31: "MLINK", 63: "NAMETOOLONG",
	66: "NOTEMPTY", 70: "STALE", 10001: "BADHANDLE", 10002: "NOT_SYNC", 10003: "BAD_COOKIE", 10004: "NOTSUPP",
	10005: "TOOSMALL", 10006: "SERVERFAULT", 10007: "BADTYPE", 10008: "JUKEBOX"}

func (s Status) Error() string {
	if n, ok := statusNames[s]; ok {
		return "NFS3ERR_" + n
	}
	return fmt.Sprintf("NFS status %d", uint32(s))
}

// AuthError is a call denied for its credentials (RFC 5531's auth_stat:
// 1 bad credential, 5 too weak).
type AuthError uint32

func (e AuthError) Error() string {
	return fmt.Sprintf("nfs client: call denied: auth_stat %d", uint32(e))
}

// Dial connects to addr (host:port) as uid/gid (AUTH_SYS), from a
// privileged port when run as root (as root's NFS clients do).
func Dial(addr string, uid, gid uint32) (*Client, error) {
	dial := func(addr string, timeout time.Duration) (net.Conn, error) {
		return net.DialTimeout("tcp", addr, timeout)
	}
	if os.Geteuid() == 0 {
		dial = DialPrivileged
	}
	conn, err := dial(addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	return NewClient(conn, uid, gid), nil
}

// NewClient runs a client over conn.
func NewClient(conn net.Conn, uid, gid uint32) *Client {
	c := &Client{conn: conn, uid: uid, gid: gid, pending: map[uint32]chan []byte{}, xid: uint32(time.Now().UnixNano())}
	go c.readLoop()
	return c
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

func (c *Client) readLoop() {
	br := bufio.NewReader(c.conn)
	for {
		rec, err := readRecord(br, 4<<20, nil)
		if err != nil || len(rec) < 4 {
			c.mu.Lock()
			c.err = fmt.Errorf("nfs client: connection lost: %v", err)
			for x, ch := range c.pending {
				close(ch)
				delete(c.pending, x)
			}
			c.mu.Unlock()
			return
		}
		xid := uint32(rec[0])<<24 | uint32(rec[1])<<16 | uint32(rec[2])<<8 | uint32(rec[3])
		c.mu.Lock()
		ch := c.pending[xid]
		delete(c.pending, xid)
		c.mu.Unlock()
		if ch != nil {
			ch <- rec
		}
	}
}

// rpc makes one RPC call and returns the result body (after the accept
// status), or an error for a denied or unsuccessful call.
func (c *Client) rpc(prog, vers, proc uint32, args []byte) (*reader, error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return nil, c.err
	}
	c.xid++
	xid := c.xid
	ch := make(chan []byte, 1)
	c.pending[xid] = ch
	c.mu.Unlock()
	w := encodeCall(xid, prog, vers, proc, c.uid, c.gid, args)
	c.wmu.Lock()
	_, err := c.conn.Write(frame(w.b))
	c.wmu.Unlock()
	if err != nil {
		return nil, err
	}
	var rec []byte
	select {
	case r, ok := <-ch:
		if !ok {
			return nil, c.err
		}
		rec = r
	case <-time.After(60 * time.Second):
		return nil, fmt.Errorf("nfs client: call %d/%d timed out", prog, proc)
	}
	r := &reader{b: rec[4:]}
	if r.uint32() != msgReply {
		return nil, errors.New("nfs client: not a reply")
	}
	if r.uint32() != replyAccepted {
		if r.uint32() == rejectAuthError {
			return nil, AuthError(r.uint32())
		}
		return nil, errors.New("nfs client: call denied")
	}
	r.uint32()
	r.opaque(400)
	if st := r.uint32(); st != acceptSuccess || r.err != nil {
		return nil, fmt.Errorf("nfs client: accept status %d", st)
	}
	return r, nil
}

// encodeCall builds a call record (with room for the record mark) with
// AUTH_SYS credentials.
func encodeCall(xid, prog, vers, proc, uid, gid uint32, args []byte) *writer {
	w := &writer{b: make([]byte, 4, 128+len(args))}
	w.uint32(xid)
	w.uint32(msgCall)
	w.uint32(2)
	w.uint32(prog)
	w.uint32(vers)
	w.uint32(proc)
	cred := writer{}
	cred.uint32(0)
	cred.string("vpool")
	cred.uint32(uid)
	cred.uint32(gid)
	cred.uint32(0)
	w.uint32(authSys)
	w.opaque(cred.b)
	w.uint32(authNone)
	w.uint32(0)
	w.b = append(w.b, args...)
	return w
}

// Attr is a decoded fattr3.
type Attr struct {
	Type, Mode, Nlink, Uid, Gid uint32
	Size, Used                  uint64
	Fsid, Fileid                uint64
	Atime, Mtime, Ctime         time.Time
}

func decodeFattr(r *reader) Attr {
	var a Attr
	a.Type, a.Mode, a.Nlink, a.Uid, a.Gid = r.uint32(), r.uint32(), r.uint32(), r.uint32(), r.uint32()
	a.Size, a.Used = r.uint64(), r.uint64()
	r.uint64() // rdev
	a.Fsid, a.Fileid = r.uint64(), r.uint64()
	for _, t := range []*time.Time{&a.Atime, &a.Mtime, &a.Ctime} {
		sec, nsec := r.uint32(), r.uint32()
		*t = time.Unix(int64(sec), int64(nsec))
	}
	return a
}

func postOpAttr(r *reader) *Attr {
	if !r.bool() {
		return nil
	}
	a := decodeFattr(r)
	return &a
}

func skipWcc(r *reader) {
	if r.bool() {
		r.uint64()
		r.uint64()
		r.uint64()
	}
	postOpAttr(r)
}

// nfs makes an NFS call; a status other than NFS3_OK is the error.
func (c *Client) nfs(proc uint32, w *writer) (*reader, error) {
	r, err := c.rpc(progNFS, 3, proc, w.b)
	if err != nil {
		return nil, err
	}
	if st := r.uint32(); st != 0 {
		return nil, Status(st)
	}
	return r, nil
}

// Mount returns the root handle of an exported path.
func (c *Client) Mount(path string) ([]byte, error) {
	w := &writer{}
	w.string(path)
	r, err := c.rpc(progMount, 3, 1, w.b)
	if err != nil {
		return nil, err
	}
	if st := r.uint32(); st != 0 {
		return nil, fmt.Errorf("mount %s: MNT3 status %d", path, st)
	}
	h := r.opaque(64)
	return append([]byte(nil), h...), r.err
}

// GetAttr returns a file's attributes.
func (c *Client) GetAttr(fh []byte) (Attr, error) {
	w := &writer{}
	w.opaque(fh)
	r, err := c.nfs(1, w)
	if err != nil {
		return Attr{}, err
	}
	return decodeFattr(r), r.err
}

// Lookup finds name in dir.
func (c *Client) Lookup(dir []byte, name string) ([]byte, Attr, error) {
	w := &writer{}
	w.opaque(dir)
	w.string(name)
	r, err := c.nfs(3, w)
	if err != nil {
		return nil, Attr{}, err
	}
	h := append([]byte(nil), r.opaque(64)...)
	a := postOpAttr(r)
	if a == nil {
		return h, Attr{}, r.err
	}
	return h, *a, r.err
}

// CreateMode is how CREATE treats an existing name.
type CreateMode uint32

const (
	Unchecked CreateMode = 0
	Guarded   CreateMode = 1
	Exclusive CreateMode = 2
)

// Create makes a regular file; verf is the exclusive-create verifier.
func (c *Client) Create(dir []byte, name string, how CreateMode, mode uint32, verf [8]byte) ([]byte, Attr, error) {
	w := &writer{}
	w.opaque(dir)
	w.string(name)
	w.uint32(uint32(how))
	if how == Exclusive {
		w.fixed(verf[:])
	} else {
		setMode(w, mode)
	}
	return c.newObject(8, w)
}

// setMode writes a sattr3 that sets only the mode.
func setMode(w *writer, mode uint32) {
	w.bool(true)
	w.uint32(mode)
	for range 5 { // uid, gid, size, atime, mtime: unchanged
		w.uint32(0)
	}
}

// Mkdir makes a directory.
func (c *Client) Mkdir(dir []byte, name string, mode uint32) ([]byte, Attr, error) {
	w := &writer{}
	w.opaque(dir)
	w.string(name)
	setMode(w, mode)
	return c.newObject(9, w)
}

// Symlink makes a symbolic link.
func (c *Client) Symlink(dir []byte, name, target string) ([]byte, Attr, error) {
	w := &writer{}
	w.opaque(dir)
	w.string(name)
	setMode(w, 0o777)
	w.string(target)
	return c.newObject(10, w)
}

func (c *Client) newObject(proc uint32, w *writer) ([]byte, Attr, error) {
	r, err := c.nfs(proc, w)
	if err != nil {
		return nil, Attr{}, err
	}
	var h []byte
	if r.bool() {
		h = append([]byte(nil), r.opaque(64)...)
	}
	var a Attr
	if pa := postOpAttr(r); pa != nil {
		a = *pa
	}
	skipWcc(r)
	return h, a, r.err
}

// Remove removes a file; Rmdir a directory.
func (c *Client) Remove(dir []byte, name string) error { return c.remove(12, dir, name) }
func (c *Client) Rmdir(dir []byte, name string) error  { return c.remove(13, dir, name) }

func (c *Client) remove(proc uint32, dir []byte, name string) error {
	w := &writer{}
	w.opaque(dir)
	w.string(name)
	_, err := c.nfs(proc, w)
	return err
}

// Rename moves d1/n1 to d2/n2.
func (c *Client) Rename(d1 []byte, n1 string, d2 []byte, n2 string) error {
	w := &writer{}
	w.opaque(d1)
	w.string(n1)
	w.opaque(d2)
	w.string(n2)
	_, err := c.nfs(14, w)
	return err
}

// SetSize truncates or extends a file.
func (c *Client) SetSize(fh []byte, size uint64) (Attr, error) {
	w := &writer{}
	w.opaque(fh)
	w.uint32(0)
	w.uint32(0)
	w.uint32(0)
	w.bool(true)
	w.uint64(size)
	w.uint32(0)
	w.uint32(0)
	w.bool(false) // no guard
	r, err := c.nfs(2, w)
	if err != nil {
		return Attr{}, err
	}
	if r.bool() {
		r.uint64()
		r.uint64()
		r.uint64()
	}
	a := postOpAttr(r)
	if a == nil {
		return Attr{}, errors.New("nfs client: no attributes after SETATTR")
	}
	return *a, r.err
}

// Stability levels of WRITE.
const (
	Unstable = unstable
	DataSync = dataSync
	FileSync = fileSync
)

// Write writes data at off; it returns the stability the server gave and
// its write verifier.
func (c *Client) Write(fh []byte, off uint64, data []byte, stable uint32) (committed uint32, verf [8]byte, err error) {
	w := &writer{b: make([]byte, 0, len(data)+128)}
	w.opaque(fh)
	w.uint64(off)
	w.uint32(uint32(len(data)))
	w.uint32(stable)
	w.opaque(data)
	r, err := c.nfs(7, w)
	if err != nil {
		return 0, verf, err
	}
	skipWcc(r)
	if n := r.uint32(); n != uint32(len(data)) {
		return 0, verf, fmt.Errorf("nfs client: short write: %d of %d bytes", n, len(data))
	}
	committed = r.uint32()
	copy(verf[:], r.fixed(8))
	return committed, verf, r.err
}

// Read reads up to count bytes at off.
func (c *Client) Read(fh []byte, off uint64, count uint32) ([]byte, bool, error) {
	w := &writer{}
	w.opaque(fh)
	w.uint64(off)
	w.uint32(count)
	r, err := c.nfs(6, w)
	if err != nil {
		return nil, false, err
	}
	postOpAttr(r)
	r.uint32()
	eof := r.bool()
	data := append([]byte(nil), r.opaque(maxIO)...)
	return data, eof, r.err
}

// Link makes dir/name another name of the file fh.
func (c *Client) Link(fh, dir []byte, name string) error {
	w := &writer{}
	w.opaque(fh)
	w.opaque(dir)
	w.string(name)
	_, err := c.nfs(15, w)
	return err
}

// Access asks which of the ACCESS3 rights in want the caller has.
func (c *Client) Access(fh []byte, want uint32) (uint32, error) {
	w := &writer{}
	w.opaque(fh)
	w.uint32(want)
	r, err := c.nfs(4, w)
	if err != nil {
		return 0, err
	}
	postOpAttr(r)
	return r.uint32(), r.err
}

// Commit flushes a file and returns the write verifier.
func (c *Client) Commit(fh []byte) ([8]byte, error) {
	var verf [8]byte
	w := &writer{}
	w.opaque(fh)
	w.uint64(0)
	w.uint32(0)
	r, err := c.nfs(21, w)
	if err != nil {
		return verf, err
	}
	skipWcc(r)
	copy(verf[:], r.fixed(8))
	return verf, r.err
}

// DirEntry is one READDIRPLUS entry.
type DirEntry struct {
	Name   string
	Fileid uint64
	Cookie uint64
	Handle []byte
	Attr   *Attr
}

// ReadDirPlus returns one page of a directory after cookie.
func (c *Client) ReadDirPlus(dir []byte, cookie uint64, verf [8]byte, maxcount uint32) ([]DirEntry, [8]byte, bool, error) {
	w := &writer{}
	w.opaque(dir)
	w.uint64(cookie)
	w.fixed(verf[:])
	w.uint32(maxcount)
	w.uint32(maxcount)
	r, err := c.nfs(17, w)
	if err != nil {
		return nil, verf, false, err
	}
	postOpAttr(r)
	copy(verf[:], r.fixed(8))
	var ents []DirEntry
	for r.bool() {
		e := DirEntry{Fileid: r.uint64(), Name: r.string(maxName), Cookie: r.uint64()}
		e.Attr = postOpAttr(r)
		if r.bool() {
			e.Handle = append([]byte(nil), r.opaque(64)...)
		}
		ents = append(ents, e)
	}
	eof := r.bool()
	return ents, verf, eof, r.err
}

// ReadDirAll lists a whole directory with READDIRPLUS pages of maxcount
// bytes.
func (c *Client) ReadDirAll(dir []byte, maxcount uint32) ([]DirEntry, error) {
	var all []DirEntry
	var verf [8]byte
	cookie := uint64(0)
	for {
		ents, v, eof, err := c.ReadDirPlus(dir, cookie, verf, maxcount)
		if err != nil {
			return all, err
		}
		all = append(all, ents...)
		if eof {
			return all, nil
		}
		if len(ents) == 0 {
			return all, errors.New("nfs client: READDIRPLUS made no progress")
		}
		verf, cookie = v, ents[len(ents)-1].Cookie
	}
}

// FSStat returns total and free bytes.
func (c *Client) FSStat(fh []byte) (total, free uint64, err error) {
	w := &writer{}
	w.opaque(fh)
	r, err := c.nfs(18, w)
	if err != nil {
		return 0, 0, err
	}
	postOpAttr(r)
	total, free = r.uint64(), r.uint64()
	return total, free, r.err
}
