package vector

import (
	"testing"
)

func newTestHNSW(t *testing.T, ids []string, vecs [][]float32) *HNSW {
	t.Helper()
	h, err := NewHNSW(384, 16, 100, 64, 1)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range vecs {
		if err := h.Add(ids[i], v); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

func TestHNSWRecallAtLeast95(t *testing.T) {
	ids, vecs, queries := dataset(graphSize(2000), 100, 7)
	h := newTestHNSW(t, ids, vecs)
	if r := recall(t, h.Search, ids, vecs, queries, 10, nil); r < 0.95 {
		t.Fatalf("recall@10 = %.3f, want ≥ 0.95", r)
	} else {
		t.Logf("recall@10 = %.3f", r)
	}
}
