package kernels

import (
	"fmt"
	"math"
	"unsafe"
)

// Matrix is a row-major weight matrix in a GGML block type: Rows output
// features, each a row of Cols input weights stored as Cols/BlockSize blocks
// (Data holds Rows·Type.RowBytes(Cols) bytes, row after row). A GGUF tensor
// of shape [Cols, Rows] (ne0 = Cols) is such a matrix.
type Matrix struct {
	Type       DType
	Rows, Cols int
	Data       []byte
}

// Validate reports whether m can be used with MatMul: a type with a dot
// product (see ActType), positive dimensions, Cols a multiple of the block
// size and len(Data) exactly Rows·Type.RowBytes(Cols). Errors wrap
// ErrUnsupported or ErrShape.
func (m Matrix) Validate() error {
	if _, err := ActType(m.Type); err != nil {
		return fmt.Errorf("matrix: %w", err)
	}
	if m.Rows <= 0 || m.Cols <= 0 {
		return fmt.Errorf("matrix %v %d×%d: dimensions must be positive: %w", m.Type, m.Rows, m.Cols, ErrShape)
	}
	rb, err := m.Type.RowBytes(m.Cols)
	if err != nil {
		return fmt.Errorf("matrix %v %d×%d: %w", m.Type, m.Rows, m.Cols, err)
	}
	if m.Rows > math.MaxInt/rb || len(m.Data) != m.Rows*rb {
		return fmt.Errorf("matrix %v %d×%d: have %d bytes, want %d·%d: %w", m.Type, m.Rows, m.Cols, len(m.Data), m.Rows, rb, ErrShape)
	}
	return nil
}

// RowBytes returns the bytes of one row of m (0 if m.Type is unknown or
// m.Cols does not fit its blocks).
func (m Matrix) RowBytes() int {
	rb, _ := m.Type.RowBytes(m.Cols)
	return rb
}

// Row returns the bytes of output row o.
func (m Matrix) Row(o int) []byte {
	rb := m.RowBytes()
	return m.Data[o*rb : (o+1)*rb]
}

// dotFunc is a dot product of nb blocks of one weight row in GGML layout
// with activations in the layout QuantizeActs writes.
type dotFunc func(row, act []byte, nb int) float32

// numTypes bounds the DType values the kernel table indexes.
const numTypes = 32

// kernelTable chooses, per weight type, the dot product MatMul uses. It is
// filled once per Pool by init — where CPU feature detection belongs — and
// never changed afterwards. A non-nil raw[t] is used on
// activations quantised by QuantizeActs (ggml layout); a type without one
// uses the built-in portable kernels (SWAR for the 32-element formats, the
// float kernels for F32/F16/BF16). An assembly VecDot for, say, Q4_1 is
// slotted in by setting raw[Q4_1] here; it must compute the same value for
// every row whatever the batch (any fixed order is batch-invariant).
//
// asm is set when the CPU runs the amd64 assembly kernels (asmmm.go), which
// then take Q4_0, Q4_1, Q8_0 and (Cols a multiple of 8) F32 and F16 weights;
// portable, set before init, keeps the portable kernels (for tests that
// compare the two).
type kernelTable struct {
	ready    bool
	portable bool
	asm      bool
	raw      [numTypes]dotFunc
}

// init fills the table (once; a zero Pool does it on first use).
func (k *kernelTable) init() {
	if k.ready {
		return
	}
	k.raw[Q4_K] = dotQ4K
	k.raw[Q5_K] = dotQ5K
	k.raw[Q6_K] = dotQ6K
	k.asm = !k.portable && haveAVX2()
	k.ready = true
}

// How MatMul computes a weight type.
const (
	mmFloat = iota // F32/F16/BF16: float dot against rounded activations
	mmRaw          // kernelTable.raw on QuantizeActs layout
	mmSWAR         // Q4_0, Q4_1, Q5_0, Q5_1: unpacked weights × packed acts
	mmSWAR8        // Q8_0: unpacked weights × packed acts
	mmAsmQ         // assembly Q4_0/Q4_1/Q8_0 on grouped acts (asmmm.go)
	mmAsmF         // assembly F32/F16 tiles
)

