package model_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/blendrag/blendrag/kernels"
	"github.com/blendrag/blendrag/model"
	"github.com/blendrag/blendrag/model/modeltest"
)

func randTokens(r *rand.Rand, n, vocab int) []int32 {
	t := make([]int32, n)
	for i := range t {
		t[i] = int32(r.IntN(vocab))
	}
	return t
}

func maxAbsDiff(a, b []float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	var m float64
	for i := range a {
		m = max(m, math.Abs(float64(a[i])-float64(b[i])))
	}
	return m
}

func prefill(t *testing.T, m *model.Model, tokens []int32, start int) (*model.KV, []float32) {
	t.Helper()
	kv := model.NewKV(m.Config)
	logits, err := m.Forward(kv, tokens, model.Positions(start, len(tokens)), true)
	if err != nil {
		t.Fatal(err)
	}
	return kv, logits
}

func specs() []modeltest.Spec {
	return []modeltest.Spec{
		{Name: "f32-mha", Layers: 2, Dim: 64, Heads: 4, KVHeads: 4, FFN: 96, Seed: 1, Weights: kernels.F32},
		{Name: "q4_1-gqa", Layers: 3, Dim: 64, Heads: 4, KVHeads: 2, FFN: 128, Seed: 2, Weights: kernels.Q4_1},
		{Name: "q8_0-gqa3", Layers: 2, Dim: 96, Heads: 6, KVHeads: 2, FFN: 160, Seed: 3, Weights: kernels.Q8_0},
	}
}

// A row's logits are bitwise the same whether it is computed alone (decode,
// one row at a time) or among 64 rows in one batch.
func TestForwardBatchInvariantRowAloneEqualsAmong64(t *testing.T) {
	for _, sp := range specs() {
		t.Run(sp.Name, func(t *testing.T) {
			m := modeltest.New(t, sp)
			toks := randTokens(rand.New(rand.NewPCG(7, 7)), 64, m.Config.Vocab)
			_, batch := prefill(t, m, toks, 0)
			kv := model.NewKV(m.Config)
			for i, tok := range toks {
				one, err := m.Forward(kv, []int32{tok}, []int32{int32(i)}, false)
				if err != nil {
					t.Fatal(err)
				}
				want := batch[i*m.Config.Vocab : (i+1)*m.Config.Vocab]
				if d := maxAbsDiff(one, want); d != 0 {
					t.Fatalf("row %d: alone vs in batch differ by %g", i, d)
				}
			}
		})
	}
}

// Decoding over a context of several attention key blocks splits attention
// into per-block tasks that are merged afterwards (kernels.AttendBlock); a
// decoded row's logits are still bitwise its row of one batched prefill.
func TestDecodeOverKeyBlocksEqualsBatchedPrefill(t *testing.T) {
	for _, sp := range specs() {
		t.Run(sp.Name, func(t *testing.T) {
			m := modeltest.New(t, sp)
			const n, first = 3*kernels.AttnBlockKeys - 40, 2*kernels.AttnBlockKeys + 10
			toks := randTokens(rand.New(rand.NewPCG(10, 10)), n, m.Config.Vocab)
			_, batch := prefill(t, m, toks, 0)
			kv, _ := prefill(t, m, toks[:first], 0)
			for i := first; i < n; i++ {
				one, err := m.Forward(kv, toks[i:i+1], []int32{int32(i)}, false)
				if err != nil {
					t.Fatal(err)
				}
				if d := maxAbsDiff(one, batch[i*m.Config.Vocab:(i+1)*m.Config.Vocab]); d != 0 {
					t.Fatalf("row %d: decoded vs batched prefill differ by %g", i, d)
				}
			}
		})
	}
}

