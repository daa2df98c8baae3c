// AVX2 dot products of 32-element quantized weight blocks (Q4_0, Q4_1,
// Q8_0) with Q8 activations in the grouped layout of asmacts.go, and of
// F32/F16 weight rows with float32 activations. See qdot_amd64.go for the
// contracts. Every kernel reproduces the float order of the portable kernels
// exactly: block integers are exact, and the float combine uses separate
// multiplies and adds (no FMA), so results are bitwise those of VecDot.

#include "textflag.h"

// Constants: Y14 = 0x0F in every byte, Y13 = 1 in every int16 lane,
// Y12 = 8 in every byte.
#define CONSTS \
	MOVL $0x0F0F0F0F, AX \
	VMOVD AX, X14 \
	VPBROADCASTD X14, Y14 \
	MOVL $0x00010001, AX \
	VMOVD AX, X13 \
	VPBROADCASTD X13, Y13 \
	MOVL $0x08080808, AX \
	VMOVD AX, X12 \
	VPBROADCASTD X12, Y12

// NIB4 loads the 16 nibble bytes at off(SI) into Y8 as 32 unsigned weights
// in element order (low nibbles, then high nibbles).
#define NIB4(off) \
	VMOVDQU off(SI), X8 \
	VPSRLW $4, X8, X9 \
	VINSERTI128 $1, X9, Y8, Y8 \
	VPAND Y14, Y8, Y8

// UDOT(aoff, Yd): Yd = 8 int32 partial sums of unsigned Y8 × signed bytes
// at aoff(DI).
#define UDOT(aoff, Yd) \
	VPMADDUBSW aoff(DI), Y8, Yd \
	VPMADDWD Y13, Yd, Yd

// SDOT(aoff, Yd): as UDOT for signed weights Y8 with Y9 = |Y8|.
#define SDOT(aoff, Yd) \
	VMOVDQU aoff(DI), Yd \
	VPSIGNB Y8, Yd, Yd \
	VPMADDUBSW Yd, Y9, Yd \
	VPMADDWD Y13, Yd, Yd

// HSUM4 sums the lanes of Y0…Y3 into X0 = [ΣY0, ΣY1, ΣY2, ΣY3] as float32
// (the sums are exact integers).
#define HSUM4 \
	VPHADDD Y1, Y0, Y0 \
	VPHADDD Y3, Y2, Y2 \
	VPHADDD Y2, Y0, Y0 \
	VEXTRACTI128 $1, Y0, X1 \
	VPADDD X1, X0, X0 \
	VCVTDQ2PS X0, X0

// HSUM4W is HSUM4 for Y0…Y3 holding the int16 pair sums of VPMADDUBSW
// (before VPMADDWD): the int16 additions cannot wrap for 4-bit weights,
// whose eight-pair sums stay below 2·8·15·127 = 30480.
#define HSUM4W \
	VPHADDW Y1, Y0, Y0 \
	VPHADDW Y3, Y2, Y2 \
	VPHADDW Y2, Y0, Y0 \
	VPMADDWD Y13, Y0, Y0 \
	VEXTRACTI128 $1, Y0, X1 \
	VPADDD X1, X0, X0 \
	VCVTDQ2PS X0, X0

// Q41W unpacks Q4_1 weight block (SI) into Y8 and its scale d into every
// lane of X11 and min m into every lane of X10.
#define Q41W \
	NIB4(4) \
	SCALES \
	VMOVSHDUP X10, X10 \
	VBROADCASTSS X10, X10

// Q41G adds one activation group's block to acc (four rows): the group's
// quants at q0…q3 (32 bytes apart) and its d, s scale vectors at sd, ss.
#define Q41G(q0, q1, q2, q3, sd, ss, acc) \
	VPMADDUBSW q0, Y8, Y0 \
	VPMADDUBSW q1, Y8, Y1 \
	VPMADDUBSW q2, Y8, Y2 \
	VPMADDUBSW q3, Y8, Y3 \
	HSUM4W \
	VMULPS sd, X11, X4 \
	VMULPS X0, X4, X4 \
	VMULPS ss, X10, X5 \
	VADDPS X5, X4, X4 \
	VADDPS X4, acc, acc

