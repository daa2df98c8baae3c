package kernels

import (
	"math/rand/v2"
	"testing"
)

// BenchmarkAttendDecode times one decode step's attention for SmolLM2-135M's
// shape (9 query heads, 3 KV heads of 64) over 2,048 keys in each of 30
// layers (94 MB of f32 keys and values, more than the caches hold), all
// heads of each KV head in one call on one thread.
func BenchmarkAttendDecode(b *testing.B) {
	sh := AttnShape{Heads: 9, KVHeads: 3, HeadDim: 64}
	const nKeys, layers = 2048, 30
	rng := rand.New(rand.NewPCG(1, 2))
	keys := make([][]float32, layers)
	vals := make([][]float32, layers)
	for l := range keys {
		keys[l] = randomActs(rng, nKeys, sh.KVDim())
		vals[l] = randomActs(rng, nKeys, sh.KVDim())
	}
	pos := make([]int32, nKeys)
	for i := range pos {
		pos[i] = int32(i)
	}
	q := randomActs(rng, 1, sh.QDim())
	out := make([]float32, sh.QDim())
	var s AttnScratch
	b.ResetTimer()
	for range b.N {
		for l := range layers {
			for kvh := range sh.KVHeads {
				Attend(out, q, keys[l], vals[l], pos, nKeys-1, sh, kvh, nil, &s)
			}
		}
	}
}
