package main

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/blendrag/blendrag/blend"
	"github.com/blendrag/blendrag/kernels"
	"github.com/blendrag/blendrag/model"
	"github.com/blendrag/blendrag/model/modeltest"
)

// TestTokenF1AndExactMatchFollowSQuAD checks answer scoring against values
// worked out by hand with SQuAD's definitions (normalise, multiset token
// overlap, F1 = 2PR/(P+R), maximum over gold aliases).
func TestTokenF1AndExactMatchFollowSQuAD(t *testing.T) {
	tests := []struct {
		pred   string
		gold   []string
		f1, em float64
	}{
		{"Exeter College.", []string{"exeter college"}, 1, 1},
		{"the Eiffel Tower", []string{"Eiffel Tower in Paris"}, 2.0 / 3, 0}, // P = 1, R = 1/2
		{"x x y", []string{"x y y"}, 2.0 / 3, 0},                            // multiset: 2 common of 3 and 3
		{"Paris", []string{"London", "paris"}, 1, 1},                        // best alias
		{"a cat", []string{"dog"}, 0, 0},
		{"", []string{"dog"}, 0, 0},
		{"The.", []string{"a"}, 1, 1},               // both normalise to nothing
		{"New York City", []string{"York"}, 0.5, 0}, // P = 1/3, R = 1
	}
	for _, tt := range tests {
		got := scoreAnswer(tt.pred, tt.gold)
		if math.Abs(got.F1-tt.f1) > 1e-12 || got.EM != tt.em || got.Answer != tt.pred {
			t.Errorf("scoreAnswer(%q, %q) = %+v, want F1 %g EM %g", tt.pred, tt.gold, got, tt.f1, tt.em)
		}
	}
}

// TestQuantileInterpolatesLikeNumpy checks quantile against numpy.quantile's
// default (linear) method on worked values.
func TestQuantileInterpolatesLikeNumpy(t *testing.T) {
	xs := []float64{10, 20, 30, 40, 50}
	for _, tt := range []struct{ q, want float64 }{{0, 10}, {0.25, 20}, {0.5, 30}, {0.9, 46}, {1, 50}} {
		if got := quantile(xs, tt.q); math.Abs(got-tt.want) > 1e-12 {
			t.Errorf("quantile(%v, %g) = %g, want %g", xs, tt.q, got, tt.want)
		}
	}
	if got := quantile([]float64{1, 2, 3, 4}, 0.9); math.Abs(got-3.7) > 1e-12 {
		t.Errorf("quantile 0.9 of 1..4 = %g, want 3.7", got)
	}
}

// TestBootstrapIntervalMatchesNormalApproximation checks the bootstrap
// interval of a mean on a known sample (120 ones in 400) against the normal
// approximation ±1.96·√(p(1−p)/n), and that it is seeded and collapses on a
// constant sample.
func TestBootstrapIntervalMatchesNormalApproximation(t *testing.T) {
	xs := make([]float64, 400)
	for i := range xs {
		if i%10 < 3 {
			xs[i] = 1
		}
	}
	iv := bootstrapMean(xs, 1000, 7)
	if math.Abs(iv.Mean-0.3) > 1e-12 {
		t.Fatalf("mean %g, want 0.3", iv.Mean)
	}
	half := 1.96 * math.Sqrt(0.3*0.7/400)
	if !(iv.Lo < iv.Mean && iv.Mean < iv.Hi) {
		t.Fatalf("interval %+v does not contain the mean", iv)
	}
	for _, side := range []float64{iv.Mean - iv.Lo, iv.Hi - iv.Mean} {
		if math.Abs(side-half)/half > 0.2 {
			t.Errorf("interval %+v: half-width %g, normal approximation %g", iv, side, half)
		}
	}
	if again := bootstrapMean(xs, 1000, 7); again != iv {
		t.Errorf("same seed gave %+v then %+v", iv, again)
	}
	if c := bootstrapMean([]float64{0.4, 0.4, 0.4}, 1000, 1); math.Abs(c.Lo-0.4) > 1e-12 || math.Abs(c.Hi-0.4) > 1e-12 {
		t.Errorf("constant sample: %+v, want [0.4, 0.4]", c)
	}
}

