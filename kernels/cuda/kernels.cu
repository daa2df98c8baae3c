// CUDA kernels of blendrag's GPU backend. gen.sh compiles this file to PTX
// (kernels.ptx), which package cuda embeds and loads through gorgonia.org/cu.
//
// Every kernel has a CPU twin in package kernels (github.com/blendrag/blendrag/kernels);
// the parity tests in this directory compare them. The file is compiled with
// --fmad=false so that no multiply and add are fused: like the CPU kernels,
// every float32 product is rounded before it is added. Where the CPU kernel's
// order of operations can be reproduced cheaply (matrix products, RMSNorm,
// RoPE, activation quantisation, add, KV scatter) it is, so the results are
// bitwise the CPU's; attention and SwiGLU use GPU reductions and expf and
// agree within a tolerance.
//
// Block layouts (GGML, little-endian), 32 values per block:
//   Q4_1: f16 d, f16 m, 16 bytes of nibbles   (value j: d*(q_j) + m; low nibbles are 0..15, high 16..31)
//   Q8_0: f16 d, 32 int8                       (value j: d*q_j)
//   Q8_1: f16 d, f16 s = d*sum(q), 32 int8     (activations for Q4_1 weights)

#ifndef BLENDRAG_CUDA_EMU  // emu.cc supplies these when it runs the kernels on the CPU
#include <cuda_fp16.h>
#include <math_constants.h>
#define EXTERN_SHARED(type, name) extern __shared__ type name[]
#else
struct float4 {
    float x, y, z, w;
};
#endif

#define QK 32
#define WARP 32

__device__ __forceinline__ float ldf16(const unsigned char* p) {
    unsigned short h = (unsigned short)p[0] | ((unsigned short)p[1] << 8);
    return __half2float(__ushort_as_half(h));
}

