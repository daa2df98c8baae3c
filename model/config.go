package model

import (
	"fmt"

	"github.com/blendrag/blendrag/model/gguf"
)

// Config is the shape of a decoder model, read from GGUF metadata.
type Config struct {
	Arch     string  // general.architecture: "llama" or "qwen2"
	Name     string  // general.name, for display
	Layers   int     // transformer blocks
	Dim      int     // d_model, the width of the residual stream
	Heads    int     // query heads
	KVHeads  int     // key/value heads (grouped-query attention)
	HeadDim  int     // per-head width
	FFN      int     // SwiGLU hidden width
	Vocab    int     // token embeddings
	Context  int     // trained context length; longer inputs are refused
	RopeBase float64 // θ base
	RopeNeox bool    // rotate halves (i, i+d/2) instead of adjacent pairs (2i, 2i+1)
	NormEps  float32 // RMSNorm epsilon
}

// KVDim is the width of one key or value row: KVHeads·HeadDim.
func (c Config) KVDim() int { return c.KVHeads * c.HeadDim }

// QDim is the width of one query row: Heads·HeadDim.
func (c Config) QDim() int { return c.Heads * c.HeadDim }

// ConfigFromGGUF reads the model shape from f's metadata and checks it is
// consistent. Only the architectures this engine implements are accepted.
func ConfigFromGGUF(f *gguf.File) (Config, error) {
	var c Config
	arch, ok := f.String("general.architecture")
	if !ok {
		return c, fmt.Errorf("model: general.architecture missing")
	}
	switch arch {
	case "llama":
	case "qwen2":
		c.RopeNeox = true
	default:
		return c, fmt.Errorf("model: architecture %q is not supported (want llama or qwen2)", arch)
	}
	c.Arch = arch
	c.Name, _ = f.String("general.name")
	var err error
	geti := func(key string, dst *int, required bool) {
		if err != nil {
			return
		}
		v, ok := f.Uint(arch + "." + key)
		if !ok {
			if required {
				err = fmt.Errorf("model: %s.%s missing", arch, key)
			}
			return
		}
		if v == 0 || v > 1<<24 {
			err = fmt.Errorf("model: %s.%s = %d out of range", arch, key, v)
			return
		}
		*dst = int(v)
	}
	geti("block_count", &c.Layers, true)
	geti("embedding_length", &c.Dim, true)
	geti("attention.head_count", &c.Heads, true)
	c.KVHeads = c.Heads
	geti("attention.head_count_kv", &c.KVHeads, false)
	geti("feed_forward_length", &c.FFN, true)
	geti("context_length", &c.Context, true)
	if err != nil {
		return c, err
	}
	c.HeadDim = c.Dim / c.Heads
	geti("rope.dimension_count", &c.HeadDim, false)
	geti("vocab_size", &c.Vocab, false)
	if err != nil {
		return c, err
	}
	c.RopeBase = 10000
	if v, ok := f.Float(arch + ".rope.freq_base"); ok {
		c.RopeBase = v
	}
	c.NormEps = 1e-5
	if v, ok := f.Float(arch + ".attention.layer_norm_rms_epsilon"); ok {
		c.NormEps = float32(v)
	}
	if c.Heads%c.KVHeads != 0 {
		return c, fmt.Errorf("model: %d query heads not a multiple of %d KV heads", c.Heads, c.KVHeads)
	}
	if c.HeadDim*c.Heads != c.Dim || c.HeadDim%2 != 0 {
		return c, fmt.Errorf("model: head dim %d × %d heads does not match d_model %d", c.HeadDim, c.Heads, c.Dim)
	}
	return c, nil
}
