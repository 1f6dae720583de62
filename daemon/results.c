/* The result types table (see results.h): per type, the helpers stages set it with, and its JSON, Avro, cache
 * and `when` descriptions. The JSON is written directly (the hot path of pipe mode); the cache decoders check
 * everything the output relies on (a cached value comes from whoever can write Redis). */
#include "results.h"

#include <avro.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "record.h"

#define STR_MAX         65535
#define TRANSLATION_MAX (1u << 26)

/* ---- cache encoding helpers ---- */

void nlpd_cache_put_u8(struct nlpd_buf *b, unsigned v)
{
    unsigned char c = (unsigned char)v;
    nlpd_buf_append(b, &c, 1);
}

void nlpd_cache_put_u32(struct nlpd_buf *b, uint32_t v)
{
    unsigned char x[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 24)};
    nlpd_buf_append(b, x, 4);
}

void nlpd_cache_put_f32(struct nlpd_buf *b, float f)
{
    uint32_t v;
    memcpy(&v, &f, 4);
    nlpd_cache_put_u32(b, v);
}

void nlpd_cache_put_str(struct nlpd_buf *b, const char *s)
{
    size_t n = strlen(s);
    if (n > STR_MAX)
        n = STR_MAX;
    unsigned char x[2] = {(unsigned char)n, (unsigned char)(n >> 8)};
    nlpd_buf_append(b, x, 2);
    nlpd_buf_append(b, s, n);
}

unsigned nlpd_cache_get_u8(struct nlpd_cache_reader *r)
{
    if (r->p >= r->end) {
        r->bad = 1;
        return 0;
    }
    return *r->p++;
}

uint32_t nlpd_cache_get_u32(struct nlpd_cache_reader *r)
{
    if (r->end - r->p < 4) {
        r->bad = 1;
        return 0;
    }
    uint32_t v = (uint32_t)r->p[0] | (uint32_t)r->p[1] << 8 | (uint32_t)r->p[2] << 16 | (uint32_t)r->p[3] << 24;
    r->p += 4;
    return v;
}

float nlpd_cache_get_f32(struct nlpd_cache_reader *r)
{
    uint32_t v = nlpd_cache_get_u32(r);
    float f;
    memcpy(&f, &v, 4);
    if (!isfinite(f))
        r->bad = 1;
    return f;
}

unsigned nlpd_cache_get_bool(struct nlpd_cache_reader *r)
{
    unsigned v = nlpd_cache_get_u8(r);
    if (v > 1)
        r->bad = 1;
    return v;
}

void nlpd_cache_get_str(struct nlpd_cache_reader *r, char *dst, size_t cap)
{
    if (r->end - r->p < 2) {
        r->bad = 1;
        return;
    }
    size_t n = (size_t)r->p[0] | (size_t)r->p[1] << 8;
    r->p += 2;
    if (n >= cap || (size_t)(r->end - r->p) < n || memchr(r->p, '\0', n) ||
        nlpd_utf8_invalid_at((const char *)r->p, n) >= 0) {
        r->bad = 1;
        return;
    }
    memcpy(dst, r->p, n);
    dst[n] = '\0';
    r->p += n;
}

/* ---- shared pieces ---- */

#define TRY(x)                                                                                                         \
    do {                                                                                                               \
        if ((x) != 0)                                                                                                  \
            return -1;                                                                                                 \
    } while (0)

static int avro_set_string(avro_value_t *rec, const char *name, const char *s)
{
    avro_value_t f;
    TRY(avro_value_get_by_name(rec, name, &f, NULL));
    return avro_value_set_string(&f, s);
}

static int avro_set_float(avro_value_t *rec, const char *name, float x)
{
    avro_value_t f;
    TRY(avro_value_get_by_name(rec, name, &f, NULL));
    return avro_value_set_float(&f, x);
}

/* {"<key>": label, "score": score} without the closing brace. */
static void json_label_open(struct nlpd_buf *out, const char *key, const char *label, float score)
{
    nlpd_buf_printf(out, "{\"%s\":", key);
    nlpd_buf_json_string(out, label, strlen(label));
    nlpd_buf_puts(out, ",\"score\":");
    nlpd_buf_json_float(out, score);
}

/* ---- lang ---- */

static int lang_is_set(const struct nlpd_record *r)
{
    return r->lang.set;
}

static void lang_clear(struct nlpd_record *r)
{
    memset(&r->lang, 0, sizeof r->lang);
}

static void lang_json(const struct nlpd_record *r, struct nlpd_buf *out)
{
    json_label_open(out, "code", r->lang.code, r->lang.score);
    nlpd_buf_puts(out, "}");
}

static int lang_avro(const struct nlpd_record *r, void *vb)
{
    avro_value_t *branch = vb;
    TRY(avro_set_string(branch, "code", r->lang.code));
    return avro_set_float(branch, "score", r->lang.score);
}

