/* Hugging Face classifiers for stages (see hf_classify.h): sequences sorted by length, cut into batches
 * under the padded-token budget, padded with attention masks, run, and their logits scattered back. */
#include "hf_classify.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct nlpd_hf_model {
    struct nlpd_encoder *enc;
    struct nlpd_tokenizer *tok;
    int num_labels, multi_label, has_types, max_seq;
    int32_t pad_id;
};

struct nlpd_hf_ws {
    struct nlpd_encoder_ws *ews;
    size_t *order;
    size_t order_cap;
    int32_t *ids, *mask, *types; /* one padded batch */
    float *batch_logits;
    size_t ids_cap, mask_cap, types_cap, batch_logits_cap;
    float *logits; /* every sequence's logits, back to back */
    size_t logits_cap;
    size_t *logit_off;
    size_t off_cap;
    struct nlpd_encoding *encs;
    size_t encs_cap;
    const int32_t **id_ptrs, **type_ptrs;
    size_t *lens;
    size_t id_ptrs_cap, type_ptrs_cap, lens_cap;
    size_t padded_tokens; /* run through the encoder since the last nlpd_hf_ws_take_padded_tokens() */
};

struct nlpd_hf_model *nlpd_hf_model_load(const char *dir, int threads, const char *dtype, struct nlpd_error *err)
{
    struct nlpd_hf_model *m = calloc(1, sizeof *m);
    if (!m) {
        nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
        return NULL;
    }
    struct nlpd_encoder_opts opts = {.threads = threads, .dtype = dtype && strcmp(dtype, "default") ? dtype : NULL};
    m->enc = nlpd_encoder_load(dir, &opts, err);
    if (!m->enc)
        goto bad;
    if (nlpd_encoder_task(m->enc) == NLPD_HF_TASK_NONE) {
        nlpd_error_set(err, NLPD_EINVAL, 0, "%s: the model has no sequence- or token-classification head", dir);
        goto bad;
    }
    m->tok = nlpd_tokenizer_load(dir, err);
    if (!m->tok)
        goto bad;
    const struct nlpd_hf_config *c = nlpd_encoder_config(m->enc);
    m->num_labels = nlpd_encoder_num_labels(m->enc);
    m->multi_label = strcmp(c->problem_type, "multi_label_classification") == 0;
    m->has_types = c->type_vocab_size > 0;
    m->max_seq = nlpd_encoder_max_seq(m->enc);
    size_t tmax = nlpd_tokenizer_model_max_length(m->tok);
    if (tmax && tmax < (size_t)m->max_seq)
        m->max_seq = (int)tmax;
    m->pad_id = nlpd_tokenizer_pad_id(m->tok);
    if (m->pad_id < 0)
        m->pad_id = 0;
    return m;
bad:
    nlpd_hf_model_free(m);
    return NULL;
}

void nlpd_hf_model_free(struct nlpd_hf_model *m)
{
    if (!m)
        return;
    nlpd_tokenizer_free(m->tok);
    nlpd_encoder_free(m->enc);
    free(m);
}

enum nlpd_dtype nlpd_hf_model_dtype(const struct nlpd_hf_model *m)
{
    return nlpd_encoder_dtype(m->enc);
}

enum nlpd_hf_task nlpd_hf_model_task(const struct nlpd_hf_model *m)
{
    return nlpd_encoder_task(m->enc);
}

int nlpd_hf_model_num_labels(const struct nlpd_hf_model *m)
{
    return m->num_labels;
}

const char *nlpd_hf_model_label(const struct nlpd_hf_model *m, int i)
{
    const struct nlpd_hf_config *c = nlpd_encoder_config(m->enc);
    return i >= 0 && i < c->num_labels ? c->id2label[i] : NULL;
}

int nlpd_hf_model_multi_label(const struct nlpd_hf_model *m)
{
    return m->multi_label;
}

const struct nlpd_tokenizer *nlpd_hf_model_tokenizer(const struct nlpd_hf_model *m)
{
    return m->tok;
}

int nlpd_hf_model_max_seq(const struct nlpd_hf_model *m)
{
    return m->max_seq;
}

