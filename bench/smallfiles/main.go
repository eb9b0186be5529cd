// Command smallfiles is the small-file load of bench/smallfiles.sh: a few
// writers, each in its own directories, creating files of 4–64 KiB,
// writing and fsyncing them, stating, listing, reading, renaming and
// deleting them, as a VM datastore's .vmx, .nvram, log and lock files
// see. It prints the operations done and their rate.
//
//	smallfiles -dir DIR [-workers 2] [-seconds 10] [-seed 1]
package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	dir := flag.String("dir", "", "directory to work in (made if missing)")
	workers := flag.Int("workers", 2, "concurrent writers")
	seconds := flag.Float64("seconds", 10, "how long to run")
	seed := flag.Uint64("seed", 1, "random seed")
	flag.Parse()
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "smallfiles: -dir is needed")
		os.Exit(2)
	}
	var ops atomic.Int64
	deadline := time.Now().Add(time.Duration(*seconds * float64(time.Second)))
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, *workers)
	for w := range *workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := work(filepath.Join(*dir, fmt.Sprintf("w%d", w)), rand.New(rand.NewPCG(*seed, uint64(w))), deadline, &ops); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	close(errs)
	for err := range errs {
		fmt.Fprintln(os.Stderr, "smallfiles:", err)
		os.Exit(1)
	}
	fmt.Printf("ops=%d seconds=%.2f ops_per_s=%.0f\n", ops.Load(), elapsed, float64(ops.Load())/elapsed)
}

// work runs one writer until the deadline: 4 directories, at most 64
// files in each; every operation counts one.
func work(root string, rng *rand.Rand, deadline time.Time, ops *atomic.Int64) error {
	const dirs, perDir = 4, 64
	var files [dirs][]string
	for d := range dirs {
		if err := os.MkdirAll(filepath.Join(root, fmt.Sprint("d", d)), 0o755); err != nil {
			return err
		}
	}
	buf := make([]byte, 64<<10)
	for i := range buf {
		buf[i] = byte(rng.IntN(256))
	}
	seq := 0
	pick := func(d int) string { return files[d][rng.IntN(len(files[d]))] }
	for time.Now().Before(deadline) {
		d := rng.IntN(dirs)
		dir := filepath.Join(root, fmt.Sprint("d", d))
		var err error
		switch r := rng.IntN(100); {
		case r < 35 || len(files[d]) == 0: // create, write, fsync
			if len(files[d]) >= perDir {
				name := pick(d)
				err = os.Remove(filepath.Join(dir, name))
				files[d] = del(files[d], name)
				break
			}
			seq++
			name := fmt.Sprintf("f%06d.log", seq)
			err = writeFile(filepath.Join(dir, name), buf[:(4+rng.IntN(61))<<10])
			files[d] = append(files[d], name)
		case r < 55:
			_, err = os.Stat(filepath.Join(dir, pick(d)))
		case r < 65:
			_, err = os.ReadDir(dir)
		case r < 75:
			_, err = os.ReadFile(filepath.Join(dir, pick(d)))
		case r < 88:
			old := pick(d)
			seq++
			name := fmt.Sprintf("f%06d.vmx", seq)
			err = os.Rename(filepath.Join(dir, old), filepath.Join(dir, name))
			files[d] = append(del(files[d], old), name)
		default:
			name := pick(d)
			err = os.Remove(filepath.Join(dir, name))
			files[d] = del(files[d], name)
		}
		if err != nil {
			return err
		}
		ops.Add(1)
	}
	return nil
}

func writeFile(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func del(s []string, name string) []string {
	for i, x := range s {
		if x == name {
			return append(s[:i], s[i+1:]...)
		}
	}
	return s
}
