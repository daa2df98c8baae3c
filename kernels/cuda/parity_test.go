//go:build (cuda || cudaemu) && cgo

package cuda

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"testing"

	"github.com/blendrag/blendrag/kernels"
)

// The parity tests run every GPU kernel and its CPU twin in package kernels
// on the same seeded random inputs. Kernels documented as bitwise the CPU's
// are compared bit for bit; the others within the tolerance each test states.
// They need a CUDA GPU: without one the test binary stops at once with the
// driver's initialisation error (TestMain). Built with the cudaemu tag
// instead of cuda they run the same kernels.cu in the CPU emulation of
// emu.cc (no GPU, no CUDA packages; cuBLAS skipped) — a check of the
// kernels' logic and of the launches, not of the GPU.

func openDevice(t testing.TB) *Device {
	t.Helper()
	d, err := Open(0)
	if err != nil {
		t.Fatalf("Open(0): %v", err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return d
}

// devF32s uploads x into a fresh device buffer freed at the end of the test.
func devF32s(t testing.TB, d *Device, x []float32) *Buffer {
	t.Helper()
	b, err := d.NewF32(x)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Free(b) })
	return b
}

func devI32s(t testing.TB, d *Device, x []int32) *Buffer {
	t.Helper()
	b, err := d.NewI32(x)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Free(b) })
	return b
}

func devZeros(t testing.TB, d *Device, n int) *Buffer {
	t.Helper()
	return devF32s(t, d, make([]float32, n))
}

func download(t testing.TB, d *Device, b *Buffer, n int) []float32 {
	t.Helper()
	out := make([]float32, n)
	if err := d.DownloadF32(out, b); err != nil {
		t.Fatal(err)
	}
	return out
}

func randF32(r *rand.Rand, n int, scale float32) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = (r.Float32()*2 - 1) * scale
	}
	return x
}

// randMatrix returns a rows×cols matrix of type t with random blocks whose
// fp16 scales are finite and moderate.
func randMatrix(r *rand.Rand, t kernels.DType, rows, cols int) kernels.Matrix {
	rb, err := t.RowBytes(cols)
	if err != nil {
		panic(err)
	}
	data := make([]byte, rows*rb)
	put16 := func(b []byte, v float32) {
		h := kernels.F32ToF16(v)
		b[0], b[1] = byte(h), byte(h>>8)
	}
	switch t {
	case kernels.F32:
		for i, v := range randF32(r, rows*cols, 1) {
			b := math.Float32bits(v)
			data[4*i], data[4*i+1], data[4*i+2], data[4*i+3] = byte(b), byte(b>>8), byte(b>>16), byte(b>>24)
		}
	case kernels.F16:
		for i, v := range randF32(r, rows*cols, 1) {
			put16(data[2*i:], v)
		}
	default:
		for i := range data {
			data[i] = byte(r.IntN(256))
		}
		bs := t.BlockBytes()
		for off := 0; off < len(data); off += bs {
			put16(data[off:], r.Float32()*0.05)
			if t == kernels.Q4_1 {
				put16(data[off+2:], (r.Float32()*2-1)*0.1)
			}
		}
	}
	return kernels.Matrix{Type: t, Rows: rows, Cols: cols, Data: data}
}

func bitwiseEqual(t *testing.T, what string, got, want []float32) {
	t.Helper()
	for i := range want {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Fatalf("%s: element %d: GPU %v (%#x), CPU %v (%#x)", what, i, got[i], math.Float32bits(got[i]), want[i], math.Float32bits(want[i]))
		}
	}
}

// within fails unless |got−want| ≤ abs + rel·|want| everywhere.
func within(t *testing.T, what string, got, want []float32, abs, rel float64) {
	t.Helper()
	worst, at := 0.0, -1
	for i := range want {
		diff := math.Abs(float64(got[i]) - float64(want[i]))
		if math.IsNaN(float64(got[i])) || diff > abs+rel*math.Abs(float64(want[i])) {
			t.Fatalf("%s: element %d: GPU %v, CPU %v (|diff| %g > %g + %g·|CPU|)", what, i, got[i], want[i], diff, abs, rel)
		}
		if diff > worst {
			worst, at = diff, i
		}
	}
	t.Logf("%s: largest |GPU−CPU| %g at %d", what, worst, at)
}

