/* Model management signals (see model_mgmt.h): stable hashing for canary splits and shadow samples, shadow
 * agreement and per-stage drift counters, and their exposition. */
#include "model_mgmt.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "results.h"

/* Confidence and score differences live in [0, 1]: ten even buckets say more than the size layouts. */
static void init_unit(struct nlpd_histogram *h)
{
    memset(h, 0, sizeof *h);
    h->nbounds = 10;
    for (size_t i = 0; i < h->nbounds; i++)
        h->bounds[i] = (double)(i + 1) / 10;
}

void nlpd_mm_stage_init(struct nlpd_mm_stage *m, const char *name)
{
    memset(m, 0, sizeof *m);
    m->name = name;
    pthread_mutex_init(&m->lock, NULL);
    init_unit(&m->score);
    init_unit(&m->shadow_diff);
    nlpd_histogram_init_size(&m->input_len);
    nlpd_histogram_init_ms(&m->shadow_ms);
}

void nlpd_mm_stage_fini(struct nlpd_mm_stage *m)
{
    pthread_mutex_destroy(&m->lock);
}

uint64_t nlpd_mm_hash(const char *salt, const char *data, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (const unsigned char *p = (const unsigned char *)salt; *p; p++)
        h = (h ^ *p) * 0x100000001b3ULL;
    h = (h ^ 0) * 0x100000001b3ULL;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)data[i]) * 0x100000001b3ULL;
    /* FNV's top bits barely move between keys that differ in their last bytes ("17", "18"): murmur3's
     * finaliser spreads every input bit over all of them */
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

int nlpd_mm_in_fraction(uint64_t h, double fraction)
{
    return (double)(h >> 11) * 0x1p-53 < fraction;
}

const char *nlpd_mm_key_of(const struct nlpd_record *r, enum nlpd_mm_key key, size_t *len)
{
    if (key == NLPD_MM_KEY_ID && r->id) {
        *len = strlen(r->id);
        return r->id;
    }
    if (key == NLPD_MM_KEY_KEY && r->key) {
        *len = r->key_len;
        return r->key;
    }
    return nlpd_record_input_text(r, len);
}

static void count_label(struct nlpd_mm_stage *m, const char *label)
{
    pthread_mutex_lock(&m->lock);
    size_t i = 0;
    while (i < m->nlabels && strcmp(m->labels[i].label, label) != 0)
        i++;
    if (i == m->nlabels && i < NLPD_MM_MAX_LABELS) {
        snprintf(m->labels[i].label, sizeof m->labels[i].label, "%s", label);
        m->nlabels++;
    }
    if (i < m->nlabels)
        m->labels[i].n++;
    else
        m->other++;
    pthread_mutex_unlock(&m->lock);
}

void nlpd_mm_observe(struct nlpd_mm_stage *m, unsigned results, const struct nlpd_record *r)
{
    size_t in_len;
    nlpd_record_input_text(r, &in_len);
    for (size_t t = 0; t < nlpd_result_ntypes; t++) {
        const struct nlpd_result_type *rt = &nlpd_result_types[t];
        if (!(results & rt->bit) || !rt->is_set(r))
            continue;
        const char *labels[32];
        size_t nl = rt->labels(r, labels, 32);
        for (size_t i = 0; i < nl && i < 32; i++)
            count_label(m, labels[i]);
        float score;
        if (rt->confidence(r, &score)) {
            nlpd_histogram_observe(&m->score, score);
            if (score < m->low_confidence)
                __atomic_add_fetch(&m->low_conf, 1, __ATOMIC_RELAXED);
        }
        __atomic_add_fetch(&m->results, 1, __ATOMIC_RELAXED);
        nlpd_histogram_observe(&m->input_len, (double)in_len);
    }
}

