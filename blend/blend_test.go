package blend

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/blendrag/blendrag/kernels"
	"github.com/blendrag/blendrag/model"
	"github.com/blendrag/blendrag/model/modeltest"
)

// specs are the small generated models the invariants are checked on: at
// least three layers, so CacheBlend's check layer and later layers both run.
func specs() []modeltest.Spec {
	return []modeltest.Spec{
		{Name: "f32-gqa", Layers: 4, Dim: 64, Heads: 4, KVHeads: 2, FFN: 128, Seed: 11, Weights: kernels.F32},
		{Name: "q8_0-mha-neox", Layers: 3, Dim: 64, Heads: 4, KVHeads: 4, FFN: 96, Seed: 12, Weights: kernels.Q8_0, Neox: true},
	}
}

// fixture is a prompt as segments with its P KV and independently encoded
// chunk KVs.
type fixture struct {
	m      *model.Model
	seg    Segments
	prefix *model.KV
	chunks []*model.KV
}

func newFixture(t *testing.T, m *model.Model, seed uint64, chunkLens ...int) *fixture {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 1))
	toks := func(n int) []int32 {
		out := make([]int32, n)
		for i := range out {
			out[i] = int32(r.IntN(m.Config.Vocab))
		}
		return out
	}
	f := &fixture{m: m, seg: Segments{Prefix: toks(6), Question: toks(5)}}
	for _, n := range chunkLens {
		f.seg.Chunks = append(f.seg.Chunks, toks(n))
	}
	var err error
	if f.prefix, err = EncodePrefix(m, f.seg.Prefix); err != nil {
		t.Fatal(err)
	}
	for _, c := range f.seg.Chunks {
		kv, err := EncodeChunk(m, f.prefix, c)
		if err != nil {
			t.Fatal(err)
		}
		f.chunks = append(f.chunks, kv)
	}
	return f
}

func (f *fixture) prefill(t *testing.T, opt Options) *Result {
	t.Helper()
	res, err := Prefill(context.Background(), f.m, f.seg, f.prefix, MemorySource(f.chunks), opt)
	if err != nil {
		t.Fatalf("%s: %v", opt.Mode, err)
	}
	return res
}

func maxAbsDiff(a, b []float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	d := 0.0
	for i := range a {
		d = max(d, math.Abs(float64(a[i]-b[i])))
	}
	return d
}

func forSpecs(t *testing.T, fn func(t *testing.T, m *model.Model)) {
	for _, sp := range specs() {
		t.Run(sp.Name, func(t *testing.T) { fn(t, modeltest.New(t, sp)) })
	}
}

func TestPrefixEqualsFull(t *testing.T) {
	forSpecs(t, func(t *testing.T, m *model.Model) {
		f := newFixture(t, m, 1, 7, 12, 9)
		full := f.prefill(t, Options{Mode: ModeFull})
		pre := f.prefill(t, Options{Mode: ModePrefix})
		if d := maxAbsDiff(full.Logits, pre.Logits); d > 1e-4 {
			t.Errorf("max |Δlogit| prefix vs full = %g", d)
		}
		if full.KV.Len() != len(f.seg.Tokens()) || !slices.Equal(full.KV.Pos, model.Positions(0, full.KV.Len())) {
			t.Errorf("full context has positions %v", full.KV.Pos)
		}
	})
}

func TestReuseOfSingleChunkEqualsFull(t *testing.T) {
	forSpecs(t, func(t *testing.T, m *model.Model) {
		f := newFixture(t, m, 2, 13)
		full := f.prefill(t, Options{Mode: ModeFull})
		reuse := f.prefill(t, Options{Mode: ModeReuse})
		if d := maxAbsDiff(full.Logits, reuse.Logits); d > 1e-4 {
			t.Errorf("max |Δlogit| reuse vs full = %g", d)
		}
	})
}

func TestReuseOfSeveralChunksDiffersFromFull(t *testing.T) {
	// Guards the exactness tests: with several chunks the cached KV misses
	// cross-chunk attention, so reuse must not match full.
	forSpecs(t, func(t *testing.T, m *model.Model) {
		f := newFixture(t, m, 3, 7, 12, 9)
		full := f.prefill(t, Options{Mode: ModeFull})
		reuse := f.prefill(t, Options{Mode: ModeReuse})
		if d := maxAbsDiff(full.Logits, reuse.Logits); d < 1e-3 {
			t.Errorf("max |Δlogit| reuse vs full = %g; the fixture does not exercise fusion", d)
		}
	})
}

