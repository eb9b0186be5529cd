// Command engine measures the vDisk engine in-process, each figure next to
// its baseline on the same disk in the same run:
//
//	iops    4 KiB random writes then reads through volume with N
//	        goroutines, vs pwrite/pread of a plain file (page cache).
//	upload  EC put of 64 MiB SCOs (16+4 over 20 directories) vs a
//	        sequential write+fsync of the same bytes to one file.
//	memory  RSS after writing 1 GiB and then 32 GiB of random 4 KiB writes
//	        to a 64 GiB vDisk.
//	repair  EC 2+1 over 4 directories: after losing one, the repair
//	        pass's rebuild rate with no limit vs a sequential write+fsync
//	        of as many bytes; with backend.repair.rate's default, the rate
//	        it keeps; and 4 KiB random-write IOPS into a vDisk while that
//	        pass runs vs idle.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"runtime/trace"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"vpool/flashcache"
	"vpool/metastore"
	"vpool/objstore"
	"vpool/vfs"
	"vpool/volume"
)

var (
	mode           = flag.String("mode", "iops", "iops, upload, memory or repair")
	repairRate     = flag.Int64("repair-rate-mib", 32, "repair: the paced pass's rate (backend.repair.rate)")
	dir            = flag.String("dir", "", "scratch directory on the disk under test (default /var/tmp/vpool-bench-<pid>)")
	workers        = flag.Int("workers", 2, "goroutines")
	seconds        = flag.Float64("seconds", 5, "seconds per phase (iops)")
	vdiskMiB       = flag.Int64("vdisk-mib", 1024, "vDisk size (iops)")
	objects        = flag.Int("objects", 8, "64 MiB objects to upload (upload)")
	bigGiB         = flag.Int64("big-gib", 32, "GiB written in the second memory phase")
	residentTables = flag.Int64("map-store-mib", 64, "MiB of the metastore's tables kept in memory (engine.map_store_memory)")
	idleSettle     = flag.Float64("settle", 3, "memory mode: seconds without I/O before each measurement")
	cpuProf        = flag.String("cpuprofile", "", "write a CPU profile of the vpool phases here")
	traceFile      = flag.String("trace", "", "write an execution trace of 1 s of the write phase here")
	blockProf      = flag.String("blockprofile", "", "write a block profile of the vpool phases here")
	asdDir         = flag.String("asd-dir", "", "put the ASDs here (another device) instead of under -dir")
	memProf        = flag.String("memprofile", "", "memory mode: write a heap profile at the end")
	backendDown    = flag.Bool("backend-down", false, "iops: an unreachable backend, so no uploads compete: the front-end path alone")
)

func main() {
	flag.Parse()
	if *dir == "" {
		*dir = fmt.Sprintf("/var/tmp/vpool-bench-%d", os.Getpid())
	}
	os.RemoveAll(*dir)
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		fail(err)
	}
	defer os.RemoveAll(*dir)
	switch *mode {
	case "iops":
		iops()
	case "upload":
		upload()
	case "memory":
		memory()
	case "repair":
		repair()
	default:
		fail(fmt.Errorf("unknown mode %q", *mode))
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}

var quiet = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))

// nullBackend keeps manifests but drops SCOs and TLogs: the memory
// benchmark measures the engine's own memory and never reads back.
type nullBackend struct{ *objstore.Mem }

func (n nullBackend) Put(ctx context.Context, name string, src io.ReaderAt, size int64) error {
	if strings.Contains(name, "/sco/") || strings.Contains(name, "/tlog/") {
		return nil
	}
	return n.Mem.Put(ctx, name, src, size)
}

var useNullBackend bool

// backendOverride, when set, is the pool's backend (repair mode: the EC
// store being repaired).
var backendOverride volume.Backend

