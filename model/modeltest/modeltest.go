// Package modeltest writes small Llama-architecture GGUF models with seeded
// random weights, so tests can check exact invariants of the engine (and of
// the fusion code above it) without the real model. The same Spec always
// produces the same file.
//
// The vocabulary is GPT-2 byte-level BPE: the 256 byte tokens, a few dozen
// merges of common English pairs, and the ChatML special tokens, so any text
// can be encoded.
package modeltest

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/blendrag/blendrag/kernels"
	"github.com/blendrag/blendrag/model"
	"github.com/blendrag/blendrag/model/gguf"
)

// Spec is the shape of a generated model.
type Spec struct {
	Name    string // for test names; not stored
	Layers  int
	Dim     int // d_model; a multiple of 32 for quantized weights
	Heads   int
	KVHeads int
	FFN     int // a multiple of 32 for quantized weights
	Context int // default 4096
	// Weights is the type of the weight matrices: F32, F16, Q4_0, Q4_1,
	// Q5_0, Q5_1 or Q8_0. The token embedding uses the same type.
	Weights kernels.DType
	Seed    uint64
	// Neox selects qwen2 (NEOX RoPE, Q/K/V biases) instead of llama.
	Neox bool
}

// merges are byte-level BPE merges (in GPT-2's byte→unicode alphabet, where
// "Ġ" is a space) added after the 256 byte tokens.
var merges = []string{"Ġ t", "h e", "i n", "Ġt he", "e r", "a n", "o n", "Ġ a", "r e", "e n", "Ġ s", "i s", "Ġ w", "o r", "Ġ o", "e s"}

// specials are the control tokens, appended after the merged tokens.
var specials = []string{"<|endoftext|>", "<|im_start|>", "<|im_end|>"}

// Write writes the model described by s to path.
func Write(path string, s Spec) error {
	if s.Context == 0 {
		s.Context = 4096
	}
	if s.Dim%s.Heads != 0 || s.Heads%s.KVHeads != 0 {
		return fmt.Errorf("modeltest: %d heads do not divide d_model %d or are not a multiple of %d KV heads", s.Heads, s.Dim, s.KVHeads)
	}
	arch := "llama"
	if s.Neox {
		arch = "qwen2"
	}
	// Vocabulary.
	var tokens []string
	var types []int32
	for b := 0; b < 256; b++ {
		tokens = append(tokens, string(byteRune(byte(b))))
		types = append(types, 1)
	}
	for _, m := range merges {
		var a, b string
		fmt.Sscanf(m, "%s %s", &a, &b)
		tokens = append(tokens, a+b)
		types = append(types, 1)
	}
	for _, sp := range specials {
		tokens = append(tokens, sp)
		types = append(types, 3)
	}
	vocab := len(tokens)
	eos := int32(vocab - len(specials)) // <|endoftext|>
	imEnd := int32(vocab - 1)

	var w gguf.Writer
	headDim := s.Dim / s.Heads
	kvs := []struct {
		k string
		v gguf.Value
	}{
		{"general.architecture", gguf.String(arch)},
		{"general.name", gguf.String("modeltest " + s.Name)},
		{arch + ".block_count", gguf.Uint32(uint32(s.Layers))},
		{arch + ".context_length", gguf.Uint32(uint32(s.Context))},
		{arch + ".embedding_length", gguf.Uint32(uint32(s.Dim))},
		{arch + ".feed_forward_length", gguf.Uint32(uint32(s.FFN))},
		{arch + ".attention.head_count", gguf.Uint32(uint32(s.Heads))},
		{arch + ".attention.head_count_kv", gguf.Uint32(uint32(s.KVHeads))},
		{arch + ".rope.freq_base", gguf.Float32(10000)},
		{arch + ".rope.dimension_count", gguf.Uint32(uint32(headDim))},
		{arch + ".attention.layer_norm_rms_epsilon", gguf.Float32(1e-5)},
		{"tokenizer.ggml.model", gguf.String("gpt2")},
		{"tokenizer.ggml.pre", gguf.String("smollm")},
		{"tokenizer.ggml.tokens", gguf.Strings(tokens)},
		{"tokenizer.ggml.token_type", gguf.Int32s(types)},
		{"tokenizer.ggml.merges", gguf.Strings(merges)},
		{"tokenizer.ggml.bos_token_id", gguf.Uint32(uint32(eos))},
		{"tokenizer.ggml.eos_token_id", gguf.Uint32(uint32(imEnd))},
		{"tokenizer.ggml.add_bos_token", gguf.Bool(false)},
		{"tokenizer.chat_template", gguf.String("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}")},
	}
	for _, kv := range kvs {
		if err := w.AddKV(kv.k, kv.v); err != nil {
			return fmt.Errorf("modeltest: %w", err)
		}
	}
	r := rand.New(rand.NewPCG(s.Seed, 0x5eed))
	add := func(name string, typ kernels.DType, rows, cols int, scale float64) error {
		dims := []uint64{uint64(cols)}
		if rows > 0 {
			dims = append(dims, uint64(rows))
		} else {
			rows = 1
		}
		data, err := randomTensor(r, typ, rows*cols, scale)
		if err != nil {
			return fmt.Errorf("modeltest: %s: %w", name, err)
		}
		return w.AddTensor(name, typ, dims, data)
	}
	norm := func(name string, n int) error {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(0.8 + 0.4*r.Float64())
		}
		return w.AddTensor(name, kernels.F32, []uint64{uint64(n)}, f32Bytes(v))
	}
	kvDim := s.KVHeads * headDim
	wscale := 1 / math.Sqrt(float64(s.Dim))
	steps := []func() error{
		func() error { return add("token_embd.weight", s.Weights, vocab, s.Dim, 1) },
		func() error { return norm("output_norm.weight", s.Dim) },
	}
	for l := 0; l < s.Layers; l++ {
		p := fmt.Sprintf("blk.%d.", l)
		steps = append(steps,
			func() error { return norm(p+"attn_norm.weight", s.Dim) },
			func() error { return add(p+"attn_q.weight", s.Weights, s.Dim, s.Dim, 2*wscale) },
			func() error { return add(p+"attn_k.weight", s.Weights, kvDim, s.Dim, 2*wscale) },
			func() error { return add(p+"attn_v.weight", s.Weights, kvDim, s.Dim, wscale) },
			func() error { return add(p+"attn_output.weight", s.Weights, s.Dim, s.Dim, wscale) },
			func() error { return norm(p+"ffn_norm.weight", s.Dim) },
			func() error { return add(p+"ffn_gate.weight", s.Weights, s.FFN, s.Dim, wscale) },
			func() error { return add(p+"ffn_up.weight", s.Weights, s.FFN, s.Dim, wscale) },
			func() error { return add(p+"ffn_down.weight", s.Weights, s.Dim, s.FFN, 1/math.Sqrt(float64(s.FFN))) },
		)
		if s.Neox {
			steps = append(steps,
				func() error { return add(p+"attn_q.bias", kernels.F32, 0, s.Dim, 0.1) },
				func() error { return add(p+"attn_k.bias", kernels.F32, 0, kvDim, 0.1) },
				func() error { return add(p+"attn_v.bias", kernels.F32, 0, kvDim, 0.1) },
			)
		}
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("modeltest: %w", err)
	}
	if _, err := w.WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("modeltest: writing %s: %w", path, err)
	}
	return f.Close()
}

