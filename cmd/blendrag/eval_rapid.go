package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/blendrag/blendrag/blend"
	"github.com/blendrag/blendrag/model"
)

type evalRapidFlags struct {
	ef            engineFlags
	dataset       string
	out           string
	limit         int
	contextTokens int
	draftChunks   int
	maxTokens     int
	mode          string
	draftModel    string // another GGUF as the drafter ("" : the target's model)
	gammas        []string
	etas          []float64
	json          bool
}

// addEvalRapidCommand registers eval rapid (RAPID speculative decoding
// against target-only decoding).
func addEvalRapidCommand(eval *cobra.Command) {
	var fl evalRapidFlags
	cmd := &cobra.Command{
		Use:   "rapid --dataset FILE [--limit N] [--context-tokens N] [--gamma LIST] [--eta LIST] [--draft-model GGUF] [--out F.jsonl] [--json]",
		Short: "RAPID decode speed, acceptance and answer agreement against target-only decoding",
		Long: "rapid builds, per question, a target context of its passages in the dataset's order (then the\n" +
			"next questions' passages, until --context-tokens) and a drafter context of the --draft-chunks\n" +
			"passages sharing the most words with the question, in prompt order; both are fused from\n" +
			"in-memory chunk KV by --mode. It decodes --max-tokens tokens greedily (end tokens ignored,\n" +
			"so every run decodes the same number; the answer is the text before the first end token and\n" +
			"newline) with the target alone (twice: before and after the RAPID runs, averaged) and with\n" +
			"RAPID for every η in --eta and γ in --gamma (a number is a fixed draft length, auto the\n" +
			"adaptive one), drafting throughout, plus once per η at the defaults (adaptive γ, self-\n" +
			"disabling). Per run: tok/s, speedup, acceptance, mean accepted length, the computed bound\n" +
			"(best speedup the measured drafter step, target step and verify cost allow at the measured\n" +
			"acceptance), token agreement with the target and F1/EM against gold. One JSONL line per\n" +
			"question goes to --out; a rerun reuses the questions already there (measured with the same\n" +
			"model, --mode, --context-tokens, --max-tokens, --draft-chunks and holding every --gamma/--eta\n" +
			"run), computes the rest and summarizes them all; a question measured under other settings\n" +
			"is an error. --draft-model drafts with another GGUF (the same tokenizer, e.g. a smaller\n" +
			"model of the family), its prefix and chunk KV computed with it.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runEvalRapid(cmd, &fl) },
	}
	fl.ef.register(cmd)
	f := cmd.Flags()
	f.StringVar(&fl.dataset, "dataset", "", "dataset JSON (e.g. ../shared/eval/musique_dev.json)")
	f.StringVar(&fl.out, "out", "", "JSONL file of per-question results (appended; resumes a previous run)")
	f.IntVar(&fl.limit, "limit", 0, "evaluate only the first N questions (0 = all)")
	f.IntVar(&fl.contextTokens, "context-tokens", 0, "target context length in tokens, answer excluded (0 = the model's context length minus --max-tokens)")
	f.IntVar(&fl.draftChunks, "draft-chunks", 3, "passages in the drafter's context")
	f.IntVar(&fl.maxTokens, "max-tokens", 64, "tokens decoded per run")
	f.StringVar(&fl.mode, "mode", string(blend.ModeCacheBlend), "fusion mode of both contexts")
	f.StringVar(&fl.draftModel, "draft-model", "", "GGUF of a smaller drafter sharing the target's tokenizer (default: the target's model); its chunk KV is computed with it")
	f.StringSliceVar(&fl.gammas, "gamma", []string{"auto", "4"}, "draft lengths: numbers (fixed) or auto (adaptive from 6)")
	f.Float64SliceVar(&fl.etas, "eta", []float64{0, 0.5}, "knowledge-transfer strengths η")
	f.BoolVar(&fl.json, "json", false, "print the summary as JSON")
	cmd.MarkFlagRequired("dataset")
	eval.AddCommand(cmd)
}

// rapidConfig is one RAPID setting evaluated.
type rapidConfig struct {
	Name     string  `json:"name"`
	Eta      float64 `json:"eta"`
	Gamma    int     `json:"gamma"` // the first round's; fixed unless Adaptive
	Adaptive bool    `json:"adaptive"`
	Default  bool    `json:"default"` // self-disabling on, as ask --rapid runs
}

