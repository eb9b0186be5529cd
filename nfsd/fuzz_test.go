package nfsd

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// Record marking never returns more than the limit, whatever the lengths
// claim.
func FuzzReadRecord(f *testing.F) {
	f.Add([]byte{0x80, 0, 0, 4, 1, 2, 3, 4})
	f.Add([]byte{0, 0, 0, 2, 1, 2, 0x80, 0, 0, 2, 3, 4})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		rec, err := readRecord(bytes.NewReader(b), 1024, nil)
		if err == nil && len(rec) > 1024 {
			t.Fatalf("record of %d bytes over a 1024-byte limit", len(rec))
		}
	})
}

// Any record given to the server is answered or refused, never a panic:
// the decoders of every program and procedure, against a live namespace.
func FuzzServeCall(f *testing.F) {
	e := newEnv(f, Config{})
	root := e.srv.handle(1, 1)
	add := func(prog, vers, proc uint32, args ...any) {
		w := &writer{}
		for _, a := range args {
			switch v := a.(type) {
			case uint32:
				w.uint32(v)
			case uint64:
				w.uint64(v)
			case string:
				w.string(v)
			case []byte:
				w.opaque(v)
			}
		}
		f.Add(encodeCall(1, prog, vers, proc, 0, 0, w.b).b[4:])
	}
	add(progPortmap, 2, 3, uint32(progMount), uint32(3), uint32(ipprotoTCP), uint32(0))
	add(progMount, 3, 1, "/vp")
	add(progMount, 3, 5)
	add(progNFS, 3, 1, root)
	add(progNFS, 3, 3, root, "x")
	add(progNFS, 3, 8, root, "f.raw", uint32(1), uint32(1), uint32(0o644), uint32(0), uint32(0), uint32(1), uint64(4096), uint32(0), uint32(0))
	add(progNFS, 3, 7, root, uint64(0), uint32(4), uint32(2), []byte("data"))
	add(progNFS, 3, 6, root, uint64(0), uint32(4096))
	add(progNFS, 3, 17, root, uint64(0), uint64(0), uint32(4096), uint32(8192))
	add(progNFS, 3, 14, root, "a", root, "b")
	add(progNFS, 3, 2, root, uint32(1), uint32(0o700), uint32(0), uint32(0), uint32(0), uint32(2), uint32(1), uint32(2), uint32(0))
	add(progNFS, 3, 11, root, "fifo", uint32(7), uint32(0), uint32(0), uint32(0), uint32(0), uint32(0), uint32(0))
	f.Fuzz(func(t *testing.T, rec []byte) {
		reply, err := e.srv.serveCall(rec, &peer{addr: "127.0.0.1:1", rule: &e.srv.rules[0], secure: true}, true, nil)
		if err == nil && len(reply) >= 12 && binary.BigEndian.Uint32(reply[8:]) != msgReply {
			t.Fatalf("reply is not a REPLY: %x", reply[:12])
		}
	})
}
