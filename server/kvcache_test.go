package server

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/blendrag/blendrag/blend"
	"github.com/blendrag/blendrag/kernels"
	"github.com/blendrag/blendrag/kvstore"
	"github.com/blendrag/blendrag/model"
	"github.com/blendrag/blendrag/model/fetch"
	"github.com/blendrag/blendrag/retrieval/cur"
)

// openEngineTest opens a Service with the generator (so the KV-cached
// cross-encoder is on), skipping without the default models or with -short.
func openEngineTest(t *testing.T, dir string, cfg Config) *Service {
	t.Helper()
	if testing.Short() {
		t.Skip("runs the generator")
	}
	if _, err := os.Stat(fetch.GeneratorPath(fetch.Dir())); err != nil {
		t.Skip("default models not present: run `make models`")
	}
	cfg.DataDir, cfg.Threads = dir, 2
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// waitWork waits until the background precompute has computed every
// chunk's KV and CUR column.
func waitWork(t *testing.T, s *Service) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		todo, err := s.pendingWork()
		if err != nil {
			t.Fatal(err)
		}
		p := s.KVProgress()
		if p.Err != "" {
			t.Fatalf("precompute: %s", p.Err)
		}
		if len(todo) == 0 && !p.Running {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("background precompute did not finish in 5 minutes")
}

var engineDocs = map[string]string{
	"Herons": "The grey heron of Lake Umber nests in tall reeds. Each spring the herons return from the south.",
	"Bridge": "The Old Stone Bridge of Marlow was built in 1742 by the mason Edwin Clay. It has seven arches.",
	"Tea":    "Green tea from the Kessel hills is picked in May and dried on bamboo trays in the sun.",
}

func ingestDocs(t *testing.T, s *Service, docs map[string]string) map[string]string {
	t.Helper()
	ids := map[string]string{} // title → chunk id
	for title, text := range docs {
		res, err := s.IngestText(context.Background(), title, text, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, chunks, err := s.Document(res.Doc.ID)
		if err != nil || len(chunks) != 1 {
			t.Fatalf("document %s: %d chunks, %v", title, len(chunks), err)
		}
		ids[title] = chunks[0].ID
	}
	return ids
}

// fullPrefillCE is the reference CE: a plain prefill of P + chunk + the
// question's tokens and the mean log-probability of the question's text
// tokens, in float64.
func fullPrefillCE(t *testing.T, s *Service, question, chunk string) float64 {
	t.Helper()
	e := s.eng
	toks, first, err := s.kvCE.Question(question)
	if err != nil {
		t.Fatal(err)
	}
	all := slices.Concat(e.format.Prefix(), e.format.Chunk(chunk), toks)
	unlock := e.lockForQuery()
	logits, err := e.m.Forward(model.NewKV(e.m.Config), all, model.Positions(0, len(all)), true)
	unlock()
	if err != nil {
		t.Fatal(err)
	}
	v, at := e.m.Config.Vocab, len(all)-len(toks)
	var sum float64
	for i := first; i < len(toks); i++ {
		z := logits[(at+i-1)*v : (at+i)*v]
		m := math.Inf(-1)
		for _, x := range z {
			m = max(m, float64(x))
		}
		var e float64
		for _, x := range z {
			e += math.Exp(float64(x) - m)
		}
		sum += float64(z[toks[i]]) - m - math.Log(e)
	}
	return sum / float64(len(toks)-first)
}

// storedKVTolerance bounds |CE over stored KV − CE by full prefill|: the
// store keeps P's and the chunk's KV in the default codec (int8 per row),
// and the serving path quantises activations to 8 bits, which turns any
// rounding difference into logit noise of ~0.5 (model.TestLogitsMatchLlamaCpp).
// Measured on this test's three chunks: 0.034, 0.024 and 0.006 (2026-11-26,
// before attention moved to FMA kernels), then 0.055, 0.001 and 0.055 after
// it, though attention itself moved by ~1e-7 (the float32 KV of the blend
// tests agrees to 2e-6).
const storedKVTolerance = 0.1

func TestKVCachedCrossEncoderServesCURRerankAndHybrid(t *testing.T) {
	s := openEngineTest(t, t.TempDir(), Config{})
	defer s.Close()
	if s.CrossEncoder() == nil || s.kvCE == nil || s.curAtIngest() || !s.curInBackground() {
		t.Fatal("the KV-cached cross-encoder is not the default with the generator loaded")
	}
	ids := ingestDocs(t, s, engineDocs)
	waitWork(t, s)
	ctx := context.Background()
	q := "Who built the Old Stone Bridge of Marlow?"

	// CE over the stored (fp16) KV agrees with a plain full prefill.
	titles := []string{"Herons", "Bridge", "Tea"}
	chunkIDs := []string{ids["Herons"], ids["Bridge"], ids["Tea"]}
	got, err := s.CrossEncoder().ScoreChunks(ctx, q, chunkIDs)
	if err != nil {
		t.Fatal(err)
	}
	for i, title := range titles {
		want := fullPrefillCE(t, s, q, engineDocs[title])
		t.Logf("CE(q, %s) = %.4f over stored KV, %.4f by full prefill", title, got[i], want)
		if d := math.Abs(float64(got[i]) - want); d > storedKVTolerance {
			t.Errorf("CE(q, %s): %v over stored KV, %v by full prefill", title, got[i], want)
		}
	}

	// Every chunk is in the CUR index (exact search: 3 chunks ≤ k_i + k_r).
	if s.cur.Len() != 3 {
		t.Fatalf("CUR index holds %d chunks, want 3", s.cur.Len())
	}
	res, err := s.Search(ctx, SearchRequest{Query: q, K: 3, Retriever: RetrieverCUR})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 3 || res[0].Title != "Bridge" {
		t.Fatalf("cur search: %+v", res)
	}
	if res[0].Scores[RetrieverCUR] != float64(got[1]) {
		t.Errorf("cur score %v, CE %v", res[0].Scores[RetrieverCUR], got[1])
	}

	res, err = s.Search(ctx, SearchRequest{Query: q, K: 3, Rerank: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 3 || res[0].Title != "Bridge" {
		t.Fatalf("hybrid + rerank: %+v", res)
	}
	for i, r := range res {
		if _, ok := r.Ranks[RetrieverCUR]; !ok {
			t.Errorf("hybrid result %d has no cur rank: %+v", i, r.Ranks)
		}
		if r.Ranks["ce"] != i+1 || (i > 0 && r.Score > res[i-1].Score) {
			t.Errorf("rerank order: result %d %+v", i, r)
		}
	}

	// A chunk whose KV is gone is encoded again (in memory) for the
	// cross-encoder; the store is left to the precompute and Ask.
	if err := s.eng.store.DeleteChunk(ids["Bridge"]); err != nil {
		t.Fatal(err)
	}
	again, err := s.CrossEncoder().ScoreChunks(ctx, q, chunkIDs[1:2])
	if err != nil || math.Abs(float64(again[0]-got[1])) > storedKVTolerance || s.eng.store.Has(s.eng.key(ids["Bridge"])) {
		t.Errorf("after dropping the KV: CE %v (was %v), err %v, stored %v", again, got[1], err, s.eng.store.Has(s.eng.key(ids["Bridge"])))
	}
}

func TestCURColumnsFollowKVAndReproduceAnchorQueries(t *testing.T) {
	dir := t.TempDir()
	// k_q = k_i = 2 and k_r = 2: six chunks outgrow exact search (4), so
	// anchors are sampled and every chunk gets its column.
	opt := cur.Options{AnchorQueries: 2, AnchorChunks: 2, TopK: 2}
	s := openEngineTest(t, dir, Config{CUR: opt})
	docs := map[string]string{
		"Owls":       "Snowy owls hunt lemmings on the open tundra. Their white feathers hide them in the snow.",
		"Canal":      "The Grand Union canal links London and Birmingham. Narrow boats carry coal along it.",
		"Bread":      "Sourdough bread rises slowly with wild yeast. Bakers feed the starter with flour and water.",
		"Volcano":    "Mount Hekla in Iceland erupted in 1947. Ash from the volcano fell as far away as Finland.",
		"Chess":      "The queen is the strongest chess piece. She moves any number of squares in a straight line.",
		"Lighthouse": "The Bell Rock lighthouse stands on a reef in the North Sea. Robert Stevenson built it in 1810.",
	}
	ids := ingestDocs(t, s, docs)
	waitWork(t, s)
	anchors := s.cur.Anchors()
	if len(anchors) != 2 || s.cur.Len() != len(docs) {
		t.Fatalf("%d anchors, %d chunks indexed; want 2 and %d", len(anchors), s.cur.Len(), len(docs))
	}
	// With k_i = k_q and W of full rank an anchor query's estimates are its
	// row of R, so CUR's top 2 are the exact CE's top 2.
	ctx := context.Background()
	all := make([]string, 0, len(ids))
	for _, id := range ids {
		all = append(all, id)
	}
	slices.Sort(all)
	for _, a := range anchors {
		exact, err := s.CrossEncoder().ScoreChunks(ctx, a, all)
		if err != nil {
			t.Fatal(err)
		}
		order := slices.Clone(all)
		slices.SortFunc(order, func(x, y string) int {
			return -cmpF(exact[slices.Index(all, x)], exact[slices.Index(all, y)])
		})
		res, err := s.Search(ctx, SearchRequest{Query: a, K: 2, Retriever: RetrieverCUR})
		if err != nil {
			t.Fatal(err)
		}
		if len(res) != 2 || res[0].Chunk.ID != order[0] || res[1].Chunk.ID != order[1] {
			t.Errorf("anchor %q: cur top 2 %v, exact top 2 %v", a, []string{res[0].Chunk.ID, res[1].Chunk.ID}, order[:2])
		}
		for _, r := range res {
			want := float64(exact[slices.Index(all, r.Chunk.ID)])
			if d := math.Abs(r.Scores[RetrieverCUR] - want); d > 1e-4 {
				t.Errorf("anchor %q, chunk %s: ŝ %v, CE %v", a, r.Chunk.ID, r.Scores[RetrieverCUR], want)
			}
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Reopened: the columns persisted, nothing left to compute.
	s = openEngineTest(t, dir, Config{CUR: opt})
	defer s.Close()
	todo, err := s.pendingWork()
	if err != nil || len(todo) != 0 || s.cur.Len() != len(docs) || !slices.Equal(s.cur.Anchors(), anchors) {
		t.Errorf("after reopening: %d chunks pending (%v), %d indexed, anchors %q", len(todo), err, s.cur.Len(), s.cur.Anchors())
	}
}

func cmpF(a, b float32) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// fp16Bytes is the store's fp16 encoding of values that came out of it.
func fp16Bytes(x []float32) []byte {
	var b []byte
	for _, v := range x {
		b = binary.LittleEndian.AppendUint16(b, kernels.F32ToF16(v))
	}
	return b
}

func TestCorruptChunkKVOnDiskIsRecomputedAndAskStillAnswers(t *testing.T) {
	dir := t.TempDir()
	s := openEngineTest(t, dir, Config{KV: kvstoreFP16()})
	ids := ingestDocs(t, s, engineDocs)
	waitWork(t, s)
	victim := ids["Bridge"]
	before, err := s.eng.store.Get(s.eng.key(victim))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Flip a bit inside the stored K of layer 3 wherever it is on disk.
	d := before.KVDim
	needle := fp16Bytes(before.K[3][d+8 : d+40])
	files, err := filepath.Glob(filepath.Join(dir, "kv", "*"))
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // a directory
		}
		n := 0
		for i := bytes.Index(b, needle); i >= 0; {
			b[i+11] ^= 0x10
			n++
			j := bytes.Index(b[i+1:], needle)
			if j < 0 {
				break
			}
			i += 1 + j
		}
		if n > 0 {
			found += n
			if err := os.WriteFile(f, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	if found == 0 {
		t.Fatal("the chunk's stored KV was not found on disk")
	}

	s = openEngineTest(t, dir, Config{KV: kvstoreFP16()})
	defer s.Close()
	ans, err := s.Ask(context.Background(), AskRequest{Question: "Who built the Old Stone Bridge of Marlow?", K: 3, MaxTokens: 8, Mode: string(blend.ModeReuse), Retriever: RetrieverBM25}, nil)
	if err != nil {
		t.Fatalf("ask over corrupt KV: %v", err)
	}
	if ans.Text == "" || ans.Timings.KVMissing < 1 {
		t.Errorf("answer %q, %d chunks recomputed: want an answer and the corrupt chunk recomputed", ans.Text, ans.Timings.KVMissing)
	}
	after, err := s.eng.store.Get(s.eng.key(victim))
	if err != nil {
		t.Fatalf("the recomputed chunk was not stored again: %v", err)
	}
	for l := range before.K {
		if !slices.Equal(after.K[l], before.K[l]) || !slices.Equal(after.V[l], before.V[l]) {
			t.Fatalf("layer %d: recomputed KV differs from the original", l)
		}
	}
	t.Logf("corrupted %d copies; answer %q, %d chunk(s) recomputed", found, ans.Text, ans.Timings.KVMissing)
}

func kvstoreFP16() kvstore.Options { return kvstore.Options{Codec: kvstore.CodecFP16} }

func TestRankReturnsCommittedChunksBeyondMaxK(t *testing.T) {
	s := openTest(t, t.TempDir())
	defer s.Close()
	ctx := context.Background()
	if _, err := s.IngestText(ctx, "Festival", topicText("Quellbrook", 30), nil); err != nil {
		t.Fatal(err)
	}
	ids, err := s.Rank(ctx, RetrieverBM25, "Quellbrook festival weavers", 1000)
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.Search(ctx, SearchRequest{Query: "Quellbrook festival weavers", K: 3, Retriever: RetrieverBM25})
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) < 4 || ids[0] != res[0].Chunk.ID {
		t.Fatalf("rank gave %d ids (first %v), search's first is %s", len(ids), ids[:min(1, len(ids))], res[0].Chunk.ID)
	}
	for _, bad := range []struct {
		retr, q string
		n       int
		want    error
	}{
		{RetrieverHybrid, "x", 3, ErrBadRequest},
		{RetrieverBM25, " ", 3, ErrBadRequest},
		{RetrieverDense, "x", 0, ErrBadRequest},
		{RetrieverCUR, "x", 3, ErrNoCE},
	} {
		if _, err := s.Rank(ctx, bad.retr, bad.q, bad.n); !errors.Is(err, bad.want) {
			t.Errorf("Rank(%q, %q, %d) = %v, want %v", bad.retr, bad.q, bad.n, err, bad.want)
		}
	}
}
