package cur

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"sync"

	"gonum.org/v1/gonum/mat"

	"github.com/blendrag/blendrag/internal/atomicfile"
	"github.com/blendrag/blendrag/retrieval/vector/binfile"
)

// CrossEncoder scores (question, chunk) pairs; higher means more relevant.
// Chunks are named by id (the real one runs the question's rows over the
// chunk's cached KV). Both methods return one score per input, in order.
type CrossEncoder interface {
	// ScoreChunks returns CE(question, c) for each chunk id.
	ScoreChunks(ctx context.Context, question string, chunkIDs []string) ([]float32, error)
	// ScoreQuestions returns CE(q, chunkID) for each question (one batched
	// forward in the real one).
	ScoreQuestions(ctx context.Context, questions []string, chunkID string) ([]float32, error)
}

// Options configures an Index. Zero fields take the defaults.
type Options struct {
	// AnchorQueries is k_q, the number of anchor queries SampleAnchors
	// callers should ask for (default 32). SetAnchors accepts any number.
	AnchorQueries int
	// AnchorChunks is k_i, the chunks scored exactly per search (default
	// 32). Keep k_i ≥ k_q so that W can have full row rank.
	AnchorChunks int
	// TopK is k_r, the most results a search returns (default 16).
	TopK int
	// RCond is the relative cut-off for pinv(W): singular values below
	// RCond·σ_max are treated as zero (default 1e-6). R comes from float32
	// forward passes, about 7 significant digits, so directions of W
	// weaker than ~1e-6 of the strongest are rounding noise; inverting them
	// would multiply that noise by more than a million.
	RCond float64
	// Seed seeds the choice of anchor chunks (mixed with the question).
	Seed int64
	// Rerank rescores the top k_r chunks with the cross-encoder and orders
	// them by the exact score (k_r more CE calls per search).
	Rerank bool
}

func (o Options) withDefaults() Options {
	if o.AnchorQueries <= 0 {
		o.AnchorQueries = 32
	}
	if o.AnchorChunks <= 0 {
		o.AnchorChunks = 32
	}
	if o.TopK <= 0 {
		o.TopK = 16
	}
	if o.RCond <= 0 {
		o.RCond = 1e-6
	}
	return o
}

// Hit is a search result. Score is the exact CE score when the search
// scored every chunk (or reranked), the CUR approximation ŝ otherwise.
type Hit struct {
	ID    string
	Score float64
}

// Index is a persistent CUR index over chunk ids. It is safe for concurrent
// use. Mutations (SetAnchors, ObserveQuestion, AddChunk, Delete, Save) are
// serialised and call the cross-encoder without blocking searches; searches
// call it without blocking each other.
type Index struct {
	ce   CrossEncoder
	opt  Options
	path string

	writeMu sync.Mutex // serialises mutations and a search's last try
	mu      sync.RWMutex
	anchors []string
	gen     uint64 // incremented whenever the anchor queries change
	next    int    // the anchor ObserveQuestion replaces next
	ids     []string
	pos     map[string]int
	r       []float64 // column-major: chunk j's column is r[j*kq : (j+1)*kq]
}

// Open returns the index stored at path, loading the file if it exists (a
// corrupt file is an error naming it) and starting empty otherwise.
// Nothing is written until Save.
func Open(path string, ce CrossEncoder, opt Options) (*Index, error) {
	if ce == nil {
		return nil, fmt.Errorf("cur: open %s: nil cross-encoder", path)
	}
	x := &Index{ce: ce, opt: opt.withDefaults(), path: path, pos: map[string]int{}}
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return x, nil
	case err != nil:
		return nil, fmt.Errorf("cur: open: %w", err)
	}
	if err := x.decode(data); err != nil {
		return nil, fmt.Errorf("cur: open %s: %w", path, err)
	}
	return x, nil
}

// Anchors returns the anchor queries, in row order.
func (x *Index) Anchors() []string {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return slices.Clone(x.anchors)
}

// Has reports whether chunk id is indexed.
func (x *Index) Has(id string) bool {
	x.mu.RLock()
	defer x.mu.RUnlock()
	_, ok := x.pos[id]
	return ok
}

// Len returns the number of indexed chunks.
func (x *Index) Len() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.ids)
}

// checkScores validates a cross-encoder answer.
func checkScores(s []float32, want int) error {
	if len(s) != want {
		return fmt.Errorf("cross-encoder returned %d scores for %d inputs", len(s), want)
	}
	for i, v := range s {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("cross-encoder score %d is %v", i, v)
		}
	}
	return nil
}

