#!/usr/bin/python3
"""marian_ref.py - independent Python reference for Marian (OPUS-MT, MarianMTModel) generation.

What it mirrors
---------------
Hugging Face transformers v4.47 (the release line of the hf-tiny fixtures, upstream commit a5bb5284):
  * models/marian/modeling_marian.py: MarianSinusoidalPositionalEmbedding, MarianAttention (eager),
    MarianEncoderLayer / MarianDecoderLayer (post-LN), MarianEncoder / MarianDecoder, MarianMTModel
    (lm_head tied to the decoder input embeddings + final_logits_bias);
  * generation/utils.py: GenerationMixin.generate (how generation_config.json and call kwargs combine),
    _prepare_generated_length (max_length / max_new_tokens), _get_logits_processor (processor order),
    _sample (greedy), _beam_search;
  * generation/beam_search.py: BeamSearchScorer.process / finalize, BeamHypotheses.add / is_done;
  * generation/logits_process.py: NoRepeatNGramLogitsProcessor, NoBadWordsLogitsProcessor
    (SequenceBiasLogitsProcessor), MinLengthLogitsProcessor, ForcedEOSTokenLogitsProcessor, LogitNormalization.
This file was written from reading that source; no transformers code is imported or copied. The model runs
in float32 with plain torch ops and recomputes the whole decoder at every step (no KV cache), so it is
independent of any cache logic in the C implementation.

Requirements: Debian python3-torch (1.13) + numpy. Run with /usr/bin/python3 (not the pyenv python3).

Usage
-----
  marian_ref.py --model DIR --input INPUT.jsonl [--num-beams K] [--max-length N | --max-new-tokens N]
                [--min-length N] [--length-penalty X] [--early-stopping true|false|never]
                [--no-repeat-ngram-size N] [--batch]
      One JSON line per input line.  Input line: {"input_ids": [...source ids incl. trailing </s>...]}
      and optionally per-line overrides with the same names as the flags (num_beams, max_length,
      max_new_tokens, min_length, length_penalty, early_stopping, no_repeat_ngram_size) so one process can run
      many cases.  Output: {"output_ids": [...]} (greedy) or {"output_ids": [...], "score": float} (beam):
      the best sequence as generate() returns it (decoder start token first, eos appended when it fits,
      trailing padding removed); score = sequence_scores (length-penalised, float32-rounded).
      --batch runs all lines as one right-padded batch (pad_token_id + attention mask), as generate() would
      on a padded batch (lines must then share the generation settings).
  marian_ref.py --model DIR --input INPUT.jsonl --first-step-logits   -> {"logits": [V floats]} per line
  marian_ref.py --model DIR --input INPUT.jsonl --encoder             -> {"encoder_last_hidden_state": [[..]]}
  marian_ref.py --self-test GOLDEN.json [--model DIR]   check against a transformers-made golden (exit 1 on error)
  marian_ref.py --self-test-beam                        scripted-logit unit checks of the beam search (no files)

Generation settings: defaults come from DIR/generation_config.json when present (what
GenerationConfig.from_pretrained gives generate()), else from the generation keys of config.json
(GenerationConfig.from_model_config).  CLI flags / per-line keys act like generate() kwargs and override.
NB max_length quirk of 4.47 (_prepare_generated_length): when max_length is NOT passed as a kwarg and the
config value equals the library default 20 (explicitly or implicitly), it becomes 20 + decoder prompt length
(= 21 ids incl. the start token), capped at max_position_embeddings.  --max-length N is a kwarg: N ids total.
"""

import argparse
import json
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

torch.set_num_threads(1)

F32_MIN = float(torch.finfo(torch.float32).min)
HF_DEFAULT_MAX_LENGTH = 20  # GenerationConfig().max_length


# ----------------------------------------------------------------------------------------------------------
# safetensors (u64 LE header length, JSON header, raw little-endian data)
# ----------------------------------------------------------------------------------------------------------
def read_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    (hlen,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + hlen].decode("utf-8"))
    base = 8 + hlen
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt = info["dtype"]
        shape = info["shape"]
        a, b = info["data_offsets"]
        raw = blob[base + a: base + b]
        if dt == "F32":
            arr = np.frombuffer(raw, dtype="<f4")
        elif dt == "F16":
            arr = np.frombuffer(raw, dtype="<f2").astype(np.float32)
        elif dt == "BF16":
            arr = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        elif dt == "F64":
            arr = np.frombuffer(raw, dtype="<f8").astype(np.float32)
        else:
            raise ValueError("unsupported safetensors dtype %s for %s" % (dt, name))
        out[name] = np.array(arr, dtype=np.float32).reshape(shape)
    return out


