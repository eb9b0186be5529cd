package objstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"vpool/vfs"
)

// A pass walks every object of the EC store in name order and repairs it
// (RepairObject): a repair pass checks that each fragment is there, a
// verify pass reads every fragment and checks its CRCs (bit rot). Passes
// are paced (bytes a second: written for repair, read for verify),
// checkpointed (the last object done, every second, durably), and a pass
// that a restart interrupted goes on from its checkpoint: a restart never
// starts over. Objects a read had to decode, or that were written with
// less redundancy, are repaired soon after, one by one.

// Pass kinds.
const (
	PassRepair = "repair"
	PassVerify = "verify"
	// PassRebalance is a repair pass that also evens out the fragments
	// over the ASDs (after one joined); it counts them first.
	PassRebalance = "rebalance"
)

// PassStatus is a pass's progress.
type PassStatus struct {
	Kind         string    `json:"kind"`
	Started      time.Time `json:"started"`
	Finished     time.Time `json:"finished,omitzero"`
	Objects      int64     `json:"objects"`      // in the pass
	Checked      int64     `json:"checked"`      // looked at so far
	Damaged      int64     `json:"damaged"`      // found lacking fragments
	Repaired     int64     `json:"repaired"`     // made whole
	Unrepairable int64     `json:"unrepairable"` // lacking, and could not be made whole now
	Fragments    int64     `json:"fragments"`    // fragments rebuilt
	Moved        int64     `json:"moved"`        // fragments moved (draining, rebalancing)
	// Held is the fragments each ASD holds, as far as the pass has come
	// (all of them once it is done).
	Held         map[string]int64 `json:"held,omitempty"`
	BytesRead    int64            `json:"bytes_read"`    // fragment bytes read
	BytesWritten int64            `json:"bytes_written"` // fragment bytes written
	Cursor       string           `json:"cursor"`        // the last object done
	Resumed      int              `json:"resumed"`       // times it went on after a restart
	LastProblem  string           `json:"last_problem,omitempty"`
	Error        string           `json:"error,omitempty"`
	// Working is the time the pass has run (across restarts), for its rate.
	Working time.Duration `json:"working"`
}

// Rate is the pass's paced bytes a second so far.
func (p PassStatus) Rate() float64 {
	if p.Working <= 0 {
		return 0
	}
	n := p.BytesWritten
	if p.Kind == PassVerify {
		n = p.BytesRead
	}
	return float64(n) / p.Working.Seconds()
}

// ETA is the time left at the pace so far (0 when unknown or done).
func (p PassStatus) ETA() time.Duration {
	if p.Checked == 0 || p.Objects <= p.Checked || !p.Finished.IsZero() {
		return 0
	}
	return time.Duration(float64(p.Working) * float64(p.Objects-p.Checked) / float64(p.Checked))
}

// ErrPassRunning: a pass is running already.
var ErrPassRunning = errors.New("objstore: a repair or verify pass is running")

// Healer runs the passes of one EC store.
type Healer struct {
	ec    *EC
	file  string // the checkpoint
	rate  int64
	log   *slog.Logger
	queue chan string
	start chan string
	mu    struct {
		sync.Mutex
		cur, last *PassStatus
	}
	// stepHook, in tests, runs before each object and may fail it (a
	// crash at that step).
	stepHook func(name string) error
	// Gate, when set, says whether repairs may write now (this daemon
	// holds the backend); a pass stops when it says no.
	Gate func() bool
	// After is how long an ASD must be missing or failing before a
	// repair pass rebuilds its fragments elsewhere (a disk may come back
	// after a reboot); 0: only when asked.
	After time.Duration
	// tried remembers when a queued object was last repaired, so that the
	// reads of an object that cannot be made whole yet (no spare ASD) do
	// not repair it over and over
	tried Cache[time.Time]
	// watchEvery is lossWatch, less in tests
	watchEvery time.Duration
	// workers is passWorkers, 1 in tests that count the objects a resumed
	// pass looks at
	workers int
}

