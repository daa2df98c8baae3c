//go:build (cuda || cudaemu) && cgo

package cuda

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"unsafe"

	"github.com/blendrag/blendrag/kernels"
)

// Launch geometry shared with kernels.cu.
const (
	mmWarps    = 4   // MM_WARPS: weight rows per CUDA block
	mmRows     = 4   // MM_ROWS: activation rows per warp (quantized kernels)
	attThreads = 128 // ATT_THREADS
	faWarps    = 4   // FA_WARPS
	faSplit    = 256 // FA_SPLIT
	faMaxG     = 8   // FA_MAXG
	faMaxD     = 4   // FA_MAXD
	faGBits    = 3   // FA_GBITS
	ftThreads  = 128 // FT_THREADS
	ftMaxND    = 2   // FT_MAXND
	ftMinRows  = 64  // FT_MIN_ROWS
	attMaxG    = 8   // ATT_MAXG
	maxShared  = 48 << 10
	qk         = 32
	maxGridY   = 65535
)

// Matrix is a weight matrix resident on the device, in the same GGML block
// layout as the kernels.Matrix it was uploaded from.
type Matrix struct {
	Type       kernels.DType
	Rows, Cols int
	buf        *Buffer
}

// UploadMatrix copies m to the device. Supported types are the default
// model's: Q4_1, Q8_0, F16 and F32; others give an error wrapping
// kernels.ErrUnsupported. m must pass m.Validate.
func (d *Device) UploadMatrix(m kernels.Matrix) (*Matrix, error) {
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("cuda: upload matrix: %w", err)
	}
	switch m.Type {
	case kernels.Q4_1, kernels.Q8_0, kernels.F16, kernels.F32:
	default:
		return nil, fmt.Errorf("cuda: upload %v matrix: %w", m.Type, kernels.ErrUnsupported)
	}
	if m.Type == kernels.Q4_1 || m.Type == kernels.Q8_0 {
		if nb := m.Cols / qk; mmWarps*mmRows*nb*4 > maxShared {
			return nil, fmt.Errorf("cuda: %v matrix of %d columns exceeds the kernel's shared memory: %w", m.Type, m.Cols, kernels.ErrShape)
		}
	}
	b, err := d.Alloc(int64(len(m.Data)))
	if err != nil {
		return nil, fmt.Errorf("cuda: upload %v matrix %d×%d: %w", m.Type, m.Rows, m.Cols, err)
	}
	if err := d.UploadBytes(b, m.Data); err != nil {
		_ = d.Free(b)
		return nil, fmt.Errorf("cuda: upload %v matrix %d×%d: %w", m.Type, m.Rows, m.Cols, err)
	}
	return &Matrix{Type: m.Type, Rows: m.Rows, Cols: m.Cols, buf: b}, nil
}

// FreeMatrix releases the matrix's device memory.
func (d *Device) FreeMatrix(m *Matrix) error {
	if m == nil {
		return nil
	}
	return d.Free(m.buf)
}

// needF32 checks that b holds at least n float32 values.
func needF32(what string, b *Buffer, n int) error {
	if n < 0 || b == nil || int64(n)*4 > b.size {
		return fmt.Errorf("cuda: %s: need %d float32s, buffer has %d bytes: %w", what, n, sizeOf(b), kernels.ErrShape)
	}
	return nil
}

// actType is the activation block type of quantized weights t and its block
// bytes (kernels.ActType).
func actType(t kernels.DType) (q81 bool, blockBytes int, err error) {
	switch t {
	case kernels.Q4_1:
		return true, 36, nil
	case kernels.Q8_0:
		return false, 34, nil
	}
	return false, 0, fmt.Errorf("cuda: no device activation quantiser for %v weights: %w", t, kernels.ErrUnsupported)
}

