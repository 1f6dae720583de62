#!/usr/bin/env python3
"""The PyTorch baseline of bench/translate: a Marian (OPUS-MT) encoder-decoder as plain torch.nn code (no
transformers), loaded from the benchmark's model.safetensors, translating the same source ids with the same
generation settings and thread count as `nlpd infer`.

The math is MarianMTModel's: embeddings scaled by sqrt(d_model) plus static sinusoidal positions (sin half, cos
half), post-LN encoder and decoder layers, q scaled by head_dim^-0.5 after its projection, the activation named by
config.json (swish for OPUS-MT), lm_head tied to model.shared plus final_logits_bias. Decoding keeps a KV cache:
the cross-attention keys/values are computed once per batch, the self-attention keys/values of each new token are
written into a preallocated cache (reordered by index on every beam step). Pad is never generated (bad_words_ids),
eos is banned until max_length (min_length = max_length), no forced eos: every sentence gets max_length - 1 target
tokens. Greedy: argmax. Beam search: log_softmax + running beam scores, the top 2K candidates per sentence, the
first K that are not eos continue; the best of the K finished beams is returned (all have the same length).

usage: torch_translate.py MODEL_DIR SOURCES.jsonl BATCH MAX_LENGTH THREADS OUT_PREFIX K[:N] [K[:N] ...]
  Sentences go through in input order, BATCH at a time (right-padded with pad + attention mask). For each K (beams;
  1: greedy): one timed pass over the first N sentences (default: all) after a small warm-up, the ids written to
  OUT_PREFIX-beamsK.jsonl.
  Prints one JSON line {"beams": {"K": seconds}, "target_tokens": {"K": n}, "threads", "torch"}."""
import json
import os
import math
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

NEG = float(torch.finfo(torch.float32).min)


def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        dt = {"F32": "<f4", "F16": "<f2"}[v["dtype"]]
        b, e = v["data_offsets"]
        out[k] = torch.from_numpy(np.frombuffer(data[b:e], dtype=dt).astype(np.float32).reshape(v["shape"]))
    return out


def sinusoids(n_pos, d):
    """Marian's static positions: angle pos / 10000^(2*(j//2)/d) in double, sin of the even j in the first half,
    cos of the odd j in the second half, then float32."""
    j = np.arange(d)
    ang = np.arange(n_pos)[:, None] / np.power(10000.0, 2 * (j // 2) / d)[None, :]
    return torch.from_numpy(np.concatenate([np.sin(ang[:, 0::2]), np.cos(ang[:, 1::2])], axis=1).astype(np.float32))


ACT = {"swish": F.silu, "silu": F.silu, "relu": F.relu, "gelu": F.gelu}


class Attention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.h, self.hd = heads, d // heads
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))

    def split(self, x):  # [N, T, d] -> [N, h, T, hd]
        return x.view(x.shape[0], x.shape[1], self.h, self.hd).transpose(1, 2)

    def attend(self, q, k, v, mask):  # q [N,h,Tq,hd], k/v [N,h,S,hd], mask additive [N,1,1,S] or None
        w = torch.matmul(q, k.transpose(-1, -2))
        if mask is not None:
            w = w + mask
        o = torch.matmul(torch.softmax(w, dim=-1), v).transpose(1, 2)
        return self.o(o.reshape(o.shape[0], o.shape[1], self.h * self.hd))


class EncLayer(nn.Module):
    def __init__(self, d, heads, ffn, act):
        super().__init__()
        self.att = Attention(d, heads)
        self.ln1 = nn.LayerNorm(d)
        self.fc1, self.fc2 = nn.Linear(d, ffn), nn.Linear(ffn, d)
        self.ln2 = nn.LayerNorm(d)
        self.act = act

    def forward(self, x, mask):
        a = self.att
        q = a.split(a.q(x) * a.hd ** -0.5)
        x = self.ln1(x + a.attend(q, a.split(a.k(x)), a.split(a.v(x)), mask))
        return self.ln2(x + self.fc2(self.act(self.fc1(x))))


