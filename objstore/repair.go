package objstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
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
	var batch []*fragWrite
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
			batch = append(batch, e.moveFragments(name, g, s, fl, bal, &res)...)
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
			for _, i := range bad { // rebuilt into pooled memory (zero length, room enough)
				shards[i] = getBlockBuf(int(fl))[:0]
			}
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
			batch = append(batch, e.planFragment(name, g, s, i, shards[i], -1))
		}
		for _, b := range shards {
			if b != nil {
				putBlockBuf(b) // planFragment copied what it needs
			}
		}
	}
	defer func() {
		for _, w := range batch {
			putAligned(w.buf)
		}
	}()
	for _, w := range e.commitFragments(name, batch) {
		switch {
		case w.err != nil && w.move:
			e.log.Warn("objstore: move a fragment", "object", name, "stripe", w.s, "fragment", w.i, "err", w.err)
		case w.err != nil:
			res.Unrepairable = fmt.Sprintf("stripe %d fragment %d: %v", w.s, w.i, w.err)
		case w.move:
			res.Moved++
			res.BytesWritten += int64(len(w.buf))
		default:
			res.Rebuilt++
			res.BytesWritten += int64(len(w.buf))
		}
		if bal != nil && w.move {
			bal.settle(w)
		}
	}
	if len(batch) > 0 {
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

// moveFragments plans the moves of the fragments of stripe s that sit on
// a draining ASD, or that bal says to move, to another ASD holding none
// of the stripe (a stripe being repaired is left as it is until it is
// whole).
func (e *EC) moveFragments(name string, g geometry, s int, fl int64, bal *Balance, res *RepairResult) []*fragWrite {
	var out []*fragWrite
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
			bal.moved(from, to) // planned: the next choice sees it
		}
		data, err := e.readFragment(name, g, s, i, fl, true)
		if err != nil {
			if to >= 0 {
				bal.moved(to, from)
			}
			continue // a later verify or repair pass rebuilds it
		}
		res.BytesRead += int64(len(data))
		w := e.planFragment(name, g, s, i, data, to)
		putBlockBuf(data)
		w.move, w.from, w.planned = true, from, to
		out = append(out, w)
		// g says where the fragment was: the next one of this stripe must
		// not go where this one goes
		g.at[s*(g.k+g.m)+i] = 0
		if len(w.cands) > 0 {
			g.at[s*(g.k+g.m)+i] = uint16(w.cands[0]) + 1
		}
	}
	return out
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

// settle counts a move where it went: a rebalancing move was counted to
// its planned target when planned.
func (b *Balance) settle(w *fragWrite) {
	switch {
	case w.planned >= 0 && w.err != nil:
		b.moved(w.planned, w.from)
	case w.planned >= 0 && w.at != w.planned:
		b.moved(w.planned, w.at)
	case w.planned < 0 && w.err == nil:
		b.moved(w.from, w.at)
	}
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
	// buffers from a pool (putBlockBuf when done): a pass reads gigabytes
	// in fragment-sized pieces, and fresh ones cost zeroing and GC
	b := getBlockBuf(int(fl))
	if err := readBlocksInto(f, b); err != nil {
		putBlockBuf(b)
		return nil, err
	}
	return b, nil
}

// readBlocksInto reads a fragment file's blocks straight into b and their
// CRCs beside (preadv: no copy of the data), and checks them.
func readBlocksInto(f *os.File, b []byte) error {
	nblocks := (len(b) + blockSize - 1) / blockSize
	crcs := make([]byte, nblocks*blockCRCSize)
	const perCall = 512 // two iovecs a block, within IOV_MAX (1024)
	off := int64(headerSize)
	for b0 := 0; b0 < nblocks; b0 += perCall {
		b1 := min(b0+perCall, nblocks)
		iov := make([][]byte, 0, 2*(b1-b0))
		want := 0
		for blk := b0; blk < b1; blk++ {
			data := b[blk*blockSize : min((blk+1)*blockSize, len(b))]
			iov = append(iov, data, crcs[blk*blockCRCSize:(blk+1)*blockCRCSize])
			want += len(data) + blockCRCSize
		}
		for want > 0 { // a short read goes on where it stopped
			n, err := unix.Preadv(int(f.Fd()), iov, off)
			if err != nil {
				return fmt.Errorf("%w: read: %v", ErrCorrupt, err)
			}
			if n == 0 {
				return fmt.Errorf("%w: fragment truncated", ErrCorrupt)
			}
			off += int64(n)
			want -= n
			for n > 0 {
				if n >= len(iov[0]) {
					n -= len(iov[0])
					iov = iov[1:]
				} else {
					iov[0] = iov[0][n:]
					n = 0
				}
			}
		}
	}
	for blk := 0; blk < nblocks; blk++ {
		data := b[blk*blockSize : min((blk+1)*blockSize, len(b))]
		if binary.LittleEndian.Uint32(crcs[blk*blockCRCSize:]) != crc(data) {
			return fmt.Errorf("%w: fragment block %d", ErrCorrupt, blk)
		}
	}
	return nil
}

// fragWrite is one fragment a repair or a move writes.
type fragWrite struct {
	s, i    int
	cands   []int  // ASDs to try, in order: none holds another fragment of the stripe
	buf     []byte // the fragment file
	old     string // the copy it replaces ("": none), removed once it is written elsewhere
	oldAt   int    // that copy's ASD, or -1
	move    bool   // a move (draining, rebalancing), not a rebuild
	from    int    // a move's ASD
	planned int    // a rebalancing move's target, counted in the Balance already (-1: none)
	at      int    // where it went
	tmp     string // its temporary file there
	err     error
}

