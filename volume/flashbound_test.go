package volume

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

// A stream of discards after a quiet spell (a guest's fstrim, rm -rf of
// small files) does not seal an SCO every few records: idleness counts
// unmaps as changes. Flash holds what was written plus the open SCO and
// its spare, and a sealed SCO holding only records takes only their
// space.
func TestDiscardStreamAfterIdleKeepsFlashBounded(t *testing.T) {
	e := newEnv(t)
	const idle = 200 * time.Millisecond
	e.pool.Close(bg)
	e.cfg.SealIdle = idle
	e.open()
	ctx, cancel := hangGuard(t)
	defer cancel()
	v, err := e.pool.Create(ctx, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.WriteAt(ctx, pattern(1<<20, 5), 0); err != nil {
		t.Fatal(err)
	}
	cur := func() uint32 {
		v.mu.Lock()
		defer v.mu.Unlock()
		return v.mu.cur.seq
	}
	// the quiet spell: the idle seal happens once
	for s := cur(); cur() == s; {
		if ctx.Err() != nil {
			t.Fatal("no idle seal")
		}
		time.Sleep(10 * time.Millisecond)
	}
	seq0 := cur()
	allowed := 1 // an idle seal racing the first discard
	last := time.Now()
	for i := 0; i < 1024; i++ {
		if err := v.Discard(ctx, int64(i%256)*4096, 4096); err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		if now.Sub(last) > idle/2 { // a slow machine may idle for real
			allowed++
		}
		last = now
		time.Sleep(time.Millisecond)
	}
	if n := int(cur() - seq0); n > allowed {
		t.Fatalf("%d SCOs sealed during a stream of 1024 discards (allowed %d)", n, allowed)
	}
	if err := v.Seal(); err != nil {
		t.Fatal(err)
	}
	if err := v.WaitUploaded(ctx); err != nil {
		t.Fatal(err)
	}
	sco := e.cfg.SCOSize
	used := e.fs.AllocatedForTesting("/flash/wb")
	if bound := 1<<20 + 2*sco + int64(allowed+2)*(sco/8); used > bound {
		t.Fatalf("write buffer holds %d bytes after 1 MiB of data and a stream of discards (bound %d)", used, bound)
	}
}

// A full flash filesystem refuses writes with ErrNoSpace (ENOSPC to the
// clients) and keeps serving reads; when room returns, writes go on.
func TestFullFlashRefusesWritesAndRecovers(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := hangGuard(t)
	defer cancel()
	v, err := e.pool.Create(ctx, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	data := pattern(2<<20, 3)
	if err := v.WriteAt(ctx, data, 0); err != nil {
		t.Fatal(err)
	}
	e.wb.SetReserve(256 << 20)
	e.fs.SetFreeForTesting(256<<20 + 1<<20) // less than one SCO above the reserve
	var werr error
	for off := int64(2 << 20); off < 64<<20 && werr == nil; off += 1 << 20 {
		werr = v.WriteAt(ctx, pattern(1<<20, byte(off>>20)), off)
	}
	if !errors.Is(werr, ErrNoSpace) {
		t.Fatalf("writes into full flash: %v", werr)
	}
	if got := mustRead(t, v, 0, len(data)); !bytes.Equal(got, data) {
		t.Fatal("reads differ while flash is full")
	}
	e.fs.SetFreeForTesting(0) // room again
	more := pattern(8<<20, 4)
	if err := v.WriteAt(ctx, more, 32<<20); err != nil {
		t.Fatalf("write after room came back: %v", err)
	}
	if got := mustRead(t, v, 32<<20, len(more)); !bytes.Equal(got, more) {
		t.Fatal("data written after room came back differs")
	}
}
