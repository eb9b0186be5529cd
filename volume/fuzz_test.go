package volume

import (
	"bytes"
	"testing"
	"time"
)

// FuzzTLog: any byte string is parsed without panic; every record that is
// accepted re-encodes to the same bytes.
func FuzzTLog(f *testing.F) {
	var img bytes.Buffer
	hdr := make([]byte, tlogHeaderSize)
	(&tlogHeader{VDisk: 7, Seq: 3, ClusterSize: 4096}).encode(hdr)
	img.Write(hdr)
	for _, r := range []record{{Type: recWrite, SCO: 3, Cluster: 9, Count: 1, DataCRC: 5},
		{Type: recUnmap, Cluster: 100, Count: 50}, {Type: recResize, Cluster: 1 << 30}, {Type: recSeal, SCO: 3, Count: 2}} {
		b := make([]byte, recordSize)
		r.encode(b)
		img.Write(b)
	}
	f.Add(img.Bytes())
	f.Add(hdr)
	f.Add([]byte("VPTLOG1\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, _, err := parseTLog(b, 7, 3)
		if err != nil {
			return
		}
		for i, r := range recs {
			if r.Type == 0 {
				continue
			}
			out := make([]byte, recordSize)
			r.encode(out)
			if !bytes.Equal(out, b[tlogHeaderSize+i*recordSize:tlogHeaderSize+(i+1)*recordSize]) {
				t.Fatalf("record %d does not round-trip", i)
			}
		}
	})
}

func FuzzManifest(f *testing.F) {
	f.Add(encodeManifest(&Manifest{VDisk: "00000000000000ab", Generation: 4, UploadedThrough: 9,
		ClusterSize: 4096, SCOSize: 64 << 20, Size: 1 << 30, Created: time.Unix(1, 0).UTC()}))
	f.Add([]byte("VPMANIF1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeManifest(b)
		if err != nil {
			return
		}
		if _, err := decodeManifest(encodeManifest(m)); err != nil {
			t.Fatalf("accepted manifest does not re-encode: %v", err)
		}
	})
}

func FuzzPageAndMarker(f *testing.F) {
	p := &page{}
	p.set(3, loc{SCO: 1, Slot: 2, CRC: 3})
	f.Add(p.encode())
	f.Add(storedMarker{pos: marker{3, 4}, size: 5, allocated: 6}.encode())
	f.Add(storedMarker{pos: marker{3, 4}, size: 5, allocated: 6, epoch: 2, written: 9}.encode())
	p.epoch = 7
	f.Add(p.encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		if pg, err := decodePage(b); err == nil {
			if !bytes.Equal(pg.encode(), b) && (pg.mapped != 0 || pg.epoch != 0) {
				t.Fatal("page does not round-trip")
			}
		}
		if m, err := decodeMarker(b); err == nil {
			if !bytes.Equal(m.encode(), b) {
				t.Fatal("marker does not round-trip")
			}
		}
		if u, err := decodeUploadState(b); err == nil && !bytes.Equal(u.encode(), b) {
			t.Fatal("upload state does not round-trip")
		}
	})
}
