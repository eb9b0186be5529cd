package volume

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"time"
	"vpool/vfs"
)

func readSnapshot(t *testing.T, v *VDisk, name string) []byte {
	t.Helper()
	s, err := v.OpenSnapshot(name)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	b := make([]byte, s.Size())
	if _, err := s.ReadAt(bg, b, 0); err != nil {
		t.Fatalf("read snapshot %s: %v", name, err)
	}
	return b
}

func countKeys(e *env, kind byte) int {
	n := 0
	e.meta.Scan([]byte{kind}, nil, func(k, v []byte) bool { n++; return true })
	return n
}

// A vDisk much larger than the block-map cache: snapshots read versions
// from the store, pages are evicted and reloaded, a deleted snapshot's
// versions go, and the others survive restarts and a rebuild from the
// backend.
func TestSnapshotsOverManyPages(t *testing.T) {
	e := newEnv(t)
	const size = 64 << 20 // 256 pages; the cache holds 64
	v, err := e.pool.Create(bg, size)
	if err != nil {
		t.Fatal(err)
	}
	id := v.ID()
	r := rand.New(rand.NewPCG(1, 2))
	head := make([]byte, size)
	want := map[string][]byte{}
	scribble := func(n int, seed byte) {
		for i := 0; i < n; i++ {
			off := r.IntN(size/4096) * 4096
			b := pattern(4096*(1+r.IntN(4)), seed+byte(i))
			if off+len(b) > size {
				continue
			}
			if err := e.vdisk(id).WriteAt(bg, b, int64(off)); err != nil {
				t.Fatal(err)
			}
			copy(head[off:], b)
		}
	}
	check := func(when string) {
		t.Helper()
		v := e.vdisk(id)
		for name, w := range want {
			if got := readSnapshot(t, v, name); !bytes.Equal(got, w) {
				t.Fatalf("%s: snapshot %s differs", when, name)
			}
		}
		if got := mustRead(t, v, 0, size); !bytes.Equal(got, head) {
			t.Fatalf("%s: head differs", when)
		}
	}
	for i, name := range []string{"a", "b", "c", "d"} {
		scribble(600, byte(i*50))
		if _, err := e.vdisk(id).CreateSnapshot(bg, name); err != nil {
			t.Fatal(err)
		}
		want[name] = append([]byte(nil), head...)
		if i == 1 { // a discard of a large range in epoch 2
			if err := e.vdisk(id).Discard(bg, 8<<20, 24<<20); err != nil {
				t.Fatal(err)
			}
			clear(head[8<<20 : 32<<20])
		}
	}
	scribble(300, 200)
	check("at once")
	if err := e.vdisk(id).writeBack(bg); err != nil {
		t.Fatal(err)
	}
	before := countKeys(e, metaKeyVersion)
	if err := e.vdisk(id).DeleteSnapshot(bg, "b"); err != nil {
		t.Fatal(err)
	}
	delete(want, "b")
	after := countKeys(e, metaKeyVersion)
	if after >= before {
		t.Fatalf("deleting a snapshot freed no block-map versions (%d, then %d)", before, after)
	}
	check("after deleting b")
	e.restart()
	check("after a restart")
	e.kill()
	check("after kill -9")
	if err := e.vdisk(id).Seal(); err != nil {
		t.Fatal(err)
	}
	if err := e.vdisk(id).WaitUploaded(bg); err != nil {
		t.Fatal(err)
	}
	for _, s := range e.vdisk(id).Snapshots() {
		if !s.OnBackend {
			t.Fatalf("snapshot %s not on the backend after the uploads", s.Name)
		}
	}
	e.wipeFlash()
	check("after a rebuild from the backend")
	if names := snapshotNames(e.vdisk(id)); fmt.Sprint(names) != "[a c d]" {
		t.Fatalf("snapshots %v after the rebuild", names)
	}
	// Deleting every snapshot leaves no versions behind.
	for _, n := range []string{"a", "c", "d"} {
		if err := e.vdisk(id).DeleteSnapshot(bg, n); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.vdisk(id).writeBack(bg); err != nil {
		t.Fatal(err)
	}
	if n := countKeys(e, metaKeyVersion); n != 0 {
		t.Fatalf("%d block-map versions left without snapshots", n)
	}
	want = nil
	check("without snapshots")
}

func snapshotNames(v *VDisk) []string {
	var out []string
	for _, s := range v.Snapshots() {
		out = append(out, s.Name)
	}
	return out
}

// Snapshots taken while writers run hold every write acknowledged before
// the call and none started after it returned.
func TestSnapshotCrashConsistentUnderLoad(t *testing.T) {
	e := newEnv(t)
	const writers = 4
	v, _ := e.pool.Create(bg, 16<<20)
	var acked, started [writers]atomic.Uint64
	ctx, cancel := context.WithCancel(bg)
	var wg sync.WaitGroup
	errc := make(chan error, writers+1)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := make([]byte, 4096)
			for n := uint64(1); ctx.Err() == nil; n++ {
				for i := 0; i < len(b); i += 8 {
					binary.LittleEndian.PutUint64(b[i:], n)
				}
				started[w].Store(n)
				// each writer owns cluster w*64 (its own page) and w*64+1
				if err := v.WriteAt(bg, append(b, b...), int64(w*64*4096)); err != nil {
					errc <- err
					return
				}
				acked[w].Store(n)
			}
		}()
	}
	wg.Add(1)
	go func() { // readers of the head do not disturb it
		defer wg.Done()
		b := make([]byte, 1<<20)
		for ctx.Err() == nil {
			if _, err := v.ReadAt(bg, b, 0); err != nil {
				errc <- err
				return
			}
		}
	}()
	type bounds struct{ lo, hi [writers]uint64 }
	var snaps []bounds
	for i := 0; i < 20; i++ {
		time.Sleep(5 * time.Millisecond)
		var bd bounds
		for w := range writers {
			bd.lo[w] = acked[w].Load()
		}
		if _, err := v.CreateSnapshot(bg, fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
		for w := range writers {
			bd.hi[w] = started[w].Load()
		}
		snaps = append(snaps, bd)
	}
	cancel()
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	for i, bd := range snaps {
		img := readSnapshot(t, v, fmt.Sprint(i))
		for w := range writers {
			a := binary.LittleEndian.Uint64(img[w*64*4096:])
			b := binary.LittleEndian.Uint64(img[(w*64+1)*4096:])
			if a != b {
				t.Fatalf("snapshot %d: writer %d's write is torn (%d, %d)", i, w, a, b)
			}
			if a < bd.lo[w] || a > bd.hi[w] {
				t.Fatalf("snapshot %d: writer %d holds write %d, want %d..%d", i, w, a, bd.lo[w], bd.hi[w])
			}
		}
	}
}

