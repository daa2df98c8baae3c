//go:build !amd64

package kernels

// haveAVX2 is false off amd64: the portable kernels run.
func haveAVX2() bool { return false }

// The assembly kernels exist only on amd64; kernelTable never selects them
// here, so these are unreachable.

func q41Dot4(w *byte, a *byte, s *float32, nb int, out *[4]float32) { panic(errNoAsm) }
func q41Dot1(w *byte, a *byte, s *float32, nb int) float32          { panic(errNoAsm) }
func q40Dot4(w *byte, a *byte, s *float32, nb int, out *[4]float32) { panic(errNoAsm) }
func q40Dot1(w *byte, a *byte, s *float32, nb int) float32          { panic(errNoAsm) }
func q80Dot4(w *byte, a *byte, s *float32, nb int, out *[4]float32) { panic(errNoAsm) }
func q80Dot1(w *byte, a *byte, s *float32, nb int) float32          { panic(errNoAsm) }

func f32Tile2x4(w *byte, wstride int, a *float32, astride int, n8 int, out *[8]float32) {
	panic(errNoAsm)
}
func f32Tile1x4(w *byte, wstride int, a *float32, n8 int, out *[4]float32) { panic(errNoAsm) }
func f32Dot1(w *byte, a *float32, n8 int) float32                          { panic(errNoAsm) }
func f16Tile2x4(w *byte, wstride int, a *float32, astride int, n8 int, out *[8]float32) {
	panic(errNoAsm)
}
func f16Tile1x4(w *byte, wstride int, a *float32, n8 int, out *[4]float32) { panic(errNoAsm) }
func f16Dot1(w *byte, a *float32, n8 int) float32                          { panic(errNoAsm) }
func f32Lanes(a, b *float32, n8 int, lanes *[8]float32)                    { panic(errNoAsm) }

const errNoAsm = "kernels: assembly kernel called without assembly support"

func axpyRows(acc *float32, d int, p *float32, v *float32, vstride int, n int) { panic(errNoAsm) }
func expTile(x *float32, n8 int)                                               { panic(errNoAsm) }
func expSum(x *float32, n8 int, m float32) float32                             { panic(errNoAsm) }
func scaleMax(sc *float32, kp *int32, n8 int, qPos int32, scale float32) float32 {
	panic(errNoAsm)
}
func sumTile(x *float32, n8 int) float32                                { panic(errNoAsm) }
func scoreKeys8(k *byte, kstride int, q *float32, n8 int, out *float32) { panic(errNoAsm) }
func scoreKey1(k *byte, q *float32, n8 int) float32                     { panic(errNoAsm) }

func q41Dot4w(w *byte, wstride int, a *byte, s *float32, nb int, out *[4]float32) { panic(errNoAsm) }
func q40Dot4w(w *byte, wstride int, a *byte, s *float32, nb int, out *[4]float32) { panic(errNoAsm) }
func q80Dot4w(w *byte, wstride int, a *byte, s *float32, nb int, out *[4]float32) { panic(errNoAsm) }
func quantRowQ8(x *float32, nb int, q *byte, s *float32)                          { panic(errNoAsm) }

func q41Dot12N(w *byte, a *byte, s *float32, nb int, gqa int, gqs int, nw int, wstride int, dst *float32, dstride int) {
	panic(errNoAsm)
}
func q40Dot12N(w *byte, a *byte, s *float32, nb int, gqa int, gqs int, nw int, wstride int, dst *float32, dstride int) {
	panic(errNoAsm)
}
func q80Dot12N(w *byte, a *byte, s *float32, nb int, gqa int, gqs int, nw int, wstride int, dst *float32, dstride int) {
	panic(errNoAsm)
}
func q41Dot8N(w *byte, a *byte, s *float32, nb int, gqa int, gqs int, nw int, wstride int, dst *float32, dstride int) {
	panic(errNoAsm)
}
func q40Dot8N(w *byte, a *byte, s *float32, nb int, gqa int, gqs int, nw int, wstride int, dst *float32, dstride int) {
	panic(errNoAsm)
}
func q80Dot8N(w *byte, a *byte, s *float32, nb int, gqa int, gqs int, nw int, wstride int, dst *float32, dstride int) {
	panic(errNoAsm)
}
