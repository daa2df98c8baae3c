package vector

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/blendrag/blendrag/retrieval/vector/synth"
)

var (
	benchN     = flag.Int("vector.n", 100_000, "BenchmarkHNSWRecall: number of vectors")
	benchQ     = flag.Int("vector.queries", 200, "BenchmarkHNSWRecall: number of queries")
	benchM     = flag.Int("vector.m", 16, "BenchmarkHNSWRecall: HNSW M")
	benchEfC   = flag.Int("vector.efc", 200, "BenchmarkHNSWRecall: HNSW efConstruction")
	benchEf    = flag.Int("vector.ef", 64, "BenchmarkHNSWRecall: the efSearch whose figures head the report")
	benchCache = flag.String("vector.cache", "", "BenchmarkHNSWRecall: file to save the built index to and load it from")
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

// BenchmarkHNSWRecall builds an HNSW-backed Index over n clustered 384-d
// unit vectors (synth.Clustered, 100 clusters, spread 1) and measures
// recall@10 against exact search and the per-query latency of both,
// printing one JSON object. Latencies are timed interleaved (exact query,
// then HNSW query, per query, three rounds, the fastest round per query
// kept) so that load from other processes hits both alike. With
// -vector.cache FILE the built index is saved there and reused by later
// runs. It runs the measurement once per call, so use -benchtime 1x:
//
//	go test -run '^$' -bench BenchmarkHNSWRecall -benchtime 1x -timeout 60m ./retrieval/vector/ [-args -vector.n 20000 -vector.cache /tmp/h.idx]
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

	exact := make([]*Exact, 2)
	for t := range exact {
		e, err := NewExact(dim, t+1)
		if err != nil {
			b.Fatal(err)
		}
		for i, v := range vecs {
			e.Add(ids[i], v)
		}
		exact[t] = e
	}
	truth := make([]map[string]bool, nq)
	for qi, q := range queries {
		hits, _ := exact[0].Search(q, 10)
		truth[qi] = map[string]bool{}
		for _, h := range hits {
			truth[qi][h.ID] = true
		}
	}

	ix := buildBenchIndex(b, ids, vecs, &rep)
	for _, ef := range []int{10, 16, 32, 64, 100, 128, 200, 256} {
		ix.hn.SetEfSearch(ef)
		var hit int
		for qi, q := range queries {
			got, _ := ix.Search(q, 10)
			for _, g := range got {
				if truth[qi][g.ID] {
					hit++
				}
			}
		}
		ex, hn := interleaved(queries, exact[0].Search, ix.Search)
		p := efPoint{Ef: ef, Ms: hn, Recall10: float64(hit) / float64(10*nq)}
		rep.EfSweep = append(rep.EfSweep, p)
		if ef == *benchEf {
			rep.EfSearch, rep.Recall10, rep.HNSWMs, rep.Exact1Ms = ef, p.Recall10, p.Ms, ex
			rep.Speedup = ex / p.Ms
		}
	}
	_, rep.Exact2Ms = interleaved(queries, exact[0].Search, exact[1].Search)
	b.ReportMetric(rep.Recall10, "recall@10")
	b.ReportMetric(rep.Speedup, "speedup")
	out, _ := json.MarshalIndent(rep, "", "  ")
	fmt.Fprintln(os.Stdout, string(out))
}

// buildBenchIndex loads the cached index or builds one (and caches it).
func buildBenchIndex(b *testing.B, ids []string, vecs [][]float32, rep *hnswReport) *Index {
	path := *benchCache
	if path == "" {
		path = filepath.Join(b.TempDir(), "bench.idx")
	}
	opt := Options{HNSWThreshold: 1, M: *benchM, EfConstruction: *benchEfC}
	ix, err := Open(path, rep.Dim, opt)
	if err != nil {
		b.Fatal(err)
	}
	if ix.Len() == len(ids) && ix.UsesHNSW() {
		rep.BuildS = -1 // loaded from the cache
		return ix
	}
	start := time.Now()
	for i, v := range vecs {
		if err := ix.Add(ids[i], v); err != nil {
			b.Fatal(err)
		}
	}
	rep.BuildS = time.Since(start).Seconds()
	if *benchCache != "" {
		if err := ix.Save(); err != nil {
			b.Fatal(err)
		}
	}
	return ix
}

// interleaved times a and b on every query, alternating, over three rounds,
// and returns each one's mean over queries of its fastest round, in ms.
func interleaved(queries [][]float32, a, b func([]float32, int) ([]Hit, error)) (float64, float64) {
	const rounds = 3
	bestA := make([]time.Duration, len(queries))
	bestB := make([]time.Duration, len(queries))
	for r := range rounds {
		for i, q := range queries {
			t0 := time.Now()
			a(q, 10)
			t1 := time.Now()
			b(q, 10)
			t2 := time.Now()
			if da := t1.Sub(t0); r == 0 || da < bestA[i] {
				bestA[i] = da
			}
			if db := t2.Sub(t1); r == 0 || db < bestB[i] {
				bestB[i] = db
			}
		}
	}
	mean := func(ds []time.Duration) float64 {
		var s time.Duration
		for _, d := range ds {
			s += d
		}
		return float64(s.Microseconds()) / 1000 / float64(len(ds))
	}
	return mean(bestA), mean(bestB)
}

// BenchmarkExactSearch times one top-10 exact search over 20k and 100k
// clustered 384-d vectors with one and two worker goroutines:
//
//	go test -run '^$' -bench BenchmarkExactSearch -benchtime 200x ./retrieval/vector/
func BenchmarkExactSearch(b *testing.B) {
	const dim = 384
	for _, n := range []int{20_000, 100_000} {
		all := synth.Clustered(n+64, dim, 100, 1, 42)
		for _, threads := range []int{1, 2} {
			b.Run(fmt.Sprintf("n=%d/threads=%d", n, threads), func(b *testing.B) {
				e, err := NewExact(dim, threads)
				if err != nil {
					b.Fatal(err)
				}
				for i, v := range all[:n] {
					e.Add(fmt.Sprint(i), v)
				}
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					if _, err := e.Search(all[n+i%64], 10); err != nil {
						b.Fatal(err)
					}
					i++
				}
			})
		}
	}
}

// BenchmarkHNSWSearch times one top-10 HNSW search (efSearch 100) over 10k
// clustered vectors and reports its allocations (the result slice only).
func BenchmarkHNSWSearch(b *testing.B) {
	all := synth.Clustered(10_064, 384, 100, 1, 42)
	h, err := NewHNSW(384, 16, 100, 100, 1)
	if err != nil {
		b.Fatal(err)
	}
	for i, v := range all[:10_000] {
		h.Add(fmt.Sprint(i), v)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		h.Search(all[10_000+i%64], 10)
		i++
	}
}
