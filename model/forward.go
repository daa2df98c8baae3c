package model

import (
	"fmt"

	"github.com/blendrag/blendrag/kernels"
)

// The decoder forward pass, top to bottom. For n rows, d = Dim, q = QDim,
// k = KVDim, f = FFN, V = Vocab:
//
//	H = embed(tokens)                                  [n × d]
//	for each layer:
//	    X = RMSNorm(H) ⊙ attn_norm                     [n × d]
//	    Q = X·Wqᵀ, K = X·Wkᵀ, V = X·Wvᵀ                [n × q], [n × k], [n × k]
//	    Q, K = RoPE(Q, pos), RoPE(K, pos)
//	    write K, V into the cache at the rows' slots    (WriteKV)
//	    A = softmax(Q·Kcacheᵀ/√d_head, causal by position)·Vcache   [n × q]
//	    H = H + A·Woᵀ                                  [n × d]
//	    X = RMSNorm(H) ⊙ ffn_norm
//	    H = H + (silu(X·Wgateᵀ) ⊙ X·Wupᵀ)·Wdownᵀ       [n × f] → [n × d]
//	logits = (RMSNorm(H) ⊙ output_norm)·Woutᵀ           [n × V]
//
// A Pass runs these steps for a chosen set of cache rows, so callers can
// recompute any subset of a cache and decide, layer by layer, which fresh
// keys and values to keep (CacheBlend) and how keys are grouped (APE).

// Pass is one forward computation over a set of rows of a KV cache. The rows
// already exist in the cache (their tokens and positions are read from it);
// their hidden states live in the Pass. A Pass is not safe for concurrent
// use.
type Pass struct {
	m  *Model
	kv *KV

	// Rows holds the cache row index of each row under computation, ascending.
	Rows []int
	// H is the hidden state of each row: [len(Rows) × Dim].
	H []float32
	// Q, K and V are the fresh query, key and value of each row after QKV:
	// [len(Rows) × QDim] and [len(Rows) × KVDim], post-RoPE.
	Q, K, V []float32
	// Groups, when set, partitions the cache's keys for attention (APE). It
	// must cover every cache row.
	Groups *kernels.KeyGroups

	x, att, gate, up []float32             // scratch: [n × d], [n × q], [n × f], [n × f]
	attn             []kernels.AttnScratch // one per pool worker
	attnBlocks       []kernels.AttnState   // per (row, KV head, key block) in block mode
	attnTask         attnTask
	cos, sin         []float32
	mats             [3]kernels.Matrix // MatMulMulti's arguments, kept here so
	dsts             [3][]float32      // building them allocates nothing
}

// NewPass starts a forward pass over cache rows rows (ascending, each < kv.Len()),
// embedding their tokens.
func (m *Model) NewPass(kv *KV, rows []int) (*Pass, error) {
	c := m.Config
	if kv.KVDim != c.KVDim() || kv.Layers() != c.Layers {
		return nil, fmt.Errorf("model: KV of %d layers × %d does not fit model (%d × %d)", kv.Layers(), kv.KVDim, c.Layers, c.KVDim())
	}
	for i, r := range rows {
		if r < 0 || r >= kv.Len() || (i > 0 && r <= rows[i-1]) {
			return nil, fmt.Errorf("model: pass rows must be ascending cache rows < %d (row %d is %d)", kv.Len(), i, r)
		}
		if t := kv.Tokens[r]; t < 0 || int(t) >= c.Vocab {
			return nil, fmt.Errorf("model: token %d out of vocabulary (%d)", t, c.Vocab)
		}
		if p := kv.Pos[r]; p < 0 || int(p) >= c.Context {
			return nil, fmt.Errorf("model: position %d outside the model's context length %d", p, c.Context)
		}
	}
	n := len(rows)
	p := &Pass{
		m: m, kv: kv,
		Rows: append([]int(nil), rows...),
		H:    make([]float32, n*c.Dim),
		Q:    make([]float32, n*c.QDim()),
		K:    make([]float32, n*c.KVDim()),
		V:    make([]float32, n*c.KVDim()),
		x:    make([]float32, n*c.Dim),
		att:  make([]float32, n*c.QDim()),
		gate: make([]float32, n*c.FFN),
		up:   make([]float32, n*c.FFN),
		attn: make([]kernels.AttnScratch, m.pool.Threads()),
		cos:  make([]float32, c.HeadDim/2),
		sin:  make([]float32, c.HeadDim/2),
	}
	rowBytes, _ := m.TokenEmbd.Type.RowBytes(c.Dim)
	for i, r := range rows {
		t := int(kv.Tokens[r])
		if err := kernels.Dequantize(m.TokenEmbd.Type, m.TokenEmbd.Data[t*rowBytes:(t+1)*rowBytes], p.H[i*c.Dim:(i+1)*c.Dim]); err != nil {
			return nil, fmt.Errorf("model: embedding token %d: %w", t, err)
		}
	}
	return p, nil
}

