// Package bert is the sentence encoder of blendrag's dense retrieval: a BERT
// encoder (all-MiniLM-L6-v2 by default) loaded from a sentence-transformers
// model directory, with WordPiece tokenization, mean pooling over the
// tokens and L2 normalisation, as sentence-transformers computes it.
//
// The forward pass, per sequence of n word pieces (with [CLS] and [SEP]):
//
//	x = LayerNorm(word[id] + position[p] + token_type[0])          n×d
//	per layer:
//	  q, k, v = x·Wqᵀ+bq, x·Wkᵀ+bk, x·Wvᵀ+bv   (one fused matmul)    n×3d
//	  per head h: a_h = softmax(q_h·k_hᵀ/√d_head)·v_h               n×d_head
//	  x = LayerNorm(x + a·Woᵀ + bo)
//	  x = LayerNorm(x + GELU(x·W1ᵀ + b1)·W2ᵀ + b2)                   (erf GELU)
//	embedding = mean over the n rows of x
//
// Every sequence is computed on its own (no padding, no attention mask):
// the dense layers run on the rows of all sequences of a batch at once, and
// kernels.MatMul is row-independent, so a text's vector never depends on
// the other texts of the call.
//
// Long texts: a text of more than MaxTokens−2 word pieces is split into
// k = ⌈pieces/(MaxTokens−2)⌉ consecutive windows of near-equal size (sizes
// differ by at most one, the longer first), each wrapped in [CLS] … [SEP]
// and encoded on its own. The text's embedding is the token-weighted mean
// of the windows' mean-pooled vectors (weight = the window's length with
// [CLS] and [SEP]), i.e. the mean over all rows of all windows, then
// L2-normalised. A text of at most MaxTokens−2 pieces is exactly
// sentence-transformers' encode().
package bert

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"
	"unsafe"

	"github.com/blendrag/blendrag/kernels"
	"github.com/blendrag/blendrag/model/bert/safetensors"
	"github.com/blendrag/blendrag/model/bert/wordpiece"
)

// Options configures Load.
type Options struct {
	// Threads is the number of worker threads of the encoder's kernels
	// pool; 0 means runtime.GOMAXPROCS(0).
	Threads int
	// MaxTokens is the longest window, in word pieces with [CLS] and
	// [SEP]; 0 means the model directory's max_seq_length
	// (sentence_bert_config.json, 256 for all-MiniLM-L6-v2). It must lie
	// in [3, max_position_embeddings].
	MaxTokens int
}

// config is the part of config.json the encoder needs.
type config struct {
	ModelType         string  `json:"model_type"`
	HiddenSize        int     `json:"hidden_size"`
	Layers            int     `json:"num_hidden_layers"`
	Heads             int     `json:"num_attention_heads"`
	Intermediate      int     `json:"intermediate_size"`
	HiddenAct         string  `json:"hidden_act"`
	MaxPositions      int     `json:"max_position_embeddings"`
	TypeVocabSize     int     `json:"type_vocab_size"`
	VocabSize         int     `json:"vocab_size"`
	LayerNormEps      float64 `json:"layer_norm_eps"`
	PositionEmbedding string  `json:"position_embedding_type"`
}

// layer holds one transformer layer's weights. Matrices alias the
// safetensors buffer when it is F32 (qkv is a fused copy).
type layer struct {
	qkv, out, up, down kernels.Matrix
	qkvB, outB, upB    []float32
	downB              []float32
	ln1W, ln1B         []float32
	ln2W, ln2B         []float32
}

// Encoder embeds texts into unit-length vectors. It is safe for concurrent
// use: calls to Embed are serialised, and each reuses the encoder's
// scratch buffers, so steady-state calls allocate only their results and
// the tokenizer's intermediate strings.
type Encoder struct {
	mu   sync.Mutex
	pool *kernels.Pool
	tok  *wordpiece.Tokenizer
	cfg  config
	eps  float32
	max  int // MaxTokens

	word     kernels.Matrix // word embeddings as an F32 matrix (rows = vocab)
	pos      []float32      // MaxPositions×d
	typ0     []float32      // token type 0
	embW     []float32      // embedding LayerNorm
	embB     []float32
	layers   []layer
	closed   bool
	attnTask attnTask
	s        scratch
}

