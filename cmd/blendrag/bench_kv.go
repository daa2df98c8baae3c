package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/blendrag/blendrag/blend"
	"github.com/blendrag/blendrag/kvstore"
	"github.com/blendrag/blendrag/model"
	"github.com/blendrag/blendrag/model/fetch"
)

// kvCodecResult is one codec's row of `bench kvcodecs`.
type kvCodecResult struct {
	Codec   kvstore.Codec `json:"codec"`
	Default bool          `json:"default,omitempty"`
	// BytesPerToken is the stored bytes (metadata and layer values, as
	// Store.Usage counts them) per stored row, all layers.
	BytesPerToken float64 `json:"bytes_per_token"`
	// KRelRMS and VRelRMS are ‖decoded − fp32‖ / ‖fp32‖ over every chunk row
	// and layer, pooled over the questions.
	KRelRMS float64 `json:"k_rel_rms"`
	VRelRMS float64 `json:"v_rel_rms"`
	// KLMean and KLMax are KL(p_fp32 ‖ p_codec) of the first answer token's
	// distribution under reuse fusion, over the questions.
	KLMean float64 `json:"kl_mean"`
	KLMax  float64 `json:"kl_max"`
	// Top1Agree is the fraction of questions whose most likely first token
	// is the fp32 one.
	Top1Agree float64 `json:"top1_agree"`
	// CBKLMean and CBKLMax are the same KL under CacheBlend fusion (r =
	// blend.DefaultRatio): KL(p_cacheblend,fp32 ‖ p_cacheblend,codec) — the
	// KL the codec adds to CacheBlend.
	CBKLMean float64 `json:"cacheblend_kl_mean"`
	CBKLMax  float64 `json:"cacheblend_kl_max"`
	// CBAddedShare is CBKLMean over CacheBlend's own KL against full (fp32
	// KV): the default-codec rule wants it below 0.1.
	CBAddedShare float64 `json:"cacheblend_added_share"`
	// MeetsRule says CBAddedShare < 0.1.
	MeetsRule bool `json:"meets_default_rule"`
}

// kvCodecsResult is the JSON `bench kvcodecs` prints.
type kvCodecsResult struct {
	Model          string  `json:"model"`
	Dataset        string  `json:"dataset"`
	F32Weights     bool    `json:"f32_weights"`
	Questions      int     `json:"questions"`
	Passages       int     `json:"passages_per_question"`
	MaxChunkTokens int     `json:"max_chunk_tokens"`
	PrefixTokens   int     `json:"prefix_tokens"`
	MeanContext    float64 `json:"mean_context_tokens"`
	// CacheBlendKL is CacheBlend's own mean first-token KL against full
	// prefill, over fp32 KV (the yardstick of the default-codec rule).
	CacheBlendKL float64 `json:"cacheblend_kl_vs_full"`
	// Smallest is the smallest codec meeting the default-codec rule (its
	// added KL under CacheBlend below 10% of CacheBlend's own KL).
	Smallest kvstore.Codec   `json:"smallest_meeting_rule,omitempty"`
	Seconds  float64         `json:"seconds"`
	Codecs   []kvCodecResult `json:"codecs"`
}

// kvBenchPrefix is the shared prefix P of the benchmark: the ChatML system
// turn and the start of the user turn.
const kvBenchPrefix = "<|im_start|>system\nAnswer the question from the passages.<|im_end|>\n<|im_start|>user\n"

