#!/usr/bin/env python3
"""PyTorch on the GPU, the peer of bench/encoder/gpu.sh: the torch.nn BERT of torch_bench.py loaded from the same
model.safetensors, on the ids of nlpd's CPU reference run (the first BATCH sequences of it), torch.inference_mode,
attention through F.scaled_dot_product_attention without a mask (every token is real: what transformers' sdpa path
does, so flash attention may run), TF32 allowed for fp32-tf32. One process for every dtype and batch (one import,
one load): prints one JSON line per row as soon as it is measured (a crash keeps the rows before it), a row that
fails as a "fail" line. Each row: WARMUP untimed runs, then RUNS timed runs, each ending in a device sync.
usage: torch_cuda.py MODEL_DIR REF_IDS REF_BATCH SEQ RUNS WARMUP DTYPES BATCHES OUTDIR [DEVICE]
DTYPES: comma list of fp16, bf16, fp32-tf32, fp32-strict; BATCHES: comma list; DEVICE: cuda (default) | cpu (a
check of this script on a machine without a GPU)"""
import json
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_bench import Bert, load_safetensors  # noqa: E402


def sdpa_forward(self, x, bias):
    """Layer.forward with fused attention; bias is None (no padding in the benchmark's batches)"""
    b, s, h = x.shape
    d = h // self.heads

    def split(t):
        return t.view(b, s, self.heads, d).transpose(1, 2)

    ctx = nn.functional.scaled_dot_product_attention(split(self.q(x)), split(self.k(x)), split(self.v(x)),
                                                     attn_mask=bias)
    x = self.ln1(self.o(ctx.transpose(1, 2).reshape(b, s, h)) + x)
    return self.ln2(self.out(nn.functional.gelu(self.i(x))) + x)


def main():
    model_dir, ids_file = sys.argv[1:3]
    ref_batch, seq, runs, warmup = (int(x) for x in sys.argv[3:7])
    dtypes = sys.argv[7].split(",")
    batches = [int(x) for x in sys.argv[8].split(",")]
    outdir = sys.argv[9]
    device = sys.argv[10] if len(sys.argv) > 10 else "cuda"
    raw = np.fromfile(ids_file, dtype="<i4").reshape(2, ref_batch, seq)
    if not raw[1].all():
        sys.exit("the reference ids have padding: the benchmark's torch peer assumes none")
    cfg = json.load(open(model_dir + "/config.json"))
    weights = load_safetensors(model_dir + "/model.safetensors")
    attention = "sdpa" if hasattr(nn.functional, "scaled_dot_product_attention") else "eager"  # torch >= 2.0
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for name in dtypes:
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(name, torch.float32)
        tf32 = name == "fp32-tf32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        try:
            m = Bert(cfg).eval()
            m.load(weights)
            if attention == "sdpa":
                for L in m.layers:
                    L.forward = sdpa_forward.__get__(L)
            m = m.to(device=device, dtype=dtype)
        except Exception as e:  # noqa: BLE001 (every failure is a row's failure, printed)
            for b in batches:
                print(json.dumps({"engine": f"torch {device}", "variant": "default", "dtype": name, "batch": b,
                                  "fail": f"loading: {type(e).__name__}: {e}"[:240]}), flush=True)
            continue
        for b in batches:
            row = {"engine": f"torch {device}", "variant": "default", "dtype": name, "batch": b}
            try:
                ids = torch.from_numpy(raw[0, :b].astype(np.int64)).to(device)
                x_mask = torch.ones_like(ids)
                times = []
                with torch.inference_mode():
                    for i in range(warmup + runs):
                        t = time.perf_counter()
                        logits = forward(m, ids, x_mask, attention)
                        sync()
                        if i >= warmup:
                            times.append(time.perf_counter() - t)
                out = logits.float().cpu().numpy().astype("<f4")
                path = f"{outdir}/logits-torch-{name}-b{b}.bin"
                out.tofile(path)
                med = statistics.median(times)
                row.update({"logits": path, "result": {"median_s": med, "times": times, "latency_ms": med * 1e3,
                                                       "torch": torch.__version__, "attention": attention,
                                                       "finite": bool(np.isfinite(out).all())}})
            except Exception as e:  # noqa: BLE001
                row["fail"] = f"{type(e).__name__}: {e}"[:240]
            print(json.dumps(row), flush=True)
        del m
        if device == "cuda":
            torch.cuda.empty_cache()


def forward(m, ids, mask, attention):
    """Bert.forward, with attention's additive mask left out under sdpa (no padding)"""
    if attention != "sdpa":
        return m(ids, mask)
    s = ids.shape[1]
    x = m.word(ids) + m.types(torch.zeros_like(ids)) + m.pos(torch.arange(s, device=ids.device).unsqueeze(0))
    x = m.ln(x)
    for layer in m.layers:
        x = layer(x, None)
    return m.cls(torch.tanh(m.pool(x[:, 0])))


if __name__ == "__main__":
    main()
