/* The result types' cache encoding (see results.h): the byte-level put/get helpers and, per type, its encoder
 * and its decoder, which checks everything the output relies on (a cached value comes from whoever can write Redis). */
#include "results.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "record.h"
#include "results_internal.h"

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

void nlpd_lang_cache_put(const struct nlpd_record *r, struct nlpd_buf *out)
{
    nlpd_cache_put_str(out, r->lang.code);
    nlpd_cache_put_f32(out, r->lang.score);
}

void nlpd_lang_cache_get(struct nlpd_cache_reader *rd, struct nlpd_record *t)
{
    t->lang.set = 1;
    nlpd_cache_get_str(rd, t->lang.code, sizeof t->lang.code);
    t->lang.score = nlpd_cache_get_f32(rd);
}

void nlpd_translation_cache_put(const struct nlpd_record *r, struct nlpd_buf *out)
{
    const struct nlpd_translation_result *t = &r->translation;
    nlpd_cache_put_u32(out, (uint32_t)t->text_len);
    nlpd_buf_append(out, t->text, t->text_len);
    nlpd_cache_put_str(out, t->source_lang);
    nlpd_cache_put_str(out, t->target_lang);
    nlpd_cache_put_u8(out, (unsigned)t->feeds);
}

/* Into the scratch record without feeding it (it has no text): move() applies feeds to the real one. */
void nlpd_translation_cache_get(struct nlpd_cache_reader *rd, struct nlpd_record *t)
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

void nlpd_sentiment_cache_put(const struct nlpd_record *r, struct nlpd_buf *out)
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

void nlpd_sentiment_cache_get(struct nlpd_cache_reader *rd, struct nlpd_record *t)
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

void nlpd_entities_cache_put(const struct nlpd_record *r, struct nlpd_buf *out)
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

void nlpd_entities_cache_get(struct nlpd_cache_reader *rd, struct nlpd_record *t)
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

/* The byte after flagged was the stage's route flag (action "route"): routing is now decided after the
 * pipeline (output.routes), so it is written 0 and read as any flag, for cached values written before. */
void nlpd_moderation_cache_put(const struct nlpd_record *r, struct nlpd_buf *out)
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

void nlpd_moderation_cache_get(struct nlpd_cache_reader *rd, struct nlpd_record *t)
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