// Q40G is Q41G for a Q4_0 block (weights in Y8 with their signs, |w| in
// Y9, d in X11).
#define Q40G(q0, q1, q2, q3, sd, acc) \
	VMOVDQU q0, Y0 \
	VPSIGNB Y8, Y0, Y0 \
	VPMADDUBSW Y0, Y9, Y0 \
	VMOVDQU q1, Y1 \
	VPSIGNB Y8, Y1, Y1 \
	VPMADDUBSW Y1, Y9, Y1 \
	VMOVDQU q2, Y2 \
	VPSIGNB Y8, Y2, Y2 \
	VPMADDUBSW Y2, Y9, Y2 \
	VMOVDQU q3, Y3 \
	VPSIGNB Y8, Y3, Y3 \
	VPMADDUBSW Y3, Y9, Y3 \
	HSUM4W \
	VMULPS X11, X0, X4 \
	VMULPS sd, X4, X4 \
	VADDPS X4, acc, acc

// Q80G is Q41G for a Q8_0 block (weights in Y8, |w| in Y9, d in X11).
#define Q80G(q0, q1, q2, q3, sd, acc) \
	VMOVDQU q0, Y0 \
	VPSIGNB Y8, Y0, Y0 \
	VPMADDUBSW Y0, Y9, Y0 \
	VPMADDWD Y13, Y0, Y0 \
	VMOVDQU q1, Y1 \
	VPSIGNB Y8, Y1, Y1 \
	VPMADDUBSW Y1, Y9, Y1 \
	VPMADDWD Y13, Y1, Y1 \
	VMOVDQU q2, Y2 \
	VPSIGNB Y8, Y2, Y2 \
	VPMADDUBSW Y2, Y9, Y2 \
	VPMADDWD Y13, Y2, Y2 \
	VMOVDQU q3, Y3 \
	VPSIGNB Y8, Y3, Y3 \
	VPMADDUBSW Y3, Y9, Y3 \
	VPMADDWD Y13, Y3, Y3 \
	HSUM4 \
	VMULPS sd, X11, X4 \
	VMULPS X4, X0, X4 \
	VADDPS X4, acc, acc

// STORE4(X, base) writes X's four lanes to base + k·R8 (k < 4), with CX =
// 3·R8.
#define STORE4(X, base) \
	VMOVSS X, (base) \
	VEXTRACTPS $1, X, (base)(R8*1) \
	VEXTRACTPS $2, X, (base)(R8*2) \
	VEXTRACTPS $3, X, (base)(CX*1)

// STORE8 writes X15 (rows 0–3) and X7 (rows 4–7) of one output column to
// R13 + k·R8; STORE12 also X6 (rows 8–11). Clobber CX and SI.
#define STORE8 \
	LEAQ (R8)(R8*2), CX \
	STORE4(X15, R13) \
	LEAQ (R13)(R8*4), SI \
	STORE4(X7, SI)

#define STORE12 \
	STORE8 \
	LEAQ (SI)(R8*4), SI \
	STORE4(X6, SI)

// NBLOCK(wbytes, loop) moves to the next block (wbytes of weights, 128
// bytes of quants and 32 of scales per group) and loops while blocks remain.
#define NBLOCK(wbytes, loop) \
	ADDQ $wbytes, SI \
	ADDQ $128, DI \
	ADDQ $32, DX \
	DECQ CX \
	JNZ loop

// Q40W and Q80W unpack a Q4_0 or Q8_0 weight block (SI) into Y8 (signed)
// and Y9 (absolute values), with its scale in X11.
#define Q40W \
	NIB4(2) \
	VPSUBB Y12, Y8, Y8 \
	VPABSB Y8, Y9 \
	SCALES

#define Q80W \
	VMOVDQU 2(SI), Y8 \
	VPABSB Y8, Y9 \
	SCALES