// QuantizeActs converts n rows of cols float32 activations in x into dst in
// the block layout kernels.QuantizeActs writes for weights of type t (Q8_1
// for Q4_1, Q8_0 for Q8_0), bit for bit. cols must be a multiple of 32 and
// dst must hold n·ActType(t).RowBytes(cols) bytes.
func (d *Device) QuantizeActs(dst, x *Buffer, t kernels.DType, n, cols int) error {
	q81, bs, err := actType(t)
	if err != nil {
		return err
	}
	if n <= 0 || cols <= 0 || cols%qk != 0 {
		return fmt.Errorf("cuda: quantize %d×%d activations: need positive sizes, columns a multiple of %d: %w", n, cols, qk, kernels.ErrShape)
	}
	if err := needF32("quantize activations", x, n*cols); err != nil {
		return err
	}
	nblocks := n * cols / qk
	if dst == nil || int64(nblocks*bs) > dst.size {
		return fmt.Errorf("cuda: quantize activations: need %d bytes, buffer has %d: %w", nblocks*bs, sizeOf(dst), kernels.ErrShape)
	}
	return d.do(func() error { return d.quantize(dst, x, q81, nblocks) })
}

func (d *Device) quantize(dst, x *Buffer, q81 bool, nblocks int) error {
	flag := 0
	if q81 {
		flag = 1
	}
	const threads = 256
	a := new(args).buf(x).buf(dst).i32(nblocks).i32(flag)
	if err := d.launch(kQuantQ8, ceilDiv(nblocks*32, threads), 1, threads, 0, a); err != nil {
		return fmt.Errorf("cuda: quant_q8: %w", err)
	}
	return nil
}

// MatMul sets dst[i·Rows+o] = W[o]·x[i] for n activation rows x
// ([n × Cols] float32) and the device matrix m, exactly as kernels'
// Pool.MatMul does (bit for bit: quantized weights meet activations
// quantised the same way, every product and sum in the CPU's order), and
// batch-invariant. dst holds [n × Rows] float32.
func (d *Device) MatMul(dst *Buffer, m *Matrix, x *Buffer, n int) error {
	return d.MatMulMulti([]*Buffer{dst}, []*Matrix{m}, x, n)
}

// MatMulMulti is MatMul of each matrix ms[i] with the same activations x
// into dsts[i] (e.g. a layer's Q, K and V projections), with the results
// of separate MatMul calls, bit for bit. The activations are quantised
// once for a run of consecutive matrices that take the same activation
// type, not once per matrix. dsts must not overlap x.
func (d *Device) MatMulMulti(dsts []*Buffer, ms []*Matrix, x *Buffer, n int) error {
	if len(dsts) != len(ms) {
		return fmt.Errorf("cuda: matmul of %d matrices into %d outputs: %w", len(ms), len(dsts), kernels.ErrShape)
	}
	for i, m := range ms {
		if m == nil || n <= 0 || n > maxGridY*mmRows {
			return fmt.Errorf("cuda: matmul of %d rows: need a matrix and 0 < n ≤ %d: %w", n, maxGridY*mmRows, kernels.ErrShape)
		}
		if err := needF32("matmul input", x, n*m.Cols); err != nil {
			return err
		}
		if err := needF32("matmul output", dsts[i], n*m.Rows); err != nil {
			return err
		}
		if m.Type != kernels.F32 && m.Type != kernels.F16 {
			if _, _, err := actType(m.Type); err != nil {
				return err
			}
		}
	}
	return d.do(func() error {
		quantised := -1 // ms index whose activation type and columns d.acts holds
		for i, m := range ms {
			gx := ceilDiv(m.Rows, mmWarps)
			switch m.Type {
			case kernels.F32, kernels.F16:
				k := kMMF32
				if m.Type == kernels.F16 {
					k = kMMF16
				}
				a := new(args).buf(m.buf).buf(x).buf(dsts[i]).i32(m.Rows).i32(m.Cols).i32(n)
				if err := d.launch(k, gx, ceilDiv(n, 4), mmWarps*32, 0, a); err != nil {
					return fmt.Errorf("cuda: %v matmul: %w", m.Type, err)
				}
				continue
			}
			q81, bs, _ := actType(m.Type)
			nb := m.Cols / qk
			if prev := quantised; prev < 0 || ms[prev].Cols != m.Cols || !sameActs(ms[prev].Type, m.Type) {
				if err := d.grow(&d.acts, int64(n*nb*bs)); err != nil {
					return fmt.Errorf("cuda: matmul: %w", err)
				}
				if err := d.quantize(d.acts, x, q81, n*nb); err != nil {
					return err
				}
				quantised = i
			}
			k := kMMQ4_1
			if m.Type == kernels.Q8_0 {
				k = kMMQ8_0
			}
			a := new(args).buf(m.buf).buf(d.acts).buf(dsts[i]).i32(m.Rows).i32(m.Cols).i32(n)
			if err := d.launch(k, gx, ceilDiv(n, mmRows), mmWarps*32, mmWarps*mmRows*nb*4, a); err != nil {
				return fmt.Errorf("cuda: %v matmul: %w", m.Type, err)
			}
		}
		return nil
	})
}

