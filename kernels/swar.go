package kernels

// Portable fast dot products for the 32-element formats (Q4_0, Q4_1, Q5_0,
// Q5_1, Q8_0 against Q8_0/Q8_1 activations), "SIMD within a register".
//
// The integer sum of a block, Σ w·a, is exact whatever way it is computed, so
// these kernels return bit-for-bit what the reference VecDot returns: they
// compute the same integer per block and then apply the same float combine
// (accQ4_0 …). They compute the integer with 64-bit multiplies that each do
// four multiply-adds:
//
// Put four unsigned weights in the 16-bit lanes of W (lane L = w_L) and four
// unsigned activations in reverse order in A (lane L = u_{3−L}). In W·A
// (mod 2^64) the lane-3 coefficient, bits 48–63, is Σ_L w_L·u_L, and the
// lower coefficients are sums of at most three products. As long as every
// coefficient of a sum of such products stays below 2^16 there are no carries
// between lanes, and (Σ W·A) >> 48 is the exact dot product. Activations are
// offset to u = q + 128 ∈ [1, 255] so all lanes are non-negative; the offset
// is removed with per-block sums: Σ w·q = Σ w·u − 128·Σ w.
//
// Bounds: 4-bit weights (≤ 15) allow four words per extraction
// (4·4·15·255 = 61200 < 65536); 5-bit weights (≤ 31) two words
// (2·4·31·255 = 63240). Q8_0 weights are split into their two nibbles.
//
// Word layout of a 32-element block, chosen so a weight word is a mask and a
// shift of 8 raw Q4 bytes (byte j holds elements j and j+16):
//
//	word 4c+0: elements 8c+0, 8c+2, 8c+4, 8c+6     (low nibbles, even bytes)
//	word 4c+1: elements 8c+16, +18, +20, +22       (high nibbles, even bytes)
//	word 4c+2: elements 8c+1, 8c+3, 8c+5, 8c+7     (low nibbles, odd bytes)
//	word 4c+3: elements 8c+17, +19, +21, +23       (high nibbles, odd bytes)
//
// for c = 0, 1; weights in lane order, activations reversed.

const (
	laneMask4  = 0x000F000F000F000F // low nibble of every 16-bit lane
	laneMask8  = 0x00FF00FF00FF00FF // low byte of every 16-bit lane
	laneOnes   = 0x0001000100010001 // multiplier that sums the four lanes into lane 3
	spreadBits = 0x0000040010004001 // moves bits 0, 2, 4, 6 of a byte to bits 0, 16, 32, 48
	signFlip   = 0x8080808080808080 // int8 → uint8 + 128 in every byte
)

// actBlock is one block of 32 Q8_0 or Q8_1 activations packed for the SWAR
// kernels.
type actBlock struct {
	u   [8]uint64 // q+128 in reversed 16-bit lanes, word layout above
	d   float32   // the fp16 scale, as float32
	s   float32   // Q8_1 only: fp16(d·Σq), as float32
	sum int32     // Σq
}

// wBlock is one Q4_0/Q4_1/Q5_0/Q5_1 weight block unpacked for the SWAR
// kernels.
type wBlock struct {
	q    [8]uint64 // unsigned weights (0…15 or 0…31) in 16-bit lanes
	d, m float32   // scale and (Q4_1/Q5_1) min, as float32
	corr int32     // 128·Σq, the activation offset to remove
}

// wBlock8 is one Q8_0 weight block unpacked for the SWAR kernels: the low
// and high nibbles of v = w+128, word i lined up with activation word i.
type wBlock8 struct {
	lo, hi [8]uint64
	d      float32
	corr   int32 // 128·Σv
}

// packActBlock quantises 32 activations as quantBlockQ8_0/quantBlockQ8_1 do
// and packs them.
func packActBlock(x []float32, b *actBlock) {
	d, id := q8Scale(x)
	var q [qk]int8
	sum := quantQ8(x, id, &q)
	b.d = roundF16(d)
	b.s = roundF16(float32(sum) * d)
	b.sum = sum
	for c := 0; c < 2; c++ {
		for w := 0; w < 4; w++ {
			base := 8*c + 16*(w&1) + w>>1
			var v uint64
			for l := 0; l < 4; l++ {
				v |= uint64(int32(q[base+2*(3-l)])+128) << (16 * l)
			}
			b.u[4*c+w] = v
		}
	}
}

