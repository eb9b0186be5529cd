package objstore

import (
	"encoding/binary"
	"fmt"
)

const (
	headerSize   = 64
	blockSize    = 4096
	blockCRCSize = 4
	blockStride  = blockSize + blockCRCSize
	fragMagic    = "VPFRAG1\x00"
)

// fragHeader is the fixed header at the start of every fragment file.
type fragHeader struct {
	ObjSize      uint64 // the whole object's length
	FragmentSize uint64 // the preset's fragment size: a full stripe holds K*FragmentSize bytes
	FragLen      uint64 // this stripe's fragment length (shorter in the last stripe)
	Nonce        uint64 // random per Put: fragments of one object version share it
	Stripe       uint32
	Stripes      uint32
	K, M, Index  uint8
}

func (h *fragHeader) encode(b []byte) {
	_ = b[headerSize-1]
	copy(b[0:8], fragMagic)
	binary.LittleEndian.PutUint64(b[8:], h.ObjSize)
	binary.LittleEndian.PutUint64(b[16:], h.FragmentSize)
	binary.LittleEndian.PutUint64(b[24:], h.FragLen)
	binary.LittleEndian.PutUint64(b[32:], h.Nonce)
	binary.LittleEndian.PutUint32(b[40:], h.Stripe)
	binary.LittleEndian.PutUint32(b[44:], h.Stripes)
	b[48], b[49], b[50] = h.K, h.M, h.Index
	for i := 51; i < 60; i++ {
		b[i] = 0
	}
	binary.LittleEndian.PutUint32(b[60:], crc(b[:60]))
}

// decodeFragHeader parses and checks a header; it never trusts the bytes.
func decodeFragHeader(b []byte) (fragHeader, error) {
	var h fragHeader
	if len(b) < headerSize {
		return h, fmt.Errorf("%w: fragment header short (%d bytes)", ErrCorrupt, len(b))
	}
	if string(b[0:8]) != fragMagic {
		return h, fmt.Errorf("%w: fragment header magic", ErrCorrupt)
	}
	if binary.LittleEndian.Uint32(b[60:]) != crc(b[:60]) {
		return h, fmt.Errorf("%w: fragment header checksum", ErrCorrupt)
	}
	h.ObjSize = binary.LittleEndian.Uint64(b[8:])
	h.FragmentSize = binary.LittleEndian.Uint64(b[16:])
	h.FragLen = binary.LittleEndian.Uint64(b[24:])
	h.Nonce = binary.LittleEndian.Uint64(b[32:])
	h.Stripe = binary.LittleEndian.Uint32(b[40:])
	h.Stripes = binary.LittleEndian.Uint32(b[44:])
	h.K, h.M, h.Index = b[48], b[49], b[50]
	if h.K == 0 || int(h.K)+int(h.M) > 255 || h.Index >= h.K+h.M || h.FragmentSize == 0 ||
		h.FragLen > h.FragmentSize || h.Stripe >= h.Stripes && h.Stripes > 0 {
		return h, fmt.Errorf("%w: fragment header geometry k=%d m=%d index=%d stripe=%d/%d fraglen=%d",
			ErrCorrupt, h.K, h.M, h.Index, h.Stripe, h.Stripes, h.FragLen)
	}
	if g := newGeometry(int64(h.ObjSize), int(h.K), int(h.M), int64(h.FragmentSize)); uint32(g.stripes) != h.Stripes ||
		(h.Stripes > 0 && uint64(g.fragLen(int(h.Stripe))) != h.FragLen) {
		return h, fmt.Errorf("%w: fragment header inconsistent with object size %d", ErrCorrupt, h.ObjSize)
	}
	return h, nil
}

// geometry maps object offsets to stripes and fragments.
type geometry struct {
	size         int64
	k, m         int
	fragmentSize int64
	stripes      int
	nonce        uint64
	// at is where each fragment is, by s*(k+m)+i (see locations)
	at []uint16
}

func newGeometry(size int64, k, m int, fragmentSize int64) geometry {
	g := geometry{size: size, k: k, m: m, fragmentSize: fragmentSize}
	stripeBytes := int64(k) * fragmentSize
	g.stripes = max(1, int((size+stripeBytes-1)/stripeBytes)) // an empty object still has stripe 0
	return g
}

func (g geometry) stripeBytes() int64 { return int64(g.k) * g.fragmentSize }

// stripeLen is the number of object bytes stripe s holds.
func (g geometry) stripeLen(s int) int64 {
	return min(g.stripeBytes(), g.size-int64(s)*g.stripeBytes())
}

// fragLen is the length of every fragment of stripe s.
func (g geometry) fragLen(s int) int64 {
	return (g.stripeLen(s) + int64(g.k) - 1) / int64(g.k)
}

// fileSize is the length of a fragment file holding n data bytes.
func fileSize(n int64) int64 {
	blocks := (n + blockSize - 1) / blockSize
	return headerSize + n + blocks*blockCRCSize
}

// encodeFragment lays out header and data with per-block CRCs into dst,
// which must be fileSize(len(data)) long.
func encodeFragment(dst []byte, h *fragHeader, data []byte) {
	h.encode(dst)
	w := headerSize
	for off := 0; off < len(data); off += blockSize {
		end := min(off+blockSize, len(data))
		n := copy(dst[w:], data[off:end])
		binary.LittleEndian.PutUint32(dst[w+n:], crc(data[off:end]))
		w += n + blockCRCSize
	}
}

// decodeBlocks checks the CRC-framed blocks in raw (starting at a block
// boundary) and copies their data bytes to dst. dataLen is how many data
// bytes raw holds.
func decodeBlocks(dst, raw []byte, dataLen int) error {
	r := 0
	for w := 0; w < dataLen; w += blockSize {
		n := min(blockSize, dataLen-w)
		if r+n+blockCRCSize > len(raw) {
			return fmt.Errorf("%w: fragment truncated", ErrCorrupt)
		}
		blk := raw[r : r+n]
		if binary.LittleEndian.Uint32(raw[r+n:]) != crc(blk) {
			return fmt.Errorf("%w: fragment block %d", ErrCorrupt, w/blockSize)
		}
		copy(dst[w:], blk)
		r += n + blockCRCSize
	}
	return nil
}
