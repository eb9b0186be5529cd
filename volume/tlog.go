package volume

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func checksum(p []byte) uint32 { return crc32.Checksum(p, castagnoli) }

// Record types in a TLog.
const (
	recWrite  = 1 // cluster -> (owner, SCO, slot, data CRC)
	recUnmap  = 2 // clusters [cluster, cluster+count) read as zeros
	recResize = 3 // the vDisk's size in bytes becomes Size
	recSeal   = 4 // last record of a sealed TLog: its SCO holds Count slots
)

const (
	recordSize     = 32
	tlogHeaderSize = 64
	tlogMagic      = "VPTLOG1\x00"
)

// record is one TLog entry; see the layout in doc.go.
type record struct {
	Type    uint8
	Owner   uint16 // 0: this vDisk; n: its n-th ancestor (clones)
	SCO     uint32
	Cluster uint64 // recWrite/recUnmap: cluster number; recResize: size in bytes
	Count   uint32 // recWrite: slot in the SCO; recUnmap: clusters; recSeal: slots
	DataCRC uint32
}

func (r *record) encode(b []byte) {
	_ = b[recordSize-1]
	b[0] = r.Type
	b[1] = 0
	binary.LittleEndian.PutUint16(b[2:], r.Owner)
	binary.LittleEndian.PutUint32(b[4:], r.SCO)
	binary.LittleEndian.PutUint64(b[8:], r.Cluster)
	binary.LittleEndian.PutUint32(b[16:], r.Count)
	binary.LittleEndian.PutUint32(b[20:], r.DataCRC)
	binary.LittleEndian.PutUint32(b[24:], 0)
	binary.LittleEndian.PutUint32(b[28:], checksum(b[:28]))
}

// decodeRecord returns ok=false for anything but a well-formed record: a
// hole left by an unfinished write, a torn or corrupt record.
func decodeRecord(b []byte) (r record, ok bool) {
	if len(b) < recordSize || binary.LittleEndian.Uint32(b[28:]) != checksum(b[:28]) {
		return r, false
	}
	r.Type = b[0]
	r.Owner = binary.LittleEndian.Uint16(b[2:])
	r.SCO = binary.LittleEndian.Uint32(b[4:])
	r.Cluster = binary.LittleEndian.Uint64(b[8:])
	r.Count = binary.LittleEndian.Uint32(b[16:])
	r.DataCRC = binary.LittleEndian.Uint32(b[20:])
	if r.Type < recWrite || r.Type > recSeal || b[1] != 0 {
		return r, false
	}
	return r, true
}

// tlogHeader starts every TLog file and object.
type tlogHeader struct {
	VDisk       uint64
	Seq         uint32
	ClusterSize uint32
	SCOSize     uint32 // so that a vDisk can be rebuilt from its TLogs alone
}

func (h *tlogHeader) encode(b []byte) {
	_ = b[tlogHeaderSize-1]
	copy(b, tlogMagic)
	binary.LittleEndian.PutUint64(b[8:], h.VDisk)
	binary.LittleEndian.PutUint32(b[16:], h.Seq)
	binary.LittleEndian.PutUint32(b[20:], h.ClusterSize)
	binary.LittleEndian.PutUint32(b[24:], h.SCOSize)
	clear(b[28:60])
	binary.LittleEndian.PutUint32(b[60:], checksum(b[:60]))
}

func decodeTLogHeader(b []byte) (tlogHeader, error) {
	var h tlogHeader
	if len(b) < tlogHeaderSize || string(b[:8]) != tlogMagic {
		return h, fmt.Errorf("%w: TLog header magic", ErrCorrupt)
	}
	if binary.LittleEndian.Uint32(b[60:]) != checksum(b[:60]) {
		return h, fmt.Errorf("%w: TLog header checksum", ErrCorrupt)
	}
	h.VDisk = binary.LittleEndian.Uint64(b[8:])
	h.Seq = binary.LittleEndian.Uint32(b[16:])
	h.ClusterSize = binary.LittleEndian.Uint32(b[20:])
	h.SCOSize = binary.LittleEndian.Uint32(b[24:])
	return h, nil
}

// parseTLog decodes a TLog image. Invalid records (holes, torn writes) are
// skipped: see "Replay" in doc.go. sealed reports a final seal record.
func parseTLog(b []byte, vdisk uint64, seq uint32) (recs []record, sealed bool, err error) {
	h, err := decodeTLogHeader(b)
	if err != nil {
		return nil, false, err
	}
	if h.VDisk != vdisk || h.Seq != seq {
		return nil, false, fmt.Errorf("%w: TLog header names vDisk %016x TLog %d, want %016x TLog %d",
			ErrCorrupt, h.VDisk, h.Seq, vdisk, seq)
	}
	for off := tlogHeaderSize; off+recordSize <= len(b); off += recordSize {
		r, ok := decodeRecord(b[off:])
		if !ok {
			recs = append(recs, record{}) // keeps record positions: index i is slot i
			continue
		}
		recs = append(recs, r)
		if r.Type == recSeal {
			sealed = true
		}
	}
	return recs, sealed, nil
}
