package vector

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"

	"github.com/blendrag/blendrag/kernels"
)

// maxLevel caps a node's level so that it fits a byte on disk; with M ≥ 2 a
// level above 31 has probability below 2^-31 per node.
const maxLevel = 31

// HNSW is a Hierarchical Navigable Small World graph over a vector store.
// The distance between a and b is -a·b, so the nearest neighbours are the
// vectors of largest dot product. Mutations (Add, Delete) must not run
// concurrently with anything; concurrent Search calls are safe.
type HNSW struct {
	st       *store
	m, m0    int     // links per node above level 0, and at level 0 (2M)
	efC, efS int     // candidate list sizes for construction and search
	mL       float64 // level multiplier 1/ln(M)
	rng      *rand.Rand

	level []uint8       // per slot
	links [][][]int32   // per slot, per level: neighbour slots
	entry int32         // entry point slot, -1 when empty
	top   int           // entry point's level
	build searchScratch // scratch for Add and Delete (write-locked)
	pool  sync.Pool     // *searchScratch for Search
}

// searchScratch is the per-search working memory: a visited set stamped
// with a generation number, the candidate and result heaps and two lists.
type searchScratch struct {
	visited []uint32
	gen     uint32
	cands   candHeap
	res     topK
	list    []cand
	picked  []int32
	picked2 []cand
}

// nextGen starts a new visited set for n slots.
func (s *searchScratch) nextGen(n int) {
	if len(s.visited) < n {
		s.visited = make([]uint32, n+n/4)
		s.gen = 0
	}
	s.gen++
	if s.gen == 0 {
		clear(s.visited)
		s.gen = 1
	}
}

// NewHNSW returns an empty HNSW index for dim-dimensional vectors: m links
// per node (2m at level 0), candidate lists of efConstruction while building
// and efSearch while searching, and levels drawn from a generator seeded
// with seed.
func NewHNSW(dim, m, efConstruction, efSearch int, seed uint64) (*HNSW, error) {
	if dim <= 0 {
		return nil, fmt.Errorf("vector: dimension %d must be positive", dim)
	}
	return newHNSWOver(newStore(dim), m, efConstruction, efSearch, seed)
}

func newHNSWOver(st *store, m, efC, efS int, seed uint64) (*HNSW, error) {
	if m < 2 || m > 1024 || efC < 1 || efS < 1 {
		return nil, fmt.Errorf("vector: HNSW parameters M=%d efConstruction=%d efSearch=%d: need 2 ≤ M ≤ 1024 and ef ≥ 1", m, efC, efS)
	}
	h := &HNSW{
		st: st, m: m, m0: 2 * m, efC: max(efC, m), efS: efS,
		mL:    1 / math.Log(float64(m)),
		rng:   rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15)),
		entry: -1,
	}
	return h, nil
}

// SetEfSearch sets the search candidate list size (at least 1).
func (h *HNSW) SetEfSearch(ef int) { h.efS = max(ef, 1) }

// Len returns the number of live vectors.
func (h *HNSW) Len() int { return len(h.st.live) }

// Add stores vec under id and links it into the graph; re-adding an id
// replaces its vector (the old node is deleted as by Delete).
func (h *HNSW) Add(id string, vec []float32) error {
	if err := h.st.check(vec); err != nil {
		return fmt.Errorf("vector: add %q: %w", id, err)
	}
	slot, old := h.st.add(id, vec)
	if old >= 0 {
		h.repairAround(old)
	}
	h.insert(slot)
	return nil
}

// Delete removes id; a missing id is not an error. The node stays in the
// graph as a tombstone that searches pass through but never return, and its
// live neighbours that linked to it are relinked (see repair).
func (h *HNSW) Delete(id string) {
	if slot := h.st.remove(id); slot >= 0 {
		h.repairAround(slot)
	}
}

func (h *HNSW) maxLinks(l int) int {
	if l == 0 {
		return h.m0
	}
	return h.m
}

func (h *HNSW) dist(q []float32, i int32) float32 { return -kernels.Dot(q, h.st.vec(i)) }

// grow makes room for slot i in the per-slot arrays.
func (h *HNSW) grow(i int32) {
	for int(i) >= len(h.level) {
		h.level = append(h.level, 0)
		h.links = append(h.links, nil)
	}
}

// randomLevel draws floor(-ln(U)·mL) for U uniform in (0, 1].
func (h *HNSW) randomLevel() int {
	u := 1 - h.rng.Float64()
	return min(int(-math.Log(u)*h.mL), maxLevel)
}

