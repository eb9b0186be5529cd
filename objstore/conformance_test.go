package objstore

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"vpool/objstore/objstoretest"
	"vpool/volume/backend"
)

var (
	_ backend.Store = (*Mem)(nil)
	_ backend.Store = (*EC)(nil)
)

func implementations() map[string]objstoretest.NewStore {
	ec := func(asds int, p Preset) objstoretest.NewStore {
		return func(t *testing.T) backend.Store {
			s, err := OpenEC(tempDirs(t, asds), p, nil)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
	}
	return map[string]objstoretest.NewStore{
		"mem":           func(t *testing.T) backend.Store { return NewMem() },
		"ec-2+1":        ec(3, Preset{Data: 2, Parity: 1, FragmentSize: 8192}),
		"ec-4+2-over-7": ec(7, Preset{Data: 4, Parity: 2, FragmentSize: 4096}),
		"ec-1+0":        ec(1, Preset{Data: 1, Parity: 0, FragmentSize: 1 << 20}),
	}
}

func TestConformance(t *testing.T) {
	for name, mk := range implementations() {
		// a local store has no listing pages: a few hundred names do
		t.Run(name, func(t *testing.T) { objstoretest.Run(t, mk, objstoretest.Options{ListNames: 300}) })
	}
}

func TestUsage(t *testing.T) {
	for name, mk := range implementations() {
		t.Run(name, func(t *testing.T) {
			s := mk(t).(interface {
				Usage(context.Context) (Usage, error)
			})
			if u, err := s.Usage(context.Background()); err != nil || u.TotalBytes == 0 || u.DataFraction <= 0 {
				t.Fatalf("usage = %+v, %v", u, err)
			}
		})
	}
}

func tempDirs(t *testing.T, n int) []string {
	base := t.TempDir()
	dirs := make([]string, n)
	for i := range dirs {
		dirs[i] = fmt.Sprintf("%s/asd%d", base, i)
	}
	return dirs
}

func randBytes(r *rand.Rand, n int) []byte { return objstoretest.RandBytes(r, n) }