// stf16 stores f as binary16 at p, which must be 2-byte aligned (block
// headers are: blocks of 34 and 36 bytes from a 256-byte aligned buffer).
// One 16-bit store: on an H100 (driver 580, this PTX JIT-compiled for
// sm_90) storing the two bytes separately left the low byte wrong.
__device__ __forceinline__ void stf16(unsigned char* p, float f) {
    *(unsigned short*)p = __half_as_ushort(__float2half_rn(f));
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = WARP / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ __forceinline__ int warp_sum_int(int v) {
    for (int o = WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// ---------------------------------------------------------------------------
// Activation quantisation (kernels.QuantizeActs for Q8_0 / Q8_1): ggml's
// reference quantiser. One warp per 32-value block; lane j owns value j.
//   d = amax/127, id = 1/d (0 if d == 0), q = roundf(x*id), Q8_1: s = f16(d*sum q).
// nblocks blocks are consecutive in x (32 floats each) and in dst
// (34 bytes for Q8_0, 36 for Q8_1).
extern "C" __global__ void quant_q8(const float* __restrict__ x, unsigned char* __restrict__ dst,
                                    int nblocks, int q81) {
    int warp = (blockIdx.x * blockDim.x + threadIdx.x) / WARP;
    int lane = threadIdx.x % WARP;
    if (warp >= nblocks) return;
    float v = x[(long long)warp * QK + lane];
    float amax = warp_max(fabsf(v));
    float d = amax / 127.0f;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    int q = (int)roundf(v * id);
    int sum = warp_sum_int(q);
    int bs = q81 ? 36 : 34;
    unsigned char* b = dst + (long long)warp * bs;
    int off = q81 ? 4 : 2;
    b[off + lane] = (unsigned char)(signed char)q;
    if (lane == 0) {
        stf16(b, d);
        if (q81) stf16(b + 2, (float)sum * d);
    }
}

// ---------------------------------------------------------------------------
// Quantized matrix products y[i][o] = dot(W[o], act[i]) for W of Rows x Cols
// in GGML blocks and act rows already quantised by quant_q8.
//
// ggml's CPU order: per block an exact integer sum, then a float32 term per
// block, added to sumf block after block. The terms are computed in parallel
// (lane b takes blocks b, b+32, ...) and stored in shared memory; then one
// lane per activation row adds them in block order, so the result is the CPU
// result bit for bit and does not depend on how many rows are computed
// together (batch invariance).
//
// Launch: block = MM_WARPS warps, warp w computes weight row
// blockIdx.x*MM_WARPS + w for activation rows blockIdx.y*MM_ROWS ...
// (at most MM_ROWS). Dynamic shared memory: MM_WARPS*MM_ROWS*nb floats.
#define MM_WARPS 4
#define MM_ROWS 4

template <int WT>  // 0: Q4_1 weights x Q8_1 acts, 1: Q8_0 x Q8_0
__device__ void mm_quant(const unsigned char* __restrict__ w, const unsigned char* __restrict__ act,
                         float* __restrict__ y, int rows, int cols, int n) {
    EXTERN_SHARED(float, terms);
    int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    int o = blockIdx.x * MM_WARPS + warp;
    int i0 = blockIdx.y * MM_ROWS;
    int nr = min(MM_ROWS, n - i0);
    int nb = cols / QK;
    if (o >= rows) return;
    const int wbs = WT == 0 ? 20 : 34;
    const int abs_ = WT == 0 ? 36 : 34;
    float* t = terms + warp * MM_ROWS * nb;
    const unsigned char* wrow = w + (long long)o * nb * wbs;
    for (int b = lane; b < nb; b += WARP) {
        const unsigned char* x = wrow + b * wbs;
        float dx = ldf16(x);
        if (WT == 0) {
            float mx = ldf16(x + 2);
            const unsigned char* qs = x + 4;
            for (int r = 0; r < nr; r++) {
                const unsigned char* a = act + ((long long)(i0 + r) * nb + b) * abs_;
                float dy = ldf16(a), sy = ldf16(a + 2);
                const signed char* q8 = (const signed char*)(a + 4);
                int s = 0;
                for (int j = 0; j < 16; j++) {
                    s += (int)(qs[j] & 0xf) * (int)q8[j];
                    s += (int)(qs[j] >> 4) * (int)q8[j + 16];
                }
                t[r * nb + b] = __fadd_rn(__fmul_rn(__fmul_rn(dx, dy), (float)s), __fmul_rn(mx, sy));
            }
        } else {
            const signed char* qx = (const signed char*)(x + 2);
            for (int r = 0; r < nr; r++) {
                const unsigned char* a = act + ((long long)(i0 + r) * nb + b) * abs_;
                float dy = ldf16(a);
                const signed char* qy = (const signed char*)(a + 2);
                int s = 0;
                for (int j = 0; j < 32; j++) s += (int)qx[j] * (int)qy[j];
                t[r * nb + b] = __fmul_rn((float)s, __fmul_rn(dx, dy));
            }
        }
    }
    __syncwarp();
    if (lane < nr) {
        float sumf = 0.0f;
        const float* tr = t + lane * nb;
        for (int b = 0; b < nb; b++) sumf = __fadd_rn(sumf, tr[b]);
        y[(long long)(i0 + lane) * rows + o] = sumf;
    }
}

extern "C" __global__ void mm_q4_1(const unsigned char* w, const unsigned char* act, float* y,
                                   int rows, int cols, int n) {
    mm_quant<0>(w, act, y, rows, cols, n);
}

extern "C" __global__ void mm_q8_0(const unsigned char* w, const unsigned char* act, float* y,
                                   int rows, int cols, int n) {
    mm_quant<1>(w, act, y, rows, cols, n);
}

// ---------------------------------------------------------------------------
// Float matrix products (F32 and F16 weights) in the CPU's f32Acc order:
// eight lanes, element k goes to lane k mod 8 and is added in increasing k,
// each product rounded first; the lanes are combined as
// ((l0+l4)+(l1+l5)) + ((l2+l6)+(l3+l7)). F16 weights meet activations
// rounded to F16 (ggml's vec_dot_type for F16).
//
// Launch: block = MM_WARPS warps; warp w computes weight row
// blockIdx.x*MM_WARPS + w for activation rows blockIdx.y*4 + (lane/8); lane%8
// is the f32Acc lane.
template <bool HALF>
__device__ void mm_float(const void* __restrict__ wv, const float* __restrict__ x,
                         float* __restrict__ y, int rows, int cols, int n) {
    int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    int o = blockIdx.x * MM_WARPS + warp;
    int r = lane / 8, k = lane % 8;
    int i = blockIdx.y * 4 + r;
    if (o >= rows) return;
    float acc = 0.0f;
    if (i < n) {
        const float* xr = x + (long long)i * cols;
        for (int c = k; c < cols; c += 8) {
            float wt, xv = xr[c];
            if (HALF) {
                wt = __half2float(((const __half*)wv)[(long long)o * cols + c]);
                xv = __half2float(__float2half_rn(xv));
            } else {
                wt = ((const float*)wv)[(long long)o * cols + c];
            }
            acc = __fadd_rn(acc, __fmul_rn(wt, xv));
        }
    }
    int base = r * 8;
    float l0 = __shfl_sync(0xffffffffu, acc, base + 0), l1 = __shfl_sync(0xffffffffu, acc, base + 1);
    float l2 = __shfl_sync(0xffffffffu, acc, base + 2), l3 = __shfl_sync(0xffffffffu, acc, base + 3);
    float l4 = __shfl_sync(0xffffffffu, acc, base + 4), l5 = __shfl_sync(0xffffffffu, acc, base + 5);
    float l6 = __shfl_sync(0xffffffffu, acc, base + 6), l7 = __shfl_sync(0xffffffffu, acc, base + 7);
    if (k == 0 && i < n) {
        float s = __fadd_rn(__fadd_rn(__fadd_rn(l0, l4), __fadd_rn(l1, l5)),
                            __fadd_rn(__fadd_rn(l2, l6), __fadd_rn(l3, l7)));
        y[(long long)i * rows + o] = s;
    }
}

extern "C" __global__ void mm_f32(const float* w, const float* x, float* y, int rows, int cols, int n) {
    mm_float<false>(w, x, y, rows, cols, n);
}

extern "C" __global__ void mm_f16(const unsigned short* w, const float* x, float* y, int rows, int cols, int n) {
    mm_float<true>(w, x, y, rows, cols, n);
}

// ---------------------------------------------------------------------------
// RMSNorm (kernels.RMSNorm), one CUDA block per row of dim values:
// mean = f32(sum_i f64(x_i*x_i) / dim) with the float64 sum in index order,
// scale = 1/f32(sqrt(f64(mean+eps))), dst_i = (x_i*scale)*w_i. The sum is
// serial (thread 0) to keep the CPU's order; w may be null (no gain).
// With res not null the row is first the residual sum x_i = x_i + res_i
// (written back to x, as add_f32 would), then normalised: one launch for
// kernels.Add followed by RMSNorm; dst may be x or res.
extern "C" __global__ void rmsnorm(float* dst, float* x, const float* res, const float* w, int dim, float eps) {
    __shared__ float sscale;
    float* xr = x + (long long)blockIdx.x * dim;
    float* dr = dst + (long long)blockIdx.x * dim;
    if (res) {
        const float* rr = res + (long long)blockIdx.x * dim;
        for (int i = threadIdx.x; i < dim; i += blockDim.x) xr[i] = __fadd_rn(xr[i], rr[i]);
        __syncthreads();  // every sum is in x before thread 0 reads the row
    }
    if (threadIdx.x == 0) {
        double sum = 0.0;
        for (int i = 0; i < dim; i++) sum += (double)__fmul_rn(xr[i], xr[i]);
        float mean = (float)(sum / (double)dim);
        sscale = __fdiv_rn(1.0f, (float)sqrt((double)__fadd_rn(mean, eps)));
    }
    __syncthreads();
    float scale = sscale;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float v = __fmul_rn(xr[i], scale);
        dr[i] = w ? __fmul_rn(v, w[i]) : v;
    }
}

// ---------------------------------------------------------------------------
// RoPE (kernels.RoPETable.Apply): row r of n rows (nHeads heads of headDim
// values each, rows contiguous) is rotated for position pos[r], or for
// position posConst when pos is null (RoPE shift by a delta). Pair i turns
// by pos*theta[i], computed in float64; cos and sin are rounded to float32.
// Normal layout: pair (2i, 2i+1); NeoX: (i, i+headDim/2).
// Launch: one block per row, threads over the headDim/2 pairs; blocks with
// blockIdx.y = 1 rotate row r of x2 (nHeads2 heads) instead, at the same
// position (a layer's queries and keys in one launch).
extern "C" __global__ void rope(float* x, float* x2, const int* pos, int posConst, const double* theta,
                                int nHeads, int nHeads2, int headDim, int neox) {
    if (blockIdx.y == 1) {
        x = x2;
        nHeads = nHeads2;
    }
    int r = blockIdx.x;
    int half = headDim / 2;
    double p = (double)(pos ? pos[r] : posConst);
    float* xr = x + (long long)r * nHeads * headDim;
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        double s, c;
        sincos(p * theta[i], &s, &c);
        float cf = (float)c, sf = (float)s;
        for (int h = 0; h < nHeads; h++) {
            float* v = xr + h * headDim;
            int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
            float x0 = v[a], x1 = v[b];
            v[a] = __fsub_rn(__fmul_rn(x0, cf), __fmul_rn(x1, sf));
            v[b] = __fadd_rn(__fmul_rn(x0, sf), __fmul_rn(x1, cf));
        }
    }
}

// ---------------------------------------------------------------------------
// Attention (kernels.Attend) for nQ query rows over nKeys cached keys, with
// grouped-query heads, a mask by position (key j is visible to query r when
// keyPos[j] <= qPos[r]) and optional key groups (APE): group g scales its
// scores by 1/(temp[g]*sqrt(headDim)); with O_g, LSE_g the softmax output
// and log-sum-exp of group g the result is sum_g w_g*O_g with
// w = softmax_g(lse[g]*LSE_g). groupOf == null means one group with
// temperature 1. A head that sees no key gets zeros. Attend takes this
// kernel only for shapes the split path below cannot take (headDim not 32,
// 64 or 128, or more than FA_MAXG query heads per KV head).
//
// q and out are [nQ x heads*headDim], keys and vals [nKeys x kvHeads*headDim].
// scratch holds nQ*heads*nKeys floats (scores, then probabilities).
// Launch: grid (nQ, heads), ATT_THREADS threads; headDim must divide
// ATT_THREADS. nGroups <= ATT_MAXG.
#define ATT_THREADS 128
#define ATT_MAXG 8

__device__ __forceinline__ float block_max(float v, float* sh) {
    v = warp_max(v);
    int w = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    float m = sh[0];
    for (int i = 1; i < ATT_THREADS / WARP; i++) m = fmaxf(m, sh[i]);
    return m;
}

__device__ __forceinline__ double block_sum(double v, double* sh) {
    for (int o = WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    int w = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    double s = 0.0;
    for (int i = 0; i < ATT_THREADS / WARP; i++) s += sh[i];
    return s;
}

// lse_merge merges the softmax results of nGroups ≤ ATT_MAXG key groups as
// kernels' AttnState.write does: group g has maximum score M[g], sum L[g]
// (0: the group saw no key and contributes nothing) and unnormalised output
// N[g]; LSE_g = M_g + ln L_g, z_g = lse[g]·LSE_g (double), w =
// softmax_g(z), and the result is sum_g float32(w_g/L_g)·N_g in group
// order, or 0 when no group saw a key.
__device__ float lse_merge(int nGroups, const float* M, const double* L, const float* N, const float* lse) {
    double z[ATT_MAXG];
    double zmax = -CUDART_INF;
    for (int g = 0; g < nGroups; g++) {
        if (L[g] == 0.0) {
            z[g] = -CUDART_INF;
            continue;
        }
        z[g] = (double)lse[g] * ((double)M[g] + log(L[g]));
        zmax = fmax(zmax, z[g]);
    }
    if (zmax == -CUDART_INF) return 0.0f;
    double zsum = 0.0;
    for (int g = 0; g < nGroups; g++) {
        z[g] = z[g] == -CUDART_INF ? 0.0 : exp(z[g] - zmax);
        zsum += z[g];
    }
    float res = 0.0f;
    for (int g = 0; g < nGroups; g++) {
        if (z[g] == 0.0) continue;
        res = __fadd_rn(res, __fmul_rn((float)(z[g] / zsum / L[g]), N[g]));
    }
    return res;
}

extern "C" __global__ void attend(float* out, const float* q, const float* keys, const float* vals,
                                  const int* keyPos, const int* qPos,
                                  const unsigned char* groupOf, const float* temp, const float* lse,
                                  int nGroups, int nKeys, int heads, int kvHeads, int headDim,
                                  float* scratch) {
    __shared__ float gscale[ATT_MAXG];
    __shared__ float gmax[ATT_MAXG];
    __shared__ double gsum[ATT_MAXG];
    __shared__ float redf[ATT_THREADS / WARP];
    __shared__ double redd[ATT_THREADS / WARP];
    __shared__ float sacc[ATT_THREADS * ATT_MAXG];

    int r = blockIdx.x, h = blockIdx.y, tid = threadIdx.x;
    int qDim = heads * headDim, kvDim = kvHeads * headDim;
    int kvh = h / (heads / kvHeads);
    const float* qh = q + (long long)r * qDim + h * headDim;
    float* sc = scratch + ((long long)r * heads + h) * nKeys;
    int qp = qPos[r];
    if (tid < nGroups) {
        double t = groupOf ? (double)temp[tid] : 1.0;
        gscale[tid] = (float)(1.0 / sqrt((double)headDim) / t);
    }
    __syncthreads();

    // Scores and each group's maximum.
    float mloc[ATT_MAXG];
    for (int g = 0; g < ATT_MAXG; g++) mloc[g] = -CUDART_INF_F;
    for (int j = tid; j < nKeys; j += ATT_THREADS) {
        float s = -CUDART_INF_F;
        if (keyPos[j] <= qp) {
            const float* k = keys + (long long)j * kvDim + kvh * headDim;
            float a = 0.0f;
            for (int i = 0; i < headDim; i++) a = __fadd_rn(a, __fmul_rn(qh[i], k[i]));
            int g = groupOf ? groupOf[j] : 0;
            s = __fmul_rn(a, gscale[g]);
            mloc[g] = fmaxf(mloc[g], s);
        }
        sc[j] = s;
    }
    for (int g = 0; g < nGroups; g++) {
        float m = block_max(mloc[g], redf);
        if (tid == 0) gmax[g] = m;
    }
    __syncthreads();

    // Probabilities p_j = exp(s_j - m_g) and each group's sum.
    double lloc[ATT_MAXG];
    for (int g = 0; g < ATT_MAXG; g++) lloc[g] = 0.0;
    for (int j = tid; j < nKeys; j += ATT_THREADS) {
        float s = sc[j];
        float p = 0.0f;
        if (s != -CUDART_INF_F) {
            int g = groupOf ? groupOf[j] : 0;
            p = expf(__fsub_rn(s, gmax[g]));
            lloc[g] += (double)p;
        }
        sc[j] = p;
    }
    for (int g = 0; g < nGroups; g++) {
        double l = block_sum(lloc[g], redd);
        if (tid == 0) gsum[g] = l;
    }
    __syncthreads();

    // Weighted values: thread = (slice, dim); slices split the keys.
    int nSlices = ATT_THREADS / headDim;
    int dim = tid % headDim, slice = tid / headDim;
    float acc[ATT_MAXG];
    for (int g = 0; g < ATT_MAXG; g++) acc[g] = 0.0f;
    if (slice < nSlices) {
        for (int j = slice; j < nKeys; j += nSlices) {
            float p = sc[j];
            if (p == 0.0f) continue;
            int g = groupOf ? groupOf[j] : 0;
            acc[g] = __fadd_rn(acc[g], __fmul_rn(p, vals[(long long)j * kvDim + kvh * headDim + dim]));
        }
        for (int g = 0; g < nGroups; g++) sacc[(slice * ATT_MAXG + g) * headDim + dim] = acc[g];
    }
    __syncthreads();
    if (slice != 0) return;
    for (int g = 0; g < nGroups; g++) {
        float a = 0.0f;
        for (int s = 0; s < nSlices; s++) a = __fadd_rn(a, sacc[(s * ATT_MAXG + g) * headDim + dim]);
        acc[g] = a;
    }
    float* o = out + (long long)r * qDim + h * headDim + dim;
    if (nGroups == 1) {
        double l = gsum[0];
        *o = l == 0.0 ? 0.0f : __fmul_rn(acc[0], (float)(1.0 / l));
        return;
    }
    *o = lse_merge(nGroups, gmax, gsum, acc, lse);
}

// ---------------------------------------------------------------------------
// Attention split over keys (flash-decoding): the path Attend takes for
// headDim = 32·nd (nd ≤ FA_MAXD) and heads/kvHeads ≤ FA_MAXG, with or
// without APE key groups. The keys are cut into splits of FA_SPLIT keys
// ([sp*FA_SPLIT, (sp+1)*FA_SPLIT) ∩ [0, nKeys)); each (query row, head,
// partial) gets its own online softmax state, written to part and merged by
// attend_combine (no groups) or attend_combine_groups (groups).
//
// Partials. Without groups (pairs == null) partial i is split i (nPart =
// nSplit). With groups, partial i is the pair (split, group) pairs[i] =
// split<<FA_GBITS | group: the keys of that split in that group, scored
// with scale 1/(temp[group]*sqrt(headDim)) (computed in double, rounded to
// float32, as kernels.AttendBlock does). The host lists only the pairs that
// hold a key, ordered by group, then split (KeyGroups.pairs), so the scratch
// stays linear in nKeys/FA_SPLIT + nGroups, not nKeys.
//
// part is laid out [nQ][heads][nPart][headDim + 2]: the unnormalised output
// acc, then the running maximum m (−inf: the partial saw no key), then the
// sum l. How keys are split and paired depends on nKeys and the groups
// alone, never on the query rows, so a row's result does not depend on the
// other rows computed with it.
//
// attend_split: warp w of a block takes query row blockIdx.x*FA_WARPS + w
// and every query head of KV head blockIdx.y / nPart (GQA: the G heads
// share each key and value read) over partial blockIdx.y % nPart. Lane l
// owns dimensions l, l+32, ... of the head, so each key and value row is
// read coalesced. A score is the lanes' partial dot products (each summed
// over i from 0.0f) added by warp_sum's butterfly, times the scale; the
// online softmax takes the keys one by one in index order: mn = max(m, s),
// c = e^(m−mn), p = e^(s−mn), l = l·c + p, acc = acc·c + p·v. attend_tile
// reproduces exactly this arithmetic (see there).
// Launch: grid (⌈nQ/FA_WARPS⌉, kvHeads·nPart), FA_WARPS·32 threads.
#define FA_WARPS 4
#define FA_SPLIT 256
#define FA_MAXG 8
#define FA_MAXD 4
#define FA_GBITS 3  // pairs[i] & ((1<<FA_GBITS)-1) is the group; ATT_MAXG groups fit

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = WARP / 2; o > 0; o >>= 1) v = __fadd_rn(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// group_scale is 1/(t*sqrt(headDim)) rounded to float32 as the CPU rounds
// it: float32((1/sqrt(headDim))/t) with the quotient in double.
__device__ __forceinline__ float group_scale(int headDim, float t) {
    return (float)(1.0 / sqrt((double)headDim) / (double)t);
}

extern "C" __global__ void attend_split(float* part, const float* q, const float* keys, const float* vals,
                                        const int* keyPos, const int* qPos, const unsigned char* groupOf,
                                        const float* temp, const int* pairs, int nQ, int nKeys, int heads,
                                        int kvHeads, int headDim, float scale, int nPart) {
    int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    int r = blockIdx.x * FA_WARPS + warp;
    if (r >= nQ) return;
    int kvh = blockIdx.y / nPart, pi = blockIdx.y % nPart;
    int sp = pi, grp = -1;
    if (pairs) {
        int c = pairs[pi];
        sp = c >> FA_GBITS;
        grp = c & ((1 << FA_GBITS) - 1);
        scale = group_scale(headDim, temp[grp]);
    }
    int G = heads / kvHeads, nd = headDim / WARP;
    int qDim = heads * headDim, kvDim = kvHeads * headDim;
    float qv[FA_MAXG][FA_MAXD], acc[FA_MAXG][FA_MAXD], m[FA_MAXG], l[FA_MAXG];
#pragma unroll
    for (int g = 0; g < FA_MAXG; g++) {
        m[g] = -CUDART_INF_F;
        l[g] = 0.0f;
#pragma unroll
        for (int i = 0; i < FA_MAXD; i++) {
            acc[g][i] = 0.0f;
            qv[g][i] = (g < G && i < nd) ? q[(long long)r * qDim + (kvh * G + g) * headDim + i * WARP + lane] : 0.0f;
        }
    }
    int qp = qPos[r];
    int j1 = min(nKeys, (sp + 1) * FA_SPLIT);
    for (int j = sp * FA_SPLIT; j < j1; j++) {
        if (keyPos[j] > qp) continue;            // the same j for every lane
        if (grp >= 0 && groupOf[j] != grp) continue;  // another group's key
        const float* k = keys + (long long)j * kvDim + kvh * headDim;
        const float* v = vals + (long long)j * kvDim + kvh * headDim;
        float kk[FA_MAXD], vv[FA_MAXD];
#pragma unroll
        for (int i = 0; i < FA_MAXD; i++) {
            kk[i] = i < nd ? k[i * WARP + lane] : 0.0f;
            vv[i] = i < nd ? v[i * WARP + lane] : 0.0f;
        }
#pragma unroll
        for (int g = 0; g < FA_MAXG; g++) {
            if (g >= G) break;
            float a = 0.0f;
#pragma unroll
            for (int i = 0; i < FA_MAXD; i++) a = __fadd_rn(a, __fmul_rn(qv[g][i], kk[i]));
            float sc = __fmul_rn(warp_sum(a), scale);
            float mn = fmaxf(m[g], sc);
            float c = expf(__fsub_rn(m[g], mn)), p = expf(__fsub_rn(sc, mn));
            l[g] = __fadd_rn(__fmul_rn(l[g], c), p);
#pragma unroll
            for (int i = 0; i < FA_MAXD; i++) acc[g][i] = __fadd_rn(__fmul_rn(acc[g][i], c), __fmul_rn(p, vv[i]));
            m[g] = mn;
        }
    }
#pragma unroll
    for (int g = 0; g < FA_MAXG; g++) {
        if (g >= G) break;
        float* o = part + (((long long)r * heads + kvh * G + g) * nPart + pi) * (headDim + 2);
#pragma unroll
        for (int i = 0; i < FA_MAXD; i++)
            if (i < nd) o[i * WARP + lane] = acc[g][i];
        if (lane == 0) {
            o[headDim] = m[g];
            o[headDim + 1] = l[g];
        }
    }
}

// attend_combine merges attend_split's (or attend_tile's) partial results
// without groups: thread (r, h, d) sets out[r][h*headDim + d] =
// sum_s w_s acc_s[d] / sum_s w_s l_s with w_s = exp(m_s - max_s m_s), the
// partials in index order; a head that sees no key gets zeros.
// Launch: ⌈nQ·heads·headDim/256⌉ blocks of 256 threads.
extern "C" __global__ void attend_combine(float* out, const float* part, int nQ, int heads, int headDim, int nSplit) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)nQ * heads * headDim) return;
    int d = (int)(idx % headDim);
    long long rh = idx / headDim;  // r*heads + h
    const float* p = part + rh * nSplit * (headDim + 2);
    float mx = -CUDART_INF_F;
    for (int s = 0; s < nSplit; s++) mx = fmaxf(mx, p[s * (headDim + 2) + headDim]);
    if (mx == -CUDART_INF_F) {
        out[idx] = 0.0f;
        return;
    }
    float num = 0.0f, den = 0.0f;
    for (int s = 0; s < nSplit; s++) {
        const float* ps = p + s * (headDim + 2);
        if (ps[headDim] == -CUDART_INF_F) continue;
        float w = expf(__fsub_rn(ps[headDim], mx));
        num = __fadd_rn(num, __fmul_rn(w, ps[d]));
        den = __fadd_rn(den, __fmul_rn(w, ps[headDim + 1]));
    }
    out[idx] = __fdiv_rn(num, den);
}

