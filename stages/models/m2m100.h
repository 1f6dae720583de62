/* M2M100-architecture translation models (model_type "m2m_100": M2M100 and NLLB-200) of Hugging Face folders
 * (config.json, model.safetensors, generation_config.json), run as transformers' M2M100ForConditionalGeneration:
 * sinusoidal positions computed at load (halves not interleaved, frequency ln(10000)/(half-1), float32, offset by
 * padding_idx + 1, the padding row zero), embeddings scaled by sqrt(d_model) when scale_embedding, pre-norm
 * layers (LayerNorm before self-attention / cross-attention / FFN, residual after) with final encoder and decoder
 * LayerNorms, the configured activation, output projection tied to the shared embeddings unless
 * tie_word_embeddings is false and lm_head.weight exists. Decoding: the decoder start token (eos for these models),
 * then forced_bos_token_id (the target language) through generate.c. Runs on the encoder-decoder core of
 * seq2seq.c (shared with marian.c). */
#ifndef NLPD_M2M100_H
#define NLPD_M2M100_H

#include <stddef.h>
#include <stdint.h>

#include "generate.h"
#include "nlpd_error.h"
#include "nlpd_kernels.h"

struct nlpd_m2m;
struct nlpd_m2m_ws;

struct nlpd_m2m_config {
    int d_model, enc_layers, dec_layers, enc_heads, dec_heads, enc_ffn, dec_ffn;
    int vocab, dec_vocab, max_pos; /* dec_vocab = vocab (one shared vocabulary) */
    enum nlpd_act act;
    char act_name[32];
    int scale_embedding;
    int32_t pad, eos, decoder_start;
};

struct nlpd_m2m_opts {
    const char *backend;     /* "auto" | "cpu" | "cuda"; NULL = auto (ignored when `be` is given) */
    int threads;             /* 0 = online CPUs */
    struct nlpd_backend *be; /* optional shared backend (borrowed) */
    const char *dtype;       /* "fp32" | "fp16" | "bf16" | "int8": an error where the backend cannot run it;
                                NULL or "default" = kernels.dtype (fp32 with a log line where it cannot run) */
};

/* Loads DIR/config.json, DIR/model.safetensors and DIR/generation_config.json (when present; else the
 * generation keys of config.json, as transformers falls back to). NULL with err naming file and key/tensor. */
struct nlpd_m2m *nlpd_m2m_load(const char *dir, const struct nlpd_m2m_opts *opts, struct nlpd_error *err);
void nlpd_m2m_free(struct nlpd_m2m *m);
const struct nlpd_m2m_config *nlpd_m2m_config(const struct nlpd_m2m *m);
/* The dtype its matrix products run in, after any fallback. */
enum nlpd_dtype nlpd_m2m_dtype(const struct nlpd_m2m *m);

/* The model's generation defaults (num_beams, max_length, bad_words_ids, forced_eos_token_id, ...); pointers
 * inside stay valid while the model lives. max_length follows generate(): a value equal to transformers' default
 * of 20 that only comes from the config means 20 new tokens. max_length is capped at max_position_embeddings.
 * The caller sets forced_bos (the target language id) per batch. */
void nlpd_m2m_gen_defaults(const struct nlpd_m2m *m, struct nlpd_gen_params *p);

/* A workspace per worker thread; grows with the batches it sees. */
struct nlpd_m2m_ws *nlpd_m2m_ws_new(const struct nlpd_m2m *m, struct nlpd_error *err);
void nlpd_m2m_ws_free(struct nlpd_m2m_ws *ws);

/* Encodes n source sequences (ids incl. the trailing </s>; at most max_pos ids each) as one padded batch and
 * prepares the cross-attention keys/values. hidden (optional, host): [n, max len, d_model] encoder output. */
int nlpd_m2m_encode(const struct nlpd_m2m *m, struct nlpd_m2m_ws *ws, const int32_t *const *ids, const size_t *lens,
                    int n, float *hidden, struct nlpd_error *err);
/* Generates for the batch encoded last in ws. out[n] (free with nlpd_gen_output_free). */
int nlpd_m2m_generate(const struct nlpd_m2m *m, struct nlpd_m2m_ws *ws, const struct nlpd_gen_params *p,
                      struct nlpd_gen_output *out, struct nlpd_error *err);

/* Weights in bytes (for the model_info metric and logs). */
size_t nlpd_m2m_weight_bytes(const struct nlpd_m2m *m);

#endif