static void lang_cache_put(const struct nlpd_record *r, struct nlpd_buf *out)
{
    nlpd_cache_put_str(out, r->lang.code);
    nlpd_cache_put_f32(out, r->lang.score);
}

static void lang_cache_get(struct nlpd_cache_reader *rd, struct nlpd_record *t)
{
    t->lang.set = 1;
    nlpd_cache_get_str(rd, t->lang.code, sizeof t->lang.code);
    t->lang.score = nlpd_cache_get_f32(rd);
}

static void lang_move(struct nlpd_record *dst, struct nlpd_record *src)
{
    dst->lang = src->lang;
    lang_clear(src);
}

static int lang_code(const struct nlpd_record *r, const char *arg, size_t i, struct nlpd_field_value *v)
{
    (void)arg;
    v->s = r->lang.code;
    return r->lang.set && i == 0;
}

static int lang_score(const struct nlpd_record *r, const char *arg, size_t i, struct nlpd_field_value *v)
{
    (void)arg;
    v->x = r->lang.score;
    return r->lang.set && i == 0;
}

static const struct nlpd_result_field lang_fields[] = {
    {"lang.code", NLPD_FIELD_STRING, 0, lang_code, "the language code (langid), e.g. 'en'"},
    {"lang.score", NLPD_FIELD_NUMBER, 0, lang_score, "its probability"},
    {0},
};

/* ---- translation ---- */

/* Takes ownership of text (NUL-terminated, len bytes). With feeds, later stages read it instead of the input. */
static void translation_adopt(struct nlpd_record *rec, char *text, size_t len, const char *source_lang,
                              const char *target_lang, int feeds)
{
    struct nlpd_translation_result *t = &rec->translation;
    if (t->input_text) { /* the record read an earlier translation: back to the input text first */
        rec->text = t->input_text;
        rec->text_len = t->input_text_len;
        t->input_text = NULL;
    }
    free(t->text);
    t->set = 1;
    t->text = text;
    t->text_len = len;
    snprintf(t->source_lang, sizeof t->source_lang, "%s", source_lang ? source_lang : "");
    snprintf(t->target_lang, sizeof t->target_lang, "%s", target_lang ? target_lang : "");
    t->feeds = feeds;
    if (feeds) {
        t->input_text = rec->text;
        t->input_text_len = rec->text_len;
        rec->text = text;
        rec->text_len = len;
    }
}

int nlpd_record_set_translation(struct nlpd_record *rec, const char *text, size_t len, const char *source_lang,
                                const char *target_lang, int feeds)
{
    char *copy = malloc(len + 1);
    if (!copy)
        return NLPD_ENOMEM;
    memcpy(copy, text, len);
    copy[len] = '\0';
    translation_adopt(rec, copy, len, source_lang, target_lang, feeds);
    return 0;
}

const char *nlpd_record_input_text(const struct nlpd_record *rec, size_t *len)
{
    if (rec->translation.input_text) {
        *len = rec->translation.input_text_len;
        return rec->translation.input_text;
    }
    *len = rec->text_len;
    return rec->text;
}

static int translation_is_set(const struct nlpd_record *r)
{
    return r->translation.set;
}

static void translation_clear(struct nlpd_record *r)
{
    if (r->translation.input_text) {
        r->text = r->translation.input_text;
        r->text_len = r->translation.input_text_len;
    }
    free(r->translation.text);
    memset(&r->translation, 0, sizeof r->translation);
}

static void translation_json(const struct nlpd_record *r, struct nlpd_buf *out)
{
    const struct nlpd_translation_result *t = &r->translation;
    nlpd_buf_puts(out, "{\"text\":");
    nlpd_buf_json_string(out, t->text, t->text_len);
    nlpd_buf_puts(out, ",\"source_lang\":");
    nlpd_buf_json_string(out, t->source_lang, strlen(t->source_lang));
    nlpd_buf_puts(out, ",\"target_lang\":");
    nlpd_buf_json_string(out, t->target_lang, strlen(t->target_lang));
    nlpd_buf_puts(out, "}");
}

static int translation_avro(const struct nlpd_record *r, void *vb)
{
    avro_value_t *branch = vb;
    avro_value_t f;
    TRY(avro_value_get_by_name(branch, "text", &f, NULL));
    TRY(avro_value_set_string_len(&f, r->translation.text, r->translation.text_len + 1));
    TRY(avro_set_string(branch, "source_lang", r->translation.source_lang));
    return avro_set_string(branch, "target_lang", r->translation.target_lang);
}

static void translation_cache_put(const struct nlpd_record *r, struct nlpd_buf *out)
{
    const struct nlpd_translation_result *t = &r->translation;
    nlpd_cache_put_u32(out, (uint32_t)t->text_len);
    nlpd_buf_append(out, t->text, t->text_len);
    nlpd_cache_put_str(out, t->source_lang);
    nlpd_cache_put_str(out, t->target_lang);
    nlpd_cache_put_u8(out, (unsigned)t->feeds);
}

