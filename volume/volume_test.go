package volume

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

var bg = context.Background()

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7+i/4096)
	}
	return b
}

func mustRead(t *testing.T, v *VDisk, off int64, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := v.ReadAt(bg, b, off); err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("read [%d,+%d): %v", off, n, err)
	}
	return b
}

func TestWriteReadThinAndUnaligned(t *testing.T) {
	e := newEnv(t)
	v, err := e.pool.Create(bg, 100<<20)
	if err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, v, 50<<20, 8192); !bytes.Equal(got, make([]byte, 8192)) {
		t.Fatal("unwritten range is not zeros")
	}
	if v.Allocated() != 0 {
		t.Fatalf("allocated %d before any write", v.Allocated())
	}
	data := pattern(10000, 1)
	if err := v.WriteAt(bg, data, 4096*3+100); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, v, 4096*3+100, 10000); !bytes.Equal(got, data) {
		t.Fatal("unaligned write reads back wrong")
	}
	if got := mustRead(t, v, 4096*3, 100); !bytes.Equal(got, make([]byte, 100)) {
		t.Fatal("bytes before an unaligned write changed")
	}
	if a := v.Allocated(); a != 3*4096 {
		t.Fatalf("allocated %d, want 3 clusters", a)
	}
	// zeros unmap
	if err := v.WriteAt(bg, make([]byte, 8192), 4096*4); err != nil {
		t.Fatal(err)
	}
	if a := v.Allocated(); a != 4096 {
		t.Fatalf("allocated %d after zero write, want 1 cluster", a)
	}
	if err := v.WriteAt(bg, data, 100<<20-10); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("write past end: %v", err)
	}
	if n, err := v.ReadAt(bg, make([]byte, 100), 100<<20-10); n != 10 || err != io.EOF {
		t.Fatalf("read across the end: %d %v", n, err)
	}
}

func TestDiscardResizeSeek(t *testing.T) {
	e := newEnv(t)
	v, _ := e.pool.Create(bg, 1<<20)
	if err := v.WriteAt(bg, pattern(1<<20, 3), 0); err != nil {
		t.Fatal(err)
	}
	if err := v.Discard(bg, 5000, 20000); err != nil {
		t.Fatal(err)
	}
	got := mustRead(t, v, 0, 1<<20)
	want := pattern(1<<20, 3)
	clear(want[5000:25000])
	if !bytes.Equal(got, want) {
		t.Fatal("discard: wrong content")
	}
	if off, err := v.SeekHole(bg, 0); err != nil || off != 8192 {
		t.Fatalf("seek hole = %d, %v; want 8192", off, err)
	}
	if off, err := v.SeekData(bg, 8192); err != nil || off != 24576 {
		t.Fatalf("seek data = %d, %v; want 24576", off, err)
	}
	// shrink to an unaligned size, grow again: the tail reads zeros
	if err := v.Resize(bg, 100_000); err != nil {
		t.Fatal(err)
	}
	if err := v.Resize(bg, 1<<20); err != nil {
		t.Fatal(err)
	}
	got = mustRead(t, v, 0, 1<<20)
	clear(want[100_000:])
	if !bytes.Equal(got, want) {
		t.Fatal("shrink+grow: wrong content")
	}
	if off, err := v.SeekHole(bg, 90_000); err != nil || off != 102_400 { // the cluster holding byte 100_000 stays mapped
		t.Fatalf("seek hole after shrink = %d, %v", off, err)
	}
	if _, err := v.SeekData(bg, 102_400); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("seek data in the tail: %v", err)
	}
	if err := v.Resize(bg, -1); !errors.Is(err, ErrBadSize) {
		t.Fatalf("negative size: %v", err)
	}
	if err := v.Resize(bg, 65<<40); !errors.Is(err, ErrBadSize) || !strings.Contains(err.Error(), "71468255805440") {
		t.Fatalf("size over the maximum: %v", err)
	}
}

