package objstore

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// An ASD is a directory that carries its pool's identity, written when it
// joins: <asd>/vpool-asd.json {"pool": pool id, "asd": ASD id, "format": 1}.
// An ASD without the pool's identity (a disk not mounted yet: the empty
// mount point; another pool's disk) is never written to, and its state
// says why. Fragments go to the ASDs that can take them: one that fails a
// write (read-only, I/O errors) or is too full is left out of new Puts
// until a later look finds it well again.

const (
	identityFile   = "vpool-asd.json"
	identityFormat = 1
	// asdRecheck is how often ASDs that are not ok are looked at again
	// (a disk mounted, a filesystem remounted read-write, space freed).
	asdRecheck = 10 * time.Second
)

// ASDState is what an ASD can do now.
type ASDState string

const (
	ASDOK      ASDState = "ok"
	ASDMissing ASDState = "missing" // not there, or without an identity (not mounted? not joined?)
	ASDForeign ASDState = "foreign" // another pool's
	ASDFailing ASDState = "failing" // writes fail (read-only, I/O errors)
	ASDFull    ASDState = "full"    // too full for new fragments
	// ASDDraining: being removed (vpool backend remove): read, never
	// written; passes move its fragments to the others.
	ASDDraining ASDState = "draining"
)

// ASDStatus is one ASD's state, for vpool status.
type ASDStatus struct {
	Path   string    `json:"path"`
	ID     string    `json:"id,omitempty"`
	State  ASDState  `json:"state"`
	Since  time.Time `json:"since"`
	Detail string    `json:"detail,omitempty"`
	// the filesystem under it, when it can be read
	TotalBytes uint64 `json:"total_bytes"`
	FreeBytes  uint64 `json:"free_bytes"`
}

type identity struct {
	Pool     string `json:"pool"`
	ASD      string `json:"asd"`
	Format   int    `json:"format"`
	Draining bool   `json:"draining,omitempty"`
}

// ErrForeignASD: the ASDs belong to different pools.
var ErrForeignASD = errors.New("objstore: ASD of another pool")

type asdSet struct {
	mu        sync.Mutex
	pool      string
	st        []ASDStatus
	lastCheck time.Time
	every     time.Duration // asdRecheck; tests set less
}

func randomID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func readIdentity(dir string) (identity, error) {
	var id identity
	b, err := os.ReadFile(filepath.Join(dir, identityFile))
	if err != nil {
		return id, err
	}
	if err := json.Unmarshal(b, &id); err != nil || id.Pool == "" || id.Format != identityFormat {
		return id, fmt.Errorf("%s: unreadable identity (%v)", filepath.Join(dir, identityFile), err)
	}
	return id, nil
}

// writeIdentity makes dir an ASD of pool, durably.
func writeIdentity(dir, pool string) (identity, error) {
	id := identity{Pool: pool, ASD: randomID(), Format: identityFormat}
	if err := os.MkdirAll(filepath.Join(dir, "objects"), 0o700); err != nil {
		return id, err
	}
	return id, storeIdentity(dir, id)
}

// storeIdentity writes id into dir durably.
func storeIdentity(dir string, id identity) error {
	b, _ := json.Marshal(id)
	tmp := filepath.Join(dir, identityFile+".tmp")
	if err := writeFragmentFile(tmp, alignedCopy(b)); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, identityFile)); err != nil {
		return err
	}
	return syncDir(dir)
}

func alignedCopy(b []byte) []byte {
	out := alignedBuffer(int64(len(b)))
	copy(out, b)
	return out
}

// identify reads every ASD's identity and decides the pool's: expected
// (the data dir's record) if given, else the one the ASDs carry; a new
// one when no ASD carries any (a new pool, or one made before
// identities), written on every ASD that is there.
func (e *EC) identify(expected string) error {
	ids := make([]identity, len(e.dirs))
	errs := make([]error, len(e.dirs))
	pools := map[string]bool{}
	for a, d := range e.dirs {
		ids[a], errs[a] = readIdentity(d)
		if errs[a] == nil {
			pools[ids[a].Pool] = true
		}
	}
	pool := expected
	switch {
	case pool != "":
	case len(pools) == 1:
		for p := range pools {
			pool = p
		}
	case len(pools) > 1:
		var list []string
		for a, d := range e.dirs {
			if errs[a] == nil {
				list = append(list, d+": pool "+ids[a].Pool)
			}
		}
		return fmt.Errorf("%w: the ASDs carry different pools' identities (%s)", ErrForeignASD, strings.Join(list, ", "))
	default:
		pool = randomID()
		for a, d := range e.dirs {
			if _, err := os.Stat(d); err != nil && !errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if ids[a], errs[a] = writeIdentity(d, pool); errs[a] == nil {
				e.log.Info("objstore: ASD joined the pool", "asd", d, "pool", pool)
			}
		}
	}
	e.asds.pool, e.asds.every = pool, asdRecheck
	e.asds.st = make([]ASDStatus, len(e.dirs))
	now := time.Now()
	for a, d := range e.dirs {
		e.asds.st[a] = judge(d, ids[a], errs[a], pool, now)
		if e.asds.st[a].State != ASDOK {
			e.log.Warn("objstore: ASD not used", "asd", d, "state", e.asds.st[a].State, "why", e.asds.st[a].Detail)
		}
	}
	e.asds.lastCheck = now
	return nil
}

