package test

import (
	"bytes"
	"math/rand"
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"vpool/nfsd"
)

// A vDisk can be mapped, shared and private, and a mapping stays coherent
// with O_DIRECT reads and writes through other handles, with writes over
// NFS and with size changes: seeded random operations against a
// byte-slice model. msync makes mapped writes durable: they survive
// kill -9 of the daemon. A rollback shows in a read-only mapping.
func TestMmapVDisk(t *testing.T) {
	d := startDaemon(t)
	path := d.path("mapped.raw")
	const page = 4096
	size := 64 * page
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, int64(size)); err != nil {
		t.Fatal(err)
	}
	model := make([]byte, size)
	mf, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer mf.Close()
	df, err := os.OpenFile(path, os.O_RDWR|syscall.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer df.Close()
	mapping := func() []byte {
		m, err := unix.Mmap(int(mf.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			t.Fatalf("mmap of a vDisk: %v", err)
		}
		return m
	}
	m := mapping()
	defer func() { unix.Munmap(m) }()
	nc, root := d.nfsClient(0, 0)
	nfh, _, err := nc.Lookup(root, "mapped.raw")
	if err != nil {
		t.Fatal(err)
	}
	buf := alignedBuf(8 * page)
	rng := rand.New(rand.NewSource(19))
	for step := range 3000 {
		off := rng.Intn(size/page) * page
		n := min(1+rng.Intn(8), (size-off)/page) * page
		switch op := rng.Intn(11); {
		case op == 10: // a write over NFS shows in the mapping
			b := make([]byte, n)
			rng.Read(b)
			if _, _, err := nc.Write(nfh, uint64(off), b, nfsd.Unstable); err != nil {
				t.Fatalf("step %d: NFS write: %v", step, err)
			}
			copy(model[off:], b)
			if !bytes.Equal(m[off:off+n], b) {
				t.Fatalf("step %d: the mapping does not show an NFS write of [%d, %d)", step, off, off+n)
			}
		case op < 3: // write through the mapping
			fill := byte(rng.Intn(255) + 1)
			for i := off; i < off+n; i++ {
				m[i] = fill
				model[i] = fill
			}
		case op < 5: // O_DIRECT write through another handle
			b := buf[:n]
			rng.Read(b)
			if _, err := df.WriteAt(b, int64(off)); err != nil {
				t.Fatalf("step %d: direct write: %v", step, err)
			}
			copy(model[off:], b)
		case op < 7: // O_DIRECT read sees the mapping's writes
			b := buf[:n]
			if _, err := df.ReadAt(b, int64(off)); err != nil {
				t.Fatalf("step %d: direct read: %v", step, err)
			}
			if !bytes.Equal(b, model[off:off+n]) {
				t.Fatalf("step %d: a direct read of [%d, %d) differs from the model", step, off, off+n)
			}
		case op < 8: // the mapping sees direct writes
			if !bytes.Equal(m[off:off+n], model[off:off+n]) {
				t.Fatalf("step %d: the mapping's [%d, %d) differs from the model", step, off, off+n)
			}
		case op < 9: // a size change: remap at the new size
			if err := unix.Munmap(m); err != nil {
				t.Fatal(err)
			}
			size = (16 + rng.Intn(64)) * page
			if err := df.Truncate(int64(size)); err != nil {
				t.Fatalf("step %d: truncate: %v", step, err)
			}
			if size < len(model) {
				model = model[:size]
			} else {
				model = append(model, make([]byte, size-len(model))...)
			}
			m = mapping()
		default: // msync
			if err := unix.Msync(m, unix.MS_SYNC); err != nil {
				t.Fatalf("step %d: msync: %v", step, err)
			}
		}
	}
	if !bytes.Equal(m, model) {
		t.Fatal("the mapping differs from the model at the end")
	}
	// Mapped writes, msync, then kill -9: they are there after a restart.
	for i := range m {
		m[i] = byte(i*7 + 3)
		model[i] = m[i]
	}
	if err := unix.Msync(m, unix.MS_SYNC); err != nil {
		t.Fatal(err)
	}
	unix.Munmap(m)
	m = nil
	mf.Close()
	df.Close()
	d.kill()
	d.start()
	got, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, model) {
		t.Fatalf("after msync and kill -9: %d bytes, %v; equal to the model: %v", len(got), err, bytes.Equal(got, model))
	}
	// A read-only mapping shows a rollback.
	run(t, time.Minute, vpoolBin, "snapshot", "create", "mapped.raw", "before", "--data-dir", d.dataDir)
	wf, err := os.OpenFile(path, os.O_WRONLY|syscall.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	later := alignedBuf(page)
	for i := range later {
		later[i] = 0xee
	}
	if _, err := wf.WriteAt(later, 0); err != nil {
		t.Fatal(err)
	}
	wf.Close()
	rf, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	ro, err := unix.Mmap(int(rf.Fd()), 0, size, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	if ro[0] != 0xee {
		t.Fatalf("a read-only mapping reads %#x, want the write after the snapshot", ro[0])
	}
	run(t, time.Minute, vpoolBin, "snapshot", "rollback", "mapped.raw", "before", "--data-dir", d.dataDir)
	if !bytes.Equal(ro, model) {
		t.Fatal("a read-only mapping does not show the rollback")
	}
	unix.Munmap(ro)
	rf.Close()
	// A private mapping reads the vDisk and keeps its writes to itself.
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE)
	if err != nil {
		t.Fatalf("private mmap of a vDisk: %v", err)
	}
	defer unix.Munmap(p)
	if !bytes.Equal(p, model) {
		t.Fatal("a private mapping does not read the vDisk")
	}
	p[0] ^= 0xff
	if got, _ := os.ReadFile(path); got[0] != model[0] {
		t.Fatal("a private mapping's write reached the vDisk")
	}
}
