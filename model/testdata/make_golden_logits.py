#!/usr/bin/env python3
"""Golden logits for SmolLM2-135M-Instruct Q4_1 from llama.cpp (llama-cpp-python).

Run: /opt/oracle/bin/python model/testdata/make_golden_logits.py [MODEL.gguf]
(pip install llama-cpp-python, built from source.) Writes model/testdata/golden_logits.json.gz:
for each prompt, llama.cpp's token ids and, for every position, the log-sum-exp of the
logits and the top-20 (id, logit) pairs. The KV cache is kept in f32 (type_k = type_v = 0)
and flash attention is off, so the reference differs from an exact fp32 forward only by
llama.cpp's own activation quantisation in the matmuls.
"""
import gzip, json, os, sys

import numpy as np
from llama_cpp import Llama

HERE = os.path.dirname(os.path.abspath(__file__))
model = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.environ.get("BLENDRAG_MODELS", os.path.expanduser("~/.cache/blendrag/models")),
    "SmolLM2-135M-Instruct.Q4_1.gguf")

musique = json.load(open(os.path.join(HERE, "../../../shared/eval/musique_dev.json")))
item = musique[0]
long_text = "Answer the question from the passages.\n\n" + "\n\n".join(
    c["title"] + "\n" + c["text"] for c in item["ctxs"][:3]) + "\n\nQuestion: " + item["question"] + "\nAnswer:"

PROMPTS = [
    ("short", "The capital of France is", False),
    ("long", long_text, False),
    ("chat", "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
             "<|im_start|>user\nWhat is 17 times 23? Explain briefly.<|im_end|>\n<|im_start|>assistant\n", True),
    ("code", "package main\n\nimport \"fmt\"\n\n// fib returns the n-th Fibonacci number.\nfunc fib(n int) int {\n"
             "\tif n < 2 {\n\t\treturn n\n\t}\n\treturn fib(n-1) + fib(n-2)\n}\n\nfunc main() {\n\tfmt.Println(fib(", False),
    ("unicode", "Größe, naïve café — 東京は日本の首都です。Привет, мир! 🎉🚀 Ελληνικά: καλημέρα. "
                "مرحبا بالعالم. 12,345.67 € ≈ $13,000; x² + y² = z²\t\ttabs   and spaces\n\n\nend", False),
]

llm = Llama(model_path=model, n_ctx=2048, n_batch=512, n_threads=2, logits_all=True,
            type_k=0, type_v=0, flash_attn=False, verbose=False, seed=0)
out = {"model": os.path.basename(model), "reference": "llama-cpp-python " + __import__("llama_cpp").__version__,
       "kv_type": "f32", "top": 20, "prompts": []}
for name, text, special in PROMPTS:
    toks = llm.tokenize(text.encode("utf-8"), add_bos=False, special=special)
    llm.reset()
    llm.eval(toks)
    scores = np.array(llm.scores[: len(toks)], dtype=np.float64)
    mx = scores.max(axis=1, keepdims=True)
    lse = (mx[:, 0] + np.log(np.exp(scores - mx).sum(axis=1)))
    positions = []
    for i in range(len(toks)):
        top = np.argsort(-scores[i], kind="stable")[:20]
        positions.append({"lse": round(float(lse[i]), 5),
                          "ids": [int(t) for t in top],
                          "logits": [round(float(scores[i, t]), 5) for t in top]})
    out["prompts"].append({"name": name, "text": text, "special": special, "tokens": toks, "positions": positions})
    print(name, len(toks), "tokens", file=sys.stderr)

with gzip.open(os.path.join(HERE, "golden_logits.json.gz"), "wt") as f:
    json.dump(out, f, separators=(",", ":"))