// N is the number of rows under computation.
func (p *Pass) N() int { return len(p.Rows) }

// QKV computes the fresh query, key and value of every row at layer l into
// p.Q, p.K and p.V (keys and queries rotated to the rows' positions). The
// hidden states are not changed.
func (p *Pass) QKV(l int) {
	c := p.m.Config
	ly := &p.m.Layers[l]
	n := p.N()
	for i := 0; i < n; i++ {
		kernels.RMSNorm(p.x[i*c.Dim:(i+1)*c.Dim], p.H[i*c.Dim:(i+1)*c.Dim], ly.AttnNorm, c.NormEps)
	}
	pool := p.m.pool
	p.mats = [3]kernels.Matrix{ly.Q, ly.K, ly.V}
	p.dsts = [3][]float32{p.Q[:n*c.QDim()], p.K[:n*c.KVDim()], p.V[:n*c.KVDim()]}
	pool.MatMulMulti(p.dsts[:], p.mats[:], p.x[:n*c.Dim], n)
	p.mats, p.dsts = [3]kernels.Matrix{}, [3][]float32{}
	for i := 0; i < n; i++ {
		q := p.Q[i*c.QDim() : (i+1)*c.QDim()]
		k := p.K[i*c.KVDim() : (i+1)*c.KVDim()]
		v := p.V[i*c.KVDim() : (i+1)*c.KVDim()]
		addBias(q, ly.QBias)
		addBias(k, ly.KBias)
		addBias(v, ly.VBias)
		p.m.rope.CosSin(int(p.kv.Pos[p.Rows[i]]), p.cos, p.sin)
		p.m.rope.Rotate(q, c.Heads, p.cos, p.sin)
		p.m.rope.Rotate(k, c.KVHeads, p.cos, p.sin)
	}
}

func addBias(x, b []float32) {
	if b == nil {
		return
	}
	for i := range x {
		x[i] += b[i]
	}
}

// WriteKV stores the fresh keys and values of rows sel (indices into p.Rows;
// nil means every row) into the cache at layer l. Rows not written keep the
// cache's existing keys and values.
func (p *Pass) WriteKV(l int, sel []int) {
	d := p.kv.KVDim
	write := func(i int) {
		r := p.Rows[i]
		copy(p.kv.K[l][r*d:(r+1)*d], p.K[i*d:(i+1)*d])
		copy(p.kv.V[l][r*d:(r+1)*d], p.V[i*d:(i+1)*d])
		p.kv.ChangedLayer(l, r, r+1)
	}
	if sel == nil {
		for i := range p.Rows {
			write(i)
		}
		return
	}
	for _, i := range sel {
		write(i)
	}
}

