package model

import (
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/blendrag/blendrag/kernels"
	"github.com/blendrag/blendrag/model/fetch"
)

// BenchmarkDecodeSpinVsPark compares decode steps of the default model with
// the pool's workers polling between hand-offs (kernels.DefaultSpin) and
// parking at once, interleaved in short bursts in one process so that a
// shared machine's changing load hits both alike. It reports the median
// milliseconds per token of each. Run with -benchtime=1x.
func BenchmarkDecodeSpinVsPark(b *testing.B) {
	path := fetch.GeneratorPath(fetch.Dir())
	if _, err := os.Stat(path); err != nil {
		b.Skipf("default model not found (%v)", err)
	}
	m, err := Load(path, Options{Threads: 2})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	for _, ctxLen := range []int{128, 512, 2048} {
		b.Run("ctx"+strconv.Itoa(ctxLen), func(b *testing.B) {
			kv := NewKV(m.Config)
			toks := make([]int32, ctxLen)
			for i := range toks {
				toks[i] = int32(100 + i*37%20000)
			}
			if _, err := m.Forward(kv, toks, Positions(0, ctxLen), false); err != nil {
				b.Fatal(err)
			}
			const burst, rounds = 8, 12
			modes := []time.Duration{0, kernels.DefaultSpin}
			per := make([][]float64, len(modes))
			for range b.N {
				for r := 0; r < rounds; r++ {
					for k, spin := range modes {
						m.pool.SetSpin(spin)
						kv.Truncate(ctxLen)
						start := time.Now()
						tok := int32(42)
						for range burst {
							if _, err := m.Step(kv, tok); err != nil {
								b.Fatal(err)
							}
						}
						per[k] = append(per[k], float64(time.Since(start).Microseconds())/1000/burst)
					}
				}
			}
			for k, name := range []string{"ms/tok-park", "ms/tok-spin"} {
				slices.Sort(per[k])
				b.ReportMetric(per[k][len(per[k])/2], name)
			}
			m.pool.SetSpin(0)
		})
	}
}
