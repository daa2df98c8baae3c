package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

func randVec(rng *rand.Rand, n int, scale float64) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64() * scale)
	}
	return v
}

func TestRMSNormMatchesFloat64Reference(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	for _, n := range []int{1, 7, 64, 576} {
		x := randVec(rng, n, 3)
		w := randVec(rng, n, 1)
		got := make([]float32, n)
		RMSNorm(got, x, w, 1e-5)
		var ss float64
		for _, v := range x {
			ss += float64(v) * float64(v)
		}
		scale := 1 / math.Sqrt(ss/float64(n)+1e-5)
		for i := range x {
			want := float64(x[i]) * scale * float64(w[i])
			if math.Abs(float64(got[i])-want) > 1e-6*math.Abs(want)+1e-7 {
				t.Fatalf("n=%d [%d]: got %v want %v", n, i, got[i], want)
			}
		}
		// In place, and without a gain.
		y := append([]float32(nil), x...)
		RMSNorm(y, y, nil, 1e-5)
		for i := range y {
			if want := float64(x[i]) * scale; math.Abs(float64(y[i])-want) > 1e-6*math.Abs(want)+1e-7 {
				t.Fatalf("in place, no gain, n=%d [%d]: got %v want %v", n, i, y[i], want)
			}
		}
	}
}

func TestLayerNormHasZeroMeanUnitVariance(t *testing.T) {
	rng := rand.New(rand.NewPCG(23, 24))
	x := randVec(rng, 384, 5)
	for i := range x {
		x[i] += 10
	}
	y := make([]float32, len(x))
	LayerNorm(y, x, nil, nil, 1e-12)
	var m, v float64
	for _, f := range y {
		m += float64(f)
	}
	m /= float64(len(y))
	for _, f := range y {
		v += (float64(f) - m) * (float64(f) - m)
	}
	v /= float64(len(y))
	if math.Abs(m) > 1e-5 || math.Abs(v-1) > 1e-4 {
		t.Errorf("mean %g variance %g", m, v)
	}
	w := randVec(rng, len(x), 1)
	b := randVec(rng, len(x), 1)
	z := make([]float32, len(x))
	LayerNorm(z, x, w, b, 1e-12)
	for i := range z {
		if want := y[i]*w[i] + b[i]; math.Abs(float64(z[i]-want)) > 1e-5 {
			t.Fatalf("gain/bias [%d]: %v want %v", i, z[i], want)
		}
	}
}

func TestSoftmaxSumsToOneAndReturnsLogSumExp(t *testing.T) {
	rng := rand.New(rand.NewPCG(25, 26))
	for _, n := range []int{1, 3, 100, 4096} {
		x := randVec(rng, n, 20)
		x[0] = float32(math.Inf(-1))
		orig := append([]float32(nil), x...)
		lse := Softmax(x)
		var maxv float64 = math.Inf(-1)
		for _, v := range orig {
			maxv = math.Max(maxv, float64(v))
		}
		var z, sum float64
		for _, v := range orig {
			z += math.Exp(float64(v) - maxv)
		}
		for i, v := range x {
			sum += float64(v)
			want := math.Exp(float64(orig[i])-maxv) / z
			// float32 rounding of x−max costs a relative |x−max|·2^-24.
			tol := want * 4e-7 * (2 + math.Abs(float64(orig[i])-maxv))
			if math.Abs(float64(v)-want) > tol+1e-38 {
				t.Fatalf("n=%d [%d]: %v want %v", n, i, v, want)
			}
		}
		if n > 1 && math.Abs(sum-1) > 1e-5 {
			t.Errorf("n=%d: sum %v", n, sum)
		}
		if wantLSE := maxv + math.Log(z); n > 1 && math.Abs(lse-wantLSE) > 1e-6*math.Abs(wantLSE)+1e-6 {
			t.Errorf("n=%d: lse %v want %v", n, lse, wantLSE)
		}
	}
	allMasked := []float32{float32(math.Inf(-1)), float32(math.Inf(-1))}
	if lse := Softmax(allMasked); !math.IsInf(lse, -1) || allMasked[0] != 0 || allMasked[1] != 0 {
		t.Errorf("all −Inf: lse %v, x %v", lse, allMasked)
	}
}

