package dtl

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// Version is the protocol version a Hello carries.
const Version = 1

// MaxFrame bounds a frame's body (type and payload): a reader never holds
// more than one such frame per connection.
const MaxFrame = 4<<20 + 64<<10

// MaxEntryData bounds the data of one Append: the owner splits larger
// writes.
const MaxEntryData = 4 << 20

// RecordSize is the size of one TLog record, carried as the owner wrote it.
const RecordSize = 32

// Errors; test with errors.Is.
var (
	// ErrFrame: a frame that is not well formed (length, checksum, fields).
	ErrFrame = errors.New("dtl: malformed frame")
	// ErrRefused: the peer refused the session (its reason follows).
	ErrRefused = errors.New("dtl: refused")
	// ErrFenced: a newer owner epoch took the vPool over; this owner may
	// acknowledge nothing more.
	ErrFenced = errors.New("dtl: owner fenced: a newer owner epoch took the vPool over")
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// MsgType names a message.
type MsgType uint8

// Messages. O: from the owner; D: from the DTL server.
const (
	MsgHello    MsgType = 1  // O: version, epoch, pool, owner
	MsgWelcome  MsgType = 2  // D: version, epoch
	MsgRefuse   MsgType = 3  // D: flags, reason; the connection closes
	MsgOpen     MsgType = 4  // O: vdisk, geometry, epoch of its data, flags → Have
	MsgHave     MsgType = 5  // D: vdisk, trimmed seq, runs of held record positions
	MsgAppend   MsgType = 6  // O: vdisk, lsn, seq, rec0, records, data → Ack
	MsgAck      MsgType = 7  // D: vdisk, lsn, count: the count Appends up to lsn are held
	MsgSync     MsgType = 8  // O: vdisk, lsn → Synced once the vDisk's files are synced
	MsgSynced   MsgType = 9  // D: vdisk, lsn
	MsgTrim     MsgType = 10 // O: vdisk, seq: TLogs through seq are on the backend
	MsgFetch    MsgType = 11 // O: vdisk → Entry… FetchEnd
	MsgEntry    MsgType = 12 // D: as Append (lsn 0)
	MsgFetchEnd MsgType = 13 // D: vdisk, count of entries
	MsgList     MsgType = 14 // O: → Listing
	MsgListing  MsgType = 15 // D: the pool's vDisks
	MsgDrop     MsgType = 16 // O: vdisk: forget it (deleted, or DTL mode none)
)

func (t MsgType) String() string {
	names := [...]string{"?", "hello", "welcome", "refuse", "open", "have", "append", "ack", "sync", "synced",
		"trim", "fetch", "entry", "fetch-end", "list", "listing", "drop"}
	if int(t) < len(names) {
		return names[t]
	}
	return fmt.Sprintf("type-%d", uint8(t))
}

// Run is a range [Rec0, Rec1) of record positions of TLog Seq.
type Run struct{ Seq, Rec0, Rec1 uint32 }

// VDiskInfo describes a vDisk the DTL holds entries of.
type VDiskInfo struct {
	VDisk       uint64
	ClusterSize uint32
	SCOSize     uint32
	Trimmed     uint32 // TLogs through it are on the backend
	Bytes       uint64 // bytes of entries held
}

// RefuseFenced in a Refuse says a newer owner epoch holds the vPool.
const RefuseFenced = 1

// OpenFetched in an Open says the owner has read back what this DTL held
// (a restore); without it, entries of an older owner epoch are dropped.
const OpenFetched = 1

// Msg is one protocol message; which fields count depends on Type.
type Msg struct {
	Type        MsgType
	Version     uint16
	Epoch       uint64 // Hello, Welcome: the owner epoch; Open: the epoch the vDisk's data is written under
	Pool        string // Hello
	Owner       string // Hello: who the owner is (for logs)
	Reason      string // Refuse
	VDisk       uint64
	LSN         uint64 // Append, Ack, Sync, Synced; FetchEnd: count of entries
	Count       uint32 // Ack: how many Appends it answers (the last one's LSN; at least 1)
	Seq, Rec0   uint32 // Append, Entry: position; Trim, Have: Seq is the trimmed TLog
	Recs, Data  []byte // Append, Entry
	ClusterSize uint32 // Open
	SCOSize     uint32 // Open
	Flags       uint8  // Open, Refuse
	Runs        []Run
	VDisks      []VDiskInfo
}

// Encode appends the message's frame to b.
//
//	frame: len:4 | type:1 | payload | crc32c(type|payload):4     (len counts type and payload)
//
// Integers are little endian; strings are len:2 | bytes.
func (m *Msg) Encode(b []byte) []byte {
	start := len(b)
	b = append(b, 0, 0, 0, 0, byte(m.Type))
	le := binary.LittleEndian
	str := func(s string) {
		b = le.AppendUint16(b, uint16(len(s)))
		b = append(b, s...)
	}
	switch m.Type {
	case MsgHello:
		b = le.AppendUint16(b, m.Version)
		b = le.AppendUint64(b, m.Epoch)
		str(m.Pool)
		str(m.Owner)
	case MsgWelcome:
		b = le.AppendUint16(b, m.Version)
		b = le.AppendUint64(b, m.Epoch)
	case MsgRefuse:
		b = append(b, m.Flags)
		str(m.Reason)
	case MsgOpen:
		b = le.AppendUint64(b, m.VDisk)
		b = le.AppendUint32(b, m.ClusterSize)
		b = le.AppendUint32(b, m.SCOSize)
		b = le.AppendUint64(b, m.Epoch)
		b = append(b, m.Flags)
	case MsgHave:
		b = le.AppendUint64(b, m.VDisk)
		b = le.AppendUint32(b, m.Seq)
		b = le.AppendUint32(b, uint32(len(m.Runs)))
		for _, r := range m.Runs {
			b = le.AppendUint32(b, r.Seq)
			b = le.AppendUint32(b, r.Rec0)
			b = le.AppendUint32(b, r.Rec1)
		}
	case MsgAppend, MsgEntry:
		b = le.AppendUint64(b, m.VDisk)
		b = le.AppendUint64(b, m.LSN)
		b = le.AppendUint32(b, m.Seq)
		b = le.AppendUint32(b, m.Rec0)
		b = le.AppendUint32(b, uint32(len(m.Recs)/RecordSize))
		b = append(b, m.Recs...)
		b = append(b, m.Data...)
	case MsgAck:
		b = le.AppendUint64(b, m.VDisk)
		b = le.AppendUint64(b, m.LSN)
		b = le.AppendUint32(b, m.Count)
	case MsgSync, MsgSynced, MsgFetchEnd:
		b = le.AppendUint64(b, m.VDisk)
		b = le.AppendUint64(b, m.LSN)
	case MsgTrim:
		b = le.AppendUint64(b, m.VDisk)
		b = le.AppendUint32(b, m.Seq)
	case MsgFetch, MsgDrop:
		b = le.AppendUint64(b, m.VDisk)
	case MsgList:
	case MsgListing:
		b = le.AppendUint32(b, uint32(len(m.VDisks)))
		for _, v := range m.VDisks {
			b = le.AppendUint64(b, v.VDisk)
			b = le.AppendUint32(b, v.ClusterSize)
			b = le.AppendUint32(b, v.SCOSize)
			b = le.AppendUint32(b, v.Trimmed)
			b = le.AppendUint64(b, v.Bytes)
		}
	}
	le.PutUint32(b[start:], uint32(len(b)-start-4))
	return le.AppendUint32(b, crc32.Checksum(b[start+4:], castagnoli))
}

// ReadFrame reads one frame's body (type and payload, checksum verified)
// into buf, growing it up to MaxFrame, and returns it.
func ReadFrame(r io.Reader, buf []byte) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return buf, err
	}
	n := binary.LittleEndian.Uint32(hdr[:])
	if n < 1 || n > MaxFrame {
		return buf, fmt.Errorf("%w: length %d (at most %d)", ErrFrame, n, MaxFrame)
	}
	if cap(buf) < int(n)+4 {
		buf = make([]byte, int(n)+4)
	}
	buf = buf[:n+4]
	if _, err := io.ReadFull(r, buf); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return buf, err
	}
	body := buf[:n]
	if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(buf[n:]) {
		return buf, fmt.Errorf("%w: checksum", ErrFrame)
	}
	return body, nil
}