# ----------------------------------------------------------------------------------------------------------
# model (MarianMTModel forward, float32, eager attention, no cache)
# ----------------------------------------------------------------------------------------------------------
def sinusoidal_table(n_pos, dim):
    """MarianSinusoidalPositionalEmbedding._init_weight: angles in double, sin half then cos half, cast to f32."""
    position_enc = np.array([[pos / np.power(10000, 2 * (j // 2) / dim) for j in range(dim)]
                             for pos in range(n_pos)])
    out = np.empty((n_pos, dim), dtype=np.float32)
    sentinel = dim // 2 if dim % 2 == 0 else dim // 2 + 1
    out[:, 0:sentinel] = np.sin(position_enc[:, 0::2]).astype(np.float32)
    out[:, sentinel:] = np.cos(position_enc[:, 1::2]).astype(np.float32)
    return torch.from_numpy(out)


def activation(name):
    """ACT2FN subset used by Marian configs."""
    name = name.lower()
    if name in ("swish", "silu"):
        return F.silu
    if name == "relu":
        return F.relu
    if name == "gelu":
        return lambda x: F.gelu(x)  # exact erf form (GELUActivation)
    if name in ("gelu_new", "gelu_fast", "gelu_pytorch_tanh"):
        # NewGELUActivation: 0.5*x*(1+tanh(sqrt(2/pi)*(x+0.044715*x^3)))
        return lambda x: 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))
    if name == "quick_gelu":
        return lambda x: x * torch.sigmoid(1.702 * x)
    if name == "tanh":
        return torch.tanh
    if name == "sigmoid":
        return torch.sigmoid
    raise ValueError("unsupported activation_function %r" % name)


class MarianRef:
    def __init__(self, config, tensors):
        self.cfg = config
        c = config
        self.d = int(c["d_model"])
        self.enc_heads = int(c.get("encoder_attention_heads", 8))
        self.dec_heads = int(c.get("decoder_attention_heads", 8))
        self.n_enc = int(c.get("encoder_layers", 6))
        self.n_dec = int(c.get("decoder_layers", 6))
        self.max_pos = int(c.get("max_position_embeddings", 512))
        self.embed_scale = math.sqrt(self.d) if c.get("scale_embedding", False) else 1.0
        self.act = activation(c.get("activation_function", "gelu"))
        self.pad_token_id = c.get("pad_token_id")
        # NB: normalize_before / normalize_embedding / add_final_layer_norm / static_position_embeddings /
        # add_bias_logits are legacy keys that MarianConfig does not define and MarianMTModel ignores
        # (always post-LN, no embedding LN, no final LN, static sinusoidal positions).  We ignore them too.
        T = {k: torch.from_numpy(v) for k, v in tensors.items()}
        self.T = T
        share = c.get("share_encoder_decoder_embeddings", True)
        tie = c.get("tie_word_embeddings", True)
        if share:
            shared = T.get("model.shared.weight")
            if shared is None:
                shared = T.get("model.encoder.embed_tokens.weight", T.get("model.decoder.embed_tokens.weight"))
            self.enc_emb = self.dec_emb = shared
        else:
            self.enc_emb = T["model.encoder.embed_tokens.weight"]
            self.dec_emb = T["model.decoder.embed_tokens.weight"]
        # MarianMTModel.tie_weights: lm_head <- decoder input embeddings when tie_word_embeddings (default True)
        self.lm_head = self.dec_emb if tie else T["lm_head.weight"]
        V = self.lm_head.shape[0]
        self.vocab = V
        self.final_logits_bias = T.get("final_logits_bias", torch.zeros(1, V)).reshape(1, V)
        self.pos = sinusoidal_table(self.max_pos, self.d)

    # -- pieces ------------------------------------------------------------------------------------------
    def _lin(self, x, p):
        return F.linear(x, self.T[p + ".weight"], self.T.get(p + ".bias"))

    def _ln(self, x, p):
        return F.layer_norm(x, (self.d,), self.T[p + ".weight"], self.T[p + ".bias"], 1e-5)

    def _attn(self, p, x, kv, add_mask, heads):
        """MarianAttention (eager): q scaled by head_dim^-0.5 after the projection, additive mask, softmax."""
        B, Tq, d = x.shape
        S = kv.shape[1]
        hd = d // heads
        q = self._lin(x, p + ".q_proj") * (hd ** -0.5)
        k = self._lin(kv, p + ".k_proj")
        v = self._lin(kv, p + ".v_proj")
        q = q.view(B, Tq, heads, hd).transpose(1, 2)
        k = k.view(B, S, heads, hd).transpose(1, 2)
        v = v.view(B, S, heads, hd).transpose(1, 2)
        w = torch.matmul(q, k.transpose(2, 3))
        if add_mask is not None:
            w = w + add_mask
        w = torch.softmax(w, dim=-1)
        o = torch.matmul(w, v).transpose(1, 2).reshape(B, Tq, d)
        return self._lin(o, p + ".out_proj")

    @staticmethod
    def _enc_mask(attention_mask, tgt_len):
        """_prepare_4d_attention_mask: [B,S] 1/0 -> [B,1,T,S] additive 0 / finfo(float32).min."""
        m = attention_mask[:, None, None, :].to(torch.float32).expand(-1, 1, tgt_len, -1)
        inv = 1.0 - m
        return inv.masked_fill(inv.to(torch.bool), F32_MIN)

    # -- encoder / decoder ---------------------------------------------------------------------------------
    def encode(self, input_ids, attention_mask):
        """MarianEncoder.forward -> last_hidden_state [B,S,d]."""
        B, S = input_ids.shape
        if S > self.max_pos:
            raise ValueError("source longer than max_position_embeddings")
        h = F.embedding(input_ids, self.enc_emb) * self.embed_scale
        h = h + self.pos[:S]
        mask = self._enc_mask(attention_mask, S)
        for i in range(self.n_enc):
            p = "model.encoder.layers.%d" % i
            r = h
            h = self._attn(p + ".self_attn", h, h, mask, self.enc_heads)
            h = self._ln(r + h, p + ".self_attn_layer_norm")
            r = h
            h = self._lin(self.act(self._lin(h, p + ".fc1")), p + ".fc2")
            h = self._ln(r + h, p + ".final_layer_norm")
        return h

    def decode_logits(self, dec_ids, enc_h, enc_mask_2d, last_only=True):
        """MarianDecoder.forward + lm_head + final_logits_bias over the WHOLE prefix (no cache)."""
        N, Tt = dec_ids.shape
        if Tt > self.max_pos:
            raise ValueError("decoder prefix longer than max_position_embeddings")
        h = F.embedding(dec_ids, self.dec_emb) * self.embed_scale
        h = h + self.pos[:Tt]
        causal = torch.full((Tt, Tt), F32_MIN).triu(1)[None, None]  # 0 on/below the diagonal
        cross = self._enc_mask(enc_mask_2d, Tt)
        for i in range(self.n_dec):
            p = "model.decoder.layers.%d" % i
            r = h
            h = self._attn(p + ".self_attn", h, h, causal, self.dec_heads)
            h = self._ln(r + h, p + ".self_attn_layer_norm")
            r = h
            h = self._attn(p + ".encoder_attn", h, enc_h, cross, self.dec_heads)
            h = self._ln(r + h, p + ".encoder_attn_layer_norm")
            r = h
            h = self._lin(self.act(self._lin(h, p + ".fc1")), p + ".fc2")
            h = self._ln(r + h, p + ".final_layer_norm")
        if last_only:
            h = h[:, -1, :]
        return F.linear(h, self.lm_head) + self.final_logits_bias.reshape(-1)


def load_model(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    tensors = read_safetensors(os.path.join(model_dir, "model.safetensors"))
    return MarianRef(cfg, tensors)


# ----------------------------------------------------------------------------------------------------------
# generation config (generate(): generation_config.json or config.json, kwargs override)
# ----------------------------------------------------------------------------------------------------------
GEN_KEYS = ("decoder_start_token_id", "bos_token_id", "eos_token_id", "pad_token_id", "bad_words_ids",
            "forced_eos_token_id", "num_beams", "max_length", "max_new_tokens", "min_length", "length_penalty",
            "early_stopping", "no_repeat_ngram_size", "renormalize_logits")


def load_generation_defaults(model_dir, cfg):
    path = os.path.join(model_dir, "generation_config.json")
    if os.path.exists(path):
        with open(path) as f:
            src = json.load(f)
    else:
        src = cfg  # GenerationConfig.from_model_config picks the generation keys of config.json
    return {k: src[k] for k in GEN_KEYS if k in src and src[k] is not None}


def parse_early_stopping(v):
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("true", "1", "yes"):
        return True
    if s in ("false", "0", "no"):
        return False
    if s == "never":
        return "never"
    raise ValueError("early_stopping must be true, false or never")


def resolve_generation(defaults, kwargs, max_position_embeddings, decoder_prompt_len=1):
    """generate() config resolution incl. _prepare_special_tokens and _prepare_generated_length (4.47)."""
    g = dict(defaults)
    for k, v in kwargs.items():
        if v is not None:
            g[k] = v
    eos = g.get("eos_token_id")
    eos_list = None if eos is None else (list(eos) if isinstance(eos, (list, tuple)) else [int(eos)])
    pad = g.get("pad_token_id")
    if pad is None and eos_list:
        pad = eos_list[0]  # _prepare_special_tokens: pad falls back to eos[0]
    start = g.get("decoder_start_token_id")
    if start is None:
        start = g.get("bos_token_id")
    if start is None:
        raise ValueError("no decoder_start_token_id / bos_token_id")
    max_length = g.get("max_length", HF_DEFAULT_MAX_LENGTH)
    has_default_max_length = kwargs.get("max_length") is None
    if g.get("max_new_tokens") is not None:
        max_length = int(g["max_new_tokens"]) + decoder_prompt_len
    elif has_default_max_length and max_length == HF_DEFAULT_MAX_LENGTH:
        max_length = HF_DEFAULT_MAX_LENGTH + decoder_prompt_len
        if max_position_embeddings is not None:
            max_length = min(max_length, max_position_embeddings)
    fe = g.get("forced_eos_token_id")
    if fe is not None and not isinstance(fe, (list, tuple)):
        fe = [int(fe)]
    return {
        "decoder_start_token_id": int(start),
        "eos": eos_list,
        "pad": None if pad is None else int(pad),
        "bad_words_ids": g.get("bad_words_ids"),
        "forced_eos": fe,
        "num_beams": int(g.get("num_beams", 1)),
        "max_length": int(max_length),
        "min_length": int(g.get("min_length", 0) or 0),
        "length_penalty": float(g.get("length_penalty", 1.0)),
        "early_stopping": parse_early_stopping(g.get("early_stopping", False)),
        "no_repeat_ngram_size": int(g.get("no_repeat_ngram_size", 0) or 0),
        "renormalize_logits": bool(g.get("renormalize_logits", False)),
    }


# ----------------------------------------------------------------------------------------------------------
# logits processors, in the order _get_logits_processor builds them (4.47):
#   NoRepeatNGram -> NoBadWords -> MinLength -> ForcedEOS -> (LogitNormalization when renormalize_logits)
# ----------------------------------------------------------------------------------------------------------
def banned_ngram_tokens(n, rows, cur_len):
    """NoRepeatNGramLogitsProcessor (_get_ngrams/_get_generated_ngrams/_calc_banned_ngram_tokens): the
    n-grams are collected over the WHOLE decoder input_ids (start token included); a token is banned when
    the last n-1 ids followed by it already occurred."""
    if cur_len + 1 < n:
        return [[] for _ in rows]
    out = []
    for row in rows:
        table = {}
        for i in range(len(row) - n + 1):
            table.setdefault(tuple(row[i:i + n - 1]), []).append(row[i + n - 1])
        out.append(table.get(tuple(row[cur_len + 1 - n:cur_len]), []))
    return out


def apply_processors(gc, input_ids, scores):
    """input_ids: LongTensor [N,T] (decoder ids so far); scores: float32 [N,V] -> processed copy."""
    scores = scores.clone()
    N, V = scores.shape
    cur_len = input_ids.shape[-1]
    rows = None
    n = gc["no_repeat_ngram_size"]
    if n > 0:
        rows = input_ids.tolist()
        for i, banned in enumerate(banned_ngram_tokens(n, rows, cur_len)):
            if banned:
                scores[i, banned] = -float("inf")
    bw = gc["bad_words_ids"]
    if bw is not None and len(bw) > 0:
        eos = gc["eos"] or []
        # NoBadWordsLogitsProcessor drops [eos] singletons; the rest become a -inf SequenceBias (dict by tuple)
        seqs = []
        for s in bw:
            t = tuple(int(x) for x in s)
            if any(list(t) == [e] for e in eos):
                continue
            if t not in seqs:
                seqs.append(t)
        bias = torch.zeros_like(scores)
        for t in seqs:
            if len(t) == 1 and 0 <= t[0] < V:
                bias[:, t[0]] = -float("inf")
        if rows is None:
            rows = input_ids.tolist()
        for t in seqs:
            if len(t) == 1:
                continue
            if len(t) > cur_len:  # 4.47 SequenceBias skips sequences longer than the context (len, not len-1)
                continue
            pl = len(t) - 1
            for i, row in enumerate(rows):
                if tuple(row[-pl:]) == t[:-1]:
                    bias[i, t[-1]] += -float("inf")
        scores = scores + bias
    if gc["min_length"] > 0 and gc["eos"] is not None:
        if cur_len < gc["min_length"]:  # MinLengthLogitsProcessor: counts the start token
            scores[:, gc["eos"]] = -float("inf")
    if gc["forced_eos"] is not None:
        if cur_len == gc["max_length"] - 1:  # ForcedEOSTokenLogitsProcessor
            scores = torch.full_like(scores, -float("inf"))
            scores[:, gc["forced_eos"]] = 0.0
    if gc["renormalize_logits"]:
        scores = torch.log_softmax(scores, dim=-1)  # LogitNormalization (appended last)
    return scores


# ----------------------------------------------------------------------------------------------------------
# greedy (_sample with do_sample=False)
# ----------------------------------------------------------------------------------------------------------
def greedy_search(step_fn, batch_size, gc):
    """step_fn(ids LongTensor [N,T]) -> raw next-token logits float32 [N,V].  Returns padded rows (lists)."""
    start, eos, pad = gc["decoder_start_token_id"], gc["eos"], gc["pad"]
    ids = torch.full((batch_size, 1), start, dtype=torch.long)
    unfinished = torch.ones(batch_size, dtype=torch.long)
    while True:
        logits = step_fn(ids).float()
        scores = apply_processors(gc, ids, logits)
        nxt = torch.argmax(scores, dim=-1)  # first index among ties
        if eos is not None:  # EosTokenCriteria present: finished rows get pad
            nxt = nxt * unfinished + pad * (1 - unfinished)
        ids = torch.cat([ids, nxt[:, None]], dim=-1)
        done = torch.full((batch_size,), ids.shape[-1] >= gc["max_length"], dtype=torch.bool)  # MaxLengthCriteria
        if eos is not None:
            done = done | torch.isin(ids[:, -1], torch.tensor(eos))
        unfinished = unfinished & ~done
        if unfinished.max() == 0:
            break
    return ids.tolist()


def strip_greedy_row(row, gc):
    """generate() output row -> ids up to and including the first eos after the start token."""
    eos = gc["eos"] or []
    for i in range(1, len(row)):
        if row[i] in eos:
            return row[:i + 1]
    return row


# ----------------------------------------------------------------------------------------------------------
# beam search (_beam_search + BeamSearchScorer + BeamHypotheses, num_beam_groups=1, num_return_sequences=1)
# ----------------------------------------------------------------------------------------------------------
class Hyps:
    """BeamHypotheses: keeps the num_beams best finished hypotheses."""

    def __init__(self, num_beams, length_penalty, early_stopping, max_length):
        self.num_beams = num_beams
        self.length_penalty = length_penalty
        self.early_stopping = early_stopping
        self.max_length = max_length
        self.beams = []  # (score, ids list)
        self.worst_score = 1e9

    def __len__(self):
        return len(self.beams)

    def add(self, hyp, sum_logprobs, generated_len):
        # score = sum_logprobs / generated_len ** length_penalty   (python double arithmetic)
        score = sum_logprobs / (generated_len ** self.length_penalty)
        if len(self) < self.num_beams or score > self.worst_score:
            self.beams.append((score, hyp))
            if len(self) > self.num_beams:
                # drop the worst (lowest score; among equal scores the earliest added), worst <- 2nd lowest
                order = sorted([(s, idx) for idx, (s, _) in enumerate(self.beams)])
                del self.beams[order[0][1]]
                self.worst_score = order[1][0]
            else:
                self.worst_score = min(score, self.worst_score)
            return True
        return False

    def is_done(self, best_sum_logprobs, cur_len, decoder_prompt_len):
        if len(self) < self.num_beams:
            return False
        if self.early_stopping is True:
            return True
        if self.early_stopping is False:
            highest = best_sum_logprobs / (cur_len - decoder_prompt_len) ** self.length_penalty
            return self.worst_score >= highest
        # "never"
        if self.length_penalty > 0.0:
            if self.max_length <= decoder_prompt_len:
                raise ValueError("max_length is not larger than decoder prompt length")
            highest = best_sum_logprobs / (self.max_length - decoder_prompt_len) ** self.length_penalty
        else:
            highest = best_sum_logprobs / (cur_len - decoder_prompt_len) ** self.length_penalty
        return self.worst_score >= highest


def beam_search(step_fn, batch_size, gc, trace=None):
    """_beam_search.  step_fn(ids [B*K,T]) -> raw logits [B*K,V] (rows b*K..b*K+K-1 belong to input b).
    Returns [(ids list, score float32)] per input.  trace (list) receives event dicts for unit checks."""
    K = gc["num_beams"]
    if K < 2:
        raise ValueError("num_beams must be > 1 for beam search")
    eos, pad = gc["eos"], gc["pad"]
    start = gc["decoder_start_token_id"]
    max_length = gc["max_length"]
    B = batch_size
    hyps = [Hyps(K, gc["length_penalty"], gc["early_stopping"], max_length) for _ in range(B)]
    done = [False] * B
    ids = torch.full((B * K, 1), start, dtype=torch.long)
    decoder_prompt_len = ids.shape[-1]
    beam_scores = torch.zeros((B, K), dtype=torch.float32)
    beam_scores[:, 1:] = -1e9  # only beam 0 is live at the first step
    beam_scores = beam_scores.view(-1)
    step = 0
    while True:
        step += 1
        logits = step_fn(ids).float()
        logprobs = torch.log_softmax(logits, dim=-1)
        processed = apply_processors(gc, ids, logprobs)
        scores = processed + beam_scores[:, None]  # float32 running sums
        V = scores.shape[-1]
        scores = scores.view(B, K * V)
        n_eos = len(eos) if eos is not None else 0
        n_keep = max(2, 1 + n_eos) * K  # 2*K candidates for a single eos id
        top_scores, top_flat = torch.topk(scores, n_keep, dim=1, largest=True, sorted=True)
        top_beam = torch.div(top_flat, V, rounding_mode="floor")
        top_tok = top_flat % V

        # BeamSearchScorer.process
        cur_len = ids.shape[-1] + 1  # length the candidate scores refer to (prompt included)
        nb_scores = torch.zeros((B, K), dtype=torch.float32)
        nb_tokens = torch.zeros((B, K), dtype=torch.long)
        nb_index = torch.zeros((B, K), dtype=torch.long)
        for b in range(B):
            if done[b]:
                nb_scores[b, :] = 0
                nb_tokens[b, :] = pad
                nb_index[b, :] = 0  # (sic) global row 0, as HF does; the rows of a done input are dummies
                continue
            bi = 0
            for rank in range(n_keep):
                tok = int(top_tok[b, rank])
                sc = top_scores[b, rank]
                bbi = b * K + int(top_beam[b, rank])
                if eos is not None and tok in eos:
                    if rank >= K:  # an eos ranked outside the top num_beams is not a hypothesis
                        if trace is not None:
                            trace.append({"ev": "eos_skipped", "step": step, "b": b, "rank": rank})
                        continue
                    hyp = ids[bbi].tolist()
                    added = hyps[b].add(hyp, sc.item(), generated_len=cur_len - decoder_prompt_len)
                    if trace is not None:
                        trace.append({"ev": "hyp", "step": step, "b": b, "ids": hyp, "sum": sc.item(),
                                      "gen_len": cur_len - decoder_prompt_len, "kept": added})
                else:
                    nb_scores[b, bi] = sc
                    nb_tokens[b, bi] = tok
                    nb_index[b, bi] = bbi
                    bi += 1
                if bi == K:
                    break
            if bi < K:
                raise ValueError("too many eos candidates")
            was = done[b]
            done[b] = done[b] or hyps[b].is_done(top_scores[b].max().item(), cur_len, decoder_prompt_len)
            if trace is not None and done[b] and not was:
                trace.append({"ev": "done", "step": step, "b": b})
        beam_scores = nb_scores.view(-1)
        ids = torch.cat([ids[nb_index.view(-1), :], nb_tokens.view(-1, 1)], dim=-1)
        if all(done) or ids.shape[-1] >= max_length:  # beam_scorer.is_done or MaxLengthCriteria
            break
    if trace is not None:
        trace.append({"ev": "end", "step": step, "len": ids.shape[-1]})

    # BeamSearchScorer.finalize
    final_len = ids.shape[-1]
    for b in range(B):
        if done[b]:
            continue
        for k in range(K):
            bbi = b * K + k
            hyp = ids[bbi].tolist()
            added = hyps[b].add(hyp, beam_scores[bbi].item(), generated_len=final_len - decoder_prompt_len)
            if trace is not None:
                trace.append({"ev": "final_add", "b": b, "ids": hyp, "sum": beam_scores[bbi].item(),
                              "gen_len": final_len - decoder_prompt_len, "kept": added})
    best = []
    for b in range(B):
        srt = sorted(hyps[b].beams, key=lambda x: x[0])  # stable: equal scores keep insertion order
        score, hyp = srt.pop()  # the last = highest (latest added among equal)
        best.append((score, hyp))
    sent_max_len = min(max(len(h) for _, h in best) + 1, max_length)
    out = []
    for score, hyp in best:
        row = list(hyp)
        if len(row) < sent_max_len:
            row.append(eos[0])  # only the first eos id is inserted
        out.append((row, float(np.float32(score))))  # sequence_scores is a float32 tensor
    return out


# ----------------------------------------------------------------------------------------------------------
# driver
# ----------------------------------------------------------------------------------------------------------
def pad_batch(srcs, pad):
    S = max(len(s) for s in srcs)
    ids = torch.full((len(srcs), S), pad, dtype=torch.long)
    mask = torch.zeros((len(srcs), S), dtype=torch.long)
    for i, s in enumerate(srcs):
        ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, :len(s)] = 1
    return ids, mask


def generate(model, srcs, gc, raw=False):
    """generate() on a (right-padded) batch of source id lists.  Returns [(ids, score or None)]
    (raw=True: greedy rows as generate returns them, padding included)."""
    pad = gc["pad"] if gc["pad"] is not None else model.pad_token_id
    src, mask = pad_batch(srcs, pad)
    with torch.no_grad():
        enc = model.encode(src, mask)
        K = gc["num_beams"]
        if K > 1:
            enc_x = enc.repeat_interleave(K, dim=0)  # _expand_inputs_for_generation
            mask_x = mask.repeat_interleave(K, dim=0)
            return beam_search(lambda ids: model.decode_logits(ids, enc_x, mask_x), len(srcs), gc)
        rows = greedy_search(lambda ids: model.decode_logits(ids, enc, mask), len(srcs), gc)
    if raw:
        return [(r, None) for r in rows]
    return [(strip_greedy_row(r, gc), None) for r in rows]


def line_kwargs(args, obj):
    kw = {"num_beams": args.num_beams, "max_length": args.max_length, "max_new_tokens": args.max_new_tokens,
          "min_length": args.min_length, "length_penalty": args.length_penalty,
          "early_stopping": args.early_stopping, "no_repeat_ngram_size": args.no_repeat_ngram_size}
    for k in list(kw):
        if k in obj:
            kw[k] = obj[k]
    if kw.get("max_new_tokens") is not None and "max_length" not in obj and args.max_length is None:
        kw["max_length"] = None
    return kw


def run_cli(args):
    model = load_model(args.model)
    defaults = load_generation_defaults(args.model, model.cfg)
    lines = []
    with open(args.input) as f:
        for ln in f:
            ln = ln.strip()
            if ln:
                lines.append(json.loads(ln))
    out = sys.stdout
    if args.first_step_logits or args.encoder:
        gc = resolve_generation(defaults, {}, model.max_pos)
        for obj in lines:
            src = torch.tensor([obj["input_ids"]], dtype=torch.long)
            mask = torch.ones_like(src)
            with torch.no_grad():
                enc = model.encode(src, mask)
                if args.encoder:
                    out.write(json.dumps({"encoder_last_hidden_state": enc[0].tolist()}) + "\n")
                else:
                    ids = torch.tensor([[gc["decoder_start_token_id"]]], dtype=torch.long)
                    lg = model.decode_logits(ids, enc, mask)[0]
                    out.write(json.dumps({"logits": lg.tolist()}) + "\n")
        return 0
    if args.batch:
        kws = [line_kwargs(args, o) for o in lines]
        if any(k != kws[0] for k in kws):
            raise SystemExit("--batch: all lines must use the same generation settings")
        gc = resolve_generation(defaults, kws[0] if kws else line_kwargs(args, {}), model.max_pos)
        res = generate(model, [o["input_ids"] for o in lines], gc)
        for ids, score in res:
            o = {"output_ids": ids}
            if score is not None:
                o["score"] = score
            out.write(json.dumps(o) + "\n")
        return 0
    for obj in lines:
        gc = resolve_generation(defaults, line_kwargs(args, obj), model.max_pos)
        (ids, score), = generate(model, [obj["input_ids"]], gc)
        o = {"output_ids": ids}
        if score is not None:
            o["score"] = score
        out.write(json.dumps(o) + "\n")
        out.flush()
    return 0


# ----------------------------------------------------------------------------------------------------------
# --self-test GOLDEN.json (transformers-made goldens)
# ----------------------------------------------------------------------------------------------------------
def self_test(golden_path, model_dir=None):
    with open(golden_path) as f:
        g = json.load(f)
    model_dir = model_dir or os.path.dirname(os.path.abspath(golden_path))
    model = load_model(model_dir)
    defaults = load_generation_defaults(model_dir, model.cfg)
    tol = g.get("tolerance", {})
    atol, rtol = float(tol.get("atol", 1e-4)), float(tol.get("rtol", 1e-4))
    fails = []
    worst = {"enc": 0.0, "logits": 0.0, "top5": 0.0, "pos": 0.0}

    def close(a, b, key):
        a = np.asarray(a, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64)
        if a.shape != b.shape:
            return False
        worst[key] = max(worst[key], float(np.max(np.abs(a - b))) if a.size else 0.0)
        return bool(np.all(np.abs(a - b) <= atol + rtol * np.abs(b)))

    if "sinusoidal_positions_first3" in g:
        ref = np.asarray(g["sinusoidal_positions_first3"])
        if not close(model.pos[:ref.shape[0]].numpy(), ref, "pos"):
            fails.append("sinusoidal positions")
    # generate(..., max_length=20) as a call kwarg; bad_words/forced eos from generation_config.json
    gc_gen = resolve_generation(defaults, {"max_length": 20, "num_beams": 1}, model.max_pos)
    # plain argmax loop with pad masked, no forced eos (the golden's greedy_no_forced_eos_ids)
    gc_plain = dict(gc_gen)
    gc_plain["forced_eos"] = None
    for i, ex in enumerate(g["examples"]):
        src = ex["input_ids"]
        t = torch.tensor([src], dtype=torch.long)
        m = torch.ones_like(t)
        with torch.no_grad():
            enc = model.encode(t, m)
            if "encoder_last_hidden_state" in ex and not close(enc[0].numpy(), ex["encoder_last_hidden_state"], "enc"):
                fails.append("example %d encoder_last_hidden_state" % i)
            start = torch.tensor([[gc_gen["decoder_start_token_id"]]], dtype=torch.long)
            lg = model.decode_logits(start, enc, m)[0]
            if "first_step_logits" in ex and not close(lg.numpy(), ex["first_step_logits"], "logits"):
                fails.append("example %d first_step_logits" % i)
            if "first_step_argmax" in ex and int(torch.argmax(lg)) != ex["first_step_argmax"]:
                fails.append("example %d first_step_argmax" % i)
        (ids, _), = generate(model, [src], gc_gen)
        if "generate_output_ids" in ex and ids != ex["generate_output_ids"]:
            fails.append("example %d generate_output_ids: got %s want %s" % (i, ids, ex["generate_output_ids"]))
        # plain loop, also recording raw top-5 per step (before pad masking)
        steps = []

        def step_fn(dec_ids, enc=enc, m=m):
            lgt = model.decode_logits(dec_ids, enc, m)
            v, ix = torch.topk(lgt[0], 5)
            steps.append((ix.tolist(), v.tolist()))
            return lgt
        with torch.no_grad():
            rows = greedy_search(step_fn, 1, dict(gc_plain, eos=None))
        plain = rows[0]
        want = ex.get("greedy_no_forced_eos_ids")
        if want is not None:
            plain = plain[:len(want)]
            if plain != want:
                fails.append("example %d greedy_no_forced_eos_ids: got %s want %s" % (i, plain, want))
        for s, st in enumerate(ex.get("greedy_steps_top5", [])):
            if s >= len(steps):
                fails.append("example %d top5 step %d missing" % (i, s))
                break
            gi, gv = steps[s]
            if gi != st["top5_ids"]:
                # allow an order swap only between values equal within tolerance
                if sorted(gi) != sorted(st["top5_ids"]) or not close(sorted(gv), sorted(st["top5_logits"]), "top5"):
                    fails.append("example %d top5 ids step %d: %s vs %s" % (i, s, gi, st["top5_ids"]))
            if not close(gv, st["top5_logits"], "top5"):
                fails.append("example %d top5 logits step %d" % (i, s))
    if "batch" in g:
        # the golden's encoder_last_hidden_state / first_step_logits came from the padded batch forward: with
        # the same batch shapes this reference reproduces them bit for bit (single-row runs differ ~1e-4)
        src = torch.tensor(g["batch"]["input_ids"], dtype=torch.long)
        m2 = torch.tensor(g["batch"]["attention_mask"], dtype=torch.long)
        with torch.no_grad():
            enc = model.encode(src, m2)
            start = torch.full((src.shape[0], 1), gc_gen["decoder_start_token_id"], dtype=torch.long)
            lg = model.decode_logits(start, enc, m2)
        bmax = 0.0
        for i, ex in enumerate(g["examples"]):
            n = len(ex["input_ids"])
            if "encoder_last_hidden_state" in ex:
                bmax = max(bmax, float(np.max(np.abs(enc[i, :n].numpy() - np.asarray(ex["encoder_last_hidden_state"])))))
            if "first_step_logits" in ex:
                bmax = max(bmax, float(np.max(np.abs(lg[i].numpy() - np.asarray(ex["first_step_logits"])))))
        print("padded-batch forward vs golden encoder/first-step logits: max |diff| %.3g" % bmax)
        if bmax > atol:
            fails.append("padded-batch encoder/logits differ by %.3g" % bmax)
    if "batch" in g and "generate_batch_output_raw" in g:
        srcs = [[x for x, mm in zip(r, mr) if mm] for r, mr in zip(g["batch"]["input_ids"], g["batch"]["attention_mask"])]
        res = generate(model, srcs, gc_gen, raw=True)
        got = [r for r, _ in res]
        if got != g["generate_batch_output_raw"]:
            fails.append("batch generate raw output differs: %s vs %s" % (got, g["generate_batch_output_raw"]))
    print("self-test %s: %d examples, max |diff| encoder %.3g, first-step logits %.3g, top5 %.3g, positions %.3g"
          % (golden_path, len(g["examples"]), worst["enc"], worst["logits"], worst["top5"], worst["pos"]))
    for f_ in fails:
        print("FAIL:", f_)
    print("OK" if not fails else "FAILED (%d)" % len(fails))
    return 0 if not fails else 1


# ----------------------------------------------------------------------------------------------------------
# --self-test-beam: scripted-logit unit checks (no model files)
# ----------------------------------------------------------------------------------------------------------
class Scripted:
    """Fake model: next-token distribution chosen by the generated suffix (ids after the start token).
    table maps a tuple prefix -> {token: prob}; missing mass is spread evenly over the other tokens;
    unknown prefixes use `default`.  Logits = log(prob) so log_softmax(logits) == log(prob) (to ~1 ulp)."""

    def __init__(self, V, table, default):
        self.V, self.table, self.default = V, table, default
        self.calls = 0

    def dist(self, prefix):
        spec = self.table.get(tuple(prefix), self.default)
        p = np.zeros(self.V)
        rest = [t for t in range(self.V) if t not in spec]
        for t, v in spec.items():
            p[t] = v
        left = 1.0 - sum(spec.values())
        w = np.array([t + 1.0 for t in rest])  # uneven split: no exactly tied candidates
        for t, wt in zip(rest, w / w.sum()):
            p[t] = left * wt
        return p

    def __call__(self, ids):
        self.calls += 1
        rows = ids.tolist()
        out = np.stack([np.log(self.dist(r[1:])) for r in rows]).astype(np.float32)
        return torch.from_numpy(out)


def _gc(**kw):
    g = {"decoder_start_token_id": 7, "eos": [0], "pad": 7, "bad_words_ids": [[7]], "forced_eos": None,
         "num_beams": 2, "max_length": 10, "min_length": 0, "length_penalty": 1.0, "early_stopping": False,
         "no_repeat_ngram_size": 0, "renormalize_logits": False}
    g.update(kw)
    return g


def self_test_beam():
    fails = []
    L = math.log

    def check(name, cond, detail=""):
        print(("ok   " if cond else "FAIL ") + name + ("" if cond else "  " + str(detail)))
        if not cond:
            fails.append(name)

    def approx(a, b, eps=2e-6):
        return abs(a - b) <= eps * max(1.0, abs(b))

    V = 8  # tokens: 0 = eos, 7 = pad = decoder start (banned via bad_words_ids), 1..6 words
    filler = {1: 0.02, 2: 0.02, 3: 0.02, 4: 0.02, 5: 0.02, 6: 0.02, 0: 0.02}

    # 1) eos handling in BeamSearchScorer.process.  (a) the candidate loop stops as soon as K non-eos beams
    #    are filled, so an eos behind them is never looked at; (b) an eos that IS looked at but has rank >= K
    #    among the 2K candidates is skipped (not a hypothesis); (c) an eos with rank < K becomes one.
    #    step 1: 1 (.5), 2 (.4) -> beams [1] log.5, [2] log.4
    #    step 2: [1]: eos .6, 3 .35 ; [2]: eos .3, 4 .25 -> ranks: [1,eos] -1.204 (hyp), [1,3] -1.743,
    #            [2,eos] -2.120 (rank 2 >= K: skipped), [2,4] -2.303 (fills beam 2)
    t1 = {(): {1: .5, 2: .4, 0: .05}, (1,): {0: .6, 3: .35}, (2,): {0: .3, 4: .25}}
    tr = []
    beam_search(Scripted(V, t1, filler), 1, _gc(early_stopping=True, max_length=6), trace=tr)
    s2 = [e for e in tr if e.get("step") == 2]
    check("step 2: [7,1]+eos is a hypothesis", [e["ids"] for e in s2 if e["ev"] == "hyp"] == [[7, 1]], s2)
    check("step 2: eos of rank 2 skipped", [e["rank"] for e in s2 if e["ev"] == "eos_skipped"] == [2], s2)
    check("step 2: hyp sum = log.5+log.6, gen_len 2",
          any(e["ev"] == "hyp" and approx(e["sum"], L(.5) + L(.6)) and e["gen_len"] == 2 for e in s2), s2)
    # (a)+(c): step 1: 1 (.4), 2 (.3), eos (.2): eos is third, loop already full -> not even examined;
    #          step 2: after [1] and [2] eos has p=.9 -> ranks 0 and 1 -> both hypotheses -> K hyps -> done.
    sm = Scripted(V, {(): {1: .4, 2: .3, 0: .2}, (1,): {0: .9}, (2,): {0: .9}}, filler)
    tr = []
    (ids, score), = beam_search(sm, 1, _gc(early_stopping=True), trace=tr)
    check("step 1: eos behind K filled beams not examined", not any(e.get("step") == 1 and e["ev"] in ("hyp", "eos_skipped") for e in tr), tr)
    check("eos rank<K added at step 2", [e["ids"] for e in tr if e["ev"] == "hyp"] == [[7, 1], [7, 2]], tr)
    check("result [7,1,0]", ids == [7, 1, 0], ids)
    check("score = (log.4+log.9)/2 (generated_len counts the eos)", approx(score, (L(.4) + L(.9)) / 2), score)
    check("early_stopping=True stops after 2 steps", sm.calls == 2, sm.calls)

    # 2) early_stopping True vs False vs "never" (BeamHypotheses.is_done), K=2, lp=1, max_length 8.
    #    The table has no exactly tied candidate sums (ties would make the topk order unspecified).
    #    step 1: 1 (.5) r0 -> beam ; eos (.3) r1 -> hyp [7] = log.3 = -1.2040 ; 2 (.1) r2 -> beam
    #    step 2: [1,3] -1.0498 r0, [1,4] -2.8134 r1 -> beams full, no eos examined.  hyps {[7]}
    #    step 3: [1,3,4] -1.5606 r0 ; [1,3,eos] -2.2538 r1 -> hyp gen_len 3 -> -0.7513 ; [1,4,5] -3.5066 r2 -> beam
    #            2 hyps, worst -1.2040.  True: done -> [7,1,3,0], -0.7513, 3 model calls.
    #            False: best_sum -1.5606 / (cur_len 4 - 1) = -0.5202 > worst -> go on.
    #    step 4: [1,3,4,eos] -1.6119 r0 -> hyp gen_len 4 -> -0.4030 (evicts [7]; worst -0.7513);
    #            [1,4,5,eos] -3.6120 r1 -> -0.9030 < worst -> not kept.  False: -1.6119/4 = -0.4030 > worst -> go on.
    #    step 5: remaining candidates are ~ -6.3 and below -> False: -6.3/5 < -0.7513 -> done -> [7,1,3,4,0], -0.4030.
    #    "never" with lp>0 divides by max_length-1 = 7 instead: -6.3/7 = -0.9 < worst -> done too.
    #    Every (mode, lp) combination is also compared with an independent plain-python loop (brute_best).
    table = {(): {1: .5, 0: .3, 2: .1},
             (1,): {3: .7, 0: .08, 4: .12},
             (2,): {0: .45, 5: .3},
             (1, 3): {4: .6, 0: .3},
             (1, 4): {0: .2, 5: .5},
             (1, 3, 4): {0: .95},
             (1, 3, 0): {0: .9},
             (1, 4, 5): {0: .9},
             (1, 3, 4, 0): {0: .9}}

    def brute_best(table_, K, lp, mode, max_length):
        # Re-derive with a tiny independent implementation over explicit candidate lists (no torch.topk):
        # sort by (-score, flat index) which is what any correct topk gives when there are no ties.
        dist = lambda pre: Scripted(V, table_, filler).dist(list(pre))
        beams = [((), 0.0)] + [((), -1e9)] * (K - 1)
        hyps_ = []
        worst = 1e9
        steps = 0
        ban = {7}
        while True:
            steps += 1
            cands = []
            for bidx, (pre, s) in enumerate(beams):
                lp_ = np.log(dist(pre)).astype(np.float32)
                lsm = torch.log_softmax(torch.from_numpy(lp_), -1).numpy()
                for t in range(V):
                    v = -np.inf if t in ban else lsm[t]
                    cands.append((np.float32(np.float32(v) + np.float32(s)), bidx * V + t, pre, t))
            cands.sort(key=lambda c: (-c[0], c[1]))
            cands = cands[:2 * K]
            nb = []
            cur = len(beams[0][0]) + 2
            for rank, (s, _, pre, t) in enumerate(cands):
                if t == 0:
                    if rank >= K:
                        continue
                    sc = float(s) / ((cur - 1) ** lp)
                    if len(hyps_) < K or sc > worst:
                        hyps_.append((sc, (7,) + pre))
                        if len(hyps_) > K:
                            o = sorted([(x, i) for i, (x, _) in enumerate(hyps_)])
                            del hyps_[o[0][1]]
                            worst = o[1][0]
                        else:
                            worst = min(worst, sc)
                else:
                    nb.append((pre + (t,), float(s)))
                if len(nb) == K:
                    break
            best_sum = float(cands[0][0])
            d = False
            if len(hyps_) >= K:
                if mode is True:
                    d = True
                elif mode is False:
                    d = worst >= best_sum / (cur - 1) ** lp
                else:
                    den = (max_length - 1) if lp > 0 else (cur - 1)
                    d = worst >= best_sum / den ** lp
            beams = nb
            if d:
                break
            if len(beams[0][0]) + 1 >= max_length:
                for pre, s in beams:
                    sc = s / ((len(pre)) ** lp)
                    if len(hyps_) < K or sc > worst:
                        hyps_.append((sc, (7,) + pre))
                        if len(hyps_) > K:
                            o = sorted([(x, i) for i, (x, _) in enumerate(hyps_)])
                            del hyps_[o[0][1]]
                            worst = o[1][0]
                        else:
                            worst = min(worst, sc)
                break
        sc, h = sorted(hyps_, key=lambda x: x[0])[-1]
        row = list(h)
        if len(row) < max_length:
            row.append(0)
        return row, sc, steps

    results = {}
    for mode in (True, False, "never"):
        for lp in (1.0, 0.0, 2.0, -1.0):
            sm = Scripted(V, table, filler)
            (ids, score), = beam_search(sm, 1, _gc(early_stopping=mode, length_penalty=lp, max_length=8))
            bids, bscore, bsteps = brute_best(table, 2, lp, mode, 8)
            results[(mode, lp)] = (ids, score, sm.calls)
            check("early_stopping=%s lp=%s matches independent loop" % (mode, lp),
                  ids == bids and approx(score, bscore, 1e-6) and sm.calls == bsteps,
                  (ids, score, sm.calls, bids, bscore, bsteps))
    # hand-derived facts for lp=1 (see table comments above)
    ids_t, sc_t, calls_t = results[(True, 1.0)]
    check("True stops at step 3 with [7,1,3,0]", calls_t == 3 and ids_t == [7, 1, 3, 0], results[(True, 1.0)])
    check("True score = (log.5+log.7+log.3)/3", approx(sc_t, (L(.5) + L(.7) + L(.3)) / 3), sc_t)
    ids_f, sc_f, calls_f = results[(False, 1.0)]
    check("False keeps going past step 3 and finds [7,1,3,4,0]", calls_f > 3 and ids_f == [7, 1, 3, 4, 0], results[(False, 1.0)])
    check("False score = (log.5+log.7+log.6+log.95)/4", approx(sc_f, (L(.5) + L(.7) + L(.6) + L(.95)) / 4), sc_f)
    ids_n, sc_n, calls_n = results[("never", 1.0)]
    check("never runs at least as long as False", calls_n >= calls_f, (calls_n, calls_f))

    # 2b) False stops when worst_score >= best candidate sum / (cur_len-1)^lp (equality counts); "never" with
    #     lp > 0 divides by (max_length-1)^lp instead and keeps searching.
    #     step 1: eos .5 r0 -> hyp [7] = -0.6931 ; beams [1] log.3, [2] log.15
    #     step 2: [1,eos] -1.8971 r0 -> hyp /2 = -0.9486 (2 hyps, worst -0.9486) ; [1,3] r1 ; [2,eos] r2 skipped
    #             False: best_sum = -1.8971 (that eos candidate) / 2 == worst -> done -> [7,0], log.5
    #             never: -1.8971/9 > worst -> continue; [1,3,5,eos] = log.3+log.45+2log.99 at gen_len 4 = -0.5059 wins
    t2b = {(): {0: .5, 1: .3, 2: .15}, (1,): {0: .5, 3: .45}, (2,): {0: .5, 4: .45},
           (1, 3): {5: .99}, (1, 3, 5): {0: .99}}
    for mode, want, want_score in ((False, [7, 0], L(.5)), (True, [7, 0], L(.5)),
                                   ("never", [7, 1, 3, 5, 0], (L(.3) + L(.45) + 2 * L(.99)) / 4)):
        sm = Scripted(V, t2b, filler)
        (ids, score), = beam_search(sm, 1, _gc(early_stopping=mode, max_length=10))
        check("early_stopping=%s on the equality case -> %s" % (mode, want),
              ids == want and approx(score, want_score, 1e-6) and (mode == "never" or sm.calls == 2),
              (ids, score, sm.calls))

    # 3) length_penalty on hypotheses: two finished hyps, [7,a,0] sum -1.0 (len 2) and [7,b,c,0] sum -1.8 (len 3)
    #    lp=1: -0.5 vs -0.6 -> short wins ; lp=2: -0.25 vs -0.2 -> long wins.
    p_a = math.exp(-0.5)
    t3 = {(): {1: p_a, 2: 0.3}, (1,): {0: math.exp(-0.5)}, (2,): {3: 0.9},
          (2, 3): {0: math.exp(-1.8 - L(0.3) - L(0.9))}}
    for lp, want in ((1.0, [7, 1, 0]), (2.0, [7, 2, 3, 0])):
        sm = Scripted(V, t3, filler)
        (ids, score), = beam_search(sm, 1, _gc(early_stopping="never", length_penalty=lp, max_length=6))
        check("length_penalty=%s picks %s" % (lp, want), ids == want, (ids, score))

    # 4) finalize adds unfinished beams: eos never likely, max_length 4 -> output has no eos, 4 ids,
    #    score = sum / (max_length-1)^lp
    t4 = {(): {1: .6, 2: .3, 0: 1e-6}}
    d4 = {1: .5, 2: .4, 0: 1e-6}
    sm = Scripted(V, t4, d4)
    tr = []
    (ids, score), = beam_search(sm, 1, _gc(max_length=4, length_penalty=1.0), trace=tr)
    check("finalize: 4 ids, no eos", len(ids) == 4 and 0 not in ids, ids)
    check("finalize: best is [7,1,1,1]", ids == [7, 1, 1, 1], ids)
    check("finalize: score = (log.6+2log.5)/3", approx(score, (L(.6) + 2 * L(.5)) / 3, 1e-5), score)
    check("finalize: K beams added", sum(1 for e in tr if e["ev"] == "final_add") == 2, tr)

    # 5) forced eos at max_length-1: step producing id max_length-1 (0-based len) is eos with logprob 0
    sm = Scripted(V, t4, d4)
    (ids, score), = beam_search(sm, 1, _gc(max_length=5, forced_eos=[0], length_penalty=1.0))
    check("forced eos: 5 ids ending in eos", len(ids) == 5 and ids[-1] == 0 and 0 not in ids[1:-1], ids)
    check("forced eos: score = (log.6+2log.5+0)/4", approx(score, (L(.6) + 2 * L(.5)) / 4, 1e-5), score)
    # same with greedy
    rows = greedy_search(Scripted(V, t4, d4), 1, _gc(max_length=5, forced_eos=[0], num_beams=1))
    check("forced eos greedy", rows[0] == [7, 1, 1, 1, 0], rows)

    # 6) no_repeat_ngram_size=2 over the start-token-inclusive ids: greedy would repeat 1 forever
    rows = greedy_search(Scripted(V, t4, d4), 1, _gc(max_length=6, num_beams=1, no_repeat_ngram_size=2))
    # ids 7 1 | (7,1) seen; after 1 the bigram (1,1) is new -> 1 ; then (1,1) seen -> ban 1 -> 2 ; then after 2 -> 1?
    # (2,1) new -> 1 ; then last=1: banned {1 (from 1,1), 2 (from 1,2)} -> next best eos(1e-6)? no: fillers spread
    check("no_repeat_ngram greedy", rows[0][:5] == [7, 1, 1, 2, 1], rows)

    # 7) min_length: eos banned while len(ids) < min_length
    t7 = {(): {0: .9}, (1,): {0: .9}}
    rows = greedy_search(Scripted(V, t7, {0: .9}), 1, _gc(max_length=8, num_beams=1, min_length=3))
    check("min_length=3 greedy gives 3 ids before eos", rows[0][:3] != [7, 0] and rows[0].index(0) == 3, rows)

    # 8) batch with a done input: input 0 finishes at step 2 (early_stopping True), input 1 keeps going;
    #    results equal the single-input runs.  Scripted per-row by the first source token via a wrapper.
    tabA = {(): {1: .4, 2: .3, 0: .2}, (1,): {0: .9}, (2,): {0: .9}}
    tabB = table

    class Two:
        def __init__(self):
            self.a, self.b = Scripted(V, tabA, filler), Scripted(V, tabB, filler)

        def __call__(self, ids):
            n = ids.shape[0] // 2
            return torch.cat([self.a(ids[:n]), self.b(ids[n:])], 0)
    two = Two()
    res = beam_search(two, 2, _gc(early_stopping=True, max_length=8))
    (ia, sa), = beam_search(Scripted(V, tabA, filler), 1, _gc(early_stopping=True, max_length=8))
    (ib, sb), = beam_search(Scripted(V, tabB, filler), 1, _gc(early_stopping=True, max_length=8))
    check("batch of scripted inputs == single runs", res[0] == (ia, sa) and res[1] == (ib, sb), (res, ia, ib))

    # 9) real random model: right-padded batch with different source lengths == one-at-a-time
    rng = np.random.default_rng(1234)
    cfg = {"d_model": 16, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 2,
           "decoder_attention_heads": 2, "encoder_ffn_dim": 32, "decoder_ffn_dim": 32, "vocab_size": 50,
           "max_position_embeddings": 32, "scale_embedding": True, "activation_function": "swish",
           "pad_token_id": 49, "eos_token_id": 0, "decoder_start_token_id": 49}
    tens = random_marian_tensors(cfg, rng, std=0.5)
    model = MarianRef(cfg, tens)
    srcs = [[5, 6, 7, 0], [8, 9, 10, 11, 12, 13, 14, 0], [20, 0]]
    for K in (1, 3):
        gc = _gc(decoder_start_token_id=49, pad=49, bad_words_ids=[[49]], forced_eos=[0], num_beams=K,
                 max_length=12, early_stopping=False)
        together = generate(model, srcs, gc)
        alone = [generate(model, [s], gc)[0] for s in srcs]
        same = all(a[0] == b[0] and (a[1] is None or approx(a[1], b[1], 1e-5)) for a, b in zip(together, alone))
        check("padded batch == single runs (num_beams=%d)" % K, same, (together, alone))
    with torch.no_grad():
        src, mask = pad_batch(srcs, 49)
        eb = model.encode(src, mask)
        e1 = model.encode(torch.tensor([srcs[2]]), torch.ones(1, 2, dtype=torch.long))
    check("padded encoder rows == unpadded", float((eb[2, :2] - e1[0]).abs().max()) < 1e-5)

    print("self-test-beam:", "OK" if not fails else "FAILED (%d)" % len(fails))
    return 0 if not fails else 1


def random_marian_tensors(cfg, rng, std=0.5):
    """Random tensors with the names/shapes MarianMTModel saves (shared + tied layout)."""
    d, V = cfg["d_model"], cfg["vocab_size"]
    T = {"model.shared.weight": rng.normal(0, std, (V, d)), "final_logits_bias": rng.normal(0, 0.1, (1, V))}
    for side, n, ffn in (("encoder", cfg["encoder_layers"], cfg["encoder_ffn_dim"]),
                         ("decoder", cfg["decoder_layers"], cfg["decoder_ffn_dim"])):
        for i in range(n):
            p = "model.%s.layers.%d." % (side, i)
            atts = ["self_attn"] + (["encoder_attn"] if side == "decoder" else [])
            for a in atts:
                for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
                    T[p + a + "." + proj + ".weight"] = rng.normal(0, std, (d, d))
                    T[p + a + "." + proj + ".bias"] = rng.normal(0, 0.1, (d,))
                T[p + a + "_layer_norm.weight"] = 1 + rng.normal(0, 0.1, (d,))
                T[p + a + "_layer_norm.bias"] = rng.normal(0, 0.1, (d,))
            T[p + "fc1.weight"] = rng.normal(0, std, (ffn, d))
            T[p + "fc1.bias"] = rng.normal(0, 0.1, (ffn,))
            T[p + "fc2.weight"] = rng.normal(0, std, (d, ffn))
            T[p + "fc2.bias"] = rng.normal(0, 0.1, (d,))
            T[p + "final_layer_norm.weight"] = 1 + rng.normal(0, 0.1, (d,))
            T[p + "final_layer_norm.bias"] = rng.normal(0, 0.1, (d,))
    return {k: np.asarray(v, dtype=np.float32) for k, v in T.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model")
    ap.add_argument("--input")
    ap.add_argument("--num-beams", type=int)
    ap.add_argument("--max-length", type=int)
    ap.add_argument("--max-new-tokens", type=int)
    ap.add_argument("--min-length", type=int)
    ap.add_argument("--length-penalty", type=float)
    ap.add_argument("--early-stopping", type=parse_early_stopping)
    ap.add_argument("--no-repeat-ngram-size", type=int)
    ap.add_argument("--batch", action="store_true")
    ap.add_argument("--first-step-logits", action="store_true")
    ap.add_argument("--encoder", action="store_true")
    ap.add_argument("--self-test", metavar="GOLDEN")
    ap.add_argument("--self-test-beam", action="store_true")
    args = ap.parse_args(argv)
    if args.max_length is not None and args.max_new_tokens is not None:
        ap.error("--max-length and --max-new-tokens are exclusive")
    if args.self_test_beam:
        return self_test_beam()
    if args.self_test:
        return self_test(args.self_test, args.model)
    if not args.model or not args.input:
        ap.error("--model and --input are required")
    return run_cli(args)


if __name__ == "__main__":
    sys.exit(main())
