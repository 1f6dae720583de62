/* Stage "ner": named entities with a Hugging Face token-classification model, decoded as transformers'
 * TokenClassificationPipeline does (ner_aggregate.c). Texts longer than the model are run in overlapping
 * windows whose token predictions are merged before aggregation; an optional gazetteer adds list matches. */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gazetteer.h"
#include "hf_classify.h"
#include "ner_aggregate.h"
#include "nlpd_stage.h"
#include "nlpd_util.h"

struct ner {
    char *model;
    char *dtype;
    char *aggregation;
    struct nlpd_conf_list ignore_labels;
    long long stride;
    int truncate;
    char *gazetteer;
    char *gazetteer_label;
    struct nlpd_hf_model *m;
    const struct nlpd_tokenizer *tok;
    enum nlpd_ner_agg agg;
    int nl;
    const char **labels;
    int32_t unk_id; /* -1 when the tokenizer has none */
    int wordpiece;  /* continuing-subword prefix "##": word-aware sub-word rule and the WordPiece decoder */
    size_t max_seq; /* tokens per forward, specials included */
    struct nlpd_gazetteer *gaz;
};

struct rec_info {
    int skip;
    size_t pre, nc; /* leading special tokens, content tokens */
    size_t w0, nw;  /* its windows */
};

struct ner_thread {
    struct nlpd_hf_ws *ws;
    struct nlpd_encoding *enc;
    struct rec_info *ri;
    size_t rec_cap;
    const int32_t **wids;
    size_t *wlens, *wstart, *wcont; /* content start and length of each window */
    const float **wlogits;
    size_t win_cap;
    int32_t *idbuf;
    size_t id_cap;
    size_t *starts;
    size_t starts_cap;
    const float **rows;
    size_t *dist;
    float *scores;
    struct nlpd_ner_pre *pre;
    size_t tok_cap, dist_cap, pre_cap, scores_cap;
    size_t *cpb; /* code point -> byte offset */
    size_t cpb_cap;
    struct nlpd_ner_out out;
};

static const struct nlpd_conf_entry ner_conf[] = {
    {"model", NLPD_CONF_PATH, NULL, offsetof(struct ner, model), NLPD_CONF_REQUIRED | NLPD_CONF_MODEL, NULL, 0, 0,
     "Hugging Face token-classification model folder (config.json, model.safetensors, tokenizer files)"},
    {"dtype", NLPD_CONF_ENUM, "default", offsetof(struct ner, dtype), NLPD_CONF_CACHE_KEY,
     "default|fp32|fp16|bf16|int8", 0, 0,
     "precision of the model's matrix products on the CPU: \"default\" = kernels.dtype; \"bf16\" (AVX512-BF16) "
     "or \"int8\" (dynamic quantisation, AVX512-VNNI / AVX-VNNI) are an error on a CPU without them; \"fp16\" is "
     "CUDA-only. Part of the cache key and of meta.models"},
    {"aggregation", NLPD_CONF_ENUM, "simple", offsetof(struct ner, aggregation), NLPD_CONF_CACHE_KEY,
     "none|simple|first|average|max", 0, 0,
     "transformers' aggregation_strategy: none (one entity per token), simple (B-/I- groups of tokens), "
     "first/average/max (word-level label from the first token / mean scores / best token, then grouped)"},
    {"ignore_labels", NLPD_CONF_LIST, "O", offsetof(struct ner, ignore_labels), NLPD_CONF_CACHE_KEY, NULL, 0, 0,
     "labels (none) or entity groups (other strategies) dropped from the output"},
    {"stride", NLPD_CONF_INT, "16", offsetof(struct ner, stride), NLPD_CONF_CACHE_KEY, NULL, 0, 4096,
     "texts longer than the model are run in windows overlapping by this many tokens (at most half a window); "
     "each token keeps the prediction of the window where it is farthest from a cut"},
    {"truncate", NLPD_CONF_BOOL, "false", offsetof(struct ner, truncate), NLPD_CONF_CACHE_KEY, NULL, 0, 0,
     "cut texts at the model's maximum instead of windowing (what the transformers pipeline does without stride)"},
    {"gazetteer", NLPD_CONF_PATH, NULL, offsetof(struct ner, gazetteer), NLPD_CONF_CACHE_KEY, NULL, 0, 0,
     "optional TSV of names (the \"name\" column, else the first), e.g. a GeoNames cities list: whole-word, "
     "case-sensitive matches not overlapping a model entity are added with source \"gazetteer\" and score 1"},
    {"gazetteer_label", NLPD_CONF_STRING, "LOC", offsetof(struct ner, gazetteer_label), NLPD_CONF_CACHE_KEY, NULL, 0, 0,
     "entity_group of gazetteer matches"},
    {0},
};