// insert links slot into the graph (the paper's Algorithm 1).
func (h *HNSW) insert(slot int32) {
	h.grow(slot)
	lvl := h.randomLevel()
	h.level[slot] = uint8(lvl)
	h.links[slot] = make([][]int32, lvl+1)
	for l := range h.links[slot] {
		h.links[slot][l] = make([]int32, 0, h.maxLinks(l)+1)
	}
	if h.entry < 0 {
		h.entry, h.top = slot, lvl
		return
	}
	q := h.st.vec(slot)
	cur := h.greedy(q, h.entry, h.top, lvl)
	sc := &h.build
	eps := append(sc.picked[:0], cur)
	for l := min(lvl, h.top); l >= 0; l-- {
		h.searchLayer(q, eps, h.efC, l, sc)
		if len(sc.list) == 0 {
			continue
		}
		eps = idsOf(sc.list, eps[:0])
		sc.picked2 = h.selectNeighbours(sc.list, h.m, sc.picked2)
		h.links[slot][l] = idsOf(sc.picked2, h.links[slot][l][:0])
		for _, e := range h.links[slot][l] {
			h.link(e, slot, l)
		}
	}
	sc.picked = eps[:0]
	if lvl > h.top {
		h.entry, h.top = slot, lvl
	}
}

func idsOf(cs []cand, dst []int32) []int32 {
	for _, c := range cs {
		dst = append(dst, c.id)
	}
	return dst
}

// link adds the edge e→n at level l, shrinking e's list with the heuristic
// when it overflows. It uses h.build's lists, so the caller must be done
// with them.
func (h *HNSW) link(e, n int32, l int) {
	ls := append(h.links[e][l], n)
	h.links[e][l] = ls
	if len(ls) <= h.maxLinks(l) {
		return
	}
	sc := &h.build
	base := h.st.vec(e)
	cs := sc.list[:0]
	for _, x := range ls {
		cs = append(cs, cand{h.dist(base, x), x})
	}
	sortCands(cs)
	sc.picked2 = h.selectNeighbours(cs, h.maxLinks(l), sc.picked2)
	h.links[e][l] = idsOf(sc.picked2, ls[:0])
	sc.list = cs[:0]
}

func sortCands(cs []cand) {
	slices.SortFunc(cs, func(a, b cand) int {
		switch {
		case a.nearer(b):
			return -1
		case b.nearer(a):
			return 1
		}
		return 0
	})
}

// selectNeighbours is the paper's Algorithm 4 without extending or keeping
// pruned candidates (as hnswlib): walking cs nearest first, a candidate is
// kept when it is nearer to the base than to every candidate already kept.
// It returns at most m candidates (all of cs when there are fewer than m).
// cs must be sorted nearest first; the result reuses out's storage.
func (h *HNSW) selectNeighbours(cs []cand, m int, out []cand) []cand {
	if len(cs) <= m {
		return append(out[:0], cs...)
	}
	out = out[:0]
	for _, c := range cs {
		if len(out) >= m {
			break
		}
		v := h.st.vec(c.id)
		good := true
		for _, r := range out {
			if h.dist(v, r.id) < c.d {
				good = false
				break
			}
		}
		if good {
			out = append(out, c)
		}
	}
	return out
}

// greedy walks from ep at level from down to level to+1, at each level
// moving to the nearest neighbour while that improves, and returns the last
// node. Tombstones are walked through.
func (h *HNSW) greedy(q []float32, ep int32, from, to int) int32 {
	cur, dcur := ep, h.dist(q, ep)
	for l := from; l > to; l-- {
		for changed := true; changed; {
			changed = false
			for _, e := range h.links[cur][l] {
				if d := h.dist(q, e); d < dcur {
					cur, dcur, changed = e, d, true
				}
			}
		}
	}
	return cur
}

// searchLayer is the paper's Algorithm 2: a best-first search from eps at
// level l keeping the ef nearest live nodes. Tombstones are expanded but
// never kept. It leaves the result in sc.list, nearest first.
func (h *HNSW) searchLayer(q []float32, eps []int32, ef, l int, sc *searchScratch) {
	sc.nextGen(h.st.slots())
	dead := h.st.dead
	sc.cands.c, sc.cands.far = sc.cands.c[:0], false
	sc.res.reset(ef)
	for _, ep := range eps {
		if sc.visited[ep] == sc.gen {
			continue
		}
		sc.visited[ep] = sc.gen
		c := cand{h.dist(q, ep), ep}
		sc.cands.push(c)
		if !dead[ep] {
			sc.res.offer(c)
		}
	}
	for len(sc.cands.c) > 0 {
		c := sc.cands.pop()
		if sc.res.full() && c.d > sc.res.worst().d {
			break
		}
		for _, e := range h.links[c.id][l] {
			if sc.visited[e] == sc.gen {
				continue
			}
			sc.visited[e] = sc.gen
			d := h.dist(q, e)
			if !sc.res.full() || d < sc.res.worst().d {
				sc.cands.push(cand{d, e})
				if !dead[e] {
					sc.res.offer(cand{d, e})
				}
			}
		}
	}
	sc.list = sc.res.drain(sc.list[:0])
}

