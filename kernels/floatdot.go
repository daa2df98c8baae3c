package kernels

import "math"

// f32Acc accumulates a float32 dot product in eight lanes: element i of the
// whole vector goes to lane i mod 8, each lane summed in increasing i, each
// product rounded to float32 before it is added. sum reduces the lanes as
// ((l0+l4)+(l1+l5)) + ((l2+l6)+(l3+l7)). A vector may be fed in several
// calls as long as every call but the last covers a multiple of 8 elements.
// This is the one float order used by Dot and by the F32/F16/BF16 matrix
// products, whatever the batch.
type f32Acc struct{ l [8]float32 }

func (a *f32Acc) sum() float32 {
	l := &a.l
	return ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]))
}

// addF32 accumulates x·y (len(y) ≥ len(x)).
func (a *f32Acc) addF32(x, y []float32) {
	y = y[:len(x)]
	l0, l1, l2, l3, l4, l5, l6, l7 := a.l[0], a.l[1], a.l[2], a.l[3], a.l[4], a.l[5], a.l[6], a.l[7]
	i := 0
	for ; i+8 <= len(x); i += 8 {
		xs, ys := x[i:i+8:i+8], y[i:i+8:i+8]
		l0 += float32(xs[0] * ys[0])
		l1 += float32(xs[1] * ys[1])
		l2 += float32(xs[2] * ys[2])
		l3 += float32(xs[3] * ys[3])
		l4 += float32(xs[4] * ys[4])
		l5 += float32(xs[5] * ys[5])
		l6 += float32(xs[6] * ys[6])
		l7 += float32(xs[7] * ys[7])
	}
	a.l = [8]float32{l0, l1, l2, l3, l4, l5, l6, l7}
	for k := 0; i < len(x); i, k = i+1, k+1 {
		a.l[k] += float32(x[i] * y[i])
	}
}

// addRow accumulates row·x where row holds len(x) elements of type t (F32,
// F16 or BF16) as little-endian bytes.
func (a *f32Acc) addRow(t DType, row []byte, x []float32) {
	switch t {
	case F32:
		a.addRowF32(row, x)
	case F16:
		a.addRowF16(row, x)
	case BF16:
		a.addRowBF16(row, x)
	}
}

// addRowF32 accumulates row·x where row holds len(x) float32 weights as
// little-endian bytes.
func (a *f32Acc) addRowF32(row []byte, x []float32) {
	row = row[:len(x)*4]
	l0, l1, l2, l3, l4, l5, l6, l7 := a.l[0], a.l[1], a.l[2], a.l[3], a.l[4], a.l[5], a.l[6], a.l[7]
	i := 0
	for ; i+8 <= len(x); i += 8 {
		xs := x[i : i+8 : i+8]
		r := row[i*4 : (i+8)*4 : (i+8)*4]
		l0 += float32(math.Float32frombits(le32(r[0:])) * xs[0])
		l1 += float32(math.Float32frombits(le32(r[4:])) * xs[1])
		l2 += float32(math.Float32frombits(le32(r[8:])) * xs[2])
		l3 += float32(math.Float32frombits(le32(r[12:])) * xs[3])
		l4 += float32(math.Float32frombits(le32(r[16:])) * xs[4])
		l5 += float32(math.Float32frombits(le32(r[20:])) * xs[5])
		l6 += float32(math.Float32frombits(le32(r[24:])) * xs[6])
		l7 += float32(math.Float32frombits(le32(r[28:])) * xs[7])
	}
	a.l = [8]float32{l0, l1, l2, l3, l4, l5, l6, l7}
	for k := 0; i < len(x); i, k = i+1, k+1 {
		a.l[k] += float32(math.Float32frombits(le32(row[4*i:])) * x[i])
	}
}

// addRowF16 accumulates row·x where row holds len(x) float16 weights as
// little-endian bytes.
func (a *f32Acc) addRowF16(row []byte, x []float32) {
	row = row[:len(x)*2]
	l0, l1, l2, l3, l4, l5, l6, l7 := a.l[0], a.l[1], a.l[2], a.l[3], a.l[4], a.l[5], a.l[6], a.l[7]
	i := 0
	for ; i+8 <= len(x); i += 8 {
		xs := x[i : i+8 : i+8]
		r := row[i*2 : (i+8)*2 : (i+8)*2]
		l0 += float32(F16ToF32(le16(r[0:])) * xs[0])
		l1 += float32(F16ToF32(le16(r[2:])) * xs[1])
		l2 += float32(F16ToF32(le16(r[4:])) * xs[2])
		l3 += float32(F16ToF32(le16(r[6:])) * xs[3])
		l4 += float32(F16ToF32(le16(r[8:])) * xs[4])
		l5 += float32(F16ToF32(le16(r[10:])) * xs[5])
		l6 += float32(F16ToF32(le16(r[12:])) * xs[6])
		l7 += float32(F16ToF32(le16(r[14:])) * xs[7])
	}
	a.l = [8]float32{l0, l1, l2, l3, l4, l5, l6, l7}
	for k := 0; i < len(x); i, k = i+1, k+1 {
		a.l[k] += float32(F16ToF32(le16(row[2*i:])) * x[i])
	}
}

// addRowBF16 accumulates row·x where row holds len(x) bfloat16 weights as
// little-endian bytes.
func (a *f32Acc) addRowBF16(row []byte, x []float32) {
	row = row[:len(x)*2]
	l0, l1, l2, l3, l4, l5, l6, l7 := a.l[0], a.l[1], a.l[2], a.l[3], a.l[4], a.l[5], a.l[6], a.l[7]
	i := 0
	for ; i+8 <= len(x); i += 8 {
		xs := x[i : i+8 : i+8]
		r := row[i*2 : (i+8)*2 : (i+8)*2]
		l0 += float32(BF16ToF32(le16(r[0:])) * xs[0])
		l1 += float32(BF16ToF32(le16(r[2:])) * xs[1])
		l2 += float32(BF16ToF32(le16(r[4:])) * xs[2])
		l3 += float32(BF16ToF32(le16(r[6:])) * xs[3])
		l4 += float32(BF16ToF32(le16(r[8:])) * xs[4])
		l5 += float32(BF16ToF32(le16(r[10:])) * xs[5])
		l6 += float32(BF16ToF32(le16(r[12:])) * xs[6])
		l7 += float32(BF16ToF32(le16(r[14:])) * xs[7])
	}
	a.l = [8]float32{l0, l1, l2, l3, l4, l5, l6, l7}
	for k := 0; i < len(x); i, k = i+1, k+1 {
		a.l[k] += float32(BF16ToF32(le16(row[2*i:])) * x[i])
	}
}

// Dot returns Σ a[i]·b[i] over len(a) elements (b must be at least as long)
// in float32, in a fixed order that does not depend on anything but len(a):
// element i is accumulated in lane i mod 8, each product rounded to float32,
// and the lanes are reduced as ((l0+l4)+(l1+l5)) + ((l2+l6)+(l3+l7)).
func Dot(a, b []float32) float32 {
	var acc f32Acc
	acc.addF32Fast(a, b)
	return acc.sum()
}
