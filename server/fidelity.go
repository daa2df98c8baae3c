package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/blendrag/blendrag/blend"
	"github.com/blendrag/blendrag/internal/atomicfile"
	"github.com/blendrag/blendrag/model"
)

// DefaultFidelityKL is the fidelity gate's default threshold: the mean
// first-token KL(full ‖ mode), in nats, a fused mode may add.
const DefaultFidelityKL = 0.05

// CalibrationFile is the calibration's file in the data directory.
const CalibrationFile = "calibration.json"

// CalibrateOptions configure Calibrate.
type CalibrateOptions struct {
	// Samples is how many contexts are tried (default 8); each is Chunks
	// chunks (default 3) drawn from different committed documents.
	Samples, Chunks int
	// Threshold is the largest acceptable mean first-token KL against full
	// (default DefaultFidelityKL).
	Threshold float64
	// Ratios are the CacheBlend ratios tried, ascending (default 0.05, 0.1,
	// 0.15, 0.2, 0.3, 0.5); the smallest that meets Threshold is chosen.
	Ratios []float64
	// APE lists the (T, S) pairs tried for APE (default every pair of 0.8,
	// 0.9, 1); the one with the lowest mean KL is chosen, if it meets
	// Threshold.
	APE [][2]float64
	// Seed makes the sample of chunks reproducible.
	Seed uint64
}

func (o *CalibrateOptions) normalize() error {
	if o.Samples == 0 {
		o.Samples = 8
	}
	if o.Chunks == 0 {
		o.Chunks = 3
	}
	if o.Threshold == 0 {
		o.Threshold = DefaultFidelityKL
	}
	if len(o.Ratios) == 0 {
		o.Ratios = []float64{0.05, 0.1, 0.15, 0.2, 0.3, 0.5}
	}
	if len(o.APE) == 0 {
		for _, t := range []float64{0.8, 0.9, 1} {
			for _, s := range []float64{0.8, 0.9, 1} {
				o.APE = append(o.APE, [2]float64{t, s})
			}
		}
	}
	switch {
	case o.Samples < 1 || o.Samples > 1000:
		return fmt.Errorf("calibrate: samples %d outside 1..1000: %w", o.Samples, ErrBadRequest)
	case o.Chunks < 1 || o.Chunks > 32:
		return fmt.Errorf("calibrate: chunks %d outside 1..32: %w", o.Chunks, ErrBadRequest)
	case !(o.Threshold > 0):
		return fmt.Errorf("calibrate: threshold %v must be positive: %w", o.Threshold, ErrBadRequest)
	}
	for _, r := range o.Ratios {
		if !(r > 0 && r <= 1) {
			return fmt.Errorf("calibrate: ratio %v outside (0, 1]: %w", r, ErrBadRequest)
		}
	}
	for _, ts := range o.APE {
		if !(ts[0] > 0 && ts[0] <= 2 && ts[1] > 0 && ts[1] <= 2) {
			return fmt.Errorf("calibrate: APE (T, S) = %v outside (0, 2]: %w", ts, ErrBadRequest)
		}
	}
	slices.Sort(o.Ratios)
	return nil
}

// Trial is one setting the calibration measured.
type Trial struct {
	Mode   string  `json:"mode"`
	Ratio  float64 `json:"ratio,omitempty"`
	T      float64 `json:"t,omitempty"`
	S      float64 `json:"s,omitempty"`
	MeanKL float64 `json:"mean_kl"`
	MaxKL  float64 `json:"max_kl"`
	// Top1 is the share of samples whose first token (argmax) equals full's.
	Top1 float64 `json:"top1_agreement"`
	// Speedup is the mean of full's prefill time over this setting's.
	Speedup float64 `json:"speedup"`
}

