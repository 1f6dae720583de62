/* Stage "sentiment": text classification with a Hugging Face sequence-classification folder (softmax over
 * id2label) or a fastText model (the Amazon review models). Writes sentiment.label (through `labels`),
 * sentiment.score and, with `scores`, every label's score. `models` picks a model per lang.code. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fasttext.h"
#include "hf_classify.h"
#include "nlpd_stage.h"
#include "text_norm.h"

struct smodel {
    struct nlpd_ft_model *ft;
    struct nlpd_hf_model *hf;
    int nlabels;
    char **label_out; /* per model label: the label written to records */
};

struct sentiment {
    char *backend;
    char *model;
    char *dtype;
    struct nlpd_conf_map models;
    struct nlpd_conf_map labels;
    char *label_prefix;
    int lowercase;
    int split_punctuation;
    int scores;
    int exact_scores;
    struct nlpd_stage_models ms; /* of struct smodel */
};

struct sentiment_thread {
    struct nlpd_ft_scratch **scratch; /* per model (fastText) */
    struct nlpd_hf_ws **ws;           /* per model (Hugging Face) */
    char *norm;
    size_t norm_cap;
    const char **texts;
    size_t *lens;
    const struct nlpd_encoding **enc;
    const float **logits;
    size_t cap;
};

static const struct nlpd_conf_entry sentiment_conf[] = {
    {"backend", NLPD_CONF_ENUM, "auto", offsetof(struct sentiment, backend), NLPD_CONF_CACHE_KEY, "auto|fasttext|hf", 0,
     0, "\"hf\": a Hugging Face folder; \"fasttext\": a .bin/.ftz file; \"auto\": by what the path is"},
    {"model", NLPD_CONF_PATH, NULL, offsetof(struct sentiment, model), NLPD_CONF_MODEL, NULL, 0, 0,
     "the model: a Hugging Face sequence-classification folder or a fastText file (one of model or models)"},
    {"models", NLPD_CONF_MAP, NULL, offsetof(struct sentiment, models), NLPD_CONF_CACHE_KEY, NULL, 0, 0,
     "per-language models keyed on lang.code (langid must run first), e.g. ((\"en\", \"models/sst2\"), "
     "(\"default\", \"models/xlmr-sentiment\")); records of other languages without a default are left alone"},
    {"labels", NLPD_CONF_MAP, NULL, offsetof(struct sentiment, labels), NLPD_CONF_CACHE_KEY, NULL, 0, 0,
     "model label -> output label, e.g. ((\"LABEL_0\", \"negative\")); unmapped labels are lowercased "
     "(fastText: __label__1/__label__2 of the Amazon models become negative/positive)"},
    {"label_prefix", NLPD_CONF_STRING, "__label__", offsetof(struct sentiment, label_prefix), NLPD_CONF_CACHE_KEY, NULL,
     0, 0, "fastText: prefix stripped from labels that `labels` does not map"},
    {"lowercase", NLPD_CONF_BOOL, "true", offsetof(struct sentiment, lowercase), NLPD_CONF_CACHE_KEY, NULL, 0, 0,
     "fastText: lowercase the text first (the Amazon review models were trained on lowercased text)"},
    {"split_punctuation", NLPD_CONF_BOOL, "true", offsetof(struct sentiment, split_punctuation), NLPD_CONF_CACHE_KEY,
     NULL, 0, 0, "fastText: separate . , ' ( ) ! ? from words and drop \" ; : as fastText's training scripts did"},
    {"scores", NLPD_CONF_BOOL, "false", offsetof(struct sentiment, scores), NLPD_CONF_CACHE_KEY, NULL, 0, 0,
     "also write every label's score (sentiment.scores)"},
    {"exact_scores", NLPD_CONF_BOOL, "false", offsetof(struct sentiment, exact_scores), NLPD_CONF_CACHE_KEY, NULL, 0, 0,
     "fastText: false: scores are probabilities, within [0, 1]; true: fastText predict-prob's values exactly "
     "(exp(log(p + 1e-5)), up to 1.00001), for parity checks against the tool"},
    {"dtype", NLPD_CONF_ENUM, "default", offsetof(struct sentiment, dtype), NLPD_CONF_CACHE_KEY,
     "default|fp32|fp16|bf16|int8", 0, 0,
     "precision of the model's matrix products on the CPU: \"default\" = kernels.dtype; \"bf16\" (AVX512-BF16) "
     "or \"int8\" (dynamic quantisation, AVX512-VNNI / AVX-VNNI) are an error on a CPU without them; \"fp16\" is "
     "CUDA-only. Part of the cache key and of meta.models"},
    {0},
};

