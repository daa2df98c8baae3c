package server

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/blendrag/blendrag/blend"
	"github.com/blendrag/blendrag/kvstore"
	"github.com/blendrag/blendrag/model"
)

// Limits of a question.
const (
	MaxQuestionBytes = 2048
	DefaultMaxTokens = 128
	MaxMaxTokens     = 1024
	DefaultAskK      = 6
)

// AskRequest is one question to answer from the store.
type AskRequest struct {
	Question string `json:"question"`
	// K chunks are retrieved (default DefaultAskK), as many as fit the
	// model's context with the question and the answer.
	K         int     `json:"k,omitempty"`
	Retriever string  `json:"retriever,omitempty"` // default hybrid
	Rerank    bool    `json:"rerank,omitempty"`
	Mode      string  `json:"mode,omitempty"`  // full, prefix, reuse, cacheblend (default), ape
	Ratio     float64 `json:"ratio,omitempty"` // CacheBlend's r; 0 means the calibrated or default r
	// RatioAuto lets CacheBlend's loading controller choose r (when Ratio
	// is 0): the calibrated (or default) r, raised to the ratio whose
	// recompute time equals the measured KV load time.
	RatioAuto bool `json:"ratio_auto,omitempty"`
	MaxTokens int  `json:"max_tokens,omitempty"`
	// Temperature 0 decodes greedily.
	Temperature float64 `json:"temperature,omitempty"`
	Seed        uint64  `json:"seed,omitempty"`
	// Rapid decodes with RAPID speculative decoding: a drafter over the top
	// DraftChunks chunks (default 3, in document order) proposes Gamma
	// tokens (default 6, adapted between 2 and 10) that the long-context
	// target verifies in one forward; Eta (default 0, lossless) is the
	// knowledge-transfer strength.
	Rapid       bool    `json:"rapid,omitempty"`
	Gamma       int     `json:"gamma,omitempty"`
	Eta         float64 `json:"eta,omitempty"`
	DraftChunks int     `json:"draft_chunks,omitempty"`
}

// Citation is a chunk the answer was given.
type Citation struct {
	Index int `json:"index"` // 1-based order in the prompt
	SearchResult
}

// Timings break down where a question's time went.
type Timings struct {
	Retrieve   time.Duration `json:"retrieve_ns"`
	KVLoad     time.Duration `json:"kv_load_ns"`     // reading and decoding cached chunk KV (waits on the store)
	KVMissing  int           `json:"kv_missing"`     // chunks whose KV had to be computed now
	KVHot      int           `json:"kv_hot"`         // chunks served from the hot tier (host RAM)
	KVDevice   int           `json:"kv_device"`      // chunks whose KV the GPU's tier held (copied within the device)
	Recompute  time.Duration `json:"recompute_ns"`   // fusion compute (recomputed rows, question rows)
	FirstToken time.Duration `json:"first_token_ns"` // from the request to the first token's logits
	Decode     time.Duration `json:"decode_ns"`
	Tokens     int           `json:"tokens"`
	TokensPerS float64       `json:"decode_tok_s"`
	// Rapid describes RAPID decoding when the request asked for it.
	Rapid *RapidTimings `json:"rapid,omitempty"`
}

