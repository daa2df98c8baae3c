// AVX2 activation quantiser for the grouped layout (see asmmm.go): bitwise
// the quantisation of quantGroupRow (ggml's quantize_row_q8_0/q8_1
// reference), for finite inputs.

#include "textflag.h"

// ROUNDQ(Y) rounds the float32 lanes of Y half away from zero (C's roundf)
// and converts them to int32. Uses Y10 (|x| mask), Y11 (sign mask), Y12
// (0.5), Y13 (1.0); clobbers Y8, Y9.
#define ROUNDQ(Y) \
	VROUNDPS $3, Y, Y8 \
	VSUBPS Y8, Y, Y9 \
	VANDPS Y10, Y9, Y9 \
	VCMPPS $13, Y12, Y9, Y9 \
	VANDPS Y11, Y, Y \
	VORPS Y13, Y, Y \
	VANDPS Y9, Y, Y \
	VADDPS Y8, Y, Y \
	VCVTTPS2DQ Y, Y

// func quantRowQ8(x *float32, nb int, q *byte, s *float32)
// For each 32-value block b of x: d = max|x|/127, id = 1/d (0 if d = 0),
// q = roundf(x·id) to q[128·b …+32], s[8·b] = fp16(d), s[8·b+4] =
// fp16(d·Σq), both as float32.
TEXT ·quantRowQ8(SB), NOSPLIT, $0-32
	MOVQ x+0(FP), SI
	MOVQ nb+8(FP), CX
	MOVQ q+16(FP), DI
	MOVQ s+24(FP), DX
	MOVL $0x7fffffff, AX
	VMOVD AX, X10
	VPBROADCASTD X10, Y10
	MOVL $0x80000000, AX
	VMOVD AX, X11
	VPBROADCASTD X11, Y11
	MOVL $0x3f000000, AX
	VMOVD AX, X12
	VPBROADCASTD X12, Y12
	MOVL $0x3f800000, AX
	VMOVD AX, X13
	VPBROADCASTD X13, Y13
	MOVL $0x42fe0000, AX // 127
	VMOVD AX, X14
	MOVQ $0x0000000400000000, AX // VPERMD order 0,4,1,5,2,6,3,7
	MOVQ AX, X15
	MOVQ $0x0000000500000001, AX
	VPINSRQ $1, AX, X15, X15
	MOVQ $0x0000000600000002, AX
	MOVQ AX, X9
	MOVQ $0x0000000700000003, AX
	VPINSRQ $1, AX, X9, X9
	VINSERTI128 $1, X9, Y15, Y15
	TESTQ CX, CX
	JZ qdone

qloop:
	VMOVUPS (SI), Y0
	VMOVUPS 32(SI), Y1
	VMOVUPS 64(SI), Y2
	VMOVUPS 96(SI), Y3
	VANDPS Y10, Y0, Y4
	VANDPS Y10, Y1, Y5
	VMAXPS Y5, Y4, Y4
	VANDPS Y10, Y2, Y5
	VANDPS Y10, Y3, Y6
	VMAXPS Y6, Y5, Y5
	VMAXPS Y5, Y4, Y4
	VEXTRACTF128 $1, Y4, X5
	VMAXPS X5, X4, X4
	VPSHUFD $0x4E, X4, X5
	VMAXPS X5, X4, X4
	VPSHUFD $0xB1, X4, X5
	VMAXPS X5, X4, X4     // amax
	VDIVSS X14, X4, X5    // d = amax/127
	VDIVSS X5, X13, X6    // 1/d
	VXORPS X7, X7, X7
	VCMPSS $4, X7, X5, X7 // d ≠ 0
	VANDPS X7, X6, X6     // id
	VBROADCASTSS X6, Y6
	VMULPS Y6, Y0, Y0
	VMULPS Y6, Y1, Y1
	VMULPS Y6, Y2, Y2
	VMULPS Y6, Y3, Y3
	ROUNDQ(Y0)
	ROUNDQ(Y1)
	ROUNDQ(Y2)
	ROUNDQ(Y3)
	VPADDD Y1, Y0, Y4
	VPADDD Y3, Y2, Y6
	VPADDD Y6, Y4, Y4
	VEXTRACTI128 $1, Y4, X6
	VPADDD X6, X4, X4
	VPSHUFD $0x4E, X4, X6
	VPADDD X6, X4, X4
	VPSHUFD $0xB1, X4, X6
	VPADDD X6, X4, X4
	VCVTDQ2PS X4, X4      // Σq
	VMULSS X5, X4, X4     // Σq·d
	VCVTPS2PH $0, X4, X4
	VCVTPH2PS X4, X4
	VCVTPS2PH $0, X5, X5
	VCVTPH2PS X5, X5
	VMOVSS X5, (DX)
	VMOVSS X4, 16(DX)
	VPACKSSDW Y1, Y0, Y0
	VPACKSSDW Y3, Y2, Y2
	VPACKSSWB Y2, Y0, Y0
	VPERMD Y0, Y15, Y0
	VMOVDQU Y0, (DI)
	ADDQ $128, SI
	ADDQ $128, DI
	ADDQ $32, DX
	DECQ CX
	JNZ qloop

qdone:
	VZEROUPPER
	RET