/* Into the scratch record without feeding it (it has no text): move() applies feeds to the real one. */
static void translation_cache_get(struct nlpd_cache_reader *rd, struct nlpd_record *t)
{
    struct nlpd_translation_result *tr = &t->translation;
    tr->set = 1;
    size_t len = nlpd_cache_get_u32(rd);
    const unsigned char *text = NULL;
    if (len > TRANSLATION_MAX || (size_t)(rd->end - rd->p) < len) {
        rd->bad = 1;
    } else {
        text = rd->p;
        rd->p += len;
    }
    nlpd_cache_get_str(rd, tr->source_lang, sizeof tr->source_lang);
    nlpd_cache_get_str(rd, tr->target_lang, sizeof tr->target_lang);
    tr->feeds = (int)nlpd_cache_get_bool(rd);
    if (!text || rd->bad || memchr(text, '\0', len) || nlpd_utf8_invalid_at((const char *)text, len) >= 0) {
        rd->bad = 1;
        return;
    }
    if (!(tr->text = malloc(len + 1))) {
        rd->bad = 1;
        return;
    }
    memcpy(tr->text, text, len);
    tr->text[len] = '\0';
    tr->text_len = len;
}

static void translation_move(struct nlpd_record *dst, struct nlpd_record *src)
{
    struct nlpd_translation_result *t = &src->translation;
    if (!t->set)
        return; /* a translation the value does not hold leaves the record's alone */
    translation_adopt(dst, t->text, t->text_len, t->source_lang, t->target_lang, t->feeds);
    memset(t, 0, sizeof *t);
}

static int translation_present(const struct nlpd_record *r, const char *arg, size_t i, struct nlpd_field_value *v)
{
    (void)arg;
    v->x = r->translation.set;
    return i == 0; /* set or not, never unknown */
}

static int translation_source(const struct nlpd_record *r, const char *arg, size_t i, struct nlpd_field_value *v)
{
    (void)arg;
    v->s = r->translation.source_lang;
    return r->translation.set && i == 0;
}

static int translation_target(const struct nlpd_record *r, const char *arg, size_t i, struct nlpd_field_value *v)
{
    (void)arg;
    v->s = r->translation.target_lang;
    return r->translation.set && i == 0;
}

static const struct nlpd_result_field translation_fields[] = {
    {"translation", NLPD_FIELD_BOOL, 0, translation_present, "true when the record was translated"},
    {"translation.source_lang", NLPD_FIELD_STRING, 0, translation_source, "the language translated from"},
    {"translation.target_lang", NLPD_FIELD_STRING, 0, translation_target, "the language translated to"},
    {0},
};

/* ---- sentiment ---- */

int nlpd_record_set_scores(struct nlpd_record *rec, const struct nlpd_label_score *scores, size_t n)
{
    struct nlpd_label_score *copy = malloc((n ? n : 1) * sizeof *copy);
    if (!copy)
        return NLPD_ENOMEM;
    memcpy(copy, scores, n * sizeof *copy);
    free(rec->sentiment.scores);
    rec->sentiment.scores = copy;
    rec->sentiment.nscores = n;
    return 0;
}

static int sentiment_is_set(const struct nlpd_record *r)
{
    return r->sentiment.set;
}

static void sentiment_clear(struct nlpd_record *r)
{
    free(r->sentiment.scores);
    memset(&r->sentiment, 0, sizeof r->sentiment);
}

static void sentiment_json(const struct nlpd_record *r, struct nlpd_buf *out)
{
    const struct nlpd_label_result *s = &r->sentiment;
    json_label_open(out, "label", s->label, s->score);
    if (s->nscores) {
        nlpd_buf_puts(out, ",\"scores\":[");
        for (size_t i = 0; i < s->nscores; i++) {
            nlpd_buf_puts(out, i ? ",{\"label\":" : "{\"label\":");
            nlpd_buf_json_string(out, s->scores[i].label, strlen(s->scores[i].label));
            nlpd_buf_puts(out, ",\"score\":");
            nlpd_buf_json_float(out, s->scores[i].score);
            nlpd_buf_puts(out, "}");
        }
        nlpd_buf_puts(out, "]");
    }
    nlpd_buf_puts(out, "}");
}

static int sentiment_avro(const struct nlpd_record *r, void *vb)
{
    avro_value_t *branch = vb;
    const struct nlpd_label_result *s = &r->sentiment;
    avro_value_t u, arr, e;
    TRY(avro_set_string(branch, "label", s->label));
    TRY(avro_set_float(branch, "score", s->score));
    TRY(avro_value_get_by_name(branch, "scores", &u, NULL));
    if (!s->nscores) {
        TRY(avro_value_set_branch(&u, 0, &e));
        return avro_value_set_null(&e);
    }
    TRY(avro_value_set_branch(&u, 1, &arr));
    for (size_t i = 0; i < s->nscores; i++) {
        TRY(avro_value_append(&arr, &e, NULL));
        TRY(avro_set_string(&e, "label", s->scores[i].label));
        TRY(avro_set_float(&e, "score", s->scores[i].score));
    }
    return 0;
}

