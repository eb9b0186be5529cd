package volume

import (
	"sort"
	"sync"
)

// stripeLocks order writes that touch the same clusters without a lock
// per vDisk: cluster c belongs to group c>>stripeShift, which maps to
// stripe group mod stripeCount. Writes of whole clusters share their
// stripes (concurrent whole-cluster writes to one cluster are ordered by
// their tickets, and either order is a correct outcome); a read-modify-
// write of a partial cluster holds its stripe exclusively, so that no
// write to the rest of that cluster can land between its read and its
// write. Discards hold theirs exclusively too.
type stripeLocks struct {
	mu [stripeCount]sync.RWMutex
}

const (
	stripeCount = 1024
	stripeShift = 4 // 16 clusters per group: a 1 MiB write takes 17 stripes at most
)

// lock takes the stripes of clusters [c0, c1) in ascending stripe order:
// exclusively where the first cluster (exclFirst), the last one
// (exclLast) or any (exclAll) needs it, shared elsewhere. It returns what
// to pass to unlock (stripe<<1 | exclusive).
func (s *stripeLocks) lock(c0, c1 uint64, exclFirst, exclLast, exclAll bool, held []int) []int {
	held = held[:0]
	g0, g1 := c0>>stripeShift, (c1-1)>>stripeShift
	if g1-g0+1 >= stripeCount {
		for i := range s.mu {
			held = append(held, i<<1|1)
		}
	} else {
		for g := g0; g <= g1; g++ {
			excl := exclAll || (exclFirst && g == g0) || (exclLast && g == g1)
			e := 0
			if excl {
				e = 1
			}
			held = append(held, int(g%stripeCount)<<1|e)
		}
		sort.Ints(held)
	}
	for _, h := range held {
		if h&1 != 0 {
			s.mu[h>>1].Lock()
		} else {
			s.mu[h>>1].RLock()
		}
	}
	return held
}

func (s *stripeLocks) unlock(held []int) {
	for _, h := range held {
		if h&1 != 0 {
			s.mu[h>>1].Unlock()
		} else {
			s.mu[h>>1].RUnlock()
		}
	}
}
