package kernels

import (
	"fmt"
	"math"
)

// Rotary position embedding.
//
// A head of d = headDim values is rotated pair by pair: pair i (i < d/2) is
// (x[2i], x[2i+1]) in the normal (llama, GPT-J style) layout and
// (x[i], x[i+d/2]) in the NEOX (half-split) layout. Pair i turns by the angle
// pos·θ_i with θ_i = base^(−2i/d) (divided by freqFactors[i] when given, as
// for Llama 3.1's rope_freqs). θ_i, the angle and its cosine and sine are
// computed in float64 — positions reach thousands of radians — and cos and
// sin are then rounded to float32. The rotation itself is float32, each
// product rounded before the add:
//
//	x0' = x0·cos − x1·sin
//	x1' = x0·sin + x1·cos
//
// Rotations compose, R(a)·R(b) = R(a+b), so a key rotated for position p is
// moved to position p+Δ by rotating it by Δ (RoPETable.Shift, RoPEShift):
// RoPE(k, p+Δ) = R(Δ·θ)·RoPE(k, p) up to float32 rounding.

// RoPETable holds the frequencies θ_i of one rotary embedding. It is
// immutable after NewRoPETable and safe for concurrent use.
type RoPETable struct {
	headDim int
	neox    bool
	theta   []float64 // θ_i, i < headDim/2
}

// NewRoPETable precomputes θ_i = base^(−2i/headDim) / freqFactors[i] for a
// head of headDim values (even, positive). freqFactors may be nil; otherwise
// it must hold headDim/2 positive factors. base must be positive.
func NewRoPETable(headDim int, base float64, neox bool, freqFactors []float32) (*RoPETable, error) {
	if headDim <= 0 || headDim%2 != 0 {
		return nil, fmt.Errorf("rope: head dimension %d must be positive and even: %w", headDim, ErrShape)
	}
	if !(base > 0) || math.IsInf(base, 0) {
		return nil, fmt.Errorf("rope: base %v must be positive and finite: %w", base, ErrShape)
	}
	if freqFactors != nil && len(freqFactors) != headDim/2 {
		return nil, fmt.Errorf("rope: %d frequency factors for head dimension %d, want %d: %w", len(freqFactors), headDim, headDim/2, ErrShape)
	}
	t := &RoPETable{headDim: headDim, neox: neox, theta: make([]float64, headDim/2)}
	for i := range t.theta {
		t.theta[i] = ropeTheta(i, headDim, base)
		if freqFactors != nil {
			f := float64(freqFactors[i])
			if !(f > 0) || math.IsInf(f, 0) {
				return nil, fmt.Errorf("rope: frequency factor %d is %v, want positive: %w", i, f, ErrShape)
			}
			t.theta[i] /= f
		}
	}
	return t, nil
}

func ropeTheta(i, headDim int, base float64) float64 {
	return math.Pow(base, -float64(2*i)/float64(headDim))
}

// HeadDim returns the head dimension of the table.
func (t *RoPETable) HeadDim() int { return t.headDim }

// NeoX reports whether the table rotates half-split (NEOX) pairs.
func (t *RoPETable) NeoX() bool { return t.neox }

// Theta returns θ_i.
func (t *RoPETable) Theta(i int) float64 { return t.theta[i] }

// CosSin fills cos[i] and sin[i], i < HeadDim()/2, with the float32-rounded
// cosine and sine of pos·θ_i (computed in float64). pos may be negative (a
// backward shift).
func (t *RoPETable) CosSin(pos int, cos, sin []float32) {
	cos = cos[:len(t.theta)]
	sin = sin[:len(t.theta)]
	p := float64(pos)
	for i, th := range t.theta {
		s, c := math.Sincos(p * th)
		cos[i], sin[i] = float32(c), float32(s)
	}
}

// Rotate rotates the nHeads consecutive heads in x (len(x) ≥ nHeads·HeadDim())
// by the angles whose cosines and sines CosSin returned.
func (t *RoPETable) Rotate(x []float32, nHeads int, cos, sin []float32) {
	rotateHeads(x, t.headDim, nHeads, t.neox, cos[:len(t.theta)], sin[:len(t.theta)])
}

// Apply rotates the nHeads consecutive heads in x for position pos, without
// needing cos/sin buffers.
func (t *RoPETable) Apply(x []float32, nHeads, pos int) {
	d, half := t.headDim, t.headDim/2
	x = x[:nHeads*d]
	p := float64(pos)
	for i, th := range t.theta {
		s, c := math.Sincos(p * th)
		rotatePair(x, d, nHeads, i, half, t.neox, float32(c), float32(s))
	}
}

// Shift rotates already-rotated heads by delta positions:
// Shift(RoPE(k, p), Δ) = RoPE(k, p+Δ) up to rounding. It is Apply with
// pos = delta.
func (t *RoPETable) Shift(x []float32, nHeads, delta int) { t.Apply(x, nHeads, delta) }

// RoPE rotates the nHeads consecutive heads of headDim values in x for
// position pos with θ_i = base^(−2i/headDim), in the normal (neox = false)
// or half-split layout. It computes θ on the fly; a RoPETable avoids that.
// It panics if headDim is not positive and even or x is too short.
func RoPE(x []float32, headDim, nHeads, pos int, base float64, neox bool) {
	if headDim <= 0 || headDim%2 != 0 {
		panic(fmt.Sprintf("kernels.RoPE: head dimension %d must be positive and even", headDim))
	}
	x = x[:nHeads*headDim]
	half := headDim / 2
	p := float64(pos)
	for i := 0; i < half; i++ {
		s, c := math.Sincos(p * ropeTheta(i, headDim, base))
		rotatePair(x, headDim, nHeads, i, half, neox, float32(c), float32(s))
	}
}

// RoPEShift rotates already-rotated heads by delta positions (RoPE with
// pos = delta): RoPE(k, p+Δ) = RoPEShift(RoPE(k, p), Δ) up to rounding.
func RoPEShift(x []float32, headDim, nHeads, delta int, base float64, neox bool) {
	RoPE(x, headDim, nHeads, delta, base, neox)
}

// rotateHeads rotates every pair of every head with per-pair cos/sin.
func rotateHeads(x []float32, d, nHeads int, neox bool, cos, sin []float32) {
	half := d / 2
	x = x[:nHeads*d]
	for h := 0; h < nHeads; h++ {
		v := x[h*d : (h+1)*d]
		if neox {
			a, b := v[:half], v[half:]
			for i := range a {
				a[i], b[i] = rot(a[i], b[i], cos[i], sin[i])
			}
		} else {
			for i := 0; i < half; i++ {
				v[2*i], v[2*i+1] = rot(v[2*i], v[2*i+1], cos[i], sin[i])
			}
		}
	}
}

// rotatePair rotates pair i of each head by (c, s).
func rotatePair(x []float32, d, nHeads, i, half int, neox bool, c, s float32) {
	for h := 0; h < nHeads; h++ {
		v := x[h*d : (h+1)*d]
		if neox {
			v[i], v[i+half] = rot(v[i], v[i+half], c, s)
		} else {
			v[2*i], v[2*i+1] = rot(v[2*i], v[2*i+1], c, s)
		}
	}
}

func rot(x0, x1, c, s float32) (float32, float32) {
	return float32(x0*c) - float32(x1*s), float32(x0*s) + float32(x1*c)
}
