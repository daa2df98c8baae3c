package kernels

// axpyRows adds p[j]·v_j to acc[0:d] for j < n in increasing j, where v_j
// starts vstride bytes after v_{j−1}; each product is rounded before it is
// added, so the result is that of n calls of axpyF32. d must be a multiple
// of 8.
//
//go:noescape
func axpyRows(acc *float32, d int, p *float32, v *float32, vstride int, n int)

// expTile replaces x[i] by exp(x[i]) for i < 8·n8 (Cephes' single-precision
// polynomial with FMA, within 2 ulp of exp for −87 ≤ x ≤ 88; smaller x and
// NaN give 0, larger x exp(88)).
//
//go:noescape
func expTile(x *float32, n8 int)