func rapidConfigs(gammas []string, etas []float64) ([]rapidConfig, error) {
	var cs []rapidConfig
	for _, eta := range etas {
		if !(eta >= 0) {
			return nil, fmt.Errorf("--eta %v: want ≥ 0", eta)
		}
		for _, g := range gammas {
			c := rapidConfig{Eta: eta, Gamma: blend.DefaultGamma, Adaptive: true}
			if g != "auto" {
				n, err := strconv.Atoi(g)
				if err != nil || n < 1 || n > 16 {
					return nil, fmt.Errorf("--gamma %q: want auto or a number in 1..16", g)
				}
				c.Gamma, c.Adaptive = n, false
			}
			c.Name = fmt.Sprintf("η=%g γ=%s", eta, g)
			cs = append(cs, c)
		}
		cs = append(cs, rapidConfig{Name: fmt.Sprintf("η=%g default", eta), Eta: eta, Gamma: blend.DefaultGamma, Adaptive: true, Default: true})
	}
	return cs, nil
}

// rapidRun is one RAPID decode of a question.
type rapidRun struct {
	rapidConfig
	blendAnswer
	Tokens       int     `json:"tokens"`
	DecodeMS     float64 `json:"decode_ms"`
	TokPerS      float64 `json:"tok_s"`
	Speedup      float64 `json:"speedup"` // target-only time per token over this run's
	Rounds       int     `json:"rounds"`
	Drafted      int     `json:"drafted"`
	Accepted     int     `json:"accepted"`
	AcceptRate   float64 `json:"accept_rate"`
	MeanAccepted float64 `json:"mean_accepted"`
	GammaMean    float64 `json:"gamma_mean"`
	Off          bool    `json:"off"`
	OffReason    string  `json:"off_reason,omitempty"`
	DraftStepMS  float64 `json:"draft_step_ms"`
	VerifyMS     float64 `json:"verify_fixed_ms"`
	VerifyRowMS  float64 `json:"verify_per_row_ms"`
	DraftMS      float64 `json:"draft_ms"`   // total drafting time
	VerifyTotMS  float64 `json:"verify_ms"`  // total verify time
	ControlMS    float64 `json:"control_ms"` // sampling, acceptance, transfer
	// Bound is the best speedup the question's isolated costs (rapidCosts)
	// allow at this run's acceptance, at BoundGamma (within the run's γ
	// range); Ceiling the same at acceptance 1; RunBound the bound from the
	// run's own timings (its drafter steps and verifies, the target-only
	// runs' step).
	Bound      float64 `json:"bound"`
	BoundGamma int     `json:"bound_gamma"`
	Ceiling    float64 `json:"ceiling"`
	RunBound   float64 `json:"run_bound"`
	// Agreement is the share of the target-only tokens this run reproduced
	// before the first difference; Same says all of them.
	Agreement float64 `json:"agreement"`
	Same      bool    `json:"same"`
}

// rapidRecord is one question's results, one line of --out. Model, Mode,
// ContextTokens, MaxTokens and DraftChunks are the settings it was measured
// under: a resumed run reuses it only under the same ones.
type rapidRecord struct {
	Index         int      `json:"index"`
	Question      string   `json:"question"`
	Answers       []string `json:"answers"`
	Model         string   `json:"model"`                 // fingerprint
	DraftModel    string   `json:"draft_model,omitempty"` // --draft-model's fingerprint; empty: the target's
	Device        string   `json:"device,omitempty"`      // --device's backend; empty: cpu
	Mode          string   `json:"mode"`
	ContextTokens int      `json:"context_tokens"`
	MaxTokens     int      `json:"max_tokens"`
	Chunks        int      `json:"chunks"`
	DraftChunks   int      `json:"draft_chunks"`
	TargetRows    int      `json:"target_rows"`
	DraftRows     int      `json:"draft_rows"`
	KVPrecomputeS float64  `json:"kv_precompute_s"`
	Target        struct {
		blendAnswer
		Tokens   int     `json:"tokens"`
		DecodeMS float64 `json:"decode_ms"` // mean of the two runs
		TokPerS  float64 `json:"tok_s"`
		StepMS   float64 `json:"step_ms"`
	} `json:"target"`
	Costs rapidCosts `json:"costs"`
	Runs  []rapidRun `json:"runs"`
}

