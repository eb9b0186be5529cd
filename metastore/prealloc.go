package metastore

import (
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// logPreallocator backs badger's mapped log files with disk blocks.
// Badger creates its write-ahead and value logs as sparse files of their
// full size and writes them through shared mappings; a write into a page
// with no block behind it on a full disk is a SIGBUS, which kills the
// process. So every such file is preallocated (fallocate, keeping its
// size) at open and within preallocateEvery of its creation; the space
// reserve (SpaceReserve) covers the moments in between. A file that
// cannot be preallocated (the disk is full) is retried, and said once.
type logPreallocator struct {
	dir  string
	log  *slog.Logger
	stop chan struct{}
	wg   sync.WaitGroup
	done map[string]int64 // name -> size preallocated; only the loop touches it
	warn bool             // the last pass could not preallocate a file
}

const preallocateEvery = time.Second

func startPreallocator(dir string, log *slog.Logger) *logPreallocator {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &logPreallocator{dir: dir, log: log, stop: make(chan struct{}), done: map[string]int64{}}
	p.pass()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(preallocateEvery)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
				p.pass()
			}
		}
	}()
	return p
}

// pass preallocates the log files not done yet (or grown since).
func (p *logPreallocator) pass() {
	ents, err := os.ReadDir(p.dir)
	if err != nil {
		return
	}
	seen := map[string]bool{}
	failed := false
	for _, e := range ents {
		n := e.Name()
		if !strings.HasSuffix(n, ".mem") && !strings.HasSuffix(n, ".vlog") {
			continue
		}
		seen[n] = true
		fi, err := e.Info()
		if err != nil || fi.Size() == p.done[n] {
			continue
		}
		if err := fallocateKeepSize(filepath.Join(p.dir, n), fi.Size()); err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				failed = true
				if !p.warn {
					p.log.Warn("metastore: cannot back a log file with disk blocks; a full disk could stop the daemon",
						"file", filepath.Join(p.dir, n), "err", err)
				}
			}
			continue
		}
		p.done[n] = fi.Size()
	}
	p.warn = failed
	for n := range p.done {
		if !seen[n] {
			delete(p.done, n)
		}
	}
}

func (p *logPreallocator) close() {
	close(p.stop)
	p.wg.Wait()
}

func fallocateKeepSize(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	const keepSize = 0x01 // FALLOC_FL_KEEP_SIZE
	err = syscall.Fallocate(int(f.Fd()), keepSize, 0, size)
	if errors.Is(err, syscall.EOPNOTSUPP) {
		return nil // nothing to gain on such a filesystem
	}
	return err
}
