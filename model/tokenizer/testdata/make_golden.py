#!/usr/bin/env python3
"""Regenerates the tokenizer golden files from llama.cpp (llama-cpp-python).

    /opt/oracle/bin/python model/tokenizer/testdata/make_golden.py

Needs llama-cpp-python, gguf and jinja2, and the SmolLM2 model
($BLENDRAG_MODELS or ~/.cache/blendrag/models/SmolLM2-135M-Instruct.Q4_1.gguf).
Writes, next to this script:

  golden_smollm2.json  llama.cpp's tokenization of TEXTS with SmolLM2's
                       vocabulary under its own pre-tokenizer ("smollm") and,
                       by rewriting tokenizer.ggml.pre in a temporary
                       vocab-only copy, under "gpt-2", "llama-bpe", "qwen2"
                       and "default"; detokenization; every token's piece
                       (as a SHA-256 plus a sample); the EOG set; and
                       SmolLM2's Jinja chat template rendered by jinja2.
  spm_tiny.gguf        a small SentencePiece ("llama") vocabulary built here
                       by a few hundred BPE merges over CORPUS, with <unk>,
                       <s>, </s>, byte-fallback tokens <0x00>..<0xFF>, two
                       control tokens and a user-defined one.
  bpe_tiny.gguf        a small byte-level BPE ("gpt2") vocabulary whose merges
                       were learnt here on TEXTS without pre-tokenization, so
                       its tokens cross every kind of word boundary.
  golden_bpe.json      llama.cpp's tokenization of TEXTS with bpe_tiny.gguf
                       under the pre-tokenizers in BPE_PRES.
  golden_spm.json      llama.cpp's tokenization of TEXTS with spm_tiny.gguf,
                       plus llama.cpp's built-in chat formats (chatml, llama2
                       variants, mistral, llama3) from llama_chat_apply_template.

The Go tests only read these files; they never run Python.
"""

import collections
import ctypes
import hashlib
import json
import os
import re
import sys
import tempfile

import gguf
import jinja2
import llama_cpp
from llama_cpp import Llama

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.environ.get("BLENDRAG_MODELS") or os.path.expanduser("~/.cache/blendrag/models")
SMOLLM2 = os.path.join(MODELS, "SmolLM2-135M-Instruct.Q4_1.gguf")

GO_FUNC = '''package main

import "fmt"

// Add returns the sum.
func Add(a, b int) int {
\treturn a + b
}

func main() {
\tfmt.Println(Add(1, 2)) // 3
}
'''

PY_CODE = '''def fib(n):
    """Return the n-th Fibonacci number."""
    if n < 2:
        return n
    a, b = 0, 1
    for _ in range(n - 1):
        a, b = b, a + b
    return b


class Point:
    def __init__(self, x, y):
        self.x = x  # horizontal
        self.y = y
'''