// Calibration is the fidelity gate's record for one generator and segment
// format: the CacheBlend ratio and APE (T, S) that keep the mean
// first-token KL against full below Threshold on the store's own chunks.
// A mode that meets no tried setting is not OK, and Ask answers its
// requests with full instead (and says so).
type Calibration struct {
	Model     string    `json:"model"`   // generator fingerprint
	Segment   string    `json:"segment"` // blend.Format key
	Threshold float64   `json:"kl_threshold"`
	Samples   int       `json:"samples"`
	Tokens    float64   `json:"mean_context_tokens"`
	At        time.Time `json:"at"`
	Took      float64   `json:"took_s"`

	CacheBlendOK    bool    `json:"cacheblend_ok"`
	CacheBlendRatio float64 `json:"cacheblend_ratio,omitempty"`
	APEOK           bool    `json:"ape_ok"`
	APET            float64 `json:"ape_t,omitempty"`
	APES            float64 `json:"ape_s,omitempty"`

	// ComputePerRowLayer is the measured time to compute one row through one
	// layer — the recompute cost the loading controller (ratio auto) starts
	// from.
	ComputePerRowLayer time.Duration `json:"compute_per_row_layer_ns"`

	Trials []Trial `json:"trials"`
}

// fidelity is the service's calibration state and the loading
// controller's running cost estimates.
type fidelity struct {
	path string

	mu    sync.Mutex
	calib *Calibration // nil: not calibrated for the current model and P
	// Running means (exponentially weighted) of the time to read and
	// decode one chunk row of one layer, and to compute one row through
	// one layer. Zero until measured.
	loadPerRowLayer, computePerRowLayer float64 // ns
}

// newFidelity loads dir's calibration if it was made for model and segment.
func newFidelity(dir, model, segment string) (*fidelity, error) {
	f := &fidelity{path: filepath.Join(dir, CalibrationFile)}
	b, err := os.ReadFile(f.path)
	if errors.Is(err, fs.ErrNotExist) {
		return f, nil
	}
	if err != nil {
		return nil, fmt.Errorf("calibration: %w", err)
	}
	var c Calibration
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("calibration %s: %w", f.path, err)
	}
	if c.Model == model && c.Segment == segment {
		f.calib = &c
		f.computePerRowLayer = float64(c.ComputePerRowLayer)
	}
	return f, nil
}

// calibration returns the current calibration, or nil.
func (f *fidelity) calibration() *Calibration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calib
}

// set stores c as the calibration, on disk and in memory.
func (f *fidelity) set(c *Calibration) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(f.path, append(b, '\n')); err != nil {
		return fmt.Errorf("calibration: %w", err)
	}
	f.mu.Lock()
	f.calib = c
	if f.computePerRowLayer == 0 {
		f.computePerRowLayer = float64(c.ComputePerRowLayer)
	}
	f.mu.Unlock()
	return nil
}

// ewma folds x into the running mean m (weight 1/4 for the new sample).
func ewma(m, x float64) float64 {
	if m == 0 {
		return x
	}
	return 0.75*m + 0.25*x
}

// observe records a fused prefill's costs: read is the KV store's raw read
// time for rows chunk rows over layers layers.
func (f *fidelity) observe(read time.Duration, rows, layers int, st blend.Stats) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if read > 0 && rows > 0 && layers > 0 {
		f.loadPerRowLayer = ewma(f.loadPerRowLayer, float64(read)/float64(rows*layers))
	}
	if c := st.ComputePerRow(); c > 0 {
		f.computePerRowLayer = ewma(f.computePerRowLayer, float64(c))
	}
}

// autoRatio is CacheBlend's loading controller for a context of rows chunk
// rows: max(minRatio, the r whose recompute time equals the load time)
// from the running estimates, and whether an estimate was available
// (without one it is minRatio).
func (f *fidelity) autoRatio(minRatio float64, rows int) (float64, bool) {
	f.mu.Lock()
	load, comp := f.loadPerRowLayer, f.computePerRowLayer
	f.mu.Unlock()
	if load == 0 || comp == 0 {
		return minRatio, false
	}
	// Per layer: loading takes rows·load, recomputing r·rows rows takes
	// r·rows·comp.
	return blend.AutoRatio(minRatio, time.Duration(float64(rows)*load), time.Duration(comp), rows), true
}

// Calibration returns the fidelity gate's current calibration for the
// loaded generator and segment format, or nil when the store has not been
// calibrated for them (then the built-in defaults apply: CacheBlend r =
// blend.DefaultRatio, APE T = S = 0.9).
func (s *Service) Calibration() *Calibration {
	if s.eng == nil || s.eng.fid == nil {
		return nil
	}
	return s.eng.fid.calibration()
}

// CalibrateProgress reports Calibrate's progress.
type CalibrateProgress struct {
	Done, Total int
}

