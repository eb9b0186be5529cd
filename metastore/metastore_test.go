package metastore

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"
)

type store interface {
	Get(key []byte) ([]byte, bool, error)
	Commit(ops []Op) error
	Scan(prefix, start []byte, fn func(k, v []byte) bool) error
	Close() error
}

// TestConformance runs the same script against badger and memory.
func TestConformance(t *testing.T) {
	for name, open := range map[string]func(t *testing.T) store{
		"mem": func(t *testing.T) store { return NewMem() },
		"badger": func(t *testing.T) store {
			b, err := OpenBadger(t.TempDir(), 0, nil)
			if err != nil {
				t.Fatal(err)
			}
			return b
		},
	} {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			defer s.Close()
			var ops []Op
			for i := 0; i < 100; i++ {
				ops = append(ops, Op{Key: []byte(fmt.Sprintf("m%03d", i)), Value: []byte{byte(i)}})
			}
			ops = append(ops, Op{Key: []byte("v1"), Value: []byte("x")})
			if err := s.Commit(ops); err != nil {
				t.Fatal(err)
			}
			if err := s.Commit([]Op{{Key: []byte("m050")}}); err != nil {
				t.Fatal(err)
			}
			if v, ok, err := s.Get([]byte("m007")); err != nil || !ok || v[0] != 7 {
				t.Fatalf("get = %v %v %v", v, ok, err)
			}
			if _, ok, err := s.Get([]byte("m050")); err != nil || ok {
				t.Fatalf("deleted key found: %v %v", ok, err)
			}
			var got []string
			err := s.Scan([]byte("m"), []byte("m048"), func(k, v []byte) bool {
				got = append(got, string(k))
				return len(got) < 4
			})
			if err != nil || fmt.Sprint(got) != "[m048 m049 m051 m052]" {
				t.Fatalf("scan = %v, %v", got, err)
			}
			n := 0
			s.Scan([]byte("m"), nil, func(k, v []byte) bool { n++; return true })
			if n != 99 {
				t.Fatalf("scan of the whole prefix saw %d keys", n)
			}
		})
	}
}

// Close gives up, with an error, when badger cannot write its tables,
// instead of retrying for ever (the daemon must be able to exit).
func TestCloseGivesUpWhenTheDirectoryIsGone(t *testing.T) {
	dir := t.TempDir()
	b, err := OpenBadger(dir, 0, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Commit([]Op{{Key: []byte("k"), Value: []byte("v")}}); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	defer func(d time.Duration) { closeTimeout = d }(closeTimeout)
	closeTimeout = 2 * time.Second
	start := time.Now()
	err = b.Close()
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("Close took %s", took)
	}
	if err == nil || !strings.Contains(err.Error(), "did not finish") {
		t.Fatalf("Close with the directory gone: %v", err)
	}
}
