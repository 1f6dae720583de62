#!/usr/bin/env python3
"""Writes a random-weight BertForSequenceClassification folder (config.json + model.safetensors, F32) with the
tensor names transformers saves, for the encoder benchmark; --arch deberta writes a DeBERTa-v3-shaped
DebertaV2ForSequenceClassification of the same sizes instead (relative attention c2p|p2c, position_buckets 256,
shared keys, normalised relative embeddings, no absolute positions or token types). Needs only numpy.
usage: gen_model.py OUTDIR [--arch bert|deberta --layers 12 --hidden 768 --heads 12 --ffn 3072 --vocab 30522
       --labels 2 --seed 1]"""
import argparse
import json
import os
import struct

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir")
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--ffn", type=int, default=3072)
    ap.add_argument("--vocab", type=int, default=30522)
    ap.add_argument("--max-pos", type=int, default=512)
    ap.add_argument("--labels", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--arch", choices=("bert", "deberta"), default="bert")
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    H, I = a.hidden, a.ffn
    shapes = {
        "bert.embeddings.word_embeddings.weight": (a.vocab, H),
        "bert.embeddings.position_embeddings.weight": (a.max_pos, H),
        "bert.embeddings.token_type_embeddings.weight": (2, H),
        "bert.embeddings.LayerNorm.weight": (H,),
        "bert.embeddings.LayerNorm.bias": (H,),
        "bert.pooler.dense.weight": (H, H),
        "bert.pooler.dense.bias": (H,),
        "classifier.weight": (a.labels, H),
        "classifier.bias": (a.labels,),
    }
    deb = a.arch == "deberta"
    if deb:
        shapes = {k.replace("bert.", "deberta.", 1).replace("deberta.pooler", "pooler"): v for k, v in shapes.items()
                  if "position_embeddings" not in k and "token_type" not in k}
        shapes["deberta.encoder.rel_embeddings.weight"] = (2 * 256, H)
        shapes["deberta.encoder.LayerNorm.weight"] = (H,)
        shapes["deberta.encoder.LayerNorm.bias"] = (H,)
    for i in range(a.layers):
        p = f"deberta.encoder.layer.{i}." if deb else f"bert.encoder.layer.{i}."
        qkv = ("query_proj", "key_proj", "value_proj") if deb else ("query", "key", "value")
        for n in tuple("attention.self." + x for x in qkv) + ("attention.output.dense",):
            shapes[p + n + ".weight"] = (H, H)
            shapes[p + n + ".bias"] = (H,)
        shapes[p + "intermediate.dense.weight"] = (I, H)
        shapes[p + "intermediate.dense.bias"] = (I,)
        shapes[p + "output.dense.weight"] = (H, I)
        shapes[p + "output.dense.bias"] = (H,)
        for n in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[p + n + ".weight"] = (H,)
            shapes[p + n + ".bias"] = (H,)
    header = {"__metadata__": {"format": "pt"}}
    off = 0
    names = sorted(shapes)
    for n in names:
        size = int(np.prod(shapes[n])) * 4
        header[n] = {"dtype": "F32", "shape": list(shapes[n]), "data_offsets": [off, off + size]}
        off += size
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * ((8 - len(hb) % 8) % 8)
    os.makedirs(a.outdir, exist_ok=True)
    with open(os.path.join(a.outdir, "model.safetensors.tmp"), "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for n in names:
            s = shapes[n]
            if n.endswith("LayerNorm.weight"):
                t = 1.0 + 0.1 * rng.standard_normal(s)
            elif len(s) == 1:
                t = 0.02 * rng.standard_normal(s)
            else:
                t = 0.02 * rng.standard_normal(s)
            f.write(np.ascontiguousarray(t, dtype="<f4").tobytes())
    os.replace(os.path.join(a.outdir, "model.safetensors.tmp"), os.path.join(a.outdir, "model.safetensors"))
    config = {
        "architectures": ["BertForSequenceClassification"],
        "model_type": "bert",
        "vocab_size": a.vocab,
        "hidden_size": H,
        "num_hidden_layers": a.layers,
        "num_attention_heads": a.heads,
        "intermediate_size": I,
        "hidden_act": "gelu",
        "max_position_embeddings": a.max_pos,
        "type_vocab_size": 2,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0,
        "id2label": {str(i): f"LABEL_{i}" for i in range(a.labels)},
        "label2id": {f"LABEL_{i}": i for i in range(a.labels)},
    }
    with open(os.path.join(a.outdir, "config.json"), "w") as f:
        if deb:
            config.update({"architectures": ["DebertaV2ForSequenceClassification"], "model_type": "deberta-v2",
                           "type_vocab_size": 0, "layer_norm_eps": 1e-7, "relative_attention": True,
                           "position_buckets": 256, "max_relative_positions": -1, "pos_att_type": ["p2c", "c2p"],
                           "share_att_key": True, "norm_rel_ebd": "layer_norm", "position_biased_input": False,
                           "pooler_hidden_size": H, "pooler_hidden_act": "gelu"})
        json.dump(config, f, indent=2)


if __name__ == "__main__":
    main()