var matmulCases = []struct {
	typ        kernels.DType
	rows, cols int
	n          int
}{
	{kernels.Q4_1, 96, 576, 1},
	{kernels.Q4_1, 37, 1536, 9},
	{kernels.Q8_0, 70, 576, 1},
	{kernels.Q8_0, 33, 576, 13},
	{kernels.F16, 40, 576, 5},
	{kernels.F16, 9, 100, 3}, // width not a multiple of 8
	{kernels.F32, 50, 576, 6},
	{kernels.F32, 7, 37, 2},
}

func TestQuantizeActsMatchesCPUBitwise(t *testing.T) {
	d := openDevice(t)
	r := rand.New(rand.NewPCG(1, 2))
	for _, typ := range []kernels.DType{kernels.Q4_1, kernels.Q8_0} {
		const n, cols = 5, 576
		x := randF32(r, n*cols, 3)
		x[7] = 0 // a zero and an all-zero block
		clear(x[cols : cols+32])
		at, _ := kernels.ActType(typ)
		rb, _ := at.RowBytes(cols)
		want := make([]byte, n*rb)
		for i := 0; i < n; i++ {
			if err := kernels.QuantizeActs(typ, x[i*cols:(i+1)*cols], want[i*rb:(i+1)*rb]); err != nil {
				t.Fatal(err)
			}
		}
		dst, err := d.Alloc(int64(len(want)))
		if err != nil {
			t.Fatal(err)
		}
		if err := d.QuantizeActs(dst, devF32s(t, d, x), typ, n, cols); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(want))
		if err := d.DownloadBytes(got, dst); err != nil {
			t.Fatal(err)
		}
		_ = d.Free(dst)
		if !slices.Equal(got, want) {
			for j := range want {
				if got[j] != want[j] {
					t.Fatalf("%v activations: byte %d (block %d) GPU %#x, CPU %#x", typ, j, j/(rb/(cols/32)), got[j], want[j])
				}
			}
		}
	}
}

func TestMatMulMatchesCPUBitwise(t *testing.T) {
	d := openDevice(t)
	pool := kernels.NewPool(2)
	defer pool.Close()
	r := rand.New(rand.NewPCG(3, 4))
	for _, c := range matmulCases {
		t.Run(fmt.Sprintf("%v_%dx%d_n%d", c.typ, c.rows, c.cols, c.n), func(t *testing.T) {
			m := randMatrix(r, c.typ, c.rows, c.cols)
			x := randF32(r, c.n*c.cols, 2)
			want := make([]float32, c.n*c.rows)
			pool.MatMul(want, m, x, c.n)
			dm, err := d.UploadMatrix(m)
			if err != nil {
				t.Fatal(err)
			}
			defer d.FreeMatrix(dm)
			dst := devZeros(t, d, c.n*c.rows)
			if err := d.MatMul(dst, dm, devF32s(t, d, x), c.n); err != nil {
				t.Fatal(err)
			}
			bitwiseEqual(t, "matmul", download(t, d, dst, c.n*c.rows), want)
		})
	}
}

// TestMatMulMultiMatchesTheCPUAndQuantisesOnce: MatMulMulti over matrices
// of mixed types (two Q4_1, a Q8_0, an F32, a Q4_1 of other rows) gives
// each the CPU's product bit for bit, and quantises the activations once
// per run of matrices with the same activation type (3 times here).
func TestMatMulMultiMatchesTheCPUAndQuantisesOnce(t *testing.T) {
	d := openDevice(t)
	pool := kernels.NewPool(2)
	defer pool.Close()
	r := rand.New(rand.NewPCG(7, 8))
	const cols, n = 576, 5
	types := []kernels.DType{kernels.Q4_1, kernels.Q4_1, kernels.Q8_0, kernels.F32, kernels.Q4_1}
	rows := []int{64, 40, 32, 24, 96}
	x := randF32(r, n*cols, 2)
	dx := devF32s(t, d, x)
	var ms []*Matrix
	var dsts []*Buffer
	var wants [][]float32
	for i, typ := range types {
		m := randMatrix(r, typ, rows[i], cols)
		want := make([]float32, n*rows[i])
		pool.MatMul(want, m, x, n)
		dm, err := d.UploadMatrix(m)
		if err != nil {
			t.Fatal(err)
		}
		defer d.FreeMatrix(dm)
		ms, dsts, wants = append(ms, dm), append(dsts, devZeros(t, d, n*rows[i])), append(wants, want)
	}
	if err := d.StartProfile(); err != nil {
		t.Fatal(err)
	}
	if err := d.MatMulMulti(dsts, ms, dx, n); err != nil {
		t.Fatal(err)
	}
	p, err := d.StopProfile()
	if err != nil {
		t.Fatal(err)
	}
	for i := range ms {
		bitwiseEqual(t, fmt.Sprintf("matrix %d (%v)", i, types[i]), download(t, d, dsts[i], n*rows[i]), wants[i])
	}
	calls := map[string]int{}
	for _, op := range p.Ops {
		calls[op.Name] = op.Calls
	}
	if calls["quant_q8"] != 3 || calls["mm_q4_1"] != 3 || calls["mm_q8_0"] != 1 || calls["mm_f32"] != 1 {
		t.Errorf("launches %v: want 3 quantisations, 3 Q4_1, 1 Q8_0 and 1 F32 products", calls)
	}
	if err := d.MatMulMulti(dsts[:1], ms, dx, n); !errors.Is(err, kernels.ErrShape) {
		t.Errorf("5 matrices into 1 output: %v, want ErrShape", err)
	}
}