func TestSnapshotErrorsAndInfo(t *testing.T) {
	e := newEnv(t)
	v, _ := e.pool.Create(bg, 16<<20)
	if err := v.WriteAt(bg, pattern(1<<20, 1), 0); err != nil {
		t.Fatal(err)
	}
	s1, err := v.CreateSnapshot(bg, "one")
	if err != nil {
		t.Fatal(err)
	}
	if s1.Written != 1<<20 || s1.Size != 16<<20 || s1.Epoch != 0 {
		t.Fatalf("first snapshot %+v", s1)
	}
	if err := v.WriteAt(bg, pattern(8192, 2), 0); err != nil {
		t.Fatal(err)
	}
	s2, err := v.CreateSnapshot(bg, "")
	if err != nil {
		t.Fatal(err)
	}
	if s2.Written != 8192 || s2.Epoch != 1 || s2.Name == "" {
		t.Fatalf("second snapshot %+v", s2)
	}
	if _, err := v.CreateSnapshot(bg, "one"); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate name: %v", err)
	}
	for _, bad := range []string{".", "..", "a/b", "a@b", " x", string(make([]byte, 201))} {
		if _, err := v.CreateSnapshot(bg, bad); !errors.Is(err, ErrBadName) {
			t.Fatalf("name %q: %v", bad, err)
		}
	}
	if err := v.DeleteSnapshot(bg, "nope"); !errors.Is(err, ErrNoSnapshot) {
		t.Fatalf("delete unknown: %v", err)
	}
	if _, err := v.OpenSnapshot("nope"); !errors.Is(err, ErrNoSnapshot) {
		t.Fatalf("open unknown: %v", err)
	}
	open, err := v.OpenSnapshot("one")
	if err != nil {
		t.Fatal(err)
	}
	if err := v.DeleteSnapshot(bg, "one"); !errors.Is(err, ErrBusy) {
		t.Fatalf("delete while open: %v", err)
	}
	open.Close()
	if _, err := open.ReadAt(bg, make([]byte, 10), 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("read after close: %v", err)
	}
	if err := v.DeleteSnapshot(bg, "one"); err != nil {
		t.Fatal(err)
	}
	// The written count survives a restart.
	if err := e.vdisk(v.ID()).WriteAt(bg, pattern(3*4096, 3), 1<<20); err != nil {
		t.Fatal(err)
	}
	e.restart()
	s3, err := e.vdisk(v.ID()).CreateSnapshot(bg, "three")
	if err != nil {
		t.Fatal(err)
	}
	if s3.Written != 3*4096 {
		t.Fatalf("written since the previous snapshot across a restart: %d", s3.Written)
	}
	// Deleting the vDisk leaves no metadata, versions included.
	if err := e.vdisk(v.ID()).WriteAt(bg, pattern(1<<20, 4), 0); err != nil {
		t.Fatal(err)
	}
	if err := e.vdisk(v.ID()).writeBack(bg); err != nil {
		t.Fatal(err)
	}
	if countKeys(e, metaKeyVersion) == 0 {
		t.Fatal("no block-map versions stored")
	}
	if err := e.pool.Delete(bg, v.ID()); err != nil {
		t.Fatal(err)
	}
	if n := e.meta.Len() + e.cat.Len(); n != 0 {
		t.Fatalf("metadata keeps %d keys", n)
	}
}

