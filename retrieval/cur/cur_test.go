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
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

var errBoom = errors.New("boom")

// lowRankCE scores CE(q, c) = f(q)·g(c) with rank-r features drawn from the
// strings' hashes: a deterministic cross-encoder whose score matrix has
// rank r, so CUR with r ≤ k_q anchors is exact up to rounding.
type lowRankCE struct {
	rank int
	fail string // a question or chunk id whose scoring fails

	mu    sync.Mutex
	pairs int // (question, chunk) pairs scored
	calls int // ScoreChunks calls
}

func features(s string, salt uint64, r int) []float64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	rng := rand.New(rand.NewPCG(h.Sum64(), salt))
	f := make([]float64, r)
	for i := range f {
		f[i] = rng.NormFloat64()
	}
	return f
}

// score is the reference CE score, computed directly.
func (ce *lowRankCE) score(q, c string) float32 {
	fq, gc := features(q, 1, ce.rank), features(c, 2, ce.rank)
	var s float64
	for i := range fq {
		s += fq[i] * gc[i]
	}
	return float32(s)
}

func (ce *lowRankCE) ScoreChunks(ctx context.Context, q string, ids []string) ([]float32, error) {
	ce.mu.Lock()
	ce.calls++
	ce.mu.Unlock()
	return ce.scoreAll(len(ids), func(i int) (string, string) { return q, ids[i] })
}

func (ce *lowRankCE) ScoreQuestions(ctx context.Context, qs []string, id string) ([]float32, error) {
	return ce.scoreAll(len(qs), func(i int) (string, string) { return qs[i], id })
}

// scoreAll scores n (question, chunk) pairs, failing on ce.fail.
func (ce *lowRankCE) scoreAll(n int, pair func(i int) (string, string)) ([]float32, error) {
	ce.mu.Lock()
	ce.pairs += n
	ce.mu.Unlock()
	out := make([]float32, n)
	for i := range out {
		q, id := pair(i)
		if q == ce.fail || id == ce.fail {
			return nil, fmt.Errorf("scoring %q for %q: %w", id, q, errBoom)
		}
		out[i] = ce.score(q, id)
	}
	return out, nil
}

func (ce *lowRankCE) resetCount() {
	ce.mu.Lock()
	ce.pairs, ce.calls = 0, 0
	ce.mu.Unlock()
}

func chunkIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("doc%d#%d", i/10, i%10)
	}
	return ids
}

func questions(prefix string, n int) []string {
	qs := make([]string, n)
	for i := range qs {
		qs[i] = fmt.Sprintf("%s question %d", prefix, i)
	}
	return qs
}