func TestRestartKillPowerLossAndWipe(t *testing.T) {
	e := newEnv(t)
	v, _ := e.pool.Create(bg, 64<<20)
	id := v.ID()
	a := pattern(6<<20, 5) // more than one SCO
	if err := v.WriteAt(bg, a, 0); err != nil {
		t.Fatal(err)
	}
	e.restart()
	if got := mustRead(t, e.vdisk(id), 0, len(a)); !bytes.Equal(got, a) {
		t.Fatal("after clean restart")
	}
	b := pattern(1<<20, 9)
	e.vdisk(id).WriteAt(bg, b, 8<<20)
	e.kill()
	if got := mustRead(t, e.vdisk(id), 8<<20, len(b)); !bytes.Equal(got, b) {
		t.Fatal("unflushed write lost by kill -9")
	}
	c := pattern(4096, 11)
	e.vdisk(id).WriteAt(bg, c, 16<<20)
	if err := e.vdisk(id).Flush(bg); err != nil {
		t.Fatal(err)
	}
	e.powerLoss()
	if got := mustRead(t, e.vdisk(id), 16<<20, len(c)); !bytes.Equal(got, c) {
		t.Fatal("flushed write lost by power loss")
	}
	if got := mustRead(t, e.vdisk(id), 8<<20, len(b)); !bytes.Equal(got, b) {
		t.Fatal("write flushed by a later flush lost by power loss")
	}
	vd := e.vdisk(id)
	if err := vd.Seal(); err != nil {
		t.Fatal(err)
	}
	if err := vd.WaitUploaded(bg); err != nil {
		t.Fatal(err)
	}
	e.wipeFlash()
	got := mustRead(t, e.vdisk(id), 0, 17<<20)
	want := make([]byte, 17<<20)
	copy(want, a)
	copy(want[8<<20:], b)
	copy(want[16<<20:], c)
	if !bytes.Equal(got, want) {
		t.Fatal("after restart from the backend alone")
	}
	if e.vdisk(id).Size() != 64<<20 {
		t.Fatalf("size after rebuild %d", e.vdisk(id).Size())
	}
}

func TestDeleteFreesEverything(t *testing.T) {
	e := newEnv(t)
	v, _ := e.pool.Create(bg, 16<<20)
	v.WriteAt(bg, pattern(5<<20, 1), 0)
	v.Seal()
	v.WaitUploaded(bg)
	if err := e.pool.Delete(bg, v.ID()); err != nil {
		t.Fatal(err)
	}
	if names, _ := e.backend.List(bg, ""); len(names) != 0 {
		t.Fatalf("backend keeps %v", names)
	}
	if n := e.meta.Len() + e.cat.Len(); n != 0 {
		t.Fatalf("metadata keeps %d keys", n)
	}
	e.restart()
	if len(e.pool.List()) != 0 {
		t.Fatal("deleted vDisk came back")
	}
}

// Metadata lost before the first manifest reached the backend: the vDisk
// is rebuilt from its local TLogs, not deleted as half-created.
func TestMetadataLostBeforeFirstUpload(t *testing.T) {
	e := newEnv(t)
	e.backend.SetDelayForTesting(time.Hour) // no upload finishes
	v, _ := e.pool.Create(bg, 8<<20)
	id := v.ID()
	data := pattern(1<<20, 3)
	if err := v.WriteAt(bg, data, 4096); err != nil {
		t.Fatal(err)
	}
	e.pool.AbandonForTesting()
	e.wipeMeta()
	e.backend.SetDelayForTesting(0)
	e.open()
	if got := mustRead(t, e.vdisk(id), 4096, len(data)); !bytes.Equal(got, data) {
		t.Fatal("data lost")
	}
	if s := e.vdisk(id).Size(); s != 8<<20 {
		t.Fatalf("size %d", s)
	}
}

