package volume

import (
	"bytes"
	"context"
	"fmt"
	"sync/atomic"
	"testing"
)

// countingBackend counts the listing requests a pool makes and the names
// they return.
type countingBackend struct {
	Backend
	lists, names atomic.Int64
}

func (c *countingBackend) List(ctx context.Context, prefix string) ([]string, error) {
	n, err := c.Backend.List(ctx, prefix)
	c.lists.Add(1)
	c.names.Add(int64(len(n)))
	return n, err
}

func (c *countingBackend) ListDirs(ctx context.Context, prefix string) ([]string, error) {
	n, err := c.Backend.ListDirs(ctx, prefix)
	c.lists.Add(1)
	c.names.Add(int64(len(n)))
	return n, err
}

// Opening a pool, and restoring it onto empty flash, lists requests in
// proportion to its vDisks, never its SCOs and TLogs.
func TestOpenListsPerVDiskNotPerObject(t *testing.T) {
	e := newEnv(t)
	cb := &countingBackend{Backend: e.backend}
	e.be = cb
	const vdisks = 3
	want := map[uint64][]byte{}
	for i := range vdisks {
		v, err := e.pool.Create(bg, 64<<20)
		if err != nil {
			t.Fatal(err)
		}
		data := pattern(5*int(e.cfg.SCOSize)+4096, byte(i)) // six SCOs and TLogs each
		if err := v.WriteAt(bg, data, 0); err != nil {
			t.Fatal(err)
		}
		if err := v.Seal(); err != nil {
			t.Fatal(err)
		}
		if err := v.Seal(); err != nil {
			t.Fatal(err)
		}
		if err := v.WaitUploaded(bg); err != nil {
			t.Fatal(err)
		}
		want[v.ID()] = data
	}
	objects, _ := e.backend.List(bg, "vp/")
	if len(objects) < vdisks*12 {
		t.Fatalf("the backend holds %d objects, want at least %d", len(objects), vdisks*12)
	}
	for _, step := range []struct {
		name string
		do   func()
	}{{"restart", e.restart}, {"restore onto empty flash", e.wipeFlash}} {
		cb.lists.Store(0)
		cb.names.Store(0)
		step.do()
		// one listing of the vDisks, one of each vDisk's manifests (and the
		// recovery's own look at its manifests)
		if l, n := cb.lists.Load(), cb.names.Load(); l > 1+2*vdisks || n > 3*vdisks {
			t.Fatalf("%s: %d listings returning %d names for %d vDisks of %d objects", step.name, l, n, vdisks, len(objects))
		}
		for id, data := range want {
			if got := mustRead(t, e.vdisk(id), 0, len(data)); !bytes.Equal(got, data) {
				t.Fatalf("%s: vDisk %s reads wrong", step.name, FormatID(id))
			}
		}
	}
}

// writeUploaded writes data at off and waits until all of it is on the
// backend.
func writeUploaded(t *testing.T, v *VDisk, data []byte, off int64) {
	t.Helper()
	if err := v.WriteAt(bg, data, off); err != nil {
		t.Fatal(err)
	}
	if err := v.Seal(); err != nil {
		t.Fatal(err)
	}
	if err := v.WaitUploaded(bg); err != nil {
		t.Fatal(err)
	}
}

func (v *VDisk) manifestGeneration() uint64 {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.mu.manifestGen
}

// A manifest generation that a crash left on the backend, unrecorded in
// the upload state, is stepped over, not overwritten: manifests are
// written with Create.
func TestManifestGenerationLeftByCrashSteppedOver(t *testing.T) {
	e := newEnv(t)
	v, err := e.pool.Create(bg, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	data := pattern(int(e.cfg.SCOSize)+4096, 9)
	writeUploaded(t, v, data, 0)
	gen := v.manifestGeneration()
	// what a crash between a manifest's Create and the upload state's
	// commit leaves: the next generation, with older content
	stale := manifestName("vp", v.ID(), gen+1)
	n, err := e.backend.Size(bg, manifestName("vp", v.ID(), gen))
	if err != nil {
		t.Fatal(err)
	}
	old := make([]byte, n)
	if err := e.backend.GetRange(bg, manifestName("vp", v.ID(), gen), old, 0); err != nil {
		t.Fatal(err)
	}
	if err := e.backend.Put(bg, stale, bytes.NewReader(old), int64(len(old))); err != nil {
		t.Fatal(err)
	}
	writeUploaded(t, v, pattern(int(e.cfg.SCOSize), 10), 8<<20)
	if now := v.manifestGeneration(); now != gen+2 {
		t.Fatalf("manifest generation %d after stepping over %d, want %d", now, gen+1, gen+2)
	}
	names, _ := e.backend.List(bg, fmt.Sprintf("vp/%s/manifest.", FormatID(v.ID())))
	if len(names) != 1 || names[0] != manifestName("vp", v.ID(), gen+2) {
		t.Fatalf("manifests on the backend: %v, want only generation %d", names, gen+2)
	}
	id := v.ID()
	e.wipeFlash()
	if got := mustRead(t, e.vdisk(id), 0, len(data)); !bytes.Equal(got, data) {
		t.Fatal("restored vDisk reads wrong (first write)")
	}
	if got := mustRead(t, e.vdisk(id), 8<<20, int(e.cfg.SCOSize)); !bytes.Equal(got, pattern(int(e.cfg.SCOSize), 10)) {
		t.Fatal("restored vDisk reads wrong (second write)")
	}
}