TEXTS = [
    "",
    "Hello world",
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "Retrieval-augmented generation fuses cached key/value states instead of re-encoding every chunk.",
    "In 1905, Einstein published four papers. The first explained the photoelectric effect; "
    "the second, Brownian motion.\n\nThe third introduced special relativity.",
    "don't I'm you're they've we'll she'd it's",
    "He'S THEY'RE WE'LL I'M YOU'VE SHE'D IT'T 'LL",
    "rock 'n' roll, O'Neil's ''quoted'' 's'",
    "1234567",
    "3.14159",
    "2026-11-25",
    "1,000,000 and 42 and -7 and 1e-10 and 0x1F",
    "v1.2.3 at 12:30pm on 25/11/2026",
    "Ⅻ ½ ¾ ² ٣٤٥ １２３",
    "   leading spaces",
    "trailing spaces   ",
    "a  b   c    d     e",
    "\t\ttabs\tand\ttabs\t",
    "line1\nline2",
    "\n\n\n",
    "a\n\n\nb",
    " \n \n ",
    "\r\n windows\r\nline\r\n",
    "x \t y",
    "   ",
    " ",
    "\n",
    "\u00a0nbsp\u00a0and\u3000ideographic space",
    "日本語のテキストです。",
    "中文测试，你好世界！",
    "한국어 텍스트입니다",
    "Ελληνικά κείμενο",
    "Привет, мир! Как дела?",
    "مرحبا بالعالم",
    "שלום עולם",
    "café naïve résumé Ångström",
    "e\u0301 combining a\u0308 marks",
    "Z\u0324\u0354\u0367\u0311\u0313a\u0308\u0356\u032d\u0308\u0307l\u036e\u0312\u036bg\u0328\u0317\u035bo",
    "emoji 😀🎉👍🏽",
    "family 👨‍👩‍👧‍👦 and flags 🇫🇷🇯🇵",
    "🤖",
    "math ∑∫√∞≠≤ and arrows → ⇒",
    "€100 £50 ¥1000 $20",
    "zero\u200bwidth and \ufeffBOM",
    GO_FUNC,
    PY_CODE,
    '{"key": [1, 2.5, true, null], "nested": {"a": "b"}}',
    "<div class=\"x\">Hello &amp; goodbye</div>",
    "SELECT name, COUNT(*) FROM users WHERE age >= 18 GROUP BY name;",
    "for i in $(seq 1 10); do echo \"$i\"; done && ls -la ~/ | grep '^d'",
    "^[a-z0-9._%+-]+@[a-z0-9.-]+\\.[a-z]{2,}$",
    "https://example.com/path/to?q=1&r=two#frag user@example.com",
    "CamelCaseIdentifier snake_case_name kebab-case-name ALLCAPS iPhone15Pro",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "!!!!!!!!!!!!!!!! ???? ...... ------------ ============",
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>",
    "text<|im_end|>more text",
    "<|im_start|><|im_end|>",
    "<|im_start",
    "<|endoftext|><|endoftext|>",
    "<reponame>foo<filename>bar.go<file_sep>",
    " <|im_start|> spaced <|im_end|> ",
    "<s>[INST] <<SYS>>\nsys\n<</SYS>>\n\nhi [/INST] </s>",
    "<unk><mask><0x41>",
    "Question: What did Marie Curie discover?\n\nAnswer:",
    "\n\nQuestion: Who wrote it?",
    "UPPER lower MiXeD 123abc abc123 a1b2c3",
    "    indented four\n        indented eight\n\tindented tab",
    "end with newline\n",
    "odd runs: lll sssss eeeee ppp ....... !!!!! aaaaa ==== ----- oooooo",
    "'Sam 'Tis 'REally 'LLama 'Ddd 'VEry 'mm",
    "use `fmt.Println` and ``double`` backticks",
    "xyzzy plugh",
    # Found by random differential testing: equal-rank merges that overlap
    # (leftmost must win), whitespace runs before \r and U+0085.
    "fWqs{'DdO'LLW'7   \r",
    "hT5 CoCQFFFUGöA<|endoftext|>Epms  u",
    "'tE kh    dRvatF <|im_start|>E\rlb\u0085D",
    "Unicode 15.1: x\U0002EBF0\U0002EBF1 y\U0002EBF0\U0002EBF1 \u2FFC\u2FFD \u31EF x\U0002EBF0\U0002EBF1 y\U0002EBF0\U0002EBF1 \u2FFC\u2FFD \u31EF",
]

# Byte strings that are not valid UTF-8 (tokenized as bytes; no decode check).
# llama.cpp decodes overlong forms and surrogates as code points; a lead byte
# F5..F7 with three continuation bytes makes it abort, so none is included.
INVALID = [b"\xff\xfe", b"abc\xc3(def", b"truncated \xe2\x82", b"\x80 lone continuation",
           b"overlong \xc0\x80 and \xc1\x9b", b"surrogate \xed\xa0\x80\xed\xbf\xbf", b"\xf8\x88\x80\x80\x80 five"]

CORPUS = """
Retrieval augmented generation answers a question by first finding the passages of a document
collection that are most relevant to it and then asking a language model to answer with those
passages in its context. The passages are split into chunks, and every chunk is indexed three
ways: by its words, by a dense vector, and by the key and value states the model computes for it.
When a question arrives the system retrieves the best chunks, loads their cached states, and fuses
them into one context instead of encoding every chunk again. This makes the time to the first token
several times lower than a full prefill while the answer stays the same. The quick brown fox jumps
over the lazy dog. She sells sea shells by the sea shore. Peter Piper picked a peck of pickled
peppers. It was the best of times, it was the worst of times, it was the age of wisdom, it was the
age of foolishness. Hello world! Hello there, how are you today? I am fine, thank you very much.
In 1905 Einstein published four papers; the first explained the photoelectric effect, the second
Brownian motion, the third special relativity and the fourth the equivalence of mass and energy.
def main(): return the value of the function for the given input and print the result.
"""