// A template is read-only for good: across a restart and a rebuild from
// the backend alone.
func TestTemplate(t *testing.T) {
	e := newEnv(t)
	v, _ := e.pool.Create(bg, 16<<20)
	id := v.ID()
	a := pattern(1<<20, 3)
	if err := v.WriteAt(bg, a, 0); err != nil {
		t.Fatal(err)
	}
	if err := v.SetTemplate(bg); err != nil {
		t.Fatal(err)
	}
	readOnly := func(when string) {
		t.Helper()
		v := e.vdisk(id)
		if !v.IsTemplate() {
			t.Fatalf("%s: not a template", when)
		}
		for what, err := range map[string]error{"write": v.WriteAt(bg, a[:4096], 0), "discard": v.Discard(bg, 0, 4096),
			"resize": v.Resize(bg, 32<<20)} {
			if !errors.Is(err, ErrReadOnly) {
				t.Fatalf("%s: %s of a template: %v, want ErrReadOnly", when, what, err)
			}
		}
		if got := mustRead(t, v, 0, len(a)); !bytes.Equal(got, a) {
			t.Fatalf("%s: data of the template", when)
		}
	}
	readOnly("at once")
	e.restart()
	readOnly("after a restart")
	vd := e.vdisk(id)
	if err := vd.Seal(); err != nil {
		t.Fatal(err)
	}
	if err := vd.WaitUploaded(bg); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		if m, err := e.pool.latestManifest(bg, id); err == nil && m.Template {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the manifest does not say template after 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.wipeFlash()
	readOnly("after a rebuild from the backend")
}

// Writers wait for a block-map write-back only while the cache must keep
// pages clean or free for misses: never when the vDisk's whole map is
// cached, else when a quarter of the cache (or the pages outside it, when
// fewer) is no longer clean or free.
func TestDirtyLimitLeavesRoomOnlyForMisses(t *testing.T) {
	e := newEnv(t) // 64 cached pages per vDisk
	const pageSpan = pageEntries * 4096
	for _, c := range []struct {
		pages, written, want int
	}{
		{pages: 64, written: 64, want: 64},   // all cached: writers never wait
		{pages: 70, written: 60, want: 54},   // 10 pages outside: 10 stay free
		{pages: 1024, written: 10, want: 48}, // a quarter of the cache
	} {
		v, err := e.pool.Create(bg, int64(c.pages)*pageSpan)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < c.written; i++ {
			if err := v.WriteAt(bg, bytes.Repeat([]byte{1}, 4096), int64(i)*pageSpan); err != nil {
				t.Fatal(err)
			}
		}
		v.mu.Lock()
		got, dirty := v.dirtyHardLocked(), len(v.mu.pages.dirty)
		v.mu.Unlock()
		if got != c.want {
			t.Errorf("%d pages, %d written: writers wait at %d dirty pages, want %d", c.pages, c.written, got, c.want)
		}
		if dirty > c.written {
			t.Errorf("%d dirty pages listed after writes to %d", dirty, c.written)
		}
	}
}

// A background write-back starts at half the cache only for a vDisk with
// pages outside it; a vDisk whose whole map is cached waits for the map
// writer's tick (5 s), so that random writes do not store the same pages
// again and again.
func TestSoftWriteBackOnlyWhenTheMapIsNotWhollyCached(t *testing.T) {
	e := newEnv(t) // 64 cached pages per vDisk: the soft mark is 32
	const pageSpan = pageEntries * 4096
	dirtyAfter := func(v *VDisk, d time.Duration) int {
		time.Sleep(d)
		v.mu.Lock()
		defer v.mu.Unlock()
		return len(v.mu.pages.dirty)
	}
	for _, c := range []struct {
		pages     int
		writeBack bool
	}{
		{pages: 64, writeBack: false}, // all cached
		{pages: 200, writeBack: true},
	} {
		v, err := e.pool.Create(bg, int64(c.pages)*pageSpan)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		for i := range 40 { // 40 dirty pages: past the soft mark, short of the hard one
			if err := v.WriteAt(bg, bytes.Repeat([]byte{1}, 4096), int64(i)*pageSpan); err != nil {
				t.Fatal(err)
			}
		}
		// A write-back started at the soft mark may copy the dirty list
		// before the last writes: some pages written back is the sign.
		dirty := 40
		for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline) && dirty == 40; {
			dirty = dirtyAfter(v, 20*time.Millisecond)
		}
		if time.Since(start) > 4*time.Second {
			t.Skip("the machine is too slow to tell a kick from the 5 s tick")
		}
		if wrote := dirty < 40; wrote != c.writeBack {
			t.Errorf("%d pages, 40 dirty: written back within 2 s: %v, want %v", c.pages, wrote, c.writeBack)
		}
	}
}
