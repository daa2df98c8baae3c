package server

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/blendrag/blendrag/blend"
	"github.com/blendrag/blendrag/retrieval"
)

// Retrievers Search accepts.
const (
	RetrieverBM25   = "bm25"
	RetrieverDense  = "dense"
	RetrieverCUR    = "cur"
	RetrieverHybrid = "hybrid"
)

// Search limits.
const (
	DefaultK       = 5
	MaxK           = 100
	MaxQueryBytes  = 4096
	minFusionDepth = 50 // each retriever's list length before fusion
)

// SearchRequest is one search.
type SearchRequest struct {
	Query string `json:"query"`
	// K results (default DefaultK, at most MaxK).
	K int `json:"k,omitempty"`
	// Retriever is bm25, dense, cur or hybrid (default: hybrid).
	Retriever string `json:"retriever,omitempty"`
	// Rerank re-scores the fused top with the exact cross-encoder.
	Rerank bool `json:"rerank,omitempty"`
}

// SearchResult is one retrieved chunk with where it comes from and how each
// retriever ranked it.
type SearchResult struct {
	Chunk ChunkInfo `json:"chunk"`
	// Title of the chunk's document.
	Title string `json:"title"`
	// Score is the final score: the RRF score for hybrid, the cross-encoder
	// score after a rerank, else the retriever's own score.
	Score float64 `json:"score"`
	// Ranks (1-based) and Scores per retriever that returned the chunk
	// ("ce" for the reranker).
	Ranks  map[string]int     `json:"ranks"`
	Scores map[string]float64 `json:"scores"`
}

// Search returns the top chunks of committed documents for req.Query.
func (s *Service) Search(ctx context.Context, req SearchRequest) ([]SearchResult, error) {
	q := strings.TrimSpace(req.Query)
	switch {
	case q == "":
		return nil, fmt.Errorf("search: empty query: %w", ErrBadRequest)
	case len(q) > MaxQueryBytes:
		return nil, fmt.Errorf("search: query is %d bytes, limit %d: %w", len(q), MaxQueryBytes, ErrBadRequest)
	case !utf8.ValidString(q):
		return nil, fmt.Errorf("search: query is not valid UTF-8: %w", ErrBadRequest)
	}
	k := req.K
	if k == 0 {
		k = DefaultK
	}
	if k < 0 || k > MaxK {
		return nil, fmt.Errorf("search: k = %d, want 1..%d: %w", k, MaxK, ErrBadRequest)
	}
	retr := req.Retriever
	if retr == "" {
		retr = RetrieverHybrid
	}
	if s.ce == nil && req.Rerank {
		return nil, fmt.Errorf("search: rerank needs a cross-encoder: %w", ErrNoCE)
	}
	if s.cur == nil && retr == RetrieverCUR {
		return nil, fmt.Errorf("search: the cur retriever needs a cross-encoder: %w", ErrNoCE)
	}
	if retr == RetrieverCUR && !s.curReady() {
		return nil, fmt.Errorf("search: the cur index is still computing its anchor queries: %w", ErrNoCE)
	}
	// Each (question, chunk) pair is scored once per search (CUR's anchor
	// chunks, then the rerank).
	ctx = blend.WithScoreCache(ctx)
	depth := max(minFusionDepth, 4*k)

	lists := map[string][]retrieval.Hit{}
	var names []string
	switch retr {
	case RetrieverBM25, RetrieverDense, RetrieverCUR:
		names = []string{retr}
	case RetrieverHybrid:
		names = []string{RetrieverBM25, RetrieverDense}
		if s.curReady() {
			names = append(names, RetrieverCUR)
		}
	default:
		return nil, fmt.Errorf("search: unknown retriever %q (want bm25, dense, cur or hybrid): %w", retr, ErrBadRequest)
	}
	for _, name := range names {
		hits, err := s.retrieve(ctx, name, q, depth)
		if err != nil {
			return nil, fmt.Errorf("search: %s: %w", name, err)
		}
		lists[name] = hits
	}

	var fused []retrieval.Fused
	if len(names) == 1 {
		for i, h := range lists[names[0]] {
			fused = append(fused, retrieval.Fused{ID: h.ID, Score: h.Score,
				Ranks: map[string]int{names[0]: i + 1}, Scores: map[string]float64{names[0]: h.Score}})
		}
	} else {
		fused = retrieval.FuseRRF(0, lists)
	}

	// Only chunks of committed documents, resolved to their records.
	want := k
	if req.Rerank {
		want = depthForRerank(k)
	}
	out := make([]SearchResult, 0, want)
	for _, f := range fused {
		if len(out) == want {
			break
		}
		r, ok, err := s.resolve(f.ID)
		if err != nil {
			return nil, fmt.Errorf("search: %w", err)
		}
		if !ok {
			continue
		}
		r.Score, r.Ranks, r.Scores = f.Score, f.Ranks, f.Scores
		out = append(out, r)
	}
	if req.Rerank && len(out) > 0 {
		ids := make([]string, len(out))
		for i, r := range out {
			ids[i] = r.Chunk.ID
		}
		scores, err := s.ce.ScoreChunks(ctx, q, ids)
		if err != nil {
			return nil, fmt.Errorf("search: rerank: %w", err)
		}
		for i := range out {
			out[i].Score = float64(scores[i])
			out[i].Scores["ce"] = float64(scores[i])
		}
		slices.SortStableFunc(out, func(a, b SearchResult) int { return cmp.Compare(b.Score, a.Score) })
		for i := range out {
			out[i].Ranks["ce"] = i + 1
		}
		out = out[:min(k, len(out))]
	}
	return out, nil
}

