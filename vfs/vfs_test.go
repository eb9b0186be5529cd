package vfs

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// A read mapping sees what is written to the file after it was made (the
// page cache is shared), stops at the end with io.EOF, and turns a fault
// under it (here: the file shrank) into an error, not a crash.
func TestMapReadOS(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	f, err := OS{}.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(64 << 10); err != nil {
		t.Fatal(err)
	}
	m, err := f.MapRead()
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Repeat([]byte("vpool"), 1000)
	if _, err := f.WriteAt(want, 12345); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(want))
	if n, err := m.ReadAt(got, 12345); n != len(want) || err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read %d, %v; equal %v", n, err, bytes.Equal(got, want))
	}
	if n, err := m.ReadAt(got, 64<<10-100); n != 100 || err != io.EOF {
		t.Fatalf("read at the end: %d, %v; want 100, EOF", n, err)
	}
	if _, err := m.ReadAt(got, 64<<10); err != io.EOF {
		t.Fatalf("read past the end: %v, want EOF", err)
	}
	if err := f.Truncate(4096); err != nil {
		t.Fatal(err)
	}
	if _, err := m.ReadAt(got, 32<<10); !errors.Is(err, syscall.EIO) {
		t.Fatalf("read of a page past the shrunk file: %v, want EIO", err)
	}
	if _, err := m.ReadAt(got[:100], 0); err != nil {
		t.Fatalf("read after a fault: %v", err)
	}
}

func TestMapReadEmptyFile(t *testing.T) {
	f, err := OS{}.OpenFile(filepath.Join(t.TempDir(), "f"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.MapRead(); err == nil {
		t.Fatal("mapped an empty file")
	}
}

// WriteFileDurably under power loss: a write that returned survives
// whole; one cut short at any step (the process dies there, then the
// power goes, keeping a random part of what was not synced) leaves the
// old content or the new, whole, never a mix or nothing.
func TestWriteFileDurablyPowerLoss(t *testing.T) {
	oldB, newB := bytes.Repeat([]byte("o"), 6000), bytes.Repeat([]byte("n"), 9000)
	read := func(m *Mem) []byte {
		f, err := m.OpenFile("/d/id", os.O_RDONLY, 0)
		if err != nil {
			t.Fatalf("the file is gone: %v", err)
		}
		defer f.Close()
		n, _ := f.Size()
		b := make([]byte, n)
		f.ReadAt(b, 0)
		return b
	}
	for seed := uint64(0); seed < 40; seed++ {
		for failAt := 0; failAt <= 6; failAt++ { // the ops of a write: open, write, sync, close, rename, syncdir
			m := NewMem()
			m.MkdirAll("/d", 0o700)
			if err := WriteFileDurably(m, "/d/id", oldB, 0o600); err != nil {
				t.Fatal(err)
			}
			ops := 0
			m.InjectForTesting(func(op, name string) error {
				if ops++; ops > failAt && failAt < 6 {
					return errors.New("process died")
				}
				return nil
			})
			err := WriteFileDurably(m, "/d/id", newB, 0o600)
			m.InjectForTesting(nil)
			m.PowerLoss(rand.New(rand.NewPCG(seed, uint64(failAt))))
			got := read(m)
			switch {
			case err == nil && !bytes.Equal(got, newB):
				t.Fatalf("seed %d: a write that returned was lost (%d bytes)", seed, len(got))
			case !bytes.Equal(got, oldB) && !bytes.Equal(got, newB):
				t.Fatalf("seed %d, died after %d ops: %d bytes, neither the old content nor the new", seed, failAt, len(got))
			}
		}
	}
}