// sameActs reports whether weights of types a and b take the same
// activation blocks.
func sameActs(a, b kernels.DType) bool {
	qa, _, _ := actType(a)
	qb, _, _ := actType(b)
	return qa == qb
}

// MatMulBLAS computes the same product as MatMul for an F32 matrix with
// cuBLAS SGEMM. It is not bitwise the CPU's (cuBLAS chooses its own
// reduction order, which may depend on n) and is meant for large prefill
// batches. Other types give an error wrapping kernels.ErrUnsupported. cuBLAS
// is opened on its first use (cublas_cu.go), not linked, so a missing cuBLAS
// is an error here and nowhere else.
func (d *Device) MatMulBLAS(dst *Buffer, m *Matrix, x *Buffer, n int) error {
	if m == nil || n <= 0 {
		return fmt.Errorf("cuda: cuBLAS matmul of %d rows: need a matrix and n > 0: %w", n, kernels.ErrShape)
	}
	if m.Type != kernels.F32 {
		return fmt.Errorf("cuda: cuBLAS matmul of %v weights: %w", m.Type, kernels.ErrUnsupported)
	}
	if err := needF32("cuBLAS matmul input", x, n*m.Cols); err != nil {
		return err
	}
	if err := needF32("cuBLAS matmul output", dst, n*m.Rows); err != nil {
		return err
	}
	return d.do(func() error {
		if err := d.sgemm(m.Rows, m.Cols, n, m.buf.ptr, x.ptr, dst.ptr); err != nil {
			return fmt.Errorf("cuda: cuBLAS SGEMM: %w", err)
		}
		return nil
	})
}

// RMSNorm sets dst row r = kernels.RMSNorm(x row r, w, eps) for n rows of dim
// values, bit for bit. w (dim gains) may be nil; dst may be x.
func (d *Device) RMSNorm(dst, x, w *Buffer, n, dim int, eps float32) error {
	return d.rmsnorm(dst, x, nil, w, n, dim, eps)
}

// AddRMSNorm adds res to x (x += res, as Add does) and sets dst to the
// RMSNorm of the sum, as RMSNorm does — in one launch, bit for bit the two
// calls: a layer's residual addition and the next norm. dst may be x or
// res.
func (d *Device) AddRMSNorm(dst, x, res, w *Buffer, n, dim int, eps float32) error {
	if res == nil {
		return fmt.Errorf("cuda: add-rmsnorm without a residual: %w", kernels.ErrShape)
	}
	return d.rmsnorm(dst, x, res, w, n, dim, eps)
}

func (d *Device) rmsnorm(dst, x, res, w *Buffer, n, dim int, eps float32) error {
	if n <= 0 || dim <= 0 {
		return fmt.Errorf("cuda: rmsnorm of %d×%d: %w", n, dim, kernels.ErrShape)
	}
	err := errors.Join(needF32("rmsnorm input", x, n*dim), needF32("rmsnorm output", dst, n*dim))
	if res != nil {
		err = errors.Join(err, needF32("rmsnorm residual", res, n*dim))
	}
	if w != nil {
		err = errors.Join(err, needF32("rmsnorm weight", w, dim))
	}
	if err != nil {
		return err
	}
	return d.do(func() error {
		a := new(args).buf(dst).buf(x).buf(res).buf(w).i32(dim).f32(eps)
		if err := d.launch(kRMSNorm, n, 1, min(256, ceilDiv(dim, 32)*32), 0, a); err != nil {
			return fmt.Errorf("cuda: rmsnorm: %w", err)
		}
		return nil
	})
}

// RoPE is a rotary embedding's frequency table on the device.
type RoPE struct {
	theta   *Buffer
	headDim int
	neox    bool
}

