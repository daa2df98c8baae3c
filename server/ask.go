package server

import (
	"context"
	"errors"
	"fmt"
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
	Ratio     float64 `json:"ratio,omitempty"` // CacheBlend's r; 0 means the default
	MaxTokens int     `json:"max_tokens,omitempty"`
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
	Recompute  time.Duration `json:"recompute_ns"`   // fusion compute (recomputed rows, question rows)
	FirstToken time.Duration `json:"first_token_ns"` // from the request to the first token's logits
	Decode     time.Duration `json:"decode_ns"`
	Tokens     int           `json:"tokens"`
	TokensPerS float64       `json:"decode_tok_s"`
}

// Answer is the outcome of Ask.
type Answer struct {
	Text      string     `json:"answer"`
	Mode      string     `json:"mode"`
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

	opt := blend.DefaultOptions(mode)
	if req.Ratio > 0 {
		opt.Ratio = req.Ratio
	}
	var res *blend.Result
	for attempt := 0; ; attempt++ {
		var src blend.Source
		var ld *kvstore.Loader
		if mode != blend.ModeFull && mode != blend.ModePrefix && len(ids) > 0 {
			var missing int
			if ld, missing, err = s.loadKV(ctx, ids); err != nil {
				return ans, fmt.Errorf("ask: %w", err)
			}
			ans.Timings.KVMissing += missing
			src = ld
		}
		res, err = blend.Prefill(ctx, e.m, seg, e.prefix, src, opt)
		if ld != nil {
			ld.Close()
		}
		// A value found corrupt while streaming has been dropped by the
		// store: the retry recomputes it.
		if err != nil && attempt == 0 && errors.Is(err, kvstore.ErrCorrupt) {
			s.log.Warn("corrupt chunk KV while answering; recomputing", "err", err)
			continue
		}
		if err != nil {
			return ans, fmt.Errorf("ask: %w", err)
		}
		break
	}
	ans.Timings.FirstToken = time.Since(start)
	ans.Timings.KVLoad = res.Stats.Load
	ans.Timings.Recompute = res.Stats.Compute
	gen, err := blend.Generate(ctx, e.m, res, model.GenerateOptions{
		MaxTokens: req.MaxTokens,
		Sampler:   model.SamplerConfig{Temperature: float32(req.Temperature), Seed: req.Seed},
	}, emit)
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
