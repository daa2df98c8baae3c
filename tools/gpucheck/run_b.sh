#!/bin/sh
# GPU host, run 2 on the same machine as run 1 (see prepare.sh): join the
# model, then the SmolLM2 parity test, bench engine against HF transformers
# on the same GPU, and eval blend on the GPU. Results go to $OUT when set.
R=$(pwd)
O=${OUT:-/tmp/gpucheck-out}
mkdir -p "$O"
. /tmp/br/env.sh
export BLENDRAG_MODELS=/tmp/models
M=/tmp/models/SmolLM2-135M-Instruct.Q4_1.gguf
cat /tmp/br/model.part0 .gpucheck/b/model.part1 > "$M"
echo "$(cat .gpucheck/b/model.sha256)  $M" | sha256sum -c || exit 1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpucheck/b/*.whl && export PYTHONPATH=/tmp/site
cd "$R/model" && timeout 60 /tmp/br/model_cuda.test -test.v -test.run SmolLM2 > "$O/smollm2.log" 2>&1; echo "smollm2 rc=$?"
cd "$R"
timeout 150 /tmp/br/blendrag bench engine --device cuda --models /tmp/models --hf-python python3 \
	--lengths 128,512,2048,max --max-prompt 6144 --decode-tokens 32 --rounds 2 --json > "$O/engine.json" 2> "$O/engine.err"; echo "engine rc=$?"
grep -E "^(blendrag|hf)" "$O/engine.err"
timeout 120 /tmp/br/blendrag eval blend --device cuda --models /tmp/models --dataset .gpucheck/b/musique12.json \
	--limit 10 --modes full,reuse,cacheblend,ape --out "$O/evalblend.jsonl" --json > "$O/evalblend.json" 2> "$O/evalblend.err"; echo "eval rc=$?"
tail -3 "$O/evalblend.err"
grep -E "^(--- |ok|FAIL)|_test.go:[0-9]+" "$O/smollm2.log" | cut -c1-300