// kind chooses the kernel for a t matrix of cols columns.
func (k *kernelTable) kind(t DType, cols int) int {
	switch {
	case k.asm && asmQType(t):
		return mmAsmQ
	case k.asm && (t == F32 || t == F16) && cols%8 == 0:
		return mmAsmF
	case t == F32 || t == F16 || t == BF16:
		return mmFloat
	case int(t) < numTypes && k.raw[t] != nil:
		return mmRaw
	case t == Q8_0:
		return mmSWAR8
	}
	return mmSWAR
}

// matmulState is the Pool-owned scratch of MatMul, grown on demand and
// reused.
type matmulState struct {
	acts     []actBlock  // packed activations (SWAR kinds)
	raw      []byte      // ggml-layout activations (mmRaw)
	f32      []float32   // rounded activations (F16/BF16 weights)
	qa       []byte      // grouped activation quants (mmAsmQ)
	qs       []float32   // grouped activation scales (mmAsmQ)
	workers  [][]wBlock  // per-worker unpacked weight row (mmSWAR)
	workers8 [][]wBlock8 // per-worker unpacked weight row (mmSWAR8)
	job      matJob      // the call in progress
	prep     prepTask
	comp     computeTask
	multi    multiTask // MatMulMulti's jobs
}

// grow returns s resized to n, reallocating only when it is too small.
func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

// matJob holds the shapes of the MatMul in progress.
type matJob struct {
	kind   int
	m      Matrix
	x, dst []float32
	n      int
	nb     int // blocks per row
	rb     int // weight bytes per row
	ab     int // activation bytes per row (mmRaw)
	dot    dotFunc
	st     *matmulState
}

// prepTask quantises activation rows [lo, hi).
type prepTask struct{ j *matJob } // j points into the same matmulState

// Do quantises rows [lo, hi).
func (t *prepTask) Do(_, lo, hi int) {
	j := t.j
	c := j.m.Cols
	for r := lo; r < hi; r++ {
		x := j.x[r*c : (r+1)*c]
		switch j.kind {
		case mmSWAR, mmSWAR8:
			packActs(x, j.st.acts[r*j.nb:(r+1)*j.nb])
		case mmRaw:
			at, _ := ActType(j.m.Type)
			quantizeRaw(at, x, j.st.raw[r*j.ab:(r+1)*j.ab])
		case mmAsmQ:
			quantGroupRow(x, r, j.nb, j.st.qa, j.st.qs)
		case mmFloat, mmAsmF:
			y := j.st.f32[r*c : (r+1)*c]
			if j.m.Type == F16 {
				for i, v := range x {
					y[i] = roundF16(v)
				}
			} else {
				for i, v := range x {
					y[i] = BF16ToF32(F32ToBF16(v))
				}
			}
		}
	}
}

// quantizeRaw is QuantizeActs without the checks.
func quantizeRaw(at DType, x []float32, dst []byte) {
	switch at {
	case Q8_0:
		for i := 0; i < len(x)/qk; i++ {
			quantBlockQ8_0(x[i*qk:(i+1)*qk], dst[i*34:(i+1)*34])
		}
	case Q8_1:
		for i := 0; i < len(x)/qk; i++ {
			quantBlockQ8_1(x[i*qk:(i+1)*qk], dst[i*36:(i+1)*36])
		}
	case Q8_K:
		for i := 0; i < len(x)/qkK; i++ {
			quantBlockQ8K(x[i*qkK:(i+1)*qkK], dst[i*292:(i+1)*292])
		}
	}
}

// computeTask computes output features [lo, hi) for every row.
type computeTask struct{ j *matJob }

