"""Writes testdata/small.safetensors and testdata/small.json for the Go tests.

The file is written by the reference implementation (the PyPI `safetensors`
package, with numpy and torch for the bfloat16 tensor); the JSON holds each
tensor's dtype, shape and values as float64, computed by numpy/torch from the
same arrays, so the Go reader is checked against an independent writer.

Run: /opt/st/bin/python testdata/make_golden.py   (from model/bert/safetensors)
"""
import json

import numpy as np
import torch
from safetensors.torch import save_file

rng = np.random.default_rng(7)
tensors = {
    "f32.matrix": torch.from_numpy(rng.standard_normal((3, 5)).astype(np.float32)),
    "f16.vector": torch.from_numpy(rng.standard_normal(7).astype(np.float16)),
    "bf16.cube": torch.from_numpy(rng.standard_normal((2, 2, 3)).astype(np.float32)).to(torch.bfloat16),
    "f64.scalar": torch.tensor(np.pi, dtype=torch.float64),
    "i64.ids": torch.arange(4, dtype=torch.int64),
    "f32.empty": torch.zeros((0, 4), dtype=torch.float32),
}
save_file(tensors, "testdata/small.safetensors", metadata={"format": "pt", "note": "golden"})

names = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64", torch.int64: "I64"}
golden = {
    "metadata": {"format": "pt", "note": "golden"},
    "tensors": {
        k: {"dtype": names[v.dtype], "shape": list(v.shape), "values": v.to(torch.float64).flatten().tolist()}
        for k, v in tensors.items()
    },
}
with open("testdata/small.json", "w") as f:
    json.dump(golden, f, indent=1)