// retryQueued is how long a queued object is not tried again; lossWatch
// is how often the healer looks for ASDs lost too long.
const (
	retryQueued = time.Minute
	lossWatch   = 10 * time.Second
)

// ErrNotAllowed: the gate said no (the backend is not this daemon's).
var ErrNotAllowed = errors.New("objstore: repairs wait: this daemon does not hold the backend")

func (h *Healer) allowed() bool { return h.Gate == nil || h.Gate() }

// NewHealer makes the healer of ec, checkpointing to file, pacing passes
// to rate bytes a second (0: no limit).
func NewHealer(ec *EC, file string, rate int64, log *slog.Logger) *Healer {
	if log == nil {
		log = slog.Default()
	}
	h := &Healer{ec: ec, file: file, rate: rate, log: log, queue: make(chan string, 1024), start: make(chan string, 1)}
	h.tried.Max = 1 << 14
	fn := func(name string) {
		select {
		case h.queue <- name:
		default: // full: the next pass finds it
		}
	}
	ec.onDecode.Store(&fn)
	return h
}

// Status returns the running pass (or nil) and the last finished one.
func (h *Healer) Status() (cur, last *PassStatus) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.mu.cur != nil {
		c := *h.mu.cur
		cur = &c
	}
	if h.mu.last != nil {
		l := *h.mu.last
		last = &l
	}
	return cur, last
}

// Start asks for a pass of kind now; ErrPassRunning if one runs or waits.
func (h *Healer) Start(kind string) error {
	if kind != PassRepair && kind != PassVerify && kind != PassRebalance {
		return fmt.Errorf("objstore: pass %q: want repair, verify or rebalance", kind)
	}
	if cur, _ := h.Status(); cur != nil {
		return fmt.Errorf("%w: %s, %d of %d objects", ErrPassRunning, cur.Kind, cur.Checked, cur.Objects)
	}
	select {
	case h.start <- kind:
		return nil
	default:
		return ErrPassRunning
	}
}

// Run serves passes until ctx ends: it first goes on with a pass a
// restart interrupted, then runs those asked for, a verify pass every
// verifyEvery (0: none), and repairs queued objects.
func (h *Healer) Run(ctx context.Context, verifyEvery time.Duration) {
	if st, err := h.load(); err != nil {
		h.log.Warn("objstore: pass checkpoint unreadable; not resumed", "file", h.file, "err", err)
	} else if st != nil && st.Finished.IsZero() {
		st.Resumed++
		h.log.Info("objstore: going on with a pass a restart interrupted", "kind", st.Kind, "done", st.Checked, "of", st.Objects)
		h.run(ctx, st)
	} else if st != nil {
		h.setLast(st)
	}
	var verify <-chan time.Time
	if verifyEvery > 0 {
		t := time.NewTicker(verifyEvery)
		defer t.Stop()
		verify = t.C
	}
	every := h.watchEvery
	if every == 0 {
		every = lossWatch
	}
	watch := time.NewTicker(every)
	defer watch.Stop()
	var repairedLoss time.Time // the loss the last automatic pass was for
	for {
		select {
		case <-ctx.Done():
			return
		case <-watch.C:
			h.ec.recheck(false)
			if lost := h.ec.lostSince(); h.After > 0 && !lost.IsZero() && lost != repairedLoss && time.Since(lost) >= h.After {
				repairedLoss = lost
				h.log.Warn("objstore: an ASD has been missing or failing too long: a repair pass rebuilds its fragments on the others",
					"since", lost, "asds", h.ec.asdSummary())
				h.run(ctx, &PassStatus{Kind: PassRepair, Started: time.Now().UTC()})
			}
		case kind := <-h.start:
			h.run(ctx, &PassStatus{Kind: kind, Started: time.Now().UTC()})
		case <-verify:
			h.run(ctx, &PassStatus{Kind: PassVerify, Started: time.Now().UTC()})
		case name := <-h.queue:
			h.repairOne(ctx, name)
		}
	}
}

func (h *Healer) setLast(st *PassStatus) {
	h.mu.Lock()
	h.mu.last = st
	h.mu.Unlock()
}

