package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/blendrag/blendrag/blend"
	"github.com/blendrag/blendrag/model"
)

// The pinned settings of eval blend (issue 6 item 6).
const (
	evalBlendInstruction = "Answer the question from the passages below in a few words."
	evalBlendMaxTokens   = 32 // answer tokens generated per mode
	evalBlendForced      = 16 // full's answer tokens checked by teacher forcing
	evalBlendResamples   = 1000
	evalBlendSeed        = 20250101 // bootstrap seed
)

// blendAnswer is one greedy answer scored against the gold answers.
type blendAnswer struct {
	Answer string  `json:"answer"`
	F1     float64 `json:"f1"`
	EM     float64 `json:"em"`
}

// blendModeRecord is one mode's outcome on one question.
type blendModeRecord struct {
	blendAnswer
	// KL is the first-token KL divergence KL(full ‖ mode) in nats.
	KL float64 `json:"kl"`
	// Agreement is the share of full's first ≤16 answer tokens that the
	// mode ranks top-1 given full's preceding tokens (teacher forcing).
	Agreement float64 `json:"agreement"`
	Forced    int     `json:"forced_tokens"`
	// AnswerAgreement is 1 when the normalised greedy answer equals full's.
	AnswerAgreement float64 `json:"answer_agreement"`
	TTFTMS          float64 `json:"ttft_ms"`
	// TTFTDeviceMS is the TTFT with the chunks' KV already in the GPU's
	// tier (model.ChunkTier; a --device whose backend has one, modes
	// other than full), and DeviceKL that prefill's first-token KL(full ‖
	// mode): the context assembled on the device must be as faithful.
	TTFTDeviceMS float64 `json:"ttft_device_ms,omitempty"`
	DeviceKL     float64 `json:"device_kl,omitempty"`
	// Profile is the device's time per operation in one more, untimed
	// prefill (--profile-device; the first question evaluated only).
	Profile *blendProfile `json:"device_profile,omitempty"`
	// RowLayers is the number of (row, layer) pairs the prefill computed.
	RowLayers int `json:"row_layers"`
	// Selection describes the chunk rows CacheBlend recomputed (cacheblend
	// only).
	Selection *blendSelection `json:"selection,omitempty"`
}

// blendSelection places the chunk rows CacheBlend recomputed at its last
// layer in their chunks, beside the same counts over all chunk rows.
type blendSelection struct {
	Rows       int    `json:"rows"`        // selected chunk rows
	ChunkRows  int    `json:"chunk_rows"`  // all chunk rows
	Starts     int    `json:"starts"`      // selected rows among the first selectionStart rows of their chunk
	AllStarts  int    `json:"all_starts"`  // chunk rows among the first selectionStart rows of their chunk
	Quarters   [4]int `json:"quarters"`    // selected rows by position in their chunk: first … last quarter
	First      int    `json:"first_chunk"` // selected rows of the first chunk
	FirstChunk int    `json:"first_rows"`  // rows of the first chunk
}

// selectionStart is how many leading rows of a chunk count as its start
// (where an independently encoded chunk keeps its attention sink).
const selectionStart = 4

// newBlendSelection places selected (context rows, as blend.Stats.Selected)
// in seg's chunks; the context holds seg.Prefix's rows, then the chunks'.
func newBlendSelection(seg blend.Segments, selected []int) *blendSelection {
	sel := &blendSelection{}
	type span struct{ start, n int }
	spans := make([]span, len(seg.Chunks))
	at := len(seg.Prefix)
	for i, c := range seg.Chunks {
		spans[i] = span{at, len(c)}
		at += len(c)
		sel.ChunkRows += len(c)
		sel.AllStarts += min(len(c), selectionStart)
	}
	if len(spans) > 0 {
		sel.FirstChunk = spans[0].n
	}
	for _, row := range selected {
		i, _ := slices.BinarySearchFunc(spans, row, func(s span, row int) int {
			if s.start+s.n <= row {
				return -1
			}
			if s.start > row {
				return 1
			}
			return 0
		})
		if i == len(spans) || row < spans[i].start {
			continue // not a chunk row
		}
		sel.Rows++
		off := row - spans[i].start
		if off < selectionStart {
			sel.Starts++
		}
		sel.Quarters[4*off/spans[i].n]++
		if i == 0 {
			sel.First++
		}
	}
	return sel
}

// blendRecord is one question's line in the JSONL output.
type blendRecord struct {
	Index         int                        `json:"index"`
	Question      string                     `json:"question"`
	Answers       []string                   `json:"answers"`
	Model         string                     `json:"model"` // fingerprint
	Ratio         float64                    `json:"ratio"`
	Gradual       bool                       `json:"gradual,omitempty"`
	CheckLayer    int                        `json:"check_layer,omitempty"` // CacheBlend's; 0 = the default (1)
	MaxContext    int                        `json:"max_context"`
	Chunks        int                        `json:"chunks"`
	Passages      int                        `json:"passages"`
	Tokens        int                        `json:"tokens"` // full's prefill tokens (P, chunks, Q)
	KVPrecomputeS float64                    `json:"kv_precompute_s"`
	NoContext     blendAnswer                `json:"no_context"`
	Modes         map[string]blendModeRecord `json:"modes"`
}

