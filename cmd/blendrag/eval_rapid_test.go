package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/blendrag/blendrag/kernels"
	"github.com/blendrag/blendrag/model/modeltest"
)

func TestDraftPassagesAreTheMostOverlappingInPromptOrder(t *testing.T) {
	texts := []string{
		"The weather in Spain is mild.",
		"Edwin Clay built the Old Stone Bridge of Marlow.",
		"Bakers sell honey bread.",
		"The bridge at Marlow has seven arches.",
		"Clay is a soil.",
	}
	got := draftPassages("Who built the Old Stone Bridge of Marlow?", texts, 2)
	if want := []int{1, 3}; !slices.Equal(got, want) {
		t.Errorf("draftPassages = %v, want %v", got, want)
	}
	if got := draftPassages("anything", texts, 9); len(got) != len(texts) {
		t.Errorf("k above the passage count: %v", got)
	}
}

func TestRapidConfigsParseGammaAndEtaLists(t *testing.T) {
	cs, err := rapidConfigs([]string{"auto", "4"}, []float64{0, 0.5})
	if err != nil {
		t.Fatal(err)
	}
	// Per η: each γ (drafting throughout) and the defaults.
	if len(cs) != 6 || !cs[0].Adaptive || cs[1].Gamma != 4 || cs[1].Adaptive || !cs[2].Default || cs[3].Eta != 0.5 {
		t.Errorf("configs %+v", cs)
	}
	for _, bad := range [][]string{{"0"}, {"17"}, {"fast"}} {
		if _, err := rapidConfigs(bad, []float64{0}); err == nil {
			t.Errorf("--gamma %v accepted", bad)
		}
	}
	if _, err := rapidConfigs([]string{"auto"}, []float64{math.NaN()}); err == nil {
		t.Error("NaN η accepted")
	}
}

func TestSummarizeRapidSpeedupIsTotalTimePerToken(t *testing.T) {
	cfgs, _ := rapidConfigs([]string{"4"}, []float64{0})
	rec := func(targetMS, rapidMS float64, acc int) rapidRecord {
		r := rapidRecord{TargetRows: 100, DraftRows: 20}
		r.Target.DecodeMS, r.Target.Tokens = targetMS, 10
		r.Runs = []rapidRun{{Tokens: 10, DecodeMS: rapidMS, Drafted: 8, Accepted: acc, Rounds: 2, GammaMean: 4, Bound: 1, Same: true, Agreement: 1}, {Tokens: 10, DecodeMS: targetMS}}
		return r
	}
	// 200 ms of target against 100 ms of RAPID for 20 tokens each: 2×.
	s := summarizeRapid(&evalRapidFlags{}, cfgs, []rapidRecord{rec(100, 40, 8), rec(100, 60, 4)})
	c := s.Configs[0]
	if math.Abs(c.Speedup-2) > 1e-12 || math.Abs(c.AcceptRate-0.75) > 1e-12 || c.MeanAccepted != 3 || c.Same != 2 || math.Abs(c.OfBound-2) > 1e-12 {
		t.Errorf("summary %+v", c)
	}
}

