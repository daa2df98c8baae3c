package vector

// cand is a graph node or matrix row with its distance to the current base
// vector (the negated dot product).
type cand struct {
	d  float32
	id int32
}

// nearer orders cands by distance, ties by id, so results are deterministic.
func (a cand) nearer(b cand) bool {
	if a.d != b.d {
		return a.d < b.d
	}
	return a.id < b.id
}

// candHeap is a binary heap of cands: nearest on top, or farthest on top
// when far is set.
type candHeap struct {
	far bool
	c   []cand
}

func (h *candHeap) less(i, j int) bool {
	if h.far {
		return h.c[j].nearer(h.c[i])
	}
	return h.c[i].nearer(h.c[j])
}

func (h *candHeap) push(x cand) {
	h.c = append(h.c, x)
	for i := len(h.c) - 1; i > 0; {
		p := (i - 1) / 2
		if !h.less(i, p) {
			break
		}
		h.c[i], h.c[p] = h.c[p], h.c[i]
		i = p
	}
}

func (h *candHeap) pop() cand {
	top := h.c[0]
	last := len(h.c) - 1
	h.c[0] = h.c[last]
	h.c = h.c[:last]
	h.down(0)
	return top
}

func (h *candHeap) down(i int) {
	n := len(h.c)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && h.less(r, l) {
			m = r
		}
		if !h.less(m, i) {
			return
		}
		h.c[i], h.c[m] = h.c[m], h.c[i]
		i = m
	}
}

// topK keeps the k nearest cands offered to it.
type topK struct {
	k int
	h candHeap
}

func (t *topK) reset(k int) {
	t.k = k
	t.h.far = true
	t.h.c = t.h.c[:0]
}

func (t *topK) full() bool { return len(t.h.c) >= t.k }

// worst returns the farthest kept cand; the set must not be empty.
func (t *topK) worst() cand { return t.h.c[0] }

// offer keeps x if fewer than k are kept or x is nearer than the worst.
func (t *topK) offer(x cand) {
	switch {
	case len(t.h.c) < t.k:
		t.h.push(x)
	case t.k > 0 && x.nearer(t.h.c[0]):
		t.h.c[0] = x
		t.h.down(0)
	}
}

// drain empties the set into dst, nearest first.
func (t *topK) drain(dst []cand) []cand {
	n := len(dst)
	for len(t.h.c) > 0 {
		dst = append(dst, t.h.pop())
	}
	for i, j := n, len(dst)-1; i < j; i, j = i+1, j-1 {
		dst[i], dst[j] = dst[j], dst[i]
	}
	return dst
}