// TestMatMulBatchInvariant checks that a row's product does not depend on
// how many rows are computed with it (rows 0…n−1 together vs one at a time).
func TestMatMulBatchInvariant(t *testing.T) {
	d := openDevice(t)
	r := rand.New(rand.NewPCG(5, 6))
	for _, typ := range []kernels.DType{kernels.Q4_1, kernels.Q8_0, kernels.F16, kernels.F32} {
		const rows, cols, n = 45, 576, 11
		dm, err := d.UploadMatrix(randMatrix(r, typ, rows, cols))
		if err != nil {
			t.Fatal(err)
		}
		x := randF32(r, n*cols, 1)
		all := devZeros(t, d, n*rows)
		if err := d.MatMul(all, dm, devF32s(t, d, x), n); err != nil {
			t.Fatal(err)
		}
		batch := download(t, d, all, n*rows)
		one := devZeros(t, d, rows)
		for i := 0; i < n; i++ {
			if err := d.MatMul(one, dm, devF32s(t, d, x[i*cols:(i+1)*cols]), 1); err != nil {
				t.Fatal(err)
			}
			bitwiseEqual(t, fmt.Sprintf("%v row %d alone vs in a batch of %d", typ, i, n), download(t, d, one, rows), batch[i*rows:(i+1)*rows])
		}
		_ = d.FreeMatrix(dm)
	}
}

// TestMatMulBLASMatchesCPU: cuBLAS SGEMM agrees with the CPU's F32 product
// within 1e-5 of Σ|w·x| per output (reduction order differs; TF32 is off by
// default in cuBLAS for SGEMM). In the CPU emulation a plain float32
// product stands in for cuBLAS, so there it checks MatMulBLAS's layout and
// shapes, not cuBLAS.
func TestMatMulBLASMatchesCPU(t *testing.T) {
	d := openDevice(t)
	pool := kernels.NewPool(2)
	defer pool.Close()
	r := rand.New(rand.NewPCG(7, 8))
	const rows, cols, n = 64, 576, 33
	m := randMatrix(r, kernels.F32, rows, cols)
	x := randF32(r, n*cols, 1)
	want := make([]float32, n*rows)
	pool.MatMul(want, m, x, n)
	dm, err := d.UploadMatrix(m)
	if err != nil {
		t.Fatal(err)
	}
	defer d.FreeMatrix(dm)
	dst := devZeros(t, d, n*rows)
	if err := d.MatMulBLAS(dst, dm, devF32s(t, d, x), n); err != nil {
		t.Fatal(err)
	}
	// Σ|w·x| ≤ cols·max|w|·max|x| = 576.
	within(t, "cuBLAS F32 matmul", download(t, d, dst, n*rows), want, 576*1e-5, 0)
}