// tileBytes bounds the activation rows a worker sweeps per weight row, so
// they stay in the L2 cache while the weight row sits in L1.
const tileBytes = 128 << 10

// inlineBytes is the weight traffic (activation rows × matrix bytes) below
// which MatMul runs on the calling goroutine alone (Pool.inlineWork).
const inlineBytes = 256 << 10

// inlinePolling replaces inlineBytes while the workers poll: a hand-off then
// costs about a microsecond instead of a wake-up, so splitting pays for a
// decode step's 200 KB output projection too.
const inlinePolling = 64 << 10

// inlineLimit returns the weight traffic below which MatMul stays on the
// caller now: p.inlineWork, or inlinePolling in its place while the workers
// poll (unless a test set p.inlineWork).
func (p *Pool) inlineLimit() int {
	if p.inlineWork == inlineBytes && p.polling() {
		return inlinePolling
	}
	return p.inlineWork
}

// fusedMaxRows is the largest number of activation rows per weight row for
// which reading the weights straight from the GGML row beats unpacking them.
const fusedMaxRows = 2

// Do computes outputs [lo, hi) of every row.
func (t *computeTask) Do(worker, lo, hi int) { t.j.compute(worker, lo, hi) }

// compute computes outputs [lo, hi) of every row, sweeping the rows in
// tiles; worker names the per-worker scratch it may use.
func (j *matJob) compute(worker, lo, hi int) {
	var rowBytes int
	switch j.kind {
	case mmAsmQ:
		j.asmQTiles(lo, hi)
		return
	case mmAsmF:
		j.asmFTiles(lo, hi)
		return
	case mmSWAR, mmSWAR8:
		rowBytes = j.nb * int(unsafe.Sizeof(actBlock{}))
	case mmRaw:
		rowBytes = j.ab
	default:
		rowBytes = 4 * j.m.Cols
	}
	tile := min(max(tileBytes/rowBytes, 4), 64)
	rows := j.m.Rows
	for r0 := 0; r0 < j.n; r0 += tile {
		r1 := min(j.n, r0+tile)
		for o := lo; o < hi; o++ {
			w := j.m.Data[o*j.rb : (o+1)*j.rb]
			switch j.kind {
			case mmSWAR:
				if r1-r0 <= fusedMaxRows && j.m.Type != Q5_0 && j.m.Type != Q5_1 {
					for r := r0; r < r1; r++ {
						a := j.st.acts[r*j.nb : (r+1)*j.nb]
						if j.m.Type == Q4_0 {
							j.dst[r*rows+o] = fusedDotQ4_0(w, a)
						} else {
							j.dst[r*rows+o] = fusedDotQ4_1(w, a)
						}
					}
					continue
				}
				wq := j.st.workers[worker][:j.nb]
				unpackRow(j.m.Type, w, wq)
				for r := r0; r < r1; r++ {
					a := j.st.acts[r*j.nb : (r+1)*j.nb]
					var v float32
					switch j.m.Type {
					case Q4_0:
						v = swarDotQ4_0(wq, a)
					case Q4_1:
						v = swarDotQ4_1(wq, a)
					case Q5_0:
						v = swarDotQ5_0(wq, a)
					case Q5_1:
						v = swarDotQ5_1(wq, a)
					}
					j.dst[r*rows+o] = v
				}
			case mmSWAR8:
				if r1-r0 <= fusedMaxRows {
					for r := r0; r < r1; r++ {
						j.dst[r*rows+o] = fusedDotQ8_0(w, j.st.acts[r*j.nb:(r+1)*j.nb])
					}
					continue
				}
				wq := j.st.workers8[worker][:j.nb]
				for i := range wq {
					unpackQ8(w[i*34:(i+1)*34], &wq[i])
				}
				for r := r0; r < r1; r++ {
					j.dst[r*rows+o] = swarDotQ8_0(wq, j.st.acts[r*j.nb:(r+1)*j.nb])
				}
			case mmRaw:
				for r := r0; r < r1; r++ {
					j.dst[r*rows+o] = j.dot(w, j.st.raw[r*j.ab:(r+1)*j.ab], j.nb)
				}
			case mmFloat:
				c := j.m.Cols
				xs := j.x
				if j.m.Type != F32 {
					xs = j.st.f32
				}
				for r := r0; r < r1; r++ {
					var acc f32Acc
					acc.addRow(j.m.Type, w, xs[r*c:(r+1)*c])
					j.dst[r*rows+o] = acc.sum()
				}
			}
		}
	}
}

