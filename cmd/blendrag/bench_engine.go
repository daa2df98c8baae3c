package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/blendrag/blendrag/model"
	"github.com/blendrag/blendrag/model/fetch"
)

// defaultMaxPrompt caps the "max" prompt length of `bench engine`: at the
// SmolLM2 context of 8192 tokens one prefill takes minutes on two cores for
// each engine (attention is quadratic), so the default stops at 4096 and the
// JSON says so.
const defaultMaxPrompt = 4096

// engineBenchCommand is `blendrag bench engine`.
func engineBenchCommand() *cobra.Command {
	var ef engineFlags
	var promptLen, decodeLen, rounds, maxPrompt int
	var lengths, refPython, hfPython, cpuProfile string
	var asJSON, profileDevice bool
	engine := &cobra.Command{
		Use:   "engine",
		Short: "Prefill and decode tokens/s of the generator at several prompt lengths",
		Long: "engine measures prefill tokens/s on prompts of --lengths tokens (\"max\" is the model's\n" +
			"context, capped at --max-prompt) and decode tokens/s over --decode-tokens greedy tokens\n" +
			"after each prompt (end of generation ignored), best of --rounds (one round for prompts\n" +
			"over 1024 tokens). The flat JSON fields are the --prompt-tokens run. With\n" +
			"--llamacpp-python it runs llama.cpp (llama-cpp-python in that Python) on the same GGUF,\n" +
			"tokens and threads in the same run and reports the ratios. --device cuda runs blendrag's\n" +
			"CUDA backend (a -tags cuda binary); --hf-python adds HF transformers (float32 and bfloat16)\n" +
			"on the same GGUF, tokens and device as its baseline.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, be, err := ef.open(cmd)
			if err != nil {
				return err
			}
			defer m.Close()
			defer be.Close()
			if be.Device() != "cpu" && refPython != "" {
				return fmt.Errorf("--llamacpp-python measures llama.cpp on the CPU: use it with --device cpu (see --hf-python for a GPU baseline)")
			}
			res := engineResult{Model: m.Config.Name, Device: be.Device(), Threads: m.Threads(), PromptTokens: promptLen,
				DecodeTokens: decodeLen, ContextTokens: m.Config.Context}
			plan, note, err := benchLengths(lengths, promptLen, decodeLen, maxPrompt, m.Config.Context)
			if err != nil {
				return err
			}
			res.MaxPromptNote = note
			if cpuProfile != "" {
				f, err := os.Create(cpuProfile)
				if err != nil {
					return fmt.Errorf("cpu profile: %w", err)
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return fmt.Errorf("cpu profile: %w", err)
				}
				defer pprof.StopCPUProfile()
			}
			path := ef.model
			if path == "" {
				path = fetch.GeneratorPath(modelsDir(cmd))
			}
			var prompts [][]int32 // for the HF baseline, run after blendrag's
			var roundsOf []int
			for _, n := range plan {
				ids := benchPrompt(m, n)
				run := engineRun{PromptTokens: n, DecodeTokens: decodeLen}
				rr := max(rounds, 1)
				if n > 1024 {
					rr = 1
				}
				for r := 0; r < rr; r++ {
					pre, dec, err := benchOnce(be, m.Config, ids, decodeLen)
					if err != nil {
						return err
					}
					run.PrefillTokS = max(run.PrefillTokS, pre)
					run.DecodeTokS = max(run.DecodeTokS, dec)
				}
				if profileDevice {
					if run.Profile, err = profileOnce(be, m.Config, ids, decodeLen); err != nil {
						return err
					}
					printProfile(cmd.ErrOrStderr(), n, run.Profile)
				}
				if refPython != "" {
					ref, err := runLlamaCpp(refPython, path, ids, decodeLen, m.Threads(), rr)
					if err != nil {
						return err
					}
					ref.PrefillRatio = run.PrefillTokS / ref.PrefillTokS
					ref.DecodeRatio = run.DecodeTokS / ref.DecodeTokS
					run.LlamaCpp = ref
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "blendrag on %s, %d tokens: prefill %.0f tok/s, decode %.1f tok/s\n",
					be.Device(), n, run.PrefillTokS, run.DecodeTokS)
				res.Runs = append(res.Runs, run)
				prompts = append(prompts, ids)
				roundsOf = append(roundsOf, rr)
			}
			if hfPython != "" {
				dev := "cpu"
				if be.Device() != "cpu" {
					dev = "cuda"
				}
				refs, err := runHF(hfPython, path, dev, prompts, roundsOf, decodeLen, cmd.ErrOrStderr())
				if err != nil {
					return err
				}
				for k, ref := range refs {
					run := &res.Runs[k]
					for i := range ref.Runs {
						ref.Runs[i].PrefillRatio = run.PrefillTokS / ref.Runs[i].PrefillTokS
						ref.Runs[i].DecodeRatio = run.DecodeTokS / ref.Runs[i].DecodeTokS
					}
					run.HF = ref
				}
			}
			for _, run := range res.Runs {
				if run.PromptTokens == promptLen {
					res.PrefillTokS, res.DecodeTokS, res.LlamaCpp = run.PrefillTokS, run.DecodeTokS, run.LlamaCpp
				}
			}
			res.RSSMB = peakRSSMB()
			w := cmd.OutOrStdout()
			if asJSON {
				return json.NewEncoder(w).Encode(res)
			}
			for _, r := range res.Runs {
				fmt.Fprintf(w, "%s on %s, %d threads, %d-token prompt: prefill %.1f tok/s, decode %.1f tok/s (%d tokens)\n",
					res.Model, res.Device, res.Threads, r.PromptTokens, r.PrefillTokS, r.DecodeTokS, r.DecodeTokens)
				if l := r.LlamaCpp; l != nil {
					fmt.Fprintf(w, "  %s: prefill %.1f tok/s, decode %.1f tok/s; blendrag/llama.cpp = %.2f× prefill, %.2f× decode\n",
						l.Version, l.PrefillTokS, l.DecodeTokS, l.PrefillRatio, l.DecodeRatio)
				}
				if h := r.HF; h != nil {
					for _, d := range h.Runs {
						fmt.Fprintf(w, "  %s %s on %s: prefill %.1f tok/s, decode %.1f tok/s; blendrag/HF = %.2f× prefill, %.2f× decode\n",
							h.Version, d.DType, h.DeviceName, d.PrefillTokS, d.DecodeTokS, d.PrefillRatio, d.DecodeRatio)
					}
				}
			}
			if res.MaxPromptNote != "" {
				fmt.Fprintln(w, res.MaxPromptNote)
			}
			fmt.Fprintf(w, "peak RSS %.0f MB\n", res.RSSMB)
			return nil
		},
	}
	ef.register(engine)
	engine.Flags().IntVar(&promptLen, "prompt-tokens", 512, "prompt length of the flat JSON fields (always measured)")
	engine.Flags().StringVar(&lengths, "lengths", "128,512,2048,max", "comma-separated prompt lengths; max = the model's context")
	engine.Flags().IntVar(&maxPrompt, "max-prompt", defaultMaxPrompt, "cap on the \"max\" prompt length (0: no cap)")
	engine.Flags().IntVar(&decodeLen, "decode-tokens", 128, "tokens to decode after each prompt")
	engine.Flags().IntVar(&rounds, "rounds", 2, "repeat and keep the best (prompts over 1024 tokens: one round)")
	engine.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	engine.Flags().StringVar(&refPython, "llamacpp-python", "", "Python with llama-cpp-python: also measure llama.cpp in this run")
	engine.Flags().StringVar(&hfPython, "hf-python", "", "Python with torch, transformers and gguf: also measure HF transformers on the same GGUF and device in this run")
	engine.Flags().BoolVar(&profileDevice, "profile-device", false, "device backends: after each length's timed rounds, profile one more prefill and decode (device time per kernel and copy; JSON device_profile)")
	engine.Flags().StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of blendrag's runs to this file")
	return engine
}

