package kernels

import (
	"encoding/binary"
	"fmt"
	"math"
)

// le16 and le32 read little-endian fields of GGML blocks.
func le16(b []byte) uint16 { return binary.LittleEndian.Uint16(b) }
func le32(b []byte) uint32 { return binary.LittleEndian.Uint32(b) }
func le64(b []byte) uint64 { return binary.LittleEndian.Uint64(b) }

// f16at reads the binary16 field at b[0:2] as float32.
func f16at(b []byte) float32 { return F16ToF32(le16(b)) }

// Dequantize expands src, len(dst) elements of type t in GGML's block layout,
// into float32 values in dst. len(dst) must be a multiple of t.BlockSize()
// and len(src) must be exactly t.RowBytes(len(dst)); otherwise the error
// wraps ErrShape. Supported types: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1,
// Q8_0, Q4_K, Q5_K and Q6_K; others wrap ErrUnsupported.
//
// The results are bit-identical to the PyPI gguf package's
// gguf.quants.dequantize (and to ggml's dequantize_row_*): every value is
// computed with the same float32 operations in the same order, each rounded
// to float32 (never fused), e.g. Q4_1 is (d·q)+m and Q4_K is
// (d·sc)·q − (dmin·m).
func Dequantize(t DType, src []byte, dst []float32) error {
	switch t {
	case F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K:
	default:
		return fmt.Errorf("dequantize %v: %w", t, ErrUnsupported)
	}
	need, err := t.RowBytes(len(dst))
	if err != nil {
		return fmt.Errorf("dequantize: %w", err)
	}
	if len(src) != need {
		return fmt.Errorf("dequantize %d %v elements: have %d bytes, want %d: %w", len(dst), t, len(src), need, ErrShape)
	}
	bs, bb := t.BlockSize(), t.BlockBytes()
	for i := 0; i < len(dst)/bs; i++ {
		b := src[i*bb : (i+1)*bb]
		y := dst[i*bs : (i+1)*bs]
		switch t {
		case F32:
			y[0] = math.Float32frombits(le32(b))
		case F16:
			y[0] = F16ToF32(le16(b))
		case BF16:
			y[0] = BF16ToF32(le16(b))
		case Q4_0:
			dequantQ4_0(b, y)
		case Q4_1:
			dequantQ4_1(b, y)
		case Q5_0:
			dequantQ5_0(b, y)
		case Q5_1:
			dequantQ5_1(b, y)
		case Q8_0:
			dequantQ8_0(b, y)
		case Q4_K:
			dequantQ4K(b, y)
		case Q5_K:
			dequantQ5K(b, y)
		case Q6_K:
			dequantQ6K(b, y)
		}
	}
	return nil
}

// Block layouts (byte offsets), as in ggml-common.h:
//
//	Q4_0 d f16 | qs[16]: element j low nibble of qs[j], element j+16 high nibble
//	Q4_1 d f16 | m f16 | qs[16]
//	Q5_0 d f16 | qh u32 | qs[16]: bit j of qh is bit 4 of element j
//	Q5_1 d f16 | m f16 | qh u32 | qs[16]
//	Q8_0 d f16 | qs int8[32]

func dequantQ4_0(b []byte, y []float32) {
	d := f16at(b)
	qs := b[2:18]
	y = y[:32]
	for j := 0; j < 16; j++ {
		y[j] = d * float32(int32(qs[j]&0xf)-8)
		y[j+16] = d * float32(int32(qs[j]>>4)-8)
	}
}

func dequantQ4_1(b []byte, y []float32) {
	d, m := f16at(b), f16at(b[2:])
	qs := b[4:20]
	y = y[:32]
	for j := 0; j < 16; j++ {
		y[j] = float32(d*float32(qs[j]&0xf)) + m
		y[j+16] = float32(d*float32(qs[j]>>4)) + m
	}
}

func dequantQ5_0(b []byte, y []float32) {
	d := f16at(b)
	qh := le32(b[2:])
	qs := b[6:22]
	y = y[:32]
	for j := 0; j < 16; j++ {
		h0 := (qh >> uint(j) & 1) << 4
		h1 := (qh >> uint(j+16) & 1) << 4
		y[j] = d * float32(int32(uint32(qs[j]&0xf)|h0)-16)
		y[j+16] = d * float32(int32(uint32(qs[j]>>4)|h1)-16)
	}
}

func dequantQ5_1(b []byte, y []float32) {
	d, m := f16at(b), f16at(b[2:])
	qh := le32(b[4:])
	qs := b[8:24]
	y = y[:32]
	for j := 0; j < 16; j++ {
		h0 := (qh >> uint(j) & 1) << 4
		h1 := (qh >> uint(j+16) & 1) << 4
		y[j] = float32(d*float32(uint32(qs[j]&0xf)|h0)) + m
		y[j+16] = float32(d*float32(uint32(qs[j]>>4)|h1)) + m
	}
}

func dequantQ8_0(b []byte, y []float32) {
	d := f16at(b)
	qs := b[2:34]
	y = y[:32]
	for j := range y {
		y[j] = float32(int8(qs[j])) * d
	}
}

