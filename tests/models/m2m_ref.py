#!/usr/bin/python3
"""m2m_ref.py - independent PyTorch reference for M2M100 / NLLB-200 (M2M100ForConditionalGeneration) generation,
and a writer of random M2M100 model folders of any shape.

What it mirrors (transformers 4.47, models/m2m_100/modeling_m2m_100.py, read, not imported or copied):
  * M2M100SinusoidalPositionalEmbedding.get_embedding: float32, emb = exp(arange(half) * -ln(10000)/(half-1)),
    [sin | cos] halves, a zero column for odd d_model, row padding_idx zero; position ids
    create_position_ids_from_input_ids (cumsum of non-pad + padding_idx) and, on the decoder, past + padding_idx + 1;
  * M2M100EncoderLayer / M2M100DecoderLayer: pre-norm (LayerNorm before self-attention, cross-attention and the
    FFN; residual after), final encoder.layer_norm / decoder.layer_norm; embeddings * sqrt(d_model) when
    scale_embedding; lm_head tied to model.shared unless tie_word_embeddings is false; no final_logits_bias;
  * generation: marian_ref.py's generate() semantics (greedy, BeamSearchScorer) plus ForcedBOSTokenLogitsProcessor
    (at cur_len 1 every score -inf except forced_bos_token_id, which becomes 0), placed after MinLength and before
    ForcedEOS as _get_logits_processor does.
The decoder is recomputed over the whole prefix at every step (no KV cache), independent of nlpd's cache.

Usage (/usr/bin/python3 with Debian's python3-torch and numpy):
  m2m_ref.py --model DIR --input IN.jsonl --forced-bos-token-id N [marian_ref.py's generation flags]
  m2m_ref.py --make DIR [--seed S] [--d-model 32] [--layers E D] [--heads 4] [--ffn 64 64] [--vocab 300]
             [--activation relu] [--untied] [--no-scale] [--eos-bias X] [--max-pos 64]
"""

import argparse
import json
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import marian_ref as mr  # noqa: E402  (the generation code and safetensors reader)

torch = mr.torch
F = mr.F
FORCED_BOS = None


def m2m_positions(n_pos, dim, pad):
    half = dim // 2
    emb = math.log(10000) / (half - 1)
    emb = torch.exp(torch.arange(half, dtype=torch.int64).float() * -emb)
    emb = torch.arange(n_pos, dtype=torch.int64).float().unsqueeze(1) * emb.unsqueeze(0)
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=1).view(n_pos, -1)
    if dim % 2 == 1:
        emb = torch.cat([emb, torch.zeros(n_pos, 1)], dim=1)
    emb[pad, :] = 0
    return emb


class M2MRef(mr.MarianRef):
    def __init__(self, config, tensors):
        c = dict(config)
        c.setdefault("activation_function", "relu")
        c.setdefault("scale_embedding", True)
        super().__init__(c, tensors)
        self.pad = int(c.get("pad_token_id", 1))
        self.pos = m2m_positions(self.max_pos + 2, self.d, self.pad)
        self.final_logits_bias = torch.zeros(1, self.vocab)

    def encode(self, input_ids, attention_mask):
        mask_tok = (input_ids != self.pad).long()
        pos_ids = torch.cumsum(mask_tok, dim=1) * mask_tok + self.pad
        h = F.embedding(input_ids, self.enc_emb) * self.embed_scale + self.pos[pos_ids]
        mask = self._enc_mask(attention_mask, input_ids.shape[1])
        for i in range(self.n_enc):
            p = "model.encoder.layers.%d" % i
            h = h + self._attn(p + ".self_attn", self._ln(h, p + ".self_attn_layer_norm"),
                               self._ln(h, p + ".self_attn_layer_norm"), mask, self.enc_heads)
            x = self._ln(h, p + ".final_layer_norm")
            h = h + self._lin(self.act(self._lin(x, p + ".fc1")), p + ".fc2")
        return self._ln(h, "model.encoder.layer_norm")

    def decode_logits(self, dec_ids, enc_h, enc_mask_2d, last_only=True):
        N, Tt = dec_ids.shape
        pos_ids = torch.arange(Tt)[None, :] + self.pad + 1  # decoder ids hold no pad before eos
        h = F.embedding(dec_ids, self.dec_emb) * self.embed_scale + self.pos[pos_ids]
        causal = torch.full((Tt, Tt), mr.F32_MIN).triu(1)[None, None]
        cross = self._enc_mask(enc_mask_2d, Tt)
        for i in range(self.n_dec):
            p = "model.decoder.layers.%d" % i
            x = self._ln(h, p + ".self_attn_layer_norm")
            h = h + self._attn(p + ".self_attn", x, x, causal, self.dec_heads)
            x = self._ln(h, p + ".encoder_attn_layer_norm")
            h = h + self._attn(p + ".encoder_attn", x, enc_h, cross, self.dec_heads)
            x = self._ln(h, p + ".final_layer_norm")
            h = h + self._lin(self.act(self._lin(x, p + ".fc1")), p + ".fc2")
        h = self._ln(h, "model.decoder.layer_norm")
        if last_only:
            h = h[:, -1, :]
        return F.linear(h, self.lm_head)


_orig_processors = mr.apply_processors


