package retrieval

import (
	"cmp"
	"slices"
)

// DefaultRRFK is reciprocal rank fusion's rank offset (Cormack et al. 2009;
// DESIGN.md "Fusion").
const DefaultRRFK = 60

// Fused is one result of reciprocal rank fusion.
type Fused struct {
	ID    string
	Score float64 // Σ over the lists holding ID of 1/(k + rank)
	// Ranks maps each retriever whose list holds ID to ID's 1-based rank there.
	Ranks map[string]int
	// Scores maps each such retriever to its own score for ID.
	Scores map[string]float64
}

// FuseRRF fuses ranked lists (retriever name → hits, best first) by
// reciprocal rank fusion: score(ID) = Σ 1/(k + rank) over the lists holding
// ID, with k ≤ 0 meaning DefaultRRFK. A list's later duplicates of an ID are
// ignored. Results are best first, ties broken by ascending ID; the sums run
// over retrievers in name order, so the output is deterministic.
func FuseRRF(k int, lists map[string][]Hit) []Fused {
	if k <= 0 {
		k = DefaultRRFK
	}
	names := make([]string, 0, len(lists))
	for name := range lists {
		names = append(names, name)
	}
	slices.Sort(names)
	at := make(map[string]int) // ID → index in out
	var out []Fused
	for _, name := range names {
		for r, h := range lists[name] {
			i, ok := at[h.ID]
			if !ok {
				i = len(out)
				at[h.ID] = i
				out = append(out, Fused{ID: h.ID, Ranks: map[string]int{}, Scores: map[string]float64{}})
			}
			f := &out[i]
			if _, dup := f.Ranks[name]; dup {
				continue
			}
			f.Ranks[name] = r + 1
			f.Scores[name] = h.Score
			f.Score += 1 / float64(k+r+1)
		}
	}
	slices.SortFunc(out, func(a, b Fused) int {
		if c := cmp.Compare(b.Score, a.Score); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
	return out
}
