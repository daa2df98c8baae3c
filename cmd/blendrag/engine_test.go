//go:build !(cuda || cudaemu) || !cgo

package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/blendrag/blendrag/kernels"
	"github.com/blendrag/blendrag/model"
	"github.com/blendrag/blendrag/model/modeltest"
)

// TestDeviceFlag: in a binary built without CUDA, --device cpu (the
// default) runs the engine commands as before, --device cuda fails with
// model.ErrNoCUDA, and a malformed device is a clear error.
func TestDeviceFlag(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tiny.gguf")
	if err := modeltest.Write(path, modeltest.Spec{Layers: 2, Dim: 32, Heads: 2, KVHeads: 1, FFN: 64, Seed: 5, Weights: kernels.Q8_0}); err != nil {
		t.Fatal(err)
	}
	gen := []string{"generate", "--model", path, "--prompt", "abc", "--max-tokens", "4"}
	want, _, err := run(t, gen...)
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := run(t, append(gen, "--device", "cpu")...)
	if err != nil || got != want {
		t.Fatalf("generate --device cpu = %q, %v; default %q", got, err, want)
	}
	ds := filepath.Join(t.TempDir(), "ds.json")
	if err := os.WriteFile(ds, []byte(`[{"question": "q?", "answers": ["a"], "ctxs": [{"text": "a b c"}, {"text": "d e f"}]}]`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		append(gen, "--device", "cuda"),
		{"eval", "rapid", "--model", path, "--dataset", ds, "--device", "cuda"},
		{"eval", "blend", "--model", path, "--dataset", ds, "--device", "cuda"},
		{"logits", "--model", path, "--prompt", "abc", "--device", "cuda:1"},
		{"bench", "engine", "--model", path, "--device", "cuda"},
	} {
		if _, _, err := run(t, args...); !errors.Is(err, model.ErrNoCUDA) {
			t.Errorf("%s: error %v, want model.ErrNoCUDA", strings.Join(args, " "), err)
		}
	}
	if _, _, err := run(t, append(gen, "--device", "gpu")...); err == nil || !strings.Contains(err.Error(), "unknown device") {
		t.Errorf("--device gpu: error %v, want an unknown device", err)
	}
}