func TestCacheBlendFullRatioEqualsFull(t *testing.T) {
	forSpecs(t, func(t *testing.T, m *model.Model) {
		f := newFixture(t, m, 4, 7, 12, 9)
		full := f.prefill(t, Options{Mode: ModeFull})
		for _, gradual := range []bool{false, true} {
			cb := f.prefill(t, Options{Mode: ModeCacheBlend, Ratio: 1, Gradual: gradual, CheckLayer: 2})
			if d := maxAbsDiff(full.Logits, cb.Logits); d > 1e-4 {
				t.Errorf("gradual=%v: max |Δlogit| cacheblend(r=1) vs full = %g", gradual, d)
			}
			for l := range m.Config.Layers {
				if d := maxAbsDiff(full.KV.V[l], cb.KV.V[l]); d > 1e-4 {
					t.Errorf("gradual=%v: layer %d values differ from full by %g", gradual, l, d)
				}
				if d := maxAbsDiff(full.KV.K[l], cb.KV.K[l]); d > 1e-4 {
					t.Errorf("gradual=%v: layer %d keys differ from full by %g", gradual, l, d)
				}
			}
		}
	})
}

func TestCacheBlendZeroRatioEqualsReuse(t *testing.T) {
	forSpecs(t, func(t *testing.T, m *model.Model) {
		f := newFixture(t, m, 5, 7, 12, 9)
		reuse := f.prefill(t, Options{Mode: ModeReuse})
		cb := f.prefill(t, Options{Mode: ModeCacheBlend, Ratio: 0})
		if d := maxAbsDiff(reuse.Logits, cb.Logits); d > 1e-5 {
			t.Errorf("max |Δlogit| cacheblend(r=0) vs reuse = %g", d)
		}
		if len(cb.Stats.Selected) != 0 {
			t.Errorf("r=0 recomputed chunk rows %v", cb.Stats.Selected)
		}
	})
}

// TestCacheBlendSelectsRowsWithLargestCheckLayerValueDeviationFromFull
// checks the selection against an independent reference: layer 0 is exact
// for every row and the layers before the check layer c recompute every row,
// so the fresh layer-c values CacheBlend compares with the cache are full
// prefill's layer-c values.
func TestCacheBlendSelectsRowsWithLargestCheckLayerValueDeviationFromFull(t *testing.T) {
	forSpecs(t, func(t *testing.T, m *model.Model) {
		f := newFixture(t, m, 6, 7, 12, 9)
		full := f.prefill(t, Options{Mode: ModeFull})
		np, d := f.prefix.Len(), m.Config.KVDim()
		type dev struct {
			row int
			d   float64
		}
		for _, check := range []int{1, 2} {
			var devs []dev
			row := np
			for _, c := range f.chunks {
				for j := 0; j < c.Len(); j++ {
					s := 0.0
					for i := 0; i < d; i++ {
						x := float64(full.KV.V[check][row*d+i] - c.V[check][j*d+i])
						s += x * x
					}
					devs = append(devs, dev{row, s})
					row++
				}
			}
			slices.SortStableFunc(devs, func(a, b dev) int { return cmp.Compare(b.d, a.d) })
			for _, ratio := range []float64{0.1, 0.15, 0.5} {
				k := int(math.Ceil(ratio*float64(len(devs)) - 1e-9))
				var want []int
				for _, x := range devs[:k] {
					want = append(want, x.row)
				}
				slices.Sort(want)
				cb := f.prefill(t, Options{Mode: ModeCacheBlend, Ratio: ratio, CheckLayer: check})
				if !slices.Equal(cb.Stats.Selected, want) {
					t.Errorf("check layer %d, r=%v: selected %v, want %v", check, ratio, cb.Stats.Selected, want)
				}
				nq := len(f.seg.Question)
				var wantComputed []int
				for l := range m.Config.Layers {
					if l < check {
						wantComputed = append(wantComputed, len(devs)+nq)
					} else {
						wantComputed = append(wantComputed, k+nq)
					}
				}
				if !slices.Equal(cb.Stats.Computed, wantComputed) {
					t.Errorf("check layer %d, r=%v: computed rows per layer %v, want %v", check, ratio, cb.Stats.Computed, wantComputed)
				}
			}
		}
		if _, err := Prefill(context.Background(), m, f.seg, f.prefix, MemorySource(f.chunks), Options{Mode: ModeCacheBlend, Ratio: 0.15, CheckLayer: m.Config.Layers}); err == nil {
			t.Errorf("check layer %d of a %d-layer model: no error", m.Config.Layers, m.Config.Layers)
		}
	})
}

