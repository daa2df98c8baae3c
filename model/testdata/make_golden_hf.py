#!/usr/bin/env python3
"""Golden logits for SmolLM2-135M-Instruct Q4_1 from HF transformers in float32.

Run: PY model/testdata/make_golden_hf.py [MODEL.gguf]
where PY has torch, transformers, accelerate and gguf (pip install; CPU is fine).
transformers dequantizes the GGUF's weights (gguf-py) and runs the Llama forward pass in
float32 without quantizing activations — the arithmetic of blendrag's reference path
(model.Options{F32Weights: true}). The prompts and token ids are those of
golden_logits.json.gz (llama.cpp's tokenization), so both golden files test the same inputs.
Writes model/testdata/golden_logits_hf.json.gz in the same format: per position the
log-sum-exp of the logits and the top-20 (id, logit) pairs.
"""
import gzip, json, os, sys

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
model = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.environ.get("BLENDRAG_MODELS", os.path.expanduser("~/.cache/blendrag/models")),
    "SmolLM2-135M-Instruct.Q4_1.gguf")

torch.manual_seed(0)
m = AutoModelForCausalLM.from_pretrained(os.path.dirname(model), gguf_file=os.path.basename(model),
                                         dtype=torch.float32)
m.eval()
src = json.load(gzip.open(os.path.join(HERE, "golden_logits.json.gz"), "rt"))
out = {"model": os.path.basename(model),
       "reference": "transformers %s, torch %s, float32" % (transformers.__version__, torch.__version__),
       "top": 20, "prompts": []}
for p in src["prompts"]:
    toks = p["tokens"]
    with torch.no_grad():
        scores = m(torch.tensor([toks])).logits[0].double().numpy()
    mx = scores.max(axis=1, keepdims=True)
    lse = mx[:, 0] + np.log(np.exp(scores - mx).sum(axis=1))
    positions = []
    for i in range(len(toks)):
        top = np.argsort(-scores[i], kind="stable")[:20]
        positions.append({"lse": round(float(lse[i]), 5),
                          "ids": [int(t) for t in top],
                          "logits": [round(float(scores[i, t]), 5) for t in top]})
    out["prompts"].append({"name": p["name"], "text": p["text"], "special": p["special"],
                           "tokens": toks, "positions": positions})
    print(p["name"], len(toks), "tokens", file=sys.stderr)

with gzip.open(os.path.join(HERE, "golden_logits_hf.json.gz"), "wt") as f:
    json.dump(out, f, separators=(",", ":"))