// interval is a mean with its 95% bootstrap interval.
type interval struct {
	Mean float64 `json:"mean"`
	Lo   float64 `json:"lo"`
	Hi   float64 `json:"hi"`
}

// blendModeSummary aggregates one mode over the questions.
type blendModeSummary struct {
	KL              interval `json:"kl"`
	Agreement       interval `json:"agreement"`
	AnswerAgreement interval `json:"answer_agreement"`
	F1              interval `json:"f1"`
	EM              interval `json:"em"`
	TTFTP50MS       float64  `json:"ttft_p50_ms"`
	TTFTP90MS       float64  `json:"ttft_p90_ms"`
	// TTFTDeviceP50MS is the median TTFT with the chunks in the GPU's
	// tier, SpeedupDevice median TTFT(full) over it, DeviceKL the mean
	// first-token KL of those prefills (0 without a GPU tier).
	TTFTDeviceP50MS float64 `json:"ttft_device_p50_ms,omitempty"`
	SpeedupDevice   float64 `json:"speedup_device,omitempty"`
	DeviceKL        float64 `json:"device_kl,omitempty"`
	// SpeedupMedians is median TTFT(full) / median TTFT(mode);
	// SpeedupMean the mean over questions of TTFT(full)/TTFT(mode).
	SpeedupMedians float64 `json:"speedup_ratio_of_medians"`
	SpeedupMean    float64 `json:"speedup_mean_of_ratios"`
	// Selection pools CacheBlend's selections over the questions that
	// recorded one.
	Selection *selectionSummary `json:"selection,omitempty"`
}

// selectionSummary is where CacheBlend's recomputed rows sit, pooled over
// questions: each share of the selected rows beside the same share of all
// chunk rows (what a uniform choice would give).
type selectionSummary struct {
	Rows            int        `json:"rows"`
	StartShare      float64    `json:"chunk_start_share"`
	StartBase       float64    `json:"chunk_start_base"`
	QuarterShare    [4]float64 `json:"quarter_share"`
	FirstChunkShare float64    `json:"first_chunk_share"`
	FirstChunkBase  float64    `json:"first_chunk_base"`
}

// summarizeSelection pools the selections of recs' mode name, nil if none
// recorded one.
func summarizeSelection(recs []blendRecord, name string) *selectionSummary {
	var tot blendSelection
	for _, r := range recs {
		sel := r.Modes[name].Selection
		if sel == nil {
			continue
		}
		tot.Rows += sel.Rows
		tot.ChunkRows += sel.ChunkRows
		tot.Starts += sel.Starts
		tot.AllStarts += sel.AllStarts
		tot.First += sel.First
		tot.FirstChunk += sel.FirstChunk
		for i, q := range sel.Quarters {
			tot.Quarters[i] += q
		}
	}
	if tot.Rows == 0 || tot.ChunkRows == 0 {
		return nil
	}
	n := float64(tot.Rows)
	s := &selectionSummary{
		Rows:            tot.Rows,
		StartShare:      float64(tot.Starts) / n,
		StartBase:       float64(tot.AllStarts) / float64(tot.ChunkRows),
		FirstChunkShare: float64(tot.First) / n,
		FirstChunkBase:  float64(tot.FirstChunk) / float64(tot.ChunkRows),
	}
	for i, q := range tot.Quarters {
		s.QuarterShare[i] = float64(q) / n
	}
	return s
}

// blendSummary is eval blend's result.
type blendSummary struct {
	Dataset            string                      `json:"dataset"`
	Questions          int                         `json:"questions"`
	Ratio              float64                     `json:"ratio"`
	Gradual            bool                        `json:"gradual,omitempty"`
	CheckLayer         int                         `json:"check_layer,omitempty"`
	MeanChunks         float64                     `json:"mean_chunks"`
	MeanTokens         float64                     `json:"mean_tokens"`
	KVPrecomputeS      float64                     `json:"kv_precompute_s"`
	FullTokensPerS     float64                     `json:"full_prefill_tokens_per_s"`
	NoContextF1        interval                    `json:"no_context_f1"`
	NoContextEM        interval                    `json:"no_context_em"`
	FullMinusNoContext interval                    `json:"f1_full_minus_no_context"`
	FullBeatsNoContext bool                        `json:"full_beats_no_context"`
	Modes              map[string]blendModeSummary `json:"modes"`
	Order              []string                    `json:"mode_order"`
}

// evalBlendFlags are the flags of eval blend.
type evalBlendFlags struct {
	ef         engineFlags
	dataset    string
	data       string
	out        string
	limit      int
	modes      []string
	ratio      float64
	gradual    bool
	checkLayer int
	maxContext int
	json       bool
	profile    bool
}

