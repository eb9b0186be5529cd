package volume

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"testing"

	"vpool/metastore"
)

// model is the dumb reference: a vDisk is a byte slice.
type model struct {
	data    []byte
	flushed []byte           // content at the last flush
	history map[int][][]byte // cluster -> contents it had since the last flush
	touched map[int]bool     // clusters written since the last flush
}

const pcs = 4096

func newModel(size int) *model {
	return &model{data: make([]byte, size), flushed: make([]byte, size), history: map[int][][]byte{}, touched: map[int]bool{}}
}

func (m *model) noteClusters(off, n int) {
	for c := off / pcs; c*pcs < off+n && c*pcs < len(m.data); c++ {
		end := min((c+1)*pcs, len(m.data))
		m.history[c] = append(m.history[c], append([]byte(nil), m.data[c*pcs:end]...))
	}
}

func (m *model) write(p []byte, off int) {
	copy(m.data[off:], p)
	m.noteClusters(off, len(p))
}

func (m *model) flush() {
	m.flushed = append(m.flushed[:0], m.data...)
	clear(m.history)
}

func (m *model) resize(n int) {
	if n < len(m.data) {
		m.data = m.data[:n]
	} else {
		m.data = append(m.data, make([]byte, n-len(m.data))...)
	}
}

// acceptCrash checks a vDisk read after a power loss: every cluster holds
// its flushed content or a content it had after a later acknowledged
// write. It then adopts what was read.
func (m *model) acceptCrash(t *testing.T, got []byte, what string) {
	t.Helper()
	for c := 0; c*pcs < len(got); c++ {
		end := min((c+1)*pcs, len(got))
		g := got[c*pcs : end]
		ok := bytes.Equal(g, m.flushed[c*pcs:end])
		for _, h := range m.history[c] {
			ok = ok || bytes.Equal(g, h[:len(g)])
		}
		if !ok {
			t.Fatalf("%s: cluster %d holds neither its flushed content nor a later write", what, c)
		}
	}
	m.data = append(m.data[:0], got...)
	m.flush()
}

type propDisk struct {
	id    uint64
	m     *model
	snaps map[string][]byte // snapshot name -> content
	order []string          // snapshot names, oldest first
	// clones: the disk and snapshot it was made from
	parent     *propDisk
	parentSnap string
	gone       map[string][]byte // deleted snapshots (a stale manifest may bring one back)
}

// checkSnapshots compares every snapshot of d with the model.
// lostOK: snapshots missing from the vDisk are forgotten (the metadata
// store was lost and the manifest may be stale; one deleted since may also
// come back, with its content intact).
func checkSnapshots(t *testing.T, ctx context.Context, v *VDisk, d *propDisk, what string, lostOK bool) {
	t.Helper()
	listed := map[string]bool{}
	d.order = d.order[:0]
	for _, si := range v.Snapshots() {
		listed[si.Name] = true
		d.order = append(d.order, si.Name)
		want, ok := d.snaps[si.Name]
		if !ok && lostOK {
			want, ok = d.gone[si.Name]
			d.snaps[si.Name] = want
		}
		if !ok {
			t.Fatalf("%s: vDisk %s lists snapshot %q the model does not have", what, FormatID(d.id), si.Name)
		}
		if si.Size != int64(len(want)) {
			t.Fatalf("%s: snapshot %q size %d, model %d", what, si.Name, si.Size, len(want))
		}
		s, err := v.OpenSnapshot(si.Name)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(want))
		_, err = s.ReadAt(ctx, got, 0)
		s.Close()
		if err != nil && len(want) > 0 {
			t.Fatalf("%s: read snapshot %q: %v", what, si.Name, err)
		}
		if !bytes.Equal(got, want) {
			i := 0
			for i < len(got) && got[i] == want[i] {
				i++
			}
			t.Fatalf("%s: snapshot %q of vDisk %s differs from the model at byte %d (cluster %d)", what, si.Name, FormatID(d.id), i, i/pcs)
		}
	}
	for name := range d.snaps {
		if !listed[name] {
			if !lostOK {
				t.Fatalf("%s: snapshot %q of vDisk %s is missing", what, name, FormatID(d.id))
			}
			delete(d.snaps, name)
		}
	}
}

func TestPropertyVDiskMatchesModel(t *testing.T) {
	seeds := 6
	steps := 250
	if s := os.Getenv("VPOOL_PROP_SEEDS"); s != "" {
		seeds, _ = strconv.Atoi(s)
	}
	if testing.Short() {
		seeds = 2
	}
	for seed := 1; seed <= seeds; seed++ {
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) { runProperty(t, uint64(seed), steps) })
	}
}