// Search returns up to k live vectors nearest to q (largest dot product),
// best first, from a result set of max(efSearch, k) candidates.
func (h *HNSW) Search(q []float32, k int) ([]Hit, error) {
	if err := h.st.check(q); err != nil {
		return nil, fmt.Errorf("vector: search: %w", err)
	}
	if k <= 0 || h.entry < 0 || len(h.st.live) == 0 {
		return nil, nil
	}
	sc, _ := h.pool.Get().(*searchScratch)
	if sc == nil {
		sc = new(searchScratch)
	}
	defer h.pool.Put(sc)
	cur := h.greedy(q, h.entry, h.top, 0)
	eps := append(sc.picked[:0], cur)
	h.searchLayer(q, eps, max(h.efS, k), 0, sc)
	sc.picked = eps[:0]
	n := min(k, len(sc.list))
	out := make([]Hit, n)
	for i, c := range sc.list[:n] {
		out[i] = Hit{ID: h.st.ids[c.id], Score: -c.d}
	}
	return out, nil
}

// repairAround relinks the live neighbours of the tombstoned node x: every
// live node that x links to and that links back to x gets a new neighbour
// list (see repair). Nodes that link to x without x linking to them keep
// the edge to the tombstone, which searches still walk through, until
// compact.
func (h *HNSW) repairAround(x int32) {
	for l, ls := range h.links[x] {
		for _, n := range ls {
			if !h.st.dead[n] && slices.Contains(h.links[n][l], x) {
				h.repair(n, l)
			}
		}
	}
}

// repair rebuilds n's level-l neighbour list from its live neighbours and
// the live neighbours of its tombstoned neighbours, chosen with the
// heuristic (hnswlib's approach to updating a node's links).
func (h *HNSW) repair(n int32, l int) {
	sc := &h.build
	sc.nextGen(h.st.slots())
	sc.visited[n] = sc.gen
	base := h.st.vec(n)
	cs := sc.list[:0]
	add := func(x int32) {
		if sc.visited[x] != sc.gen && !h.st.dead[x] {
			sc.visited[x] = sc.gen
			cs = append(cs, cand{h.dist(base, x), x})
		}
	}
	for _, x := range h.links[n][l] {
		if !h.st.dead[x] {
			add(x)
			continue
		}
		for _, y := range h.links[x][l] {
			add(y)
		}
	}
	sortCands(cs)
	sc.picked2 = h.selectNeighbours(cs, h.maxLinks(l), sc.picked2)
	h.links[n][l] = idsOf(sc.picked2, h.links[n][l][:0])
	sc.list = cs[:0]
}

// compact relinks every live node away from tombstones, moves the entry
// point off a tombstone, and then compacts the store, renumbering slots.
func (h *HNSW) compact() {
	dead := h.st.dead
	if h.st.nDead > 0 {
		for n := range h.links {
			if dead[n] {
				continue
			}
			for l, ls := range h.links[n] {
				if slices.ContainsFunc(ls, func(x int32) bool { return dead[x] }) {
					h.repair(int32(n), l)
				}
			}
		}
	}
	if h.entry >= 0 && dead[h.entry] {
		h.entry, h.top = -1, 0
		for n, lv := range h.level {
			if !dead[n] && (h.entry < 0 || int(lv) > h.top) {
				h.entry, h.top = int32(n), int(lv)
			}
		}
	}
	remap := h.st.compact()
	n := int32(0)
	for old, to := range remap {
		if to < 0 {
			continue
		}
		ls := h.links[old]
		for _, l := range ls {
			for i, x := range l {
				l[i] = remap[x]
			}
		}
		h.links[to], h.level[to] = ls, h.level[old]
		n++
	}
	clear(h.links[n:])
	h.links, h.level = h.links[:n], h.level[:n]
	if h.entry >= 0 {
		h.entry = remap[h.entry]
	}
}