func TestRMSNormMatchesCPUBitwise(t *testing.T) {
	d := openDevice(t)
	r := rand.New(rand.NewPCG(9, 10))
	const n, dim = 7, 576
	const eps = 1e-5
	x := randF32(r, n*dim, 4)
	w := randF32(r, dim, 1.5)
	for _, gain := range []bool{true, false} {
		want := make([]float32, n*dim)
		var wb *Buffer
		var wc []float32
		if gain {
			wb, wc = devF32s(t, d, w), w
		}
		for i := 0; i < n; i++ {
			kernels.RMSNorm(want[i*dim:(i+1)*dim], x[i*dim:(i+1)*dim], wc, eps)
		}
		dst := devZeros(t, d, n*dim)
		if err := d.RMSNorm(dst, devF32s(t, d, x), wb, n, dim, eps); err != nil {
			t.Fatal(err)
		}
		bitwiseEqual(t, fmt.Sprintf("rmsnorm (gain %v)", gain), download(t, d, dst, n*dim), want)
	}
}

// TestAddRMSNormIsAddThenRMSNorm: the fused residual addition and norm
// leaves x = x + res and dst = RMSNorm(x + res) bit for bit as the CPU's
// Add and RMSNorm, with dst a buffer of its own and dst the residual itself
// (the backend's use).
func TestAddRMSNormIsAddThenRMSNorm(t *testing.T) {
	d := openDevice(t)
	r := rand.New(rand.NewPCG(25, 26))
	const n, dim = 5, 576
	const eps = 1e-5
	x, res, w := randF32(r, n*dim, 4), randF32(r, n*dim, 2), randF32(r, dim, 1.5)
	sum := slices.Clone(x)
	kernels.Add(sum, res)
	want := make([]float32, n*dim)
	for i := 0; i < n; i++ {
		kernels.RMSNorm(want[i*dim:(i+1)*dim], sum[i*dim:(i+1)*dim], w, eps)
	}
	wb := devF32s(t, d, w)
	for _, into := range []string{"own", "residual"} {
		xb, rb := devF32s(t, d, x), devF32s(t, d, res)
		dst := rb
		if into == "own" {
			dst = devZeros(t, d, n*dim)
		}
		if err := d.AddRMSNorm(dst, xb, rb, wb, n, dim, eps); err != nil {
			t.Fatal(err)
		}
		bitwiseEqual(t, "add-rmsnorm sum (into "+into+")", download(t, d, xb, n*dim), sum)
		bitwiseEqual(t, "add-rmsnorm norm (into "+into+")", download(t, d, dst, n*dim), want)
	}
}