func runProperty(t *testing.T, seed uint64, steps int) {
	r := rand.New(rand.NewPCG(seed, 99))
	e := newEnv(t)
	e.rng = rand.New(rand.NewPCG(seed, 100)) // what each power loss keeps
	// Bounded by steps, not time: the context is only a hang guard, ended
	// shortly before the test binary's own deadline so that the failure
	// names the seed and the step.
	ctx, cancel := hangGuard(t)
	defer cancel()
	var disks []*propDisk
	for i := 0; i < 2; i++ {
		size := (4 + r.IntN(4)) << 20
		v, err := e.pool.Create(ctx, int64(size))
		if err != nil {
			t.Fatal(err)
		}
		disks = append(disks, &propDisk{id: v.ID(), m: newModel(size), snaps: map[string][]byte{}, gone: map[string][]byte{}})
	}
	readAll := func(d *propDisk) []byte {
		v := e.vdisk(d.id)
		if v.Size() != int64(len(d.m.data)) {
			t.Fatalf("size %d, model %d", v.Size(), len(d.m.data))
		}
		b := make([]byte, v.Size())
		if _, err := v.ReadAt(ctx, b, 0); err != nil {
			t.Fatalf("read all: %v", err)
		}
		return b
	}
	checkAll := func(what string) {
		t.Helper()
		for _, d := range disks {
			checkSnapshots(t, ctx, e.vdisk(d.id), d, what, false)
			if got := readAll(d); !bytes.Equal(got, d.m.data) {
				i := 0
				for i < len(got) && got[i] == d.m.data[i] {
					i++
				}
				t.Fatalf("%s: vDisk %s differs from the model at byte %d (cluster %d)", what, FormatID(d.id), i, i/pcs)
			}
		}
	}
	var trace []string
	step := 0
	defer func() {
		if t.Failed() {
			t.Logf("seed %d, step %d of %d, last ops: %v", seed, step, steps, trace[max(0, len(trace)-15):])
		}
	}()
	for ; step < steps; step++ {
		d := disks[r.IntN(len(disks))]
		v := e.vdisk(d.id)
		size := len(d.m.data)
		referenced := func(name string) bool {
			for _, c := range disks {
				if c.parent == d && c.parentSnap == name {
					return true
				}
			}
			return false
		}
		op := r.IntN(120)
		switch {
		case op >= 118: // scrub: frees only what nothing reads
			trace = append(trace, "scrub")
			if _, err := e.pool.Scrub(ctx, ScrubOptions{Pace: 1, Threshold: 0.5, Wait: true}); err != nil {
				t.Fatalf("scrub: %v", err)
			}
			checkAll("after a scrub")
		case op >= 116: // flatten
			if d.parent == nil {
				continue
			}
			trace = append(trace, "flatten")
			err := v.Flatten(ctx, nil)
			if len(d.order) > 0 {
				if !errors.Is(err, ErrBusy) {
					t.Fatalf("flatten a clone with snapshots: %v", err)
				}
				continue
			}
			if err != nil {
				t.Fatalf("flatten: %v", err)
			}
			d.parent = nil
		case op >= 112: // clone
			if len(d.order) == 0 || len(disks) >= 5 {
				continue
			}
			name := d.order[r.IntN(len(d.order))]
			trace = append(trace, "clone "+name)
			c, err := e.pool.Clone(ctx, v, name)
			if err != nil {
				t.Fatalf("clone: %v", err)
			}
			m := newModel(0)
			m.data = append([]byte(nil), d.snaps[name]...)
			m.flush()
			disks = append(disks, &propDisk{id: c.ID(), m: m, snaps: map[string][]byte{}, gone: map[string][]byte{},
				parent: d, parentSnap: name})
		case op >= 106: // snapshot
			name := fmt.Sprintf("s%d", step)
			if r.IntN(4) == 0 {
				name = "" // a default name
			}
			trace = append(trace, "snapshot "+name)
			info, err := v.CreateSnapshot(ctx, name)
			if err != nil {
				t.Fatalf("snapshot: %v", err)
			}
			d.snaps[info.Name] = append([]byte(nil), d.m.data...)
			d.order = append(d.order, info.Name)
			d.m.flush()
		case op >= 103: // delete a snapshot
			for name, data := range d.snaps {
				trace = append(trace, "delete snapshot "+name)
				err := v.DeleteSnapshot(ctx, name)
				if referenced(name) {
					if !errors.Is(err, ErrBusy) {
						t.Fatalf("delete a snapshot with clones: %v", err)
					}
					break
				}
				if err != nil {
					t.Fatalf("delete snapshot: %v", err)
				}
				delete(d.snaps, name)
				d.order = slices.DeleteFunc(d.order, func(n string) bool { return n == name })
				d.gone[name] = data
				break
			}
		case op >= 101 && len(d.order) > 0: // roll back
			i := r.IntN(len(d.order))
			name := d.order[i]
			trace = append(trace, "rollback "+name)
			err := v.Rollback(ctx, name)
			if slices.ContainsFunc(d.order[i+1:], referenced) {
				if !errors.Is(err, ErrBusy) {
					t.Fatalf("rollback past a snapshot with clones: %v", err)
				}
				continue
			}
			if err != nil {
				t.Fatalf("rollback: %v", err)
			}
			for _, later := range d.order[i+1:] {
				d.gone[later] = d.snaps[later]
				delete(d.snaps, later)
			}
			d.order = d.order[:i+1]
			d.m.data = append(d.m.data[:0], d.snaps[name]...)
			d.m.flush()
		case op >= 100: // read a snapshot
			checkSnapshots(t, ctx, v, d, "snapshot read", false)
		case op < 45: // write: aligned or not, 512 B to 1 MiB
			n := 512 << r.IntN(12)
			if r.IntN(3) == 0 {
				n = 1 + r.IntN(n)
			}
			n = min(n, size)
			off := r.IntN(size - n + 1)
			if r.IntN(2) == 0 {
				off = off / pcs * pcs
			}
			p := make([]byte, n)
			if r.IntN(8) != 0 { // sometimes all zeros: unmaps
				for i := range p {
					p[i] = byte(r.Uint32())
				}
			}
			trace = append(trace, fmt.Sprintf("write(%d,+%d)", off, n))
			if err := v.WriteAt(ctx, p, int64(off)); err != nil {
				t.Fatalf("write: %v", err)
			}
			d.m.write(p, off)
		case op < 60: // read a random range
			n := 1 + r.IntN(min(size, 2<<20))
			off := r.IntN(size - n + 1)
			got := make([]byte, n)
			if _, err := v.ReadAt(ctx, got, int64(off)); err != nil {
				t.Fatalf("read: %v", err)
			}
			if !bytes.Equal(got, d.m.data[off:off+n]) {
				t.Fatalf("read(%d,+%d) differs from the model", off, n)
			}
		case op < 66: // discard
			n := r.IntN(size / 2)
			off := r.IntN(size - n + 1)
			trace = append(trace, fmt.Sprintf("discard(%d,+%d)", off, n))
			if err := v.Discard(ctx, int64(off), int64(n)); err != nil {
				t.Fatalf("discard: %v", err)
			}
			d.m.write(make([]byte, n), off)
		case op < 70: // resize, then flush (see acceptCrash)
			n := (2<<20 + r.IntN(8<<20)) / 512 * 512
			if r.IntN(2) == 0 {
				n += r.IntN(512)
			}
			trace = append(trace, fmt.Sprintf("resize(%d)", n))
			if err := v.Resize(ctx, int64(n)); err != nil {
				t.Fatalf("resize: %v", err)
			}
			d.m.resize(n)
			if err := v.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			d.m.flush()
		case op < 80:
			trace = append(trace, "flush")
			if err := v.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			d.m.flush()
		case op < 85:
			trace = append(trace, "upload")
			if err := v.Seal(); err != nil {
				t.Fatal(err)
			}
			if err := v.WaitUploaded(ctx); err != nil {
				t.Fatal(err)
			}
		case op < 88:
			trace = append(trace, "restart")
			e.restart()
			for _, d := range disks {
				d.m.flush()
			}
			checkAll("after clean restart")
		case op < 91:
			trace = append(trace, "kill -9")
			e.kill()
			for _, d := range disks {
				d.m.flush() // a kill loses nothing acknowledged
			}
			checkAll("after kill -9")
		case op < 94:
			trace = append(trace, "power loss")
			e.powerLoss()
			for _, d := range disks {
				d.m.acceptCrash(t, readAll(d), "after power loss")
			}
		case op < 95:
			// the block-map store is a cache: the catalog and the TLogs
			// bring everything back
			trace = append(trace, "block-map store lost")
			e.pool.AbandonForTesting()
			e.meta = metastore.NewMem()
			e.open()
			for _, d := range disks {
				d.m.flush()
			}
			checkAll("after losing the block-map store")
		case op < 96:
			trace = append(trace, "metadata lost")
			e.pool.AbandonForTesting()
			e.wipeMeta()
			e.open()
			for _, d := range disks {
				d.m.flush()
				checkSnapshots(t, ctx, e.vdisk(d.id), d, "after losing the metadata store", true)
			}
			checkAll("after losing the metadata store")
		default:
			trace = append(trace, "flash wiped")
			for _, d := range disks {
				v := e.vdisk(d.id)
				if err := v.Seal(); err != nil {
					t.Fatal(err)
				}
				if err := v.WaitUploaded(ctx); err != nil {
					t.Fatal(err)
				}
				d.m.flush()
			}
			e.wipeFlash()
			checkAll("after restart from the backend alone")
		}
	}
	checkAll("at the end")
}