// A rollback cut short at any step (after the record, or after some pages
// of the block map) is finished at the next start; so is a rebuild from
// the backend after it.
func TestRollbackCrashAtEachStep(t *testing.T) {
	for _, stop := range []string{"rollback record", "page1", "page5", "none"} {
		t.Run(stop, func(t *testing.T) {
			e := newEnv(t)
			const size = 32 << 20
			v, _ := e.pool.Create(bg, size)
			id := v.ID()
			a := pattern(size, 1)
			if err := v.WriteAt(bg, a, 0); err != nil {
				t.Fatal(err)
			}
			if _, err := v.CreateSnapshot(bg, "a"); err != nil {
				t.Fatal(err)
			}
			if err := v.WriteAt(bg, pattern(size/2, 9), size/4); err != nil {
				t.Fatal(err)
			}
			if _, err := v.CreateSnapshot(bg, "b"); err != nil {
				t.Fatal(err)
			}
			if err := v.Discard(bg, 0, size/8); err != nil {
				t.Fatal(err)
			}
			if err := v.Resize(bg, size*2); err != nil {
				t.Fatal(err)
			}
			if err := v.WriteAt(bg, pattern(1<<20, 7), size+5<<20); err != nil {
				t.Fatal(err)
			}
			crashAt(stop, "rollback page", "page")
			err := v.Rollback(bg, "a")
			crashHook = nil
			if stop == "none" {
				if err != nil {
					t.Fatal(err)
				}
			} else {
				if err == nil {
					t.Fatalf("the rollback did not stop at %s", stop)
				}
				e.kill()
			}
			check := func(when string) {
				t.Helper()
				v := e.vdisk(id)
				if v.Size() != size {
					t.Fatalf("%s: size %d", when, v.Size())
				}
				if got := mustRead(t, v, 0, size); !bytes.Equal(got, a) {
					t.Fatalf("%s: the vDisk is not what snapshot a holds", when)
				}
				if got := readSnapshot(t, v, "a"); !bytes.Equal(got, a) {
					t.Fatalf("%s: snapshot a changed", when)
				}
				if names := fmt.Sprint(snapshotNames(v)); names != "[a]" {
					t.Fatalf("%s: snapshots %s", when, names)
				}
				if v.Allocated() != size {
					t.Fatalf("%s: allocated %d", when, v.Allocated())
				}
			}
			check("after the rollback")
			// writes go on, and a snapshot after the rollback is new
			b := pattern(1<<20, 42)
			if err := e.vdisk(id).WriteAt(bg, b, 3<<20); err != nil {
				t.Fatal(err)
			}
			if _, err := e.vdisk(id).CreateSnapshot(bg, "c"); err != nil {
				t.Fatal(err)
			}
			copy(a[3<<20:], b)
			e.vdisk(id).Seal()
			if err := e.vdisk(id).WaitUploaded(bg); err != nil {
				t.Fatal(err)
			}
			e.wipeFlash()
			v = e.vdisk(id)
			if got := mustRead(t, v, 0, size); !bytes.Equal(got, a) {
				t.Fatal("after a rebuild from the backend: the TLogs the rollback undid were replayed")
			}
			if got := readSnapshot(t, v, "c"); !bytes.Equal(got, a) {
				t.Fatal("after a rebuild from the backend: snapshot c")
			}
		})
	}
}

