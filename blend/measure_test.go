package blend

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/blendrag/blendrag/model"
	"github.com/blendrag/blendrag/model/fetch"
)

// TestMeasureMuSiQue is a measurement, not a check: with BLEND_MEASURE=N it
// runs the first N MuSiQue dev questions (BLEND_DATASET, default
// /work/shared/eval/musique_dev.json) on the real generator, each with its
// first BLEND_PASSAGES (default 4) passages truncated to 200 tokens as
// chunks, and prints per mode the prefill time and the first-token KL
// against full as JSON lines.
func TestMeasureMuSiQue(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("BLEND_MEASURE"))
	if n <= 0 {
		t.Skip("set BLEND_MEASURE=N to measure N questions on the real model")
	}
	passages := 4
	if v, err := strconv.Atoi(os.Getenv("BLEND_PASSAGES")); err == nil && v > 0 {
		passages = v
	}
	path := os.Getenv("BLEND_DATASET")
	if path == "" {
		path = "/work/shared/eval/musique_dev.json"
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var qs []struct {
		Question string   `json:"question"`
		Answers  []string `json:"answers"`
		Ctxs     []struct {
			Text string `json:"text"`
		} `json:"ctxs"`
	}
	if err := json.Unmarshal(raw, &qs); err != nil {
		t.Fatal(err)
	}
	m, err := model.Load(fetch.GeneratorPath(fetch.Dir()), model.Options{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	prefixText := "<|im_start|>system\nYou are a helpful assistant. Answer the question from the passages, in a few words.<|im_end|>\n<|im_start|>user\nPassages:"
	seg := Segments{Prefix: m.Tok.Encode(prefixText, true)}
	prefix, err := EncodePrefix(m, seg.Prefix)
	if err != nil {
		t.Fatal(err)
	}
	type modeRun struct {
		name string
		opt  Options
	}
	runs := []modeRun{
		{"full", DefaultOptions(ModeFull)},
		{"prefix", DefaultOptions(ModePrefix)},
		{"reuse", DefaultOptions(ModeReuse)},
		{"cacheblend", DefaultOptions(ModeCacheBlend)},
		{"cacheblend-gradual", Options{Mode: ModeCacheBlend, Ratio: DefaultRatio, Gradual: true}},
		{"cacheblend-r1", Options{Mode: ModeCacheBlend, Ratio: 1}},
		{"ape", DefaultOptions(ModeAPE)},
		{"ape-T1S1", Options{Mode: ModeAPE, T: 1, S: 1}},
	}
	for qi := 0; qi < min(n, len(qs)); qi++ {
		q := qs[qi]
		seg.Chunks = nil
		for _, c := range q.Ctxs[:min(passages, len(q.Ctxs))] {
			toks := m.Tok.Encode("\n\n"+c.Text, false)
			seg.Chunks = append(seg.Chunks, toks[:min(200, len(toks))])
		}
		seg.Question = m.Tok.Encode("\n\nQuestion: "+q.Question+"<|im_end|>\n<|im_start|>assistant\n", true)
		t0 := time.Now()
		var chunks []*model.KV
		for _, c := range seg.Chunks {
			kv, err := EncodeChunk(m, prefix, c)
			if err != nil {
				t.Fatal(err)
			}
			chunks = append(chunks, kv)
		}
		encode := time.Since(t0)
		fmt.Printf("{\"question\":%d,\"tokens\":%d,\"chunks\":%d,\"encode_chunks_s\":%.2f}\n", qi, len(seg.Tokens()), len(chunks), encode.Seconds())
		var ref []float32
		for _, r := range runs {
			t1 := time.Now()
			res, err := Prefill(ctx, m, seg, prefix, MemorySource(chunks), r.opt)
			if err != nil {
				t.Fatal(err)
			}
			ttft := time.Since(t1)
			if ref == nil {
				ref = res.Logits
			}
			g, err := Generate(ctx, m, res, model.GenerateOptions{MaxTokens: 12, Stop: []string{"\n"}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Printf("{\"question\":%d,\"mode\":%q,\"prefill_s\":%.3f,\"kl\":%.5f,\"top1_same\":%v,\"computed_layer_last\":%d,\"answer\":%q,\"gold\":%q}\n",
				qi, r.name, ttft.Seconds(), KL(ref, res.Logits), model.Argmax(ref) == model.Argmax(res.Logits),
				res.Stats.Computed[len(res.Stats.Computed)-1], g.Text, q.Answers)
		}
	}
}
