package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/blendrag/blendrag/model"
	"github.com/blendrag/blendrag/model/fetch"
	"github.com/blendrag/blendrag/model/tokenizer"
)

// engineFlags are the flags every command that runs the engine shares.
type engineFlags struct {
	model   string
	threads int
	device  string
}

func (f *engineFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.model, "model", "", "generator GGUF (default: the default model in --models)")
	cmd.Flags().IntVar(&f.threads, "threads", 0, "worker threads (default: all cores)")
	cmd.Flags().StringVar(&f.device, "device", "cpu", "compute device: cpu, cuda or cuda:N, optionally cuda…+blas for cuBLAS prefill (cuda needs a binary built with -tags cuda)")
}

// load opens the generator the flags name, for a command that computes on
// the CPU only: a --device other than cpu is an error.
func (f *engineFlags) load(cmd *cobra.Command) (*model.Model, error) {
	m, b, err := f.open(cmd)
	if err != nil {
		return nil, err
	}
	if b.Device() != "cpu" {
		b.Close()
		m.Close()
		return nil, fmt.Errorf("--device %s: %s computes on the CPU only", f.device, cmd.CommandPath())
	}
	return m, nil
}

// open opens the generator the flags name and the backend of --device on
// it (the CPU backend is the model's own forward pass). A CUDA device in a
// binary built without -tags cuda fails with an error wrapping
// model.ErrNoCUDA. The caller closes the backend before the model.
func (f *engineFlags) open(cmd *cobra.Command) (*model.Model, model.Backend, error) {
	if _, err := model.ParseDevice(f.device); err != nil {
		return nil, nil, fmt.Errorf("--device: %w", err)
	}
	path := f.model
	if path == "" {
		path = fetch.GeneratorPath(modelsDir(cmd))
		if _, err := os.Stat(path); err != nil {
			return nil, nil, fmt.Errorf("default model not found at %s: run `blendrag model pull` or pass --model", path)
		}
	}
	if f.threads < 0 {
		return nil, nil, fmt.Errorf("--threads %d must be ≥ 0", f.threads)
	}
	m, err := model.Load(path, model.Options{Threads: f.threads})
	if err != nil {
		return nil, nil, err
	}
	b, err := m.OpenBackend(f.device)
	if err != nil {
		m.Close()
		return nil, nil, fmt.Errorf("--device %s: %w", f.device, err)
	}
	return m, b, nil
}

// promptFlags select the prompt text of generate and logits.
type promptFlags struct {
	text, file string
	chat       bool
}

func (f *promptFlags) register(cmd *cobra.Command, withFile bool) {
	cmd.Flags().StringVar(&f.text, "prompt", "", "prompt text")
	if withFile {
		cmd.Flags().StringVar(&f.file, "prompt-file", "", "read the prompt from this file")
	}
	cmd.Flags().BoolVar(&f.chat, "chat", false, "wrap the prompt as a user message in the model's chat template")
}

// tokens returns the prompt's token ids: with --chat the prompt is a user
// turn rendered by the model's chat template (special tokens parsed);
// otherwise plain text, with BOS when the model asks for it.
func (f *promptFlags) tokens(m *model.Model) ([]int32, error) {
	text := f.text
	switch {
	case f.text != "" && f.file != "":
		return nil, fmt.Errorf("give --prompt or --prompt-file, not both")
	case f.file != "":
		b, err := os.ReadFile(f.file)
		if err != nil {
			return nil, err
		}
		text = string(b)
	case f.text == "":
		return nil, fmt.Errorf("a prompt is required (--prompt)")
	}
	var ids []int32
	if m.Tok.AddBOS() {
		ids = append(ids, m.Tok.BOS())
	}
	if f.chat {
		text = m.Tok.Template().Render([]tokenizer.Message{{Role: "user", Content: text}}, true)
		return m.Tok.AppendEncode(ids, text, true), nil
	}
	ids = m.Tok.AppendEncode(ids, text, false)
	if len(ids) == 0 {
		return nil, fmt.Errorf("the prompt encodes to no tokens")
	}
	if len(ids) >= m.Config.Context {
		return nil, fmt.Errorf("prompt of %d tokens does not fit the model's context length %d", len(ids), m.Config.Context)
	}
	return ids, nil
}
