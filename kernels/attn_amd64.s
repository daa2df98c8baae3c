// AVX2/FMA pieces of Attend: query·key scores, weighted sums of value rows,
// a vector exp and tile sums. See attn_amd64.go for the contracts.

#include "textflag.h"
#include "lanes_amd64.h"

// BCAST(bits, Y) sets every lane of Y to the float32 with these bits.
#define BCAST(bits, Y) \
	MOVL bits, AX \
	VMOVD AX, X15 \
	VPBROADCASTD X15, Y

// func scoreKeys8(k *byte, kstride int, q *float32, n8 int, out *float32)
TEXT ·scoreKeys8(SB), NOSPLIT, $0-40
	MOVQ k+0(FP), SI
	MOVQ kstride+8(FP), R10
	MOVQ q+16(FP), DI
	MOVQ n8+24(FP), CX
	MOVQ out+32(FP), R8
	LEAQ (R10)(R10*2), R11
	LEAQ (SI)(R10*4), R12
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7
	TESTQ CX, CX
	JZ sk8done

sk8loop:
	VMOVUPS (DI), Y8
	VFMADD231PS (SI), Y8, Y0
	VFMADD231PS (SI)(R10*1), Y8, Y1
	VFMADD231PS (SI)(R10*2), Y8, Y2
	VFMADD231PS (SI)(R11*1), Y8, Y3
	VFMADD231PS (R12), Y8, Y4
	VFMADD231PS (R12)(R10*1), Y8, Y5
	VFMADD231PS (R12)(R10*2), Y8, Y6
	VFMADD231PS (R12)(R11*1), Y8, Y7
	ADDQ $32, DI
	ADDQ $32, SI
	ADDQ $32, R12
	DECQ CX
	JNZ sk8loop

sk8done:
	// The eight REDs at once, in RED's order: P_jk holds rows j and k
	// with lanes i and i+4 added, then two VHADDPS levels.
	VPERM2F128 $0x20, Y4, Y0, Y8
	VPERM2F128 $0x31, Y4, Y0, Y9
	VADDPS Y9, Y8, Y8 // P04
	VPERM2F128 $0x20, Y5, Y1, Y9
	VPERM2F128 $0x31, Y5, Y1, Y10
	VADDPS Y10, Y9, Y9 // P15
	VPERM2F128 $0x20, Y6, Y2, Y10
	VPERM2F128 $0x31, Y6, Y2, Y11
	VADDPS Y11, Y10, Y10 // P26
	VPERM2F128 $0x20, Y7, Y3, Y11
	VPERM2F128 $0x31, Y7, Y3, Y12
	VADDPS Y12, Y11, Y11  // P37
	VHADDPS Y9, Y8, Y8    // rows 0,1 | 4,5: pair sums
	VHADDPS Y11, Y10, Y10 // rows 2,3 | 6,7
	VHADDPS Y10, Y8, Y8   // rows 0..3 | 4..7
	VMOVUPS Y8, (R8)
	VZEROUPPER
	RET

// func scoreKey1(k *byte, q *float32, n8 int) float32
TEXT ·scoreKey1(SB), NOSPLIT, $0-28
	MOVQ k+0(FP), SI
	MOVQ q+8(FP), DI
	MOVQ n8+16(FP), CX
	VXORPS Y0, Y0, Y0
	TESTQ CX, CX
	JZ sk1done

sk1loop:
	VMOVUPS (DI), Y8
	VFMADD231PS (SI), Y8, Y0
	ADDQ $32, DI
	ADDQ $32, SI
	DECQ CX
	JNZ sk1loop

sk1done:
	RED(Y0, X0)
	VMOVSS X0, ret+24(FP)
	VZEROUPPER
	RET

// func axpyRows(acc *float32, d int, p *float32, v *float32, vstride int, n int)
TEXT ·axpyRows(SB), NOSPLIT, $0-48
	MOVQ acc+0(FP), DI
	MOVQ d+8(FP), BX
	MOVQ p+16(FP), DX
	MOVQ v+24(FP), SI
	MOVQ vstride+32(FP), R9
	MOVQ n+40(FP), R10

	// Eight accumulators per pass where d allows: each is one dependency
	// chain of FMAs, so eight keep both FMA pipes busy.