// Keep narrows the pass to rows keep (ascending indices into p.Rows); the
// other rows' hidden states are dropped and are not computed further.
func (p *Pass) Keep(keep []int) {
	c := p.m.Config
	for j, i := range keep {
		if i < j || i >= len(p.Rows) || (j > 0 && i <= keep[j-1]) {
			panic(fmt.Sprintf("model: Pass.Keep indices must be ascending and < %d", len(p.Rows)))
		}
		p.Rows[j] = p.Rows[i]
		copy(p.H[j*c.Dim:(j+1)*c.Dim], p.H[i*c.Dim:(i+1)*c.Dim])
		copy(p.Q[j*c.QDim():(j+1)*c.QDim()], p.Q[i*c.QDim():(i+1)*c.QDim()])
		copy(p.K[j*c.KVDim():(j+1)*c.KVDim()], p.K[i*c.KVDim():(i+1)*c.KVDim()])
		copy(p.V[j*c.KVDim():(j+1)*c.KVDim()], p.V[i*c.KVDim():(i+1)*c.KVDim()])
	}
	n := len(keep)
	p.Rows = p.Rows[:n]
}

// AttendMLP finishes layer l for every row: attention of the rows' queries
// (from QKV) over the cache's keys and values at layer l, masked by position
// (a row at position p sees keys at positions ≤ p), then the output
// projection, the MLP and both residual additions.
func (p *Pass) AttendMLP(l int) error {
	c := p.m.Config
	ly := &p.m.Layers[l]
	n := p.N()
	if err := p.Groups.Validate(p.kv.Len()); err != nil {
		return err
	}
	// Attention: one task per (row, KV head), split in contiguous runs over
	// the workers; each worker has its own scratch. With fewer tasks than
	// about two per worker (decode), a context of enough key blocks is
	// split into blocks instead, a task per (row, KV head, block), whose
	// states are merged afterwards; a shorter one into query heads, a task
	// per (row, head). Each head's result is bitwise the same every way.
	sh := kernels.AttnShape{Heads: c.Heads, KVHeads: c.KVHeads, HeadDim: c.HeadDim}
	threads := p.m.pool.Threads()
	nb := kernels.AttnBlocks(p.kv.Len())
	p.attnTask = attnTask{p: p, l: l, sh: sh}
	switch {
	case n*c.KVHeads >= 2*threads:
		p.m.pool.RunTask(n*c.KVHeads, &p.attnTask)
	case n*c.KVHeads*nb >= min(2*threads, n*c.Heads):
		p.attnTask.blocks = nb
		if len(p.attnBlocks) < n*c.KVHeads*nb {
			p.attnBlocks = make([]kernels.AttnState, n*c.KVHeads*nb)
		}
		p.m.pool.RunTask(n*c.KVHeads*nb, &p.attnTask)
		q, g := c.QDim(), c.Heads/c.KVHeads
		for t := 0; t < n*c.KVHeads; t++ {
			i, kvh := t/c.KVHeads, t%c.KVHeads
			kernels.AttendMerge(p.att[i*q:(i+1)*q], p.attnBlocks[t*nb:(t+1)*nb], sh, kvh, 0, g, p.Groups, &p.attn[0])
		}
	default:
		p.attnTask.perHead = true
		p.m.pool.RunTask(n*c.Heads, &p.attnTask)
	}
	// H += A·Woᵀ, using x as the [n × d] output buffer.
	x := p.x[:n*c.Dim]
	p.m.pool.MatMul(x, ly.O, p.att[:n*c.QDim()], n)
	kernels.Add(p.H[:n*c.Dim], x)
	// MLP.
	for i := 0; i < n; i++ {
		kernels.RMSNorm(x[i*c.Dim:(i+1)*c.Dim], p.H[i*c.Dim:(i+1)*c.Dim], ly.FFNNorm, c.NormEps)
	}
	gate, up := p.gate[:n*c.FFN], p.up[:n*c.FFN]
	p.mats = [3]kernels.Matrix{ly.Gate, ly.Up}
	p.dsts = [3][]float32{gate, up}
	p.m.pool.MatMulMulti(p.dsts[:2], p.mats[:2], x, n)
	p.mats, p.dsts = [3]kernels.Matrix{}, [3][]float32{}
	kernels.SwiGLU(gate, gate, up)
	p.m.pool.MatMul(x, ly.Down, gate, n)
	kernels.Add(p.H[:n*c.Dim], x)
	return nil
}

