// Package cuda is blendrag's GPU backend: device buffers, PTX kernels compiled
// from kernels.cu with nvcc (gen.sh; the PTX is committed and embedded) and
// loaded through gorgonia.org/cu, and cuBLAS opened at run time with dlopen
// (cublas_cu.go says why it is not linked).
//
// Everything but this file is built only with the cuda (or cudaemu) build tag and cgo
// (go build -tags cuda, CGO_ENABLED=1, with cuda.h, cublas_v2.h, libcuda
// and libcublas installed; see docs/CUDA.md). Without the tag the package is
// empty, so the default build never needs CUDA.
//
// Every kernel has a CPU twin in package kernels, and the parity tests (tag
// cuda) compare them: the matrix products, activation quantisation, RMSNorm,
// RoPE, Add and the KV scatter reproduce the CPU's float order and are
// compared bit for bit; attention, SwiGLU and the cuBLAS product agree within
// stated tolerances.
//
// gorgonia.org/cu initialises the driver in its package init and exits the
// process when that fails (no GPU, no kernel driver). This package
// interposes cuInit (cuinit.go) so that the failure is recorded instead and
// Open returns it as an error; a binary built with the cuda tag can then
// report it or fall back to the CPU. The libcuda.so.1 library itself must be
// installed for such a binary to start at all.
//
// With the cudaemu build tag instead of cuda, the same kernels.cu runs in a
// CPU emulation of the CUDA execution model (emu.cc; no GPU or CUDA packages
// needed), which the parity tests use to check the kernels' logic and the
// launches on machines without a GPU.
//
// Status: none of it has run on a GPU yet; the parity tests pass in the CPU
// emulation (see docs/CUDA.md).
package cuda
