package objstore

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
)

// The framed form is the same bytes as an EC fragment of a 1+0 stripe, read
// in pieces of any size; every range unframes to the object's bytes, and a
// flipped bit is found.
func TestFramer(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	for _, size := range []int{0, 1, 4095, 4096, 4097, 3*4096 + 5, 100_000} {
		data := randBytes(r, size)
		f := NewFramer(bytes.NewReader(data), int64(size))
		if f.Size() != FramedSize(int64(size)) {
			t.Fatalf("size %d: framed %d, want %d", size, f.Size(), FramedSize(int64(size)))
		}
		// read it in odd pieces
		var framed []byte
		for off := int64(0); ; {
			p := make([]byte, 1+r.IntN(9000))
			n, err := f.ReadAt(p, off)
			framed = append(framed, p[:n]...)
			off += int64(n)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		h := frameHeader(int64(size), 0)
		want := make([]byte, fileSize(int64(size)))
		encodeFragment(want, &h, data)
		if len(framed) != len(want) || !bytes.Equal(framed[FrameHeaderSize:], want[FrameHeaderSize:]) {
			t.Fatalf("size %d: framed form differs from the fragment format", size)
		}
		if got, err := ParseFrameHeader(framed); err != nil || got != int64(size) {
			t.Fatalf("size %d: header says %d, %v", size, got, err)
		}
		for range 100 {
			if size == 0 {
				break
			}
			off := r.Int64N(int64(size))
			n := r.IntN(int(int64(size)-off)) + 1
			ro, rl := FrameSpan(int64(size), off, n)
			dst := make([]byte, n)
			if err := Unframe(dst, framed[ro:ro+rl], int64(size), off); err != nil || !bytes.Equal(dst, data[off:off+int64(n)]) {
				t.Fatalf("size %d: range [%d,+%d): %v", size, off, n, err)
			}
			bad := bytes.Clone(framed[ro : ro+rl])
			bad[r.IntN(len(bad))] ^= 1 << r.IntN(8)
			if err := Unframe(dst, bad, int64(size), off); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("size %d: a flipped bit in [%d,+%d) read as %v", size, off, n, err)
			}
			if err := Unframe(dst, framed[ro:ro+rl-1], int64(size), off); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("size %d: a truncated range read as %v", size, err)
			}
		}
	}
}

func FuzzParseFrameHeader(f *testing.F) {
	var b [FrameHeaderSize]byte
	h := frameHeader(12345, 7)
	h.encode(b[:])
	f.Add(b[:])
	f.Fuzz(func(t *testing.T, b []byte) {
		size, err := ParseFrameHeader(b)
		if err == nil && size < 0 {
			t.Fatalf("negative size %d", size)
		}
	})
}
