/* Stage "translate": Marian / OPUS-MT translation of Hugging Face folders (config.json, model.safetensors,
 * source.spm, target.spm, vocab.json). Texts are split into sentences; the sentences of every record that goes to
 * one model are sorted by length, translated in padded batches under a token budget (greedy or beam search as the
 * model's generation config or the stage says) and joined back per record. Writes translation.text, source_lang
 * (lang.code) and target_lang; by default later stages read the translation. `models` picks a model per
 * lang.code; records already in the target language, or of a language without a model, are left alone.
 * A multilingual folder (M2M100 / NLLB-200, translate_m2m.h) serves every source language with one model: the
 * record's language becomes the source-language token, target_lang the forced first output token. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "marian.h"
#include "marian_tok.h"
#include "nlpd_stage.h"
#include "sentences.h"
#include "translate_m2m.h"

struct tmodel {
    struct nlpd_marian *mt;
    struct nlpd_marian_tok *tok;
    int32_t target_token; /* ">>xxx<<" of a multi-target model, -1 when none */
    struct nlpd_gen_params gen;
    struct nlpd_tml *ml; /* a multilingual model (M2M100 / NLLB) instead of mt / tok */
};

struct translate {
    char *model;
    char *dtype;
    struct nlpd_conf_map models;
    char *target_lang;
    char *target_token;
    long long num_beams;
    long long max_length;
    double max_length_factor;
    char *downstream;
    int split_sentences;
    long long max_sentences;
    const struct nlpd_stage_instance *inst;
    struct nlpd_stage_models ms;   /* of struct tmodel */
    struct nlpd_conf_map lang_map; /* multilingual models: lang.code -> the model's code */
    char *unsupported;             /* multilingual models: "skip" | "fail" a language the model cannot take */
};

/* One sentence of one record. */
struct sent {
    size_t rec;        /* index into the group */
    size_t start, end; /* byte range in the record's text */
    int32_t *ids;      /* source ids (owned) */
    size_t n;
    char *out; /* translated text (owned) */
    size_t out_len;
};

struct translate_thread {
    struct nlpd_marian_ws **ws; /* per model */
    struct nlpd_tml_ws **mlws;  /* per model: the multilingual ones' */
    struct sent *sents;
    size_t nsents, sents_cap;
    size_t *order;
};

