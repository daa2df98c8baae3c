package server

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/blendrag/blendrag/blend"
	"github.com/blendrag/blendrag/model/fetch"
)

func TestCalibrateChoosesSmallestPassingRatioPersistsAndGatesModes(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the generator")
	}
	openTest(t, t.TempDir()).Close() // skips without models
	dir := t.TempDir()
	s, err := Open(Config{DataDir: dir, ModelsDir: fetch.Dir(), Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for title, text := range map[string]string{
		"Herons": "The grey heron of Lake Umber nests in tall reeds. Each spring the herons return from the south.",
		"Bridge": "The Old Stone Bridge of Marlow was built in 1742 by the mason Edwin Clay. It has seven arches.",
		"Tea":    "Green tea from the Kessel hills is picked in May and dried on bamboo trays in the sun.",
	} {
		if _, err := s.IngestText(ctx, title, text, nil); err != nil {
			t.Fatal(err)
		}
	}
	if s.Calibration() != nil {
		t.Fatal("a fresh store has a calibration")
	}
	// r = 1 recomputes every row, so it is full up to rounding (KL ≤ 0.012
	// measured on this model); r = 0.01 recomputes one row of the ~70 and
	// cannot meet a 1e-3 threshold. The gate must choose r = 1.
	c, err := s.Calibrate(ctx, CalibrateOptions{Samples: 2, Chunks: 3, Threshold: 0.02, Ratios: []float64{1, 0.01}, APE: [][2]float64{{1, 1}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("calibration %+v", *c)
	if len(c.Trials) != 3 || c.Samples != 2 {
		t.Fatalf("trials %+v, samples %d: want 3 trials over 2 samples", c.Trials, c.Samples)
	}
	var lo, hi Trial
	for _, tr := range c.Trials {
		switch {
		case tr.Mode == "cacheblend" && tr.Ratio == 1:
			hi = tr
		case tr.Mode == "cacheblend":
			lo = tr
		}
	}
	if !(hi.MeanKL <= 0.02) || hi.Top1 != 1 {
		t.Errorf("r = 1: %+v, want KL ≤ 0.02 and the same first token as full", hi)
	}
	if !(lo.MeanKL > hi.MeanKL) {
		t.Errorf("r = 0.01 (KL %v) is not further from full than r = 1 (KL %v)", lo.MeanKL, hi.MeanKL)
	}
	if !c.CacheBlendOK || c.CacheBlendRatio != 1 {
		t.Errorf("chose ok=%v r=%v, want r = 1", c.CacheBlendOK, c.CacheBlendRatio)
	}
	if opt, _ := s.fusion(blend.ModeCacheBlend, 0, false, 100); opt.Ratio != 1 {
		t.Errorf("the service uses r = %v after calibration, want 1", opt.Ratio)
	}
	if _, err := os.Stat(filepath.Join(dir, CalibrationFile)); err != nil {
		t.Fatal(err)
	}
	ans, err := s.Ask(ctx, AskRequest{Question: "Who built the bridge?", K: 3, MaxTokens: 4}, nil)
	if err != nil || ans.Mode != "cacheblend" || ans.Ratio != 1 {
		t.Errorf("Ask after calibration: mode %q ratio %v (%v), want cacheblend at the calibrated r = 1", ans.Mode, ans.Ratio, err)
	}
	// That query measured load and compute: auto now has an estimate, and
	// never goes below the calibrated ratio.
	ans, err = s.Ask(ctx, AskRequest{Question: "Who built the bridge?", K: 3, MaxTokens: 4, RatioAuto: true}, nil)
	if err != nil || ans.Ratio != 1 || !strings.HasPrefix(ans.Note, "ratio auto: r = ") {
		t.Errorf("Ask with ratio auto: ratio %v note %q (%v)", ans.Ratio, ans.Note, err)
	}
	s.Close()

	// The calibration survives a reopen; an impossible threshold makes
	// cacheblend fall back to full.
	s, err = Open(Config{DataDir: dir, ModelsDir: fetch.Dir(), Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := s.Calibration(); got == nil || got.CacheBlendRatio != 1 {
		t.Fatalf("after reopen: %+v", got)
	}
	if _, err := s.Calibrate(ctx, CalibrateOptions{Samples: 1, Threshold: 1e-12, Ratios: []float64{0.01}, APE: [][2]float64{{0.5, 0.5}}}, nil); err != nil {
		t.Fatal(err)
	}
	if opt, note := s.fusion(blend.ModeCacheBlend, 0, false, 100); opt.Mode != blend.ModeFull || note == "" {
		t.Errorf("uncalibratable cacheblend: %+v (%q), want full with a note", opt, note)
	}
	if opt, _ := s.fusion(blend.ModeAPE, 0, false, 100); opt.Mode != blend.ModeFull {
		t.Errorf("uncalibratable ape: %+v, want full", opt)
	}
	ans, err = s.Ask(ctx, AskRequest{Question: "Who built the bridge?", K: 3, MaxTokens: 4, Mode: "ape"}, nil)
	if err != nil || ans.Mode != "full" || !strings.Contains(ans.Note, "answered with full") {
		t.Errorf("Ask ape when ape cannot meet the threshold: mode %q note %q (%v), want full with a note", ans.Mode, ans.Note, err)
	}
	if _, err := s.Calibrate(ctx, CalibrateOptions{Samples: 1, Ratios: []float64{1.5}}, nil); !errors.Is(err, ErrBadRequest) {
		t.Errorf("ratio 1.5: %v, want ErrBadRequest", err)
	}
}

func TestAutoRatioFollowsLoadOverComputeAndNeverGoesBelowMinimum(t *testing.T) {
	f := &fidelity{}
	if r, est := f.autoRatio(0.15, 1000); r != 0.15 || est {
		t.Fatalf("without estimates: r %v est %v, want 0.15, false", r, est)
	}
	var st blend.Stats
	st.Computed = []int{100, 100}
	st.Compute = 200 * 1000 // 1 µs per row-layer
	// Loading one row of one layer takes 0.4 µs: recompute hides behind
	// loading up to r = 0.4.
	f.observe(800*1000, 1000, 2, st)
	if r, est := f.autoRatio(0.15, 1000); !est || r < 0.399 || r > 0.401 {
		t.Errorf("load 0.4 µs, compute 1 µs per row-layer: r %v (est %v), want 0.4", r, est)
	}
	if r, _ := f.autoRatio(0.6, 1000); r != 0.6 {
		t.Errorf("minimum 0.6: r %v", r)
	}
}
