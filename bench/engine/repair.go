package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"time"
	"unsafe"

	"vpool/objstore"
)

// repair: see the package doc.
func repair() {
	ctx := context.Background()
	var asds []string
	for i := range 4 {
		asds = append(asds, filepath.Join(*dir, "rep", fmt.Sprintf("asd%d", i)))
	}
	preset := objstore.Preset{Data: 2, Parity: 1, FragmentSize: 4 << 20}
	ec, err := objstore.OpenEC(asds, preset, quiet)
	if err != nil {
		fail(err)
	}
	pool := ec.PoolID()
	obj := make([]byte, 64<<20)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range obj {
		obj[i] = byte(r.Uint32())
	}
	for i := 0; i < *objects; i++ {
		if err := ec.Put(ctx, fmt.Sprintf("bench/sco/%d", i), bytes.NewReader(obj), int64(len(obj))); err != nil {
			fail(err)
		}
	}
	// one ASD holds a quarter of the 1.5x bytes: what a repair writes
	share := int64(*objects) * 64 << 20 * 3 / 2 / 4
	plain := seqWrite(filepath.Join(*dir, "plain"), share)

	// lose ASD a, repair at rate (0: no limit), join it back empty
	round := func(a int, rate int64) *objstore.PassStatus {
		if err := os.RemoveAll(asds[a]); err != nil {
			fail(err)
		}
		ec, err := objstore.OpenECPool(asds, preset, pool, quiet)
		if err != nil {
			fail(err)
		}
		st := runPass(ctx, ec, rate)
		if st.Unrepairable > 0 || st.Error != "" {
			fail(fmt.Errorf("repair: %+v", st))
		}
		os.MkdirAll(asds[a], 0o700)
		if err := ec.Join(asds[a]); err != nil {
			fail(err)
		}
		return st
	}
	free := round(0, 0)
	paced := round(1, *repairRate<<20)
	fmt.Printf("repair 2+1 over 4 dirs, %d x 64 MiB objects, one ASD lost (%d MiB to rebuild)\n", *objects, share>>20)
	fmt.Printf("rebuild-MiB/s repair=%.0f plain-seq-write=%.0f ratio=%.2f\n", free.Rate()/(1<<20), plain, free.Rate()/(1<<20)/plain)
	// all ASDs share one disk here: each byte rebuilt costs k=2 bytes read
	// and 1 written on it
	io := float64(free.BytesRead+free.BytesWritten) / free.Working.Seconds() / (1 << 20)
	fmt.Printf("rebuild-io-MiB/s repair=%.0f plain-seq-write=%.0f ratio=%.2f\n", io, plain, io/plain)
	fmt.Printf("paced-MiB/s repair=%.1f limit=%d ratio=%.3f\n", paced.Rate()/(1<<20), *repairRate, paced.Rate()/float64(*repairRate<<20))
	repairOntoOneDisk(ctx, obj)

	// 4 KiB random writes into a vDisk of a pool on this store, idle and
	// while a paced repair runs
	ec, err = objstore.OpenECPool(asds, preset, pool, quiet)
	if err != nil {
		fail(err)
	}
	backendOverride = ec
	p, closeP := openPool("pool", 16<<30, 16<<10)
	defer closeP()
	v, err := p.Create(ctx, *vdiskMiB<<20)
	if err != nil {
		fail(err)
	}
	clusters := *vdiskMiB << 20 / 4096
	write := func(r *rand.Rand, buf []byte) error { return v.WriteAt(ctx, buf, r.Int64N(clusters)*4096) }
	idle := run(write)
	// the uploads of what the idle phase wrote must not land in the next
	if err := v.Seal(); err != nil {
		fail(err)
	}
	if err := v.WaitUploaded(ctx); err != nil {
		fail(err)
	}
	os.RemoveAll(asds[2])
	ec2, err := objstore.OpenECPool(asds, preset, pool, quiet)
	if err != nil {
		fail(err)
	}
	h := objstore.NewHealer(ec2, filepath.Join(*dir, "pass-iops.json"), *repairRate<<20, quiet)
	hctx, stop := context.WithCancel(ctx)
	defer stop()
	go h.Run(hctx, 0)
	if err := h.Start(objstore.PassRepair); err != nil {
		fail(err)
	}
	for cur, _ := h.Status(); cur == nil; cur, _ = h.Status() {
		time.Sleep(time.Millisecond)
	}
	during := run(write)
	cur, last := h.Status()
	if cur == nil {
		fmt.Printf("(the repair pass ended before the measurement did: %+v)\n", last)
	}
	fmt.Printf("randwrite-4k-during-repair vpool=%.0f idle=%.0f ratio=%.2f\n", during, idle, during/idle)
}

