/* The machinery `nlpd infer` shares between the translation models (Marian: cmd_translate.c, M2M100 / NLLB:
 * cmd_m2m.c): option parsing, generation options, line reading, batching, --debug top-5 capture and output
 * lines. Each model supplies its loader and a struct nlpd_s2s_model of callbacks. */
#ifndef NLPD_CMD_SEQ2SEQ_H
#define NLPD_CMD_SEQ2SEQ_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "json_out.h"
#include "seq2seq.h"

#define NLPD_S2S_BATCH_MAX 1024

struct nlpd_s2s_args {
    const char *model;
    const char *backend, *dtype; /* NULL: the process default */
    int device;
    int threads, batch, debug;
    int max_length, max_new_tokens, num_beams, no_repeat, min_length, early; /* -1: the model's default */
    int forced_eos;                                                          /* -2: the model's default, -1: none */
    const char *src_lang, *tgt_lang;                                         /* langs only */
    int forced_bos; /* langs only: --forced-bos-token-id, the target as an id (input_ids need no tokenizer); -1 */
    float length_penalty;
    int has_length_penalty;
};

struct nlpd_s2s_item {
    long long line;
    char *error;  /* set: this line failed */
    int32_t *ids; /* source ids */
    int32_t tgt;  /* target language id (per-target models) */
    size_t n;
    struct nlpd_gen_output out;
    float *hidden;        /* --debug: [n, d_model] */
    float *first;         /* --debug: raw first-step logits */
    struct nlpd_buf top5; /* --debug: per-step top-5 of the raw logits (JSON) */
    int steps;
};

struct nlpd_s2s_model {
    const void *m;
    void *ws;
    const void *tok;       /* NULL: no tokenizer (lines must carry input_ids, no "text" out) */
    const char *tok_error; /* why tok is NULL, for lines that need it */
    void *ctx;             /* for prepare / encode_text */
    int d_model, dec_vocab, max_pos;
    int per_target; /* one sub-batch per it->tgt, forced as the first generated token */
    int (*encode)(const void *m, void *ws, const int32_t *const *ids, const size_t *lens, int n, float *hidden,
                  struct nlpd_error *err);
    int (*generate)(const void *m, void *ws, const struct nlpd_gen_params *p, struct nlpd_gen_output *out,
                    struct nlpd_error *err);
    /* optional: runs first on a line's JSON object; sets it->error to stop there */
    void (*prepare)(void *ctx, struct nlpd_s2s_item *it, json_t *root);
    /* a line with "text": sets it->ids / it->n or it->error */
    void (*encode_text)(void *ctx, struct nlpd_s2s_item *it, json_t *root, json_t *text);
    /* output_ids to "text" (skip_special_tokens) */
    int (*decode)(const void *tok, const int32_t *ids, size_t n, char **text, size_t *len, struct nlpd_error *err);
};

/* langs: accept --src-lang / --tgt-lang / --forced-bos-token-id. A message on stderr and -1 on bad options. */
int nlpd_s2s_parse(int argc, char **argv, int langs, struct nlpd_s2s_args *a);
/* --backend / --dtype as the process defaults the model's backend is created from. */
void nlpd_s2s_set_backend(const struct nlpd_s2s_args *a);
/* The command line's generation options over the model's defaults in gp. */
void nlpd_s2s_gen_params(const struct nlpd_s2s_args *a, struct nlpd_gen_params *gp);
/* Reads stdin, runs batches of a->batch and writes one line per input line; 1 when out of memory, else 0. */
int nlpd_s2s_run(const struct nlpd_s2s_args *a, const struct nlpd_s2s_model *md, const struct nlpd_gen_params *gp);
/* strdup that falls back to "out of memory" */
char *nlpd_s2s_dup(const char *msg);

#endif