def apply_processors(gc, input_ids, scores):
    if FORCED_BOS is None:
        return _orig_processors(gc, input_ids, scores)
    cur_len = input_ids.shape[-1]
    # ForcedBOS sits before ForcedEOS: run the processors with forced eos held back, then ForcedBOS, then it
    g = dict(gc, forced_eos=None, renormalize_logits=False)
    scores = _orig_processors(g, input_ids, scores)
    if cur_len == 1:
        scores = torch.full_like(scores, -float("inf"))
        scores[:, FORCED_BOS] = 0.0
    if gc["forced_eos"] is not None and cur_len == gc["max_length"] - 1:
        scores = torch.full_like(scores, -float("inf"))
        scores[:, gc["forced_eos"]] = 0.0
    if gc["renormalize_logits"]:
        scores = torch.log_softmax(scores, dim=-1)
    return scores


def load_model(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    return M2MRef(cfg, mr.read_safetensors(os.path.join(model_dir, "model.safetensors")))


def make(a):
    """A random M2M100ForConditionalGeneration folder (the names and shapes save_pretrained writes)."""
    rng = np.random.default_rng(a.seed)
    d, V = a.d_model, a.vocab
    T = {"model.shared.weight": rng.normal(0, 0.5, (V, d))}
    T["model.shared.weight"][1] = 0  # padding_idx row
    if a.untied:
        T["lm_head.weight"] = rng.normal(0, 0.5, (V, d))
    for side, n, ffn in (("encoder", a.layers[0], a.ffn[0]), ("decoder", a.layers[1], a.ffn[1])):
        for i in range(n):
            p = "model.%s.layers.%d." % (side, i)
            for att in ["self_attn"] + (["encoder_attn"] if side == "decoder" else []):
                for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
                    T[p + att + "." + proj + ".weight"] = rng.normal(0, 0.5, (d, d))
                    T[p + att + "." + proj + ".bias"] = rng.normal(0, 0.1, (d,))
                T[p + att + "_layer_norm.weight"] = 1 + rng.normal(0, 0.1, (d,))
                T[p + att + "_layer_norm.bias"] = rng.normal(0, 0.1, (d,))
            T[p + "fc1.weight"] = rng.normal(0, 0.5, (ffn, d))
            T[p + "fc1.bias"] = rng.normal(0, 0.1, (ffn,))
            T[p + "fc2.weight"] = rng.normal(0, 0.5, (d, ffn))
            T[p + "fc2.bias"] = rng.normal(0, 0.1, (d,))
            T[p + "final_layer_norm.weight"] = 1 + rng.normal(0, 0.1, (d,))
            T[p + "final_layer_norm.bias"] = rng.normal(0, 0.1, (d,))
        T["model.%s.layer_norm.weight" % side] = 1 + rng.normal(0, 0.1, (d,))
        T["model.%s.layer_norm.bias" % side] = rng.normal(0, 0.1, (d,))
    # an eos bias so that hypotheses finish at different lengths
    head = T.get("lm_head.weight", T["model.shared.weight"])
    T["model.decoder.layer_norm.bias"] += a.eos_bias * head[2] / np.linalg.norm(head[2])
    os.makedirs(a.make, exist_ok=True)
    tensors = {k: np.asarray(v, dtype=np.float32) for k, v in sorted(T.items())}
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for k, v in tensors.items():
        b = v.tobytes()
        header[k] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(os.path.join(a.make, "model.safetensors"), "wb") as f:
        f.write(len(h).to_bytes(8, "little") + h + b"".join(blobs))
    cfg = {"model_type": "m2m_100", "architectures": ["M2M100ForConditionalGeneration"], "d_model": d,
           "encoder_layers": a.layers[0], "decoder_layers": a.layers[1], "encoder_attention_heads": a.heads,
           "decoder_attention_heads": a.heads, "encoder_ffn_dim": a.ffn[0], "decoder_ffn_dim": a.ffn[1],
           "vocab_size": V, "max_position_embeddings": a.max_pos, "activation_function": a.activation,
           "scale_embedding": not a.no_scale, "pad_token_id": 1, "eos_token_id": 2, "bos_token_id": 0,
           "decoder_start_token_id": 2, "tie_word_embeddings": not a.untied}
    with open(os.path.join(a.make, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    with open(os.path.join(a.make, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": 0, "decoder_start_token_id": 2, "eos_token_id": 2, "pad_token_id": 1,
                   "max_length": 200}, f, indent=1)
    return 0


def main(argv=None):
    global FORCED_BOS
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--make":
        ap = argparse.ArgumentParser()
        ap.add_argument("--make", required=True)
        ap.add_argument("--seed", type=int, default=1)
        ap.add_argument("--d-model", type=int, default=32)
        ap.add_argument("--layers", type=int, nargs=2, default=[2, 2])
        ap.add_argument("--heads", type=int, default=4)
        ap.add_argument("--ffn", type=int, nargs=2, default=[64, 64])
        ap.add_argument("--vocab", type=int, default=300)
        ap.add_argument("--activation", default="relu")
        ap.add_argument("--untied", action="store_true")
        ap.add_argument("--no-scale", action="store_true")
        ap.add_argument("--eos-bias", type=float, default=0.0)
        ap.add_argument("--max-pos", type=int, default=64)
        return make(ap.parse_args(argv))
    if "--forced-bos-token-id" in argv:
        i = argv.index("--forced-bos-token-id")
        FORCED_BOS = int(argv[i + 1])
        del argv[i:i + 2]
    mr.apply_processors = apply_processors
    mr.load_model = load_model
    return mr.main(argv)


if __name__ == "__main__":
    sys.exit(main())