// runPass runs one repair pass on ec at rate to its end.
func runPass(ctx context.Context, ec *objstore.EC, rate int64) *objstore.PassStatus {
	h := objstore.NewHealer(ec, filepath.Join(*dir, fmt.Sprintf("pass-%d.json", time.Now().UnixNano())), rate, quiet)
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	go h.Run(ctx, 0)
	if err := h.Start(objstore.PassRepair); err != nil {
		fail(err)
	}
	for {
		time.Sleep(10 * time.Millisecond)
		if cur, last := h.Status(); cur == nil && last != nil {
			return last
		}
	}
}

// seqWrite writes n bytes to a new file in 4 MiB O_DIRECT writes and
// fsyncs it: the disk's sequential write speed in MiB/s, as the fragments
// are written (O_DIRECT: this VM's host caches buffered writes, which
// made a buffered baseline swing from 350 to 1200 MiB/s between runs).
func seqWrite(path string, n int64) float64 {
	raw := make([]byte, 4<<20+4096)
	off := int(uintptr(unsafe.Pointer(&raw[0])) % 4096)
	if off != 0 {
		off = 4096 - off
	}
	buf := raw[off : off+4<<20]
	for i := range buf {
		buf[i] = byte(i*7 + 1)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY|syscall.O_DIRECT, 0o600)
	if err != nil {
		fail(err)
	}
	defer os.Remove(path)
	defer f.Close()
	t0 := time.Now()
	for w := int64(0); w < n; w += int64(len(buf)) {
		if _, err := f.Write(buf); err != nil {
			fail(err)
		}
	}
	if err := f.Sync(); err != nil {
		fail(err)
	}
	return float64(n) / (1 << 20) / time.Since(t0).Seconds()
}

// repairOntoOneDisk is the rebuild as on a host with a disk per ASD: 2+1
// over 3 ASDs, two in memory (/dev/shm: reading the surviving fragments
// costs this disk nothing, as other disks would) and one on the disk
// under test, which is lost and replaced by an empty one: every rebuilt
// fragment goes there. Its rate against the disk's sequential write.
func repairOntoOneDisk(ctx context.Context, obj []byte) {
	shm := filepath.Join("/dev/shm", fmt.Sprintf("vpool-bench-repair-%d", os.Getpid()))
	defer os.RemoveAll(shm)
	asds := []string{filepath.Join(shm, "asd0"), filepath.Join(shm, "asd1"), filepath.Join(*dir, "one", "asd2")}
	preset := objstore.Preset{Data: 2, Parity: 1, FragmentSize: 4 << 20}
	ec, err := objstore.OpenEC(asds, preset, quiet)
	if err != nil {
		fail(err)
	}
	pool := ec.PoolID()
	for i := 0; i < *objects; i++ {
		if err := ec.Put(ctx, fmt.Sprintf("bench/sco/%d", i), bytes.NewReader(obj), int64(len(obj))); err != nil {
			fail(err)
		}
	}
	share := int64(*objects) * 64 << 20 / 2 // one fragment of three: half the data
	plain := seqWrite(filepath.Join(*dir, "plain-one"), share)
	os.RemoveAll(asds[2])
	os.MkdirAll(asds[2], 0o700)
	ec, err = objstore.OpenECPool(asds, preset, pool, quiet)
	if err != nil {
		fail(err)
	}
	if err := ec.Join(asds[2]); err != nil {
		fail(err)
	}
	st := runPass(ctx, ec, 0)
	if st.Unrepairable > 0 || st.Error != "" {
		fail(fmt.Errorf("repair: %+v", st))
	}
	fmt.Printf("rebuild-onto-one-disk-MiB/s repair=%.0f plain-seq-write=%.0f ratio=%.2f\n", st.Rate()/(1<<20), plain, st.Rate()/(1<<20)/plain)
}
