package kernels

import (
	"encoding/binary"
	"fmt"
	"math"
)

// VecDot returns the dot product of one weight row — n elements of type t in
// GGML's block layout — with activations act already converted by
// QuantizeActs(t, …) to ActType(t). n must be a multiple of t.BlockSize(),
// len(row) must be t.RowBytes(n) and len(act) ActType(t).RowBytes(n);
// otherwise the error wraps ErrShape (or ErrUnsupported for a type without a
// dot product).
//
// The arithmetic is that of ggml's generic CPU kernels
// (ggml_vec_dot_*_generic): integer products are summed exactly per block,
// then combined in float32 block by block in ggml's order, every operation
// rounded to float32 (never fused):
//
//	Q4_0:      sumf += (isum·dx)·dy
//	Q5_0:      sumf += (dx·dy)·isum
//	Q8_0:      sumf += isum·(dx·dy)
//	Q4_1/Q5_1: sumf += (dx·dy)·isum + mx·sy
//	Q4_K/Q5_K: eight float32 lanes, lane l += (dx·dy)·aux[l] where aux[l]
//	           sums scale·q·a over the elements ≡ l (mod 8) of the super-block;
//	           sumf −= (dmin·dy)·Σ bsums·min; finally sumf += lane 0 … lane 7
//	Q6_K:      as Q4_K with 16-element sub-blocks and no mins
//
// F32, F16 and BF16 rows use the float order of Dot (F16 and BF16
// activations are the rounded float32 values; their products are exact in
// float32).
func VecDot(t DType, row, act []byte, n int) (float32, error) {
	at, err := ActType(t)
	if err != nil {
		return 0, fmt.Errorf("vecdot: %w", err)
	}
	rb, err := t.RowBytes(n)
	if err != nil {
		return 0, fmt.Errorf("vecdot: %w", err)
	}
	ab, err := at.RowBytes(n)
	if err != nil {
		return 0, fmt.Errorf("vecdot: %w", err)
	}
	if len(row) != rb || len(act) != ab {
		return 0, fmt.Errorf("vecdot %d %v elements: row %d bytes (want %d), act %d bytes (want %d): %w",
			n, t, len(row), rb, len(act), ab, ErrShape)
	}
	nb := n / t.BlockSize()
	switch t {
	case Q4_0:
		return dotQ4_0(row, act, nb), nil
	case Q4_1:
		return dotQ4_1(row, act, nb), nil
	case Q5_0:
		return dotQ5_0(row, act, nb), nil
	case Q5_1:
		return dotQ5_1(row, act, nb), nil
	case Q8_0:
		return dotQ8_0(row, act, nb), nil
	case Q4_K:
		return dotQ4K(row, act, nb), nil
	case Q5_K:
		return dotQ5K(row, act, nb), nil
	case Q6_K:
		return dotQ6K(row, act, nb), nil
	case F32:
		return dotRowF32Act(t, row, act, n), nil
	case F16, BF16:
		return dotRowF32Act(t, row, act, n), nil
	}
	return 0, fmt.Errorf("vecdot %v: %w", t, ErrUnsupported)
}

// The per-block float combines, shared by every implementation of a type so
// that they round identically. Each product is rounded to float32 before it
// is added (the explicit conversions forbid fused multiply-adds).

func accQ4_0(sumf float32, isum int32, dx, dy float32) float32 {
	t := float32(float32(isum) * dx)
	return sumf + float32(t*dy)
}

func accQ5_0(sumf float32, isum int32, dx, dy float32) float32 {
	return sumf + float32(float32(dx*dy)*float32(isum))
}

func accQ8_0(sumf float32, isum int32, dx, dy float32) float32 {
	return sumf + float32(float32(isum)*float32(dx*dy))
}

func accQ4_1(sumf float32, isum int32, dx, dy, mx, sy float32) float32 {
	return sumf + (float32(float32(dx*dy)*float32(isum)) + float32(mx*sy))
}

// dotQ4_0 is ggml_vec_dot_q4_0_q8_0 over nb blocks.
func dotQ4_0(row, act []byte, nb int) float32 {
	var sumf float32
	for i := 0; i < nb; i++ {
		x := row[i*18 : i*18+18]
		y := act[i*34 : i*34+34]
		qs, q8 := x[2:18], y[2:34]
		var s0, s1 int32
		for j := 0; j < 16; j++ {
			s0 += (int32(qs[j]&0xf) - 8) * int32(int8(q8[j]))
			s1 += (int32(qs[j]>>4) - 8) * int32(int8(q8[j+16]))
		}
		sumf = accQ4_0(sumf, s0+s1, f16at(x), f16at(y))
	}
	return sumf
}

