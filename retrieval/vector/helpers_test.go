package vector

import (
	"cmp"
	"fmt"
	"slices"
	"testing"

	"github.com/blendrag/blendrag/retrieval/vector/synth"
)

// graphSize is n for HNSW tests, a quarter of it under the race detector.
func graphSize(n int) int {
	if raceEnabled {
		return n / 4
	}
	return n
}

// dataset returns n clustered 384-d unit vectors with ids "v0".."v<n-1>" and
// nq queries from the same clusters.
func dataset(n, nq int, seed uint64) (ids []string, vecs, queries [][]float32) {
	all := synth.Clustered(n+nq, 384, 50, 1, seed)
	ids = make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("v%d", i)
	}
	return ids, all[:n], all[n:]
}

// bruteForce is the reference: float64 dot products of q with every vector
// whose id is not excluded, top k by score (ties by position).
func bruteForce(ids []string, vecs [][]float32, q []float32, k int, excluded map[string]bool) []string {
	type scored struct {
		i int
		s float64
	}
	var all []scored
	for i, v := range vecs {
		if excluded[ids[i]] {
			continue
		}
		var s float64
		for j := range v {
			s += float64(v[j]) * float64(q[j])
		}
		all = append(all, scored{i, s})
	}
	slices.SortStableFunc(all, func(a, b scored) int { return cmp.Compare(b.s, a.s) })
	var out []string
	for _, x := range all[:min(k, len(all))] {
		out = append(out, ids[x.i])
	}
	return out
}

// recall is |got ∩ want| / |want| averaged over queries.
func recall(t *testing.T, search func(q []float32, k int) ([]Hit, error), ids []string, vecs, queries [][]float32, k int, excluded map[string]bool) float64 {
	t.Helper()
	var sum float64
	for _, q := range queries {
		hits, err := search(q, k)
		if err != nil {
			t.Fatal(err)
		}
		want := bruteForce(ids, vecs, q, k, excluded)
		in := map[string]bool{}
		for _, w := range want {
			in[w] = true
		}
		n := 0
		for _, h := range hits {
			if excluded[h.ID] {
				t.Fatalf("search returned deleted id %s", h.ID)
			}
			if in[h.ID] {
				n++
			}
		}
		sum += float64(n) / float64(len(want))
	}
	return sum / float64(len(queries))
}