// TestEvalRapidResumesFromOut runs `eval rapid` on a generated model and a
// three-question dataset with one --out: --limit 1, then --limit 2 computes
// only the second question and summarizes both; a partial last line (an
// interrupted write) is cut and its question computed again; a subset of
// the --gamma runs is served from the file; other --context-tokens are
// refused.
func TestEvalRapidResumesFromOut(t *testing.T) {
	dir := t.TempDir()
	modelPath := filepath.Join(dir, "m.gguf")
	if err := modeltest.Write(modelPath, modeltest.Spec{Layers: 2, Dim: 32, Heads: 4, KVHeads: 2, FFN: 64, Context: 512, Weights: kernels.F32, Seed: 5}); err != nil {
		t.Fatal(err)
	}
	const ds = `[
	{"question": "Where does the river rise?", "answers": ["the hills"], "ctxs": [
		{"text": "The river rises in the hills."}, {"text": "Barges carried coal."}, {"title": "Canal", "text": "The canal is old."}]},
	{"question": "What did barges carry?", "answers": ["coal"], "ctxs": [
		{"text": "Barges carried coal and cloth."}, {"text": "The railway ended the trade."}]},
	{"question": "Who built the bridge?", "answers": ["Edwin Clay"], "ctxs": [
		{"text": "Edwin Clay built the bridge."}, {"text": "The bridge has seven arches."}]}
]`
	dsPath, out := filepath.Join(dir, "ds.json"), filepath.Join(dir, "out.jsonl")
	if err := os.WriteFile(dsPath, []byte(ds), 0o644); err != nil {
		t.Fatal(err)
	}
	// run runs with --gamma gammas and returns the summary and the 1-based
	// numbers of the questions the run computed (from its progress lines).
	run := func(gammas string, extra ...string) (rapidEvalSummary, []int, string, error) {
		root := newRootCommand()
		var stdout, stderr bytes.Buffer
		root.SetOut(&stdout)
		root.SetErr(&stderr)
		root.SetArgs(append([]string{"eval", "rapid", "--dataset", dsPath, "--model", modelPath, "--threads", "2",
			"--context-tokens", "480", "--max-tokens", "12", "--gamma", gammas, "--eta", "0", "--out", out, "--json"}, extra...))
		err := root.Execute()
		var sum rapidEvalSummary
		if err == nil {
			if jerr := json.Unmarshal(stdout.Bytes(), &sum); jerr != nil {
				t.Fatalf("summary: %v\n%s", jerr, stdout.String())
			}
		}
		var computed []int
		for _, line := range strings.Split(stderr.String(), "\n") {
			var q, n int
			if _, serr := fmt.Sscanf(line, "eval rapid: question %d/%d:", &q, &n); serr == nil {
				computed = append(computed, q)
			}
		}
		return sum, computed, stderr.String(), err
	}
	lines := func() []string {
		raw, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		return strings.SplitAfter(string(raw), "\n")
	}
	// checkSummary checks that the summary covers the file's first n
	// records, from means worked out here.
	checkSummary := func(sum rapidEvalSummary, n int) {
		t.Helper()
		recs, err := readJSONL[rapidRecord](out)
		if err != nil || len(recs) < n {
			t.Fatalf("records %d, %v; want ≥ %d", len(recs), err, n)
		}
		var rows float64
		for _, r := range recs[:n] {
			rows += float64(r.TargetRows)
		}
		if sum.Questions != n || len(sum.Configs) != 3 || sum.Configs[0].Questions != n || math.Abs(sum.MeanTarget-rows/float64(n)) > 1e-9 {
			t.Errorf("summary over %d questions, mean target rows %g (want %g), configs %d", sum.Questions, sum.MeanTarget, rows/float64(n), len(sum.Configs))
		}
	}

	if _, computed, _, err := run("4,auto", "--limit", "1"); err != nil || !slices.Equal(computed, []int{1}) {
		t.Fatalf("--limit 1: computed %v, err %v; want question 1", computed, err)
	}
	first := lines()
	if len(first) != 2 || first[1] != "" { // one line, then the empty rest
		t.Fatalf("--limit 1 wrote %q, want one line", first)
	}
	sum, computed, log, err := run("4,auto", "--limit", "2")
	if err != nil || !slices.Equal(computed, []int{2}) || !strings.Contains(log, "1 of 2 questions resumed") {
		t.Fatalf("--limit 2 after --limit 1: computed %v, err %v, log:\n%s\nwant question 2 only", computed, err, log)
	}
	second := lines()
	if len(second) != 3 || second[0] != first[0] {
		t.Fatalf("--limit 2 left %d lines, first changed: %v", len(second)-1, second[0] != first[0])
	}
	checkSummary(sum, 2)

	// A write cut short: half of question 2's line.
	if err := os.WriteFile(out, []byte(second[0]+second[1][:len(second[1])/2]), 0o644); err != nil {
		t.Fatal(err)
	}
	sum, computed, _, err = run("4,auto", "--limit", "2")
	if err != nil || !slices.Equal(computed, []int{2}) {
		t.Fatalf("after a partial last line: computed %v, err %v; want question 2 again", computed, err)
	}
	third := lines()
	if len(third) != 3 || third[0] != first[0] {
		t.Fatalf("after recovery: %d lines, want 2 whole ones", len(third)-1)
	}
	checkSummary(sum, 2)

	// Fewer --gamma runs: all served from the file.
	sum, computed, _, err = run("4", "--limit", "2")
	if err != nil || len(computed) != 0 || len(sum.Configs) != 2 || sum.Configs[0].Name != "η=0 γ=4" || sum.Configs[0].Questions != 2 {
		t.Errorf("--gamma 4 only: computed %v, err %v, configs %+v; want none computed, 2 configs", computed, err, sum.Configs)
	}

	if _, _, _, err := run("4,auto", "--limit", "2", "--context-tokens", "470"); err == nil || !strings.Contains(err.Error(), "use another --out") {
		t.Errorf("other --context-tokens on the same --out: err %v, want a refusal", err)
	}
	if got := lines(); len(got) != 3 {
		t.Errorf("a refused run changed the file to %d lines", len(got)-1)
	}
}

