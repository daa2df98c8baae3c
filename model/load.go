package model

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"reflect"
	"strings"

	"github.com/blendrag/blendrag/kernels"
	"github.com/blendrag/blendrag/model/gguf"
	"github.com/blendrag/blendrag/model/tokenizer"
)

// Model is a loaded decoder: configuration, tokenizer and weights. Weight
// matrices point into the memory-mapped GGUF and stay quantized. A Model is
// safe for concurrent use by several Passes as long as each has its own KV;
// the worker pool serialises the parallel parts.
type Model struct {
	Config Config
	Tok    *tokenizer.Tokenizer

	TokenEmbd kernels.Matrix `gguf:"token_embd.weight"`  // [Vocab × Dim]
	OutNorm   []float32      `gguf:"output_norm.weight"` // [Dim]
	Output    kernels.Matrix `gguf:"output.weight,optional"`
	Layers    []Layer

	file     *gguf.File
	pool     *kernels.Pool
	ownsPool bool // made by FromGGUF, so closed by Close
	rope     *kernels.RoPETable
}

// Layer is one transformer block. Fields bind to the GGUF tensors
// "blk.N.<tag>".
type Layer struct {
	AttnNorm []float32      `gguf:"attn_norm.weight"`   // [Dim]
	Q        kernels.Matrix `gguf:"attn_q.weight"`      // [QDim × Dim]
	K        kernels.Matrix `gguf:"attn_k.weight"`      // [KVDim × Dim]
	V        kernels.Matrix `gguf:"attn_v.weight"`      // [KVDim × Dim]
	O        kernels.Matrix `gguf:"attn_output.weight"` // [Dim × QDim]
	QBias    []float32      `gguf:"attn_q.bias,optional"`
	KBias    []float32      `gguf:"attn_k.bias,optional"`
	VBias    []float32      `gguf:"attn_v.bias,optional"`
	FFNNorm  []float32      `gguf:"ffn_norm.weight"` // [Dim]
	Gate     kernels.Matrix `gguf:"ffn_gate.weight"` // [FFN × Dim]
	Up       kernels.Matrix `gguf:"ffn_up.weight"`   // [FFN × Dim]
	Down     kernels.Matrix `gguf:"ffn_down.weight"` // [Dim × FFN]
}

// Options configure Load.
type Options struct {
	Threads int // worker threads for the kernels; ≤ 0 means all cores
	// F32Weights dequantizes every weight matrix to float32 at load, so
	// matmuls run in float32 without quantizing activations: the exact
	// arithmetic an fp32 reference (HF transformers over the dequantized
	// GGUF) computes. It costs 4 bytes per weight of RAM and is slower; it
	// is a reference path for tests, not for serving.
	F32Weights bool
	// Pool, when set, is the worker pool to compute on, shared with the
	// models that already use it (Threads is then ignored, and Close leaves
	// the pool open). Models that take turns — a RAPID target and its draft
	// model — should share one: two pools would keep two sets of workers,
	// each polling or parked while the other model computes.
	Pool *kernels.Pool
}

// Load opens a GGUF model file, reads its configuration and tokenizer and
// binds its weights. The file stays mapped until Close.
func Load(path string, opt Options) (*Model, error) {
	f, err := gguf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	m, err := FromGGUF(f, opt)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("model %s: %w", path, err)
	}
	return m, nil
}

// FromGGUF builds a Model over an open GGUF file. The Model takes ownership
// of f and closes it in Close.
func FromGGUF(f *gguf.File, opt Options) (*Model, error) {
	cfg, err := ConfigFromGGUF(f)
	if err != nil {
		return nil, err
	}
	tok, err := tokenizer.FromGGUF(f)
	if err != nil {
		return nil, fmt.Errorf("model: tokenizer: %w", err)
	}
	m := &Model{Config: cfg, Tok: tok, file: f, Layers: make([]Layer, cfg.Layers)}
	if err := bindWeights(f, "", reflect.ValueOf(m).Elem(), opt.F32Weights); err != nil {
		return nil, err
	}
	for i := range m.Layers {
		if err := bindWeights(f, fmt.Sprintf("blk.%d.", i), reflect.ValueOf(&m.Layers[i]).Elem(), opt.F32Weights); err != nil {
			return nil, err
		}
	}
	if m.Output.Data == nil {
		m.Output = m.TokenEmbd // tied embeddings
	}
	if m.Config.Vocab == 0 {
		m.Config.Vocab = m.TokenEmbd.Rows
	}
	if err := m.checkShapes(); err != nil {
		return nil, err
	}
	if m.rope, err = kernels.NewRoPETable(cfg.HeadDim, cfg.RopeBase, cfg.RopeNeox, nil); err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	if m.pool = opt.Pool; m.pool == nil {
		m.pool, m.ownsPool = kernels.NewPool(opt.Threads), true
	}
	return m, nil
}

// Close releases the worker pool (unless it was Options.Pool) and unmaps the
// weights. The Model must not be used afterwards.
func (m *Model) Close() error {
	if m.ownsPool {
		m.pool.Close()
	}
	return m.file.Close()
}

// Threads is the number of worker threads the model computes with.
func (m *Model) Threads() int { return m.pool.Threads() }

// Pool is the worker pool the model computes on (for Options.Pool).
func (m *Model) Pool() *kernels.Pool { return m.pool }

