/* Stage "moderation": content moderation in the OpenAI moderation shape from two layers: a Hugging Face
 * classifier (sigmoid per label for multi-label models, softmax otherwise; labels mapped to categories, a
 * category's score the max of its labels) and word lists (lexicon.h), whose hits add `lexicon_category`. */
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hf_classify.h"
#include "lexicon.h"
#include "nlpd_stage.h"

#define MAX_LABELS 256

struct moderation {
    char *model;
    char *dtype;
    int multi_label;
    struct nlpd_conf_map categories;
    double threshold;
    struct nlpd_conf_map thresholds;
    char *lexicon;
    struct nlpd_conf_list lexicon_languages;
    int lexicon_by_lang;
    char *lexicon_category;
    long long lexicon_min_rating;
    struct nlpd_conf_list lexicon_allow;
    struct nlpd_conf_map lexicon_allow_lang;
    int lexicon_builtin_allow;
    struct nlpd_conf_list lexicon_fallback;
    char *action;

    struct nlpd_hf_model *hf;
    int nlabels;
    int sigmoid;
    char **cat;     /* per model label: its category */
    float *cat_thr; /* per model label: its category's threshold */
    struct nlpd_lexicon *lx;
    const struct nlpd_stage_instance *inst;
    /* texts in a language without a list (and no fallback): no lexicon result. Results the framework copies
     * (duplicates in a batch, cache hits) are not processed again, so not counted again. */
    atomic_ulong unchecked;
};

struct moderation_thread {
    struct nlpd_hf_ws *ws;
    struct nlpd_lexicon_scratch *ls;
    struct nlpd_record **group;
    const char **texts;
    size_t *lens;
    const struct nlpd_encoding **enc;
    const float **logits;
    size_t cap;
};