// TestCacheBlendSelectedRowsSeeOnlyEarlierPositions pins the per-position
// causal mask of recomputed rows: corrupting the last chunk's cache must not
// change any earlier row of the fused context, but must change the answer.
func TestCacheBlendSelectedRowsSeeOnlyEarlierPositions(t *testing.T) {
	forSpecs(t, func(t *testing.T, m *model.Model) {
		f := newFixture(t, m, 7, 7, 12, 9)
		clean := f.prefill(t, Options{Mode: ModeCacheBlend, Ratio: 1})
		last := len(f.chunks) - 1
		bad := f.chunks[last].Clone()
		for l := range bad.K {
			for i := range bad.K[l] {
				bad.K[l][i] += 0.5 * float32(i%7-3)
				bad.V[l][i] -= 0.5 * float32(i%5-2)
			}
		}
		chunks := append(slices.Clone(f.chunks[:last]), bad)
		res, err := Prefill(context.Background(), m, f.seg, f.prefix, MemorySource(chunks), Options{Mode: ModeCacheBlend, Ratio: 1})
		if err != nil {
			t.Fatal(err)
		}
		lastStart := f.prefix.Len()
		for _, c := range f.chunks[:last] {
			lastStart += c.Len()
		}
		d := m.Config.KVDim()
		for l := range m.Config.Layers {
			if !slices.Equal(clean.KV.K[l][:lastStart*d], res.KV.K[l][:lastStart*d]) || !slices.Equal(clean.KV.V[l][:lastStart*d], res.KV.V[l][:lastStart*d]) {
				t.Errorf("layer %d: rows before the corrupted chunk changed: a recomputed row saw a later row", l)
			}
		}
		if maxAbsDiff(clean.Logits, res.Logits) < 1e-4 {
			t.Errorf("corrupting the last chunk's layer-0 cache did not change the answer; the test is vacuous")
		}
	})
}

func TestAPEUnitTemperatureEqualsPlainAttentionOverConcatenatedCache(t *testing.T) {
	forSpecs(t, func(t *testing.T, m *model.Model) {
		f := newFixture(t, m, 8, 7, 12, 9)
		// Reference: the independently encoded chunks appended unchanged
		// (all at |P|..), the question prefilled after the longest.
		kv := f.prefix.Clone()
		longest := 0
		for _, c := range f.chunks {
			if err := kv.Append(c); err != nil {
				t.Fatal(err)
			}
			longest = max(longest, c.Len())
		}
		q := f.seg.Question
		want, err := m.Forward(kv, q, model.Positions(f.prefix.Len()+longest, len(q)), false)
		if err != nil {
			t.Fatal(err)
		}
		got := f.prefill(t, Options{Mode: ModeAPE, T: 1, S: 1})
		if d := maxAbsDiff(want, got.Logits); d > 1e-4 {
			t.Errorf("max |Δlogit| ape(T=S=1) vs plain attention = %g", d)
		}
		if !slices.Equal(got.KV.Pos, kv.Pos) {
			t.Errorf("ape positions %v, want %v", got.KV.Pos, kv.Pos)
		}
		tuned := f.prefill(t, Options{Mode: ModeAPE})
		if d := maxAbsDiff(want, tuned.Logits); d < 1e-4 {
			t.Errorf("ape(T=S=0.9) equals plain attention (max |Δ| %g): temperature and scale are not applied", d)
		}
	})
}