// Reader reads messages, one frame buffer reused: a message's Recs and
// Data are valid until the next call.
type Reader struct {
	r   io.Reader
	buf []byte
}

// NewReader reads messages from r.
func NewReader(r io.Reader) *Reader { return &Reader{r: r} }

// Next reads and decodes the next message.
func (fr *Reader) Next() (Msg, error) {
	body, err := ReadFrame(fr.r, fr.buf)
	fr.buf = body[:cap(body)]
	if err != nil {
		return Msg{}, err
	}
	return Decode(body)
}

// Decode parses a frame body (as ReadFrame returns it). Recs and Data
// alias body.
func Decode(body []byte) (Msg, error) {
	var m Msg
	if len(body) < 1 {
		return m, fmt.Errorf("%w: empty", ErrFrame)
	}
	m.Type = MsgType(body[0])
	d := decoder{b: body[1:]}
	switch m.Type {
	case MsgHello:
		m.Version, m.Epoch, m.Pool, m.Owner = d.u16(), d.u64(), d.str(), d.str()
	case MsgWelcome:
		m.Version, m.Epoch = d.u16(), d.u64()
	case MsgRefuse:
		m.Flags, m.Reason = d.u8(), d.str()
	case MsgOpen:
		m.VDisk, m.ClusterSize, m.SCOSize, m.Epoch, m.Flags = d.u64(), d.u32(), d.u32(), d.u64(), d.u8()
	case MsgHave:
		m.VDisk, m.Seq = d.u64(), d.u32()
		n := d.u32()
		if uint64(n)*12 > uint64(len(d.b)) {
			return m, fmt.Errorf("%w: %s of %d runs in %d bytes", ErrFrame, m.Type, n, len(d.b))
		}
		m.Runs = make([]Run, n)
		for i := range m.Runs {
			m.Runs[i] = Run{d.u32(), d.u32(), d.u32()}
			if m.Runs[i].Rec0 >= m.Runs[i].Rec1 {
				return m, fmt.Errorf("%w: empty run", ErrFrame)
			}
		}
	case MsgAppend, MsgEntry:
		m.VDisk, m.LSN, m.Seq, m.Rec0 = d.u64(), d.u64(), d.u32(), d.u32()
		n := d.u32()
		if d.err == nil && (n == 0 || uint64(n)*RecordSize > uint64(len(d.b))) {
			return m, fmt.Errorf("%w: %s of %d records in %d bytes", ErrFrame, m.Type, n, len(d.b))
		}
		if d.err == nil {
			m.Recs, m.Data = d.b[:n*RecordSize], d.b[n*RecordSize:]
			d.b = nil
			if len(m.Data) > MaxEntryData || uint64(m.Rec0)+uint64(n) > 1<<31 {
				return m, fmt.Errorf("%w: %s too large", ErrFrame, m.Type)
			}
		}
	case MsgAck:
		m.VDisk, m.LSN, m.Count = d.u64(), d.u64(), d.u32()
		if m.Count == 0 {
			return m, fmt.Errorf("%w: ack of no appends", ErrFrame)
		}
	case MsgSync, MsgSynced, MsgFetchEnd:
		m.VDisk, m.LSN = d.u64(), d.u64()
	case MsgTrim:
		m.VDisk, m.Seq = d.u64(), d.u32()
	case MsgFetch, MsgDrop:
		m.VDisk = d.u64()
	case MsgList:
	case MsgListing:
		n := d.u32()
		if uint64(n)*28 > uint64(len(d.b)) {
			return m, fmt.Errorf("%w: %s of %d vDisks in %d bytes", ErrFrame, m.Type, n, len(d.b))
		}
		m.VDisks = make([]VDiskInfo, n)
		for i := range m.VDisks {
			m.VDisks[i] = VDiskInfo{VDisk: d.u64(), ClusterSize: d.u32(), SCOSize: d.u32(), Trimmed: d.u32(), Bytes: d.u64()}
		}
	default:
		return m, fmt.Errorf("%w: unknown type %d", ErrFrame, m.Type)
	}
	if d.err != nil {
		return m, fmt.Errorf("%w: %s: truncated", ErrFrame, m.Type)
	}
	if len(d.b) != 0 {
		return m, fmt.Errorf("%w: %s: %d bytes after its fields", ErrFrame, m.Type, len(d.b))
	}
	return m, nil
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) take(n int) []byte {
	if d.err != nil || len(d.b) < n {
		d.err = io.ErrUnexpectedEOF
		return make([]byte, n)
	}
	p := d.b[:n]
	d.b = d.b[n:]
	return p
}

func (d *decoder) u8() uint8   { return d.take(1)[0] }
func (d *decoder) u16() uint16 { return binary.LittleEndian.Uint16(d.take(2)) }
func (d *decoder) u32() uint32 { return binary.LittleEndian.Uint32(d.take(4)) }
func (d *decoder) u64() uint64 { return binary.LittleEndian.Uint64(d.take(8)) }
func (d *decoder) str() string {
	n := d.u16()
	return string(d.take(int(n)))
}
