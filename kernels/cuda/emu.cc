//go:build cudaemu

// A CPU emulation of the CUDA execution model, just enough to run
// kernels.cu unchanged for tests on machines without a GPU (build tag
// cudaemu). Each launch runs the grid's blocks one after another; a block's
// threads are cooperative fibers on the calling thread (a few instructions
// of assembly switch stacks on x86-64; elsewhere ucontext, whose every
// switch is a system call for the signal mask), switched
// only at barriers: __syncthreads waits for the whole block, __syncwarp and
// the shuffles for the 32 threads of a warp; __shared__ variables are
// statics (one block runs at a time). A barrier some thread never reaches
// is reported as a failed launch instead of hanging. Float intrinsics map to
// plain float arithmetic (with fp-contract off: no fused multiply-add) and expf, sincos, exp and log to the C library, which may
// round differently from CUDA's in the last bit. It checks the kernels'
// logic and the Go side's launches, not the GPU.

#define BLENDRAG_CUDA_EMU 1

// No fused multiply-adds (cgo does not accept -ffp-contract=off as a flag).
#pragma GCC optimize("fp-contract=off")

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>
#include <ucontext.h>

#include "emu_api.h"

#if defined(__x86_64__) && !defined(BLENDRAG_EMU_UCONTEXT)
#define EMU_ASM_SWITCH 1
// blendrag_emu_switch(save, to) saves the callee-saved registers, the
// SSE and x87 control words and the stack pointer (into *save), and
// resumes the context whose stack pointer is to, as saved by a previous
// switch or laid out by start_stack.
extern "C" void blendrag_emu_switch(void** save, void* to);
asm(R"(
    .text
    .p2align 4
    .globl blendrag_emu_switch
    .hidden blendrag_emu_switch
    .type blendrag_emu_switch, @function
blendrag_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size blendrag_emu_switch, .-blendrag_emu_switch
)");
#else
#define EMU_ASM_SWITCH 0
#endif

namespace {

struct Dim {
    unsigned x, y, z;
};

// A barrier for cooperative fibers: the last of expected arrivals opens a
// new generation; the others wait until the generation changes.
struct Barrier {
    int expected = 0, count = 0;
    unsigned gen = 0;
};

// A fiber is one CUDA thread of the running block.
struct Fiber {
#if EMU_ASM_SWITCH
    void* sp = nullptr;  // its saved stack pointer while switched out
#else
    ucontext_t ctx;
#endif
    char* stack = nullptr;
    bool done = false;
    Barrier* waiting = nullptr;
    unsigned waitGen = 0;
};

// The state of the running launch (launches are serialised by the Go side).
struct Launch {
    int kernel;
    const uint64_t* args;
#if EMU_ASM_SWITCH
    void* sched = nullptr;  // the scheduler's saved stack pointer
#else
    ucontext_t sched;
#endif
    std::vector<Fiber> fibers;
    Barrier block;
    std::vector<Barrier> warps;
    std::vector<uint64_t> xchg;   // shuffle slots, one per thread
    std::vector<uint64_t> shared; // dynamic shared memory
    int running = 0;              // index of the running fiber
};

Launch* cur;
std::mutex launchMu;                         // one launch at a time
std::vector<std::unique_ptr<char[]>> stacks; // fiber stacks, reused
constexpr size_t stackBytes = 128 << 10;
Dim threadIdx, blockIdx, blockDim, gridDim;

// wait arrives at b and yields until every expected fiber has arrived.
void wait(Barrier& b) {
    if (++b.count == b.expected) {
        b.count = 0;
        b.gen++;
        return;
    }
    Fiber& f = cur->fibers[cur->running];
    f.waiting = &b;
    f.waitGen = b.gen;
#if EMU_ASM_SWITCH
    blendrag_emu_switch(&f.sp, cur->sched);
#else
    swapcontext(&f.ctx, &cur->sched);
#endif
}

void __syncthreads() { wait(cur->block); }
void __syncwarp(unsigned = 0xffffffffu) { wait(cur->warps[threadIdx.x / 32]); }

template <class T>
T shfl(T v, int src) {
    unsigned w = threadIdx.x / 32;
    std::memcpy(&cur->xchg[threadIdx.x], &v, sizeof v);
    wait(cur->warps[w]);
    T r;
    std::memcpy(&r, &cur->xchg[w * 32 + (src & 31)], sizeof r);
    wait(cur->warps[w]);
    return r;
}

template <class T>
T __shfl_sync(unsigned, T v, int src) { return shfl(v, src); }
template <class T>
T __shfl_xor_sync(unsigned, T v, int mask) { return shfl(v, int(threadIdx.x % 32) ^ mask); }

void* dynamic_shared() { return cur->shared.data(); }

float __fmul_rn(float a, float b) { return a * b; }
float __fadd_rn(float a, float b) { return a + b; }
float __fsub_rn(float a, float b) { return a - b; }
float __fdiv_rn(float a, float b) { return a / b; }

struct __half {
    unsigned short x;
};

__half __ushort_as_half(unsigned short u) { return __half{u}; }
unsigned short __half_as_ushort(__half h) { return h.x; }

float __half2float(__half h) {
    unsigned sign = (h.x & 0x8000u) << 16, exp = (h.x >> 10) & 0x1f, man = h.x & 0x3ff;
    float f;
    if (exp == 0x1f) {
        unsigned b = sign | 0x7f800000u | (man << 13);
        std::memcpy(&f, &b, 4);
        return f;
    }
    if (exp == 0) {
        f = std::ldexp(float(man), -24);
        return sign ? -f : f;
    }
    unsigned b = sign | ((exp + 112) << 23) | (man << 13);
    std::memcpy(&f, &b, 4);
    return f;
}

// __float2half_rn rounds to nearest even, like kernels.F32ToF16.
__half __float2half_rn(float f) {
    unsigned b;
    std::memcpy(&b, &f, 4);
    unsigned short sign = (b >> 16) & 0x8000;
    int exp = (b >> 23) & 0xff;
    unsigned man = b & 0x7fffff;
    if (exp == 0xff) return __half{(unsigned short)(sign | (man ? 0x7e00 | (man >> 13) : 0x7c00))};
    int e = exp - 112;
    if (e >= 0x1f) return __half{(unsigned short)(sign | 0x7c00)};
    if (e <= 0) {
        if (e < -10) return __half{sign};
        unsigned m = man | 0x800000, shift = 14 - e;
        unsigned h = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1))) h++;
        return __half{(unsigned short)(sign | h)};
    }
    unsigned h = (unsigned)e << 10 | man >> 13, rem = man & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;
    return __half{(unsigned short)(sign | h)};
}

