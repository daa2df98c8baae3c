//go:build cudaemu && cgo

package model_test

import (
	"testing"

	"github.com/blendrag/blendrag/kernels"
	"github.com/blendrag/blendrag/kernels/cuda"
	"github.com/blendrag/blendrag/model"
	"github.com/blendrag/blendrag/model/modeltest"
)

// TestCUDAChunkTierYieldsDeviceMemory: when the (emulated) GPU's memory
// is full, a pass's own buffers come first — the backend empties its
// chunk tier and frees idle device copies of other caches, and the
// prefill runs with logits equal to the CPU's; when nothing is left to
// free, the call fails with an error, and the backend works again once
// memory is back.
func TestCUDAChunkTierYieldsDeviceMemory(t *testing.T) {
	m := modeltest.New(t, modeltest.Spec{Name: "f32", Layers: 2, Dim: 64, Heads: 4, KVHeads: 2, FFN: 96, Seed: 3, Weights: kernels.F32})
	gpu := openCUDA(t, m)
	tier := gpu.(model.ChunkTier)
	defer cuda.SetEmulatedMemoryLimit(0)
	c := m.Config

	// Fill the tier: 40 chunks of 100 rows in both layers.
	held := model.NewKV(c)
	held.Grow(make([]int32, 100), model.Positions(0, 100))
	k, v := make([]float32, 100*c.KVDim()), make([]float32, 100*c.KVDim())
	for i := range k {
		k[i], v[i] = float32(i%7)/7, float32(i%5)/5
	}
	for i := range 40 {
		for l := range c.Layers {
			if _, err := tier.PlaceChunk(held, l, 0, string(rune('A'+i)), k, v, 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	if s := tier.ChunkTierStats(); s.Entries != 40*c.Layers {
		t.Fatalf("tier holds %d entries, want %d", s.Entries, 40*c.Layers)
	}

	tokens := make([]int32, 80)
	for i := range tokens {
		tokens[i] = int32((i*31 + 7) % c.Vocab)
	}
	pos := model.Positions(0, len(tokens))
	want, err := m.Forward(model.NewKV(c), tokens, pos, false)
	if err != nil {
		t.Fatal(err)
	}
	cuda.SetEmulatedMemoryLimit(cuda.EmulatedMemoryInUse() + 64<<10) // 64 KiB free: too little for the pass
	got, err := gpu.Forward(model.NewKV(c), tokens, pos, false)
	if err != nil {
		t.Fatalf("prefill with a full device: %v", err)
	}
	compareLogits(t, "prefill after the tier yielded", got, want, c.Vocab, 1e-4)
	if s := tier.ChunkTierStats(); s.Entries != 0 || s.Bytes != 0 {
		t.Errorf("after yielding, the tier holds %d entries (%d bytes)", s.Entries, s.Bytes)
	}

	cuda.SetEmulatedMemoryLimit(cuda.EmulatedMemoryInUse()) // no room at all
	long := make([]int32, 300)
	for i := range long {
		long[i] = tokens[i%len(tokens)]
	}
	if _, err := gpu.Forward(model.NewKV(c), long, model.Positions(0, len(long)), false); err == nil {
		t.Fatal("a prefill that cannot fit the device succeeded")
	} else {
		t.Logf("with no device memory left: %v", err)
	}
	cuda.SetEmulatedMemoryLimit(0)
	if got, err = gpu.Forward(model.NewKV(c), tokens, pos, false); err != nil {
		t.Fatalf("after memory came back: %v", err)
	}
	compareLogits(t, "prefill after memory came back", got, want, c.Vocab, 1e-4)
}
