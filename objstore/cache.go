package objstore

import "sync"

// Cache remembers what a store learnt about its objects (their layout,
// their size): objects are immutable, so an entry stays true until the
// object is written again or deleted, which Forget it. At Max entries it
// starts over (a cheap bound; a miss only costs a look at the store).
type Cache[V any] struct {
	Max int
	mu  sync.Mutex
	m   map[string]V
}

// Get returns the entry of name.
func (c *Cache[V]) Get(name string) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.m[name]
	return v, ok
}

// Put sets the entry of name.
func (c *Cache[V]) Put(name string, v V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= c.Max {
		c.m = make(map[string]V)
	}
	c.m[name] = v
}

// Forget drops the entry of name.
func (c *Cache[V]) Forget(name string) {
	c.mu.Lock()
	delete(c.m, name)
	c.mu.Unlock()
}
