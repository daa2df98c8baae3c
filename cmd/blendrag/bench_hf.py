"""HF transformers baseline for `blendrag bench engine --hf-python PY`.

Reads {"model", "prompts": [[token ids]...], "rounds": [n per prompt],
"decode", "device"} as JSON on stdin and loads the GGUF with transformers
(which dequantises it; `gguf` must be importable), once per dtype. For
float32 and bfloat16 and each prompt it times a prefill of the prompt in one
forward (KV cache on) and `decode` greedy tokens one at a time over that cache
(end of generation ignored), like blendrag's bench; each timed span ends with
the argmax copied to the host, so the GPU's work is done. One warm-up round
per prompt first (CUDA kernels load and autotune), then the best of its
rounds. Prints {"version", "device_name", "prompts": [[{"dtype",
"prefill_tok_s", "decode_tok_s"}, ...] per prompt]} on stdout.
"""
import json, os, sys, time

import torch
import transformers
from transformers import AutoModelForCausalLM

req = json.load(sys.stdin)
device = req.get("device", "cuda")
path = req["model"]
name = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"


def once(model, ids):
    with torch.inference_mode():
        t0 = time.perf_counter()
        out = model(ids, use_cache=True)
        nxt = int(out.logits[0, -1].argmax())
        t1 = time.perf_counter()
        past = out.past_key_values
        for _ in range(req["decode"]):
            out = model(torch.tensor([[nxt]], device=device), past_key_values=past, use_cache=True)
            past = out.past_key_values
            nxt = int(out.logits[0, -1].argmax())
        t2 = time.perf_counter()
    return ids.shape[1] / (t1 - t0), req["decode"] / (t2 - t1)


prompts = [[] for _ in req["prompts"]]
for dtype in (torch.float32, torch.bfloat16):
    model = AutoModelForCausalLM.from_pretrained(
        os.path.dirname(path) or ".", gguf_file=os.path.basename(path), dtype=dtype).to(device).eval()
    for k, toks in enumerate(req["prompts"]):
        ids = torch.tensor([toks], dtype=torch.long, device=device)
        once(model, ids)  # warm-up
        best_p = best_d = 0.0
        for _ in range(max(req["rounds"][k], 1)):
            p, d = once(model, ids)
            best_p, best_d = max(best_p, p), max(best_d, d)
        prompts[k].append({"dtype": str(dtype).removeprefix("torch."), "prefill_tok_s": best_p, "decode_tok_s": best_d})
        print("hf %s %d tokens: prefill %.0f tok/s, decode %.1f tok/s" % (dtype, len(toks), best_p, best_d), file=sys.stderr, flush=True)
    del model
print(json.dumps({"version": "transformers %s, torch %s" % (transformers.__version__, torch.__version__),
                  "device_name": name, "prompts": prompts}))