func TestRollbackRefused(t *testing.T) {
	e := newEnv(t)
	v, _ := e.pool.Create(bg, 8<<20)
	v.CreateSnapshot(bg, "a")
	v.CreateSnapshot(bg, "b")
	if err := v.Rollback(bg, "nope"); !errors.Is(err, ErrNoSnapshot) {
		t.Fatalf("unknown snapshot: %v", err)
	}
	s, _ := v.OpenSnapshot("b")
	if err := v.Rollback(bg, "a"); !errors.Is(err, ErrBusy) {
		t.Fatalf("a later snapshot is open: %v", err)
	}
	s.Close()
	v.SetTemplate(bg)
	if err := v.Rollback(bg, "a"); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("template: %v", err)
	}
}

// Overwriting a region four times leaves three copies of garbage: a scrub
// frees at least 90% of it, keeps what a snapshot reads until the
// snapshot goes, and a rebuild from the backend still reads everything.
func TestScrubFreesGarbage(t *testing.T) {
	e := newEnv(t)
	const region = 32 << 20 // 8 SCOs of 4 MiB
	v, _ := e.pool.Create(bg, region)
	id := v.ID()
	var want []byte
	for round := 0; round < 4; round++ {
		want = pattern(region, byte(round*10+1))
		if err := v.WriteAt(bg, want, 0); err != nil {
			t.Fatal(err)
		}
		if round == 1 {
			if _, err := v.CreateSnapshot(bg, "keep"); err != nil {
				t.Fatal(err)
			}
		}
	}
	snap := pattern(region, 11)
	v.Seal()
	if err := v.WaitUploaded(bg); err != nil {
		t.Fatal(err)
	}
	garbage := int64(3 * region)
	// a dry run counts what the pass then frees, and frees nothing
	dry := func() ScrubResult {
		t.Helper()
		before, _ := e.backend.List(bg, "vp/")
		res, err := e.pool.Scrub(bg, ScrubOptions{Pace: 1, DryRun: true})
		if err != nil {
			t.Fatal(err)
		}
		if after, _ := e.backend.List(bg, "vp/"); len(after) != len(before) || res.BytesFreed != 0 {
			t.Fatalf("a dry run changed the backend: %d objects before, %d after (%+v)", len(before), len(after), res)
		}
		if res.Reclaimable[FormatID(id)] != res.ReclaimableBytes {
			t.Fatalf("reclaimable by vDisk %v, in all %d", res.Reclaimable, res.ReclaimableBytes)
		}
		return res
	}
	d := dry()
	res, err := e.pool.Scrub(bg, ScrubOptions{Pace: 1})
	if err != nil {
		t.Fatal(err)
	}
	if d.ReclaimableBytes-d.GarbageBytes != res.BytesFreed {
		t.Fatalf("a dry run counted %d bytes in SCOs nothing reads, the pass freed %d", d.ReclaimableBytes-d.GarbageBytes, res.BytesFreed)
	}
	if res.ReclaimableBytes != res.GarbageBytes {
		t.Fatalf("a pass left %d reclaimable bytes beyond the partly live SCOs' %d", res.ReclaimableBytes, res.GarbageBytes)
	}
	if res.BytesFreed < (garbage-region)*9/10 || res.BytesFreed > garbage-region {
		t.Fatalf("with a snapshot holding one round: freed %d of %d garbage bytes", res.BytesFreed, garbage-region)
	}
	if got := mustRead(t, v, 0, region); !bytes.Equal(got, want) {
		t.Fatal("the head changed in a scrub")
	}
	if got := readSnapshot(t, v, "keep"); !bytes.Equal(got, snap) {
		t.Fatal("the snapshot changed in a scrub")
	}
	if err := v.DeleteSnapshot(bg, "keep"); err != nil {
		t.Fatal(err)
	}
	// the pass frees the snapshot's SCOs once the manifest without it is
	// on the backend (a dry run does not wait for that)
	if err := v.WaitUploaded(bg); err != nil {
		t.Fatal(err)
	}
	d = dry()
	res2, err := e.pool.Scrub(bg, ScrubOptions{Pace: 1})
	if err != nil {
		t.Fatal(err)
	}
	if d.ReclaimableBytes-d.GarbageBytes != res2.BytesFreed || res2.BytesFreed < region*9/10 {
		t.Fatalf("after the snapshot's delete a dry run counted %d bytes in SCOs nothing reads, the pass freed %d", d.ReclaimableBytes-d.GarbageBytes, res2.BytesFreed)
	}
	if total := res.BytesFreed + res2.BytesFreed; total < garbage*9/10 {
		t.Fatalf("freed %d of %d garbage bytes", total, garbage)
	}
	t.Logf("freed %d + %d of %d garbage bytes", res.BytesFreed, res2.BytesFreed, garbage)
	e.wipeFlash()
	if got := mustRead(t, e.vdisk(id), 0, region); !bytes.Equal(got, want) {
		t.Fatal("after a rebuild from the backend")
	}
}