def tokenize(llm, data, special):
    return llm.tokenize(data, add_bos=False, special=special)


def detokenize(vocab, ids):
    arr = (llama_cpp.llama_token * max(1, len(ids)))(*ids)
    size = 64 + 64 * len(ids)
    buf = ctypes.create_string_buffer(size)
    n = llama_cpp.llama_detokenize(vocab, arr, len(ids), buf, size, False, True)
    assert n >= 0, n
    return buf.raw[:n]


def piece(vocab, tok):
    buf = ctypes.create_string_buffer(256)
    n = llama_cpp.llama_token_to_piece(vocab, tok, buf, 256, 0, True)
    assert 0 <= n <= 256, n
    return buf.raw[:n]


def cases(llm, vocab, with_decode):
    out = []
    for t in TEXTS:
        data = t.encode("utf-8")
        ids_plain = tokenize(llm, data, False)
        ids_special = tokenize(llm, data, True)
        c = {"text": t, "plain": ids_plain, "special": ids_special}
        if with_decode:
            c["decoded_hex"] = detokenize(vocab, ids_special).hex()
        out.append(c)
    for data in INVALID:
        out.append({"hex": data.hex(), "plain": tokenize(llm, data, False), "special": tokenize(llm, data, True)})
    return out


def load(path):
    llm = Llama(model_path=path, vocab_only=True, verbose=False)
    vocab = llama_cpp.llama_model_get_vocab(llm._model.model)
    return llm, vocab


def vocab_facts(vocab):
    n = llama_cpp.llama_vocab_n_tokens(vocab)
    h = hashlib.sha256()
    sample = {}
    for i in range(n):
        p = piece(vocab, i)
        h.update(len(p).to_bytes(4, "little"))
        h.update(p)
        if i < 300 or i % 97 == 0:
            sample[str(i)] = p.hex()
    return {
        "n_vocab": n,
        "bos": llama_cpp.llama_vocab_bos(vocab),
        "eos": llama_cpp.llama_vocab_eos(vocab),
        "eot": llama_cpp.llama_vocab_eot(vocab),
        "eog": [i for i in range(n) if llama_cpp.llama_vocab_is_eog(vocab, i)],
        "pieces_sha256": h.hexdigest(),
        "pieces_sample_hex": sample,
    }


def copy_with_pre(src, dst, pre):
    """Writes a vocab-only GGUF holding src's tokenizer with tokenizer.ggml.pre = pre."""
    r = gguf.GGUFReader(src)
    f = r.fields
    w = gguf.GGUFWriter(dst, "llama")
    for key in ("llama.context_length", "llama.embedding_length", "llama.block_count",
                "llama.feed_forward_length", "llama.attention.head_count",
                "llama.attention.head_count_kv", "llama.rope.dimension_count"):
        if key in f:
            w.add_uint32(key, int(f[key].contents()))
    w.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
    w.add_tokenizer_model(f["tokenizer.ggml.model"].contents())
    w.add_tokenizer_pre(pre)
    w.add_token_list(f["tokenizer.ggml.tokens"].contents())
    w.add_token_types(f["tokenizer.ggml.token_type"].contents())
    w.add_token_merges(f["tokenizer.ggml.merges"].contents())
    for key in ("bos_token_id", "eos_token_id", "unknown_token_id", "padding_token_id"):
        w.add_uint32("tokenizer.ggml." + key, int(f["tokenizer.ggml." + key].contents()))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def render_jinja(src, messages, add_generation_prompt):
    env = jinja2.Environment(loader=jinja2.BaseLoader())
    return env.from_string(src).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                       bos_token="", eos_token="")


CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You answer in one word."},
     {"role": "user", "content": "Capital of Italy?"}],
    [{"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "Hello! How can I help?"},
     {"role": "user", "content": "  Tell me a joke.  "}],
    [{"role": "system", "content": "Be brief."},
     {"role": "user", "content": "One"},
     {"role": "assistant", "content": " Two "},
     {"role": "user", "content": "Three"}],
    [],
]