// addEvalBlendCommand registers `eval blend` under eval.
func addEvalBlendCommand(eval *cobra.Command) {
	var fl evalBlendFlags
	cmd := &cobra.Command{
		Use:   "blend --dataset FILE [--limit N] [--modes LIST] [--out F.jsonl] [--json]",
		Short: "Fusion fidelity (KL, agreement), F1/EM and TTFT of each blend mode against full prefill",
		Long: "blend answers each question from its own passages (one chunk per passage, in the dataset's\n" +
			"order, as many as fit the context budget; no retrieval — --data is accepted and unused).\n" +
			"Chunk KV is precomputed first (kv_precompute_s, in memory); then each mode prefills and\n" +
			"answers greedily (at most 32 tokens, stop at a newline, the prompt asks for a few words).\n" +
			"Per mode: first-token KL(full ‖ mode), teacher-forced agreement with full's first 16 answer\n" +
			"tokens, answer agreement, F1/EM against gold (with a no-context baseline), TTFT = wall time\n" +
			"of the prefill. One JSONL line per question goes to --out; a rerun skips the questions\n" +
			"already there. The summary has 95% bootstrap intervals (1000 resamples, fixed seed).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runEvalBlend(cmd, &fl) },
	}
	fl.ef.register(cmd)
	f := cmd.Flags()
	f.StringVar(&fl.dataset, "dataset", "", "dataset JSON (e.g. ../shared/eval/musique_dev.json)")
	f.StringVar(&fl.data, "data", "", "accepted for symmetry with ask; unused (passages come from the dataset)")
	f.StringVar(&fl.out, "out", "", "JSONL file of per-question results (appended; resumes a previous run)")
	f.IntVar(&fl.limit, "limit", 0, "evaluate only the first N questions (0 = all)")
	f.StringSliceVar(&fl.modes, "modes", modeNames(blend.Modes), "modes to evaluate (full is always run: it is the reference)")
	f.Float64Var(&fl.ratio, "ratio", blend.DefaultRatio, "CacheBlend recompute ratio r in [0, 1]")
	f.BoolVar(&fl.gradual, "gradual", false, "CacheBlend with gradual filtering (2r rows at layer 1, r from layer 2)")
	f.IntVar(&fl.checkLayer, "check-layer", 0, "CacheBlend's check layer, where it selects its rows (0 = the default, 1)")
	f.IntVar(&fl.maxContext, "max-context", 0, "cap the context budget at N tokens (0 = the model's context length)")
	f.BoolVar(&fl.json, "json", false, "print the summary as JSON")
	f.BoolVar(&fl.profile, "profile-device", false, "device backends: on the first question evaluated, profile one more, untimed prefill per mode (and per chunk tier) — device time per kernel and copy, in the record's device_profile")
	cmd.MarkFlagRequired("dataset")
	eval.AddCommand(cmd)
}

func modeNames(ms []blend.Mode) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = string(m)
	}
	return out
}

// parseEvalModes parses names, puts full first (adding it if missing) and
// drops repeats.
func parseEvalModes(names []string) ([]blend.Mode, error) {
	out := []blend.Mode{blend.ModeFull}
	for _, n := range names {
		m, err := blend.ParseMode(strings.TrimSpace(n))
		if err != nil {
			return nil, err
		}
		if !slices.Contains(out, m) {
			out = append(out, m)
		}
	}
	return out, nil
}