static const struct nlpd_conf_entry translate_conf[] = {
    {"model", NLPD_CONF_PATH, NULL, offsetof(struct translate, model), NLPD_CONF_MODEL, NULL, 0, 0,
     "the model: a Marian / OPUS-MT Hugging Face folder, or a multilingual M2M100 / NLLB-200 one that serves "
     "every source language (one of model or models)"},
    {"dtype", NLPD_CONF_ENUM, "default", offsetof(struct translate, dtype), NLPD_CONF_CACHE_KEY,
     "default|fp32|fp16|bf16|int8", 0, 0,
     "precision of the model's matrix products: \"default\" = kernels.dtype; \"bf16\" (AVX512-BF16) or \"int8\" "
     "(dynamic quantisation, AVX512-VNNI / AVX-VNNI; CPU) are an error on a CPU without them; \"fp16\" is "
     "CUDA-only. Part of the cache key and of meta.models"},
    {"models", NLPD_CONF_MAP, NULL, offsetof(struct translate, models), NLPD_CONF_CACHE_KEY, NULL, 0, 0,
     "per-language models keyed on lang.code (langid must run first), e.g. ((\"de\", \"models/opus-mt-de-en\"), "
     "(\"default\", \"models/opus-mt-mul-en\")); records of other languages without a default are left alone"},
    {"target_lang", NLPD_CONF_STRING, "en", offsetof(struct translate, target_lang), NLPD_CONF_CACHE_KEY, NULL, 0, 0,
     "the language translated to, written to translation.target_lang; records whose lang.code is this language "
     "are left alone"},
    {"target_token", NLPD_CONF_STRING, "", offsetof(struct translate, target_token), NLPD_CONF_CACHE_KEY, NULL, 0, 0,
     "multi-target models: the target-language token put before each sentence, e.g. \">>deu<<\"; empty: "
     "\">>\" target_lang \"<<\" when the model's vocabulary has language tokens; \"none\": never one"},
    {"lang_map", NLPD_CONF_MAP, NULL, offsetof(struct translate, lang_map), NLPD_CONF_CACHE_KEY, NULL, 0, 0,
     "multilingual models (M2M100 / NLLB-200): lang.code -> the model's language code, before the built-in "
     "table (ISO 639-1/3 -> FLORES-200 for NLLB, -> M2M100's codes), e.g. ((\"zh\", \"zho_Hant\")); also maps "
     "target_lang"},
    {"unsupported_lang", NLPD_CONF_ENUM, "skip", offsetof(struct translate, unsupported), NLPD_CONF_CACHE_KEY,
     "skip|fail", 0, 0,
     "multilingual models: a record whose lang.code (or none) maps to no language of the model is left "
     "untranslated (skip) or dead-lettered with the reason (fail); the load log line lists lid.176's languages "
     "the model cannot take"},
    {"num_beams", NLPD_CONF_INT, "0", offsetof(struct translate, num_beams), NLPD_CONF_CACHE_KEY, NULL, 0, 64,
     "beam size; 0: the model's generation config (OPUS-MT: 4 or 6); 1: greedy"},
    {"max_length", NLPD_CONF_INT, "0", offsetof(struct translate, max_length), NLPD_CONF_CACHE_KEY, NULL, 0, 1 << 20,
     "longest output in tokens, decoder start included; 0: the model's generation config (capped at its positions)"},
    {"max_length_factor", NLPD_CONF_FLOAT, "3.0", offsetof(struct translate, max_length_factor), NLPD_CONF_CACHE_KEY,
     NULL, 0, 1000,
     "also stop a batch at factor x its longest source + 10 tokens (a runaway output costs latency); 0: off"},
    {"downstream", NLPD_CONF_ENUM, "translation", offsetof(struct translate, downstream), NLPD_CONF_CACHE_KEY,
     "translation|original", 0, 0,
     "what later stages read: the translation (their offsets then refer to translation.text) or the original text"},
    {"split_sentences", NLPD_CONF_BOOL, "true", offsetof(struct translate, split_sentences), NLPD_CONF_CACHE_KEY, NULL,
     0, 0, "translate sentence by sentence (after . ! ? and their CJK forms, and at line breaks), then join"},
    {"max_sentences", NLPD_CONF_INT, "32", offsetof(struct translate, max_sentences), 0, NULL, 1, 4096,
     "sentences per model batch: with num_beams, the decoder rows whose key/value cache is held (about "
     "rows x layers x 2 x d_model x 4 bytes per output token: 128 rows of OPUS-MT-base take 3 MB per token)"},
    {0},
};

static int load_model(void *ctx, void *slot, const char *path, struct nlpd_error *err)
{
    struct translate *s = ctx;
    struct tmodel *m = slot;
    if (nlpd_tml_is_multilingual(path)) {
        if (!(m->ml = nlpd_tml_load(s->inst, path, s->dtype, &s->lang_map, s->target_lang, &m->gen, err)))
            return err->code ? err->code : NLPD_EFORMAT;
        if (s->num_beams > 0)
            m->gen.num_beams = (int)s->num_beams;
        if (s->max_length > 0)
            m->gen.max_length = (int)s->max_length;
        m->target_token = -1;
        return 0;
    }
    struct nlpd_marian_opts opts = {.threads = 1, .dtype = s->dtype};
    if (!(m->mt = nlpd_marian_load(path, &opts, err)))
        return err->code ? err->code : NLPD_EFORMAT;
    if (!(m->tok = nlpd_marian_tok_load(path, err)))
        return err->code ? err->code : NLPD_EFORMAT;
    const struct nlpd_marian_config *c = nlpd_marian_config(m->mt);
    const size_t tok_ids = nlpd_marian_tok_vocab_size(m->tok);
    const int model_ids = c->vocab < c->dec_vocab ? c->vocab : c->dec_vocab;
    if (tok_ids > (size_t)model_ids) /* ids the embeddings do not have: every batch would fail */
        return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: the tokenizer has %zu ids, the model's vocabulary only %d",
                              path, tok_ids, model_ids);
    nlpd_marian_gen_defaults(m->mt, &m->gen);
    if (s->num_beams > 0)
        m->gen.num_beams = (int)s->num_beams;
    if (s->max_length > 0)
        m->gen.max_length = (int)s->max_length;
    m->target_token = -1;
    char want[96];
    if (!strcmp(s->target_token, "none"))
        return 0;
    if (s->target_token[0]) {
        snprintf(want, sizeof want, "%s", s->target_token);
    } else {
        snprintf(want, sizeof want, ">>%s<<", s->target_lang);
        if (nlpd_marian_tok_lang_count(m->tok) == 0)
            return 0; /* a single-target model */
    }
    /* ">>xxx<<" tokens are what MarianTokenizer splits off the start of a text */
    size_t wl = strlen(want);
    if (wl < 5 || strncmp(want, ">>", 2) || strcmp(want + wl - 2, "<<"))
        return nlpd_error_set(err, NLPD_EINVAL, 0, "target_token \"%s\" is not of the form >>xxx<<", want);
    char code[64];
    snprintf(code, sizeof code, "%.*s", (int)(wl - 4), want + 2);
    m->target_token = nlpd_marian_tok_lang_token(m->tok, code);
    if (m->target_token >= 0)
        return 0;
    char have[256] = "";
    size_t nl = nlpd_marian_tok_lang_count(m->tok), o = 0;
    for (size_t i = 0; i < nl && i < 12 && o + 1 < sizeof have; i++)
        o += (size_t)snprintf(have + o, sizeof have - o, "%s%s", i ? " " : "", nlpd_marian_tok_lang_code(m->tok, i));
    if (nl > 12 && o + 1 < sizeof have)
        snprintf(have + o, sizeof have - o, " ... (%zu)", nl);
    return nlpd_error_set(err, NLPD_EINVAL, 0,
                          "%s: the model has no target-language token %s (target_token: one of %s, or \"none\")", path,
                          want, nl ? have : "none: a single-target model needs no target_token");
}