// profileOnce runs benchOnce's prefill and decode once more on be, each
// under a device profile.
func profileOnce(be model.Backend, c model.Config, ids []int32, decodeLen int) (*engineProfile, error) {
	pr, ok := be.(model.Profiler)
	if !ok {
		return nil, fmt.Errorf("--profile-device: device %s cannot profile its work", be.Device())
	}
	var out engineProfile
	kv := model.NewKV(c)
	if err := pr.StartProfile(); err != nil {
		return nil, err
	}
	logits, err := be.Forward(kv, ids, model.Positions(0, len(ids)), false)
	if err != nil {
		return nil, fmt.Errorf("profiled prefill of %d tokens: %w", len(ids), err)
	}
	if out.Prefill, err = pr.StopProfile(); err != nil {
		return nil, err
	}
	if err := pr.StartProfile(); err != nil {
		return nil, err
	}
	for i := 0; i < decodeLen; i++ {
		if logits, err = be.Forward(kv, []int32{model.Argmax(logits)}, []int32{model.NextPos(kv)}, false); err != nil {
			return nil, fmt.Errorf("profiled decode: %w", err)
		}
	}
	if out.Decode, err = pr.StopProfile(); err != nil {
		return nil, err
	}
	return &out, nil
}

// printProfile writes the leading operations of a length's profile.
func printProfile(w io.Writer, n int, p *engineProfile) {
	for _, ph := range []struct {
		name string
		p    model.DeviceProfile
	}{{"prefill", p.Prefill}, {"decode", p.Decode}} {
		fmt.Fprintf(w, "  profile, %d tokens, %s: wall %.2f ms, device busy %.2f ms\n", n, ph.name, ph.p.WallMS, ph.p.BusyMS)
		printDeviceOps(w, ph.p.Ops)
	}
}