// The …DotNN kernels share their frame: NARGS loads the arguments (after
// CONSTS, which uses AX), NROW starts weight row R11 (or jumps to end when
// none is left; X6, X7 and X15 start at 0, and an empty row jumps to done),
// NNEXT moves to the next weight row and output column.
#define NARGS \
	MOVQ w+0(FP), R11 \
	MOVQ a+8(FP), AX \
	MOVQ s+16(FP), BX \
	MOVQ gqa+32(FP), R9 \
	MOVQ gqs+40(FP), R10 \
	MOVQ nw+48(FP), R12 \
	MOVQ dst+64(FP), R13 \
	MOVQ dstride+72(FP), R8

#define NROW(done, end) \
	TESTQ R12, R12 \
	JZ end \
	MOVQ R11, SI \
	MOVQ AX, DI \
	MOVQ BX, DX \
	MOVQ nb+24(FP), CX \
	VXORPS X15, X15, X15 \
	VXORPS X7, X7, X7 \
	VXORPS X6, X6, X6 \
	TESTQ CX, CX \
	JZ done

#define NNEXT(row) \
	ADDQ wstride+56(FP), R11 \
	ADDQ $4, R13 \
	DECQ R12 \
	JMP row

// HSUM1 sums the lanes of Y0 into every lane of X0 as float32.
#define HSUM1 \
	VEXTRACTI128 $1, Y0, X1 \
	VPADDD X1, X0, X0 \
	VPSHUFD $0x4E, X0, X1 \
	VPADDD X1, X0, X0 \
	VPSHUFD $0xB1, X0, X1 \
	VPADDD X1, X0, X0 \
	VCVTDQ2PS X0, X0

// SCALES loads the fp16 d (and m) at 0(SI) into X10 lanes 0 (and 1) and
// broadcasts d into X11.
#define SCALES \
	VMOVD (SI), X10 \
	VCVTPH2PS X10, X10 \
	VBROADCASTSS X10, X11

// func q41Dot4(w *byte, a *byte, s *float32, nb int, out *[4]float32)
TEXT ·q41Dot4(SB), NOSPLIT, $0-40
	MOVQ w+0(FP), SI
	MOVQ a+8(FP), DI
	MOVQ s+16(FP), DX
	MOVQ nb+24(FP), CX
	MOVQ out+32(FP), R8
	CONSTS
	VXORPS X15, X15, X15
	TESTQ CX, CX
	JZ q41d4done

q41d4loop:
	NIB4(4)
	SCALES
	VMOVSHDUP X10, X10
	VBROADCASTSS X10, X10 // m
	VPMADDUBSW 0(DI), Y8, Y0
	VPMADDUBSW 32(DI), Y8, Y1
	VPMADDUBSW 64(DI), Y8, Y2
	VPMADDUBSW 96(DI), Y8, Y3
	HSUM4W
	VMULPS (DX), X11, X4  // d·dy
	VMULPS X0, X4, X4     // ·isum
	VMULPS 16(DX), X10, X5 // m·sy
	VADDPS X5, X4, X4
	VADDPS X4, X15, X15
	ADDQ $20, SI
	ADDQ $128, DI
	ADDQ $32, DX
	DECQ CX
	JNZ q41d4loop

q41d4done:
	VMOVUPS X15, (R8)
	VZEROUPPER
	RET

// func q41Dot1(w *byte, a *byte, s *float32, nb int) float32
TEXT ·q41Dot1(SB), NOSPLIT, $0-36
	MOVQ w+0(FP), SI
	MOVQ a+8(FP), DI
	MOVQ s+16(FP), DX
	MOVQ nb+24(FP), CX
	CONSTS
	VXORPS X15, X15, X15
	TESTQ CX, CX
	JZ q41d1done

q41d1loop:
	NIB4(4)
	SCALES
	VMOVSHDUP X10, X10
	UDOT(0, Y0)
	HSUM1
	VMULSS (DX), X11, X4
	VMULSS X0, X4, X4
	VMULSS 16(DX), X10, X5
	VADDSS X5, X4, X4
	VADDSS X4, X15, X15
	ADDQ $20, SI
	ADDQ $128, DI
	ADDQ $32, DX
	DECQ CX
	JNZ q41d1loop

