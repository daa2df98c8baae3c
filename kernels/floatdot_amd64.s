// AVX2 float32 dot products of F32 or F16 weight rows with float32
// activation rows, in the order of f32Acc: element i goes to lane i mod 8,
// each product is rounded before it is added (separate VMULPS and VADDPS, no
// FMA), and the lanes are reduced as ((l0+l4)+(l1+l5)) + ((l2+l6)+(l3+l7)).
// The results are bitwise those of the portable code. See floatdot_amd64.go
// for the contracts.

#include "textflag.h"
#include "lanes_amd64.h"

// PAIR(acc, a, w): acc += a·w, the product rounded first; clobbers Y11.
#define PAIR(acc, a, w) \
	VMULPS w, a, Y11 \
	VADDPS Y11, acc, acc

// func f32Tile2x4(w *byte, wstride int, a *float32, astride int, n8 int, out *[8]float32)
TEXT ·f32Tile2x4(SB), NOSPLIT, $0-48
	MOVQ w+0(FP), SI
	MOVQ wstride+8(FP), R10
	MOVQ a+16(FP), DI
	MOVQ astride+24(FP), R9
	MOVQ n8+32(FP), CX
	MOVQ out+40(FP), R8
	LEAQ (R10)(R10*2), R11
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7
	TESTQ CX, CX
	JZ f32t24done

f32t24loop:
	VMOVUPS (DI), Y8
	VMOVUPS (DI)(R9*1), Y9
	VMOVUPS (SI), Y10
	PAIR(Y0, Y8, Y10)
	PAIR(Y4, Y9, Y10)
	VMOVUPS (SI)(R10*1), Y10
	PAIR(Y1, Y8, Y10)
	PAIR(Y5, Y9, Y10)
	VMOVUPS (SI)(R10*2), Y10
	PAIR(Y2, Y8, Y10)
	PAIR(Y6, Y9, Y10)
	VMOVUPS (SI)(R11*1), Y10
	PAIR(Y3, Y8, Y10)
	PAIR(Y7, Y9, Y10)
	ADDQ $32, DI
	ADDQ $32, SI
	DECQ CX
	JNZ f32t24loop

f32t24done:
	RED(Y0, X0)
	VMOVSS X0, 0(R8)
	RED(Y1, X1)
	VMOVSS X1, 4(R8)
	RED(Y2, X2)
	VMOVSS X2, 8(R8)
	RED(Y3, X3)
	VMOVSS X3, 12(R8)
	RED(Y4, X4)
	VMOVSS X4, 16(R8)
	RED(Y5, X5)
	VMOVSS X5, 20(R8)
	RED(Y6, X6)
	VMOVSS X6, 24(R8)
	RED(Y7, X7)
	VMOVSS X7, 28(R8)
	VZEROUPPER
	RET

// func f32Tile1x4(w *byte, wstride int, a *float32, n8 int, out *[4]float32)
TEXT ·f32Tile1x4(SB), NOSPLIT, $0-40
	MOVQ w+0(FP), SI
	MOVQ wstride+8(FP), R10
	MOVQ a+16(FP), DI
	MOVQ n8+24(FP), CX
	MOVQ out+32(FP), R8
	LEAQ (R10)(R10*2), R11
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	TESTQ CX, CX
	JZ f32t14done

f32t14loop:
	VMOVUPS (DI), Y8
	VMOVUPS (SI), Y10
	PAIR(Y0, Y8, Y10)
	VMOVUPS (SI)(R10*1), Y10
	PAIR(Y1, Y8, Y10)
	VMOVUPS (SI)(R10*2), Y10
	PAIR(Y2, Y8, Y10)
	VMOVUPS (SI)(R11*1), Y10
	PAIR(Y3, Y8, Y10)
	ADDQ $32, DI
	ADDQ $32, SI
	DECQ CX
	JNZ f32t14loop

f32t14done:
	RED(Y0, X0)
	VMOVSS X0, 0(R8)
	RED(Y1, X1)
	VMOVSS X1, 4(R8)
	RED(Y2, X2)
	VMOVSS X2, 8(R8)
	RED(Y3, X3)
	VMOVSS X3, 12(R8)
	VZEROUPPER
	RET

// func f32Dot1(w *byte, a *float32, n8 int) float32
TEXT ·f32Dot1(SB), NOSPLIT, $0-28
	MOVQ w+0(FP), SI
	MOVQ a+8(FP), DI
	MOVQ n8+16(FP), CX
	VXORPS Y0, Y0, Y0
	TESTQ CX, CX
	JZ f32d1done

f32d1loop:
	VMOVUPS (SI), Y10
	VMULPS (DI), Y10, Y11
	VADDPS Y11, Y0, Y0
	ADDQ $32, DI
	ADDQ $32, SI
	DECQ CX
	JNZ f32d1loop

f32d1done:
	RED(Y0, X0)
	VMOVSS X0, ret+24(FP)
	VZEROUPPER
	RET

