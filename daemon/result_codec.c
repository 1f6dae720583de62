/* Result encoding for the cache (see result_codec.h). Layout: version byte, then per selected field a
 * presence byte and its data; strings are u16 length + bytes, floats 4 bytes and ints 4 bytes, little-endian.
 * A cached value comes from outside the process (whoever can write Redis): the decoder checks everything the
 * output relies on (UTF-8 strings, finite scores, 0/1 flags, offsets), not only the framing. */
#include "result_codec.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "record.h"

#define VERSION 1
#define STR_MAX 65535
#define TRANSLATION_MAX (1u << 26)

static void put_u8(struct nlpd_buf *b, unsigned v)
{
    unsigned char c = (unsigned char)v;
    nlpd_buf_append(b, &c, 1);
}

static void put_u32(struct nlpd_buf *b, uint32_t v)
{
    unsigned char x[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16), (unsigned char)(v >> 24)};
    nlpd_buf_append(b, x, 4);
}

static void put_f32(struct nlpd_buf *b, float f)
{
    uint32_t v;
    memcpy(&v, &f, 4);
    put_u32(b, v);
}

static void put_str(struct nlpd_buf *b, const char *s)
{
    size_t n = strlen(s);
    if (n > STR_MAX)
        n = STR_MAX;
    unsigned char x[2] = {(unsigned char)n, (unsigned char)(n >> 8)};
    nlpd_buf_append(b, x, 2);
    nlpd_buf_append(b, s, n);
}

void nlpd_results_encode(const struct nlpd_record *r, unsigned results, struct nlpd_buf *out)
{
    put_u8(out, VERSION);
    if (results & NLPD_RESULT_LANG) {
        put_u8(out, (unsigned)r->lang.set);
        if (r->lang.set) {
            put_str(out, r->lang.code);
            put_f32(out, r->lang.score);
        }
    }
    if (results & NLPD_RESULT_TRANSLATION) {
        const struct nlpd_translation_result *t = &r->translation;
        put_u8(out, (unsigned)t->set);
        if (t->set) {
            put_u32(out, (uint32_t)t->text_len);
            nlpd_buf_append(out, t->text, t->text_len);
            put_str(out, t->source_lang);
            put_str(out, t->target_lang);
            put_u8(out, (unsigned)t->feeds);
        }
    }
    if (results & NLPD_RESULT_SENTIMENT) {
        put_u8(out, (unsigned)r->sentiment.set);
        if (r->sentiment.set) {
            put_str(out, r->sentiment.label);
            put_f32(out, r->sentiment.score);
            put_u32(out, (uint32_t)r->sentiment.nscores);
            for (size_t i = 0; i < r->sentiment.nscores; i++) {
                put_str(out, r->sentiment.scores[i].label);
                put_f32(out, r->sentiment.scores[i].score);
            }
        }
    }
    if (results & NLPD_RESULT_ENTITIES) {
        put_u8(out, (unsigned)r->entities.set);
        if (r->entities.set) {
            put_u32(out, (uint32_t)r->entities.n);
            for (size_t i = 0; i < r->entities.n; i++) {
                const struct nlpd_entity *e = &r->entities.items[i];
                put_str(out, e->group);
                put_f32(out, e->score);
                put_str(out, e->word);
                put_u32(out, (uint32_t)e->start);
                put_u32(out, (uint32_t)e->end);
                put_u32(out, (uint32_t)e->index);
                put_str(out, e->source ? e->source : "");
            }
        }
    }
    if (results & NLPD_RESULT_MODERATION) {
        put_u8(out, (unsigned)r->moderation.set);
        if (r->moderation.set) {
            put_u8(out, (unsigned)r->moderation.flagged);
            put_u8(out, (unsigned)r->moderation.route);
            put_u32(out, (uint32_t)r->moderation.n);
            for (size_t i = 0; i < r->moderation.n; i++) {
                put_str(out, r->moderation.cats[i].name);
                put_str(out, r->moderation.cats[i].label);
                put_f32(out, r->moderation.cats[i].score);
                put_u8(out, (unsigned)r->moderation.cats[i].flagged);
            }
        }
    }
}

struct reader {
    const unsigned char *p, *end;
    int bad;
};

static unsigned get_u8(struct reader *r)
{
    if (r->p >= r->end) {
        r->bad = 1;
        return 0;
    }
    return *r->p++;
}

static uint32_t get_u32(struct reader *r)
{
    if (r->end - r->p < 4) {
        r->bad = 1;
        return 0;
    }
    uint32_t v = (uint32_t)r->p[0] | (uint32_t)r->p[1] << 8 | (uint32_t)r->p[2] << 16 | (uint32_t)r->p[3] << 24;
    r->p += 4;
    return v;
}

static float get_f32(struct reader *r)
{
    uint32_t v = get_u32(r);
    float f;
    memcpy(&f, &v, 4);
    if (!isfinite(f))
        r->bad = 1;
    return f;
}

/* A presence or flag byte: 0 or 1. */
static unsigned get_bool(struct reader *r)
{
    unsigned v = get_u8(r);
    if (v > 1)
        r->bad = 1;
    return v;
}

/* Copies a string into dst (cap bytes, NUL-terminated); too long for dst is invalid. */
static void get_str(struct reader *r, char *dst, size_t cap)
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