ax64:
	CMPQ BX, $64
	JLT ax32
	VMOVUPS (DI), Y0
	VMOVUPS 32(DI), Y1
	VMOVUPS 64(DI), Y2
	VMOVUPS 96(DI), Y3
	VMOVUPS 128(DI), Y5
	VMOVUPS 160(DI), Y6
	VMOVUPS 192(DI), Y7
	VMOVUPS 224(DI), Y8
	MOVQ SI, R11
	MOVQ DX, R12
	MOVQ R10, CX
	TESTQ CX, CX
	JZ ax64store

ax64loop:
	VBROADCASTSS (R12), Y4
	VFMADD231PS (R11), Y4, Y0
	VFMADD231PS 32(R11), Y4, Y1
	VFMADD231PS 64(R11), Y4, Y2
	VFMADD231PS 96(R11), Y4, Y3
	VFMADD231PS 128(R11), Y4, Y5
	VFMADD231PS 160(R11), Y4, Y6
	VFMADD231PS 192(R11), Y4, Y7
	VFMADD231PS 224(R11), Y4, Y8
	ADDQ $4, R12
	ADDQ R9, R11
	DECQ CX
	JNZ ax64loop

ax64store:
	VMOVUPS Y0, (DI)
	VMOVUPS Y1, 32(DI)
	VMOVUPS Y2, 64(DI)
	VMOVUPS Y3, 96(DI)
	VMOVUPS Y5, 128(DI)
	VMOVUPS Y6, 160(DI)
	VMOVUPS Y7, 192(DI)
	VMOVUPS Y8, 224(DI)
	ADDQ $256, DI
	ADDQ $256, SI
	SUBQ $64, BX
	JMP ax64

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
	VFMADD231PS (R11), Y4, Y0
	VFMADD231PS 32(R11), Y4, Y1
	VFMADD231PS 64(R11), Y4, Y2
	VFMADD231PS 96(R11), Y4, Y3
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
	VFMADD231PS (R11), Y4, Y0
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

// EXPCONST loads expTile's constants into Y3..Y14 and BX.
#define EXPCONST \
	BCAST($0x3fb8aa3b, Y14) /* log2 e */ \
	BCAST($0x3f318000, Y13) /* C1 */ \
	BCAST($0xb95e8083, Y12) /* C2 */ \
	BCAST($0x39506967, Y11) /* p0 */ \
	BCAST($0x3ab743ce, Y10) /* p1 */ \
	BCAST($0x3c088908, Y9) /* p2 */ \
	BCAST($0x3d2aa9c1, Y8) /* p3 */ \
	BCAST($0x3e2aaaaa, Y7) /* p4 */ \
	BCAST($0x3f000000, Y6) /* p5 */ \
	BCAST($0xc2ae0000, Y5) /* −87 */ \
	BCAST($0x3f800000, Y4) /* 1 */ \
	MOVL $0x42b00000, BX /* 88 */ \
	MOVL $127, AX \
	VMOVD AX, X15 \
	VPBROADCASTD X15, Y3

// EXP8 loads eight floats from (DI), leaves their exp in Y2 (0 below −87 and
// for NaN, exp(88) above 88). Clobbers Y0, Y1, Y15.
#define EXP8 \
	VMOVUPS (DI), Y0 \
	VCMPPS $13, Y5, Y0, Y15 /* x ≥ −87 */ \
	VMAXPS Y5, Y0, Y0 \
	VMOVD BX, X1 \
	VPBROADCASTD X1, Y1 \
	VMINPS Y1, Y0, Y0 /* x ≤ 88 */ \
	VMULPS Y14, Y0, Y1 \
	VROUNDPS $0, Y1, Y1 /* n = round(x·log2 e) */ \
	VFNMADD231PS Y13, Y1, Y0 /* r = x − n·C1 */ \
	VFNMADD231PS Y12, Y1, Y0 /* r −= n·C2 */ \
	VMOVAPS Y11, Y2 \
	VFMADD213PS Y10, Y0, Y2 /* p = p0·r + p1 */ \
	VFMADD213PS Y9, Y0, Y2 \
	VFMADD213PS Y8, Y0, Y2 \
	VFMADD213PS Y7, Y0, Y2 \
	VFMADD213PS Y6, Y0, Y2 \
	VMULPS Y0, Y0, Y1 /* r² */ \
	VFMADD213PS Y0, Y1, Y2 /* p·r² + r */ \
	VADDPS Y4, Y2, Y2 /* + 1 */ \
	VMOVUPS (DI), Y0 \
	VMAXPS Y5, Y0, Y0 \
	VMOVD BX, X1 \
	VPBROADCASTD X1, Y1 \
	VMINPS Y1, Y0, Y0 \
	VMULPS Y14, Y0, Y1 \
	VROUNDPS $0, Y1, Y1 \
	VCVTPS2DQ Y1, Y1 \
	VPADDD Y3, Y1, Y1 \
	VPSLLD $23, Y1, Y1 /* 2^n */ \
	VMULPS Y1, Y2, Y2 \
	VANDPS Y15, Y2, Y2