// build returns an index over n chunks with the given anchor queries.
func build(t *testing.T, ce CrossEncoder, opt Options, n int, anchors []string) *Index {
	t.Helper()
	x, err := Open(filepath.Join(t.TempDir(), "cur.idx"), ce, opt)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	half := n / 2
	ids := chunkIDs(n)
	for _, id := range ids[:half] { // some chunks before the anchors, some after
		if err := x.AddChunk(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if err := x.SetAnchors(ctx, anchors); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids[half:] {
		if err := x.AddChunk(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	return x
}

// exactTop is the reference ranking: every live chunk scored directly.
func exactTop(ce *lowRankCE, q string, ids []string, k int) []string {
	type s struct {
		id string
		v  float32
	}
	all := make([]s, len(ids))
	for i, id := range ids {
		all[i] = s{id, ce.score(q, id)}
	}
	slices.SortFunc(all, func(a, b s) int { return cmp.Compare(b.v, a.v) })
	var out []string
	for _, x := range all[:min(k, len(all))] {
		out = append(out, x.id)
	}
	return out
}

func hitIDs(hs []Hit) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = h.ID
	}
	return out
}

func TestAnchorQueryRowsReproducedExactly(t *testing.T) {
	// Full-rank CE (rank 64 > k_i): CUR is not exact in general, but with
	// k_i ≥ k_q and W of full row rank it must reproduce the anchor rows.
	ce := &lowRankCE{rank: 64}
	anchors := questions("anchor", 8)
	x := build(t, ce, Options{AnchorChunks: 16, TopK: 16}, 100, anchors)
	ctx := context.Background()
	for a, q := range anchors {
		ids, est, err := x.approximate(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		var scale, worst float64
		for j, id := range ids {
			ref := float64(ce.score(q, id))
			if got := x.r[x.pos[id]*len(anchors)+a]; got != ref {
				t.Fatalf("R[%d, %s] = %v, CE says %v", a, id, got, ref)
			}
			scale = max(scale, math.Abs(ref))
			worst = max(worst, math.Abs(est[j]-ref))
		}
		if worst > 1e-6*scale {
			t.Errorf("anchor %d: max |ŝ − R row| = %g, want ≤ 1e-6 × %g", a, worst, scale)
		}
	}
	// Control: a question that is not an anchor is only approximated.
	ids, est, err := x.approximate(ctx, "some other question")
	if err != nil {
		t.Fatal(err)
	}
	var worst float64
	for j, id := range ids {
		worst = max(worst, math.Abs(est[j]-float64(ce.score("some other question", id))))
	}
	if worst < 1e-3 {
		t.Errorf("non-anchor question reproduced to %g: the full-rank CE is too easy for this test", worst)
	}
}

func TestLowRankCESearchMatchesExactRanking(t *testing.T) {
	ce := &lowRankCE{rank: 8}
	opt := Options{AnchorChunks: 32, TopK: 16}
	x := build(t, ce, opt, 400, questions("anchor", 32))
	ids := chunkIDs(400)
	ctx := context.Background()
	for _, q := range questions("user", 20) {
		ce.resetCount()
		hits, err := x.Search(ctx, q, 10)
		if err != nil {
			t.Fatal(err)
		}
		if want := exactTop(ce, q, ids, 10); !slices.Equal(hitIDs(hits), want) {
			t.Fatalf("%q: CUR top 10 %v, exact %v", q, hitIDs(hits), want)
		}
		if ce.pairs != 32 {
			t.Fatalf("search scored %d pairs, want k_i = 32", ce.pairs)
		}
		for _, h := range hits {
			if ref := float64(ce.score(q, h.ID)); math.Abs(h.Score-ref) > 1e-4*(1+math.Abs(ref)) {
				t.Fatalf("ŝ(%s) = %v, CE %v", h.ID, h.Score, ref)
			}
		}
	}
	if hits, _ := x.Search(ctx, "user question 0", 100); len(hits) != 16 {
		t.Fatalf("k=100 returned %d hits, want k_r = 16", len(hits))
	}
}

func TestRerankReturnsExactScores(t *testing.T) {
	ce := &lowRankCE{rank: 8}
	x := build(t, ce, Options{AnchorChunks: 32, TopK: 8, Rerank: true}, 200, questions("anchor", 32))
	ce.resetCount()
	hits, err := x.Search(context.Background(), "user question", 5)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hits {
		if h.Score != float64(ce.score("user question", h.ID)) {
			t.Fatalf("reranked score of %s is %v, CE %v", h.ID, h.Score, ce.score("user question", h.ID))
		}
	}
	if ce.pairs != 32+5 {
		t.Fatalf("scored %d pairs, want k_i + min(k, k_r) = 37", ce.pairs)
	}
}

func TestSmallIndexScoresEveryChunkExactly(t *testing.T) {
	ce := &lowRankCE{rank: 64}
	x := build(t, ce, Options{AnchorChunks: 32, TopK: 16}, 48, questions("anchor", 32))
	ce.resetCount()
	q := "user question"
	hits, err := x.Search(context.Background(), q, 16)
	if err != nil {
		t.Fatal(err)
	}
	if ce.calls != 1 || ce.pairs != 48 {
		t.Fatalf("%d calls over %d pairs, want one call over all 48 chunks", ce.calls, ce.pairs)
	}
	if want := exactTop(ce, q, chunkIDs(48), 16); !slices.Equal(hitIDs(hits), want) {
		t.Fatalf("got %v, want %v", hitIDs(hits), want)
	}
	for _, h := range hits {
		if h.Score != float64(ce.score(q, h.ID)) {
			t.Fatalf("score of %s is %v, CE %v", h.ID, h.Score, ce.score(q, h.ID))
		}
	}
}

func TestSearchWithoutAnchorsErrors(t *testing.T) {
	x, err := Open(filepath.Join(t.TempDir(), "cur.idx"), &lowRankCE{rank: 4}, Options{AnchorChunks: 4, TopK: 4})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, id := range chunkIDs(20) {
		if err := x.AddChunk(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := x.Search(ctx, "q", 3); err == nil || !strings.Contains(err.Error(), "anchor") {
		t.Fatalf("err = %v, want one about missing anchors", err)
	}
}

func TestDeletedChunksNeverReturned(t *testing.T) {
	ce := &lowRankCE{rank: 8}
	x := build(t, ce, Options{AnchorChunks: 32, TopK: 16}, 300, questions("anchor", 32))
	ctx := context.Background()
	q := "user question 3"
	ids := chunkIDs(300)
	first, _ := x.Search(ctx, q, 10)
	gone := map[string]bool{}
	for _, h := range first[:5] { // delete the best five, then a third of the rest
		gone[h.ID] = true
	}
	for i := 0; i < len(ids); i += 3 {
		gone[ids[i]] = true
	}
	var live []string
	for _, id := range ids {
		if gone[id] {
			if err := x.Delete(id); err != nil {
				t.Fatal(err)
			}
		} else {
			live = append(live, id)
		}
	}
	if err := x.Delete("never added"); err != nil {
		t.Fatal(err)
	}
	if x.Len() != len(live) || x.Has(first[0].ID) || !x.Has(live[0]) {
		t.Fatalf("Len %d (want %d) or Has wrong after delete", x.Len(), len(live))
	}
	hits, err := x.Search(ctx, q, 10)
	if err != nil {
		t.Fatal(err)
	}
	if want := exactTop(ce, q, live, 10); !slices.Equal(hitIDs(hits), want) {
		t.Fatalf("after delete got %v, want %v", hitIDs(hits), want)
	}
}

func TestSaveOpenRoundTripGivesEqualResults(t *testing.T) {
	ce := &lowRankCE{rank: 16}
	x := build(t, ce, Options{AnchorChunks: 24, TopK: 10, Seed: 5}, 150, questions("anchor", 16))
	ctx := context.Background()
	x.Delete(chunkIDs(150)[7])
	if err := x.ObserveQuestion(ctx, "a real question"); err != nil {
		t.Fatal(err)
	}
	if err := x.Save(); err != nil {
		t.Fatal(err)
	}
	back, err := Open(x.path, ce, Options{AnchorChunks: 24, TopK: 10, Seed: 5})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(back.Anchors(), x.Anchors()) || back.Len() != x.Len() || back.next != x.next {
		t.Fatalf("reloaded anchors/len/next differ")
	}
	for _, q := range questions("user", 5) {
		a, err1 := x.Search(ctx, q, 10)
		b, err2 := back.Search(ctx, q, 10)
		if err1 != nil || err2 != nil || !slices.Equal(a, b) {
			t.Fatalf("results differ after reload (%v, %v):\n%v\n%v", err1, err2, a, b)
		}
	}
	data, err := os.ReadFile(x.path)
	if err != nil {
		t.Fatal(err)
	}
	for name, bad := range map[string][]byte{
		"flipped":           append(append([]byte{}, data[:40]...), append([]byte{data[40] ^ 4}, data[41:]...)...),
		"truncated":         data[:len(data)/2],
		"vector file magic": append([]byte("BRVECIDX"), data[8:]...),
	} {
		p := filepath.Join(t.TempDir(), "bad.idx")
		os.WriteFile(p, bad, 0o644)
		if _, err := Open(p, ce, Options{}); err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: err = %v, want an error naming %s", name, err, p)
		}
	}
}

func TestCrossEncoderErrorsPropagate(t *testing.T) {
	ce := &lowRankCE{rank: 8}
	x := build(t, ce, Options{AnchorChunks: 8, TopK: 4}, 60, questions("anchor", 8))
	ctx := context.Background()
	ce.fail = "bad chunk"
	if err := x.AddChunk(ctx, "bad chunk"); !errors.Is(err, errBoom) || !strings.Contains(err.Error(), "bad chunk") {
		t.Fatalf("AddChunk: err = %v", err)
	}
	if x.Has("bad chunk") {
		t.Fatal("a chunk whose scoring failed was indexed")
	}
	ce.fail = "bad question"
	if _, err := x.Search(ctx, "bad question", 3); !errors.Is(err, errBoom) || !strings.Contains(err.Error(), "cur: search") {
		t.Fatalf("Search: err = %v", err)
	}
	if err := x.ObserveQuestion(ctx, "bad question"); !errors.Is(err, errBoom) {
		t.Fatalf("ObserveQuestion: err = %v", err)
	}
	if slices.Contains(x.Anchors(), "bad question") {
		t.Fatal("a failed question became an anchor")
	}
	if err := x.SetAnchors(ctx, []string{"fine", "bad question"}); !errors.Is(err, errBoom) {
		t.Fatalf("SetAnchors: err = %v", err)
	}
	if !slices.Equal(x.Anchors(), questions("anchor", 8)) {
		t.Fatal("failed SetAnchors changed the anchors")
	}
}

// shortCE returns one score too few.
type shortCE struct{ lowRankCE }

func (c *shortCE) ScoreQuestions(ctx context.Context, qs []string, id string) ([]float32, error) {
	return make([]float32, len(qs)-1), nil
}

func TestWrongScoreCountIsAnError(t *testing.T) {
	x, err := Open(filepath.Join(t.TempDir(), "cur.idx"), &shortCE{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := x.SetAnchors(context.Background(), []string{"a", "b"}); err != nil {
		t.Fatal(err)
	}
	if err := x.AddChunk(context.Background(), "c"); err == nil {
		t.Fatal("short score list accepted")
	}
	if err := x.SetAnchors(context.Background(), []string{"a", "a"}); err == nil {
		t.Fatal("repeated anchors accepted")
	}
}

func TestObserveQuestionReplacesOldestAnchorAndRowIsExact(t *testing.T) {
	ce := &lowRankCE{rank: 64}
	anchors := questions("sampled", 4)
	x := build(t, ce, Options{AnchorChunks: 8, TopK: 8}, 50, anchors)
	ctx := context.Background()
	real := questions("real", 5)
	for i, q := range real {
		if err := x.ObserveQuestion(ctx, q); err != nil {
			t.Fatal(err)
		}
		if got := x.Anchors()[i%4]; got != q {
			t.Fatalf("after observing %q anchor %d is %q", q, i%4, got)
		}
	}
	want := []string{real[4], real[1], real[2], real[3]}
	if err := x.ObserveQuestion(ctx, real[2]); err != nil { // already an anchor: no change
		t.Fatal(err)
	}
	if !slices.Equal(x.Anchors(), want) {
		t.Fatalf("anchors %v, want %v", x.Anchors(), want)
	}
	ids, est, err := x.approximate(ctx, real[4])
	if err != nil {
		t.Fatal(err)
	}
	for j, id := range ids {
		ref := float64(ce.score(real[4], id))
		if math.Abs(est[j]-ref) > 1e-6*(1+math.Abs(ref))*10 {
			t.Fatalf("observed question's ŝ(%s) = %v, CE %v", id, est[j], ref)
		}
	}
}

func TestSampleAnchorsAreDeterministicWindowsOfTheText(t *testing.T) {
	texts := []string{
		"The quick brown fox jumps over the lazy dog. Short one. Another sentence with several words in it!",
		"Go is a statically typed, compiled language designed at Google. It has garbage collection and structural typing.",
		"HNSW builds a multi-layer graph.\nEach layer is a proximity graph over a subset of the points.",
		"Too short.",
	}
	a := SampleAnchors(texts, 6, 1)
	b := SampleAnchors(texts, 6, 1)
	if !slices.Equal(a, b) {
		t.Fatalf("same seed gave %v and %v", a, b)
	}
	if len(a) != 6 {
		t.Fatalf("got %d anchors, want 6", len(a))
	}
	flat := strings.Join(texts, " ")
	flat = strings.NewReplacer(",", "", ".", "", "!", "", "\n", " ").Replace(flat)
	seen := map[string]bool{}
	for _, q := range a {
		body, ok := strings.CutSuffix(q, "?")
		n := len(strings.Fields(body))
		if !ok || n < minAnchorWords || n > maxAnchorWords || !strings.Contains(flat, body) || seen[q] {
			t.Errorf("anchor %q is not a distinct %d–%d word window of the text", q, minAnchorWords, maxAnchorWords)
		}
		seen[q] = true
	}
	if got := SampleAnchors([]string{"Too short."}, 3, 1); len(got) != 0 {
		t.Fatalf("got %v from text without a long sentence", got)
	}
}

func TestConcurrentSearchDuringMutations(t *testing.T) {
	ce := &lowRankCE{rank: 8}
	x := build(t, ce, Options{AnchorChunks: 16, TopK: 8}, 80, questions("anchor", 16))
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for r := range 3 {
		wg.Go(func() {
			for i := range 50 {
				if _, err := x.Search(ctx, fmt.Sprintf("reader %d question %d", r, i), 5); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Go(func() {
		for i := range 40 {
			var err error
			switch i % 4 {
			case 0:
				err = x.ObserveQuestion(ctx, fmt.Sprintf("observed %d", i))
			case 1:
				err = x.Delete(chunkIDs(80)[i])
			default:
				err = x.AddChunk(ctx, fmt.Sprintf("new chunk %d", i))
			}
			if err != nil {
				errs <- err
				return
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// mutatingCE changes the anchors during every search's scoring: each call
// for a "search" question observes a new question from another goroutine
// and waits (up to a bound) for it to land.
type mutatingCE struct {
	*lowRankCE
	x     *Index
	n     int
	tries int
}

func (ce *mutatingCE) ScoreChunks(ctx context.Context, q string, ids []string) ([]float32, error) {
	if strings.HasPrefix(q, "search") {
		ce.tries++
		ce.n++
		done := make(chan error, 1)
		go func() { done <- ce.x.ObserveQuestion(ctx, fmt.Sprintf("observed %d", ce.n)) }()
		select {
		case err := <-done:
			if err != nil {
				return nil, err
			}
		case <-time.After(200 * time.Millisecond): // a writer blocked by the search's last try
		}
	}
	return ce.lowRankCE.ScoreChunks(ctx, q, ids)
}

func TestSearchLastTryCannotBeOutrunByAnchorChanges(t *testing.T) {
	ce := &mutatingCE{lowRankCE: &lowRankCE{rank: 8}}
	ce.x = build(t, ce, Options{AnchorChunks: 16, TopK: 8}, 40, questions("anchor", 16))
	hits, err := ce.x.Search(context.Background(), "search question", 5)
	if err != nil {
		t.Fatalf("search under constant anchor changes: %v", err)
	}
	if len(hits) != 5 || ce.tries != maxRetries {
		t.Fatalf("got %d hits after %d tries, want 5 after %d", len(hits), ce.tries, maxRetries)
	}
}
