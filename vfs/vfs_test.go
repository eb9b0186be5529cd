package vfs

import (
	"bytes"
	"errors"
	"io"
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