// A scrub killed at any step (after the scan, after some deletes) leaves
// every vDisk and snapshot reading the same, and the next pass finishes.
func TestScrubCrashAtEachStep(t *testing.T) {
	for _, stop := range []string{"scrub counted", "delete1", "delete3"} {
		t.Run(stop, func(t *testing.T) {
			e := newEnv(t)
			const size = 16 << 20
			v, _ := e.pool.Create(bg, size)
			id := v.ID()
			var want, snap []byte
			for round := 0; round < 3; round++ {
				want = pattern(size, byte(round+1))
				v.WriteAt(bg, want, 0)
				if round == 0 {
					snap = want
					v.CreateSnapshot(bg, "s")
				}
			}
			v.Seal()
			if err := v.WaitUploaded(bg); err != nil {
				t.Fatal(err)
			}
			crashAt(stop, "scrub delete", "delete")
			check := scrubCrashed(t, e, id, ScrubOptions{Pace: 1}, stop, want, snap)
			// garbage waits until what made it garbage is on the backend
			if err := e.vdisk(id).WaitUploaded(bg); err != nil {
				t.Fatal(err)
			}
			res, err := e.pool.Scrub(bg, ScrubOptions{Pace: 1})
			if err != nil {
				t.Fatal(err)
			}
			if names, _ := e.backend.List(bg, fmt.Sprintf("vp/%016x/sco/", id)); len(names) > 8 {
				t.Fatalf("%d SCOs left after the next pass (%+v); 2 rounds of 4 are live", len(names), res)
			}
			check("after the next pass")
			e.wipeFlash()
			check("after a rebuild from the backend")
		})
	}
}

// scrubCrashed runs a scrub pass that the crash hook stops at stop, kills
// and reopens the pool, and returns a check that the vDisk id and its
// snapshot "s" read want and snap, run once at once.
func scrubCrashed(t *testing.T, e *env, id uint64, o ScrubOptions, stop string, want, snap []byte) func(when string) {
	t.Helper()
	_, err := e.pool.Scrub(bg, o)
	crashHook = nil
	if err == nil {
		t.Fatalf("the scrub did not stop at %s", stop)
	}
	e.kill()
	check := func(when string) {
		t.Helper()
		if got := mustRead(t, e.vdisk(id), 0, len(want)); !bytes.Equal(got, want) {
			t.Fatalf("%s: the vDisk changed", when)
		}
		if got := readSnapshot(t, e.vdisk(id), "s"); !bytes.Equal(got, snap) {
			t.Fatalf("%s: the snapshot changed", when)
		}
	}
	check("after the crash")
	return check
}