// rapidCosts are the forwards RAPID is made of, timed in isolation on the
// question's contexts (medians of interleaved repetitions): the target's
// and the drafter's decode steps and the target's verify of k rows, with
// the least-squares line Fixed + PerRow·k through the verifies.
type rapidCosts struct {
	TargetStepMS float64    `json:"target_step_ms"`
	DraftStepMS  float64    `json:"draft_step_ms"`
	Verify       []verifyMS `json:"verify"`
	FixedMS      float64    `json:"verify_fixed_ms"`
	PerRowMS     float64    `json:"verify_per_row_ms"`
	stats        blend.RapidStats
}

type verifyMS struct {
	Rows int     `json:"rows"`
	MS   float64 `json:"ms"`
}

// rapidSummary aggregates one configuration over the questions.
type rapidSummary struct {
	rapidConfig
	Questions    int     `json:"questions"`
	TargetTokS   float64 `json:"target_tok_s"`
	RapidTokS    float64 `json:"rapid_tok_s"`
	Speedup      float64 `json:"speedup"` // total target-only time per token over RAPID's
	Bound        float64 `json:"bound"`   // mean of the per-question bounds
	RunBound     float64 `json:"run_bound"`
	OfBound      float64 `json:"of_bound"`
	Ceiling      float64 `json:"ceiling"`
	AcceptRate   float64 `json:"accept_rate"`
	MeanAccepted float64 `json:"mean_accepted"`
	GammaMean    float64 `json:"gamma_mean"`
	Off          int     `json:"off"` // questions where RAPID switched itself off
	Agreement    float64 `json:"agreement"`
	Same         int     `json:"same"`
	F1           float64 `json:"f1"`
	TargetF1     float64 `json:"target_f1"`
	EM           float64 `json:"em"`
	TargetEM     float64 `json:"target_em"`
}

type rapidEvalSummary struct {
	Dataset       string         `json:"dataset"`
	Mode          string         `json:"mode"`
	ContextTokens int            `json:"context_tokens"`
	MaxTokens     int            `json:"max_tokens"`
	DraftChunks   int            `json:"draft_chunks"`
	Questions     int            `json:"questions"`
	MeanTarget    float64        `json:"mean_target_rows"`
	MeanDraft     float64        `json:"mean_draft_rows"`
	Costs         rapidCosts     `json:"costs"` // means over the questions
	Configs       []rapidSummary `json:"configs"`
}