// RapidTimings describe a RAPID decode: the drafter's context, the drafts
// and how many the target accepted, the draft length, the measured costs,
// and whether RAPID switched itself off (and why).
type RapidTimings struct {
	DraftChunks  int           `json:"draft_chunks"`          // chunks in the drafter's context
	DraftModel   string        `json:"draft_model,omitempty"` // the draft model's name when it is not the generator
	DraftRows    int           `json:"draft_rows"`            // rows of the drafter's context (target: TargetRows)
	TargetRows   int           `json:"target_rows"`           //
	DraftPrefill time.Duration `json:"draft_prefill_ns"`      // fusing the drafter's context (after the first token's logits)
	Rounds       int           `json:"rounds"`
	Drafted      int           `json:"drafted"`
	Accepted     int           `json:"accepted"`
	AcceptRate   float64       `json:"accept_rate"`
	MeanAccepted float64       `json:"mean_accepted"` // accepted drafts per round
	GammaMean    float64       `json:"gamma_mean"`    // draft length used, mean over rounds
	GammaLast    int           `json:"gamma_last"`
	// Measured costs: the drafter's and the target's decode steps, and the
	// target's verify forward as VerifyFixed + VerifyPerRow·rows.
	DraftStep    time.Duration `json:"draft_step_ns"`
	TargetStep   time.Duration `json:"target_step_ns"`
	VerifyFixed  time.Duration `json:"verify_fixed_ns"`
	VerifyPerRow time.Duration `json:"verify_per_row_ns"`
	// Bound is the best decode speedup these costs allow at the measured
	// acceptance rate (blend.RapidStats.Bound); 0 when not measured.
	Bound float64 `json:"bound"`
	// Off says RAPID did not draft for (the rest of) the request; OffReason
	// says why: it measured that drafting does not pay, or the drafter's
	// context would not be shorter than the target's.
	Off       bool   `json:"off"`
	OffReason string `json:"off_reason,omitempty"`
}

// Answer is the outcome of Ask.
type Answer struct {
	Text string `json:"answer"`
	// Mode is the fusion mode used: the request's, or full when the
	// calibration found the requested mode unable to meet the fidelity
	// threshold (Note says so).
	Mode string `json:"mode"`
	// Ratio is the CacheBlend ratio used (cacheblend only).
	Ratio float64 `json:"ratio,omitempty"`
	// Note explains a decision the service made for the request: a
	// fallback to full, or the ratio the loading controller chose.
	Note      string     `json:"note,omitempty"`
	Citations []Citation `json:"citations"`
	Timings   Timings    `json:"timings"`
	Stop      string     `json:"stop"`
}

// Ask answers a question from the store: retrieve, load the chunks' cached
// KV (computing what is missing), fuse by req.Mode, decode. emit, if not
// nil, receives the answer's text as it is generated.
func (s *Service) Ask(ctx context.Context, req AskRequest, emit func(string) error) (Answer, error) {
	start := time.Now()
	if s.eng == nil {
		return Answer{}, fmt.Errorf("ask: the generator is not loaded (KV disabled): %w", ErrBadRequest)
	}
	if len(req.Question) > MaxQuestionBytes {
		return Answer{}, fmt.Errorf("ask: question is %d bytes, limit %d: %w", len(req.Question), MaxQuestionBytes, ErrBadRequest)
	}
	mode := blend.Mode(req.Mode)
	if mode == "" {
		mode = blend.ModeCacheBlend
	}
	switch mode {
	case blend.ModeFull, blend.ModePrefix, blend.ModeReuse, blend.ModeCacheBlend, blend.ModeAPE:
	default:
		return Answer{}, fmt.Errorf("ask: unknown mode %q (full, prefix, reuse, cacheblend, ape): %w", req.Mode, ErrBadRequest)
	}
	if req.Ratio < 0 || req.Ratio > 1 {
		return Answer{}, fmt.Errorf("ask: ratio %v outside [0, 1]: %w", req.Ratio, ErrBadRequest)
	}
	if req.MaxTokens == 0 {
		req.MaxTokens = DefaultMaxTokens
	}
	if req.MaxTokens < 0 || req.MaxTokens > MaxMaxTokens {
		return Answer{}, fmt.Errorf("ask: max_tokens %d outside 1..%d: %w", req.MaxTokens, MaxMaxTokens, ErrBadRequest)
	}
	if req.K == 0 {
		req.K = DefaultAskK
	}
	if err := validateRapid(&req); err != nil {
		return Answer{}, err
	}
	results, err := s.Search(ctx, SearchRequest{Query: req.Question, K: req.K, Retriever: req.Retriever, Rerank: req.Rerank})
	if err != nil {
		return Answer{}, fmt.Errorf("ask: %w", err)
	}
	ans := Answer{Mode: string(mode)}
	ans.Timings.Retrieve = time.Since(start)

	e := s.eng
	unlock := e.lockForQuery()
	defer unlock()

	// Chunks in retrieval order, as many as fit the context.
	q := e.format.Question(req.Question)
	budget := e.m.Config.Context - len(e.format.Prefix()) - len(q) - req.MaxTokens
	var texts, ids []string
	used := 0
	for _, r := range results {
		n := len(e.format.Chunk(r.Chunk.Text))
		if used+n > budget {
			break
		}
		used += n
		texts = append(texts, r.Chunk.Text)
		ids = append(ids, r.Chunk.ID)
		ans.Citations = append(ans.Citations, Citation{Index: len(ids), SearchResult: r})
	}
	seg := e.format.Segments(req.Question, texts)

	opt, note := s.fusion(mode, req.Ratio, req.RatioAuto, chunkRows(seg))
	ans.Mode, ans.Note = string(opt.Mode), note
	if opt.Mode == blend.ModeCacheBlend {
		ans.Ratio = opt.Ratio
	}
	res, missing, hot, err := s.fuse(ctx, seg, ids, opt)
	ans.Timings.KVMissing += missing
	ans.Timings.KVHot += hot
	if err != nil {
		return ans, fmt.Errorf("ask: %w", err)
	}
	ans.Timings.FirstToken = time.Since(start)
	ans.Timings.KVDevice += res.Stats.DeviceHits
	ans.Timings.KVLoad = res.Stats.Load
	ans.Timings.Recompute = res.Stats.Compute
	gopt := model.GenerateOptions{
		MaxTokens: req.MaxTokens,
		Sampler:   model.SamplerConfig{Temperature: float32(req.Temperature), Seed: req.Seed},
	}
	var gen model.Generation
	if req.Rapid {
		gen, err = s.decodeRapid(ctx, req, results[:len(ids)], res, opt, gopt, &ans.Timings, emit)
	} else {
		gen, err = blend.Generate(ctx, e.m, res, gopt, emit)
	}
	ans.Text, ans.Stop = gen.Text, string(gen.Reason)
	ans.Timings.Decode, ans.Timings.Tokens = gen.Decode, len(gen.Tokens)
	if gen.Decode > 0 {
		ans.Timings.TokensPerS = float64(len(gen.Tokens)) / gen.Decode.Seconds()
	}
	if err != nil {
		return ans, fmt.Errorf("ask: %w", err)
	}
	return ans, nil
}

