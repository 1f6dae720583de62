#!/usr/bin/python3
"""make_marian.py - write a random MarianMTModel folder (config.json, generation_config.json, model.safetensors).

The layout is what transformers 4.47 `MarianMTModel.save_pretrained` writes (see the hf-tiny fixture
/work/shared/fixtures/hf-tiny/marian-mt, golden.json "safetensors_tensors"):
  final_logits_bias [1, V]
  model.shared.weight [V, d]                                  (share_encoder_decoder_embeddings, the default)
  model.encoder.embed_tokens.weight / model.decoder.embed_tokens.weight [V, d]   (--no-share instead)
  lm_head.weight [V, d]                                       (only with --untied: tie_word_embeddings false;
                                                               tied heads are not stored, like HF dedup)
  model.{encoder,decoder}.layers.N.self_attn.{q,k,v,out}_proj.{weight [d,d], bias [d]}
  model.decoder.layers.N.encoder_attn.{q,k,v,out}_proj.{weight,bias}
  model.{encoder,decoder}.layers.N.{self_attn,encoder_attn(decoder only),final}_layer_norm.{weight,bias} [d]
  model.{encoder,decoder}.layers.N.fc1.{weight [ffn,d], bias [ffn]}, fc2.{weight [d,ffn], bias [d]}
Static sinusoidal positions are not stored (HF _keys_to_ignore_on_save).  Special ids follow the fixture:
</s> = 0, <unk> = 1, <pad> = decoder_start = V-1.  The pad row of each embedding is zero, as HF's
nn.Embedding(padding_idx) init leaves it.

Weights: linear/embedding N(0, std) (std ~0.5 like the fixture, so outputs are not degenerate); biases,
final_logits_bias and LayerNorm bias N(0, 0.1); LayerNorm weight 1 + N(0, 0.1).  Deterministic: one
numpy Generator(seed), tensors drawn in sorted-name order.  safetensors: u64-LE header length, JSON header
with __metadata__ {"format":"pt"} padded with spaces to a multiple of 8, tensors in name order.

Usage (use /usr/bin/python3; only numpy is needed):
  make_marian.py --out DIR [--seed 1] [--d-model 32] [--layers 2 2] [--heads 4] [--ffn 64] [--vocab 1000]
                 [--activation swish|silu|gelu|relu|gelu_new] [--tied | --untied] [--no-share]
                 [--max-pos 64] [--std 0.5] [--dtype f32|f16] [--eos-bias X] [--pad-bias X] [--renormalize]
                 [--num-beams K] [--gen-max-length N] [--no-bad-words] [--no-forced-eos]
  generation_config.json gets bad_words_ids [[pad]], forced_eos_token_id 0, eos 0, pad/decoder_start V-1
  (as OPUS-MT checkpoints have), plus num_beams / max_length when given.
"""

import argparse
import json
import os
import struct
import sys

import numpy as np


def tensor_specs(d, enc_layers, dec_layers, ffn, vocab, untied, no_share):
    """[(name, shape, kind)] with kind in w (weight), b (bias), lnw, lnb, emb, flb."""
    specs = [("final_logits_bias", (1, vocab), "flb")]
    if no_share:
        specs += [("model.encoder.embed_tokens.weight", (vocab, d), "emb"),
                  ("model.decoder.embed_tokens.weight", (vocab, d), "emb")]
    else:
        specs += [("model.shared.weight", (vocab, d), "emb")]
    if untied:
        specs += [("lm_head.weight", (vocab, d), "w")]
    for side, n in (("encoder", enc_layers), ("decoder", dec_layers)):
        for i in range(n):
            p = "model.%s.layers.%d." % (side, i)
            for att in (["self_attn"] + (["encoder_attn"] if side == "decoder" else [])):
                for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
                    specs += [(p + att + "." + proj + ".weight", (d, d), "w"),
                              (p + att + "." + proj + ".bias", (d,), "b")]
                specs += [(p + att + "_layer_norm.weight", (d,), "lnw"),
                          (p + att + "_layer_norm.bias", (d,), "lnb")]
            specs += [(p + "fc1.weight", (ffn, d), "w"), (p + "fc1.bias", (ffn,), "b"),
                      (p + "fc2.weight", (d, ffn), "w"), (p + "fc2.bias", (d,), "b"),
                      (p + "final_layer_norm.weight", (d,), "lnw"), (p + "final_layer_norm.bias", (d,), "lnb")]
    return sorted(specs)