// func f16Tile2x4(w *byte, wstride int, a *float32, astride int, n8 int, out *[8]float32)
TEXT ·f16Tile2x4(SB), NOSPLIT, $0-48
	MOVQ w+0(FP), SI
	MOVQ wstride+8(FP), R10
	MOVQ a+16(FP), DI
	MOVQ astride+24(FP), R9
	MOVQ n8+32(FP), CX
	MOVQ out+40(FP), R8
	LEAQ (R10)(R10*2), R11
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7
	TESTQ CX, CX
	JZ f16t24done

f16t24loop:
	VMOVUPS (DI), Y8
	VMOVUPS (DI)(R9*1), Y9
	VCVTPH2PS (SI), Y10
	PAIR(Y0, Y8, Y10)
	PAIR(Y4, Y9, Y10)
	VCVTPH2PS (SI)(R10*1), Y10
	PAIR(Y1, Y8, Y10)
	PAIR(Y5, Y9, Y10)
	VCVTPH2PS (SI)(R10*2), Y10
	PAIR(Y2, Y8, Y10)
	PAIR(Y6, Y9, Y10)
	VCVTPH2PS (SI)(R11*1), Y10
	PAIR(Y3, Y8, Y10)
	PAIR(Y7, Y9, Y10)
	ADDQ $32, DI
	ADDQ $16, SI
	DECQ CX
	JNZ f16t24loop

f16t24done:
	RED(Y0, X0)
	VMOVSS X0, 0(R8)
	RED(Y1, X1)
	VMOVSS X1, 4(R8)
	RED(Y2, X2)
	VMOVSS X2, 8(R8)
	RED(Y3, X3)
	VMOVSS X3, 12(R8)
	RED(Y4, X4)
	VMOVSS X4, 16(R8)
	RED(Y5, X5)
	VMOVSS X5, 20(R8)
	RED(Y6, X6)
	VMOVSS X6, 24(R8)
	RED(Y7, X7)
	VMOVSS X7, 28(R8)
	VZEROUPPER
	RET

// func f16Tile1x4(w *byte, wstride int, a *float32, n8 int, out *[4]float32)
TEXT ·f16Tile1x4(SB), NOSPLIT, $0-40
	MOVQ w+0(FP), SI
	MOVQ wstride+8(FP), R10
	MOVQ a+16(FP), DI
	MOVQ n8+24(FP), CX
	MOVQ out+32(FP), R8
	LEAQ (R10)(R10*2), R11
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	TESTQ CX, CX
	JZ f16t14done

f16t14loop:
	VMOVUPS (DI), Y8
	VCVTPH2PS (SI), Y10
	PAIR(Y0, Y8, Y10)
	VCVTPH2PS (SI)(R10*1), Y10
	PAIR(Y1, Y8, Y10)
	VCVTPH2PS (SI)(R10*2), Y10
	PAIR(Y2, Y8, Y10)
	VCVTPH2PS (SI)(R11*1), Y10
	PAIR(Y3, Y8, Y10)
	ADDQ $32, DI
	ADDQ $16, SI
	DECQ CX
	JNZ f16t14loop

f16t14done:
	RED(Y0, X0)
	VMOVSS X0, 0(R8)
	RED(Y1, X1)
	VMOVSS X1, 4(R8)
	RED(Y2, X2)
	VMOVSS X2, 8(R8)
	RED(Y3, X3)
	VMOVSS X3, 12(R8)
	VZEROUPPER
	RET

// func f16Dot1(w *byte, a *float32, n8 int) float32
TEXT ·f16Dot1(SB), NOSPLIT, $0-28
	MOVQ w+0(FP), SI
	MOVQ a+8(FP), DI
	MOVQ n8+16(FP), CX
	VXORPS Y0, Y0, Y0
	TESTQ CX, CX
	JZ f16d1done

f16d1loop:
	VCVTPH2PS (SI), Y10
	VMULPS (DI), Y10, Y11
	VADDPS Y11, Y0, Y0
	ADDQ $32, DI
	ADDQ $16, SI
	DECQ CX
	JNZ f16d1loop

f16d1done:
	RED(Y0, X0)
	VMOVSS X0, ret+24(FP)
	VZEROUPPER
	RET

// func f32Lanes(a, b *float32, n8 int, lanes *[8]float32)
TEXT ·f32Lanes(SB), NOSPLIT, $0-32
	MOVQ a+0(FP), SI
	MOVQ b+8(FP), DI
	MOVQ n8+16(FP), CX
	MOVQ lanes+24(FP), R8
	VMOVUPS (R8), Y0
	TESTQ CX, CX
	JZ laneDone

laneLoop:
	VMOVUPS (SI), Y10
	VMULPS (DI), Y10, Y11
	VADDPS Y11, Y0, Y0
	ADDQ $32, SI
	ADDQ $32, DI
	DECQ CX
	JNZ laneLoop

laneDone:
	VMOVUPS Y0, (R8)
	VZEROUPPER
	RET
