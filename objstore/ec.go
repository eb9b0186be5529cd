package objstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"github.com/klauspost/reedsolomon"
)

// Preset is a backend policy: K data + M parity fragments per stripe, each
// FragmentSize bytes long.
type Preset struct {
	Data         int   `mapstructure:"data"`
	Parity       int   `mapstructure:"parity"`
	FragmentSize int64 `mapstructure:"fragment_size"`
}

// Check reports a preset that cannot work over asds ASDs, naming the value.
func (p Preset) Check(asds int) error {
	switch {
	case p.Data < 1 || p.Data > 128:
		return fmt.Errorf("%w: data fragments k=%d, want 1..128", ErrBadPreset, p.Data)
	case p.Parity < 0 || p.Parity > 64:
		return fmt.Errorf("%w: parity fragments m=%d, want 0..64", ErrBadPreset, p.Parity)
	case p.FragmentSize < blockSize || p.FragmentSize > 1<<30:
		return fmt.Errorf("%w: fragment size %d, want %d..%d bytes", ErrBadPreset, p.FragmentSize, blockSize, 1<<30)
	case p.Data+p.Parity > asds:
		return fmt.Errorf("%w: k+m=%d+%d=%d fragments need as many ASDs, have %d",
			ErrBadPreset, p.Data, p.Parity, p.Data+p.Parity, asds)
	}
	return nil
}

// EC is the local erasure-coded store over a set of ASD directories.
type EC struct {
	dirs    []string
	preset  Preset
	log     *slog.Logger
	reserve atomic.Int64 // bytes a Put leaves free on each ASD's filesystem

	encMu struct {
		sync.Mutex
		m map[[2]int]reedsolomon.Encoder
	}
	geo      Cache[geometry] // layouts and locations of objects read or written
	repaired atomic.Int64    // fragment pieces rebuilt from parity on read
	degraded atomic.Int64    // objects written with fewer than k+m fragments
	asds     asdSet
	// nameLocks exclude Put, Delete and repair of one name (lockName)
	nameLocks [64]sync.Mutex
	// onDecode, when set, hears of each object a read had to decode
	// (Healer queues it for repair)
	onDecode atomic.Pointer[func(name string)]
	// createMu makes Create's look and Put one step within the process;
	// one process at a time holds a backend.
	createMu sync.Mutex
}

const geometryCacheMax = 1 << 16

// OpenEC opens (creating as needed) an EC store over dirs with preset.
// ASDs that are missing at open are reported and tolerated for reads.
func OpenEC(dirs []string, preset Preset, log *slog.Logger) (*EC, error) {
	return OpenECPool(dirs, preset, "", log)
}

// OpenECPool is OpenEC of the pool whose identity is pool (see asd.go):
// ASDs that do not carry it are not used. "" takes the pool the ASDs
// carry, or makes a new one when none carries any.
func OpenECPool(dirs []string, preset Preset, pool string, log *slog.Logger) (*EC, error) {
	if err := preset.Check(len(dirs)); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	e := &EC{dirs: append([]string(nil), dirs...), preset: preset, log: log}
	e.encMu.m = make(map[[2]int]reedsolomon.Encoder)
	e.geo.Max = geometryCacheMax
	if err := e.identify(pool); err != nil {
		return nil, err
	}
	return e, nil
}

// Preset returns the policy new objects are written with.
func (e *EC) Preset() Preset { return e.preset }

// RepairedReads counts fragment pieces rebuilt from parity since open.
func (e *EC) RepairedReads() int64 { return e.repaired.Load() }

func (e *EC) encoder(k, m int) (reedsolomon.Encoder, error) {
	e.encMu.Lock()
	defer e.encMu.Unlock()
	if enc, ok := e.encMu.m[[2]int{k, m}]; ok {
		return enc, nil
	}
	enc, err := reedsolomon.New(k, max(m, 1))
	if err != nil {
		return nil, fmt.Errorf("%w: k=%d m=%d: %v", ErrBadPreset, k, m, err)
	}
	e.encMu.m[[2]int{k, m}] = enc
	return enc, nil
}

func (e *EC) objDir(asd int, name string) string {
	return filepath.Join(e.dirs[asd], "objects", url.PathEscape(name))
}

