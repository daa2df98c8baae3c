#!/bin/sh
# GPU host, run 2 on the same machine as run 1 (see prepare.sh): join the
# model and stash it (and the dataset) for run 3, then the SmolLM2 parity
# test and bench engine against HF transformers on the same GPU, for the
# exact kernels (cuda) and cuBLAS prefill (cuda+blas), each with a device
# profile per length (untimed extra runs). Results go to $OUT.
R=$(pwd)
O=${OUT:-/tmp/gpucheck-out}
mkdir -p "$O"
. /tmp/br/env.sh
export BLENDRAG_MODELS=/tmp/models
M=/tmp/models/SmolLM2-135M-Instruct.Q4_1.gguf
cat /tmp/br/model.part0 .gpucheck/b/model.part1 > "$M"
echo "$(cat .gpucheck/b/model.sha256)  $M" | sha256sum -c || exit 1
cp .gpucheck/b/musique12.json /tmp/br/
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpucheck/b/*.whl
echo "export PYTHONPATH=/tmp/site" >> /tmp/br/env.sh
export PYTHONPATH=/tmp/site
cd "$R/model" && timeout 60 /tmp/br/model_cuda.test -test.v -test.run SmolLM2 > "$O/smollm2.log" 2>&1; echo "smollm2 rc=$?"
cd "$R"
for dev in cuda+blas cuda; do
	hf="--hf-python python3"
	[ "$dev" = cuda ] && hf=""
	timeout 170 /tmp/br/blendrag bench engine --device $dev --models /tmp/models $hf \
		--lengths 128,512,2048,max --max-prompt 6144 --decode-tokens 32 --rounds 2 --profile-device --json > "$O/engine-$dev.json" 2> "$O/engine-$dev.err"
	echo "engine $dev rc=$?"
	grep -E "^(blendrag|hf)" "$O/engine-$dev.err"
	grep -A4 -E "profile, (2048|6144) tokens" "$O/engine-$dev.err"
done
grep -E "^(--- |ok|FAIL)|_test.go:[0-9]+" "$O/smollm2.log" | cut -c1-300