/* ---- model folder details the tokenizer API does not expose ---- */

static const char *token_content(json_t *v)
{
    if (json_is_string(v))
        return json_string_value(v);
    return json_string_value(json_object_get(v, "content"));
}

/* unk_token of tokenizer_config.json / special_tokens_map.json / tokenizer.json's model; and whether the
 * tokenizer's model has a continuing-subword prefix (WordPiece). */
static void tokenizer_facts(struct ner *s)
{
    char unk[256] = "";
    json_t *tj, *j;
    nlpd_util_load_json(s->model, "tokenizer.json", NLPD_UTIL_JSON_OPTIONAL, &tj, NULL);
    const char *files[] = {"tokenizer_config.json", "special_tokens_map.json"};
    for (int i = 0; i < 2 && !unk[0]; i++) {
        nlpd_util_load_json(s->model, files[i], NLPD_UTIL_JSON_OPTIONAL, &j, NULL);
        const char *u = j ? token_content(json_object_get(j, "unk_token")) : NULL;
        if (u)
            snprintf(unk, sizeof unk, "%s", u);
        json_decref(j);
    }
    json_t *model = json_object_get(tj, "model");
    if (!unk[0] && json_string_value(json_object_get(model, "unk_token")))
        snprintf(unk, sizeof unk, "%s", json_string_value(json_object_get(model, "unk_token")));
    if (tj) {
        const char *type = json_string_value(json_object_get(model, "type"));
        json_t *pfx = json_object_get(model, "continuing_subword_prefix");
        s->wordpiece = (type && strcmp(type, "WordPiece") == 0) || (json_is_string(pfx) && json_string_length(pfx));
    } else {
        char path[4096];
        snprintf(path, sizeof path, "%s/vocab.txt", s->model);
        FILE *f = fopen(path, "r");
        s->wordpiece = f != NULL; /* a BERT-style vocab.txt: converted to WordPiece with "##" */
        if (f)
            fclose(f);
    }
    json_decref(tj);
    s->unk_id = -1;
    if (!unk[0])
        return;
    int32_t n = nlpd_tokenizer_vocab_size(s->tok);
    for (int32_t i = 0; i < n; i++) {
        const char *t = nlpd_tokenizer_id_to_token(s->tok, i);
        if (t && strcmp(t, unk) == 0) {
            s->unk_id = i;
            break;
        }
    }
}

static int ner_init(const struct nlpd_stage_instance *inst, void *ctx, struct nlpd_error *err)
{
    struct ner *s = ctx;
    int a = nlpd_ner_agg_parse(s->aggregation);
    if (a < 0)
        return nlpd_error_set(err, NLPD_EINVAL, 0, "aggregation: unknown strategy \"%s\"", s->aggregation);
    s->agg = (enum nlpd_ner_agg)a;
    s->m = nlpd_hf_model_load(s->model, 1, s->dtype, err);
    if (!s->m)
        return err && err->code ? err->code : NLPD_EFORMAT;
    if (nlpd_hf_model_task(s->m) != NLPD_HF_TASK_TOKEN_CLS)
        return nlpd_error_set(err, NLPD_EINVAL, 0, "%s: not a token-classification model", s->model);
    s->tok = nlpd_hf_model_tokenizer(s->m);
    s->nl = nlpd_hf_model_num_labels(s->m);
    s->labels = calloc((size_t)s->nl, sizeof *s->labels);
    if (!s->labels)
        return nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
    for (int i = 0; i < s->nl; i++)
        s->labels[i] = nlpd_hf_model_label(s->m, i);
    int ms = nlpd_hf_model_max_seq(s->m);
    if (ms < 3)
        return nlpd_error_set(err, NLPD_EINVAL, 0, "%s: the model takes only %d tokens", s->model, ms);
    s->max_seq = (size_t)ms;
    tokenizer_facts(s);
    if (strlen(s->gazetteer_label) >= NLPD_LABEL_MAX)
        return nlpd_error_set(err, NLPD_EINVAL, 0, "gazetteer_label is longer than %d bytes", NLPD_LABEL_MAX - 1);
    if (s->gazetteer && s->gazetteer[0]) {
        s->gaz = nlpd_gazetteer_load(s->gazetteer, err);
        if (!s->gaz)
            return err && err->code ? err->code : NLPD_EFORMAT;
        nlpd_stage_log(inst, NLPD_LOG_INFO, "gazetteer %s: %zu names", s->gazetteer, nlpd_gazetteer_size(s->gaz));
    }
    return 0;
}