func openPool(name string, wbBytes int64, mapPages int) (*volume.Pool, func()) {
	base := filepath.Join(*dir, name)
	asdBase := base
	if *asdDir != "" {
		asdBase = filepath.Join(*asdDir, fmt.Sprintf("vpool-bench-asd-%d", os.Getpid()))
		os.RemoveAll(asdBase)
	}
	var asds []string
	for i := 0; i < 3; i++ {
		asds = append(asds, filepath.Join(asdBase, fmt.Sprintf("asd%d", i)))
	}
	ec, err := objstore.OpenEC(asds, objstore.Preset{Data: 2, Parity: 1, FragmentSize: 4 << 20}, quiet)
	if err != nil {
		fail(err)
	}
	flash := filepath.Join(base, "flash")
	meta, err := metastore.OpenBadger(filepath.Join(base, "meta"), *residentTables<<20, quiet)
	if err != nil {
		fail(err)
	}
	cat, err := metastore.OpenCatalog(filepath.Join(base, "catalog"), quiet)
	if err != nil {
		fail(err)
	}
	fs := vfs.OS{}
	wb, err := flashcache.NewWriteBuffer(fs, flash, wbBytes)
	if err != nil {
		fail(err)
	}
	rc, err := flashcache.OpenReadCache(fs, filepath.Join(flash, "readcache"), 256<<20, 4096)
	if err != nil {
		fail(err)
	}
	var be volume.Backend = ec
	if backendOverride != nil {
		be = backendOverride
	}
	down := objstore.NewMem()
	if *backendDown {
		be = down
	}
	if useNullBackend {
		be = nullBackend{objstore.NewMem()}
	}
	p, err := volume.Open(context.Background(), volume.Config{Name: "bench", Dir: flash, MapCachePages: mapPages, Log: quiet},
		volume.Deps{FS: fs, Backend: be, Catalog: cat, Meta: meta, WriteBuffer: wb, ReadCache: rc})
	if err != nil {
		fail(err)
	}
	down.SetFailForTesting(fmt.Errorf("backend down for the benchmark"))
	return p, func() {
		p.Close(context.Background())
		rc.Close()
		meta.Close()
		cat.Close()
		if *asdDir != "" {
			os.RemoveAll(asdBase)
		}
	}
}

// run calls op from each worker until the time is up; it returns ops/s.
func run(op func(r *rand.Rand, buf []byte) error) float64 {
	var total atomic.Int64
	deadline := time.Now().Add(time.Duration(*seconds * float64(time.Second)))
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < *workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			buf := make([]byte, 4096)
			for i := range buf {
				buf[i] = byte(r.Uint32()) | 1
			}
			n := int64(0)
			for ; n%256 != 0 || time.Now().Before(deadline); n++ {
				if err := op(r, buf); err != nil {
					fail(err)
				}
			}
			total.Add(n)
		}()
	}
	wg.Wait()
	return float64(total.Load()) / time.Since(start).Seconds()
}