// A compaction killed at any step (after some pages rewritten, after all,
// at the frees that follow) leaves the vDisk and its snapshot reading the
// same, after a restart and after a rebuild from the backend, and the
// next pass finishes the job.
func TestScrubCompactionCrashAtEachStep(t *testing.T) {
	for _, stop := range []string{"rewrite1", "rewrite7", "scrub compacted", "delete1", "delete2"} {
		t.Run(stop, func(t *testing.T) {
			e := newEnv(t)
			const size = 16 << 20
			v, _ := e.pool.Create(bg, size)
			id := v.ID()
			want := pattern(size, 1)
			v.WriteAt(bg, want, 0)
			v.CreateSnapshot(bg, "s")
			snap := append([]byte(nil), want...)
			r := rand.New(rand.NewPCG(7, 8))
			for i := 0; i < 3000; i++ { // most of the first round's clusters
				c := r.IntN(size / 4096)
				b := pattern(4096, byte(i))
				v.WriteAt(bg, b, int64(c)*4096)
				copy(want[c*4096:], b)
			}
			for i := 0; i < 1500; i++ { // and some of the overwrites'
				c := r.IntN(size / 4096)
				b := pattern(4096, byte(i+3))
				v.WriteAt(bg, b, int64(c)*4096)
				copy(want[c*4096:], b)
			}
			v.Seal()
			if err := v.WaitUploaded(bg); err != nil {
				t.Fatal(err)
			}
			if stop == "delete1" || stop == "delete2" {
				// the frees after the compaction (the first pass's free
				// step finds nothing wholly dead here)
				n := 0
				crashHook = func(step string) error {
					if step == "scrub compacted" {
						n = 1
					}
					if step == "scrub delete" && n > 0 {
						if fmt.Sprintf("delete%d", n) == stop {
							return errors.New("crash")
						}
						n++
					}
					return nil
				}
			} else {
				crashAt(stop, "scrub rewrite", "rewrite")
			}
			check := scrubCrashed(t, e, id, ScrubOptions{Pace: 1, Threshold: 0.5, Wait: true}, stop, want, snap)
			v = e.vdisk(id)
			v.Seal()
			if err := v.WaitUploaded(bg); err != nil {
				t.Fatal(err)
			}
			before, _ := e.backend.List(bg, fmt.Sprintf("vp/%016x/sco/", id))
			res, err := e.pool.Scrub(bg, ScrubOptions{Pace: 1, Threshold: 0.5, Wait: true})
			if err != nil {
				t.Fatal(err)
			}
			after, _ := e.backend.List(bg, fmt.Sprintf("vp/%016x/sco/", id))
			t.Logf("next pass: %d SCOs before, %d after (%+v)", len(before), len(after), res)
			if res.ReclaimableBytes >= int64(size) {
				t.Fatalf("the next pass left %d bytes of garbage", res.ReclaimableBytes)
			}
			check("after the next pass")
			e.wipeFlash()
			check("after a rebuild from the backend")
		})
	}
}

// An SCO made garbage by writes not yet on the backend stays until they
// are: a rebuild from the backend alone would still map it.
func TestScrubWaitsForTheBackend(t *testing.T) {
	e := newEnv(t)
	const size = 8 << 20
	v, _ := e.pool.Create(bg, size)
	old := pattern(size, 1)
	v.WriteAt(bg, old, 0)
	v.Seal()
	if err := v.WaitUploaded(bg); err != nil {
		t.Fatal(err)
	}
	e.backend.SetDelayForTesting(time.Hour) // the overwrite does not reach the backend
	v.WriteAt(bg, pattern(size, 2), 0)
	v.Seal()
	res, err := e.pool.Scrub(bg, ScrubOptions{Pace: 1})
	if err != nil {
		t.Fatal(err)
	}
	if res.SCOsDeleted != 0 || res.Waiting != 1 {
		t.Fatalf("scrub before the overwrite is uploaded: %+v", res)
	}
	e.pool.AbandonForTesting() // and local flash is lost
	e.backend.SetDelayForTesting(0)
	e.fs = vfs.NewMem()
	e.wipeMeta()
	e.open()
	if got := mustRead(t, e.vdisk(v.ID()), 0, size); !bytes.Equal(got, old) {
		t.Fatal("after a rebuild from the backend: not the uploaded data")
	}
}

