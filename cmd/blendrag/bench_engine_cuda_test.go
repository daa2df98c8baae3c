//go:build (cuda || cudaemu) && cgo

package main

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/blendrag/blendrag/kernels"
	"github.com/blendrag/blendrag/model"
	"github.com/blendrag/blendrag/model/modeltest"
)

// TestBenchEngineProfileDeviceCountsTheForwardPass: `bench engine --device
// cuda --profile-device` reports, per length, the device operations of one
// prefill and of the decode steps after it, and their counts are the
// forward pass's: one RMSNorm before attention and one before the MLP per
// layer and row batch plus the final norm, i.e. 2·layers+1 per Forward.
func TestBenchEngineProfileDeviceCountsTheForwardPass(t *testing.T) {
	spec := modeltest.Spec{Layers: 2, Dim: 64, Heads: 2, KVHeads: 1, FFN: 128, Context: 256, Weights: kernels.Q8_0, Seed: 5}
	path := filepath.Join(t.TempDir(), "m.gguf")
	if err := modeltest.Write(path, spec); err != nil {
		t.Fatal(err)
	}
	const decode = 3
	root := newRootCommand()
	var so, se bytes.Buffer
	root.SetOut(&so)
	root.SetErr(&se)
	root.SetArgs([]string{"bench", "engine", "--model", path, "--device", "cuda", "--lengths", "40", "--prompt-tokens", "40",
		"--decode-tokens", "3", "--rounds", "1", "--profile-device", "--json"})
	if err := root.Execute(); err != nil {
		t.Fatalf("%v\n%s", err, se.String())
	}
	var res engineResult
	if err := json.Unmarshal(so.Bytes(), &res); err != nil {
		t.Fatalf("%v\n%s", err, so.String())
	}
	if len(res.Runs) != 1 || res.Runs[0].Profile == nil {
		t.Fatalf("runs %+v: want one with a device profile", res.Runs)
	}
	p := res.Runs[0].Profile
	for _, ph := range []struct {
		name     string
		prof     model.DeviceProfile
		forwards int
	}{
		{"prefill", p.Prefill, 1},
		{"decode", p.Decode, decode},
	} {
		prof := ph.prof
		calls := map[string]int{}
		var sum float64
		for _, op := range prof.Ops {
			calls[op.Name] = op.Calls
			sum += op.MS
		}
		if want := ph.forwards * (2*spec.Layers + 1); calls["rmsnorm"] != want {
			t.Errorf("%s: %d rmsnorm calls, want %d (ops %+v)", ph.name, calls["rmsnorm"], want, prof.Ops)
		}
		if calls["mm_q8_0"] == 0 || calls["download"] < ph.forwards {
			t.Errorf("%s: ops %+v lack the Q8_0 products or the logits' downloads", ph.name, prof.Ops)
		}
		if prof.BusyMS <= 0 || prof.BusyMS > prof.WallMS || sum-prof.BusyMS > 1e-6*prof.BusyMS+1e-9 {
			t.Errorf("%s: busy %.4f ms, wall %.4f ms, ops sum %.4f ms", ph.name, prof.BusyMS, prof.WallMS, sum)
		}
	}
}
