package retrieval

import (
	"maps"
	"math"
	"slices"
	"testing"
)

func TestFuseRRFScoresAreReciprocalRankSums(t *testing.T) {
	lists := map[string][]Hit{
		"bm25":  {{"x", 9.5}, {"y", 7}, {"z", 1}},
		"dense": {{"y", 0.9}, {"w", 0.8}, {"y", 0.1}}, // a later duplicate is ignored
		"cur":   nil,
	}
	got := FuseRRF(0, lists)
	want := []Fused{
		{"y", 1.0/62 + 1.0/61, map[string]int{"bm25": 2, "dense": 1}, map[string]float64{"bm25": 7, "dense": 0.9}},
		{"x", 1.0 / 61, map[string]int{"bm25": 1}, map[string]float64{"bm25": 9.5}},
		{"w", 1.0 / 62, map[string]int{"dense": 2}, map[string]float64{"dense": 0.8}},
		{"z", 1.0 / 63, map[string]int{"bm25": 3}, map[string]float64{"bm25": 1}},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d results, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.ID != w.ID || math.Abs(g.Score-w.Score) > 1e-15 || !maps.Equal(g.Ranks, w.Ranks) || !maps.Equal(g.Scores, w.Scores) {
			t.Errorf("result %d = %+v, want %+v", i, g, w)
		}
	}
	// k = 1: y = 1/3 + 1/2, x = 1/2, w = 1/3, z = 1/4.
	if got := FuseRRF(1, lists); got[0].ID != "y" || math.Abs(got[0].Score-(1.0/3+1.0/2)) > 1e-15 || got[3].Score != 0.25 {
		t.Errorf("k=1: %+v", got)
	}
}

func TestFuseRRFTiesBreakByID(t *testing.T) {
	lists := map[string][]Hit{"a": {{"m", 1}, {"b", 1}}, "b": {{"c", 1}, {"a", 1}}}
	for range 20 { // map order varies between runs; the result must not
		got := FuseRRF(60, lists)
		order := []string{got[0].ID, got[1].ID, got[2].ID, got[3].ID}
		if !slices.Equal(order, []string{"c", "m", "a", "b"}) {
			t.Fatalf("order %v, want [c m a b]", order)
		}
	}
	if got := FuseRRF(60, nil); len(got) != 0 {
		t.Errorf("no lists: %v", got)
	}
}
