package volume

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// sortedIn lists exactly the cached pages in the range, ascending, whether
// it probes the range or walks the cache.
func TestPageCacheSortedIn(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		c := newPageCache(1000)
		for range rng.IntN(300) {
			c.insert(uint64(rng.IntN(2000)), &page{})
		}
		from := uint64(rng.IntN(2100))
		to := from + uint64(rng.IntN(800))
		if round%10 == 0 {
			to = math.MaxUint64
		}
		var want []uint64
		for i := range c.pages {
			if i >= from && i <= to {
				want = append(want, i)
			}
		}
		slices.Sort(want)
		if got := c.sortedIn(from, to); !slices.Equal(got, want) {
			t.Fatalf("sortedIn(%d, %d) = %v, want %v", from, to, got, want)
		}
	}
}