// placement is where a Put writes: fragment i of stripe s goes to
// usable[(start+s+i) % len(usable)], distinct ASDs within a stripe,
// rotating from stripe to stripe. With fewer usable ASDs than k+m, only
// the first width fragments of each stripe are written (data first):
// the object has less redundancy until a repair adds the rest.
type placement struct {
	usable []int
	start  int
	width  int
}

func (e *EC) place(name string) (placement, error) {
	k, m := e.preset.Data, e.preset.Parity
	usable := e.usable()
	if len(usable) < k {
		cause := ErrNoASD
		if e.allFull() {
			cause = ErrNoSpace
		}
		return placement{}, fmt.Errorf("%w: put %s: %d data fragments need as many writable ASDs, %d are (%s)",
			cause, name, k, len(usable), e.asdSummary())
	}
	return placement{usable: usable, start: int(crc([]byte(name)) % uint32(len(usable))), width: min(len(usable), k+m)}, nil
}

func (p placement) asd(s, i int) int { return p.usable[(p.start+s+i)%len(p.usable)] }

func (e *EC) fragPath(p placement, name string, s, i int) string {
	return filepath.Join(e.objDir(p.asd(s, i), name), fmt.Sprintf("%d.%d", s, i))
}

// Put stores size bytes of src as name, replacing any earlier object.
//
// Put is background work (uploads of sealed SCOs): it reads, encodes and
// writes at a lower CPU priority (nice putNice), so that on a busy host
// the front end's I/O goes first; a write buffer filling up throttles the
// front end and so gives the uploads their CPU back.
func (e *EC) Put(ctx context.Context, name string, src io.ReaderAt, size int64) error {
	unlock := e.lockName(name)
	defer unlock()
	var err error
	runNiced(putNice, func() { err = e.put(ctx, name, src, size) })
	return err
}

// Create is Put of a name that must not exist: ErrExists if it does.
// The look and the Put are one step for every process on these ASDs: a
// lock file on each reachable ASD is held across them (flock, taken in
// the order of the paths, so that processes listing the ASDs in other
// orders never deadlock).
func (e *EC) Create(ctx context.Context, name string, src io.ReaderAt, size int64) error {
	e.createMu.Lock()
	defer e.createMu.Unlock()
	unlock := e.lockASDs()
	defer unlock()
	e.geo.Forget(name) // look at the ASDs, not at what this process saw
	switch _, err := e.Size(ctx, name); {
	case err == nil:
		return fmt.Errorf("%w: %s", ErrExists, name)
	case !errors.Is(err, ErrNotFound):
		return fmt.Errorf("objstore: create %s: %w", name, err)
	}
	return e.Put(ctx, name, src, size)
}

func (e *EC) lockASDs() (unlock func()) {
	paths := make([]string, 0, len(e.dirs))
	for _, d := range e.dirs {
		paths = append(paths, filepath.Join(d, "create.lock"))
	}
	sort.Strings(paths)
	var held []*os.File
	for _, p := range paths {
		f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			continue // an ASD that is away: the others serialize
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
			f.Close()
			continue
		}
		held = append(held, f)
	}
	return func() {
		for _, f := range held {
			f.Close() // releases the lock
		}
	}
}

// putNice is the nice value of the threads that run Put; their disk I/O
// is in the idle class (served when the disk has nothing else to do, with
// the I/O scheduler's aging as the bound on waiting).
const putNice = 10

const (
	ioprioWhoProcess = 1
	ioprioClassIdle  = 3
	ioprioClassShift = 13
)

// runNiced runs fn on an OS thread of its own at the given nice value and
// the idle I/O class. The thread is never unlocked, so it exits with the
// goroutine and its lower priority never reaches other goroutines.
func runNiced(nice int, fn func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		tid := syscall.Gettid()
		syscall.Setpriority(syscall.PRIO_PROCESS, tid, nice) // best effort, as below
		syscall.Syscall(syscall.SYS_IOPRIO_SET, ioprioWhoProcess, uintptr(tid), ioprioClassIdle<<ioprioClassShift)
		fn()
	}()
	<-done
}