// NewRoPE uploads the frequencies of t.
func (d *Device) NewRoPE(t *kernels.RoPETable) (*RoPE, error) {
	half := t.HeadDim() / 2
	th := make([]float64, half)
	for i := range th {
		th[i] = t.Theta(i)
	}
	b, err := d.Alloc(int64(half) * 8)
	if err != nil {
		return nil, fmt.Errorf("cuda: rope table: %w", err)
	}
	if err := d.upload("rope table", b, unsafe.Pointer(&th[0]), int64(half)*8); err != nil {
		_ = d.Free(b)
		return nil, err
	}
	return &RoPE{theta: b, headDim: t.HeadDim(), neox: t.NeoX()}, nil
}

// FreeRoPE releases r's table.
func (d *Device) FreeRoPE(r *RoPE) error {
	if r == nil {
		return nil
	}
	return d.Free(r.theta)
}

// RoPE rotates n rows of nHeads heads (rows contiguous, nHeads·HeadDim
// values each) for the positions pos (n int32 values on the device), as
// kernels.RoPETable.Apply does row by row.
func (d *Device) RoPE(x *Buffer, r *RoPE, pos *Buffer, n, nHeads int) error {
	return d.RoPEPair(x, nil, r, pos, n, nHeads, 0)
}

// RoPEPair is RoPE of x (nHeads heads per row) and of x2 (nHeads2 heads
// per row; nil: none) at the same positions, in one launch — a layer's
// queries and keys.
func (d *Device) RoPEPair(x, x2 *Buffer, r *RoPE, pos *Buffer, n, nHeads, nHeads2 int) error {
	if pos == nil || int64(n)*4 > pos.size {
		return fmt.Errorf("cuda: rope: %d positions, buffer has %d bytes: %w", n, sizeOf(pos), kernels.ErrShape)
	}
	return d.rope(x, x2, r, pos, 0, n, nHeads, nHeads2)
}

// RoPEShift rotates n rows of already-rotated heads by delta positions, as
// kernels.RoPETable.Shift does: RoPE(k, p+Δ) = RoPEShift(RoPE(k, p), Δ) up to
// rounding.
func (d *Device) RoPEShift(x *Buffer, r *RoPE, n, nHeads, delta int) error {
	return d.rope(x, nil, r, nil, delta, n, nHeads, 0)
}

func (d *Device) rope(x, x2 *Buffer, r *RoPE, pos *Buffer, delta, n, nHeads, nHeads2 int) error {
	if r == nil || n <= 0 || nHeads <= 0 || (x2 != nil && nHeads2 <= 0) || delta < math.MinInt32 || delta > math.MaxInt32 {
		return fmt.Errorf("cuda: rope of %d rows × %d (and %d) heads (delta %d): %w", n, nHeads, nHeads2, delta, kernels.ErrShape)
	}
	if err := needF32("rope", x, n*nHeads*r.headDim); err != nil {
		return err
	}
	gy := 1
	if x2 != nil {
		if err := needF32("rope", x2, n*nHeads2*r.headDim); err != nil {
			return err
		}
		gy = 2
	}
	neox := 0
	if r.neox {
		neox = 1
	}
	return d.do(func() error {
		a := new(args).buf(x).buf(x2).buf(pos).i32(delta).buf(r.theta).i32(nHeads).i32(nHeads2).i32(r.headDim).i32(neox)
		if err := d.launch(kRoPE, n, gy, min(128, ceilDiv(r.headDim/2, 32)*32), 0, a); err != nil {
			return fmt.Errorf("cuda: rope: %w", err)
		}
		return nil
	})
}

// KeyGroups is a kernels.KeyGroups on the device (APE's key blocks).
type KeyGroups struct {
	of, temp, lse *Buffer
	n, keys       int
	// pairs lists the (key split, group) pairs that hold a key, as
	// split<<faGBits | group, ordered by group, then split: the partial
	// softmax states of attend_split with groups (see kernels.cu).
	pairs  *Buffer
	nPairs int
}