class DecLayer(nn.Module):
    def __init__(self, d, heads, ffn, act):
        super().__init__()
        self.self_att, self.cross = Attention(d, heads), Attention(d, heads)
        self.ln1, self.ln2, self.ln3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.fc1, self.fc2 = nn.Linear(d, ffn), nn.Linear(ffn, d)
        self.act = act

    def step(self, x, t, cache_k, cache_v, cross_k, cross_v, cross_mask):
        """x [N,1,d] at position t; writes its key/value into the cache at t."""
        a = self.self_att
        q = a.split(a.q(x) * a.hd ** -0.5)
        cache_k[:, :, t:t + 1] = a.split(a.k(x))
        cache_v[:, :, t:t + 1] = a.split(a.v(x))
        x = self.ln1(x + a.attend(q, cache_k[:, :, :t + 1], cache_v[:, :, :t + 1], None))
        c = self.cross
        x = self.ln2(x + c.attend(c.split(c.q(x) * c.hd ** -0.5), cross_k, cross_v, cross_mask))
        return self.ln3(x + self.fc2(self.act(self.fc1(x))))


class Marian(nn.Module):
    def __init__(self, cfg, w):
        super().__init__()
        d, act = cfg["d_model"], ACT[cfg["activation_function"]]
        self.d, self.heads = d, cfg["decoder_attention_heads"]
        self.scale = math.sqrt(d) if cfg.get("scale_embedding", False) else 1.0
        self.pad, self.eos, self.start = cfg["pad_token_id"], cfg["eos_token_id"], cfg["decoder_start_token_id"]
        self.enc = nn.ModuleList(EncLayer(d, cfg["encoder_attention_heads"], cfg["encoder_ffn_dim"], act)
                                 for _ in range(cfg["encoder_layers"]))
        self.dec = nn.ModuleList(DecLayer(d, self.heads, cfg["decoder_ffn_dim"], act)
                                 for _ in range(cfg["decoder_layers"]))
        self.emb = w["model.shared.weight"]  # shared encoder/decoder embeddings, tied lm_head
        self.flb = w["final_logits_bias"].reshape(-1)
        self.pos = sinusoids(cfg["max_position_embeddings"], d)

        def put(m, p):
            m.weight.data.copy_(w[p + ".weight"])
            m.bias.data.copy_(w[p + ".bias"])

        def att(a, p):
            for name, m in (("q_proj", a.q), ("k_proj", a.k), ("v_proj", a.v), ("out_proj", a.o)):
                put(m, p + "." + name)

        for i, L in enumerate(self.enc):
            p = "model.encoder.layers.%d." % i
            att(L.att, p + "self_attn")
            put(L.ln1, p + "self_attn_layer_norm")
            put(L.fc1, p + "fc1")
            put(L.fc2, p + "fc2")
            put(L.ln2, p + "final_layer_norm")
        for i, L in enumerate(self.dec):
            p = "model.decoder.layers.%d." % i
            att(L.self_att, p + "self_attn")
            put(L.ln1, p + "self_attn_layer_norm")
            att(L.cross, p + "encoder_attn")
            put(L.ln2, p + "encoder_attn_layer_norm")
            put(L.fc1, p + "fc1")
            put(L.fc2, p + "fc2")
            put(L.ln3, p + "final_layer_norm")

    def encode(self, ids, mask):
        x = F.embedding(ids, self.emb) * self.scale + self.pos[:ids.shape[1]]
        for L in self.enc:
            x = L(x, mask)
        return x

    def generate(self, srcs, max_length, beams):
        """srcs: lists of ids. Returns the best sequence per source, decoder start first, max_length ids."""
        B, S = len(srcs), max(len(s) for s in srcs)
        ids = torch.full((B, S), self.pad, dtype=torch.long)
        keep = torch.zeros(B, S, dtype=torch.bool)
        for i, s in enumerate(srcs):
            ids[i, :len(s)] = torch.tensor(s)
            keep[i, :len(s)] = True
        mask = torch.zeros(B, 1, 1, S).masked_fill(~keep[:, None, None, :], NEG)
        enc = self.encode(ids, mask)
        K = beams
        N = B * K
        if K > 1:  # beams of a sentence share its encoder output: expand once (beam-major inside a sentence)
            enc = enc.repeat_interleave(K, dim=0)
            mask = mask.repeat_interleave(K, dim=0)
        cross = []
        for L in self.dec:  # cross-attention keys/values once per batch
            c = L.cross
            cross.append((c.split(c.k(enc)), c.split(c.v(enc))))
        T = max_length - 1
        hd = self.d // self.heads
        cache = [(torch.empty(N, self.heads, T, hd), torch.empty(N, self.heads, T, hd)) for _ in self.dec]
        tok = torch.full((N,), self.start, dtype=torch.long)
        out = torch.empty(N, max_length, dtype=torch.long)
        out[:, 0] = self.start
        scores = torch.zeros(B, K)
        scores[:, 1:] = -1e9  # the K start beams are identical: only the first one expands at step 0
        base = (torch.arange(B) * K)[:, None]
        for t in range(T):
            x = F.embedding(tok, self.emb)[:, None, :] * self.scale + self.pos[t]
            for L, (ck, cv), (xk, xv) in zip(self.dec, cache, cross):
                x = L.step(x, t, ck, cv, xk, xv, mask)
            logits = F.linear(x[:, 0], self.emb) + self.flb
            if K == 1:
                logits[:, self.pad] = -math.inf  # bad_words_ids [[pad]]
                logits[:, self.eos] = -math.inf  # min_length: no eos before max_length
                tok = logits.argmax(-1)
                out[:, t + 1] = tok
                continue
            lp = torch.log_softmax(logits, dim=-1)
            lp[:, self.pad] = -math.inf
            lp[:, self.eos] = -math.inf
            V = lp.shape[1]
            cand = (lp + scores.reshape(N, 1)).view(B, K * V)
            top, idx = torch.topk(cand, 2 * K, dim=1)  # 2K candidates, best first
            # the first K candidates that do not end in eos continue (eos is banned here, so: the first K)
            rank = torch.arange(2 * K).expand(B, -1).masked_fill(idx % V == self.eos, 4 * K)
            pick = torch.topk(rank, K, dim=1, largest=False).indices.sort(dim=1).values
            scores = top.gather(1, pick)
            idx = idx.gather(1, pick)
            src = (base + idx // V).reshape(N)  # which beam row each new beam continues
            tok = (idx % V).reshape(N)
            out[:, :t + 1] = out[src, :t + 1]
            out[:, t + 1] = tok
            for ck, cv in cache:  # reorder the self-attention cache (the positions written so far)
                ck[:, :, :t + 1] = ck[src, :, :t + 1]
                cv[:, :, :t + 1] = cv[src, :, :t + 1]
        if K == 1:
            return out.tolist()
        best = scores.argmax(dim=1)  # equal lengths: the length penalty does not change the order
        return out[(base[:, 0] + best)].tolist()


def main():
    model_dir, src_file = sys.argv[1:3]
    batch, max_length, threads = (int(x) for x in sys.argv[3:6])
    prefix = sys.argv[6]
    specs = [(int(x.split(":")[0]), int(x.split(":")[1]) if ":" in x else None) for x in sys.argv[7:]]
    torch.set_num_threads(threads)
    cfg = json.load(open(model_dir + "/config.json"))
    srcs = [json.loads(x)["input_ids"] for x in open(src_file) if x.strip()]
    with torch.inference_mode():
        m = Marian(cfg, load_safetensors(model_dir + "/model.safetensors")).eval()
        if os.environ.get("TORCH_DTYPE") == "int8":  # quantize_dynamic (oneDNN engine) of every nn.Linear
            torch.backends.quantized.engine = "onednn"
            m = torch.ao.quantization.quantize_dynamic(m, {nn.Linear}, dtype=torch.qint8)
        res = {"beams": {}, "target_tokens": {}}
        for K, n in specs:
            chosen = srcs[:n]
            m.generate(chosen[:2], 3, K)  # warm-up: first-call allocations
            outs = []
            t0 = time.perf_counter()
            for i in range(0, len(chosen), batch):
                outs += m.generate(chosen[i:i + batch], max_length, K)
            res["beams"][str(K)] = time.perf_counter() - t0
            res["target_tokens"][str(K)] = sum(len(o) - 1 for o in outs)
            with open("%s-beams%d.jsonl" % (prefix, K), "w") as f:
                for o in outs:
                    f.write(json.dumps({"output_ids": o}) + "\n")
    res.update(threads=torch.get_num_threads(), torch=torch.__version__)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
