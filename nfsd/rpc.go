package nfsd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
)

// ONC RPC (RFC 5531) over TCP with record marking, and over UDP (one call
// per datagram).

const (
	msgCall  = 0
	msgReply = 1

	replyAccepted = 0
	replyDenied   = 1

	acceptSuccess      = 0
	acceptProgUnavail  = 1
	acceptProgMismatch = 2
	acceptProcUnavail  = 3
	acceptGarbageArgs  = 4
	acceptSystemErr    = 5

	rejectRPCMismatch = 0
	rejectAuthError   = 1

	authBadCred = 1
	authTooWeak = 5

	authNone = 0
	authSys  = 1

	lastFragment = 1 << 31
)

// maxRecord bounds one call: a 1 MiB WRITE and its headers.
const maxRecord = 1<<20 + 64<<10

// Buffers of large calls (WRITE) and replies (READ) are reused: a fresh
// megabyte per call costs more in allocation and clearing than the call.
const (
	smallRecord = 64 << 10
	bigCap      = maxRecord + 4<<10
)

var bigBufs = sync.Pool{New: func() any { return make([]byte, 0, bigCap) }}

func getBig() []byte { return bigBufs.Get().([]byte)[:0] }

// putBig takes back a buffer from getBig; others are left to the GC.
func putBig(b []byte) {
	if cap(b) == bigCap {
		bigBufs.Put(b[:0]) //nolint:staticcheck // a slice header is small
	}
}

var errRecordTooBig = errors.New("nfsd: RPC record too large")

// readRecord reads one record of at most max bytes, joining its
// fragments. Lengths are checked before anything is allocated, and
// charge (when not nil) is given each fragment's size before it is read,
// so that it can hold budget for it or refuse.
func readRecord(r io.Reader, max int, charge func(n int) error) ([]byte, error) {
	var rec []byte
	var hdr [4]byte
	for frags := 0; ; frags++ {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			if len(rec) > 0 || frags > 0 {
				return nil, unexpected(err)
			}
			return nil, err
		}
		h := binary.BigEndian.Uint32(hdr[:])
		n := int(h &^ lastFragment)
		if len(rec)+n > max || frags > 1024 {
			return nil, fmt.Errorf("%w: more than %d bytes or 1024 fragments", errRecordTooBig, max)
		}
		if charge != nil {
			if err := charge(n); err != nil {
				return nil, err
			}
		}
		if rec == nil && n > smallRecord {
			rec = getBig()
		} else if rec == nil {
			rec = make([]byte, 0, n)
		}
		start := len(rec)
		if start+n <= cap(rec) {
			rec = rec[:start+n] // no clearing: ReadFull fills it, and a stalled sender's pages stay untouched
		} else {
			rec = append(rec, make([]byte, n)...)
		}
		if _, err := io.ReadFull(r, rec[start:]); err != nil {
			return nil, unexpected(err)
		}
		if h&lastFragment != 0 {
			return rec, nil
		}
	}
}

// unexpected is a record cut short: a deadline says so, else EOF.
func unexpected(err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return err
	}
	return io.ErrUnexpectedEOF
}

// cred is who sent a call (AUTH_SYS), after squashing.
type cred struct {
	uid, gid uint32
	gids     []uint32
	sys      bool // AUTH_SYS; else AUTH_NONE (the anonymous user)
	ro       bool // the export is read-only to this caller
}

const nobody = 65534

// call is one decoded RPC call.
type call struct {
	xid, prog, vers, proc uint32
	cred                  cred
	args                  reader
	peer                  *peer
	charge                *charge // nil: no budget to hold (UDP, tests)
	tcp                   bool
}

// parseCall decodes a call header. A record that is not a call is an
// error (the connection is dropped); a bad credential is a denied reply.
func parseCall(rec []byte) (c call, deny []byte, err error) {
	r := reader{b: rec}
	c.xid = r.uint32()
	if r.uint32() != msgCall || r.err != nil {
		return c, nil, fmt.Errorf("%w: not an RPC call", errGarbage)
	}
	if v := r.uint32(); v != 2 {
		w := replyHeader(c.xid)
		w.uint32(replyDenied)
		w.uint32(rejectRPCMismatch)
		w.uint32(2)
		w.uint32(2)
		return c, w.b, nil
	}
	c.prog, c.vers, c.proc = r.uint32(), r.uint32(), r.uint32()
	flavor := r.uint32()
	body := r.opaque(400)
	r.uint32() // verifier flavor: ignored
	r.opaque(400)
	if r.err != nil {
		return c, nil, r.err
	}
	c.cred = cred{uid: nobody, gid: nobody}
	switch flavor {
	case authNone:
	case authSys:
		a := reader{b: body}
		a.uint32()    // stamp
		a.string(255) // machine name
		c.cred.uid, c.cred.gid = a.uint32(), a.uint32()
		n := a.uint32()
		if n > 16 {
			a.fail("more than 16 groups")
		}
		for i := uint32(0); i < n && a.err == nil; i++ {
			c.cred.gids = append(c.cred.gids, a.uint32())
		}
		if a.done() != nil {
			return c, denyAuth(c.xid, authBadCred), nil
		}
		c.cred.sys = true
	default:
		return c, denyAuth(c.xid, authTooWeak), nil
	}
	c.args = r
	return c, nil, nil
}

func denyAuth(xid, stat uint32) []byte {
	w := replyHeader(xid)
	w.uint32(replyDenied)
	w.uint32(rejectAuthError)
	w.uint32(stat)
	return w.b
}

// replyHeader starts a reply: room for the record mark, xid, REPLY.
func replyHeader(xid uint32) *writer {
	w := &writer{b: make([]byte, 4, 256)}
	w.uint32(xid)
	w.uint32(msgReply)
	return w
}

// accepted starts an accepted reply with status stat and room for size
// more bytes.
func accepted(xid, stat uint32, size int) *writer {
	var w *writer
	if size > smallRecord {
		w = &writer{b: getBig()[:4]}
	} else {
		w = &writer{b: make([]byte, 4, 64+size)}
	}
	w.uint32(xid)
	w.uint32(msgReply)
	w.uint32(replyAccepted)
	w.uint32(authNone) // verifier
	w.uint32(0)
	w.uint32(stat)
	return w
}

func progMismatch(xid, low, high uint32) []byte {
	w := accepted(xid, acceptProgMismatch, 8)
	w.uint32(low)
	w.uint32(high)
	return w.b
}

// frame fills in the record mark of a reply built by replyHeader or
// accepted: one last fragment.
func frame(b []byte) []byte {
	binary.BigEndian.PutUint32(b, uint32(len(b)-4)|lastFragment)
	return b
}
