package model_test

import (
	"math"
	"slices"
	"testing"

	"github.com/blendrag/blendrag/kernels"
	"github.com/blendrag/blendrag/model"
	"github.com/blendrag/blendrag/model/modeltest"
)

// TestCPUBackendForwardIsModelForwardBitwise: the CPU backend's Forward
// (the append loop shared by every backend) returns exactly Model.Forward's
// logits and cache, for a prompt longer than one prefill batch, for
// non-ascending positions (computed together), and leaves the cache as it
// was on error.
func TestCPUBackendForwardIsModelForwardBitwise(t *testing.T) {
	m := modeltest.New(t, modeltest.Spec{Layers: 2, Dim: 64, Heads: 4, KVHeads: 2, FFN: 128, Seed: 7, Weights: kernels.Q4_1})
	b, err := m.OpenBackend("cpu")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	tokens := make([]int32, 300)
	for i := range tokens {
		tokens[i] = int32((i*31 + 7) % m.Config.Vocab)
	}
	wantKV, gotKV := model.NewKV(m.Config), model.NewKV(m.Config)
	for _, step := range []struct {
		tokens, pos []int32
		all         bool
	}{
		{tokens, model.Positions(0, len(tokens)), true},
		{[]int32{9, 10, 11}, []int32{310, 305, 305}, false}, // not ascending, reused position
	} {
		want, err := m.Forward(wantKV, step.tokens, step.pos, step.all)
		if err != nil {
			t.Fatal(err)
		}
		got, err := b.Forward(gotKV, step.tokens, step.pos, step.all)
		if err != nil {
			t.Fatal(err)
		}
		if !bitsEqual(got, want) {
			t.Fatalf("logits of %d tokens differ from Model.Forward", len(step.tokens))
		}
		for l := range wantKV.K {
			if !bitsEqual(gotKV.K[l], wantKV.K[l]) || !bitsEqual(gotKV.V[l], wantKV.V[l]) {
				t.Fatalf("layer %d cache differs from Model.Forward's", l)
			}
		}
	}
	n := gotKV.Len()
	if _, err := b.Forward(gotKV, []int32{1, 2}, []int32{400, int32(m.Config.Context)}, false); err == nil {
		t.Fatal("a position past the context was accepted")
	}
	// A token outside the vocabulary fails after the rows were appended.
	if _, err := b.Forward(gotKV, []int32{1, int32(m.Config.Vocab)}, []int32{400, 401}, false); err == nil {
		t.Fatal("a token outside the vocabulary was accepted")
	}
	if gotKV.Len() != n || !slices.Equal(gotKV.Pos, wantKV.Pos) {
		t.Fatalf("cache changed by a failed Forward: %d rows, want %d", gotKV.Len(), n)
	}
}

func bitsEqual(a, b []float32) bool {
	return slices.EqualFunc(a, b, func(x, y float32) bool { return math.Float32bits(x) == math.Float32bits(y) })
}