static void sentiment_cache_put(const struct nlpd_record *r, struct nlpd_buf *out)
{
    const struct nlpd_label_result *s = &r->sentiment;
    nlpd_cache_put_str(out, s->label);
    nlpd_cache_put_f32(out, s->score);
    nlpd_cache_put_u32(out, (uint32_t)s->nscores);
    for (size_t i = 0; i < s->nscores; i++) {
        nlpd_cache_put_str(out, s->scores[i].label);
        nlpd_cache_put_f32(out, s->scores[i].score);
    }
}

static void sentiment_cache_get(struct nlpd_cache_reader *rd, struct nlpd_record *t)
{
    t->sentiment.set = 1;
    nlpd_cache_get_str(rd, t->sentiment.label, sizeof t->sentiment.label);
    t->sentiment.score = nlpd_cache_get_f32(rd);
    uint32_t n = nlpd_cache_get_u32(rd);
    if (n > 4096)
        rd->bad = 1;
    struct nlpd_label_score *sc = n && !rd->bad ? calloc(n, sizeof *sc) : NULL;
    for (uint32_t i = 0; sc && i < n && !rd->bad; i++) {
        nlpd_cache_get_str(rd, sc[i].label, sizeof sc[i].label);
        sc[i].score = nlpd_cache_get_f32(rd);
    }
    if (n && !rd->bad && (!sc || nlpd_record_set_scores(t, sc, n) < 0))
        rd->bad = 1;
    free(sc);
}

static void sentiment_move(struct nlpd_record *dst, struct nlpd_record *src)
{
    free(dst->sentiment.scores);
    dst->sentiment = src->sentiment;
    memset(&src->sentiment, 0, sizeof src->sentiment);
}

static int sentiment_label(const struct nlpd_record *r, const char *arg, size_t i, struct nlpd_field_value *v)
{
    (void)arg;
    v->s = r->sentiment.label;
    return r->sentiment.set && i == 0;
}

static int sentiment_score(const struct nlpd_record *r, const char *arg, size_t i, struct nlpd_field_value *v)
{
    (void)arg;
    v->x = r->sentiment.score;
    return r->sentiment.set && i == 0;
}

static const struct nlpd_result_field sentiment_fields[] = {
    {"sentiment.label", NLPD_FIELD_STRING, 0, sentiment_label, "the sentiment label, e.g. 'negative'"},
    {"sentiment.score", NLPD_FIELD_NUMBER, 0, sentiment_score, "its probability"},
    {0},
};

/* ---- entities ---- */

int nlpd_record_add_entity(struct nlpd_record *rec, const char *group, float score, const char *word, size_t word_len,
                           int32_t start, int32_t end, int32_t index, const char *source)
{
    struct nlpd_entities_result *r = &rec->entities;
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 8;
        struct nlpd_entity *items = realloc(r->items, cap * sizeof *items);
        if (!items)
            return NLPD_ENOMEM;
        r->items = items;
        r->cap = cap;
    }
    struct nlpd_entity *e = &r->items[r->n];
    memset(e, 0, sizeof *e);
    snprintf(e->group, sizeof e->group, "%s", group);
    e->word = strndup(word, word_len);
    if (!e->word)
        return NLPD_ENOMEM;
    e->score = score;
    e->start = start;
    e->end = end;
    e->index = index;
    e->source = source;
    r->n++;
    r->set = 1;
    return 0;
}

static int entities_is_set(const struct nlpd_record *r)
{
    return r->entities.set;
}

static void entities_clear(struct nlpd_record *r)
{
    for (size_t i = 0; i < r->entities.n; i++)
        free(r->entities.items[i].word);
    free(r->entities.items);
    memset(&r->entities, 0, sizeof r->entities);
}

static void entities_json(const struct nlpd_record *r, struct nlpd_buf *out)
{
    const struct nlpd_entities_result *e = &r->entities;
    nlpd_buf_puts(out, "[");
    for (size_t i = 0; i < e->n; i++) {
        const struct nlpd_entity *x = &e->items[i];
        nlpd_buf_puts(out, i ? ",{" : "{");
        nlpd_buf_puts(out, x->index >= 0 ? "\"entity\":" : "\"entity_group\":");
        nlpd_buf_json_string(out, x->group, strlen(x->group));
        nlpd_buf_puts(out, ",\"score\":");
        nlpd_buf_json_float(out, x->score);
        if (x->index >= 0)
            nlpd_buf_printf(out, ",\"index\":%d", (int)x->index);
        nlpd_buf_puts(out, ",\"word\":");
        nlpd_buf_json_string(out, x->word, strlen(x->word));
        nlpd_buf_printf(out, ",\"start\":%d,\"end\":%d", (int)x->start, (int)x->end);
        if (x->source) {
            nlpd_buf_puts(out, ",\"source\":");
            nlpd_buf_json_string(out, x->source, strlen(x->source));
        }
        nlpd_buf_puts(out, "}");
    }
    nlpd_buf_puts(out, "]");
}

