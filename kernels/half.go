package kernels

import "math"

// F16ToF32 converts an IEEE 754 binary16 value (given as its bits) to
// float32. The conversion is exact for every finite value, subnormals
// included; infinities keep their sign; a NaN stays a NaN with its sign and
// payload (shifted into the top of the float32 mantissa). It is small enough
// to be inlined.
func F16ToF32(h uint16) float32 {
	o := uint32(h&0x7fff) << 13 // exponent and mantissa in float32 position
	switch o & 0x0f800000 {
	case 0x0f800000: // Inf or NaN: exponent 31 → 255
		o += 0x70000000
	case 0: // zero or subnormal: m·2^-24 = (1 + m/1024)·2^-14 − 2^-14, exact
		o = math.Float32bits(math.Float32frombits(o+0x38800000) - 0x1p-14)
	default: // normal: rebias the exponent from 15 to 127
		o += 0x38000000
	}
	return math.Float32frombits(o | uint32(h&0x8000)<<16)
}

// F32ToF16 converts f to IEEE 754 binary16 bits, rounding to nearest with ties
// to even. Values too large for binary16 (|f| ≥ 65520 after rounding) become
// ±Inf, values too small become ±0 or a subnormal, ±Inf stay ±Inf, and a NaN
// becomes a quiet NaN keeping the top bits of its payload (the F16C
// behaviour ggml relies on).
func F32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23) & 0xff
	man := b & 0x7fffff
	if exp == 0xff {
		if man != 0 {
			return sign | 0x7e00 | uint16(man>>13)
		}
		return sign | 0x7c00
	}
	e := exp - 112 // binary16 biased exponent
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 {
		// Subnormal or zero in binary16. The value is m·2^(exp-150) with the
		// implicit bit in m; a binary16 subnormal unit is 2^-24.
		if e < -10 {
			return sign // below half the smallest subnormal: rounds to ±0
		}
		m := man | 0x800000
		shift := uint(14 - e) // 14 … 24
		h := m >> shift
		rem := m & (1<<shift - 1)
		half := uint32(1) << (shift - 1)
		if rem > half || (rem == half && h&1 == 1) {
			h++ // may carry into the smallest normal, which is correct
		}
		return sign | uint16(h)
	}
	h := uint32(e)<<10 | man>>13
	rem := man & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && h&1 == 1) {
		h++ // a carry out of the mantissa bumps the exponent; 0x7c00 is Inf
	}
	return sign | uint16(h)
}

// BF16ToF32 converts bfloat16 bits to float32. It is exact: a bfloat16 is the
// top half of a float32.
func BF16ToF32(h uint16) float32 {
	return math.Float32frombits(uint32(h) << 16)
}

// F32ToBF16 converts f to bfloat16 bits, rounding to nearest with ties to
// even; a NaN becomes a quiet NaN (ggml_compute_fp32_to_bf16).
func F32ToBF16(f float32) uint16 {
	u := math.Float32bits(f)
	if u&0x7fffffff > 0x7f800000 {
		return uint16(u>>16) | 64
	}
	return uint16((u + (0x7fff + (u>>16)&1)) >> 16)
}

// roundF16 returns f rounded to the nearest binary16 value, as float32.
func roundF16(f float32) float32 { return F16ToF32(F32ToF16(f)) }
