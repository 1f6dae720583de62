/* Record decoding and encoding (see record.h). JSON parsing is jansson's; the output is written
 * directly into a buffer because its shape is fixed and this is the hot path of pipe mode. */
#include "record.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <utf8proc.h>

#include "results.h"

double nlpd_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void nlpd_record_fail(struct nlpd_record *rec, const char *stage, const char *fmt, ...)
{
    if (rec->error)
        return; /* the first reason is the one that matters */
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* Reasons may quote input (jansson cuts it mid-character): keep them valid UTF-8. */
    size_t len = strlen(msg);
    long bad;
    while ((bad = nlpd_utf8_invalid_at(msg, len)) >= 0)
        msg[bad] = '?';
    rec->error = strdup(msg);
    if (!rec->error)
        rec->error = (char *)"out of memory"; /* never freed: see nlpd_item_clear */
    rec->error_stage = stage;
}

long nlpd_utf8_invalid_at(const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < len) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        unsigned cp, min;
        if (c >= 0xC2 && c <= 0xDF) {
            n = 2, cp = c & 0x1F, min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            n = 3, cp = c & 0x0F, min = 0x800;
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 4, cp = c & 0x07, min = 0x10000;
        } else {
            return (long)i;
        }
        if (i + n > len)
            return (long)i;
        for (size_t k = 1; k < n; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return (long)i;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return (long)i;
        i += n;
    }
    return -1;
}

/* Finds a field by exact key first (keys may contain dots), then by walking a dotted path. */
static json_t *lookup_path(json_t *root, const char *path)
{
    json_t *v = json_object_get(root, path);
    if (v || !strchr(path, '.'))
        return v;
    char seg[256];
    const char *p = path;
    v = root;
    while (*p) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        if (n >= sizeof seg || !json_is_object(v))
            return NULL;
        memcpy(seg, p, n);
        seg[n] = '\0';
        v = json_object_get(v, seg);
        if (!v)
            return NULL;
        p += n;
        if (*p == '.')
            p++;
    }
    return v;
}

static const char *json_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER:
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "a value";
}

/* ---- the original text of a number (jansson keeps only its value: 0.1 would come back as 0.10000000000000001) */

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* p at the opening quote of a string; returns the byte after the closing quote (or end). */
static const char *skip_string(const char *p, const char *end)
{
    for (p++; p < end; p++) {
        if (*p == '\\')
            p++;
        else if (*p == '"')
            return p + 1;
    }
    return end;
}

/* Returns the byte after the value starting at p. The document is one jansson accepted, so the walk only has to
 * stay inside [p, end), not to validate. */
static const char *skip_value(const char *p, const char *end)
{
    if (p >= end)
        return end;
    if (*p == '"')
        return skip_string(p, end);
    if (*p == '{' || *p == '[') {
        int depth = 0;
        while (p < end) {
            if (*p == '"') {
                p = skip_string(p, end);
                continue;
            }
            if (*p == '{' || *p == '[')
                depth++;
            else if ((*p == '}' || *p == ']') && --depth == 0)
                return p + 1;
            p++;
        }
        return end;
    }
    while (p < end && !strchr(" \t\n\r,]}", *p))
        p++;
    return p;
}

static int hex4(const char *p, const char *end, unsigned *v)
{
    *v = 0;
    if (end - p < 4)
        return -1;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        unsigned d = c >= '0' && c <= '9'   ? (unsigned)(c - '0')
                     : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
                     : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10)
                                            : 16u;
        if (d > 15)
            return -1;
        *v = *v << 4 | d;
    }
    return 0;
}

/* 1 when the JSON string at p (opening quote) decodes to key[0..n); *after is the byte after it. */
static int string_equals(const char *p, const char *end, const char *key, size_t n, const char **after)
{
    const char *stop = skip_string(p, end);
    *after = stop;
    size_t k = 0;
    for (p++; p < stop - 1; p++) {
        unsigned char c = (unsigned char)*p;
        char utf8[4];
        size_t m = 1;
        utf8[0] = (char)c;
        if (c == '\\' && p + 1 < stop - 1) {
            char e = *++p;
            unsigned cp;
            switch (e) {
            case 'b': utf8[0] = '\b'; break;
            case 'f': utf8[0] = '\f'; break;
            case 'n': utf8[0] = '\n'; break;
            case 'r': utf8[0] = '\r'; break;
            case 't': utf8[0] = '\t'; break;
            case 'u':
                if (hex4(p + 1, stop, &cp) < 0)
                    return 0;
                p += 4;
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    unsigned lo;
                    if (stop - p < 7 || p[1] != '\\' || p[2] != 'u' || hex4(p + 3, stop, &lo) < 0)
                        return 0;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    p += 6;
                }
                m = (size_t)utf8proc_encode_char((utf8proc_int32_t)cp, (utf8proc_uint8_t *)utf8);
                if (m == 0) /* a malformed surrogate pair (beyond U+10FFFF): no key can match */
                    return 0;
                break;
            default: utf8[0] = e; break; /* \" \\ \/ */
            }
        }
        if (k + m > n || memcmp(key + k, utf8, m) != 0)
            return 0;
        k += m;
    }
    return k == n;
}