func (e *EC) put(ctx context.Context, name string, src io.ReaderAt, size int64) error {
	k, m := e.preset.Data, e.preset.Parity
	enc, err := e.encoder(k, m)
	if err != nil {
		return err
	}
	pl, err := e.place(name)
	if err != nil {
		return err
	}
	g := newGeometry(size, k, m, e.preset.FragmentSize)
	g.nonce = rand.Uint64()
	g.at = make([]uint16, g.stripes*(k+m))
	used := map[int]bool{}
	for s := 0; s < g.stripes; s++ {
		for i := 0; i < pl.width; i++ {
			used[pl.asd(s, i)] = true
			g.at[s*(k+m)+i] = uint16(pl.asd(s, i)) + 1
		}
	}
	for a := range used {
		if err := mkObjDir(e.objDir(a, name)); err != nil {
			e.fail(a, err)
			return fmt.Errorf("%w: put %s: %v", ErrNoASD, name, err)
		}
	}
	fl0 := g.fragLen(0)
	if err := e.checkSpace(name, g, pl, fileSize(fl0)); err != nil {
		return err
	}
	stripe := make([]byte, int64(k+m)*fl0)
	files := make([][]byte, k+m)
	for i := range files {
		files[i] = alignedBuffer(fileSize(fl0))
	}
	shards := make([][]byte, k+m)
	var written []string
	for s := 0; s < g.stripes; s++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		fl := g.fragLen(s)
		n := g.stripeLen(s)
		buf := stripe[:int64(k+m)*fl]
		if n > 0 {
			if _, err := src.ReadAt(buf[:n], int64(s)*g.stripeBytes()); err != nil && !errors.Is(err, io.EOF) {
				return fmt.Errorf("objstore: put %s: read source: %w", name, err)
			}
		}
		clear(buf[n:])
		for i := range shards {
			shards[i] = buf[int64(i)*fl : int64(i+1)*fl]
		}
		if m > 0 && fl > 0 {
			if err := enc.Encode(shards); err != nil {
				return fmt.Errorf("objstore: put %s: encode: %w", name, err)
			}
		}
		errs := make([]error, pl.width)
		var wg sync.WaitGroup
		for i := 0; i < pl.width; i++ {
			wg.Add(1)
			go runNiced(putNice, func() {
				defer wg.Done()
				h := fragHeader{ObjSize: uint64(size), FragmentSize: uint64(g.fragmentSize), FragLen: uint64(fl),
					Nonce: g.nonce, Stripe: uint32(s), Stripes: uint32(g.stripes), K: uint8(k), M: uint8(m), Index: uint8(i)}
				out := files[i][:fileSize(fl)]
				encodeFragment(out, &h, shards[i])
				errs[i] = writeFragmentFile(e.fragPath(pl, name, s, i)+tmpSuffix, out)
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				e.fail(pl.asd(s, i), err) // the next attempt writes elsewhere
			}
		}
		if err := errors.Join(errs...); err != nil {
			return fmt.Errorf("%w: put %s stripe %d: %v", ErrNoASD, name, s, err)
		}
		for i := 0; i < pl.width; i++ {
			written = append(written, e.fragPath(pl, name, s, i))
		}
	}
	// Every fragment is synced (concurrently, so that the filesystems can
	// share journal commits) before any is renamed.
	if err := forEach(written, func(p string) error { return syncFile(p + tmpSuffix) }); err != nil {
		return fmt.Errorf("%w: put %s: %v", ErrNoASD, name, err)
	}
	var dirs []string
	for a := range used {
		dirs = append(dirs, e.objDir(a, name), filepath.Join(e.dirs[a], "objects"))
	}
	// The switch (see geometry): beside the old version first, then over
	// it, stripe 0 last each time. A crash before the first step leaves
	// the old version; after it, the new one.
	stripe0Last(written)
	for _, step := range [][2]string{{tmpSuffix, newSuffix}, {newSuffix, ""}} {
		for _, p := range written {
			if err := e.putStepForTesting(step[1]); err != nil {
				return err
			}
			if err := os.Rename(p+step[0], p+step[1]); err != nil {
				return fmt.Errorf("%w: put %s: %v", ErrNoASD, name, err)
			}
		}
		if err := forEach(dirs, syncDir); err != nil {
			return fmt.Errorf("%w: put %s: %v", ErrNoASD, name, err)
		}
	}
	e.dropOthers(name, written)
	if pl.width < k+m {
		e.degraded.Add(1)
		if fn := e.onDecode.Load(); fn != nil {
			(*fn)(name) // for a repair once an ASD can take the rest
		}
		e.log.Warn("objstore: object written without full redundancy: too few writable ASDs; a repair adds the missing fragments",
			"object", name, "fragments_per_stripe", pl.width, "want", k+m, "asds", e.asdSummary())
	}
	e.geo.Put(name, g)
	return nil
}