// attend_combine_groups merges attend_split's partials with APE key groups
// (nGroups ≤ ATT_MAXG; pairs as in attend_split). Thread (r, h, d): first
// each group g over its partials, as attend_combine does: M_g = max m_s,
// N_g = sum_s w_s acc_s[d], L_g = sum_s w_s l_s with w_s = e^(m_s − M_g)
// (partials that saw no key skipped). Then, as kernels' AttnState.write:
// one group gives N_0/L_0; otherwise LSE_g = M_g + ln L_g (double),
// z_g = lse[g]·LSE_g, w = softmax_g(z) over the groups that saw a key, and
// out = sum_g float32(w_g/L_g)·N_g in group order. A group all of whose keys
// are masked for the row contributes nothing; a head that sees no key gets
// zeros.
// Launch: ⌈nQ·heads·headDim/256⌉ blocks of 256 threads.
extern "C" __global__ void attend_combine_groups(float* out, const float* part, const int* pairs, const float* lse,
                                                 int nQ, int heads, int headDim, int nPart, int nGroups) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)nQ * heads * headDim) return;
    int d = (int)(idx % headDim);
    long long rh = idx / headDim;  // r*heads + h
    const float* p = part + rh * nPart * (headDim + 2);
    const int gmask = (1 << FA_GBITS) - 1;
    float mx[ATT_MAXG], num[ATT_MAXG], den[ATT_MAXG];
    for (int g = 0; g < ATT_MAXG; g++) {
        mx[g] = -CUDART_INF_F;
        num[g] = 0.0f;
        den[g] = 0.0f;
    }
    for (int s = 0; s < nPart; s++) {
        int g = pairs[s] & gmask;
        mx[g] = fmaxf(mx[g], p[s * (headDim + 2) + headDim]);
    }
    for (int s = 0; s < nPart; s++) {
        const float* ps = p + s * (headDim + 2);
        if (ps[headDim] == -CUDART_INF_F) continue;
        int g = pairs[s] & gmask;
        float w = expf(__fsub_rn(ps[headDim], mx[g]));
        num[g] = __fadd_rn(num[g], __fmul_rn(w, ps[d]));
        den[g] = __fadd_rn(den[g], __fmul_rn(w, ps[headDim + 1]));
    }
    if (nGroups == 1) {
        out[idx] = mx[0] == -CUDART_INF_F ? 0.0f : __fdiv_rn(num[0], den[0]);
        return;
    }
    double l[ATT_MAXG];  // > 0 exactly when the group saw a key (its top partial adds e^0·l ≥ 1)
    for (int g = 0; g < nGroups; g++) l[g] = (double)den[g];
    out[idx] = lse_merge(nGroups, mx, l, num, lse);
}