// addKVBenchCommands registers `blendrag bench kvcodecs` under bench.
func addKVBenchCommands(bench *cobra.Command) {
	var ef engineFlags
	var dataset string
	var limit, passages, maxChunk int
	var asJSON, f32 bool
	cmd := &cobra.Command{
		Use:   "kvcodecs",
		Short: "Bytes per token, reconstruction error and KL under reuse and CacheBlend fusion of each chunk KV codec",
		Long: "kvcodecs prefills, for each of the first --limit questions, its first --passages passages\n" +
			"(each \"\\n\\n\"+text, at most --max-chunk-tokens tokens) on their own after a shared system\n" +
			"prefix P, stores P's and the chunks' KV in a kvstore with each codec, loads it back,\n" +
			"concatenates it with each chunk RoPE-shifted to its place (reuse fusion), computes the\n" +
			"question rows and compares the first answer token's distribution with the one over the\n" +
			"fp32 KV: KL(p_fp32 ‖ p_codec). It does the same under CacheBlend (r = 0.15) and reports the\n" +
			"KL each codec adds as a share of CacheBlend's own KL against full prefill; the smallest codec\n" +
			"whose share is below 10% is the default-codec rule's choice. The f32 codec is a control (exact, so KL 0). With\n" +
			"--f32-weights the weights are dequantized at load, so the matmuls do not quantize\n" +
			"activations and the KL isolates the codec's error (slower).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 1 || passages < 1 || maxChunk < 1 {
				return fmt.Errorf("--limit, --passages and --max-chunk-tokens must be ≥ 1")
			}
			items, err := loadDataset(dataset)
			if err != nil {
				return err
			}
			items = items[:min(limit, len(items))]
			var m *model.Model
			if f32 {
				if ef.device != "cpu" {
					return fmt.Errorf("--device %s: %s computes on the CPU only", ef.device, cmd.CommandPath())
				}
				path := ef.model
				if path == "" {
					path = fetch.GeneratorPath(modelsDir(cmd))
				}
				m, err = model.Load(path, model.Options{Threads: ef.threads, F32Weights: true})
			} else {
				m, err = ef.load(cmd)
			}
			if err != nil {
				return err
			}
			defer m.Close()
			res, err := benchKVCodecs(m, items, passages, maxChunk)
			if err != nil {
				return err
			}
			res.Dataset, res.F32Weights = dataset, f32
			w := cmd.OutOrStdout()
			if asJSON {
				return json.NewEncoder(w).Encode(res)
			}
			fmt.Fprintf(w, "%s: %d questions × %d passages (≤ %d tokens), P %d tokens, mean context %.0f tokens, %.0f s\n",
				res.Model, res.Questions, res.Passages, res.MaxChunkTokens, res.PrefixTokens, res.MeanContext, res.Seconds)
			fmt.Fprintf(w, "CacheBlend's own KL against full (fp32 KV): %.4f\n", res.CacheBlendKL)
			fmt.Fprintf(w, "%-6s %12s %10s %10s %10s %10s %8s %10s %8s\n", "codec", "bytes/token", "K relRMS", "V relRMS", "reuse KL", "KL max", "top1", "CB +KL", "share")
			for _, c := range res.Codecs {
				fmt.Fprintf(w, "%-6s %12.0f %10.2e %10.2e %10.2e %10.2e %8.2f %10.2e %8.3f\n", c.Codec, c.BytesPerToken, c.KRelRMS, c.VRelRMS, c.KLMean, c.KLMax, c.Top1Agree, c.CBKLMean, c.CBAddedShare)
			}
			fmt.Fprintf(w, "smallest codec adding < 10%% of CacheBlend's KL: %s\n", res.Smallest)
			return nil
		},
	}
	ef.register(cmd)
	cmd.Flags().StringVar(&dataset, "dataset", "../shared/eval/musique_dev.json", "dataset JSON (CacheBlend MuSiQue format)")
	cmd.Flags().IntVar(&limit, "limit", 3, "questions")
	cmd.Flags().IntVar(&passages, "passages", 3, "passages per question (the first ones)")
	cmd.Flags().IntVar(&maxChunk, "max-chunk-tokens", 256, "truncate each passage segment to this many tokens")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().BoolVar(&f32, "f32-weights", false, "dequantize the weights at load (no activation quantization)")
	bench.AddCommand(cmd)
}

