package blend

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/blendrag/blendrag/kernels"
	"github.com/blendrag/blendrag/model"
	"github.com/blendrag/blendrag/model/modeltest"
)

// BenchmarkPlaceSerialVsParallel times writing the chunks' cached KV into
// a fused context (every layer's load: copy, and the RoPE rotation of moved
// chunks — reuse moves all but the first), on one worker and on the
// model's pool of GOMAXPROCS workers, interleaved in one process. The
// shape is the default model's KV (30 layers, 3 KV heads of 64) with 10
// chunks of 600 rows, the long fused context; the weights play no
// part. It prints one JSON line with the medians and their ratio. Run
// with -benchtime=1x.
func BenchmarkPlaceSerialVsParallel(b *testing.B) {
	const layers, chunks, rows = 30, 10, 600
	path := filepath.Join(b.TempDir(), "m.gguf")
	spec := modeltest.Spec{Layers: layers, Dim: 192, Heads: 3, KVHeads: 3, FFN: 64, Context: 8192, Weights: kernels.F32, Seed: 1}
	if err := modeltest.Write(path, spec); err != nil {
		b.Fatal(err)
	}
	threads := runtime.GOMAXPROCS(0)
	var ms []*model.Model
	for _, n := range []int{1, threads} {
		m, err := model.Load(path, model.Options{Threads: n})
		if err != nil {
			b.Fatal(err)
		}
		defer m.Close()
		ms = append(ms, m)
	}
	c := ms[0].Config
	r := rand.New(rand.NewPCG(1, 2))
	kvs := make([]*model.KV, chunks)
	seg := Segments{Prefix: []int32{1, 2}, Question: []int32{3, 4, 5}}
	for i := range kvs {
		kv := model.NewKV(c)
		toks := make([]int32, rows)
		kv.Grow(toks, model.Positions(2, rows))
		for l := range layers {
			for j := range kv.K[l] {
				kv.K[l][j], kv.V[l][j] = r.Float32(), r.Float32()
			}
		}
		kvs[i] = kv
		seg.Chunks = append(seg.Chunks, toks)
	}
	prefix := model.NewKV(c)
	prefix.Grow(seg.Prefix, model.Positions(0, 2))
	src := MemorySource(kvs)
	place := func(m *model.Model) time.Duration {
		be, err := m.OpenBackend("cpu")
		if err != nil {
			b.Fatal(err)
		}
		f, err := newFuser(be, seg, prefix, src, DefaultOptions(ModeReuse), func(string, int) {})
		if err != nil {
			b.Fatal(err)
		}
		for l := range layers {
			if err := f.load(l); err != nil {
				b.Fatal(err)
			}
		}
		return f.res.Stats.Place
	}
	var serial, parallel []float64
	for range b.N {
		for range 9 {
			serial = append(serial, float64(place(ms[0]))/1e6)
			parallel = append(parallel, float64(place(ms[1]))/1e6)
		}
	}
	med := func(x []float64) float64 { slices.Sort(x); return x[len(x)/2] }
	s, p := med(serial), med(parallel)
	b.ReportMetric(s, "ms-serial")
	b.ReportMetric(p, "ms-parallel")
	out, _ := json.Marshal(map[string]any{"bench": "place", "layers": layers, "chunks": chunks, "rows_per_chunk": rows,
		"threads": threads, "serial_ms_p50": s, "parallel_ms_p50": p, "speedup": s / p})
	fmt.Println(string(out))
}