// ---------------------------------------------------------------------------
// Tiled attention for many query rows (prefill), without key groups: the
// partial states of attend_split, bitwise, computed with each key and value
// read once per block instead of once per query row. Attend takes it for
// nQ ≥ FT_MIN_ROWS (Go: ftMinRows), headDim 32 or 64 and G = heads/kvHeads
// ≤ FA_MAXG; attend_combine then merges the partials as usual, so whether a
// call takes attend_tile or attend_split never changes a bit of the result.
//
// Block (x, y): KV head kvh = y / nSplit, split sp = y % nSplit, query rows
// [x·R, (x+1)·R) with R = FT_THREADS / G; thread t owns row x·R + t/G, head
// kvh·G + t%G (threads R·G .. FT_THREADS−1 and rows ≥ nQ only help load).
// The split's keys are taken in tiles of FT_TILE: the block stages the
// tile's positions, keys and values (FT_TILE × headDim each, 16 KiB for
// headDim 64; float4 arrays, read back as float4 broadcasts) in shared
// memory, then every thread runs attend_split's
// online softmax over the tile's keys in index order for its (row, head),
// skipping the keys it must not see. Its score is attend_split's: lane
// partials a_l = sum_i q[32i+l]·k[32i+l] (from 0.0f) added in warp_sum's
// butterfly order (for o = 16, 8, .., 1: a_l += a_{l+o} for l < o; the
// butterfly leaves every lane with this value since float addition is
// commutative), times the scale; c, p, l and acc as there. So the state
// written to part for (row, head, split) is bitwise attend_split's.
//
// A tile no row of the block can see (min key position > max query
// position) is skipped without loading it: every thread would have skipped
// each of its keys, so the states are the same. The tiles and their order
// depend on nKeys alone, so a row's result does not depend on the rows that
// share its block.
// Launch: grid (⌈nQ/R⌉, kvHeads·nSplit), FT_THREADS threads; static shared
// memory 2·FT_TILE·64 floats + FT_TILE + 1 ints (16.1 KiB). ptxas (sm_80)
// gives it 194 registers and no spills: 2 blocks per SM. Not yet timed on
// a GPU: FT_MIN_ROWS, FT_THREADS and FT_TILE are first guesses.
#define FT_THREADS 128
#define FT_TILE 32
#define FT_MAXND 2  // headDim ≤ 64
#define FT_MIN_ROWS 64