int min(int a, int b) { return a < b ? a : b; }
int max(int a, int b) { return a > b ? a : b; }

}  // namespace

#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __shared__ static
#define EXTERN_SHARED(type, name) type* name = static_cast<type*>(dynamic_shared())
#define CUDART_INF_F INFINITY
#define CUDART_INF ((double)INFINITY)

#include "kernels.cu"

namespace {

float f32arg(uint64_t v) {
    uint32_t u = (uint32_t)v;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

template <class T>
T ptr(uint64_t v) { return reinterpret_cast<T>(static_cast<uintptr_t>(v)); }

int i32(uint64_t v) { return (int)(int32_t)(uint32_t)v; }

// run calls kernel k for the current thread and block.
bool run(int k, const uint64_t* a) {
    switch (k) {
    case 0: quant_q8(ptr<const float*>(a[0]), ptr<unsigned char*>(a[1]), i32(a[2]), i32(a[3])); return true;
    case 1: mm_q4_1(ptr<const unsigned char*>(a[0]), ptr<const unsigned char*>(a[1]), ptr<float*>(a[2]), i32(a[3]), i32(a[4]), i32(a[5])); return true;
    case 2: mm_q8_0(ptr<const unsigned char*>(a[0]), ptr<const unsigned char*>(a[1]), ptr<float*>(a[2]), i32(a[3]), i32(a[4]), i32(a[5])); return true;
    case 3: mm_f32(ptr<const float*>(a[0]), ptr<const float*>(a[1]), ptr<float*>(a[2]), i32(a[3]), i32(a[4]), i32(a[5])); return true;
    case 4: mm_f16(ptr<const unsigned short*>(a[0]), ptr<const float*>(a[1]), ptr<float*>(a[2]), i32(a[3]), i32(a[4]), i32(a[5])); return true;
    case 5: rmsnorm(ptr<float*>(a[0]), ptr<float*>(a[1]), ptr<const float*>(a[2]), ptr<const float*>(a[3]), i32(a[4]), f32arg(a[5])); return true;
    case 6: rope(ptr<float*>(a[0]), ptr<float*>(a[1]), ptr<const int*>(a[2]), i32(a[3]), ptr<const double*>(a[4]), i32(a[5]), i32(a[6]), i32(a[7]), i32(a[8])); return true;
    case 7:
        attend(ptr<float*>(a[0]), ptr<const float*>(a[1]), ptr<const float*>(a[2]), ptr<const float*>(a[3]),
               ptr<const int*>(a[4]), ptr<const int*>(a[5]), ptr<const unsigned char*>(a[6]), ptr<const float*>(a[7]),
               ptr<const float*>(a[8]), i32(a[9]), i32(a[10]), i32(a[11]), i32(a[12]), i32(a[13]), ptr<float*>(a[14]));
        return true;
    case 8: scatter_rows(ptr<float*>(a[0]), ptr<const float*>(a[1]), ptr<float*>(a[2]), ptr<const float*>(a[3]), ptr<const int*>(a[4]), i32(a[5]), i32(a[6])); return true;
    case 9: swiglu(ptr<float*>(a[0]), ptr<const float*>(a[1]), ptr<const float*>(a[2]), (long long)a[3]); return true;
    case 10: add_f32(ptr<float*>(a[0]), ptr<const float*>(a[1]), (long long)a[2]); return true;
    case 11:
        attend_split(ptr<float*>(a[0]), ptr<const float*>(a[1]), ptr<const float*>(a[2]), ptr<const float*>(a[3]),
                     ptr<const int*>(a[4]), ptr<const int*>(a[5]), ptr<const unsigned char*>(a[6]),
                     ptr<const float*>(a[7]), ptr<const int*>(a[8]), i32(a[9]), i32(a[10]), i32(a[11]), i32(a[12]),
                     i32(a[13]), f32arg(a[14]), i32(a[15]));
        return true;
    case 12:
        attend_combine(ptr<float*>(a[0]), ptr<const float*>(a[1]), i32(a[2]), i32(a[3]), i32(a[4]), i32(a[5]));
        return true;
    case 13:
        attend_combine_groups(ptr<float*>(a[0]), ptr<const float*>(a[1]), ptr<const int*>(a[2]), ptr<const float*>(a[3]),
                              i32(a[4]), i32(a[5]), i32(a[6]), i32(a[7]), i32(a[8]));
        return true;
    case 14:
        attend_tile(ptr<float*>(a[0]), ptr<const float*>(a[1]), ptr<const float*>(a[2]), ptr<const float*>(a[3]),
                    ptr<const int*>(a[4]), ptr<const int*>(a[5]), i32(a[6]), i32(a[7]), i32(a[8]), i32(a[9]),
                    i32(a[10]), f32arg(a[11]), i32(a[12]));
        return true;
    }
    return false;
}

}  // namespace

extern "C" {

// Emulated device memory in use, per allocation, and its cap (0: none).
std::mutex memMu;
std::unordered_map<uint64_t, size_t> memSizes;
size_t memUsed, memLimit;

uint64_t emu_alloc(size_t n) {
    size_t bytes = (n + 255) / 256 * 256;
    std::lock_guard<std::mutex> lock(memMu);
    if (memLimit != 0 && memUsed + bytes > memLimit) return 0;
    void* p = std::aligned_alloc(256, bytes);
    if (p == nullptr) return 0;
    uint64_t u = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(p));
    memSizes[u] = bytes;
    memUsed += bytes;
    return u;
}

void emu_free(uint64_t p) {
    std::lock_guard<std::mutex> lock(memMu);
    auto it = memSizes.find(p);
    if (it != memSizes.end()) {
        memUsed -= it->second;
        memSizes.erase(it);
    }
    std::free(ptr<void*>(p));
}

void emu_set_mem_limit(size_t bytes) {
    std::lock_guard<std::mutex> lock(memMu);
    memLimit = bytes;
}

size_t emu_mem_used() {
    std::lock_guard<std::mutex> lock(memMu);
    return memUsed;
}

void emu_copy_in(uint64_t dst, const void* src, size_t n) { std::memcpy(ptr<void*>(dst), src, n); }

void emu_copy_out(void* dst, uint64_t src, size_t n) { std::memcpy(dst, ptr<const void*>(src), n); }

void emu_copy_dd(uint64_t dst, uint64_t src, size_t n) { std::memmove(ptr<void*>(dst), ptr<const void*>(src), n); }

void emu_sgemm(int rows, int cols, int n, uint64_t w, uint64_t x, uint64_t y) {
    const float* W = ptr<const float*>(w);
    const float* X = ptr<const float*>(x);
    float* Y = ptr<float*>(y);
    for (int i = 0; i < n; i++)
        for (int o = 0; o < rows; o++) {
            float acc = 0.0f;
            for (int k = 0; k < cols; k++) {
                volatile float p = W[(size_t)o * cols + k] * X[(size_t)i * cols + k];
                acc += p;
            }
            Y[(size_t)i * rows + o] = acc;
        }
}

void fiber_main();

#if EMU_ASM_SWITCH
// fiber_entry is where a fiber's first switch lands: it runs the kernel
// and switches back to the scheduler for good.
extern "C" void fiber_entry() {
    fiber_main();
    Fiber& f = cur->fibers[cur->running];
    blendrag_emu_switch(&f.sp, cur->sched);
    std::abort();  // a finished fiber is never resumed
}

// start_stack lays out a fresh fiber stack as blendrag_emu_switch leaves a
// switched-out one, so that switching to it enters fiber_entry with the
// stack aligned as a call would (rsp ≡ 8 mod 16), and returns its stack
// pointer: from the top, a zero return address for fiber_entry, fiber_entry
// as the return address of the switch, six zeroed callee-saved registers
// and the current SSE and x87 control words.
void* start_stack(char* stack) {
    uintptr_t top = ((uintptr_t)stack + stackBytes) & ~(uintptr_t)15;
    uint64_t* sp = (uint64_t*)top;
    *--sp = 0;
    *--sp = (uint64_t)(uintptr_t)fiber_entry;
    for (int i = 0; i < 6; i++) *--sp = 0;
    --sp;
    uint32_t mxcsr;
    uint16_t fpucw;
    asm volatile("stmxcsr %0" : "=m"(mxcsr));
    asm volatile("fnstcw %0" : "=m"(fpucw));
    std::memcpy((char*)sp, &mxcsr, 4);
    std::memcpy((char*)sp + 4, &fpucw, 2);
    return sp;
}
#endif

int emu_launch(int k, int gx, int gy, int bx, int shared, const uint64_t* args) {
    if (k < 0 || k > 14 || bx <= 0 || bx % 32 != 0 || gx <= 0 || gy <= 0 || shared < 0) return -1;
    std::lock_guard<std::mutex> lock(launchMu);
    while (stacks.size() < (size_t)bx) stacks.emplace_back(new char[stackBytes]);
    Launch l;
    l.kernel = k;
    l.args = args;
    l.fibers.resize(bx);
    for (int t = 0; t < bx; t++) l.fibers[t].stack = stacks[t].get();
    l.block.expected = bx;
    l.warps.resize(bx / 32);
    for (auto& w : l.warps) w.expected = 32;
    l.xchg.resize(bx);
    l.shared.resize((shared + 7) / 8 + 1);
    cur = &l;
    gridDim = Dim{(unsigned)gx, (unsigned)gy, 1};
    blockDim = Dim{(unsigned)bx, 1, 1};
    int rc = 0;
    for (int y = 0; y < gy && rc == 0; y++) {
        for (int x = 0; x < gx && rc == 0; x++) {
            blockIdx = Dim{(unsigned)x, (unsigned)y, 0};
            for (auto& f : l.fibers) {
#if EMU_ASM_SWITCH
                f.sp = start_stack(f.stack);
#else
                getcontext(&f.ctx);
                f.ctx.uc_stack.ss_sp = f.stack;
                f.ctx.uc_stack.ss_size = stackBytes;
                f.ctx.uc_link = &l.sched;
                makecontext(&f.ctx, fiber_main, 0);
#endif
                f.done = false;
                f.waiting = nullptr;
            }
            // Round-robin over runnable fibers until the block is done; a
            // pass that runs nothing while fibers remain is a deadlock
            // (a barrier some thread never reaches).
            for (;;) {
                bool ran = false, left = false;
                for (int t = 0; t < bx; t++) {
                    Fiber& f = l.fibers[t];
                    if (f.done) continue;
                    left = true;
                    if (f.waiting && f.waiting->gen == f.waitGen) continue;
                    f.waiting = nullptr;
                    l.running = t;
                    threadIdx = Dim{(unsigned)t, 0, 0};
#if EMU_ASM_SWITCH
                    blendrag_emu_switch(&l.sched, f.sp);
#else
                    swapcontext(&l.sched, &f.ctx);
#endif
                    ran = true;
                }
                if (!left) break;
                if (!ran) {
                    rc = -2;
                    break;
                }
            }
        }
    }
    cur = nullptr;
    return rc;
}

// fiber_main runs the kernel as thread threadIdx of block blockIdx.
void fiber_main() {
    run(cur->kernel, cur->args);
    cur->fibers[cur->running].done = true;
}

}  // extern "C"
