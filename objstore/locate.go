package objstore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Where an object's fragments are is found, not computed: the first read
// of an object lists its directory on every ASD and reads the headers of
// the stripe-0 fragments there. So a change of the ASD list (one added,
// one dropped, the order changed) or of the preset never makes an object
// unreadable: its fragments are read where they are, with the geometry
// their headers give; only new objects use the new list and preset. The
// placement function (asd) decides where a Put writes, nothing more.
//
// The result is cached per object (objects are immutable; Put and Delete
// update the cache), so a read costs the listing once per object.

// fragSuffixNew marks a location whose file has the ".new" suffix (a
// version being switched in).
const fragSuffixNew = 1 << 15

// at is where fragment (s, i) of g is: ASD index + 1 (0: not found),
// with fragSuffixNew for a ".new" file.
func (g geometry) locations(s, i int) uint16 {
	if n := s*(g.k+g.m) + i; n < len(g.at) {
		return g.at[n]
	}
	return 0
}

// openAt opens fragment (s, i) of version g where it was found, checking
// its header (version, stripe, index).
func (e *EC) openAt(name string, g geometry, s, i int) (*os.File, error) {
	loc := g.locations(s, i)
	if loc&^fragSuffixNew == 0 {
		return nil, fmt.Errorf("%w: fragment %d.%d of %s is on no ASD", ErrCorrupt, s, i, name)
	}
	a := int(loc&^fragSuffixNew) - 1
	if a >= len(e.dirs) {
		return nil, fmt.Errorf("%w: fragment %d.%d of %s: ASD %d is gone", ErrNoASD, s, i, name, a)
	}
	path := filepath.Join(e.objDir(a, name), fmt.Sprintf("%d.%d", s, i))
	if loc&fragSuffixNew != 0 {
		path += newSuffix
	}
	return e.openFragment(path, g, s, i)
}

// fragFile is one fragment file found on an ASD.
type fragFile struct {
	asd    int
	s, i   int
	isNew  bool
	header fragHeader // stripe 0 only
}

func (f fragFile) path(e *EC, name string) string {
	p := filepath.Join(e.objDir(f.asd, name), fmt.Sprintf("%d.%d", f.s, f.i))
	if f.isNew {
		p += newSuffix
	}
	return p
}

// parseFragName reads "s.i" or "s.i.new"; temporary files (".tmp") and
// anything else are not fragments.
func parseFragName(n string) (s, i int, isNew, ok bool) {
	base, isNew := strings.CutSuffix(n, newSuffix)
	a, b, found := strings.Cut(base, ".")
	if !found {
		return 0, 0, false, false
	}
	s, err1 := strconv.Atoi(a)
	i, err2 := strconv.Atoi(b)
	return s, i, isNew, err1 == nil && err2 == nil && s >= 0 && i >= 0 && i < 256
}

// geometry finds the object's layout and where its fragments are: the
// version (nonce) that at least k stripe-0 fragments agree on, a version
// being switched in (".new" fragments) winning over the one in place.
func (e *EC) geometry(ctx context.Context, name string) (geometry, error) {
	if err := ctx.Err(); err != nil {
		return geometry{}, err
	}
	g, ok := e.geo.Get(name)
	if ok {
		return g, nil
	}
	var files []fragFile
	var firstErr error
	unreachable := 0
	for a := range e.dirs {
		if !e.readable(a) {
			continue // not this pool's (no identity, another pool's)
		}
		ents, err := os.ReadDir(e.objDir(a, name))
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				unreachable++
				if firstErr == nil {
					firstErr = err
				}
			}
			continue
		}
		for _, ent := range ents {
			if s, i, isNew, ok := parseFragName(ent.Name()); ok {
				files = append(files, fragFile{asd: a, s: s, i: i, isNew: isNew})
			}
		}
	}
	// Votes: the stripe-0 headers, one per index and version.
	votes := map[uint64][]fragHeader{}
	switching := map[uint64]bool{}
	for j := range files {
		f := &files[j]
		if f.s != 0 {
			continue
		}
		h, err := readHeader(f.path(e, name))
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		if int(h.Index) != f.i || h.Stripe != 0 {
			continue
		}
		f.header = h
		if f.isNew {
			switching[h.Nonce] = true
		}
		dup := false
		for _, o := range votes[h.Nonce] {
			dup = dup || o.Index == h.Index
		}
		if !dup {
			votes[h.Nonce] = append(votes[h.Nonce], h)
		}
	}
	var best []fragHeader
	bestSwitching := false
	for nonce, hs := range votes {
		sw := switching[nonce] && len(hs) >= int(hs[0].K)
		if sw && !bestSwitching || sw == bestSwitching && len(hs) > len(best) {
			best, bestSwitching = hs, sw
		}
	}
	if len(best) == 0 {
		if firstErr == nil || unreachable == 0 && len(files) == 0 {
			return g, fmt.Errorf("%w: %s", ErrNotFound, name)
		}
		return g, fmt.Errorf("%w: %s: no fragment header readable: %v", ErrUnavailable, name, firstErr)
	}
	h := best[0]
	if len(best) < int(h.K) {
		return g, fmt.Errorf("%w: %s: only %d of %d fragments of stripe 0 readable, need %d",
			ErrUnavailable, name, len(best), int(h.K)+int(h.M), h.K)
	}
	g = newGeometry(int64(h.ObjSize), int(h.K), int(h.M), int64(h.FragmentSize))
	g.nonce = h.Nonce
	g.at = make([]uint16, g.stripes*(g.k+g.m))
	cands := map[int][]fragFile{}
	for _, f := range files {
		if f.s < g.stripes && f.i < g.k+g.m {
			n := f.s*(g.k+g.m) + f.i
			cands[n] = append(cands[n], f)
		}
	}
	for n, fs := range cands {
		// Usually one file per fragment; where there are more (a stale
		// fragment left by an ASD that was away during a Delete, a
		// version being switched in), the one of this version is taken,
		// its ".new" file first while switching.
		pick := fs[0] // none of this version: opening it says so
		if len(fs) > 1 {
			best := -1
			for j, f := range fs {
				h, err := readHeader(f.path(e, name))
				if err == nil && h.Nonce == g.nonce && (best < 0 || f.isNew && !fs[best].isNew) {
					best = j
				}
			}
			if best >= 0 {
				pick = fs[best]
			}
		}
		g.at[n] = uint16(pick.asd) + 1
		if pick.isNew {
			g.at[n] |= fragSuffixNew
		}
	}
	e.geo.Put(name, g)
	return g, nil
}

func readHeader(path string) (fragHeader, error) {
	f, err := os.Open(path)
	if err != nil {
		return fragHeader{}, err
	}
	defer f.Close()
	var b [headerSize]byte
	if _, err := f.ReadAt(b[:], 0); err != nil {
		return fragHeader{}, fmt.Errorf("%w: %s: %v", ErrCorrupt, path, err)
	}
	return decodeFragHeader(b[:])
}