/* Entity words as the pipeline makes them: the tokenizer's convert_tokens_to_string (its decoder). */
static int decode_words(const void *tok, const char *const *toks, const size_t *lens, size_t n, char **buf, size_t *len,
                        size_t *cap)
{
    return nlpd_tokenizer_convert_tokens_to_string(tok, toks, lens, n, buf, len, cap);
}

static void *ner_thread_init(void *ctx)
{
    struct ner *s = ctx;
    struct ner_thread *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->out.decode = decode_words;
    t->out.decode_ctx = s->tok;
    t->ws = nlpd_hf_ws_new(s->m);
    if (!t->ws) {
        free(t);
        return NULL;
    }
    return t;
}

static void ner_thread_fini(void *ctx, void *tstate)
{
    (void)ctx;
    struct ner_thread *t = tstate;
    if (!t)
        return;
    nlpd_hf_ws_free(t->ws);
    for (size_t i = 0; i < t->rec_cap; i++)
        nlpd_encoding_free(&t->enc[i]);
    free(t->enc);
    free(t->ri);
    free(t->wids);
    free(t->wlens);
    free(t->wstart);
    free(t->wcont);
    free(t->wlogits);
    free(t->idbuf);
    free(t->starts);
    free(t->rows);
    free(t->dist);
    free(t->scores);
    free(t->pre);
    free(t->cpb);
    nlpd_ner_out_free(&t->out);
    free(t);
}

/* Grows *p (elements of size elem) to hold n; new elements zeroed. */
static int grow(void *p, size_t *cap, size_t n, size_t elem)
{
    if (n <= *cap)
        return 0;
    size_t c = *cap ? *cap : 16;
    while (c < n)
        c *= 2;
    void *q = realloc(*(void **)p, c * elem);
    if (!q)
        return -1;
    memset((char *)q + *cap * elem, 0, (c - *cap) * elem);
    *(void **)p = q;
    *cap = c;
    return 0;
}

static void clear_entities(struct nlpd_record *r)
{
    for (size_t i = 0; i < r->entities.n; i++)
        free(r->entities.items[i].word);
    r->entities.n = 0;
    r->entities.set = 0;
}

static int by_start(const void *a, const void *b)
{
    const struct nlpd_entity *x = a, *y = b;
    if (x->start != y->start)
        return x->start < y->start ? -1 : 1;
    return (x->source != NULL) - (y->source != NULL);
}

struct gaz_ctx {
    struct ner *s;
    struct nlpd_record *r;
    size_t nmodel;
    int added;
};

static int on_gazetteer(void *ctx, size_t b0, size_t b1, int32_t c0, int32_t c1)
{
    struct gaz_ctx *g = ctx;
    for (size_t i = 0; i < g->nmodel; i++)
        if (c0 < g->r->entities.items[i].end && g->r->entities.items[i].start < c1)
            return 0;
    if (nlpd_record_add_entity(g->r, g->s->gazetteer_label, 1.0f, g->r->text + b0, b1 - b0, c0, c1, -1, "gazetteer") <
        0)
        return NLPD_ENOMEM;
    g->added = 1;
    return 0;
}

