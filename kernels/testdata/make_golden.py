#!/usr/bin/env python3
"""Regenerate kernels/testdata/dequant_golden.json.

The Go test TestDequantizeMatchesGGUFReference compares kernels.Dequantize
(and the float16/bfloat16/Q8_0 conversions) bit for bit against the values
written here. They come from the PyPI `gguf` package (gguf.quants), an
implementation independent of ours:

    python3 kernels/testdata/make_golden.py            # from the repo root

Every raw block is seeded random bytes; the fp16 scale fields of quantized
blocks are overwritten with finite values of moderate size (a few subnormal
ones included) so that every expected value is finite. F32/F16/BF16 inputs
are fully random bit patterns, so NaNs, infinities and subnormals occur; the
Go test compares NaNs by NaN-ness only.
"""

import base64
import importlib.metadata
import json
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf import quants

SEED = 20240531
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dequant_golden.json")


def b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")


def f16_scales(rng: np.random.Generator, n: int) -> np.ndarray:
    """n finite fp16 values of moderate size with random sign; about one in
    eight is a tiny (often subnormal) value."""
    mag = np.exp(rng.uniform(np.log(1e-4), np.log(4.0), size=n))
    tiny = rng.random(n) < 0.125
    mag = np.where(tiny, rng.uniform(1e-7, 6e-5, size=n), mag)
    sign = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    return (mag * sign).astype(np.float16)


# (type, number of blocks, byte offsets of fp16 scale fields inside a block)
QUANT_CASES = [
    (T.Q4_0, 16, [0]),
    (T.Q4_1, 16, [0, 2]),
    (T.Q5_0, 16, [0]),
    (T.Q5_1, 16, [0, 2]),
    (T.Q8_0, 16, [0]),
    (T.Q4_K, 4, [0, 2]),
    (T.Q5_K, 4, [0, 2]),
    (T.Q6_K, 4, [208]),
]


def main() -> None:
    rng = np.random.default_rng(SEED)
    cases = []

    # Plain float types: random bit patterns (NaN/Inf/subnormal included),
    # plus a few edge values at the front.
    f32_bits = rng.integers(0, 2**32, size=256, dtype=np.uint64).astype(np.uint32)
    f32_bits[:6] = [0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x00000001, 0x7FC00001]
    raw = f32_bits.view(np.uint8)
    cases.append(("F32", int(T.F32), raw, quants.dequantize(raw, T.F32).astype(np.float32)))

    f16_bits = rng.integers(0, 2**16, size=512, dtype=np.uint64).astype(np.uint16)
    f16_bits[:8] = [0x0000, 0x8000, 0x7C00, 0xFC00, 0x0001, 0x03FF, 0x0400, 0x7BFF]
    raw = f16_bits.view(np.uint8)
    cases.append(("F16", int(T.F16), raw, quants.dequantize(raw, T.F16).astype(np.float32)))

    bf16_bits = rng.integers(0, 2**16, size=512, dtype=np.uint64).astype(np.uint16)
    raw = bf16_bits.view(np.uint8)
    cases.append(("BF16", int(T.BF16), raw, quants.dequantize(raw, T.BF16).astype(np.float32)))

    for qt, nblocks, scale_offsets in QUANT_CASES:
        block_size, type_size = gguf.GGML_QUANT_SIZES[qt]
        blocks = rng.integers(0, 256, size=(nblocks, type_size), dtype=np.uint16).astype(np.uint8)
        for off in scale_offsets:
            blocks[:, off:off + 2] = f16_scales(rng, nblocks).view(np.uint8).reshape(nblocks, 2)
        raw = blocks.reshape(-1)
        want = quants.dequantize(raw, qt).astype(np.float32).reshape(-1)
        assert want.size == nblocks * block_size
        assert np.all(np.isfinite(want)), qt.name
        cases.append((qt.name, int(qt), raw, want))

    # Conversions the other way: float32 → float16 (numpy, round to nearest
    # even) and float32 → bfloat16 (gguf's port of ggml_compute_fp32_to_bf16).
    conv_in = np.concatenate([
        rng.standard_normal(256).astype(np.float32) * np.float32(1000.0),
        (rng.standard_normal(256) * 1e-5).astype(np.float32),  # fp16 subnormal range
        rng.integers(0, 2**32, size=256, dtype=np.uint64).astype(np.uint32).view(np.float32),
        np.array([65504, 65519.99, 65520, 1e9, -1e9, 2.0**-25, 2.0**-24, 3 * 2.0**-26,
                  np.inf, -np.inf, np.nan, 0.0, -0.0], dtype=np.float32),
    ])
    with np.errstate(over="ignore", invalid="ignore"):
        to_f16 = conv_in.astype(np.float16).view(np.uint16)
    to_bf16 = quants.quantize(conv_in.reshape(1, -1), T.BF16).view(np.uint16).reshape(-1)

    # Q8_0 quantisation (gguf's quantize_blocks is written to be bit-exact
    # with ggml's quantize_row_q8_0_ref): the activation quantiser of Q4_0,
    # Q5_0 and Q8_0 dot products must agree with it.
    q8_in = (rng.standard_normal((8, 32)) * np.exp(rng.uniform(-6, 6, size=(8, 1)))).astype(np.float32)
    q8_in[0, :] = 0.0
    q8_out = quants.quantize(q8_in.reshape(1, -1), T.Q8_0).reshape(-1)

    doc = {
        "generator": "kernels/testdata/make_golden.py",
        "numpy": np.__version__,
        "gguf": importlib.metadata.version("gguf"),
        "seed": SEED,
        "dequantize": [
            {"type": name, "ggml_type": gt, "n": int(want.size), "raw": b64(raw), "want_f32_bits": b64(want.view(np.uint32))}
            for name, gt, raw, want in cases
        ],
        "f32_to_f16": {"in_f32_bits": b64(conv_in.view(np.uint32)), "want_f16_bits": b64(to_f16)},
        "f32_to_bf16": {"in_f32_bits": b64(conv_in.view(np.uint32)), "want_bf16_bits": b64(to_bf16)},
        "quantize_q8_0": {"in_f32_bits": b64(q8_in.view(np.uint32)), "want_raw": b64(q8_out)},
    }
    with open(OUT, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