// Random overwrites leave SCOs partly live: a scrub with a threshold
// rewrites their live clusters and frees them, and the data and a
// snapshot (which keeps the first data's SCOs live) read the same.
func TestScrubCompactsPartlyLive(t *testing.T) {
	e := newEnv(t)
	const size = 32 << 20
	v, _ := e.pool.Create(bg, size)
	want := pattern(size, 1)
	v.WriteAt(bg, want, 0)
	v.CreateSnapshot(bg, "s")
	snap := append([]byte(nil), want...)
	r := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 6000; i++ { // about 3/4 of the clusters overwritten
		c := r.IntN(size / 4096)
		b := pattern(4096, byte(i))
		v.WriteAt(bg, b, int64(c)*4096)
		copy(want[c*4096:], b)
	}
	// overwrite the overwrites, so that their SCOs are partly live
	for i := 0; i < 3000; i++ {
		c := r.IntN(size / 4096)
		b := pattern(4096, byte(i+7))
		v.WriteAt(bg, b, int64(c)*4096)
		copy(want[c*4096:], b)
	}
	v.Seal()
	if err := v.WaitUploaded(bg); err != nil {
		t.Fatal(err)
	}
	before, _ := e.backend.List(bg, fmt.Sprintf("vp/%016x/sco/", v.ID()))
	res, err := e.pool.Scrub(bg, ScrubOptions{Pace: 1, Threshold: 0.5, Wait: true})
	if err != nil {
		t.Fatal(err)
	}
	after, _ := e.backend.List(bg, fmt.Sprintf("vp/%016x/sco/", v.ID()))
	t.Logf("%d SCOs before, %d after: %+v", len(before), len(after), res)
	if res.SCOsRewritten == 0 || len(after) >= len(before) {
		t.Fatalf("nothing compacted: %d SCOs before, %d after (%+v)", len(before), len(after), res)
	}
	if got := mustRead(t, v, 0, size); !bytes.Equal(got, want) {
		t.Fatal("the vDisk changed in a compaction")
	}
	if got := readSnapshot(t, v, "s"); !bytes.Equal(got, snap) {
		t.Fatal("the snapshot changed in a compaction")
	}
	e.wipeFlash()
	if got := mustRead(t, e.vdisk(v.ID()), 0, size); !bytes.Equal(got, want) {
		t.Fatal("after a rebuild from the backend")
	}
	if got := readSnapshot(t, e.vdisk(v.ID()), "s"); !bytes.Equal(got, snap) {
		t.Fatal("the snapshot after a rebuild from the backend")
	}
}

