package fs

import (
	"bytes"
	"fmt"
	"testing"
)

// Chunks freed by deletes become free at the next backup and are handed
// out again, each to one file: files written after several rounds of
// create, delete and backup read their own data, and no two files share
// a chunk (the in-memory free list agrees with the catalog).
func TestFreeChunksReusedOnce(t *testing.T) {
	e := newEnv(t)
	want := map[string][]byte{}
	for round := range 4 {
		for i := range 6 {
			name := fmt.Sprintf("r%d-f%d", round, i)
			a := e.mk(RootIno, name, 0o644)
			data := bytes.Repeat([]byte{byte(round*16 + i + 1)}, (i+1)*300<<10) // 1..2 chunks
			e.write(a.Ino, data, 0)
			want[name] = data
		}
		for i := range 3 { // half of this round's files go
			name := fmt.Sprintf("r%d-f%d", round, i)
			if err := e.ns.Unlink(bg, RootIno, name); err != nil {
				t.Fatal(err)
			}
			delete(want, name)
		}
		if err := e.ns.Backup(bg); err != nil {
			t.Fatal(err)
		}
		if round == 1 {
			e.restart() // the list is read again from the catalog
		}
	}
	seen := map[uint64]string{}
	for name, data := range want {
		a, err := e.ns.Lookup(bg, RootIno, name)
		if err != nil {
			t.Fatal(err)
		}
		if got := e.read(a.Ino, len(data)+10, 0); !bytes.Equal(got, data) {
			t.Fatalf("%s does not read its own data", name)
		}
		for idx := uint64(0); idx<<chunkShift < uint64(len(data)); idx++ {
			c, ok, err := e.ns.chunk(a.Ino, idx)
			if err != nil || !ok {
				t.Fatalf("%s chunk %d: %v %v", name, idx, ok, err)
			}
			if other, dup := seen[c]; dup {
				t.Fatalf("file-store chunk %d is %s's and %s's", c, other, name)
			}
			seen[c] = name
		}
	}
	if e.ns.mu.sb.NextChunk > uint64(len(seen))+3 { // the last round's 3 freed chunks stay free
		t.Fatalf("%d chunks handed out for %d in use: freed chunks were not reused", e.ns.mu.sb.NextChunk, len(seen))
	}
}
