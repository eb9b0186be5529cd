package volume

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"vpool/vfs"
)

// Large writes through a real O_DIRECT handle, from buffers at any
// address and longer than the pooled aligned buffer, read back the same
// through the buffered handle; small ones go buffered.
func TestWriteDataDirect(t *testing.T) {
	dir, err := os.MkdirTemp("/var/tmp", "vpool-direct-")
	if err != nil {
		t.Skip(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "sco")
	buffered, err := vfs.OS{}.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer buffered.Close()
	direct, err := vfs.OS{}.OpenFile(path, os.O_WRONLY|syscall.O_DIRECT, 0)
	if err != nil {
		t.Skipf("no O_DIRECT here: %v", err)
	}
	s := &segment{sco: buffered, direct: direct}
	raw := make([]byte, 5<<20+1)
	for i := range raw {
		raw[i] = byte(i*7 + i>>12)
	}
	var off int64
	for _, n := range []int{4096, 128 << 10, 1 << 20, 3<<20 + 8192} {
		p := raw[1 : 1+n] // never aligned
		if err := s.writeData(p, off); err != nil {
			t.Fatalf("write %d bytes at %d: %v", n, off, err)
		}
		got := make([]byte, n)
		if _, err := buffered.ReadAt(got, off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, p) {
			t.Fatalf("%d bytes at %d read back different", n, off)
		}
		off += int64(n)
	}
	s.closeDirect()
	if s.direct != nil {
		t.Fatal("closeDirect left the handle")
	}
}

// An upload waits while its vDisk is being written and the buffer has
// room, but not for an SCO sealed long ago nor once the writes stop.
func TestUploadGivesWayToWrites(t *testing.T) {
	e := newEnv(t)
	v, _ := e.pool.Create(bg, 1<<20)
	seg := &segment{sealedAt: time.Now()}
	v.lastWrite.Store(time.Now().UnixNano())
	if !v.deferUpload(seg) {
		t.Fatal("an upload during a burst of writes did not wait")
	}
	seg.sealedAt = time.Now().Add(-DefaultUploadDefer)
	if v.deferUpload(seg) {
		t.Fatal("an SCO sealed UploadDefer ago still waits")
	}
	seg.sealedAt = time.Now()
	v.lastWrite.Store(time.Now().Add(-deferWhileWritten).UnixNano())
	if v.deferUpload(seg) {
		t.Fatal("an upload waits after the writes stopped")
	}
	// nor once the buffer is a quarter full
	v.lastWrite.Store(time.Now().UnixNano())
	if err := v.pool.wb.Reserve(bg, v.id, e.wbLimit/4+4096); err != nil {
		t.Fatal(err)
	}
	if v.deferUpload(seg) {
		t.Fatalf("an upload waits with the buffer %.0f%% full", 100*v.pool.wb.Fill())
	}
	v.pool.wb.Release(v.id, e.wbLimit/4+4096)
	// a recovered segment has no seal time: never waits
	v.lastWrite.Store(time.Now().UnixNano())
	if v.deferUpload(&segment{}) {
		t.Fatal("a recovered SCO's upload waits")
	}
}
