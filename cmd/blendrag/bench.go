package main

import (
	"bufio"
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/blendrag/blendrag/model"
)

//go:embed bench_llamacpp.py
var llamaCppScript string

//go:embed bench_hf.py
var hfScript string

// benchText is the source of benchmark prompts: plain English, repeated to
// the prompt length.
const benchText = `The river rises in the northern hills and runs south through farmland for about two hundred kilometres before it reaches the sea. Its valley was settled early, and the towns along its banks grew rich on the trade in wool, grain and timber. In the nineteenth century a canal joined it to the industrial cities of the interior, and for a few decades the barges carried coal downstream and cloth upstream. The railway ended that trade, and today the river is known mostly for its birds, its old stone bridges and the long footpath that follows it from source to mouth. `

// engineRun is one prompt length of `bench engine`.
type engineRun struct {
	PromptTokens int            `json:"prompt_tokens"`
	DecodeTokens int            `json:"decode_tokens"`
	PrefillTokS  float64        `json:"prefill_tok_s"`
	DecodeTokS   float64        `json:"decode_tok_s"`
	LlamaCpp     *llamaCppBench `json:"llamacpp,omitempty"`
	HF           *hfBench       `json:"hf,omitempty"`
	// Profile is the device's time per operation in one extra, untimed
	// prefill and decode (--profile-device).
	Profile *engineProfile `json:"device_profile,omitempty"`
}

// engineProfile is a device backend's profile of one prefill and of the
// decode steps after it.
type engineProfile struct {
	Prefill model.DeviceProfile `json:"prefill"`
	Decode  model.DeviceProfile `json:"decode"`
}

// engineResult is the JSON that `bench engine` prints: the flat fields are
// the --prompt-tokens run; runs holds every prompt length measured.
type engineResult struct {
	Model        string         `json:"model"`
	Device       string         `json:"device"`
	Threads      int            `json:"threads"`
	PromptTokens int            `json:"prompt_tokens"`
	DecodeTokens int            `json:"decode_tokens"`
	PrefillTokS  float64        `json:"prefill_tok_s"`
	DecodeTokS   float64        `json:"decode_tok_s"`
	RSSMB        float64        `json:"rss_mb"`
	LlamaCpp     *llamaCppBench `json:"llamacpp,omitempty"`
	Runs         []engineRun    `json:"runs,omitempty"`
	// ContextTokens is the model's trained context; MaxPromptNote says when
	// the longest run was capped below it.
	ContextTokens int    `json:"context_tokens"`
	MaxPromptNote string `json:"max_prompt_note,omitempty"`
}

type llamaCppBench struct {
	Version      string  `json:"version"`
	PrefillTokS  float64 `json:"prefill_tok_s"`
	DecodeTokS   float64 `json:"decode_tok_s"`
	PrefillRatio float64 `json:"prefill_ratio"` // blendrag / llama.cpp
	DecodeRatio  float64 `json:"decode_ratio"`
}

// addBenchCommands registers `blendrag bench`.
func addBenchCommands(root *cobra.Command) {
	bench := &cobra.Command{Use: "bench", Short: "Benchmarks (print JSON)"}
	bench.AddCommand(engineBenchCommand(), kernelsBenchCommand())
	addKVBenchCommands(bench)
	addKVDataBenchCommand(bench)
	addHTTPBenchCommand(bench)
	root.AddCommand(bench)
}

// runLlamaCpp measures llama.cpp on the same model, tokens and threads.
func runLlamaCpp(python, modelPath string, ids []int32, decode, threads, rounds int) (*llamaCppBench, error) {
	req := map[string]any{"model": modelPath, "tokens": ids, "decode": decode, "threads": threads, "rounds": rounds}
	var r llamaCppBench
	if err := runPythonJSON("llama.cpp reference", python, llamaCppScript, req, nil, io.Discard, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// runPythonJSON runs script in python with req as JSON on stdin and env
// added to the environment, copies its stderr to progress, and decodes the
// JSON it prints into out. what names the reference in errors.
func runPythonJSON(what, python, script string, req any, env []string, progress io.Writer, out any) error {
	in, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	c := exec.Command(python, "-c", script)
	c.Env = append(os.Environ(), env...)
	c.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	c.Stderr = io.MultiWriter(&stderr, progress)
	stdout, err := c.Output()
	if err != nil {
		return fmt.Errorf("%s (%s): %w: %s", what, python, err, strings.TrimSpace(stderr.String()))
	}
	if err := json.Unmarshal(stdout, out); err != nil {
		return fmt.Errorf("%s printed %q: %w", what, stdout, err)
	}
	return nil
}

// hfBench is HF transformers on the same GGUF (dequantised by transformers),
// tokens and device, per dtype.
type hfBench struct {
	Version    string         `json:"version"`
	DeviceName string         `json:"device_name"`
	Runs       []hfDTypeBench `json:"runs"`
}

// hfDTypeBench is one dtype of hfBench; the ratios are blendrag / HF
// (above 1: blendrag is faster).
type hfDTypeBench struct {
	DType        string  `json:"dtype"`
	PrefillTokS  float64 `json:"prefill_tok_s"`
	DecodeTokS   float64 `json:"decode_tok_s"`
	PrefillRatio float64 `json:"prefill_ratio"`
	DecodeRatio  float64 `json:"decode_ratio"`
}

// runHF measures HF transformers (bench_hf.py in python) on the same model
// and device ("cuda" or "cpu") for each prompt (rounds[k] rounds for prompt
// k) in one process, returning one hfBench per prompt. Its progress goes to
// progress.
func runHF(python, modelPath, device string, prompts [][]int32, rounds []int, decode int, progress io.Writer) ([]*hfBench, error) {
	req := map[string]any{"model": modelPath, "prompts": prompts, "rounds": rounds, "decode": decode, "device": device}
	var r struct {
		Version    string           `json:"version"`
		DeviceName string           `json:"device_name"`
		Prompts    [][]hfDTypeBench `json:"prompts"`
	}
	if err := runPythonJSON("HF transformers baseline", python, hfScript, req, []string{"TQDM_DISABLE=1", "HF_HUB_OFFLINE=1"}, progress, &r); err != nil {
		return nil, err
	}
	if len(r.Prompts) != len(prompts) {
		return nil, fmt.Errorf("HF transformers baseline answered %d prompts of %d", len(r.Prompts), len(prompts))
	}
	res := make([]*hfBench, len(prompts))
	for k, runs := range r.Prompts {
		res[k] = &hfBench{Version: r.Version, DeviceName: r.DeviceName, Runs: runs}
	}
	return res, nil
}

// peakRSSMB is the process's peak resident set (VmHWM) in MB, or 0 where
// /proc is not available.
func peakRSSMB() float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}
