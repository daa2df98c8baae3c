package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blendrag/blendrag/blend"
	"github.com/blendrag/blendrag/kernels"
	"github.com/blendrag/blendrag/kvstore"
	"github.com/blendrag/blendrag/model"
	"github.com/blendrag/blendrag/model/fetch"
	"github.com/blendrag/blendrag/model/modeltest"
	"github.com/blendrag/blendrag/server"
)

// TestKVDataBenchOnIngestedStoreIsConsistent ingests two documents into a
// store on a small generated generator, runs `bench kv` on it and checks
// its figures against the store's shapes: every codec is measured once, the
// default first and the store's own marked; bytes per token follow the
// codecs' sizes (f32 about 4 B per value, then fp16 > int8 > q4g32 > q4g64);
// the sample's tokens are its chunks' segment lengths; every rate is
// positive and GB/s is bytes/token × tokens/s.
func TestKVDataBenchOnIngestedStoreIsConsistent(t *testing.T) {
	if _, err := os.Stat(fetch.EmbedderDir(fetch.Dir())); err != nil {
		t.Skip("default embedder not present: run `make models`")
	}
	spec := modeltest.Spec{Layers: 2, Dim: 128, Heads: 4, KVHeads: 2, FFN: 128, Weights: kernels.F32, Seed: 3}
	gen := filepath.Join(t.TempDir(), "gen.gguf")
	if err := modeltest.Write(gen, spec); err != nil {
		t.Fatal(err)
	}
	cfg := server.Config{DataDir: t.TempDir(), GeneratorPath: gen, Threads: 2, NoCURColumns: true}
	svc, err := server.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i, topic := range []string{"river", "canal"} {
		var b strings.Builder
		for p := range 40 {
			fmt.Fprintf(&b, "The %s of year %d carried wool, grain and timber past %d stone bridges to the sea.\n\n", topic, 1900+p, 3+i+p)
		}
		if _, err := svc.IngestText(context.Background(), topic, b.String(), nil); err != nil {
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(time.Minute); svc.KVPending() != 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("chunk KV still pending: %+v", svc.KVProgress())
		}
	}
	var texts []string // distinct chunks in document order
	seen := map[string]bool{}
	docs, _, err := svc.Documents(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range docs {
		_, cs, err := svc.Document(d.ID)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			if !seen[c.ID] {
				seen[c.ID] = true
				texts = append(texts, c.Text)
			}
		}
	}
	if err := svc.Close(); err != nil {
		t.Fatal(err)
	}
	if len(texts) < 4 {
		t.Fatalf("only %d chunks ingested; the test needs more than the sample", len(texts))
	}

	const sample = 3
	res, err := benchKVData(context.Background(), cfg, kvDataOptions{Sample: sample, CEChunks: 2, Rounds: 2, Question: "what did the river carry?", NoDrop: true}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if res.Chunks != len(texts) || res.SampleChunks != sample || res.CEChunks != 2 {
		t.Errorf("chunks %d, sample %d, ce chunks %d; want %d, %d, 2", res.Chunks, res.SampleChunks, res.CEChunks, len(texts), sample)
	}
	m, err := model.Load(gen, model.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	f, err := blend.NewFormat(m.Tok, "", "")
	if err != nil {
		t.Fatal(err)
	}
	wantTok := 0
	for _, s := range texts[:sample] {
		wantTok += len(f.Chunk(s))
	}
	if res.SampleTokens != wantTok {
		t.Errorf("sample of %d tokens, want %d", res.SampleTokens, wantTok)
	}
	if res.Layers != spec.Layers || res.KVDim != m.Config.KVDim() || res.StoreCodec != kvstore.DefaultCodec {
		t.Errorf("layers %d × %d, codec %s; want %d × %d, %s", res.Layers, res.KVDim, res.StoreCodec, spec.Layers, m.Config.KVDim(), kvstore.DefaultCodec)
	}
	if res.StoreBytes <= 0 || !(res.PrecomputeTokS > 0) || !(res.CECallsS > 0) {
		t.Errorf("store bytes %d, precompute %g tok/s, CE %g calls/s: want all > 0", res.StoreBytes, res.PrecomputeTokS, res.CECallsS)
	}
	if len(res.Codecs) != len(kvstore.Codecs) || !res.Codecs[0].Default || res.Codecs[0].Codec != kvstore.DefaultCodec {
		t.Fatalf("codec rows %+v: want one per codec, the default %s first and marked", res.Codecs, kvstore.DefaultCodec)
	}
	by := map[kvstore.Codec]kvDataCodec{}
	for _, c := range res.Codecs {
		by[c.Codec] = c
		if c.Store != (c.Codec == res.StoreCodec) || c.Default != (c.Codec == kvstore.DefaultCodec) {
			t.Errorf("%s: store %v, default %v", c.Codec, c.Store, c.Default)
		}
		for name, r := range map[string]kvLoadRate{"cold": c.Cold, "warm": c.Warm} {
			if !(r.TokS > 0) || !(r.GBs > 0) || math.IsInf(r.TokS, 0) {
				t.Errorf("%s %s: %+v, want positive finite rates", c.Codec, name, r)
			}
			if want := c.BytesPerToken * r.TokS / 1e9; math.Abs(r.GBs-want) > 1e-9*want {
				t.Errorf("%s %s: %g GB/s, want bytes/token × tok/s = %g", c.Codec, name, r.GBs, want)
			}
			if toks := r.TokS * r.Seconds; math.Abs(toks-float64(wantTok)) > 1e-6*float64(wantTok) {
				t.Errorf("%s %s: streamed %g tokens, want %d", c.Codec, name, toks, wantTok)
			}
		}
	}
	values := float64(spec.Layers * 2 * m.Config.KVDim())
	if b := by[kvstore.CodecF32].BytesPerToken; b < 4*values || b > 4*values*1.5 {
		t.Errorf("f32 stores %g bytes per token, want about %g", b, 4*values)
	}
	order := []kvstore.Codec{kvstore.CodecF32, kvstore.CodecFP16, kvstore.CodecInt8, kvstore.CodecQ4G32, kvstore.CodecQ4G64}
	for i := 1; i < len(order); i++ {
		if !(by[order[i]].BytesPerToken < by[order[i-1]].BytesPerToken) {
			t.Errorf("%s stores %g bytes/token, not fewer than %s's %g", order[i], by[order[i]].BytesPerToken, order[i-1], by[order[i-1]].BytesPerToken)
		}
	}
}

// TestKVDataBenchRejectsBadOptions checks the option errors come before
// any store is opened.
func TestKVDataBenchRejectsBadOptions(t *testing.T) {
	for _, opt := range []kvDataOptions{{Sample: 0, CEChunks: 1, Rounds: 1}, {Sample: 1, CEChunks: 0, Rounds: 1}, {Sample: 1, CEChunks: 1, Rounds: 0}} {
		if _, err := benchKVData(context.Background(), server.Config{DataDir: filepath.Join(t.TempDir(), "absent")}, opt, io.Discard); err == nil || !strings.Contains(err.Error(), "≥ 1") {
			t.Errorf("%+v: err %v, want the option error", opt, err)
		}
	}
}
