package vmdk

import "sync"

// deltaCacheSlots is how many decoded grain tables one delta extent keeps.
// 16 slots of 4096 entries is 512 KiB per extent at most, allocated lazily.
const deltaCacheSlots = 16

// deltaGTCache is a small least-recently-used cache of decoded grain tables,
// keyed by the table's byte offset in the extent file. All access goes
// through lock/unlock: the entries of a slot are only valid while c.mu is
// held.
type deltaGTCache struct {
	mu    sync.Mutex
	clock uint64
	slots [deltaCacheSlots]deltaGTSlot
	raw   []byte // scratch for reading one table, guarded by mu
}

type deltaGTSlot struct {
	key  int64 // file offset of the table; -1 = empty
	used uint64
	ent  []uint64
}

func newDeltaGTCache() *deltaGTCache {
	c := &deltaGTCache{}
	for i := range c.slots {
		c.slots[i].key = -1
	}
	return c
}

// get returns the slot for key with c.mu held and whether it already holds
// the table. On a miss the least recently used slot is handed out with its
// key set; the caller fills ent (len n) and must call drop on failure.
func (c *deltaGTCache) get(key int64, n int) (s *deltaGTSlot, hit bool) {
	c.mu.Lock()
	c.clock++
	victim := 0
	for i := range c.slots {
		s := &c.slots[i]
		if s.key == key {
			s.used = c.clock
			return s, true
		}
		if s.used < c.slots[victim].used {
			victim = i
		}
	}
	s = &c.slots[victim]
	s.key = key
	s.used = c.clock
	if cap(s.ent) < n {
		s.ent = make([]uint64, n)
	}
	s.ent = s.ent[:n]
	return s, false
}

// drop forgets a slot whose load failed. c.mu must be held.
func (c *deltaGTCache) drop(s *deltaGTSlot) {
	s.key = -1
	s.used = 0
}

// scratch returns a buffer of n bytes for raw table reads. c.mu must be held.
func (c *deltaGTCache) scratch(n int) []byte {
	if cap(c.raw) < n {
		c.raw = make([]byte, n)
	}
	return c.raw[:n]
}