// packActs packs one activation row (len(x) = 32·len(dst)).
func packActs(x []float32, dst []actBlock) {
	for i := range dst {
		packActBlock(x[i*qk:(i+1)*qk], &dst[i])
	}
}

// laneSum returns the sum of the four 16-bit lanes of v (≤ 65535 in total).
func laneSum(v uint64) int32 { return int32(v * laneOnes >> 48) }

// unpackQ4 sets w.q and w.corr from the 16 nibble bytes of a Q4 block.
func unpackQ4(qs []byte, w *wBlock) {
	x0, x1 := le64(qs[0:8]), le64(qs[8:16])
	w.q[0] = x0 & laneMask4
	w.q[1] = x0 >> 4 & laneMask4
	w.q[2] = x0 >> 8 & laneMask4
	w.q[3] = x0 >> 12 & laneMask4
	w.q[4] = x1 & laneMask4
	w.q[5] = x1 >> 4 & laneMask4
	w.q[6] = x1 >> 8 & laneMask4
	w.q[7] = x1 >> 12 & laneMask4
	s := w.q[0] + w.q[1] + w.q[2] + w.q[3] + w.q[4] + w.q[5] + w.q[6] + w.q[7]
	w.corr = 128 * laneSum(s)
}

// spread moves bits 0, 2, 4, 6 of b to bit 4 of lanes 0…3.
func spread(b uint64) uint64 { return (b & 0x55 * spreadBits & laneOnes) << 4 }

// unpackQ5 sets w.q and w.corr from the high-bit word qh and the 16 nibble
// bytes of a Q5 block.
func unpackQ5(qh uint32, qs []byte, w *wBlock) {
	x0, x1 := le64(qs[0:8]), le64(qs[8:16])
	h := uint64(qh)
	b0, b1, b2, b3 := h&0xff, h>>8&0xff, h>>16&0xff, h>>24 // elements 0–7, 8–15, 16–23, 24–31
	w.q[0] = x0&laneMask4 | spread(b0)
	w.q[1] = x0>>4&laneMask4 | spread(b2)
	w.q[2] = x0>>8&laneMask4 | spread(b0>>1)
	w.q[3] = x0>>12&laneMask4 | spread(b2>>1)
	w.q[4] = x1&laneMask4 | spread(b1)
	w.q[5] = x1>>4&laneMask4 | spread(b3)
	w.q[6] = x1>>8&laneMask4 | spread(b1>>1)
	w.q[7] = x1>>12&laneMask4 | spread(b3>>1)
	s := w.q[0] + w.q[1] + w.q[2] + w.q[3] + w.q[4] + w.q[5] + w.q[6] + w.q[7]
	w.corr = 128 * laneSum(s)
}

// unpackQ8 fills w from one raw Q8_0 block. Chunk k (elements 8k…8k+7) has
// its even elements in activation word 4(k&1) + k>>1 and its odd ones two
// words further.
func unpackQ8(b []byte, w *wBlock8) {
	b = b[:34]
	w.d = f16at(b)
	var s uint64
	for k := 0; k < 4; k++ {
		v := le64(b[2+8*k:]) ^ signFlip
		ev := 4*(k&1) + k>>1
		od := ev + 2
		w.lo[ev] = v & laneMask4
		w.hi[ev] = v >> 4 & laneMask4
		w.lo[od] = v >> 8 & laneMask4
		w.hi[od] = v >> 12 & laneMask4
		s += v&laneMask8 + v>>8&laneMask8
	}
	w.corr = 128 * laneSum(s)
}

// unpackRow expands one weight row of nb blocks of type t (Q4_0, Q4_1, Q5_0
// or Q5_1) into w.
func unpackRow(t DType, row []byte, w []wBlock) {
	switch t {
	case Q4_0:
		for i := range w {
			b := row[i*18 : i*18+18]
			w[i].d = f16at(b)
			unpackQ4(b[2:], &w[i])
		}
	case Q4_1:
		for i := range w {
			b := row[i*20 : i*20+20]
			w[i].d, w[i].m = f16at(b), f16at(b[2:])
			unpackQ4(b[4:], &w[i])
		}
	case Q5_0:
		for i := range w {
			b := row[i*22 : i*22+22]
			w[i].d = f16at(b)
			unpackQ5(le32(b[2:]), b[6:], &w[i])
		}
	case Q5_1:
		for i := range w {
			b := row[i*24 : i*24+24]
			w[i].d, w[i].m = f16at(b), f16at(b[2:])
			unpackQ5(le32(b[4:]), b[8:], &w[i])
		}
	}
}

