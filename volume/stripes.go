package volume

import (
	"sort"
	"sync"
)

// stripeLocks serialise writes to the same cluster (read-modify-write of a
// partial cluster must not lose a concurrent write to the other part)
// without a lock per vDisk: cluster c maps to stripe c mod n.
type stripeLocks struct {
	mu [stripeCount]sync.Mutex
}

const stripeCount = 1024

// lock takes the stripes of clusters [c0, c1) in ascending stripe order
// and returns what to pass to unlock.
func (s *stripeLocks) lock(c0, c1 uint64, held []int) []int {
	held = held[:0]
	if c1-c0 >= stripeCount {
		for i := range s.mu {
			held = append(held, i)
		}
	} else {
		for c := c0; c < c1; c++ {
			held = append(held, int(c%stripeCount))
		}
		sort.Ints(held)
	}
	for _, i := range held {
		s.mu[i].Lock()
	}
	return held
}

func (s *stripeLocks) unlock(held []int) {
	for _, i := range held {
		s.mu[i].Unlock()
	}
}
