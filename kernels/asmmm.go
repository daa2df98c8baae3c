package kernels

import "unsafe"

// The assembly matrix products (amd64 with AVX2, see qdot_amd64.s and
// floatdot_amd64.s). Both return bitwise what the portable kernels return,
// so the choice never changes a result.
//
// Quantized weights (Q4_0, Q4_1, Q8_0) meet activations quantized exactly as
// QuantizeActs does, stored in groups of four rows so that one weight block,
// unpacked once, is multiplied by four activation blocks lying side by side:
//
//	quants: group g, block b, row r → qa[((g·nb + b)·4 + r)·32 …+32]
//	scales: qs[(g·nb + b)·8 + r] = d, qs[(g·nb + b)·8 + 4 + r] = s (Q8_1)
//
// where d and s are the fp16-rounded block scale and d·Σq. Full groups use
// the four-row kernels, the rows of a last partial group the one-row
// kernels; both compute each element with the same instructions.
//
// F32 and F16 weights with Cols a multiple of 8 use 2×4 tiles (two
// activation rows, four weight rows), 1×4 tiles and single dot products,
// again with one per-element order.

// asmQType reports whether t has an assembly quantized kernel.
func asmQType(t DType) bool { return t == Q4_0 || t == Q4_1 || t == Q8_0 }

// groupActsSize returns the bytes of quants and the float32 scales of n
// grouped activation rows of nb blocks.
func groupActsSize(n, nb int) (quants, scales int) {
	g := (n + 3) / 4
	return g * nb * 4 * qk, g * nb * 8
}

// quantGroupRow quantises activation row r (len(x) = 32·nb) into the grouped
// layout.
func quantGroupRow(x []float32, r, nb int, qa []byte, qs []float32) {
	g, rr := r/4, r%4
	if nb > 0 && haveAVX2() {
		quantRowQ8(&x[0], nb, &qa[(g*nb*4+rr)*qk], &qs[g*nb*8+rr])
		return
	}
	quantGroupRowGo(x, r, nb, qa, qs)
}

// quantGroupRowGo is the portable quantGroupRow.
func quantGroupRowGo(x []float32, r, nb int, qa []byte, qs []float32) {
	g, rr := r/4, r%4
	for b := 0; b < nb; b++ {
		xs := x[b*qk : (b+1)*qk]
		d, id := q8Scale(xs)
		var q [qk]int8
		sum := quantQ8(xs, id, &q)
		blk := g*nb + b
		dst := qa[(blk*4+rr)*qk : (blk*4+rr+1)*qk]
		for j, v := range q {
			dst[j] = byte(v)
		}
		qs[blk*8+rr] = roundF16(d)
		qs[blk*8+4+rr] = roundF16(float32(sum) * d)
	}
}

// asmQDot4 computes the four rows of an activation group against weight
// row w.
func asmQDot4(t DType, w *byte, a *byte, s *float32, nb int, out *[4]float32) {
	switch t {
	case Q4_1:
		q41Dot4(w, a, s, nb, out)
	case Q4_0:
		q40Dot4(w, a, s, nb, out)
	case Q8_0:
		q80Dot4(w, a, s, nb, out)
	}
}

// asmQDot1 computes one activation row against weight row w.
func asmQDot1(t DType, w *byte, a *byte, s *float32, nb int) float32 {
	switch t {
	case Q4_1:
		return q41Dot1(w, a, s, nb)
	case Q4_0:
		return q40Dot1(w, a, s, nb)
	case Q8_0:
		return q80Dot1(w, a, s, nb)
	}
	return 0
}

// asmQDotN computes groups (2 or 3) adjacent activation groups against nw
// weight rows from w, wstride bytes apart: activation row k against weight
// row i goes to dst[i + k·dstride] (dstride in floats).
func asmQDotN(t DType, groups int, w *byte, wstride, nw int, a *byte, s *float32, nb int, dst *float32, dstride int) {
	var kernel func(w *byte, a *byte, s *float32, nb int, gqa int, gqs int, nw int, wstride int, dst *float32, dstride int)
	switch t {
	case Q4_1:
		kernel = q41Dot8N
		if groups == 3 {
			kernel = q41Dot12N
		}
	case Q4_0:
		kernel = q40Dot8N
		if groups == 3 {
			kernel = q40Dot12N
		}
	case Q8_0:
		kernel = q80Dot8N
		if groups == 3 {
			kernel = q80Dot12N
		}
	default:
		return
	}
	kernel(w, a, s, nb, nb*4*qk, nb*8*4, nw, wstride, dst, 4*dstride)
}

// asmQDot4w computes one activation row against four weight rows.
func asmQDot4w(t DType, w *byte, wstride int, a *byte, s *float32, nb int, out *[4]float32) {
	switch t {
	case Q4_1:
		q41Dot4w(w, wstride, a, s, nb, out)
	case Q4_0:
		q40Dot4w(w, wstride, a, s, nb, out)
	case Q8_0:
		q80Dot4w(w, wstride, a, s, nb, out)
	}
}