// Fingerprint is a hex SHA-256 over the model's tensor directory and tensor
// data: two files with the same fingerprint compute the same function.
func (m *Model) Fingerprint() string {
	h := sha256.New()
	for _, t := range m.file.Tensors() {
		fmt.Fprintf(h, "%s %v %d\n", t.Name, t.Dims, t.Type)
		h.Write(m.file.Data(t))
	}
	return hex.EncodeToString(h.Sum(nil))
}

var (
	matrixType = reflect.TypeOf(kernels.Matrix{})
	vectorType = reflect.TypeOf([]float32(nil))
)

// bindWeights fills the fields of v tagged `gguf:"name[,optional]"` with the
// tensors prefix+name: a kernels.Matrix points into the mapped data, a
// []float32 is dequantized into a new slice. With f32 matrices are
// dequantized into new float32 matrices too.
func bindWeights(f *gguf.File, prefix string, v reflect.Value, f32 bool) error {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		tag, ok := t.Field(i).Tag.Lookup("gguf")
		if !ok {
			continue
		}
		name, optional := strings.CutSuffix(tag, ",optional")
		name = prefix + name
		info, ok := f.Tensor(name)
		if !ok {
			if optional {
				continue
			}
			return fmt.Errorf("model: tensor %q missing", name)
		}
		data := f.Data(info)
		switch t.Field(i).Type {
		case matrixType:
			if len(info.Dims) != 2 {
				return fmt.Errorf("model: tensor %q has %d dims, want a matrix", name, len(info.Dims))
			}
			mat := kernels.Matrix{Type: info.Type, Cols: int(info.Dims[0]), Rows: int(info.Dims[1]), Data: data}
			if err := mat.Validate(); err != nil {
				return fmt.Errorf("model: tensor %q: %w", name, err)
			}
			if f32 && mat.Type != kernels.F32 {
				var err error
				if mat, err = dequantizeMatrix(mat); err != nil {
					return fmt.Errorf("model: tensor %q: %w", name, err)
				}
			}
			v.Field(i).Set(reflect.ValueOf(mat))
		case vectorType:
			if len(info.Dims) != 1 {
				return fmt.Errorf("model: tensor %q has %d dims, want a vector", name, len(info.Dims))
			}
			vec := make([]float32, info.Dims[0])
			if err := kernels.Dequantize(info.Type, data, vec); err != nil {
				return fmt.Errorf("model: tensor %q: %w", name, err)
			}
			v.Field(i).Set(reflect.ValueOf(vec))
		default:
			return fmt.Errorf("model: field %s has unsupported type for tensor binding", t.Field(i).Name)
		}
	}
	return nil
}

// dequantizeMatrix returns m converted to an F32 matrix in new memory.
func dequantizeMatrix(m kernels.Matrix) (kernels.Matrix, error) {
	vals := make([]float32, m.Rows*m.Cols)
	if err := kernels.Dequantize(m.Type, m.Data, vals); err != nil {
		return m, err
	}
	data := make([]byte, 4*len(vals))
	for i, v := range vals {
		binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(v))
	}
	return kernels.Matrix{Type: kernels.F32, Rows: m.Rows, Cols: m.Cols, Data: data}, nil
}

// checkShapes verifies that every bound weight has the shape Config implies.
func (m *Model) checkShapes() error {
	c := m.Config
	type want struct {
		name       string
		mat        kernels.Matrix
		rows, cols int
	}
	ws := []want{{"token_embd", m.TokenEmbd, c.Vocab, c.Dim}, {"output", m.Output, c.Vocab, c.Dim}}
	for i, l := range m.Layers {
		p := fmt.Sprintf("blk.%d.", i)
		ws = append(ws,
			want{p + "attn_q", l.Q, c.QDim(), c.Dim}, want{p + "attn_k", l.K, c.KVDim(), c.Dim},
			want{p + "attn_v", l.V, c.KVDim(), c.Dim}, want{p + "attn_output", l.O, c.Dim, c.QDim()},
			want{p + "ffn_gate", l.Gate, c.FFN, c.Dim}, want{p + "ffn_up", l.Up, c.FFN, c.Dim},
			want{p + "ffn_down", l.Down, c.Dim, c.FFN})
		for _, v := range []struct {
			name string
			x    []float32
			n    int
		}{{p + "attn_norm", l.AttnNorm, c.Dim}, {p + "ffn_norm", l.FFNNorm, c.Dim}} {
			if len(v.x) != v.n {
				return fmt.Errorf("model: %s has %d elements, want %d", v.name, len(v.x), v.n)
			}
		}
		for _, b := range []struct {
			name string
			x    []float32
			n    int
		}{{p + "attn_q.bias", l.QBias, c.QDim()}, {p + "attn_k.bias", l.KBias, c.KVDim()}, {p + "attn_v.bias", l.VBias, c.KVDim()}} {
			if b.x != nil && len(b.x) != b.n {
				return fmt.Errorf("model: %s has %d elements, want %d", b.name, len(b.x), b.n)
			}
		}
	}
	if len(m.OutNorm) != c.Dim {
		return fmt.Errorf("model: output_norm has %d elements, want %d", len(m.OutNorm), c.Dim)
	}
	for _, w := range ws {
		if w.mat.Rows != w.rows || w.mat.Cols != w.cols {
			return fmt.Errorf("model: %s is %d×%d, want %d×%d", w.name, w.mat.Rows, w.mat.Cols, w.rows, w.cols)
		}
	}
	return nil
}