// repairOne repairs an object a read had to decode.
func (h *Healer) repairOne(ctx context.Context, name string) {
	if !h.allowed() {
		return // a later pass finds it
	}
	if at, ok := h.tried.Get(name); ok && time.Since(at) < retryQueued {
		return
	}
	h.tried.Put(name, time.Now())
	var res RepairResult
	var err error
	runNiced(putNice, func() { res, err = h.ec.RepairObject(ctx, name, false, nil) })
	switch {
	case err != nil:
		h.log.Debug("objstore: repair", "object", name, "err", err)
	case res.Rebuilt > 0:
		h.log.Info("objstore: object repaired after a read had to decode it", "object", name, "fragments", res.Rebuilt)
	}
}

// run runs (or goes on with) one pass and records its end.
func (h *Healer) run(ctx context.Context, st *PassStatus) {
	h.mu.Lock()
	h.mu.cur = st
	h.mu.Unlock()
	// a pass that dies before its first object is still resumed
	if err := h.save(h.snapshot(st)); err != nil {
		h.log.Warn("objstore: save pass checkpoint", "err", err)
	}
	err := h.pass(ctx, st)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.mu.cur = nil
	if ctx.Err() != nil {
		return // interrupted: the checkpoint goes on at the next start
	}
	if err != nil {
		st.Error = err.Error()
	}
	st.Finished = time.Now().UTC()
	h.mu.last = st
	if err := h.save(st); err != nil {
		h.log.Warn("objstore: save pass checkpoint", "err", err)
	}
	h.log.Info("objstore: pass done", "kind", st.Kind, "objects", st.Checked, "damaged", st.Damaged, "repaired", st.Repaired,
		"unrepairable", st.Unrepairable, "fragments_rebuilt", st.Fragments, "moved", st.Moved, "took", st.Working.Round(time.Second), "err", st.Error)
	for _, a := range h.ec.ASDs() {
		if a.State == ASDDraining && st.Error == "" && st.Held[a.Path] == 0 {
			h.log.Info("objstore: ASD drained: it holds no fragment; remove it from backend.asds", "asd", a.Path)
		}
	}
}

func (h *Healer) pass(ctx context.Context, st *PassStatus) error {
	names, err := h.ec.List(ctx, "")
	if err != nil {
		return err
	}
	h.update(st, func() { st.Objects = int64(len(names)) })
	var bal *Balance
	if st.Kind == PassRebalance {
		count, err := h.ec.countFragments(ctx, names)
		if err != nil {
			return err
		}
		bal = NewBalance(count)
	}
	var todo []string
	for _, name := range names {
		if name > st.Cursor { // else done before a restart
			todo = append(todo, name)
		}
	}
	w := &passWork{h: h, st: st, todo: todo, done: make([]bool, len(todo)), low: -1, bal: bal,
		pacer: newPacer(h.rate), began: time.Now(), worked: st.Working, saved: time.Now()}
	workers := h.workers
	if workers == 0 {
		workers = passWorkers
	}
	sem := make(chan struct{}, workers)
	var wg sync.WaitGroup
	for idx, name := range todo {
		sem <- struct{}{} // a worker is free
		if err := w.failed(); err != nil || ctx.Err() != nil {
			<-sem
			break
		}
		if h.stepHook != nil {
			if err := h.stepHook(name); err != nil {
				<-sem
				w.fail(err)
				break
			}
		}
		if !h.allowed() {
			<-sem
			w.fail(ErrNotAllowed)
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			w.one(ctx, idx, name)
		}()
	}
	wg.Wait()
	if err := w.failed(); err != nil {
		return err
	}
	return ctx.Err()
}

// passWorkers is how many objects a pass repairs at once: the work of one
// (reads, decoding, checksums, writes) leaves the disks and cores idle
// between its steps.
const passWorkers = 2

