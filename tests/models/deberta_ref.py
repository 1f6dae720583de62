"""An independent float64 PyTorch reference of DeBERTa-v2 (DebertaV2ForSequence/TokenClassification semantics,
written from the model's definition, not from transformers' code), used to make small random checkpoints of the
config branches the hf-tiny fixtures do not reach: own position projections (share_att_key false), c2p or p2c
alone, no log buckets, clamped relative spans, no relative attention, absolute positions, token types and an
embedding projection. Writes OUT/NAME/{config.json, model.safetensors, golden.json} in the fixtures' golden
layout (batch, batch_logits, examples, debug_example0.hidden_states).
Usage: /usr/bin/python3 deberta_ref.py OUT   (Debian's python3-torch)"""
import json
import math
import os
import struct
import sys

import torch

torch.set_default_dtype(torch.float64)

VARIANTS = {
    # own pos_key_proj / pos_query_proj, log buckets reached (mid 4 < seq 40), clamp at both ends
    "own-proj-buckets": dict(task="seq", relative_attention=True, share_att_key=False, pos_att_type=["c2p", "p2c"],
                             position_buckets=8, max_relative_positions=32, norm_rel_ebd="layer_norm",
                             position_biased_input=False, type_vocab_size=0),
    # c2p only, shared keys, no buckets: raw i - j clamped to a span of 6
    "c2p-nobuckets": dict(task="token", relative_attention=True, share_att_key=True, pos_att_type="c2p",
                          position_buckets=-1, max_relative_positions=6, norm_rel_ebd="none",
                          position_biased_input=False, type_vocab_size=0),
    # p2c only, own projection, max_relative_positions -1 (= max_position_embeddings) under buckets of 16
    "p2c-maxpos": dict(task="seq", relative_attention=True, share_att_key=False, pos_att_type="p2c",
                       position_buckets=16, max_relative_positions=-1, norm_rel_ebd="layer_norm",
                       position_biased_input=False, type_vocab_size=0),
    # DeBERTa-v2 without relative attention: absolute positions, token types, embed_proj (embedding_size != hidden);
    # the scale still counts pos_att_type
    "absolute-proj": dict(task="seq", relative_attention=False, pos_att_type=["p2c", "c2p"],
                          position_biased_input=True, type_vocab_size=2, embedding_size=24),
}

H, HEADS, LAYERS, FFN, VOCAB, MAXPOS, NL = 16, 2, 2, 32, 64, 64, 3


def log_bucket(rel, buckets, maxpos):
    # float32, as DebertaV2 computes it
    sign = torch.sign(rel)
    mid = buckets // 2
    absr = torch.where((rel < mid) & (rel > -mid), torch.tensor(mid - 1), rel.abs())
    lp = torch.ceil(torch.log(absr.float() / mid) / torch.log(torch.tensor((maxpos - 1) / mid, dtype=torch.float32))
                    * (mid - 1)) + mid
    return torch.where(absr <= mid, rel.float(), lp * sign).long()


def ln(x, g, b, eps=1e-7):
    m = x.mean(-1, keepdim=True)
    v = ((x - m) ** 2).mean(-1, keepdim=True)
    return (x - m) / torch.sqrt(v + eps) * g + b