// Load reads a sentence-transformers BERT model directory: config.json,
// model.safetensors (F32 weights are used in place; F16, BF16 and F64 ones
// are converted to F32; other types are an error), tokenizer.json and,
// optionally, sentence_bert_config.json and
// 1_Pooling/config.json (which must ask for mean pooling). The encoder owns
// a kernels.Pool of opt.Threads workers; call Close to stop it.
func Load(dir string, opt Options) (*Encoder, error) {
	var cfg config
	if err := readJSON(filepath.Join(dir, "config.json"), &cfg); err != nil {
		return nil, fmt.Errorf("bert: %w", err)
	}
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("bert: %s: %w", filepath.Join(dir, "config.json"), err)
	}
	maxTokens := opt.MaxTokens
	var sbert struct {
		MaxSeqLength int `json:"max_seq_length"`
	}
	if err := readJSON(filepath.Join(dir, "sentence_bert_config.json"), &sbert); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("bert: %w", err)
	}
	if maxTokens == 0 {
		maxTokens = sbert.MaxSeqLength
		if maxTokens == 0 {
			maxTokens = cfg.MaxPositions
		}
	}
	if maxTokens < 3 || maxTokens > cfg.MaxPositions {
		return nil, fmt.Errorf("bert: MaxTokens %d outside [3, %d]", maxTokens, cfg.MaxPositions)
	}
	var pooling struct {
		Mean *bool `json:"pooling_mode_mean_tokens"`
		CLS  bool  `json:"pooling_mode_cls_token"`
		Max  bool  `json:"pooling_mode_max_tokens"`
		Sqrt bool  `json:"pooling_mode_mean_sqrt_len_tokens"`
	}
	if err := readJSON(filepath.Join(dir, "1_Pooling", "config.json"), &pooling); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("bert: %w", err)
	}
	if (pooling.Mean != nil && !*pooling.Mean) || pooling.CLS || pooling.Max || pooling.Sqrt {
		return nil, fmt.Errorf("bert: %s: only mean pooling is supported", filepath.Join(dir, "1_Pooling", "config.json"))
	}
	tok, err := wordpiece.Load(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		return nil, fmt.Errorf("bert: %w", err)
	}
	if tok.VocabSize() > cfg.VocabSize {
		return nil, fmt.Errorf("bert: tokenizer has %d ids, the model %d", tok.VocabSize(), cfg.VocabSize)
	}
	tensors, err := safetensors.Open(filepath.Join(dir, "model.safetensors"))
	if err != nil {
		return nil, fmt.Errorf("bert: %w", err)
	}
	e := &Encoder{tok: tok, cfg: cfg, eps: float32(cfg.LayerNormEps), max: maxTokens}
	if err := e.loadWeights(weights{tensors}); err != nil {
		return nil, fmt.Errorf("bert: %s: %w", filepath.Join(dir, "model.safetensors"), err)
	}
	e.pool = kernels.NewPool(opt.Threads)
	return e, nil
}

func (c config) validate() error {
	switch {
	case c.ModelType != "bert":
		return fmt.Errorf("model_type %q, want bert", c.ModelType)
	case c.HiddenAct != "gelu":
		return fmt.Errorf("hidden_act %q, want gelu", c.HiddenAct)
	case c.PositionEmbedding != "" && c.PositionEmbedding != "absolute":
		return fmt.Errorf("position_embedding_type %q, want absolute", c.PositionEmbedding)
	case c.HiddenSize <= 0 || c.Heads <= 0 || c.HiddenSize%c.Heads != 0:
		return fmt.Errorf("hidden_size %d is not a positive multiple of num_attention_heads %d", c.HiddenSize, c.Heads)
	case c.Layers <= 0 || c.Intermediate <= 0 || c.MaxPositions <= 0 || c.TypeVocabSize <= 0 || c.VocabSize <= 0:
		return fmt.Errorf("layers, intermediate_size, max_position_embeddings, type_vocab_size and vocab_size must be positive")
	case c.HiddenSize > 1<<14 || c.Intermediate > 1<<16 || c.Layers > 256 || c.MaxPositions > 1<<16:
		return fmt.Errorf("dimensions too large")
	case !(c.LayerNormEps > 0 && c.LayerNormEps < 1):
		return fmt.Errorf("layer_norm_eps %v outside (0, 1)", c.LayerNormEps)
	}
	return nil
}