// TestRoPEPairIsTwoRoPEs: rotating queries and keys in one launch gives
// bit for bit the two separate rotations.
func TestRoPEPairIsTwoRoPEs(t *testing.T) {
	d := openDevice(t)
	r := rand.New(rand.NewPCG(27, 28))
	const n, qHeads, kHeads, headDim = 6, 9, 3, 64
	tab, err := kernels.NewRoPETable(headDim, 100000, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	dr, err := d.NewRoPE(tab)
	if err != nil {
		t.Fatal(err)
	}
	defer d.FreeRoPE(dr)
	q, k := randF32(r, n*qHeads*headDim, 2), randF32(r, n*kHeads*headDim, 2)
	pos := devI32s(t, d, []int32{0, 5, 17, 300, 4000, 8191})
	q1, k1, q2, k2 := devF32s(t, d, q), devF32s(t, d, k), devF32s(t, d, q), devF32s(t, d, k)
	if err := errors.Join(d.RoPE(q1, dr, pos, n, qHeads), d.RoPE(k1, dr, pos, n, kHeads)); err != nil {
		t.Fatal(err)
	}
	if err := d.RoPEPair(q2, k2, dr, pos, n, qHeads, kHeads); err != nil {
		t.Fatal(err)
	}
	bitwiseEqual(t, "queries", download(t, d, q2, len(q)), download(t, d, q1, len(q)))
	bitwiseEqual(t, "keys", download(t, d, k2, len(k)), download(t, d, k1, len(k)))
}

// TestRoPEMatchesCPU: rotations agree with RoPETable.Apply and Shift to
// within 1 ulp of the larger of the pair's inputs (the float64 sincos of
// the GPU and Go's math.Sincos may round differently in the last bit, which
// rarely changes the float32 cosine; the rotation itself is the CPU's).
func TestRoPEMatchesCPU(t *testing.T) {
	d := openDevice(t)
	r := rand.New(rand.NewPCG(11, 12))
	const heads, headDim, n = 9, 64, 12
	for _, neox := range []bool{false, true} {
		tab, err := kernels.NewRoPETable(headDim, 100000, neox, nil)
		if err != nil {
			t.Fatal(err)
		}
		dr, err := d.NewRoPE(tab)
		if err != nil {
			t.Fatal(err)
		}
		x := randF32(r, n*heads*headDim, 2)
		pos := make([]int32, n)
		for i := range pos {
			pos[i] = int32(r.IntN(8192))
		}
		pos[0] = 0
		want := slices.Clone(x)
		for i := 0; i < n; i++ {
			tab.Apply(want[i*heads*headDim:(i+1)*heads*headDim], heads, int(pos[i]))
		}
		xb := devF32s(t, d, x)
		if err := d.RoPE(xb, dr, devI32s(t, d, pos), n, heads); err != nil {
			t.Fatal(err)
		}
		within(t, fmt.Sprintf("rope (neox %v)", neox), download(t, d, xb, len(x)), want, 2*ulp(2), 0)

		// Shift by Δ = 517 and by a negative Δ.
		for _, delta := range []int{517, -300} {
			for i := 0; i < n; i++ {
				tab.Shift(want[i*heads*headDim:(i+1)*heads*headDim], heads, delta)
			}
			if err := d.RoPEShift(xb, dr, n, heads, delta); err != nil {
				t.Fatal(err)
			}
			within(t, fmt.Sprintf("rope shift %d (neox %v)", delta, neox), download(t, d, xb, len(x)), want, 4*ulp(2), 0)
		}
		_ = d.FreeRoPE(dr)
	}
}

// ulp returns the spacing of float32 values at magnitude v.
func ulp(v float32) float64 {
	return float64(math.Nextafter32(v, float32(math.Inf(1))) - v)
}

// cpuAttend runs kernels.Attend for every (query, KV head).
func cpuAttend(q, keys, vals []float32, keyPos, qPos []int32, sh kernels.AttnShape, g *kernels.KeyGroups) []float32 {
	out := make([]float32, len(qPos)*sh.QDim())
	var s kernels.AttnScratch
	for i, p := range qPos {
		for kvh := 0; kvh < sh.KVHeads; kvh++ {
			kernels.Attend(out[i*sh.QDim():(i+1)*sh.QDim()], q[i*sh.QDim():(i+1)*sh.QDim()], keys, vals, keyPos, p, sh, kvh, g, &s)
		}
	}
	return out
}

// TestAttendMatchesCPU covers causal prefill, decode, a subset of rows
// recomputed against a cache with repeated positions (APE's position reuse),
// a query that sees no key, and APE's two-group merge. Tolerance: 2e-5
// absolute (values are in [−1, 1]; the GPU sums in a different order and
// uses expf).
func TestAttendMatchesCPU(t *testing.T) {
	d := openDevice(t)
	r := rand.New(rand.NewPCG(13, 14))
	sh := kernels.AttnShape{Heads: 9, KVHeads: 3, HeadDim: 64}
	const nKeys = 150
	keyPos := make([]int32, nKeys)
	for i := range keyPos {
		keyPos[i] = int32(i)
	}
	// APE layout: P at 0..19, two chunks both at 20..79 (positions reused),
	// then Q rows at 80..89 — 20 + 60 + 60 + 10 = 150 keys.
	apePos := make([]int32, nKeys)
	apeOf := make([]uint8, nKeys)
	for i := range apePos {
		switch {
		case i < 20:
			apePos[i] = int32(i)
		case i < 80:
			apePos[i], apeOf[i] = int32(i), 1
		case i < 140:
			apePos[i], apeOf[i] = int32(i-60), 1
		default:
			apePos[i] = int32(i - 60)
		}
	}
	ape := &kernels.KeyGroups{Of: apeOf, Temp: []float32{1, 0.9}, LSEScale: []float32{1, 0.9}}
	plain2 := &kernels.KeyGroups{Of: apeOf, Temp: []float32{1, 1}, LSEScale: []float32{1, 1}}
	seq := func(lo, hi int) []int32 {
		p := make([]int32, hi-lo)
		for i := range p {
			p[i] = int32(lo + i)
		}
		return p
	}
	cases := []struct {
		name   string
		keyPos []int32
		qPos   []int32
		groups *kernels.KeyGroups
	}{
		{"causal prefill", keyPos, seq(0, nKeys), nil},
		{"decode", keyPos, []int32{nKeys - 1}, nil},
		{"subset rows", keyPos, []int32{3, 40, 41, 97, 149}, nil},
		{"sees no key", seq(10, 10+nKeys), []int32{5, 12}, nil},
		{"ape groups", apePos, []int32{80, 85, 89}, ape},
		{"two groups T=S=1", apePos, []int32{80, 89}, plain2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			nQ := len(c.qPos)
			q := randF32(r, nQ*sh.QDim(), 1)
			keys := randF32(r, nKeys*sh.KVDim(), 1)
			vals := randF32(r, nKeys*sh.KVDim(), 1)
			want := cpuAttend(q, keys, vals, c.keyPos, c.qPos, sh, c.groups)
			var g *KeyGroups
			if c.groups != nil {
				var err error
				if g, err = d.UploadKeyGroups(c.groups); err != nil {
					t.Fatal(err)
				}
				defer d.FreeKeyGroups(g)
			}
			out := devZeros(t, d, nQ*sh.QDim())
			err := d.Attend(out, devF32s(t, d, q), devF32s(t, d, keys), devF32s(t, d, vals),
				devI32s(t, d, c.keyPos), devI32s(t, d, c.qPos), nQ, nKeys, sh, g)
			if err != nil {
				t.Fatal(err)
			}
			within(t, c.name, download(t, d, out, nQ*sh.QDim()), want, 2e-5, 0)
		})
	}
}

