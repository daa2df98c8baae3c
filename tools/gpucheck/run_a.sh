#!/bin/sh
# GPU host, run 1 (see prepare.sh): unpack the binaries, stash the first
# model part in /tmp/br for run 2, run the kernel, model and blend parity
# tests on generated models, then the kernel benchmarks (attention kernels,
# exact vs cuBLAS products, the cost of a launch). Logs go to $OUT when set.
R=$(pwd)
O=${OUT:-/tmp/gpucheck-out}
mkdir -p /tmp/br /tmp/models "$O"
for f in .gpucheck/a/*.gz; do gunzip -c "$f" > "/tmp/br/$(basename "$f" .gz)"; done
chmod +x /tmp/br/*
cp .gpucheck/a/model.part0 /tmp/br/model.part0
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
CUB=$(find /usr/local /opt /usr/lib -name 'libcublas.so.1[0-9]*' 2>/dev/null | grep -v Lt | sort | tail -1)
echo "export BLENDRAG_CUBLAS=$CUB" > /tmp/br/env.sh
export BLENDRAG_CUBLAS="$CUB" BLENDRAG_MODELS=/tmp/nomodels
cd "$R/kernels/cuda" && timeout 90 /tmp/br/cuda.test -test.v > "$O/kernels.log" 2>&1; echo "kernels rc=$?"
cd "$R/model" && timeout 100 /tmp/br/model_cuda.test -test.v -test.run CUDA > "$O/model.log" 2>&1; echo "model rc=$?"
cd "$R/blend" && timeout 100 /tmp/br/blend_cuda.test -test.v -test.run CUDA > "$O/blend.log" 2>&1; echo "blend rc=$?"
cd "$R/kernels/cuda" && timeout 90 /tmp/br/cuda.test -test.run '^$' -test.bench . -test.benchtime 1x > "$O/kbench.log" 2>&1; echo "kernel benchmarks rc=$?"
grep -h -E "^(--- |ok|FAIL|panic)|_test.go:[0-9]+" "$O/kernels.log" "$O/model.log" "$O/blend.log" | cut -c1-300 | tail -100
grep -h "^{" "$O/kbench.log"