struct nlpd_hf_ws *nlpd_hf_ws_new(const struct nlpd_hf_model *m)
{
    struct nlpd_hf_ws *ws = calloc(1, sizeof *ws);
    if (!ws)
        return NULL;
    struct nlpd_error err;
    ws->ews = nlpd_encoder_ws_new(m->enc, 8, m->max_seq < 128 ? m->max_seq : 128, &err);
    if (!ws->ews) {
        free(ws);
        return NULL;
    }
    return ws;
}

size_t nlpd_hf_ws_take_padded_tokens(struct nlpd_hf_ws *ws)
{
    size_t n = ws ? ws->padded_tokens : 0;
    if (ws)
        ws->padded_tokens = 0;
    return n;
}

void nlpd_hf_ws_free(struct nlpd_hf_ws *ws)
{
    if (!ws)
        return;
    nlpd_encoder_ws_free(ws->ews);
    for (size_t i = 0; i < ws->encs_cap; i++)
        nlpd_encoding_free(&ws->encs[i]);
    free(ws->encs);
    free(ws->order), free(ws->ids), free(ws->mask), free(ws->types), free(ws->batch_logits);
    free(ws->logits), free(ws->logit_off), free(ws->id_ptrs), free(ws->type_ptrs), free(ws->lens);
    free(ws);
}

/* Grows *p to hold n elements of size sz; 0 or -1. */
static int grow(void *p, size_t *cap, size_t n, size_t sz)
{
    if (n <= *cap)
        return 0;
    size_t c = *cap ? *cap : 16;
    while (c < n)
        c *= 2;
    void *q = realloc(*(void **)p, c * sz);
    if (!q)
        return -1;
    *(void **)p = q;
    *cap = c;
    return 0;
}

static __thread const size_t *sort_lens; /* qsort has no context argument */

static int by_length(const void *a, const void *b)
{
    size_t x = sort_lens[*(const size_t *)a], y = sort_lens[*(const size_t *)b];
    if (x != y)
        return x < y ? -1 : 1;
    return *(const size_t *)a < *(const size_t *)b ? -1 : 1; /* stable: equal lengths keep their order */
}

int nlpd_hf_forward(const struct nlpd_hf_model *m, struct nlpd_hf_ws *ws, const int32_t *const *ids,
                    const int32_t *const *type_ids, const size_t *lens, size_t n, size_t max_tokens,
                    const float **logits, struct nlpd_error *err)
{
    int token_level = nlpd_encoder_task(m->enc) == NLPD_HF_TASK_TOKEN_CLS;
    size_t NL = (size_t)m->num_labels, total = 0;
    if (grow(&ws->order, &ws->order_cap, n, sizeof *ws->order) || grow(&ws->logit_off, &ws->off_cap, n, sizeof(size_t)))
        return nlpd_error_set(err, NLPD_ENOMEM, 1, "out of memory");
    for (size_t i = 0; i < n; i++) {
        if (lens[i] == 0 || lens[i] > (size_t)m->max_seq)
            return nlpd_error_set(err, NLPD_EINVAL, 0, "a sequence of %zu tokens: the model takes 1 .. %d", lens[i],
                                  m->max_seq);
        ws->order[i] = i;
        ws->logit_off[i] = total;
        total += (token_level ? lens[i] : 1) * NL;
    }
    if (grow(&ws->logits, &ws->logits_cap, total, sizeof(float)))
        return nlpd_error_set(err, NLPD_ENOMEM, 1, "out of memory");
    sort_lens = lens;
    qsort(ws->order, n, sizeof *ws->order, by_length);

    for (size_t start = 0; start < n;) {
        /* Sorted by length, so the batch's longest is its last: extend while the padded size fits. */
        size_t end = start + 1;
        while (end < n && (end - start + 1) * lens[ws->order[end]] <= max_tokens)
            end++;
        size_t b = end - start, seq = lens[ws->order[end - 1]];
        size_t cells = b * seq;
        if (grow(&ws->ids, &ws->ids_cap, cells, sizeof(int32_t)) ||
            grow(&ws->mask, &ws->mask_cap, cells, sizeof(int32_t)) ||
            grow(&ws->types, &ws->types_cap, cells, sizeof(int32_t)) ||
            grow(&ws->batch_logits, &ws->batch_logits_cap, (token_level ? cells : b) * NL, sizeof(float)))
            return nlpd_error_set(err, NLPD_ENOMEM, 1, "out of memory");
        for (size_t r = 0; r < b; r++) {
            size_t i = ws->order[start + r], L = lens[i];
            for (size_t t = 0; t < seq; t++) {
                int real = t < L;
                ws->ids[r * seq + t] = real ? ids[i][t] : m->pad_id;
                ws->mask[r * seq + t] = real;
                ws->types[r * seq + t] = real && type_ids && type_ids[i] ? type_ids[i][t] : 0;
            }
        }
        struct nlpd_encoder_input in = {(int)b, (int)seq, ws->ids, ws->mask, m->has_types ? ws->types : NULL};
        struct nlpd_encoder_output out = {.logits = ws->batch_logits};
        int rc = nlpd_encoder_forward(m->enc, ws->ews, &in, &out, err);
        if (rc < 0)
            return rc;
        ws->padded_tokens += cells;
        for (size_t r = 0; r < b; r++) {
            size_t i = ws->order[start + r];
            if (token_level)
                memcpy(ws->logits + ws->logit_off[i], ws->batch_logits + r * seq * NL, lens[i] * NL * sizeof(float));
            else
                memcpy(ws->logits + ws->logit_off[i], ws->batch_logits + r * NL, NL * sizeof(float));
        }
        start = end;
    }
    for (size_t i = 0; i < n; i++)
        logits[i] = ws->logits + ws->logit_off[i];
    return 0;
}

