package objstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// heal runs one pass of kind to its end, synchronously.
func heal(t *testing.T, s *EC, dir, kind string) *PassStatus {
	t.Helper()
	h := NewHealer(s, filepath.Join(dir, "pass.json"), 0, nil)
	st := &PassStatus{Kind: kind, Started: time.Now()}
	h.run(context.Background(), st)
	if st.Error != "" {
		t.Fatalf("%s pass: %s", kind, st.Error)
	}
	return st
}

// putObjects writes n objects of random sizes (some of many stripes).
func putObjects(t *testing.T, s *EC, r *rand.Rand, n int) map[string][]byte {
	want := map[string][]byte{}
	for i := range n {
		name := fmt.Sprintf("p/v/sco/%03d", i)
		want[name] = randBytes(r, 1+r.IntN(60_000))
		put(t, s, name, want[name])
	}
	return want
}

// checkWhole asserts every stripe of every object has k+m good fragments
// on distinct ASDs.
func checkWhole(t *testing.T, s *EC, want map[string][]byte) {
	t.Helper()
	for name := range want {
		s.geo.Forget(name)
		g, err := s.geometry(context.Background(), name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for st := 0; st < g.stripes; st++ {
			seen := map[uint16]bool{}
			for i := 0; i < g.k+g.m; i++ {
				loc := g.locations(st, i) &^ fragSuffixNew
				if loc == 0 || seen[loc] {
					t.Fatalf("%s stripe %d fragment %d: location %d (seen %v)", name, st, i, loc, seen)
				}
				seen[loc] = true
				if _, err := s.readFragment(name, g, st, i, g.fragLen(st), true); err != nil {
					t.Fatalf("%s stripe %d fragment %d: %v", name, st, i, err)
				}
			}
		}
	}
}

// Promise 5 through a loss: lose one ASD of a 2+1 pool, repair onto the
// spare, then lose another: everything reads back.
func TestRepairAfterLosingAnASD(t *testing.T) {
	dirs := tempDirs(t, 4)
	p := Preset{Data: 2, Parity: 1, FragmentSize: 8192}
	s, _ := OpenEC(dirs, p, nil)
	pool := s.PoolID()
	want := putObjects(t, s, rand.New(rand.NewPCG(1, 2)), 30)
	os.RemoveAll(dirs[0]) // lost
	s, _ = OpenECPool(dirs, p, pool, nil)
	st := heal(t, s, t.TempDir(), PassRepair)
	if st.Damaged == 0 || st.Repaired != st.Damaged || st.Unrepairable != 0 || st.Checked != 30 {
		t.Fatalf("repair pass: %+v", st)
	}
	checkWhole(t, s, want)
	again := heal(t, s, t.TempDir(), PassRepair)
	if again.Damaged != 0 || again.BytesWritten != 0 {
		t.Fatalf("a second pass found work: %+v", again)
	}
	os.RemoveAll(dirs[1]) // and another
	s, _ = OpenECPool(dirs, p, pool, nil)
	for name, data := range want {
		mustReadEC(t, s, name, data)
	}
}

// Verify finds every corrupt fragment (bit rot) and rewrites it; reads
// afterwards need no decoding.
func TestVerifyFindsAndFixesCorruption(t *testing.T) {
	dirs := tempDirs(t, 3)
	p := Preset{Data: 2, Parity: 1, FragmentSize: 8192}
	s, _ := OpenEC(dirs, p, nil)
	r := rand.New(rand.NewPCG(3, 4))
	want := putObjects(t, s, r, 30)
	var files []string
	for _, d := range dirs {
		filepath.Walk(filepath.Join(d, "objects"), func(p string, fi os.FileInfo, err error) error {
			if err == nil && fi.Mode().IsRegular() && fi.Size() > headerSize {
				files = append(files, p)
			}
			return nil
		})
	}
	corrupted := map[string]bool{} // objects
	for _, i := range r.Perm(len(files))[:12] {
		f := files[i]
		fi, _ := os.Stat(f)
		b, _ := os.ReadFile(f)
		b[headerSize+r.Int64N(fi.Size()-headerSize)] ^= 1 << r.IntN(8)
		os.WriteFile(f, b, 0o600)
		corrupted[filepath.Base(filepath.Dir(f))] = true
	}
	s, _ = OpenEC(dirs, p, nil)
	if st := heal(t, s, t.TempDir(), PassRepair); st.Damaged != 0 {
		t.Fatalf("a repair pass (presence only) read the blocks: %+v", st)
	}
	st := heal(t, s, t.TempDir(), PassVerify)
	if st.Damaged != int64(len(corrupted)) || st.Repaired != st.Damaged || st.Fragments != 12 {
		t.Fatalf("verify: %+v, want %d objects and 12 fragments", st, len(corrupted))
	}
	fresh, _ := OpenEC(dirs, p, nil)
	for name, data := range want {
		mustReadEC(t, fresh, name, data)
	}
	if fresh.RepairedReads() != 0 {
		t.Fatalf("%d reads still decoded after verify", fresh.RepairedReads())
	}
	checkWhole(t, fresh, want)
}

// A pass that dies at any object goes on from its checkpoint after the
// restart: objects done before are not looked at again, and the pass
// ends with every object whole.
func TestPassResumesAfterACrashAtEveryStep(t *testing.T) {
	const n = 8
	for crashAt := 0; crashAt < n; crashAt++ {
		dirs := tempDirs(t, 4)
		p := Preset{Data: 2, Parity: 1, FragmentSize: 8192}
		s, _ := OpenEC(dirs, p, nil)
		pool := s.PoolID()
		want := putObjects(t, s, rand.New(rand.NewPCG(uint64(crashAt), 9)), n)
		os.RemoveAll(dirs[2])
		s, _ = OpenECPool(dirs, p, pool, nil)
		file := filepath.Join(t.TempDir(), "pass.json")
		ctx, crash := context.WithCancel(context.Background())
		h := NewHealer(s, file, 0, nil)
		h.workers = 1 // objects end in order: the count below is exact
		seen := 0
		h.stepHook = func(string) error {
			if seen == crashAt {
				crash() // the process dies here
				return context.Canceled
			}
			seen++
			return nil
		}
		h.start <- PassRepair
		h.Run(ctx, 0) // returns once the crash ends ctx
		// restart: a new process on the same checkpoint
		s, _ = OpenECPool(dirs, p, pool, nil)
		h2 := NewHealer(s, file, 0, nil)
		h2.workers = 1
		var again []string
		h2.stepHook = func(name string) error { again = append(again, name); return nil }
		ctx2, stop := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { h2.Run(ctx2, 0); close(done) }()
		var last *PassStatus
		for deadline := time.Now().Add(time.Minute); last == nil || last.Finished.IsZero(); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("crash at object %d: the resumed pass did not end", crashAt)
			}
			_, last = h2.Status()
		}
		stop()
		<-done
		if len(again) != n-crashAt || last.Resumed != 1 || last.Checked != n {
			t.Fatalf("crash at object %d: resumed pass looked at %d objects (%v), status %+v; want %d", crashAt, len(again), again, last, n-crashAt)
		}
		checkWhole(t, s, want)
	}
}

