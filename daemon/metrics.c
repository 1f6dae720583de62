/* Histograms and exposition helpers (see metrics.h). */
#include "metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const double ms_bounds[] = {0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000};
static const double size_bounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384};
static const double token_bounds[] = {16,   32,    64,    128,   256,    512,    1024,   2048,   4096,
                                      8192, 16384, 32768, 65536, 131072, 262144, 524288, 1048576};

static void init(struct nlpd_histogram *h, const double *b, size_t n)
{
    memset(h, 0, sizeof *h);
    h->nbounds = n;
    memcpy(h->bounds, b, n * sizeof *b);
}

void nlpd_histogram_init_ms(struct nlpd_histogram *h)
{
    init(h, ms_bounds, sizeof ms_bounds / sizeof ms_bounds[0]);
}

void nlpd_histogram_init_size(struct nlpd_histogram *h)
{
    init(h, size_bounds, sizeof size_bounds / sizeof size_bounds[0]);
}

void nlpd_histogram_init_tokens(struct nlpd_histogram *h)
{
    init(h, token_bounds, sizeof token_bounds / sizeof token_bounds[0]);
}

void nlpd_histogram_observe(struct nlpd_histogram *h, double v)
{
    size_t i = 0;
    while (i < h->nbounds && v > h->bounds[i])
        i++;
    __atomic_add_fetch(&h->counts[i], 1, __ATOMIC_RELAXED);
    double old, want;
    __atomic_load(&h->sum, &old, __ATOMIC_RELAXED);
    do {
        want = old + v;
    } while (!__atomic_compare_exchange(&h->sum, &old, &want, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    __atomic_add_fetch(&h->count, 1, __ATOMIC_RELEASE);
}

void nlpd_metric_head(struct nlpd_buf *out, const char *name, const char *type, const char *help)
{
    nlpd_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void nlpd_histogram_write(const struct nlpd_histogram *h, const char *name, const char *labels, double scale,
                          struct nlpd_buf *out)
{
    const char *sep = labels && *labels ? "," : "";
    labels = labels ? labels : "";
    uint64_t cum = 0;
    for (size_t i = 0; i <= h->nbounds; i++) {
        cum += __atomic_load_n(&h->counts[i], __ATOMIC_RELAXED);
        if (i < h->nbounds)
            nlpd_buf_printf(out, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep, h->bounds[i] * scale,
                            (unsigned long long)cum);
        else
            nlpd_buf_printf(out, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep, (unsigned long long)cum);
    }
    double sum;
    __atomic_load(&h->sum, &sum, __ATOMIC_RELAXED);
    sum *= scale;
    if (*labels) {
        nlpd_buf_printf(out, "%s_sum{%s} %.6f\n%s_count{%s} %llu\n", name, labels, sum, name, labels,
                        (unsigned long long)cum);
    } else {
        nlpd_buf_printf(out, "%s_sum %.6f\n%s_count %llu\n", name, sum, name, (unsigned long long)cum);
    }
}

#define SAMPLE_CAP (1u << 20)

void nlpd_latency_add(struct nlpd_latency_sample *s, double ms)
{
    s->seen++;
    if (ms > s->max)
        s->max = ms;
    if (s->n == s->cap && s->cap < SAMPLE_CAP) {
        size_t cap = s->cap ? s->cap * 2 : 4096;
        double *v = realloc(s->v, cap * sizeof *v);
        if (v)
            s->v = v, s->cap = cap;
    }
    if (s->n < s->cap) {
        s->v[s->n++] = ms;
    } else if (s->cap) { /* full: keep each value seen with probability cap/seen */
        uint64_t j = ((uint64_t)rand() << 31 ^ (uint64_t)rand()) % s->seen;
        if (j < s->cap)
            s->v[j] = ms;
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double nlpd_latency_percentile(struct nlpd_latency_sample *s, double p)
{
    if (!s->n)
        return 0.0;
    qsort(s->v, s->n, sizeof *s->v, cmp_double);
    return s->v[(size_t)((double)(s->n - 1) * p)];
}

void nlpd_latency_free(struct nlpd_latency_sample *s)
{
    free(s->v);
    memset(s, 0, sizeof *s);
}

/* Drops a UTF-8 sequence cut short at the end of s (a label must stay valid UTF-8). */
static void trim_utf8(char *s)
{
    size_t n = strlen(s), i = n;
    while (i > 0 && ((unsigned char)s[i - 1] & 0xC0) == 0x80)
        i--;
    if (i > 0 && (unsigned char)s[i - 1] >= 0xC0) {
        unsigned char c = (unsigned char)s[i - 1];
        size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
        if (n - (i - 1) < need)
            s[i - 1] = '\0';
    }
}

const char *nlpd_metric_label(char *dst, size_t cap, const char *value)
{
    size_t o = 0;
    for (const char *p = value ? value : ""; *p; p++) {
        char esc = *p == '\\' ? '\\' : *p == '"' ? '"' : *p == '\n' ? 'n' : 0;
        if (o + (esc ? 2 : 1) >= cap)
            break; /* cut whole characters' escapes, never half of one */
        if (esc) {
            dst[o++] = '\\';
            dst[o++] = esc;
        } else {
            dst[o++] = *p;
        }
    }
    if (!cap)
        return dst;
    dst[o < cap ? o : cap - 1] = '\0';
    trim_utf8(dst);
    return dst;
}

void nlpd_label_counts_add(struct nlpd_label_counts *c, const char *label)
{
    size_t cap = sizeof c->c / sizeof c->c[0], i;
    label = label ? label : "";
    for (i = 0; i < c->n && strcmp(c->c[i].label, label) != 0; i++)
        ;
    if (i == c->n && c->n >= cap - 1) { /* the last slot is "other", whatever label came first */
        label = "other";
        for (i = 0; i < c->n && strcmp(c->c[i].label, label) != 0; i++)
            ;
    }
    if (i == c->n) {
        snprintf(c->c[i].label, sizeof c->c[i].label, "%s", label);
        trim_utf8(c->c[i].label);
        c->n++;
    }
    c->c[i].n++;
}

void nlpd_label_counts_write(const struct nlpd_label_counts *c, const char *name, const char *label_name,
                             struct nlpd_buf *out)
{
    char esc[2 * sizeof c->c[0].label];
    for (size_t i = 0; i < c->n; i++)
        nlpd_buf_printf(out, "%s{%s=\"%s\"} %llu\n", name, label_name,
                        nlpd_metric_label(esc, sizeof esc, c->c[i].label), (unsigned long long)c->c[i].n);
}