q41d1done:
	VMOVSS X15, ret+32(FP)
	VZEROUPPER
	RET

// func q40Dot4(w *byte, a *byte, s *float32, nb int, out *[4]float32)
TEXT ·q40Dot4(SB), NOSPLIT, $0-40
	MOVQ w+0(FP), SI
	MOVQ a+8(FP), DI
	MOVQ s+16(FP), DX
	MOVQ nb+24(FP), CX
	MOVQ out+32(FP), R8
	CONSTS
	VXORPS X15, X15, X15
	TESTQ CX, CX
	JZ q40d4done

q40d4loop:
	NIB4(2)
	VPSUBB Y12, Y8, Y8
	VPABSB Y8, Y9
	SCALES
	VMOVDQU 0(DI), Y0
	VPSIGNB Y8, Y0, Y0
	VPMADDUBSW Y0, Y9, Y0
	VMOVDQU 32(DI), Y1
	VPSIGNB Y8, Y1, Y1
	VPMADDUBSW Y1, Y9, Y1
	VMOVDQU 64(DI), Y2
	VPSIGNB Y8, Y2, Y2
	VPMADDUBSW Y2, Y9, Y2
	VMOVDQU 96(DI), Y3
	VPSIGNB Y8, Y3, Y3
	VPMADDUBSW Y3, Y9, Y3
	HSUM4W
	VMULPS X11, X0, X4 // isum·d
	VMULPS (DX), X4, X4 // ·dy
	VADDPS X4, X15, X15
	ADDQ $18, SI
	ADDQ $128, DI
	ADDQ $32, DX
	DECQ CX
	JNZ q40d4loop

q40d4done:
	VMOVUPS X15, (R8)
	VZEROUPPER
	RET

// func q40Dot1(w *byte, a *byte, s *float32, nb int) float32
TEXT ·q40Dot1(SB), NOSPLIT, $0-36
	MOVQ w+0(FP), SI
	MOVQ a+8(FP), DI
	MOVQ s+16(FP), DX
	MOVQ nb+24(FP), CX
	CONSTS
	VXORPS X15, X15, X15
	TESTQ CX, CX
	JZ q40d1done

q40d1loop:
	NIB4(2)
	VPSUBB Y12, Y8, Y8
	VPABSB Y8, Y9
	SCALES
	SDOT(0, Y0)
	HSUM1
	VMULSS X11, X0, X4
	VMULSS (DX), X4, X4
	VADDSS X4, X15, X15
	ADDQ $18, SI
	ADDQ $128, DI
	ADDQ $32, DX
	DECQ CX
	JNZ q40d1loop

q40d1done:
	VMOVSS X15, ret+32(FP)
	VZEROUPPER
	RET

// func q80Dot4(w *byte, a *byte, s *float32, nb int, out *[4]float32)
TEXT ·q80Dot4(SB), NOSPLIT, $0-40
	MOVQ w+0(FP), SI
	MOVQ a+8(FP), DI
	MOVQ s+16(FP), DX
	MOVQ nb+24(FP), CX
	MOVQ out+32(FP), R8
	CONSTS
	VXORPS X15, X15, X15
	TESTQ CX, CX
	JZ q80d4done

q80d4loop:
	VMOVDQU 2(SI), Y8
	VPABSB Y8, Y9
	SCALES
	SDOT(0, Y0)
	SDOT(32, Y1)
	SDOT(64, Y2)
	SDOT(96, Y3)
	HSUM4
	VMULPS (DX), X11, X4 // d·dy
	VMULPS X4, X0, X4    // isum·(d·dy)
	VADDPS X4, X15, X15
	ADDQ $34, SI
	ADDQ $128, DI
	ADDQ $32, DX
	DECQ CX
	JNZ q80d4loop

q80d4done:
	VMOVUPS X15, (R8)
	VZEROUPPER
	RET

// func q80Dot1(w *byte, a *byte, s *float32, nb int) float32
TEXT ·q80Dot1(SB), NOSPLIT, $0-36
	MOVQ w+0(FP), SI
	MOVQ a+8(FP), DI
	MOVQ s+16(FP), DX
	MOVQ nb+24(FP), CX
	CONSTS
	VXORPS X15, X15, X15
	TESTQ CX, CX
	JZ q80d1done