func judge(dir string, id identity, err error, pool string, now time.Time) ASDStatus {
	st := ASDStatus{Path: dir, ID: id.ASD, State: ASDOK, Since: now}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		st.State, st.Detail = ASDMissing, "no identity: the disk is not mounted, or the directory never joined the pool"
		if _, serr := os.Stat(dir); serr != nil {
			st.Detail = "not there: " + serr.Error()
		}
	case err != nil:
		st.State, st.Detail = ASDMissing, err.Error()
	case id.Pool != pool:
		st.State, st.Detail = ASDForeign, "carries pool "+id.Pool+", this pool is "+pool
	case id.Draining:
		st.State, st.Detail = ASDDraining, "being removed: its fragments move to the other ASDs; remove it from backend.asds once it holds none"
	}
	return st
}

// PoolID is the pool's identity, as its ASDs carry it.
func (e *EC) PoolID() string {
	e.asds.mu.Lock()
	defer e.asds.mu.Unlock()
	return e.asds.pool
}

// ASDs returns every ASD's state.
func (e *EC) ASDs() []ASDStatus {
	e.recheck(false)
	e.asds.mu.Lock()
	out := append([]ASDStatus(nil), e.asds.st...)
	e.asds.mu.Unlock()
	for i := range out {
		var st syscall.Statfs_t
		if syscall.Statfs(out[i].Path, &st) == nil {
			out[i].TotalBytes, out[i].FreeBytes = st.Blocks*uint64(st.Bsize), st.Bavail*uint64(st.Bsize)
		}
	}
	return out
}

// usable returns the ASDs new fragments may go to, looking again at
// those that were not ok when asdRecheck has passed.
func (e *EC) usable() []int {
	e.recheck(false)
	e.asds.mu.Lock()
	defer e.asds.mu.Unlock()
	var out []int
	for a, st := range e.asds.st {
		if st.State == ASDOK {
			out = append(out, a)
		}
	}
	return out
}

// readable reports whether fragments are looked for on ASD a.
func (e *EC) readable(a int) bool {
	e.asds.mu.Lock()
	defer e.asds.mu.Unlock()
	s := e.asds.st[a].State
	return s == ASDOK || s == ASDFailing || s == ASDFull || s == ASDDraining
}

// state is ASD a's state.
func (e *EC) state(a int) ASDState {
	e.asds.mu.Lock()
	defer e.asds.mu.Unlock()
	return e.asds.st[a].State
}

// draining reports whether ASD a is being removed.
func (e *EC) draining(a int) bool {
	e.asds.mu.Lock()
	defer e.asds.mu.Unlock()
	return e.asds.st[a].State == ASDDraining
}

// index is the position of dir in the ASD list, or -1.
func (e *EC) index(dir string) int {
	for i, d := range e.dirs {
		if filepath.Clean(d) == filepath.Clean(dir) {
			return i
		}
	}
	return -1
}

// Drain starts removing the ASD dir: from now on it takes no new
// fragments, and every pass moves the fragments it holds to the others
// (persisted in its identity, so a restart goes on draining it). Join
// takes a draining ASD back.
func (e *EC) Drain(dir string) error {
	a := e.index(dir)
	if a < 0 {
		return fmt.Errorf("objstore: %s is not in the ASD list (backend.asds)", dir)
	}
	id, err := readIdentity(dir)
	if err != nil || id.Pool != e.PoolID() {
		return fmt.Errorf("objstore: %s is not an ASD of this pool (state %s)", dir, e.ASDs()[a].State)
	}
	if len(e.usable())-b2i(e.state(a) == ASDOK) < e.preset.Data+e.preset.Parity {
		return fmt.Errorf("%w: without %s, fewer than k+m=%d writable ASDs are left: the objects would lose redundancy",
			ErrNoASD, dir, e.preset.Data+e.preset.Parity)
	}
	id.Draining = true
	if err := storeIdentity(dir, id); err != nil {
		return fmt.Errorf("objstore: drain %s: %w", dir, err)
	}
	e.setState(a, ASDDraining, judge(dir, id, nil, e.PoolID(), time.Now()).Detail)
	e.log.Info("objstore: ASD draining", "asd", dir)
	return nil
}