// attnTask computes attention for tasks t = row·KVHeads + kvHead; when
// perHead is set, t = row·Heads + head; when blocks > 0, it computes the
// state of key block t mod blocks of (row, KV head) t / blocks into
// Pass.attnBlocks[t].
type attnTask struct {
	p       *Pass
	l       int
	sh      kernels.AttnShape
	perHead bool
	blocks  int
}

func (a *attnTask) Do(worker, lo, hi int) {
	p, q := a.p, a.sh.QDim()
	g := a.sh.Heads / a.sh.KVHeads
	if a.blocks > 0 {
		for t := lo; t < hi; t++ {
			i, kvh := t/a.blocks/a.sh.KVHeads, t/a.blocks%a.sh.KVHeads
			kernels.AttendBlock(&p.attnBlocks[t], p.Q[i*q:(i+1)*q], p.kv.K[a.l], p.kv.V[a.l],
				p.kv.Pos, p.kv.Pos[p.Rows[i]], a.sh, kvh, 0, g, t%a.blocks, p.Groups, &p.attn[worker])
		}
		return
	}
	if !a.perHead {
		// Task t covers all g heads of its KV head.
		lo, hi = lo*g, hi*g
	}
	// Heads [lo, hi) of the concatenated rows, one call per run that shares
	// a row and a KV head.
	for t := lo; t < hi; {
		i, h := t/a.sh.Heads, t%a.sh.Heads
		kvh, h0 := h/g, h%g
		h1 := min(g, h0+hi-t)
		kernels.AttendHeads(p.att[i*q:(i+1)*q], p.Q[i*q:(i+1)*q], p.kv.K[a.l], p.kv.V[a.l],
			p.kv.Pos, p.kv.Pos[p.Rows[i]], a.sh, kvh, h0, h1, p.Groups, &p.attn[worker])
		t += h1 - h0
	}
}

// Layer runs layer l completely for every row: QKV, WriteKV of every row, AttendMLP.
func (p *Pass) Layer(l int) error {
	p.QKV(l)
	p.WriteKV(l, nil)
	return p.AttendMLP(l)
}

// Logits writes the output logits of rows sel (indices into p.Rows) into dst,
// [len(sel) × Vocab], after the final norm. Call it after the last layer.
func (p *Pass) Logits(dst []float32, sel []int) {
	c := p.m.Config
	if len(dst) != len(sel)*c.Vocab {
		panic(fmt.Sprintf("model: Logits dst has %d floats, want %d", len(dst), len(sel)*c.Vocab))
	}
	x := make([]float32, len(sel)*c.Dim)
	for j, i := range sel {
		kernels.RMSNorm(x[j*c.Dim:(j+1)*c.Dim], p.H[i*c.Dim:(i+1)*c.Dim], p.m.OutNorm, c.NormEps)
	}
	p.m.pool.MatMul(dst, p.m.Output, x, len(sel))
}

// prefillBatch bounds the rows computed together by Forward, so a long
// prompt's scratch memory stays small. Rows are batch-invariant, so the
// split does not change any result.
const prefillBatch = 256

// Forward appends tokens at positions pos to kv, computes them through every
// layer (each attends to the cache's earlier rows and to itself by
// position), and returns the logits of the last new row, or of every new row
// when all is true ([n × Vocab]). On error kv is left as it was.
func (m *Model) Forward(kv *KV, tokens, pos []int32, all bool) ([]float32, error) {
	return m.appendRows(kv, tokens, pos, all, m.Recompute)
}

// Recompute recomputes cache rows rows (ascending) through every layer,
// overwriting their keys and values, and returns the logits of the last of
// them, or of all of them when all is true. Rows not listed keep their cached
// keys and values and are attended to as they are. Recomputing every row of
// a cache is a plain prefill.
func (m *Model) Recompute(kv *KV, rows []int, all bool) ([]float32, error) {
	p, err := m.NewPass(kv, rows)
	if err != nil {
		return nil, err
	}
	return recomputeWith(m, cpuPass{p}, all)
}

// Positions returns the positions start, start+1, …, start+n−1.
func Positions(start, n int) []int32 {
	pos := make([]int32, n)
	for i := range pos {
		pos[i] = int32(start + i)
	}
	return pos
}