/* Loads one model and says what it is. */
static int load_logged(void *ctx, void *slot, const char *path, struct nlpd_error *err)
{
    struct translate *s = ctx;
    struct tmodel *m = slot;
    int rc = load_model(ctx, slot, path, err);
    if (rc < 0)
        return rc;
    if (m->ml) {
        char what[256];
        nlpd_tml_describe(m->ml, what, sizeof what);
        nlpd_stage_log(s->inst, NLPD_LOG_INFO, "%s: multilingual %s, %d beam(s), max_length %d", path, what,
                       m->gen.num_beams, m->gen.max_length);
        return 0;
    }
    const struct nlpd_marian_config *c = nlpd_marian_config(m->mt);
    nlpd_stage_log(s->inst, NLPD_LOG_INFO,
                   "%s: Marian d_model %d, %d+%d layers, vocabulary %d, %.1f MB of weights, %d beam(s), "
                   "max_length %d%s",
                   path, c->d_model, c->enc_layers, c->dec_layers, c->dec_vocab,
                   (double)nlpd_marian_weight_bytes(m->mt) / 1e6, m->gen.num_beams, m->gen.max_length,
                   m->target_token >= 0 ? ", with a target-language token" : "");
    return 0;
}

static int translate_init(const struct nlpd_stage_instance *inst, void *ctx, struct nlpd_error *err)
{
    struct translate *s = ctx;
    s->inst = inst;
    if (!s->target_lang[0] || strlen(s->target_lang) >= NLPD_LANG_CODE_MAX)
        return nlpd_error_set(err, NLPD_EINVAL, 0, "target_lang must be a language code of 1 .. %d bytes",
                              NLPD_LANG_CODE_MAX - 1);
    return nlpd_stage_models_load(&s->ms, s->model, &s->models, sizeof(struct tmodel), load_logged, s, err);
}

static void translate_thread_fini(void *ctx, void *tstate);

static void *translate_thread_init(void *ctx)
{
    struct translate *s = ctx;
    struct translate_thread *t = calloc(1, sizeof *t);
    if (!t || !(t->ws = calloc(s->ms.n, sizeof *t->ws)) || !(t->mlws = calloc(s->ms.n, sizeof *t->mlws)))
        goto bad;
    for (size_t i = 0; i < s->ms.n; i++) {
        const struct tmodel *m = nlpd_stage_model(&s->ms, i);
        if (m->ml ? !(t->mlws[i] = nlpd_tml_ws_new(m->ml)) : !(t->ws[i] = nlpd_marian_ws_new(m->mt, NULL)))
            goto bad;
    }
    return t;
bad:
    if (t && t->ws)
        translate_thread_fini(ctx, t);
    else
        free(t);
    return NULL;
}

static void clear_sents(struct translate_thread *t)
{
    for (size_t i = 0; i < t->nsents; i++) {
        free(t->sents[i].ids);
        free(t->sents[i].out);
    }
    t->nsents = 0;
}