// TestScatterRowsMatchesCopy: the CPU twin is model.Pass.WriteKV's row copy.
func TestScatterRowsMatchesCopy(t *testing.T) {
	d := openDevice(t)
	r := rand.New(rand.NewPCG(15, 16))
	const rows, width = 40, 192
	cache := randF32(r, rows*width, 1)
	idx := []int32{0, 7, 8, 21, 39}
	fresh := randF32(r, len(idx)*width, 1)
	want := slices.Clone(cache)
	for i, row := range idx {
		copy(want[int(row)*width:(int(row)+1)*width], fresh[i*width:(i+1)*width])
	}
	cb := devF32s(t, d, cache)
	if err := d.ScatterRows(cb, rows, devF32s(t, d, fresh), idx, width); err != nil {
		t.Fatal(err)
	}
	bitwiseEqual(t, "scatter", download(t, d, cb, rows*width), want)
}

// TestScatterRowsKVWritesBothFromOneIndex: ScatterRowsKV writes keys and
// values (each its own source) to the rows a RowIndex holds, in one
// launch; setting the same rows again uploads nothing, other rows are
// uploaded while earlier scatters may still read the old ones, and an
// index at or beyond its bound, or a bound beyond the destination, is
// refused.
func TestScatterRowsKVWritesBothFromOneIndex(t *testing.T) {
	d := openDevice(t)
	r := rand.New(rand.NewPCG(19, 20))
	const rows, width = 40, 192
	var ri RowIndex
	defer d.FreeRowIndex(&ri)
	k, v := randF32(r, rows*width, 1), randF32(r, rows*width, 1)
	dk, dv := devF32s(t, d, k), devF32s(t, d, v)
	for round, idx := range [][]int32{{0, 7, 8, 21, 39}, {0, 7, 8, 21, 39}, {3, 2}} {
		fk, fv := randF32(r, len(idx)*width, 1), randF32(r, len(idx)*width, 1)
		for i, row := range idx {
			copy(k[int(row)*width:(int(row)+1)*width], fk[i*width:(i+1)*width])
			copy(v[int(row)*width:(int(row)+1)*width], fv[i*width:(i+1)*width])
		}
		if err := d.StartProfile(); err != nil {
			t.Fatal(err)
		}
		if err := d.SetRowIndex(&ri, idx, rows); err != nil {
			t.Fatal(err)
		}
		if err := d.ScatterRowsKV(dk, dv, rows, devF32s(t, d, fk), devF32s(t, d, fv), &ri, width); err != nil {
			t.Fatal(err)
		}
		p, err := d.StopProfile()
		if err != nil {
			t.Fatal(err)
		}
		calls := map[string]int{}
		for _, op := range p.Ops {
			calls[op.Name] = op.Calls
		}
		if wantUp := map[bool]int{true: 0, false: 1}[round == 1]; calls["scatter_rows"] != 1 || calls["upload_queued"] != wantUp {
			t.Errorf("round %d: %v, want one scatter and %d index uploads", round, calls, wantUp)
		}
		bitwiseEqual(t, fmt.Sprintf("round %d keys", round), download(t, d, dk, rows*width), k)
		bitwiseEqual(t, fmt.Sprintf("round %d values", round), download(t, d, dv, rows*width), v)
	}
	if err := d.SetRowIndex(&ri, []int32{1, rows}, rows); !errors.Is(err, kernels.ErrShape) {
		t.Errorf("index %d of %d rows: %v, want ErrShape", rows, rows, err)
	}
	if err := d.SetRowIndex(&ri, []int32{1}, rows); err != nil {
		t.Fatal(err)
	}
	if err := d.ScatterRowsKV(dk, dv, rows-1, dk, dv, &ri, width); !errors.Is(err, kernels.ErrShape) {
		t.Errorf("an index bound of %d into %d rows: %v, want ErrShape", rows, rows-1, err)
	}
}

