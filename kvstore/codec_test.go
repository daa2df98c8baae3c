package kvstore

import (
	"math"
	"math/rand/v2"
	"testing"
)

// testMatrix returns a [rows × dim] matrix of normal values with a few
// outlier columns (as real keys have), scaled per row.
func testMatrix(r *rand.Rand, rows, dim int) []float32 {
	x := make([]float32, rows*dim)
	for i := range x {
		v := r.NormFloat64()
		if i%dim == 3 || i%dim == 17 {
			v *= 20
		}
		x[i] = float32(v * (1 + float64(i/dim%5)))
	}
	return x
}

// boundFunc is the largest error allowed for element i of x.
type boundFunc func(x []float32, rows, dim, i int) float64

// maxAbsOf returns max |x[j]| over the indices j yields.
func maxAbsOf(x []float32, idx func(yield func(int) bool)) float64 {
	var m float64
	for j := range idx {
		m = max(m, math.Abs(float64(x[j])))
	}
	return m
}

func column(rows, dim, c int) func(func(int) bool) {
	return func(yield func(int) bool) {
		for r := 0; r < rows; r++ {
			if !yield(r*dim + c) {
				return
			}
		}
	}
}

func row(dim, r int) func(func(int) bool) {
	return func(yield func(int) bool) {
		for c := 0; c < dim; c++ {
			if !yield(r*dim + c) {
				return
			}
		}
	}
}

// q4Bound: a group of range R = max − min is coded with a step s ≤
// (R + |min|·2⁻¹⁰)/15·(1 + 2⁻¹⁰) (minimum rounded down and step rounded up to
// binary16, relative half-ulp 2⁻¹¹ each, doubled for slack), so the error is
// at most s/2 plus float32 rounding.
func q4Bound(g int) boundFunc {
	return func(x []float32, _, _, i int) float64 {
		lo := i / g * g
		mn, mx := math.Inf(1), math.Inf(-1)
		for _, v := range x[lo : lo+g] {
			mn, mx = min(mn, float64(v)), max(mx, float64(v))
		}
		s := (mx - mn + math.Abs(mn)*0x1p-10) / 15 * (1 + 0x1p-10)
		return s/2 + 1e-6*(math.Abs(mn)+math.Abs(mx))
	}
}

func TestCodecRoundTripWithinDerivedBounds(t *testing.T) {
	const rows, dim = 37, 64
	cases := []struct {
		codec     Codec
		perColumn bool
		bytesPer  float64 // bytes per value, scales excluded for int8
		bound     boundFunc
	}{
		{CodecF32, true, 4, func([]float32, int, int, int) float64 { return 0 }},
		// Round to nearest binary16: relative error ≤ 2⁻¹¹ for normal values.
		{CodecFP16, true, 2, func(x []float32, _, _, i int) float64 { return math.Abs(float64(x[i])) * 0x1p-11 }},
		// Symmetric int8: error ≤ scale/2 with scale = max|x|/127 over the
		// column (K) or the row (V), plus float32 rounding.
		{CodecInt8, true, 1, func(x []float32, rows, dim, i int) float64 {
			return maxAbsOf(x, column(rows, dim, i%dim))/127/2*(1+1e-6) + 1e-7
		}},
		{CodecInt8, false, 1, func(x []float32, _, dim, i int) float64 {
			return maxAbsOf(x, row(dim, i/dim))/127/2*(1+1e-6) + 1e-7
		}},
		{CodecQ4G32, true, 0.5 + 4.0/32, q4Bound(32)},
		{CodecQ4G64, false, 0.5 + 4.0/64, q4Bound(64)},
	}
	r := rand.New(rand.NewPCG(1, 2))
	for _, tc := range cases {
		t.Run(string(tc.codec), func(t *testing.T) {
			x := testMatrix(r, rows, dim)
			b, err := tc.codec.encode(nil, x, rows, dim, tc.perColumn)
			if err != nil {
				t.Fatal(err)
			}
			if len(b) != tc.codec.encodedSize(rows, dim, tc.perColumn) {
				t.Fatalf("encoded %d bytes, encodedSize says %d", len(b), tc.codec.encodedSize(rows, dim, tc.perColumn))
			}
			payload := float64(len(b))
			if tc.codec == CodecInt8 {
				payload -= 4 * float64(rows)
				if tc.perColumn {
					payload += 4*float64(rows) - 4*float64(dim)
				}
			}
			if got := payload / float64(rows*dim); got != tc.bytesPer {
				t.Errorf("%g bytes per value, want %g", got, tc.bytesPer)
			}
			y := make([]float32, rows*dim)
			if err := tc.codec.decode(y, b, rows, dim, tc.perColumn); err != nil {
				t.Fatal(err)
			}
			for i := range x {
				if err, bound := math.Abs(float64(x[i]-y[i])), tc.bound(x, rows, dim, i); err > bound {
					t.Fatalf("value %d: %g decoded as %g, error %g > bound %g", i, x[i], y[i], err, bound)
				}
			}
			if err := tc.codec.decode(y, b[:len(b)-1], rows, dim, tc.perColumn); err == nil {
				t.Error("decoding a truncated matrix succeeded")
			}
		})
	}
}

func TestCodecEncodesConstantAndZeroMatricesExactly(t *testing.T) {
	for _, c := range Codecs {
		for _, val := range []float32{0, 1.5, -3} {
			x := make([]float32, 4*64)
			for i := range x {
				x[i] = val
			}
			b, err := c.encode(nil, x, 4, 64, true)
			if err != nil {
				t.Fatal(err)
			}
			y := make([]float32, len(x))
			if err := c.decode(y, b, 4, 64, true); err != nil {
				t.Fatal(err)
			}
			for i := range y {
				if y[i] != val {
					t.Fatalf("%s: constant %g decoded as %g at %d", c, val, y[i], i)
				}
			}
		}
	}
}

func TestCodecRejectsNonFiniteAndBadShapes(t *testing.T) {
	for _, c := range Codecs {
		x := make([]float32, 64)
		x[5] = float32(math.NaN())
		if _, err := c.encode(nil, x, 1, 64, false); err == nil {
			t.Errorf("%s encoded NaN", c)
		}
		x[5] = float32(math.Inf(-1))
		if _, err := c.encode(nil, x, 1, 64, false); err == nil {
			t.Errorf("%s encoded -Inf", c)
		}
	}
	if _, err := CodecFP16.encode(nil, []float32{70000}, 1, 1, false); err == nil {
		t.Error("fp16 encoded 70000")
	}
	if err := CodecQ4G64.check(96); err == nil {
		t.Error("q4g64 accepted a KV dimension of 96")
	}
	if err := Codec("bf8").check(64); err == nil {
		t.Error("an unknown codec passed check")
	}
}