static const struct nlpd_conf_entry moderation_conf[] = {
    {"model", NLPD_CONF_PATH, NULL, offsetof(struct moderation, model), NLPD_CONF_MODEL, NULL, 0, 0,
     "a Hugging Face sequence-classification folder (e.g. a toxicity model); optional when `lexicon` is given"},
    {"dtype", NLPD_CONF_ENUM, "default", offsetof(struct moderation, dtype), NLPD_CONF_CACHE_KEY,
     "default|fp32|fp16|bf16|int8", 0, 0,
     "precision of the model's matrix products on the CPU: \"default\" = kernels.dtype; \"bf16\" (AVX512-BF16) "
     "or \"int8\" (dynamic quantisation, AVX512-VNNI / AVX-VNNI) are an error on a CPU without them; \"fp16\" is "
     "CUDA-only. Part of the cache key and of meta.models"},
    {"multi_label", NLPD_CONF_BOOL, "false", offsetof(struct moderation, multi_label), NLPD_CONF_CACHE_KEY, NULL, 0, 0,
     "score every label with a sigmoid (independent labels) even when config.json does not say "
     "problem_type = \"multi_label_classification\"; otherwise softmax"},
    {"categories", NLPD_CONF_MAP, NULL, offsetof(struct moderation, categories), NLPD_CONF_CACHE_KEY, NULL, 0, 0,
     "model label -> category, e.g. ((\"toxic\", \"harassment\"), (\"insult\", \"harassment\"), (\"threat\", "
     "\"violence\"), (\"obscene\", \"sexual\"), (\"identity_hate\", \"hate\")); unmapped labels are their own "
     "category; a category's score is the max of its labels'"},
    {"threshold", NLPD_CONF_FLOAT, "0.5", offsetof(struct moderation, threshold), NLPD_CONF_CACHE_KEY, NULL, 0, 1,
     "a category is flagged when its score is at least this"},
    {"thresholds", NLPD_CONF_MAP, NULL, offsetof(struct moderation, thresholds), NLPD_CONF_CACHE_KEY, NULL, 0, 0,
     "per-category thresholds, e.g. ((\"violence\", \"0.7\"))"},
    {"lexicon", NLPD_CONF_PATH, NULL, offsetof(struct moderation, lexicon), NLPD_CONF_MODEL, NULL, 0, 0,
     "word lists: a folder of JSON lists named by language (LDNOOBW arrays, cuss {word: rating} objects; also one "
     "folder down, e.g. models/lexicons) or one file; optional when `model` is given"},
    {"lexicon_languages", NLPD_CONF_LIST, NULL, offsetof(struct moderation, lexicon_languages), NLPD_CONF_CACHE_KEY,
     NULL, 0, 0, "load only these lists (file names without .json, or language subtags); default: all"},
    {"lexicon_by_lang", NLPD_CONF_BOOL, "true", offsetof(struct moderation, lexicon_by_lang), NLPD_CONF_CACHE_KEY, NULL,
     0, 0,
     "when langid ran, check a record only against its lang.code's lists; a language without a list only against "
     "`lexicon_fallback` (none: the record gets no lexicon result, and is counted). false, or no langid: every list"},
    {"lexicon_fallback", NLPD_CONF_LIST, NULL, offsetof(struct moderation, lexicon_fallback), NLPD_CONF_CACHE_KEY, NULL,
     0, 0,
     "lists (file names or language subtags, e.g. [\"en\"]) that records in a language without a list of its own "
     "are checked against; default none: other languages' lists flag innocent words (Vietnamese \"hộ\" is \"ho\")"},
    {"lexicon_category", NLPD_CONF_STRING, "profanity", offsetof(struct moderation, lexicon_category),
     NLPD_CONF_CACHE_KEY, NULL, 0, 0, "the category lexicon hits go to (score 1.0, label \"lexicon\")"},
    {"lexicon_min_rating", NLPD_CONF_INT, "2", offsetof(struct moderation, lexicon_min_rating), NLPD_CONF_CACHE_KEY,
     NULL, 0, 2,
     "rated lists (cuss: 0 = likely innocent, 1 = maybe, 2 = likely profane): entries rated below this are left "
     "out"},
    {"lexicon_allow", NLPD_CONF_LIST, NULL, offsetof(struct moderation, lexicon_allow), NLPD_CONF_CACHE_KEY, NULL, 0, 0,
     "words and phrases never flagged by the lexicon (e.g. [\"dick van dyke\"])"},
    {"lexicon_allow_lang", NLPD_CONF_MAP, NULL, offsetof(struct moderation, lexicon_allow_lang), NLPD_CONF_CACHE_KEY,
     NULL, 0, 0,
     "language -> word or phrase never flagged in records of that language (by its own lists), e.g. ((\"es\", "
     "\"concha\"), (\"es\", \"pendejo\")); a language may appear several times"},
    {"lexicon_builtin_allow", NLPD_CONF_BOOL, "true", offsetof(struct moderation, lexicon_builtin_allow),
     NLPD_CONF_CACHE_KEY, NULL, 0, 0,
     "also allow the built-in phrases (\"dick van dyke\", \"moby dick\", \"cum laude\", \"homo sapiens\", ...) and, "
     "in French, \"retard\" (\"late\": the French list has it as the English slur)"},
    {"action", NLPD_CONF_ENUM, "annotate", offsetof(struct moderation, action), 0, "annotate|route", 0, 0,
     "deprecated: \"route\" (with kafka.flagged_topic) is the output route { when = \"moderation.flagged\"; topic "
     "= kafka.flagged_topic; }: write that in output.routes instead"},
    {0},
};

static int parse_threshold(const char *v, float *out)
{
    char *end;
    double d = strtod(v, &end);
    if (end == v || *end || !(d >= 0.0 && d <= 1.0))
        return -1;
    *out = (float)d;
    return 0;
}

static int category_threshold(const struct moderation *s, const char *cat, float *thr, struct nlpd_error *err)
{
    *thr = (float)s->threshold;
    const char *v = nlpd_conf_map_get(&s->thresholds, cat);
    if (v && parse_threshold(v, thr))
        return nlpd_error_set(err, NLPD_EINVAL, 0, "thresholds: \"%s\" for \"%s\" is not a number in [0, 1]", v, cat);
    return 0;
}

