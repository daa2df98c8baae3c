package main

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/blendrag/blendrag/kernels"
)

// kernelsResult is the JSON of `bench kernels`.
type kernelsResult struct {
	Threads int `json:"threads"`
	// Peak float32 FMA GFLOP/s of one goroutine and of Threads goroutines,
	// and the memory read bandwidth (GB/s, 256 MiB swept by Threads
	// goroutines), all measured in this process.
	PeakGFLOPS1 float64      `json:"peak_gflops_1thread"`
	PeakGFLOPSN float64      `json:"peak_gflops_nthreads"`
	MemReadGBs  float64      `json:"mem_read_gb_s"`
	GEMM        []gemmResult `json:"gemm"`
	GEMV        []gemvResult `json:"gemv"`
}

// gemmResult is one Pool.MatMul of N rows against a Rows×Cols matrix.
type gemmResult struct {
	Type        string  `json:"type"`
	Shape       string  `json:"shape"` // M×K×N: activation rows × inputs × outputs
	GFLOPS      float64 `json:"gflops"`
	PctOfPeakN  float64 `json:"pct_of_peak"`
	MillisPerOp float64 `json:"ms"`
	// RelRMSErr is the accuracy cost of quantising the activations: the RMS
	// of (MatMul − f32 path) over the RMS of the f32 path, where the f32
	// path multiplies the dequantized weights by the float32 activations.
	// Only for the first shape of each quantized type.
	RelRMSErr float64 `json:"rel_rms_err_vs_f32,omitempty"`
}

// gemvResult is one single-row MatMul (decode), reported as weight bytes
// streamed per second.
type gemvResult struct {
	Type        string  `json:"type"`
	Shape       string  `json:"shape"` // outputs × inputs
	GBs         float64 `json:"gb_s"`
	PctOfMemBW  float64 `json:"pct_of_mem_bw"`
	MicrosPerOp float64 `json:"us"`
}

// kernelsBenchCommand is `blendrag bench kernels`.
func kernelsBenchCommand() *cobra.Command {
	var threads int
	var minTime time.Duration
	var asJSON bool
	c := &cobra.Command{
		Use:   "kernels",
		Short: "GEMM GFLOP/s and GEMV GB/s of the kernels at the default model's shapes, beside the machine's peak",
		Long: "kernels measures, in one process: the float32 FMA peak on 1 and --threads goroutines, the\n" +
			"memory read bandwidth, Pool.MatMul GFLOP/s for 512 activation rows at the SmolLM2 shapes\n" +
			"(576→1536, 1536→576, 576→576, 576→192) for Q4_1, Q4_0, Q8_0, F32 and F16 weights, and the\n" +
			"single-row (decode) GB/s of weight bytes for the Q4_1 576→1536 matrix and the Q8_0 LM head\n" +
			"(49152×576). Each figure is the best of repeated timings of at least --min-time.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if threads <= 0 {
				threads = runtime.GOMAXPROCS(0)
			}
			res, err := benchKernels(threads, minTime)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if asJSON {
				return json.NewEncoder(w).Encode(res)
			}
			fmt.Fprintf(w, "peak fp32 FMA: %.1f GFLOP/s (1 thread), %.1f GFLOP/s (%d threads); memory read %.1f GB/s\n",
				res.PeakGFLOPS1, res.PeakGFLOPSN, res.Threads, res.MemReadGBs)
			for _, g := range res.GEMM {
				fmt.Fprintf(w, "GEMM %-5s %-14s %7.1f GFLOP/s  %5.1f%% of peak  %8.2f ms", g.Type, g.Shape, g.GFLOPS, g.PctOfPeakN, g.MillisPerOp)
				if g.RelRMSErr > 0 {
					fmt.Fprintf(w, "  rel. RMS error vs f32 path %.2e", g.RelRMSErr)
				}
				fmt.Fprintln(w)
			}
			for _, g := range res.GEMV {
				fmt.Fprintf(w, "GEMV %-5s %-11s %7.1f GB/s  %5.1f%% of memory bandwidth  %8.1f µs\n", g.Type, g.Shape, g.GBs, g.PctOfMemBW, g.MicrosPerOp)
			}
			return nil
		},
	}
	c.Flags().IntVar(&threads, "threads", 0, "worker threads (default: all cores)")
	c.Flags().DurationVar(&minTime, "min-time", 300*time.Millisecond, "minimum time of each timing")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

// bestRate runs f (which does work units of work) repeatedly for at least
// minTime, three times, and returns the best units per second.
func bestRate(minTime time.Duration, f func() float64) float64 {
	var best float64
	for rep := 0; rep < 3; rep++ {
		var work float64
		t0 := time.Now()
		for time.Since(t0) < minTime {
			work += f()
		}
		best = max(best, work/time.Since(t0).Seconds())
	}
	return best
}

// onThreads runs f(0) … f(k−1) on k goroutines at once and returns the sum
// of their results.
func onThreads(k int, f func(i int) float64) float64 {
	var wg sync.WaitGroup
	out := make([]float64, k)
	for i := range out {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = f(i)
		}()
	}
	wg.Wait()
	var s float64
	for _, v := range out {
		s += v
	}
	return s
}

