package blend

import (
	"math"
	"testing"
)

func TestKLMatchesClosedFormAndIsZeroOnSelf(t *testing.T) {
	// Two-way distributions: p = softmax(0, a) = (1−σ, σ) with σ = 1/(1+e^−a).
	sig := func(a float64) float64 { return 1 / (1 + math.Exp(-a)) }
	for _, tc := range []struct{ a, b float64 }{{0, 0}, {1, 0}, {0, 2}, {-3, 4}, {10, -10}} {
		p, q := sig(tc.a), sig(tc.b)
		want := (1-p)*math.Log((1-p)/(1-q)) + p*math.Log(p/q)
		got := KL([]float32{0, float32(tc.a)}, []float32{0, float32(tc.b)})
		if math.Abs(got-want) > 1e-6*max(1, want) {
			t.Errorf("KL(a=%v ‖ b=%v) = %v, closed form %v", tc.a, tc.b, got, want)
		}
	}
	x := []float32{3, -1, 0.5, 7, 7}
	if kl := KL(x, x); kl != 0 {
		t.Errorf("KL(x ‖ x) = %v, want 0", kl)
	}
	// A shift of every logit leaves the distribution unchanged.
	y := make([]float32, len(x))
	for i := range x {
		y[i] = x[i] + 100
	}
	if kl := KL(x, y); kl > 1e-9 {
		t.Errorf("KL(x ‖ x+100) = %v, want 0", kl)
	}
}