template <int ND>
__device__ void attend_tile_nd(float* part, const float* q, const float* keys, const float* vals,
                               const int* keyPos, const int* qPos, int nQ, int nKeys, int heads, int kvHeads,
                               float scale, int nSplit, float4* sk4, float4* sv4, int* skp, int* smaxq) {
    const int D = ND * WARP;
    int t = threadIdx.x;
    int G = heads / kvHeads, R = FT_THREADS / G;
    int kvh = blockIdx.y / nSplit, sp = blockIdx.y % nSplit;
    int rr = t / G, g = t % G;
    int r = blockIdx.x * R + rr;
    bool active = rr < R && r < nQ;
    int qDim = heads * D, kvDim = kvHeads * D;
    int h = kvh * G + g;

    float qv[D], acc[D];
    float m = -CUDART_INF_F, l = 0.0f;
    int qp = 0;
#pragma unroll
    for (int i = 0; i < D; i++) {
        qv[i] = active ? q[(long long)r * qDim + h * D + i] : 0.0f;
        acc[i] = 0.0f;
    }
    if (active) qp = qPos[r];
    if (t == 0) {
        int mq = -2147483647 - 1;
        for (int i = 0; i < R && blockIdx.x * R + i < nQ; i++) mq = max(mq, qPos[blockIdx.x * R + i]);
        *smaxq = mq;
    }
    __syncthreads();
    int maxq = *smaxq;

    int j1 = min(nKeys, (sp + 1) * FA_SPLIT);
    for (int j0 = sp * FA_SPLIT; j0 < j1; j0 += FT_TILE) {
        int n = min(FT_TILE, j1 - j0);
        __syncthreads();  // the previous tile is no longer read
        if (t < FT_TILE) skp[t] = t < n ? keyPos[j0 + t] : 2147483647;
        __syncthreads();
        int mink = skp[0];
        for (int k = 1; k < FT_TILE; k++) mink = min(mink, skp[k]);
        if (mink > maxq) continue;  // the same decision in every thread
        float* sk = reinterpret_cast<float*>(sk4);
        float* sv = reinterpret_cast<float*>(sv4);
        for (int e = t; e < n * D; e += FT_THREADS) {
            int jj = e / D, i = e % D;
            long long src = (long long)(j0 + jj) * kvDim + kvh * D + i;
            sk[e] = keys[src];
            sv[e] = vals[src];
        }
        __syncthreads();
        if (!active) continue;
        for (int jj = 0; jj < n; jj++) {
            if (skp[jj] > qp) continue;
            // Key and value rows are read as float4 (shared-memory broadcasts:
            // every thread reads the same address).
            const float4* k = sk4 + jj * (D / 4);
            const float4* v = sv4 + jj * (D / 4);
            float a[WARP];  // a[ln]: lane ln's partial, over i in order from 0.0f
#pragma unroll
            for (int ln = 0; ln < WARP; ln++) a[ln] = 0.0f;
#pragma unroll
            for (int i = 0; i < ND; i++)
#pragma unroll
                for (int l4 = 0; l4 < WARP / 4; l4++) {
                    float4 kv = k[i * (WARP / 4) + l4];
                    const float* qq = qv + i * WARP + 4 * l4;
                    a[4 * l4 + 0] = __fadd_rn(a[4 * l4 + 0], __fmul_rn(qq[0], kv.x));
                    a[4 * l4 + 1] = __fadd_rn(a[4 * l4 + 1], __fmul_rn(qq[1], kv.y));
                    a[4 * l4 + 2] = __fadd_rn(a[4 * l4 + 2], __fmul_rn(qq[2], kv.z));
                    a[4 * l4 + 3] = __fadd_rn(a[4 * l4 + 3], __fmul_rn(qq[3], kv.w));
                }
            // warp_sum's butterfly, each level's loop unrolled (constant bounds).
#pragma unroll
            for (int ln = 0; ln < 16; ln++) a[ln] = __fadd_rn(a[ln], a[ln + 16]);
#pragma unroll
            for (int ln = 0; ln < 8; ln++) a[ln] = __fadd_rn(a[ln], a[ln + 8]);
#pragma unroll
            for (int ln = 0; ln < 4; ln++) a[ln] = __fadd_rn(a[ln], a[ln + 4]);
            a[0] = __fadd_rn(a[0], a[2]);
            a[1] = __fadd_rn(a[1], a[3]);
            a[0] = __fadd_rn(a[0], a[1]);
            float sc = __fmul_rn(a[0], scale);
            float mn = fmaxf(m, sc);
            float c = expf(__fsub_rn(m, mn)), p = expf(__fsub_rn(sc, mn));
            l = __fadd_rn(__fmul_rn(l, c), p);
#pragma unroll
            for (int i4 = 0; i4 < D / 4; i4++) {
                float4 vv = v[i4];
                acc[4 * i4 + 0] = __fadd_rn(__fmul_rn(acc[4 * i4 + 0], c), __fmul_rn(p, vv.x));
                acc[4 * i4 + 1] = __fadd_rn(__fmul_rn(acc[4 * i4 + 1], c), __fmul_rn(p, vv.y));
                acc[4 * i4 + 2] = __fadd_rn(__fmul_rn(acc[4 * i4 + 2], c), __fmul_rn(p, vv.z));
                acc[4 * i4 + 3] = __fadd_rn(__fmul_rn(acc[4 * i4 + 3], c), __fmul_rn(p, vv.w));
            }
            m = mn;
        }
    }
    if (!active) return;
    float* o = part + (((long long)r * heads + h) * nSplit + sp) * (D + 2);
#pragma unroll
    for (int i = 0; i < D; i++) o[i] = acc[i];
    o[D] = m;
    o[D + 1] = l;
}