static void translate_thread_fini(void *ctx, void *tstate)
{
    struct translate *s = ctx;
    struct translate_thread *t = tstate;
    for (size_t i = 0; i < s->ms.n; i++) {
        nlpd_marian_ws_free(t->ws[i]);
        if (t->mlws)
            nlpd_tml_ws_free(t->mlws[i]);
    }
    clear_sents(t);
    free(t->ws);
    free(t->mlws);
    free(t->sents);
    free(t->order);
    free(t);
}

static int add_sent(struct translate_thread *t, size_t rec, size_t start, size_t end)
{
    if (t->nsents == t->sents_cap) {
        size_t c = t->sents_cap ? t->sents_cap * 2 : 64;
        struct sent *n = realloc(t->sents, c * sizeof *n);
        size_t *o = realloc(t->order, c * sizeof *o);
        if (n)
            t->sents = n;
        if (o)
            t->order = o;
        if (!n || !o)
            return -1;
        t->sents_cap = c;
    }
    t->sents[t->nsents++] = (struct sent){.rec = rec, .start = start, .end = end};
    return 0;
}

/* Splits one record's text into sentences (whitespace-only pieces dropped). */
static int split(const struct translate *s, struct translate_thread *t, size_t rec, const char *text, size_t len)
{
    size_t start = 0;
    for (size_t i = 0; i < len;) {
        size_t e = s->split_sentences ? nlpd_sentence_end(text, len, i) : 0;
        i += e ? e : 1;
        if (e || i == len) {
            size_t a = start, b = i;
            while (a < b && nlpd_sentence_space((unsigned char)text[a]))
                a++;
            while (b > a && nlpd_sentence_space((unsigned char)text[b - 1]))
                b--;
            if (b > a && add_sent(t, rec, a, b) < 0)
                return -1;
            start = i;
        }
    }
    return 0;
}

static int by_length(const void *a, const void *b, void *ctx)
{
    const struct sent *s = ctx;
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    if (s[x].n != s[y].n)
        return s[x].n < s[y].n ? -1 : 1;
    return x < y ? -1 : x > y;
}

/* Translates sentences order[0..n) of one length-sorted run as one model batch. */
static int run_batch(const struct translate *s, struct translate_thread *t, size_t mi, const size_t *order, size_t n,
                     size_t *padded, struct nlpd_error *err)
{
    const struct tmodel *m = nlpd_stage_model(&s->ms, mi);
    const int32_t **ids = malloc(n * sizeof *ids);
    size_t *lens = malloc(n * sizeof *lens), longest = 0;
    struct nlpd_gen_output *out = calloc(n, sizeof *out);
    int rc = 0;
    if (!ids || !lens || !out) {
        rc = nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        ids[i] = t->sents[order[i]].ids;
        lens[i] = t->sents[order[i]].n;
        longest = lens[i] > longest ? lens[i] : longest;
    }
    *padded += n * longest;
    struct nlpd_gen_params p = m->gen;
    if (s->max_length_factor > 0) {
        double cap = s->max_length_factor * (double)longest + 10.0;
        if (cap < p.max_length)
            p.max_length = (int)cap;
    }
    if (m->ml) {
        char **texts = calloc(n, sizeof *texts);
        size_t *tl = calloc(n, sizeof *tl);
        rc = !texts || !tl ? nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory")
                           : nlpd_tml_translate(m->ml, t->mlws[mi], ids, lens, (int)n, &p, texts, tl, err);
        for (size_t i = 0; i < n && texts; i++) {
            if (!rc) {
                t->sents[order[i]].out = texts[i];
                t->sents[order[i]].out_len = tl[i];
            } else {
                free(texts[i]);
            }
        }
        free(texts);
        free(tl);
        goto done;
    }
    if ((rc = nlpd_marian_encode(m->mt, t->ws[mi], ids, lens, (int)n, NULL, err)) ||
        (rc = nlpd_marian_generate(m->mt, t->ws[mi], &p, out, err)))
        goto done;
    for (size_t i = 0; i < n && !rc; i++) {
        struct sent *se = &t->sents[order[i]];
        rc = nlpd_marian_tok_decode(m->tok, out[i].ids, out[i].n, 1, &se->out, &se->out_len, err);
    }
done:
    if (out)
        nlpd_gen_output_free(out, (int)n);
    free(out);
    free(ids);
    free(lens);
    return rc;
}

/* What is translated: the input text, also when a retried batch finds the record already reading an earlier
 * translation of it. */