// recheck looks again at the ASDs that are not ok (all when force).
func (e *EC) recheck(force bool) {
	e.asds.mu.Lock()
	if !force && time.Since(e.asds.lastCheck) < e.asds.every {
		e.asds.mu.Unlock()
		return
	}
	e.asds.lastCheck = time.Now()
	pool := e.asds.pool
	st := append([]ASDStatus(nil), e.asds.st...)
	e.asds.mu.Unlock()
	for a := range st {
		// an ok ASD is looked at too: a disk pulled or unmounted loses its
		// identity file, and must not wait for a failed write to show
		id, err := readIdentity(e.dirs[a])
		next := judge(e.dirs[a], id, err, pool, time.Now())
		if st[a].State == ASDOK && next.State == ASDOK {
			continue
		}
		if next.State == ASDOK && (st[a].State == ASDFailing || st[a].State == ASDFull) {
			if perr := e.probe(a); perr != nil {
				continue // still failing or full
			}
		}
		if next.State != st[a].State {
			e.log.Info("objstore: ASD state changed", "asd", e.dirs[a], "was", st[a].State, "now", next.State, "why", next.Detail)
			e.setState(a, next.State, next.Detail)
		}
	}
}

// lostSince is when the newest of the ASDs that are missing or failing
// went so (zero: none is).
func (e *EC) lostSince() time.Time {
	e.asds.mu.Lock()
	defer e.asds.mu.Unlock()
	var t time.Time
	for _, st := range e.asds.st {
		if (st.State == ASDMissing || st.State == ASDFailing) && st.Since.After(t) {
			t = st.Since
		}
	}
	return t
}

// probe writes and removes a small file on ASD a, and checks its space.
func (e *EC) probe(a int) error {
	p := filepath.Join(e.dirs[a], ".probe")
	if err := os.WriteFile(p, []byte("probe"), 0o600); err != nil {
		return err
	}
	os.Remove(p)
	var st syscall.Statfs_t
	if err := syscall.Statfs(e.dirs[a], &st); err == nil && int64(st.Bavail)*st.Bsize < max(e.reserve.Load(), 2*e.preset.FragmentSize) {
		return fmt.Errorf("%w: %s", ErrNoSpace, e.dirs[a])
	}
	return nil
}

// setState records ASD a's new state (since now).
func (e *EC) setState(a int, s ASDState, detail string) {
	e.asds.mu.Lock()
	defer e.asds.mu.Unlock()
	if e.asds.st[a].State != s {
		e.asds.st[a].Since = time.Now()
	}
	e.asds.st[a].State, e.asds.st[a].Detail = s, detail
}

// fail takes ASD a out of new Puts after a write to it failed.
func (e *EC) fail(a int, err error) {
	state := ASDFailing
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, ErrNoSpace) {
		state = ASDFull
	}
	e.log.Warn("objstore: ASD left out of new writes", "asd", e.dirs[a], "state", state, "err", err)
	e.setState(a, state, err.Error())
}

// Join makes dir, an empty directory or one without an identity and
// without objects, an ASD of this pool (a replaced disk). It must be in
// the configured ASD list.
func (e *EC) Join(dir string) error {
	a := e.index(dir)
	if a < 0 {
		return fmt.Errorf("objstore: %s is not in the ASD list (backend.asds)", dir)
	}
	if id, err := readIdentity(dir); err == nil {
		if id.Pool == e.PoolID() && id.Draining {
			id.Draining = false
			if err := storeIdentity(dir, id); err != nil {
				return fmt.Errorf("objstore: join %s: %w", dir, err)
			}
			e.setState(a, ASDOK, "")
			return nil
		}
		if id.Pool == e.PoolID() {
			return nil
		}
		return fmt.Errorf("%w: %s carries pool %s", ErrForeignASD, dir, id.Pool)
	}
	if ents, err := os.ReadDir(filepath.Join(dir, "objects")); err == nil && len(ents) > 0 {
		return fmt.Errorf("objstore: %s holds %d objects but no identity: not joined (another pool's data?)", dir, len(ents))
	}
	if _, err := writeIdentity(dir, e.PoolID()); err != nil {
		return fmt.Errorf("objstore: join %s: %w", dir, err)
	}
	e.log.Info("objstore: ASD joined the pool", "asd", dir, "pool", e.PoolID())
	e.recheck(true)
	return nil
}

// allFull reports whether every ASD that is not ok is full.
func (e *EC) allFull() bool {
	e.asds.mu.Lock()
	defer e.asds.mu.Unlock()
	for _, st := range e.asds.st {
		if st.State != ASDOK && st.State != ASDFull {
			return false
		}
	}
	return true
}

// asdSummary says why fragments cannot go where they should.
func (e *EC) asdSummary() string {
	e.asds.mu.Lock()
	defer e.asds.mu.Unlock()
	var parts []string
	for _, st := range e.asds.st {
		if st.State != ASDOK {
			parts = append(parts, fmt.Sprintf("%s %s (%s)", st.Path, st.State, st.Detail))
		}
	}
	return strings.Join(parts, "; ")
}

// mkObjDir makes an object's directory in an ASD's objects directory,
// never the ASD itself: an ASD whose directory went away (a disk pulled,
// unmounted) fails the write instead of getting a new, empty directory
// without its identity.
func mkObjDir(dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return nil
}
