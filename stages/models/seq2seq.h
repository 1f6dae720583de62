/* The encoder-decoder transformer core that marian.c (Marian / OPUS-MT) and m2m100.c (M2M100 / NLLB) share:
 * config and generation config reading, weights laid out for the kernels, the encoder pass, the decoder step with
 * its KV cache and the beam reorder that generate.c drives. What differs between the models is described by a
 * struct nlpd_s2s_arch (config defaults, position table and offset, pre- or post-norm, final_logits_bias). */
#ifndef NLPD_SEQ2SEQ_H
#define NLPD_SEQ2SEQ_H

#include <stddef.h>
#include <stdint.h>

#include "generate.h"
#include "nlpd_error.h"
#include "nlpd_kernels.h"

struct nlpd_s2s;
struct nlpd_s2s_ws;

struct nlpd_s2s_config {
    int d_model, enc_layers, dec_layers, enc_heads, dec_heads, enc_ffn, dec_ffn;
    int vocab, dec_vocab, max_pos;
    enum nlpd_act act;
    char act_name[32];
    int scale_embedding;
    int32_t pad, eos, decoder_start;
};

struct nlpd_s2s_arch {
    const char *model_type; /* config.json's model_type, when it has one */
    const char *what;       /* the model in errors: "a Marian model" */
    /* config.json defaults (the transformers Config class's) */
    int vocab, pad, eos, decoder_start; /* decoder_start < 0: pad */
    const char *act;
    int scale_embedding;
    int dec_vocab_key;  /* decoder_vocab_size is read (else the vocabulary is shared) */
    int static_pos_key; /* static_position_embeddings false is refused */
    /* Positions: the table has max_pos + pos_extra rows from pos_table(out, rows, d_model, pad). With pos_after_pad,
     * position t is row pad + 1 + t and padding tokens take row pad (fairseq's numbering). */
    int pos_extra, pos_after_pad;
    void (*pos_table)(float *out, int n_pos, int dim, int pad);
    int pre_norm;    /* x += f(LN(x)) with final encoder/decoder LayerNorms; else x = LN(x + f(x)) */
    int logits_bias; /* final_logits_bias added to the logits (zero where the checkpoint has none) */
};

struct nlpd_s2s_opts {
    const char *backend;     /* "auto" | "cpu" | "cuda"; NULL = auto (ignored when `be` is given) */
    int threads;             /* 0 = online CPUs */
    struct nlpd_backend *be; /* optional shared backend (borrowed) */
    const char *dtype;       /* "fp32" | "fp16" | "bf16" | "int8"; NULL or "default" = kernels.dtype */
};

/* Loads DIR/config.json, DIR/model.safetensors and DIR/generation_config.json (when present; else the generation
 * keys of config.json). arch must outlive the model. NULL with err naming file and key/tensor. */
struct nlpd_s2s *nlpd_s2s_load(const char *dir, const struct nlpd_s2s_arch *arch, const struct nlpd_s2s_opts *opts,
                               struct nlpd_error *err);
void nlpd_s2s_free(struct nlpd_s2s *m);
const struct nlpd_s2s_config *nlpd_s2s_config(const struct nlpd_s2s *m);
enum nlpd_dtype nlpd_s2s_dtype(const struct nlpd_s2s *m);
void nlpd_s2s_gen_defaults(const struct nlpd_s2s *m, struct nlpd_gen_params *p);
size_t nlpd_s2s_weight_bytes(const struct nlpd_s2s *m);

struct nlpd_s2s_ws *nlpd_s2s_ws_new(const struct nlpd_s2s *m, struct nlpd_error *err);
void nlpd_s2s_ws_free(struct nlpd_s2s_ws *ws);
int nlpd_s2s_encode(const struct nlpd_s2s *m, struct nlpd_s2s_ws *ws, const int32_t *const *ids, const size_t *lens,
                    int n, float *hidden, struct nlpd_error *err);
int nlpd_s2s_generate(const struct nlpd_s2s *m, struct nlpd_s2s_ws *ws, const struct nlpd_gen_params *p,
                      struct nlpd_gen_output *out, struct nlpd_error *err);

#endif