func runEvalRapid(cmd *cobra.Command, fl *evalRapidFlags) error {
	mode, err := blend.ParseMode(fl.mode)
	if err != nil {
		return err
	}
	cfgs, err := rapidConfigs(fl.gammas, fl.etas)
	if err != nil {
		return err
	}
	if fl.limit < 0 || fl.contextTokens < 0 || fl.draftChunks < 1 || fl.maxTokens < 2 {
		return fmt.Errorf("--limit and --context-tokens must be ≥ 0, --draft-chunks ≥ 1, --max-tokens ≥ 2")
	}
	items, err := loadDataset(fl.dataset)
	if err != nil {
		return err
	}
	n := len(items)
	if fl.limit > 0 && fl.limit < n {
		n = fl.limit
	}
	m, be, err := fl.ef.open(cmd)
	if err != nil {
		return err
	}
	defer m.Close()
	defer be.Close()
	if fl.contextTokens == 0 {
		fl.contextTokens = m.Config.Context - fl.maxTokens
	}
	if fl.contextTokens+fl.maxTokens > m.Config.Context {
		return fmt.Errorf("--context-tokens %d + --max-tokens %d exceed the model's context length %d", fl.contextTokens, fl.maxTokens, m.Config.Context)
	}
	r, err := newRapidRunner(m, be, mode, fl)
	if err != nil {
		return err
	}
	if fl.draftModel != "" {
		dm, dbe, err := blend.OpenDrafter(m, fl.draftModel, fl.ef.device)
		if err != nil {
			return fmt.Errorf("--draft-model %s: %w", fl.draftModel, err)
		}
		defer dm.Close()
		defer dbe.Close()
		r.dm, r.dbe = dm, dbe
		if r.dprefix, err = blend.EncodePrefixOn(dbe, dm, r.format.Prefix()); err != nil {
			return fmt.Errorf("--draft-model: %w", err)
		}
	}
	done := map[int]rapidRecord{}
	var out *os.File
	if fl.out != "" {
		old, err := readJSONL[rapidRecord](fl.out)
		if err != nil {
			return err
		}
		for _, rec := range old {
			done[rec.Index] = rec // a later line for the same question wins
		}
		if out, err = openJSONL(fl.out); err != nil {
			return err
		}
		defer out.Close()
	}
	logw := cmd.ErrOrStderr()
	var recs []rapidRecord
	resumed := 0
	for i := range n {
		if rec, ok := done[i]; ok {
			if !r.compatible(rec, items[i]) {
				return fmt.Errorf("%s: question %d was measured with another model, --draft-model, --device, question, --mode, --context-tokens, --max-tokens or --draft-chunks; use another --out", fl.out, i)
			}
			if runs, ok := selectRuns(rec.Runs, cfgs); ok {
				rec.Runs = runs
				recs = append(recs, rec)
				resumed++
				continue
			}
		}
		start := time.Now()
		rec, err := r.question(cmd.Context(), items, i, cfgs)
		if err != nil {
			return fmt.Errorf("question %d: %w", i, err)
		}
		if out != nil {
			if err := appendJSONL(out, rec); err != nil {
				return fmt.Errorf("%s: %w", fl.out, err)
			}
		}
		recs = append(recs, rec)
		fmt.Fprintf(logw, "eval rapid: question %d/%d: target %d rows, drafter %d rows, %.1f s\n", i+1, n, rec.TargetRows, rec.DraftRows, time.Since(start).Seconds())
	}
	if resumed > 0 {
		fmt.Fprintf(logw, "eval rapid: %d of %d questions resumed from %s\n", resumed, n, fl.out)
	}
	sum := summarizeRapid(fl, cfgs, recs)
	if fl.json {
		enc := json.NewEncoder(cmd.OutOrStdout())
		enc.SetIndent("", "  ")
		return enc.Encode(sum)
	}
	return printRapidSummary(cmd.OutOrStdout(), sum)
}

// rapidRunner evaluates questions with one model and prompt format.
type rapidRunner struct {
	m  *model.Model
	be model.Backend // --device
	// dm, dbe and dprefix are the drafter's model, backend and P's KV: the
	// target's own unless --draft-model.
	dm       *model.Model
	dbe      model.Backend
	dprefix  *model.KV
	format   *blend.Format
	prefixKV *model.KV
	mode     blend.Mode
	fp       string // the model's fingerprint
	fl       *evalRapidFlags
	// costs carries what drafting cost from question to question, as the
	// server's does from request to request: the default configurations
	// skip drafting when an earlier question measured that it cannot pay.
	costs blend.RapidCosts
}

// compatible reports whether rec was measured on question it under the
// runner's model and settings.
func (r *rapidRunner) compatible(rec rapidRecord, it evalItem) bool {
	return rec.Model == r.fp && rec.DraftModel == r.draftFP() && rec.Device == r.device() && rec.Question == it.Question && rec.Mode == string(r.mode) &&
		rec.ContextTokens == r.fl.contextTokens && rec.MaxTokens == r.fl.maxTokens && rec.DraftChunks == r.fl.draftChunks
}

// draftFP is the record's DraftModel: the drafter's fingerprint when it is
// another model, else "".
func (r *rapidRunner) draftFP() string {
	if r.dm == r.m {
		return ""
	}
	return r.dm.Fingerprint()
}

// device is the record's Device for the runner's backend ("" for the CPU,
// so records written before the field existed still match).
func (r *rapidRunner) device() string {
	if d := r.be.Device(); d != "cpu" {
		return d
	}
	return ""
}

// selectRuns returns the runs of cfgs, in their order, from a record's
// runs; ok is false when one is missing.
func selectRuns(runs []rapidRun, cfgs []rapidConfig) (sel []rapidRun, ok bool) {
	for _, c := range cfgs {
		k := slices.IndexFunc(runs, func(run rapidRun) bool { return run.rapidConfig == c })
		if k < 0 {
			return nil, false
		}
		sel = append(sel, runs[k])
	}
	return sel, true
}

