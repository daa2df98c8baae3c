package blend

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/blendrag/blendrag/kernels"
	"github.com/blendrag/blendrag/model"
)

// KVLookup returns the cached KV of chunk id: the chunk segment's rows as
// EncodeChunk made them (after P, at positions |P|..). The cross-encoder
// reads the result and does not keep or modify it.
type KVLookup func(ctx context.Context, id string) (*model.KV, error)

// CrossEncoderOptions configure a CrossEncoder.
type CrossEncoderOptions struct {
	// Lock, when set, is called before the cross-encoder uses the model
	// (and the lookup, which may compute a chunk's KV) and the function it
	// returns after: the owner of a shared model serialises its users with
	// it. It is taken per chunk load and per question forward, so other
	// users of the model wait for one question at most.
	Lock func() (unlock func())
	// Backend is the device the question rows are computed on (it must run
	// the cross-encoder's model); nil means the model's CPU forward pass.
	// A device backend is not safe for concurrent use: concurrent callers
	// must serialise with Lock.
	Backend model.Backend
}

// CrossEncoder scores how well a chunk answers a question with the
// generator itself: CE(q, c) is the mean log-probability of the question's
// text tokens (the question segment Q up to the end of the question, not
// the template's end of turn) when Q's rows follow P and the chunk, as
// Prefill lays them out. It computes only the question rows, over the
// chunk's cached KV (KVLookup), so a call costs a question-length forward,
// never a chunk prefill. Higher is more relevant; scores are ≤ 0.
//
// The model's attention masks keys by position only (model.Pass), so
// questions placed after the same chunk would see each other's rows:
// ScoreQuestions loads the chunk once and runs one forward per question.
//
// A CrossEncoder is safe for concurrent use. Its method set is
// retrieval/cur.CrossEncoder's.
type CrossEncoder struct {
	m      *model.Model
	b      model.Backend // computes the question rows
	format *Format
	prefix *model.KV
	lookup KVLookup
	lock   func() func()

	mu   sync.Mutex
	free []*workspace // idle workspaces, reused across calls
}

// workspace is one call's scratch: P's rows, then a chunk's, then a
// question's, and the logits of the scored rows.
type workspace struct {
	kv     *model.KV
	logits []float32
}

// NewCrossEncoder returns the KV-cached cross-encoder of model m under
// format f. prefix is P's KV (EncodePrefix of f.Prefix()); it is copied.
func NewCrossEncoder(m *model.Model, f *Format, prefix *model.KV, lookup KVLookup, opt CrossEncoderOptions) (*CrossEncoder, error) {
	if m == nil || f == nil || lookup == nil {
		return nil, errors.New("blend: cross-encoder needs a model, a format and a KV lookup")
	}
	if err := checkPrefixKV(m, prefix, f.Prefix()); err != nil {
		return nil, err
	}
	b, err := backendFor(m, opt.Backend)
	if err != nil {
		return nil, err
	}
	lock := opt.Lock
	if lock == nil {
		lock = func() func() { return func() {} }
	}
	return &CrossEncoder{m: m, b: b, format: f, prefix: prefix.Clone(), lookup: lookup, lock: lock}, nil
}

func (c *CrossEncoder) getWorkspace() *workspace {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := len(c.free); n > 0 {
		w := c.free[n-1]
		c.free = c.free[:n-1]
		return w
	}
	return &workspace{kv: c.prefix.Clone()}
}

func (c *CrossEncoder) putWorkspace(w *workspace) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.free = append(c.free, w)
}

// questionTokens is a question ready for scoring: the question segment's
// tokens up to and including the question's last text token, and the index
// of its first text token (after "\n\nQuestion:").
type questionTokens struct {
	toks  []int32
	first int
}

// Question returns the question segment's tokens up to the end of the
// question text (a prefix of Format.Question(q): the template's end of turn
// does not influence the question's own log-probabilities) and the index of
// the first token of the question text, the first token scored.
func (c *CrossEncoder) Question(q string) (toks []int32, first int, err error) {
	qt, err := c.question(q)
	return qt.toks, qt.first, err
}

