package kernels

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// matmulCols returns input widths to test for t: several blocks, not a
// power of two.
func matmulCols(t DType) int {
	if t.BlockSize() == 256 {
		return 768
	}
	return 160 + 8*t.BlockSize()/8 // 192 for 32-blocks, 161 for float types
}

// TestMatMulBatchInvariant checks that every output element is bitwise the
// same whether its row is computed alone or among 66 rows (more than one
// row tile, the last tile taking the fused decode kernels), on 1 or 2
// threads.
func TestMatMulBatchInvariant(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	p1, p2 := newTestPool(1), newTestPool(2)
	defer p1.Close()
	defer p2.Close()
	const rows, n = 37, 66
	for _, wt := range allDotTypes {
		t.Run(wt.String(), func(t *testing.T) {
			cols := matmulCols(wt)
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
							t.Fatalf("%d threads: row %d output %d alone %v, in a batch of %d %v",
								p.Threads(), r, o, one[o], n, all[r*rows+o])
						}
					}
				}
			}
			// A middle slice of rows on one thread.
			const r0, k = 5, 13
			some := make([]float32, k*rows)
			p1.MatMul(some, m, x[r0*cols:(r0+k)*cols], k)
			for i := range some {
				if !sameBits(some[i], all[r0*rows+i]) {
					t.Fatalf("rows %d..%d on 1 thread differ from the batch of %d at %d", r0, r0+k, n, i)
				}
			}
		})
	}
}

func TestMatMulEqualsVecDotBitwise(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	p := newTestPool(2)
	defer p.Close()
	const rows, n = 9, 5
	for _, wt := range allDotTypes {
		cols := matmulCols(wt)
		m := Matrix{Type: wt, Rows: rows, Cols: cols, Data: randomRows(rng, wt, rows, cols)}
		x := randomActs(rng, n, cols)
		got := make([]float32, n*rows)
		p.MatMul(got, m, x, n)
		at := mustAct(wt)
		act := make([]byte, mustRowBytes(at, cols))
		for r := 0; r < n; r++ {
			if err := QuantizeActs(wt, x[r*cols:(r+1)*cols], act); err != nil {
				t.Fatal(err)
			}
			for o := 0; o < rows; o++ {
				want, err := VecDot(wt, m.Row(o), act, cols)
				if err != nil {
					t.Fatal(err)
				}
				if !sameBits(got[r*rows+o], want) {
					t.Errorf("%v [%d,%d]: MatMul %v, VecDot %v", wt, r, o, got[r*rows+o], want)
				}
			}
		}
	}
}

func TestMatMulSteadyStateAllocatesNothing(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	p := newTestPool(2)
	defer p.Close()
	for _, wt := range []DType{Q4_1, Q8_0, Q4_K, F16} {
		cols := matmulCols(wt)
		m := Matrix{Type: wt, Rows: 64, Cols: cols, Data: randomRows(rng, wt, 64, cols)}
		for _, n := range []int{1, 40} {
			x := randomActs(rng, n, cols)
			dst := make([]float32, n*64)
			p.MatMul(dst, m, x, n) // grow scratch
			if a := testing.AllocsPerRun(20, func() { p.MatMul(dst, m, x, n) }); a != 0 {
				t.Errorf("%v n=%d: %v allocations per MatMul", wt, n, a)
			}
		}
	}
}

func TestMatrixValidateRejectsBadShapes(t *testing.T) {
	good := Matrix{Type: Q4_1, Rows: 2, Cols: 64, Data: make([]byte, 80)}
	if err := good.Validate(); err != nil {
		t.Fatalf("valid matrix: %v", err)
	}
	for name, c := range map[string]struct {
		m    Matrix
		want error
	}{
		"short data":   {Matrix{Type: Q4_1, Rows: 2, Cols: 64, Data: make([]byte, 79)}, ErrShape},
		"ragged cols":  {Matrix{Type: Q4_1, Rows: 2, Cols: 48, Data: make([]byte, 60)}, ErrShape},
		"zero rows":    {Matrix{Type: Q4_1, Rows: 0, Cols: 64}, ErrShape},
		"no dot":       {Matrix{Type: Q8_K, Rows: 1, Cols: 256, Data: make([]byte, 292)}, ErrUnsupported},
		"unknown type": {Matrix{Type: DType(5), Rows: 1, Cols: 32, Data: make([]byte, 20)}, ErrUnsupported},
	} {
		if err := c.m.Validate(); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
}

func TestMatMulPanicsOnShortBuffers(t *testing.T) {
	p := newTestPool(1)
	defer p.Close()
	m := Matrix{Type: Q4_0, Rows: 2, Cols: 32, Data: make([]byte, 36)}
	defer func() {
		if recover() == nil {
			t.Error("MatMul with a short dst did not panic")
		}
	}()
	p.MatMul(make([]float32, 3), m, make([]float32, 64), 2)
}

// BenchmarkMatMul measures the SmolLM2 FFN shapes (Q4_1, 576 inputs × 1536
// outputs and back) for one row (decode) and 64 rows (prefill), the Q8_0 LM
// head on a slice of the vocabulary, and a K-quant. Besides wall-clock
// GFLOP/s it reports GFLOP per CPU-second of the whole process, which stays
// meaningful on a machine shared with other work.
func BenchmarkMatMul(b *testing.B) {
	cases := []struct {
		t          DType
		rows, cols int
	}{
		{Q4_1, 1536, 576},
		{Q4_1, 576, 1536},
		{Q8_0, 8192, 576},
		{Q4_K, 1536, 512},
	}
	for _, c := range cases {
		rng := rand.New(rand.NewPCG(13, 14))
		m := Matrix{Type: c.t, Rows: c.rows, Cols: c.cols, Data: randomRows(rng, c.t, c.rows, c.cols)}
		for _, threads := range []int{1, 2} {
			for _, n := range []int{1, 64} {
				name := fmt.Sprintf("%v_%dx%d/n=%d/threads=%d", c.t, c.cols, c.rows, n, threads)
				b.Run(name, func(b *testing.B) {
					p := NewPool(threads)
					defer p.Close()
					x := randomActs(rng, n, c.cols)
					dst := make([]float32, n*c.rows)
					p.MatMul(dst, m, x, n)
					b.ResetTimer()
					cpu0 := processCPU()
					for i := 0; i < b.N; i++ {
						p.MatMul(dst, m, x, n)
					}
					cpu := processCPU() - cpu0
					flop := 2 * float64(c.rows) * float64(c.cols) * float64(n) * float64(b.N)
					b.ReportMetric(flop/b.Elapsed().Seconds()/1e9, "GFLOP/s")
					if cpu > 0 {
						b.ReportMetric(flop/cpu.Seconds()/1e9, "GFLOP/cpu-s")
					}
					if math.IsNaN(float64(dst[0])) {
						b.Fatal("NaN")
					}
				})
			}
		}
	}
}