static int load_model(struct moderation *s, struct nlpd_error *err)
{
    s->hf = nlpd_hf_model_load(s->model, 1, s->dtype, err);
    if (!s->hf)
        return err->code ? err->code : NLPD_EFORMAT;
    if (nlpd_hf_model_task(s->hf) != NLPD_HF_TASK_SEQ_CLS)
        return nlpd_error_set(err, NLPD_EINVAL, 0, "%s: not a sequence-classification model", s->model);
    s->nlabels = nlpd_hf_model_num_labels(s->hf);
    if (s->nlabels < 1 || s->nlabels > MAX_LABELS)
        return nlpd_error_set(err, NLPD_EINVAL, 0, "%s: %d labels (1 to %d supported)", s->model, s->nlabels,
                              MAX_LABELS);
    s->sigmoid = s->multi_label || nlpd_hf_model_multi_label(s->hf);
    s->cat = calloc((size_t)s->nlabels, sizeof *s->cat);
    s->cat_thr = calloc((size_t)s->nlabels, sizeof *s->cat_thr);
    if (!s->cat || !s->cat_thr)
        return nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
    for (int i = 0; i < s->nlabels; i++) {
        const char *label = nlpd_hf_model_label(s->hf, i);
        const char *cat = nlpd_conf_map_get(&s->categories, label);
        if (strlen(label) >= NLPD_LABEL_MAX || (cat && strlen(cat) >= NLPD_LABEL_MAX))
            return nlpd_error_set(err, NLPD_EINVAL, 0, "label or category \"%s\" is longer than %d bytes",
                                  cat ? cat : label, NLPD_LABEL_MAX - 1);
        if (!(s->cat[i] = strdup(cat ? cat : label)))
            return nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
        int rc = category_threshold(s, s->cat[i], &s->cat_thr[i], err);
        if (rc)
            return rc;
    }
    for (size_t i = 0; i < s->categories.n; i++) {
        int found = 0;
        for (int j = 0; j < s->nlabels && !found; j++)
            found = strcmp(s->categories.from[i], nlpd_hf_model_label(s->hf, j)) == 0;
        if (!found)
            return nlpd_error_set(err, NLPD_EINVAL, 0, "categories: the model has no label \"%s\"",
                                  s->categories.from[i]);
    }
    return 0;
}

static int moderation_init(const struct nlpd_stage_instance *inst, void *ctx, struct nlpd_error *err)
{
    struct moderation *s = ctx;
    s->inst = inst;
    if (!s->model && !s->lexicon)
        return nlpd_error_set(err, NLPD_EINVAL, 0, "moderation needs a `model`, a `lexicon` or both");
    if (!s->model && s->multi_label)
        return nlpd_error_set(err, NLPD_EINVAL, 0, "`multi_label` needs a `model`");
    if (strlen(s->lexicon_category) == 0 || strlen(s->lexicon_category) >= NLPD_LABEL_MAX)
        return nlpd_error_set(err, NLPD_EINVAL, 0, "lexicon_category must be 1 to %d bytes", NLPD_LABEL_MAX - 1);
    for (size_t i = 0; i < s->thresholds.n; i++) {
        float t;
        if (parse_threshold(s->thresholds.to[i], &t))
            return nlpd_error_set(err, NLPD_EINVAL, 0, "thresholds: \"%s\" for \"%s\" is not a number in [0, 1]",
                                  s->thresholds.to[i], s->thresholds.from[i]);
    }
    if (s->model) {
        int rc = load_model(s, err);
        if (rc)
            return rc;
    }
    if (s->lexicon) {
        struct nlpd_lexicon_opts o = {
            .min_rating = (int)s->lexicon_min_rating,
            .languages = (const char *const *)s->lexicon_languages.items,
            .nlanguages = s->lexicon_languages.n,
            .allow = (const char *const *)s->lexicon_allow.items,
            .nallow = s->lexicon_allow.n,
            .allow_lang_code = (const char *const *)s->lexicon_allow_lang.from,
            .allow_lang = (const char *const *)s->lexicon_allow_lang.to,
            .nallow_lang = s->lexicon_allow_lang.n,
            .no_builtin_allow = !s->lexicon_builtin_allow,
            .fallback = (const char *const *)s->lexicon_fallback.items,
            .nfallback = s->lexicon_fallback.n,
        };
        s->lx = nlpd_lexicon_load(s->lexicon, &o, err);
        if (!s->lx)
            return err->code ? err->code : NLPD_EFORMAT;
        nlpd_stage_log(inst, NLPD_LOG_INFO, "lexicon %s: %zu entries in %zu lists", s->lexicon,
                       nlpd_lexicon_size(s->lx), nlpd_lexicon_nlists(s->lx));
    } else if (s->lexicon_languages.n || s->lexicon_allow.n || s->lexicon_allow_lang.n || s->lexicon_fallback.n) {
        return nlpd_error_set(err, NLPD_EINVAL, 0,
                              "`lexicon_languages`, `lexicon_allow`, `lexicon_allow_lang` and `lexicon_fallback` "
                              "need a `lexicon`");
    }
    return 0;
}