// The block loops below spell the products out instead of calling a helper:
// a call per block would not be inlined and costs a third of the time.

// swarDotQ4_0 … swarDotQ5_1 return the dot product of an unpacked weight row
// with a packed activation row (len(a) ≥ len(w)), bit-identical to dotQ4_0 …
// dotQ5_1.
func swarDotQ4_0(w []wBlock, a []actBlock) float32 {
	a = a[:len(w)]
	var sumf float32
	for i := range w {
		q, u := &w[i].q, &a[i].u
		p0 := q[0]*u[0] + q[1]*u[1] + q[2]*u[2] + q[3]*u[3]
		p1 := q[4]*u[4] + q[5]*u[5] + q[6]*u[6] + q[7]*u[7]
		isum := int32(p0>>48) + int32(p1>>48) - w[i].corr - 8*a[i].sum
		sumf = accQ4_0(sumf, isum, w[i].d, a[i].d)
	}
	return sumf
}

func swarDotQ4_1(w []wBlock, a []actBlock) float32 {
	a = a[:len(w)]
	var sumf float32
	for i := range w {
		q, u := &w[i].q, &a[i].u
		p0 := q[0]*u[0] + q[1]*u[1] + q[2]*u[2] + q[3]*u[3]
		p1 := q[4]*u[4] + q[5]*u[5] + q[6]*u[6] + q[7]*u[7]
		isum := int32(p0>>48) + int32(p1>>48) - w[i].corr
		sumf = accQ4_1(sumf, isum, w[i].d, a[i].d, w[i].m, a[i].s)
	}
	return sumf
}

func swarDotQ5_0(w []wBlock, a []actBlock) float32 {
	a = a[:len(w)]
	var sumf float32
	for i := range w {
		q, u := &w[i].q, &a[i].u
		p0 := q[0]*u[0] + q[1]*u[1]
		p1 := q[2]*u[2] + q[3]*u[3]
		p2 := q[4]*u[4] + q[5]*u[5]
		p3 := q[6]*u[6] + q[7]*u[7]
		isum := int32(p0>>48) + int32(p1>>48) + int32(p2>>48) + int32(p3>>48) - w[i].corr - 16*a[i].sum
		sumf = accQ5_0(sumf, isum, w[i].d, a[i].d)
	}
	return sumf
}

func swarDotQ5_1(w []wBlock, a []actBlock) float32 {
	a = a[:len(w)]
	var sumf float32
	for i := range w {
		q, u := &w[i].q, &a[i].u
		p0 := q[0]*u[0] + q[1]*u[1]
		p1 := q[2]*u[2] + q[3]*u[3]
		p2 := q[4]*u[4] + q[5]*u[5]
		p3 := q[6]*u[6] + q[7]*u[7]
		isum := int32(p0>>48) + int32(p1>>48) + int32(p2>>48) + int32(p3>>48) - w[i].corr
		sumf = accQ4_1(sumf, isum, w[i].d, a[i].d, w[i].m, a[i].s)
	}
	return sumf
}

// swarDotQ8_0 is dotQ8_0 for an unpacked weight row: Σ w·q with w = v−128
// and q = u−128 is Σ v·u − 128·Σv − 128·Σq (the constants cancel).
func swarDotQ8_0(w []wBlock8, a []actBlock) float32 {
	a = a[:len(w)]
	var sumf float32
	for i := range w {
		wb, ab := &w[i], &a[i]
		l0 := wb.lo[0]*ab.u[0] + wb.lo[1]*ab.u[1] + wb.lo[2]*ab.u[2] + wb.lo[3]*ab.u[3]
		l1 := wb.lo[4]*ab.u[4] + wb.lo[5]*ab.u[5] + wb.lo[6]*ab.u[6] + wb.lo[7]*ab.u[7]
		h0 := wb.hi[0]*ab.u[0] + wb.hi[1]*ab.u[1] + wb.hi[2]*ab.u[2] + wb.hi[3]*ab.u[3]
		h1 := wb.hi[4]*ab.u[4] + wb.hi[5]*ab.u[5] + wb.hi[6]*ab.u[6] + wb.hi[7]*ab.u[7]
		vu := 16*(int32(h0>>48)+int32(h1>>48)) + int32(l0>>48) + int32(l1>>48)
		sumf = accQ8_0(sumf, vu-wb.corr-128*ab.sum, wb.d, ab.d)
	}
	return sumf
}