int nlpd_hf_classify(const struct nlpd_hf_model *m, struct nlpd_hf_ws *ws, const char *const *texts, const size_t *lens,
                     size_t n, size_t max_tokens, const struct nlpd_encoding **enc, const float **logits,
                     struct nlpd_error *err)
{
    size_t old = ws->encs_cap;
    if (grow(&ws->encs, &ws->encs_cap, n, sizeof *ws->encs))
        return nlpd_error_set(err, NLPD_ENOMEM, 1, "out of memory");
    memset(ws->encs + old, 0, (ws->encs_cap - old) * sizeof *ws->encs);
    if (grow(&ws->id_ptrs, &ws->id_ptrs_cap, n, sizeof *ws->id_ptrs) ||
        grow(&ws->type_ptrs, &ws->type_ptrs_cap, n, sizeof *ws->type_ptrs) ||
        grow(&ws->lens, &ws->lens_cap, n, sizeof *ws->lens))
        return nlpd_error_set(err, NLPD_ENOMEM, 1, "out of memory");
    for (size_t i = 0; i < n; i++) {
        int rc = nlpd_tokenizer_encode(m->tok, texts[i], lens[i], NULL, 0, (size_t)m->max_seq, &ws->encs[i], err);
        if (rc < 0)
            return rc;
        ws->id_ptrs[i] = ws->encs[i].ids;
        ws->type_ptrs[i] = ws->encs[i].type_ids;
        ws->lens[i] = ws->encs[i].n;
        enc[i] = &ws->encs[i];
    }
    return nlpd_hf_forward(m, ws, ws->id_ptrs, ws->type_ptrs, ws->lens, n, max_tokens, logits, err);
}

void nlpd_hf_softmax(const float *logits, int n, float *out)
{
    float max = logits[0];
    for (int i = 1; i < n; i++)
        if (logits[i] > max)
            max = logits[i];
    double z = 0;
    for (int i = 0; i < n; i++)
        z += exp((double)logits[i] - max);
    for (int i = 0; i < n; i++)
        out[i] = (float)(exp((double)logits[i] - max) / z);
}

void nlpd_hf_sigmoid(const float *logits, int n, float *out)
{
    for (int i = 0; i < n; i++)
        out[i] = (float)(1.0 / (1.0 + exp(-(double)logits[i])));
}
