package fs

import (
	"bytes"
	"testing"
)

// Decoders of namespace records never panic, and what they accept
// re-encodes to the same bytes.
func FuzzDecodeAttr(f *testing.F) {
	f.Add((&Attr{Ino: 7, Gen: 1, Parent: 1, Mode: 0o100644, Nlink: 1, Size: 10, VDisk: 3}).encode())
	f.Add((&Attr{Ino: 8, Mode: 0o120777, Target: "a/b"}).encode())
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := decodeAttr(b)
		if err != nil {
			return
		}
		if !bytes.Equal(a.encode(), b) {
			t.Fatalf("re-encoding differs")
		}
	})
}

func FuzzDecodeBackup(f *testing.F) {
	f.Add(encodeBackup(3, []record{{key(kindSuper), superblock{NextIno: 5}.encode()}, {entryKey(1, "a"), encodeEntry(2, 0o40000)}}))
	f.Add(encodeBackup(1, nil))
	f.Add([]byte(backupMagic))
	f.Fuzz(func(t *testing.T, b []byte) {
		gen, recs, err := decodeBackup(b)
		if err != nil {
			return
		}
		if !bytes.Equal(encodeBackup(gen, recs), b) {
			t.Fatalf("re-encoding differs")
		}
	})
}

func FuzzDecodeSmallRecords(f *testing.F) {
	f.Add(superblock{NextIno: 9, Epoch: 2}.encode())
	f.Add(encodeEntry(5, 0o100000))
	f.Fuzz(func(t *testing.T, b []byte) {
		if s, err := decodeSuperblock(b); err == nil && !bytes.Equal(s.encode(), b) {
			t.Fatal("superblock re-encoding differs")
		}
		if ino, mode, err := decodeEntry(b); err == nil && !bytes.Equal(encodeEntry(ino, mode), b) {
			t.Fatal("entry re-encoding differs")
		}
	})
}
