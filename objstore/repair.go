package objstore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

// Repair and verify (the EC store healing itself).
//
// RepairObject makes one object whole again: every stripe gets back the
// fragments it lacks (an ASD lost or replaced, a fragment missing or, when
// verifying, one whose header or blocks fail their CRCs), rebuilt from k
// good ones and written to an ASD that holds no other fragment of that
// stripe. A stripe with fewer than k good fragments cannot be rebuilt and
// is reported. Repairs of an object exclude its Put and Delete (a lock per
// name), so a repair never resurrects a deleted object.
//
// Pass (pass.go) walks every object, paced, checkpointed and resumable.

// RepairResult is what RepairObject found and did.
type RepairResult struct {
	Missing      int   // fragments lacking (missing, unreadable or corrupt)
	Rebuilt      int   // fragments written back
	Moved        int   // fragments moved off a draining ASD, or to even out the ASDs
	Held         []int // fragments of the object on each ASD afterwards
	BytesRead    int64 // fragment bytes read to check and rebuild
	BytesWritten int64 // fragment bytes written
	// Unrepairable is set when a stripe has fewer than k good fragments,
	// or no ASD can take a rebuilt fragment (say why).
	Unrepairable string
}

// RepairObject checks name's fragments and rebuilds what lacks. verify
// reads every fragment whole and checks its CRCs; without it, a fragment
// is good when its file is there with the object's header.
//
// It also moves fragments: off a draining ASD, and, given a balance, from
// fuller ASDs to emptier ones that hold none of the stripe.
func (e *EC) RepairObject(ctx context.Context, name string, verify bool, bal *Balance) (RepairResult, error) {
	unlock := e.lockName(name)
	defer unlock()
	var res RepairResult
	e.geo.Forget(name) // look at the ASDs as they are now
	g, err := e.geometry(ctx, name)
	if errors.Is(err, ErrNotFound) {
		return res, nil // deleted meanwhile
	}
	if err != nil {
		if errors.Is(err, ErrUnavailable) {
			res.Unrepairable = err.Error()
			return res, nil
		}
		return res, err
	}
	enc, err := e.encoder(g.k, g.m)
	if err != nil {
		return res, err
	}
	changed := false
	for s := 0; s < g.stripes; s++ {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		fl := g.fragLen(s)
		shards := make([][]byte, g.k+g.m)
		var bad []int
		good := 0
		for i := 0; i < g.k+g.m; i++ {
			b, err := e.readFragment(name, g, s, i, fl, verify)
			if err != nil {
				bad = append(bad, i)
				continue
			}
			res.BytesRead += int64(len(b))
			if b != nil {
				shards[i] = b
			}
			good++
		}
		if len(bad) == 0 {
			if err := e.moveFragments(name, g, s, fl, bal, &res); err != nil {
				return res, err
			}
			continue
		}
		res.Missing += len(bad)
		if good < g.k {
			res.Unrepairable = fmt.Sprintf("stripe %d: %d of %d fragments good, need %d", s, good, g.k+g.m, g.k)
			continue
		}
		// the data of the stripe, from k good fragments (read now if the
		// presence check did not)
		for i := 0; i < g.k+g.m; i++ {
			if shards[i] == nil && !slices.Contains(bad, i) {
				b, err := e.readFragment(name, g, s, i, fl, true)
				if err != nil {
					continue
				}
				res.BytesRead += int64(len(b))
				shards[i] = b
			}
		}
		if fl > 0 {
			if err := enc.Reconstruct(shards); err != nil {
				res.Unrepairable = fmt.Sprintf("stripe %d: decode: %v", s, err)
				continue
			}
		} else {
			for _, i := range bad {
				shards[i] = []byte{}
			}
		}
		for _, i := range bad {
			n, err := e.writeRepaired(name, g, s, i, shards[i], -1)
			if err != nil {
				res.Unrepairable = fmt.Sprintf("stripe %d fragment %d: %v", s, i, err)
				continue
			}
			res.Rebuilt++
			res.BytesWritten += n
			changed = true
		}
	}
	if changed || res.Moved > 0 {
		e.geo.Forget(name)
		if g2, err := e.geometry(ctx, name); err == nil {
			g = g2
		}
	}
	res.Held = make([]int, len(e.dirs))
	for _, loc := range g.at {
		if a := int(loc&^fragSuffixNew) - 1; a >= 0 && a < len(res.Held) {
			res.Held[a]++
		}
	}
	return res, nil
}

