package volume

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
)

// A power loss after a flushed vDisk's SCOs were uploaded and left flash
// keeps the flushed data: the upload state that let them leave was
// durable first. The store keeps a random prefix of its unsynced commits
// and the filesystem a random part of its unsynced changes, over seeds.
func TestPowerLossAfterSCOsLeftFlashKeepsFlushedData(t *testing.T) {
	for seed := uint64(1); seed <= 12; seed++ {
		e := newEnv(t)
		e.rng = rand.New(rand.NewPCG(seed, 17))
		v, err := e.pool.Create(bg, 32<<20)
		if err != nil {
			t.Fatal(err)
		}
		id := v.ID()
		data := pattern(20<<20, byte(seed))
		if err := v.WriteAt(bg, data, 0); err != nil {
			t.Fatal(err)
		}
		if err := v.Flush(bg); err != nil {
			t.Fatal(err)
		}
		if err := v.Seal(); err != nil {
			t.Fatal(err)
		}
		if err := v.WaitUploaded(bg); err != nil {
			t.Fatal(err)
		}
		e.disposeUploaded(v)
		e.powerLoss()
		v = e.vdisk(id)
		if got := mustRead(t, v, 0, len(data)); !bytes.Equal(got, data) {
			t.Fatalf("seed %d: flushed data differs after a power loss (first bad byte at %d)", seed, firstDiff(got, data))
		}
		e.pool.Close(bg)
		e.pool = nil
	}
}

// An acknowledged snapshot survives a power loss.
func TestPowerLossKeepsAcknowledgedSnapshot(t *testing.T) {
	for seed := uint64(1); seed <= 12; seed++ {
		e := newEnv(t)
		e.rng = rand.New(rand.NewPCG(seed, 18))
		v, err := e.pool.Create(bg, 8<<20)
		if err != nil {
			t.Fatal(err)
		}
		id := v.ID()
		data := pattern(1<<20, byte(seed))
		if err := v.WriteAt(bg, data, 0); err != nil {
			t.Fatal(err)
		}
		if _, err := v.CreateSnapshot(bg, "snap"); err != nil {
			t.Fatal(err)
		}
		if err := v.WriteAt(bg, pattern(1<<20, byte(seed+50)), 0); err != nil {
			t.Fatal(err)
		}
		e.powerLoss()
		v = e.vdisk(id)
		if n := len(v.Snapshots()); n != 1 {
			t.Fatalf("seed %d: %d snapshots after a power loss, want the acknowledged one", seed, n)
		}
		if got := readSnapshot(t, v, "snap")[:len(data)]; !bytes.Equal(got, data) {
			t.Fatalf("seed %d: snapshot reads differently after a power loss", seed)
		}
		e.pool.Close(bg)
		e.pool = nil
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// A local TLog whose SCO is gone from flash, with an upload state that
// does not say it was uploaded (a store of an older layout lost it): the
// SCO comes back from the backend, never as zeros; with no copy there
// either, that vDisk is damaged (a clear error) and the others serve.
func TestRecoveryResolvesAMissingSCOFromTheBackend(t *testing.T) {
	for _, onBackend := range []bool{true, false} {
		e := newEnv(t)
		v, err := e.pool.Create(bg, 8<<20)
		if err != nil {
			t.Fatal(err)
		}
		other, err := e.pool.Create(bg, 8<<20)
		if err != nil {
			t.Fatal(err)
		}
		id := v.ID()
		data := pattern(6<<20, 9)
		v.WriteAt(bg, data, 0)
		other.WriteAt(bg, data, 0)
		for _, d := range []*VDisk{v, other} {
			if err := d.Flush(bg); err != nil {
				t.Fatal(err)
			}
			d.Seal()
			if err := d.WaitUploaded(bg); err != nil {
				t.Fatal(err)
			}
		}
		e.pool.AbandonForTesting()
		if err := e.wb.RemoveSCO(id, 1); err != nil {
			t.Fatal(err)
		}
		if _, err := e.cat.Commit(nil, []MetaOp{{Key: metaKey(metaKeyUpload, id), Value: uploadState{}.encode()}}); err != nil {
			t.Fatal(err)
		}
		if !onBackend {
			e.backend.Delete(bg, scoName("vp", id, 1))
		}
		e.open()
		if got := mustRead(t, e.vdisk(other.ID()), 0, len(data)); !bytes.Equal(got, data) {
			t.Fatal("the other vDisk differs")
		}
		if onBackend {
			if got := mustRead(t, e.vdisk(id), 0, len(data)); !bytes.Equal(got, data) {
				t.Fatalf("data differs at byte %d after the SCO came back from the backend", firstDiff(got, data))
			}
			continue
		}
		_, err = e.pool.VDisk(id)
		if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "SCO 1") {
			t.Fatalf("vDisk with its SCO gone everywhere: %v", err)
		}
		if d := e.pool.Damaged(); len(d) != 1 || d[id] == nil {
			t.Fatalf("Damaged() = %v", d)
		}
		if err := e.pool.Delete(bg, id); err != nil {
			t.Fatalf("delete a damaged vDisk: %v", err)
		}
		if _, err := e.pool.VDisk(id); !errors.Is(err, ErrNotFound) {
			t.Fatalf("after delete: %v", err)
		}
	}
}