func runEvalBlend(cmd *cobra.Command, fl *evalBlendFlags) error {
	modes, err := parseEvalModes(fl.modes)
	if err != nil {
		return err
	}
	if !(fl.ratio >= 0 && fl.ratio <= 1) {
		return fmt.Errorf("--ratio %v outside [0, 1]", fl.ratio)
	}
	if fl.limit < 0 || fl.maxContext < 0 {
		return fmt.Errorf("--limit and --max-context must be ≥ 0")
	}
	items, err := loadDataset(fl.dataset)
	if err != nil {
		return err
	}
	if fl.limit > 0 && fl.limit < len(items) {
		items = items[:fl.limit]
	}
	m, be, err := fl.ef.open(cmd)
	if err != nil {
		return err
	}
	defer m.Close()
	defer be.Close()
	r, err := newBlendRunner(m, modes, fl.ratio, fl.maxContext)
	if err != nil {
		return err
	}
	r.be = be
	if fl.profile {
		if r.profiler, _ = be.(model.Profiler); r.profiler == nil {
			return fmt.Errorf("--profile-device: device %s cannot profile its work", be.Device())
		}
		r.profileLog = cmd.ErrOrStderr()
	}
	r.gradual = fl.gradual
	r.checkLayer = fl.checkLayer
	done := map[int]blendRecord{}
	var out *os.File
	if fl.out != "" {
		if done, err = readBlendRecords(fl.out); err != nil {
			return err
		}
		if out, err = openJSONL(fl.out); err != nil {
			return err
		}
		defer out.Close()
	}
	var recs []blendRecord
	logw := cmd.ErrOrStderr()
	for i, it := range items {
		if rec, ok := done[i]; ok && r.matches(rec) {
			recs = append(recs, rec)
			continue
		} else if ok && !r.compatible(rec) {
			return fmt.Errorf("%s: question %d was measured with another model, ratio or context cap; use another --out", fl.out, i)
		}
		start := time.Now()
		rec, err := r.question(cmd.Context(), i, it)
		if err != nil {
			return fmt.Errorf("question %d: %w", i, err)
		}
		if out != nil {
			if err := appendJSONL(out, rec); err != nil {
				return fmt.Errorf("%s: %w", fl.out, err)
			}
		}
		recs = append(recs, rec)
		fmt.Fprintf(logw, "eval blend: question %d/%d: %d chunks, %d tokens, %.1f s\n", i+1, len(items), rec.Chunks, rec.Tokens, time.Since(start).Seconds())
	}
	sum, err := summarizeBlend(fl.dataset, fl.ratio, modes, recs)
	if err != nil {
		return err
	}
	sum.Gradual = fl.gradual
	sum.CheckLayer = fl.checkLayer
	if fl.json {
		enc := json.NewEncoder(cmd.OutOrStdout())
		enc.SetIndent("", "  ")
		return enc.Encode(sum)
	}
	return printBlendSummary(cmd.OutOrStdout(), sum)
}

// blendRunner evaluates questions with one model and prompt format.
type blendRunner struct {
	m          *model.Model
	format     *blend.Format
	prefixKV   *model.KV
	modes      []blend.Mode
	ratio      float64
	gradual    bool // CacheBlend's gradual filtering
	checkLayer int  // CacheBlend's check layer (0: the default)
	maxContext int
	budget     int // context rows available to P, chunks and Q, before the answer
	fp         string
	gen        model.GenerateOptions
	be         model.Backend  // --device: chunk encoding, prefill and decode (nil: the CPU)
	profiler   model.Profiler // --profile-device: be, until one question is profiled
	profileLog io.Writer
}

func newBlendRunner(m *model.Model, modes []blend.Mode, ratio float64, maxContext int) (*blendRunner, error) {
	f, err := blend.NewFormat(m.Tok, blend.DefaultSystem, evalBlendInstruction)
	if err != nil {
		return nil, err
	}
	pkv, err := blend.EncodePrefix(m, f.Prefix())
	if err != nil {
		return nil, err
	}
	budget := m.Config.Context
	if maxContext > 0 {
		budget = min(budget, maxContext)
	}
	return &blendRunner{
		m: m, format: f, prefixKV: pkv, modes: modes, ratio: ratio, maxContext: maxContext,
		budget: budget - evalBlendMaxTokens,
		fp:     m.Fingerprint(),
		gen:    model.GenerateOptions{MaxTokens: evalBlendMaxTokens, Stop: []string{"\n"}},
	}, nil
}

// compatible reports whether rec was measured under the runner's settings.
func (r *blendRunner) compatible(rec blendRecord) bool {
	return rec.Model == r.fp && rec.Ratio == r.ratio && rec.Gradual == r.gradual && rec.CheckLayer == r.checkLayer && rec.MaxContext == r.maxContext
}

// matches reports whether rec can be reused: same settings, every mode.
func (r *blendRunner) matches(rec blendRecord) bool {
	if !r.compatible(rec) {
		return false
	}
	for _, m := range r.modes {
		if _, ok := rec.Modes[string(m)]; !ok {
			return false
		}
	}
	return true
}

// passageText is the chunk text of a passage: its title (when the dataset
// gives one) on the first line, then its text.
func passageText(title, text string) string {
	if t := strings.TrimSpace(title); t != "" {
		return t + "\n" + text
	}
	return text
}

