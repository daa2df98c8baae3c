package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
)

// SamplerConfig chooses how the next token is drawn from the logits.
// Temperature ≤ 0 means greedy (argmax, lowest id on ties). Otherwise the
// logits are divided by Temperature, restricted to the TopK most likely
// tokens (0 = all) and then to the smallest set whose probability reaches
// TopP (0 or ≥ 1 = all), renormalised, and sampled with a PCG generator
// seeded by Seed — the same seed gives the same tokens.
type SamplerConfig struct {
	Temperature float32
	TopK        int
	TopP        float32
	Seed        uint64
}

// Validate reports a configuration outside the ranges above.
func (c SamplerConfig) Validate() error {
	switch {
	case math.IsNaN(float64(c.Temperature)) || c.Temperature < 0 || c.Temperature > 100:
		return fmt.Errorf("model: temperature %v out of range [0, 100]", c.Temperature)
	case c.TopK < 0:
		return fmt.Errorf("model: top-k %d must be ≥ 0", c.TopK)
	case math.IsNaN(float64(c.TopP)) || c.TopP < 0 || c.TopP > 1:
		return fmt.Errorf("model: top-p %v out of range [0, 1]", c.TopP)
	}
	return nil
}

// Sampler draws tokens from logits. It keeps its random state between calls
// and reuses its buffers; it is not safe for concurrent use.
type Sampler struct {
	cfg   SamplerConfig
	rng   *rand.Rand
	idx   []int32
	probs []float32
}

// NewSampler returns a sampler for cfg (which should be valid).
func NewSampler(cfg SamplerConfig) *Sampler {
	return &Sampler{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15))}
}

// Greedy reports whether the sampler always takes the argmax.
func (s *Sampler) Greedy() bool { return s.cfg.Temperature <= 0 }

// Argmax returns the index of the largest logit (the lowest on ties).
func Argmax(logits []float32) int32 {
	best := 0
	for i, v := range logits {
		if v > logits[best] {
			best = i
		}
	}
	return int32(best)
}

// Distribution writes into dst (len = len(logits)) the probabilities the
// sampler draws from: temperature, top-k and top-p applied and renormalised;
// tokens outside the kept set get 0. A greedy sampler puts all mass on the
// argmax.
func (s *Sampler) Distribution(dst, logits []float32) {
	clear(dst)
	if s.Greedy() {
		dst[Argmax(logits)] = 1
		return
	}
	s.idx = s.idx[:0]
	for i := range logits {
		s.idx = append(s.idx, int32(i))
	}
	// Order by logit descending (ties by id) when top-k or top-p needs it.
	keep := len(logits)
	if s.cfg.TopK > 0 || (s.cfg.TopP > 0 && s.cfg.TopP < 1) {
		slices.SortFunc(s.idx, func(a, b int32) int {
			if logits[a] != logits[b] {
				if logits[a] > logits[b] {
					return -1
				}
				return 1
			}
			return int(a - b)
		})
		if s.cfg.TopK > 0 && s.cfg.TopK < keep {
			keep = s.cfg.TopK
		}
	}
	mx := float64(logits[Argmax(logits)])
	inv := 1 / float64(s.cfg.Temperature)
	var sum float64
	for _, i := range s.idx[:keep] {
		p := math.Exp((float64(logits[i]) - mx) * inv)
		dst[i] = float32(p)
		sum += p
	}
	if s.cfg.TopP > 0 && s.cfg.TopP < 1 {
		var cum float64
		for j, i := range s.idx[:keep] {
			cum += float64(dst[i]) / sum
			if cum >= float64(s.cfg.TopP) {
				for _, r := range s.idx[j+1 : keep] {
					dst[r] = 0
				}
				keep = j + 1
				break
			}
		}
		sum = 0
		for _, i := range s.idx[:keep] {
			sum += float64(dst[i])
		}
	}
	for _, i := range s.idx[:keep] {
		dst[i] = float32(float64(dst[i]) / sum)
	}
}

// Sample draws the next token from logits.
func (s *Sampler) Sample(logits []float32) int32 {
	if s.Greedy() {
		return Argmax(logits)
	}
	if cap(s.probs) < len(logits) {
		s.probs = make([]float32, len(logits))
	}
	p := s.probs[:len(logits)]
	s.Distribution(p, logits)
	return s.Draw(p)
}

// Draw samples an index from the probability vector p (which sums to ~1).
func (s *Sampler) Draw(p []float32) int32 {
	u := s.rng.Float64()
	var cum float64
	last := int32(-1)
	for i, v := range p {
		if v <= 0 {
			continue
		}
		cum += float64(v)
		last = int32(i)
		if u < cum {
			return int32(i)
		}
	}
	return last
}

// Uniform returns a uniform draw in [0, 1) from the sampler's generator
// (speculative decoding's acceptance test uses the same stream).
func (s *Sampler) Uniform() float64 { return s.rng.Float64() }

// TopK returns the indices of the k largest logits, largest first (ties by
// lower index).
func TopK(logits []float32, k int) []int32 {
	idx := make([]int32, len(logits))
	for i := range idx {
		idx[i] = int32(i)
	}
	slices.SortStableFunc(idx, func(a, b int32) int {
		switch {
		case logits[a] > logits[b]:
			return -1
		case logits[a] < logits[b]:
			return 1
		}
		return 0
	})
	return idx[:min(k, len(idx))]
}