func iops() {
	ctx := context.Background()
	size := *vdiskMiB << 20
	clusters := size / 4096
	// baseline: a plain file on the same disk
	f, err := os.OpenFile(filepath.Join(*dir, "plain"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		fail(err)
	}
	f.Truncate(size)
	baseW := run(func(r *rand.Rand, buf []byte) error {
		_, err := f.WriteAt(buf, r.Int64N(clusters)*4096)
		return err
	})
	baseR := run(func(r *rand.Rand, buf []byte) error {
		_, err := f.ReadAt(buf, r.Int64N(clusters)*4096)
		return err
	})
	f.Close()
	p, closeP := openPool("pool", 16<<30, int(clusters/64)+64)
	defer closeP()
	v, err := p.Create(ctx, size)
	if err != nil {
		fail(err)
	}
	if *cpuProf != "" {
		pf, err := os.Create(*cpuProf)
		if err != nil {
			fail(err)
		}
		pprof.StartCPUProfile(pf)
		defer pprof.StopCPUProfile()
	}
	if *blockProf != "" {
		runtime.SetBlockProfileRate(1000)
		runtime.SetMutexProfileFraction(10)
	}
	if *traceFile != "" {
		tf, err := os.Create(*traceFile)
		if err != nil {
			fail(err)
		}
		go func() {
			time.Sleep(2 * time.Second)
			trace.Start(tf)
			time.Sleep(time.Second)
			trace.Stop()
			tf.Close()
		}()
	}
	vW := run(func(r *rand.Rand, buf []byte) error { return v.WriteAt(ctx, buf, r.Int64N(clusters)*4096) })
	pprof.StopCPUProfile()
	if *blockProf != "" {
		for _, prof := range []string{"block", "mutex"} {
			pf, err := os.Create(*blockProf + "." + prof)
			if err != nil {
				fail(err)
			}
			pprof.Lookup(prof).WriteTo(pf, 0)
			pf.Close()
		}
	}
	vR := run(func(r *rand.Rand, buf []byte) error {
		_, err := v.ReadAt(ctx, buf, r.Int64N(clusters)*4096)
		return err
	})
	where := "ASDs on the same disk"
	if *backendDown {
		where = "backend unreachable: no uploads"
	}
	if *asdDir != "" && !*backendDown {
		where = "ASDs in " + *asdDir
	}
	fmt.Printf("iops workers=%d vdisk=%dMiB %s\n", *workers, *vdiskMiB, where)
	fmt.Printf("randwrite-4k vpool=%.0f plain-file=%.0f ratio=%.2f\n", vW, baseW, vW/baseW)
	fmt.Printf("randread-4k  vpool=%.0f plain-file=%.0f ratio=%.2f\n", vR, baseR, vR/baseR)
}

func upload() {
	ctx := context.Background()
	obj := make([]byte, 64<<20)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range obj {
		obj[i] = byte(r.Uint32())
	}
	var asds []string
	for i := 0; i < 20; i++ {
		asds = append(asds, filepath.Join(*dir, "ec", fmt.Sprintf("asd%02d", i)))
	}
	ec, err := objstore.OpenEC(asds, objstore.Preset{Data: 16, Parity: 4, FragmentSize: 4 << 20}, quiet)
	if err != nil {
		fail(err)
	}
	plainDir := filepath.Join(*dir, "plain")
	os.MkdirAll(plainDir, 0o700)
	t0 := time.Now()
	for i := 0; i < *objects; i++ {
		p := filepath.Join(plainDir, fmt.Sprint(i))
		f, err := os.Create(p)
		if err != nil {
			fail(err)
		}
		if _, err := f.Write(obj); err != nil {
			fail(err)
		}
		f.Sync()
		f.Close()
	}
	plain := float64(*objects*64) / time.Since(t0).Seconds()
	if *cpuProf != "" {
		pf, err := os.Create(*cpuProf)
		if err != nil {
			fail(err)
		}
		pprof.StartCPUProfile(pf)
	}
	t0 = time.Now()
	for i := 0; i < *objects; i++ {
		if err := ec.Put(ctx, fmt.Sprintf("bench/sco/%d", i), bytes.NewReader(obj), int64(len(obj))); err != nil {
			fail(err)
		}
	}
	ecRate := float64(*objects*64) / time.Since(t0).Seconds()
	if *cpuProf != "" {
		pprof.StopCPUProfile()
	}
	fmt.Printf("upload 64MiB SCOs x%d, 16+4 over 20 dirs (writes 1.25x the bytes)\n", *objects)
	fmt.Printf("upload-MiB/s ec=%.0f plain-seq-write=%.0f ratio=%.2f\n", ecRate, plain, ecRate/plain)
}

// rss returns the process's resident memory in MiB: all, anonymous (heap)
// and file-backed (mapped files: badger's tables and memtables, TLogs;
// page cache the kernel can drop).
func rss() (all, anon, file float64) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1, -1, -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		var kb float64
		for key, dst := range map[string]*float64{"VmRSS:": &all, "RssAnon:": &anon, "RssFile:": &file} {
			if strings.HasPrefix(l, key) {
				fmt.Sscanf(strings.TrimPrefix(l, key), "%f", &kb)
				*dst = kb / 1024
			}
		}
	}
	return
}

