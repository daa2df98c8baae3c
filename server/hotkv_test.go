package server

import (
	"slices"
	"testing"
)

// chunkLayers returns layers×[rows×2] K and V filled with tag.
func chunkLayers(layers, rows int, tag float32) (k, v [][]float32) {
	for range layers {
		kl, vl := make([]float32, rows*2), make([]float32, rows*2)
		for i := range kl {
			kl[i], vl[i] = tag, -tag
		}
		k, v = append(k, kl), append(v, vl)
	}
	return k, v
}

// putChunk puts a chunk of layers×rows filled with tag into h.
func putChunk(h *hotKV, id string, layers, rows int, tag float32) {
	k, v := chunkLayers(layers, rows, tag)
	h.put(id, k, v)
}

// TestHotKVEvictsLeastRecentlyUsedWithinBudget: entries cost their bytes
// (4 per float of K and V); adding past the budget drops the least recently
// used (a get counts as a use); a chunk bigger than the budget is not kept;
// a negative budget keeps nothing.
func TestHotKVEvictsLeastRecentlyUsedWithinBudget(t *testing.T) {
	// One chunk of 2 layers × 3 rows: 2·(6+6)·4 = 96 bytes.
	h := newHotKV(3 * 96)
	for _, id := range []string{"a", "b", "c"} {
		putChunk(h, id, 2, 3, 1)
	}
	if n, b := h.size(); n != 3 || b != 3*96 {
		t.Fatalf("size %d chunks, %d bytes; want 3, 288", n, b)
	}
	h.get("a") // b is now the least recently used
	putChunk(h, "d", 2, 3, 1)
	for id, want := range map[string]bool{"a": true, "b": false, "c": true, "d": true} {
		if got := h.get(id) != nil; got != want {
			t.Errorf("after evicting: %q held = %v, want %v", id, got, want)
		}
	}
	putChunk(h, "huge", 2, 20, 1)
	if h.get("huge") != nil {
		t.Error("a chunk over the whole budget was kept")
	}
	off := newHotKV(-1)
	putChunk(off, "a", 2, 3, 1)
	if off.get("a") != nil {
		t.Error("a disabled hot tier kept a chunk")
	}
}

// TestHotSourceMergesHotAndColdChunksInPromptOrder: chunks 0 and 2 from RAM,
// 1 and 3 from the cold source (in its own order), each layer in prompt
// order; after every layer was served the cold chunks join the tier.
func TestHotSourceMergesHotAndColdChunksInPromptOrder(t *testing.T) {
	const layers = 2
	h := newHotKV(1 << 20)
	ids := []string{"h0", "c1", "h2", "c3"}
	putChunk(h, "h0", layers, 2, 10)
	putChunk(h, "h2", layers, 2, 12)
	k1, v1 := chunkLayers(layers, 3, 1)
	k3, v3 := chunkLayers(layers, 1, 3)
	src := newHotSource([]*hotEntry{h.get("h0"), nil, h.get("h2"), nil}, coldLayers{{k1, v1}, {k3, v3}})
	for l := range layers {
		k, v, err := src.LoadLayer(l)
		if err != nil {
			t.Fatal(err)
		}
		want := []float32{10, 1, 12, 3}
		for i := range ids {
			if len(k[i]) == 0 || k[i][0] != want[i] || v[i][0] != -want[i] {
				t.Fatalf("layer %d chunk %d: k %v v %v, want %v", l, i, k[i], v[i], want[i])
			}
		}
	}
	src.keep(h, ids, layers)
	e := h.get("c1")
	if e == nil || len(e.k) != layers || !slices.Equal(e.k[1], k1[1]) {
		t.Fatalf("cold chunk c1 not kept whole: %+v", e)
	}
	// A fusion that stopped early keeps nothing.
	h2 := newHotKV(1 << 20)
	part := newHotSource([]*hotEntry{nil}, coldLayers{{k1, v1}})
	if _, _, err := part.LoadLayer(0); err != nil {
		t.Fatal(err)
	}
	part.keep(h2, []string{"c1"}, layers)
	if h2.get("c1") != nil {
		t.Error("a chunk read for only some layers was kept")
	}
}

// coldLayers is a blend.Source over whole chunks given as {k, v} layer lists.
type coldLayers [][2][][]float32

func (c coldLayers) LoadLayer(l int) (k, v [][]float32, err error) {
	for _, ch := range c {
		k, v = append(k, ch[0][l]), append(v, ch[1][l])
	}
	return k, v, nil
}