// printDeviceOps writes a profile's eight longest operations.
func printDeviceOps(w io.Writer, ops []model.DeviceOp) {
	for _, op := range ops[:min(len(ops), 8)] {
		fmt.Fprintf(w, "    %-22s %6d calls %9.3f ms\n", op.Name, op.Calls, op.MS)
	}
}

// benchLengths parses --lengths into sorted distinct prompt lengths that
// include promptLen, resolving "max" to the context minus the decoded tokens
// (capped at maxPrompt when maxPrompt > 0, with a note saying so).
func benchLengths(spec string, promptLen, decodeLen, maxPrompt, context int) ([]int, string, error) {
	limit := context - decodeLen
	if promptLen < 1 || decodeLen < 1 || promptLen > limit {
		return nil, "", fmt.Errorf("prompt %d + decode %d tokens must be ≥ 1 each and fit the context %d", promptLen, decodeLen, context)
	}
	out := []int{promptLen}
	var note string
	for _, f := range strings.Split(spec, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n := limit
		if f == "max" {
			if maxPrompt > 0 && maxPrompt < n {
				note = fmt.Sprintf("the max run uses %d prompt tokens, capped below the context's %d (--max-prompt) to keep the run short", maxPrompt, limit)
				n = maxPrompt
			}
		} else {
			v, err := strconv.Atoi(f)
			if err != nil || v < 1 || v > limit {
				return nil, "", fmt.Errorf("--lengths entry %q: want a token count in [1, %d] or max", f, limit)
			}
			n = v
		}
		out = append(out, n)
	}
	slices.Sort(out)
	return slices.Compact(out), note, nil
}

// benchPrompt returns n tokens of benchText.
func benchPrompt(m *model.Model, n int) []int32 {
	var ids []int32
	for len(ids) < n {
		ids = m.Tok.AppendEncode(ids, benchText, false)
	}
	return ids[:n]
}

// benchOnce prefills ids into a fresh cache on backend be and decodes
// decodeLen greedy tokens, returning both rates in tokens/s. Each step's
// logits are copied back to the host, so a device's work is finished when
// the clock is read.
func benchOnce(be model.Backend, c model.Config, ids []int32, decodeLen int) (prefill, decode float64, err error) {
	kv := model.NewKV(c)
	t0 := time.Now()
	logits, err := be.Forward(kv, ids, model.Positions(0, len(ids)), false)
	if err != nil {
		return 0, 0, fmt.Errorf("bench prefill of %d tokens: %w", len(ids), err)
	}
	prefill = float64(len(ids)) / time.Since(t0).Seconds()
	tok := model.Argmax(logits)
	t1 := time.Now()
	for i := 0; i < decodeLen; i++ {
		if logits, err = be.Forward(kv, []int32{tok}, []int32{model.NextPos(kv)}, false); err != nil {
			return 0, 0, fmt.Errorf("bench decode: %w", err)
		}
		tok = model.Argmax(logits)
	}
	return prefill, float64(decodeLen) / time.Since(t1).Seconds(), nil
}