/* Merges the windows' logits of one record, aggregates, writes its entities. 0 or NLPD_ENOMEM. */
static int decode_record(struct ner *s, struct ner_thread *t, struct nlpd_record *r, const struct nlpd_encoding *e,
                         const struct rec_info *ri, const float *const *wlogits)
{
    size_t nc = ri->nc, NL = (size_t)s->nl;
    clear_entities(r);
    if (grow(&t->rows, &t->tok_cap, nc, sizeof *t->rows) < 0 || grow(&t->dist, &t->dist_cap, nc, sizeof *t->dist) < 0 ||
        grow(&t->pre, &t->pre_cap, nc, sizeof *t->pre) < 0)
        return NLPD_ENOMEM;
    if (grow(&t->scores, &t->scores_cap, nc * NL, sizeof *t->scores) < 0)
        return NLPD_ENOMEM;
    for (size_t j = 0; j < nc; j++)
        t->dist[j] = 0;
    for (size_t w = 0; w < ri->nw; w++) {
        size_t ws = t->wcont[ri->w0 + w], wl = t->wlens[ri->w0 + w] - (e->n - ri->nc);
        for (size_t j = ws; j < ws + wl; j++) {
            /* Distance from a cut; the text's own ends are not cuts. */
            size_t left = ws == 0 ? SIZE_MAX / 2 : j - ws, right = ws + wl == nc ? SIZE_MAX / 2 : ws + wl - 1 - j;
            size_t dd = (left < right ? left : right) + 1;
            if (dd > t->dist[j]) {
                t->dist[j] = dd;
                t->rows[j] = wlogits[w] + (ri->pre + j - ws) * NL;
            }
        }
    }
    /* code point -> byte offsets of the text */
    size_t ncp = 0;
    for (size_t b = 0; b < r->text_len; b++)
        ncp += ((unsigned char)r->text[b] & 0xC0) != 0x80;
    if (grow(&t->cpb, &t->cpb_cap, ncp + 1, sizeof *t->cpb) < 0)
        return NLPD_ENOMEM;
    for (size_t b = 0, k = 0; b <= r->text_len; b++)
        if (b == r->text_len || ((unsigned char)r->text[b] & 0xC0) != 0x80)
            t->cpb[k++] = b;
    for (size_t j = 0; j < nc; j++) {
        size_t ei = ri->pre + j;
        struct nlpd_ner_pre *p = &t->pre[j];
        float *sc = t->scores + j * NL;
        nlpd_ner_softmax(t->rows[j], s->nl, sc);
        p->scores = sc;
        p->start = e->starts[ei];
        p->end = e->ends[ei];
        if (p->start < 0 || (size_t)p->end > ncp || p->end < p->start)
            p->start = p->end = 0;
        p->index = (int32_t)ei;
        const char *tok = e->ids[ei] == s->unk_id ? NULL : nlpd_tokenizer_id_to_token(s->tok, e->ids[ei]);
        if (!tok) {
            p->word = r->text + t->cpb[p->start];
            p->word_len = t->cpb[p->end] - t->cpb[p->start];
            p->is_subword = 0;
        } else {
            p->word = tok;
            p->word_len = strlen(tok);
            if (s->wordpiece) {
                p->is_subword = nlpd_ner_is_subword(tok, p->word_len, p->start, p->end);
            } else {
                /* transformers' fallback: start > 0 and no space in sentence[start-1:start+1] */
                int32_t st = p->start;
                p->is_subword =
                    st > 0 && r->text[t->cpb[st - 1]] != ' ' && ((size_t)st >= ncp || r->text[t->cpb[st]] != ' ');
            }
        }
    }
    const char *const *ign = (const char *const *)s->ignore_labels.items;
    if (nlpd_ner_aggregate(t->pre, nc, s->labels, s->nl, s->agg, ign, s->ignore_labels.n, &t->out) < 0)
        return NLPD_ENOMEM;
    for (size_t i = 0; i < t->out.n; i++) {
        const struct nlpd_ner_ent *x = &t->out.ents[i];
        if (nlpd_record_add_entity(r, x->group, x->score, t->out.words + x->word_off, x->word_len, x->start, x->end,
                                   x->index, NULL) < 0)
            return NLPD_ENOMEM;
    }
    r->entities.set = 1;
    if (s->gaz) {
        struct gaz_ctx g = {s, r, r->entities.n, 0};
        if (nlpd_gazetteer_scan(s->gaz, r->text, r->text_len, on_gazetteer, &g) != 0)
            return NLPD_ENOMEM;
        if (g.added && s->agg != NLPD_NER_NONE)
            qsort(r->entities.items, r->entities.n, sizeof *r->entities.items, by_start);
    }
    return 0;
}