// dropOthers removes the fragment files of name that are not the ones
// just written (an older version's, where the placement has moved), so
// that no stale version outvotes the new one.
func (e *EC) dropOthers(name string, written []string) {
	keep := make(map[string]bool, len(written))
	for _, p := range written {
		keep[p] = true
	}
	for a := range e.dirs {
		if !e.readable(a) {
			continue
		}
		dir := e.objDir(a, name)
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, ent := range ents {
			if p := filepath.Join(dir, ent.Name()); !keep[p] && !strings.HasSuffix(p, tmpSuffix) {
				os.Remove(p)
			}
		}
	}
}

// DegradedPuts counts objects written since open with fewer than k+m
// fragments per stripe.
func (e *EC) DegradedPuts() int64 { return e.degraded.Load() }

var alignedBufs sync.Pool

// getAligned is alignedBuffer(n) from a pool (putAligned when done).
func getAligned(n int64) []byte {
	if b, ok := alignedBufs.Get().(*[]byte); ok && int64(cap(*b)) >= (n+directIO-1)/directIO*directIO {
		return (*b)[:n]
	}
	return alignedBuffer(n)
}

func putAligned(b []byte) {
	if b != nil {
		alignedBufs.Put(&b)
	}
}

// directIO is the unit O_DIRECT writes are padded to.
const directIO = 4096

// alignedBuffer returns n bytes whose start is aligned and whose capacity
// reaches the next multiple of directIO, for writeFragmentFile.
func alignedBuffer(n int64) []byte {
	b := make([]byte, n+2*directIO)
	off := 0
	if r := int(uintptr(unsafe.Pointer(&b[0])) % directIO); r != 0 {
		off = directIO - r
	}
	return b[off : off+int(n) : off+int(n+directIO-1)/directIO*directIO]
}

