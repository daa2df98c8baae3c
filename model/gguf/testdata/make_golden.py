#!/usr/bin/env python3
"""Regenerate smollm2_golden.json: the tensor directory and selected metadata
of SmolLM2-135M-Instruct.Q4_1.gguf as read by the PyPI `gguf` package's
GGUFReader (an independent reference for model/gguf's parser).

Usage: python3 make_golden.py [path/to/SmolLM2-135M-Instruct.Q4_1.gguf]
Default path: $BLENDRAG_MODELS (or ~/.cache/blendrag/models) + the file name.
Writes smollm2_golden.json next to this script. The Go test never runs this.

String arrays are summarised by a SHA-256 over, for each element, its byte
length as a little-endian uint64 followed by its raw bytes; integer and float
arrays by a SHA-256 of their little-endian element bytes.
"""
import hashlib
import json
import os
import struct
import sys

import gguf
import numpy as np

NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_path():
    root = os.environ.get("BLENDRAG_MODELS") or os.path.join(
        os.path.expanduser("~"), ".cache", "blendrag", "models")
    return os.path.join(root, NAME)


def type_name(field):
    names = [gguf.GGUFValueType(t).name.lower() for t in field.types]
    return "[".join(names) + "]" * (len(names) - 1)


def field_json(field):
    t0 = field.types[0]
    out = {"type": type_name(field)}
    if t0 == gguf.GGUFValueType.ARRAY:
        et = field.types[1] if len(field.types) > 1 else None
        out["len"] = len(field.data)
        elems = [field.parts[i] for i in field.data]
        h = hashlib.sha256()
        if et == gguf.GGUFValueType.STRING:
            raw = [bytes(e) for e in elems]
            for b in raw:
                h.update(struct.pack("<Q", len(b)))
                h.update(b)
            if len(raw) <= 16:
                out["value"] = [b.decode("utf-8") for b in raw]
            else:
                out["head"] = [b.decode("utf-8") for b in raw[:5]]
                out["tail"] = [b.decode("utf-8") for b in raw[-5:]]
        elif et is not None and et != gguf.GGUFValueType.ARRAY:
            for e in elems:
                h.update(np.asarray(e).astype(np.asarray(e).dtype.newbyteorder("<")).tobytes())
            vals = [e.tolist()[0] for e in elems]
            if len(vals) <= 16:
                out["value"] = vals
            else:
                out["head"] = vals[:5]
                out["tail"] = vals[-5:]
        out["sha256"] = h.hexdigest()
    elif t0 == gguf.GGUFValueType.STRING:
        out["value"] = bytes(field.parts[field.data[0]]).decode("utf-8")
    else:
        out["value"] = field.parts[field.data[0]].tolist()[0]
    return out


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else default_path()
    r = gguf.GGUFReader(path)
    meta = {}
    keys = []
    for k, f in r.fields.items():
        if k.startswith("GGUF."):
            continue
        keys.append(k)
        meta[k] = field_json(f)
    tensors = [{
        "name": t.name,
        "dims": [int(d) for d in t.shape],
        "type": int(t.tensor_type),
        "type_name": t.tensor_type.name,
        "offset": int(t.data_offset - r.data_offset),
        "size": int(t.n_bytes),
        "elements": int(t.n_elements),
    } for t in r.tensors]
    golden = {
        "file": NAME,
        "file_size": os.path.getsize(path),
        "gguf_py_version": getattr(gguf, "__version__", None) or _pkg_version(),
        "version": int(r.fields["GGUF.version"].parts[0][0]),
        "alignment": int(r.alignment),
        "data_offset": int(r.data_offset),
        "keys": keys,
        "metadata": meta,
        "tensors": tensors,
    }
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "smollm2_golden.json")
    with open(out, "w") as fh:
        json.dump(golden, fh, indent=1, ensure_ascii=False)
        fh.write("\n")
    print(f"wrote {out}: {len(keys)} keys, {len(tensors)} tensors")


def _pkg_version():
    try:
        from importlib.metadata import version
        return version("gguf")
    except Exception:
        return None


if __name__ == "__main__":
    main()
