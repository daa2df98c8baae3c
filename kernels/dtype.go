package kernels

import (
	"errors"
	"fmt"
)

// DType is a GGML tensor element type. The numeric values are the ones the
// GGUF format stores on disk (ggml_type), so a DType read from a file can be
// converted directly.
type DType uint32

// The tensor types blendrag reads. Values are GGML's type ids.
const (
	F32  DType = 0
	F16  DType = 1
	Q4_0 DType = 2
	Q4_1 DType = 3
	Q5_0 DType = 6
	Q5_1 DType = 7
	Q8_0 DType = 8
	Q8_1 DType = 9
	Q4_K DType = 12
	Q5_K DType = 13
	Q6_K DType = 14
	Q8_K DType = 15
	BF16 DType = 30
)

// ErrUnsupported reports a tensor type, or an operation on a type, that this
// package does not implement. Errors returned for that reason wrap it, so
// callers can test with errors.Is.
var ErrUnsupported = errors.New("kernels: unsupported tensor type")

// ErrShape reports lengths or dimensions that do not fit the block layout of a
// type (for example an element count that is not a multiple of the block
// size, or a buffer of the wrong length). Errors wrap it.
var ErrShape = errors.New("kernels: bad shape")

// Block geometry: elements per block for the 32-element formats and for the
// 256-element "K" super-blocks.
const (
	qk   = 32  // QK4_0 = QK4_1 = QK5_0 = QK5_1 = QK8_0 = QK8_1
	qkK  = 256 // QK_K
	kScl = 12  // K_SCALE_SIZE: packed 6-bit scales and mins of Q4_K/Q5_K
)

type typeInfo struct {
	name       string
	blockSize  int
	blockBytes int
}

// typeTable returns the geometry of t; ok is false for types this package
// does not know.
func typeTable(t DType) (typeInfo, bool) {
	switch t {
	case F32:
		return typeInfo{"F32", 1, 4}, true
	case F16:
		return typeInfo{"F16", 1, 2}, true
	case BF16:
		return typeInfo{"BF16", 1, 2}, true
	case Q4_0:
		return typeInfo{"Q4_0", qk, 2 + qk/2}, true // d, qs[16]
	case Q4_1:
		return typeInfo{"Q4_1", qk, 4 + qk/2}, true // d, m, qs[16]
	case Q5_0:
		return typeInfo{"Q5_0", qk, 2 + 4 + qk/2}, true // d, qh[4], qs[16]
	case Q5_1:
		return typeInfo{"Q5_1", qk, 4 + 4 + qk/2}, true // d, m, qh[4], qs[16]
	case Q8_0:
		return typeInfo{"Q8_0", qk, 2 + qk}, true // d, qs[32]
	case Q8_1:
		return typeInfo{"Q8_1", qk, 4 + qk}, true // d, s, qs[32]
	case Q4_K:
		return typeInfo{"Q4_K", qkK, 4 + kScl + qkK/2}, true // d, dmin, scales[12], qs[128]
	case Q5_K:
		return typeInfo{"Q5_K", qkK, 4 + kScl + qkK/8 + qkK/2}, true // d, dmin, scales[12], qh[32], qs[128]
	case Q6_K:
		return typeInfo{"Q6_K", qkK, qkK/2 + qkK/4 + qkK/16 + 2}, true // ql[128], qh[64], scales[16], d
	case Q8_K:
		return typeInfo{"Q8_K", qkK, 4 + qkK + 2*qkK/16}, true // d (f32), qs[256], bsums[16] (int16)
	}
	return typeInfo{}, false
}

// String returns GGML's name for t ("Q4_1", "F16", …), or "DType(n)" for an
// unknown type.
func (t DType) String() string {
	if ti, ok := typeTable(t); ok {
		return ti.name
	}
	return fmt.Sprintf("DType(%d)", uint32(t))
}

// Valid reports whether t is one of the types this package knows (it has a
// block geometry). Knowing a type does not mean every operation supports it:
// see Dequantize and ActType.
func (t DType) Valid() bool {
	_, ok := typeTable(t)
	return ok
}

// BlockSize returns the number of elements in one block of t: 1 for F32, F16
// and BF16, 32 for Q4_0 … Q8_1 and 256 for the K-quants. It returns 0 for an
// unknown type.
func (t DType) BlockSize() int {
	ti, _ := typeTable(t)
	return ti.blockSize
}

// BlockBytes returns the size in bytes of one block of t, exactly as ggml
// lays it out (Q4_0 18, Q4_1 20, Q5_0 22, Q5_1 24, Q8_0 34, Q8_1 36, Q4_K 144,
// Q5_K 176, Q6_K 210, Q8_K 292, F32 4, F16 2, BF16 2). It returns 0 for an
// unknown type.
func (t DType) BlockBytes() int {
	ti, _ := typeTable(t)
	return ti.blockBytes
}

// RowBytes returns the number of bytes that n elements of type t occupy. It
// fails (wrapping ErrShape) when n is negative or not a multiple of
// t.BlockSize(), and (wrapping ErrUnsupported) when t is unknown.
func (t DType) RowBytes(n int) (int, error) {
	ti, ok := typeTable(t)
	if !ok {
		return 0, fmt.Errorf("row bytes of %v: %w", t, ErrUnsupported)
	}
	if n < 0 || n%ti.blockSize != 0 {
		return 0, fmt.Errorf("row bytes of %d %v elements: not a multiple of the block size %d: %w", n, t, ti.blockSize, ErrShape)
	}
	return n / ti.blockSize * ti.blockBytes, nil
}