// newRapidRunner prepares questions on model m, computing on backend be
// (chunk KV, both prefills, every decode).
func newRapidRunner(m *model.Model, be model.Backend, mode blend.Mode, fl *evalRapidFlags) (*rapidRunner, error) {
	f, err := blend.NewFormat(m.Tok, blend.DefaultSystem, evalBlendInstruction)
	if err != nil {
		return nil, err
	}
	pkv, err := blend.EncodePrefixOn(be, m, f.Prefix())
	if err != nil {
		return nil, err
	}
	return &rapidRunner{m: m, be: be, dm: m, dbe: be, dprefix: pkv, format: f, prefixKV: pkv, mode: mode, fp: m.Fingerprint(), fl: fl}, nil
}

// contextPassages returns the passages of question i, then of the following
// questions (wrapping), as many as fit budget tokens.
func (r *rapidRunner) contextPassages(items []evalItem, i, budget int) []string {
	var texts []string
	used := 0
	for k := range len(items) {
		it := items[(i+k)%len(items)]
		for _, c := range it.Ctxs {
			t := passageText(c.Title, c.Text)
			n := len(r.format.Chunk(t))
			if used+n > budget {
				return texts
			}
			used += n
			texts = append(texts, t)
		}
	}
	return texts
}

// draftPassages returns the indices, ascending (prompt order), of the k
// passages sharing the most distinct words (of three letters or more) with
// the question — a lexical stand-in for retrieval's top chunks.
func draftPassages(question string, texts []string, k int) []int {
	words := map[string]bool{}
	for _, w := range strings.Fields(normalizeAnswer(question)) {
		if len(w) >= 3 {
			words[w] = true
		}
	}
	score := make([]int, len(texts))
	for i, t := range texts {
		seen := map[string]bool{}
		for _, w := range strings.Fields(normalizeAnswer(t)) {
			if words[w] && !seen[w] {
				seen[w] = true
				score[i]++
			}
		}
	}
	idx := make([]int, len(texts))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int { return score[b] - score[a] })
	idx = idx[:min(k, len(idx))]
	slices.Sort(idx)
	return idx
}

// answerText is the answer in a decode's tokens: the text before the first
// end token, up to the first newline.
func answerText(m *model.Model, toks []int32) string {
	if i := slices.IndexFunc(toks, m.Tok.IsEOG); i >= 0 {
		toks = toks[:i]
	}
	s, _, _ := strings.Cut(m.Tok.Decode(toks), "\n")
	return strings.TrimSpace(s)
}

