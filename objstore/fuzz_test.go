package objstore

import (
	"bytes"
	"testing"
)

// FuzzFragment feeds arbitrary bytes to the fragment decoders: they must
// reject or accept, never panic, and accepted blocks must round-trip.
func FuzzFragment(f *testing.F) {
	h := fragHeader{ObjSize: 5000, FragmentSize: 4096, FragLen: 2500, Nonce: 7, Stripe: 0, Stripes: 1, K: 2, M: 1, Index: 0}
	data := bytes.Repeat([]byte("vpool"), 500)
	good := make([]byte, fileSize(int64(len(data))))
	encodeFragment(good, &h, data)
	f.Add(good)
	f.Add(good[:headerSize])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		hdr, err := decodeFragHeader(b)
		if err != nil {
			return
		}
		n := int(min(hdr.FragLen, 1<<20))
		dst := make([]byte, n)
		if len(b) < headerSize {
			t.Fatal("decoded a short header")
		}
		if err := decodeBlocks(dst, b[headerSize:], n); err == nil {
			re := make([]byte, fileSize(int64(n)))
			encodeFragment(re, &hdr, dst)
			if !bytes.Equal(re, b[:len(re)]) {
				t.Fatal("accepted fragment does not re-encode to the same bytes")
			}
		}
	})
}
