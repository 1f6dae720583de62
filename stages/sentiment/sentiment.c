/* Stage "sentiment": text polarity/rating with a fastText backend (the Amazon review models).
 * Writes sentiment.label (mapped through `labels`) and sentiment.score. The text is normalised
 * the way the model's training data was (lowercase, punctuation split) unless configured off. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fasttext.h"
#include "nlpd_stage.h"
#include "text_norm.h"

struct sentiment {
    char *backend;
    char *model;
    struct nlpd_conf_map labels;
    char *label_prefix;
    int lowercase;
    int split_punctuation;
    struct nlpd_ft_model *ft;
    char **label_out; /* per model label: the label written to records */
};

struct sentiment_thread {
    struct nlpd_ft_scratch *scratch;
    char *norm;
    size_t norm_cap;
};

static const struct nlpd_conf_entry sentiment_conf[] = {
    {"backend", NLPD_CONF_ENUM, "fasttext", offsetof(struct sentiment, backend), NLPD_CONF_CACHE_KEY, "fasttext", 0,
     0, "model family: \"fasttext\" (.bin/.ftz supervised classifier)"},
    {"model", NLPD_CONF_PATH, NULL, offsetof(struct sentiment, model), NLPD_CONF_REQUIRED | NLPD_CONF_MODEL, NULL, 0,
     0, "the model file, e.g. models/amazon_review_polarity.ftz"},
    {"labels", NLPD_CONF_MAP, NULL, offsetof(struct sentiment, labels), NLPD_CONF_CACHE_KEY, NULL, 0, 0,
     "model label -> output label, e.g. ((\"__label__1\", \"negative\"), (\"__label__2\", \"positive\")); "
     "default: exactly that for a model whose labels are __label__1 and __label__2, otherwise the label "
     "without label_prefix"},
    {"label_prefix", NLPD_CONF_STRING, "__label__", offsetof(struct sentiment, label_prefix), NLPD_CONF_CACHE_KEY,
     NULL, 0, 0, "prefix stripped from labels that `labels` does not map"},
    {"lowercase", NLPD_CONF_BOOL, "true", offsetof(struct sentiment, lowercase), NLPD_CONF_CACHE_KEY, NULL, 0, 0,
     "lowercase the text first (the Amazon review models were trained on lowercased text)"},
    {"split_punctuation", NLPD_CONF_BOOL, "true", offsetof(struct sentiment, split_punctuation), NLPD_CONF_CACHE_KEY,
     NULL, 0, 0,
     "separate . , ' ( ) ! ? from words and drop \" ; : as fastText's training scripts did"},
    {0},
};

static int sentiment_init(void *ctx, struct nlpd_error *err)
{
    struct sentiment *s = ctx;
    s->ft = nlpd_ft_load(s->model, err);
    if (!s->ft)
        return err && err->code ? err->code : NLPD_EFORMAT;
    struct nlpd_ft_info info;
    nlpd_ft_get_info(s->ft, &info);
    s->label_out = calloc((size_t)info.nlabels, sizeof *s->label_out);
    if (!s->label_out)
        return nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
    /* The fastText Amazon polarity models: __label__1 = 1-2 stars, __label__2 = 4-5 stars. */
    int polarity = info.nlabels == 2 && strcmp(nlpd_ft_label(s->ft, 0), nlpd_ft_label(s->ft, 1)) != 0;
    for (int32_t i = 0; i < info.nlabels && polarity; i++)
        polarity = !strcmp(nlpd_ft_label(s->ft, i), "__label__1") || !strcmp(nlpd_ft_label(s->ft, i), "__label__2");
    size_t plen = strlen(s->label_prefix);
    for (int32_t i = 0; i < info.nlabels; i++) {
        const char *label = nlpd_ft_label(s->ft, i);
        const char *mapped = nlpd_conf_map_get(&s->labels, label);
        if (!mapped && s->labels.n == 0 && polarity)
            mapped = strcmp(label, "__label__1") == 0 ? "negative" : "positive";
        if (!mapped)
            mapped = strncmp(label, s->label_prefix, plen) == 0 ? label + plen : label;
        if (strlen(mapped) >= NLPD_LABEL_MAX)
            return nlpd_error_set(err, NLPD_EINVAL, 0, "label \"%s\" is longer than %d bytes", mapped,
                                  NLPD_LABEL_MAX - 1);
        s->label_out[i] = strdup(mapped);
        if (!s->label_out[i])
            return nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
    }
    for (size_t i = 0; i < s->labels.n; i++) {
        int found = 0;
        for (int32_t j = 0; j < info.nlabels && !found; j++)
            found = strcmp(s->labels.from[i], nlpd_ft_label(s->ft, j)) == 0;
        if (!found)
            return nlpd_error_set(err, NLPD_EINVAL, 0, "labels: the model has no label \"%s\"", s->labels.from[i]);
    }
    return 0;
}

