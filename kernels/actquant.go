package kernels

import (
	"encoding/binary"
	"fmt"
	"math"
)

// ActType returns the type that float32 activations are converted to before
// a dot product with weights of type t, as ggml's CPU backend does
// (vec_dot_type): Q8_0 for Q4_0, Q5_0 and Q8_0 weights; Q8_1 for Q4_1 and
// Q5_1; Q8_K for Q4_K, Q5_K and Q6_K; F16 for F16; BF16 for BF16; F32 for F32.
// Other types have no dot product here and the error wraps ErrUnsupported.
func ActType(t DType) (DType, error) {
	switch t {
	case F32:
		return F32, nil
	case F16:
		return F16, nil
	case BF16:
		return BF16, nil
	case Q4_0, Q5_0, Q8_0:
		return Q8_0, nil
	case Q4_1, Q5_1:
		return Q8_1, nil
	case Q4_K, Q5_K, Q6_K:
		return Q8_K, nil
	}
	return 0, fmt.Errorf("activation type for %v weights: %w", t, ErrUnsupported)
}

// QuantizeActs converts the activation row x into dst in GGML's block layout
// of ActType(t), the form VecDot takes for weights of type t. len(x) must be
// a multiple of the weight type's block size and len(dst) must be exactly
// ActType(t).RowBytes(len(x)); errors wrap ErrShape or ErrUnsupported.
//
// The quantisers are ggml's reference ones (quantize_row_*_ref):
//
//   - Q8_0 / Q8_1, per 32 values: d = amax/127, id = 1/d (0 when d = 0),
//     q = roundf(x·id) (half away from zero); d is stored as fp16; Q8_1 also
//     stores s = fp16(d·Σq) with the unrounded float32 d.
//   - Q8_K, per 256 values: max = the first value of largest magnitude,
//     iscale = −127/max, q = min(127, nearest_int(iscale·x)) (ties to even),
//     d = 1/iscale as float32, bsums = sums of each 16 q's (int16).
//   - F16 / BF16: round to nearest even. F32: the float32 bits.
//
// ggml's AVX2 quantisers differ from the reference in rare last-bit cases
// (they multiply by 127/amax and round ties to even).
func QuantizeActs(t DType, x []float32, dst []byte) error {
	at, err := ActType(t)
	if err != nil {
		return fmt.Errorf("quantize activations: %w", err)
	}
	if bs := t.BlockSize(); len(x)%bs != 0 {
		return fmt.Errorf("quantize %d activations for %v: not a multiple of %d: %w", len(x), t, bs, ErrShape)
	}
	need, err := at.RowBytes(len(x))
	if err != nil {
		return fmt.Errorf("quantize activations: %w", err)
	}
	if len(dst) != need {
		return fmt.Errorf("quantize %d activations to %v: dst has %d bytes, want %d: %w", len(x), at, len(dst), need, ErrShape)
	}
	switch at {
	case F32:
		for i, v := range x {
			binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
		}
	case F16:
		for i, v := range x {
			binary.LittleEndian.PutUint16(dst[2*i:], F32ToF16(v))
		}
	case BF16:
		for i, v := range x {
			binary.LittleEndian.PutUint16(dst[2*i:], F32ToBF16(v))
		}
	case Q8_0:
		for i := 0; i < len(x)/qk; i++ {
			quantBlockQ8_0(x[i*qk:(i+1)*qk], dst[i*34:(i+1)*34])
		}
	case Q8_1:
		for i := 0; i < len(x)/qk; i++ {
			quantBlockQ8_1(x[i*qk:(i+1)*qk], dst[i*36:(i+1)*36])
		}
	case Q8_K:
		for i := 0; i < len(x)/qkK; i++ {
			quantBlockQ8K(x[i*qkK:(i+1)*qkK], dst[i*292:(i+1)*292])
		}
	}
	return nil
}

// q8Scale returns ggml's reference scale d = amax/127 of a 32-value block and
// its inverse id (0 for an all-zero block).
func q8Scale(x []float32) (d, id float32) {
	var amax float32
	for _, v := range x {
		// A NaN input gives an unspecified (but deterministic) block.
		if a := float32(math.Abs(float64(v))); a > amax {
			amax = a
		}
	}
	d = amax / 127
	if d != 0 {
		id = 1 / d
	}
	return d, id
}

// roundHalfAway is C's roundf for the |v| ≤ 127.5 range the quantisers see.
func roundHalfAway(v float32) int32 { return int32(math.Round(float64(v))) }

// quantQ8 fills q with roundf(x·id) and returns Σq. Shared by the ggml-layout
// and the packed (SWAR) activation quantisers so both see the same q.
func quantQ8(x []float32, id float32, q *[qk]int8) int32 {
	x = x[:qk]
	var sum int32
	for j, v := range x {
		r := roundHalfAway(v * id)
		q[j] = int8(r)
		sum += r
	}
	return sum
}

// quantBlockQ8_0 writes block_q8_0 {d f16, qs int8[32]}.
func quantBlockQ8_0(x []float32, dst []byte) {
	d, id := q8Scale(x)
	var q [qk]int8
	quantQ8(x, id, &q)
	dst = dst[:34]
	binary.LittleEndian.PutUint16(dst, F32ToF16(d))
	for j, v := range q {
		dst[2+j] = byte(v)
	}
}

// quantBlockQ8_1 writes block_q8_1 {d f16, s f16, qs int8[32]} with
// s = d·Σq.
func quantBlockQ8_1(x []float32, dst []byte) {
	d, id := q8Scale(x)
	var q [qk]int8
	sum := quantQ8(x, id, &q)
	dst = dst[:36]
	binary.LittleEndian.PutUint16(dst, F32ToF16(d))
	binary.LittleEndian.PutUint16(dst[2:], F32ToF16(float32(sum)*d))
	for j, v := range q {
		dst[4+j] = byte(v)
	}
}

// nearestInt is ggml's nearest_int: round to nearest, ties to even, for
// |v| ≤ 4194303, by adding 1.5·2^23 in float32.
func nearestInt(v float32) int32 {
	f := v + 12582912
	return int32(math.Float32bits(f)&0x7fffff) - 0x400000
}

// quantBlockQ8K writes block_q8_K {d f32, qs int8[256], bsums int16[16]}.
func quantBlockQ8K(x []float32, dst []byte) {
	x = x[:qkK]
	dst = dst[:292]
	var amax, max float32
	for _, v := range x {
		if a := float32(math.Abs(float64(v))); a > amax {
			amax, max = a, v
		}
	}
	if amax == 0 {
		clear(dst)
		return
	}
	iscale := -127 / max
	qs := dst[4:260]
	for j, v := range x {
		q := nearestInt(float32(iscale * v)) // rounded product: no fused multiply-add
		if q > 127 {
			q = 127
		}
		qs[j] = byte(int8(q))
	}
	for j := 0; j < 16; j++ {
		var s int32
		for _, b := range qs[16*j : 16*j+16] {
			s += int32(int8(b))
		}
		binary.LittleEndian.PutUint16(dst[260+2*j:], uint16(int16(s)))
	}
	binary.LittleEndian.PutUint32(dst, math.Float32bits(1/iscale))
}
