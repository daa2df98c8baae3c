package kernels

// axpyRows adds p[j]·v_j to acc[0:d] for j < n in increasing j, where v_j
// starts vstride bytes after v_{j−1}, each step one fused multiply-add per
// element (acc[i] = fma(p[j], v_j[i], acc[i])). d must be a multiple of 8.
//
//go:noescape
func axpyRows(acc *float32, d int, p *float32, v *float32, vstride int, n int)

// expTile replaces x[i] by exp(x[i]) for i < 8·n8 (Cephes' single-precision
// polynomial with FMA, within 2 ulp of exp for −87 ≤ x ≤ 88; smaller x and
// NaN give 0, larger x exp(88)).
//
//go:noescape
func expTile(x *float32, n8 int)

// scoreKeys8 sets out[j] = q·k_j for the eight key rows k_j, k_{j+1} starting
// kstride bytes after k_j, each of 8·n8 floats: per lane, fused multiply-adds
// over the n8 eight-float chunks in order, then the lanes summed in RED's
// order (lanes_amd64.h). Each out[j] is bitwise scoreKey1 of its row.
//
//go:noescape
func scoreKeys8(k *byte, kstride int, q *float32, n8 int, out *float32)

// scoreKey1 returns q·k for one key row of 8·n8 floats, in scoreKeys8's
// arithmetic.
//
//go:noescape
func scoreKey1(k *byte, q *float32, n8 int) float32

// expSum replaces x[i] by exp(x[i] − m) (the float32 difference, then
// expTile's exp) for i < 8·n8 and returns the sum of the results: the n8
// eight-float vectors added lane by lane in order, then the lanes summed in
// RED's order (lanes_amd64.h). It equals sumTile of expTile's output bitwise.
//
//go:noescape
func expSum(x *float32, n8 int, m float32) float32

// scaleMax sets sc[i] = −Inf where kp[i] > qPos and sc[i]·scale elsewhere,
// for i < 8·n8, and returns the largest result (−Inf if every key is
// masked).
//
//go:noescape
func scaleMax(sc *float32, kp *int32, n8 int, qPos int32, scale float32) float32

// sumTile returns the sum of x[0:8·n8] in expSum's order.
//
//go:noescape
func sumTile(x *float32, n8 int) float32