// question runs every mode on one question.
func (r *blendRunner) question(ctx context.Context, idx int, it evalItem) (blendRecord, error) {
	rec := blendRecord{
		Index: idx, Question: it.Question, Answers: it.Answers, Model: r.fp, Ratio: r.ratio, Gradual: r.gradual, CheckLayer: r.checkLayer,
		MaxContext: r.maxContext, Passages: len(it.Ctxs), Modes: map[string]blendModeRecord{},
	}
	var texts []string
	q := r.format.Question(it.Question)
	used := len(r.format.Prefix()) + len(q)
	for _, c := range it.Ctxs {
		n := len(r.format.Chunk(passageText(c.Title, c.Text)))
		if used+n > r.budget {
			break
		}
		used += n
		texts = append(texts, passageText(c.Title, c.Text))
	}
	if len(texts) == 0 {
		return rec, fmt.Errorf("no passage fits the context budget of %d tokens", r.budget)
	}
	seg := r.format.Segments(it.Question, texts)
	rec.Chunks, rec.Tokens = len(seg.Chunks), used

	start := time.Now()
	kvs := make([]*model.KV, len(seg.Chunks))
	for i, c := range seg.Chunks {
		kv, err := blend.EncodeChunkOn(r.be, r.m, r.prefixKV, c)
		if err != nil {
			return rec, err
		}
		kvs[i] = kv
	}
	rec.KVPrecomputeS = time.Since(start).Seconds()
	src := blend.MemorySource(kvs)

	// No-context baseline: P and Q only.
	nc := blend.Segments{Prefix: seg.Prefix, Question: seg.Question}
	ncOpt := blend.DefaultOptions(blend.ModeFull)
	ncOpt.Backend = r.be
	res, err := blend.Prefill(ctx, r.m, nc, r.prefixKV, nil, ncOpt)
	if err != nil {
		return rec, fmt.Errorf("no-context prefill: %w", err)
	}
	g, err := blend.Generate(ctx, r.m, res, r.gen, nil)
	if err != nil {
		return rec, fmt.Errorf("no-context answer: %w", err)
	}
	rec.NoContext = scoreAnswer(g.Text, it.Answers)

	var fullLogits []float32
	var fullTokens []int32
	var fullAnswer string
	tier, _ := r.be.(model.ChunkTier)
	ids := make([]string, len(seg.Chunks))
	for i := range ids {
		ids[i] = fmt.Sprintf("eval/%d/%d", idx, i) // the question's chunks, in this process
	}
	tierWarm := false
	for _, mode := range r.modes { // full first
		opt := blend.DefaultOptions(mode)
		opt.Ratio = r.ratio
		opt.Gradual = r.gradual && mode == blend.ModeCacheBlend
		opt.CheckLayer = r.checkLayer
		opt.Backend = r.be
		start := time.Now()
		res, err := blend.Prefill(ctx, r.m, seg, r.prefixKV, src, opt)
		if err != nil {
			return rec, fmt.Errorf("%s prefill: %w", mode, err)
		}
		ttft := time.Since(start)
		logits := slices.Clone(res.Logits)
		g, err := blend.Generate(ctx, r.m, res, r.gen, nil)
		if err != nil {
			return rec, fmt.Errorf("%s answer: %w", mode, err)
		}
		if mode == blend.ModeFull {
			fullLogits, fullTokens, fullAnswer = logits, g.Tokens[:min(len(g.Tokens), evalBlendForced)], g.Text
		}
		// Generate grew the context; teacher forcing starts after Q again.
		rows := res.Stats.Rows
		res.KV.Truncate(rows)
		if res.Groups != nil {
			res.Groups.Of = res.Groups.Of[:rows]
		}
		res.Logits = logits
		agree, err := forcedAgreement(r.be, r.m.Config, res, fullTokens)
		if err != nil {
			return rec, fmt.Errorf("%s teacher forcing: %w", mode, err)
		}
		mr := blendModeRecord{
			blendAnswer: scoreAnswer(g.Text, it.Answers),
			KL:          blend.KL(fullLogits, logits),
			Forced:      len(fullTokens),
			TTFTMS:      ms(ttft),
		}
		if len(fullTokens) > 0 {
			mr.Agreement = float64(agree) / float64(len(fullTokens))
		}
		if normalizeAnswer(g.Text) == normalizeAnswer(fullAnswer) {
			mr.AnswerAgreement = 1
		}
		for _, c := range res.Stats.Computed {
			mr.RowLayers += c
		}
		if mode == blend.ModeCacheBlend {
			mr.Selection = newBlendSelection(seg, res.Stats.Selected)
		}
		if r.profiler != nil {
			mr.Profile = &blendProfile{}
			if mr.Profile.RAM, err = r.profilePrefill(ctx, seg, src, opt, string(mode)+", chunk KV in host RAM"); err != nil {
				return rec, err
			}
		}
		if tier != nil && mode != blend.ModeFull {
			// Again with the chunks in the GPU's tier (the first such
			// prefill of the question puts them there, untimed).
			opt.ChunkIDs = ids
			if !tierWarm {
				if _, err := blend.Prefill(ctx, r.m, seg, r.prefixKV, src, opt); err != nil {
					return rec, fmt.Errorf("%s prefill filling the device tier: %w", mode, err)
				}
				tierWarm = true
			}
			start := time.Now()
			dres, err := blend.Prefill(ctx, r.m, seg, r.prefixKV, src, opt)
			if err != nil {
				return rec, fmt.Errorf("%s prefill from the device tier: %w", mode, err)
			}
			mr.TTFTDeviceMS = ms(time.Since(start))
			if dres.Stats.DeviceHits != len(seg.Chunks) {
				return rec, fmt.Errorf("%s prefill from the device tier: %d of %d chunks were in it (its budget, model.DefaultChunkTierBytes, is too small)", mode, dres.Stats.DeviceHits, len(seg.Chunks))
			}
			mr.DeviceKL = blend.KL(fullLogits, dres.Logits)
			if r.profiler != nil {
				if mr.Profile.Tier, err = r.profilePrefill(ctx, seg, src, opt, string(mode)+", chunk KV in the device tier"); err != nil {
					return rec, err
				}
			}
		}
		rec.Modes[string(mode)] = mr
	}
	r.profiler = nil // one question is enough
	return rec, nil
}

