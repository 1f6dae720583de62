/* Gazetteer: names in one arena, an open-addressing hash set of offsets (FNV-1a), and a matcher that tries
 * the word ends after each word start, longest first. "Word" characters are Unicode letters, marks, digits. */
#include "gazetteer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "nlpd_util.h"

#define GAZ_MAX_FILE ((size_t)1 << 30)

struct nlpd_gazetteer {
    char *arena; /* names, each NUL-terminated */
    size_t arena_len, arena_cap;
    uint32_t *slots; /* arena offset + 1, 0 = empty */
    uint16_t *lens;
    size_t nslots, count, max_len;
};

static uint64_t fnv1a(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static size_t find_slot(const struct nlpd_gazetteer *g, const char *s, size_t n, int *found)
{
    size_t mask = g->nslots - 1, i = (size_t)fnv1a(s, n) & mask;
    for (;; i = (i + 1) & mask) {
        uint32_t o = g->slots[i];
        if (!o) {
            *found = 0;
            return i;
        }
        if (g->lens[i] == n && memcmp(g->arena + o - 1, s, n) == 0) {
            *found = 1;
            return i;
        }
    }
}

int nlpd_gazetteer_contains(const struct nlpd_gazetteer *g, const char *s, size_t len)
{
    if (!g || !g->nslots || len == 0 || len > g->max_len)
        return 0;
    int found;
    find_slot(g, s, len, &found);
    return found;
}

size_t nlpd_gazetteer_size(const struct nlpd_gazetteer *g)
{
    return g ? g->count : 0;
}

void nlpd_gazetteer_free(struct nlpd_gazetteer *g)
{
    if (!g)
        return;
    free(g->arena);
    free(g->slots);
    free(g->lens);
    free(g);
}

static int add(struct nlpd_gazetteer *g, const char *s, size_t n)
{
    int found;
    size_t i = find_slot(g, s, n, &found);
    if (found)
        return 0;
    if (g->arena_len + n + 1 >= UINT32_MAX)
        return NLPD_ERANGE;
    memcpy(g->arena + g->arena_len, s, n);
    g->arena[g->arena_len + n] = 0;
    g->slots[i] = (uint32_t)g->arena_len + 1;
    g->lens[i] = (uint16_t)n;
    g->arena_len += n + 1;
    g->count++;
    if (n > g->max_len)
        g->max_len = n;
    return 0;
}

static int valid_utf8(const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &cp);
        if (k <= 0)
            return 0;
        i += (size_t)k;
    }
    return 1;
}

/* Column index of `name` in a header line; -1 when the line is not a header. */
static int header_column(const char *line, size_t n)
{
    size_t col = 0, i = 0;
    while (i <= n) {
        size_t j = i;
        while (j < n && line[j] != '\t')
            j++;
        if (j - i == 4 && memcmp(line + i, "name", 4) == 0)
            return (int)col;
        col++;
        i = j + 1;
    }
    return -1;
}