// readJSON decodes the JSON file at path into v.
func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// weights looks tensors up by name with their expected shapes.
type weights struct{ f *safetensors.File }

// tensor returns the named tensor after checking its shape.
func (w weights) tensor(name string, shape ...int) (safetensors.Tensor, error) {
	t, ok := w.f.Tensor(name)
	if !ok {
		return t, fmt.Errorf("tensor %q missing", name)
	}
	if len(t.Shape) != len(shape) {
		return t, fmt.Errorf("tensor %q has shape %v, want %v", name, t.Shape, shape)
	}
	for i := range shape {
		if t.Shape[i] != shape[i] {
			return t, fmt.Errorf("tensor %q has shape %v, want %v", name, t.Shape, shape)
		}
	}
	return t, nil
}

// vec returns the named tensor of the given shape as float32s.
func (w weights) vec(name string, shape ...int) ([]float32, error) {
	t, err := w.tensor(name, shape...)
	if err != nil {
		return nil, err
	}
	v, err := t.Float32s()
	if err != nil {
		return nil, fmt.Errorf("tensor %q: %w", name, err)
	}
	return v, nil
}

// matrix returns the named rows×cols tensor as an F32 kernels.Matrix,
// aliasing the file when it is F32 and converting it otherwise.
func (w weights) matrix(name string, rows, cols int) (kernels.Matrix, error) {
	t, err := w.tensor(name, rows, cols)
	if err != nil {
		return kernels.Matrix{}, err
	}
	m := kernels.Matrix{Type: kernels.F32, Rows: rows, Cols: cols, Data: t.Data}
	if t.DType != safetensors.F32 {
		v, err := t.Float32s()
		if err != nil {
			return kernels.Matrix{}, fmt.Errorf("tensor %q: %w", name, err)
		}
		m.Data = f32Bytes(v)
	}
	return m, nil
}

// loadWeights fills the encoder's tensors from the file.
func (e *Encoder) loadWeights(w weights) error {
	c := e.cfg
	d := c.HiddenSize
	var err error
	if e.word, err = w.matrix("embeddings.word_embeddings.weight", c.VocabSize, d); err != nil {
		return err
	}
	if e.pos, err = w.vec("embeddings.position_embeddings.weight", c.MaxPositions, d); err != nil {
		return err
	}
	typ, err := w.vec("embeddings.token_type_embeddings.weight", c.TypeVocabSize, d)
	if err != nil {
		return err
	}
	e.typ0 = typ[:d]
	if e.embW, err = w.vec("embeddings.LayerNorm.weight", d); err != nil {
		return err
	}
	if e.embB, err = w.vec("embeddings.LayerNorm.bias", d); err != nil {
		return err
	}
	e.layers = make([]layer, c.Layers)
	for i := range e.layers {
		if err := e.layers[i].load(w, fmt.Sprintf("encoder.layer.%d.", i), c); err != nil {
			return err
		}
	}
	return nil
}

// load reads layer weights under prefix p.
func (l *layer) load(w weights, p string, c config) error {
	d, ff := c.HiddenSize, c.Intermediate
	var qkv []byte
	var qkvB []float32
	for _, n := range []string{"query", "key", "value"} {
		m, err := w.matrix(p+"attention.self."+n+".weight", d, d)
		if err != nil {
			return err
		}
		b, err := w.vec(p+"attention.self."+n+".bias", d)
		if err != nil {
			return err
		}
		qkv = append(qkv, m.Data...)
		qkvB = append(qkvB, b...)
	}
	l.qkv = kernels.Matrix{Type: kernels.F32, Rows: 3 * d, Cols: d, Data: qkv}
	l.qkvB = qkvB
	for _, m := range []struct {
		dst        *kernels.Matrix
		bias       *[]float32
		name       string
		rows, cols int
	}{
		{&l.out, &l.outB, "attention.output.dense", d, d},
		{&l.up, &l.upB, "intermediate.dense", ff, d},
		{&l.down, &l.downB, "output.dense", d, ff},
	} {
		var err error
		if *m.dst, err = w.matrix(p+m.name+".weight", m.rows, m.cols); err != nil {
			return err
		}
		if *m.bias, err = w.vec(p+m.name+".bias", m.rows); err != nil {
			return err
		}
	}
	for _, v := range []struct {
		dst  *[]float32
		name string
	}{
		{&l.ln1W, "attention.output.LayerNorm.weight"},
		{&l.ln1B, "attention.output.LayerNorm.bias"},
		{&l.ln2W, "output.LayerNorm.weight"},
		{&l.ln2B, "output.LayerNorm.bias"},
	} {
		var err error
		if *v.dst, err = w.vec(p+v.name, d); err != nil {
			return err
		}
	}
	return nil
}