func (r *rapidRunner) question(ctx context.Context, items []evalItem, i int, cfgs []rapidConfig) (rapidRecord, error) {
	it := items[i]
	m := r.m
	rec := rapidRecord{
		Index: i, Question: it.Question, Answers: it.Answers, Model: r.fp, DraftModel: r.draftFP(), Device: r.device(), Mode: string(r.mode),
		ContextTokens: r.fl.contextTokens, MaxTokens: r.fl.maxTokens, DraftChunks: r.fl.draftChunks,
	}
	q := r.format.Question(it.Question)
	texts := r.contextPassages(items, i, r.fl.contextTokens-len(r.format.Prefix())-len(q))
	if len(texts) == 0 {
		return rec, fmt.Errorf("no passage fits %d context tokens", r.fl.contextTokens)
	}
	seg := r.format.Segments(it.Question, texts)
	start := time.Now()
	kvs := make([]*model.KV, len(seg.Chunks))
	for j, c := range seg.Chunks {
		kv, err := blend.EncodeChunkOn(r.be, m, r.prefixKV, c)
		if err != nil {
			return rec, err
		}
		kvs[j] = kv
	}
	rec.KVPrecomputeS = time.Since(start).Seconds()
	opt := blend.DefaultOptions(r.mode)
	opt.Backend = r.be
	target, err := blend.Prefill(ctx, m, seg, r.prefixKV, blend.MemorySource(kvs), opt)
	if err != nil {
		return rec, fmt.Errorf("target prefill: %w", err)
	}
	top := draftPassages(it.Question, texts, r.fl.draftChunks)
	dseg := blend.Segments{Prefix: seg.Prefix, Question: seg.Question}
	var dkvs []*model.KV
	for _, j := range top {
		dseg.Chunks = append(dseg.Chunks, seg.Chunks[j])
		dkvs = append(dkvs, kvs[j])
	}
	var drafter *blend.Result
	if r.dm == m {
		drafter, err = blend.Prefill(ctx, m, dseg, r.prefixKV, blend.MemorySource(dkvs), opt)
	} else {
		// Another model: its own chunk KV.
		dopt := opt
		dopt.Backend = r.dbe
		drafter, err = blend.PrefillEncoded(ctx, r.dm, dseg, r.dprefix, dopt)
	}
	if err != nil {
		return rec, fmt.Errorf("drafter prefill: %w", err)
	}
	rec.Chunks, rec.DraftChunks = len(seg.Chunks), len(dseg.Chunks)
	rec.TargetRows, rec.DraftRows = target.KV.Len(), drafter.KV.Len()
	gen := model.GenerateOptions{MaxTokens: r.fl.maxTokens, IgnoreEOS: true}

	// Target alone, before and after the RAPID runs (the machine may be
	// shared: the mean of both is the reference).
	targetRun := func() (model.Generation, error) {
		return blend.Generate(ctx, m, target.Clone(), gen, nil)
	}
	ref, err := targetRun()
	if err != nil {
		return rec, fmt.Errorf("target decode: %w", err)
	}
	var runs []rapidRun
	var stats []blend.RapidStats
	for _, c := range cfgs {
		ropt := blend.RapidOptions{Gamma: c.Gamma, FixedGamma: !c.Adaptive, Eta: c.Eta, KeepDrafting: !c.Default}
		var g model.Generation
		var st blend.RapidStats
		draft, why := true, ""
		if c.Default {
			draft, why = r.costs.ShouldDraft(target.KV.Len(), drafter.KV.Len(), 0)
		}
		if !draft {
			// As the server does: the target decodes alone.
			g, err = targetRun()
			st.Disabled, st.DisabledReason = true, why
		} else {
			if c.Default {
				ropt.Costs = &r.costs
			}
			g, st, err = blend.Rapid(ctx, m, target.Clone(), r.dm, drafter.Clone(), gen, ropt, nil)
		}
		if err != nil {
			return rec, fmt.Errorf("%s: %w", c.Name, err)
		}
		run := rapidRun{
			rapidConfig: c, blendAnswer: scoreAnswer(answerText(m, g.Tokens), it.Answers),
			Tokens: len(g.Tokens), DecodeMS: ms(g.Decode), TokPerS: float64(len(g.Tokens)) / g.Decode.Seconds(),
			Rounds: st.Rounds, Drafted: st.Drafted, Accepted: st.Accepted, AcceptRate: st.AcceptRate(),
			MeanAccepted: st.MeanAccepted(), GammaMean: st.GammaMean, Off: st.Disabled, OffReason: st.DisabledReason,
			DraftStepMS: ms(st.DraftStep), VerifyMS: ms(st.VerifyFixed), VerifyRowMS: ms(st.VerifyPerRow),
			DraftMS: ms(st.DraftTime), VerifyTotMS: ms(st.VerifyTime), ControlMS: ms(st.ControlTime),
		}
		common := 0
		for common < min(len(g.Tokens), len(ref.Tokens)) && g.Tokens[common] == ref.Tokens[common] {
			common++
		}
		run.Agreement = float64(common) / float64(len(ref.Tokens))
		run.Same = common == len(ref.Tokens) && len(g.Tokens) == len(ref.Tokens)
		runs = append(runs, run)
		stats = append(stats, st)
	}
	if rec.Costs, err = measureCosts(m, r.dm, target, drafter, ref.Tokens, 5); err != nil {
		return rec, fmt.Errorf("costs: %w", err)
	}
	ref2, err := targetRun()
	if err != nil {
		return rec, fmt.Errorf("target decode: %w", err)
	}
	decode := (ref.Decode + ref2.Decode) / 2
	rec.Target.blendAnswer = scoreAnswer(answerText(m, ref.Tokens), it.Answers)
	rec.Target.Tokens = len(ref.Tokens)
	rec.Target.DecodeMS = ms(decode)
	rec.Target.TokPerS = float64(len(ref.Tokens)) / decode.Seconds()
	// Generate computes one step per token after the first (whose logits
	// come from the prefill).
	step := decode / time.Duration(max(1, len(ref.Tokens)-1))
	rec.Target.StepMS = ms(step)
	for k := range runs {
		run := &runs[k]
		run.Speedup = (rec.Target.DecodeMS / float64(rec.Target.Tokens)) / (run.DecodeMS / float64(run.Tokens))
		lo, hi := run.Gamma, run.Gamma
		if run.Adaptive {
			lo, hi = blend.MinGamma, blend.MaxGamma
		}
		a := run.AcceptRate
		run.Bound, run.BoundGamma = rec.Costs.stats.Bound(a, lo, hi)
		run.Ceiling, _ = rec.Costs.stats.Bound(1, lo, hi)
		st := stats[k]
		st.TargetStep = step
		run.RunBound, _ = st.Bound(a, lo, hi)
	}
	rec.Runs = runs
	return rec, nil
}

