/* Marian (OPUS-MT) encoder-decoder translation models of Hugging Face folders (config.json, model.safetensors,
 * generation_config.json), run as transformers' MarianMTModel does: static sinusoidal positions computed at load
 * (two halves, not interleaved), embeddings scaled by sqrt(d_model), post-norm layers, the configured activation,
 * tied or separate output projection plus final_logits_bias. Decoding keeps a KV cache for self-attention and
 * computes the encoder's cross-attention keys/values once per batch (the encoder-decoder core of seq2seq.c, shared
 * with m2m100.c); the search is generate.c's. */
#ifndef NLPD_MARIAN_H
#define NLPD_MARIAN_H

#include <stddef.h>
#include <stdint.h>

#include "generate.h"
#include "nlpd_error.h"
#include "nlpd_kernels.h"

struct nlpd_marian;
struct nlpd_marian_ws;

struct nlpd_marian_config {
    int d_model, enc_layers, dec_layers, enc_heads, dec_heads, enc_ffn, dec_ffn;
    int vocab, dec_vocab, max_pos;
    enum nlpd_act act;
    char act_name[32];
    int scale_embedding;
    int32_t pad, eos, decoder_start;
};

struct nlpd_marian_opts {
    const char *backend;     /* "auto" | "cpu" | "cuda"; NULL = auto (ignored when `be` is given) */
    int threads;             /* 0 = online CPUs */
    struct nlpd_backend *be; /* optional shared backend (borrowed) */
    const char *dtype;       /* "fp32" | "fp16" | "bf16" | "int8": an error where the backend cannot run it;
                                NULL or "default" = kernels.dtype (fp32 with a log line where it cannot run) */
};

/* Loads DIR/config.json, DIR/model.safetensors and DIR/generation_config.json (when present; else the
 * generation keys of config.json, as transformers falls back to). NULL with err naming file and key/tensor. */
struct nlpd_marian *nlpd_marian_load(const char *dir, const struct nlpd_marian_opts *opts, struct nlpd_error *err);
void nlpd_marian_free(struct nlpd_marian *m);
const struct nlpd_marian_config *nlpd_marian_config(const struct nlpd_marian *m);
/* The dtype its matrix products run in, after any fallback. */
enum nlpd_dtype nlpd_marian_dtype(const struct nlpd_marian *m);

/* The model's generation defaults (num_beams, max_length, bad_words_ids, forced_eos_token_id, ...); pointers
 * inside stay valid while the model lives. max_length follows generate(): a value equal to transformers' default
 * of 20 that only comes from the config means 20 new tokens. max_length is capped at max_position_embeddings. */
void nlpd_marian_gen_defaults(const struct nlpd_marian *m, struct nlpd_gen_params *p);

/* A workspace per worker thread; grows with the batches it sees. */
struct nlpd_marian_ws *nlpd_marian_ws_new(const struct nlpd_marian *m, struct nlpd_error *err);
void nlpd_marian_ws_free(struct nlpd_marian_ws *ws);

/* Encodes n source sequences (ids incl. the trailing </s>; at most max_pos ids each) as one padded batch and
 * prepares the cross-attention keys/values. hidden (optional, host): [n, max len, d_model] encoder output. */
int nlpd_marian_encode(const struct nlpd_marian *m, struct nlpd_marian_ws *ws, const int32_t *const *ids,
                       const size_t *lens, int n, float *hidden, struct nlpd_error *err);
/* Generates for the batch encoded last in ws. out[n] (free with nlpd_gen_output_free). */
int nlpd_marian_generate(const struct nlpd_marian *m, struct nlpd_marian_ws *ws, const struct nlpd_gen_params *p,
                         struct nlpd_gen_output *out, struct nlpd_error *err);

/* Weights in bytes (for the model_info metric and logs). */
size_t nlpd_marian_weight_bytes(const struct nlpd_marian *m);

#endif