q80d1loop:
	VMOVDQU 2(SI), Y8
	VPABSB Y8, Y9
	SCALES
	SDOT(0, Y0)
	HSUM1
	VMULSS (DX), X11, X4
	VMULSS X4, X0, X4
	VADDSS X4, X15, X15
	ADDQ $34, SI
	ADDQ $128, DI
	ADDQ $32, DX
	DECQ CX
	JNZ q80d1loop

q80d1done:
	VMOVSS X15, ret+32(FP)
	VZEROUPPER
	RET

// Four weight rows × one activation row (decode): w is the first weight row,
// wstride the bytes between weight rows, a and s one activation row of the
// grouped layout (as for the …Dot1 kernels). out[k] is weight row k's dot
// product, computed with the same operations per element as …Dot4/…Dot1.

// func q41Dot4w(w *byte, wstride int, a *byte, s *float32, nb int, out *[4]float32)
TEXT ·q41Dot4w(SB), NOSPLIT, $0-48
	MOVQ w+0(FP), SI
	MOVQ wstride+8(FP), R10
	MOVQ a+16(FP), DI
	MOVQ s+24(FP), DX
	MOVQ nb+32(FP), CX
	MOVQ out+40(FP), R8
	LEAQ (R10)(R10*2), R11
	CONSTS
	MOVQ $0x0705030106040200, AX // Y12: dword indices 0 2 4 6 1 3 5 7
	VMOVQ AX, X12
	VPMOVZXBD X12, Y12
	VXORPS X15, X15, X15
	TESTQ CX, CX
	JZ q41d4wdone

q41d4wloop:
	LEAQ (SI)(R10*4), R12 // the next call's four rows
	PREFETCHT0 (R12)
	PREFETCHT0 (R12)(R10*1)
	PREFETCHT0 (R12)(R10*2)
	PREFETCHT0 (R12)(R11*1)
	VMOVDQU (DI), Y7
	VMOVDQU 4(SI), X8
	VPSRLW $4, X8, X9
	VINSERTI128 $1, X9, Y8, Y8
	VPAND Y14, Y8, Y8
	VPMADDUBSW Y7, Y8, Y0
	VMOVDQU 4(SI)(R10*1), X8
	VPSRLW $4, X8, X9
	VINSERTI128 $1, X9, Y8, Y8
	VPAND Y14, Y8, Y8
	VPMADDUBSW Y7, Y8, Y1
	VMOVDQU 4(SI)(R10*2), X8
	VPSRLW $4, X8, X9
	VINSERTI128 $1, X9, Y8, Y8
	VPAND Y14, Y8, Y8
	VPMADDUBSW Y7, Y8, Y2
	VMOVDQU 4(SI)(R11*1), X8
	VPSRLW $4, X8, X9
	VINSERTI128 $1, X9, Y8, Y8
	VPAND Y14, Y8, Y8
	VPMADDUBSW Y7, Y8, Y3
	HSUM4W
	// The four rows' (d, m) fp16 pairs in one gather, converted together
	// and split by Y12's permutation into X10 = d and X6 = m.
	VMOVD 0(SI), X10
	VPINSRD $1, 0(SI)(R10*1), X10, X10
	VPINSRD $2, 0(SI)(R10*2), X10, X10
	VPINSRD $3, 0(SI)(R11*1), X10, X10
	VCVTPH2PS X10, Y10
	VPERMPS Y10, Y12, Y10
	VEXTRACTF128 $1, Y10, X6
	VBROADCASTSS (DX), X11
	VBROADCASTSS 16(DX), X5
	VMULPS X11, X10, X4 // d·dy
	VMULPS X0, X4, X4   // ·isum
	VMULPS X5, X6, X5   // m·sy
	VADDPS X5, X4, X4
	VADDPS X4, X15, X15
	ADDQ $20, SI
	ADDQ $128, DI
	ADDQ $32, DX
	DECQ CX
	JNZ q41d4wloop

