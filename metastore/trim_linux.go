package metastore

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Badger reads its tables and value-log files through shared mappings of
// the .sst and .vlog files, and every page it touches (a lookup, a
// compaction, a table it just built, a value it appended) stays in the
// process's resident set until the kernel needs the memory: left alone,
// RSS grows with the amount of metadata, that is with the size of the
// vDisks, and the OOM killer counts it. The trimmer bounds that: four
// times a second it sums the files' resident pages (/proc/self/pagemap over
// the mappings /proc/self/maps lists for this store's .sst and .vlog files)
// and, above the store's budget (OpenBadger's residentTables), asks the
// kernel to reclaim them (MADV_PAGEOUT). A page read again faults back
// from local flash. The hot part of each vDisk's block map is in the engine's
// own page cache, and badger's indexes and bloom filters are in its index
// cache on the heap; the budget is a second level for random access over
// more of a vDisk than the engine's cache covers.
//
// MADV_PAGEOUT never changes what memory holds, which makes the race with
// badger's own munmap (of a table a compaction replaced) harmless: an
// unmapped range fails with ENOMEM, and whatever was mapped there since is
// at worst written back or swapped out. MADV_DONTNEED would keep the page
// cache, but would zero anonymous memory mapped at a recycled address.
const madvPageout = 21 // MADV_PAGEOUT, Linux 5.4

var trimEvery = 250 * time.Millisecond // a variable for tests

// startTrimmer starts the trimmer; Close stops it.
func (b *Badger) startTrimmer() {
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		b.log.Warn("metastore: cannot bound the resident set of badger's tables; RSS will grow with the metadata",
			"dir", b.dir, "err", err)
		return
	}
	b.pagemap = f
	b.loops.Add(1)
	go func() {
		defer b.loops.Done()
		b.trimLoop(b.stop)
	}()
}

// trimLoop runs the trimmer until stop closes.
func (b *Badger) trimLoop(stop <-chan struct{}) {
	t := time.NewTicker(trimEvery)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		if _, _, err := b.trimTables(b.residentTables); err != nil {
			b.log.Warn("metastore: cannot bound the resident set of badger's tables; RSS will grow with the metadata",
				"dir", b.dir, "err", err)
			return
		}
	}
}

// trimTables reclaims pages of the mapped files when more than budget
// bytes of them are resident, until half the budget is left: value-log
// files first (a value is read once per block-map miss, the tables by
// every lookup), then tables, oldest first in each (badger numbers files
// in creation order; the newest tables are level 0 and fresh compaction
// outputs, which the next compaction reads). It returns the resident
// bytes before and after.
func (b *Badger) trimTables(budget int64) (before, after int64, err error) {
	ranges, err := mappedFiles(b.mapsPrefix, ".sst", ".vlog")
	if err != nil {
		return 0, 0, err
	}
	for i := range ranges {
		ranges[i].resident = b.resident(ranges[i])
		before += ranges[i].resident
	}
	defer func() { b.tablesResident.Store(after) }()
	if before <= budget {
		return before, before, nil
	}
	sort.Slice(ranges, func(i, j int) bool {
		a, b := ranges[i].name, ranges[j].name // zero-padded numbers
		if va, vb := strings.HasSuffix(a, ".vlog"), strings.HasSuffix(b, ".vlog"); va != vb {
			return va
		}
		return len(a) < len(b) || len(a) == len(b) && a < b
	})
	after = before
	for _, r := range ranges {
		if after <= budget/2 {
			break
		}
		if r.resident == 0 {
			continue
		}
		_, _, errno := syscall.Syscall(syscall.SYS_MADVISE, r.start, r.end-r.start, madvPageout)
		if errno == syscall.EINVAL {
			return before, before, errors.New("madvise(MADV_PAGEOUT) not supported by this kernel (needs Linux 5.4)")
		}
		// ENOMEM: badger unmapped the table meanwhile.
		after += b.resident(r) - r.resident
	}
	return before, after, nil
}

// span is a mapped file's address range.
type span struct {
	start, end uintptr
	name       string // the file's base name
	resident   int64
}

// mappedFiles lists this process's mappings of files whose path starts
// with prefix and ends with one of exts.
func mappedFiles(prefix string, exts ...string) ([]span, error) {
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []span
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// start-end perms offset dev inode path
		l := sc.Bytes()
		i := bytes.IndexByte(l, '/')
		if i < 0 {
			continue
		}
		path := string(l[i:])
		if !strings.HasPrefix(path, prefix) || !slices.ContainsFunc(exts, func(e string) bool { return strings.HasSuffix(path, e) }) {
			continue
		}
		addr, _, _ := strings.Cut(string(l), " ")
		lo, hi, ok := strings.Cut(addr, "-")
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if !ok || err1 != nil || err2 != nil || end <= start {
			continue
		}
		out = append(out, span{start: uintptr(start), end: uintptr(end), name: filepath.Base(path)})
	}
	return out, sc.Err()
}

// resident returns the bytes of r mapped into this process's page tables:
// its part of the resident set (/proc/self/pagemap, bit 63: present).
// Page-cache residency (mincore) would count pages that MADV_PAGEOUT has
// unmapped but not yet freed, such as dirty ones under writeback.
func (b *Badger) resident(r span) int64 {
	page := uintptr(os.Getpagesize())
	pages := int((r.end - r.start + page - 1) / page)
	var n int64
	for off := 0; off < pages; {
		chunk := min(pages-off, 8192)
		if cap(b.pagemapBuf) < 8*chunk {
			b.pagemapBuf = make([]byte, 8*8192)
		}
		buf := b.pagemapBuf[:8*chunk]
		got, err := b.pagemap.ReadAt(buf, int64(r.start/page+uintptr(off))*8)
		for i := 0; i+8 <= got; i += 8 {
			n += int64(buf[i+7] >> 7)
		}
		if err != nil || got < len(buf) {
			break
		}
		off += chunk
	}
	return n * int64(page)
}