// The fused kernels below read the weight blocks straight from the GGML row
// instead of an unpacked copy: cheaper when a weight row meets only one or
// two activation rows (decode). They compute the same integers and the same
// float combine as the unpacked kernels, so the results are identical.

// fusedDotQ4_0 is swarDotQ4_0 on a raw Q4_0 row of len(a) blocks.
func fusedDotQ4_0(row []byte, a []actBlock) float32 {
	row = row[:len(a)*18]
	var sumf float32
	for i := range a {
		b := row[i*18 : i*18+18 : i*18+18]
		u := &a[i].u
		x0, x1 := le64(b[2:10]), le64(b[10:18])
		q0, q1, q2, q3 := x0&laneMask4, x0>>4&laneMask4, x0>>8&laneMask4, x0>>12&laneMask4
		q4, q5, q6, q7 := x1&laneMask4, x1>>4&laneMask4, x1>>8&laneMask4, x1>>12&laneMask4
		p0 := q0*u[0] + q1*u[1] + q2*u[2] + q3*u[3]
		p1 := q4*u[4] + q5*u[5] + q6*u[6] + q7*u[7]
		corr := 128 * laneSum(q0+q1+q2+q3+q4+q5+q6+q7)
		isum := int32(p0>>48) + int32(p1>>48) - corr - 8*a[i].sum
		sumf = accQ4_0(sumf, isum, f16at(b), a[i].d)
	}
	return sumf
}

// fusedDotQ4_1 is swarDotQ4_1 on a raw Q4_1 row of len(a) blocks.
func fusedDotQ4_1(row []byte, a []actBlock) float32 {
	row = row[:len(a)*20]
	var sumf float32
	for i := range a {
		b := row[i*20 : i*20+20 : i*20+20]
		u := &a[i].u
		x0, x1 := le64(b[4:12]), le64(b[12:20])
		q0, q1, q2, q3 := x0&laneMask4, x0>>4&laneMask4, x0>>8&laneMask4, x0>>12&laneMask4
		q4, q5, q6, q7 := x1&laneMask4, x1>>4&laneMask4, x1>>8&laneMask4, x1>>12&laneMask4
		p0 := q0*u[0] + q1*u[1] + q2*u[2] + q3*u[3]
		p1 := q4*u[4] + q5*u[5] + q6*u[6] + q7*u[7]
		corr := 128 * laneSum(q0+q1+q2+q3+q4+q5+q6+q7)
		isum := int32(p0>>48) + int32(p1>>48) - corr
		sumf = accQ4_1(sumf, isum, f16at(b), a[i].d, f16at(b[2:]), a[i].s)
	}
	return sumf
}

// fusedDotQ8_0 is swarDotQ8_0 on a raw Q8_0 row of len(a) blocks.
func fusedDotQ8_0(row []byte, a []actBlock) float32 {
	row = row[:len(a)*34]
	var sumf float32
	for i := range a {
		b := row[i*34 : i*34+34 : i*34+34]
		u := &a[i].u
		v0, v1 := le64(b[2:10])^signFlip, le64(b[10:18])^signFlip
		v2, v3 := le64(b[18:26])^signFlip, le64(b[26:34])^signFlip
		// Chunk k's even elements pair with word 4(k&1)+k>>1, odd ones two on.
		l0 := v0&laneMask4*u[0] + v2&laneMask4*u[1] + v0>>8&laneMask4*u[2] + v2>>8&laneMask4*u[3]
		l1 := v1&laneMask4*u[4] + v3&laneMask4*u[5] + v1>>8&laneMask4*u[6] + v3>>8&laneMask4*u[7]
		h0 := v0>>4&laneMask4*u[0] + v2>>4&laneMask4*u[1] + v0>>12&laneMask4*u[2] + v2>>12&laneMask4*u[3]
		h1 := v1>>4&laneMask4*u[4] + v3>>4&laneMask4*u[5] + v1>>12&laneMask4*u[6] + v3>>12&laneMask4*u[7]
		s := v0&laneMask8 + v0>>8&laneMask8 + v1&laneMask8 + v1>>8&laneMask8 +
			v2&laneMask8 + v2>>8&laneMask8 + v3&laneMask8 + v3>>8&laneMask8
		vu := 16*(int32(h0>>48)+int32(h1>>48)) + int32(l0>>48) + int32(l1>>48)
		sumf = accQ8_0(sumf, vu-128*laneSum(s)-128*a[i].sum, f16at(b), a[i].d)
	}
	return sumf
}