// moveFragments moves the fragments of stripe s that sit on a draining
// ASD, or that bal says to move, to another ASD holding none of the
// stripe (a stripe being repaired is left as it is until it is whole).
func (e *EC) moveFragments(name string, g geometry, s int, fl int64, bal *Balance, res *RepairResult) error {
	for i := 0; i < g.k+g.m; i++ {
		loc := g.locations(s, i)
		from := int(loc&^fragSuffixNew) - 1
		if from < 0 {
			continue
		}
		to := -1
		if !e.draining(from) {
			if bal == nil {
				continue
			}
			in := map[int]bool{}
			for j := 0; j < g.k+g.m; j++ {
				if a := int(g.locations(s, j)&^fragSuffixNew) - 1; a >= 0 {
					in[a] = true
				}
			}
			if to = bal.target(from, in, e.usable()); to < 0 {
				continue
			}
		}
		data, err := e.readFragment(name, g, s, i, fl, true)
		if err != nil {
			continue // a later verify or repair pass rebuilds it
		}
		res.BytesRead += int64(len(data))
		n, err := e.writeRepaired(name, g, s, i, data, to)
		if err != nil {
			e.log.Warn("objstore: move a fragment", "object", name, "stripe", s, "fragment", i, "err", err)
			continue
		}
		if bal != nil {
			bal.moved(from, to)
		}
		res.Moved++
		res.BytesWritten += n
		// g still says where the fragment was; the next one of this
		// stripe must not land where this one went
		g.at[s*(g.k+g.m)+i] = 0
		if to >= 0 {
			g.at[s*(g.k+g.m)+i] = uint16(to) + 1
		}
	}
	return nil
}

// Balance evens out the fragments over the ASDs during a pass: it knows
// how many each holds (counted first), and says to move a fragment from
// an ASD above the mean to the emptiest one below it that holds none of
// the same stripe.
type Balance struct {
	mu    sync.Mutex
	count []int64
}

// NewBalance starts from each ASD's fragment count.
func NewBalance(count []int64) *Balance { return &Balance{count: slices.Clone(count)} }

func (b *Balance) target(from int, stripe map[int]bool, usable []int) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	var total int64
	for _, a := range usable {
		total += b.count[a]
	}
	if len(usable) == 0 {
		return -1
	}
	mean := float64(total) / float64(len(usable))
	if float64(b.count[from]) <= mean+0.5 {
		return -1
	}
	to := -1
	for _, a := range usable {
		if !stripe[a] && float64(b.count[a]) < mean-0.5 && (to < 0 || b.count[a] < b.count[to]) {
			to = a
		}
	}
	return to
}

func (b *Balance) moved(from, to int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.count[from]--
	if to >= 0 {
		b.count[to]++
	}
}

// readFragment reads fragment (s, i) of g whole and checks it (full), or
// only checks that its file is there with the object's header (nil data).
func (e *EC) readFragment(name string, g geometry, s, i int, fl int64, full bool) ([]byte, error) {
	f, err := e.openAt(name, g, s, i)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if !full {
		return nil, nil
	}
	b := make([]byte, fl)
	nblocks := (fl + blockSize - 1) / blockSize
	raw := make([]byte, fl+nblocks*blockCRCSize)
	if _, err := f.ReadAt(raw, headerSize); err != nil {
		return nil, fmt.Errorf("%w: read: %v", ErrCorrupt, err)
	}
	if err := decodeBlocks(b, raw, int(fl)); err != nil {
		return nil, err
	}
	return b, nil
}

