// Package kernels holds the numeric inner loops of the engine: the GGML block
// formats (F32, F16, BF16, Q4_0 … Q6_K) and their dequantisation, dot products
// and matrix multiplication of quantized weights against float32 activations,
// RMSNorm, RoPE, softmax and attention.
//
// Kernels are batch-invariant: a row's result never depends on how many rows
// are computed with it, because every output element is reduced in the same
// order whatever the batch size. Hot paths take their scratch space from the
// caller (or a Pool) and do not allocate per call.
//
// # Formats and dot products
//
// DType names a GGML tensor type with GGML's id, block size and block bytes.
// Dequantize expands any supported type to float32, bit-identical to the
// PyPI gguf package (tested against golden values it produced,
// testdata/make_golden.py).
//
// Quantized dot products follow ggml's CPU backend: activations are first
// quantized per block — Q8_0 for Q4_0/Q5_0/Q8_0 weights, Q8_1 for Q4_1/Q5_1,
// Q8_K for the K-quants (ActType, QuantizeActs) — then each block's integer
// products are summed exactly and combined in float32 in ggml's order
// (VecDot). F16 and BF16 weights meet activations rounded to F16/BF16.
//
// Pool.MatMul applies this to a whole weight Matrix and a batch of rows,
// spread over the pool's workers. Its portable kernels compute the exact
// block integers with 64-bit "SIMD within a register" multiplies (four
// multiply-adds each, see swar.go) and return exactly what VecDot returns.
//
// # Assembly kernels (amd64)
//
// Each Pool's kernel table checks the CPU once (golang.org/x/sys/cpu: AVX2
// and F16C) and then routes Q4_0, Q4_1 and Q8_0 weights, and F32/F16 weights
// whose width is a multiple of 8, to AVX2 assembly (asmmm.go, *_amd64.s;
// other architectures build the portable kernels only). The assembly
// returns bitwise what the portable kernels return: block integers are exact
// whatever the instruction order, and the float combine is done with
// separate multiplies and adds (no FMA) in the portable order, vectorised
// across rows rather than along a row. Activations are quantised (also in
// assembly, bitwise the Go quantiser) into groups of four rows so that one
// unpacked weight block meets 4 or 8 activation rows (prefill), and decode
// computes four weight rows per activation row; every output element is
// computed by the same instruction sequence in every tile shape, so batch
// invariance holds. Attend and SwiGLU use an AVX2 float32 exp (within 2 ulp)
// and assembly dot and multi-row AXPY kernels; they are batch-invariant but
// round differently from their portable versions.
//
// # Float conventions
//
// Element-wise kernels (RMSNorm, LayerNorm, SwiGLU, GELU, Softmax, Dot,
// AXPY, RoPE) work on float32 slices in place or into a destination, and
// round every float32 product before adding it (no fused multiply-add), so
// results do not change between architectures. Reductions that ggml does in
// double precision (the RMSNorm sum of squares, the softmax sum) are done in
// float64 here too. RoPE angles are computed in float64.
package kernels
