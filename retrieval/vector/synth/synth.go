// Package synth generates synthetic clustered unit vectors for testing and
// benchmarking vector search: real sentence embeddings are clustered by
// topic, and uniformly random high-dimensional vectors are not (every pair
// is nearly orthogonal), so recall measured on the latter says little.
package synth

import (
	"math"
	"math/rand/v2"
)

// Clustered returns n unit vectors of dimension dim drawn around the given
// number of random unit centres: each vector is normalize(c + spread·g)
// where c is a random centre and g a Gaussian vector of expected length 1.
// With spread 1 a vector's cosine with its centre is about 0.7. The same
// (n, dim, clusters, spread, seed) always gives the same vectors, and the
// first n of a larger call equal a smaller call's only when the other
// arguments match.
func Clustered(n, dim, clusters int, spread float64, seed uint64) [][]float32 {
	rng := rand.New(rand.NewPCG(seed, 1))
	centres := make([][]float64, max(clusters, 1))
	for i := range centres {
		c := make([]float64, dim)
		for j := range c {
			c[j] = rng.NormFloat64()
		}
		normalize64(c)
		centres[i] = c
	}
	out := make([][]float32, n)
	sd := spread / math.Sqrt(float64(dim))
	x := make([]float64, dim)
	for i := range out {
		c := centres[rng.IntN(len(centres))]
		for j := range x {
			x[j] = c[j] + sd*rng.NormFloat64()
		}
		normalize64(x)
		v := make([]float32, dim)
		for j := range v {
			v[j] = float32(x[j])
		}
		out[i] = v
	}
	return out
}

func normalize64(x []float64) {
	var s float64
	for _, v := range x {
		s += v * v
	}
	if s == 0 {
		return
	}
	s = 1 / math.Sqrt(s)
	for i := range x {
		x[i] *= s
	}
}