/* The value of member key[0..n) of the object at p, or NULL. */
static const char *find_member(const char *p, const char *end, const char *key, size_t n)
{
    p = skip_ws(p, end);
    if (p >= end || *p != '{')
        return NULL;
    p = skip_ws(p + 1, end);
    while (p < end && *p == '"') {
        const char *after;
        int match = string_equals(p, end, key, n, &after);
        p = skip_ws(after, end);
        if (p >= end || *p != ':')
            return NULL;
        p = skip_ws(p + 1, end);
        if (match)
            return p;
        p = skip_ws(skip_value(p, end), end);
        if (p >= end || *p != ',')
            return NULL;
        p = skip_ws(p + 1, end);
    }
    return NULL;
}

/* The number at path as written in the document, found the way lookup_path finds it. */
static char *number_text(const char *data, size_t len, const char *path)
{
    const char *end = data + len, *v = find_member(data, end, path, strlen(path));
    if (!v || (*v != '-' && (*v < '0' || *v > '9'))) {
        v = data;
        for (const char *seg = path; v && *seg;) {
            const char *dot = strchr(seg, '.');
            size_t n = dot ? (size_t)(dot - seg) : strlen(seg);
            v = find_member(v, end, seg, n);
            seg += n + (dot != NULL);
        }
    }
    if (!v || (*v != '-' && (*v < '0' || *v > '9')))
        return NULL;
    return strndup(v, (size_t)(skip_value(v, end) - v));
}

#define FAIL(...)                                                                                                      \
    do {                                                                                                               \
        nlpd_record_fail(&item->rec, "input", __VA_ARGS__);                                                            \
        return NLPD_EFORMAT;                                                                                           \
    } while (0)

