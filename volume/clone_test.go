package volume

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

// A clone of a clone of a template, each written on its own: every one
// reads what it should, after a restart and a rebuild from the backend;
// the chain's parents cannot go while clones read them.
func TestCloneChainAndTemplate(t *testing.T) {
	e := newEnv(t)
	const size = 16 << 20
	base, _ := e.pool.Create(bg, size)
	a := pattern(size, 1)
	base.WriteAt(bg, a, 0)
	if _, err := e.pool.Clone(bg, base, ""); !errors.Is(err, ErrBadName) {
		t.Fatalf("clone without a snapshot name of a vDisk that is not a template: %v", err)
	}
	if err := base.SetTemplate(bg); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c1, err := e.pool.Clone(bg, base, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("clone made in %v", time.Since(start))
	b := append([]byte(nil), a...)
	copy(b[1<<20:], pattern(3<<20, 50))
	c1.WriteAt(bg, b[1<<20:4<<20], 1<<20)
	if _, err := c1.CreateSnapshot(bg, "s"); err != nil {
		t.Fatal(err)
	}
	c1.Discard(bg, 2<<20, 1<<20) // after the snapshot: not in c2
	c2, err := e.pool.Clone(bg, c1, "s")
	if err != nil {
		t.Fatal(err)
	}
	c := append([]byte(nil), b...)
	copy(c[10<<20:], pattern(1<<20, 99))
	c2.WriteAt(bg, c[10<<20:11<<20], 10<<20)
	b1 := append([]byte(nil), b...)
	clear(b1[2<<20 : 3<<20])
	ids := []uint64{base.ID(), c1.ID(), c2.ID()}
	want := [][]byte{a, b1, c}
	check := func(when string) {
		t.Helper()
		for i, id := range ids {
			if got := mustRead(t, e.vdisk(id), 0, size); !bytes.Equal(got, want[i]) {
				t.Fatalf("%s: vDisk %d of the chain differs", when, i)
			}
		}
		if got := readSnapshot(t, e.vdisk(c1.ID()), "s"); !bytes.Equal(got, b) {
			t.Fatalf("%s: snapshot s of the first clone", when)
		}
		if got := e.vdisk(c2.ID()).Allocated(); got != size-0 {
			t.Fatalf("%s: allocated of the second clone: %d", when, got)
		}
	}
	check("at once")
	if err := e.pool.Delete(bg, c1.ID()); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), FormatID(c2.ID())) {
		t.Fatalf("delete a vDisk with a clone: %v", err)
	}
	if err := e.vdisk(c1.ID()).DeleteSnapshot(bg, "s"); !errors.Is(err, ErrBusy) {
		t.Fatalf("delete a snapshot with a clone: %v", err)
	}
	e.restart()
	check("after a restart")
	for _, id := range ids {
		e.vdisk(id).Seal()
		if err := e.vdisk(id).WaitUploaded(bg); err != nil {
			t.Fatal(err)
		}
	}
	e.wipeFlash()
	check("after a rebuild from the backend")
}

// Flatten cut short at any step leaves a clone that reads the same, and
// running it again finishes it; then the parent can go.
func TestFlattenCrashAtEachStep(t *testing.T) {
	for _, stop := range []string{"page1", "page3", "flatten stored", "flatten record", "none"} {
		t.Run(stop, func(t *testing.T) {
			e := newEnv(t)
			const size = 8 << 20
			p, _ := e.pool.Create(bg, size)
			a := pattern(size, 1)
			p.WriteAt(bg, a, 0)
			p.CreateSnapshot(bg, "s")
			p.WriteAt(bg, pattern(size, 2), 0) // the parent moves on
			c, err := e.pool.Clone(bg, p, "s")
			if err != nil {
				t.Fatal(err)
			}
			id := c.ID()
			copy(a[5000:], pattern(9000, 3))
			c.WriteAt(bg, a[5000:14000], 5000)
			crashAt(stop, "flatten page", "page")
			var last [2]int
			err = c.Flatten(bg, func(done, total int) { last = [2]int{done, total} })
			crashHook = nil
			if stop != "none" {
				if err == nil {
					t.Fatalf("flatten did not stop at %s", stop)
				}
				e.kill()
				if got := mustRead(t, e.vdisk(id), 0, size); !bytes.Equal(got, a) {
					t.Fatal("the clone changed after a flatten cut short")
				}
				if err := e.vdisk(id).Flatten(bg, nil); err != nil {
					t.Fatal(err)
				}
			} else if err != nil || last[0] != last[1] || last[1] != size/4096/pageEntries {
				t.Fatalf("flatten: %v, progress %v", err, last)
			}
			if par, _ := e.vdisk(id).Parent(); par != nil {
				t.Fatal("still a clone after flatten")
			}
			if err := e.vdisk(p.ID()).DeleteSnapshot(bg, "s"); err != nil {
				t.Fatalf("delete the snapshot after flatten: %v", err)
			}
			if err := e.pool.Delete(bg, p.ID()); err != nil {
				t.Fatalf("delete the parent after flatten: %v", err)
			}
			if got := mustRead(t, e.vdisk(id), 0, size); !bytes.Equal(got, a) {
				t.Fatal("the flattened clone differs once its parent is gone")
			}
			e.vdisk(id).Seal()
			if err := e.vdisk(id).WaitUploaded(bg); err != nil {
				t.Fatal(err)
			}
			e.wipeFlash()
			if got := mustRead(t, e.vdisk(id), 0, size); !bytes.Equal(got, a) {
				t.Fatal("the flattened clone differs after a rebuild from the backend")
			}
		})
	}
}

// A clone cut short (after its record; after its manifest and first
// TLog, before the manifest sync that follows; or done) is,
// after kill -9 and after the loss of the metadata store, either a
// complete clone reading the snapshot or gone; the parent is untouched.
func TestCloneCrashAtEachStep(t *testing.T) {
	for _, stop := range []string{"clone record", "clone created", "none"} {
		for _, loss := range []string{"kill", "metadata"} {
			t.Run(stop+"/"+loss, func(t *testing.T) {
				e := newEnv(t)
				const size = 8 << 20
				p, _ := e.pool.Create(bg, size)
				a := pattern(size, 1)
				p.WriteAt(bg, a, 0)
				p.CreateSnapshot(bg, "s")
				p.WriteAt(bg, pattern(size, 2), 0)
				crashAt(stop, "", "")
				_, err := e.pool.Clone(bg, p, "s")
				crashHook = nil
				if (err == nil) != (stop == "none") {
					t.Fatalf("clone: %v", err)
				}
				e.pool.AbandonForTesting()
				if loss == "metadata" {
					e.wipeMeta()
				}
				e.open()
				for _, id := range e.pool.List() {
					v := e.vdisk(id)
					want := pattern(size, 2) // the parent's head
					if par, _ := v.Parent(); par != nil {
						want = a
					}
					if got := mustRead(t, v, 0, size); !bytes.Equal(got, want) {
						t.Fatalf("vDisk %s (clone: %v) reads wrong after the crash", FormatID(id), want[0] == a[0])
					}
				}
				if got := readSnapshot(t, e.vdisk(p.ID()), "s"); !bytes.Equal(got, a) {
					t.Fatal("the parent's snapshot changed")
				}
			})
		}
	}
}
