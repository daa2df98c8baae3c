package kernels

import (
	"math/rand/v2"
	"testing"
)

// TestMatMulMultiEqualsMatMulBitwise checks that every output of
// MatMulMulti is bitwise the element MatMul computes for the same matrix,
// for every weight type, for one and several activation rows, on 1 and 2
// threads, with the work handed to the workers and run on the caller, and
// for matrix row counts that split the concatenated outputs unevenly.
func TestMatMulMultiEqualsMatMulBitwise(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 32))
	inline := NewPool(2)
	inline.inlineWork = 1 << 40 // everything on the caller
	pools := []*Pool{newTestPool(1), newTestPool(2), newPortablePool(2), inline}
	defer func() {
		for _, p := range pools {
			p.Close()
		}
	}()
	ref := newTestPool(2)
	defer ref.Close()
	rowSets := [][]int{{37, 13, 13}, {1, 6, 5}, {64, 64}, {9}}
	for _, wt := range allDotTypes {
		cols := matmulCols(wt)
		for _, rs := range rowSets {
			ms := make([]Matrix, len(rs))
			for i, r := range rs {
				ms[i] = Matrix{Type: wt, Rows: r, Cols: cols, Data: randomRows(rng, wt, r, cols)}
			}
			for _, n := range []int{1, 3, 9} {
				x := randomActs(rng, n, cols)
				want := make([][]float32, len(ms))
				for i, m := range ms {
					want[i] = make([]float32, n*m.Rows)
					ref.MatMul(want[i], m, x, n)
				}
				for pi, p := range pools {
					got := make([][]float32, len(ms))
					for i, m := range ms {
						got[i] = make([]float32, n*m.Rows)
					}
					p.MatMulMulti(got, ms, x, n)
					for i := range ms {
						for e := range got[i] {
							if !sameBits(got[i][e], want[i][e]) {
								t.Fatalf("%v rows %v n=%d pool %d: matrix %d element %d: MatMulMulti %v, MatMul %v",
									wt, rs, n, pi, i, e, got[i][e], want[i][e])
							}
						}
					}
				}
			}
		}
	}
}

// TestMatMulMultiBatchInvariant checks that a row's outputs from
// MatMulMulti are bitwise the same computed alone or among 66 rows.
func TestMatMulMultiBatchInvariant(t *testing.T) {
	rng := rand.New(rand.NewPCG(33, 34))
	p := newTestPool(2)
	defer p.Close()
	const n = 66
	for _, wt := range []DType{Q4_0, Q4_1, Q8_0, F32, F16, Q4_K} {
		cols := matmulCols(wt)
		rs := []int{21, 7, 7}
		ms := make([]Matrix, len(rs))
		all := make([][]float32, len(rs))
		one := make([][]float32, len(rs))
		for i, r := range rs {
			ms[i] = Matrix{Type: wt, Rows: r, Cols: cols, Data: randomRows(rng, wt, r, cols)}
			all[i] = make([]float32, n*r)
			one[i] = make([]float32, r)
		}
		x := randomActs(rng, n, cols)
		p.MatMulMulti(all, ms, x, n)
		for r := 0; r < n; r++ {
			p.MatMulMulti(one, ms, x[r*cols:(r+1)*cols], 1)
			for i, m := range ms {
				for o := 0; o < m.Rows; o++ {
					if !sameBits(one[i][o], all[i][r*m.Rows+o]) {
						t.Fatalf("%v matrix %d row %d output %d: alone %v, in a batch of %d %v", wt, i, r, o, one[i][o], n, all[i][r*m.Rows+o])
					}
				}
			}
		}
	}
}

// TestMatMulMultiMixedTypesMatchMatMul checks the one-after-another path for
// matrices of different types.
func TestMatMulMultiMixedTypesMatchMatMul(t *testing.T) {
	rng := rand.New(rand.NewPCG(35, 36))
	p := newTestPool(2)
	defer p.Close()
	const cols, n = 256, 2
	ms := []Matrix{
		{Type: Q4_1, Rows: 5, Cols: cols, Data: randomRows(rng, Q4_1, 5, cols)},
		{Type: Q8_0, Rows: 3, Cols: cols, Data: randomRows(rng, Q8_0, 3, cols)},
	}
	x := randomActs(rng, n, cols)
	got := [][]float32{make([]float32, n*5), make([]float32, n*3)}
	p.MatMulMulti(got, ms, x, n)
	for i, m := range ms {
		want := make([]float32, n*m.Rows)
		p.MatMul(want, m, x, n)
		for e := range want {
			if !sameBits(got[i][e], want[e]) {
				t.Fatalf("matrix %d element %d: %v, MatMul %v", i, e, got[i][e], want[e])
			}
		}
	}
}

func TestMatMulMultiSteadyStateAllocatesNothing(t *testing.T) {
	rng := rand.New(rand.NewPCG(37, 38))
	p := newTestPool(2)
	defer p.Close()
	const cols = 192
	ms := []Matrix{
		{Type: Q4_1, Rows: 64, Cols: cols, Data: randomRows(rng, Q4_1, 64, cols)},
		{Type: Q4_1, Rows: 16, Cols: cols, Data: randomRows(rng, Q4_1, 16, cols)},
	}
	for _, n := range []int{1, 40} {
		x := randomActs(rng, n, cols)
		dsts := [][]float32{make([]float32, n*64), make([]float32, n*16)}
		p.MatMulMulti(dsts, ms, x, n) // grow scratch
		if a := testing.AllocsPerRun(20, func() { p.MatMulMulti(dsts, ms, x, n) }); a != 0 {
			t.Errorf("n=%d: %v allocations per MatMulMulti", n, a)
		}
	}
}

func TestMatMulMultiPanicsOnMismatchedShapes(t *testing.T) {
	rng := rand.New(rand.NewPCG(39, 40))
	p := newTestPool(2)
	defer p.Close()
	a := Matrix{Type: Q4_1, Rows: 4, Cols: 64, Data: randomRows(rng, Q4_1, 4, 64)}
	b := Matrix{Type: Q4_1, Rows: 4, Cols: 96, Data: randomRows(rng, Q4_1, 4, 96)}
	x := randomActs(rng, 1, 96)
	cases := map[string]func(){
		"cols differ":     func() { p.MatMulMulti([][]float32{make([]float32, 4), make([]float32, 4)}, []Matrix{a, b}, x, 1) },
		"count differs":   func() { p.MatMulMulti([][]float32{make([]float32, 4)}, []Matrix{a, a}, x, 1) },
		"short dst":       func() { p.MatMulMulti([][]float32{make([]float32, 4), make([]float32, 3)}, []Matrix{a, a}, x, 1) },
		"short x (n = 2)": func() { p.MatMulMulti([][]float32{make([]float32, 8), make([]float32, 8)}, []Matrix{a, a}, x, 2) },
	}
	for name, f := range cases {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Errorf("no panic")
				}
			}()
			f()
		})
	}
}