// Recomputing every row of a cache (whatever it held) is a plain prefill.
func TestRecomputeAllRowsEqualsPrefill(t *testing.T) {
	for _, sp := range specs() {
		t.Run(sp.Name, func(t *testing.T) {
			m := modeltest.New(t, sp)
			r := rand.New(rand.NewPCG(8, 8))
			toks := randTokens(r, 40, m.Config.Vocab)
			kv, want := prefill(t, m, toks, 0)
			// Scramble the cache, then recompute all rows as a subset.
			for l := range kv.K {
				for i := range kv.K[l] {
					kv.K[l][i] = r.Float32()
					kv.V[l][i] = r.Float32()
				}
			}
			rows := make([]int, len(toks))
			for i := range rows {
				rows[i] = i
			}
			got, err := m.Recompute(kv, rows, true)
			if err != nil {
				t.Fatal(err)
			}
			if d := maxAbsDiff(got, want); d != 0 {
				t.Fatalf("recompute-all differs from prefill by %g", d)
			}
		})
	}
}

// Shifting an independently encoded block by Δ positions and then attending
// to it equals encoding it at the new positions (RoPE is relative).
func TestShiftThenAttendEqualsEncodingAtNewPositions(t *testing.T) {
	for _, sp := range specs() {
		t.Run(sp.Name, func(t *testing.T) {
			m := modeltest.New(t, sp)
			r := rand.New(rand.NewPCG(9, 9))
			block := randTokens(r, 24, m.Config.Vocab)
			query := randTokens(r, 5, m.Config.Vocab)
			for _, delta := range []int{1, 17, 300, 1000} {
				shifted, _ := prefill(t, m, block, 3)
				if err := shifted.Shift(0, shifted.Len(), delta, m.Config); err != nil {
					t.Fatal(err)
				}
				direct, _ := prefill(t, m, block, 3+delta)
				for l := range direct.K {
					if d := maxAbsDiff(shifted.K[l], direct.K[l]); d > 2e-4 {
						t.Fatalf("Δ=%d layer %d: shifted keys differ by %g", delta, l, d)
					}
				}
				qpos := model.Positions(3+delta+len(block), len(query))
				a, err := m.Forward(shifted, query, qpos, true)
				if err != nil {
					t.Fatal(err)
				}
				b, err := m.Forward(direct, query, qpos, true)
				if err != nil {
					t.Fatal(err)
				}
				if d := maxAbsDiff(a, b); d > 1e-3 {
					t.Fatalf("Δ=%d: logits after shift differ by %g", delta, d)
				}
			}
		})
	}
}

// Key groups with temperature 1 and LSE scale 1 are plain attention,
// whatever the partition of the keys.
func TestKeyGroupsWithUnitScalesEqualPlainAttention(t *testing.T) {
	for _, sp := range specs() {
		t.Run(sp.Name, func(t *testing.T) {
			m := modeltest.New(t, sp)
			r := rand.New(rand.NewPCG(10, 10))
			ctx := randTokens(r, 30, m.Config.Vocab)
			q := randTokens(r, 4, m.Config.Vocab)
			kv, _ := prefill(t, m, ctx, 0)
			plain, err := m.Forward(kv.Clone(), q, model.Positions(30, 4), true)
			if err != nil {
				t.Fatal(err)
			}
			kv2 := kv.Clone()
			first := kv2.Grow(q, model.Positions(30, 4))
			groups := &kernels.KeyGroups{Of: make([]uint8, kv2.Len()), Temp: []float32{1, 1, 1}, LSEScale: []float32{1, 1, 1}}
			for i := range groups.Of {
				groups.Of[i] = uint8(r.IntN(3))
			}
			got := runPass(t, m, kv2, first, groups)
			if d := maxAbsDiff(got, plain); d > 1e-4 {
				t.Fatalf("grouped attention with unit scales differs by %g", d)
			}
		})
	}
}