static int entities_avro(const struct nlpd_record *r, void *vb)
{
    avro_value_t *branch = vb;
    avro_value_t e, f, b;
    for (size_t i = 0; i < r->entities.n; i++) {
        const struct nlpd_entity *x = &r->entities.items[i];
        TRY(avro_value_append(branch, &e, NULL));
        TRY(avro_set_string(&e, "entity_group", x->group));
        TRY(avro_set_float(&e, "score", x->score));
        TRY(avro_set_string(&e, "word", x->word));
        TRY(avro_value_get_by_name(&e, "start", &f, NULL));
        TRY(avro_value_set_int(&f, x->start));
        TRY(avro_value_get_by_name(&e, "end", &f, NULL));
        TRY(avro_value_set_int(&f, x->end));
        TRY(avro_value_get_by_name(&e, "index", &f, NULL));
        TRY(avro_value_set_branch(&f, x->index >= 0, &b));
        TRY(x->index >= 0 ? avro_value_set_int(&b, x->index) : avro_value_set_null(&b));
        TRY(avro_value_get_by_name(&e, "source", &f, NULL));
        TRY(avro_value_set_branch(&f, x->source != NULL, &b));
        TRY(x->source ? avro_value_set_string(&b, x->source) : avro_value_set_null(&b));
    }
    return 0;
}

static void entities_cache_put(const struct nlpd_record *r, struct nlpd_buf *out)
{
    nlpd_cache_put_u32(out, (uint32_t)r->entities.n);
    for (size_t i = 0; i < r->entities.n; i++) {
        const struct nlpd_entity *e = &r->entities.items[i];
        nlpd_cache_put_str(out, e->group);
        nlpd_cache_put_f32(out, e->score);
        nlpd_cache_put_str(out, e->word);
        nlpd_cache_put_u32(out, (uint32_t)e->start);
        nlpd_cache_put_u32(out, (uint32_t)e->end);
        nlpd_cache_put_u32(out, (uint32_t)e->index);
        nlpd_cache_put_str(out, e->source ? e->source : "");
    }
}

static void entities_cache_get(struct nlpd_cache_reader *rd, struct nlpd_record *t)
{
    char word[STR_MAX + 1], label[NLPD_LABEL_MAX], src[32];
    uint32_t n = nlpd_cache_get_u32(rd);
    if (n > 1u << 20)
        rd->bad = 1;
    for (uint32_t i = 0; i < n && !rd->bad; i++) {
        nlpd_cache_get_str(rd, label, sizeof label);
        float score = nlpd_cache_get_f32(rd);
        nlpd_cache_get_str(rd, word, sizeof word);
        int32_t start = (int32_t)nlpd_cache_get_u32(rd), end = (int32_t)nlpd_cache_get_u32(rd),
                index = (int32_t)nlpd_cache_get_u32(rd);
        if (start < 0 || end < start || index < -1)
            rd->bad = 1;
        nlpd_cache_get_str(rd, src, sizeof src);
        /* Sources are a closed set (static strings): anything else is not ours. */
        const char *source = !src[0] ? NULL : strcmp(src, "gazetteer") == 0 ? "gazetteer" : (rd->bad = 1, NULL);
        if (!rd->bad && nlpd_record_add_entity(t, label, score, word, strlen(word), start, end, index, source))
            rd->bad = 1;
    }
    t->entities.set = 1;
}

static void entities_move(struct nlpd_record *dst, struct nlpd_record *src)
{
    entities_clear(dst);
    dst->entities = src->entities;
    memset(&src->entities, 0, sizeof src->entities);
}

static int entities_count(const struct nlpd_record *r, const char *arg, size_t i, struct nlpd_field_value *v)
{
    (void)arg;
    v->x = (double)r->entities.n;
    return r->entities.set && i == 0;
}

static int entities_groups(const struct nlpd_record *r, const char *arg, size_t i, struct nlpd_field_value *v)
{
    (void)arg;
    if (!r->entities.set)
        return 0;
    v->s = i < r->entities.n ? r->entities.items[i].group : NULL; /* NULL: ner ran and found nothing */
    return i < r->entities.n || i == 0;
}

static const struct nlpd_result_field entities_fields[] = {
    {"entities.count", NLPD_FIELD_NUMBER, 0, entities_count, "how many entities were found"},
    {"entities.groups", NLPD_FIELD_STRING, 1, entities_groups,
     "the entity groups found, e.g. 'PER' in entities.groups"},
    {0},
};

/* ---- moderation ---- */