// MatMul computes dst[r·m.Rows+o] = Σ_k W[o,k]·x[r·m.Cols+k] for rows r < n
// and outputs o < m.Rows, splitting the outputs over the pool's workers.
//
// Activations are first converted once per row, as ggml does, to
// ActType(m.Type) (into pool-owned scratch that grows to the largest shape
// seen and is reused), and every output element is then the dot product of
// one weight row with one converted activation row: the value VecDot
// returns, bit for bit. No element depends on n, on the other rows, or on
// the number of threads (batch invariance).
//
// MatMul panics if m fails Validate, n < 0, len(x) < n·m.Cols or
// len(dst) < n·m.Rows. dst must not overlap x.
func (p *Pool) MatMul(dst []float32, m Matrix, x []float32, n int) {
	checkMatMul("MatMul", dst, m, x, n)
	if n == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	st := &p.mm
	j := p.prepareLocked(&st.job, dst, m, x, n)
	if n*len(m.Data) < p.inlineLimit() {
		// Too little work to pay for waking the workers (decode's small
		// projections); the result is the same on any number of threads.
		j.compute(0, 0, m.Rows)
	} else {
		st.comp.j = j
		p.runLocked(m.Rows, &st.comp)
	}
	st.job = matJob{} // drop references to the caller's slices
	st.prep.j, st.comp.j = nil, nil
}

// checkMatMul panics (naming the caller op) unless m, x, dst and n fit
// together.
func checkMatMul(op string, dst []float32, m Matrix, x []float32, n int) {
	if err := m.Validate(); err != nil {
		panic(fmt.Sprintf("kernels.%s: %v", op, err))
	}
	if n < 0 || len(x) < n*m.Cols || len(dst) < n*m.Rows {
		panic(fmt.Sprintf("kernels.%s: %v %d×%d with n=%d: len(x)=%d (want %d), len(dst)=%d (want %d)",
			op, m.Type, m.Rows, m.Cols, n, len(x), n*m.Cols, len(dst), n*m.Rows))
	}
}

// prepareLocked fills *j for the product of m with the n rows of x into
// dst, grows the scratch and converts the activations (on the workers when
// there are many). p.mu must be held and n > 0.
func (p *Pool) prepareLocked(j *matJob, dst []float32, m Matrix, x []float32, n int) *matJob {
	p.kern.init()
	st := &p.mm
	*j = matJob{kind: p.kern.kind(m.Type, m.Cols), m: m, x: x, dst: dst, n: n, rb: m.RowBytes(), st: st}
	j.nb = m.Cols / m.Type.BlockSize()
	threads := p.Threads()
	switch j.kind {
	case mmSWAR, mmSWAR8:
		st.acts = grow(st.acts, n*j.nb)
		if j.kind == mmSWAR {
			st.workers = growWorkers(st.workers, threads, j.nb)
		} else {
			st.workers8 = growWorkers(st.workers8, threads, j.nb)
		}
	case mmRaw:
		at, _ := ActType(m.Type)
		j.ab, _ = at.RowBytes(m.Cols)
		j.dot = p.kern.raw[m.Type]
		st.raw = grow(st.raw, n*j.ab)
	case mmAsmQ:
		qn, sn := groupActsSize(n, j.nb)
		st.qa = grow(st.qa, qn)
		st.qs = grow(st.qs, sn)
	case mmFloat, mmAsmF:
		if m.Type != F32 {
			st.f32 = grow(st.f32, n*m.Cols)
		}
	}
	st.prep.j = j
	if (j.kind != mmFloat && j.kind != mmAsmF) || m.Type != F32 {
		if n*m.Cols >= 1<<14 {
			p.runLocked(n, &st.prep)
		} else {
			st.prep.Do(0, 0, n)
		}
	}
	return j
}

