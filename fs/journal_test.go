package fs

import (
	"bytes"
	"errors"
	"syscall"
	"testing"

	"vpool/volume"
)

// Changes after the newest backup come back from the journal when local
// flash and metadata are lost (here the journal's and the file store's
// writes reached the backend; with a DTL they come from the DTL).
func TestJournalReplay(t *testing.T) {
	e := newEnv(t)
	d := e.mk(RootIno, "vms", syscall.S_IFDIR|0o755)
	early := e.mk(d.Ino, "early", 0o644)
	e.write(early.Ino, []byte("early"), 0)
	if err := e.ns.Backup(bg); err != nil {
		t.Fatal(err)
	}
	late := e.mk(d.Ino, "late", 0o644)
	e.write(late.Ino, bytes.Repeat([]byte("L"), 3000), 0)
	sub := e.mk(RootIno, "sub", syscall.S_IFDIR|0o700)
	v := e.mk(sub.Ino, "disk.raw", 0o600)
	if err := e.ns.Rename(bg, d.Ino, "early", sub.Ino, "moved", 0); err != nil {
		t.Fatal(err)
	}
	gone := e.mk(RootIno, "gone", 0o644)
	if err := e.ns.Unlink(bg, RootIno, "gone"); err != nil {
		t.Fatal(err)
	}
	for _, vd := range []uint64{e.ns.journal.ID(), e.ns.files.ID(), v.VDisk} {
		x, _ := e.pool.VDisk(vd)
		x.Flush(bg)
		x.Seal()
		if err := x.WaitUploaded(bg); err != nil {
			t.Fatal(err)
		}
	}
	nextIno := e.ns.mu.sb.NextIno

	e.wipe()
	if a, err := e.ns.Lookup(bg, d.Ino, "late"); err != nil || a.Ino != late.Ino || a.Size != 3000 {
		t.Fatalf("a file created after the backup: %+v %v", a, err)
	}
	if got := e.read(late.Ino, 3000, 0); !bytes.Equal(got, bytes.Repeat([]byte("L"), 3000)) {
		t.Fatal("its data")
	}
	if a, err := e.ns.Lookup(bg, sub.Ino, "moved"); err != nil || a.Ino != early.Ino {
		t.Fatalf("a rename after the backup: %+v %v", a, err)
	}
	if got := e.read(early.Ino, 5, 0); string(got) != "early" {
		t.Fatalf("renamed file's data: %q", got)
	}
	if _, err := e.ns.Lookup(bg, d.Ino, "early"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the old name: %v", err)
	}
	if a, err := e.ns.Lookup(bg, sub.Ino, "disk.raw"); err != nil || a.VDisk != v.VDisk {
		t.Fatalf("a vDisk created after the backup: %+v %v", a, err)
	}
	if _, err := e.ns.Lookup(bg, RootIno, "gone"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("an unlink after the backup: %v", err)
	}
	if _, err := e.ns.GetAttr(bg, gone.Ino); err == nil {
		t.Fatal("the unlinked inode came back")
	}
	if _, err := e.ns.Lookup(bg, RootIno, LostFound); !errors.Is(err, ErrNotFound) {
		t.Fatalf("lost+found after the replay (nothing should be lost): %v", err)
	}
	if e.ns.mu.sb.NextIno < nextIno {
		t.Fatalf("next inode %d after the replay, was %d: numbers would be handed out twice", e.ns.mu.sb.NextIno, nextIno)
	}
	n := e.mk(RootIno, "after", 0o644)
	if n.Ino < nextIno {
		t.Fatalf("new inode %d reuses a number of before the loss (< %d)", n.Ino, nextIno)
	}
}

func TestJournalCodec(t *testing.T) {
	ops := []struct{ k, v []byte }{{[]byte("a"), []byte("1")}, {[]byte("bb"), nil}, {[]byte("c"), []byte{}}}
	var in []volume.MetaOp
	for _, o := range ops {
		in = append(in, volume.MetaOp{Key: o.k, Value: o.v})
	}
	b := encodeJournal(7, in)
	if len(b)%journalAlign != 0 {
		t.Fatalf("record of %d bytes: not aligned", len(b))
	}
	seq, _, ok := decodeJournalHeader(b)
	out, err := decodeJournal(b)
	if !ok || seq != 7 || err != nil || len(out) != 3 || out[1].Value != nil || out[2].Value == nil || string(out[0].Value) != "1" {
		t.Fatalf("decoded %d %v %+v %v", seq, ok, out, err)
	}
	b[journalHdr+1] ^= 1
	if _, err := decodeJournal(b); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a damaged record: %v", err)
	}
}

// FuzzJournal: no input makes the decoder panic or allocate past it.
func FuzzJournal(f *testing.F) {
	f.Add(encodeJournal(1, []volume.MetaOp{{Key: []byte("k"), Value: []byte("v")}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		decodeJournal(b)
	})
}
