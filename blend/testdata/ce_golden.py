#!/usr/bin/env python3
"""Golden data for blend's KV-cached cross-encoder (crossencoder_test.go).

CE(q, chunk) = mean log-probability of the question's text tokens when the
prompt is P + "\n\n" + chunk + "\n\nQuestion: " + q (the segment format of
blend/format.go), computed here by llama.cpp (llama-cpp-python, logits_all)
on the default generator. Each segment is tokenized on its own, as blend
does; the scored tokens are those of the question segment after the tokens
of "\n\nQuestion:".

Run: /opt/oracle/bin/python blend/testdata/ce_golden.py > blend/testdata/ce_golden.json
"""
import json
import os
import sys

import numpy as np
from llama_cpp import Llama

SYSTEM = "You are a helpful assistant. Answer the question using only the passages you are given. Be brief."
INSTRUCTION = "Read the passages below and answer the question that follows them."
MODEL = os.path.expanduser("~/.cache/blendrag/models/SmolLM2-135M-Instruct.Q4_1.gguf")
DATA = os.path.join(os.path.dirname(__file__), "../../../shared/eval/musique_dev.json")


def first_sentences(text, limit=600):
    """The passage cut at a sentence end near limit characters."""
    if len(text) <= limit:
        return text
    cut = text.rfind(". ", 0, limit)
    return text[: cut + 1] if cut > 0 else text[:limit]


def main():
    llm = Llama(model_path=MODEL, n_ctx=2048, logits_all=True, verbose=False, n_threads=2, seed=0)
    tok = lambda s, special: llm.tokenize(s.encode(), add_bos=False, special=special)
    prefix_text = "<|im_start|>system\n" + SYSTEM + "<|im_end|>\n<|im_start|>user\n" + INSTRUCTION
    prefix = tok(prefix_text, True)
    label = tok("\n\nQuestion:", False)
    with open(DATA) as f:
        items = json.load(f)
    pairs = []
    for it in items[:2]:
        norm = lambda s: s.lower()
        hit = next(c for c in it["ctxs"] if any(norm(a) in norm(c["text"]) for a in it["answers"]))
        miss = next(c for c in it["ctxs"] if not any(norm(a) in norm(c["text"]) for a in it["answers"]))
        for c in (hit, miss):
            chunk = first_sentences(c["text"])
            ctoks = tok("\n\n" + chunk, False)
            qtoks = tok("\n\nQuestion: " + it["question"], False)
            first = 0
            while first < len(label) and qtoks[first] == label[first]:
                first += 1
            seq = prefix + ctoks + qtoks[:-1]
            llm.reset()
            llm.eval(seq)
            logits = np.array(llm.scores[: len(seq)], dtype=np.float64)
            q0 = len(prefix) + len(ctoks)
            lps = []
            for i in range(first, len(qtoks)):
                z = logits[q0 + i - 1]
                m = z.max()
                lps.append(z[qtoks[i]] - m - np.log(np.exp(z - m).sum()))
            pairs.append({
                "chunk": chunk,
                "question": it["question"],
                "prefix_tokens": prefix,
                "chunk_tokens": ctoks,
                "question_tokens": qtoks,
                "first_scored": first,
                "mean_logprob": float(np.mean(lps)),
            })
    json.dump({"system": SYSTEM, "instruction": INSTRUCTION, "model": os.path.basename(MODEL), "pairs": pairs},
              sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