// passWork is one pass's shared state while its workers run.
type passWork struct {
	h     *Healer
	st    *PassStatus
	todo  []string
	bal   *Balance
	mu    sync.Mutex // done, low, err, pacer, saved
	done  []bool
	low   int // todo[:low+1] are all done: the checkpoint's cursor
	err   error
	pacer *pacer
	began time.Time
	// worked is the pass's working time before this run (a restart)
	worked time.Duration
	saved  time.Time
}

func (w *passWork) fail(err error) {
	w.mu.Lock()
	if w.err == nil {
		w.err = err
	}
	w.mu.Unlock()
}

func (w *passWork) failed() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// one repairs todo[idx] and accounts for it.
func (w *passWork) one(ctx context.Context, idx int, name string) {
	h, st := w.h, w.st
	// background work, as uploads are: a lower CPU priority and the idle
	// I/O class, so that the front end's I/O goes first
	var res RepairResult
	var err error
	runNiced(putNice, func() { res, err = h.ec.RepairObject(ctx, name, st.Kind == PassVerify, w.bal) })
	if err != nil {
		w.fail(fmt.Errorf("%s: %w", name, err))
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.done[idx] = true
	for w.low+1 < len(w.done) && w.done[w.low+1] {
		w.low++
	}
	h.update(st, func() {
		st.Checked++
		if w.low >= 0 {
			st.Cursor = w.todo[w.low]
		}
		st.BytesRead += res.BytesRead
		st.BytesWritten += res.BytesWritten
		st.Fragments += int64(res.Rebuilt)
		st.Moved += int64(res.Moved)
		if st.Held == nil {
			st.Held = map[string]int64{}
		}
		for a, n := range res.Held {
			if n > 0 {
				st.Held[h.ec.dirs[a]] += int64(n)
			}
		}
		if res.Missing > 0 {
			st.Damaged++
			if res.Unrepairable == "" {
				st.Repaired++
			}
		}
		if res.Unrepairable != "" {
			st.Unrepairable++
			st.LastProblem = name + ": " + res.Unrepairable
		}
	})
	paced := res.BytesWritten // repairs and moves
	if st.Kind == PassVerify {
		paced = res.BytesRead
	}
	if err := w.pacer.Wait(ctx, paced); err != nil { // under mu: the workers wait their turn
		if w.err == nil {
			w.err = err
		}
		return
	}
	h.update(st, func() { st.Working = w.worked + time.Since(w.began) }) // the wait is the pass's time too
	// checkpoint after every repair (it cost fsyncs already), and every
	// second of checking
	if res.Rebuilt > 0 || res.Moved > 0 || time.Since(w.saved) >= time.Second {
		w.saved = time.Now()
		if err := h.save(h.snapshot(st)); err != nil {
			h.log.Warn("objstore: save pass checkpoint", "err", err)
		}
	}
}

func (h *Healer) update(st *PassStatus, fn func()) {
	h.mu.Lock()
	fn()
	h.mu.Unlock()
}

func (h *Healer) snapshot(st *PassStatus) *PassStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := *st
	return &c
}

func (h *Healer) save(st *PassStatus) error {
	b, _ := json.MarshalIndent(st, "", "  ")
	return vfs.WriteFileDurably(vfs.OS{}, h.file, b, 0o600)
}

func (h *Healer) load() (*PassStatus, error) {
	b, err := os.ReadFile(h.file)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var st PassStatus
	if err := json.Unmarshal(b, &st); err != nil || (st.Kind != PassRepair && st.Kind != PassVerify && st.Kind != PassRebalance) {
		return nil, fmt.Errorf("%s: %v", strings.TrimSpace(h.file), err)
	}
	return &st, nil
}

// countFragments counts the fragments each ASD holds of the named objects.
func (e *EC) countFragments(ctx context.Context, names []string) ([]int64, error) {
	count := make([]int64, len(e.dirs))
	for _, name := range names {
		g, err := e.geometry(ctx, name)
		if errors.Is(err, ErrNotFound) || errors.Is(err, ErrUnavailable) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, loc := range g.at {
			if a := int(loc&^fragSuffixNew) - 1; a >= 0 {
				count[a]++
			}
		}
	}
	return count, nil
}