func benchKernels(threads int, minTime time.Duration) (*kernelsResult, error) {
	res := &kernelsResult{Threads: threads}
	const fmaIters = 1 << 20
	res.PeakGFLOPS1 = bestRate(minTime, func() float64 { return kernels.FMAPeakFLOPs(fmaIters) }) / 1e9
	res.PeakGFLOPSN = bestRate(minTime, func() float64 {
		return onThreads(threads, func(int) float64 { return kernels.FMAPeakFLOPs(fmaIters) })
	}) / 1e9
	buf := make([]byte, 256<<20)
	for i := range buf {
		buf[i] = byte(i)
	}
	part := len(buf) / threads / 128 * 128
	var sweepErr error
	res.MemReadGBs = bestRate(minTime, func() float64 {
		return onThreads(threads, func(i int) float64 {
			if _, err := kernels.ReadSweep(buf[i*part : (i+1)*part]); err != nil {
				sweepErr = err
			}
			return float64(part)
		})
	}) / 1e9
	if sweepErr != nil {
		return nil, fmt.Errorf("memory sweep: %w", sweepErr)
	}
	buf = nil

	pool := kernels.NewPool(threads)
	defer pool.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	types := []kernels.DType{kernels.Q4_1, kernels.Q4_0, kernels.Q8_0, kernels.F32, kernels.F16}
	shapes := [][2]int{{576, 1536}, {1536, 576}, {576, 576}, {576, 192}} // inputs, outputs
	const n = 512
	for _, t := range types {
		for _, sh := range shapes {
			m, err := randomMatrix(rng, t, sh[1], sh[0])
			if err != nil {
				return nil, err
			}
			x := randomVec(rng, n*sh[0])
			dst := make([]float32, n*sh[1])
			flop := 2 * float64(n) * float64(sh[0]) * float64(sh[1])
			rate := bestRate(minTime, func() float64 { pool.MatMul(dst, m, x, n); return 1 })
			g := gemmResult{Type: t.String(), Shape: fmt.Sprintf("%d×%d×%d", n, sh[0], sh[1]),
				GFLOPS: rate * flop / 1e9, PctOfPeakN: 100 * rate * flop / 1e9 / res.PeakGFLOPSN, MillisPerOp: 1e3 / rate}
			if t != kernels.F32 && t != kernels.F16 && sh == shapes[0] {
				if g.RelRMSErr, err = accuracyVsF32(pool, m, x, dst, n); err != nil {
					return nil, err
				}
			}
			res.GEMM = append(res.GEMM, g)
		}
	}
	for _, c := range []struct {
		t          kernels.DType
		rows, cols int
	}{{kernels.Q4_1, 1536, 576}, {kernels.Q4_1, 576, 1536}, {kernels.Q8_0, 49152, 576}} {
		m, err := randomMatrix(rng, c.t, c.rows, c.cols)
		if err != nil {
			return nil, err
		}
		x := randomVec(rng, c.cols)
		dst := make([]float32, c.rows)
		rate := bestRate(minTime, func() float64 { pool.MatMul(dst, m, x, 1); return 1 })
		gbs := rate * float64(len(m.Data)) / 1e9
		res.GEMV = append(res.GEMV, gemvResult{Type: c.t.String(), Shape: fmt.Sprintf("%d×%d", c.rows, c.cols),
			GBs: gbs, PctOfMemBW: 100 * gbs / res.MemReadGBs, MicrosPerOp: 1e6 / rate})
	}
	return res, nil
}

// randomMatrix returns a rows×cols matrix of type t with random contents:
// normal weights for F32/F16, random quants with moderate fp16 scales for
// the block types.
func randomMatrix(rng *rand.Rand, t kernels.DType, rows, cols int) (kernels.Matrix, error) {
	rb, err := t.RowBytes(cols)
	if err != nil {
		return kernels.Matrix{}, fmt.Errorf("bench matrix: %w", err)
	}
	b := make([]byte, rows*rb)
	switch t {
	case kernels.F32:
		for i := 0; i < rows*cols; i++ {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(float32(rng.NormFloat64())))
		}
	case kernels.F16:
		for i := 0; i < rows*cols; i++ {
			binary.LittleEndian.PutUint16(b[2*i:], kernels.F32ToF16(float32(rng.NormFloat64())))
		}
	default:
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		bb := t.BlockBytes()
		nScales := 1
		if t == kernels.Q4_1 {
			nScales = 2 // d and m
		}
		for blk := 0; blk < len(b)/bb; blk++ {
			for k := 0; k < nScales; k++ {
				binary.LittleEndian.PutUint16(b[blk*bb+2*k:], kernels.F32ToF16(float32(0.01*rng.NormFloat64())))
			}
		}
	}
	return kernels.Matrix{Type: t, Rows: rows, Cols: cols, Data: b}, nil
}

// randomVec returns n normal float32 values.
func randomVec(rng *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	return x
}

// accuracyVsF32 returns the relative RMS difference between got (MatMul of
// m on x, n rows) and the same product with m dequantized to F32.
func accuracyVsF32(pool *kernels.Pool, m kernels.Matrix, x, got []float32, n int) (float64, error) {
	w := make([]float32, m.Rows*m.Cols)
	if err := kernels.Dequantize(m.Type, m.Data, w); err != nil {
		return 0, fmt.Errorf("accuracy of %v: %w", m.Type, err)
	}
	f := kernels.Matrix{Type: kernels.F32, Rows: m.Rows, Cols: m.Cols, Data: make([]byte, 4*len(w))}
	for i, v := range w {
		binary.LittleEndian.PutUint32(f.Data[4*i:], math.Float32bits(v))
	}
	pool.MatMul(got, m, x, n)
	ref := make([]float32, len(got))
	pool.MatMul(ref, f, x, n)
	var num, den float64
	for i := range ref {
		d := float64(got[i]) - float64(ref[i])
		num += d * d
		den += float64(ref[i]) * float64(ref[i])
	}
	return math.Sqrt(num / den), nil
}