// The pacer sleeps as long as the bytes are ahead of the rate, on a fake
// clock: no wall time in the test.
func TestPacer(t *testing.T) {
	now := time.Unix(0, 0)
	var slept time.Duration
	p := &pacer{rate: 1 << 20, start: now, now: func() time.Time { return now }, sleep: func(_ context.Context, d time.Duration) error {
		slept += d
		now = now.Add(d)
		return nil
	}}
	for range 10 {
		p.Wait(context.Background(), 512<<10)
	}
	if slept != 5*time.Second {
		t.Fatalf("5 MiB at 1 MiB/s slept %s, want 5s", slept)
	}
	now = now.Add(10 * time.Second) // idle: the rate is kept over the whole pass
	slept = 0
	p.Wait(context.Background(), 1<<20)
	if slept != 0 {
		t.Fatalf("slept %s after idling", slept)
	}
	if err := (&pacer{rate: 1, start: now, now: func() time.Time { return now }, sleep: func(ctx context.Context, d time.Duration) error {
		return context.Canceled
	}}).Wait(context.Background(), 10); !errors.Is(err, context.Canceled) {
		t.Fatalf("pacer wait with its context ended: %v", err)
	}
	_ = bytes.MinRead
}

// An ASD added to a full pool gets its share by a rebalance pass; an ASD
// drained gives all of its fragments to the others, after which it can
// leave the list with nothing lost; a drain that would leave fewer than
// k+m writable ASDs is refused.
func TestRebalanceAndDrain(t *testing.T) {
	dirs := tempDirs(t, 4)
	p := Preset{Data: 2, Parity: 1, FragmentSize: 8192}
	s, _ := OpenEC(dirs[:3], p, nil)
	pool := s.PoolID()
	want := putObjects(t, s, rand.New(rand.NewPCG(8, 8)), 40)
	s, _ = OpenECPool(dirs, p, pool, nil) // a fourth disk in the list
	if err := s.Join(dirs[3]); err != nil {
		t.Fatal(err)
	}
	st := heal(t, s, t.TempDir(), PassRebalance)
	if st.Moved == 0 || st.Unrepairable != 0 {
		t.Fatalf("rebalance: %+v", st)
	}
	var total, lo, hi int64 = 0, 1 << 62, 0
	for _, d := range dirs {
		n := st.Held[d]
		total += n
		lo, hi = min(lo, n), max(hi, n)
	}
	if hi-lo > total/20+2 {
		t.Fatalf("after the rebalance the ASDs hold %v: uneven", st.Held)
	}
	checkWhole(t, s, want)

	if err := s.Drain(dirs[0]); err != nil {
		t.Fatal(err)
	}
	if err := s.Drain(dirs[1]); !errors.Is(err, ErrNoASD) {
		t.Fatalf("a second drain leaving 2 ASDs for 2+1: %v", err)
	}
	put(t, s, "p/v/sco/new", want["p/v/sco/000"]) // never onto the draining ASD
	want["p/v/sco/new"] = want["p/v/sco/000"]
	st = heal(t, s, t.TempDir(), PassRepair)
	if st.Held[dirs[0]] != 0 || st.Moved == 0 {
		t.Fatalf("drain: %+v", st)
	}
	if n := countFiles(t, filepath.Join(dirs[0], "objects")); n != 0 {
		t.Fatalf("%d fragment files left on the drained ASD", n)
	}
	// a restart goes on draining it (the state is in its identity)
	if s2, _ := OpenECPool(dirs, p, pool, nil); s2.state(0) != ASDDraining {
		t.Fatalf("after a restart the drained ASD is %s", s2.state(0))
	}
	gone, _ := OpenECPool(dirs[1:], p, pool, nil)
	for name, data := range want {
		mustReadEC(t, gone, name, data)
	}
	if gone.RepairedReads() != 0 {
		t.Fatal("reads decoded after the drained ASD left: fragments were lost")
	}
}

