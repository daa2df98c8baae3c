//go:build (cuda || cudaemu) && cgo

package model_test

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/blendrag/blendrag/kernels"
	"github.com/blendrag/blendrag/kernels/cuda"
	"github.com/blendrag/blendrag/model"
	"github.com/blendrag/blendrag/model/fetch"
	"github.com/blendrag/blendrag/model/modeltest"
)

// These tests need a CUDA GPU and a binary built with -tags cuda (or, with
// -tags cudaemu, the CPU emulation of the kernels); they compare the CUDA
// backend with the CPU forward pass (the reference) on the same tokens.
// Embedding, RMSNorm, the matrix products and RoPE are bitwise the CPU's, so
// layer 0's keys and values must be identical. Attention and SwiGLU round
// differently, and a last-bit difference occasionally moves an activation
// across a Q8 (or F16) rounding boundary, which changes that row by a whole
// quantisation step in later layers; so later layers and the logits are
// compared within tolerances, and the argmax must agree wherever the CPU's
// top-1/top-2 margin exceeds the logit tolerance.

func openCUDA(t *testing.T, m *model.Model) model.Backend {
	t.Helper()
	b, err := m.OpenBackend("cuda:0")
	if err != nil {
		t.Fatalf("OpenBackend(cuda:0): %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b
}

// compareLogits checks rows of vocab logits: max |GPU−CPU| ≤ rel·max|CPU|
// and the same argmax where the CPU's margin is above that bound.
func compareLogits(t *testing.T, what string, got, want []float32, vocab int, rel float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d logits from the GPU, %d from the CPU", what, len(got), len(want))
	}
	var scale, worst float64
	for _, v := range want {
		scale = max(scale, math.Abs(float64(v)))
	}
	tol := rel * max(scale, 1)
	for i := range want {
		worst = max(worst, math.Abs(float64(got[i])-float64(want[i])))
	}
	if worst > tol || math.IsNaN(worst) {
		t.Fatalf("%s: max |GPU−CPU| logit %g > %g", what, worst, tol)
	}
	for r := 0; r < len(want)/vocab; r++ {
		g, w := got[r*vocab:(r+1)*vocab], want[r*vocab:(r+1)*vocab]
		top, second := argmax2(w)
		if float64(w[top]-w[second]) > 2*tol && argmax(g) != top {
			t.Fatalf("%s: row %d: GPU argmax %d, CPU %d (margin %g)", what, r, argmax(g), top, w[top]-w[second])
		}
	}
	t.Logf("%s: max |GPU−CPU| logit %g (bound %g)", what, worst, tol)
}

func argmax(x []float32) int {
	best := 0
	for i, v := range x {
		if v > x[best] {
			best = i
		}
	}
	return best
}

func argmax2(x []float32) (int, int) {
	a, b := 0, 1
	if x[b] > x[a] {
		a, b = b, a
	}
	for i := 2; i < len(x); i++ {
		if x[i] > x[a] {
			a, b = i, a
		} else if x[i] > x[b] {
			b = i
		}
	}
	return a, b
}

// compareKV checks that layer 0's keys and values are bitwise the CPU's and
// every later layer's are within abs.
func compareKV(t *testing.T, got, want *model.KV, abs float64) {
	t.Helper()
	for l := range want.K {
		for _, kv := range [][2][]float32{{got.K[l], want.K[l]}, {got.V[l], want.V[l]}} {
			for i := range kv[1] {
				d := math.Abs(float64(kv[0][i] - kv[1][i]))
				if (l == 0 && math.Float32bits(kv[0][i]) != math.Float32bits(kv[1][i])) || d > abs || math.IsNaN(d) {
					t.Fatalf("layer %d cache element %d (row %d): GPU %v, CPU %v", l, i, i/want.KVDim, kv[0][i], kv[1][i])
				}
			}
		}
	}
}

// TestCUDAForwardMatchesCPU: prefill (longer than one prefill batch), a
// decode step and the recomputation of a subset of rows (CacheBlend's
// pattern, positions masking attention) on small random models, GPU vs CPU.
// Tolerances: layer 0 K/V bitwise; later K/V within 0.1 absolute; logits
// within rel of the largest logit — 1e-4 for F32 weights (no quantisation
// boundary to cross), 1e-2 for Q4_1, Q8_0 and F16 (in the CPU emulation
// with 300 tokens: 0.35 of a largest logit of 59 for Q4_1, from two rows
// that crossed a Q8 boundary; F32 3e-5).
func TestCUDAForwardMatchesCPU(t *testing.T) {
	for _, c := range []struct {
		spec modeltest.Spec
		rel  float64
	}{
		{modeltest.Spec{Name: "q4_1-gqa", Layers: 3, Dim: 64, Heads: 4, KVHeads: 2, FFN: 128, Seed: 2, Weights: kernels.Q4_1}, 1e-2},
		{modeltest.Spec{Name: "q8_0-gqa3", Layers: 2, Dim: 96, Heads: 6, KVHeads: 2, FFN: 160, Seed: 3, Weights: kernels.Q8_0}, 1e-2},
		{modeltest.Spec{Name: "f16-mha", Layers: 2, Dim: 64, Heads: 4, KVHeads: 4, FFN: 96, Seed: 4, Weights: kernels.F16}, 1e-2},
		{modeltest.Spec{Name: "f32-mha", Layers: 2, Dim: 64, Heads: 4, KVHeads: 4, FFN: 96, Seed: 1, Weights: kernels.F32}, 1e-4},
		// Wide enough (300 rows × 256) that the prefill's keys and values
		// leave for the host layer by layer during the pass.
		{modeltest.Spec{Name: "f32-wide", Layers: 2, Dim: 256, Heads: 4, KVHeads: 4, FFN: 96, Seed: 6, Weights: kernels.F32}, 1e-4},
	} {
		t.Run(c.spec.Name, func(t *testing.T) {
			m := modeltest.New(t, c.spec)
			gpu := openCUDA(t, m)
			rel := c.rel
			tokens := make([]int32, 300) // longer than one prefill batch
			for i := range tokens {
				tokens[i] = int32((i*7919 + 13) % m.Config.Vocab)
			}
			pos := model.Positions(0, len(tokens))
			cpuKV, gpuKV := model.NewKV(m.Config), model.NewKV(m.Config)
			want, err := m.Forward(cpuKV, tokens, pos, true)
			if err != nil {
				t.Fatal(err)
			}
			got, err := gpu.Forward(gpuKV, tokens, pos, true)
			if err != nil {
				t.Fatal(err)
			}
			compareLogits(t, "prefill", got, want, m.Config.Vocab, rel)
			compareKV(t, gpuKV, cpuKV, 0.1)

			next := []int32{5}
			npos := []int32{int32(len(tokens))}
			if want, err = m.Forward(cpuKV, next, npos, false); err != nil {
				t.Fatal(err)
			}
			if got, err = gpu.Forward(gpuKV, next, npos, false); err != nil {
				t.Fatal(err)
			}
			compareLogits(t, "decode", got, want, m.Config.Vocab, rel)

			// Recompute a subset against the same (CPU-made) cache on both.
			gpuKV = cpuKV.Slice(0, cpuKV.Len())
			rows := []int{3, 40, 41, 150, 299, 300}
			if want, err = m.Recompute(cpuKV, rows, true); err != nil {
				t.Fatal(err)
			}
			if got, err = gpu.Recompute(gpuKV, rows, true); err != nil {
				t.Fatal(err)
			}
			compareLogits(t, "recompute subset", got, want, m.Config.Vocab, rel)
			compareKV(t, gpuKV, cpuKV, 0.1)
		})
	}
}

// TestCUDASmolLM2LogitsMatchCPU: the default model's logits at every
// position of a 45-token prompt, GPU vs CPU. Over 30 layers the occasional
// activation that crosses a Q8 rounding boundary (from attention's and
// SwiGLU's last-bit differences) changes that row by a quantisation step and
// spreads through attention — the same mechanism that separates this engine
// from llama.cpp (TestLogitsMatchLlamaCpp: p99 |Δlogit| 0.78, mean KL
// 2.1e-3). Measured in the CPU emulation (cudaemu): over the 52 positions
// max |Δlogit| 1.01, mean KL(CPU‖GPU) 4.3e-3, no top-1 change; on a shorter
// prompt layers 0–2 came out bitwise identical and the first differences
// appeared at layer 3 in 2 of 20 rows. Bounds, about twice that: mean KL
// ≤ 1e-2 nats, max |Δlogit| ≤ 2, the same top-1 wherever the CPU's margin
// exceeds 0.5. A wrong kernel (a wrong row, position or head) moves the
// distribution by far more.
func TestCUDASmolLM2LogitsMatchCPU(t *testing.T) {
	if cuda.Emulated() && os.Getenv("BLENDRAG_CUDAEMU_FULL") == "" {
		t.Skip("slow in the CPU emulation; set BLENDRAG_CUDAEMU_FULL=1 to run it")
	}
	path := fetch.GeneratorPath(fetch.Dir())
	if _, err := os.Stat(path); err != nil {
		t.Skipf("default model not found (%v)", err)
	}
	m, err := model.Load(path, model.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	gpu := openCUDA(t, m)
	text := "Retrieval-augmented generation answers a question from documents. The documents are split into chunks, " +
		"each chunk is indexed, and the chunks most similar to the question are given to the model as context. " +
		"Question: what is given to the model as context?"
	tokens := m.Tok.Encode(text, false)
	pos := model.Positions(0, len(tokens))
	want, err := m.Forward(model.NewKV(m.Config), tokens, pos, true)
	if err != nil {
		t.Fatal(err)
	}
	got, err := gpu.Forward(model.NewKV(m.Config), tokens, pos, true)
	if err != nil {
		t.Fatal(err)
	}
	V := m.Config.Vocab
	var klSum, worst float64
	for r := range tokens {
		g, w := got[r*V:(r+1)*V], want[r*V:(r+1)*V]
		klSum += klDivergence(w, g)
		for i := range w {
			worst = max(worst, math.Abs(float64(g[i]-w[i])))
		}
		top, second := argmax2(w)
		if w[top]-w[second] > 0.5 && argmax(g) != top {
			t.Errorf("position %d: GPU top-1 %d, CPU %d (margin %g)", r, argmax(g), top, w[top]-w[second])
		}
	}
	meanKL := klSum / float64(len(tokens))
	t.Logf("%d positions: max |Δlogit| %.4f, mean KL(CPU‖GPU) %.2e, last position KL %.2e", len(tokens), worst, meanKL, klDivergence(want[(len(tokens)-1)*V:], got[(len(tokens)-1)*V:]))
	if meanKL > 1e-2 || math.IsNaN(meanKL) {
		t.Errorf("mean KL %.2e > 1e-2", meanKL)
	}
	if worst > 2 || math.IsNaN(worst) {
		t.Errorf("max |Δlogit| %.4f > 2", worst)
	}
}

// klDivergence is KL(softmax(p)‖softmax(q)) in nats, in float64.
func klDivergence(p, q []float32) float64 {
	lse := func(x []float32) float64 {
		m := math.Inf(-1)
		for _, v := range x {
			m = max(m, float64(v))
		}
		var s float64
		for _, v := range x {
			s += math.Exp(float64(v) - m)
		}
		return m + math.Log(s)
	}
	lp, lq := lse(p), lse(q)
	var kl float64
	for i := range p {
		a, b := float64(p[i])-lp, float64(q[i])-lq
		kl += math.Exp(a) * (a - b)
	}
	return kl
}

// blendSteps runs a CacheBlend-like sequence of pass steps over rows
// [first, kv.Len()): layer 0 writes only the last q rows, layer 1 writes and
// keeps every third row plus the last q, later layers write every kept
// row; groups, when set, partition the keys (APE). It returns the logits of
// the last row and the fresh values of layer 0.
func blendSteps(t *testing.T, newPass func([]int) (model.LayerPass, error), m *model.Model, first, n, q int, groups *kernels.KeyGroups) (logits, fresh0 []float32) {
	t.Helper()
	rows := make([]int, n-first)
	for i := range rows {
		rows[i] = first + i
	}
	p, err := newPass(rows)
	if err != nil {
		t.Fatal(err)
	}
	p.SetGroups(groups)
	last := func() []int {
		var sel []int
		for i := p.N() - q; i < p.N(); i++ {
			sel = append(sel, i)
		}
		return sel
	}
	for l := range m.Layers {
		if err := p.QKV(l); err != nil {
			t.Fatal(err)
		}
		switch l {
		case 0:
			fresh0 = append([]float32(nil), p.FreshV()...)
			err = p.WriteKV(l, last())
		case 1:
			var sel []int
			for i := 0; i < p.N()-q; i += 3 {
				sel = append(sel, i)
			}
			sel = append(sel, last()...)
			if err = p.WriteKV(l, sel); err == nil {
				err = p.Keep(sel)
			}
		default:
			err = p.WriteKV(l, nil)
		}
		if err == nil {
			err = p.AttendMLP(l)
		}
		if err != nil {
			t.Fatalf("layer %d: %v", l, err)
		}
	}
	logits = make([]float32, m.Config.Vocab)
	if err := p.Logits(logits, []int{p.N() - 1}); err != nil {
		t.Fatal(err)
	}
	return logits, fresh0
}

// TestCUDAPassStepsMatchCPU: CacheBlend's step sequence (selective writes,
// Keep) and APE's grouped attention through the GPU LayerPass agree with
// the CPU pass over the same cache: layer-0 fresh values bitwise, last-row
// logits within 1e-2 of the largest logit, and the caches written within
// 0.1.
func TestCUDAPassStepsMatchCPU(t *testing.T) {
	m := modeltest.New(t, modeltest.Spec{Layers: 3, Dim: 64, Heads: 4, KVHeads: 2, FFN: 128, Seed: 5, Weights: kernels.Q4_1})
	gpu := openCUDA(t, m)
	cpu, err := m.OpenBackend("cpu")
	if err != nil {
		t.Fatal(err)
	}
	tokens := make([]int32, 60)
	for i := range tokens {
		tokens[i] = int32((i*104729 + 3) % m.Config.Vocab)
	}
	base := model.NewKV(m.Config)
	if _, err := m.Forward(base, tokens, model.Positions(0, len(tokens)), false); err != nil {
		t.Fatal(err)
	}
	of := make([]uint8, base.Len())
	for i := 20; i < 55; i++ {
		of[i] = 1
	}
	ape := &kernels.KeyGroups{Of: of, Temp: []float32{1, 0.9}, LSEScale: []float32{1, 0.9}}
	for _, c := range []struct {
		name   string
		first  int
		groups *kernels.KeyGroups
	}{
		{"cacheblend", 20, nil},
		{"ape", 55, ape},
	} {
		t.Run(c.name, func(t *testing.T) {
			cpuKV, gpuKV := base.Slice(0, base.Len()), base.Slice(0, base.Len())
			want, want0 := blendSteps(t, func(r []int) (model.LayerPass, error) { return cpu.NewPass(cpuKV, r) }, m, c.first, base.Len(), 5, c.groups)
			got, got0 := blendSteps(t, func(r []int) (model.LayerPass, error) { return gpu.NewPass(gpuKV, r) }, m, c.first, base.Len(), 5, c.groups)
			for i := range want0 {
				if math.Float32bits(got0[i]) != math.Float32bits(want0[i]) {
					t.Fatalf("layer 0 fresh value %d: GPU %v, CPU %v", i, got0[i], want0[i])
				}
			}
			compareLogits(t, c.name, got, want, m.Config.Vocab, 1e-2)
			compareKV(t, gpuKV, cpuKV, 0.1)
		})
	}
}

// TestCUDADeviceCacheFollowsHostChanges: the backend's device copy of the
// cache is refreshed exactly where the host cache changed. A prefill and
// decode steps upload nothing (the pass writes its own rows on the
// device), nor does Truncate followed by new tokens; KV.Shift, a direct
// write announced with ChangedLayer and a CPU recompute of some rows
// upload just those rows; switching to another cache and back uploads
// nothing, but after three others (more than the backend keeps copies of)
// all of it — and after each the GPU's logits equal the CPU's on the same
// cache (F32 weights, bound 1e-4 of the largest logit), so a stale device
// row would show.
func TestCUDADeviceCacheFollowsHostChanges(t *testing.T) {
	m := modeltest.New(t, modeltest.Spec{Name: "f32-gqa", Layers: 2, Dim: 64, Heads: 4, KVHeads: 2, FFN: 96, Seed: 7, Weights: kernels.F32})
	gpu := openCUDA(t, m)
	uploads, ok := gpu.(interface{ CacheUploads() int64 })
	if !ok {
		t.Fatalf("the CUDA backend does not report its cache uploads")
	}
	L, V := int64(m.Config.Layers), m.Config.Vocab
	tok := func(i int) int32 { return int32((i*7919 + 13) % V) }
	cpuKV, gpuKV := model.NewKV(m.Config), model.NewKV(m.Config)
	// step appends token at pos on both caches and checks the logits and
	// the rows uploaded (summed over layers) since the previous step.
	last := int64(0)
	step := func(what string, token, pos int32, wantRows int64) {
		t.Helper()
		want, err := m.Forward(cpuKV, []int32{token}, []int32{pos}, false)
		if err != nil {
			t.Fatal(err)
		}
		got, err := gpu.Forward(gpuKV, []int32{token}, []int32{pos}, false)
		if err != nil {
			t.Fatal(err)
		}
		compareLogits(t, what, got, want, V, 1e-4)
		if n := uploads.CacheUploads() - last; n != wantRows {
			t.Errorf("%s: %d cache rows uploaded, want %d", what, n, wantRows)
		}
		last = uploads.CacheUploads()
	}
	prompt := make([]int32, 40)
	for i := range prompt {
		prompt[i] = tok(i)
	}
	if _, err := m.Forward(cpuKV, prompt, model.Positions(0, 40), false); err != nil {
		t.Fatal(err)
	}
	if _, err := gpu.Forward(gpuKV, prompt, model.Positions(0, 40), false); err != nil {
		t.Fatal(err)
	}
	step("decode after prefill", tok(40), 40, 0)
	step("second decode step", tok(41), 41, 0)

	cpuKV.Truncate(30)
	gpuKV.Truncate(30)
	step("new token after Truncate", tok(99), 30, 0)

	for _, kv := range []*model.KV{cpuKV, gpuKV} {
		if err := kv.Shift(10, 20, 3, m.Config); err != nil {
			t.Fatal(err)
		}
	}
	step("after Shift of rows 10–19", tok(100), 31, 10*L)

	for _, kv := range []*model.KV{cpuKV, gpuKV} {
		row := kv.K[1][5*kv.KVDim : 6*kv.KVDim]
		for i := range row {
			row[i] *= -0.5
		}
	}
	gpuKV.ChangedLayer(1, 5, 6)
	step("after a direct write to row 5 of layer 1", tok(101), 32, 1)
	for _, kv := range []*model.KV{cpuKV, gpuKV} {
		if _, err := m.Recompute(kv, []int{3, 4}, false); err != nil {
			t.Fatal(err)
		}
	}
	step("after a CPU recompute of rows 3–4", tok(102), 33, 2*L)

	// Another cache has its own device copy: coming back uploads nothing
	// (RAPID alternates so). Three more displace the first one's copy.
	for i := 1; i <= 4; i++ {
		other := model.NewKV(m.Config)
		if _, err := gpu.Forward(other, prompt[:7], model.Positions(0, 7), false); err != nil {
			t.Fatal(err)
		}
		last = uploads.CacheUploads()
		if i == 1 {
			step("back on the first cache after another", tok(103), 34, 0)
		}
	}
	step("back on the first cache after three others", tok(104), 35, int64(gpuKV.Len())*L)
}

// TestCUDABLASPrefillIsTheFloat32Forward: a "+blas" backend computes
// prefill-size products through (cuBLAS) SGEMM on float32 copies of the
// weights, without quantising activations — the arithmetic of the CPU
// model loaded with F32Weights. So its prefill logits (every product a
// batch of ≥ BLASMinRows rows, the LM head included) must match that
// model's within the F32 bound (1e-4 of the largest logit), and not the
// quantised CPU forward's, from which they differ by the activations'
// 8-bit rounding. A decode step (one row) then takes the exact quantised
// kernels; it is checked to run and to agree with the float32 model
// within the quantised bound.
func TestCUDABLASPrefillIsTheFloat32Forward(t *testing.T) {
	spec := modeltest.Spec{Name: "q4_1-gqa", Layers: 2, Dim: 64, Heads: 4, KVHeads: 2, FFN: 128, Seed: 5, Weights: kernels.Q4_1}
	path := filepath.Join(t.TempDir(), "model.gguf")
	if err := modeltest.Write(path, spec); err != nil {
		t.Fatal(err)
	}
	load := func(o model.Options) *model.Model {
		m, err := model.Load(path, o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		return m
	}
	m, ref := load(model.Options{Threads: 2}), load(model.Options{Threads: 2, F32Weights: true})
	gpu, err := m.OpenBackend("cuda:0+blas")
	if err != nil {
		t.Fatalf("OpenBackend(cuda:0+blas): %v", err)
	}
	defer gpu.Close()
	if !strings.Contains(gpu.Device(), "+blas") {
		t.Errorf("device %q does not say +blas", gpu.Device())
	}
	V := m.Config.Vocab
	tokens := make([]int32, 2*model.BLASMinRows+5)
	for i := range tokens {
		tokens[i] = int32((i*7919 + 13) % V)
	}
	pos := model.Positions(0, len(tokens))
	refKV, gpuKV, qKV := model.NewKV(ref.Config), model.NewKV(m.Config), model.NewKV(m.Config)
	want, err := ref.Forward(refKV, tokens, pos, true)
	if err != nil {
		t.Fatal(err)
	}
	got, err := gpu.Forward(gpuKV, tokens, pos, true)
	if err != nil {
		t.Fatal(err)
	}
	compareLogits(t, "+blas prefill vs the float32 CPU model", got, want, V, 1e-4)
	quant, err := m.Forward(qKV, tokens, pos, true)
	if err != nil {
		t.Fatal(err)
	}
	var apart float64
	for i := range quant {
		apart = max(apart, math.Abs(float64(quant[i]-want[i])))
	}
	t.Logf("the quantised CPU forward is %g from the float32 one", apart)
	if apart < 1e-3 {
		t.Fatalf("the quantised and float32 forwards differ by only %g: this test cannot tell them apart", apart)
	}

	next, npos := []int32{9}, []int32{int32(len(tokens))}
	if want, err = ref.Forward(refKV, next, npos, false); err != nil {
		t.Fatal(err)
	}
	if got, err = gpu.Forward(gpuKV, next, npos, false); err != nil {
		t.Fatal(err)
	}
	compareLogits(t, "+blas decode step (exact kernels) vs the float32 CPU model", got, want, V, 1e-2)
}

// TestCUDAPassWithoutLogitsStillReachesTheHost: a pass's fresh keys and
// values reach the host cache when the pass ends — at Logits, or, for a
// pass left without it, when the next pass starts — except rows the host
// truncated and rewrote in between, which keep the host's values.
func TestCUDAPassWithoutLogitsStillReachesTheHost(t *testing.T) {
	m := modeltest.New(t, modeltest.Spec{Name: "f32", Layers: 2, Dim: 64, Heads: 4, KVHeads: 2, FFN: 96, Seed: 8, Weights: kernels.F32})
	gpu := openCUDA(t, m)
	c := m.Config
	tokens := []int32{3, 14, 15, 92, 65, 35, 89, 79}
	run := func(kv *model.KV, first int) {
		t.Helper()
		rows := make([]int, kv.Len()-first)
		for i := range rows {
			rows[i] = first + i
		}
		p, err := gpu.NewPass(kv, rows)
		if err != nil {
			t.Fatal(err)
		}
		for l := range c.Layers {
			if err := p.Layer(l); err != nil {
				t.Fatal(err)
			}
		}
	}
	cpuKV := model.NewKV(c)
	if _, err := m.Forward(cpuKV, tokens, model.Positions(0, len(tokens)), false); err != nil {
		t.Fatal(err)
	}
	gpuKV := model.NewKV(c)
	gpuKV.Grow(tokens, model.Positions(0, len(tokens)))
	run(gpuKV, 0) // no Logits
	other := model.NewKV(c)
	other.Grow(tokens[:2], model.Positions(0, 2))
	run(other, 0) // starting it writes the first pass's rows
	compareKV(t, gpuKV, cpuKV, 1e-4)

	// Left without Logits, then truncated and recomputed on the CPU: the
	// next pass must not write the abandoned rows over the CPU's.
	gpuKV.Truncate(5)
	gpuKV.Grow([]int32{7, 7, 7}, model.Positions(5, 3))
	run(gpuKV, 5)
	gpuKV.Truncate(5)
	if _, err := m.Forward(gpuKV, []int32{1, 2, 3}, model.Positions(5, 3), false); err != nil {
		t.Fatal(err)
	}
	want := gpuKV.Clone()
	run(other, 0)
	for l := range c.Layers {
		for i := range want.K[l] {
			if gpuKV.K[l][i] != want.K[l][i] || gpuKV.V[l][i] != want.V[l][i] {
				t.Fatalf("layer %d element %d: the abandoned pass overwrote the host's row %d", l, i, i/want.KVDim)
			}
		}
	}
}