// fileRSS breaks the file-backed resident set down by the mapped file's
// extension (badger's .sst tables, .mem memtables and .vlog files; .sco,
// .tlog; libraries and the binary).
func fileRSS() string {
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return err.Error()
	}
	by := map[string]float64{}
	kind := ""
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) >= 5 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":"):
			kind = ""
			if len(f) >= 6 && strings.HasPrefix(f[5], "/") {
				if kind = filepath.Ext(f[5]); kind == "" || strings.ContainsRune(kind, '/') {
					kind = "other"
				}
			}
		case kind != "" && len(f) >= 2 && f[0] == "Rss:":
			var kb float64
			fmt.Sscanf(f[1], "%f", &kb)
			by[kind] += kb / 1024
		}
	}
	var parts []string
	for k, v := range by {
		if v >= 1 {
			parts = append(parts, fmt.Sprintf("%s %.0f", k, v))
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

func memory() {
	ctx := context.Background()
	useNullBackend = true
	p, closeP := openPool("pool", 2<<30, volume.DefaultMapCachePages)
	defer closeP()
	v, err := p.Create(ctx, 64<<30)
	if err != nil {
		fail(err)
	}
	clusters := int64(64<<30) / 4096
	write := func(gib int64) {
		var wg sync.WaitGroup
		per := gib << 30 / 4096 / int64(*workers)
		for w := 0; w < *workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := rand.New(rand.NewPCG(uint64(w), 7))
				buf := make([]byte, 4096)
				for i := int64(0); i < per; i++ {
					buf[0], buf[1] = byte(i), byte(i>>8)|1
					if err := v.WriteAt(ctx, buf, r.Int64N(clusters)*4096); err != nil {
						fail(err)
					}
				}
			}()
		}
		wg.Wait()
	}
	// settle reports the resident set right after the writes, then
	// returns it after idleSettle seconds without I/O (the metastore's
	// trimmer and the engine's background write-back run meanwhile).
	settle := func() (float64, float64, float64) {
		runtime.GC()
		debug.FreeOSMemory()
		all, anon, file := rss()
		fmt.Printf("memory:   right after the writes: RSS %.0f MiB (anon %.0f, file %.0f; mapped files: %s)\n", all, anon, file, fileRSS())
		time.Sleep(time.Duration(*idleSettle * float64(time.Second)))
		runtime.GC()
		debug.FreeOSMemory()
		return rss()
	}
	t0 := time.Now()
	write(1)
	small, smallAnon, smallFile := settle()
	fmt.Printf("memory: after 1 GiB random 4k writes to a 64 GiB vDisk: RSS %.0f MiB (anon %.0f, file %.0f) (%.0fs)\n",
		small, smallAnon, smallFile, time.Since(t0).Seconds())
	fmt.Printf("memory: mapped files by kind (MiB): %s\n", fileRSS())
	write(*bigGiB - 1)
	big, bigAnon, bigFile := settle()
	if *memProf != "" {
		pf, err := os.Create(*memProf)
		if err != nil {
			fail(err)
		}
		pprof.Lookup("heap").WriteTo(pf, 0)
		pf.Close()
	}
	fmt.Printf("memory: SCO data uploaded to a null backend (manifests kept); map cache %d pages\n", volume.DefaultMapCachePages)
	fmt.Printf("memory: after %d GiB: RSS %.0f MiB (anon %.0f, file %.0f) (%.0fs)\n",
		*bigGiB, big, bigAnon, bigFile, time.Since(t0).Seconds())
	fmt.Printf("memory: mapped files by kind (MiB): %s\n", fileRSS())
	fmt.Printf("memory: difference RSS %.0f MiB, anon %.0f MiB, file %.0f MiB (goal < 64)\n",
		big-small, bigAnon-smallAnon, bigFile-smallFile)
}