// TestReadBlendRecordsResumesAndCutsPartialLine checks the resume file:
// missing means none, a later line for a question wins, a partial last line
// is cut off the file, and a corrupt full line is an error.
func TestReadBlendRecordsResumesAndCutsPartialLine(t *testing.T) {
	dir := t.TempDir()
	if got, err := readBlendRecords(filepath.Join(dir, "none.jsonl")); err != nil || len(got) != 0 {
		t.Fatalf("missing file: %v, %v", got, err)
	}
	line := func(idx int, q string) string {
		b, _ := json.Marshal(blendRecord{Index: idx, Question: q})
		return string(b) + "\n"
	}
	good := line(0, "a") + line(1, "b") + line(1, "b again")
	path := filepath.Join(dir, "out.jsonl")
	if err := os.WriteFile(path, []byte(good+`{"index": 2, "quest`), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := readBlendRecords(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Question != "a" || got[1].Question != "b again" {
		t.Errorf("records %+v, want questions 0 (a) and 1 (b again)", got)
	}
	if b, _ := os.ReadFile(path); string(b) != good {
		t.Errorf("file after resume:\n%s\nwant the partial line cut", b)
	}
	if err := os.WriteFile(path, []byte(line(0, "a")+"{oops}\n"+line(1, "b")), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readBlendRecords(path); err == nil || !strings.Contains(err.Error(), ":2:") {
		t.Errorf("corrupt line 2: err = %v, want an error naming line 2", err)
	}
}

// TestForcedAgreementMatchesDecoding checks teacher forcing in one pass
// against decoding one token at a time. In every mode a mode's own greedy
// tokens (from blend.Generate, APE's grouped decode included) are each
// ranked top-1. For the modes without key groups, a reference built while
// stepping with model.Step — the greedy token at even steps, another token
// at odd steps — scores exactly its even steps. The context is restored.
func TestForcedAgreementMatchesDecoding(t *testing.T) {
	// This shape's greedy continuation is not one repeated token.
	m := modeltest.New(t, modeltest.Spec{Layers: 4, Dim: 128, Heads: 4, KVHeads: 2, FFN: 256, Weights: kernels.F32, Seed: 13})
	cpu, err := m.OpenBackend("cpu")
	if err != nil {
		t.Fatal(err)
	}
	defer cpu.Close()
	f, err := blend.NewFormat(m.Tok, "sys", "read")
	if err != nil {
		t.Fatal(err)
	}
	seg := f.Segments("where is the river?", []string{"the river rises in the hills", "barges carried coal", "the canal is old"})
	pkv, err := blend.EncodePrefix(m, seg.Prefix)
	if err != nil {
		t.Fatal(err)
	}
	var kvs []*model.KV
	for _, c := range seg.Chunks {
		kv, err := blend.EncodeChunk(m, pkv, c)
		if err != nil {
			t.Fatal(err)
		}
		kvs = append(kvs, kv)
	}
	const steps = 12
	for _, mode := range blend.Modes {
		res, err := blend.Prefill(context.Background(), m, seg, pkv, blend.MemorySource(kvs), blend.DefaultOptions(mode))
		if err != nil {
			t.Fatal(err)
		}
		n := res.KV.Len()
		logits := append([]float32(nil), res.Logits...)
		g, err := blend.Generate(context.Background(), m, res, model.GenerateOptions{MaxTokens: steps, IgnoreEOS: true}, nil)
		if err != nil {
			t.Fatal(err)
		}
		res.KV.Truncate(n)
		if res.Groups != nil {
			res.Groups.Of = res.Groups.Of[:n]
		}
		res.Logits = logits
		agree, err := forcedAgreement(cpu, m.Config, res, g.Tokens)
		if err != nil {
			t.Fatal(err)
		}
		if agree != len(g.Tokens) {
			t.Errorf("%s: %d of its own %d greedy tokens %v ranked top-1", mode, agree, len(g.Tokens), g.Tokens)
		}
		if res.KV.Len() != n || (res.Groups != nil && len(res.Groups.Of) != n) {
			t.Errorf("%s: context not restored (%d rows, want %d)", mode, res.KV.Len(), n)
		}
		if res.Groups != nil {
			continue // model.Step knows no key groups
		}
		kv, next := res.KV.Clone(), res.Logits
		var ref []int32
		for i := range steps {
			tok := model.Argmax(next)
			if i%2 == 1 {
				tok = (tok + 1) % int32(m.Config.Vocab)
			}
			ref = append(ref, tok)
			if next, err = m.Step(kv, tok); err != nil {
				t.Fatal(err)
			}
		}
		if agree, err := forcedAgreement(cpu, m.Config, res, ref); err != nil || agree != steps/2 {
			t.Errorf("%s: %d of %v ranked top-1 (err %v), want the %d even steps", mode, agree, ref, err, steps/2)
		}
	}
}

// TestEvalBlendEndToEndOnGeneratedModel runs `eval blend` on a generated
// model and a two-question dataset: one JSONL line per question with every
// mode, full exact against itself, the context budget respected, a rerun
// resumed from the file, and a rerun under another ratio refused.
// TestBlendSelectionPlacesRowsInTheirChunks checks the selection record
// against counts worked out by hand: P of 3 rows, chunks of 8, 2 and 12
// rows (context rows 3–10, 11–12, 13–24), question rows after them.
func TestBlendSelectionPlacesRowsInTheirChunks(t *testing.T) {
	seg := blend.Segments{Prefix: make([]int32, 3), Chunks: [][]int32{make([]int32, 8), make([]int32, 2), make([]int32, 12)}, Question: make([]int32, 4)}
	// 3: chunk 0 row 0 (start, Q1); 9: chunk 0 row 6 (Q4); 12: chunk 1
	// row 1 (start, Q3); 16: chunk 2 row 3 (start, Q2); 24: chunk 2 row 11
	// (Q4); 1 (P) and 26 (question) are not chunk rows.
	got := newBlendSelection(seg, []int{1, 3, 9, 12, 16, 24, 26})
	want := &blendSelection{Rows: 5, ChunkRows: 22, Starts: 3, AllStarts: 4 + 2 + 4, Quarters: [4]int{1, 1, 1, 2}, First: 2, FirstChunk: 8}
	if *got != *want {
		t.Fatalf("selection %+v, want %+v", *got, *want)
	}
	sum := summarizeSelection([]blendRecord{{Modes: map[string]blendModeRecord{"cacheblend": {Selection: got}}}}, "cacheblend")
	if sum == nil || sum.Rows != 5 || sum.StartShare != 3.0/5 || sum.StartBase != 10.0/22 || sum.FirstChunkShare != 2.0/5 {
		t.Fatalf("summary %+v", sum)
	}
	if summarizeSelection([]blendRecord{{Modes: map[string]blendModeRecord{"reuse": {}}}}, "reuse") != nil {
		t.Error("a mode without selections has a selection summary")
	}
}

func TestEvalBlendEndToEndOnGeneratedModel(t *testing.T) {
	dir := t.TempDir()
	modelPath := filepath.Join(dir, "m.gguf")
	if err := modeltest.Write(modelPath, modeltest.Spec{Layers: 3, Dim: 64, Heads: 4, KVHeads: 2, FFN: 128, Context: 512, Weights: kernels.F32, Seed: 3}); err != nil {
		t.Fatal(err)
	}
	type ctx struct {
		Title string `json:"title"`
		Text  string `json:"text"`
	}
	long := strings.Repeat("a very long passage that cannot fit ", 20)
	ds := []map[string]any{
		{"question": "Where does the river rise?", "answers": []string{"the hills"}, "ctxs": []ctx{
			{Text: "The river rises in the hills."}, {Text: "Barges carried coal."}, {Title: "Canal", Text: "The canal is old."}, {Text: long}}},
		{"question": "What did barges carry?", "answers": []string{"coal", "cloth"}, "ctxs": []ctx{
			{Text: "Barges carried coal and cloth."}, {Text: "The railway ended the trade."}, {Text: long}}},
	}
	b, _ := json.Marshal(ds)
	dsPath, out := filepath.Join(dir, "ds.json"), filepath.Join(dir, "out.jsonl")
	if err := os.WriteFile(dsPath, b, 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(extra ...string) (string, error) {
		root := newRootCommand()
		var stdout, stderr bytes.Buffer
		root.SetOut(&stdout)
		root.SetErr(&stderr)
		root.SetArgs(append([]string{"eval", "blend", "--dataset", dsPath, "--model", modelPath, "--threads", "2", "--out", out, "--json"}, extra...))
		err := root.Execute()
		return stdout.String(), err
	}
	first, err := run()
	if err != nil {
		t.Fatal(err)
	}
	recs, err := readBlendRecords(out)
	if err != nil {
		t.Fatal(err)
	}
	if raw, _ := os.ReadFile(out); bytes.Count(raw, []byte("\n")) != 2 || len(recs) != 2 {
		t.Fatalf("JSONL has %d lines (%d questions), want 2:\n%s", bytes.Count(raw, []byte("\n")), len(recs), raw)
	}
	for i, rec := range recs {
		if len(rec.Modes) != len(blend.Modes) {
			t.Errorf("question %d: modes %v, want all %d", i, rec.Modes, len(blend.Modes))
		}
		full := rec.Modes[string(blend.ModeFull)]
		if full.KL != 0 || full.Agreement != 1 || full.AnswerAgreement != 1 || full.Forced == 0 {
			t.Errorf("question %d: full against itself %+v, want KL 0 and agreement 1", i, full)
		}
		if rec.Chunks < 2 || rec.Chunks >= rec.Passages {
			t.Errorf("question %d: %d chunks of %d passages, want the long one left out", i, rec.Chunks, rec.Passages)
		}
		if rec.Tokens > 512-evalBlendMaxTokens {
			t.Errorf("question %d: %d prompt tokens exceed the budget", i, rec.Tokens)
		}
		if pre := rec.Modes[string(blend.ModePrefix)]; pre.KL > 1e-6 {
			t.Errorf("question %d: prefix KL %g, want ≈ 0 (it computes the same rows as full)", i, pre.KL)
		}
		if ape := rec.Modes[string(blend.ModeAPE)]; !(ape.KL > 0) {
			t.Errorf("question %d: APE KL %g, want > 0 (it changes attention)", i, ape.KL)
		}
	}
	var sum blendSummary
	if err := json.Unmarshal([]byte(first), &sum); err != nil {
		t.Fatalf("summary: %v\n%s", err, first)
	}
	if sum.Questions != 2 || len(sum.Modes) != len(blend.Modes) || sum.Modes["full"].SpeedupMedians != 1 || sum.FullTokensPerS <= 0 {
		t.Errorf("summary %+v", sum)
	}
	second, err := run()
	if err != nil {
		t.Fatal(err)
	}
	if second != first {
		t.Errorf("resumed summary differs:\n%s\nwant\n%s", second, first)
	}
	if raw, _ := os.ReadFile(out); bytes.Count(raw, []byte("\n")) != 2 {
		t.Errorf("resume appended lines:\n%s", raw)
	}
	if _, err := run("--ratio", "0.5"); err == nil {
		t.Error("rerun with another ratio on the same --out succeeded, want an error")
	}
}
