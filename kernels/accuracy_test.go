package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestQuantizedMatMulWithinActivationRoundingBound measures what quantising
// the activations (Q8_0 / Q8_1 blocks, as ggml does) costs against the exact
// product of the dequantized weights with the float32 activations, and
// checks every output against the analytic bound of that rounding: per
// element |x − d₁₆·q| ≤ d/2 + 127·d·2⁻¹¹ (round to nearest, then the fp16
// scale), and for Q4_1 the block-sum term |Σx − s| ≤ 16·d + |d·Σq|·2⁻¹¹,
// plus a float32 accumulation allowance.
func TestQuantizedMatMulWithinActivationRoundingBound(t *testing.T) {
	rng := rand.New(rand.NewPCG(41, 42))
	p := newTestPool(2)
	defer p.Close()
	const rows, cols, n = 48, 576, 9
	for _, wt := range []DType{Q4_0, Q4_1, Q8_0} {
		m := Matrix{Type: wt, Rows: rows, Cols: cols, Data: randomRows(rng, wt, rows, cols)}
		x := randomActs(rng, n, cols)
		got := make([]float32, n*rows)
		p.MatMul(got, m, x, n)
		w := make([]float32, rows*cols)
		if err := Dequantize(wt, m.Data, w); err != nil {
			t.Fatal(err)
		}
		var num, den float64
		for r := 0; r < n; r++ {
			xr := x[r*cols : (r+1)*cols]
			for o := 0; o < rows; o++ {
				wo := w[o*cols : (o+1)*cols]
				var exact, abs, bound float64
				for b := 0; b < cols/qk; b++ {
					var amax, sumW, sumQ float64
					for i := b * qk; i < (b+1)*qk; i++ {
						amax = math.Max(amax, math.Abs(float64(xr[i])))
					}
					d := amax / 127
					for i := b * qk; i < (b+1)*qk; i++ {
						exact += float64(wo[i]) * float64(xr[i])
						abs += math.Abs(float64(wo[i]) * float64(xr[i]))
						if d > 0 {
							sumQ += math.Round(float64(xr[i]) / d)
						}
					}
					blk := m.Row(o)[b*wt.BlockBytes():]
					if wt == Q4_1 {
						// The min is applied through the block sum s.
						mw := float64(f16at(blk[2:]))
						for i := b * qk; i < (b+1)*qk; i++ {
							sumW += math.Abs(float64(wo[i]) - mw)
						}
						bound += sumW*(d/2+127*d/2048) + math.Abs(mw)*(16*d+math.Abs(d*sumQ)/2048)
					} else {
						for i := b * qk; i < (b+1)*qk; i++ {
							sumW += math.Abs(float64(wo[i]))
						}
						bound += sumW * (d/2 + 127*d/2048)
					}
				}
				g := float64(got[r*rows+o])
				if diff := math.Abs(g - exact); diff > bound*1.001+1e-5*abs+1e-30 {
					t.Fatalf("%v row %d output %d: %v, exact %v, |Δ| %.3g above the bound %.3g", wt, r, o, g, exact, diff, bound)
				}
				num += (g - exact) * (g - exact)
				den += exact * exact
			}
		}
		t.Logf("%v weights × quantized activations: relative RMS error %.2e against the f32 path", wt, math.Sqrt(num/den))
	}
}
