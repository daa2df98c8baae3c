package kernels

import (
	"math/rand/v2"
	"testing"
)

// newTestPool returns NewPool(threads) that hands even the smallest MatMul
// to its workers, so that tests exercise the split across threads.
func newTestPool(threads int) *Pool {
	p := NewPool(threads)
	p.inlineWork = 0
	return p
}

// newPortablePool returns a test pool that never uses the assembly kernels.
func newPortablePool(threads int) *Pool {
	p := newTestPool(threads)
	p.kern = kernelTable{portable: true}
	p.kern.init()
	return p
}

// TestAssemblyMatMulEqualsPortableBitwise compares the kernels the CPU
// selects (assembly on amd64 with AVX2) with the portable ones on random
// shapes: row counts that are not multiples of the tiles (1…7, 66), weight
// row counts not multiples of 4, single-block rows, and activation and
// weight slices that start at odd offsets. Both must agree bit for bit.
func TestAssemblyMatMulEqualsPortableBitwise(t *testing.T) {
	if !haveAVX2() {
		t.Log("no AVX2: the assembly kernels are not selected on this CPU; comparing portable with itself")
	}
	rng := rand.New(rand.NewPCG(21, 22))
	fast, slow := newTestPool(2), newPortablePool(2)
	defer fast.Close()
	defer slow.Close()
	type shape struct{ rows, cols, n int }
	shapes := []shape{{1, 32, 1}, {5, 64, 3}, {7, 96, 66}, {37, 256, 5}, {4, 32, 4}, {9, 160, 7}, {3, 64, 2}, {6, 8, 9}, {13, 200, 1}}
	for _, wt := range []DType{Q4_0, Q4_1, Q8_0, F32, F16} {
		for _, sh := range shapes {
			if sh.cols%wt.BlockSize() != 0 {
				continue
			}
			if fast.kern.kind(wt, sh.cols) == slow.kern.kind(wt, sh.cols) && haveAVX2() {
				t.Fatalf("%v %d columns: the assembly kernel is not selected", wt, sh.cols)
			}
			// Offset the weights and activations inside larger buffers so the
			// kernels see unaligned starts.
			rb := mustRowBytes(wt, sh.cols)
			wbuf := randomRows(rng, wt, sh.rows+1, sh.cols)
			m := Matrix{Type: wt, Rows: sh.rows, Cols: sh.cols, Data: wbuf[3 : 3+sh.rows*rb]}
			xbuf := randomActs(rng, sh.n+1, sh.cols)
			x := xbuf[1 : 1+sh.n*sh.cols]
			got := make([]float32, sh.n*sh.rows)
			want := make([]float32, sh.n*sh.rows)
			fast.MatMul(got, m, x, sh.n)
			slow.MatMul(want, m, x, sh.n)
			for i := range got {
				if !sameBits(got[i], want[i]) {
					t.Fatalf("%v %d×%d n=%d: element %d assembly %v portable %v", wt, sh.rows, sh.cols, sh.n, i, got[i], want[i])
				}
			}
		}
	}
}

// TestAssemblyMatMulBatchInvariantFloat repeats the batch-invariance check
// for F32 and F16 matrices whose width is a multiple of 8 (the widths that
// take the assembly tiles): each row alone, on 1 and 2 threads, equals the
// row inside a batch of 66.
func TestAssemblyMatMulBatchInvariantFloat(t *testing.T) {
	rng := rand.New(rand.NewPCG(23, 24))
	p1, p2 := newTestPool(1), newTestPool(2)
	defer p1.Close()
	defer p2.Close()
	const rows, cols, n = 11, 72, 66
	for _, wt := range []DType{F32, F16} {
		m := Matrix{Type: wt, Rows: rows, Cols: cols, Data: randomRows(rng, wt, rows, cols)}
		x := randomActs(rng, n, cols)
		all := make([]float32, n*rows)
		p2.MatMul(all, m, x, n)
		one := make([]float32, rows)
		for r := 0; r < n; r++ {
			for _, p := range []*Pool{p1, p2} {
				p.MatMul(one, m, x[r*cols:(r+1)*cols], 1)
				for o := range one {
					if !sameBits(one[o], all[r*rows+o]) {
						t.Fatalf("%v %d threads: row %d output %d alone %v, in the batch %v", wt, p.Threads(), r, o, one[o], all[r*rows+o])
					}
				}
			}
		}
	}
}

// TestDotAssemblyEqualsPortable checks Dot (assembly lanes where available)
// against the portable lane accumulator for lengths around multiples of 8.
func TestDotAssemblyEqualsPortable(t *testing.T) {
	rng := rand.New(rand.NewPCG(25, 26))
	for n := 0; n < 70; n++ {
		buf := randomActs(rng, 1, 2*n+2)
		a, b := buf[1:1+n], buf[n+2:2*n+2]
		var acc f32Acc
		acc.addF32(a, b)
		if got, want := Dot(a, b), acc.sum(); !sameBits(got, want) {
			t.Fatalf("n=%d: Dot %v, portable %v", n, got, want)
		}
	}
}

// TestQuantRowAssemblyEqualsGo checks the assembly activation quantiser
// against the portable one bit for bit, on blocks of ordinary, tiny
// (fp16-subnormal scales), huge and all-zero values, and on blocks whose
// scaled values are exact ties (k + ½), where rounding half away from zero
// matters.
func TestQuantRowAssemblyEqualsGo(t *testing.T) {
	if !haveAVX2() {
		t.Skip("no AVX2")
	}
	rng := rand.New(rand.NewPCG(27, 28))
	const nb, rows = 12, 6
	x := randomActs(rng, rows, nb*qk)
	for i := range x[:qk] {
		x[i] *= 1e-9 // fp16-subnormal d
	}
	for i := qk; i < 2*qk; i++ {
		x[i] *= 1e30
	}
	for i := 2 * qk; i < 3*qk; i++ {
		x[i] = float32(i%qk-16) + 0.5 // amax 15.5 → id = 127/15.5; plus exact ties below
	}
	x[3*qk] = 127 // a block with d = 1: every k+½ is a tie
	for i := 3*qk + 1; i < 4*qk; i++ {
		x[i] = float32(i%qk-16) + 0.5
	}
	qn, sn := groupActsSize(rows, nb)
	qa, qs := make([]byte, qn), make([]float32, sn)
	qa2, qs2 := make([]byte, qn), make([]float32, sn)
	for r := 0; r < rows; r++ {
		quantGroupRow(x[r*nb*qk:(r+1)*nb*qk], r, nb, qa, qs)
		quantGroupRowGo(x[r*nb*qk:(r+1)*nb*qk], r, nb, qa2, qs2)
	}
	for i := range qa {
		if qa[i] != qa2[i] {
			t.Fatalf("quant byte %d: assembly %d, Go %d", i, int8(qa[i]), int8(qa2[i]))
		}
	}
	for i := range qs {
		if !sameBits(qs[i], qs2[i]) {
			t.Fatalf("scale %d: assembly %v, Go %v", i, qs[i], qs2[i])
		}
	}
}