// func expTile(x *float32, n8 int)
TEXT ·expTile(SB), NOSPLIT, $0-16
	MOVQ x+0(FP), DI
	MOVQ n8+8(FP), CX
	EXPCONST
	TESTQ CX, CX
	JZ expdone

exploop:
	EXP8
	VMOVUPS Y2, (DI)
	ADDQ $32, DI
	DECQ CX
	JNZ exploop

expdone:
	VZEROUPPER
	RET

// func expSum(x *float32, n8 int, m float32) float32
TEXT ·expSum(SB), NOSPLIT, $32-28
	MOVQ x+0(FP), DI
	MOVQ n8+8(FP), CX
	EXPCONST
	VXORPS Y1, Y1, Y1
	VMOVUPS Y1, 0(SP) // the running lane sums
	TESTQ CX, CX
	JZ esdone

esloop:
	VMOVUPS (DI), Y0
	VBROADCASTSS m+16(FP), Y1
	VSUBPS Y1, Y0, Y0
	VMOVUPS Y0, (DI)
	EXP8
	VMOVUPS Y2, (DI)
	VADDPS 0(SP), Y2, Y2
	VMOVUPS Y2, 0(SP)
	ADDQ $32, DI
	DECQ CX
	JNZ esloop

esdone:
	VMOVUPS 0(SP), Y0
	RED(Y0, X0)
	VMOVSS X0, ret+24(FP)
	VZEROUPPER
	RET

// func scaleMax(sc *float32, kp *int32, n8 int, qPos int32, scale float32) float32
TEXT ·scaleMax(SB), NOSPLIT, $0-36
	MOVQ sc+0(FP), DI
	MOVQ kp+8(FP), SI
	MOVQ n8+16(FP), CX
	MOVL qPos+24(FP), AX
	VMOVD AX, X5
	VPBROADCASTD X5, Y5
	VBROADCASTSS scale+28(FP), Y4
	BCAST($0xff800000, Y3) // −Inf
	VMOVUPS Y3, Y0         // running max
	TESTQ CX, CX
	JZ smdone

smloop:
	VMOVDQU (SI), Y1
	VPCMPGTD Y5, Y1, Y1 // masked: position > qPos
	VMULPS (DI), Y4, Y2
	VBLENDVPS Y1, Y3, Y2, Y2
	VMOVUPS Y2, (DI)
	VMAXPS Y2, Y0, Y0
	ADDQ $32, DI
	ADDQ $32, SI
	DECQ CX
	JNZ smloop

smdone:
	VEXTRACTF128 $1, Y0, X1
	VMAXPS X1, X0, X0
	VPERMILPS $0x4e, X0, X1
	VMAXPS X1, X0, X0
	VPERMILPS $0xb1, X0, X1
	VMAXPS X1, X0, X0
	VMOVSS X0, ret+32(FP)
	VZEROUPPER
	RET

// func sumTile(x *float32, n8 int) float32
TEXT ·sumTile(SB), NOSPLIT, $0-20
	MOVQ x+0(FP), DI
	MOVQ n8+8(FP), CX
	VXORPS Y0, Y0, Y0
	TESTQ CX, CX
	JZ stdone

stloop:
	VADDPS (DI), Y0, Y0
	ADDQ $32, DI
	DECQ CX
	JNZ stloop

stdone:
	RED(Y0, X0)
	VMOVSS X0, ret+16(FP)
	VZEROUPPER
	RET