def gelu(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def make_weights(cfg, gen):
    E = cfg.get("embedding_size", H)
    W = {}

    def t(name, *shape, std=0.3):
        W[name] = torch.randn(*shape, generator=gen) * std

    def lin(name, o, i):
        t(name + ".weight", o, i)
        t(name + ".bias", o, std=0.1)

    def lnorm(name, n):
        W[name + ".weight"] = 1 + torch.randn(n, generator=gen) * 0.1
        W[name + ".bias"] = torch.randn(n, generator=gen) * 0.1

    p = "deberta."
    t(p + "embeddings.word_embeddings.weight", VOCAB, E, std=0.5)
    if cfg["position_biased_input"]:
        t(p + "embeddings.position_embeddings.weight", MAXPOS, E, std=0.5)
    if cfg["type_vocab_size"]:
        t(p + "embeddings.token_type_embeddings.weight", cfg["type_vocab_size"], E, std=0.5)
    if E != H:
        t(p + "embeddings.embed_proj.weight", H, E)
    lnorm(p + "embeddings.LayerNorm", H)
    if cfg["relative_attention"]:
        span = cfg["position_buckets"] if cfg["position_buckets"] > 0 else (
            cfg["max_relative_positions"] if cfg["max_relative_positions"] > 0 else MAXPOS)
        t(p + "encoder.rel_embeddings.weight", 2 * span, H, std=0.5)
        if cfg["norm_rel_ebd"] == "layer_norm":
            lnorm(p + "encoder.LayerNorm", H)
    pat = cfg["pos_att_type"]
    for i in range(LAYERS):
        lp = p + "encoder.layer.%d." % i
        for n in ("query_proj", "key_proj", "value_proj"):
            lin(lp + "attention.self." + n, H, H)
        if cfg["relative_attention"] and not cfg.get("share_att_key", False):
            if "c2p" in pat:
                lin(lp + "attention.self.pos_key_proj", H, H)
            if "p2c" in pat:
                lin(lp + "attention.self.pos_query_proj", H, H)
        lin(lp + "attention.output.dense", H, H)
        lnorm(lp + "attention.output.LayerNorm", H)
        lin(lp + "intermediate.dense", FFN, H)
        lin(lp + "output.dense", H, FFN)
        lnorm(lp + "output.LayerNorm", H)
    if cfg["task"] == "seq":
        lin("pooler.dense", H, H)
    lin("classifier", NL, H)
    return W


def forward(cfg, W, ids, mask, types):
    B, S = ids.shape
    p = "deberta."
    lin = lambda x, n: x @ W[n + ".weight"].T + W[n + ".bias"]
    x = W[p + "embeddings.word_embeddings.weight"][ids]
    if cfg["position_biased_input"]:
        x = x + W[p + "embeddings.position_embeddings.weight"][torch.arange(S)][None]
    if cfg["type_vocab_size"]:
        x = x + W[p + "embeddings.token_type_embeddings.weight"][types]
    if p + "embeddings.embed_proj.weight" in W:
        x = x @ W[p + "embeddings.embed_proj.weight"].T
    x = ln(x, W[p + "embeddings.LayerNorm.weight"], W[p + "embeddings.LayerNorm.bias"]) * mask[..., None]
    hidden = [x]
    pat = cfg["pos_att_type"]
    c2p, p2c = "c2p" in pat, "p2c" in pat
    D = H // HEADS
    scale = math.sqrt(D * (1 + c2p + p2c))
    rel_on = cfg["relative_attention"]
    if rel_on:
        maxrel = cfg["max_relative_positions"] if cfg["max_relative_positions"] > 0 else MAXPOS
        span = cfg["position_buckets"] if cfg["position_buckets"] > 0 else maxrel
        rel = torch.arange(S)[:, None] - torch.arange(S)[None, :]
        if cfg["position_buckets"] > 0:
            rel = log_bucket(rel, cfg["position_buckets"], maxrel)
        R = W[p + "encoder.rel_embeddings.weight"]
        if cfg["norm_rel_ebd"] == "layer_norm":
            R = ln(R, W[p + "encoder.LayerNorm.weight"], W[p + "encoder.LayerNorm.bias"])
        c2p_idx = torch.clamp(rel + span, 0, 2 * span - 1)  # [i, j]
        p2c_idx = torch.clamp(-rel + span, 0, 2 * span - 1)  # [j, i] read transposed below
    pair = (mask[:, None, :, None] * mask[:, None, None, :]).bool()
    heads = lambda t: t.view(t.shape[0], -1, HEADS, D).transpose(1, 2)
    for i in range(LAYERS):
        lp = p + "encoder.layer.%d." % i
        q = heads(lin(x, lp + "attention.self.query_proj"))
        k = heads(lin(x, lp + "attention.self.key_proj"))
        v = heads(lin(x, lp + "attention.self.value_proj"))
        s = q @ k.transpose(-1, -2) / scale
        if rel_on:
            share = cfg.get("share_att_key", False)
            if c2p:
                pk = heads(lin(R[None], lp + ("attention.self.key_proj" if share else "attention.self.pos_key_proj")))
                full = q @ pk.transpose(-1, -2)  # [B, h, S, 2span]
                s = s + torch.gather(full, -1, c2p_idx[None, None].expand(B, HEADS, S, S)) / scale
            if p2c:
                pq = heads(lin(R[None], lp + ("attention.self.query_proj" if share else "attention.self.pos_query_proj")))
                full = k @ pq.transpose(-1, -2)  # [B, h, S(key), 2span]
                s = s + torch.gather(full, -1, p2c_idx[None, None].expand(B, HEADS, S, S)).transpose(-1, -2) / scale
        s = s.masked_fill(~pair, -1e300)
        a = torch.softmax(s, -1).masked_fill(~pair, 0)
        ctx = (a @ v).transpose(1, 2).reshape(B, S, H)
        att = ln(lin(ctx, lp + "attention.output.dense") + x, W[lp + "attention.output.LayerNorm.weight"],
                 W[lp + "attention.output.LayerNorm.bias"])
        x = ln(lin(gelu(lin(att, lp + "intermediate.dense")), lp + "output.dense") + att,
               W[lp + "output.LayerNorm.weight"], W[lp + "output.LayerNorm.bias"])
        hidden.append(x)
    if cfg["task"] == "seq":
        logits = lin(gelu(lin(x[:, 0], "pooler.dense")), "classifier")
    else:
        logits = lin(x, "classifier")
    return logits, hidden


def write_safetensors(path, W):
    header, blobs, off = {}, [], 0
    for k in sorted(W):
        a = W[k].to(torch.float32).contiguous()
        b = a.numpy().tobytes()
        header[k] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def main():
    out = sys.argv[1]
    for vi, (name, cfg) in enumerate(sorted(VARIANTS.items())):
        gen = torch.Generator().manual_seed(4200 + vi)
        W = make_weights(cfg, gen)
        # weights are stored as float32: compute from exactly those values
        W = {k: v.to(torch.float32).to(torch.float64) for k, v in W.items()}
        lens = [40, 3, 17, 29] if cfg["task"] == "seq" else [23, 40, 6]
        B, S = len(lens), max(lens)
        ids = torch.zeros(B, S, dtype=torch.long)
        mask = torch.zeros(B, S, dtype=torch.long)
        types = torch.zeros(B, S, dtype=torch.long)
        for b, n in enumerate(lens):
            ids[b, :n] = torch.randint(1, VOCAB, (n,), generator=gen)
            mask[b, :n] = 1
            types[b, n // 2:n] = 1 if cfg["type_vocab_size"] else 0
        logits, _ = forward(cfg, W, ids, mask, types)
        examples = []
        for b, n in enumerate(lens):
            l1, h1 = forward(cfg, W, ids[b:b + 1, :n], mask[b:b + 1, :n], types[b:b + 1, :n])
            examples.append({"input_ids": ids[b, :n].tolist(), "token_type_ids": types[b, :n].tolist(),
                             "logits": l1[0].tolist()})
            if b == 0:
                debug = {"hidden_states": [h[0].tolist() for h in h1]}
        config = {"model_type": "deberta-v2", "architectures": [
            "DebertaV2ForSequenceClassification" if cfg["task"] == "seq" else "DebertaV2ForTokenClassification"],
            "hidden_size": H, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS, "intermediate_size": FFN,
            "vocab_size": VOCAB, "max_position_embeddings": MAXPOS, "layer_norm_eps": 1e-7, "hidden_act": "gelu",
            "pad_token_id": 0, "id2label": {str(i): "L%d" % i for i in range(NL)}}
        for k in ("relative_attention", "share_att_key", "pos_att_type", "position_buckets", "max_relative_positions",
                  "norm_rel_ebd", "position_biased_input", "type_vocab_size", "embedding_size"):
            if k in cfg:
                config[k] = cfg[k]
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        json.dump(config, open(os.path.join(d, "config.json"), "w"), indent=1)
        write_safetensors(os.path.join(d, "model.safetensors"), W)
        golden = {"generator": "tests/models/deberta_ref.py (float64 PyTorch, independent of transformers)",
                  "batch": {"input_ids": ids.tolist(), "attention_mask": mask.tolist(),
                            "token_type_ids": types.tolist()},
                  "batch_logits": logits.tolist(), "examples": examples, "debug_example0": debug}
        json.dump(golden, open(os.path.join(d, "golden.json"), "w"))
        print(name, "ok")


if __name__ == "__main__":
    main()