// groupPairs returns the (split, group) pairs of KeyGroups.pairs for the
// group of each key: which groups occur among the keys of each faSplit-key
// split, ordered by group, then split.
func groupPairs(of []uint8, nGroups int) []int32 {
	nSplit := ceilDiv(len(of), faSplit)
	seen := make([]uint8, nSplit) // bit g: group g occurs in the split
	for j, g := range of {
		seen[j/faSplit] |= 1 << g
	}
	var pairs []int32
	for g := range nGroups {
		for sp, bits := range seen {
			if bits&(1<<g) != 0 {
				pairs = append(pairs, int32(sp<<faGBits|g))
			}
		}
	}
	return pairs
}

// UploadKeyGroups copies g (which must pass g.Validate(len(g.Of))) to the
// device.
func (d *Device) UploadKeyGroups(g *kernels.KeyGroups) (*KeyGroups, error) {
	if g == nil || len(g.Of) == 0 {
		return nil, fmt.Errorf("cuda: key groups: none given: %w", kernels.ErrShape)
	}
	if err := g.Validate(len(g.Of)); err != nil {
		return nil, fmt.Errorf("cuda: key groups: %w", err)
	}
	kg := &KeyGroups{n: len(g.Temp), keys: len(g.Of)}
	var err error
	if kg.of, err = d.Alloc(int64(len(g.Of))); err == nil {
		err = d.UploadBytes(kg.of, g.Of)
	}
	if err == nil {
		kg.temp, err = d.NewF32(g.Temp)
	}
	if err == nil {
		kg.lse, err = d.NewF32(g.LSEScale)
	}
	if err == nil {
		pairs := groupPairs(g.Of, kg.n)
		kg.nPairs = len(pairs)
		kg.pairs, err = d.NewI32(pairs)
	}
	if err != nil {
		_ = d.FreeKeyGroups(kg)
		return nil, fmt.Errorf("cuda: key groups: %w", err)
	}
	return kg, nil
}

// FreeKeyGroups releases g's buffers.
func (d *Device) FreeKeyGroups(g *KeyGroups) error {
	if g == nil {
		return nil
	}
	for _, b := range []*Buffer{g.of, g.temp, g.lse, g.pairs} {
		if b != nil {
			if err := d.Free(b); err != nil {
				return err
			}
		}
	}
	return nil
}

// Attend computes attention for nQ query rows over nKeys cached keys, as
// kernels.Attend does for every (row, KV head):
//
//	q, out      [nQ × QDim]      queries (post-RoPE) and outputs
//	keys, vals  [nKeys × KVDim]  the cache's keys (post-RoPE) and values
//	keyPos      [nKeys] int32    each key's position
//	qPos        [nQ] int32       each query's position
//
// Key j is visible to query r when keyPos[j] ≤ qPos[r] (causal prefill,
// decode and recomputation of any subset of rows are all this mask). g may
// be nil (one group, temperature 1) or APE's key groups over the nKeys keys.
// A head that sees no key gets zeros. Results agree with the CPU within
// rounding (not bitwise). HeadDim must divide 128.
//
// Kernels: for HeadDim 32, 64 or 128 and Heads/KVHeads ≤ 8, the split path
// (flash-decoding: partial softmax states per 256-key split, and per key
// group with g, then a merge), whose scratch is linear in
// nQ·Heads·(⌈nKeys/256⌉ + groups)·(HeadDim+2) floats; without groups and
// for nQ ≥ 64 (ftMinRows, a guess not yet timed on a GPU) with HeadDim 32
// or 64, the partial states come from the tiled attend_tile, bitwise the
// same as attend_split's. On the split path a row's result depends only on
// its query, position and the keys, never on the other rows of the call,
// nor on nQ. Other shapes take the one-block-per-(row, head) attend kernel,
// whose scratch is nQ·Heads·nKeys floats.
func (d *Device) Attend(out, q, keys, vals, keyPos, qPos *Buffer, nQ, nKeys int, sh kernels.AttnShape, g *KeyGroups) error {
	if nQ <= 0 || nKeys <= 0 || sh.Heads <= 0 || sh.KVHeads <= 0 || sh.Heads%sh.KVHeads != 0 ||
		sh.HeadDim <= 0 || attThreads%sh.HeadDim != 0 || nQ > math.MaxInt32/sh.Heads {
		return fmt.Errorf("cuda: attention of %d queries over %d keys with shape %+v: %w", nQ, nKeys, sh, kernels.ErrShape)
	}
	for _, c := range []struct {
		what string
		b    *Buffer
		n    int
	}{{"queries", q, nQ * sh.QDim()}, {"output", out, nQ * sh.QDim()}, {"keys", keys, nKeys * sh.KVDim()},
		{"values", vals, nKeys * sh.KVDim()}, {"key positions", keyPos, nKeys}, {"query positions", qPos, nQ}} {
		if err := needF32("attention "+c.what, c.b, c.n); err != nil {
			return err
		}
	}
	nGroups := 1
	var of, temp, lse *Buffer
	if g != nil {
		if g.keys != nKeys {
			return fmt.Errorf("cuda: attention: key groups cover %d keys, attention has %d: %w", g.keys, nKeys, kernels.ErrShape)
		}
		nGroups, of, temp, lse = g.n, g.of, g.temp, g.lse
	}
	if sh.HeadDim%32 == 0 && sh.HeadDim/32 <= faMaxD && sh.Heads/sh.KVHeads <= faMaxG {
		return d.attendSplit(out, q, keys, vals, keyPos, qPos, nQ, nKeys, sh, g, g == nil && useTile(nQ, sh))
	}
	return d.do(func() error {
		if err := d.grow(&d.scores, int64(nQ)*int64(sh.Heads)*int64(nKeys)*4); err != nil {
			return fmt.Errorf("cuda: attention: %w", err)
		}
		a := new(args).buf(out).buf(q).buf(keys).buf(vals).buf(keyPos).buf(qPos).buf(of).buf(temp).buf(lse).
			i32(nGroups).i32(nKeys).i32(sh.Heads).i32(sh.KVHeads).i32(sh.HeadDim).buf(d.scores)
		if err := d.launch(kAttend, nQ, sh.Heads, attThreads, 0, a); err != nil {
			return fmt.Errorf("cuda: attention: %w", err)
		}
		return nil
	})
}