static void moderation_thread_fini(void *ctx, void *tstate)
{
    (void)ctx;
    struct moderation_thread *t = tstate;
    if (!t)
        return;
    nlpd_hf_ws_free(t->ws);
    nlpd_lexicon_scratch_free(t->ls);
    free(t->group);
    free(t->texts);
    free(t->lens);
    free(t->enc);
    free(t->logits);
    free(t);
}

static void *moderation_thread_init(void *ctx)
{
    struct moderation *s = ctx;
    struct moderation_thread *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    if ((s->hf && !(t->ws = nlpd_hf_ws_new(s->hf))) || (s->lx && !(t->ls = nlpd_lexicon_scratch_new()))) {
        moderation_thread_fini(ctx, t);
        return NULL;
    }
    return t;
}

static int grow_group(struct moderation_thread *t, size_t n)
{
    if (n <= t->cap)
        return 0;
    size_t c = n * 2;
    void *a = realloc(t->group, c * sizeof *t->group);
    if (a)
        t->group = a;
    void *b = realloc(t->texts, c * sizeof *t->texts);
    if (b)
        t->texts = b;
    void *l = realloc(t->lens, c * sizeof *t->lens);
    if (l)
        t->lens = l;
    void *e = realloc(t->enc, c * sizeof *t->enc);
    if (e)
        t->enc = e;
    void *g = realloc(t->logits, c * sizeof *t->logits);
    if (g)
        t->logits = g;
    if (!a || !b || !l || !e || !g)
        return -1;
    t->cap = c;
    return 0;
}

/* Runs recs through the model and writes their categories; a record the model cannot take fails alone. */
static enum nlpd_stage_status run_model(const struct nlpd_stage_instance *inst, struct moderation *s,
                                        struct moderation_thread *t, struct nlpd_record **recs, size_t n,
                                        struct nlpd_error *err)
{
    for (size_t i = 0; i < n; i++) {
        t->texts[i] = recs[i]->text;
        t->lens[i] = recs[i]->text_len;
    }
    int rc = nlpd_hf_classify(s->hf, t->ws, t->texts, t->lens, n, inst->max_tokens, t->enc, t->logits, err);
    if (rc == NLPD_ENOMEM)
        return NLPD_STAGE_RETRY;
    if (rc < 0) {
        if (n == 1) {
            nlpd_stage_fail(inst, recs[0], "%s", err->message);
            nlpd_error_clear(err);
            return NLPD_STAGE_OK;
        }
        for (size_t i = 0; i < n; i++) {
            enum nlpd_stage_status st = run_model(inst, s, t, recs + i, 1, err);
            if (st != NLPD_STAGE_OK)
                return st;
        }
        return NLPD_STAGE_OK;
    }
    float probs[MAX_LABELS];
    for (size_t i = 0; i < n; i++) {
        if (s->sigmoid)
            nlpd_hf_sigmoid(t->logits[i], s->nlabels, probs);
        else
            nlpd_hf_softmax(t->logits[i], s->nlabels, probs);
        for (int j = 0; j < s->nlabels; j++)
            if (nlpd_record_add_category(recs[i], s->cat[j], nlpd_hf_model_label(s->hf, j), probs[j],
                                         probs[j] >= s->cat_thr[j]) < 0)
                return NLPD_STAGE_RETRY;
    }
    return NLPD_STAGE_OK;
}