int nlpd_record_add_category(struct nlpd_record *rec, const char *name, const char *label, float score, int flagged)
{
    struct nlpd_moderation_result *m = &rec->moderation;
    m->set = 1;
    for (size_t i = 0; i < m->n; i++) {
        struct nlpd_mod_category *c = &m->cats[i];
        if (strcmp(c->name, name) == 0) {
            if (score > c->score) {
                c->score = score;
                snprintf(c->label, sizeof c->label, "%s", label);
            }
            c->flagged |= flagged;
            m->flagged |= flagged;
            return 0;
        }
    }
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 8;
        struct nlpd_mod_category *cats = realloc(m->cats, cap * sizeof *cats);
        if (!cats)
            return NLPD_ENOMEM;
        m->cats = cats;
        m->cap = cap;
    }
    struct nlpd_mod_category *c = &m->cats[m->n++];
    snprintf(c->name, sizeof c->name, "%s", name);
    snprintf(c->label, sizeof c->label, "%s", label);
    c->score = score;
    c->flagged = flagged;
    m->flagged |= flagged;
    return 0;
}

static int moderation_is_set(const struct nlpd_record *r)
{
    return r->moderation.set;
}

static void moderation_clear(struct nlpd_record *r)
{
    free(r->moderation.cats);
    memset(&r->moderation, 0, sizeof r->moderation);
}

static void moderation_json(const struct nlpd_record *r, struct nlpd_buf *out)
{
    const struct nlpd_moderation_result *m = &r->moderation;
    nlpd_buf_printf(out, "{\"flagged\":%s,\"categories\":{", m->flagged ? "true" : "false");
    for (size_t i = 0; i < m->n; i++) {
        if (i)
            nlpd_buf_puts(out, ",");
        nlpd_buf_json_string(out, m->cats[i].name, strlen(m->cats[i].name));
        nlpd_buf_puts(out, m->cats[i].flagged ? ":true" : ":false");
    }
    nlpd_buf_puts(out, "},\"category_scores\":{");
    for (size_t i = 0; i < m->n; i++) {
        if (i)
            nlpd_buf_puts(out, ",");
        nlpd_buf_json_string(out, m->cats[i].name, strlen(m->cats[i].name));
        nlpd_buf_puts(out, ":");
        nlpd_buf_json_float(out, m->cats[i].score);
    }
    nlpd_buf_puts(out, "},\"category_labels\":{");
    for (size_t i = 0; i < m->n; i++) {
        if (i)
            nlpd_buf_puts(out, ",");
        nlpd_buf_json_string(out, m->cats[i].name, strlen(m->cats[i].name));
        nlpd_buf_puts(out, ":");
        nlpd_buf_json_string(out, m->cats[i].label, strlen(m->cats[i].label));
    }
    nlpd_buf_puts(out, "}}");
}

static int moderation_avro(const struct nlpd_record *r, void *vb)
{
    avro_value_t *branch = vb;
    const struct nlpd_moderation_result *m = &r->moderation;
    avro_value_t f, cats, scores, labels, e;
    TRY(avro_value_get_by_name(branch, "flagged", &f, NULL));
    TRY(avro_value_set_boolean(&f, m->flagged));
    TRY(avro_value_get_by_name(branch, "categories", &cats, NULL));
    TRY(avro_value_get_by_name(branch, "category_scores", &scores, NULL));
    TRY(avro_value_get_by_name(branch, "category_labels", &labels, NULL));
    for (size_t i = 0; i < m->n; i++) {
        TRY(avro_value_add(&cats, m->cats[i].name, &e, NULL, NULL));
        TRY(avro_value_set_boolean(&e, m->cats[i].flagged));
        TRY(avro_value_add(&scores, m->cats[i].name, &e, NULL, NULL));
        TRY(avro_value_set_float(&e, m->cats[i].score));
        TRY(avro_value_add(&labels, m->cats[i].name, &e, NULL, NULL));
        TRY(avro_value_set_string(&e, m->cats[i].label));
    }
    return 0;
}

/* The byte after flagged was the stage's route flag (action "route"): routing is now decided after the
 * pipeline (output.routes), so it is written 0 and read as any flag, for cached values written before. */
static void moderation_cache_put(const struct nlpd_record *r, struct nlpd_buf *out)
{
    const struct nlpd_moderation_result *m = &r->moderation;
    nlpd_cache_put_u8(out, (unsigned)m->flagged);
    nlpd_cache_put_u8(out, 0);
    nlpd_cache_put_u32(out, (uint32_t)m->n);
    for (size_t i = 0; i < m->n; i++) {
        nlpd_cache_put_str(out, m->cats[i].name);
        nlpd_cache_put_str(out, m->cats[i].label);
        nlpd_cache_put_f32(out, m->cats[i].score);
        nlpd_cache_put_u8(out, (unsigned)m->cats[i].flagged);
    }
}