// TestEvalRapidWithADraftModel: --draft-model drafts with another GGUF of
// the same tokenizer (here a smaller generated model), its chunk KV computed
// with it; with η = 0 the output still equals target-only decoding; the
// record names the drafter; a drafter with another vocabulary is refused.
func TestEvalRapidWithADraftModel(t *testing.T) {
	dir := t.TempDir()
	target, drafter := filepath.Join(dir, "t.gguf"), filepath.Join(dir, "d.gguf")
	if err := modeltest.Write(target, modeltest.Spec{Layers: 3, Dim: 64, Heads: 4, KVHeads: 2, FFN: 128, Context: 512, Weights: kernels.F32, Seed: 5}); err != nil {
		t.Fatal(err)
	}
	if err := modeltest.Write(drafter, modeltest.Spec{Layers: 1, Dim: 32, Heads: 2, KVHeads: 1, FFN: 64, Context: 512, Weights: kernels.F32, Seed: 6}); err != nil {
		t.Fatal(err)
	}
	dsPath, out := oneQuestionDataset(t, dir)
	run := func(draft string) (string, error) {
		root := newRootCommand()
		var stdout, stderr bytes.Buffer
		root.SetOut(&stdout)
		root.SetErr(&stderr)
		root.SetArgs([]string{"eval", "rapid", "--dataset", dsPath, "--model", target, "--draft-model", draft, "--threads", "2",
			"--context-tokens", "200", "--max-tokens", "12", "--draft-chunks", "1", "--gamma", "3", "--eta", "0", "--out", out, "--json"})
		err := root.Execute()
		return stdout.String(), err
	}
	stdout, err := run(drafter)
	if err != nil {
		t.Fatal(err)
	}
	var sum rapidEvalSummary
	if err := json.Unmarshal([]byte(stdout), &sum); err != nil {
		t.Fatalf("summary: %v\n%s", err, stdout)
	}
	for _, c := range sum.Configs {
		if c.Questions != 1 || c.Same != 1 {
			t.Errorf("%s: %d questions, %d identical to target-only; want 1 and 1", c.Name, c.Questions, c.Same)
		}
	}
	recs, err := readJSONL[rapidRecord](out)
	if err != nil || len(recs) != 1 || recs[0].DraftModel == "" || recs[0].DraftModel == recs[0].Model {
		t.Fatalf("records %+v (err %v): want one naming the draft model", recs, err)
	}
	r, c := recs[0].Runs[0], recs[0].Costs
	t.Logf("drafter %d rows: %d drafted, %d accepted; draft step %.3f ms, target step %.3f ms", recs[0].DraftRows, r.Drafted, r.Accepted, c.DraftStepMS, c.TargetStepMS)
	if r.Drafted == 0 {
		t.Error("the draft model drafted nothing")
	}
	// The 1-layer, 32-wide drafter's step is far cheaper than the 3-layer,
	// 64-wide target's over about the same rows: it is the draft model that
	// ran. (Random models of one tokenizer tend to repeat the same token,
	// so acceptance cannot tell.)
	if c.DraftStepMS <= 0 || c.DraftStepMS >= c.TargetStepMS {
		t.Errorf("draft step %.3f ms, target step %.3f ms: want the small drafter cheaper", c.DraftStepMS, c.TargetStepMS)
	}
	// Another --draft-model is another configuration for the same --out.
	if _, err := run(target); err == nil || !strings.Contains(err.Error(), "--draft-model") {
		t.Errorf("rerun with another drafter on the same --out: err = %v", err)
	}
	if _, err := run(filepath.Join(dir, "missing.gguf")); err == nil || !strings.Contains(err.Error(), "--draft-model") {
		t.Errorf("missing draft model: err = %v", err)
	}
}

// oneQuestionDataset writes a one-question dataset (three short passages)
// into dir and returns its path and an --out path beside it.
func oneQuestionDataset(t *testing.T, dir string) (dsPath, out string) {
	t.Helper()
	const ds = `[{"question": "Where does the river rise?", "answers": ["the hills"], "ctxs": [
		{"text": "The river rises in the hills."}, {"text": "Barges carried coal."}, {"title": "Canal", "text": "The canal is old."}]}]`
	dsPath, out = filepath.Join(dir, "ds.json"), filepath.Join(dir, "out.jsonl")
	if err := os.WriteFile(dsPath, []byte(ds), 0o644); err != nil {
		t.Fatal(err)
	}
	return dsPath, out
}