// depthForRerank is how many fused results the exact reranker scores.
func depthForRerank(k int) int { return max(2*k, 20) }

// retrieve runs one retriever.
func (s *Service) retrieve(ctx context.Context, name, q string, depth int) ([]retrieval.Hit, error) {
	switch name {
	case RetrieverBM25:
		return s.bm25.Search(q, depth)
	case RetrieverDense:
		vecs, err := s.embed.Embed([]string{q})
		if err != nil {
			return nil, err
		}
		hits, err := s.dense.Search(vecs[0], depth)
		if err != nil {
			return nil, err
		}
		out := make([]retrieval.Hit, len(hits))
		for i, h := range hits {
			out[i] = retrieval.Hit{ID: h.ID, Score: float64(h.Score)}
		}
		return out, nil
	case RetrieverCUR:
		hits, err := s.cur.Search(ctx, q, depth)
		if err != nil {
			return nil, err
		}
		out := make([]retrieval.Hit, len(hits))
		for i, h := range hits {
			out[i] = retrieval.Hit{ID: h.ID, Score: h.Score}
		}
		return out, nil
	}
	return nil, fmt.Errorf("unknown retriever %q", name)
}

// resolve returns chunk id as a result if a committed document holds it
// (ok false otherwise: the chunk belongs only to a document being ingested
// or deleted). The result's ref is the chunk's first place in a committed
// document.
func (s *Service) resolve(id string) (SearchResult, bool, error) {
	ch, found, err := s.cat.chunk(id)
	if err != nil || !found {
		return SearchResult{}, false, err
	}
	for _, ref := range ch.Refs {
		doc, found, err := s.cat.doc(ref.Doc)
		if err != nil {
			return SearchResult{}, false, err
		}
		if found && doc.State == stateCommitted {
			return SearchResult{
				Chunk: ChunkInfo{ID: ch.ID, Text: ch.Text, Tokens: ch.Tokens, ChunkRef: ref},
				Title: doc.Doc.Title,
			}, true, nil
		}
	}
	return SearchResult{}, false, nil
}

// Rank returns the ids of the top n chunks of committed documents for query
// by one retriever (bm25, dense or cur), best first. Unlike Search it has
// no MaxK limit and no fusion: evaluation tools rerank its output.
func (s *Service) Rank(ctx context.Context, retriever, query string, n int) ([]string, error) {
	switch {
	case retriever == RetrieverCUR && !s.curReady():
		return nil, fmt.Errorf("rank: the cur index is not ready: %w", ErrNoCE)
	case retriever != RetrieverBM25 && retriever != RetrieverDense && retriever != RetrieverCUR:
		return nil, fmt.Errorf("rank: retriever %q (want bm25, dense or cur): %w", retriever, ErrBadRequest)
	case n <= 0 || strings.TrimSpace(query) == "":
		return nil, fmt.Errorf("rank: empty query or n = %d: %w", n, ErrBadRequest)
	}
	hits, err := s.retrieve(ctx, retriever, query, n)
	if err != nil {
		return nil, fmt.Errorf("rank: %s: %w", retriever, err)
	}
	ids := make([]string, 0, len(hits))
	for _, h := range hits {
		_, ok, err := s.resolve(h.ID)
		if err != nil {
			return nil, fmt.Errorf("rank: %w", err)
		}
		if ok {
			ids = append(ids, h.ID)
		}
	}
	return ids, nil
}