struct nlpd_gazetteer *nlpd_gazetteer_load_mem(const char *data, size_t len, const char *name, struct nlpd_error *err)
{
    struct nlpd_gazetteer *g = calloc(1, sizeof *g);
    if (!g)
        goto oom;
    size_t lines = 1;
    for (size_t i = 0; i < len; i++)
        lines += data[i] == '\n';
    g->nslots = 16;
    while (g->nslots < lines * 2)
        g->nslots *= 2;
    g->slots = calloc(g->nslots, sizeof *g->slots);
    g->lens = calloc(g->nslots, sizeof *g->lens);
    g->arena = malloc(len + 1);
    if (!g->slots || !g->lens || !g->arena)
        goto oom;
    int col = 0;
    size_t lineno = 0;
    for (size_t i = 0; i < len;) {
        size_t e = i;
        while (e < len && data[e] != '\n')
            e++;
        size_t n = e;
        if (n > i && data[n - 1] == '\r')
            n--;
        lineno++;
        const char *line = data + i;
        size_t ll = n - i;
        i = e + 1;
        if (lineno == 1) {
            int h = header_column(line, ll);
            if (h >= 0) {
                col = h;
                continue;
            }
        }
        if (ll == 0 || line[0] == '#')
            continue;
        size_t a = 0;
        for (int c = 0; c < col && a <= ll; c++) {
            while (a < ll && line[a] != '\t')
                a++;
            a++;
        }
        if (a > ll)
            continue;
        size_t b = a;
        while (b < ll && line[b] != '\t')
            b++;
        while (a < b && line[a] == ' ')
            a++;
        while (b > a && line[b - 1] == ' ')
            b--;
        if (b == a || b - a > NLPD_GAZ_NAME_MAX)
            continue;
        if (!valid_utf8(line + a, b - a)) {
            nlpd_gazetteer_free(g);
            nlpd_error_set(err, NLPD_EFORMAT, 0, "%s:%zu: not UTF-8", name, lineno);
            return NULL;
        }
        int rc = add(g, line + a, b - a);
        if (rc < 0) {
            nlpd_gazetteer_free(g);
            nlpd_error_set(err, rc, 0, "%s: too large", name);
            return NULL;
        }
    }
    return g;
oom:
    nlpd_gazetteer_free(g);
    nlpd_error_set(err, NLPD_ENOMEM, 0, "%s: out of memory", name);
    return NULL;
}

struct nlpd_gazetteer *nlpd_gazetteer_load(const char *path, struct nlpd_error *err)
{
    char *buf;
    size_t len;
    if (nlpd_util_read_file(path, GAZ_MAX_FILE, &buf, &len, err))
        return NULL;
    struct nlpd_gazetteer *g = nlpd_gazetteer_load_mem(buf, len, path, err);
    free(buf);
    return g;
}

/* Decodes the char at s[i]; returns its byte length (1 for invalid bytes) and whether it is a word char. */
static size_t next_char(const char *s, size_t len, size_t i, int *word)
{
    utf8proc_int32_t cp;
    utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(len - i), &cp);
    if (k <= 0) {
        *word = 0;
        return 1;
    }
    utf8proc_category_t c = utf8proc_category(cp);
    *word = (c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_NO);
    return (size_t)k;
}

static int32_t cps(const char *s, size_t a, size_t b)
{
    int32_t n = 0;
    for (size_t i = a; i < b; i++)
        n += ((unsigned char)s[i] & 0xC0) != 0x80;
    return n;
}

int nlpd_gazetteer_scan(const struct nlpd_gazetteer *g, const char *text, size_t len, nlpd_gazetteer_fn fn, void *ctx)
{
    if (!g || !g->count)
        return 0;
    size_t ends[NLPD_GAZ_NAME_MAX + 1];
    int prev_word = 0;
    int32_t cp = 0;
    size_t i = 0;
    while (i < len) {
        int w;
        size_t k = next_char(text, len, i, &w);
        if (!w || prev_word) {
            prev_word = w;
            i += k;
            cp++;
            continue;
        }
        /* A word starts at i: collect the word ends within max_len bytes. */
        size_t nends = 0, j = i;
        int in = 1;
        j += k;
        while (j <= len && j - i <= g->max_len) {
            int w2 = 0;
            size_t k2 = j < len ? next_char(text, len, j, &w2) : 0;
            if (in && !w2)
                ends[nends++] = j;
            in = w2;
            if (j == len)
                break;
            j += k2;
        }
        size_t match = 0;
        for (size_t e = nends; e-- > 0 && !match;)
            if (nlpd_gazetteer_contains(g, text + i, ends[e] - i))
                match = ends[e];
        if (match) {
            int32_t c1 = cp + cps(text, i, match);
            int rc = fn(ctx, i, match, cp, c1);
            if (rc)
                return rc;
            cp = c1;
            i = match;
            prev_word = 1; /* a match ends a word: the next char is not a word char */
            continue;
        }
        prev_word = 1;
        i += k;
        cp++;
    }
    return 0;
}
