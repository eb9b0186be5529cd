package volume

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// backendBytes is what the vDisk's SCOs take on the backend.
func backendBytes(t *testing.T, e *env, id uint64) int64 {
	t.Helper()
	names, err := e.backend.List(bg, fmt.Sprintf("vp/%016x/sco/", id))
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, name := range names {
		if strings.Contains(name, "/sco/") {
			sz, err := e.backend.Size(bg, name)
			if err != nil {
				t.Fatal(err)
			}
			n += sz
		}
	}
	return n
}

// A vDisk that always has writes not on the backend yet (a busy VM), with
// snapshots taken and deleted in rotation and a scrub pass after each
// round: garbage is freed while the writes go on, so the backend holds at
// most twice the live data (head and kept snapshots) plus two SCOs, and
// the reclaimable bytes a pass reports fall after it frees.
func TestScrubFreesGarbageWhileWritesContinue(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := hangGuard(t)
	defer cancel()
	const size, region = 16 << 20, 4 << 20
	sco := e.cfg.SCOSize
	v, err := e.pool.Create(ctx, size)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(7, 7))
	if err := v.WriteAt(ctx, pattern(size, 1), 0); err != nil {
		t.Fatal(err)
	}
	v.Seal()
	if err := v.WaitUploaded(ctx); err != nil {
		t.Fatal(err)
	}
	const kept, rounds = 2, 24
	perRound := int64(region + 16*4096)
	bound := 2*(size+kept*perRound) + 2*sco
	freed := 0
	for round := 1; round <= rounds; round++ {
		off := int64(r.IntN(size/region)) * region
		if err := v.WriteAt(ctx, pattern(region, byte(round)), off); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 16; i++ {
			if err := v.WriteAt(ctx, pattern(4096, byte(round+i)), int64(r.IntN(size/4096))*4096); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := v.CreateSnapshot(ctx, fmt.Sprintf("s%d", round)); err != nil {
			t.Fatal(err)
		}
		if round > kept {
			if err := v.DeleteSnapshot(ctx, fmt.Sprintf("s%d", round-kept)); err != nil {
				t.Fatal(err)
			}
		}
		// the busy VM: a write the backend has not seen, in the open TLog
		if err := v.WriteAt(ctx, pattern(4096, 99), 0); err != nil {
			t.Fatal(err)
		}
		if err := v.WaitUploaded(ctx); err != nil { // what was sealed so far
			t.Fatal(err)
		}
		res, err := e.pool.Scrub(ctx, ScrubOptions{Pace: 1})
		if err != nil {
			t.Fatal(err)
		}
		freed += res.SCOsDeleted
		used := backendBytes(t, e, v.ID())
		t.Logf("round %d: backend %d KiB, deleted %d, waiting %d, reclaimable %d KiB", round, used>>10, res.SCOsDeleted, res.Waiting, res.ReclaimableBytes>>10)
		if round > 2*kept && used > bound {
			t.Fatalf("round %d: the backend holds %d bytes, over the bound %d (2 x live + 2 SCOs); %d SCOs freed so far",
				round, used, bound, freed)
		}
	}
	if freed == 0 {
		t.Fatal("no SCO freed while the vDisk was written")
	}
	// What a pass leaves waiting, the next one frees while the writes go
	// on: the reclaimable bytes fall. Everything written again, with no
	// snapshot left, makes every older SCO garbage.
	for _, name := range []string{fmt.Sprintf("s%d", rounds-1), fmt.Sprintf("s%d", rounds)} {
		if err := v.DeleteSnapshot(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	if err := v.WriteAt(ctx, pattern(size, 77), 0); err != nil {
		t.Fatal(err)
	}
	var results []ScrubResult
	for pass := 0; pass < 2; pass++ {
		if err := v.WriteAt(ctx, pattern(4096, byte(pass)), 0); err != nil { // still busy
			t.Fatal(err)
		}
		if err := v.WaitUploaded(ctx); err != nil {
			t.Fatal(err)
		}
		res, err := e.pool.Scrub(ctx, ScrubOptions{Pace: 1})
		if err != nil {
			t.Fatal(err)
		}
		results = append(results, res)
	}
	if a, b := results[0], results[1]; a.Waiting == 0 || b.SCOsDeleted == 0 || b.ReclaimableBytes >= a.ReclaimableBytes {
		t.Fatalf("a pass that left %d bytes waiting (%d vDisks), then one that freed %d SCOs and left %d bytes",
			a.ReclaimableBytes, a.Waiting, b.SCOsDeleted, b.ReclaimableBytes)
	}
}