// runPass computes rows [first, kv.Len()) through every layer with the given
// key groups and returns their logits.
func runPass(t *testing.T, m *model.Model, kv *model.KV, first int, groups *kernels.KeyGroups) []float32 {
	t.Helper()
	rows := make([]int, kv.Len()-first)
	sel := make([]int, len(rows))
	for i := range rows {
		rows[i] = first + i
		sel[i] = i
	}
	p, err := m.NewPass(kv, rows)
	if err != nil {
		t.Fatal(err)
	}
	p.Groups = groups
	for l := range m.Layers {
		if err := p.Layer(l); err != nil {
			t.Fatal(err)
		}
	}
	out := make([]float32, len(rows)*m.Config.Vocab)
	p.Logits(out, sel)
	return out
}

// A recomputed row attends only to keys at positions ≤ its own: garbage in
// the cache at later positions does not change it, garbage at earlier
// positions does.
func TestRecomputeSubsetMasksByPosition(t *testing.T) {
	m := modeltest.New(t, specs()[1])
	r := rand.New(rand.NewPCG(11, 11))
	toks := randTokens(r, 20, m.Config.Vocab)
	kv, full := prefill(t, m, toks, 0)
	v := m.Config.Vocab
	scramble := func(kv *model.KV, lo, hi int) {
		for l := range kv.K {
			for i := lo * kv.KVDim; i < hi*kv.KVDim; i++ {
				kv.K[l][i] = r.Float32() * 4
				kv.V[l][i] = r.Float32() * 4
			}
		}
	}
	later := kv.Clone()
	scramble(later, 11, 20)
	got, err := m.Recompute(later, []int{10}, false)
	if err != nil {
		t.Fatal(err)
	}
	if d := maxAbsDiff(got, full[10*v:11*v]); d != 0 {
		t.Fatalf("keys at later positions leaked into row 10: Δ = %g", d)
	}
	earlier := kv.Clone()
	scramble(earlier, 2, 5)
	got, err = m.Recompute(earlier, []int{10}, false)
	if err != nil {
		t.Fatal(err)
	}
	if d := maxAbsDiff(got, full[10*v:11*v]); d == 0 {
		t.Fatalf("keys at earlier positions did not affect row 10")
	}
}

func TestForwardRejectsPositionsBeyondContext(t *testing.T) {
	m := modeltest.New(t, specs()[0])
	kv := model.NewKV(m.Config)
	if _, err := m.Forward(kv, []int32{1, 2}, []int32{int32(m.Config.Context - 1), int32(m.Config.Context)}, false); err == nil {
		t.Fatal("position == context length accepted")
	}
	if kv.Len() != 0 {
		t.Fatalf("failed Forward left %d rows in the cache", kv.Len())
	}
	if _, err := m.Forward(kv, []int32{int32(m.Config.Vocab)}, []int32{0}, false); err == nil {
		t.Fatal("token outside the vocabulary accepted")
	}
	if kv.Len() != 0 {
		t.Fatalf("failed Forward left %d rows in the cache", kv.Len())
	}
}

// Truncate then re-decode gives the cache a never-extended decode would have.
func TestKVTruncateRollsBackExactly(t *testing.T) {
	m := modeltest.New(t, specs()[1])
	r := rand.New(rand.NewPCG(12, 12))
	toks := randTokens(r, 12, m.Config.Vocab)
	kv, _ := prefill(t, m, toks[:8], 0)
	ref := kv.Clone()
	if _, err := m.Forward(kv, toks[8:], model.Positions(8, 4), false); err != nil {
		t.Fatal(err)
	}
	kv.Truncate(8)
	for l := range kv.K {
		if maxAbsDiff(kv.K[l], ref.K[l]) != 0 || maxAbsDiff(kv.V[l], ref.V[l]) != 0 {
			t.Fatalf("layer %d differs after truncate", l)
		}
	}
	cat, err := model.Concat(kv.Slice(0, 3), kv.Slice(3, 8))
	if err != nil {
		t.Fatal(err)
	}
	for l := range cat.K {
		if maxAbsDiff(cat.K[l], ref.K[l]) != 0 {
			t.Fatalf("layer %d: Concat(Slice) differs", l)
		}
	}
}
