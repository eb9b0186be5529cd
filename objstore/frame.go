package objstore

import (
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
)

// A framed object is how a store that keeps each object whole (S3) lays
// it out: the EC fragment format of a 1+0 stripe holding the whole
// object, so that it carries the same checksums as an EC fragment.
//
//	header (64 bytes: magic, object size, nonce, CRC) | block 0 + CRC | block 1 + CRC | ...
//
// A ranged read fetches only the blocks that cover the range (FrameSpan)
// and checks each one (Unframe); the header, read once per object, gives
// the size, so a truncated object is found, never read as a short one.

// maxFramedObject is the largest object a framed store keeps (S3's own
// limit is 5 TiB).
const maxFramedObject = 1 << 44

// FramedSize is the length of the framed form of an n-byte object.
func FramedSize(n int64) int64 { return fileSize(n) }

// FrameHeaderSize is the length of a framed object's header.
const FrameHeaderSize = headerSize

func frameHeader(size int64, nonce uint64) fragHeader {
	return fragHeader{ObjSize: uint64(size), FragmentSize: uint64(max(blockSize, (size+blockSize-1)/blockSize*blockSize)),
		FragLen: uint64(size), Nonce: nonce, Stripes: 1, K: 1}
}

// ParseFrameHeader checks a framed object's header and returns the
// object's size.
func ParseFrameHeader(b []byte) (int64, error) {
	h, err := decodeFragHeader(b)
	if err != nil {
		return 0, err
	}
	if h.K != 1 || h.M != 0 || h.Stripes != 1 || h.ObjSize > maxFramedObject {
		return 0, fmt.Errorf("%w: not a framed object (k=%d m=%d stripes=%d)", ErrCorrupt, h.K, h.M, h.Stripes)
	}
	return int64(h.ObjSize), nil
}

// FrameSpan is where in the framed form the blocks holding object bytes
// [off, off+n) lie: a read of [rawOff, rawOff+rawLen) fetches them whole,
// with their CRCs.
func FrameSpan(size, off int64, n int) (rawOff, rawLen int64) {
	if n == 0 {
		return headerSize, 0
	}
	b0, b1 := off/blockSize, (off+int64(n)-1)/blockSize
	end := min((b1+1)*blockSize, size)
	return headerSize + b0*blockStride, end - b0*blockSize + (b1-b0+1)*blockCRCSize
}

// Unframe checks the blocks in raw, fetched from FrameSpan(size, off,
// len(dst)), and copies object bytes [off, off+len(dst)) to dst.
func Unframe(dst, raw []byte, size, off int64) error {
	if len(dst) == 0 {
		return nil
	}
	b0 := off / blockSize
	dataLen := min((off+int64(len(dst))-1)/blockSize*blockSize+blockSize, size) - b0*blockSize
	buf := getBlockBuf(int(dataLen))
	defer putBlockBuf(buf)
	if err := decodeBlocks(buf, raw, int(dataLen)); err != nil {
		return err
	}
	copy(dst, buf[off-b0*blockSize:])
	return nil
}

var blockBufs sync.Pool

func getBlockBuf(n int) []byte {
	if b, ok := blockBufs.Get().(*[]byte); ok && cap(*b) >= n {
		return (*b)[:n]
	}
	return make([]byte, n)
}

func putBlockBuf(b []byte) { blockBufs.Put(&b) }

// Framer reads an object's framed form from the object (an io.ReaderAt):
// the header, then each block followed by its CRC, computed as it goes.
// ReadAt keeps no state, so concurrent readers (a multipart upload's
// parts) may share it.
type Framer struct {
	src  io.ReaderAt
	size int64
	hdr  [headerSize]byte
}

// NewFramer frames size bytes of src, with a new random nonce.
func NewFramer(src io.ReaderAt, size int64) *Framer {
	f := &Framer{src: src, size: size}
	h := frameHeader(size, rand.Uint64())
	h.encode(f.hdr[:])
	return f
}

// Size is the framed form's length.
func (f *Framer) Size() int64 { return FramedSize(f.size) }

// ReadAt fills p with the framed form from off.
func (f *Framer) ReadAt(p []byte, off int64) (int, error) {
	total := f.Size()
	if off < 0 {
		return 0, fmt.Errorf("objstore: framer: negative offset %d", off)
	}
	n := 0
	if off < headerSize && len(p) > 0 {
		n = copy(p, f.hdr[off:])
		off += int64(n)
	}
	if n < len(p) && off < total {
		// the blocks p touches, read from the object at once
		b0 := (off - headerSize) / blockStride
		b1 := min((off-headerSize+int64(len(p)-n)-1)/blockStride, (f.size-1)/blockSize)
		dataOff, dataEnd := b0*blockSize, min((b1+1)*blockSize, f.size)
		data := getBlockBuf(int(dataEnd - dataOff))
		defer putBlockBuf(data)
		if _, err := f.src.ReadAt(data, dataOff); err != nil && !(err == io.EOF && dataOff+int64(len(data)) == f.size) {
			return n, fmt.Errorf("objstore: framer: read object at %d: %w", dataOff, err)
		}
		var crcb [blockCRCSize]byte
		for b := b0; b <= b1 && n < len(p); b++ {
			blk := data[(b-b0)*blockSize : min((b-b0+1)*blockSize, int64(len(data)))]
			binary.LittleEndian.PutUint32(crcb[:], crc(blk))
			start := headerSize + b*blockStride // the block's place in the framed form
			for _, piece := range [][]byte{blk, crcb[:]} {
				if in := off - start; in >= 0 && in < int64(len(piece)) && n < len(p) {
					c := copy(p[n:], piece[in:])
					n += c
					off += int64(c)
				}
				start += int64(len(piece))
			}
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