// writeFragmentFile writes a new fragment file with O_DIRECT, so that
// uploads do not copy every byte into the page cache (and write it back
// later): the write is padded to directIO bytes and the file then cut to
// its length. Filesystems without O_DIRECT (tmpfs) get a buffered write.
func writeFragmentFile(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_DIRECT, 0o600)
	if errors.Is(err, syscall.EINVAL) {
		return os.WriteFile(path, b, 0o600)
	}
	if err != nil {
		return err
	}
	padded := b // not from alignedBuffer: an unaligned direct write fails below and falls back
	if n := (len(b) + directIO - 1) / directIO * directIO; n <= cap(b) && len(b) > 0 &&
		uintptr(unsafe.Pointer(&b[0]))%directIO == 0 {
		padded = b[:n]
	}
	_, err = f.Write(padded)
	if errors.Is(err, syscall.EINVAL) {
		f.Close()
		return os.WriteFile(path, b, 0o600)
	}
	if err == nil && len(padded) != len(b) {
		err = f.Truncate(int64(len(b)))
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// forEach runs fn on every item, 32 at a time, and joins the errors.
func forEach(items []string, fn func(string) error) error {
	errs := make([]error, len(items))
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for i, it := range items {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			errs[i] = fn(it)
			<-sem
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Fragment files: "<stripe>.<index>" is in place; a Put writes
// "<stripe>.<index>.tmp", renames every one to ".new" beside the fragments
// of the version it replaces, then every ".new" over them, stripe 0 last
// in both steps. So a version with at least k fragments of stripe 0 under
// ".new" names has all its other fragments written (under one name or
// the other) and wins; otherwise the version in place does.
const (
	tmpSuffix = ".tmp"
	newSuffix = ".new"
)

// stripe0Last orders fragment paths so that stripe 0's come last.
func stripe0Last(paths []string) {
	sort.SliceStable(paths, func(a, b int) bool {
		return !strings.HasPrefix(filepath.Base(paths[a]), "0.") && strings.HasPrefix(filepath.Base(paths[b]), "0.")
	})
}

// putStepHook, when set, is called before each rename of a Put's switch
// ("new": a fragment to .new, "": one into place); an error stops the Put
// there, as a crash would.
var putStepHook func(step string) error

func (e *EC) putStepForTesting(step string) error {
	if putStepHook != nil {
		return putStepHook(step)
	}
	return nil
}

// Size returns the object's length.
func (e *EC) Size(ctx context.Context, name string) (int64, error) {
	g, err := e.geometry(ctx, name)
	return g.size, err
}

// GetRange fills p with the object's bytes at off, reading only the data
// fragments that cover the range and decoding only where one fails.
func (e *EC) GetRange(ctx context.Context, name string, p []byte, off int64) error {
	g, err := e.geometry(ctx, name)
	if err != nil {
		return err
	}
	if err := checkRange(name, g.size, off, len(p)); err != nil {
		return err
	}
	for len(p) > 0 {
		s := int(off / g.stripeBytes())
		r := off - int64(s)*g.stripeBytes()
		fl := g.fragLen(s)
		i := int(r / fl)
		inner := r % fl
		n := int(min(int64(len(p)), fl-inner))
		if err := e.readPiece(ctx, name, g, s, i, inner, p[:n]); err != nil {
			return err
		}
		p = p[n:]
		off += int64(n)
	}
	return nil
}

func (e *EC) readPiece(ctx context.Context, name string, g geometry, s, i int, inner int64, dst []byte) error {
	fl := g.fragLen(s)
	b0 := inner / blockSize
	start := b0 * blockSize
	end := min((inner+int64(len(dst))+blockSize-1)/blockSize*blockSize, fl)
	buf := make([]byte, end-start)
	err := e.readBlocks(name, g, s, i, b0, buf)
	if err == nil {
		copy(dst, buf[inner-start:])
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// Rebuild the block range of fragment i from any k others.
	e.repaired.Add(1)
	if fn := e.onDecode.Load(); fn != nil {
		(*fn)(name)
	}
	e.log.Warn("objstore: fragment unreadable, decoding from parity", "object", name, "stripe", s, "fragment", i, "err", err)
	shards := make([][]byte, g.k+g.m)
	got := 0
	errs := []error{fmt.Errorf("fragment %d: %w", i, err)}
	for j := 0; j < g.k+g.m && got < g.k; j++ {
		if j == i {
			continue
		}
		b := make([]byte, end-start)
		if err := e.readBlocks(name, g, s, j, b0, b); err != nil {
			errs = append(errs, fmt.Errorf("fragment %d: %w", j, err))
			continue
		}
		shards[j] = b
		got++
	}
	if got < g.k {
		return fmt.Errorf("%w: %s stripe %d: %d of %d fragments readable, need %d: %v",
			ErrUnavailable, name, s, got, g.k+g.m, g.k, errors.Join(errs...))
	}
	enc, err := e.encoder(g.k, g.m)
	if err != nil {
		return err
	}
	if err := enc.ReconstructData(shards); err != nil {
		return fmt.Errorf("%w: %s stripe %d: decode: %v", ErrCorrupt, name, s, err)
	}
	copy(dst, shards[i][inner-start:])
	return nil
}

// readBlocks reads len(dst) data bytes of fragment (s, i) from block b0,
// checking the header's version and every block's CRC.
func (e *EC) readBlocks(name string, g geometry, s, i int, b0 int64, dst []byte) error {
	f, err := e.openAt(name, g, s, i)
	if err != nil {
		return err
	}
	defer f.Close()
	nblocks := (int64(len(dst)) + blockSize - 1) / blockSize
	raw := make([]byte, int64(len(dst))+nblocks*blockCRCSize)
	if _, err := f.ReadAt(raw, headerSize+b0*blockStride); err != nil {
		return fmt.Errorf("%w: read: %v", ErrCorrupt, err)
	}
	return decodeBlocks(dst, raw, len(dst))
}

// openFragment opens a fragment file of version g, stripe s, index i.
func (e *EC) openFragment(path string, g geometry, s, i int) (*os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	var hb [headerSize]byte
	if _, err := f.ReadAt(hb[:], 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("%w: header: %v", ErrCorrupt, err)
	}
	h, err := decodeFragHeader(hb[:])
	if err == nil && (h.Nonce != g.nonce || int(h.Stripe) != s || int(h.Index) != i) {
		err = fmt.Errorf("%w: stale fragment (version %x, want %x)", ErrCorrupt, h.Nonce, g.nonce)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// Delete removes every fragment of name from every reachable ASD.
func (e *EC) Delete(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	unlock := e.lockName(name)
	defer unlock()
	e.geo.Forget(name)
	for a := range e.dirs {
		if !e.readable(a) {
			continue // never touch what is not this pool's
		}
		if err := os.RemoveAll(e.objDir(a, name)); err != nil {
			e.log.Warn("objstore: delete: ASD unavailable, a stale fragment may stay", "asd", e.dirs[a], "object", name, "err", err)
		}
	}
	return nil
}

// List returns the names with the prefix found on any reachable ASD. A Put
// cut short by a crash may leave a listed name that reads as ErrNotFound.
func (e *EC) List(ctx context.Context, prefix string) ([]string, error) {
	seen := map[string]bool{}
	reachable := 0
	for a, d := range e.dirs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if !e.readable(a) {
			continue
		}
		ents, err := os.ReadDir(filepath.Join(d, "objects"))
		if err != nil {
			continue
		}
		reachable++
		for _, ent := range ents {
			n, err := url.PathUnescape(ent.Name())
			if err == nil && strings.HasPrefix(n, prefix) {
				seen[n] = true
			}
		}
	}
	if reachable < e.preset.Data {
		return nil, fmt.Errorf("%w: list: %d of %d ASDs reachable", ErrUnavailable, reachable, len(e.dirs))
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

// ListDirs returns the "directories" right below prefix.
func (e *EC) ListDirs(ctx context.Context, prefix string) ([]string, error) {
	names, err := e.List(ctx, prefix)
	return dirsOf(names, prefix), err
}

// Usage sums the filesystems under the ASDs, each counted once.
func (e *EC) Usage(ctx context.Context) (Usage, error) {
	u := Usage{DataFraction: float64(e.preset.Data) / float64(e.preset.Data+e.preset.Parity)}
	seen := map[[2]int32]bool{}
	for a, d := range e.dirs {
		if !e.readable(a) {
			continue
		}
		var st syscall.Statfs_t
		if err := syscall.Statfs(d, &st); err != nil {
			continue
		}
		if seen[st.Fsid.X__val] {
			continue
		}
		seen[st.Fsid.X__val] = true
		u.TotalBytes += st.Blocks * uint64(st.Bsize)
		u.FreeBytes += st.Bavail * uint64(st.Bsize)
	}
	if len(seen) == 0 {
		return u, fmt.Errorf("%w: no ASD reachable", ErrNoASD)
	}
	return u, nil
}

// SetReserve makes a Put leave reserveBytes free on the filesystem of
// every ASD it writes to (ErrNoSpace otherwise): an ASD directory that
// shares its filesystem with the daemon's metadata stores must not take
// the room they write into. 0 turns the check off.
func (e *EC) SetReserve(reserveBytes int64) {
	e.reserve.Store(reserveBytes)
	e.recheck(true) // full ASDs may have room under the new reserve
}

// checkSpace refuses a Put whose fragments (of at most fragBytes each)
// would leave less than the reserve free on an ASD's filesystem.
func (e *EC) checkSpace(name string, g geometry, pl placement, fragBytes int64) error {
	reserve := e.reserve.Load()
	if reserve <= 0 {
		return nil
	}
	type fsNeed struct {
		dir        string
		free, need int64
		asds       []int
	}
	perASD := map[int]int64{}
	for s := 0; s < g.stripes; s++ {
		for i := 0; i < pl.width; i++ {
			perASD[pl.asd(s, i)] += fragBytes
		}
	}
	byFS := map[[2]int32]*fsNeed{} // ASDs may share a filesystem (the default layout)
	for a, n := range perASD {
		var st syscall.Statfs_t
		if err := syscall.Statfs(e.dirs[a], &st); err != nil {
			continue // the write will say what is wrong
		}
		f := byFS[st.Fsid.X__val]
		if f == nil {
			f = &fsNeed{dir: e.dirs[a], free: int64(st.Bavail) * st.Bsize}
			byFS[st.Fsid.X__val] = f
		}
		f.need += n
		f.asds = append(f.asds, a)
	}
	for _, f := range byFS {
		if f.free-f.need < reserve {
			for _, a := range f.asds {
				e.fail(a, fmt.Errorf("%w: %d bytes free, %d kept free", ErrNoSpace, f.free, reserve))
			}
			return fmt.Errorf("%w: put %s: the filesystem of ASD %s has %d bytes free, the object needs %d there and %d stay free",
				ErrNoSpace, name, f.dir, f.free, f.need, reserve)
		}
	}
	return nil
}