/* Decodes into a scratch record first so that a bad value leaves the real one untouched. */
int nlpd_results_decode(struct nlpd_record *rec, unsigned results, const unsigned char *data, size_t len)
{
    struct reader r = {data, data + len, 0};
    struct nlpd_record t = {0};
    char word[STR_MAX + 1], label[NLPD_LABEL_MAX], name[NLPD_LABEL_MAX], src[32];
    if (get_u8(&r) != VERSION)
        return -1;
    if ((results & NLPD_RESULT_LANG) && (t.lang.set = (int)get_bool(&r))) {
        get_str(&r, t.lang.code, sizeof t.lang.code);
        t.lang.score = get_f32(&r);
    }
    const unsigned char *tr_text = NULL;
    size_t tr_len = 0;
    unsigned tr_feeds = 0;
    char tr_src[NLPD_LANG_CODE_MAX], tr_tgt[NLPD_LANG_CODE_MAX];
    if ((results & NLPD_RESULT_TRANSLATION) && (t.translation.set = (int)get_bool(&r)) && !r.bad) {
        tr_len = get_u32(&r);
        if (tr_len > TRANSLATION_MAX || (size_t)(r.end - r.p) < tr_len) {
            r.bad = 1;
        } else { /* kept in place: copied into the record only once the whole value checked out */
            tr_text = r.p;
            r.p += tr_len;
        }
        get_str(&r, tr_src, sizeof tr_src);
        get_str(&r, tr_tgt, sizeof tr_tgt);
        tr_feeds = get_bool(&r);
        if (tr_text && (memchr(tr_text, '\0', tr_len) || nlpd_utf8_invalid_at((const char *)tr_text, tr_len) >= 0))
            r.bad = 1;
    }
    if ((results & NLPD_RESULT_SENTIMENT) && (t.sentiment.set = (int)get_bool(&r)) && !r.bad) {
        get_str(&r, t.sentiment.label, sizeof t.sentiment.label);
        t.sentiment.score = get_f32(&r);
        uint32_t n = get_u32(&r);
        if (n > 4096)
            r.bad = 1;
        struct nlpd_label_score *sc = n && !r.bad ? calloc(n, sizeof *sc) : NULL;
        for (uint32_t i = 0; sc && i < n && !r.bad; i++) {
            get_str(&r, sc[i].label, sizeof sc[i].label);
            sc[i].score = get_f32(&r);
        }
        if (n && !r.bad && (!sc || nlpd_record_set_scores(&t, sc, n) < 0))
            r.bad = 1;
        free(sc);
    }
    if ((results & NLPD_RESULT_ENTITIES) && (t.entities.set = (int)get_bool(&r)) && !r.bad) {
        uint32_t n = get_u32(&r);
        if (n > 1u << 20)
            r.bad = 1;
        for (uint32_t i = 0; i < n && !r.bad; i++) {
            get_str(&r, label, sizeof label);
            float score = get_f32(&r);
            get_str(&r, word, sizeof word);
            int32_t start = (int32_t)get_u32(&r), end = (int32_t)get_u32(&r), index = (int32_t)get_u32(&r);
            if (start < 0 || end < start || index < -1)
                r.bad = 1;
            get_str(&r, src, sizeof src);
            /* Sources are a closed set (static strings): anything else is not ours. */
            const char *source = !src[0] ? NULL : strcmp(src, "gazetteer") == 0 ? "gazetteer" : (r.bad = 1, NULL);
            if (!r.bad && nlpd_record_add_entity(&t, label, score, word, strlen(word), start, end, index, source))
                r.bad = 1;
        }
        t.entities.set = 1;
    }
    if ((results & NLPD_RESULT_MODERATION) && (t.moderation.set = (int)get_bool(&r)) && !r.bad) {
        unsigned flagged = get_bool(&r), route = get_bool(&r);
        uint32_t n = get_u32(&r);
        if (n > 4096)
            r.bad = 1;
        for (uint32_t i = 0; i < n && !r.bad; i++) {
            get_str(&r, name, sizeof name);
            get_str(&r, label, sizeof label);
            float score = get_f32(&r);
            unsigned f = get_bool(&r);
            if (!r.bad && nlpd_record_add_category(&t, name, label, score, (int)f))
                r.bad = 1;
        }
        t.moderation.set = 1;
        t.moderation.flagged = (int)flagged;
        t.moderation.route = (int)route;
    }
    if (r.bad || r.p != r.end) {
        nlpd_record_free_results(&t);
        return -1;
    }
    if ((results & NLPD_RESULT_TRANSLATION) && t.translation.set &&
        nlpd_record_set_translation(rec, (const char *)tr_text, tr_len, tr_src, tr_tgt, (int)tr_feeds) < 0) {
        nlpd_record_free_results(&t);
        return -1;
    }
    if (results & NLPD_RESULT_LANG)
        rec->lang = t.lang;
    if (results & NLPD_RESULT_SENTIMENT) {
        free(rec->sentiment.scores);
        rec->sentiment = t.sentiment;
    }
    if (results & NLPD_RESULT_ENTITIES) {
        struct nlpd_record old = {0};
        old.entities = rec->entities;
        nlpd_record_free_results(&old);
        rec->entities = t.entities;
    }
    if (results & NLPD_RESULT_MODERATION) {
        free(rec->moderation.cats);
        rec->moderation = t.moderation;
    }
    return 0;
}
