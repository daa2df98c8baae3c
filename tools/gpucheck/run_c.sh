#!/bin/sh
# GPU host, run 3 on the same machine as runs 1 and 2 (see prepare.sh):
# eval blend on the GPU (TTFT with the chunks' KV in host RAM and in the
# GPU's tier, fidelity; a device profile of the first question's
# prefills) and eval rapid at the longest context. Results go to $OUT.
O=${OUT:-/tmp/gpucheck-out}
mkdir -p "$O"
. /tmp/br/env.sh
export BLENDRAG_MODELS=/tmp/models
timeout 200 /tmp/br/blendrag eval blend --device cuda --models /tmp/models --dataset /tmp/br/musique12.json \
	--limit 10 --modes full,reuse,cacheblend,ape --profile-device --out "$O/evalblend.jsonl" --json > "$O/evalblend.json" 2> "$O/evalblend.err"
echo "eval blend rc=$?"
grep -A3 "^profile" "$O/evalblend.err" | head -60
tail -8 "$O/evalblend.err"
timeout 200 /tmp/br/blendrag eval rapid --device cuda --models /tmp/models --dataset /tmp/br/musique12.json \
	--limit 3 --max-tokens 48 --gamma auto,4 --eta 0 --out "$O/evalrapid.jsonl" --json > "$O/evalrapid.json" 2> "$O/evalrapid.err"
echo "eval rapid rc=$?"
tail -8 "$O/evalrapid.err"