// TestSwiGLUMatchesCPU: within 4 ulp relative (expf vs the CPU's exp).
func TestSwiGLUMatchesCPU(t *testing.T) {
	d := openDevice(t)
	r := rand.New(rand.NewPCG(17, 18))
	const n = 3 * 1536
	gate, up := randF32(r, n, 8), randF32(r, n, 2)
	want := make([]float32, n)
	kernels.SwiGLU(want, gate, up)
	dst := devZeros(t, d, n)
	if err := d.SwiGLU(dst, devF32s(t, d, gate), devF32s(t, d, up), n); err != nil {
		t.Fatal(err)
	}
	within(t, "swiglu", download(t, d, dst, n), want, 1e-30, 4*0x1p-23)
}

// TestViewsAddressTheirWindow: a kernel on a view touches only that window
// (RMSNorm of row 2 of 4 through views).
func TestViewsAddressTheirWindow(t *testing.T) {
	d := openDevice(t)
	r := rand.New(rand.NewPCG(23, 24))
	const n, dim = 4, 64
	x := randF32(r, n*dim, 1)
	want := slices.Clone(x)
	kernels.RMSNorm(want[2*dim:3*dim], x[2*dim:3*dim], nil, 1e-6)
	xb := devF32s(t, d, x)
	row, err := xb.View(2*dim*4, dim*4)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.RMSNorm(row, row, nil, 1, dim, 1e-6); err != nil {
		t.Fatal(err)
	}
	bitwiseEqual(t, "rmsnorm through a view", download(t, d, xb, n*dim), want)
}

func TestAddMatchesCPUBitwise(t *testing.T) {
	d := openDevice(t)
	r := rand.New(rand.NewPCG(19, 20))
	const n = 1000
	x, a := randF32(r, n, 3), randF32(r, n, 3)
	want := slices.Clone(x)
	kernels.Add(want, a)
	xb := devF32s(t, d, x)
	if err := d.Add(xb, devF32s(t, d, a), n); err != nil {
		t.Fatal(err)
	}
	bitwiseEqual(t, "add", download(t, d, xb, n), want)
}

// TestBadInputsReturnErrors: shape mistakes are errors wrapping
// kernels.ErrShape (or ErrUnsupported), never a launch.
func TestBadInputsReturnErrors(t *testing.T) {
	d := openDevice(t)
	r := rand.New(rand.NewPCG(21, 22))
	small := devZeros(t, d, 10)
	dm, err := d.UploadMatrix(randMatrix(r, kernels.Q8_0, 8, 64))
	if err != nil {
		t.Fatal(err)
	}
	defer d.FreeMatrix(dm)
	sh := kernels.AttnShape{Heads: 9, KVHeads: 3, HeadDim: 64}
	for _, c := range []struct {
		name string
		err  error
		want error
	}{
		{"matmul input too short", d.MatMul(devZeros(t, d, 8), dm, small, 1), kernels.ErrShape},
		{"matmul n = 0", d.MatMul(small, dm, small, 0), kernels.ErrShape},
		{"cuBLAS on Q8_0", d.MatMulBLAS(small, dm, small, 1), kernels.ErrUnsupported},
		{"scatter row out of range", d.ScatterRows(small, 2, small, []int32{2}, 5), kernels.ErrShape},
		{"attention buffers too short", d.Attend(small, small, small, small, small, small, 1, 1, sh, nil), kernels.ErrShape},
		{"attention head dim 48", d.Attend(small, small, small, small, small, small, 1, 1, kernels.AttnShape{Heads: 1, KVHeads: 1, HeadDim: 48}, nil), kernels.ErrShape},
		{"rmsnorm dim 0", d.RMSNorm(small, small, nil, 1, 0, 1e-5), kernels.ErrShape},
		{"add too long", d.Add(small, small, 11), kernels.ErrShape},
	} {
		if !errors.Is(c.err, c.want) {
			t.Errorf("%s: error %v, want one wrapping %v", c.name, c.err, c.want)
		}
	}
	if _, err := small.View(8, 40); !errors.Is(err, kernels.ErrShape) {
		t.Errorf("view past the end: error %v, want ErrShape", err)
	}
	if v, err := small.View(4, 8); err != nil || d.Free(v) == nil {
		t.Errorf("View(4, 8) = %v; Free of a view must fail", err)
	}
	if _, err := d.UploadMatrix(randMatrix(r, kernels.Q4_0, 2, 32)); !errors.Is(err, kernels.ErrUnsupported) {
		t.Errorf("Q4_0 upload: error %v, want ErrUnsupported", err)
	}
	if err := d.Sync(); err != nil {
		t.Fatalf("device failed after rejected calls: %v", err)
	}
}

