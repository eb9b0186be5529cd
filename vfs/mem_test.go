package vfs

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"strings"
	"syscall"
	"testing"
)

func TestMemCrashKeepsOnlySynced(t *testing.T) {
	m := NewMem()
	m.MkdirAll("/d", 0o700)
	f, _ := m.OpenFile("/d/a", os.O_CREATE|os.O_RDWR, 0o600)
	f.WriteAt([]byte("durable"), 0)
	f.Sync()
	f.WriteAt([]byte("-lost"), 7)
	m.SyncDir("/d")
	g, _ := m.OpenFile("/d/b", os.O_CREATE|os.O_RDWR, 0o600)
	g.WriteAt([]byte("x"), 0)
	g.Sync() // data synced, but its name never was
	m.Crash()
	if _, err := f.ReadAt(make([]byte, 1), 0); !errors.Is(err, ErrCrashed) {
		t.Fatalf("old handle after crash: %v", err)
	}
	b, err := ReadFile(m, "/d/a")
	if err != nil || !bytes.Equal(b, []byte("durable")) {
		t.Fatalf("after crash: %q %v", b, err)
	}
	if _, err := m.OpenFile("/d/b", os.O_RDONLY, 0); !errors.Is(err, ErrNotExist) {
		t.Fatalf("unsynced name survived: %v", err)
	}
}

func TestMemInject(t *testing.T) {
	m := NewMem()
	m.MkdirAll("/d", 0o700)
	m.InjectForTesting(func(op, name string) error {
		if op == "write" {
			return syscall.ENOSPC
		}
		return nil
	})
	f, _ := m.OpenFile("/d/a", os.O_CREATE|os.O_RDWR, 0o600)
	if _, err := f.WriteAt([]byte("x"), 0); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("injected error: %v", err)
	}
}

func TestWriteFileAtomicSurvivesCrash(t *testing.T) {
	m := NewMem()
	m.MkdirAll("/d", 0o700)
	if err := WriteFileAtomic(m, "/d/f", []byte("one")); err != nil {
		t.Fatal(err)
	}
	m.Crash()
	b, err := ReadFile(m, "/d/f")
	if err != nil || string(b) != "one" {
		t.Fatalf("%q %v", b, err)
	}
}

// PowerLoss keeps each unsynced change or not, at random: over seeds,
// every combination of a kept or lost removal, rename and write shows up,
// synced state always survives, and a change made durable by SyncDir is
// never undone.
func TestMemPowerLossKeepsARandomPart(t *testing.T) {
	seen := map[string]bool{}
	for seed := uint64(0); seed < 200; seed++ {
		m := NewMem()
		m.MkdirAll("/d", 0o700)
		m.MkdirAll("/e", 0o700)
		for _, n := range []string{"/d/gone", "/d/old", "/e/kept"} {
			f, _ := m.OpenFile(n, os.O_CREATE|os.O_RDWR, 0o600)
			f.WriteAt(bytes.Repeat([]byte(n[3:4]), 8192), 0)
			f.Sync()
		}
		m.SyncDir("/d")
		m.SyncDir("/e")
		m.Remove("/d/gone")
		m.Rename("/d/old", "/d/new")
		f, _ := m.OpenFile("/e/kept", os.O_RDWR, 0)
		f.WriteAt(bytes.Repeat([]byte("x"), 4096), 4096) // second block only
		m.Remove("/e/kept")
		m.SyncDir("/e") // the removal of kept is durable
		m.PowerLoss(rand.New(rand.NewPCG(seed, 1)))

		var state []string
		if _, err := ReadFile(m, "/e/kept"); !errors.Is(err, ErrNotExist) {
			t.Fatalf("seed %d: a synced removal was undone: %v", seed, err)
		}
		if _, err := ReadFile(m, "/d/gone"); err == nil {
			state = append(state, "gone-kept")
		}
		old, errOld := ReadFile(m, "/d/old")
		nw, errNew := ReadFile(m, "/d/new")
		switch {
		case errOld == nil && errNew != nil:
			state = append(state, "rename-lost")
		case errOld != nil && errNew == nil:
			state = append(state, "rename-kept")
			old = nw
		default:
			t.Fatalf("seed %d: rename left old=%v new=%v", seed, errOld, errNew)
		}
		if !bytes.Equal(old, bytes.Repeat([]byte("o"), 8192)) {
			t.Fatalf("seed %d: synced data changed", seed)
		}
		seen[strings.Join(state, ",")] = true
	}
	for _, want := range []string{"gone-kept,rename-lost", "gone-kept,rename-kept", "rename-lost", "rename-kept"} {
		if !seen[want] {
			t.Errorf("over 200 seeds, never %q (saw %v)", want, seen)
		}
	}
}

// Unsynced blocks of a file survive a power loss or not, one by one.
func TestMemPowerLossKeepsBlocksAtRandom(t *testing.T) {
	kinds := map[string]bool{}
	for seed := uint64(0); seed < 100; seed++ {
		m := NewMem()
		m.MkdirAll("/d", 0o700)
		f, _ := m.OpenFile("/d/f", os.O_CREATE|os.O_RDWR, 0o600)
		f.WriteAt(make([]byte, 3*4096), 0)
		f.Sync()
		m.SyncDir("/d")
		f.WriteAt(bytes.Repeat([]byte{1}, 3*4096), 0)
		m.PowerLoss(rand.New(rand.NewPCG(seed, 2)))
		b, err := ReadFile(m, "/d/f")
		if err != nil || len(b) != 3*4096 {
			t.Fatalf("seed %d: %d bytes, %v", seed, len(b), err)
		}
		k := ""
		for i := 0; i < 3; i++ {
			blk := b[i*4096 : (i+1)*4096]
			switch {
			case bytes.Equal(blk, make([]byte, 4096)):
				k += "0"
			case bytes.Equal(blk, bytes.Repeat([]byte{1}, 4096)):
				k += "1"
			default:
				t.Fatalf("seed %d: block %d torn inside", seed, i)
			}
		}
		kinds[k] = true
	}
	if len(kinds) < 6 {
		t.Fatalf("over 100 seeds only %v", kinds)
	}
}