// multiTask computes the outputs of several jobs on one input as one range:
// index i is output i of the concatenation of the jobs' matrices.
type multiTask struct{ jobs []matJob }

// Do computes the outputs [lo, hi) of the concatenated matrices.
func (t *multiTask) Do(worker, lo, hi int) {
	base := 0
	for i := range t.jobs {
		j := &t.jobs[i]
		if a, b := max(lo, base)-base, min(hi, base+j.m.Rows)-base; a < b {
			j.compute(worker, a, b)
		}
		base += j.m.Rows
	}
}

// MatMulMulti computes, for every i, what MatMul(dsts[i], ms[i], x, n)
// computes, bit for bit, in one parallel region: the activations are
// converted once and the output rows of all the matrices are split over the
// workers together, so several small products on the same input (a layer's
// query, key and value projections, or its gate and up projections) cost one
// wake-up of the workers instead of one each. Every element is the value
// MatMul returns, so MatMulMulti keeps MatMul's batch invariance.
//
// The matrices must have the same Cols; when their types differ they are
// computed one after another with MatMul. MatMulMulti panics if
// len(dsts) != len(ms), if any (dsts[i], ms[i]) is invalid for MatMul, or if
// the matrices' Cols differ. No dst may overlap x or another dst. Once its
// scratch has grown it allocates nothing.
func (p *Pool) MatMulMulti(dsts [][]float32, ms []Matrix, x []float32, n int) {
	if len(dsts) != len(ms) {
		panic(fmt.Sprintf("kernels.MatMulMulti: %d outputs for %d matrices", len(dsts), len(ms)))
	}
	sameType := true
	for i, m := range ms {
		checkMatMul("MatMulMulti", dsts[i], m, x, n)
		if m.Cols != ms[0].Cols {
			panic(fmt.Sprintf("kernels.MatMulMulti: matrix %d has %d columns, matrix 0 %d", i, m.Cols, ms[0].Cols))
		}
		sameType = sameType && m.Type == ms[0].Type
	}
	if !sameType {
		for i, m := range ms {
			p.MatMul(dsts[i], m, x, n)
		}
		return
	}
	if n == 0 || len(ms) == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	st := &p.mm
	st.multi.jobs = grow(st.multi.jobs, len(ms))
	jobs := st.multi.jobs
	j0 := p.prepareLocked(&jobs[0], dsts[0], ms[0], x, n)
	rows, work := ms[0].Rows, n*len(ms[0].Data)
	for i := 1; i < len(ms); i++ {
		// Same type and width: same kernel and the activations converted
		// for the first matrix.
		jobs[i] = *j0
		jobs[i].m, jobs[i].dst, jobs[i].rb = ms[i], dsts[i], ms[i].RowBytes()
		rows += ms[i].Rows
		work += n * len(ms[i].Data)
	}
	if work < p.inlineLimit() {
		st.multi.Do(0, 0, rows)
	} else {
		p.runLocked(rows, &st.multi)
	}
	clear(jobs) // drop references to the caller's slices
	st.prep.j = nil
}

// growWorkers makes sure each of threads per-worker buffers holds n blocks.
func growWorkers[T any](ws [][]T, threads, n int) [][]T {
	if len(ws) < threads {
		ws = append(ws, make([][]T, threads-len(ws))...)
	}
	for i := range ws[:threads] {
		ws[i] = grow(ws[i], n)
	}
	return ws
}