static void moderation_cache_get(struct nlpd_cache_reader *rd, struct nlpd_record *t)
{
    char name[NLPD_LABEL_MAX], label[NLPD_LABEL_MAX];
    unsigned flagged = nlpd_cache_get_bool(rd);
    nlpd_cache_get_bool(rd);
    uint32_t n = nlpd_cache_get_u32(rd);
    if (n > 4096)
        rd->bad = 1;
    for (uint32_t i = 0; i < n && !rd->bad; i++) {
        nlpd_cache_get_str(rd, name, sizeof name);
        nlpd_cache_get_str(rd, label, sizeof label);
        float score = nlpd_cache_get_f32(rd);
        unsigned f = nlpd_cache_get_bool(rd);
        if (!rd->bad && nlpd_record_add_category(t, name, label, score, (int)f))
            rd->bad = 1;
    }
    t->moderation.set = 1;
    t->moderation.flagged = (int)flagged;
}

static void moderation_move(struct nlpd_record *dst, struct nlpd_record *src)
{
    moderation_clear(dst);
    dst->moderation = src->moderation;
    memset(&src->moderation, 0, sizeof src->moderation);
}

static int moderation_flagged(const struct nlpd_record *r, const char *arg, size_t i, struct nlpd_field_value *v)
{
    (void)arg;
    v->x = r->moderation.flagged;
    return r->moderation.set && i == 0;
}

static int moderation_category(const struct nlpd_record *r, const char *arg, size_t i, struct nlpd_field_value *v)
{
    if (!r->moderation.set || i)
        return 0;
    v->x = 0; /* a category the stage does not know is not flagged */
    for (size_t k = 0; k < r->moderation.n; k++)
        if (strcmp(r->moderation.cats[k].name, arg) == 0)
            v->x = r->moderation.cats[k].flagged;
    return 1;
}

static int moderation_score(const struct nlpd_record *r, const char *arg, size_t i, struct nlpd_field_value *v)
{
    if (!r->moderation.set || i)
        return 0;
    v->x = 0;
    for (size_t k = 0; k < r->moderation.n; k++)
        if (strcmp(r->moderation.cats[k].name, arg) == 0)
            v->x = r->moderation.cats[k].score;
    return 1;
}

static const struct nlpd_result_field moderation_fields[] = {
    {"moderation.flagged", NLPD_FIELD_BOOL, 0, moderation_flagged, "true when any category is flagged"},
    {"moderation.categories.", NLPD_FIELD_BOOL, 0, moderation_category,
     "moderation.categories.<name>: true when that category is flagged"},
    {"moderation.category_scores.", NLPD_FIELD_NUMBER, 0, moderation_score,
     "moderation.category_scores.<name>: that category's score (0 when absent)"},
    {0},
};

/* ---- the table ---- */

/* ---- shadow comparison and drift signals (daemon/model_mgmt.c) ---- */

static int lang_same(const struct nlpd_record *a, const struct nlpd_record *b)
{
    return strcmp(a->lang.code, b->lang.code) == 0;
}

static size_t lang_labels(const struct nlpd_record *r, const char **out, size_t cap)
{
    if (cap)
        out[0] = r->lang.code;
    return 1;
}

static int lang_conf(const struct nlpd_record *r, float *score)
{
    *score = r->lang.score;
    return 1;
}

static int translation_same(const struct nlpd_record *a, const struct nlpd_record *b)
{
    return a->translation.text_len == b->translation.text_len &&
           memcmp(a->translation.text, b->translation.text, a->translation.text_len) == 0;
}

static size_t no_labels(const struct nlpd_record *r, const char **out, size_t cap)
{
    (void)r, (void)out, (void)cap;
    return 0;
}

static int no_conf(const struct nlpd_record *r, float *score)
{
    (void)r, (void)score;
    return 0;
}

static int sentiment_same(const struct nlpd_record *a, const struct nlpd_record *b)
{
    return strcmp(a->sentiment.label, b->sentiment.label) == 0;
}

static size_t sentiment_labels(const struct nlpd_record *r, const char **out, size_t cap)
{
    if (cap)
        out[0] = r->sentiment.label;
    return 1;
}

static int sentiment_conf(const struct nlpd_record *r, float *score)
{
    *score = r->sentiment.score;
    return 1;
}

static int entity_in(const struct nlpd_entity *e, const struct nlpd_entities_result *set)
{
    for (size_t i = 0; i < set->n; i++)
        if (set->items[i].start == e->start && set->items[i].end == e->end && !strcmp(set->items[i].group, e->group))
            return 1;
    return 0;
}

/* The same set of (entity_group, start, end): scores and words may differ. */
static int entities_same(const struct nlpd_record *a, const struct nlpd_record *b)
{
    if (a->entities.n != b->entities.n)
        return 0;
    for (size_t i = 0; i < a->entities.n; i++)
        if (!entity_in(&a->entities.items[i], &b->entities) || !entity_in(&b->entities.items[i], &a->entities))
            return 0;
    return 1;
}

static size_t entities_labels(const struct nlpd_record *r, const char **out, size_t cap)
{
    for (size_t i = 0; i < r->entities.n && i < cap; i++)
        out[i] = r->entities.items[i].group;
    return r->entities.n;
}

