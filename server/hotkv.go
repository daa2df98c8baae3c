package server

import (
	"container/list"
	"sync"

	"github.com/blendrag/blendrag/blend"
)

// DefaultHotKVBytes is Config.HotKVBytes's default: the host RAM the hot tier
// may hold (about 20 chunks of 256 tokens of SmolLM2-135M as fp32 K and V).
const DefaultHotKVBytes = 256 << 20

// hotKV is the hot tier of chunk KV: the decoded K and V of the most
// recently used chunks, kept in host RAM up to a byte budget (least recently
// used first out), so that a question over chunks asked about before skips
// the store's read and decode. Entries are keyed by chunk id, which names
// the chunk's text (a SHA-256), under the engine's one model, prefix and
// codec — the same bytes the store would return. Safe for concurrent use.
type hotKV struct {
	mu     sync.Mutex
	budget int64
	used   int64
	order  *list.List // of *hotEntry, most recently used first
	byID   map[string]*list.Element
}

// hotEntry is one chunk's decoded KV: k[l], v[l] are layer l's
// [rows × KVDim] slices, shared read-only with the fusions that use them.
type hotEntry struct {
	id    string
	k, v  [][]float32
	bytes int64
}

// newHotKV returns a hot tier of budget bytes (≤ 0: off, every lookup
// misses).
func newHotKV(budget int64) *hotKV {
	return &hotKV{budget: budget, order: list.New(), byID: map[string]*list.Element{}}
}

// get returns chunk id's entry and marks it used, or nil.
func (h *hotKV) get(id string) *hotEntry {
	h.mu.Lock()
	defer h.mu.Unlock()
	el, ok := h.byID[id]
	if !ok {
		return nil
	}
	h.order.MoveToFront(el)
	return el.Value.(*hotEntry)
}

// put adds chunk id's layers (which the caller no longer modifies),
// evicting the least recently used entries to stay within the budget. A
// chunk larger than the whole budget is not kept.
func (h *hotKV) put(id string, k, v [][]float32) {
	var bytes int64
	for l := range k {
		bytes += int64(len(k[l])+len(v[l])) * 4
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if bytes > h.budget {
		return
	}
	if el, ok := h.byID[id]; ok {
		h.order.MoveToFront(el)
		return
	}
	for h.used+bytes > h.budget {
		last := h.order.Back()
		e := last.Value.(*hotEntry)
		h.order.Remove(last)
		delete(h.byID, e.id)
		h.used -= e.bytes
	}
	h.byID[id] = h.order.PushFront(&hotEntry{id: id, k: k, v: v, bytes: bytes})
	h.used += bytes
}

// size returns the entries held and their bytes.
func (h *hotKV) size() (int, int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.order.Len(), h.used
}

// hotSource serves a fusion's chunks, in prompt order, from the hot tier
// where it holds them and from cold (a store Loader over the others, in the
// same order) otherwise, keeping the cold chunks' layers as they stream by
// so that keep can add them to the tier once the fusion has read them all.
type hotSource struct {
	hot     []*hotEntry // nil: cold
	cold    blend.Source
	coldIdx []int // prompt indices of the cold chunks, in order
	rec     [][2][][]float32
	layers  int // layers served so far
}

func newHotSource(hot []*hotEntry, cold blend.Source) *hotSource {
	s := &hotSource{hot: hot, cold: cold}
	for i, e := range hot {
		if e == nil {
			s.coldIdx = append(s.coldIdx, i)
		}
	}
	s.rec = make([][2][][]float32, len(s.coldIdx))
	return s
}

// LoadLayer implements blend.Source.
func (s *hotSource) LoadLayer(l int) (k, v [][]float32, err error) {
	k, v = make([][]float32, len(s.hot)), make([][]float32, len(s.hot))
	for i, e := range s.hot {
		if e != nil {
			k[i], v[i] = e.k[l], e.v[l]
		}
	}
	if len(s.coldIdx) > 0 {
		ck, cv, err := s.cold.LoadLayer(l)
		if err != nil {
			return nil, nil, err
		}
		for j, i := range s.coldIdx {
			k[i], v[i] = ck[j], cv[j]
			s.rec[j][0] = append(s.rec[j][0], ck[j])
			s.rec[j][1] = append(s.rec[j][1], cv[j])
		}
	}
	s.layers = l + 1
	return k, v, nil
}

// coldRows is the number of rows of seg's chunks that came from cold.
func (s *hotSource) coldRows(seg blend.Segments) int {
	n := 0
	for _, i := range s.coldIdx {
		n += len(seg.Chunks[i])
	}
	return n
}

// keep adds the cold chunks to the tier when all layers of them were read.
func (s *hotSource) keep(h *hotKV, ids []string, layers int) {
	if s.layers != layers {
		return
	}
	for j, i := range s.coldIdx {
		h.put(ids[i], s.rec[j][0], s.rec[j][1])
	}
}