// SetAnchors replaces the anchor queries and recomputes R: one
// ScoreQuestions call per chunk. Queries must be non-empty and distinct.
func (x *Index) SetAnchors(ctx context.Context, queries []string) error {
	if len(queries) == 0 {
		return errors.New("cur: set anchors: no queries")
	}
	seen := map[string]bool{}
	for _, q := range queries {
		if q == "" || seen[q] {
			return fmt.Errorf("cur: set anchors: empty or repeated query %q", q)
		}
		seen[q] = true
	}
	x.writeMu.Lock()
	defer x.writeMu.Unlock()
	x.mu.RLock()
	ids := slices.Clone(x.ids)
	x.mu.RUnlock()
	kq := len(queries)
	r := make([]float64, len(ids)*kq)
	for j, id := range ids {
		s, err := x.ce.ScoreQuestions(ctx, queries, id)
		if err == nil {
			err = checkScores(s, kq)
		}
		if err != nil {
			return fmt.Errorf("cur: set anchors: chunk %q: %w", id, err)
		}
		for a, v := range s {
			r[j*kq+a] = float64(v)
		}
	}
	x.mu.Lock()
	x.anchors, x.r, x.next = slices.Clone(queries), r, 0
	x.gen++
	x.mu.Unlock()
	return nil
}

