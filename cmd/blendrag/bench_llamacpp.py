"""llama.cpp reference for `blendrag bench engine --llamacpp-python PY`.

Reads {"model", "tokens", "decode", "threads", "rounds"} as JSON on stdin; prints
{"prefill_tok_s", "decode_tok_s", "version"} on stdout. Prefill evaluates the
given tokens in one batch; decode then appends `decode` greedy tokens one at a
time (end of generation ignored), like blendrag's bench. The KV cache is f32,
as in blendrag.
"""
import json, sys, time

import numpy as np
import llama_cpp
from llama_cpp import Llama

req = json.load(sys.stdin)
toks = req["tokens"]
n_ctx = len(toks) + req["decode"] + 8
llm = Llama(model_path=req["model"], n_ctx=n_ctx, n_batch=n_ctx,
            n_threads=req["threads"], n_threads_batch=req["threads"], type_k=0, type_v=0,
            flash_attn=False, verbose=False, logits_all=False)
best_prefill = best_decode = 0.0
for _ in range(max(req.get("rounds", 2), 1)):  # report the best round
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(toks)
    t1 = time.perf_counter()
    nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    t2 = time.perf_counter()
    for _ in range(req["decode"]):
        llm.eval([nxt])
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    t3 = time.perf_counter()
    best_prefill = max(best_prefill, len(toks) / (t1 - t0))
    best_decode = max(best_decode, req["decode"] / (t3 - t2))
print(json.dumps({"prefill_tok_s": best_prefill, "decode_tok_s": best_decode,
                  "version": "llama-cpp-python " + llama_cpp.__version__}))
