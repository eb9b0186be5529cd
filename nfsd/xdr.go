package nfsd

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// XDR (RFC 4506) is written here rather than taken from a library: the
// reflection-based Go XDR packages allocate per field and cannot bound
// the lengths a hostile client sends, and NFS needs only these few types.

// errGarbage is an undecodable call: the reply is GARBAGE_ARGS.
var errGarbage = errors.New("nfsd: undecodable arguments")

// reader decodes XDR from one record. The first error sticks: every later
// read returns zero values, and err says what was wrong.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s at %d bytes left", errGarbage, what, len(r.b))
	}
	r.b = nil
}

func (r *reader) uint32() uint32 {
	if len(r.b) < 4 {
		r.fail("short uint32")
		return 0
	}
	v := binary.BigEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *reader) uint64() uint64 {
	if len(r.b) < 8 {
		r.fail("short uint64")
		return 0
	}
	v := binary.BigEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func (r *reader) bool() bool {
	switch r.uint32() {
	case 0:
		return false
	case 1:
		return true
	}
	r.fail("bool not 0 or 1")
	return false
}

func pad4(n int) int { return (4 - n&3) & 3 }

// fixed returns n bytes (and skips their padding); the slice aliases the
// record.
func (r *reader) fixed(n int) []byte {
	if n < 0 || len(r.b) < n+pad4(n) {
		r.fail(fmt.Sprintf("short opaque of %d bytes", n))
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n+pad4(n):]
	return v
}

// opaque returns a variable-length opaque of at most max bytes.
func (r *reader) opaque(max int) []byte {
	n := r.uint32()
	if r.err != nil {
		return nil
	}
	if n > uint32(max) {
		r.fail(fmt.Sprintf("opaque of %d bytes (limit %d)", n, max))
		return nil
	}
	return r.fixed(int(n))
}

func (r *reader) string(max int) string { return string(r.opaque(max)) }

// done fails when bytes are left over: a call must be exactly its args.
func (r *reader) done() error {
	if r.err == nil && len(r.b) != 0 {
		r.fail(fmt.Sprintf("%d trailing bytes", len(r.b)))
	}
	return r.err
}

// writer encodes XDR by appending.
type writer struct{ b []byte }

func (w *writer) uint32(v uint32) { w.b = binary.BigEndian.AppendUint32(w.b, v) }
func (w *writer) uint64(v uint64) { w.b = binary.BigEndian.AppendUint64(w.b, v) }

func (w *writer) bool(v bool) {
	if v {
		w.uint32(1)
	} else {
		w.uint32(0)
	}
}

func (w *writer) fixed(p []byte) {
	w.b = append(w.b, p...)
	w.b = append(w.b, make([]byte, pad4(len(p)))...)
}

func (w *writer) opaque(p []byte) {
	w.uint32(uint32(len(p)))
	w.fixed(p)
}

func (w *writer) string(s string) {
	w.uint32(uint32(len(s)))
	w.b = append(w.b, s...)
	w.b = append(w.b, make([]byte, pad4(len(s)))...)
}
