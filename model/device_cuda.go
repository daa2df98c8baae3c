//go:build (cuda || cudaemu) && cgo

package model

import (
	"errors"
	"fmt"

	"github.com/blendrag/blendrag/kernels"
	"github.com/blendrag/blendrag/kernels/cuda"
)

// cudaBuilt reports whether this build includes the CUDA backend.
const cudaBuilt = true

// cudaLayer is one layer's weights on the GPU.
type cudaLayer struct {
	attnNorm, ffnNorm          *cuda.Buffer
	q, k, v, o, gate, up, down *cuda.Matrix
}

// cudaBackend runs the forward pass of a Model on a GPU with the kernels of
// package kernels/cuda. The weights are uploaded once (OpenBackend); the KV
// cache stays on the host: each layer's keys and values are copied to the
// device, the fresh rows are scattered into that copy and written back to
// the host cache. Matrix products and RMSNorm are bitwise the CPU's;
// attention and SwiGLU round differently, so logits agree with the CPU
// within a tolerance, not bit for bit.
type cudaBackend struct {
	m       *Model
	d       *cuda.Device
	name    string
	rope    *cuda.RoPE
	layers  []cudaLayer
	outNorm *cuda.Buffer
	output  *cuda.Matrix

	// Work buffers, grown on demand: rowCap computed rows, keyCap cache
	// rows, logitCap logit rows.
	rowCap, keyCap, logitCap         int
	h, x, q, k, v, att, gate, up     *cuda.Buffer
	rowPos, kc, vc, keyPos, logitBuf *cuda.Buffer

	// Host scratch.
	hostH, hostK, hostV []float32
	hostPos, hostRows   []int32
}

// openCUDA opens GPU ordinal and uploads m's weights.
func openCUDA(m *Model, ordinal int) (Backend, error) {
	c := m.Config
	for i, ly := range m.Layers {
		if ly.QBias != nil || ly.KBias != nil || ly.VBias != nil {
			return nil, fmt.Errorf("layer %d has Q/K/V biases, which the CUDA backend does not implement: %w", i, kernels.ErrUnsupported)
		}
	}
	d, err := cuda.Open(ordinal)
	if err != nil {
		return nil, err
	}
	b := &cudaBackend{m: m, d: d, name: fmt.Sprintf("cuda:%d (%s)", ordinal, d.Name())}
	up := uploader{d: d}
	b.layers = make([]cudaLayer, len(m.Layers))
	for i := range m.Layers {
		ly, g := &m.Layers[i], &b.layers[i]
		g.attnNorm, g.ffnNorm = up.vec(ly.AttnNorm), up.vec(ly.FFNNorm)
		g.q, g.k, g.v, g.o = up.mat(ly.Q), up.mat(ly.K), up.mat(ly.V), up.mat(ly.O)
		g.gate, g.up, g.down = up.mat(ly.Gate), up.mat(ly.Up), up.mat(ly.Down)
	}
	b.outNorm, b.output = up.vec(m.OutNorm), up.mat(m.Output)
	if up.err == nil {
		b.rope, up.err = d.NewRoPE(m.rope)
	}
	if up.err != nil {
		return nil, errors.Join(fmt.Errorf("uploading the %s weights: %w", c.Name, up.err), b.Close())
	}
	return b, nil
}

// uploader copies weights to the device, keeping the first error.
type uploader struct {
	d   *cuda.Device
	err error
}

func (u *uploader) mat(m kernels.Matrix) *cuda.Matrix {
	if u.err != nil {
		return nil
	}
	var dm *cuda.Matrix
	dm, u.err = u.d.UploadMatrix(m)
	return dm
}

func (u *uploader) vec(v []float32) *cuda.Buffer {
	if u.err != nil {
		return nil
	}
	var b *cuda.Buffer
	b, u.err = u.d.NewF32(v)
	return b
}

// Device names the GPU.
func (b *cudaBackend) Device() string { return b.name }

// Close frees the device's weights and buffers and closes the device.
func (b *cudaBackend) Close() error {
	if b.d == nil {
		return nil
	}
	var errs []error
	for _, g := range b.layers {
		for _, m := range []*cuda.Matrix{g.q, g.k, g.v, g.o, g.gate, g.up, g.down} {
			errs = append(errs, b.d.FreeMatrix(m))
		}
		errs = append(errs, b.d.Free(g.attnNorm), b.d.Free(g.ffnNorm))
	}
	errs = append(errs, b.d.FreeMatrix(b.output), b.d.Free(b.outNorm), b.d.FreeRoPE(b.rope))
	errs = append(errs, b.freeWork(&b.h, &b.x, &b.q, &b.k, &b.v, &b.att, &b.gate, &b.up, &b.rowPos, &b.kc, &b.vc, &b.keyPos, &b.logitBuf))
	errs = append(errs, b.d.Close())
	b.d = nil
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("model: closing %s: %w", b.name, err)
	}
	return nil
}