// dotQ4_1 is ggml_vec_dot_q4_1_q8_1 over nb blocks.
func dotQ4_1(row, act []byte, nb int) float32 {
	var sumf float32
	for i := 0; i < nb; i++ {
		x := row[i*20 : i*20+20]
		y := act[i*36 : i*36+36]
		qs, q8 := x[4:20], y[4:36]
		var s0, s1 int32
		for j := 0; j < 16; j++ {
			s0 += int32(qs[j]&0xf) * int32(int8(q8[j]))
			s1 += int32(qs[j]>>4) * int32(int8(q8[j+16]))
		}
		sumf = accQ4_1(sumf, s0+s1, f16at(x), f16at(y), f16at(x[2:]), f16at(y[2:]))
	}
	return sumf
}

// dotQ5_0 is ggml_vec_dot_q5_0_q8_0 over nb blocks.
func dotQ5_0(row, act []byte, nb int) float32 {
	var sumf float32
	for i := 0; i < nb; i++ {
		x := row[i*22 : i*22+22]
		y := act[i*34 : i*34+34]
		qh := le32(x[2:])
		qs, q8 := x[6:22], y[2:34]
		var s0, s1 int32
		for j := 0; j < 16; j++ {
			v0 := int32(uint32(qs[j]&0xf)|(qh>>uint(j)&1)<<4) - 16
			v1 := int32(uint32(qs[j]>>4)|(qh>>uint(j+16)&1)<<4) - 16
			s0 += v0 * int32(int8(q8[j]))
			s1 += v1 * int32(int8(q8[j+16]))
		}
		sumf = accQ5_0(sumf, s0+s1, f16at(x), f16at(y))
	}
	return sumf
}

// dotQ5_1 is ggml_vec_dot_q5_1_q8_1 over nb blocks.
func dotQ5_1(row, act []byte, nb int) float32 {
	var sumf float32
	for i := 0; i < nb; i++ {
		x := row[i*24 : i*24+24]
		y := act[i*36 : i*36+36]
		qh := le32(x[4:])
		qs, q8 := x[8:24], y[4:36]
		var s0, s1 int32
		for j := 0; j < 16; j++ {
			v0 := int32(uint32(qs[j]&0xf) | (qh>>uint(j)&1)<<4)
			v1 := int32(uint32(qs[j]>>4) | (qh>>uint(j+16)&1)<<4)
			s0 += v0 * int32(int8(q8[j]))
			s1 += v1 * int32(int8(q8[j+16]))
		}
		sumf = accQ4_1(sumf, s0+s1, f16at(x), f16at(y), f16at(x[2:]), f16at(y[2:]))
	}
	return sumf
}

// dotQ8_0 is ggml_vec_dot_q8_0_q8_0 over nb blocks.
func dotQ8_0(row, act []byte, nb int) float32 {
	var sumf float32
	for i := 0; i < nb; i++ {
		x := row[i*34 : i*34+34]
		y := act[i*34 : i*34+34]
		qx, qy := x[2:34], y[2:34]
		var s int32
		for j := 0; j < 32; j++ {
			s += int32(int8(qx[j])) * int32(int8(qy[j]))
		}
		sumf = accQ8_0(sumf, s, f16at(x), f16at(y))
	}
	return sumf
}

// kLanes holds the eight float32 lane sums of the K-quant dot products.
type kLanes [8]float32

// add does lane[l] += d·aux[l], rounding the product first.
func (s *kLanes) add(d float32, aux *[8]int32) {
	for l := range s {
		s[l] += float32(d * float32(aux[l]))
	}
}

// finish adds the lanes, in order, to sumf.
func (s *kLanes) finish(sumf float32) float32 {
	for _, v := range s {
		sumf += v
	}
	return sumf
}

// q8KBlock splits one block_q8_K into its scale, quants and block sums.
func q8KBlock(y []byte) (d float32, q8 []byte, bsums []byte) {
	y = y[:292]
	return math.Float32frombits(le32(y)), y[4:260], y[260:292]
}

// kResidues adds scale·q·a of one 32-element sub-block to the eight residue
// lanes: lane k gets the elements l ≡ k (mod 8), as ggml's generic K-quant
// kernels group them.
func kResidues(aux *[8]int32, scale int32, q *[32]byte, a []byte) {
	a = a[:32]
	for k := 0; k < 8; k++ {
		t := int32(q[k])*int32(int8(a[k])) + int32(q[k+8])*int32(int8(a[k+8])) +
			int32(q[k+16])*int32(int8(a[k+16])) + int32(q[k+24])*int32(int8(a[k+24]))
		aux[k] += scale * t
	}
}

// nibbles4 sets lo and hi to the low and high nibbles of the 32 bytes src,
// eight at a time.
func nibbles4(src []byte, lo, hi *[32]byte) {
	src = src[:32]
	for j := 0; j < 32; j += 8 {
		x := le64(src[j:])
		binary.LittleEndian.PutUint64(lo[j:], x&0x0f0f0f0f0f0f0f0f)
		binary.LittleEndian.PutUint64(hi[j:], x>>4&0x0f0f0f0f0f0f0f0f)
	}
}