/* The least confident entity: what a threshold on NER confidence is about. None: no score. */
static int entities_conf(const struct nlpd_record *r, float *score)
{
    for (size_t i = 0; i < r->entities.n; i++)
        if (i == 0 || r->entities.items[i].score < *score)
            *score = r->entities.items[i].score;
    return r->entities.n > 0;
}

/* The same flagged verdict and the same flagged categories. */
static int moderation_same(const struct nlpd_record *a, const struct nlpd_record *b)
{
    if (a->moderation.flagged != b->moderation.flagged)
        return 0;
    const struct nlpd_record *x = a, *y = b;
    for (int pass = 0; pass < 2; pass++, x = b, y = a)
        for (size_t i = 0; i < x->moderation.n; i++) {
            if (!x->moderation.cats[i].flagged)
                continue;
            size_t j = 0;
            while (j < y->moderation.n && strcmp(y->moderation.cats[j].name, x->moderation.cats[i].name) != 0)
                j++;
            if (j == y->moderation.n || !y->moderation.cats[j].flagged)
                return 0;
        }
    return 1;
}

static size_t moderation_labels(const struct nlpd_record *r, const char **out, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < r->moderation.n; i++)
        if (r->moderation.cats[i].flagged) {
            if (n < cap)
                out[n] = r->moderation.cats[i].name;
            n++;
        }
    return n;
}

/* The highest category score: how sure the model is that something is there. */
static int moderation_conf(const struct nlpd_record *r, float *score)
{
    for (size_t i = 0; i < r->moderation.n; i++)
        if (i == 0 || r->moderation.cats[i].score > *score)
            *score = r->moderation.cats[i].score;
    return r->moderation.n > 0;
}

const struct nlpd_result_type nlpd_result_types[] = {
    {NLPD_RESULT_LANG, "lang", lang_is_set, lang_clear, lang_json, lang_avro, lang_cache_put, lang_cache_get, lang_move,
     lang_fields, lang_same, lang_labels, lang_conf},
    {NLPD_RESULT_TRANSLATION, "translation", translation_is_set, translation_clear, translation_json, translation_avro,
     translation_cache_put, translation_cache_get, translation_move, translation_fields, translation_same, no_labels,
     no_conf},
    {NLPD_RESULT_SENTIMENT, "sentiment", sentiment_is_set, sentiment_clear, sentiment_json, sentiment_avro,
     sentiment_cache_put, sentiment_cache_get, sentiment_move, sentiment_fields, sentiment_same, sentiment_labels,
     sentiment_conf},
    {NLPD_RESULT_ENTITIES, "entities", entities_is_set, entities_clear, entities_json, entities_avro,
     entities_cache_put, entities_cache_get, entities_move, entities_fields, entities_same, entities_labels,
     entities_conf},
    {NLPD_RESULT_MODERATION, "moderation", moderation_is_set, moderation_clear, moderation_json, moderation_avro,
     moderation_cache_put, moderation_cache_get, moderation_move, moderation_fields, moderation_same, moderation_labels,
     moderation_conf},
};
const size_t nlpd_result_ntypes = sizeof nlpd_result_types / sizeof nlpd_result_types[0];

void nlpd_record_free_results(struct nlpd_record *rec)
{
    for (size_t i = 0; i < nlpd_result_ntypes; i++)
        nlpd_result_types[i].clear(rec);
    rec->route = NULL;
}

int nlpd_results_any_set(unsigned bits, const struct nlpd_record *r)
{
    for (size_t i = 0; i < nlpd_result_ntypes; i++)
        if ((bits & nlpd_result_types[i].bit) && nlpd_result_types[i].is_set(r))
            return 1;
    return 0;
}

const struct nlpd_result_field *nlpd_result_field_find(const char *name, size_t len, size_t *arg_at)
{
    for (size_t i = 0; i < nlpd_result_ntypes; i++)
        for (const struct nlpd_result_field *f = nlpd_result_types[i].fields; f->name; f++) {
            size_t n = strlen(f->name);
            int prefix = f->name[n - 1] == '.';
            if ((prefix ? len > n : len == n) && strncmp(name, f->name, n) == 0) {
                *arg_at = prefix ? n : len;
                return f;
            }
        }
    return NULL;
}

const char *nlpd_result_field_names(void)
{
    static char names[1024];
    if (names[0])
        return names;
    size_t at = 0;
    for (size_t i = 0; i < nlpd_result_ntypes; i++)
        for (const struct nlpd_result_field *f = nlpd_result_types[i].fields; f->name; f++) {
            size_t n = strlen(f->name);
            int prefix = f->name[n - 1] == '.';
            at += (size_t)snprintf(names + at, sizeof names - at, "%s%s%s", at ? ", " : "", f->name,
                                   prefix ? "<name>" : "");
            if (at >= sizeof names)
                break;
        }
    return names;
}