func (b *cudaBackend) freeWork(bufs ...**cuda.Buffer) error {
	var errs []error
	for _, p := range bufs {
		errs = append(errs, b.d.Free(*p))
		*p = nil
	}
	return errors.Join(errs...)
}

// alloc replaces the buffers with new ones of floats float32 values each.
func (b *cudaBackend) alloc(floats []int, bufs ...**cuda.Buffer) error {
	if err := b.freeWork(bufs...); err != nil {
		return err
	}
	for i, p := range bufs {
		var err error
		if *p, err = b.d.Alloc(int64(floats[i]) * 4); err != nil {
			return err
		}
	}
	return nil
}

// reserve makes the work buffers hold n computed rows, keys cache rows and
// nLogits rows of logits.
func (b *cudaBackend) reserve(n, keys, nLogits int) error {
	c := b.m.Config
	if n > b.rowCap {
		b.rowCap = 0
		err := b.alloc([]int{n * c.Dim, n * c.Dim, n * c.QDim(), n * c.KVDim(), n * c.KVDim(), n * c.QDim(), n * c.FFN, n * c.FFN, n},
			&b.h, &b.x, &b.q, &b.k, &b.v, &b.att, &b.gate, &b.up, &b.rowPos)
		if err != nil {
			return err
		}
		b.rowCap = n
	}
	if keys > b.keyCap {
		b.keyCap = 0
		if err := b.alloc([]int{keys * c.KVDim(), keys * c.KVDim(), keys}, &b.kc, &b.vc, &b.keyPos); err != nil {
			return err
		}
		b.keyCap = keys
	}
	if nLogits > b.logitCap {
		b.logitCap = 0
		if err := b.alloc([]int{nLogits * c.Vocab}, &b.logitBuf); err != nil {
			return err
		}
		b.logitCap = nLogits
	}
	return nil
}

// Forward is Model.Forward on the GPU: tokens at positions pos are appended
// to kv and computed; on error kv is left as it was.
func (b *cudaBackend) Forward(kv *KV, tokens, pos []int32, all bool) ([]float32, error) {
	return b.m.appendRows(kv, tokens, pos, all, b.Recompute)
}

// Recompute is Model.Recompute on the GPU: cache rows rows (ascending) are
// recomputed through every layer, their keys and values overwritten in kv,
// and the logits of the last row (or of every row when all) returned.
func (b *cudaBackend) Recompute(kv *KV, rows []int, all bool) ([]float32, error) {
	c := b.m.Config
	if b.d == nil {
		return nil, fmt.Errorf("model: %s: %w", b.name, cuda.ErrClosed)
	}
	if kv.KVDim != c.KVDim() || kv.Layers() != c.Layers {
		return nil, fmt.Errorf("model: KV of %d layers × %d does not fit model (%d × %d)", kv.Layers(), kv.KVDim, c.Layers, c.KVDim())
	}
	n, keys := len(rows), kv.Len()
	if n == 0 {
		return nil, fmt.Errorf("model: Recompute of no rows")
	}
	nLogits := 1
	if all {
		nLogits = n
	}
	if err := b.reserve(n, keys, nLogits); err != nil {
		return nil, fmt.Errorf("model: %s: work buffers for %d rows over %d keys: %w", b.name, n, keys, err)
	}
	if err := b.embed(kv, rows); err != nil {
		return nil, err
	}
	for l := range b.layers {
		if err := b.layer(kv, l, n, keys); err != nil {
			return nil, fmt.Errorf("model: %s: layer %d: %w", b.name, l, err)
		}
	}
	logits := make([]float32, nLogits*c.Vocab)
	if err := b.logits(logits, n, all); err != nil {
		return nil, fmt.Errorf("model: %s: logits: %w", b.name, err)
	}
	return logits, nil
}

// embed checks rows, uploads their embeddings, positions and indices and
// the cache's positions.
func (b *cudaBackend) embed(kv *KV, rows []int) error {
	c := b.m.Config
	n := len(rows)
	b.hostH = grow(b.hostH, n*c.Dim)
	b.hostPos = grow(b.hostPos, n)
	b.hostRows = grow(b.hostRows, n)
	rowBytes, _ := b.m.TokenEmbd.Type.RowBytes(c.Dim)
	for i, r := range rows {
		if r < 0 || r >= kv.Len() || (i > 0 && r <= rows[i-1]) {
			return fmt.Errorf("model: recomputed rows must be ascending cache rows < %d (row %d is %d)", kv.Len(), i, r)
		}
		t, p := kv.Tokens[r], kv.Pos[r]
		if t < 0 || int(t) >= c.Vocab {
			return fmt.Errorf("model: token %d out of vocabulary (%d)", t, c.Vocab)
		}
		if p < 0 || int(p) >= c.Context {
			return fmt.Errorf("model: position %d outside the model's context length %d", p, c.Context)
		}
		if err := kernels.Dequantize(b.m.TokenEmbd.Type, b.m.TokenEmbd.Data[int(t)*rowBytes:(int(t)+1)*rowBytes], b.hostH[i*c.Dim:(i+1)*c.Dim]); err != nil {
			return fmt.Errorf("model: embedding token %d: %w", t, err)
		}
		b.hostPos[i], b.hostRows[i] = p, int32(r)
	}
	err := errors.Join(b.d.UploadF32(b.h, b.hostH[:n*c.Dim]), b.d.UploadI32(b.rowPos, b.hostPos[:n]), b.d.UploadI32(b.keyPos, kv.Pos))
	if err != nil {
		return fmt.Errorf("model: %s: uploading rows: %w", b.name, err)
	}
	return nil
}