extern "C" __global__ void attend_tile(float* part, const float* q, const float* keys, const float* vals,
                                       const int* keyPos, const int* qPos, int nQ, int nKeys, int heads,
                                       int kvHeads, int headDim, float scale, int nSplit) {
    __shared__ float4 sk[FT_TILE * FT_MAXND * WARP / 4];
    __shared__ float4 sv[FT_TILE * FT_MAXND * WARP / 4];
    __shared__ int skp[FT_TILE];
    __shared__ int smaxq;
    if (headDim == WARP)
        attend_tile_nd<1>(part, q, keys, vals, keyPos, qPos, nQ, nKeys, heads, kvHeads, scale, nSplit, sk, sv, skp, &smaxq);
    else
        attend_tile_nd<2>(part, q, keys, vals, keyPos, qPos, nQ, nKeys, heads, kvHeads, scale, nSplit, sk, sv, skp, &smaxq);
}

// ---------------------------------------------------------------------------
// CacheBlend KV scatter: dst row rows[i] = src row i, width floats per row;
// blocks with blockIdx.y = 1 do the same from src2 into dst2 (keys and
// values in one launch).
extern "C" __global__ void scatter_rows(float* dst, const float* src, float* dst2, const float* src2, const int* rows,
                                        int n, int width) {
    if (blockIdx.y == 1) {
        dst = dst2;
        src = src2;
    }
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)n * width) return;
    int i = (int)(idx / width), c = (int)(idx % width);
    dst[(long long)rows[i] * width + c] = src[idx];
}

// SwiGLU (kernels.SwiGLU): dst_i = gate_i/(1+exp(-gate_i))*up_i.
extern "C" __global__ void swiglu(float* dst, const float* gate, const float* up, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float g = gate[i];
    dst[i] = __fmul_rn(__fdiv_rn(g, __fadd_rn(1.0f, expf(-g))), up[i]);
}

// Add (kernels.Add): dst_i += a_i.
extern "C" __global__ void add_f32(float* dst, const float* a, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    dst[i] = __fadd_rn(dst[i], a[i]);
}
