package flashcache

import (
	"bytes"
	"context"
	"encoding/binary"
	"sync"
	"testing"
	"time"

	"vpool/vfs"
)

func TestReadCacheRoundTripAndBound(t *testing.T) {
	c, err := OpenReadCache(vfs.NewMem(), "/cache", 4096*256, 4096)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	val := func(i int) []byte {
		b := make([]byte, 4096)
		binary.LittleEndian.PutUint64(b, uint64(i))
		return b
	}
	for i := 0; i < 10_000; i++ {
		c.Put(Key{Owner: 1, Object: 1, Index: uint32(i)}, val(i))
	}
	cached := 0
	for i := 0; i < 10_000; i++ {
		if c.Get(Key{Owner: 1, Object: 1, Index: uint32(i)}, buf) {
			cached++
			if !bytes.Equal(buf, val(i)) {
				t.Fatalf("cluster %d: wrong bytes", i)
			}
		}
	}
	if cached == 0 || cached > 256 {
		t.Fatalf("%d clusters cached in 256 slots", cached)
	}
}

// TestReadCacheScanResistant: a hot working set read again and again
// survives a long one-pass scan.
func TestReadCacheScanResistant(t *testing.T) {
	c, _ := OpenReadCache(vfs.NewMem(), "/cache", 4096*1024, 4096)
	buf := make([]byte, 4096)
	hot := func(i int) Key { return Key{Owner: 1, Object: 1, Index: uint32(i)} }
	for round := 0; round < 4; round++ {
		for i := 0; i < 300; i++ {
			if !c.Get(hot(i), buf) {
				c.Put(hot(i), buf)
			}
		}
	}
	for i := 0; i < 50_000; i++ { // a backup reading everything once
		k := Key{Owner: 2, Object: uint32(i / 1000), Index: uint32(i)}
		if !c.Get(k, buf) {
			c.Put(k, buf)
		}
	}
	kept := 0
	for i := 0; i < 300; i++ {
		if c.Get(hot(i), buf) {
			kept++
		}
	}
	if kept < 270 {
		t.Fatalf("only %d of 300 hot clusters survived a scan", kept)
	}
}

func TestWriteBufferBlocksAtLimitAndWakes(t *testing.T) {
	w, err := NewWriteBuffer(vfs.NewMem(), "/wb", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := w.Reserve(ctx, 1, 1<<20); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Reserve(ctx, 1, 4096) }()
	select {
	case <-done:
		t.Fatal("reserve past the limit did not block")
	case <-time.After(50 * time.Millisecond):
	}
	w.Release(1, 1<<19)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	w.Reserve(ctx, 1, 1<<19-4096) // full again
	if err := w.Reserve(cctx, 1, 4096); err == nil {
		t.Fatal("reserve at a full buffer returned without space")
	}
	if st := w.Stats(); st.BlockedWaits == 0 || st.UsedBytes != 1<<20 {
		t.Fatalf("stats %+v", st)
	}
}

func TestWriteBufferFairShare(t *testing.T) {
	w, _ := NewWriteBuffer(vfs.NewMem(), "/wb", 256<<20)
	ctx := context.Background()
	w.Register(1)
	w.Register(2)
	// owner 1 fills past its share; owner 2 must still get space at once
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		for w.Reserve(c, 1, 1<<20) == nil {
		}
	}()
	wg.Wait()
	if used := w.OwnerUsed(1); used > 200<<20 {
		t.Fatalf("owner 1 took %d MiB of 256", used>>20)
	}
	c, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := w.Reserve(c, 2, 8<<20); err != nil {
		t.Fatalf("owner 2 starved: %v", err)
	}
}

// A retired SCO's file serves the next SCO of its size (blocks written
// before are faster to overwrite); files of up to a sixteenth of the
// limit are kept, outside the quarter for uploaded SCOs, and a restart
// drops them.
func TestRetiredSCOFilesAreReused(t *testing.T) {
	fsys := vfs.NewMem()
	w, err := NewWriteBuffer(fsys, "/flash", 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	const size, spareSCOs = 1 << 20, 4 // a sixteenth of 64 MiB
	old := bytes.Repeat([]byte{7}, 4096)
	for seq := uint32(1); seq <= spareSCOs+2; seq++ {
		f, err := w.CreateSCO(1, seq, size)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteAt(old, 0)
		f.Close()
	}
	for seq := uint32(1); seq <= spareSCOs+2; seq++ {
		if err := w.RetireSCO(1, seq); err != nil {
			t.Fatal(err)
		}
	}
	if seqs, _ := w.ListSCOs(1); len(seqs) != 0 {
		t.Fatalf("retired SCOs still listed: %v", seqs)
	}
	if names, _ := fsys.ReadDir(w.spareDir()); len(names) != spareSCOs {
		t.Fatalf("%d spare files kept, want %d", len(names), spareSCOs)
	}
	// the spares leave the uploaded SCOs' room alone
	if err := w.Reserve(context.Background(), 9, 16*size); err != nil {
		t.Fatal(err)
	}
	w.MarkClean(9, 16*size)
	if ex := w.CleanExcess(9); ex != 0 {
		t.Fatalf("clean excess %d of a quarter of the limit with spare files kept, want 0", ex)
	}
	firstBlock := func(f vfs.File) []byte {
		b := make([]byte, 4096)
		f.ReadAt(b, 0)
		return b
	}
	for i := 0; i < spareSCOs; i++ {
		f, err := w.CreateSCO(2, uint32(10+i), size)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(firstBlock(f), old) {
			t.Fatalf("SCO %d: not a spare file", i)
		}
		f.Close()
	}
	f, err := w.CreateSCO(2, 20, size) // the spares are used up
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(firstBlock(f), old) {
		t.Fatal("more spares than were kept")
	}
	f.WriteAt(old, 0)
	f.Close()
	w.RetireSCO(2, 20)
	// another size (sco_size changed): a new file, and the spare goes
	if f, err = w.CreateSCO(3, 1, 2*size); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(firstBlock(f), old) {
		t.Fatal("a spare file of another size was reused")
	}
	f.Close()
	if names, _ := fsys.ReadDir(w.spareDir()); len(names) != 0 {
		t.Fatalf("spare files of another size kept: %v", names)
	}
	w.RetireSCO(3, 1)
	if _, err := NewWriteBuffer(fsys, "/flash", 64<<20); err != nil {
		t.Fatal(err)
	}
	if names, _ := fsys.ReadDir(w.spareDir()); len(names) != 0 {
		t.Fatalf("a restart kept spare files: %v", names)
	}
}