int nlpd_mm_compare(struct nlpd_mm_stage *m, unsigned results, const struct nlpd_record *a, const struct nlpd_record *b)
{
    int same = 1;
    double diff = 0;
    int have_diff = 0;
    for (size_t t = 0; t < nlpd_result_ntypes; t++) {
        const struct nlpd_result_type *rt = &nlpd_result_types[t];
        if (!(results & rt->bit))
            continue;
        int sa = rt->is_set(a), sb = rt->is_set(b);
        if (sa != sb) {
            same = 0;
            continue;
        }
        if (!sa)
            continue;
        if (!rt->same(a, b))
            same = 0;
        float ca, cb;
        if (rt->confidence(a, &ca) && rt->confidence(b, &cb)) {
            diff = fmax(diff, fabs((double)ca - (double)cb));
            have_diff = 1;
        }
    }
    __atomic_add_fetch(same ? &m->agree : &m->disagree, 1, __ATOMIC_RELAXED);
    if (have_diff)
        nlpd_histogram_observe(&m->shadow_diff, diff);
    return same;
}

static uint64_t load(const uint64_t *v)
{
    return __atomic_load_n(v, __ATOMIC_RELAXED);
}

void nlpd_mm_metrics(struct nlpd_mm_stage *const *ms, size_t n, struct nlpd_buf *out)
{
    char esc[128], lab[160], labels[320];
    nlpd_metric_head(out, "nlpd_stage_results_total", "counter",
                     "Results per stage and label (langid: the language; moderation: each flagged category; ner: "
                     "each entity group)");
    for (size_t i = 0; i < n; i++) {
        nlpd_metric_label(esc, sizeof esc, ms[i]->name);
        pthread_mutex_lock(&ms[i]->lock);
        for (size_t j = 0; j < ms[i]->nlabels; j++)
            nlpd_buf_printf(out, "nlpd_stage_results_total{stage=\"%s\",label=\"%s\"} %llu\n", esc,
                            nlpd_metric_label(lab, sizeof lab, ms[i]->labels[j].label),
                            (unsigned long long)ms[i]->labels[j].n);
        if (ms[i]->other)
            nlpd_buf_printf(out, "nlpd_stage_results_total{stage=\"%s\",label=\"other\"} %llu\n", esc,
                            (unsigned long long)ms[i]->other);
        pthread_mutex_unlock(&ms[i]->lock);
    }
    nlpd_metric_head(out, "nlpd_stage_score", "histogram",
                     "Confidence of each result (label score; moderation: the highest category score; ner: the "
                     "least confident entity)");
    for (size_t i = 0; i < n; i++) {
        snprintf(labels, sizeof labels, "stage=\"%s\"", nlpd_metric_label(esc, sizeof esc, ms[i]->name));
        nlpd_histogram_write(&ms[i]->score, "nlpd_stage_score", labels, 1.0, out);
    }
    nlpd_metric_head(out, "nlpd_stage_input_bytes", "histogram", "Length in bytes of the input text of each result");
    for (size_t i = 0; i < n; i++) {
        snprintf(labels, sizeof labels, "stage=\"%s\"", nlpd_metric_label(esc, sizeof esc, ms[i]->name));
        nlpd_histogram_write(&ms[i]->input_len, "nlpd_stage_input_bytes", labels, 1.0, out);
    }
    nlpd_metric_head(out, "nlpd_stage_scored_total", "counter", "Results a stage wrote (the low-confidence base)");
    for (size_t i = 0; i < n; i++)
        nlpd_buf_printf(out, "nlpd_stage_scored_total{stage=\"%s\"} %llu\n",
                        nlpd_metric_label(esc, sizeof esc, ms[i]->name), (unsigned long long)load(&ms[i]->results));
    nlpd_metric_head(out, "nlpd_stage_low_confidence_total", "counter",
                     "Results with a confidence under the stage's low_confidence threshold");
    for (size_t i = 0; i < n; i++)
        nlpd_buf_printf(out, "nlpd_stage_low_confidence_total{stage=\"%s\"} %llu\n",
                        nlpd_metric_label(esc, sizeof esc, ms[i]->name), (unsigned long long)load(&ms[i]->low_conf));
    nlpd_metric_head(out, "nlpd_stage_low_confidence_ratio", "gauge",
                     "Share of results under the low_confidence threshold since start");
    for (size_t i = 0; i < n; i++) {
        uint64_t tot = load(&ms[i]->results);
        nlpd_buf_printf(out, "nlpd_stage_low_confidence_ratio{stage=\"%s\"} %.6f\n",
                        nlpd_metric_label(esc, sizeof esc, ms[i]->name),
                        tot ? (double)load(&ms[i]->low_conf) / (double)tot : 0.0);
    }
    int shadows = 0, canaries = 0;
    for (size_t i = 0; i < n; i++)
        shadows += ms[i]->has_shadow, canaries += ms[i]->has_canary;
    if (shadows) {
        nlpd_metric_head(out, "nlpd_shadow_predictions_total", "counter",
                         "Records the shadow model also ran on, by agreement with the primary");
        for (size_t i = 0; i < n; i++) {
            if (!ms[i]->has_shadow)
                continue;
            nlpd_metric_label(esc, sizeof esc, ms[i]->name);
            nlpd_buf_printf(out, "nlpd_shadow_predictions_total{stage=\"%s\",agreement=\"agree\"} %llu\n", esc,
                            (unsigned long long)load(&ms[i]->agree));
            nlpd_buf_printf(out, "nlpd_shadow_predictions_total{stage=\"%s\",agreement=\"disagree\"} %llu\n", esc,
                            (unsigned long long)load(&ms[i]->disagree));
        }
        nlpd_metric_head(out, "nlpd_shadow_score_diff", "histogram",
                         "Absolute difference of the primary's and the shadow's confidence per record");
        for (size_t i = 0; i < n; i++) {
            if (!ms[i]->has_shadow)
                continue;
            snprintf(labels, sizeof labels, "stage=\"%s\"", nlpd_metric_label(esc, sizeof esc, ms[i]->name));
            nlpd_histogram_write(&ms[i]->shadow_diff, "nlpd_shadow_score_diff", labels, 1.0, out);
        }
        nlpd_metric_head(out, "nlpd_shadow_batch_seconds", "histogram", "Time of the shadow model on one micro-batch");
        for (size_t i = 0; i < n; i++) {
            if (!ms[i]->has_shadow)
                continue;
            snprintf(labels, sizeof labels, "stage=\"%s\"", nlpd_metric_label(esc, sizeof esc, ms[i]->name));
            nlpd_histogram_write(&ms[i]->shadow_ms, "nlpd_shadow_batch_seconds", labels, 1e-3, out);
        }
        nlpd_metric_head(out, "nlpd_shadow_skipped_total", "counter",
                         "Sampled records the shadow skipped: backpressure (the pipeline queue was full) or failed");
        for (size_t i = 0; i < n; i++) {
            if (!ms[i]->has_shadow)
                continue;
            nlpd_metric_label(esc, sizeof esc, ms[i]->name);
            nlpd_buf_printf(out, "nlpd_shadow_skipped_total{stage=\"%s\",reason=\"backpressure\"} %llu\n", esc,
                            (unsigned long long)load(&ms[i]->shadow_skipped));
            nlpd_buf_printf(out, "nlpd_shadow_skipped_total{stage=\"%s\",reason=\"failed\"} %llu\n", esc,
                            (unsigned long long)load(&ms[i]->shadow_failed));
        }
    }
    if (canaries) {
        nlpd_metric_head(out, "nlpd_canary_records_total", "counter",
                         "Records each model of a stage with a canary served (role primary or canary)");
        for (size_t i = 0; i < n; i++) {
            if (!ms[i]->has_canary)
                continue;
            nlpd_metric_label(esc, sizeof esc, ms[i]->name);
            nlpd_buf_printf(out, "nlpd_canary_records_total{stage=\"%s\",role=\"primary\",model=\"%s\"} %llu\n", esc,
                            nlpd_metric_label(lab, sizeof lab, ms[i]->primary_id ? ms[i]->primary_id : ""),
                            (unsigned long long)load(&ms[i]->served_primary));
            nlpd_buf_printf(out, "nlpd_canary_records_total{stage=\"%s\",role=\"canary\",model=\"%s\"} %llu\n", esc,
                            nlpd_metric_label(lab, sizeof lab, ms[i]->canary_id ? ms[i]->canary_id : ""),
                            (unsigned long long)load(&ms[i]->served_canary));
        }
    }
}