static int is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static char *lowercase_ascii(const char *s)
{
    char *o = strdup(s);
    for (char *p = o; p && *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p + 32);
    return o;
}

static int load_model(void *ctx, void *slot, const char *path, struct nlpd_error *err)
{
    struct sentiment *s = ctx;
    struct smodel *m = slot;
    int hf = strcmp(s->backend, "hf") == 0 || (strcmp(s->backend, "auto") == 0 && is_dir(path));
    if (hf) {
        m->hf = nlpd_hf_model_load(path, 1, s->dtype, err);
        if (!m->hf)
            return err->code ? err->code : NLPD_EFORMAT;
        if (nlpd_hf_model_task(m->hf) != NLPD_HF_TASK_SEQ_CLS)
            return nlpd_error_set(err, NLPD_EINVAL, 0, "%s: not a sequence-classification model", path);
        m->nlabels = nlpd_hf_model_num_labels(m->hf);
    } else {
        m->ft = nlpd_ft_load(path, err);
        if (!m->ft)
            return err->code ? err->code : NLPD_EFORMAT;
        struct nlpd_ft_info info;
        nlpd_ft_get_info(m->ft, &info);
        m->nlabels = info.nlabels;
    }
    m->label_out = calloc((size_t)m->nlabels, sizeof *m->label_out);
    if (!m->label_out)
        return nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
    /* The fastText Amazon polarity models: __label__1 = 1-2 stars, __label__2 = 4-5 stars. */
    int polarity = m->ft && m->nlabels == 2 && strcmp(nlpd_ft_label(m->ft, 0), nlpd_ft_label(m->ft, 1)) != 0;
    for (int i = 0; m->ft && i < m->nlabels && polarity; i++)
        polarity = !strcmp(nlpd_ft_label(m->ft, i), "__label__1") || !strcmp(nlpd_ft_label(m->ft, i), "__label__2");
    size_t plen = strlen(s->label_prefix);
    for (int i = 0; i < m->nlabels; i++) {
        const char *label = m->hf ? nlpd_hf_model_label(m->hf, i) : nlpd_ft_label(m->ft, i);
        const char *mapped = nlpd_conf_map_get(&s->labels, label);
        if (mapped)
            m->label_out[i] = strdup(mapped);
        else if (polarity)
            m->label_out[i] = strdup(strcmp(label, "__label__1") == 0 ? "negative" : "positive");
        else if (m->ft)
            m->label_out[i] = strdup(strncmp(label, s->label_prefix, plen) == 0 ? label + plen : label);
        else
            m->label_out[i] = lowercase_ascii(label); /* HF pipelines' POSITIVE -> positive */
        if (!m->label_out[i])
            return nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
        if (strlen(m->label_out[i]) >= NLPD_LABEL_MAX)
            return nlpd_error_set(err, NLPD_EINVAL, 0, "label \"%s\" is longer than %d bytes", m->label_out[i],
                                  NLPD_LABEL_MAX - 1);
    }
    return 0;
}

static struct smodel *model_at(const struct sentiment *s, size_t i)
{
    return nlpd_stage_model(&s->ms, i);
}

static int sentiment_init(const struct nlpd_stage_instance *inst, void *ctx, struct nlpd_error *err)
{
    struct sentiment *s = ctx;
    (void)inst;
    int rc = nlpd_stage_models_load(&s->ms, s->model, &s->models, sizeof(struct smodel), load_model, s, err);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < s->labels.n; i++) {
        int found = 0;
        for (size_t j = 0; j < s->ms.n && !found; j++) {
            const struct smodel *m = model_at(s, j);
            for (int k = 0; k < m->nlabels && !found; k++)
                found = strcmp(s->labels.from[i], m->hf ? nlpd_hf_model_label(m->hf, k) : nlpd_ft_label(m->ft, k)) == 0;
        }
        if (!found)
            return nlpd_error_set(err, NLPD_EINVAL, 0, "labels: no model has the label \"%s\"", s->labels.from[i]);
    }
    return 0;
}

static void *sentiment_thread_init(void *ctx)
{
    struct sentiment *s = ctx;
    struct sentiment_thread *t = calloc(1, sizeof *t);
    if (!t || !(t->scratch = calloc(s->ms.n, sizeof *t->scratch)) || !(t->ws = calloc(s->ms.n, sizeof *t->ws)))
        goto bad;
    for (size_t i = 0; i < s->ms.n; i++) {
        const struct smodel *m = model_at(s, i);
        if (m->ft ? !(t->scratch[i] = nlpd_ft_scratch_new(m->ft)) : !(t->ws[i] = nlpd_hf_ws_new(m->hf)))
            goto bad;
    }
    return t;
bad:
    if (t) {
        for (size_t i = 0; t->scratch && t->ws && i < s->ms.n; i++) {
            nlpd_ft_scratch_free(t->scratch[i]);
            nlpd_hf_ws_free(t->ws[i]);
        }
        free(t->scratch);
        free(t->ws);
        free(t);
    }
    return NULL;
}

