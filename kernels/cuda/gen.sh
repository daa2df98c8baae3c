#!/bin/sh
# Regenerates kernels.ptx from kernels.cu. Run from this directory after
# editing kernels.cu, then commit both files.
#
# -arch=compute_80: PTX for the virtual architecture sm_80 (A100); the driver
#   JIT-compiles it for the GPU it runs on (sm_80, sm_86, sm_89, sm_90 …).
# --fmad=false: no fused multiply-adds, so float32 products are rounded before
#   they are added, as in package kernels (the bitwise parity relies on it).
# Precise division and square root are nvcc's defaults (no --use_fast_math).
#
# Made with nvcc from Debian 12's nvidia-cuda-toolkit 11.8.89.
set -eu
cd "$(dirname "$0")"
nvcc -ptx -arch=compute_80 --fmad=false -O3 -o kernels.ptx kernels.cu