static const char *src_text(const struct nlpd_record *r)
{
    size_t len;
    return nlpd_record_input_text(r, &len);
}

/* Joins a record's translated sentences, separated as the input was (a line break stays one, else a space). */
static int join(struct nlpd_record *r, const struct translate_thread *t, size_t first, size_t last, const char *src,
                int feeds, const char *target)
{
    size_t len = 0;
    for (size_t i = first; i < last; i++)
        len += t->sents[i].out_len + 1;
    char *buf = malloc(len + 1), *p = buf;
    if (!buf)
        return NLPD_ENOMEM;
    for (size_t i = first; i < last; i++) {
        if (i > first) {
            const char *gap = src_text(r) + t->sents[i - 1].end;
            int newline = memchr(gap, '\n', t->sents[i].start - t->sents[i - 1].end) != NULL;
            *p++ = newline ? '\n' : ' ';
        }
        memcpy(p, t->sents[i].out, t->sents[i].out_len);
        p += t->sents[i].out_len;
    }
    int rc = nlpd_record_set_translation(r, buf, (size_t)(p - buf), src, target, feeds);
    free(buf);
    return rc;
}

static enum nlpd_stage_status run_model(const struct nlpd_stage_instance *inst, struct translate *s,
                                        struct translate_thread *t, size_t mi, struct nlpd_record **recs, size_t n,
                                        size_t *padded, struct nlpd_error *err)
{
    const struct tmodel *m = nlpd_stage_model(&s->ms, mi);
    const size_t max_pos = (size_t)(m->ml ? nlpd_tml_max_pos(m->ml) : nlpd_marian_config(m->mt)->max_pos);
    clear_sents(t);
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const char *text = nlpd_record_input_text(recs[i], &len);
        if (split(s, t, i, text, len) < 0)
            return NLPD_STAGE_RETRY;
    }
    /* tokenise; a sentence the tokenizer rejects fails its record */
    for (size_t i = 0; i < t->nsents; i++) {
        struct sent *se = &t->sents[i];
        struct nlpd_record *r = recs[se->rec];
        if (r->error)
            continue;
        if (m->ml) {
            const char *code = NULL, *lang = r->lang.set ? r->lang.code : NULL;
            int32_t src = nlpd_tml_source(m->ml, lang, &code);
            if (src < 0) { /* this model cannot take the language: per unsupported_lang */
                if (!strcmp(s->unsupported, "fail"))
                    nlpd_stage_fail(inst, r,
                                    "language \"%s\"%s%s%s is not one the model can translate "
                                    "(map it with lang_map)",
                                    lang ? lang : "(none: no langid)",
                                    code && lang && strcmp(code, lang) ? " (as \"" : "",
                                    code && lang && strcmp(code, lang) ? code : "",
                                    code && lang && strcmp(code, lang) ? "\")" : "");
                continue;
            }
            if (src == nlpd_tml_target(m->ml)) /* already in the target language, spelt otherwise ("eng_Latn") */
                continue;
            int32_t *mids = NULL;
            size_t mk = 0;
            int mrc = nlpd_tml_encode(m->ml, src, src_text(r) + se->start, se->end - se->start, &mids, &mk, err);
            if (mrc == NLPD_ENOMEM) {
                free(mids);
                return NLPD_STAGE_RETRY;
            }
            if (mrc < 0) {
                free(mids);
                nlpd_stage_fail(inst, r, "tokenizer: %s", err->message);
                continue;
            }
            se->ids = mids;
            se->n = mk;
            continue;
        }
        int32_t *ids = NULL;
        size_t k = 0, cap = 0, extra = m->target_token >= 0;
        int rc = nlpd_marian_tok_encode(m->tok, src_text(r) + se->start, se->end - se->start, max_pos - extra, &ids, &k,
                                        &cap, err);
        if (rc == NLPD_ENOMEM) {
            free(ids);
            return NLPD_STAGE_RETRY;
        }
        if (rc < 0) {
            free(ids);
            nlpd_stage_fail(inst, r, "tokenizer: %s", err->message);
            continue;
        }
        if (extra) {
            int32_t *w = realloc(ids, (k + 1) * sizeof *w);
            if (!w) {
                free(ids);
                return NLPD_STAGE_RETRY;
            }
            memmove(w + 1, w, k * sizeof *w);
            w[0] = m->target_token;
            ids = w;
            k++;
        }
        se->ids = ids;
        se->n = k;
    }
    /* sort by length, batch under the padded-token budget */
    size_t live = 0;
    for (size_t i = 0; i < t->nsents; i++)
        if (t->sents[i].ids)
            t->order[live++] = i;
    qsort_r(t->order, live, sizeof *t->order, by_length, t->sents);
    for (size_t a = 0; a < live;) {
        size_t b = a + 1;
        while (b < live && b - a < (size_t)s->max_sentences &&
               (b + 1 - a) * t->sents[t->order[b]].n <= inst->max_tokens)
            b++;
        int rc = run_batch(s, t, mi, t->order + a, b - a, padded, err);
        if (rc == NLPD_ENOMEM)
            return NLPD_STAGE_RETRY;
        if (rc < 0) {
            if (b - a == 1) { /* this sentence's problem: fail its record, go on */
                nlpd_stage_fail(inst, recs[t->sents[t->order[a]].rec], "%s", err->message);
            } else { /* find which sentence: one at a time */
                for (size_t i = a; i < b; i++) {
                    int one = run_batch(s, t, mi, t->order + i, 1, padded, err);
                    if (one == NLPD_ENOMEM)
                        return NLPD_STAGE_RETRY;
                    if (one < 0)
                        nlpd_stage_fail(inst, recs[t->sents[t->order[i]].rec], "%s", err->message);
                }
            }
        }
        a = b;
    }
    /* join per record: its sentences are consecutive in t->sents */
    int feeds = strcmp(s->downstream, "translation") == 0;
    for (size_t i = 0; i < t->nsents;) {
        size_t j = i;
        while (j < t->nsents && t->sents[j].rec == t->sents[i].rec)
            j++;
        struct nlpd_record *r = recs[t->sents[i].rec];
        int complete = !r->error;
        for (size_t k = i; k < j && complete; k++)
            complete = t->sents[k].out != NULL;
        if (complete && join(r, t, i, j, r->lang.set ? r->lang.code : "und", feeds, s->target_lang) < 0)
            return NLPD_STAGE_RETRY;
        i = j;
    }
    return NLPD_STAGE_OK;
}

