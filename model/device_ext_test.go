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

// TestCPULayerPassIsPassBitwise: the CPU backend's LayerPass runs Pass's
// steps unchanged (CacheBlend's order: QKV, selective WriteKV, Keep,
// AttendMLP), and turns Pass's panics on bad indices into errors.
func TestCPULayerPassIsPassBitwise(t *testing.T) {
	m := modeltest.New(t, modeltest.Spec{Layers: 2, Dim: 64, Heads: 4, KVHeads: 2, FFN: 128, Seed: 8, Weights: kernels.Q8_0})
	b, err := m.OpenBackend("cpu")
	if err != nil {
		t.Fatal(err)
	}
	tokens := make([]int32, 30)
	for i := range tokens {
		tokens[i] = int32((i*17 + 1) % m.Config.Vocab)
	}
	base := model.NewKV(m.Config)
	if _, err := m.Forward(base, tokens, model.Positions(0, len(tokens)), false); err != nil {
		t.Fatal(err)
	}
	rows := []int{10, 11, 12, 20, 25, 29}
	sel := []int{1, 4, 5}
	wantKV, gotKV := base.Slice(0, base.Len()), base.Slice(0, base.Len())
	p, err := m.NewPass(wantKV, rows)
	if err != nil {
		t.Fatal(err)
	}
	lp, err := b.NewPass(gotKV, rows)
	if err != nil {
		t.Fatal(err)
	}
	for l := range m.Layers {
		p.QKV(l)
		if err := lp.QKV(l); err != nil {
			t.Fatal(err)
		}
		if !bitsEqual(lp.FreshV(), p.V[:p.N()*m.Config.KVDim()]) || !bitsEqual(lp.FreshK(), p.K[:p.N()*m.Config.KVDim()]) {
			t.Fatalf("layer %d: fresh K/V differ", l)
		}
		if l == 0 {
			p.WriteKV(l, sel)
			p.Keep(sel)
			if err := lp.WriteKV(l, sel); err != nil {
				t.Fatal(err)
			}
			if err := lp.Keep(sel); err != nil {
				t.Fatal(err)
			}
		} else {
			p.WriteKV(l, nil)
			if err := lp.WriteKV(l, nil); err != nil {
				t.Fatal(err)
			}
		}
		if err := p.AttendMLP(l); err != nil {
			t.Fatal(err)
		}
		if err := lp.AttendMLP(l); err != nil {
			t.Fatal(err)
		}
	}
	want, got := make([]float32, m.Config.Vocab), make([]float32, m.Config.Vocab)
	p.Logits(want, []int{p.N() - 1})
	if err := lp.Logits(got, []int{lp.N() - 1}); err != nil {
		t.Fatal(err)
	}
	if !bitsEqual(got, want) || !slices.Equal(lp.Rows(), p.Rows) {
		t.Fatal("LayerPass logits or rows differ from Pass's")
	}
	for l := range wantKV.K {
		if !bitsEqual(gotKV.K[l], wantKV.K[l]) || !bitsEqual(gotKV.V[l], wantKV.V[l]) {
			t.Fatalf("layer %d cache differs", l)
		}
	}
	for name, err := range map[string]error{
		"Keep not ascending":      lp.Keep([]int{1, 0}),
		"Keep out of range":       lp.Keep([]int{lp.N()}),
		"WriteKV out of range":    lp.WriteKV(0, []int{-1}),
		"Logits wrong dst length": lp.Logits(make([]float32, 3), []int{0}),
		"QKV layer out of range":  lp.QKV(len(m.Layers)),
	} {
		if err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