func summarizeRapid(fl *evalRapidFlags, cfgs []rapidConfig, recs []rapidRecord) rapidEvalSummary {
	sum := rapidEvalSummary{
		Dataset: fl.dataset, Mode: fl.mode, ContextTokens: fl.contextTokens, MaxTokens: fl.maxTokens,
		DraftChunks: fl.draftChunks, Questions: len(recs),
	}
	if len(recs) == 0 {
		return sum
	}
	nq := float64(len(recs))
	for _, rec := range recs {
		sum.MeanTarget += float64(rec.TargetRows) / nq
		sum.MeanDraft += float64(rec.DraftRows) / nq
		c := &sum.Costs
		c.TargetStepMS += rec.Costs.TargetStepMS / nq
		c.DraftStepMS += rec.Costs.DraftStepMS / nq
		c.FixedMS += rec.Costs.FixedMS / nq
		c.PerRowMS += rec.Costs.PerRowMS / nq
		for i, v := range rec.Costs.Verify {
			if len(c.Verify) <= i {
				c.Verify = append(c.Verify, verifyMS{Rows: v.Rows})
			}
			c.Verify[i].MS += v.MS / nq
		}
	}
	for k, c := range cfgs {
		s := rapidSummary{rapidConfig: c, Questions: len(recs)}
		var tMS, tTok, rMS, rTok, drafted, accepted, rounds, gammaRounds float64
		for _, rec := range recs {
			run := rec.Runs[k]
			tMS += rec.Target.DecodeMS
			tTok += float64(rec.Target.Tokens)
			rMS += run.DecodeMS
			rTok += float64(run.Tokens)
			drafted += float64(run.Drafted)
			accepted += float64(run.Accepted)
			rounds += float64(run.Rounds)
			gammaRounds += run.GammaMean * float64(run.Rounds)
			s.Bound += run.Bound / nq
			s.RunBound += run.RunBound / nq
			s.Ceiling += run.Ceiling / nq
			s.Agreement += run.Agreement / nq
			s.F1 += run.F1 / nq
			s.EM += run.EM / nq
			s.TargetF1 += rec.Target.F1 / nq
			s.TargetEM += rec.Target.EM / nq
			if run.Off {
				s.Off++
			}
			if run.Same {
				s.Same++
			}
		}
		s.TargetTokS = tTok / (tMS / 1000)
		s.RapidTokS = rTok / (rMS / 1000)
		s.Speedup = s.RapidTokS / s.TargetTokS
		if s.Bound > 0 {
			s.OfBound = s.Speedup / s.Bound
		}
		if drafted > 0 {
			s.AcceptRate = accepted / drafted
		}
		if rounds > 0 {
			s.MeanAccepted = accepted / rounds
			s.GammaMean = gammaRounds / rounds
		}
		sum.Configs = append(sum.Configs, s)
	}
	return sum
}