// useTile reports whether attendSplit takes attend_tile for nQ rows of
// shape sh without key groups.
func useTile(nQ int, sh kernels.AttnShape) bool {
	return nQ >= ftMinRows && sh.HeadDim/32 <= ftMaxND
}

// attendSplit is Attend on the split path: partial softmax states from
// attend_tile (tile; only without groups and for HeadDim ≤ 64) or
// attend_split, one per (row, head, partial), then attend_combine or, with
// groups, attend_combine_groups. The partials are the ⌈nKeys/faSplit⌉ key
// splits, or with groups g's (split, group) pairs. Its scratch holds
// nQ·heads·partials·(headDim+2) floats.
func (d *Device) attendSplit(out, q, keys, vals, keyPos, qPos *Buffer, nQ, nKeys int, sh kernels.AttnShape, g *KeyGroups, tile bool) error {
	nPart := ceilDiv(nKeys, faSplit)
	var of, temp, lse, pairs *Buffer
	if g != nil {
		nPart, of, temp, lse, pairs = g.nPairs, g.of, g.temp, g.lse, g.pairs
	}
	if sh.KVHeads*nPart > maxGridY {
		return fmt.Errorf("cuda: attention over %d keys with %d KV heads: too many key blocks: %w", nKeys, sh.KVHeads, kernels.ErrShape)
	}
	if tile && (g != nil || sh.HeadDim/32 > ftMaxND) {
		return fmt.Errorf("cuda: tiled attention with key groups or head dimension %d: %w", sh.HeadDim, kernels.ErrShape)
	}
	scale := float32(1 / math.Sqrt(float64(sh.HeadDim)))
	return d.do(func() error {
		if err := d.grow(&d.scores, int64(nQ)*int64(sh.Heads)*int64(nPart)*int64(sh.HeadDim+2)*4); err != nil {
			return fmt.Errorf("cuda: attention: %w", err)
		}
		if tile {
			rows := ftThreads / (sh.Heads / sh.KVHeads)
			a := new(args).buf(d.scores).buf(q).buf(keys).buf(vals).buf(keyPos).buf(qPos).
				i32(nQ).i32(nKeys).i32(sh.Heads).i32(sh.KVHeads).i32(sh.HeadDim).f32(scale).i32(nPart)
			if err := d.launch(kAttendTile, ceilDiv(nQ, rows), sh.KVHeads*nPart, ftThreads, 0, a); err != nil {
				return fmt.Errorf("cuda: tiled attention: %w", err)
			}
		} else {
			a := new(args).buf(d.scores).buf(q).buf(keys).buf(vals).buf(keyPos).buf(qPos).buf(of).buf(temp).buf(pairs).
				i32(nQ).i32(nKeys).i32(sh.Heads).i32(sh.KVHeads).i32(sh.HeadDim).f32(scale).i32(nPart)
			if err := d.launch(kAttendSplit, ceilDiv(nQ, faWarps), sh.KVHeads*nPart, faWarps*32, 0, a); err != nil {
				return fmt.Errorf("cuda: attention: %w", err)
			}
		}
		const threads = 256
		blocks := ceilDiv(nQ*sh.Heads*sh.HeadDim, threads)
		if g == nil {
			c := new(args).buf(out).buf(d.scores).i32(nQ).i32(sh.Heads).i32(sh.HeadDim).i32(nPart)
			if err := d.launch(kAttendCombine, blocks, 1, threads, 0, c); err != nil {
				return fmt.Errorf("cuda: attention combine: %w", err)
			}
			return nil
		}
		c := new(args).buf(out).buf(d.scores).buf(pairs).buf(lse).i32(nQ).i32(sh.Heads).i32(sh.HeadDim).i32(nPart).i32(g.n)
		if err := d.launch(kAttendCombineGroups, blocks, 1, threads, 0, c); err != nil {
			return fmt.Errorf("cuda: attention combine: %w", err)
		}
		return nil
	})
}