// Scrubs (with compaction) run back to back while a writer overwrites
// at random, a snapshot is taken and another deleted, and a small
// block-map cache makes pages move between memory, heads and versions
// all the time: no reference is missed (a deleted SCO that is still read
// fails the reads below), and the head and the snapshot read as the
// model says, also after a rebuild from the backend.
func TestScrubWhileWriting(t *testing.T) {
	e := newEnv(t)
	e.pool.cfg.UploadDefer = -1 // uploads (and so garbage) while writing
	const size = 32 << 20
	v, _ := e.pool.Create(bg, size)
	want := pattern(size, 1)
	if err := v.WriteAt(bg, want, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := v.CreateSnapshot(bg, "a"); err != nil {
		t.Fatal(err)
	}
	var snapB []byte
	done := make(chan struct{})
	var passes, freed atomic.Int64
	scrubErr := make(chan error, 1)
	go func() {
		defer close(scrubErr)
		for {
			select {
			case <-done:
				return
			default:
			}
			res, err := e.pool.Scrub(bg, ScrubOptions{Pace: 1, Threshold: 0.5})
			if err != nil {
				scrubErr <- err
				return
			}
			passes.Add(1)
			freed.Add(res.BytesFreed)
		}
	}()
	r := rand.New(rand.NewPCG(5, 6))
	for i := 0; i < 6000; i++ {
		n := 4096 * (1 + r.IntN(4))
		off := int64(r.IntN((size-n)/4096)) * 4096
		b := pattern(n, byte(i))
		if err := v.WriteAt(bg, b, off); err != nil {
			t.Fatal(err)
		}
		copy(want[off:], b)
		switch i {
		case 2000:
			if _, err := v.CreateSnapshot(bg, "b"); err != nil {
				t.Fatal(err)
			}
			snapB = append([]byte(nil), want...)
		case 3500:
			if err := v.DeleteSnapshot(bg, "a"); err != nil {
				t.Fatal(err)
			}
		}
		if i%1000 == 0 {
			v.Seal()
		}
		if i%500 == 0 { // reads of the whole vDisk meanwhile
			if got := mustRead(t, v, 0, size); !bytes.Equal(got, want) {
				t.Fatalf("after %d writes the vDisk reads wrong", i)
			}
		}
	}
	close(done)
	if err := <-scrubErr; err != nil {
		t.Fatal(err)
	}
	v.Seal()
	if err := v.WaitUploaded(bg); err != nil {
		t.Fatal(err)
	}
	res, err := e.pool.Scrub(bg, ScrubOptions{Pace: 1, Threshold: 0.5, Wait: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d passes while writing freed %d bytes; the last freed %d", passes.Load(), freed.Load(), res.BytesFreed)
	if passes.Load() < 3 || freed.Load() == 0 {
		t.Fatalf("the scrubs did not overlap the writes: %d passes, %d bytes freed", passes.Load(), freed.Load())
	}
	if got := mustRead(t, v, 0, size); !bytes.Equal(got, want) {
		t.Fatal("the vDisk reads wrong after the scrubs")
	}
	if got := readSnapshot(t, v, "b"); !bytes.Equal(got, snapB) {
		t.Fatal("the snapshot reads wrong after the scrubs")
	}
	e.wipeFlash()
	v = e.vdisk(v.ID())
	if got := mustRead(t, v, 0, size); !bytes.Equal(got, want) {
		t.Fatal("after a rebuild from the backend")
	}
	if got := readSnapshot(t, v, "b"); !bytes.Equal(got, snapB) {
		t.Fatal("the snapshot after a rebuild from the backend")
	}
}

// Changes counts every change to what the vDisk reads, and nothing else:
// the gateway's read-ahead trusts data read while it stood still.
func TestChangesCountsWhatReadsSee(t *testing.T) {
	e := newEnv(t)
	v, err := e.pool.Create(bg, 8<<20)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	steps := []struct {
		what    string
		do      func() error
		changes bool
	}{
		{"write", func() error { return v.WriteAt(bg, pattern(1<<20, 1), 0) }, true},
		{"read", func() error { _, err := v.ReadAt(bg, buf, 0); return err }, false},
		{"flush", func() error { return v.Flush(bg) }, false},
		{"snapshot", func() error { _, err := v.CreateSnapshot(bg, "a"); return err }, false},
		{"write after the snapshot", func() error { return v.WriteAt(bg, pattern(1<<20, 2), 0) }, true},
		{"discard", func() error { return v.Discard(bg, 0, 1<<20) }, true},
		{"shrink", func() error { return v.Resize(bg, 4<<20) }, true},
		{"grow", func() error { return v.Resize(bg, 8<<20) }, true},
		{"rollback", func() error { return v.Rollback(bg, "a") }, true},
		{"read after the rollback", func() error { _, err := v.ReadAt(bg, buf, 0); return err }, false},
	}
	for _, s := range steps {
		before := v.Changes()
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.what, err)
		}
		if changed := v.Changes() != before; changed != s.changes {
			t.Fatalf("%s: Changes moved: %v, want %v", s.what, changed, s.changes)
		}
	}
	if !bytes.Equal(buf, pattern(1<<20, 1)) {
		t.Fatal("the rollback did not bring back the snapshot's data")
	}
}
