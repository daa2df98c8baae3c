//go:build (cuda || cudaemu) && cgo

package main

import (
	"encoding/json"
	"testing"

	"github.com/blendrag/blendrag/kernels"
	"github.com/blendrag/blendrag/model/modeltest"
)

// TestEvalRapidOnCUDAMatchesTargetOnly: `eval rapid --device cuda` runs the
// whole question on the GPU backend (chunk KV, both prefills, every decode),
// and with η = 0 RAPID's greedy output equals the target-only output on the
// same backend, drafts accepted or not; the record names the device.
func TestEvalRapidOnCUDAMatchesTargetOnly(t *testing.T) {
	stdout, out := runEval(t, modeltest.Spec{Layers: 2, Dim: 64, Heads: 2, KVHeads: 1, FFN: 128, Context: 512, Weights: kernels.Q8_0, Seed: 9},
		"rapid", "--device", "cuda", "--threads", "2", "--context-tokens", "200", "--max-tokens", "12", "--gamma", "3", "--eta", "0", "--json")
	var sum rapidEvalSummary
	if err := json.Unmarshal(stdout, &sum); err != nil {
		t.Fatalf("summary: %v\n%s", err, stdout)
	}
	if len(sum.Configs) == 0 {
		t.Fatalf("no configurations in %s", stdout)
	}
	for _, c := range sum.Configs {
		if c.Questions != 1 || c.Same != 1 {
			t.Errorf("%s: %d questions, %d identical to target-only; want 1 and 1", c.Name, c.Questions, c.Same)
		}
	}
	recs, err := readJSONL[rapidRecord](out)
	if err != nil || len(recs) != 1 || recs[0].Device == "" {
		t.Fatalf("records %+v (err %v): want one naming the CUDA device", recs, err)
	}
	t.Logf("device %q: %d drafted, %d accepted", recs[0].Device, recs[0].Runs[0].Drafted, recs[0].Runs[0].Accepted)
}
