#!/usr/bin/env python3
"""The PyTorch baseline of bench/encoder: the same BERT shapes as a plain torch.nn model (no transformers), loaded
from the benchmark's model.safetensors, run on the same token ids with the same thread count. Prints the median
seconds per batch and the largest logit difference from nlpd's logits.
usage: torch_bench.py MODEL_DIR IDS_FILE NLPD_LOGITS BATCH SEQ RUNS THREADS [DEVICE [DTYPE]]
DEVICE cpu (default) | cuda; DTYPE fp32 | fp16 | bf16 | int8 (CPU: bf16 = autocast, int8 = quantize_dynamic on
oneDNN)"""
import contextlib
import json
import math
import statistics
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn


def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        b, e = v["data_offsets"]
        out[k] = torch.from_numpy(np.frombuffer(data[b:e], dtype="<f4").reshape(v["shape"]).copy())
    return out


class Layer(nn.Module):
    def __init__(self, h, heads, ffn, eps):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(h, h) for _ in range(4))
        self.ln1 = nn.LayerNorm(h, eps=eps)
        self.i = nn.Linear(h, ffn)
        self.out = nn.Linear(ffn, h)
        self.ln2 = nn.LayerNorm(h, eps=eps)

    def forward(self, x, bias):
        b, s, h = x.shape
        d = h // self.heads

        def split(t):
            return t.view(b, s, self.heads, d).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(d) + bias
        ctx = torch.matmul(torch.softmax(scores, dim=-1), v).transpose(1, 2).reshape(b, s, h)
        x = self.ln1(self.o(ctx) + x)
        return self.ln2(self.out(nn.functional.gelu(self.i(x))) + x)


class Bert(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        h = cfg["hidden_size"]
        eps = cfg["layer_norm_eps"]
        self.word = nn.Embedding(cfg["vocab_size"], h)
        self.pos = nn.Embedding(cfg["max_position_embeddings"], h)
        self.types = nn.Embedding(cfg["type_vocab_size"], h)
        self.ln = nn.LayerNorm(h, eps=eps)
        self.layers = nn.ModuleList(
            Layer(h, cfg["num_attention_heads"], cfg["intermediate_size"], eps) for _ in range(cfg["num_hidden_layers"])
        )
        self.pool = nn.Linear(h, h)
        self.cls = nn.Linear(h, len(cfg["id2label"]))

    def forward(self, ids, mask):
        s = ids.shape[1]
        x = self.word(ids) + self.types(torch.zeros_like(ids)) + self.pos(torch.arange(s, device=ids.device).unsqueeze(0))
        x = self.ln(x)
        bias = (1.0 - mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        for layer in self.layers:
            x = layer(x, bias)
        return self.cls(torch.tanh(self.pool(x[:, 0])))

    def load(self, w):
        def lin(m, name):
            m.weight.data.copy_(w[name + ".weight"])
            m.bias.data.copy_(w[name + ".bias"])

        self.word.weight.data.copy_(w["bert.embeddings.word_embeddings.weight"])
        self.pos.weight.data.copy_(w["bert.embeddings.position_embeddings.weight"])
        self.types.weight.data.copy_(w["bert.embeddings.token_type_embeddings.weight"])
        lin(self.ln, "bert.embeddings.LayerNorm")
        for i, L in enumerate(self.layers):
            p = f"bert.encoder.layer.{i}."
            lin(L.q, p + "attention.self.query")
            lin(L.k, p + "attention.self.key")
            lin(L.v, p + "attention.self.value")
            lin(L.o, p + "attention.output.dense")
            lin(L.ln1, p + "attention.output.LayerNorm")
            lin(L.i, p + "intermediate.dense")
            lin(L.out, p + "output.dense")
            lin(L.ln2, p + "output.LayerNorm")
        lin(self.pool, "bert.pooler.dense")
        lin(self.cls, "classifier")


def main():
    model_dir, ids_file, nlpd_logits = sys.argv[1:4]
    batch, seq, runs, threads = (int(x) for x in sys.argv[4:8])
    # optional: DEVICE (cpu | cuda) and DTYPE (fp32 | fp16 | bf16), for the GPU baseline of --backend cuda
    device = sys.argv[8] if len(sys.argv) > 8 else "cpu"
    # on the CPU: int8 = quantize_dynamic of every Linear on the oneDNN engine; bf16 = autocast (bf16 matmuls)
    name = sys.argv[9] if len(sys.argv) > 9 else "fp32"
    cpu_mode = name if device == "cpu" and name in ("int8", "bf16") else None
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "int8": torch.float32}[name]
    torch.set_num_threads(threads)
    cfg = json.load(open(model_dir + "/config.json"))
    m = Bert(cfg).eval()
    m.load(load_safetensors(model_dir + "/model.safetensors"))
    if cpu_mode == "int8":
        torch.backends.quantized.engine = "onednn"
        m = torch.ao.quantization.quantize_dynamic(m, {nn.Linear}, dtype=torch.qint8)
    elif cpu_mode is None:
        m = m.to(device=device, dtype=dtype)
    raw = np.fromfile(ids_file, dtype="<i4").reshape(2, batch, seq)
    ids = torch.from_numpy(raw[0].astype(np.int64)).to(device)
    mask = torch.from_numpy(raw[1].astype(np.int64)).to(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    times = []
    amp = torch.autocast("cpu", dtype=torch.bfloat16) if cpu_mode == "bf16" else contextlib.nullcontext()
    with torch.inference_mode(), amp:
        logits = m(ids, mask)  # warm-up
        sync()
        for _ in range(runs):
            t = time.perf_counter()
            logits = m(ids, mask)
            sync()
            times.append(time.perf_counter() - t)
    ref = np.fromfile(nlpd_logits, dtype="<f4").reshape(logits.shape)
    diff = float(np.abs(ref - logits.float().cpu().numpy()).max())
    print(json.dumps({"torch_median_s": statistics.median(times), "torch_times": times, "max_abs_diff": diff,
                      "torch": torch.__version__, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
