package kernels

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
)

// allDotTypes are the weight types with a dot product.
var allDotTypes = []DType{F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K}

// scaleOffsets lists the byte offsets of the fp16 scale fields inside one
// block of t (the fields random test blocks must keep finite).
func scaleOffsets(t DType) []int {
	switch t {
	case Q4_0, Q5_0, Q8_0:
		return []int{0}
	case Q4_1, Q5_1, Q4_K, Q5_K:
		return []int{0, 2}
	case Q6_K:
		return []int{208}
	}
	return nil
}

// randomRows returns rows·n elements of type t: random bytes for the
// quantized types with scale fields set to moderate fp16 values, and
// normal-distributed values for the float types.
func randomRows(rng *rand.Rand, t DType, rows, n int) []byte {
	rb, err := t.RowBytes(n)
	if err != nil {
		panic(err)
	}
	b := make([]byte, rows*rb)
	switch t {
	case F32:
		for i := 0; i < rows*n; i++ {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(float32(rng.NormFloat64())))
		}
		return b
	case F16:
		for i := 0; i < rows*n; i++ {
			binary.LittleEndian.PutUint16(b[2*i:], F32ToF16(float32(rng.NormFloat64())))
		}
		return b
	case BF16:
		for i := 0; i < rows*n; i++ {
			binary.LittleEndian.PutUint16(b[2*i:], F32ToBF16(float32(rng.NormFloat64())))
		}
		return b
	}
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	bb := t.BlockBytes()
	for blk := 0; blk < len(b)/bb; blk++ {
		for _, off := range scaleOffsets(t) {
			v := float32(math.Exp(rng.Float64()*6-8)) * float32(1-2*rng.IntN(2)) // ±[3e-4, 0.14]
			binary.LittleEndian.PutUint16(b[blk*bb+off:], F32ToF16(v))
		}
	}
	return b
}

// randomActs returns rows·n activations; each 32-value block gets its own
// magnitude, and some blocks are all zero.
func randomActs(rng *rand.Rand, rows, n int) []float32 {
	x := make([]float32, rows*n)
	for b := 0; b < len(x)/32; b++ {
		s := math.Exp(rng.Float64()*6 - 3)
		if rng.IntN(17) == 0 {
			s = 0
		}
		for i := 32 * b; i < 32*b+32; i++ {
			x[i] = float32(rng.NormFloat64() * s)
		}
	}
	for i := len(x) / 32 * 32; i < len(x); i++ {
		x[i] = float32(rng.NormFloat64())
	}
	return x
}

// dequantActs expands activations in the layout QuantizeActs writes (type
// at) to float64, and for Q8_1 also returns each block's stored s and the
// value d·Σq it approximates.
func dequantActs(at DType, act []byte, n int) (x []float64, s, dsum []float64) {
	x = make([]float64, n)
	switch at {
	case F32:
		for i := range x {
			x[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(act[4*i:])))
		}
	case F16:
		for i := range x {
			x[i] = float64(F16ToF32(binary.LittleEndian.Uint16(act[2*i:])))
		}
	case BF16:
		for i := range x {
			x[i] = float64(BF16ToF32(binary.LittleEndian.Uint16(act[2*i:])))
		}
	case Q8_0, Q8_1:
		bb, off := 34, 2
		if at == Q8_1 {
			bb, off = 36, 4
		}
		for b := 0; b < n/32; b++ {
			blk := act[b*bb : (b+1)*bb]
			d := float64(F16ToF32(binary.LittleEndian.Uint16(blk)))
			var sum int
			for j := 0; j < 32; j++ {
				q := int(int8(blk[off+j]))
				sum += q
				x[32*b+j] = d * float64(q)
			}
			if at == Q8_1 {
				s = append(s, float64(F16ToF32(binary.LittleEndian.Uint16(blk[2:]))))
				dsum = append(dsum, d*float64(sum))
			}
		}
	case Q8_K:
		for b := 0; b < n/256; b++ {
			blk := act[b*292 : (b+1)*292]
			d := float64(math.Float32frombits(binary.LittleEndian.Uint32(blk)))
			for j := 0; j < 256; j++ {
				x[256*b+j] = d * float64(int8(blk[4+j]))
			}
		}
	}
	return x, s, dsum
}

// mustRowBytes is RowBytes for shapes known to be valid.
func mustRowBytes(t DType, n int) int {
	rb, err := t.RowBytes(n)
	if err != nil {
		panic(err)
	}
	return rb
}

// sameBits reports whether a and b are the same float32, treating all NaNs
// as equal.
func sameBits(a, b float32) bool {
	if a != a && b != b {
		return true
	}
	return math.Float32bits(a) == math.Float32bits(b)
}
