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

// TestKLOfHandMadeDistributions checks KL(p ‖ q) on distributions
// given as log-probabilities (shifted, since logits are defined up to a
// constant) against values computed by hand (scipy.stats.entropy(p, q)).
func TestKLOfHandMadeDistributions(t *testing.T) {
	logits := func(shift float64, probs ...float64) []float32 {
		out := make([]float32, len(probs))
		for i, p := range probs {
			out[i] = float32(math.Log(p) + shift)
		}
		return out
	}
	tests := []struct {
		name string
		p, q []float32
		want float64
	}{
		{"identical", logits(0, 0.2, 0.3, 0.5), logits(7, 0.2, 0.3, 0.5), 0},
		{"two outcomes", logits(0, 0.5, 0.5), logits(-3, 0.9, 0.1), 0.5*math.Log(0.5/0.9) + 0.5*math.Log(0.5/0.1)},
		{"three outcomes", logits(2, 0.2, 0.3, 0.5), logits(0, 0.1, 0.6, 0.3), 0.18609796},
	}
	for _, tt := range tests {
		if got := KL(tt.p, tt.q); math.Abs(got-tt.want) > 1e-6 {
			t.Errorf("%s: KL = %.8f, want %.8f", tt.name, got, tt.want)
		}
	}
}
