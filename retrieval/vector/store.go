package vector

import (
	"fmt"
	"math"
)

// store holds vectors in one contiguous matrix, one row per slot. A slot is
// never reused: replacing or deleting an id tombstones its slot, and compact
// drops tombstoned slots.
type store struct {
	dim   int
	vecs  []float32
	ids   []string
	dead  []bool
	live  map[string]int32
	nDead int
}

func newStore(dim int) *store {
	return &store{dim: dim, live: make(map[string]int32)}
}

// slots is the number of slots, live or dead.
func (s *store) slots() int { return len(s.ids) }

// vec returns slot i's vector (aliasing the matrix).
func (s *store) vec(i int32) []float32 {
	o := int(i) * s.dim
	return s.vecs[o : o+s.dim : o+s.dim]
}

// check validates a vector's length and values.
func (s *store) check(vec []float32) error {
	if len(vec) != s.dim {
		return fmt.Errorf("vector has %d dimensions, index has %d", len(vec), s.dim)
	}
	for i, v := range vec {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("vector element %d is %v", i, v)
		}
	}
	return nil
}

// add appends vec under id and returns its slot and the slot it replaced
// (-1 if none). The caller has validated vec.
func (s *store) add(id string, vec []float32) (slot, old int32) {
	old = s.remove(id)
	slot = int32(len(s.ids))
	s.vecs = append(s.vecs, vec...)
	s.ids = append(s.ids, id)
	s.dead = append(s.dead, false)
	s.live[id] = slot
	return slot, old
}

// remove tombstones id's slot and returns it, or -1 if id is absent.
func (s *store) remove(id string) int32 {
	slot, ok := s.live[id]
	if !ok {
		return -1
	}
	delete(s.live, id)
	s.dead[slot] = true
	s.nDead++
	return slot
}

// clone returns a compacted copy of the store: its live slots, in order.
func (s *store) clone() *store {
	c := newStore(s.dim)
	c.vecs = make([]float32, 0, len(s.live)*s.dim)
	for i, id := range s.ids {
		if !s.dead[i] {
			c.add(id, s.vec(int32(i)))
		}
	}
	return c
}

// compact drops dead slots and returns the old→new slot map (-1 for dead).
func (s *store) compact() []int32 {
	remap := make([]int32, len(s.ids))
	n := int32(0)
	for i := range s.ids {
		if s.dead[i] {
			remap[i] = -1
			continue
		}
		if n != int32(i) {
			copy(s.vecs[int(n)*s.dim:int(n+1)*s.dim], s.vec(int32(i)))
			s.ids[n] = s.ids[i]
			s.live[s.ids[n]] = n
		}
		remap[i] = n
		n++
	}
	clear(s.ids[n:])
	s.vecs = s.vecs[:int(n)*s.dim]
	s.ids = s.ids[:n]
	s.dead = s.dead[:n]
	clear(s.dead)
	s.nDead = 0
	return remap
}
