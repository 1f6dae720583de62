/* Prometheus metrics of the daemon: histograms with fixed buckets (lock-free updates from any thread), latency
 * samples and exposition helpers. The HTTP server serving /metrics, /live and /ready is http.c. */
#ifndef NLPD_METRICS_H
#define NLPD_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define NLPD_HIST_MAX_BUCKETS 20

struct nlpd_histogram {
    size_t nbounds;
    double bounds[NLPD_HIST_MAX_BUCKETS]; /* upper bounds, increasing; +Inf is implicit */
    uint64_t counts[NLPD_HIST_MAX_BUCKETS + 1];
    uint64_t count;
    double sum; /* guarded by a CAS loop */
};

/* Bucket layouts: milliseconds (0.5 ms .. 30 s), sizes (1 .. 16384) and padded tokens (16 .. 2^20). */
void nlpd_histogram_init_ms(struct nlpd_histogram *h);
void nlpd_histogram_init_size(struct nlpd_histogram *h);
void nlpd_histogram_init_tokens(struct nlpd_histogram *h);
void nlpd_histogram_observe(struct nlpd_histogram *h, double v);
/* Appends the exposition lines of h (name_bucket / name_sum / name_count) with extra labels ("" or
 * `stage="x"`); bounds and sum are multiplied by scale (1e-3 exports milliseconds as seconds). */
void nlpd_histogram_write(const struct nlpd_histogram *h, const char *name, const char *labels, double scale,
                          struct nlpd_buf *out);

/* A bounded uniform sample of latencies (reservoir sampling) for exact-looking percentiles in summaries:
 * memory stays at `cap` values however long the stream. Not thread-safe: one owner thread. */
struct nlpd_latency_sample {
    double *v;
    size_t n, cap;
    uint64_t seen;
    double max;
};

void nlpd_latency_add(struct nlpd_latency_sample *s, double ms);
/* p in [0, 1] over the sample (sorts it); 0 when empty. max is over everything seen. */
double nlpd_latency_percentile(struct nlpd_latency_sample *s, double p);
void nlpd_latency_free(struct nlpd_latency_sample *s);

/* Appends `# HELP` and `# TYPE` lines. */
void nlpd_metric_head(struct nlpd_buf *out, const char *name, const char *type, const char *help);

/* value as a Prometheus label value (\\, \" and \n escaped), cut to fit cap bytes with its NUL. Returns dst. */
const char *nlpd_metric_label(char *dst, size_t cap, const char *value);

/* Counters by a label taken from input (a dead-letter reason, a stage name): bounded to 16 series, the 16th being
 * "other", which counts every label that came after the first 15. Not thread-safe: one owner thread. */
struct nlpd_label_counts {
    struct {
        char label[64]; /* a copy, cut to fit: the source may not outlive the count */
        uint64_t n;
    } c[16];
    size_t n;
};

void nlpd_label_counts_add(struct nlpd_label_counts *c, const char *label);
/* Appends `name{label_name="label"} n` for each label, escaped. */
void nlpd_label_counts_write(const struct nlpd_label_counts *c, const char *name, const char *label_name,
                             struct nlpd_buf *out);

#endif
