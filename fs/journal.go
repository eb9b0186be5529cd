package fs

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"

	"vpool/volume"
)

// The namespace journal keeps every namespace change since the newest
// backup in a vDisk of its own, so that it is protected as vDisk data is
// (local flash, the DTL, the backend): a restore on a new host replays,
// after the newest backup, the changes the backup lacks, and a host loss
// never loses a file that a client was told exists.
//
// Records are appended in change order at increasing offsets of the
// journal vDisk, each starting on a 4 KiB boundary, wrapping to offset 0
// when the next one would pass journalSize:
//
//	"VPNJ" | seq:8 | len:4 | crc32c(seq|len|ops):4 | ops (len bytes)
//	ops: count × (uvarint keylen, key, set:1, uvarint vallen, value)
//
// A backup records, in the superblock it stores, the newest seq it holds
// (JournalBase) and the offset of the next record (JournalOff). A restore
// reads records from JournalOff on, for as long as they carry JournalBase+1,
// +2, …, and applies their ops in order. Ops set or delete whole records,
// so applying one that the backup holds already changes nothing.

const (
	journalMagic   = "VPNJ"
	journalHdr     = 20
	journalAlign   = 4 << 10
	journalSize    = 256 << 20 // ring: the changes of many backup intervals
	journalMaxData = 1 << 20   // larger changes go unjournaled (and are logged)
)

func encodeJournal(seq uint64, ops []volume.MetaOp) []byte {
	b := make([]byte, journalHdr, journalHdr+64*len(ops))
	b = binary.AppendUvarint(b, uint64(len(ops)))
	for _, op := range ops {
		b = binary.AppendUvarint(b, uint64(len(op.Key)))
		b = append(b, op.Key...)
		if op.Value == nil {
			b = append(b, 0)
			continue
		}
		b = append(b, 1)
		b = binary.AppendUvarint(b, uint64(len(op.Value)))
		b = append(b, op.Value...)
	}
	copy(b, journalMagic)
	binary.BigEndian.PutUint64(b[4:], seq)
	binary.BigEndian.PutUint32(b[12:], uint32(len(b)-journalHdr))
	crc := crc32.Checksum(b[4:16], castagnoli)
	binary.BigEndian.PutUint32(b[16:], crc32.Update(crc, castagnoli, b[journalHdr:]))
	if pad := len(b) % journalAlign; pad != 0 {
		b = append(b, make([]byte, journalAlign-pad)...)
	}
	return b
}

// decodeJournalHeader returns a record's seq and ops length, or ok=false.
func decodeJournalHeader(b []byte) (seq uint64, n int, ok bool) {
	if len(b) < journalHdr || string(b[:4]) != journalMagic {
		return 0, 0, false
	}
	n = int(binary.BigEndian.Uint32(b[12:]))
	return binary.BigEndian.Uint64(b[4:]), n, n <= journalMaxData
}

func decodeJournal(b []byte) ([]volume.MetaOp, error) {
	_, n, ok := decodeJournalHeader(b)
	if !ok || journalHdr+n > len(b) {
		return nil, fmt.Errorf("%w: journal record header", ErrCorrupt)
	}
	crc := crc32.Checksum(b[4:16], castagnoli)
	if crc32.Update(crc, castagnoli, b[journalHdr:journalHdr+n]) != binary.BigEndian.Uint32(b[16:]) {
		return nil, fmt.Errorf("%w: journal record checksum", ErrCorrupt)
	}
	p := b[journalHdr : journalHdr+n]
	count, k := binary.Uvarint(p)
	if k <= 0 || count > uint64(len(p)) {
		return nil, fmt.Errorf("%w: journal record count", ErrCorrupt)
	}
	p = p[k:]
	field := func() ([]byte, bool) {
		l, k := binary.Uvarint(p)
		if k <= 0 || l > uint64(len(p)-k) {
			return nil, false
		}
		f := p[k : k+int(l)]
		p = p[k+int(l):]
		return f, true
	}
	ops := make([]volume.MetaOp, 0, count)
	for i := uint64(0); i < count; i++ {
		key, ok := field()
		if !ok || len(p) == 0 {
			return nil, fmt.Errorf("%w: journal record op", ErrCorrupt)
		}
		set := p[0]
		p = p[1:]
		op := volume.MetaOp{Key: append([]byte(nil), key...)}
		if set == 1 {
			v, ok := field()
			if !ok {
				return nil, fmt.Errorf("%w: journal record value", ErrCorrupt)
			}
			op.Value = append([]byte{}, v...)
		}
		ops = append(ops, op)
	}
	return ops, nil
}

// journalLocked writes a change's record before the change is staged; the
// caller holds n.mu. A change that does not fit a record, or that finds
// the ring full of changes no backup holds yet, goes unjournaled, loudly:
// it is still on local flash and in the next backup.
func (n *Namespace) journalLocked(ops []volume.MetaOp) error {
	if n.journal == nil {
		return nil
	}
	seq := n.jseq + 1
	rec := encodeJournal(seq, ops)
	if len(rec)-journalHdr > journalMaxData {
		n.log.Warn("fs: a namespace change too large for the journal; it is protected from the next backup on", "bytes", len(rec))
		return nil
	}
	off := n.joff
	if off+int64(len(rec)) > journalSize {
		off = 0
	}
	if n.ringFullLocked(off, int64(len(rec))) {
		if now := time.Now(); now.Sub(n.journalFullAt) > 10*time.Second {
			n.journalFullAt = now
			n.log.Warn("fs: the namespace journal is full of changes no backup holds yet (is the backend away?); " +
				"namespace changes are protected from the next backup on")
		}
		return nil
	}
	if err := n.journal.WriteAt(context.Background(), rec, off); err != nil {
		return fmt.Errorf("fs: namespace journal: %w", err)
	}
	n.jseq, n.joff = seq, off+int64(len(rec))
	return nil
}