// Limits of RAPID's request fields.
const (
	DefaultDraftChunks = 3
	MaxRapidGamma      = 16
	MaxRapidEta        = 100
)

// validateRapid checks and defaults the RAPID fields of req.
func validateRapid(req *AskRequest) error {
	if !req.Rapid {
		return nil // the other RAPID fields are ignored
	}
	if req.DraftChunks == 0 {
		req.DraftChunks = DefaultDraftChunks
	}
	if req.Gamma == 0 {
		req.Gamma = blend.DefaultGamma
	}
	switch {
	case req.DraftChunks < 1:
		return fmt.Errorf("ask: draft_chunks %d must be ≥ 1: %w", req.DraftChunks, ErrBadRequest)
	case req.Gamma < 1 || req.Gamma > MaxRapidGamma:
		return fmt.Errorf("ask: gamma %d outside 1..%d: %w", req.Gamma, MaxRapidGamma, ErrBadRequest)
	case !(req.Eta >= 0 && req.Eta <= MaxRapidEta):
		return fmt.Errorf("ask: eta %v outside [0, %d]: %w", req.Eta, MaxRapidEta, ErrBadRequest)
	}
	return nil
}

// fuse loads the chunks' cached KV — from the hot tier where it holds
// them, else from the store (computing what is missing) — and builds the
// fused context of seg by opt, recomputing once a chunk found corrupt while
// streaming; the chunks read from the store join the hot tier. It returns
// how many chunks' KV it computed and how many came from the hot tier. The
// caller holds the model lock.
func (s *Service) fuse(ctx context.Context, seg blend.Segments, ids []string, opt blend.Options) (res *blend.Result, computed, hot int, err error) {
	e := s.eng
	for attempt := 0; ; attempt++ {
		var src *hotSource
		var ld *kvstore.Loader
		hot = 0
		if opt.Mode != blend.ModeFull && opt.Mode != blend.ModePrefix && len(ids) > 0 {
			// Chunks in the hot tier come from RAM; the store streams the rest.
			entries := make([]*hotEntry, len(ids))
			var coldIDs []string
			for i, id := range ids {
				if entries[i] = e.hot.get(id); entries[i] == nil {
					coldIDs = append(coldIDs, id)
				} else {
					hot++
				}
			}
			var cold blend.Source
			if len(coldIDs) > 0 {
				var missing int
				ld, missing, err = s.loadKV(ctx, coldIDs)
				computed += missing
				if err != nil {
					return nil, computed, hot, err
				}
				cold = ld
			}
			src = newHotSource(entries, cold)
		}
		opt.Backend = e.be // the configured device (nil: the CPU)
		var bsrc blend.Source
		if src != nil {
			bsrc = src
			// Ids name the chunk KV the hot tier and the store hold (text,
			// model, prefix, codec): a GPU keeps it in its device tier.
			opt.ChunkIDs = ids
		}
		res, err = blend.Prefill(ctx, e.m, seg, e.prefix, bsrc, opt)
		if t, ok := e.be.(model.ChunkTier); ok {
			st := t.ChunkTierStats()
			e.devTier.Store(&st)
		}
		if ld != nil {
			if err == nil {
				// The store's read time is per row of the chunks it read.
				e.fid.observe(ld.ReadTime(), src.coldRows(seg), ld.Layers(), res.Stats)
			}
			ld.Close()
		}
		if err == nil && src != nil {
			src.keep(e.hot, ids, e.m.Config.Layers)
		}
		// A value found corrupt while streaming has been dropped by the
		// store: the retry recomputes it.
		if err != nil && attempt == 0 && errors.Is(err, kvstore.ErrCorrupt) {
			s.log.Warn("corrupt chunk KV while answering; recomputing", "err", err)
			continue
		}
		return res, computed, hot, err
	}
}