// kvCodecAcc accumulates one codec's measurements.
type kvCodecAcc struct {
	store                  *kvstore.Store
	kErr, kRef, vErr, vRef float64
	kl, cbKL               []float64
	agree                  int
}

func benchKVCodecs(m *model.Model, items []evalItem, passages, maxChunk int) (*kvCodecsResult, error) {
	t0 := time.Now()
	// f32 is the control: its round trip is exact, so its KL must be 0.
	codecs := kvstore.Codecs
	tmp, err := os.MkdirTemp("", "blendrag-kvcodecs-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	quiet := slog.New(slog.DiscardHandler)
	accs := make([]*kvCodecAcc, len(codecs))
	for i, c := range codecs {
		s, err := kvstore.Open(filepath.Join(tmp, string(c)), kvstore.Options{Codec: c, DiskBudget: 1 << 40, Logger: quiet})
		if err != nil {
			return nil, err
		}
		defer s.Close()
		accs[i] = &kvCodecAcc{store: s}
	}
	pTok := m.Tok.Encode(kvBenchPrefix, true)
	pKV := model.NewKV(m.Config)
	if _, err := m.Forward(pKV, pTok, model.Positions(0, len(pTok)), false); err != nil {
		return nil, fmt.Errorf("prefilling P: %w", err)
	}
	res := &kvCodecsResult{Model: m.Config.Name, Questions: len(items), Passages: passages, MaxChunkTokens: maxChunk, PrefixTokens: len(pTok)}
	seg := kvstore.Key{Model: m.Fingerprint(), Segment: "bench"}
	rows := len(pTok) // rows stored: P once (every question puts it again), then every chunk
	for qi, it := range items {
		// fp32 KV of P and of each chunk prefilled on its own after P.
		parts := []*model.KV{pKV}
		keys := []kvstore.Key{{Model: seg.Model, Segment: seg.Segment, Chunk: "P"}}
		for j := 0; j < min(passages, len(it.Ctxs)); j++ {
			toks := m.Tok.Encode("\n\n"+it.Ctxs[j].Text, false)
			toks = toks[:min(maxChunk, len(toks))]
			kv := pKV.Clone()
			if _, err := m.Forward(kv, toks, model.Positions(len(pTok), len(toks)), false); err != nil {
				return nil, fmt.Errorf("question %d passage %d: %w", qi, j, err)
			}
			parts = append(parts, kv.Slice(len(pTok), kv.Len()))
			rows += len(toks)
			keys = append(keys, kvstore.Key{Model: seg.Model, Segment: seg.Segment, Chunk: fmt.Sprintf("q%d/p%d", qi, j)})
		}
		qTok := m.Tok.Encode("\n\nQuestion: "+it.Question+"<|im_end|>\n<|im_start|>assistant\n", true)
		ref, ctxLen, err := reuseLogits(m, parts, qTok)
		if err != nil {
			return nil, fmt.Errorf("question %d: %w", qi, err)
		}
		res.MeanContext += float64(ctxLen) / float64(len(items))
		seg := blend.Segments{Prefix: pTok, Question: qTok}
		for _, part := range parts[1:] {
			seg.Chunks = append(seg.Chunks, part.Tokens)
		}
		full, err := blend.Prefill(context.Background(), m, seg, pKV, nil, blend.DefaultOptions(blend.ModeFull))
		if err != nil {
			return nil, fmt.Errorf("question %d: full: %w", qi, err)
		}
		cbRef, err := blend.Prefill(context.Background(), m, seg, pKV, blend.MemorySource(parts[1:]), blend.DefaultOptions(blend.ModeCacheBlend))
		if err != nil {
			return nil, fmt.Errorf("question %d: cacheblend: %w", qi, err)
		}
		res.CacheBlendKL += blend.KL(full.Logits, cbRef.Logits) / float64(len(items))
		for _, acc := range accs {
			loaded := make([]*model.KV, len(parts))
			for i, part := range parts {
				if err := acc.store.Put(keys[i], part); err != nil {
					return nil, err
				}
				if loaded[i], err = acc.store.Get(keys[i]); err != nil {
					return nil, err
				}
				if i > 0 { // reconstruction error over chunk rows (P counted once would skew it)
					for l := range part.K {
						acc.kErr, acc.kRef = acc.kErr+sqDiff(loaded[i].K[l], part.K[l]), acc.kRef+sqDiff(part.K[l], nil)
						acc.vErr, acc.vRef = acc.vErr+sqDiff(loaded[i].V[l], part.V[l]), acc.vRef+sqDiff(part.V[l], nil)
					}
				}
			}
			got, _, err := reuseLogits(m, loaded, qTok)
			if err != nil {
				return nil, fmt.Errorf("question %d: %w", qi, err)
			}
			acc.kl = append(acc.kl, blend.KL(ref, got))
			cb, err := blend.Prefill(context.Background(), m, seg, pKV, blend.MemorySource(loaded[1:]), blend.DefaultOptions(blend.ModeCacheBlend))
			if err != nil {
				return nil, fmt.Errorf("question %d: cacheblend: %w", qi, err)
			}
			acc.cbKL = append(acc.cbKL, blend.KL(cbRef.Logits, cb.Logits))
			if model.Argmax(got) == model.Argmax(ref) {
				acc.agree++
			}
		}
	}
	for i, acc := range accs {
		b, _ := acc.store.Usage()
		r := kvCodecResult{Codec: codecs[i], Default: codecs[i] == kvstore.DefaultCodec, BytesPerToken: float64(b) / float64(rows),
			KRelRMS: math.Sqrt(acc.kErr / acc.kRef), VRelRMS: math.Sqrt(acc.vErr / acc.vRef), Top1Agree: float64(acc.agree) / float64(len(items))}
		r.KLMean, r.KLMax = meanMax(acc.kl)
		r.CBKLMean, r.CBKLMax = meanMax(acc.cbKL)
		if res.CacheBlendKL > 0 {
			r.CBAddedShare = r.CBKLMean / res.CacheBlendKL
			r.MeetsRule = r.CBAddedShare < 0.1
		}
		res.Codecs = append(res.Codecs, r)
	}
	smallest := math.Inf(1)
	for _, r := range res.Codecs {
		if r.MeetsRule && r.BytesPerToken < smallest {
			smallest, res.Smallest = r.BytesPerToken, r.Codec
		}
	}
	res.Seconds = time.Since(t0).Seconds()
	return res, nil
}

// reuseLogits fuses parts by reuse — P's KV, then each chunk's KV shifted to
// follow the previous ones — and returns the logits of the last question
// row computed over it, and the context length.
func reuseLogits(m *model.Model, parts []*model.KV, q []int32) ([]float32, int, error) {
	ctx, err := model.Concat(parts...)
	if err != nil {
		return nil, 0, err
	}
	at := parts[0].Len()
	for _, p := range parts[1:] {
		// Each chunk was prefilled at positions |P|..; move it to follow
		// the rows before it.
		if err := ctx.Shift(at, at+p.Len(), at-int(p.Pos[0]), m.Config); err != nil {
			return nil, 0, err
		}
		at += p.Len()
	}
	logits, err := m.Forward(ctx, q, model.Positions(at, len(q)), false)
	return logits, at, err
}

// sqDiff returns Σ (a_i − b_i)², or Σ a_i² when b is nil.
func sqDiff(a, b []float32) float64 {
	var s float64
	for i, x := range a {
		d := float64(x)
		if b != nil {
			d -= float64(b[i])
		}
		s += d * d
	}
	return s
}

// meanMax returns the mean and the maximum of xs (0, 0 for none).
func meanMax(xs []float64) (mean, mx float64) {
	for _, x := range xs {
		mean += x / float64(len(xs))
		mx = max(mx, x)
	}
	return mean, mx
}
