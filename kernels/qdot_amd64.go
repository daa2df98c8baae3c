package kernels

import "golang.org/x/sys/cpu"

// haveAVX2 reports whether the assembly kernels can run: AVX2 (which
// x/sys/cpu only reports when the OS saves the YMM registers), FMA and F16C.
func haveAVX2() bool { return cpu.X86.HasAVX2 && cpu.X86.HasFMA && cpu.X86.HasF16C }

// The quantized kernels take one weight row w of nb blocks and activations in
// the grouped layout of groupActs: a points at the int8 quants of block 0 of
// a row group and s at its scales. The …Dot4 kernels compute the four rows of
// the group into out; the …Dot1 kernels compute one row, whose quants start
// at a (the group base + 32·row) and scales at s (the group base + row).
// Each returns exactly what dotQ4_1, dotQ4_0 or dotQ8_0 return.

//go:noescape
func q41Dot4(w *byte, a *byte, s *float32, nb int, out *[4]float32)

//go:noescape
func q41Dot1(w *byte, a *byte, s *float32, nb int) float32

//go:noescape
func q40Dot4(w *byte, a *byte, s *float32, nb int, out *[4]float32)

//go:noescape
func q40Dot1(w *byte, a *byte, s *float32, nb int) float32

//go:noescape
func q80Dot4(w *byte, a *byte, s *float32, nb int, out *[4]float32)

//go:noescape
func q80Dot1(w *byte, a *byte, s *float32, nb int) float32

// The float kernels compute 8·n8-element dot products of F32 (f32…) or F16
// (f16…) weight rows with float32 activation rows in f32Acc's order. w is
// the first weight row and wstride the bytes between weight rows; a is the
// first activation row and astride the bytes between activation rows.
// Tile2x4 writes out[r·4+j] for activation rows r < 2 and weight rows j < 4;
// Tile1x4 one activation row; Dot1 one pair.

//go:noescape
func f32Tile2x4(w *byte, wstride int, a *float32, astride int, n8 int, out *[8]float32)

//go:noescape
func f32Tile1x4(w *byte, wstride int, a *float32, n8 int, out *[4]float32)

//go:noescape
func f32Dot1(w *byte, a *float32, n8 int) float32

//go:noescape
func f16Tile2x4(w *byte, wstride int, a *float32, astride int, n8 int, out *[8]float32)

//go:noescape
func f16Tile1x4(w *byte, wstride int, a *float32, n8 int, out *[4]float32)

//go:noescape
func f16Dot1(w *byte, a *float32, n8 int) float32

// f32Lanes adds a[i]·b[i] (rounded) to lanes[i mod 8] for i < 8·n8.
//
//go:noescape
func f32Lanes(a, b *float32, n8 int, lanes *[8]float32)

// The …Dot4w kernels compute four weight rows (wstride bytes apart) against
// one activation row given as for the …Dot1 kernels, into out; each element
// is computed exactly as …Dot4 and …Dot1 compute it.

//go:noescape
func q41Dot4w(w *byte, wstride int, a *byte, s *float32, nb int, out *[4]float32)

//go:noescape
func q40Dot4w(w *byte, wstride int, a *byte, s *float32, nb int, out *[4]float32)

//go:noescape
func q80Dot4w(w *byte, wstride int, a *byte, s *float32, nb int, out *[4]float32)

// quantRowQ8 quantises nb blocks of x as quantGroupRow does into one row of
// the grouped layout: quants to q (128 bytes apart per block), d and s to
// s[0] and s[4] (8 floats apart per block). NaN inputs give unspecified
// blocks.
//
//go:noescape
func quantRowQ8(x *float32, nb int, q *byte, s *float32)

// The …Dot8N kernels compute two activation groups (gqa bytes apart in the
// quants, gqs bytes apart in the scales) against nw weight rows (wstride
// bytes apart): activation row k (k < 8; rows 0–3 the first group) against
// weight row i goes to dst[i + k·dstride/4]. Each element is computed
// exactly as …Dot4 does.

// q41Dot12N is q41Dot8N for three groups: activation row k < 12 (the third
// group 2·gqa and 2·gqs bytes after the first).
//
//go:noescape
func q41Dot12N(w *byte, a *byte, s *float32, nb int, gqa int, gqs int, nw int, wstride int, dst *float32, dstride int)

//go:noescape
func q41Dot8N(w *byte, a *byte, s *float32, nb int, gqa int, gqs int, nw int, wstride int, dst *float32, dstride int)

// q40Dot12N and q80Dot12N are q41Dot12N for Q4_0 and Q8_0 weights.
//
//go:noescape
func q40Dot12N(w *byte, a *byte, s *float32, nb int, gqa int, gqs int, nw int, wstride int, dst *float32, dstride int)

//go:noescape
func q80Dot12N(w *byte, a *byte, s *float32, nb int, gqa int, gqs int, nw int, wstride int, dst *float32, dstride int)

//go:noescape
func q40Dot8N(w *byte, a *byte, s *float32, nb int, gqa int, gqs int, nw int, wstride int, dst *float32, dstride int)

//go:noescape
func q80Dot8N(w *byte, a *byte, s *float32, nb int, gqa int, gqs int, nw int, wstride int, dst *float32, dstride int)