// draftChunks returns the drafter's chunks: the top n of the target's
// (retrieval order), put in document order (by document, then offset).
func draftChunks(used []SearchResult, n int) []SearchResult {
	top := slices.Clone(used[:min(n, len(used))])
	slices.SortStableFunc(top, func(a, b SearchResult) int {
		return cmp.Or(cmp.Compare(a.Chunk.Doc, b.Chunk.Doc), cmp.Compare(a.Chunk.Start, b.Chunk.Start))
	})
	return top
}

// decodeRapid decodes with RAPID: target is the fused long context, the
// drafter the same model over the top req.DraftChunks chunks fused by the
// same mode. When the drafter's context would not be shorter than the
// target's it decodes with the target alone and says so in the timings.
func (s *Service) decodeRapid(ctx context.Context, req AskRequest, used []SearchResult, target *blend.Result, opt blend.Options, gopt model.GenerateOptions, tm *Timings, emit func(string) error) (model.Generation, error) {
	e := s.eng
	rt := &RapidTimings{TargetRows: target.KV.Len()}
	tm.Rapid = rt
	if len(used) <= req.DraftChunks {
		rt.Off = true
		rt.OffReason = fmt.Sprintf("the drafter's %d chunks would be all %d of the target's", req.DraftChunks, len(used))
		return blend.Generate(ctx, e.m, target, gopt, emit)
	}
	top := draftChunks(used, req.DraftChunks)
	// The drafter's rows: the target's less the chunks it leaves out.
	draftRows := target.KV.Len()
	for _, r := range used[len(top):] {
		draftRows -= r.Chunk.Tokens
	}
	if ok, why := e.rapid.ShouldDraft(target.KV.Len(), draftRows, 0); !ok {
		// Skipped before the drafter's prefill: the target decodes alone.
		rt.DraftChunks, rt.DraftRows = len(top), draftRows
		rt.Off, rt.OffReason = true, why
		return blend.Generate(ctx, e.m, target, gopt, emit)
	}
	texts := make([]string, len(top))
	ids := make([]string, len(top))
	for i, r := range top {
		texts[i], ids[i] = r.Chunk.Text, r.Chunk.ID
	}
	t0 := time.Now()
	dseg := e.format.Segments(req.Question, texts)
	dm := e.m
	var drafter *blend.Result
	var err error
	if e.dm != nil {
		// A separate draft model: its chunk KV is computed now (few, small).
		dm = e.dm
		dopt := opt
		dopt.Backend = e.dbe
		drafter, err = blend.PrefillEncoded(ctx, e.dm, dseg, e.dprefix, dopt)
		rt.DraftModel = e.dm.Config.Name
	} else {
		var missing, hot int
		drafter, missing, hot, err = s.fuse(ctx, dseg, ids, opt)
		tm.KVMissing += missing
		tm.KVHot += hot
	}
	rt.DraftPrefill = time.Since(t0)
	if err != nil {
		return model.Generation{}, fmt.Errorf("drafter: %w", err)
	}
	rt.DraftChunks, rt.DraftRows = len(top), drafter.KV.Len()
	ropt := blend.RapidOptions{Gamma: req.Gamma, Eta: req.Eta, Costs: &e.rapid}
	gen, st, err := blend.Rapid(ctx, e.m, target, dm, drafter, gopt, ropt, emit)
	rt.Rounds, rt.Drafted, rt.Accepted = st.Rounds, st.Drafted, st.Accepted
	rt.AcceptRate, rt.MeanAccepted = st.AcceptRate(), st.MeanAccepted()
	rt.GammaMean, rt.GammaLast = st.GammaMean, st.GammaLast
	rt.DraftStep, rt.TargetStep = st.DraftStep, st.TargetStep
	rt.VerifyFixed, rt.VerifyPerRow = st.VerifyFixed, st.VerifyPerRow
	rt.Bound, _ = st.Bound(st.AcceptRate(), blend.MinGamma, blend.MaxGamma)
	rt.Off, rt.OffReason = st.Disabled, st.DisabledReason
	return gen, err
}