q41d4wdone:
	VMOVUPS X15, (R8)
	VZEROUPPER
	RET

// func q40Dot4w(w *byte, wstride int, a *byte, s *float32, nb int, out *[4]float32)
TEXT ·q40Dot4w(SB), NOSPLIT, $0-48
	MOVQ w+0(FP), SI
	MOVQ wstride+8(FP), R10
	MOVQ a+16(FP), DI
	MOVQ s+24(FP), DX
	MOVQ nb+32(FP), CX
	MOVQ out+40(FP), R8
	LEAQ (R10)(R10*2), R11
	CONSTS
	VXORPS X15, X15, X15
	TESTQ CX, CX
	JZ q40d4wdone

q40d4wloop:
	LEAQ (SI)(R10*4), R12 // the next call's four rows
	PREFETCHT0 (R12)
	PREFETCHT0 (R12)(R10*1)
	PREFETCHT0 (R12)(R10*2)
	PREFETCHT0 (R12)(R11*1)
	VMOVDQU (DI), Y7
	VMOVDQU 2(SI), X8
	VPSRLW $4, X8, X9
	VINSERTI128 $1, X9, Y8, Y8
	VPAND Y14, Y8, Y8
	VPSUBB Y12, Y8, Y8
	VPABSB Y8, Y9
	VPSIGNB Y8, Y7, Y0
	VPMADDUBSW Y0, Y9, Y0
	VMOVDQU 2(SI)(R10*1), X8
	VPSRLW $4, X8, X9
	VINSERTI128 $1, X9, Y8, Y8
	VPAND Y14, Y8, Y8
	VPSUBB Y12, Y8, Y8
	VPABSB Y8, Y9
	VPSIGNB Y8, Y7, Y1
	VPMADDUBSW Y1, Y9, Y1
	VMOVDQU 2(SI)(R10*2), X8
	VPSRLW $4, X8, X9
	VINSERTI128 $1, X9, Y8, Y8
	VPAND Y14, Y8, Y8
	VPSUBB Y12, Y8, Y8
	VPABSB Y8, Y9
	VPSIGNB Y8, Y7, Y2
	VPMADDUBSW Y2, Y9, Y2
	VMOVDQU 2(SI)(R11*1), X8
	VPSRLW $4, X8, X9
	VINSERTI128 $1, X9, Y8, Y8
	VPAND Y14, Y8, Y8
	VPSUBB Y12, Y8, Y8
	VPABSB Y8, Y9
	VPSIGNB Y8, Y7, Y3
	VPMADDUBSW Y3, Y9, Y3
	HSUM4W
	MOVWLZX 0(SI), AX
	VMOVD AX, X10
	VPINSRW $1, 0(SI)(R10*1), X10, X10
	VPINSRW $2, 0(SI)(R10*2), X10, X10
	VPINSRW $3, 0(SI)(R11*1), X10, X10
	VCVTPH2PS X10, X10
	VBROADCASTSS (DX), X11
	VMULPS X10, X0, X4 // isum·d
	VMULPS X11, X4, X4 // ·dy
	VADDPS X4, X15, X15
	ADDQ $18, SI
	ADDQ $128, DI
	ADDQ $32, DX
	DECQ CX
	JNZ q40d4wloop

q40d4wdone:
	VMOVUPS X15, (R8)
	VZEROUPPER
	RET

// func q80Dot4w(w *byte, wstride int, a *byte, s *float32, nb int, out *[4]float32)
TEXT ·q80Dot4w(SB), NOSPLIT, $0-48
	MOVQ w+0(FP), SI
	MOVQ wstride+8(FP), R10
	MOVQ a+16(FP), DI
	MOVQ s+24(FP), DX
	MOVQ nb+32(FP), CX
	MOVQ out+40(FP), R8
	LEAQ (R10)(R10*2), R11
	CONSTS
	VXORPS X15, X15, X15
	TESTQ CX, CX
	JZ q80d4wdone

