package vfs

import (
	"bytes"
	"errors"
	"os"
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
