package vector

import (
	"fmt"
	"sync"

	"github.com/blendrag/blendrag/kernels"
)

// Hit is a search result: Score is the dot product of the query with the
// id's vector (the cosine similarity for unit vectors).
type Hit struct {
	ID    string
	Score float32
}

// Exact is a brute-force index: every search scores every live vector with
// kernels.Dot, rows split across Threads goroutines. It is not safe for
// concurrent mutation; concurrent Search calls are safe.
type Exact struct {
	st      *store
	threads int
	scratch sync.Pool // *exactScratch
}

// exactScratch is one search's working memory: a heap per worker and the
// merged list.
type exactScratch struct {
	heaps []topK
	list  []cand
}

// NewExact returns an empty exact index for dim-dimensional vectors whose
// searches use threads workers (at least 1).
func NewExact(dim, threads int) (*Exact, error) {
	if dim <= 0 {
		return nil, fmt.Errorf("vector: dimension %d must be positive", dim)
	}
	return newExactOver(newStore(dim), threads), nil
}

func newExactOver(st *store, threads int) *Exact {
	if threads < 1 {
		threads = 1
	}
	return &Exact{st: st, threads: threads}
}

// Add stores vec under id, replacing any earlier vector for id.
func (e *Exact) Add(id string, vec []float32) error {
	if err := e.st.check(vec); err != nil {
		return fmt.Errorf("vector: add %q: %w", id, err)
	}
	e.st.add(id, vec)
	return nil
}

// Delete removes id; a missing id is not an error.
func (e *Exact) Delete(id string) { e.st.remove(id) }

// Len returns the number of live vectors.
func (e *Exact) Len() int { return len(e.st.live) }

// Search returns the k live vectors with the largest dot product with q,
// best first (ties: earlier-added first).
func (e *Exact) Search(q []float32, k int) ([]Hit, error) {
	if err := e.st.check(q); err != nil {
		return nil, fmt.Errorf("vector: search: %w", err)
	}
	if k <= 0 || len(e.st.live) == 0 {
		return nil, nil
	}
	n := e.st.slots()
	workers := e.threads
	if minRows := 2048; n < workers*minRows {
		workers = max(1, n/minRows)
	}
	sc, _ := e.scratch.Get().(*exactScratch)
	if sc == nil {
		sc = new(exactScratch)
	}
	defer e.scratch.Put(sc)
	if len(sc.heaps) < workers {
		sc.heaps = make([]topK, workers)
	}
	heaps := sc.heaps[:workers]
	if workers == 1 {
		e.scan(q, k, 0, n, &heaps[0])
	} else {
		var wg sync.WaitGroup
		for w := range heaps {
			lo, hi := n*w/workers, n*(w+1)/workers
			wg.Go(func() { e.scan(q, k, lo, hi, &heaps[w]) })
		}
		wg.Wait()
		for w := 1; w < workers; w++ {
			for _, c := range heaps[w].h.c {
				heaps[0].offer(c)
			}
		}
	}
	sc.list = heaps[0].drain(sc.list[:0])
	out := make([]Hit, len(sc.list))
	for i, c := range sc.list {
		out[i] = Hit{ID: e.st.ids[c.id], Score: -c.d}
	}
	return out, nil
}

// scan scores slots [lo, hi) into h.
func (e *Exact) scan(q []float32, k, lo, hi int, t *topK) {
	t.reset(k)
	dead := e.st.dead
	for i := lo; i < hi; i++ {
		if dead[i] {
			continue
		}
		d := -kernels.Dot(q, e.st.vec(int32(i)))
		if !t.full() || d < t.worst().d {
			t.offer(cand{d, int32(i)})
		}
	}
}