func printRapidSummary(w io.Writer, s rapidEvalSummary) error {
	fmt.Fprintf(w, "eval rapid: %d questions of %s, mode %s, target %.0f rows, drafter %.0f rows (%d chunks), %d tokens per run\n",
		s.Questions, s.Dataset, s.Mode, s.MeanTarget, s.MeanDraft, s.DraftChunks, s.MaxTokens)
	c := s.Costs
	fmt.Fprintf(w, "costs (means of per-question medians): target step %.1f ms, drafter step %.1f ms, verify %.1f + %.1f ms/row (", c.TargetStepMS, c.DraftStepMS, c.FixedMS, c.PerRowMS)
	for i, v := range c.Verify {
		if i > 0 {
			fmt.Fprint(w, ", ")
		}
		fmt.Fprintf(w, "%d rows %.1f ms", v.Rows, v.MS)
	}
	fmt.Fprintln(w, ")")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "config\ttarget tok/s\tRAPID tok/s\tspeedup\tbound\tof bound\trun bound\tceiling\taccept\tmean acc\tγ\toff\tagreement\tsame\tF1\ttarget F1\t")
	for _, c := range s.Configs {
		fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t%.2f×\t%.2f×\t%.0f%%\t%.2f×\t%.2f×\t%.2f\t%.2f\t%.1f\t%d\t%.2f\t%d/%d\t%.3f\t%.3f\t\n",
			c.Name, c.TargetTokS, c.RapidTokS, c.Speedup, c.Bound, 100*c.OfBound, c.RunBound, c.Ceiling, c.AcceptRate, c.MeanAccepted,
			c.GammaMean, c.Off, c.Agreement, c.Same, c.Questions, c.F1, c.TargetF1)
	}
	return tw.Flush()
}

// verifyRows are the row counts whose verify forward measureCosts times.
var verifyRows = []int{1, 3, 5, 7, 11}

// measureCosts times, reps times interleaved, a decode step of the target
// and of the drafter and a verify of each of verifyRows rows of the target
// (tokens from toks), each from the context as prefilled, and returns the
// medians with the verify line.
func measureCosts(m, dm *model.Model, target, drafter *blend.Result, toks []int32, reps int) (rapidCosts, error) {
	var c rapidCosts
	if len(toks) < verifyRows[len(verifyRows)-1] {
		return c, fmt.Errorf("need %d tokens, have %d", verifyRows[len(verifyRows)-1], len(toks))
	}
	t, d := target.Clone(), drafter.Clone()
	nT, nD := t.KV.Len(), d.KV.Len()
	timeIt := func(r *blend.Result, n, k int) (time.Duration, error) {
		rm := m
		if r == d {
			rm = dm
		}
		start := time.Now()
		_, err := r.Extend(rm, toks[:k], true)
		dt := time.Since(start)
		r.Truncate(n)
		return dt, err
	}
	step := make([]time.Duration, 0, reps)
	draft := make([]time.Duration, 0, reps)
	verify := make([][]time.Duration, len(verifyRows))
	for range reps {
		dt, err := timeIt(t, nT, 1)
		if err != nil {
			return c, err
		}
		step = append(step, dt)
		if dt, err = timeIt(d, nD, 1); err != nil {
			return c, err
		}
		draft = append(draft, dt)
		for i, k := range verifyRows {
			if dt, err = timeIt(t, nT, k); err != nil {
				return c, err
			}
			verify[i] = append(verify[i], dt)
		}
	}
	median := func(ds []time.Duration) time.Duration {
		ds = slices.Clone(ds)
		slices.Sort(ds)
		return ds[len(ds)/2]
	}
	c.stats.TargetStep, c.stats.DraftStep = median(step), median(draft)
	var sk, skk, sy, sky float64
	for i, k := range verifyRows {
		y := median(verify[i])
		c.Verify = append(c.Verify, verifyMS{Rows: k, MS: ms(y)})
		x := float64(k)
		sk, skk, sy, sky = sk+x, skk+x*x, sy+float64(y), sky+x*float64(y)
	}
	n := float64(len(verifyRows))
	perRow := (n*sky - sk*sy) / (n*skk - sk*sk)
	fixed := (sy - perRow*sk) / n
	if fixed < 0 {
		fixed, perRow = 0, sky/skk
	}
	c.stats.VerifyFixed, c.stats.VerifyPerRow = time.Duration(fixed), time.Duration(perRow)
	c.TargetStepMS, c.DraftStepMS = ms(c.stats.TargetStep), ms(c.stats.DraftStep)
	c.FixedMS, c.PerRowMS = ms(c.stats.VerifyFixed), ms(c.stats.VerifyPerRow)
	return c, nil
}