static enum nlpd_stage_status ner_run(const struct nlpd_stage_instance *inst, void *ctx, void *tstate,
                                      struct nlpd_batch *batch, struct nlpd_error *err)
{
    struct ner *s = ctx;
    struct ner_thread *t = tstate;
    size_t n = batch->n;
    if (n > t->rec_cap) {
        size_t old = t->rec_cap, c1 = old, c2 = old;
        if (grow(&t->enc, &c1, n, sizeof *t->enc) < 0 || grow(&t->ri, &c2, n, sizeof *t->ri) < 0) {
            t->rec_cap = c1 < c2 ? c1 : c2;
            return NLPD_STAGE_RETRY;
        }
        t->rec_cap = c1 < c2 ? c1 : c2;
    }
    /* 1. tokenize (no truncation unless asked) and plan the windows */
    size_t nwin = 0, nids = 0;
    for (size_t i = 0; i < n; i++) {
        struct nlpd_record *r = batch->recs[i];
        struct nlpd_encoding *e = &t->enc[i];
        struct rec_info *ri = &t->ri[i];
        memset(ri, 0, sizeof *ri);
        struct nlpd_error terr = {0};
        int rc =
            nlpd_tokenizer_encode(s->tok, r->text, r->text_len, NULL, 0, s->truncate ? s->max_seq : SIZE_MAX, e, &terr);
        if (rc == NLPD_ENOMEM)
            return NLPD_STAGE_RETRY;
        if (rc < 0) {
            nlpd_stage_fail(inst, r, "tokenizer: %s", terr.message[0] ? terr.message : nlpd_strerror(rc));
            ri->skip = 1;
            continue;
        }
        while (ri->pre < e->n && e->special[ri->pre])
            ri->pre++;
        size_t last = e->n;
        while (last > ri->pre && e->special[last - 1])
            last--;
        ri->nc = last - ri->pre;
        size_t nsp = e->n - ri->nc;
        ri->w0 = nwin;
        if (ri->nc == 0) {
            ri->nw = 0;
        } else if (e->n <= s->max_seq) {
            ri->nw = 1;
        } else if (nsp >= s->max_seq) {
            nlpd_stage_fail(inst, r, "the model's %zu tokens leave no room beside %zu special tokens", s->max_seq, nsp);
            ri->skip = 1;
            continue;
        } else {
            ri->nw = nlpd_ner_windows(ri->nc, s->max_seq - nsp, (size_t)s->stride, NULL, 0);
            nids += ri->nw * s->max_seq;
        }
        nwin += ri->nw;
    }
    size_t c = t->win_cap, c2 = c, c3 = c, c4 = c, c5 = c;
    if (grow(&t->wids, &c, nwin, sizeof *t->wids) < 0 || grow(&t->wlens, &c2, nwin, sizeof *t->wlens) < 0 ||
        grow(&t->wstart, &c3, nwin, sizeof *t->wstart) < 0 || grow(&t->wcont, &c4, nwin, sizeof *t->wcont) < 0 ||
        grow(&t->wlogits, &c5, nwin, sizeof *t->wlogits) < 0 ||
        grow(&t->idbuf, &t->id_cap, nids, sizeof *t->idbuf) < 0) {
        size_t m = c;
        m = c2 < m ? c2 : m;
        m = c3 < m ? c3 : m;
        m = c4 < m ? c4 : m;
        t->win_cap = c5 < m ? c5 : m;
        return NLPD_STAGE_RETRY;
    }
    t->win_cap = c5;
    /* 2. window ids: the encoding itself, or specials + a slice of the content + specials */
    size_t idpos = 0;
    for (size_t i = 0; i < n; i++) {
        struct rec_info *ri = &t->ri[i];
        const struct nlpd_encoding *e = &t->enc[i];
        if (ri->skip || ri->nw == 0)
            continue;
        if (ri->nw == 1 && e->n <= s->max_seq) {
            t->wids[ri->w0] = e->ids;
            t->wlens[ri->w0] = e->n;
            t->wcont[ri->w0] = 0;
            continue;
        }
        size_t nsp = e->n - ri->nc, win = s->max_seq - nsp;
        if (grow(&t->starts, &t->starts_cap, ri->nw, sizeof *t->starts) < 0)
            return NLPD_STAGE_RETRY;
        nlpd_ner_windows(ri->nc, win, (size_t)s->stride, t->starts, ri->nw);
        for (size_t w = 0; w < ri->nw; w++) {
            int32_t *ids = t->idbuf + idpos;
            size_t k = 0, st = t->starts[w];
            for (size_t j = 0; j < ri->pre; j++)
                ids[k++] = e->ids[j];
            memcpy(ids + k, e->ids + ri->pre + st, win * sizeof *ids);
            k += win;
            for (size_t j = ri->pre + ri->nc; j < e->n; j++)
                ids[k++] = e->ids[j];
            t->wids[ri->w0 + w] = ids;
            t->wlens[ri->w0 + w] = k;
            t->wcont[ri->w0 + w] = st;
            idpos += k;
        }
    }
    /* 3. one forward over every window of the batch; on a non-memory error, record by record */
    int rc = nwin ? nlpd_hf_forward(s->m, t->ws, t->wids, NULL, t->wlens, nwin, inst->max_tokens, t->wlogits, err) : 0;
    if (rc == NLPD_ENOMEM)
        return NLPD_STAGE_RETRY;
    int one_by_one = rc < 0;
    for (size_t i = 0; i < n; i++) {
        struct nlpd_record *r = batch->recs[i];
        struct rec_info *ri = &t->ri[i];
        if (ri->skip)
            continue;
        if (one_by_one && ri->nw) {
            struct nlpd_error ferr = {0};
            int frc = nlpd_hf_forward(s->m, t->ws, t->wids + ri->w0, NULL, t->wlens + ri->w0, ri->nw, inst->max_tokens,
                                      t->wlogits + ri->w0, &ferr);
            if (frc == NLPD_ENOMEM)
                return NLPD_STAGE_RETRY;
            if (frc < 0) {
                nlpd_stage_fail(inst, r, "model: %s", ferr.message[0] ? ferr.message : nlpd_strerror(frc));
                continue;
            }
        }
        if (decode_record(s, t, r, &t->enc[i], ri, t->wlogits + ri->w0) < 0)
            return NLPD_STAGE_RETRY;
    }
    return NLPD_STAGE_OK;
}