// writeRepaired writes fragment (s, i) to an ASD that can take it and
// holds no other fragment of stripe s (where the bad copy is, if it can),
// going on to the next when a write fails, then removes the bad copy it
// replaces (if it was elsewhere).
func (e *EC) writeRepaired(name string, g geometry, s, i int, data []byte, prefer int) (int64, error) {
	taken := map[int]bool{}
	for j := 0; j < g.k+g.m; j++ {
		if loc := g.locations(s, j); loc&^fragSuffixNew != 0 && j != i {
			taken[int(loc&^fragSuffixNew)-1] = true
		}
	}
	old := g.locations(s, i)
	oldASD := int(old&^fragSuffixNew) - 1 // -1: none
	var cands []int
	for _, a := range e.usable() {
		if !taken[a] {
			cands = append(cands, a)
		}
	}
	if prefer < 0 {
		prefer = oldASD // a bad copy is overwritten in place if it can be
	} else {
		cands = slices.DeleteFunc(cands, func(a int) bool { return a == oldASD }) // a move
	}
	slices.SortStableFunc(cands, func(a, b int) int { return b2i(b == prefer) - b2i(a == prefer) })
	h := fragHeader{ObjSize: uint64(g.size), FragmentSize: uint64(g.fragmentSize), FragLen: uint64(len(data)),
		Nonce: g.nonce, Stripe: uint32(s), Stripes: uint32(g.stripes), K: uint8(g.k), M: uint8(g.m), Index: uint8(i)}
	buf := alignedBuffer(fileSize(int64(len(data))))
	encodeFragment(buf, &h, data)
	var errs []error
	for _, a := range cands {
		err := e.writeFragmentAt(a, name, fmt.Sprintf("%d.%d", s, i), buf)
		if err != nil {
			e.fail(a, err)
			errs = append(errs, err)
			continue
		}
		if oldASD >= 0 && oldASD != a {
			p := filepath.Join(e.objDir(oldASD, name), fmt.Sprintf("%d.%d", s, i))
			if old&fragSuffixNew != 0 {
				p += newSuffix
			}
			os.Remove(p) // the bad copy; best effort (its ASD may be failing)
		}
		return int64(len(buf)), nil
	}
	if len(errs) == 0 {
		return 0, fmt.Errorf("%w: no writable ASD without a fragment of this stripe (%s)", ErrNoASD, e.asdSummary())
	}
	return 0, fmt.Errorf("%w: %v", ErrNoASD, errors.Join(errs...))
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// writeFragmentAt writes one fragment file durably on ASD a: a temporary
// file, synced, renamed into place, the directory synced.
func (e *EC) writeFragmentAt(a int, name, file string, buf []byte) error {
	dir := e.objDir(a, name)
	if err := mkObjDir(dir); err != nil {
		return err
	}
	path := filepath.Join(dir, file)
	if err := writeFragmentFile(path+tmpSuffix, buf); err != nil {
		return err
	}
	if err := syncFile(path + tmpSuffix); err != nil {
		return err
	}
	if err := os.Rename(path+tmpSuffix, path); err != nil {
		return err
	}
	return syncDir(dir)
}

// lockName excludes Put, Delete and repair of one name from each other.
func (e *EC) lockName(name string) (unlock func()) {
	mu := &e.nameLocks[crc([]byte(name))%uint32(len(e.nameLocks))]
	mu.Lock()
	return mu.Unlock
}

// pacer keeps work to rate bytes a second: after each piece, Wait sleeps
// as long as the bytes so far are ahead of the rate.
type pacer struct {
	rate  int64 // bytes a second; 0: no limit
	start time.Time
	bytes int64
	now   func() time.Time
	sleep func(context.Context, time.Duration) error
}

func newPacer(rate int64) *pacer {
	return &pacer{rate: rate, start: time.Now(), now: time.Now, sleep: sleepCtx}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Wait accounts n bytes and sleeps until they are within the rate.
func (p *pacer) Wait(ctx context.Context, n int64) error {
	p.bytes += n
	if p.rate <= 0 {
		return nil
	}
	due := p.start.Add(time.Duration(float64(p.bytes) / float64(p.rate) * float64(time.Second)))
	if d := due.Sub(p.now()); d > 0 {
		return p.sleep(ctx, d)
	}
	return nil
}
