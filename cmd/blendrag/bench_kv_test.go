package main

import (
	"testing"

	"github.com/blendrag/blendrag/kernels"
	"github.com/blendrag/blendrag/kvstore"
	"github.com/blendrag/blendrag/model"
	"github.com/blendrag/blendrag/model/modeltest"
)

// TestKVCodecsBenchControlIsExactAndLossyCodecsOrdered runs the codec
// benchmark on a generated model: the f32 control reproduces the fp32
// distribution exactly, the stored bytes per token follow the codecs' sizes,
// and the lossy codecs' reconstruction errors are ordered fp16 < int8 < q4.
func TestKVCodecsBenchControlIsExactAndLossyCodecsOrdered(t *testing.T) {
	m := modeltest.New(t, modeltest.Spec{Layers: 2, Dim: 128, Heads: 4, KVHeads: 2, FFN: 128, Weights: kernels.F32, Seed: 5})
	items := []evalItem{{Question: "where does the river rise?"}, {Question: "what did the barges carry?"}}
	for i := range items {
		for _, txt := range []string{"the river rises in the northern hills", "barges carried coal and cloth on the canal", "the railway ended that trade"} {
			items[i].Ctxs = append(items[i].Ctxs, struct {
				Title string `json:"title"`
				Text  string `json:"text"`
			}{Text: txt})
		}
	}
	res, err := benchKVCodecs(m, items, 2, 16)
	if err != nil {
		t.Fatal(err)
	}
	by := map[kvstore.Codec]kvCodecResult{}
	for _, c := range res.Codecs {
		by[c.Codec] = c
	}
	ctl := by[kvstore.CodecF32]
	if ctl.KLMax != 0 || ctl.CBKLMax != 0 || ctl.KRelRMS != 0 || ctl.VRelRMS != 0 || ctl.Top1Agree != 1 {
		t.Errorf("f32 control: %+v, want exact", ctl)
	}
	// The rule's choice, when there is one, meets the rule with the fewest
	// bytes (this random model's peaked logits can leave CacheBlend's own
	// KL at 0, and then no codec is chosen).
	for _, c := range res.Codecs {
		if c.Codec == res.Smallest && !c.MeetsRule {
			t.Errorf("chose %s, which misses the rule: %+v", c.Codec, c)
		}
		if c.MeetsRule && res.Smallest != "" && c.BytesPerToken < by[res.Smallest].BytesPerToken {
			t.Errorf("chose %s, but %s meets the rule with fewer bytes", res.Smallest, c.Codec)
		}
	}
	// Per row: layers × (K + V) × KVDim values; f32 adds only headers and
	// metadata on top of 4 bytes each.
	values := float64(m.Config.Layers * 2 * m.Config.KVDim())
	if b := ctl.BytesPerToken; b < 4*values || b > 4*values*1.5 {
		t.Errorf("f32 stores %g bytes per token, want about %g", b, 4*values)
	}
	if r := by[kvstore.CodecFP16].BytesPerToken / ctl.BytesPerToken; r < 0.45 || r > 0.6 {
		t.Errorf("fp16/f32 bytes ratio %g", r)
	}
	if !(by[kvstore.CodecFP16].KRelRMS < by[kvstore.CodecInt8].KRelRMS && by[kvstore.CodecInt8].KRelRMS < by[kvstore.CodecQ4G32].KRelRMS) {
		t.Errorf("K errors not ordered fp16 < int8 < q4g32: %+v", res.Codecs)
	}
	if fp := by[kvstore.CodecFP16]; fp.KRelRMS > 1e-3 || fp.KLMax > 1e-3 {
		t.Errorf("fp16: %+v, want relative error ≤ 1e-3 and KL ≤ 1e-3", fp)
	}
	if !res.Codecs[0].Default || res.Codecs[0].Codec != kvstore.DefaultCodec {
		t.Errorf("first row %+v, want the default %s", res.Codecs[0], kvstore.DefaultCodec)
	}
}

// TestReuseLogitsOfOneChunkEqualsPrefill checks the fusion the benchmark
// uses: P and a single chunk prefilled after P, concatenated, give the same
// question logits as prefilling P, the chunk and the question together.
func TestReuseLogitsOfOneChunkEqualsPrefill(t *testing.T) {
	m := modeltest.New(t, modeltest.Spec{Layers: 2, Dim: 64, Heads: 4, KVHeads: 2, FFN: 64, Weights: kernels.F32, Seed: 9})
	p, c, q := m.Tok.Encode("system prompt", false), m.Tok.Encode("a chunk of text", false), m.Tok.Encode("question?", false)
	full := model.NewKV(m.Config)
	if _, err := m.Forward(full, append(append([]int32{}, p...), c...), model.Positions(0, len(p)+len(c)), false); err != nil {
		t.Fatal(err)
	}
	want, err := m.Forward(full.Clone(), q, model.Positions(len(p)+len(c), len(q)), false)
	if err != nil {
		t.Fatal(err)
	}
	got, n, err := reuseLogits(m, []*model.KV{full.Slice(0, len(p)), full.Slice(len(p), full.Len())}, q)
	if err != nil {
		t.Fatal(err)
	}
	if n != len(p)+len(c) {
		t.Errorf("context of %d rows, want %d", n, len(p)+len(c))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("logit %d: %g, want %g", i, got[i], want[i])
		}
	}
}
