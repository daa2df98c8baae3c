"""Golden data for the WordPiece tokenizer, from Hugging Face `tokenizers`.

Writes testdata/golden.json with
  - "encodings": [{"text", "ids"}] — the reference encoding ([CLS] ... [SEP],
    no truncation, no padding) of hand-picked texts plus seeded random
    strings drawn from a pool of tricky characters and vocabulary words;
  - "chars": per-code-point behaviour of the reference normalizer and
    pre-tokenizer, as runs [first, last, class] over every code point
    (class "removed": the normalizer deletes it; "cjk": it becomes " c ";
    "punct": left as is and isolated by the pre-tokenizer) and "mapped":
    {code point: normalized string} for every other code point the
    normalizer changes.

Run (from model/bert/wordpiece, with the model fetched):
  /opt/oracle/bin/python testdata/make_golden.py ~/.cache/blendrag/models/all-MiniLM-L6-v2
"""
import json
import random
import sys

import tokenizers
from tokenizers import Tokenizer

tok = Tokenizer.from_file(sys.argv[1] + "/tokenizer.json")
tok.no_padding()
tok.no_truncation()

texts = [
    "",
    " ",
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "Café naïve façade résumé coöperate Ångström Øresund São Paulo",
    "İstanbul ŞEHİR straße ΣΊΣΥΦΟΣ ǅemal ﬁnance",
    "Numbers: 3.14159, 1,000,000 and -42; dates 2026-11-26 12:30:45.",
    "e-mail: someone@example.com, url https://example.org/a_b?c=d&e=f#g",
    "Don't stop—it's (almost) \"done\" [really] {yes} <no> ~tilde~ `code` ^caret^ |pipe|",
    "中文分词测试：北京欢迎你。日本語のテキスト、カタカナ。한국어 텍스트입니다.",
    "Mixed中文and English混合text",
    "Emoji 😀🎉👍🏽 family 👨‍👩‍👧 flags 🇫🇷 ♥ ☃ ✓",
    "supercalifragilisticexpialidocious antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
    "a" * 100,
    "b" * 101,
    "Tabs\tand\nnewlines\r\nand\u00a0nbsp\u2003emspace\u200bzero-width\u200dzwj",
    "Control\x00chars\x07here\x1b[0m and \ufeffBOM \ufffd replacement",
    "Русский текст с ёлкой. Ελληνικά κείμενα. עברית. العربية. हिन्दी।",
    "[CLS] special [SEP] tokens [MASK] in [PAD] text [UNK] and [cls] lower",
    "x[SEP]y and [SEP][SEP]",
    "The 𝐁𝐨𝐥𝐝 𝑖𝑡𝑎𝑙𝑖𝑐 ｆｕｌｌｗｉｄｔｈ ① ½ ² ㎏ text",
    "Rare CJK ext: \U00020000\U0002A700\U0002B740\U0002B820\U0002B920\U0002CEB0\U0002F800 \uF900\uFA6D",
    "unaffable unbelievably re-examination co-operation self-driving state-of-the-art",
    "   leading and trailing spaces   ",
    "ALLCAPS SHOUTING TEXT WITH ÀÉÎÕÜ",
    "Combining: e\u0301 a\u0300 n\u0303 o\u0308 and decomposed Z\u030c",
]

# Seeded random strings over a pool of tricky characters and vocab words.
rng = random.Random(4)
pool = list("abcXYZ019 .,;:!?'\"-_()[]{}<>/\\@#$%^&*+=~`|\t\n") + list(
    "éÉüÜßçñøåæœİıŞğ中文日本語한국어ΣσςЁё😀👍🏽\u200b\u00a0\u0301\u0308\ufeff\u2014\u2019\u00bf\u00a1\u3002\uff0c"
) + ["\x00", "\x7f", "\u0085", "\u2028", "\ue000", "\U0010fffd", "\u0378", "\U000e0041"]
words = ["the", "token", "##izer", "embedding", "running", "unbelievable", "[SEP]", "[MASK]", "naïve", "x" * 99]
for i in range(300):
    parts = []
    for _ in range(rng.randint(0, 25)):
        if rng.random() < 0.2:
            parts.append(rng.choice(words))
        else:
            parts.append(rng.choice(pool))
    texts.append("".join(parts))

encodings = [{"text": t, "ids": tok.encode(t).ids} for t in texts]

norm = tok.normalizer
pre = tok.pre_tokenizer
runs = []
mapped = {}


def add(cp, cls):
    if runs and runs[-1][2] == cls and runs[-1][1] == cp - 1:
        runs[-1][1] = cp
    else:
        runs.append([cp, cp, cls])


for cp in range(0x110000):
    if 0xD800 <= cp <= 0xDFFF:
        continue
    c = chr(cp)
    s = norm.normalize_str(c)
    if s == "":
        add(cp, "removed")
    elif s == " " + c + " ":
        add(cp, "cjk")
    elif s != c:
        mapped[str(cp)] = s
    elif len(pre.pre_tokenize_str("a" + c + "a")) == 3:
        add(cp, "punct")

with open("testdata/golden.json", "w") as f:
    json.dump(
        {
            "reference": "tokenizers " + tokenizers.__version__,
            "encodings": encodings,
            "chars": {"runs": runs, "mapped": mapped},
        },
        f,
        ensure_ascii=True,
        separators=(",", ":"),
    )