// ObserveQuestion makes a real user question an anchor query in place of
// the oldest anchor (the anchors form a FIFO ring: sampled pseudo-questions
// go first, then the oldest real ones). It recomputes that row of R with
// one ScoreChunks call over all N chunks, so callers should observe a
// sample of questions, off the request path. A question that already is an
// anchor, or an index without anchors, is left alone.
func (x *Index) ObserveQuestion(ctx context.Context, q string) error {
	if q == "" {
		return errors.New("cur: observe question: empty question")
	}
	x.writeMu.Lock()
	defer x.writeMu.Unlock()
	x.mu.RLock()
	kq, ids := len(x.anchors), slices.Clone(x.ids)
	known := slices.Contains(x.anchors, q)
	x.mu.RUnlock()
	if kq == 0 || known {
		return nil
	}
	var s []float32
	if len(ids) > 0 {
		var err error
		s, err = x.ce.ScoreChunks(ctx, q, ids)
		if err == nil {
			err = checkScores(s, len(ids))
		}
		if err != nil {
			return fmt.Errorf("cur: observe question: %w", err)
		}
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	a := x.next
	x.anchors[a] = q
	for j, v := range s {
		x.r[j*kq+a] = float64(v)
	}
	x.next = (a + 1) % kq
	x.gen++
	return nil
}

// AddChunk indexes chunk id: its column of R is ScoreQuestions(anchors, id).
// Re-adding an id recomputes its column. Without anchors the column is
// empty until SetAnchors.
func (x *Index) AddChunk(ctx context.Context, id string) error {
	if id == "" {
		return errors.New("cur: add chunk: empty id")
	}
	x.writeMu.Lock()
	defer x.writeMu.Unlock()
	x.mu.RLock()
	anchors := slices.Clone(x.anchors)
	x.mu.RUnlock()
	var s []float32
	if len(anchors) > 0 {
		var err error
		s, err = x.ce.ScoreQuestions(ctx, anchors, id)
		if err == nil {
			err = checkScores(s, len(anchors))
		}
		if err != nil {
			return fmt.Errorf("cur: add chunk %q: %w", id, err)
		}
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	j, ok := x.pos[id]
	if !ok {
		j = len(x.ids)
		x.ids = append(x.ids, id)
		x.pos[id] = j
		x.r = append(x.r, make([]float64, len(anchors))...)
	}
	for a, v := range s {
		x.r[j*len(anchors)+a] = float64(v)
	}
	return nil
}

// Delete removes chunk id; a missing id is not an error.
func (x *Index) Delete(id string) error {
	x.writeMu.Lock()
	defer x.writeMu.Unlock()
	x.mu.Lock()
	defer x.mu.Unlock()
	j, ok := x.pos[id]
	if !ok {
		return nil
	}
	kq, last := len(x.anchors), len(x.ids)-1
	if j != last {
		x.ids[j] = x.ids[last]
		x.pos[x.ids[j]] = j
		copy(x.r[j*kq:(j+1)*kq], x.r[last*kq:])
	}
	x.ids = x.ids[:last]
	x.r = x.r[:last*kq]
	delete(x.pos, id)
	return nil
}

// Search returns the top min(k, k_r) chunks for question. With N ≤ k_i +
// k_r chunks it scores all of them with the cross-encoder; otherwise it
// ranks by the CUR approximation ŝ = c·pinv(W)·R (see the package doc),
// reranking exactly when Options.Rerank is set.
func (x *Index) Search(ctx context.Context, question string, k int) ([]Hit, error) {
	k = min(k, x.opt.TopK)
	if k <= 0 {
		return nil, nil
	}
	x.mu.RLock()
	n := len(x.ids)
	if n <= x.opt.AnchorChunks+x.opt.TopK {
		ids := slices.Clone(x.ids)
		x.mu.RUnlock()
		return x.exact(ctx, question, ids, k)
	}
	x.mu.RUnlock()
	ids, est, err := x.approximate(ctx, question)
	if err != nil {
		return nil, err
	}
	hits := topHits(ids, est, k)
	if !x.opt.Rerank {
		return hits, nil
	}
	top := make([]string, len(hits))
	for i, h := range hits {
		top[i] = h.ID
	}
	return x.exact(ctx, question, top, k)
}

// exact scores ids with the cross-encoder and returns the top k.
func (x *Index) exact(ctx context.Context, question string, ids []string, k int) ([]Hit, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	s, err := x.ce.ScoreChunks(ctx, question, ids)
	if err == nil {
		err = checkScores(s, len(ids))
	}
	if err != nil {
		return nil, fmt.Errorf("cur: search: %w", err)
	}
	est := make([]float64, len(s))
	for i, v := range s {
		est[i] = float64(v)
	}
	return topHits(ids, est, k), nil
}

// topHits returns the k ids of highest score, best first (ties: id order).
func topHits(ids []string, score []float64, k int) []Hit {
	hits := make([]Hit, len(ids))
	for i, id := range ids {
		hits[i] = Hit{id, score[i]}
	}
	slices.SortFunc(hits, func(a, b Hit) int {
		switch {
		case a.Score > b.Score:
			return -1
		case a.Score < b.Score:
			return 1
		}
		return cmp.Compare(a.ID, b.ID)
	})
	return hits[:min(k, len(hits))]
}

// maxRetries bounds how often a search restarts because the anchor queries
// changed while it was calling the cross-encoder. The last try holds the
// writers' lock, so it cannot be outrun by a stream of mutations.
const maxRetries = 3

// approximate returns every chunk id with its CUR estimate ŝ.
func (x *Index) approximate(ctx context.Context, question string) ([]string, []float64, error) {
	for try := range maxRetries {
		last := try == maxRetries-1
		if last {
			x.writeMu.Lock()
		}
		ids, est, err := x.approximateOnce(ctx, question)
		if last {
			x.writeMu.Unlock()
		}
		if !errors.Is(err, errAnchorsChanged) {
			return ids, est, err
		}
	}
	return nil, nil, fmt.Errorf("cur: search: %w %d times", errAnchorsChanged, maxRetries)
}

// errAnchorsChanged reports that the anchor queries changed between a
// search's cross-encoder calls and its estimate.
var errAnchorsChanged = errors.New("anchor queries changed during the search")

// approximateOnce is one try of approximate; it fails with errAnchorsChanged
// when a writer replaced anchor queries while it scored.
func (x *Index) approximateOnce(ctx context.Context, question string) ([]string, []float64, error) {
	x.mu.RLock()
	kq, gen := len(x.anchors), x.gen
	if kq == 0 {
		x.mu.RUnlock()
		return nil, nil, errors.New("cur: search: no anchor queries (call SetAnchors)")
	}
	sel := x.anchorChunks(question)
	anchorIDs := make([]string, len(sel))
	w := mat.NewDense(kq, len(sel), nil)
	for i, j := range sel {
		anchorIDs[i] = x.ids[j]
		for a := range kq {
			w.Set(a, i, x.r[j*kq+a])
		}
	}
	x.mu.RUnlock()

	c, err := x.ce.ScoreChunks(ctx, question, anchorIDs)
	if err == nil {
		err = checkScores(c, len(anchorIDs))
	}
	if err != nil {
		return nil, nil, fmt.Errorf("cur: search: scoring %d anchor chunks: %w", len(anchorIDs), err)
	}
	u, err := solve(w, c, x.opt.RCond)
	if err != nil {
		return nil, nil, fmt.Errorf("cur: search: %w", err)
	}

	x.mu.RLock()
	defer x.mu.RUnlock()
	if x.gen != gen {
		return nil, nil, errAnchorsChanged
	}
	ids := slices.Clone(x.ids)
	est := make([]float64, len(ids))
	for j := range ids {
		col := x.r[j*kq : (j+1)*kq]
		var s float64
		for a, v := range col {
			s += u[a] * v
		}
		est[j] = s
	}
	return ids, est, nil
}

// anchorChunks picks min(k_i, N) distinct chunk positions with Floyd's
// algorithm, from a generator seeded by Options.Seed and the question. The
// caller holds the read lock.
func (x *Index) anchorChunks(question string) []int {
	h := fnv.New64a()
	h.Write([]byte(question))
	rng := rand.New(rand.NewPCG(uint64(x.opt.Seed), h.Sum64()))
	n := len(x.ids)
	k := min(x.opt.AnchorChunks, n)
	chosen := make(map[int]bool, k)
	out := make([]int, 0, k)
	for j := n - k; j < n; j++ {
		t := rng.IntN(j + 1)
		if chosen[t] {
			t = j
		}
		chosen[t] = true
		out = append(out, t)
	}
	slices.Sort(out)
	return out
}

// solve returns u = c·pinv(W) (length k_q) for W of shape k_q × k_i, with
// pinv(W) = V·Σ⁺·Uᵀ from the thin SVD W = U·Σ·Vᵀ, singular values below
// rcond·σ_max set to zero: u = ((c·V)·Σ⁺)·Uᵀ.
func solve(w *mat.Dense, c []float32, rcond float64) ([]float64, error) {
	var svd mat.SVD
	if !svd.Factorize(w, mat.SVDThin) {
		return nil, errors.New("SVD of the anchor matrix W did not converge")
	}
	sigma := svd.Values(nil)
	var u, v mat.Dense
	svd.UTo(&u)
	svd.VTo(&v)
	kq, ki := w.Dims()
	cv := make([]float64, len(sigma))
	for r := range sigma {
		if sigma[r] <= rcond*sigma[0] || sigma[r] == 0 {
			continue
		}
		var s float64
		for i := range ki {
			s += float64(c[i]) * v.At(i, r)
		}
		cv[r] = s / sigma[r]
	}
	out := make([]float64, kq)
	for a := range kq {
		var s float64
		for r, t := range cv {
			s += t * u.At(a, r)
		}
		out[a] = s
	}
	return out, nil
}

// The file format (binfile framing), body:
//
//	kq u32, next u32, kq × anchor string, n u32, n × (id string, kq × f64)
const (
	fileMagic   = "BRCURIDX"
	fileVersion = 1
)

// Save writes the index to its path atomically.
func (x *Index) Save() error {
	x.writeMu.Lock()
	defer x.writeMu.Unlock()
	x.mu.RLock()
	kq := len(x.anchors)
	w := binfile.NewWriter(fileMagic, fileVersion, len(x.r)*8+len(x.ids)*24)
	w.U32(uint32(kq))
	w.U32(uint32(x.next))
	for _, a := range x.anchors {
		w.String(a)
	}
	w.U32(uint32(len(x.ids)))
	for j, id := range x.ids {
		w.String(id)
		for _, v := range x.r[j*kq : (j+1)*kq] {
			w.F64(v)
		}
	}
	x.mu.RUnlock()
	if err := atomicfile.WriteFile(x.path, w.Finish()); err != nil {
		return fmt.Errorf("cur: save: %w", err)
	}
	return nil
}

// decode loads a saved index into the empty x.
func (x *Index) decode(data []byte) error {
	r, err := binfile.NewReader(data, fileMagic, fileVersion)
	if err != nil {
		return err
	}
	kq, next := int(r.U32()), int(r.U32())
	if kq > r.Remaining()/4 || (kq > 0 && next >= kq) || (kq == 0 && next != 0) {
		return fmt.Errorf("bad header: %d anchors, next %d", kq, next)
	}
	x.anchors = make([]string, kq)
	for a := range x.anchors {
		x.anchors[a] = r.String()
	}
	n := int(r.U32())
	if n > r.Remaining()/(4+8*kq) {
		return fmt.Errorf("count %d does not fit the file", n)
	}
	x.ids = make([]string, n)
	x.r = make([]float64, n*kq)
	for j := range n {
		id := r.String()
		if _, dup := x.pos[id]; dup || id == "" {
			return fmt.Errorf("empty or repeated chunk id %q", id)
		}
		x.ids[j], x.pos[id] = id, j
		for a := range kq {
			v := r.F64()
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return fmt.Errorf("chunk %q: score %v", id, v)
			}
			x.r[j*kq+a] = v
		}
	}
	x.next = next
	return r.Done()
}