// TestAPEGenerateKeepsGroupingForGeneratedRows checks the incremental decode
// loop against one batched pass: recomputing the question and generated
// rows together under the same key groups must reproduce every greedy token.
func TestAPEGenerateKeepsGroupingForGeneratedRows(t *testing.T) {
	forSpecs(t, func(t *testing.T, m *model.Model) {
		f := newFixture(t, m, 9, 7, 12, 9)
		res := f.prefill(t, Options{Mode: ModeAPE, T: 0.8, S: 0.7})
		nCtx := res.KV.Len()
		g, err := Generate(context.Background(), m, res, model.GenerateOptions{MaxTokens: 6, IgnoreEOS: true}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(g.Tokens) != 6 || res.KV.Len() != nCtx+5 || len(res.Groups.Of) != res.KV.Len() {
			t.Fatalf("generated %d tokens, context %d → %d rows, %d grouped", len(g.Tokens), nCtx, res.KV.Len(), len(res.Groups.Of))
		}
		qStart := nCtx - len(f.seg.Question)
		p, err := m.NewPass(res.KV, rowRange(qStart, res.KV.Len()))
		if err != nil {
			t.Fatal(err)
		}
		p.Groups = res.Groups
		for l := range m.Config.Layers {
			if err := p.Layer(l); err != nil {
				t.Fatal(err)
			}
		}
		for i, tok := range g.Tokens {
			row := len(f.seg.Question) - 1 + i
			logits := make([]float32, m.Config.Vocab)
			p.Logits(logits, []int{row})
			if got := model.Argmax(logits); got != tok {
				t.Errorf("token %d: decode loop chose %d, batched pass %d", i, tok, got)
			}
		}
		// The step's logits themselves, against the batched pass.
		res2 := f.prefill(t, Options{Mode: ModeAPE, T: 0.8, S: 0.7})
		for i, tok := range g.Tokens[:len(g.Tokens)-1] {
			logits, err := res2.Extend(m, []int32{tok}, false)
			if err != nil {
				t.Fatal(err)
			}
			want := make([]float32, m.Config.Vocab)
			p.Logits(want, []int{len(f.seg.Question) + i})
			if d := maxAbsDiff(want, logits); d > 1e-4 {
				t.Errorf("step %d: max |Δlogit| incremental vs batched = %g", i, d)
			}
		}
	})
}

func TestGenerateWithoutGroupsIsTheModelDecodeLoop(t *testing.T) {
	m := modeltest.New(t, specs()[0])
	f := newFixture(t, m, 10, 7, 12)
	opt := model.GenerateOptions{MaxTokens: 5, IgnoreEOS: true}
	a := f.prefill(t, Options{Mode: ModeFull})
	ga, err := Generate(context.Background(), m, a, opt, nil)
	if err != nil {
		t.Fatal(err)
	}
	b := f.prefill(t, Options{Mode: ModeFull})
	gb, err := m.Generate(context.Background(), b.KV, b.Logits, opt, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ga.Tokens, gb.Tokens) || ga.Text != gb.Text {
		t.Errorf("blend.Generate %v %q, model.Generate %v %q", ga.Tokens, ga.Text, gb.Tokens, gb.Text)
	}
}

func TestTextOutHoldsBackStopPrefixesAndPartialRunes(t *testing.T) {
	tests := []struct {
		pieces  []string
		stops   []string
		emitted []string
		text    string
		stopped bool
	}{
		{[]string{"ab", "c\n", "d"}, []string{"\n"}, []string{"ab", "c"}, "abc", true},
		{[]string{"a<", "/s", ">x"}, []string{"</s>"}, []string{"a"}, "a", true},
		{[]string{"a<", "b"}, []string{"</s>"}, []string{"a", "<b"}, "a<b", false},
		{[]string{"\xe2\x82", "\xac!"}, nil, []string{"€!"}, "€!", false},
	}
	for i, tc := range tests {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			var got []string
			o := textOut{stops: tc.stops, emit: func(s string) error { got = append(got, s); return nil }}
			stopped := false
			for _, p := range tc.pieces {
				if o.add([]byte(p)) {
					stopped = true
					break
				}
				if err := o.flush(false); err != nil {
					t.Fatal(err)
				}
			}
			if err := o.flush(true); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.emitted) || o.text.String() != tc.text || stopped != tc.stopped {
				t.Errorf("emitted %q text %q stopped %v, want %q %q %v", got, o.text.String(), stopped, tc.emitted, tc.text, tc.stopped)
			}
		})
	}
}