static enum nlpd_stage_status moderation_process(const struct nlpd_stage_instance *inst, void *ctx, void *tstate,
                                                 struct nlpd_batch *batch, struct nlpd_error *err)
{
    struct moderation *s = ctx;
    struct moderation_thread *t = tstate;
    if (s->hf) {
        if (grow_group(t, batch->n))
            return NLPD_STAGE_RETRY;
        size_t n = 0;
        for (size_t i = 0; i < batch->n; i++)
            if (!batch->recs[i]->error)
                t->group[n++] = batch->recs[i];
        if (n) {
            enum nlpd_stage_status st = run_model(inst, s, t, t->group, n, err);
            batch->padded_tokens += nlpd_hf_ws_take_padded_tokens(t->ws);
            if (st != NLPD_STAGE_OK)
                return st;
        }
    }
    if (s->lx) {
        for (size_t i = 0; i < batch->n; i++) {
            struct nlpd_record *r = batch->recs[i];
            if (r->error)
                continue;
            const char *lang = s->lexicon_by_lang && r->lang.set ? r->lang.code : NULL;
            if (!nlpd_lexicon_checks(s->lx, lang)) {
                /* no result rather than a clean one: nothing vouched for this text */
                atomic_fetch_add(&s->unchecked, 1);
                if (nlpd_log_enabled(NLPD_LOG_DEBUG))
                    nlpd_stage_log(inst, NLPD_LOG_DEBUG, "lexicon: no list for language \"%s\": not checked", lang);
                continue;
            }
            struct nlpd_lexicon_hit h;
            int rc = nlpd_lexicon_match(s->lx, t->ls, lang, r->text, r->text_len, &h);
            if (rc == NLPD_ENOMEM)
                return NLPD_STAGE_RETRY;
            if (rc < 0) {
                nlpd_stage_fail(inst, r, "lexicon: %s", nlpd_strerror(rc));
                continue;
            }
            if (rc == 1 && nlpd_log_enabled(NLPD_LOG_DEBUG))
                nlpd_stage_log(inst, NLPD_LOG_DEBUG, "lexicon hit \"%s\" (list %s)", h.entry, h.list);
            if (nlpd_record_add_category(r, s->lexicon_category, "lexicon", rc == 1 ? 1.0f : 0.0f, rc == 1) < 0)
                return NLPD_STAGE_RETRY;
        }
    }
    return NLPD_STAGE_OK;
}

static void moderation_fini(void *ctx)
{
    struct moderation *s = ctx;
    unsigned long n = atomic_load(&s->unchecked);
    if (n && s->inst)
        nlpd_stage_log(s->inst, NLPD_LOG_INFO,
                       "lexicon: %lu distinct texts in languages without a word list were not checked (see "
                       "lexicon_fallback)",
                       n);
    for (int i = 0; s->cat && i < s->nlabels; i++)
        free(s->cat[i]);
    free(s->cat);
    free(s->cat_thr);
    nlpd_hf_model_free(s->hf);
    nlpd_lexicon_free(s->lx);
}

static const char *moderation_variant(void *ctx)
{
    struct moderation *s = ctx;
    return s->hf ? nlpd_dtype_name(nlpd_hf_model_dtype(s->hf)) : NULL;
}

const struct nlpd_stage_plugin nlpd_stage_moderation = {
    .abi = NLPD_STAGE_ABI,
    .name = "moderation",
    .description = "content moderation (Hugging Face classifier and/or word lists); writes moderation.flagged, "
                   "categories, category_scores and category_labels in the OpenAI moderation shape",
    .conf_map = moderation_conf,
    .ctx_size = sizeof(struct moderation),
    .init = moderation_init,
    .thread_init = moderation_thread_init,
    .thread_fini = moderation_thread_fini,
    .process = moderation_process,
    .fini = moderation_fini,
    .results = NLPD_RESULT_MODERATION,
    .model_variant = moderation_variant,
    .token_budget = 1,
};
