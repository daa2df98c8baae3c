// C interface of the CPU emulation of kernels.cu (emu.cc, build tag
// cudaemu), called from driver_emu.go.
#ifndef BLENDRAG_EMU_API_H
#define BLENDRAG_EMU_API_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

uint64_t emu_alloc(size_t n);  // 0 when the cap (emu_set_mem_limit) would be exceeded
void emu_free(uint64_t p);
void emu_set_mem_limit(size_t bytes);  // 0: no cap
size_t emu_mem_used(void);
void emu_copy_in(uint64_t dst, const void* src, size_t n);
void emu_copy_out(void* dst, uint64_t src, size_t n);
void emu_copy_dd(uint64_t dst, uint64_t src, size_t n);
// emu_launch runs kernel k (the order of kernelNames in device.go) over a
// gx×gy grid of blocks of bx threads with shared bytes of dynamic shared
// memory; args holds the parameters as 8-byte slots. It returns 0, or -1
// for an unknown kernel or a block size that is not a multiple of 32, -2
// for a deadlock (a barrier that some thread of a block never reaches).
int emu_launch(int k, int gx, int gy, int bx, int shared, const uint64_t* args);
// emu_sgemm stands in for the one cuBLAS call the backend makes
// (driver.sgemm): y[i*rows + o] = sum_k w[o*cols + k] * x[i*cols + k] for
// o < rows, i < n — W row-major (rows x cols), x and y row-major by batch
// row. Products are rounded, then summed in k order in float32.
void emu_sgemm(int rows, int cols, int n, uint64_t w, uint64_t x, uint64_t y);

#ifdef __cplusplus
}
#endif

#endif