def smollm2():
    llm, vocab = load(SMOLLM2)
    r = gguf.GGUFReader(SMOLLM2)
    template = r.fields["tokenizer.chat_template"].contents()
    out = {
        "model": os.path.basename(SMOLLM2),
        "llama_cpp_python": llama_cpp.__version__,
        "pre": {"smollm": cases(llm, vocab, True)},
        "vocab": vocab_facts(vocab),
        "chat_template": template,
        "chat": [{"messages": m, "add_generation_prompt": g, "text": render_jinja(template, m, g)}
                 for m in CONVERSATIONS for g in (True, False)],
    }
    with tempfile.TemporaryDirectory() as tmp:
        for pre in ("gpt-2", "llama-bpe", "qwen2", "default"):
            path = os.path.join(tmp, pre + ".gguf")
            copy_with_pre(SMOLLM2, path, pre)
            l2, v2 = load(path)
            out["pre"][pre] = cases(l2, v2, pre == "llama-bpe")
    return out


def train_spm(corpus, n_merges):
    """A plain BPE trainer over words with the ▁ prefix; returns merged pieces in order."""
    words = collections.Counter("▁" + w for w in corpus.split())
    seqs = {w: list(w) for w in words}
    pieces = []
    for _ in range(n_merges):
        pairs = collections.Counter()
        for w, c in words.items():
            s = seqs[w]
            for a, b in zip(s, s[1:]):
                pairs[(a, b)] += c
        if not pairs:
            break
        (a, b), _ = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        pieces.append(a + b)
        for w in words:
            s, i, t = seqs[w], 0, []
            while i < len(s):
                if i + 1 < len(s) and s[i] == a and s[i + 1] == b:
                    t.append(a + b)
                    i += 2
                else:
                    t.append(s[i])
                    i += 1
            seqs[w] = t
    return pieces


LLAMA2_TEMPLATE = ("{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
                   "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
                   "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
                   "{% if loop.index0 == 0 and system_message != false %}"
                   "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
                   "{% else %}{% set content = message['content'] %}{% endif %}"
                   "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
                   "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}"
                   "{% endif %}{% endfor %}")


def make_spm(path):
    toks, types, scores = [], [], []

    def add(t, typ, score):
        toks.append(t)
        types.append(typ)
        scores.append(score)

    add("<unk>", 2, 0.0)
    add("<s>", 3, 0.0)
    add("</s>", 3, 0.0)
    for b in range(256):
        add("<0x%02X>" % b, 6, 0.0)
    add("<|im_start|>", 3, 0.0)
    add("<|im_end|>", 3, 0.0)
    add("<mask>", 4, 0.0)
    chars = sorted(set(CORPUS.replace(" ", "▁").replace("\n", "")) | set("▁abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,;:!?'\"()[]{}<>-_=+*/\\|@#$%^&~`") | set("éèàüößçñ日本中文"))
    seen = set(toks)
    merges = train_spm(CORPUS, 700)
    for i, p in enumerate(merges):
        if p not in seen:
            # Every fifth pair of merges shares a score, to exercise ties.
            add(p, 1, -float(i - (i % 2 if i % 5 == 0 else 0)))
            seen.add(p)
    for i, ch in enumerate(chars):
        if ch not in seen:
            add(ch, 1, -1000.0 - i)
            seen.add(ch)
    w = gguf.GGUFWriter(path, "llama")
    w.add_context_length(2048)
    w.add_embedding_length(64)
    w.add_block_count(1)
    w.add_feed_forward_length(128)
    w.add_head_count(4)
    w.add_head_count_kv(4)
    w.add_rope_dimension_count(16)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("llama")
    w.add_token_list(toks)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_chat_template(LLAMA2_TEMPLATE)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def byte_level_table():
    """GPT-2's bytes_to_unicode."""
    keep = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table, n = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + n)
            n += 1
    return table


