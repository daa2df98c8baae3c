// Command hnswcompare measures the recall@10 of github.com/coder/hnsw
// (v0.6.1) and of blendrag's own HNSW (retrieval/vector) against exact search
// on the same clustered synthetic 384-d unit vectors, across efSearch values,
// and prints one JSON object. It lives in its own module so that the main
// module does not depend on coder/hnsw:
//
//	cd tools/hnswcompare && go run . -n 20000
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"math/rand"
	"os"
	"time"

	"github.com/coder/hnsw"

	"github.com/blendrag/blendrag/retrieval/vector"
	"github.com/blendrag/blendrag/retrieval/vector/synth"
)

// point is one efSearch setting's result.
type point struct {
	Ef       int     `json:"efSearch"`
	Recall10 float64 `json:"recall@10"`
	Ms       float64 `json:"ms_per_query"`
}

// result is one library's measurement.
type result struct {
	Library string  `json:"library"`
	BuildS  float64 `json:"build_s"`
	Sweep   []point `json:"sweep"`
}

func main() {
	n := flag.Int("n", 20000, "number of vectors")
	nq := flag.Int("queries", 200, "number of queries")
	m := flag.Int("m", 16, "M for both graphs")
	efc := flag.Int("efc", 200, "efConstruction for blendrag's HNSW (coder/hnsw has no separate setting)")
	ours := flag.Bool("ours", true, "also measure blendrag's HNSW")
	flag.Parse()
	const dim, clusters, spread, seed = 384, 100, 1.0, 42
	all := synth.Clustered(*n+*nq, dim, clusters, spread, seed)
	vecs, queries := all[:*n], all[*n:]
	efs := []int{10, 20, 50, 100, 200, 400}

	exact, err := vector.NewExact(dim, 2)
	if err != nil {
		log.Fatal(err)
	}
	for i, v := range vecs {
		exact.Add(fmt.Sprint(i), v)
	}
	truth := make([]map[string]bool, len(queries))
	for i, q := range queries {
		hits, err := exact.Search(q, 10)
		if err != nil {
			log.Fatal(err)
		}
		truth[i] = map[string]bool{}
		for _, h := range hits {
			truth[i][h.ID] = true
		}
	}
	recallOf := func(search func(q []float32) []string) (float64, float64) {
		hit := 0
		start := time.Now()
		for i, q := range queries {
			for _, id := range search(q) {
				if truth[i][id] {
					hit++
				}
			}
		}
		ms := float64(time.Since(start).Microseconds()) / 1000 / float64(len(queries))
		return float64(hit) / float64(10*len(queries)), ms
	}

	var out []result

	g := hnsw.NewGraph[string]()
	g.M = *m
	g.Distance = hnsw.CosineDistance
	g.Rng = rand.New(rand.NewSource(1))
	start := time.Now()
	for i, v := range vecs {
		g.Add(hnsw.MakeNode(fmt.Sprint(i), v))
	}
	coder := result{Library: "github.com/coder/hnsw v0.6.1", BuildS: time.Since(start).Seconds()}
	for _, ef := range efs {
		g.EfSearch = ef
		r, ms := recallOf(func(q []float32) []string {
			var ids []string
			for _, nd := range g.Search(q, 10) {
				ids = append(ids, nd.Key)
			}
			return ids
		})
		coder.Sweep = append(coder.Sweep, point{ef, r, ms})
	}
	out = append(out, coder)

	if *ours {
		out = append(out, measureOurs(vecs, *m, *efc, efs, recallOf))
	}

	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(map[string]any{
		"n": *n, "dim": dim, "M": *m, "queries": *nq,
		"data":    map[string]any{"generator": "synth.Clustered", "clusters": clusters, "spread": spread, "seed": seed},
		"results": out,
	}); err != nil {
		log.Fatal(err)
	}
}

// measureOurs builds blendrag's HNSW over vecs and sweeps efSearch.
func measureOurs(vecs [][]float32, m, efc int, efs []int, recallOf func(func([]float32) []string) (float64, float64)) result {
	h, err := vector.NewHNSW(len(vecs[0]), m, efc, 64, 1)
	if err != nil {
		log.Fatal(err)
	}
	start := time.Now()
	for i, v := range vecs {
		h.Add(fmt.Sprint(i), v)
	}
	res := result{Library: fmt.Sprintf("blendrag retrieval/vector HNSW (efConstruction %d)", efc), BuildS: time.Since(start).Seconds()}
	for _, ef := range efs {
		h.SetEfSearch(ef)
		r, ms := recallOf(func(q []float32) []string {
			hits, err := h.Search(q, 10)
			if err != nil {
				log.Fatal(err)
			}
			var ids []string
			for _, x := range hits {
				ids = append(ids, x.ID)
			}
			return ids
		})
		res.Sweep = append(res.Sweep, point{ef, r, ms})
	}
	return res
}
