package metastore

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

type catalog interface {
	Get(key []byte) ([]byte, uint64, bool, error)
	Commit(conds []Cond, ops []Op) (bool, error)
	Stage(ops []Op) error
	Sync() error
	Scan(prefix, start []byte, fn func(k, v []byte) bool) error
	Close() error
}

// The badger catalog and the in-memory one keep the same contract:
// revisions, conditional commits, staged changes, scans.
func TestCatalogConformance(t *testing.T) {
	for name, open := range map[string]func(t *testing.T) catalog{
		"mem": func(t *testing.T) catalog { return NewMemCatalog() },
		"badger": func(t *testing.T) catalog {
			c, err := OpenCatalog(t.TempDir(), nil)
			if err != nil {
				t.Fatal(err)
			}
			return c
		},
	} {
		t.Run(name, func(t *testing.T) {
			c := open(t)
			defer c.Close()
			k := []byte("vrec")
			if ok, err := c.Commit([]Cond{{Key: k, Rev: 0}}, []Op{{Key: k, Value: []byte("one")}}); !ok || err != nil {
				t.Fatalf("create if absent: %v %v", ok, err)
			}
			v, rev, ok, err := c.Get(k)
			if err != nil || !ok || string(v) != "one" || rev == 0 {
				t.Fatalf("get = %q %d %v %v", v, rev, ok, err)
			}
			if ok, err := c.Commit([]Cond{{Key: k, Rev: 0}}, []Op{{Key: k, Value: []byte("dup")}}); ok || err != nil {
				t.Fatalf("create over an existing key: %v %v", ok, err)
			}
			if ok, err := c.Commit([]Cond{{Key: k, Rev: rev}}, []Op{{Key: k, Value: []byte("two")}, {Key: []byte("other"), Value: []byte("x")}}); !ok || err != nil {
				t.Fatalf("compare-and-set on the revision read: %v %v", ok, err)
			}
			_, rev2, _, _ := c.Get(k)
			if rev2 <= rev {
				t.Fatalf("revision %d after %d", rev2, rev)
			}
			if ok, err := c.Commit([]Cond{{Key: k, Rev: rev}}, []Op{{Key: []byte("other")}}); ok || err != nil {
				t.Fatalf("compare-and-set on a stale revision: %v %v", ok, err)
			}
			if _, _, ok, _ := c.Get([]byte("other")); !ok {
				t.Fatal("a failed condition applied part of its commit")
			}
			for i := 0; i < 20; i++ {
				if err := c.Stage([]Op{{Key: []byte(fmt.Sprintf("n%02d", i)), Value: []byte{byte(i)}}}); err != nil {
					t.Fatal(err)
				}
			}
			if err := c.Sync(); err != nil {
				t.Fatal(err)
			}
			var got []string
			c.Scan([]byte("n"), []byte("n17"), func(k, v []byte) bool { got = append(got, string(k)); return true })
			if fmt.Sprint(got) != "[n17 n18 n19]" {
				t.Fatalf("scan = %v", got)
			}
		})
	}
}

// A power loss keeps every catalog commit and a prefix of the staged
// changes after it; the block-map store keeps a prefix of its commits
// since the last Sync.
func TestMemPowerLossKeepsAPrefix(t *testing.T) {
	lens := map[int]bool{}
	for seed := uint64(0); seed < 200; seed++ {
		c := NewMemCatalog()
		c.Commit(nil, []Op{{Key: []byte("durable"), Value: []byte{1}}})
		for i := 0; i < 10; i++ {
			c.Stage([]Op{{Key: []byte(fmt.Sprintf("s%d", i)), Value: []byte{1}}})
		}
		c.PowerLoss(rand.New(rand.NewPCG(seed, 3)))
		if _, _, ok, _ := c.Get([]byte("durable")); !ok {
			t.Fatal("a commit was lost")
		}
		n := 0
		for i := 0; i < 10; i++ {
			if _, _, ok, _ := c.Get([]byte(fmt.Sprintf("s%d", i))); ok {
				if n != i {
					t.Fatalf("seed %d: staged change %d kept after %d was lost", seed, i, n)
				}
				n++
			}
		}
		lens[n] = true

		m := NewMem()
		m.Commit([]Op{{Key: []byte("a"), Value: []byte{1}}})
		m.Sync()
		m.Commit([]Op{{Key: []byte("a")}})
		m.PowerLoss(nil)
		if _, ok, _ := m.Get([]byte("a")); !ok {
			t.Fatal("a synced key was lost with a later unsynced delete")
		}
	}
	if !lens[0] || !lens[10] || len(lens) < 5 {
		t.Fatalf("prefix lengths over 200 seeds: %v", lens)
	}
}

// MigrateToCatalog moves what the catalog holds out of an old store,
// keeps what the catalog already has, and can be run again.
func TestMigrateToCatalog(t *testing.T) {
	dir := t.TempDir()
	b, err := OpenBadger(dir+"/meta", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	c, err := OpenCatalog(dir+"/catalog", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var ops []Op
	for i := 0; i < 1200; i++ {
		ops = append(ops, Op{Key: []byte(fmt.Sprintf("v%04d", i)), Value: []byte("rec")})
	}
	ops = append(ops, Op{Key: []byte("m1"), Value: []byte("page")}, Op{Key: []byte("n1"), Value: []byte("old")})
	if err := b.Commit(ops); err != nil {
		t.Fatal(err)
	}
	c.Commit(nil, []Op{{Key: []byte("n1"), Value: []byte("newer")}})
	moved, err := MigrateToCatalog(b, c, [][]byte{[]byte("v"), []byte("n")})
	if err != nil || moved != 1200 {
		t.Fatalf("moved %d, %v", moved, err)
	}
	if v, _, ok, _ := c.Get([]byte("n1")); !ok || string(v) != "newer" {
		t.Fatalf("the catalog's own key was overwritten: %q", v)
	}
	if v, _, ok, _ := c.Get([]byte("v0999")); !ok || string(v) != "rec" {
		t.Fatal("a record was not moved")
	}
	for _, k := range []string{"v0000", "n1"} {
		if _, ok, _ := b.Get([]byte(k)); ok {
			t.Fatalf("%s left in the old store", k)
		}
	}
	if _, ok, _ := b.Get([]byte("m1")); !ok {
		t.Fatal("a block-map page was moved")
	}
	if moved, err := MigrateToCatalog(b, c, [][]byte{[]byte("v"), []byte("n")}); moved != 0 || err != nil {
		t.Fatalf("second run moved %d, %v", moved, err)
	}
}