// Calibrate runs the fidelity gate: on opt.Samples contexts of the store's
// own chunks (opt.Chunks chunks from different committed documents, in a
// seeded random draw; the question asks about the first chunk's document
// title), it prefills each in full and in every tried CacheBlend ratio and
// APE (T, S), and records per setting the first-token KL against full. The
// smallest ratio (and the best APE pair) whose mean KL is within
// opt.Threshold is saved to DIR/calibration.json and used by Ask from then
// on. It holds the model for the whole run (queries wait).
func (s *Service) Calibrate(ctx context.Context, opt CalibrateOptions, progress func(CalibrateProgress)) (*Calibration, error) {
	if s.eng == nil {
		return nil, fmt.Errorf("calibrate: the generator is not loaded: %w", ErrBadRequest)
	}
	if err := opt.normalize(); err != nil {
		return nil, err
	}
	start := time.Now()
	samples, err := s.calibrationSamples(opt)
	if err != nil {
		return nil, err
	}
	e := s.eng
	unlock := e.lockForQuery()
	defer unlock()

	type setting struct {
		trial Trial
		opt   blend.Options
		kls   []float64
		top1  int
		time  time.Duration
	}
	var settings []*setting
	for _, r := range opt.Ratios {
		settings = append(settings, &setting{trial: Trial{Mode: string(blend.ModeCacheBlend), Ratio: r},
			opt: blend.Options{Mode: blend.ModeCacheBlend, Ratio: r, Backend: e.be}})
	}
	for _, ts := range opt.APE {
		settings = append(settings, &setting{trial: Trial{Mode: string(blend.ModeAPE), T: ts[0], S: ts[1]},
			opt: blend.Options{Mode: blend.ModeAPE, T: ts[0], S: ts[1], Backend: e.be}})
	}
	var fullTime time.Duration
	var rowLayers, tokens int
	var compute time.Duration
	for i, sm := range samples {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("calibrate: %w", err)
		}
		seg := e.format.Segments(sm.question, sm.texts)
		tokens += len(seg.Tokens())
		t0 := time.Now()
		fullOpt := blend.DefaultOptions(blend.ModeFull)
		fullOpt.Backend = e.be
		ref, err := blend.Prefill(ctx, e.m, seg, e.prefix, nil, fullOpt)
		if err != nil {
			return nil, fmt.Errorf("calibrate: full: %w", err)
		}
		fullTime += time.Since(t0)
		for _, c := range ref.Stats.Computed {
			rowLayers += c
		}
		compute += ref.Stats.Compute
		for _, st := range settings {
			ld, _, err := s.loadKV(ctx, sm.ids)
			if err != nil {
				return nil, fmt.Errorf("calibrate: %w", err)
			}
			t0 := time.Now()
			res, err := blend.Prefill(ctx, e.m, seg, e.prefix, ld, st.opt)
			st.time += time.Since(t0)
			ld.Close()
			if err != nil {
				return nil, fmt.Errorf("calibrate: %s: %w", st.opt.Mode, err)
			}
			st.kls = append(st.kls, blend.KL(ref.Logits, res.Logits))
			if model.Argmax(ref.Logits) == model.Argmax(res.Logits) {
				st.top1++
			}
		}
		if progress != nil {
			progress(CalibrateProgress{Done: i + 1, Total: len(samples)})
		}
	}
	c := &Calibration{
		Model: e.fp, Segment: e.format.Key(), Threshold: opt.Threshold, Samples: len(samples),
		Tokens: float64(tokens) / float64(len(samples)), At: time.Now().UTC(),
	}
	if rowLayers > 0 {
		c.ComputePerRowLayer = compute / time.Duration(rowLayers)
	}
	bestAPE := math.Inf(1)
	for _, st := range settings {
		t := st.trial
		for _, kl := range st.kls {
			t.MeanKL += kl / float64(len(st.kls))
			t.MaxKL = max(t.MaxKL, kl)
		}
		t.Top1 = float64(st.top1) / float64(len(samples))
		if st.time > 0 {
			t.Speedup = float64(fullTime) / float64(st.time)
		}
		c.Trials = append(c.Trials, t)
		ok := t.MeanKL <= opt.Threshold
		switch blend.Mode(t.Mode) {
		case blend.ModeCacheBlend:
			if ok && !c.CacheBlendOK { // ratios ascend: the first that passes is the smallest
				c.CacheBlendOK, c.CacheBlendRatio = true, t.Ratio
			}
		case blend.ModeAPE:
			if ok && t.MeanKL < bestAPE {
				bestAPE = t.MeanKL
				c.APEOK, c.APET, c.APES = true, t.T, t.S
			}
		}
	}
	c.Took = time.Since(start).Seconds()
	if err := e.fid.set(c); err != nil {
		return nil, err
	}
	return c, nil
}