// layer runs layer l for the n rows uploaded by embed, over the cache's
// keys rows.
func (b *cudaBackend) layer(kv *KV, l, n, keys int) error {
	c, d, g := b.m.Config, b.d, &b.layers[l]
	kd := c.KVDim()
	s := steps{}
	s.run("upload cache", func() error {
		return errors.Join(d.UploadF32(b.kc, kv.K[l][:keys*kd]), d.UploadF32(b.vc, kv.V[l][:keys*kd]))
	})
	s.run("attention norm", func() error { return d.RMSNorm(b.x, b.h, g.attnNorm, n, c.Dim, c.NormEps) })
	s.run("q", func() error { return d.MatMul(b.q, g.q, b.x, n) })
	s.run("k", func() error { return d.MatMul(b.k, g.k, b.x, n) })
	s.run("v", func() error { return d.MatMul(b.v, g.v, b.x, n) })
	s.run("rope q", func() error { return d.RoPE(b.q, b.rope, b.rowPos, n, c.Heads) })
	s.run("rope k", func() error { return d.RoPE(b.k, b.rope, b.rowPos, n, c.KVHeads) })
	rows := b.hostRows[:n]
	s.run("scatter k", func() error { return d.ScatterRows(b.kc, keys, b.k, rows, kd) })
	s.run("scatter v", func() error { return d.ScatterRows(b.vc, keys, b.v, rows, kd) })
	s.run("download k, v", func() error {
		b.hostK, b.hostV = grow(b.hostK, n*kd), grow(b.hostV, n*kd)
		if err := errors.Join(d.DownloadF32(b.hostK[:n*kd], b.k), d.DownloadF32(b.hostV[:n*kd], b.v)); err != nil {
			return err
		}
		for i, r := range rows {
			copy(kv.K[l][int(r)*kd:(int(r)+1)*kd], b.hostK[i*kd:(i+1)*kd])
			copy(kv.V[l][int(r)*kd:(int(r)+1)*kd], b.hostV[i*kd:(i+1)*kd])
		}
		return nil
	})
	sh := kernels.AttnShape{Heads: c.Heads, KVHeads: c.KVHeads, HeadDim: c.HeadDim}
	s.run("attention", func() error { return d.Attend(b.att, b.q, b.kc, b.vc, b.keyPos, b.rowPos, n, keys, sh, nil) })
	s.run("output projection", func() error { return d.MatMul(b.x, g.o, b.att, n) })
	s.run("residual", func() error { return d.Add(b.h, b.x, n*c.Dim) })
	s.run("ffn norm", func() error { return d.RMSNorm(b.x, b.h, g.ffnNorm, n, c.Dim, c.NormEps) })
	s.run("gate", func() error { return d.MatMul(b.gate, g.gate, b.x, n) })
	s.run("up", func() error { return d.MatMul(b.up, g.up, b.x, n) })
	s.run("swiglu", func() error { return d.SwiGLU(b.gate, b.gate, b.up, n*c.FFN) })
	s.run("down", func() error { return d.MatMul(b.x, g.down, b.gate, n) })
	s.run("residual", func() error { return d.Add(b.h, b.x, n*c.Dim) })
	return s.err
}

// logits writes the logits of the last row, or of every row when all, into
// dst after the final norm.
func (b *cudaBackend) logits(dst []float32, n int, all bool) error {
	c, d := b.m.Config, b.d
	h, x, rows := b.h, b.x, n
	if !all {
		var err error
		if h, err = b.h.View(int64((n-1)*c.Dim)*4, int64(c.Dim)*4); err != nil {
			return err
		}
		rows = 1
	}
	s := steps{}
	s.run("output norm", func() error { return d.RMSNorm(x, h, b.outNorm, rows, c.Dim, c.NormEps) })
	s.run("output", func() error { return d.MatMul(b.logitBuf, b.output, x, rows) })
	s.run("download", func() error { return d.DownloadF32(dst, b.logitBuf) })
	return s.err
}

// steps runs a sequence of device calls, stopping at the first error.
type steps struct{ err error }

func (s *steps) run(what string, f func() error) {
	if s.err != nil {
		return
	}
	if err := f(); err != nil {
		s.err = fmt.Errorf("%s: %w", what, err)
	}
}

// grow returns s with length at least n, reallocating when its capacity is
// smaller.
func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}
