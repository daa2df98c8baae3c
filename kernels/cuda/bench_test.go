//go:build (cuda || cudaemu) && cgo

package cuda

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/blendrag/blendrag/kernels"
)

// The benchmarks below time kernels on the device for the choices the
// backend makes by size: which attention kernel, when cuBLAS, and what a
// launch costs. Each runs its variants interleaved (rounds of each in turn)
// and prints one JSON line per size with the medians and their ratio. Run
// them on a GPU with -test.run '^$' -test.bench . -test.benchtime 1x;
// -test.short uses small sizes (for the emulation, which proves only that
// they run).

// timed returns the median wall time, in milliseconds, of each function
// over rounds interleaved rounds, each call between two device syncs.
func timed(b *testing.B, d *Device, rounds int, fns ...func() error) []float64 {
	b.Helper()
	ms := make([][]float64, len(fns))
	for range rounds {
		for i, fn := range fns {
			if err := d.Sync(); err != nil {
				b.Fatal(err)
			}
			t0 := time.Now()
			if err := fn(); err != nil {
				b.Fatal(err)
			}
			if err := d.Sync(); err != nil {
				b.Fatal(err)
			}
			ms[i] = append(ms[i], float64(time.Since(t0).Microseconds())/1000)
		}
	}
	med := make([]float64, len(fns))
	for i := range ms {
		slices.Sort(ms[i])
		med[i] = ms[i][len(ms[i])/2]
	}
	return med
}

func printJSON(b *testing.B, v map[string]any) {
	out, err := json.Marshal(v)
	if err != nil {
		b.Fatal(err)
	}
	fmt.Println(string(out))
}

// BenchmarkAttentionTileVsSplit: causal prefill attention in SmolLM2's
// shape (9 query heads, 3 KV heads of 64) over n = nKeys rows, with the
// tiled kernel (attend_tile) and the split kernel alone (attend_split):
// the data for ftMinRows, from which Attend takes the tiled kernel.
func BenchmarkAttentionTileVsSplit(b *testing.B) {
	d := openDevice(b)
	sizes := []int{32, 64, 128, 512, 2048, 6144}
	if testing.Short() {
		sizes = []int{64}
	}
	sh := kernels.AttnShape{Heads: 9, KVHeads: 3, HeadDim: 64}
	r := rand.New(rand.NewPCG(1, 2))
	for range b.N {
		for _, n := range sizes {
			q, k, v := devF32s(b, d, randF32(r, n*sh.QDim(), 1)), devF32s(b, d, randF32(r, n*sh.KVDim(), 1)), devF32s(b, d, randF32(r, n*sh.KVDim(), 1))
			pos := make([]int32, n)
			for i := range pos {
				pos[i] = int32(i)
			}
			p := devI32s(b, d, pos)
			out := devZeros(b, d, n*sh.QDim())
			med := timed(b, d, 5,
				func() error { return d.attendSplit(out, q, k, v, p, p, n, n, sh, nil, true) },
				func() error { return d.attendSplit(out, q, k, v, p, p, n, n, sh, nil, false) })
			printJSON(b, map[string]any{"bench": "attention", "rows": n, "tile_ms": med[0], "split_ms": med[1],
				"tile_speedup": med[1] / med[0], "tile_by_default": useTile(n, sh)})
		}
	}
}

// BenchmarkMatMulExactVsBLAS: the exact Q4_1 product (activations
// quantised, the CPU's float order) against cuBLAS SGEMM on the matrix's
// float32 copy (the "+blas" device; random values of its own here), for SmolLM2's up (576 → 1536) and
// down (1536 → 576) shapes and n activation rows: the data for
// model.BLASMinRows.
func BenchmarkMatMulExactVsBLAS(b *testing.B) {
	d := openDevice(b)
	ns := []int{1, 8, 32, 128, 512, 2048}
	if testing.Short() {
		ns = []int{8}
	}
	r := rand.New(rand.NewPCG(3, 4))
	for range b.N {
		for _, shape := range [][2]int{{1536, 576}, {576, 1536}} {
			rows, cols := shape[0], shape[1]
			m := randMatrix(r, kernels.Q4_1, rows, cols)
			exact, err := d.UploadMatrix(m)
			if err != nil {
				b.Fatal(err)
			}
			fm := randMatrix(r, kernels.F32, rows, cols) // the timing does not depend on the values
			fl, err := d.UploadMatrix(fm)
			if err != nil {
				b.Fatal(err)
			}
			for _, n := range ns {
				x, y := devF32s(b, d, randF32(r, n*cols, 1)), devZeros(b, d, n*rows)
				med := timed(b, d, 7,
					func() error { return d.MatMul(y, exact, x, n) },
					func() error { return d.MatMulBLAS(y, fl, x, n) })
				printJSON(b, map[string]any{"bench": "matmul", "rows": rows, "cols": cols, "n": n,
					"exact_ms": med[0], "blas_ms": med[1], "blas_speedup": med[0] / med[1]})
			}
			if err := errors.Join(d.FreeMatrix(exact), d.FreeMatrix(fl)); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkLaunchCost: 640 launches of a tiny kernel (a decode step's
// count), back to back, then one sync — the host's cost per launch — and
// the device's own time for them (a profile): whether a decode step is
// bound by the host's launches.
func BenchmarkLaunchCost(b *testing.B) {
	d := openDevice(b)
	const launches = 640
	x, y := devF32s(b, d, make([]float32, 576)), devF32s(b, d, make([]float32, 576))
	for range b.N {
		med := timed(b, d, 5, func() error {
			for range launches {
				if err := d.Add(x, y, 576); err != nil {
					return err
				}
			}
			return nil
		})
		if err := d.StartProfile(); err != nil {
			b.Fatal(err)
		}
		for range launches {
			if err := d.Add(x, y, 576); err != nil {
				b.Fatal(err)
			}
		}
		p, err := d.StopProfile()
		if err != nil {
			b.Fatal(err)
		}
		printJSON(b, map[string]any{"bench": "launch", "launches": launches, "wall_ms": med[0],
			"us_per_launch": med[0] * 1000 / launches, "device_us_per_launch": float64(p.Busy.Microseconds()) / launches})
	}
}