static enum nlpd_stage_status ner_process(const struct nlpd_stage_instance *inst, void *ctx, void *tstate,
                                          struct nlpd_batch *batch, struct nlpd_error *err)
{
    enum nlpd_stage_status st = ner_run(inst, ctx, tstate, batch, err);
    batch->padded_tokens += nlpd_hf_ws_take_padded_tokens(((struct ner_thread *)tstate)->ws);
    return st;
}

static void ner_fini(void *ctx)
{
    struct ner *s = ctx;
    free(s->labels);
    nlpd_gazetteer_free(s->gaz);
    nlpd_hf_model_free(s->m);
}

static const char *ner_variant(void *ctx)
{
    struct ner *s = ctx;
    return s->m ? nlpd_dtype_name(nlpd_hf_model_dtype(s->m)) : NULL;
}

const struct nlpd_stage_plugin nlpd_stage_ner = {
    .abi = NLPD_STAGE_ABI,
    .name = "ner",
    .description = "named entities (Hugging Face token classification, transformers' aggregation strategies, "
                   "windows for long texts, optional gazetteer); writes entities",
    .conf_map = ner_conf,
    .ctx_size = sizeof(struct ner),
    .init = ner_init,
    .thread_init = ner_thread_init,
    .thread_fini = ner_thread_fini,
    .process = ner_process,
    .fini = ner_fini,
    .results = NLPD_RESULT_ENTITIES,
    .model_variant = ner_variant,
    .token_budget = 1,
};
