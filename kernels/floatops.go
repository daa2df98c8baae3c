package kernels

import "math"

// Element-wise and normalisation kernels on float32 slices. None allocates.
// Unless a comment says otherwise every operation is a float32 operation
// rounded to float32 (explicit conversions keep the compiler from fusing a
// multiply and an add), so results are the same on every architecture.

// exp32 is expf: e^x rounded to float32.
func exp32(x float32) float32 { return float32(math.Exp(float64(x))) }

// RMSNorm sets dst[i] = (x[i]·scale)·weight[i] with
// scale = 1/sqrt(mean + eps), mean = float32(Σ x[i]² / n). The sum of squares
// is accumulated in float64 over float32 squares, in index order
// (ggml_compute_forward_rms_norm_f32). weight may be nil (no gain); dst may
// be x. dst and a non-nil weight must be at least len(x) long.
func RMSNorm(dst, x, weight []float32, eps float32) {
	n := len(x)
	if n == 0 {
		return
	}
	dst = dst[:n]
	var sum float64
	for _, v := range x {
		sum += float64(v * v)
	}
	mean := float32(sum / float64(n))
	scale := 1 / float32(math.Sqrt(float64(mean+eps)))
	if weight == nil {
		for i, v := range x {
			dst[i] = v * scale
		}
		return
	}
	weight = weight[:n]
	for i, v := range x {
		dst[i] = float32(v*scale) * weight[i]
	}
}

// LayerNorm sets dst[i] = ((x[i]−mean)·scale)·weight[i] + bias[i] with
// mean = float32(Σx/n), scale = 1/sqrt(var + eps) and
// var = float32(Σ (x[i]−mean)² / n), both sums in float64 in index order
// (ggml_compute_forward_norm_f32 followed by the gain and bias). weight
// and bias may each be nil; dst may be x.
func LayerNorm(dst, x, weight, bias []float32, eps float32) {
	n := len(x)
	if n == 0 {
		return
	}
	dst = dst[:n]
	var sum float64
	for _, v := range x {
		sum += float64(v)
	}
	mean := float32(sum / float64(n))
	var sum2 float64
	for i, v := range x {
		d := v - mean
		dst[i] = d
		sum2 += float64(d * d)
	}
	variance := float32(sum2 / float64(n))
	scale := 1 / float32(math.Sqrt(float64(variance+eps)))
	for i := range dst {
		dst[i] *= scale
	}
	if weight != nil {
		weight = weight[:n]
		for i := range dst {
			dst[i] *= weight[i]
		}
	}
	if bias != nil {
		bias = bias[:n]
		for i := range dst {
			dst[i] += bias[i]
		}
	}
}

// SiLU returns x/(1+e^−x) in float32 (ggml_silu_f32).
func SiLU(x float32) float32 { return x / (1 + exp32(-x)) }

// SwiGLU sets dst[i] = SiLU(gate[i])·up[i] for i < len(dst); gate and up
// must be at least as long. dst may alias gate or up. On amd64 with AVX2 the
// exponential is a vector float32 polynomial within 2 ulp of e^x (used for
// every element, so results do not depend on an element's position).
func SwiGLU(dst, gate, up []float32) {
	gate = gate[:len(dst)]
	up = up[:len(dst)]
	if !haveAVX2() {
		for i, g := range gate {
			dst[i] = SiLU(g) * up[i]
		}
		return
	}
	var e [64]float32
	for i0 := 0; i0 < len(dst); i0 += len(e) {
		n := min(len(e), len(dst)-i0)
		for k := 0; k < n; k++ {
			e[k] = -gate[i0+k]
		}
		expTile(&e[0], (n+7)/8)
		for k := 0; k < n; k++ {
			dst[i0+k] = gate[i0+k] / (1 + e[k]) * up[i0+k]
		}
	}
}

// GELU replaces every x[i] by the exact (erf) GELU,
// x·½·(1 + erf(x/√2)), computed in float64 and rounded to float32 — the
// "gelu" activation of BERT models in Hugging Face transformers.
func GELU(x []float32) {
	for i, v := range x {
		f := float64(v)
		x[i] = float32(0.5 * f * (1 + math.Erf(f/math.Sqrt2)))
	}
}

// Softmax replaces x by softmax(x) and returns log Σ e^x, the log-sum-exp
// (useful to merge attention over separate key blocks). It subtracts the
// maximum, computes each e^(x−max) in float32, sums them in float64 in index
// order, and multiplies by float32(1/sum) (ggml_vec_soft_max_f32 and
// ggml_vec_scale_f32). Entries equal to −Inf get probability 0; if every
// entry is −Inf, x is set to 0 and −Inf is returned. An empty x returns −Inf.
func Softmax(x []float32) float64 {
	if len(x) == 0 {
		return math.Inf(-1)
	}
	maxv := float32(math.Inf(-1))
	for _, v := range x {
		if v > maxv {
			maxv = v
		}
	}
	if math.IsInf(float64(maxv), -1) {
		clear(x)
		return math.Inf(-1)
	}
	var sum float64
	for i, v := range x {
		e := exp32(v - maxv)
		x[i] = e
		sum += float64(e)
	}
	inv := float32(1 / sum)
	for i := range x {
		x[i] *= inv
	}
	return float64(maxv) + math.Log(sum)
}

// Add sets dst[i] += a[i] for i < len(dst); a must be at least as long.
func Add(dst, a []float32) {
	a = a[:len(dst)]
	for i, v := range a {
		dst[i] += v
	}
}

// Mul sets dst[i] *= a[i] for i < len(dst); a must be at least as long.
func Mul(dst, a []float32) {
	a = a[:len(dst)]
	for i, v := range a {
		dst[i] *= v
	}
}

// Scale sets x[i] *= s.
func Scale(x []float32, s float32) {
	for i := range x {
		x[i] *= s
	}
}

// AXPY sets dst[i] += a·x[i] for i < len(dst) (x must be at least as long),
// rounding each product to float32 before the add.
func AXPY(dst []float32, a float32, x []float32) {
	x = x[:len(dst)]
	i := 0
	for ; i+4 <= len(dst); i += 4 {
		d, s := dst[i:i+4:i+4], x[i:i+4:i+4]
		d[0] += float32(a * s[0])
		d[1] += float32(a * s[1])
		d[2] += float32(a * s[2])
		d[3] += float32(a * s[3])
	}
	for ; i < len(dst); i++ {
		dst[i] += float32(a * x[i])
	}
}