q80d4wloop:
	LEAQ (SI)(R10*4), R12 // the next call's four rows
	PREFETCHT0 (R12)
	PREFETCHT0 (R12)(R10*1)
	PREFETCHT0 (R12)(R10*2)
	PREFETCHT0 (R12)(R11*1)
	VMOVDQU (DI), Y7
	VMOVDQU 2(SI), Y8
	VPABSB Y8, Y9
	VPSIGNB Y8, Y7, Y0
	VPMADDUBSW Y0, Y9, Y0
	VPMADDWD Y13, Y0, Y0
	VMOVDQU 2(SI)(R10*1), Y8
	VPABSB Y8, Y9
	VPSIGNB Y8, Y7, Y1
	VPMADDUBSW Y1, Y9, Y1
	VPMADDWD Y13, Y1, Y1
	VMOVDQU 2(SI)(R10*2), Y8
	VPABSB Y8, Y9
	VPSIGNB Y8, Y7, Y2
	VPMADDUBSW Y2, Y9, Y2
	VPMADDWD Y13, Y2, Y2
	VMOVDQU 2(SI)(R11*1), Y8
	VPABSB Y8, Y9
	VPSIGNB Y8, Y7, Y3
	VPMADDUBSW Y3, Y9, Y3
	VPMADDWD Y13, Y3, Y3
	HSUM4
	MOVWLZX 0(SI), AX
	VMOVD AX, X10
	VPINSRW $1, 0(SI)(R10*1), X10, X10
	VPINSRW $2, 0(SI)(R10*2), X10, X10
	VPINSRW $3, 0(SI)(R11*1), X10, X10
	VCVTPH2PS X10, X10
	VBROADCASTSS (DX), X11
	VMULPS X11, X10, X4 // d·dy
	VMULPS X4, X0, X4   // isum·(d·dy)
	VADDPS X4, X15, X15
	ADDQ $34, SI
	ADDQ $128, DI
	ADDQ $32, DX
	DECQ CX
	JNZ q80d4wloop

q80d4wdone:
	VMOVUPS X15, (R8)
	VZEROUPPER
	RET

// Eight activation rows (two groups, gqa and gqs bytes apart in the quant
// and scale arrays) × nw weight rows (wstride bytes apart): row k of the
// eight against weight row i goes to dst + 4·i + k·dstride, each element
// computed as by …Dot4.

// func q41Dot8N(w *byte, a *byte, s *float32, nb int, gqa int, gqs int, nw int, wstride int, dst *float32, dstride int)
TEXT ·q41Dot8N(SB), NOSPLIT, $0-80
	CONSTS
	NARGS

q41d8row:
	NROW(q41d8done, q41d8end)

q41d8loop:
	Q41W
	Q41G(0(DI), 32(DI), 64(DI), 96(DI), (DX), 16(DX), X15)
	Q41G(0(DI)(R9*1), 32(DI)(R9*1), 64(DI)(R9*1), 96(DI)(R9*1), (DX)(R10*1), 16(DX)(R10*1), X7)
	NBLOCK(20, q41d8loop)

q41d8done:
	// Row k of the eight goes to dst + k·dstride.
	STORE8
	NNEXT(q41d8row)

q41d8end:
	VZEROUPPER
	RET

// q41Dot12N is q41Dot8N for three groups (twelve rows; the third group
// 2·gqa and 2·gqs bytes after the first).

// func q41Dot12N(w *byte, a *byte, s *float32, nb int, gqa int, gqs int, nw int, wstride int, dst *float32, dstride int)
TEXT ·q41Dot12N(SB), NOSPLIT, $0-80
	CONSTS
	NARGS

q41d12row:
	NROW(q41d12done, q41d12end)

q41d12loop:
	Q41W
	Q41G(0(DI), 32(DI), 64(DI), 96(DI), (DX), 16(DX), X15)
	Q41G(0(DI)(R9*1), 32(DI)(R9*1), 64(DI)(R9*1), 96(DI)(R9*1), (DX)(R10*1), 16(DX)(R10*1), X7)
	Q41G(0(DI)(R9*2), 32(DI)(R9*2), 64(DI)(R9*2), 96(DI)(R9*2), (DX)(R10*2), 16(DX)(R10*2), X6)
	NBLOCK(20, q41d12loop)