func (c *CrossEncoder) question(q string) (questionTokens, error) {
	if strings.TrimSpace(q) == "" {
		return questionTokens{}, errors.New("blend: cross-encoder: empty question")
	}
	tok := c.format.tok
	body := tok.Encode(QuestionSeparator+q, false)
	// The separator's trailing space merges into the question's first
	// word, so the label is "\n\nQuestion:" without it.
	label := tok.Encode(strings.TrimRight(QuestionSeparator, " "), false)
	first := 0
	for first < len(label) && first < len(body) && body[first] == label[first] {
		first++
	}
	if first == 0 || first >= len(body) {
		return questionTokens{}, fmt.Errorf("blend: cross-encoder: question %q has no tokens after the label", q)
	}
	return questionTokens{toks: body, first: first}, nil
}

// scoreCacheKey is the context key of a request's score cache.
type scoreCacheKey struct{}

type scoreCache struct {
	mu sync.Mutex
	m  map[[2]string]float32
}

// WithScoreCache returns a context that carries a fresh cache of
// cross-encoder scores. Calls made with it (or a context derived from it)
// compute each (question, chunk) pair once: a request that scores the same
// pair twice (CUR's anchor chunks, then a rerank) pays once.
func WithScoreCache(ctx context.Context) context.Context {
	return context.WithValue(ctx, scoreCacheKey{}, &scoreCache{m: map[[2]string]float32{}})
}

func cacheOf(ctx context.Context) *scoreCache {
	sc, _ := ctx.Value(scoreCacheKey{}).(*scoreCache)
	return sc
}