def make_bpe(path, pre):
    """A byte-level BPE vocabulary whose merges were learnt on TEXTS and CORPUS
    without any pre-tokenization, so they span every kind of word boundary and
    the tokens show exactly where each pre-tokenizer splits."""
    enc = byte_level_table()
    seqs = [[enc[b] for b in t.encode("utf-8")] for t in TEXTS + CORPUS.split("\n") if t]
    merges = []
    for _ in range(1500):
        pairs = collections.Counter()
        for s in seqs:
            for a, b in zip(s, s[1:]):
                pairs[(a, b)] += 1
        if not pairs:
            break
        (a, b), c = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        if c < 2:
            break
        merges.append((a, b))
        for k, s in enumerate(seqs):
            i, t = 0, []
            while i < len(s):
                if i + 1 < len(s) and s[i] == a and s[i + 1] == b:
                    t.append(a + b)
                    i += 2
                else:
                    t.append(s[i])
                    i += 1
            seqs[k] = t
    # "<|im" (a prefix of two longer specials, with a lower id) checks that
    # special tokens are matched longest first.
    toks = ["<|endoftext|>", "<|im", "<|im_start|>", "<|im_end|>", "<mask>", "<|fim_pad|>", "<|fim_prefix|>"]
    types = [3, 3, 3, 3, 4, 3, 3]
    for b in range(256):
        toks.append(enc[b])
        types.append(1)
    seen = set(toks)
    for a, b in merges:
        if a + b not in seen:
            toks.append(a + b)
            types.append(1)
            seen.add(a + b)
    # Whole words no merge sequence reaches: only ignore_merges (Llama 3)
    # emits them as one token.
    for word in ("xyzzy", "\u0120plugh"):
        if word not in seen:
            toks.append(word)
            types.append(1)
            seen.add(word)
    w = gguf.GGUFWriter(path, "llama")
    w.add_context_length(2048)
    w.add_embedding_length(64)
    w.add_block_count(1)
    w.add_feed_forward_length(128)
    w.add_head_count(4)
    w.add_head_count_kv(4)
    w.add_rope_dimension_count(16)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(toks)
    w.add_token_types(types)
    w.add_token_merges([a + " " + b for a, b in merges])
    w.add_bos_token_id(0)
    w.add_eos_token_id(0)
    w.add_add_bos_token(False)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


BPE_PRES = ("smollm", "gpt-2", "llama-bpe", "qwen2", "default", "falcon", "starcoder", "dbrx")


def bpe():
    out = {"model": "bpe_tiny.gguf", "llama_cpp_python": llama_cpp.__version__, "pre": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for pre in BPE_PRES:
            path = os.path.join(HERE, "bpe_tiny.gguf") if pre == "smollm" else os.path.join(tmp, pre + ".gguf")
            make_bpe(path, pre)
            llm, vocab = load(path)
            out["pre"][pre] = cases(llm, vocab, True)
            if pre == "smollm":
                out["vocab"] = vocab_facts(vocab)
    return out


def apply_template(name, messages, add_ass):
    arr = (llama_cpp.llama_chat_message * max(1, len(messages)))()
    keep = []
    for i, m in enumerate(messages):
        role, content = m["role"].encode(), m["content"].encode()
        keep += [role, content]
        arr[i].role, arr[i].content = role, content
    size = 4096
    buf = ctypes.create_string_buffer(size)
    n = llama_cpp.llama_chat_apply_template(name.encode(), arr, len(messages), add_ass, buf, size)
    assert 0 <= n < size, n
    return buf.raw[:n].decode()


def spm():
    path = os.path.join(HERE, "spm_tiny.gguf")
    make_spm(path)
    llm, vocab = load(path)
    chat = []
    for name in ("chatml", "llama2", "llama2-sys", "llama2-sys-bos", "llama2-sys-strip",
                 "mistral-v1", "mistral-v3", "mistral-v3-tekken", "mistral-v7", "llama3"):
        for m in CONVERSATIONS:
            for g in (True, False):
                chat.append({"template": name, "messages": m, "add_generation_prompt": g,
                             "text": apply_template(name, m, g)})
    return {
        "model": "spm_tiny.gguf",
        "llama_cpp_python": llama_cpp.__version__,
        "cases": cases(llm, vocab, True),
        "vocab": vocab_facts(vocab),
        "chat": chat,
    }


def main():
    if not os.path.exists(SMOLLM2):
        sys.exit("missing " + SMOLLM2)
    for name, data in (("golden_smollm2.json", smollm2()), ("golden_spm.json", spm()), ("golden_bpe.json", bpe())):
        text = json.dumps(data, ensure_ascii=False, indent=1, sort_keys=True)
        # Keep each id list on one line.
        text = re.sub(r"\[\s*(-?\d+(?:,\s*-?\d+)*)\s*\]",
                      lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)
        with open(os.path.join(HERE, name), "w", encoding="utf-8") as f:
            f.write(text + "\n")
        print("wrote", name)


if __name__ == "__main__":
    main()
