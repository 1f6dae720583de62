/* M2M100 / NLLB (see m2m100.h): what sets it apart in the encoder-decoder core of seq2seq.c. Pre-norm layers with
 * final encoder/decoder LayerNorms, fairseq's positions (offset by padding_idx + 1), no final_logits_bias, one
 * shared vocabulary. struct nlpd_m2m_ws is the core's workspace under this header's name. */
#include "m2m100.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "seq2seq.h"

struct nlpd_m2m {
    struct nlpd_s2s *s;
    struct nlpd_m2m_config cfg; /* the core's config under this header's name */
};

_Static_assert(sizeof(struct nlpd_m2m_config) == sizeof(struct nlpd_s2s_config) &&
                   offsetof(struct nlpd_m2m_config, act_name) == offsetof(struct nlpd_s2s_config, act_name) &&
                   offsetof(struct nlpd_m2m_config, decoder_start) == offsetof(struct nlpd_s2s_config, decoder_start),
               "nlpd_m2m_config mirrors nlpd_s2s_config");

/* M2M100SinusoidalPositionalEmbedding.get_embedding in float32: row p = [sin(p f_j) | cos(p f_j)], f_j =
 * exp(j * -(ln 10000 / (half - 1))), a zero column when dim is odd, the padding row zero. */
static void sinusoidal(float *out, int n_pos, int dim, int pad)
{
    int half = dim / 2;
    float step = (float)(-(log(10000.0) / (double)(half > 1 ? half - 1 : 1)));
    for (int p = 0; p < n_pos; p++) {
        float *row = out + (size_t)p * dim;
        for (int j = 0; j < half; j++) {
            float f = expf((float)j * step);
            float angle = (float)p * f;
            row[j] = p == pad ? 0.0f : sinf(angle);
            row[half + j] = p == pad ? 0.0f : cosf(angle);
        }
        if (dim % 2)
            row[dim - 1] = 0.0f;
    }
}

/* defaults are M2M100Config's; the table has max_pos rows past the padding offset */
static const struct nlpd_s2s_arch m2m_arch = {.model_type = "m2m_100",
                                              .what = "an M2M100 / NLLB model",
                                              .vocab = 128112,
                                              .pad = 1,
                                              .eos = 2,
                                              .decoder_start = 2,
                                              .act = "relu",
                                              .scale_embedding = 1,
                                              .pos_extra = 2,
                                              .pos_after_pad = 1,
                                              .pos_table = sinusoidal,
                                              .pre_norm = 1};
struct nlpd_m2m *nlpd_m2m_load(const char *dir, const struct nlpd_m2m_opts *opts, struct nlpd_error *err)
{
    struct nlpd_m2m *m = calloc(1, sizeof *m);
    if (!m) {
        nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
        return NULL;
    }
    struct nlpd_s2s_opts so = {0};
    if (opts)
        so = (struct nlpd_s2s_opts){
            .backend = opts->backend, .threads = opts->threads, .be = opts->be, .dtype = opts->dtype};
    if (!(m->s = nlpd_s2s_load(dir, &m2m_arch, opts ? &so : NULL, err))) {
        free(m);
        return NULL;
    }
    memcpy(&m->cfg, nlpd_s2s_config(m->s), sizeof m->cfg);
    return m;
}

void nlpd_m2m_free(struct nlpd_m2m *m)
{
    if (!m)
        return;
    nlpd_s2s_free(m->s);
    free(m);
}

enum nlpd_dtype nlpd_m2m_dtype(const struct nlpd_m2m *m)
{
    return nlpd_s2s_dtype(m->s);
}

const struct nlpd_m2m_config *nlpd_m2m_config(const struct nlpd_m2m *m)
{
    return &m->cfg;
}

void nlpd_m2m_gen_defaults(const struct nlpd_m2m *m, struct nlpd_gen_params *p)
{
    nlpd_s2s_gen_defaults(m->s, p);
}

size_t nlpd_m2m_weight_bytes(const struct nlpd_m2m *m)
{
    return nlpd_s2s_weight_bytes(m->s);
}

struct nlpd_m2m_ws *nlpd_m2m_ws_new(const struct nlpd_m2m *m, struct nlpd_error *err)
{
    return (struct nlpd_m2m_ws *)nlpd_s2s_ws_new(m->s, err);
}

void nlpd_m2m_ws_free(struct nlpd_m2m_ws *ws)
{
    nlpd_s2s_ws_free((struct nlpd_s2s_ws *)ws);
}

int nlpd_m2m_encode(const struct nlpd_m2m *m, struct nlpd_m2m_ws *ws, const int32_t *const *ids, const size_t *lens,
                    int n, float *hidden, struct nlpd_error *err)
{
    return nlpd_s2s_encode(m->s, (struct nlpd_s2s_ws *)ws, ids, lens, n, hidden, err);
}

int nlpd_m2m_generate(const struct nlpd_m2m *m, struct nlpd_m2m_ws *ws, const struct nlpd_gen_params *p,
                      struct nlpd_gen_output *out, struct nlpd_error *err)
{
    return nlpd_s2s_generate(m->s, (struct nlpd_s2s_ws *)ws, p, out, err);
}