// blendProfile is one mode's profiled prefills: with the chunks' KV in
// host RAM, and in the device's chunk tier.
type blendProfile struct {
	RAM  *prefillProfile `json:"ram"`
	Tier *prefillProfile `json:"tier,omitempty"`
}

// prefillProfile is one untimed prefill under a device profile: its wall
// time, blend's own split of it (Stats: waiting on the source, placing
// the chunks' KV, computing — placing included) and the device's time per
// operation.
type prefillProfile struct {
	WallMS    float64             `json:"wall_ms"`
	LoadMS    float64             `json:"load_ms"`
	PlaceMS   float64             `json:"place_ms"`
	ComputeMS float64             `json:"compute_ms"`
	Device    model.DeviceProfile `json:"device"`
}

// profilePrefill runs one more prefill of seg with opt under a device
// profile and logs its leading operations as what.
func (r *blendRunner) profilePrefill(ctx context.Context, seg blend.Segments, src blend.Source, opt blend.Options, what string) (*prefillProfile, error) {
	if err := r.profiler.StartProfile(); err != nil {
		return nil, err
	}
	start := time.Now()
	res, err := blend.Prefill(ctx, r.m, seg, r.prefixKV, src, opt)
	wall := time.Since(start)
	dp, perr := r.profiler.StopProfile()
	if err = errors.Join(err, perr); err != nil {
		return nil, fmt.Errorf("profiled prefill (%s): %w", what, err)
	}
	p := &prefillProfile{WallMS: ms(wall), LoadMS: ms(res.Stats.Load), PlaceMS: ms(res.Stats.Place), ComputeMS: ms(res.Stats.Compute), Device: dp}
	fmt.Fprintf(r.profileLog, "profile %s: wall %.1f ms (load %.1f, place %.1f, compute %.1f); device busy %.1f ms\n",
		what, p.WallMS, p.LoadMS, p.PlaceMS, p.ComputeMS, dp.BusyMS)
	printDeviceOps(r.profileLog, dp.Ops)
	return p, nil
}

// forcedAgreement counts the tokens of ref that res's context ranks top-1
// given the tokens of ref before them: ref[0] against res.Logits, the rest
// against the logits of ref[:len(ref)−1] fed after the context in one pass
// (rows are computed causally by position, as decoding them one at a time
// would; with APE's groups they join the plain group, as blend.Generate's
// rows do), on backend be (of the model with config c) — the one that produced res, so that the forced
// rows and the greedy answer come from the same arithmetic. res.KV and
// res.Groups are restored before it returns.
func forcedAgreement(be model.Backend, c model.Config, res *blend.Result, ref []int32) (int, error) {
	if len(ref) == 0 {
		return 0, nil
	}
	agree := 0
	if model.Argmax(res.Logits) == ref[0] {
		agree++
	}
	feed := ref[:len(ref)-1]
	if len(feed) == 0 {
		return agree, nil
	}
	kv, n0 := res.KV, res.KV.Len()
	pos := model.Positions(int(model.NextPos(kv)), len(feed))
	if last := int(pos[len(pos)-1]); last >= c.Context {
		return 0, fmt.Errorf("position %d exceeds the context length %d", last, c.Context)
	}
	first := kv.Grow(feed, pos)
	defer kv.Truncate(n0)
	if res.Groups != nil {
		res.Groups.Of = append(res.Groups.Of, make([]uint8, len(feed))...)
		defer func() { res.Groups.Of = res.Groups.Of[:n0] }()
	}
	rows := make([]int, len(feed))
	sel := make([]int, len(feed))
	for i := range rows {
		rows[i], sel[i] = first+i, i
	}
	p, err := be.NewPass(kv, rows)
	if err != nil {
		return 0, err
	}
	p.SetGroups(res.Groups)
	for l := range c.Layers {
		if err := p.Layer(l); err != nil {
			return 0, err
		}
	}
	v := c.Vocab
	logits := make([]float32, len(feed)*v)
	if err := p.Logits(logits, sel); err != nil {
		return 0, err
	}
	for i := range feed {
		if model.Argmax(logits[i*v:(i+1)*v]) == ref[i+1] {
			agree++
		}
	}
	return agree, nil
}

// scoreAnswer scores a predicted answer against gold aliases: the maximum
// SQuAD token F1 and exact match over the aliases.
func scoreAnswer(pred string, gold []string) blendAnswer {
	a := blendAnswer{Answer: pred}
	for _, g := range gold {
		a.F1 = max(a.F1, tokenF1(pred, g))
		if normalizeAnswer(pred) == normalizeAnswer(g) {
			a.EM = 1
		}
	}
	return a
}