// TestAPEGroupsFollowTheDesignFormula checks the grouping Prefill gives
// attention against DESIGN.md's APE formula computed directly in float64:
// (O_c, LSE_c) over the chunk keys with scale 1/(T·√d), (O_o, LSE_o) over
// the other visible keys with 1/√d, output w_c·O_c + w_o·O_o with
// [w_c, w_o] = softmax([S·T·LSE_c, LSE_o]).
func TestAPEGroupsFollowTheDesignFormula(t *testing.T) {
	const d, nKeys, lo, hi = 16, 40, 5, 29
	r := rand.New(rand.NewPCG(3, 4))
	rnd := func(n int) []float32 {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(r.NormFloat64())
		}
		return x
	}
	q, keys, vals := rnd(d), rnd(nKeys*d), rnd(nKeys*d)
	pos := make([]int32, nKeys)
	for j := range pos {
		switch {
		case j < lo:
			pos[j] = int32(j)
		case j < hi: // two chunks sharing positions lo..
			pos[j] = int32(lo + (j-lo)%12)
		default:
			pos[j] = int32(lo + 12 + j - hi)
		}
	}
	qPos := pos[nKeys-3] // a question row: later rows are masked
	for _, ts := range [][2]float64{{0.9, 0.9}, {0.7, 1.3}, {1, 1}} {
		T, S := ts[0], ts[1]
		want := make([]float64, d)
		var o [2][]float64
		var lse [2]float64
		for grp := range 2 {
			scale := 1 / math.Sqrt(d)
			if grp == 1 {
				scale /= T
			}
			var sc []float64
			var idx []int
			for j := range nKeys {
				if (j >= lo && j < hi) != (grp == 1) || pos[j] > qPos {
					continue
				}
				s := 0.0
				for i := range d {
					s += float64(q[i]) * float64(keys[j*d+i])
				}
				sc = append(sc, s*scale)
				idx = append(idx, j)
			}
			mx := slices.Max(sc)
			sum := 0.0
			o[grp] = make([]float64, d)
			for k, j := range idx {
				w := math.Exp(sc[k] - mx)
				sum += w
				for i := range d {
					o[grp][i] += w * float64(vals[j*d+i])
				}
			}
			for i := range d {
				o[grp][i] /= sum
			}
			lse[grp] = mx + math.Log(sum)
		}
		zc, zo := S*T*lse[1], lse[0]
		wc := 1 / (1 + math.Exp(zo-zc))
		for i := range d {
			want[i] = wc*o[1][i] + (1-wc)*o[0][i]
		}
		got := make([]float32, d)
		var scratch kernels.AttnScratch
		kernels.Attend(got, q, keys, vals, pos, qPos, kernels.AttnShape{Heads: 1, KVHeads: 1, HeadDim: d}, 0, apeGroups(nKeys, lo, hi, T, S), &scratch)
		for i := range d {
			if math.Abs(float64(got[i])-want[i]) > 1e-5 {
				t.Errorf("T=%v S=%v: output[%d] = %v, formula %v", T, S, i, got[i], want[i])
			}
		}
	}
}

// TestExplicitCPUBackendIsBitwiseTheDefault: Options.Backend set to the
// model's CPU backend gives exactly the results of the default (nil), for
// every mode, including the next decode step on the Result's backend; a
// backend of another model is refused.
func TestExplicitCPUBackendIsBitwiseTheDefault(t *testing.T) {
	forSpecs(t, func(t *testing.T, m *model.Model) {
		cpu, err := m.OpenBackend("cpu")
		if err != nil {
			t.Fatal(err)
		}
		f := newFixture(t, m, 31, 8, 11)
		for _, mode := range Modes {
			want := f.prefill(t, DefaultOptions(mode))
			opt := DefaultOptions(mode)
			opt.Backend = cpu
			got := f.prefill(t, opt)
			if !bitsEqual(got.Logits, want.Logits) || !slices.Equal(got.Stats.Selected, want.Stats.Selected) || got.Backend != cpu {
				t.Fatalf("%s: the explicit CPU backend's result differs from the default's", mode)
			}
			for l := range want.KV.K {
				if !bitsEqual(got.KV.K[l], want.KV.K[l]) || !bitsEqual(got.KV.V[l], want.KV.V[l]) {
					t.Fatalf("%s: layer %d cache differs", mode, l)
				}
			}
			tok := []int32{model.Argmax(want.Logits)}
			wantNext, err := want.Extend(m, tok, false)
			if err != nil {
				t.Fatal(err)
			}
			gotNext, err := got.Extend(m, tok, false)
			if err != nil || !bitsEqual(gotNext, wantNext) {
				t.Fatalf("%s: next step on the explicit CPU backend differs (err %v)", mode, err)
			}
		}
		other := modeltest.New(t, modeltest.Spec{Layers: 1, Dim: 32, Heads: 2, KVHeads: 2, FFN: 64, Seed: 99, Weights: kernels.F32})
		ob, err := other.OpenBackend("cpu")
		if err != nil {
			t.Fatal(err)
		}
		opt := DefaultOptions(ModeCacheBlend)
		opt.Backend = ob
		if _, err := Prefill(context.Background(), m, f.seg, f.prefix, MemorySource(f.chunks), opt); err == nil {
			t.Fatal("a backend of another model was accepted")
		}
		if _, err := EncodeChunkOn(ob, m, f.prefix, f.seg.Chunks[0]); err == nil {
			t.Fatal("EncodeChunkOn accepted a backend of another model")
		}
	})
}

func bitsEqual(a, b []float32) bool {
	return slices.EqualFunc(a, b, func(x, y float32) bool { return math.Float32bits(x) == math.Float32bits(y) })
}