q41d12done:
	// Row k of the 12 goes to dst + k·dstride.
	STORE12
	NNEXT(q41d12row)

q41d12end:
	VZEROUPPER
	RET

// func q40Dot8N(w *byte, a *byte, s *float32, nb int, gqa int, gqs int, nw int, wstride int, dst *float32, dstride int)
TEXT ·q40Dot8N(SB), NOSPLIT, $0-80
	CONSTS
	NARGS

q40d8row:
	NROW(q40d8done, q40d8end)

q40d8loop:
	Q40W
	Q40G(0(DI), 32(DI), 64(DI), 96(DI), (DX), X15)
	Q40G(0(DI)(R9*1), 32(DI)(R9*1), 64(DI)(R9*1), 96(DI)(R9*1), (DX)(R10*1), X7)
	NBLOCK(18, q40d8loop)

q40d8done:
	// Row k of the eight goes to dst + k·dstride.
	STORE8
	NNEXT(q40d8row)

q40d8end:
	VZEROUPPER
	RET

// q40Dot12N is q40Dot8N for three groups.

// func q40Dot12N(w *byte, a *byte, s *float32, nb int, gqa int, gqs int, nw int, wstride int, dst *float32, dstride int)
TEXT ·q40Dot12N(SB), NOSPLIT, $0-80
	CONSTS
	NARGS

q40d12row:
	NROW(q40d12done, q40d12end)

q40d12loop:
	Q40W
	Q40G(0(DI), 32(DI), 64(DI), 96(DI), (DX), X15)
	Q40G(0(DI)(R9*1), 32(DI)(R9*1), 64(DI)(R9*1), 96(DI)(R9*1), (DX)(R10*1), X7)
	Q40G(0(DI)(R9*2), 32(DI)(R9*2), 64(DI)(R9*2), 96(DI)(R9*2), (DX)(R10*2), X6)
	NBLOCK(18, q40d12loop)

q40d12done:
	// Row k of the 12 goes to dst + k·dstride.
	STORE12
	NNEXT(q40d12row)

q40d12end:
	VZEROUPPER
	RET

// func q80Dot8N(w *byte, a *byte, s *float32, nb int, gqa int, gqs int, nw int, wstride int, dst *float32, dstride int)
TEXT ·q80Dot8N(SB), NOSPLIT, $0-80
	CONSTS
	NARGS

q80d8row:
	NROW(q80d8done, q80d8end)

q80d8loop:
	Q80W
	Q80G(0(DI), 32(DI), 64(DI), 96(DI), (DX), X15)
	Q80G(0(DI)(R9*1), 32(DI)(R9*1), 64(DI)(R9*1), 96(DI)(R9*1), (DX)(R10*1), X7)
	NBLOCK(34, q80d8loop)

q80d8done:
	// Row k of the eight goes to dst + k·dstride.
	STORE8
	NNEXT(q80d8row)

q80d8end:
	VZEROUPPER
	RET

// q80Dot12N is q80Dot8N for three groups.

// func q80Dot12N(w *byte, a *byte, s *float32, nb int, gqa int, gqs int, nw int, wstride int, dst *float32, dstride int)
TEXT ·q80Dot12N(SB), NOSPLIT, $0-80
	CONSTS
	NARGS

q80d12row:
	NROW(q80d12done, q80d12end)

q80d12loop:
	Q80W
	Q80G(0(DI), 32(DI), 64(DI), 96(DI), (DX), X15)
	Q80G(0(DI)(R9*1), 32(DI)(R9*1), 64(DI)(R9*1), 96(DI)(R9*1), (DX)(R10*1), X7)
	Q80G(0(DI)(R9*2), 32(DI)(R9*2), 64(DI)(R9*2), 96(DI)(R9*2), (DX)(R10*2), X6)
	NBLOCK(34, q80d12loop)

q80d12done:
	// Row k of the 12 goes to dst + k·dstride.
	STORE12
	NNEXT(q80d12row)

q80d12end:
	VZEROUPPER
	RET