// tokenF1 is SQuAD's token F1 between a prediction and one gold answer,
// both normalised: the harmonic mean of token precision and recall, with
// tokens matched as a multiset.
func tokenF1(pred, gold string) float64 {
	p, g := strings.Fields(normalizeAnswer(pred)), strings.Fields(normalizeAnswer(gold))
	if len(p) == 0 || len(g) == 0 {
		if len(p) == len(g) {
			return 1
		}
		return 0
	}
	counts := map[string]int{}
	for _, w := range g {
		counts[w]++
	}
	common := 0
	for _, w := range p {
		if counts[w] > 0 {
			counts[w]--
			common++
		}
	}
	if common == 0 {
		return 0
	}
	prec, rec := float64(common)/float64(len(p)), float64(common)/float64(len(g))
	return 2 * prec * rec / (prec + rec)
}

// bootstrapMean returns the mean of xs with a 95% percentile bootstrap
// interval from resamples resamples drawn with a PCG generator seeded by
// seed (the same inputs give the same interval).
func bootstrapMean(xs []float64, resamples int, seed uint64) interval {
	if len(xs) == 0 {
		return interval{}
	}
	mean := func(idx func(int) int) float64 {
		s := 0.0
		for i := range xs {
			s += xs[idx(i)]
		}
		return s / float64(len(xs))
	}
	iv := interval{Mean: mean(func(i int) int { return i })}
	rng := rand.New(rand.NewPCG(seed, 0xb007))
	means := make([]float64, resamples)
	for b := range means {
		means[b] = mean(func(int) int { return rng.IntN(len(xs)) })
	}
	slices.Sort(means)
	iv.Lo, iv.Hi = quantile(means, 0.025), quantile(means, 0.975)
	return iv
}

// quantile returns the q-quantile of sorted xs with linear interpolation
// between order statistics (numpy's default); 0 for no values.
func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	h := q * float64(len(sorted)-1)
	lo := int(math.Floor(h))
	if lo >= len(sorted)-1 {
		return sorted[len(sorted)-1]
	}
	return sorted[lo] + (h-float64(lo))*(sorted[lo+1]-sorted[lo])
}

// summarizeBlend aggregates the records of the modes.
func summarizeBlend(dataset string, ratio float64, modes []blend.Mode, recs []blendRecord) (blendSummary, error) {
	s := blendSummary{Dataset: dataset, Questions: len(recs), Ratio: ratio, Modes: map[string]blendModeSummary{}}
	if len(recs) == 0 {
		return s, fmt.Errorf("eval blend: no questions evaluated")
	}
	col := func(f func(blendRecord) float64) []float64 {
		out := make([]float64, len(recs))
		for i, r := range recs {
			out[i] = f(r)
		}
		return out
	}
	boot := func(xs []float64) interval { return bootstrapMean(xs, evalBlendResamples, evalBlendSeed) }
	fullTTFT := col(func(r blendRecord) float64 { return r.Modes[string(blend.ModeFull)].TTFTMS })
	var tokens, fullMS float64
	for i, r := range recs {
		s.MeanChunks += float64(r.Chunks) / float64(len(recs))
		s.MeanTokens += float64(r.Tokens) / float64(len(recs))
		s.KVPrecomputeS += r.KVPrecomputeS
		tokens += float64(r.Tokens)
		fullMS += fullTTFT[i]
	}
	if fullMS > 0 {
		s.FullTokensPerS = tokens / (fullMS / 1000)
	}
	s.NoContextF1 = boot(col(func(r blendRecord) float64 { return r.NoContext.F1 }))
	s.NoContextEM = boot(col(func(r blendRecord) float64 { return r.NoContext.EM }))
	s.FullMinusNoContext = boot(col(func(r blendRecord) float64 { return r.Modes[string(blend.ModeFull)].F1 - r.NoContext.F1 }))
	s.FullBeatsNoContext = s.FullMinusNoContext.Lo > 0
	sortedFull := slices.Sorted(slices.Values(fullTTFT))
	for _, mode := range modes {
		name := string(mode)
		for _, r := range recs {
			if _, ok := r.Modes[name]; !ok {
				return s, fmt.Errorf("eval blend: question %d has no result for mode %s", r.Index, name)
			}
		}
		get := func(f func(blendModeRecord) float64) []float64 {
			return col(func(r blendRecord) float64 { return f(r.Modes[name]) })
		}
		ttft := get(func(m blendModeRecord) float64 { return m.TTFTMS })
		sm := blendModeSummary{
			KL:              boot(get(func(m blendModeRecord) float64 { return m.KL })),
			Agreement:       boot(get(func(m blendModeRecord) float64 { return m.Agreement })),
			AnswerAgreement: boot(get(func(m blendModeRecord) float64 { return m.AnswerAgreement })),
			F1:              boot(get(func(m blendModeRecord) float64 { return m.F1 })),
			EM:              boot(get(func(m blendModeRecord) float64 { return m.EM })),
		}
		sorted := slices.Sorted(slices.Values(ttft))
		sm.TTFTP50MS, sm.TTFTP90MS = quantile(sorted, 0.5), quantile(sorted, 0.9)
		if sm.TTFTP50MS > 0 {
			sm.SpeedupMedians = quantile(sortedFull, 0.5) / sm.TTFTP50MS
		}
		for i := range ttft {
			if ttft[i] > 0 {
				sm.SpeedupMean += fullTTFT[i] / ttft[i] / float64(len(ttft))
			}
		}
		if dev := get(func(m blendModeRecord) float64 { return m.TTFTDeviceMS }); !slices.Contains(dev, 0) {
			sm.TTFTDeviceP50MS = quantile(slices.Sorted(slices.Values(dev)), 0.5)
			sm.SpeedupDevice = quantile(sortedFull, 0.5) / sm.TTFTDeviceP50MS
			for _, kl := range get(func(m blendModeRecord) float64 { return m.DeviceKL }) {
				sm.DeviceKL += kl / float64(len(recs))
			}
		}
		sm.Selection = summarizeSelection(recs, name)
		s.Modes[name] = sm
		s.Order = append(s.Order, name)
	}
	return s, nil
}

