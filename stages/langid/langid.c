/* Stage "langid": language identification with a fastText model (lid.176). Writes lang.code
 * (the label without its prefix, e.g. "en") and lang.score (the probability, in [0, 1]; with exact_scores
 * fastText's predict-prob value, for parity checks). */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "fasttext.h"
#include "nlpd_stage.h"

struct langid {
    char *model;
    char *label_prefix;
    double threshold;
    int exact_scores;
    struct nlpd_ft_model *ft;
};

static const struct nlpd_conf_entry langid_conf[] = {
    {"model", NLPD_CONF_PATH, NULL, offsetof(struct langid, model), NLPD_CONF_REQUIRED | NLPD_CONF_MODEL, NULL, 0, 0,
     "fastText language-ID model (.bin or .ftz), e.g. models/lid.176.ftz"},
    {"label_prefix", NLPD_CONF_STRING, "__label__", offsetof(struct langid, label_prefix), NLPD_CONF_CACHE_KEY, NULL, 0,
     0, "prefix stripped from the model's labels to give lang.code"},
    {"threshold", NLPD_CONF_FLOAT, "0", offsetof(struct langid, threshold), NLPD_CONF_CACHE_KEY, NULL, 0, 1,
     "when the best language scores below this, lang.code is \"und\" (undetermined) with that score"},
    {"exact_scores", NLPD_CONF_BOOL, "false", offsetof(struct langid, exact_scores), NLPD_CONF_CACHE_KEY, NULL, 0, 0,
     "false: lang.score is the probability, within [0, 1]; true: fastText predict-prob's value exactly "
     "(exp(log(p + 1e-5)), up to 1.00001), for parity checks against the tool"},
    {0},
};

/* A language code as lid.176 and similar models write them after the prefix: "en", "als", "zh-Hant", "pt_BR". */
static int is_lang_code(const char *s)
{
    size_t n = 0;
    while (s[n] >= 'a' && s[n] <= 'z')
        n++;
    if (n < 2 || n > 3)
        return 0;
    for (s += n; *s == '-' || *s == '_';) {
        size_t m = 0;
        for (s++; (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9'); s++)
            m++;
        if (m < 2 || m > 8)
            return 0;
    }
    return *s == '\0';
}

static int langid_init(const struct nlpd_stage_instance *inst, void *ctx, struct nlpd_error *err)
{
    (void)inst;
    struct langid *l = ctx;
    l->ft = nlpd_ft_load(l->model, err);
    if (!l->ft)
        return err && err->code ? err->code : NLPD_EFORMAT;
    /* e.g. a sentiment model given by mistake: its labels ("1", "2") would become lang.code */
    struct nlpd_ft_info info;
    nlpd_ft_get_info(l->ft, &info);
    size_t plen = strlen(l->label_prefix);
    for (int32_t i = 0; i < info.nlabels; i++) {
        const char *label = nlpd_ft_label(l->ft, i);
        if (strncmp(label, l->label_prefix, plen) != 0 || !is_lang_code(label + plen))
            return nlpd_error_set(err, NLPD_EFORMAT, 0,
                                  "%s is not a language-ID model: its label \"%s\" is not a language code after "
                                  "label_prefix \"%s\" (like \"__label__en\")",
                                  l->model, label, l->label_prefix);
    }
    return 0;
}

static void *langid_thread_init(void *ctx)
{
    struct langid *l = ctx;
    return nlpd_ft_scratch_new(l->ft);
}

static void langid_thread_fini(void *ctx, void *tstate)
{
    (void)ctx;
    nlpd_ft_scratch_free(tstate);
}

static enum nlpd_stage_status langid_process(const struct nlpd_stage_instance *inst, void *ctx, void *tstate,
                                             struct nlpd_batch *batch, struct nlpd_error *err)
{
    struct langid *l = ctx;
    size_t plen = strlen(l->label_prefix);
    (void)err;
    for (size_t i = 0; i < batch->n; i++) {
        struct nlpd_record *r = batch->recs[i];
        struct nlpd_ft_pred pred;
        int n = nlpd_ft_predict(l->ft, tstate, r->text, r->text_len, 1, 0.0f, &pred);
        if (n < 0) {
            if (n == NLPD_ENOMEM)
                return NLPD_STAGE_RETRY;
            nlpd_stage_fail(inst, r, "prediction failed: %s", nlpd_strerror(n));
            continue;
        }
        if (n && !l->exact_scores)
            pred.prob = nlpd_ft_probability(pred.prob);
        if (n == 0 || pred.prob < l->threshold) {
            strcpy(r->lang.code, "und");
            r->lang.score = n ? pred.prob : 0.0f;
        } else {
            const char *label = nlpd_ft_label(l->ft, pred.label);
            if (strncmp(label, l->label_prefix, plen) == 0)
                label += plen;
            snprintf(r->lang.code, sizeof r->lang.code, "%s", label);
            r->lang.score = pred.prob;
        }
        r->lang.set = 1;
    }
    return NLPD_STAGE_OK;
}

static void langid_fini(void *ctx)
{
    struct langid *l = ctx;
    nlpd_ft_free(l->ft);
}

const struct nlpd_stage_plugin nlpd_stage_langid = {
    .abi = NLPD_STAGE_ABI,
    .name = "langid",
    .description = "language identification with a fastText model; writes lang.code and lang.score",
    .conf_map = langid_conf,
    .ctx_size = sizeof(struct langid),
    .init = langid_init,
    .thread_init = langid_thread_init,
    .thread_fini = langid_thread_fini,
    .process = langid_process,
    .fini = langid_fini,
    .results = NLPD_RESULT_LANG,
};