static void *sentiment_thread_init(void *ctx)
{
    struct sentiment *s = ctx;
    struct sentiment_thread *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->scratch = nlpd_ft_scratch_new(s->ft);
    if (!t->scratch) {
        free(t);
        return NULL;
    }
    return t;
}

static void sentiment_thread_fini(void *ctx, void *tstate)
{
    (void)ctx;
    struct sentiment_thread *t = tstate;
    nlpd_ft_scratch_free(t->scratch);
    free(t->norm);
    free(t);
}

static enum nlpd_stage_status sentiment_process(void *ctx, void *tstate, struct nlpd_batch *batch,
                                                struct nlpd_error *err)
{
    struct sentiment *s = ctx;
    struct sentiment_thread *t = tstate;
    struct nlpd_text_norm norm = {s->lowercase, s->split_punctuation};
    (void)err;
    for (size_t i = 0; i < batch->n; i++) {
        struct nlpd_record *r = batch->recs[i];
        const char *text = r->text;
        size_t len = r->text_len;
        if (norm.lowercase || norm.split_punctuation) {
            long n = nlpd_text_normalize(&norm, r->text, r->text_len, &t->norm, &t->norm_cap);
            if (n < 0)
                return NLPD_STAGE_RETRY;
            text = t->norm;
            len = (size_t)n;
        }
        struct nlpd_ft_pred pred;
        int n = nlpd_ft_predict(s->ft, t->scratch, text, len, 1, 0.0f, &pred);
        if (n < 0) {
            if (n == NLPD_ENOMEM)
                return NLPD_STAGE_RETRY;
            nlpd_record_fail(r, "sentiment", "prediction failed: %s", nlpd_strerror(n));
            continue;
        }
        if (n == 0) {
            nlpd_record_fail(r, "sentiment", "the model gave no prediction for this text");
            continue;
        }
        snprintf(r->sentiment.label, sizeof r->sentiment.label, "%s", s->label_out[pred.label]);
        r->sentiment.score = pred.prob;
        r->sentiment.set = 1;
    }
    return NLPD_STAGE_OK;
}

static void sentiment_fini(void *ctx)
{
    struct sentiment *s = ctx;
    if (s->label_out && s->ft) {
        struct nlpd_ft_info info;
        nlpd_ft_get_info(s->ft, &info);
        for (int32_t i = 0; i < info.nlabels; i++)
            free(s->label_out[i]);
    }
    free(s->label_out);
    nlpd_ft_free(s->ft);
}

const struct nlpd_stage_plugin nlpd_stage_sentiment = {
    .abi = NLPD_STAGE_ABI,
    .name = "sentiment",
    .description = "sentiment of the text (fastText backend); writes sentiment.label and sentiment.score",
    .conf_map = sentiment_conf,
    .ctx_size = sizeof(struct sentiment),
    .init = sentiment_init,
    .thread_init = sentiment_thread_init,
    .thread_fini = sentiment_thread_fini,
    .process = sentiment_process,
    .fini = sentiment_fini,
};