// ScatterRows writes row i of src (width float32 values) to row rows[i] of
// dst, which holds dstRows rows — CacheBlend's write of fresh keys and
// values into the cache (model.Pass.WriteKV). Every index must be in
// [0, dstRows).
func (d *Device) ScatterRows(dst *Buffer, dstRows int, src *Buffer, rows []int32, width int) error {
	if len(rows) == 0 {
		return nil
	}
	if err := checkRows(rows, dstRows); err != nil {
		return err
	}
	if err := checkScatter(dst, nil, dstRows, src, nil, len(rows), width); err != nil {
		return err
	}
	return d.do(func() error {
		n := len(rows)
		if err := d.grow(&d.rows, int64(n)*4); err != nil {
			return fmt.Errorf("cuda: scatter: %w", err)
		}
		if err := d.timed("upload_queued", int64(n)*4, func() error { return d.drv.htodQueued(d.rows.ptr, unsafe.Pointer(&rows[0]), int64(n)*4) }); err != nil {
			return fmt.Errorf("cuda: scatter: uploading row indices: %w", err)
		}
		return d.scatter(dst, src, nil, nil, d.rows, n, width)
	})
}

// RowIndex is a list of row indices kept on the device for ScatterRowsKV,
// each checked on upload to be below a bound, so that a pass writing the
// same rows of every layer uploads them once. The zero value is empty;
// free it with FreeRowIndex.
type RowIndex struct {
	buf   *Buffer
	rows  []int32 // what buf holds
	limit int     // every index is below it
}

// SetRowIndex makes ri hold rows, each in [0, limit), uploading them
// (queued after the work already queued, which may still read the old
// ones) unless ri holds the same rows already.
func (d *Device) SetRowIndex(ri *RowIndex, rows []int32, limit int) error {
	if err := checkRows(rows, limit); err != nil {
		return err
	}
	if ri.buf != nil && slices.Equal(ri.rows, rows) {
		ri.limit = limit
		return nil
	}
	ri.rows, ri.limit = append(ri.rows[:0], rows...), limit
	if len(rows) == 0 {
		return nil
	}
	if ri.buf == nil || ri.buf.size < int64(len(rows))*4 {
		if err := d.Free(ri.buf); err != nil {
			return err
		}
		ri.buf = nil
		b, err := d.Alloc(int64(max(len(rows), 64)) * 4)
		if err != nil {
			ri.rows = ri.rows[:0]
			return fmt.Errorf("cuda: row index: %w", err)
		}
		ri.buf = b
	}
	if err := d.UploadI32Queued(ri.buf, rows); err != nil {
		ri.rows = ri.rows[:0]
		return err
	}
	return nil
}