// printBlendSummary writes the summary as a table.
func printBlendSummary(w io.Writer, s blendSummary) error {
	fmt.Fprintf(w, "%s: %d questions, %.1f chunks and %.0f tokens per question, ratio %g\n",
		s.Dataset, s.Questions, s.MeanChunks, s.MeanTokens, s.Ratio)
	fmt.Fprintf(w, "chunk KV precompute %.1f s; full prefill %.0f tokens/s\n", s.KVPrecomputeS, s.FullTokensPerS)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	iv := func(x interval) string { return fmt.Sprintf("%.3f [%.3f, %.3f]", x.Mean, x.Lo, x.Hi) }
	fmt.Fprintln(tw, "mode\tKL\tagreement\tanswer agr.\tF1\tEM\tTTFT p50 ms\tp90 ms\tspeedup (medians)\tspeedup (mean)")
	for _, name := range s.Order {
		m := s.Modes[name]
		fmt.Fprintf(tw, "%s\t%.4f\t%s\t%s\t%s\t%s\t%.0f\t%.0f\t%.2f×\t%.2f×\n", name, m.KL.Mean, iv(m.Agreement),
			iv(m.AnswerAgreement), iv(m.F1), iv(m.EM), m.TTFTP50MS, m.TTFTP90MS, m.SpeedupMedians, m.SpeedupMean)
	}
	fmt.Fprintf(tw, "no context\t\t\t\t%s\t%s\n", iv(s.NoContextF1), iv(s.NoContextEM))
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, name := range s.Order {
		if m := s.Modes[name]; m.TTFTDeviceP50MS > 0 {
			fmt.Fprintf(w, "%s with the chunks in the GPU tier: TTFT p50 %.1f ms, speedup (medians) %.2f×, KL %.4f\n", name, m.TTFTDeviceP50MS, m.SpeedupDevice, m.DeviceKL)
		}
	}
	if _, err := fmt.Fprintf(w, "F1(full) − F1(no context) = %s (paired bootstrap); full beats no context: %v\n",
		iv(s.FullMinusNoContext), s.FullBeatsNoContext); err != nil {
		return err
	}
	for _, name := range s.Order {
		sel := s.Modes[name].Selection
		if sel == nil {
			continue
		}
		if _, err := fmt.Fprintf(w, "%s selected %d chunk rows: %.1f%% at a chunk's first %d rows (%.1f%% of all chunk rows are), quarters of the chunk %.1f/%.1f/%.1f/%.1f%%, %.1f%% in the first chunk (%.1f%% of the rows)\n",
			name, sel.Rows, 100*sel.StartShare, selectionStart, 100*sel.StartBase, 100*sel.QuarterShare[0], 100*sel.QuarterShare[1],
			100*sel.QuarterShare[2], 100*sel.QuarterShare[3], 100*sel.FirstChunkShare, 100*sel.FirstChunkBase); err != nil {
			return err
		}
	}
	return nil
}

// readBlendRecords reads the records of a JSONL file written by an earlier
// run, keyed by question index (a later line for the same question wins),
// as readJSONL does: a missing file gives none, a partial last line is cut
// off the file, any other unreadable line is an error.
func readBlendRecords(path string) (map[int]blendRecord, error) {
	recs, err := readJSONL[blendRecord](path)
	if err != nil {
		return nil, err
	}
	out := make(map[int]blendRecord, len(recs))
	for _, r := range recs {
		out[r.Index] = r
	}
	return out, nil
}