def write_safetensors(path, tensors, dtype):
    np_dt, st_dt = ("<f2", "F16") if dtype == "f16" else ("<f4", "F32")
    header = {"__metadata__": {"format": "pt"}}
    blobs = []
    off = 0
    for name in sorted(tensors):
        raw = np.ascontiguousarray(tensors[name].astype(np_dt)).tobytes()
        header[name] = {"dtype": st_dt, "shape": list(tensors[name].shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def main(argv=None):
    ap = argparse.ArgumentParser(description="write a random MarianMTModel folder")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--d-model", type=int, default=32)
    ap.add_argument("--layers", type=int, nargs=2, default=[2, 2], metavar=("E", "D"))
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--ffn", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=1000)
    ap.add_argument("--activation", default="swish")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--tied", dest="untied", action="store_false", default=False)
    g.add_argument("--untied", dest="untied", action="store_true")
    ap.add_argument("--no-share", action="store_true", help="share_encoder_decoder_embeddings false")
    ap.add_argument("--max-pos", type=int, default=64)
    ap.add_argument("--std", type=float, default=0.5)
    ap.add_argument("--dtype", choices=("f32", "f16"), default="f32")
    ap.add_argument("--eos-bias", type=float, default=0.0,
                    help="added to final_logits_bias[eos=0] so that sequences end at varied lengths")
    ap.add_argument("--pad-bias", type=float, default=0.0,
                    help="added to final_logits_bias[pad]: pad (banned by bad_words_ids) then holds real probability "
                         "mass, which renormalize_logits takes out")
    ap.add_argument("--renormalize", action="store_true", help="renormalize_logits true in generation_config.json")
    ap.add_argument("--num-beams", type=int)
    ap.add_argument("--gen-max-length", type=int)
    ap.add_argument("--no-bad-words", action="store_true")
    ap.add_argument("--no-forced-eos", action="store_true")
    a = ap.parse_args(argv)
    d, V = a.d_model, a.vocab
    if d % a.heads:
        ap.error("d_model must be divisible by heads")
    if V < 4:
        ap.error("vocab too small")
    pad = V - 1
    rng = np.random.default_rng(a.seed)
    tensors = {}
    for name, shape, kind in tensor_specs(d, a.layers[0], a.layers[1], a.ffn, V, a.untied, a.no_share):
        if kind in ("w", "emb"):
            t = rng.normal(0.0, a.std, shape)
        elif kind == "lnw":
            t = 1.0 + rng.normal(0.0, 0.1, shape)
        else:  # b, lnb, flb
            t = rng.normal(0.0, 0.1, shape)
        if kind == "emb":
            t[pad, :] = 0.0
        if kind == "flb":
            t[0, 0] += a.eos_bias
            t[0, pad] += a.pad_bias
        tensors[name] = t.astype(np.float32)
    os.makedirs(a.out, exist_ok=True)
    cfg = {
        "activation_dropout": 0.0, "activation_function": a.activation, "architectures": ["MarianMTModel"],
        "attention_dropout": 0.0, "bos_token_id": 0, "d_model": d,
        "decoder_attention_heads": a.heads, "decoder_ffn_dim": a.ffn, "decoder_layerdrop": 0.0,
        "decoder_layers": a.layers[1], "decoder_start_token_id": pad, "decoder_vocab_size": V, "dropout": 0.1,
        "encoder_attention_heads": a.heads, "encoder_ffn_dim": a.ffn, "encoder_layerdrop": 0.0,
        "encoder_layers": a.layers[0], "eos_token_id": 0, "forced_eos_token_id": 0, "init_std": a.std,
        "is_encoder_decoder": True, "max_position_embeddings": a.max_pos, "model_type": "marian",
        "num_hidden_layers": a.layers[0], "pad_token_id": pad, "scale_embedding": True,
        "share_encoder_decoder_embeddings": not a.no_share, "tie_word_embeddings": not a.untied,
        "torch_dtype": "float16" if a.dtype == "f16" else "float32", "transformers_version": "4.47.0",
        "use_cache": True, "vocab_size": V,
    }
    gen = {"bos_token_id": 0, "decoder_start_token_id": pad, "eos_token_id": 0, "pad_token_id": pad}
    if not a.no_bad_words:
        gen["bad_words_ids"] = [[pad]]
    if not a.no_forced_eos:
        gen["forced_eos_token_id"] = 0
    if a.num_beams is not None:
        gen["num_beams"] = a.num_beams
    if a.gen_max_length is not None:
        gen["max_length"] = a.gen_max_length
    if a.renormalize:
        gen["renormalize_logits"] = True
    gen["transformers_version"] = "4.47.0"
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    with open(os.path.join(a.out, "generation_config.json"), "w") as f:
        json.dump(gen, f, indent=2, sort_keys=True)
        f.write("\n")
    write_safetensors(os.path.join(a.out, "model.safetensors"), tensors, a.dtype)
    return 0


if __name__ == "__main__":
    sys.exit(main())
