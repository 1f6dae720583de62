/* Model management in the stage framework: the stable hash that picks a record's canary or shadow sample, the
 * shadow's agreement with the primary, and a stage's drift signals (labels, confidence, input length), with
 * their Prometheus families. The instances themselves (primary, shadow, canary) are pipeline.c's. */
#ifndef NLPD_MODEL_MGMT_H
#define NLPD_MODEL_MGMT_H

#include <pthread.h>
#include <stdint.h>

#include "buf.h"
#include "metrics.h"
#include "nlpd_stage.h"

#define NLPD_MM_MAX_LABELS 64 /* label series per stage; later labels count as "other" */

/* Which field of a record a canary split hashes. */
enum nlpd_mm_key { NLPD_MM_KEY_ID, NLPD_MM_KEY_KEY, NLPD_MM_KEY_TEXT };

/* Per stage instance: its signals, updated from any worker thread. */
struct nlpd_mm_stage {
    const char *name;      /* the stage instance's name (not owned) */
    double low_confidence; /* results with a confidence under it count as low-confidence (0: none) */
    int has_shadow, has_canary;
    const char *primary_id, *shadow_id, *canary_id; /* model ids (not owned) */

    pthread_mutex_t lock; /* the label table */
    struct {
        char label[NLPD_LABEL_MAX];
        uint64_t n;
    } labels[NLPD_MM_MAX_LABELS];
    size_t nlabels;
    uint64_t other;

    uint64_t results, low_conf; /* atomic */
    struct nlpd_histogram score, input_len;
    /* shadow */
    uint64_t agree, disagree, shadow_skipped, shadow_failed; /* atomic */
    struct nlpd_histogram shadow_diff, shadow_ms;
    /* canary: records each model served */
    uint64_t served_primary, served_canary; /* atomic */
};

void nlpd_mm_stage_init(struct nlpd_mm_stage *m, const char *name);
void nlpd_mm_stage_fini(struct nlpd_mm_stage *m);

/* FNV-1a 64 of salt, a NUL byte, then data, through murmur3's fmix64 finaliser: stable across builds, restarts
 * and machines (no seed, no pointer, byte order independent). */
uint64_t nlpd_mm_hash(const char *salt, const char *data, size_t len);
/* Whether a record whose hash is h falls in the first `fraction` of the hash space: the top 53 bits of h as a
 * number in [0, 1), compared with fraction. */
int nlpd_mm_in_fraction(uint64_t h, double fraction);
/* The field a canary split hashes: id or key when the record has one, else its text. */
const char *nlpd_mm_key_of(const struct nlpd_record *r, enum nlpd_mm_key key, size_t *len);

/* Drift: counts the labels, the confidence and the input length of the results (NLPD_RESULT_* bits) r has. */
void nlpd_mm_observe(struct nlpd_mm_stage *m, unsigned results, const struct nlpd_record *r);
/* Shadow: compares the results of the primary (a) and the shadow (b) and counts agreement; a result set on one
 * side only disagrees. Returns 1 when they agree. */
int nlpd_mm_compare(struct nlpd_mm_stage *m, unsigned results, const struct nlpd_record *a,
                    const struct nlpd_record *b);

/* Appends the families of every stage in ms[0..n): nlpd_stage_results_total, nlpd_stage_score,
 * nlpd_stage_input_bytes, nlpd_stage_low_confidence_total, nlpd_shadow_* and nlpd_canary_records_total. */
void nlpd_mm_metrics(struct nlpd_mm_stage *const *ms, size_t n, struct nlpd_buf *out);

#endif