// planFragment encodes fragment (s, i) and lists the ASDs it may go to:
// writable, holding no other fragment of stripe s, prefer (or, for a
// rebuild, the ASD of the bad copy) first.
func (e *EC) planFragment(name string, g geometry, s, i int, data []byte, prefer int) *fragWrite {
	taken := map[int]bool{}
	for j := 0; j < g.k+g.m; j++ {
		if loc := g.locations(s, j); loc&^fragSuffixNew != 0 && j != i {
			taken[int(loc&^fragSuffixNew)-1] = true
		}
	}
	old := g.locations(s, i)
	w := &fragWrite{s: s, i: i, oldAt: int(old&^fragSuffixNew) - 1, at: -1, planned: -1}
	if w.oldAt >= 0 {
		w.old = filepath.Join(e.objDir(w.oldAt, name), fmt.Sprintf("%d.%d", s, i))
		if old&fragSuffixNew != 0 {
			w.old += newSuffix
		}
	}
	for _, a := range e.usable() {
		if !taken[a] {
			w.cands = append(w.cands, a)
		}
	}
	if prefer < 0 {
		prefer = w.oldAt // a bad copy is overwritten in place if it can be
	} else {
		w.cands = slices.DeleteFunc(w.cands, func(a int) bool { return a == w.oldAt }) // a move
	}
	slices.SortStableFunc(w.cands, func(a, b int) int { return b2i(b == prefer) - b2i(a == prefer) })
	h := fragHeader{ObjSize: uint64(g.size), FragmentSize: uint64(g.fragmentSize), FragLen: uint64(len(data)),
		Nonce: g.nonce, Stripe: uint32(s), Stripes: uint32(g.stripes), K: uint8(g.k), M: uint8(g.m), Index: uint8(i)}
	w.buf = getAligned(fileSize(int64(len(data))))
	encodeFragment(w.buf, &h, data)
	return w
}

// commitFragments writes an object's planned fragments durably, as a Put
// does: every temporary file first (an ASD that fails one is left out and
// the next candidate tried, never one another fragment of the stripe goes
// to), then all synced at once, renamed into place, the directories synced
// once each, and the copies they replace removed.
func (e *EC) commitFragments(name string, ws []*fragWrite) []*fragWrite {
	used := map[int]map[int]bool{} // stripe: ASDs this batch writes to
	for _, w := range ws {
		if used[w.s] == nil {
			used[w.s] = map[int]bool{}
		}
	}
	write := func(w *fragWrite, a int) error {
		dir := e.objDir(a, name)
		tmp := filepath.Join(dir, fmt.Sprintf("%d.%d", w.s, w.i)) + tmpSuffix
		err := mkObjDir(dir)
		if err == nil {
			err = writeFragmentFile(tmp, w.buf)
		}
		if err != nil {
			e.fail(a, err)
			return err
		}
		w.at, w.tmp = a, tmp
		return nil
	}
	// first choices, written at once (the disks see a queue, not one
	// write after another)
	first := make([]int, len(ws))
	for n, w := range ws {
		first[n] = -1
		for _, a := range w.cands {
			if !used[w.s][a] {
				first[n] = a
				used[w.s][a] = true
				break
			}
		}
	}
	var wg sync.WaitGroup
	for n, w := range ws {
		if first[n] >= 0 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				w.err = write(w, first[n])
			}()
		}
	}
	wg.Wait()
	// then, one by one, the next choices of those whose write failed
	for n, w := range ws {
		if first[n] >= 0 && w.err == nil {
			continue
		}
		if first[n] >= 0 {
			delete(used[w.s], first[n])
		}
		for _, a := range w.cands {
			if used[w.s][a] || a == first[n] {
				continue
			}
			if w.err = write(w, a); w.err == nil {
				used[w.s][a] = true
				break
			}
		}
		if w.at < 0 && w.err == nil {
			w.err = fmt.Errorf("%w: no writable ASD without a fragment of this stripe (%s)", ErrNoASD, e.asdSummary())
		}
	}
	var tmps []string
	dirs := map[string]bool{}
	for _, w := range ws {
		if w.at >= 0 {
			tmps = append(tmps, w.tmp)
			dirs[filepath.Dir(w.tmp)] = true
		}
	}
	fail := func(err error) []*fragWrite {
		for _, w := range ws {
			if w.at >= 0 {
				os.Remove(w.tmp)
				w.at, w.err = -1, err
			}
		}
		return ws
	}
	if err := forEach(tmps, syncFile); err != nil {
		return fail(err)
	}
	for _, w := range ws {
		if w.at >= 0 {
			if err := os.Rename(w.tmp, strings.TrimSuffix(w.tmp, tmpSuffix)); err != nil {
				return fail(err)
			}
		}
	}
	if err := forEach(slices.Collect(maps.Keys(dirs)), syncDir); err != nil {
		return fail(err)
	}
	for _, w := range ws {
		if w.at >= 0 && w.oldAt >= 0 && w.oldAt != w.at {
			os.Remove(w.old) // the bad or moved copy; best effort (its ASD may be failing)
		}
	}
	return ws
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
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
