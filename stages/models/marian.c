/* Marian (see marian.h): what sets it apart in the encoder-decoder core of seq2seq.c. Post-norm layers, positions
 * 0.. from MarianSinusoidalPositionalEmbedding's table, final_logits_bias, an optional separate decoder vocabulary.
 * struct nlpd_marian_ws is the core's workspace under this header's name. */
#include "marian.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "seq2seq.h"

struct nlpd_marian {
    struct nlpd_s2s *s;
    struct nlpd_marian_config cfg; /* the core's config under this header's name */
};

_Static_assert(sizeof(struct nlpd_marian_config) == sizeof(struct nlpd_s2s_config) &&
                   offsetof(struct nlpd_marian_config, act_name) == offsetof(struct nlpd_s2s_config, act_name) &&
                   offsetof(struct nlpd_marian_config, decoder_start) ==
                       offsetof(struct nlpd_s2s_config, decoder_start),
               "nlpd_marian_config mirrors nlpd_s2s_config");

/* transformers' MarianSinusoidalPositionalEmbedding: sin of the even angle columns first, then cos of the odd
 * ones, in double, cast to float */
static void sinusoidal(float *out, int n_pos, int dim, int pad)
{
    (void)pad;
    int sentinel = dim % 2 == 0 ? dim / 2 : dim / 2 + 1;
    for (int p = 0; p < n_pos; p++)
        for (int j = 0; j < dim; j++) {
            int col = j < sentinel ? 2 * j : 2 * (j - sentinel) + 1;
            double angle = (double)p / pow(10000.0, 2.0 * (double)(col / 2) / (double)dim);
            out[(size_t)p * dim + j] = (float)(j < sentinel ? sin(angle) : cos(angle));
        }
}

/* defaults are MarianConfig's */
static const struct nlpd_s2s_arch marian_arch = {.model_type = "marian",
                                                 .what = "a Marian model",
                                                 .vocab = 58101,
                                                 .pad = 58100,
                                                 .eos = 0,
                                                 .decoder_start = -1,
                                                 .act = "gelu",
                                                 .scale_embedding = 0,
                                                 .dec_vocab_key = 1,
                                                 .static_pos_key = 1,
                                                 .pos_table = sinusoidal,
                                                 .logits_bias = 1};

struct nlpd_marian *nlpd_marian_load(const char *dir, const struct nlpd_marian_opts *opts, struct nlpd_error *err)
{
    struct nlpd_marian *m = calloc(1, sizeof *m);
    if (!m) {
        nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
        return NULL;
    }
    struct nlpd_s2s_opts so = {0};
    if (opts)
        so = (struct nlpd_s2s_opts){
            .backend = opts->backend, .threads = opts->threads, .be = opts->be, .dtype = opts->dtype};
    if (!(m->s = nlpd_s2s_load(dir, &marian_arch, opts ? &so : NULL, err))) {
        free(m);
        return NULL;
    }
    memcpy(&m->cfg, nlpd_s2s_config(m->s), sizeof m->cfg);
    return m;
}

void nlpd_marian_free(struct nlpd_marian *m)
{
    if (!m)
        return;
    nlpd_s2s_free(m->s);
    free(m);
}

enum nlpd_dtype nlpd_marian_dtype(const struct nlpd_marian *m)
{
    return nlpd_s2s_dtype(m->s);
}

const struct nlpd_marian_config *nlpd_marian_config(const struct nlpd_marian *m)
{
    return &m->cfg;
}

void nlpd_marian_gen_defaults(const struct nlpd_marian *m, struct nlpd_gen_params *p)
{
    nlpd_s2s_gen_defaults(m->s, p);
}

size_t nlpd_marian_weight_bytes(const struct nlpd_marian *m)
{
    return nlpd_s2s_weight_bytes(m->s);
}

struct nlpd_marian_ws *nlpd_marian_ws_new(const struct nlpd_marian *m, struct nlpd_error *err)
{
    return (struct nlpd_marian_ws *)nlpd_s2s_ws_new(m->s, err);
}

void nlpd_marian_ws_free(struct nlpd_marian_ws *ws)
{
    nlpd_s2s_ws_free((struct nlpd_s2s_ws *)ws);
}

int nlpd_marian_encode(const struct nlpd_marian *m, struct nlpd_marian_ws *ws, const int32_t *const *ids,
                       const size_t *lens, int n, float *hidden, struct nlpd_error *err)
{
    return nlpd_s2s_encode(m->s, (struct nlpd_s2s_ws *)ws, ids, lens, n, hidden, err);
}

int nlpd_marian_generate(const struct nlpd_marian *m, struct nlpd_marian_ws *ws, const struct nlpd_gen_params *p,
                         struct nlpd_gen_output *out, struct nlpd_error *err)
{
    return nlpd_s2s_generate(m->s, (struct nlpd_s2s_ws *)ws, p, out, err);
}
