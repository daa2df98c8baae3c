package main

import (
	"bufio"
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/blendrag/blendrag/model"
	"github.com/blendrag/blendrag/model/fetch"
)

//go:embed bench_llamacpp.py
var llamaCppScript string

// benchText is the source of benchmark prompts: plain English, repeated to
// the prompt length.
const benchText = `The river rises in the northern hills and runs south through farmland for about two hundred kilometres before it reaches the sea. Its valley was settled early, and the towns along its banks grew rich on the trade in wool, grain and timber. In the nineteenth century a canal joined it to the industrial cities of the interior, and for a few decades the barges carried coal downstream and cloth upstream. The railway ended that trade, and today the river is known mostly for its birds, its old stone bridges and the long footpath that follows it from source to mouth. `

// engineResult is the JSON that `bench engine` prints.
type engineResult struct {
	Model        string         `json:"model"`
	Threads      int            `json:"threads"`
	PromptTokens int            `json:"prompt_tokens"`
	DecodeTokens int            `json:"decode_tokens"`
	PrefillTokS  float64        `json:"prefill_tok_s"`
	DecodeTokS   float64        `json:"decode_tok_s"`
	RSSMB        float64        `json:"rss_mb"`
	LlamaCpp     *llamaCppBench `json:"llamacpp,omitempty"`
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
	var ef engineFlags
	var promptLen, decodeLen, rounds int
	var asJSON bool
	var refPython string
	engine := &cobra.Command{
		Use:   "engine",
		Short: "Prefill and decode tokens/s of the generator (512-token prompt, 128 decoded tokens)",
		Long: "engine measures prefill tokens/s on a prompt of --prompt-tokens tokens and decode tokens/s\n" +
			"over --decode-tokens greedy tokens (end of generation ignored), best of --rounds. With\n" +
			"--llamacpp-python it runs llama.cpp (llama-cpp-python in that Python) on the same GGUF,\n" +
			"tokens and threads in the same run and reports the ratios.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := ef.load(cmd)
			if err != nil {
				return err
			}
			defer m.Close()
			if promptLen < 1 || decodeLen < 1 || promptLen+decodeLen > m.Config.Context {
				return fmt.Errorf("prompt %d + decode %d tokens must be ≥ 1 each and fit the context %d", promptLen, decodeLen, m.Config.Context)
			}
			var ids []int32
			for len(ids) < promptLen {
				ids = m.Tok.AppendEncode(ids, benchText, false)
			}
			ids = ids[:promptLen]
			res := engineResult{Model: m.Config.Name, Threads: m.Threads(), PromptTokens: promptLen, DecodeTokens: decodeLen}
			for r := 0; r < max(rounds, 1); r++ {
				kv := model.NewKV(m.Config)
				t0 := time.Now()
				logits, err := m.Forward(kv, ids, model.Positions(0, len(ids)), false)
				if err != nil {
					return err
				}
				res.PrefillTokS = max(res.PrefillTokS, float64(promptLen)/time.Since(t0).Seconds())
				tok := model.Argmax(logits)
				t1 := time.Now()
				for i := 0; i < decodeLen; i++ {
					if logits, err = m.Step(kv, tok); err != nil {
						return err
					}
					tok = model.Argmax(logits)
				}
				res.DecodeTokS = max(res.DecodeTokS, float64(decodeLen)/time.Since(t1).Seconds())
			}
			res.RSSMB = peakRSSMB()
			if refPython != "" {
				path := ef.model
				if path == "" {
					path = fetch.GeneratorPath(modelsDir(cmd))
				}
				ref, err := runLlamaCpp(refPython, path, ids, decodeLen, m.Threads())
				if err != nil {
					return err
				}
				ref.PrefillRatio = res.PrefillTokS / ref.PrefillTokS
				ref.DecodeRatio = res.DecodeTokS / ref.DecodeTokS
				res.LlamaCpp = ref
			}
			w := cmd.OutOrStdout()
			if asJSON {
				return json.NewEncoder(w).Encode(res)
			}
			fmt.Fprintf(w, "%s, %d threads: prefill %.1f tok/s (%d tokens), decode %.1f tok/s (%d tokens), peak RSS %.0f MB\n",
				res.Model, res.Threads, res.PrefillTokS, promptLen, res.DecodeTokS, decodeLen, res.RSSMB)
			if r := res.LlamaCpp; r != nil {
				fmt.Fprintf(w, "%s: prefill %.1f tok/s, decode %.1f tok/s; blendrag/llama.cpp = %.2f× prefill, %.2f× decode\n",
					r.Version, r.PrefillTokS, r.DecodeTokS, r.PrefillRatio, r.DecodeRatio)
			}
			return nil
		},
	}
	ef.register(engine)
	engine.Flags().IntVar(&promptLen, "prompt-tokens", 512, "prompt length in tokens")
	engine.Flags().IntVar(&decodeLen, "decode-tokens", 128, "tokens to decode")
	engine.Flags().IntVar(&rounds, "rounds", 2, "repeat and keep the best")
	engine.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	engine.Flags().StringVar(&refPython, "llamacpp-python", "", "Python with llama-cpp-python: also measure llama.cpp in this run")
	bench.AddCommand(engine)
	root.AddCommand(bench)
}

// runLlamaCpp measures llama.cpp on the same model, tokens and threads.
func runLlamaCpp(python, modelPath string, ids []int32, decode, threads int) (*llamaCppBench, error) {
	req, _ := json.Marshal(map[string]any{"model": modelPath, "tokens": ids, "decode": decode, "threads": threads})
	c := exec.Command(python, "-c", llamaCppScript)
	c.Stdin = bytes.NewReader(req)
	var stderr bytes.Buffer
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		return nil, fmt.Errorf("llama.cpp reference (%s): %w: %s", python, err, strings.TrimSpace(stderr.String()))
	}
	var r llamaCppBench
	if err := json.Unmarshal(out, &r); err != nil {
		return nil, fmt.Errorf("llama.cpp reference printed %q: %w", out, err)
	}
	return &r, nil
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
