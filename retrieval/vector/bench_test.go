package vector

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/blendrag/blendrag/retrieval/vector/synth"
)

var (
	benchN   = flag.Int("vector.n", 100_000, "BenchmarkHNSWRecall: number of vectors")
	benchQ   = flag.Int("vector.queries", 200, "BenchmarkHNSWRecall: number of queries")
	benchM   = flag.Int("vector.m", 16, "BenchmarkHNSWRecall: HNSW M")
	benchEfC = flag.Int("vector.efc", 200, "BenchmarkHNSWRecall: HNSW efConstruction")
)

// hnswReport is BenchmarkHNSWRecall's JSON output.
type hnswReport struct {
	N          int         `json:"n"`
	Dim        int         `json:"dim"`
	M          int         `json:"M"`
	EfC        int         `json:"efConstruction"`
	BuildS     float64     `json:"build_s"`
	Exact1Ms   float64     `json:"exact_ms"`
	Exact2Ms   float64     `json:"exact_2threads_ms"`
	EfSearch   int         `json:"efSearch"`
	Recall10   float64     `json:"recall@10"`
	HNSWMs     float64     `json:"hnsw_ms"`
	Speedup    float64     `json:"speedup"`
	EfSweep    []efPoint   `json:"ef_sweep"`
	Clustering clusterInfo `json:"data"`
}

type efPoint struct {
	Ef       int     `json:"efSearch"`
	Recall10 float64 `json:"recall@10"`
	Ms       float64 `json:"hnsw_ms"`
}

type clusterInfo struct {
	Clusters int     `json:"clusters"`
	Spread   float64 `json:"spread"`
	Seed     uint64  `json:"seed"`
}

// BenchmarkHNSWRecall builds an HNSW graph over n clustered 384-d unit
// vectors (synth.Clustered, 100 clusters, spread 1) and measures recall@10
// against exact search and the per-query latency of both, printing one JSON
// object. It runs the measurement once per call, so run it with -benchtime 1x:
//
//	go test -run '^$' -bench BenchmarkHNSWRecall -benchtime 1x -timeout 60m ./retrieval/vector/ [-args -vector.n 20000]
func BenchmarkHNSWRecall(b *testing.B) {
	const dim, clusters, spread, seed = 384, 100, 1.0, 42
	n, nq := *benchN, *benchQ
	all := synth.Clustered(n+nq, dim, clusters, spread, seed)
	vecs, queries := all[:n], all[n:]
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("c%d", i)
	}
	rep := hnswReport{N: n, Dim: dim, M: *benchM, EfC: *benchEfC, Clustering: clusterInfo{clusters, spread, seed}}

	var truth [][]Hit
	for _, threads := range []int{1, 2} {
		e, err := NewExact(dim, threads)
		if err != nil {
			b.Fatal(err)
		}
		for i, v := range vecs {
			e.Add(ids[i], v)
		}
		truth = truth[:0]
		start := time.Now()
		for _, q := range queries {
			hits, _ := e.Search(q, 10)
			truth = append(truth, hits)
		}
		ms := msPerQuery(start, nq)
		if threads == 1 {
			rep.Exact1Ms = ms
		} else {
			rep.Exact2Ms = ms
		}
	}

	h, err := NewHNSW(dim, *benchM, *benchEfC, 64, 1)
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	for i, v := range vecs {
		h.Add(ids[i], v)
	}
	rep.BuildS = time.Since(start).Seconds()

	for _, ef := range []int{10, 16, 32, 64, 100, 128, 200, 256} {
		h.SetEfSearch(ef)
		var hit int
		start := time.Now()
		for qi, q := range queries {
			got, _ := h.Search(q, 10)
			want := map[string]bool{}
			for _, w := range truth[qi] {
				want[w.ID] = true
			}
			for _, g := range got {
				if want[g.ID] {
					hit++
				}
			}
		}
		p := efPoint{Ef: ef, Ms: msPerQuery(start, nq), Recall10: float64(hit) / float64(10*nq)}
		rep.EfSweep = append(rep.EfSweep, p)
		if ef == 64 {
			rep.EfSearch, rep.Recall10, rep.HNSWMs = ef, p.Recall10, p.Ms
			rep.Speedup = rep.Exact1Ms / p.Ms
		}
	}
	b.ReportMetric(rep.Recall10, "recall@10")
	b.ReportMetric(rep.Speedup, "speedup")
	out, _ := json.MarshalIndent(rep, "", "  ")
	fmt.Fprintln(os.Stdout, string(out))
}

func msPerQuery(start time.Time, nq int) float64 {
	return float64(time.Since(start).Microseconds()) / 1000 / float64(nq)
}
