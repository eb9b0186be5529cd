package metastore

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// The stores' mapped log files have disk blocks behind their whole size
// from open on, so that a full disk cannot fault a write into them.
func TestLogFilesArePreallocated(t *testing.T) {
	dir := t.TempDir()
	b, err := OpenBadger(filepath.Join(dir, "meta"), 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	c, err := OpenCatalog(filepath.Join(dir, "catalog"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	checked := 0
	for _, d := range []string{"meta", "catalog"} {
		ents, _ := os.ReadDir(filepath.Join(dir, d))
		for _, e := range ents {
			if !strings.HasSuffix(e.Name(), ".mem") {
				continue
			}
			var st syscall.Stat_t
			if err := syscall.Stat(filepath.Join(dir, d, e.Name()), &st); err != nil {
				t.Fatal(err)
			}
			if st.Blocks*512 < st.Size {
				t.Errorf("%s/%s: %d of %d bytes allocated", d, e.Name(), st.Blocks*512, st.Size)
			}
			checked++
		}
	}
	if checked < 2 {
		t.Fatalf("%d write-ahead logs found", checked)
	}
}