static void sentiment_thread_fini(void *ctx, void *tstate)
{
    struct sentiment *s = ctx;
    struct sentiment_thread *t = tstate;
    for (size_t i = 0; i < s->ms.n; i++) {
        nlpd_ft_scratch_free(t->scratch[i]);
        nlpd_hf_ws_free(t->ws[i]);
    }
    free(t->scratch), free(t->ws), free(t->norm), free(t->texts), free(t->lens), free(t->enc);
    free(t->logits);
    free(t);
}

static int write_result(const struct sentiment *s, const struct smodel *m, struct nlpd_record *r, const float *probs,
                        int best)
{
    snprintf(r->sentiment.label, sizeof r->sentiment.label, "%s", m->label_out[best]);
    r->sentiment.score = probs[best];
    r->sentiment.set = 1;
    if (!s->scores)
        return 0;
    struct nlpd_label_score sc[64];
    int n = m->nlabels < 64 ? m->nlabels : 64;
    for (int i = 0; i < n; i++) {
        snprintf(sc[i].label, sizeof sc[i].label, "%s", m->label_out[i]);
        sc[i].score = probs[i];
    }
    return nlpd_record_set_scores(r, sc, (size_t)n);
}

static enum nlpd_stage_status run_fasttext(const struct nlpd_stage_instance *inst, struct sentiment *s,
                                           struct sentiment_thread *t, size_t mi, struct nlpd_record **recs, size_t n)
{
    const struct smodel *m = model_at(s, mi);
    struct nlpd_text_norm norm = {s->lowercase, s->split_punctuation};
    struct nlpd_ft_pred preds[64];
    int k = s->scores ? (m->nlabels < 64 ? m->nlabels : 64) : 1;
    for (size_t i = 0; i < n; i++) {
        struct nlpd_record *r = recs[i];
        const char *text = r->text;
        size_t len = r->text_len;
        if (norm.lowercase || norm.split_punctuation) {
            long nl = nlpd_text_normalize(&norm, r->text, r->text_len, &t->norm, &t->norm_cap);
            if (nl < 0)
                return NLPD_STAGE_RETRY;
            text = t->norm;
            len = (size_t)nl;
        }
        int np = nlpd_ft_predict(m->ft, t->scratch[mi], text, len, k, 0.0f, preds);
        if (np == NLPD_ENOMEM)
            return NLPD_STAGE_RETRY;
        if (np <= 0) {
            nlpd_stage_fail(inst, r, np < 0 ? "prediction failed: %s" : "the model gave no prediction%s",
                            np < 0 ? nlpd_strerror(np) : "");
            continue;
        }
        float probs[64] = {0};
        for (int j = 0; j < np; j++)
            probs[preds[j].label] = s->exact_scores ? preds[j].prob : nlpd_ft_probability(preds[j].prob);
        if (write_result(s, m, r, probs, preds[0].label) < 0)
            return NLPD_STAGE_RETRY;
    }
    return NLPD_STAGE_OK;
}

static int grow_arrays(struct sentiment_thread *t, size_t n)
{
    if (n <= t->cap)
        return 0;
    size_t c = n * 2;
    void *b = realloc(t->texts, c * sizeof *t->texts);
    if (b)
        t->texts = b;
    void *l = realloc(t->lens, c * sizeof *t->lens), *e = realloc(t->enc, c * sizeof *t->enc);
    if (l)
        t->lens = l;
    if (e)
        t->enc = e;
    void *g = realloc(t->logits, c * sizeof *t->logits);
    if (g)
        t->logits = g;
    if (!b || !l || !e || !g)
        return -1;
    t->cap = c;
    return 0;
}

