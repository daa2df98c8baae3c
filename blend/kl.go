package blend

import "math"

// KL is KL(softmax(p) ‖ softmax(q)) in nats, computed in float64: how far
// the next-token distribution of logits q is from that of reference logits
// p (the fidelity measure of a fused mode against full). p and q must have
// the same length. It is never negative.
func KL(p, q []float32) float64 {
	lp, lq := logSoftmax(p), logSoftmax(q)
	kl := 0.0
	for i := range lp {
		if pi := math.Exp(lp[i]); pi > 0 {
			kl += pi * (lp[i] - lq[i])
		}
	}
	return max(kl, 0)
}

// logSoftmax is log(softmax(x)) in float64.
func logSoftmax(x []float32) []float64 {
	mx := math.Inf(-1)
	for _, v := range x {
		mx = max(mx, float64(v))
	}
	sum := 0.0
	for _, v := range x {
		sum += math.Exp(float64(v) - mx)
	}
	lse := mx + math.Log(sum)
	out := make([]float64, len(x))
	for i, v := range x {
		out[i] = float64(v) - lse
	}
	return out
}