/* A run leaves its sentences behind for the next one to clear: clear them now, even after an error. */
static enum nlpd_stage_status run_and_clear(const struct nlpd_stage_instance *inst, void *ctx, void *tstate, size_t mi,
                                            struct nlpd_record **recs, size_t n, struct nlpd_batch *batch,
                                            struct nlpd_error *err)
{
    enum nlpd_stage_status st = run_model(inst, ctx, tstate, mi, recs, n, &batch->padded_tokens, err);
    clear_sents(tstate);
    return st;
}

static enum nlpd_stage_status translate_process(const struct nlpd_stage_instance *inst, void *ctx, void *tstate,
                                                struct nlpd_batch *batch, struct nlpd_error *err)
{
    struct translate *s = ctx;
    return nlpd_stage_models_run(&s->ms, inst, batch, s->target_lang, run_and_clear, s, tstate, err);
}

static void unload(void *ctx, void *slot)
{
    (void)ctx;
    struct tmodel *m = slot;
    nlpd_marian_tok_free(m->tok);
    nlpd_marian_free(m->mt);
    nlpd_tml_free(m->ml);
}

static void translate_fini(void *ctx)
{
    struct translate *s = ctx;
    nlpd_stage_models_free(&s->ms, unload, s);
}

static const char *translate_variant(void *ctx)
{
    struct translate *s = ctx;
    const struct tmodel *m = s->ms.n ? nlpd_stage_model(&s->ms, 0) : NULL;
    if (m && m->ml)
        return nlpd_tml_dtype_name(m->ml);
    return m && m->mt ? nlpd_dtype_name(nlpd_marian_dtype(m->mt)) : NULL;
}

const struct nlpd_stage_plugin nlpd_stage_translate = {
    .abi = NLPD_STAGE_ABI,
    .name = "translate",
    .description = "machine translation with Marian / OPUS-MT or multilingual M2M100 / NLLB-200 Hugging Face "
                   "folders; writes translation.text, source_lang and target_lang",
    .conf_map = translate_conf,
    .ctx_size = sizeof(struct translate),
    .init = translate_init,
    .thread_init = translate_thread_init,
    .thread_fini = translate_thread_fini,
    .process = translate_process,
    .fini = translate_fini,
    .results = NLPD_RESULT_TRANSLATION,
    .model_variant = translate_variant,
    .token_budget = 1,
};