func TestSwiGLUIsSiLUGateTimesUp(t *testing.T) {
	g := []float32{-20, -1, 0, 0.5, 3, 90}
	u := []float32{2, 3, 4, 5, 6, 7}
	dst := make([]float32, len(g))
	SwiGLU(dst, g, u)
	for i := range g {
		want := float64(g[i]) / (1 + math.Exp(-float64(g[i]))) * float64(u[i])
		if math.Abs(float64(dst[i])-want) > 1e-6*math.Abs(want)+1e-12 {
			t.Errorf("SwiGLU(%v, %v) = %v want %v", g[i], u[i], dst[i], want)
		}
	}
	// In place over the gate.
	SwiGLU(g, g, u)
	for i := range g {
		if g[i] != dst[i] {
			t.Errorf("in place [%d]: %v vs %v", i, g[i], dst[i])
		}
	}
}

func TestGELUMatchesErfDefinition(t *testing.T) {
	x := []float32{-5, -1, -0.1, 0, 0.1, 1, 5}
	y := append([]float32(nil), x...)
	GELU(y)
	for i, v := range x {
		f := float64(v)
		want := f * 0.5 * (1 + math.Erf(f/math.Sqrt2))
		if math.Abs(float64(y[i])-want) > 1e-7*math.Abs(want)+1e-9 {
			t.Errorf("GELU(%v) = %v want %v", v, y[i], want)
		}
	}
}

func TestDotOrderDependsOnlyOnLength(t *testing.T) {
	rng := rand.New(rand.NewPCG(27, 28))
	for _, n := range []int{0, 1, 7, 8, 9, 64, 100, 1000} {
		a, b := randVec(rng, n, 1), randVec(rng, n+3, 1)
		got := Dot(a, b)
		var want, abs float64
		for i := range a {
			want += float64(a[i]) * float64(b[i])
			abs += math.Abs(float64(a[i]) * float64(b[i]))
		}
		if math.Abs(float64(got)-want) > 1e-6*abs+1e-7 {
			t.Errorf("n=%d: Dot %v, float64 %v", n, got, want)
		}
		// Feeding the same vector in pieces of multiples of 8 gives the same bits.
		var acc f32Acc
		for lo := 0; lo < n; lo += 16 {
			hi := min(n, lo+16)
			acc.addF32(a[lo:hi], b[lo:hi])
		}
		if acc.sum() != got {
			t.Errorf("n=%d: chunked %v, whole %v", n, acc.sum(), got)
		}
	}
}

func TestAXPYAddScaleMul(t *testing.T) {
	rng := rand.New(rand.NewPCG(29, 30))
	for _, n := range []int{0, 3, 4, 13} {
		x, d := randVec(rng, n, 1), randVec(rng, n, 1)
		orig := append([]float32(nil), d...)
		AXPY(d, 0.5, x)
		for i := range d {
			if d[i] != orig[i]+float32(0.5*x[i]) {
				t.Fatalf("AXPY n=%d [%d]", n, i)
			}
		}
		copy(d, orig)
		Add(d, x)
		Mul(d, x)
		Scale(d, 2)
		for i := range d {
			if want := (orig[i] + x[i]) * x[i] * 2; d[i] != want {
				t.Fatalf("Add/Mul/Scale n=%d [%d]: %v want %v", n, i, d[i], want)
			}
		}
	}
}

func TestFloatKernelsAllocateNothing(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 32))
	x, w, y := randVec(rng, 576, 1), randVec(rng, 576, 1), make([]float32, 576)
	tab, err := NewRoPETable(64, 1e5, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	cos, sin := make([]float32, 32), make([]float32, 32)
	a := testing.AllocsPerRun(10, func() {
		RMSNorm(y, x, w, 1e-5)
		SwiGLU(y, x, w)
		Softmax(y)
		AXPY(y, 2, x)
		_ = Dot(x, y)
		RoPE(y, 64, 9, 100, 1e5, false)
		tab.CosSin(7, cos, sin)
		tab.Rotate(y, 9, cos, sin)
		tab.Shift(y, 9, -3)
	})
	if a != 0 {
		t.Errorf("float kernels allocate %v times", a)
	}
}