static enum nlpd_stage_status run_hf(const struct nlpd_stage_instance *inst, struct sentiment *s,
                                     struct sentiment_thread *t, size_t mi, struct nlpd_record **recs, size_t n,
                                     struct nlpd_error *err)
{
    const struct smodel *m = model_at(s, mi);
    for (size_t i = 0; i < n; i++) {
        t->texts[i] = recs[i]->text;
        t->lens[i] = recs[i]->text_len;
    }
    int rc = nlpd_hf_classify(m->hf, t->ws[mi], t->texts, t->lens, n, inst->max_tokens, t->enc, t->logits, err);
    if (rc == NLPD_ENOMEM)
        return NLPD_STAGE_RETRY;
    if (rc < 0) { /* one record's problem (e.g. tokenizer): score them one by one to find it */
        if (n == 1) {
            nlpd_stage_fail(inst, recs[0], "%s", err->message);
            return NLPD_STAGE_OK;
        }
        for (size_t i = 0; i < n; i++)
            if (run_hf(inst, s, t, mi, recs + i, 1, err) != NLPD_STAGE_OK)
                return NLPD_STAGE_RETRY;
        return NLPD_STAGE_OK;
    }
    float probs[256];
    for (size_t i = 0; i < n; i++) {
        int nl = m->nlabels < 256 ? m->nlabels : 256;
        if (nlpd_hf_model_multi_label(m->hf))
            nlpd_hf_sigmoid(t->logits[i], nl, probs);
        else
            nlpd_hf_softmax(t->logits[i], nl, probs);
        int best = 0;
        for (int j = 1; j < nl; j++)
            if (probs[j] > probs[best])
                best = j;
        if (write_result(s, m, recs[i], probs, best) < 0)
            return NLPD_STAGE_RETRY;
    }
    return NLPD_STAGE_OK;
}

static enum nlpd_stage_status run_model(const struct nlpd_stage_instance *inst, void *ctx, void *tstate, size_t mi,
                                        struct nlpd_record **recs, size_t n, struct nlpd_batch *batch,
                                        struct nlpd_error *err)
{
    struct sentiment *s = ctx;
    struct sentiment_thread *t = tstate;
    enum nlpd_stage_status st =
        model_at(s, mi)->ft ? run_fasttext(inst, s, t, mi, recs, n) : run_hf(inst, s, t, mi, recs, n, err);
    batch->padded_tokens += nlpd_hf_ws_take_padded_tokens(t->ws[mi]); /* 0 for fastText */
    return st;
}

static enum nlpd_stage_status sentiment_process(const struct nlpd_stage_instance *inst, void *ctx, void *tstate,
                                                struct nlpd_batch *batch, struct nlpd_error *err)
{
    struct sentiment *s = ctx;
    if (grow_arrays(tstate, batch->n) < 0)
        return NLPD_STAGE_RETRY;
    return nlpd_stage_models_run(&s->ms, inst, batch, NULL, run_model, s, tstate, err);
}

static void unload(void *ctx, void *slot)
{
    (void)ctx;
    struct smodel *m = slot;
    for (int j = 0; m->label_out && j < m->nlabels; j++)
        free(m->label_out[j]);
    free(m->label_out);
    nlpd_ft_free(m->ft);
    nlpd_hf_model_free(m->hf);
}

static void sentiment_fini(void *ctx)
{
    struct sentiment *s = ctx;
    nlpd_stage_models_free(&s->ms, unload, s);
}

/* The dtype of its Hugging Face models (all loaded alike); NULL for fastText ones. */
static const char *sentiment_variant(void *ctx)
{
    struct sentiment *s = ctx;
    for (size_t i = 0; i < s->ms.n; i++)
        if (model_at(s, i)->hf)
            return nlpd_dtype_name(nlpd_hf_model_dtype(model_at(s, i)->hf));
    return NULL;
}

/* Every output label of every model, once each. */
static size_t sentiment_labels(void *ctx, const char **out, size_t cap)
{
    const struct sentiment *s = ctx;
    size_t n = 0;
    for (size_t i = 0; i < s->ms.loaded; i++) {
        const struct smodel *m = model_at(s, i);
        for (int k = 0; k < m->nlabels && m->label_out; k++) {
            size_t j = 0;
            while (j < n && j < cap && strcmp(out[j], m->label_out[k]) != 0)
                j++;
            if (j < n)
                continue;
            if (n < cap)
                out[n] = m->label_out[k];
            n++;
        }
    }
    return n;
}

const struct nlpd_stage_plugin nlpd_stage_sentiment = {
    .abi = NLPD_STAGE_ABI,
    .name = "sentiment",
    .description = "text classification (Hugging Face folder or fastText model); writes sentiment.label and "
                   "sentiment.score",
    .conf_map = sentiment_conf,
    .ctx_size = sizeof(struct sentiment),
    .init = sentiment_init,
    .thread_init = sentiment_thread_init,
    .thread_fini = sentiment_thread_fini,
    .process = sentiment_process,
    .fini = sentiment_fini,
    .results = NLPD_RESULT_SENTIMENT,
    .model_variant = sentiment_variant,
    .labels = sentiment_labels,
    .token_budget = 1,
};