int nlpd_item_decode_json(struct nlpd_item *item, const struct nlpd_input_conf *in, const char *data, size_t len)
{
    long bad = nlpd_utf8_invalid_at(data, len);
    if (bad >= 0) {
        FAIL("invalid UTF-8 at byte %ld", bad);
    }
    /* (pointer, length) only: a Kafka payload has no terminating NUL. */
    size_t blank = 0;
    while (blank < len && (data[blank] == ' ' || data[blank] == '\t' || data[blank] == '\r'))
        blank++;
    if (blank == len)
        FAIL("empty record (no JSON in it)");
    json_error_t jerr;
    /* DECODE_ANY and ALLOW_NUL let the checks below give the precise reason. */
    json_t *root = json_loadb(data, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (!root) {
        FAIL("invalid JSON: %s (column %d)", jerr.text, jerr.column);
    }
    item->json = root;
    if (!json_is_object(root))
        FAIL("record is %s, not a JSON object", json_type_name(root));

    json_t *id = lookup_path(root, in->id_field);
    if (json_is_string(id)) {
        if (memchr(json_string_value(id), '\0', json_string_length(id)))
            FAIL("id field \"%s\" contains a NUL character", in->id_field);
        item->id = strndup(json_string_value(id), json_string_length(id));
    } else if (json_is_number(id)) {
        item->id = number_text(data, len, in->id_field); /* as written: 0.1 stays "0.1" */
        if (!item->id)
            FAIL("id field \"%s\": cannot read the number", in->id_field);
    }

    json_t *text = lookup_path(root, in->text_field);
    if (!text)
        FAIL("missing text field \"%s\"", in->text_field);
    if (!json_is_string(text))
        FAIL("text field \"%s\" is %s, not a string", in->text_field, json_type_name(text));
    return nlpd_item_set_text(item, in, json_string_value(text), json_string_length(text));
}

int nlpd_item_set_text(struct nlpd_item *item, const struct nlpd_input_conf *in, const char *s, size_t n)
{
    if ((long long)n > in->max_text_bytes)
        FAIL("text is too long: %zu bytes, over input.max_text_bytes = %lld", n, in->max_text_bytes);
    size_t blank = 0;
    while (blank < n && strchr(" \t\n\r\v\f", s[blank]) && s[blank])
        blank++;
    if (n == 0 || blank == n)
        FAIL("empty text%s", n ? " (only whitespace)" : "");
    if (memchr(s, '\0', n))
        FAIL("text contains a NUL character");
    long bad = nlpd_utf8_invalid_at(s, n);
    if (bad >= 0)
        FAIL("text is not valid UTF-8 (byte %ld)", bad);
    item->rec.text = s;
    item->rec.text_len = n;
    item->rec.id = item->id; /* decoders read the id first */
    return 0;
}

void nlpd_item_clear(struct nlpd_item *item)
{
    nlpd_record_free_results(&item->rec);
    if (item->json)
        json_decref((json_t *)item->json);
    free(item->text_copy);
    free(item->id);
    if (item->rec.error && strcmp(item->rec.error, "out of memory") != 0)
        free(item->rec.error);
    memset(item, 0, sizeof *item);
}

void nlpd_item_drop_input(struct nlpd_item *item)
{
    if (item->json)
        json_decref((json_t *)item->json);
    item->json = NULL;
    free(item->text_copy);
    item->text_copy = NULL;
    free(item->id);
    item->id = NULL;
    item->rec.text = NULL;
    item->rec.text_len = 0;
}

/* A decimal integer without printf: every Kafka record's output carries three. */
static void put_int(struct nlpd_buf *out, int64_t v)
{
    char tmp[24], *p = tmp + sizeof tmp;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do
        *--p = (char)('0' + u % 10);
    while (u /= 10);
    if (v < 0)
        *--p = '-';
    nlpd_buf_append(out, p, (size_t)(tmp + sizeof tmp - p));
}

void nlpd_item_encode_json(const struct nlpd_item *item, const struct nlpd_model_ref *models, size_t nmodels,
                           double now, struct nlpd_buf *out)
{
    const struct nlpd_record *r = &item->rec;
    nlpd_buf_reserve(out, r->text_len + r->translation.text_len + 512);
    nlpd_buf_puts(out, "{\"id\":");
    if (item->id)
        nlpd_buf_json_string(out, item->id, strlen(item->id));
    else
        nlpd_buf_puts(out, "null");
    size_t in_len;
    const char *in = nlpd_record_input_text(r, &in_len);
    nlpd_buf_puts(out, ",\"text\":");
    nlpd_buf_json_string(out, in, in_len);
    if (item->source.set) {
        nlpd_buf_puts(out, ",\"source\":{\"topic\":");
        nlpd_buf_json_string(out, item->source.topic, strlen(item->source.topic));
        nlpd_buf_puts(out, ",\"partition\":");
        put_int(out, item->source.partition);
        nlpd_buf_puts(out, ",\"offset\":");
        put_int(out, item->source.offset);
        nlpd_buf_puts(out, ",\"timestamp_ms\":");
        if (item->source.timestamp_ms >= 0) {
            put_int(out, item->source.timestamp_ms);
            nlpd_buf_puts(out, "}");
        } else
            nlpd_buf_puts(out, "null}");
    } else {
        nlpd_buf_puts(out, ",\"source\":null");
    }
    for (size_t i = 0; i < nlpd_result_ntypes; i++) {
        const struct nlpd_result_type *t = &nlpd_result_types[i];
        nlpd_buf_puts(out, ",\"");
        nlpd_buf_puts(out, t->name);
        nlpd_buf_puts(out, "\":");
        if (t->is_set(r))
            t->json(r, out);
        else
            nlpd_buf_puts(out, "null");
    }
    nlpd_buf_printf(out, ",\"meta\":{\"latency_ms\":%.3f,\"models\":{", (now - item->t_in) * 1e3);
    int first = 1;
    for (size_t i = 0; i < nmodels; i++) {
        if (models[i].stage_index >= 32 || !(r->stages_run & (1u << models[i].stage_index)))
            continue;
        if (!first)
            nlpd_buf_puts(out, ",");
        first = 0;
        nlpd_buf_json_string(out, models[i].stage, strlen(models[i].stage));
        nlpd_buf_puts(out, ":");
        const char *id = nlpd_model_ref_id(&models[i], r);
        nlpd_buf_json_string(out, id, strlen(id));
    }
    nlpd_buf_puts(out, "}}}");
}

void nlpd_item_encode_error(const struct nlpd_item *item, struct nlpd_buf *out)
{
    const char *e = item->rec.error ? item->rec.error : "unknown error";
    nlpd_buf_puts(out, "{\"error\":");
    nlpd_buf_json_string(out, e, strlen(e));
    nlpd_buf_printf(out, ",\"line\":%lld", (long long)item->line);
    if (item->id) {
        nlpd_buf_puts(out, ",\"id\":");
        nlpd_buf_json_string(out, item->id, strlen(item->id));
    }
    if (item->rec.error_stage) {
        nlpd_buf_puts(out, ",\"stage\":");
        nlpd_buf_json_string(out, item->rec.error_stage, strlen(item->rec.error_stage));
    }
    nlpd_buf_puts(out, "}");
}