// calibrationSample is one context of the calibration.
type calibrationSample struct {
	question string
	texts    []string
	ids      []string
}

// calibrationSamples draws the calibration's contexts: per sample, chunks
// from distinct committed documents (a random chunk of each), and a
// question about the first document.
func (s *Service) calibrationSamples(opt CalibrateOptions) ([]calibrationSample, error) {
	docs, _, err := s.Documents(0, 0)
	if err != nil {
		return nil, fmt.Errorf("calibrate: %w", err)
	}
	if len(docs) == 0 {
		return nil, fmt.Errorf("calibrate: the store has no documents: %w", ErrBadRequest)
	}
	rng := rand.New(rand.NewPCG(opt.Seed, 0x63616c6962))
	budget := s.eng.m.Config.Context - len(s.eng.format.Prefix()) - 64
	var out []calibrationSample
	for range opt.Samples {
		perm := rng.Perm(len(docs))
		var sm calibrationSample
		used := 0
		for _, di := range perm[:min(opt.Chunks, len(perm))] {
			_, chunks, err := s.Document(docs[di].ID)
			if err != nil {
				return nil, fmt.Errorf("calibrate: %w", err)
			}
			if len(chunks) == 0 {
				continue
			}
			ch := chunks[rng.IntN(len(chunks))]
			n := len(s.eng.format.Chunk(ch.Text))
			if used+n > budget {
				break
			}
			used += n
			if sm.question == "" {
				sm.question = fmt.Sprintf("What do the passages say about %s?", docs[di].Title)
			}
			sm.texts = append(sm.texts, ch.Text)
			sm.ids = append(sm.ids, ch.ID)
		}
		if len(sm.ids) > 0 {
			out = append(out, sm)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("calibrate: no chunks to sample: %w", ErrBadRequest)
	}
	return out, nil
}

// fusion resolves a request's mode and CacheBlend ratio into blend options
// for a context of rows chunk rows: an explicit ratio is used as given; auto
// asks the loading controller (starting from the calibrated ratio); else
// the calibrated ratio or the default. A mode the calibration found unable
// to meet the fidelity threshold becomes full. note says what was decided
// when it is not simply the request (for the answer's timings).
func (s *Service) fusion(mode blend.Mode, ratio float64, auto bool, rows int) (opt blend.Options, note string) {
	opt = blend.DefaultOptions(mode)
	c := s.Calibration()
	switch mode {
	case blend.ModeCacheBlend:
		if c != nil && !c.CacheBlendOK && ratio == 0 {
			return blend.DefaultOptions(blend.ModeFull), fmt.Sprintf("cacheblend missed the calibrated fidelity threshold (KL %.3g) at every ratio tried: answered with full", c.Threshold)
		}
		minR := opt.Ratio
		if c != nil && c.CacheBlendOK {
			minR = c.CacheBlendRatio
		}
		switch {
		case ratio > 0:
			opt.Ratio = ratio
		case auto:
			r, est := s.eng.fid.autoRatio(minR, rows)
			opt.Ratio = r
			if !est {
				note = fmt.Sprintf("ratio auto: no load/compute estimate yet, r = %.3g", r)
			} else {
				note = fmt.Sprintf("ratio auto: r = %.3g", r)
			}
		default:
			opt.Ratio = minR
		}
	case blend.ModeAPE:
		if c != nil && !c.APEOK {
			return blend.DefaultOptions(blend.ModeFull), fmt.Sprintf("ape missed the calibrated fidelity threshold (KL %.3g) at every (T, S) tried: answered with full", c.Threshold)
		}
		if c != nil {
			opt.T, opt.S = c.APET, c.APES
		}
	}
	return opt, note
}
