// AVX2 pieces of Attend: weighted sums of value rows and a vector exp.
// See attn_amd64.go for the contracts.

#include "textflag.h"

// BCAST(bits, Y) sets every lane of Y to the float32 with these bits.
#define BCAST(bits, Y) \
	MOVL bits, AX \
	VMOVD AX, X15 \
	VPBROADCASTD X15, Y

// func axpyRows(acc *float32, d int, p *float32, v *float32, vstride int, n int)
TEXT ·axpyRows(SB), NOSPLIT, $0-48
	MOVQ acc+0(FP), DI
	MOVQ d+8(FP), BX
	MOVQ p+16(FP), DX
	MOVQ v+24(FP), SI
	MOVQ vstride+32(FP), R9
	MOVQ n+40(FP), R10

ax32:
	CMPQ BX, $32
	JLT ax8
	VMOVUPS (DI), Y0
	VMOVUPS 32(DI), Y1
	VMOVUPS 64(DI), Y2
	VMOVUPS 96(DI), Y3
	MOVQ SI, R11
	MOVQ DX, R12
	MOVQ R10, CX
	TESTQ CX, CX
	JZ ax32store

ax32loop:
	VBROADCASTSS (R12), Y4
	VMULPS (R11), Y4, Y5
	VADDPS Y5, Y0, Y0
	VMULPS 32(R11), Y4, Y6
	VADDPS Y6, Y1, Y1
	VMULPS 64(R11), Y4, Y7
	VADDPS Y7, Y2, Y2
	VMULPS 96(R11), Y4, Y8
	VADDPS Y8, Y3, Y3
	ADDQ $4, R12
	ADDQ R9, R11
	DECQ CX
	JNZ ax32loop

ax32store:
	VMOVUPS Y0, (DI)
	VMOVUPS Y1, 32(DI)
	VMOVUPS Y2, 64(DI)
	VMOVUPS Y3, 96(DI)
	ADDQ $128, DI
	ADDQ $128, SI
	SUBQ $32, BX
	JMP ax32

ax8:
	CMPQ BX, $8
	JLT axdone
	VMOVUPS (DI), Y0
	MOVQ SI, R11
	MOVQ DX, R12
	MOVQ R10, CX
	TESTQ CX, CX
	JZ ax8store

ax8loop:
	VBROADCASTSS (R12), Y4
	VMULPS (R11), Y4, Y5
	VADDPS Y5, Y0, Y0
	ADDQ $4, R12
	ADDQ R9, R11
	DECQ CX
	JNZ ax8loop

ax8store:
	VMOVUPS Y0, (DI)
	ADDQ $32, DI
	ADDQ $32, SI
	SUBQ $8, BX
	JMP ax8

axdone:
	VZEROUPPER
	RET

// func expTile(x *float32, n8 int)
// x[i] = exp(x[i]) for i < 8·n8; inputs below −87 (and NaN) give 0, inputs
// above 88 give exp(88).
TEXT ·expTile(SB), NOSPLIT, $0-16
	MOVQ x+0(FP), DI
	MOVQ n8+8(FP), CX
	BCAST($0x3fb8aa3b, Y14) // log2 e
	BCAST($0x3f318000, Y13) // C1
	BCAST($0xb95e8083, Y12) // C2
	BCAST($0x39506967, Y11) // p0
	BCAST($0x3ab743ce, Y10) // p1
	BCAST($0x3c088908, Y9)  // p2
	BCAST($0x3d2aa9c1, Y8)  // p3
	BCAST($0x3e2aaaaa, Y7)  // p4
	BCAST($0x3f000000, Y6)  // p5
	BCAST($0xc2ae0000, Y5)  // −87
	BCAST($0x3f800000, Y4)  // 1
	MOVL $0x42b00000, BX    // 88
	MOVL $127, AX
	VMOVD AX, X15
	VPBROADCASTD X15, Y3
	TESTQ CX, CX
	JZ expdone

exploop:
	VMOVUPS (DI), Y0
	VCMPPS $13, Y5, Y0, Y15 // x ≥ −87
	VMAXPS Y5, Y0, Y0
	VMOVD BX, X1
	VPBROADCASTD X1, Y1
	VMINPS Y1, Y0, Y0       // x ≤ 88
	VMULPS Y14, Y0, Y1
	VROUNDPS $0, Y1, Y1     // n = round(x·log2 e)
	VFNMADD231PS Y13, Y1, Y0 // r = x − n·C1
	VFNMADD231PS Y12, Y1, Y0 // r −= n·C2
	VMOVAPS Y11, Y2
	VFMADD213PS Y10, Y0, Y2 // p = p0·r + p1
	VFMADD213PS Y9, Y0, Y2
	VFMADD213PS Y8, Y0, Y2
	VFMADD213PS Y7, Y0, Y2
	VFMADD213PS Y6, Y0, Y2
	VMULPS Y0, Y0, Y1       // r²  (n no longer needed in Y1; recompute below)
	VFMADD213PS Y0, Y1, Y2  // p·r² + r
	VADDPS Y4, Y2, Y2       // + 1
	VMOVUPS (DI), Y0
	VMAXPS Y5, Y0, Y0
	VMOVD BX, X1
	VPBROADCASTD X1, Y1
	VMINPS Y1, Y0, Y0
	VMULPS Y14, Y0, Y1
	VROUNDPS $0, Y1, Y1
	VCVTPS2DQ Y1, Y1
	VPADDD Y3, Y1, Y1
	VPSLLD $23, Y1, Y1      // 2^n
	VMULPS Y1, Y2, Y2
	VANDPS Y15, Y2, Y2
	VMOVUPS Y2, (DI)
	ADDQ $32, DI
	DECQ CX
	JNZ exploop

expdone:
	VZEROUPPER
	RET