func (sc *scoreCache) get(q, id string) (float32, bool) {
	if sc == nil {
		return 0, false
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	v, ok := sc.m[[2]string{q, id}]
	return v, ok
}

func (sc *scoreCache) put(q, id string, v float32) {
	if sc == nil {
		return
	}
	sc.mu.Lock()
	sc.m[[2]string{q, id}] = v
	sc.mu.Unlock()
}

// ScoreChunks returns CE(question, c) for each chunk id, in order: one
// question-length forward over each chunk's cached KV.
func (c *CrossEncoder) ScoreChunks(ctx context.Context, question string, chunkIDs []string) ([]float32, error) {
	qt, err := c.question(question)
	if err != nil {
		return nil, err
	}
	out := make([]float32, len(chunkIDs))
	pairs := make([]pair, len(chunkIDs))
	for i, id := range chunkIDs {
		pairs[i] = pair{question, qt, id, &out[i]}
	}
	return out, c.score(ctx, pairs)
}

// ScoreQuestions returns CE(q, chunkID) for each question, in order,
// loading the chunk's KV once.
func (c *CrossEncoder) ScoreQuestions(ctx context.Context, questions []string, chunkID string) ([]float32, error) {
	out := make([]float32, len(questions))
	pairs := make([]pair, len(questions))
	for i, q := range questions {
		qt, err := c.question(q)
		if err != nil {
			return nil, err
		}
		pairs[i] = pair{q, qt, chunkID, &out[i]}
	}
	return out, c.score(ctx, pairs)
}

// pair is one (question, chunk) score to compute into out.
type pair struct {
	q   string
	qt  questionTokens
	id  string
	out *float32
}

// score computes the pairs the request's cache lacks, loading a chunk's KV
// once for a run of pairs on the same chunk.
func (c *CrossEncoder) score(ctx context.Context, pairs []pair) error {
	sc := cacheOf(ctx)
	todo := pairs[:0:0]
	for _, p := range pairs {
		if v, ok := sc.get(p.q, p.id); ok {
			*p.out = v
		} else {
			todo = append(todo, p)
		}
	}
	if len(todo) == 0 {
		return nil
	}
	w := c.getWorkspace()
	defer c.putWorkspace(w)
	for i, p := range todo {
		if err := ctx.Err(); err != nil {
			return err
		}
		unlock := c.lock()
		var err error
		if i == 0 || todo[i-1].id != p.id {
			err = c.loadChunk(ctx, w, p.id)
		}
		var v float32
		if err == nil {
			v, err = c.scoreLoaded(w, p.qt)
		}
		unlock()
		if err != nil {
			return fmt.Errorf("blend: cross-encoder: chunk %s: %w", p.id, err)
		}
		*p.out = v
		sc.put(p.q, p.id, v)
	}
	return nil
}

// loadChunk makes w hold P's rows followed by chunk id's cached rows.
func (c *CrossEncoder) loadChunk(ctx context.Context, w *workspace, id string) error {
	kv, err := c.lookup(ctx, id)
	if err != nil {
		return err
	}
	if err := c.checkChunk(kv); err != nil {
		return err
	}
	w.kv.Truncate(c.prefix.Len())
	return w.kv.Append(kv)
}

// checkChunk checks that kv is chunk KV for this model placed right after P.
func (c *CrossEncoder) checkChunk(kv *model.KV) error {
	cfg := c.m.Config
	switch {
	case kv == nil || kv.Len() == 0:
		return errors.New("empty chunk KV")
	case kv.KVDim != cfg.KVDim() || kv.Layers() != cfg.Layers:
		return fmt.Errorf("chunk KV of %d layers × %d does not fit the model (%d × %d)", kv.Layers(), kv.KVDim, cfg.Layers, cfg.KVDim())
	}
	for i, p := range kv.Pos {
		if want := c.prefix.Len() + i; int(p) != want {
			return fmt.Errorf("chunk KV row %d is at position %d, want %d (encoded after P)", i, p, want)
		}
	}
	return nil
}

// scoreLoaded computes the question rows after the chunk in w and returns
// the mean log-probability of the question's text tokens; w is left
// holding P and the chunk.
func (c *CrossEncoder) scoreLoaded(w *workspace, qt questionTokens) (float32, error) {
	base := w.kv.Len()
	defer w.kv.Truncate(base)
	return scoreAfter(c.b, w.kv, qt, &w.logits)
}

// scoreAfter appends the question's rows (all but its last token, whose
// successor is not scored) to kv at the positions after kv's last row,
// runs them through every layer and returns the mean log-probability of
// qt.toks[qt.first:]. logits is scratch, grown as needed.
func scoreAfter(b model.Backend, kv *model.KV, qt questionTokens, logits *[]float32) (float32, error) {
	cfg := b.Model().Config
	start := int(kv.Pos[kv.Len()-1]) + 1
	rows := qt.toks[:len(qt.toks)-1]
	if start+len(rows) > cfg.Context {
		return 0, fmt.Errorf("question rows reach position %d, the model has %d", start+len(rows), cfg.Context)
	}
	first := kv.Grow(rows, model.Positions(start, len(rows)))
	p, err := b.NewPass(kv, rowRange(first, kv.Len()))
	if err != nil {
		return 0, err
	}
	for l := range cfg.Layers {
		if err := p.Layer(l); err != nil {
			return 0, fmt.Errorf("layer %d: %w", l, err)
		}
	}
	// Row i predicts token i+1: the scored tokens first.. come from rows
	// first−1 .. len−2.
	sel := rowRange(qt.first-1, len(rows))
	n := len(sel) * cfg.Vocab
	if cap(*logits) < n {
		*logits = make([]float32, n)
	}
	out := (*logits)[:n]
	if err := p.Logits(out, sel); err != nil {
		return 0, err
	}
	var sum float64
	for j, row := range sel {
		z := out[j*cfg.Vocab : (j+1)*cfg.Vocab]
		target := z[qt.toks[row+1]]
		sum += float64(target) - kernels.Softmax(z)
	}
	return float32(sum / float64(len(sel))), nil
}
