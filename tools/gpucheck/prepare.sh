#!/bin/sh
# Prepares the GPU checks of docs/CUDA.md for a GPU host that has the NVIDIA
# driver (and python3 with torch and transformers) but no Go: builds the
# -tags cuda binaries here, gzips them and splits the default GGUF so that
# each of the first two runs carries at most ~61 MB (the device tool's
# limit is 64 MiB per run, the working tree included).
#
#   tools/gpucheck/prepare.sh          # from the repository root
#   then, on the GPU host, from the repository root, in three runs on the same machine:
#   run 1 (carry .gpucheck/a):  sh tools/gpucheck/run_a.sh   # parity tests, stash model part 0
#   run 2 (carry .gpucheck/b):  sh tools/gpucheck/run_b.sh   # SmolLM2 parity, bench engine (cuda, cuda+blas) vs HF
#   run 3 (no carry):           sh tools/gpucheck/run_c.sh   # eval blend (hot and device-tier TTFT), eval rapid
#
# Needs cuda.h (Debian non-free's nvidia-cuda-dev) and libcuda (libcuda1)
# here, pip to fetch the gguf wheel for transformers' GGUF loader, and the
# default models (make models). .gpucheck/ is ignored by git.
set -eu
out=.gpucheck
models=${BLENDRAG_MODELS:-$HOME/.cache/blendrag/models}
gguf=$models/SmolLM2-135M-Instruct.Q4_1.gguf
rm -rf "$out" && mkdir -p "$out/a" "$out/b"
export CGO_ENABLED=1
go build -tags cuda -ldflags="-s -w" -o "$out/a/blendrag" ./cmd/blendrag
go test -tags cuda -c -o "$out/a/cuda.test" ./kernels/cuda/
go test -tags cuda -c -o "$out/a/model_cuda.test" ./model/
go test -tags cuda -c -o "$out/a/blend_cuda.test" ./blend/
gzip -9 "$out"/a/*
head -c 38000000 "$gguf" > "$out/a/model.part0"
tail -c +38000001 "$gguf" > "$out/b/model.part1"
sha256sum "$gguf" | cut -c1-64 > "$out/b/model.sha256"
python3 -c "import json; d = json.load(open('../shared/eval/musique_dev.json')); json.dump(d[:12], open('$out/b/musique12.json', 'w'))"
python3 -m pip download -q --no-deps --only-binary=:all: -d "$out/b" gguf
du -sh "$out/a" "$out/b"
tree=$(git ls-files -z | xargs -0 du -cb | tail -n1 | cut -f1)
for d in a b; do
	total=$(($(du -sb "$out/$d" | cut -f1) + tree))
	[ "$total" -lt 67108864 ] || echo "prepare.sh: a run carrying $out/$d moves $total bytes with the working tree: over 64 MiB" >&2
done