// FreeRowIndex frees ri's device memory; ri is then empty.
func (d *Device) FreeRowIndex(ri *RowIndex) error {
	err := d.Free(ri.buf)
	*ri = RowIndex{}
	return err
}

// ScatterRowsKV is ScatterRows for keys and values at once, in one launch:
// row i of srcK and srcV goes to row ri's i-th index of dstK and dstV,
// which hold dstRows rows (at least ri's bound).
func (d *Device) ScatterRowsKV(dstK, dstV *Buffer, dstRows int, srcK, srcV *Buffer, ri *RowIndex, width int) error {
	n := len(ri.rows)
	if n == 0 {
		return nil
	}
	if ri.limit > dstRows {
		return fmt.Errorf("cuda: scatter: row indices up to %d into %d rows: %w", ri.limit, dstRows, kernels.ErrShape)
	}
	if err := checkScatter(dstK, dstV, dstRows, srcK, srcV, n, width); err != nil {
		return err
	}
	return d.do(func() error { return d.scatter(dstK, srcK, dstV, srcV, ri.buf, n, width) })
}

// checkRows checks that every index is in [0, limit).
func checkRows(rows []int32, limit int) error {
	for i, r := range rows {
		if r < 0 || int(r) >= limit {
			return fmt.Errorf("cuda: scatter: row %d targets row %d of %d: %w", i, r, limit, kernels.ErrShape)
		}
	}
	return nil
}

// checkScatter checks the shapes of a scatter of n rows of width from src
// (and src2) into dst (and dst2), of dstRows rows.
func checkScatter(dst, dst2 *Buffer, dstRows int, src, src2 *Buffer, n, width int) error {
	if width <= 0 || dstRows <= 0 {
		return fmt.Errorf("cuda: scatter %d rows of width %d into %d: %w", n, width, dstRows, kernels.ErrShape)
	}
	err := errors.Join(needF32("scatter source", src, n*width), needF32("scatter destination", dst, dstRows*width))
	if dst2 != nil || src2 != nil {
		err = errors.Join(err, needF32("scatter second source", src2, n*width), needF32("scatter second destination", dst2, dstRows*width))
	}
	return err
}

// scatter launches scatter_rows over n rows (and over a second pair when
// dst2 is not nil); called inside do.
func (d *Device) scatter(dst, src, dst2, src2, rows *Buffer, n, width int) error {
	const threads = 256
	gy := 1
	if dst2 != nil {
		gy = 2
	}
	a := new(args).buf(dst).buf(src).buf(dst2).buf(src2).buf(rows).i32(n).i32(width) // nil buffers: 0
	if err := d.launch(kScatter, ceilDiv(n*width, threads), gy, threads, 0, a); err != nil {
		return fmt.Errorf("cuda: scatter: %w", err)
	}
	return nil
}

// SwiGLU sets dst[i] = SiLU(gate[i])·up[i] for count values (dst may alias
// gate or up), within a few ulp of kernels.SwiGLU (expf differs).
func (d *Device) SwiGLU(dst, gate, up *Buffer, count int) error {
	return d.elementwise("swiglu", kSwiGLU, count, dst, gate, up)
}

// Add sets dst[i] += a[i] for count values, bit for bit kernels.Add.
func (d *Device) Add(dst, a *Buffer, count int) error {
	return d.elementwise("add", kAdd, count, dst, a)
}

func (d *Device) elementwise(name string, k kernel, count int, bufs ...*Buffer) error {
	if count <= 0 {
		return fmt.Errorf("cuda: %s of %d values: %w", name, count, kernels.ErrShape)
	}
	a := new(args)
	for _, b := range bufs {
		if err := needF32(name, b, count); err != nil {
			return err
		}
		a.buf(b)
	}
	a.i64(int64(count))
	return d.do(func() error {
		const threads = 256
		if err := d.launch(k, ceilDiv(count, threads), 1, threads, 0, a); err != nil {
			return fmt.Errorf("cuda: %s: %w", name, err)
		}
		return nil
	})
}