// loadKV opens a streaming load of the chunks' KV, first computing and
// storing the KV of chunks the store lacks or holds corrupt. The caller
// holds the model lock. It returns how many chunks it computed.
func (s *Service) loadKV(ctx context.Context, ids []string) (*kvstore.Loader, int, error) {
	keys := make([]kvstore.Key, len(ids))
	for i, id := range ids {
		keys[i] = s.eng.key(id)
	}
	computed, err := s.computeMissingKV(ids)
	if err != nil {
		return nil, computed, err
	}
	ld, err := s.eng.store.Load(ctx, keys)
	if errors.Is(err, kvstore.ErrCorrupt) || errors.Is(err, kvstore.ErrNotFound) {
		// A value went bad or was evicted between the check and the load
		// (the store has dropped it): compute what it no longer serves, once.
		s.log.Warn("chunk KV unusable; recomputing", "err", err)
		n, cerr := s.computeMissingKV(ids)
		computed += n
		if cerr != nil {
			return nil, computed, cerr
		}
		ld, err = s.eng.store.Load(ctx, keys)
	}
	if err != nil {
		return nil, computed, err
	}
	return ld, computed, nil
}

// computeMissingKV computes and stores the KV of each chunk the store does
// not hold, returning how many it computed. The caller holds the model lock.
func (s *Service) computeMissingKV(ids []string) (int, error) {
	computed := 0
	for _, id := range ids {
		if s.eng.store.Has(s.eng.key(id)) {
			continue
		}
		ch, found, err := s.cat.chunk(id)
		if err != nil {
			return computed, err
		}
		if !found {
			return computed, fmt.Errorf("chunk %s: not in the catalog", id)
		}
		if err := s.computeChunkKV(id, ch.Text); err != nil {
			return computed, err
		}
		computed++
	}
	return computed, nil
}

// chunkRows is the number of chunk rows of seg (its fused context less P
// and Q).
func chunkRows(seg blend.Segments) int {
	n := 0
	for _, c := range seg.Chunks {
		n += len(c)
	}
	return n
}
