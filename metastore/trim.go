package metastore

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Badger reads its tables through read-only shared mappings: every table
// page it ever read stays in the process's resident set, so RSS would grow
// with the amount of metadata even though those pages are clean page
// cache. trimMappedTables drops them from this process's page tables
// (madvise MADV_DONTNEED): the data stays in the page cache, and the next
// access maps it again. Only shared *.sst mappings under the store's
// directory are touched: tables are immutable once built (badger writes
// them through the mapping first, so they are mapped read-write), and for
// a shared file mapping MADV_DONTNEED keeps any dirty page's data in the
// page cache.
func trimMappedTables(dir string) (trimmedBytes int64) {
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || !strings.HasPrefix(fields[5], dir+"/") || !strings.HasSuffix(fields[5], ".sst") ||
			!strings.HasSuffix(fields[1], "s") {
			continue
		}
		lo, hi, ok := strings.Cut(fields[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		if _, _, e := syscall.Syscall(syscall.SYS_MADVISE, uintptr(start), uintptr(end-start), syscall.MADV_DONTNEED); e == 0 {
			trimmedBytes += int64(end - start)
		}
	}
	return trimmedBytes
}

// trimLoop trims every period until done is closed.
func trimLoop(dir string, period time.Duration, done <-chan struct{}) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			trimMappedTables(dir)
		}
	}
}