// kScaleMin unpacks the eight 6-bit scales and mins of a Q4_K/Q5_K block from
// its 12 packed bytes (get_scale_min_k4): sub-blocks 0–3 keep the low six bits
// of bytes 0–3 (scales) and 4–7 (mins); sub-blocks 4–7 take their low four
// bits from the nibbles of bytes 8–11 and their top two from the spare top
// bits of bytes 0–7.
func kScaleMin(s []byte) (sc, mn [8]uint8) {
	s = s[:12]
	for j := 0; j < 4; j++ {
		sc[j] = s[j] & 63
		mn[j] = s[j+4] & 63
		sc[j+4] = s[j+8]&0xf | (s[j]>>6)<<4
		mn[j+4] = s[j+8]>>4 | (s[j+4]>>6)<<4
	}
	return sc, mn
}

// Q4_K: d f16 | dmin f16 | scales[12] | qs[128]. Sub-block 2c (elements
// 64c…64c+31) is the low nibbles of qs[32c:32c+32], sub-block 2c+1 the high
// nibbles. Element value: (d·sc)·q − (dmin·m).
func dequantQ4K(b []byte, y []float32) {
	d, dmin := f16at(b), f16at(b[2:])
	sc, mn := kScaleMin(b[4:16])
	qs := b[16:144]
	y = y[:256]
	for c := 0; c < 4; c++ {
		q := qs[32*c : 32*c+32]
		d1, m1 := d*float32(sc[2*c]), float32(dmin*float32(mn[2*c]))
		d2, m2 := d*float32(sc[2*c+1]), float32(dmin*float32(mn[2*c+1]))
		lo := y[64*c : 64*c+32]
		hi := y[64*c+32 : 64*c+64]
		for l := 0; l < 32; l++ {
			lo[l] = float32(d1*float32(q[l]&0xf)) - m1
			hi[l] = float32(d2*float32(q[l]>>4)) - m2
		}
	}
}

// Q5_K: d f16 | dmin f16 | scales[12] | qh[32] | qs[128]. As Q4_K, plus bit s
// of qh[l] is bit 4 of element 32s+l.
func dequantQ5K(b []byte, y []float32) {
	d, dmin := f16at(b), f16at(b[2:])
	sc, mn := kScaleMin(b[4:16])
	qh := b[16:48]
	qs := b[48:176]
	y = y[:256]
	for c := 0; c < 4; c++ {
		q := qs[32*c : 32*c+32]
		d1, m1 := d*float32(sc[2*c]), float32(dmin*float32(mn[2*c]))
		d2, m2 := d*float32(sc[2*c+1]), float32(dmin*float32(mn[2*c+1]))
		lo := y[64*c : 64*c+32]
		hi := y[64*c+32 : 64*c+64]
		s1, s2 := uint(2*c), uint(2*c+1)
		for l := 0; l < 32; l++ {
			v1 := q[l]&0xf | (qh[l]>>s1&1)<<4
			v2 := q[l]>>4 | (qh[l]>>s2&1)<<4
			lo[l] = float32(d1*float32(v1)) - m1
			hi[l] = float32(d2*float32(v2)) - m2
		}
	}
}

// Q6_K: ql[128] | qh[64] | scales int8[16] | d f16. Element 128h+32g+l
// (h < 2, g < 4, l < 32) has low four bits from ql[64h+32(g&1)+l] (low
// nibble for g < 2, high for g ≥ 2) and top two bits from qh[32h+l] >> 2g;
// value d·scales[e/16]·(q − 32), computed as (d·scale)·(q − 32).
func dequantQ6K(b []byte, y []float32) {
	ql := b[0:128]
	qh := b[128:192]
	scales := b[192:208]
	d := f16at(b[208:])
	y = y[:256]
	var q6 [256]int8
	unpackQ6K(ql, qh, &q6)
	for j := 0; j < 16; j++ {
		ds := d * float32(int8(scales[j]))
		for l := 0; l < 16; l++ {
			y[16*j+l] = ds * float32(q6[16*j+l])
		}
	}
}

// unpackQ6K expands the 6-bit values of one Q6_K block into signed
// q − 32 ∈ [−32, 31], in element order.
func unpackQ6K(ql, qh []byte, q *[256]int8) {
	ql = ql[:128]
	qh = qh[:64]
	for h := 0; h < 2; h++ {
		a := ql[64*h : 64*h+64]
		hb := qh[32*h : 32*h+32]
		o := q[128*h : 128*h+128]
		for l := 0; l < 32; l++ {
			o[l] = int8(a[l]&0xf|(hb[l]&3)<<4) - 32
			o[l+32] = int8(a[l+32]&0xf|(hb[l]>>2&3)<<4) - 32
			o[l+64] = int8(a[l]>>4|(hb[l]>>4&3)<<4) - 32
			o[l+96] = int8(a[l+32]>>4|(hb[l]>>6&3)<<4) - 32
		}
	}
}
