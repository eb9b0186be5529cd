package metastore

import (
	"bytes"
	"fmt"
	"syscall"
	"testing"
	"time"
)

// TestTrimTables: table pages badger has read are resident until the
// trimmer reclaims them, and every value reads back the same afterwards.
func TestTrimTables(t *testing.T) {
	dir := t.TempDir()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err == nil && st.Type == 0x01021994 {
		t.Skip("temporary directory on tmpfs: its pages cannot be paged out without swap")
	}
	defer func(d time.Duration) { trimEvery = d }(trimEvery)
	trimEvery = time.Hour // only the test's trims
	b, err := OpenBadger(dir, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	const n = 48 << 10 // 1 KiB values: 48 MiB, three memtables' worth
	val := func(i int) []byte { return bytes.Repeat([]byte{byte(i), byte(i >> 8), 7, 9}, 256) }
	for i := 0; i < n; i += 1024 {
		var ops []Op
		for j := i; j < i+1024; j++ {
			ops = append(ops, Op{Key: []byte(fmt.Sprintf("m%08d", j)), Value: val(j)})
		}
		if err := b.Commit(ops); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.db.Flatten(1); err != nil { // everything into tables
		t.Fatal(err)
	}
	readAll := func() {
		t.Helper()
		if err := b.Scan([]byte("m"), nil, func(k, v []byte) bool {
			var i int
			fmt.Sscanf(string(k), "m%08d", &i)
			if !bytes.Equal(v, val(i)) {
				t.Fatalf("%s: wrong value", k)
			}
			return true
		}); err != nil {
			t.Fatal(err)
		}
	}
	readAll()
	t0 := time.Now()
	b.trimTables(1 << 40)
	t.Logf("a look at %d KiB of values that trims nothing: %v", 48<<10, time.Since(t0))
	before, after, err := b.trimTables(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("mapped files resident: %d KiB before, %d KiB after", before>>10, after>>10)
	if before < 16<<20 {
		t.Fatalf("only %d KiB of tables resident after reading 48 MiB through them", before>>10)
	}
	if after > before/4 {
		t.Fatalf("trim left %d of %d KiB resident", after>>10, before>>10)
	}
	readAll()
	if _, after2, _ := b.trimTables(1 << 30); after2 < before/2 {
		t.Fatalf("under the budget the trimmer reclaimed pages: %d KiB resident after reading again", after2>>10)
	}
}
