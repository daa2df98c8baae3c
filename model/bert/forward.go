package bert

import (
	"encoding/binary"
	"math"

	"github.com/blendrag/blendrag/kernels"
)

// scratch holds the buffers of one forward pass, grown to the largest
// batch seen and reused.
type scratch struct {
	pieces []int32  // word pieces of the text being split into windows
	ids    []int32  // token ids of the batch, window after window
	pos    []int32  // position of each row within its window
	wins   []window // the batch's windows
	x      []float32
	qkv    []float32
	ctx    []float32
	tmp    []float32
	h      []float32
	attn   []attnScratch // per worker
	rows   rowTask
}

// attnScratch is one worker's attention buffers and its own (zero,
// single-threaded) kernels pool, so workers can multiply matrices in
// parallel without re-entering the encoder's pool.
type attnScratch struct {
	pool          kernels.Pool
	q, k, vt, out []float32
	scores        []float32
}

// grow returns s resized to n, reallocating only when it is too small.
func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

// forward runs the encoder on the batch (ids, windows) and leaves the last
// hidden states in e.s.x (rows×d).
func (e *Encoder) forward(ids []int32, wins []window) {
	c := e.cfg
	d, ff := c.HiddenSize, c.Intermediate
	n := len(ids)
	s := &e.s
	s.x = grow(s.x, n*d)
	s.qkv = grow(s.qkv, n*3*d)
	s.ctx = grow(s.ctx, n*d)
	s.tmp = grow(s.tmp, n*d)
	s.h = grow(s.h, n*ff)
	s.pos = grow(s.pos, n)
	for _, w := range wins {
		for i := range w.n {
			s.pos[w.row+i] = int32(i)
		}
	}
	if len(s.attn) < e.pool.Threads() {
		s.attn = make([]attnScratch, e.pool.Threads())
	}
	rt := &s.rows
	rt.e, rt.ids = e, ids
	rt.op = opEmbed
	e.pool.RunTask(n, rt)
	for li := range e.layers {
		l := &e.layers[li]
		rt.l = l
		e.pool.MatMul(s.qkv, l.qkv, s.x, n)
		rt.op = opQKVBias
		e.pool.RunTask(n, rt)
		e.attnTask = attnTask{e: e, wins: wins}
		e.pool.RunTask(len(wins)*c.Heads, &e.attnTask)
		e.pool.MatMul(s.tmp, l.out, s.ctx, n)
		rt.op = opAttnOut
		e.pool.RunTask(n, rt)
		e.pool.MatMul(s.h, l.up, s.x, n)
		rt.op = opGELU
		e.pool.RunTask(n, rt)
		e.pool.MatMul(s.tmp, l.down, s.h, n)
		rt.op = opMLPOut
		e.pool.RunTask(n, rt)
	}
	rt.l, rt.ids = nil, nil
	e.attnTask = attnTask{}
}

// Row-wise steps of the forward pass, run in parallel over rows.
const (
	opEmbed   = iota // x = LayerNorm(word + position + type 0)
	opQKVBias        // qkv += bias
	opAttnOut        // x = LayerNorm(x + tmp + bias)
	opGELU           // h = GELU(h + bias)
	opMLPOut         // x = LayerNorm(x + tmp + bias)
)

// rowTask applies step op to rows [lo, hi).
type rowTask struct {
	e   *Encoder
	l   *layer
	ids []int32
	op  int
}

// Do runs the step on rows [lo, hi).
func (t *rowTask) Do(_, lo, hi int) {
	e, s := t.e, &t.e.s
	d := e.cfg.HiddenSize
	for r := lo; r < hi; r++ {
		x := s.x[r*d : (r+1)*d]
		switch t.op {
		case opEmbed:
			word := e.word.Row(int(t.ids[r]))
			p := int(s.pos[r])
			pos := e.pos[p*d : (p+1)*d]
			for j := range x {
				w := math.Float32frombits(binary.LittleEndian.Uint32(word[4*j:]))
				x[j] = (w + pos[j]) + e.typ0[j]
			}
			kernels.LayerNorm(x, x, e.embW, e.embB, e.eps)
		case opQKVBias:
			kernels.Add(s.qkv[r*3*d:(r+1)*3*d], t.l.qkvB)
		case opAttnOut:
			y := s.tmp[r*d : (r+1)*d]
			kernels.Add(y, t.l.outB)
			kernels.Add(y, x)
			kernels.LayerNorm(x, y, t.l.ln1W, t.l.ln1B, e.eps)
		case opGELU:
			ff := e.cfg.Intermediate
			h := s.h[r*ff : (r+1)*ff]
			kernels.Add(h, t.l.upB)
			kernels.GELU(h)
		case opMLPOut:
			y := s.tmp[r*d : (r+1)*d]
			kernels.Add(y, t.l.downB)
			kernels.Add(y, x)
			kernels.LayerNorm(x, y, t.l.ln2W, t.l.ln2B, e.eps)
		}
	}
}

// attnTask computes self-attention for units [lo, hi), a unit being one
// head of one window: ctx rows of the window, that head's columns.
type attnTask struct {
	e    *Encoder
	wins []window
}

// Do computes units [lo, hi) with worker's scratch.
func (t *attnTask) Do(worker, lo, hi int) {
	e := t.e
	c := e.cfg
	d := c.HiddenSize
	dh := d / c.Heads
	scale := float32(1 / math.Sqrt(float64(dh)))
	a := &e.s.attn[worker]
	for u := lo; u < hi; u++ {
		w := t.wins[u/c.Heads]
		h := u % c.Heads
		n := w.n
		a.q = grow(a.q, n*dh)
		a.k = grow(a.k, n*dh)
		a.vt = grow(a.vt, n*dh)
		a.out = grow(a.out, n*dh)
		a.scores = grow(a.scores, n*n)
		for i := range n {
			row := e.s.qkv[(w.row+i)*3*d:]
			copy(a.q[i*dh:(i+1)*dh], row[h*dh:])
			copy(a.k[i*dh:(i+1)*dh], row[d+h*dh:])
			v := row[2*d+h*dh:]
			for j := range dh {
				a.vt[j*n+i] = v[j]
			}
		}
		// scores[i·n+j] = q_i·k_j, then a softmax per row.
		a.pool.MatMul(a.scores, kernels.Matrix{Type: kernels.F32, Rows: n, Cols: dh, Data: f32Bytes(a.k)}, a.q, n)
		for i := range n {
			row := a.scores[i*n : (i+1)*n]
			kernels.Scale(row, scale)
			kernels.Softmax(row)
		}
		// out[i·dh+j] = Σ_m scores[i,m]·v[m,j].
		a.pool.MatMul(a.out, kernels.Matrix{Type: kernels.F32, Rows: dh, Cols: n, Data: f32Bytes(a.vt)}, a.scores, n)
		for i := range n {
			copy(e.s.ctx[(w.row+i)*d+h*dh:(w.row+i)*d+(h+1)*dh], a.out[i*dh:(i+1)*dh])
		}
	}
}
