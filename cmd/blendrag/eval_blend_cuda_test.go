//go:build (cuda || cudaemu) && cgo

package main

import (
	"bytes"
	"encoding/json"
	"math"
	"path/filepath"
	"testing"

	"github.com/blendrag/blendrag/kernels"
	"github.com/blendrag/blendrag/model/modeltest"
)

// TestEvalBlendOnCUDARecordsTheDeviceTier: `eval blend --device cuda`
// measures a fusion mode (reuse, which moves chunks) a second time with the
// question's chunks in the GPU's tier (assembled within the device), and
// records that context's first-token KL against full beside the one
// uploaded from host memory: within 1e-4 + 1 % of it (F32 weights; the
// device rotates moved chunks' keys itself, a few ulp from the CPU's
// rotation; blend's TestCUDAChunkTierAssemblesTheContextOnTheDevice
// compares the logits themselves). Full has no device-tier figure.
//
// With --profile-device each mode's record also holds its device
// operations in one more prefill per tier, and they tell the tiers apart:
// with the chunks in host RAM their rows are uploaded; from the device tier
// the same bytes are copied within the device instead.
func TestEvalBlendOnCUDARecordsTheDeviceTier(t *testing.T) {
	stdout, out := runEval(t, modeltest.Spec{Layers: 2, Dim: 64, Heads: 4, KVHeads: 2, FFN: 128, Context: 512, Weights: kernels.F32, Seed: 5},
		"blend", "--device", "cuda", "--threads", "2", "--modes", "reuse", "--profile-device", "--json")
	recs, err := readBlendRecords(out)
	if err != nil || len(recs) != 1 {
		t.Fatalf("records %+v (err %v), want 1", recs, err)
	}
	for name, m := range recs[0].Modes {
		if name == "full" {
			if m.TTFTDeviceMS != 0 {
				t.Errorf("full has a device-tier TTFT %g", m.TTFTDeviceMS)
			}
			continue
		}
		if !(m.TTFTDeviceMS > 0) || math.Abs(m.DeviceKL-m.KL) > 1e-4+0.01*m.KL {
			t.Errorf("%s: device-tier TTFT %g ms, KL %g against %g from host memory", name, m.TTFTDeviceMS, m.DeviceKL, m.KL)
		}
		t.Logf("%s: TTFT %.1f ms, from the device tier %.1f ms; KL %g / %g", name, m.TTFTMS, m.TTFTDeviceMS, m.KL, m.DeviceKL)
	}
	var sum blendSummary
	if err := json.Unmarshal(stdout, &sum); err != nil {
		t.Fatalf("summary: %v\n%s", err, stdout)
	}
	if r := sum.Modes["reuse"]; !(r.TTFTDeviceP50MS > 0) || !(r.SpeedupDevice > 0) {
		t.Errorf("reuse summary %+v has no device-tier TTFT", r)
	}

	bytesOf := func(p *prefillProfile, name string) int64 {
		for _, op := range p.Device.Ops {
			if op.Name == name {
				return op.Bytes
			}
		}
		return 0
	}
	full, reuse := recs[0].Modes["full"].Profile, recs[0].Modes["reuse"].Profile
	if full == nil || full.RAM == nil || full.Tier != nil || reuse == nil || reuse.RAM == nil || reuse.Tier == nil {
		t.Fatalf("profiles: full %+v, reuse %+v; want RAM for both and the tier for reuse only", full, reuse)
	}
	uploaded := bytesOf(reuse.RAM, "upload_queued") - bytesOf(reuse.Tier, "upload_queued")
	copied := bytesOf(reuse.Tier, "copy") - bytesOf(reuse.RAM, "copy")
	if uploaded <= 0 || uploaded != copied {
		t.Errorf("reuse: the RAM run uploads %d bytes more than the tier run, which copies %d more: want the same, > 0", uploaded, copied)
	}
	for _, p := range []*prefillProfile{full.RAM, reuse.RAM, reuse.Tier} {
		if !(p.WallMS > 0) || !(p.Device.BusyMS > 0) || p.PlaceMS > p.ComputeMS {
			t.Errorf("profile %+v: want wall and busy time, place within compute", p)
		}
	}
}

// runEval writes a model generated from spec and a one-question dataset,
// runs `blendrag eval <args> --dataset … --model … --out …` and returns
// its standard output and the JSONL path.
func runEval(t *testing.T, spec modeltest.Spec, args ...string) (stdout []byte, out string) {
	t.Helper()
	dir := t.TempDir()
	modelPath := filepath.Join(dir, "m.gguf")
	if err := modeltest.Write(modelPath, spec); err != nil {
		t.Fatal(err)
	}
	dsPath, out := oneQuestionDataset(t, dir)
	root := newRootCommand()
	var so, se bytes.Buffer
	root.SetOut(&so)
	root.SetErr(&se)
	root.SetArgs(append(append([]string{"eval"}, args...), "--dataset", dsPath, "--model", modelPath, "--out", out))
	if err := root.Execute(); err != nil {
		t.Fatalf("%v\n%s", err, se.String())
	}
	return so.Bytes(), out
}