// f32Bytes views a float32 slice as its little-endian bytes (the layout of
// an F32 kernels.Matrix on the little-endian machines Go supports here).
func f32Bytes(v []float32) []byte {
	if len(v) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), 4*len(v))
}

// Dim returns the embedding dimension (384 for all-MiniLM-L6-v2).
func (e *Encoder) Dim() int { return e.cfg.HiddenSize }

// MaxTokens returns the longest window in word pieces, [CLS] and [SEP]
// included.
func (e *Encoder) MaxTokens() int { return e.max }

// Tokenizer returns the encoder's WordPiece tokenizer.
func (e *Encoder) Tokenizer() *wordpiece.Tokenizer { return e.tok }

// Close stops the encoder's worker threads. Embed fails after Close.
func (e *Encoder) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.closed {
		e.closed = true
		e.pool.Close()
	}
	return nil
}

// ErrClosed is returned by Embed after Close.
var ErrClosed = errors.New("bert: encoder closed")

// batchRows bounds the rows (word pieces) encoded in one forward pass; it
// sizes the scratch buffers (about 5 MB for MiniLM at 1024 rows).
const batchRows = 1024

// window is one sequence of a batch: rows [row, row+n) of the batch,
// belonging to text.
type window struct {
	text, row, n int
}

// Embed returns one unit-length vector of Dim() float32s per text, in
// order. An empty text embeds [CLS] [SEP]. Texts longer than the window
// are embedded as the package documentation describes.
func (e *Encoder) Embed(texts []string) ([][]float32, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, ErrClosed
	}
	d := e.cfg.HiddenSize
	out := make([][]float32, len(texts))
	flat := make([]float32, len(texts)*d)
	sums := make([]float64, len(texts)*d)
	counts := make([]int, len(texts))
	s := &e.s
	s.ids = s.ids[:0]
	s.wins = s.wins[:0]
	flush := func() {
		if len(s.wins) == 0 {
			return
		}
		e.forward(s.ids, s.wins)
		x := s.x
		for _, w := range s.wins {
			acc := sums[w.text*d : (w.text+1)*d]
			for r := w.row; r < w.row+w.n; r++ {
				for j, v := range x[r*d : (r+1)*d] {
					acc[j] += float64(v)
				}
			}
			counts[w.text] += w.n
		}
		s.ids = s.ids[:0]
		s.wins = s.wins[:0]
	}
	per := e.max - 2
	limit := max(batchRows, e.max)
	for ti, text := range texts {
		s.pieces = e.tok.AppendPieces(s.pieces[:0], text)
		n := len(s.pieces)
		k := max(1, (n+per-1)/per)
		start := 0
		for wi := range k {
			size := n / k
			if wi < n%k {
				size++
			}
			if len(s.ids)+size+2 > limit {
				flush()
			}
			s.wins = append(s.wins, window{text: ti, row: len(s.ids), n: size + 2})
			s.ids = append(s.ids, e.tok.CLS())
			s.ids = append(s.ids, s.pieces[start:start+size]...)
			s.ids = append(s.ids, e.tok.SEP())
			start += size
		}
	}
	flush()
	for i := range texts {
		v := flat[i*d : (i+1)*d : (i+1)*d]
		acc := sums[i*d : (i+1)*d]
		var norm float64
		for j := range acc {
			acc[j] /= float64(counts[i])
			norm += acc[j] * acc[j]
		}
		inv := 1 / math.Max(math.Sqrt(norm), 1e-12)
		for j := range v {
			v[j] = float32(acc[j] * inv)
		}
		out[i] = v
	}
	return out, nil
}