// asmQTiles computes outputs [lo, hi) of every row for mmAsmQ.
func (j *matJob) asmQTiles(lo, hi int) {
	nb, rows := j.nb, j.m.Rows
	groups := (j.n + 3) / 4
	gb := nb * (4*qk + 8*4) // bytes of one group
	tile := max(tileBytes/gb, 1)
	qa, qs := j.st.qa, j.st.qs
	var out [4]float32
	for g0 := 0; g0 < groups; g0 += tile {
		g1 := min(groups, g0+tile)
		// The rows of a last partial group, four weight rows at a time.
		if pg := groups - 1; pg >= g0 && pg < g1 && 4*pg+4 > j.n {
			for r := 4 * pg; r < j.n; r++ {
				rr := r - 4*pg
				a, s := &qa[(pg*nb*4+rr)*qk], &qs[pg*nb*8+rr]
				o := lo
				for ; o+4 <= hi; o += 4 {
					asmQDot4w(j.m.Type, &j.m.Data[o*j.rb], j.rb, a, s, nb, &out)
					copy(j.dst[r*rows+o:r*rows+o+4], out[:])
				}
				for ; o < hi; o++ {
					j.dst[r*rows+o] = asmQDot1(j.m.Type, &j.m.Data[o*j.rb], a, s, nb)
				}
			}
			if g1 == groups {
				g1--
			}
		}
		// Triples, then a pair, of groups against every weight row of the
		// range, one call each (the activation rows stay in L1 while the
		// weights stream), then a last single group per weight row.
		g := g0
		for ; g+3 <= g1 && lo < hi; g += 3 {
			_ = j.dst[(4*g+11)*rows+hi-1] // the kernel writes rows 4g…4g+11 of [lo, hi)
			asmQDotN(j.m.Type, 3, &j.m.Data[lo*j.rb], j.rb, hi-lo, &qa[g*nb*4*qk], &qs[g*nb*8], nb, &j.dst[4*g*rows+lo], rows)
		}
		for ; g+2 <= g1 && lo < hi; g += 2 {
			_ = j.dst[(4*g+7)*rows+hi-1] // the kernel writes rows 4g…4g+7 of [lo, hi)
			asmQDotN(j.m.Type, 2, &j.m.Data[lo*j.rb], j.rb, hi-lo, &qa[g*nb*4*qk], &qs[g*nb*8], nb, &j.dst[4*g*rows+lo], rows)
		}
		for o := lo; o < hi; o++ {
			w := &j.m.Data[o*j.rb]
			for g := g; g < g1; g++ {
				a := &qa[g*nb*4*qk]
				s := &qs[g*nb*8]
				if r0 := 4 * g; r0+4 <= j.n {
					asmQDot4(j.m.Type, w, a, s, nb, &out)
					j.dst[r0*rows+o] = out[0]
					j.dst[(r0+1)*rows+o] = out[1]
					j.dst[(r0+2)*rows+o] = out[2]
					j.dst[(r0+3)*rows+o] = out[3]
					continue
				}
				for r := 4 * g; r < j.n; r++ {
					rr := r - 4*g
					j.dst[r*rows+o] = asmQDot1(j.m.Type, w, &qa[(g*nb*4+rr)*qk], &qs[g*nb*8+rr], nb)
				}
			}
		}
	}
}

// asmFTiles computes outputs [lo, hi) of every row for mmAsmF.
func (j *matJob) asmFTiles(lo, hi int) {
	c, rows, rb := j.m.Cols, j.m.Rows, j.rb
	xs := j.x
	if j.m.Type != F32 {
		xs = j.st.f32
	}
	n8 := c / 8
	f16 := j.m.Type == F16
	tile := min(max(tileBytes/(4*c), 2), 64) &^ 1
	var o8 [8]float32
	var o4 [4]float32
	for r0 := 0; r0 < j.n; r0 += tile {
		r1 := min(j.n, r0+tile)
		o := lo
		for ; o+4 <= hi; o += 4 {
			w := &j.m.Data[o*rb]
			r := r0
			for ; r+2 <= r1; r += 2 {
				if f16 {
					f16Tile2x4(w, rb, &xs[r*c], 4*c, n8, &o8)
				} else {
					f32Tile2x4(w, rb, &xs[r*c], 4*c, n8, &o8)
				}
				copy(j.dst[r*rows+o:r*rows+o+4], o8[:4])
				copy(j.dst[(r+1)*rows+o:(r+1)*rows+o+4], o8[4:])
			}
			if r < r1 {
				if f16 {
					f16Tile1x4(w, rb, &xs[r*c], n8, &o4)
				} else {
					f32Tile1x4(w, rb, &xs[r*c], n8, &o4)
				}
				copy(j.dst[r*rows+o:r*rows+o+4], o4[:])
			}
		}
		for ; o < hi; o++ {
			w := &j.m.Data[o*rb]
			for r := r0; r < r1; r++ {
				if f16 {
					j.dst[r*rows+o] = f16Dot1(w, &xs[r*c], n8)
				} else {
					j.dst[r*rows+o] = f32Dot1(w, &xs[r*c], n8)
				}
			}
		}
	}
}

// addF32Fast is f32Acc.addF32 through the assembly kernel where it runs.
func (a *f32Acc) addF32Fast(x, y []float32) {
	n8 := len(x) / 8
	if n8 == 0 || !haveAVX2() {
		a.addF32(x, y)
		return
	}
	y = y[:len(x)]
	f32Lanes(unsafe.SliceData(x), unsafe.SliceData(y), n8, &a.l)
	for k, i := 0, 8*n8; i < len(x); i, k = i+1, k+1 {
		a.l[k] += float32(x[i] * y[i])
	}
}