// ringFullLocked reports whether writing size bytes at off would
// overwrite a record that a restore from the newest backup on the backend
// needs: those from the ring base (the record after that backup's base)
// to the head.
func (n *Namespace) ringFullLocked(off, size int64) bool {
	if n.jseq == n.ringSeq {
		return false // none needed
	}
	base, head, end := n.ringOff, n.joff, off+size
	if base <= head { // needed: [base, head)
		return off < head && end > base
	}
	return end > base || off < head // needed: [base, journalSize) and [0, head)
}

// headOpLocked is the catalog record of the journal's head, staged with
// every change: a start finds the head without reading the journal (whose
// records may be on the backend only, and the backend away).
func (n *Namespace) headOpLocked() volume.MetaOp {
	v := binary.BigEndian.AppendUint64(nil, n.jseq)
	return volume.MetaOp{Key: key(kindJournal), Value: binary.BigEndian.AppendUint64(v, uint64(n.joff))}
}

// openJournal finds the journal's head: from its catalog record, or (a
// restore, apply) by reading the records after the newest backup's base
// for as long as they follow on, staging their ops.
func (n *Namespace) openJournal(ctx context.Context, apply bool) error {
	sb := n.mu.sb
	if sb.Journal == 0 {
		return nil
	}
	j, err := n.pool.VDisk(sb.Journal)
	if err != nil {
		return fmt.Errorf("fs: the namespace journal vDisk %s: %w", volume.FormatID(sb.Journal), err)
	}
	n.journal = j
	n.ringSeq, n.ringOff = sb.JournalBase, int64(sb.JournalOff)
	if !apply {
		if b, _, ok, err := n.meta.Get(key(kindJournal)); err != nil {
			return err
		} else if ok && len(b) == 16 {
			n.jseq, n.joff = binary.BigEndian.Uint64(b), int64(binary.BigEndian.Uint64(b[8:]))
			return nil
		}
	}
	seq, off := sb.JournalBase, int64(sb.JournalOff)
	hdr := make([]byte, journalAlign)
	applied := 0
	for {
		rec, next, err := n.readJournal(ctx, off, seq+1, hdr)
		if errors.Is(err, errNoRecord) && off != 0 {
			rec, next, err = n.readJournal(ctx, 0, seq+1, hdr) // wrapped
		}
		if errors.Is(err, errNoRecord) {
			break
		}
		if err != nil {
			return err
		}
		if apply {
			if err := n.stageReplayed(rec); err != nil {
				return err
			}
			applied++
		}
		seq, off = seq+1, next
	}
	n.jseq, n.joff = seq, off
	if err := n.meta.Stage([]volume.MetaOp{n.headOpLocked()}); err != nil {
		return err
	}
	if applied > 0 {
		n.log.Info("fs: replayed namespace changes after the backup from the journal", "changes", applied, "through", seq)
	}
	return nil
}

var errNoRecord = errors.New("fs: no journal record")

// stageReplayed stages a replayed change; a superblock in it only moves
// the counters on (the restored one keeps its epoch and backup state).
func (n *Namespace) stageReplayed(ops []volume.MetaOp) error {
	out := ops[:0:0]
	for _, op := range ops {
		if op.Key[1] != kindSuper || op.Value == nil {
			out = append(out, op)
			continue
		}
		j, err := decodeSuperblock(op.Value)
		if err != nil {
			return err
		}
		sb := &n.mu.sb
		sb.NextIno, sb.NextChunk, sb.Features = max(sb.NextIno, j.NextIno), max(sb.NextChunk, j.NextChunk), sb.Features|j.Features
		out = append(out, volume.MetaOp{Key: op.Key, Value: sb.encode()})
	}
	return n.meta.Stage(out)
}

// readJournal reads the record at off if it carries seq.
func (n *Namespace) readJournal(ctx context.Context, off int64, seq uint64, hdr []byte) ([]volume.MetaOp, int64, error) {
	if off+journalAlign > journalSize {
		return nil, 0, errNoRecord
	}
	if _, err := n.journal.ReadAt(ctx, hdr, off); err != nil {
		return nil, 0, fmt.Errorf("fs: read the namespace journal at %d: %w", off, err)
	}
	got, size, ok := decodeJournalHeader(hdr)
	if !ok || got != seq {
		return nil, 0, errNoRecord
	}
	total := int64(journalHdr + size)
	total = (total + journalAlign - 1) / journalAlign * journalAlign
	b := hdr
	if total > int64(len(hdr)) {
		b = make([]byte, total)
		if _, err := n.journal.ReadAt(ctx, b, off); err != nil {
			return nil, 0, fmt.Errorf("fs: read the namespace journal at %d: %w", off, err)
		}
	}
	ops, err := decodeJournal(b)
	if err != nil {
		n.log.Warn("fs: a namespace journal record is damaged; the replay stops before it", "seq", seq, "err", err)
		return nil, 0, errNoRecord
	}
	return ops, off + total, nil
}

// createJournal makes the journal vDisk (a new namespace, or one made
// before the journal); the caller commits the superblock naming it.
func (n *Namespace) createJournal(ctx context.Context) error {
	j, err := n.pool.Create(ctx, journalSize)
	if err != nil {
		return fmt.Errorf("fs: create the namespace journal: %w", err)
	}
	n.journal = j
	n.mu.sb.Journal = j.ID()
	n.mu.sb.JournalBase, n.mu.sb.JournalOff = 0, 0
	n.jseq, n.joff, n.ringSeq, n.ringOff = 0, 0, 0, 0
	return nil
}