func TestOpenRejectsMissingDevice(t *testing.T) {
	for _, ord := range []int{-1, 1 << 20} {
		if d, err := Open(ord); err == nil {
			d.Close()
			t.Errorf("Open(%d) succeeded", ord)
		}
	}
}

func TestClosedDeviceReturnsErrClosed(t *testing.T) {
	d, err := Open(0)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := d.Alloc(16); !errors.Is(err, ErrClosed) {
		t.Errorf("Alloc after Close: %v, want ErrClosed", err)
	}
}

// TestMain fails the whole run at once, with the driver's reason, when no
// GPU can be opened.
func TestMain(m *testing.M) {
	d, err := Open(0)
	if err != nil {
		fmt.Fprintf(os.Stderr, "cuda parity tests need a CUDA GPU: %v\n", err)
		os.Exit(2)
	}
	fmt.Fprintf(os.Stderr, "cuda parity tests on device 0: %s\n", d.Name())
	if err := d.Close(); err != nil {
		fmt.Fprintf(os.Stderr, "closing device 0: %v\n", err)
		os.Exit(2)
	}
	os.Exit(m.Run())
}

// TestAttendLongContextMatchesCPUAndIsBatchInvariant: over 700 keys (three
// key blocks of the split kernel, the last one partial, with a mask that
// hides some keys of every block from some rows) attention agrees with the
// CPU, and a row computed alone is bitwise the row computed among others.
func TestAttendLongContextMatchesCPUAndIsBatchInvariant(t *testing.T) {
	d := openDevice(t)
	r := rand.New(rand.NewPCG(21, 22))
	sh := kernels.AttnShape{Heads: 6, KVHeads: 2, HeadDim: 64}
	const nKeys = 700
	keyPos := make([]int32, nKeys)
	for i := range keyPos {
		keyPos[i] = int32(i)
	}
	qPos := []int32{0, 255, 256, 300, 511, 699}
	nQ := len(qPos)
	q := randF32(r, nQ*sh.QDim(), 1)
	keys := randF32(r, nKeys*sh.KVDim(), 1)
	vals := randF32(r, nKeys*sh.KVDim(), 1)
	want := cpuAttend(q, keys, vals, keyPos, qPos, sh, nil)
	dk, dv, dkp := devF32s(t, d, keys), devF32s(t, d, vals), devI32s(t, d, keyPos)
	out := devZeros(t, d, nQ*sh.QDim())
	if err := d.Attend(out, devF32s(t, d, q), dk, dv, dkp, devI32s(t, d, qPos), nQ, nKeys, sh, nil); err != nil {
		t.Fatal(err)
	}
	all := download(t, d, out, nQ*sh.QDim())
	within(t, "long context", all, want, 2e-5, 0)
	for i := range nQ {
		one := devZeros(t, d, sh.QDim())
		qi := q[i*sh.QDim() : (i+1)*sh.QDim()]
		if err := d.Attend(one, devF32s(t, d, qi), dk, dv, dkp, devI32s(t, d, qPos[i:i+1]), 1, nKeys, sh, nil); err != nil {
			t.Fatal(err)
		}
		bitwiseEqual(t, fmt.Sprintf("row %d alone vs among %d", i, nQ), download(t, d, one, sh.QDim()), all[i*sh.QDim():(i+1)*sh.QDim()])
	}
}
