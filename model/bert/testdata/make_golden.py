"""Golden embeddings for model/bert, from sentence-transformers.

Writes testdata/golden.json: {"reference", "max_tokens", "texts": [{"text",
"pieces", "windows", "embedding"}]} for ~20 varied texts.

Texts of at most max_seq_length − 2 word pieces (all but the long ones) are
embedded by SentenceTransformer(<dir>).encode(..., normalize_embeddings) —
the reference itself. Longer texts follow the windowing the Go package
documents: the word pieces (tokenizer without special tokens) are split into
k = ceil(n / (max − 2)) consecutive windows of near-equal size (the first
n mod k one longer), each wrapped in [CLS] … [SEP] and run through the
sentence-transformers modules (Transformer, then mean Pooling — before
Normalize); the text's vector is the mean of the window vectors weighted by
window length ([CLS]/[SEP] included), L2-normalised. As a check of that
path, the script also runs it on every short text (k = 1) and asserts it
agrees with encode().

Run (offline, from model/bert):
  /opt/st/bin/python testdata/make_golden.py ~/.cache/blendrag/models/all-MiniLM-L6-v2
"""
import json
import math
import sys

import numpy as np
import sentence_transformers
import torch
from sentence_transformers import SentenceTransformer

model_dir = sys.argv[1]
model = SentenceTransformer(model_dir, device="cpu")
model.eval()
tok = model.tokenizer
max_tokens = model.max_seq_length  # 256
per = max_tokens - 2

long_text = " ".join(
    [
        "Retrieval-augmented generation combines a retriever, which finds passages relevant to a question,",
        "with a generator that writes the answer conditioned on those passages.",
        "In blendrag every document is split into chunks of a few hundred tokens; each chunk is indexed by BM25,",
        "by a dense embedding from a small BERT encoder, and by a cross-encoder approximated with CUR decomposition.",
        "The key-value cache of each chunk is computed once at ingest time and stored, so that answering a question",
        "costs almost no prefill: the cached chunks are loaded, shifted to their new positions and fused.",
    ]
    * 2
)
very_long = " ".join(f"Section {i}: the measured latency was {i * 3.7:.1f} ms (p95), naïvely tuned; café-{i}." for i in range(22))

texts = [
    "",
    "hello",
    "What is retrieval-augmented generation?",
    "The quick brown fox jumps over the lazy dog.",
    "A man is playing a guitar on stage.",
    "Café naïve façade résumé — Ångström in São Paulo.",
    "Numbers like 3.14159, 1,000,000 and -42 appear in tables from 2026-11-26.",
    "e-mail someone@example.com or visit https://example.org/a_b?c=d&e=f",
    "中文分词测试：北京欢迎你。日本語のテキスト。",
    "Emoji 😀🎉👍🏽 and symbols ♥ ☃ ✓ in a sentence.",
    "supercalifragilisticexpialidocious pneumonoultramicroscopicsilicovolcanoconiosis",
    "Tabs\tand\nnewlines\r\nmixed   with   spaces",
    "Русский текст. Ελληνικά κείμενα. العربية.",
    "[CLS] special [SEP] tokens [MASK] in text",
    "How many layers does all-MiniLM-L6-v2 have? It has six transformer layers with 384 hidden units.",
    "The mitochondria is the powerhouse of the cell.",
    "Paris is the capital and most populous city of France.",
    "ALL CAPS SHOUTING TEXT WITH ÀÉÎÕÜ",
    long_text,
    very_long,
]


def windows(ids):
    n = len(ids)
    k = max(1, math.ceil(n / per))
    out, start = [], 0
    for w in range(k):
        size = n // k + (1 if w < n % k else 0)
        out.append([tok.cls_token_id] + ids[start : start + size] + [tok.sep_token_id])
        start += size
    return out


@torch.no_grad()
def windowed(text):
    ids = tok(text, add_special_tokens=False)["input_ids"]
    acc, total = None, 0
    for w in windows(ids):
        t = torch.tensor([w])
        feats = {"input_ids": t, "attention_mask": torch.ones_like(t), "token_type_ids": torch.zeros_like(t)}
        feats = model[0](feats)
        feats = model[1](feats)
        v = feats["sentence_embedding"][0].double().numpy() * len(w)
        acc = v if acc is None else acc + v
        total += len(w)
    acc /= total
    return acc / np.linalg.norm(acc), len(ids), len(windows(ids))


ref = model.encode(texts, normalize_embeddings=True, convert_to_numpy=True, batch_size=8)
out = []
for text, r in zip(texts, ref):
    v, pieces, nwin = windowed(text)
    if nwin == 1:
        cos = float(np.dot(v, r.astype(np.float64)))
        assert cos > 0.99999, (text, cos)
        emb = r
    else:
        emb = v
    out.append({"text": text, "pieces": pieces, "windows": nwin, "embedding": [round(float(x), 7) for x in emb]})

assert sum(o["windows"] > 1 for o in out) >= 2
with open("testdata/golden.json", "w") as f:
    json.dump(
        {
            "reference": f"sentence-transformers {sentence_transformers.__version__}, torch {torch.__version__}",
            "max_tokens": max_tokens,
            "texts": out,
        },
        f,
        ensure_ascii=True,
    )
print([(o["pieces"], o["windows"]) for o in out])