// New writes the model for s into a test's temporary directory and loads it
// with two worker threads; the model is closed when the test ends.
func New(t testing.TB, s Spec) *model.Model {
	t.Helper()
	path := filepath.Join(t.TempDir(), "model.gguf")
	if err := Write(path, s); err != nil {
		t.Fatal(err)
	}
	m, err := model.Load(path, model.Options{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// randomTensor returns n elements of type typ with values of roughly the
// given scale: F32/F16 values are normal; quantized blocks have random
// quants under a scale chosen so the dequantized values have that size.
func randomTensor(r *rand.Rand, typ kernels.DType, n int, scale float64) ([]byte, error) {
	bs, bb := typ.BlockSize(), typ.BlockBytes()
	if bs == 0 || n%bs != 0 {
		return nil, fmt.Errorf("%d elements is not a whole number of %v blocks", n, typ)
	}
	out := make([]byte, n/bs*bb)
	h16 := func(b []byte, v float64) { binary.LittleEndian.PutUint16(b, kernels.F32ToF16(float32(v))) }
	for blk := 0; blk < n/bs; blk++ {
		b := out[blk*bb : (blk+1)*bb]
		switch typ {
		case kernels.F32:
			binary.LittleEndian.PutUint32(b, math.Float32bits(float32(r.NormFloat64()*scale)))
		case kernels.F16:
			h16(b, r.NormFloat64()*scale)
		case kernels.Q4_0, kernels.Q5_0: // x = d·(q − 8) or d·(q − 16)
			steps := 8.0
			if typ == kernels.Q5_0 {
				steps = 16
			}
			h16(b, scale*1.7/steps*(0.75+0.5*r.Float64()))
			fillRandom(r, b[2:])
		case kernels.Q4_1, kernels.Q5_1: // x = d·q + m
			steps := 15.0
			if typ == kernels.Q5_1 {
				steps = 31
			}
			d := scale * 3.4 / steps * (0.75 + 0.5*r.Float64())
			h16(b, d)
			h16(b[2:], -d*steps/2)
			fillRandom(r, b[4:])
		case kernels.Q8_0: // x = d·q, q ∈ [−128, 127]
			h16(b, scale*1.7/127*(0.75+0.5*r.Float64()))
			fillRandom(r, b[2:])
		default:
			return nil, fmt.Errorf("modeltest cannot generate %v weights", typ)
		}
	}
	return out, nil
}

func fillRandom(r *rand.Rand, b []byte) {
	for i := range b {
		b[i] = byte(r.Uint32())
	}
}

func f32Bytes(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

// byteRune is GPT-2's byte-level alphabet: printable Latin-1 bytes stand for
// themselves, the others are moved to U+0100 and up.
func byteRune(b byte) rune {
	switch {
	case b >= '!' && b <= '~', b >= 0xA1 && b <= 0xAC, b >= 0xAE:
		return rune(b)
	}
	n := 0
	for c := 0; c < int(b); c++ {
		cb := byte(c)
		if !(cb >= '!' && cb <= '~' || cb >= 0xA1 && cb <= 0xAC || cb >= 0xAE) {
			n++
		}
	}
	return rune(256 + n)
}
