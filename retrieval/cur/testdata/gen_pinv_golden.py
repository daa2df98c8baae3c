"""Generates pinv_golden.json: u = c · pinv(W, rcond) by numpy, the oracle for
cur.solve. W (6 × 10) has singular values spread from 1 down to 1e-9, so the
relative cut-off decides which directions are inverted. c is float32-valued
(the cross-encoder returns float32). Run: python3 gen_pinv_golden.py
"""
import json

import numpy as np

rng = np.random.default_rng(20261126)
kq, ki = 6, 10
u, _ = np.linalg.qr(rng.standard_normal((kq, kq)))
v, _ = np.linalg.qr(rng.standard_normal((ki, kq)))
sigma = np.array([1.0, 0.5, 1e-2, 1e-5, 1e-7, 1e-9])
w = (u * sigma) @ v.T
c = rng.standard_normal(ki).astype(np.float32).astype(np.float64)
cases = []
for rcond in [1e-6, 1e-3, 1e-12]:
    cases.append({"rcond": rcond, "u": (c @ np.linalg.pinv(w, rcond=rcond)).tolist()})
with open("pinv_golden.json", "w") as f:
    json.dump({"numpy": np.__version__, "w": w.tolist(), "c": c.tolist(), "cases": cases}, f, indent=1)
