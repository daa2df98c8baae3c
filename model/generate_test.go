package model_test

import (
	"context"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/blendrag/blendrag/model"
	"github.com/blendrag/blendrag/model/modeltest"
)

func TestSamplerGreedyIsArgmaxLowestIDOnTies(t *testing.T) {
	s := model.NewSampler(model.SamplerConfig{})
	if got := s.Sample([]float32{1, 3, 3, 2}); got != 1 {
		t.Fatalf("greedy picked %d, want 1", got)
	}
}

func TestSamplerSameSeedSameTokens(t *testing.T) {
	logits := []float32{0.1, 0.5, 0.2, 1.5, 0.9, -1, 0.3, 0.8}
	draw := func(seed uint64) []int32 {
		s := model.NewSampler(model.SamplerConfig{Temperature: 1, Seed: seed})
		var out []int32
		for i := 0; i < 50; i++ {
			out = append(out, s.Sample(logits))
		}
		return out
	}
	if !slices.Equal(draw(42), draw(42)) {
		t.Fatal("same seed gave different tokens")
	}
	if slices.Equal(draw(42), draw(43)) {
		t.Fatal("different seeds gave identical 50-token sequences")
	}
}

func TestSamplerDistributionAppliesTopKTopPAndTemperature(t *testing.T) {
	logits := []float32{2, 1, 0, -1, -2}
	cases := []struct {
		name string
		cfg  model.SamplerConfig
		want func([]float32) bool
	}{
		{"top-k 2 keeps two", model.SamplerConfig{Temperature: 1, TopK: 2}, func(p []float32) bool {
			return p[0] > 0 && p[1] > 0 && p[2] == 0 && p[3] == 0 && p[4] == 0
		}},
		{"top-p 0.5 keeps the head only", model.SamplerConfig{Temperature: 1, TopP: 0.5}, func(p []float32) bool {
			return p[0] == 1 && p[1] == 0
		}},
		{"temperature 1 is softmax", model.SamplerConfig{Temperature: 1}, func(p []float32) bool {
			return math.Abs(float64(p[0]/p[1])-math.E) < 1e-5
		}},
		{"temperature 0.5 sharpens", model.SamplerConfig{Temperature: 0.5}, func(p []float32) bool {
			return math.Abs(float64(p[0]/p[1])-math.E*math.E) < 1e-4
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := make([]float32, len(logits))
			model.NewSampler(c.cfg).Distribution(p, logits)
			var sum float64
			for _, v := range p {
				sum += float64(v)
			}
			if math.Abs(sum-1) > 1e-6 || !c.want(p) {
				t.Fatalf("distribution %v (sum %v)", p, sum)
			}
		})
	}
}

func TestSamplerConfigValidateRejectsOutOfRange(t *testing.T) {
	for _, c := range []model.SamplerConfig{{Temperature: -1}, {TopK: -1}, {TopP: 1.5}, {Temperature: float32(math.NaN())}} {
		if c.Validate() == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}

// The decode loop with a greedy sampler is the argmax of step-by-step
// forwards; a stop string ends it and is not emitted; streaming emits
// exactly the final text.
func TestGenerateGreedyStreamsAndStops(t *testing.T) {
	m := modeltest.New(t, specs()[1])
	prompt := m.Tok.Encode("the cat sat on the mat", false)
	run := func(opt model.GenerateOptions) (model.Generation, string) {
		kv := model.NewKV(m.Config)
		logits, err := m.Forward(kv, prompt, model.Positions(0, len(prompt)), false)
		if err != nil {
			t.Fatal(err)
		}
		var streamed strings.Builder
		g, err := m.Generate(context.Background(), kv, logits, opt, func(s string) error {
			streamed.WriteString(s)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return g, streamed.String()
	}
	g, streamed := run(model.GenerateOptions{MaxTokens: 20, IgnoreEOS: true})
	if g.Reason != model.StopMaxTokens || len(g.Tokens) != 20 || streamed != g.Text {
		t.Fatalf("reason %s, %d tokens, streamed %q vs text %q", g.Reason, len(g.Tokens), streamed, g.Text)
	}
	if g.Text != m.Tok.Decode(g.Tokens) {
		t.Fatalf("text %q != decode(tokens) %q", g.Text, m.Tok.Decode(g.Tokens))
	}
	// Reference: argmax step by step.
	kv := model.NewKV(m.Config)
	logits, _ := m.Forward(kv, prompt, model.Positions(0, len(prompt)), false)
	for i, tok := range g.Tokens {
		if want := model.Argmax(logits); tok != want {
			t.Fatalf("token %d: %d, argmax %d", i, tok, want)
		}
		logits, _ = m.Step(kv, tok)
	}
	// Stop at a substring of the unconstrained output.
	if len(g.Text) < 6 {
		t.Skip("output too short to pick a stop string")
	}
	stop := g.Text[3:6]
	g2, streamed2 := run(model.GenerateOptions{MaxTokens: 20, IgnoreEOS: true, Stop: []string{stop}})
	want := g.Text[:strings.Index(g.Text, stop)]
	if g2.Reason != model.StopString || g2.Text != want || streamed2 != want {
		t.Fatalf("with stop %q: reason %s, text %q, streamed %q, want %q", stop, g2.Reason, g2.Text, streamed2, want)
	}
}

func TestGenerateHonoursCancellation(t *testing.T) {
	m := modeltest.New(t, specs()[0])
	kv := model.NewKV(m.Config)
	logits, err := m.Forward(kv, []int32{1, 2, 3}, model.Positions(0, 3), false)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	_, err = m.Generate(ctx, kv, logits, model.GenerateOptions{MaxTokens: 100, IgnoreEOS: true}, func(string) error {
		n++
		if n == 3 {
			cancel()
		}
		return nil
	})
	if err != context.Canceled {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}