// A disk pulled while the store serves is found missing by the next look,
// and once it has been missing for Healer.After a repair pass rebuilds its
// fragments on the spare ASD, without being asked.
func TestLostASDRepairedWithoutAsking(t *testing.T) {
	dirs := tempDirs(t, 4)
	p := Preset{Data: 2, Parity: 1, FragmentSize: 8192}
	s, _ := OpenEC(dirs, p, nil)
	want := putObjects(t, s, rand.New(rand.NewPCG(6, 6)), 12)
	s.asds.every = 0
	h := NewHealer(s, filepath.Join(t.TempDir(), "pass.json"), 0, nil)
	h.After, h.watchEvery = time.Millisecond, time.Millisecond
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.Run(ctx, 0); close(done) }()
	defer func() { stop(); <-done }()
	os.RemoveAll(dirs[1]) // pulled
	var last *PassStatus
	for deadline := time.Now().Add(time.Minute); last == nil; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no repair pass a minute after the ASD went missing")
		}
		_, last = h.Status()
	}
	if last.Kind != PassRepair || last.Repaired == 0 || last.Unrepairable != 0 {
		t.Fatalf("automatic pass: %+v", last)
	}
	if st := s.state(1); st != ASDMissing {
		t.Fatalf("pulled ASD: %s", st)
	}
	checkWhole(t, s, want)
}