// highBits5 ORs bit s of each qh byte into bit 4 of the matching q byte.
func highBits5(q *[32]byte, qh []byte, s uint) {
	qh = qh[:32]
	for j := 0; j < 32; j += 8 {
		h := le64(qh[j:]) >> s & 0x0101010101010101
		binary.LittleEndian.PutUint64(q[j:], le64(q[j:])|h<<4)
	}
}

// dotQ4K is ggml_vec_dot_q4_K_q8_K over nb super-blocks.
func dotQ4K(row, act []byte, nb int) float32 {
	var sums kLanes
	var sumf float32
	for i := 0; i < nb; i++ {
		x := row[i*144 : i*144+144]
		yd, q8, bsums := q8KBlock(act[i*292:])
		sc, mn := kScaleMin(x[4:16])
		qs := x[16:144]
		var aux [8]int32
		var lo, hi [32]byte
		for c := 0; c < 4; c++ {
			nibbles4(qs[32*c:], &lo, &hi)
			kResidues(&aux, int32(sc[2*c]), &lo, q8[64*c:])
			kResidues(&aux, int32(sc[2*c+1]), &hi, q8[64*c+32:])
		}
		var summ int32
		for j := 0; j < 16; j++ {
			summ += int32(int16(le16(bsums[2*j:]))) * int32(mn[j/2])
		}
		sums.add(f16at(x)*yd, &aux)
		sumf -= float32(float32(f16at(x[2:])*yd) * float32(summ))
	}
	return sums.finish(sumf)
}

// dotQ5K is ggml_vec_dot_q5_K_q8_K over nb super-blocks.
func dotQ5K(row, act []byte, nb int) float32 {
	var sums kLanes
	var sumf float32
	for i := 0; i < nb; i++ {
		x := row[i*176 : i*176+176]
		yd, q8, bsums := q8KBlock(act[i*292:])
		sc, mn := kScaleMin(x[4:16])
		qh := x[16:48]
		qs := x[48:176]
		var aux [8]int32
		var lo, hi [32]byte
		for c := 0; c < 4; c++ {
			nibbles4(qs[32*c:], &lo, &hi)
			highBits5(&lo, qh, uint(2*c))
			highBits5(&hi, qh, uint(2*c+1))
			kResidues(&aux, int32(sc[2*c]), &lo, q8[64*c:])
			kResidues(&aux, int32(sc[2*c+1]), &hi, q8[64*c+32:])
		}
		var summ int32
		for j := 0; j < 16; j++ {
			summ += int32(int16(le16(bsums[2*j:]))) * int32(mn[j/2])
		}
		sums.add(f16at(x)*yd, &aux)
		sumf -= float32(float32(f16at(x[2:])*yd) * float32(summ))
	}
	return sums.finish(sumf)
}

// dotQ6K is ggml_vec_dot_q6_K_q8_K over nb super-blocks.
func dotQ6K(row, act []byte, nb int) float32 {
	var sums kLanes
	for i := 0; i < nb; i++ {
		x := row[i*210 : i*210+210]
		yd, q8, _ := q8KBlock(act[i*292:])
		var q [256]int8
		unpackQ6K(x[0:128], x[128:192], &q)
		scales := x[192:208]
		var aux [8]int32
		for j := 0; j < 16; j++ {
			scale := int32(int8(scales[j]))
			a := q8[16*j : 16*j+16]
			w := q[16*j : 16*j+16]
			for k := 0; k < 8; k++ {
				t := int32(w[k])*int32(int8(a[k])) + int32(w[k+8])*int32(int8(a[k+8]))
				aux[k] += scale * t
			}
		}
		sums.add(f16at(x[208:])*yd, &aux)
	}
	return sums.finish(0)
}

// dotRowF32Act is the F32/F16/BF16 row · F32/F16/BF16 activation dot of
// VecDot, converting the activation bytes 256 at a time so it shares the
// float order of the MatMul path (floatRowDot).
func dotRowF32Act(t DType, row, act []byte, n int) float32 {
	var buf [256]float32
	var acc f32Acc
	esz := t.BlockBytes()
	for off := 0; off < n; off += len(buf) {
		m := min(len(buf), n-off)
		x := buf[:m]
		a := act[off*esz : (off+m)*esz]
		for i := range x {
			switch t {
			case F32:
				x[i] = math.Float32frombits(le32(a[4*i:]))
			case F16:
				x[i] = F16ToF32(le16(a[2*i:]))
			default:
				x[i] = BF16ToF32(le16(a[2*i:]))
			}
		}
		acc.addRow(t, row[off*esz:(off+m)*esz], x)
	}
	return acc.sum()
}
