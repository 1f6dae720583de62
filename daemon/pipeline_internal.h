/* What pipeline.c, pipeline_build.c and pipeline_stages.c share: the pipeline's state and the functions they call
 * across. Not for the rest of nlpd: pipeline.h is the pipeline's interface. */
#ifndef NLPD_PIPELINE_INTERNAL_H
#define NLPD_PIPELINE_INTERNAL_H

#include <pthread.h>

#include "metrics.h"
#include "model_mgmt.h"
#include "pipeline.h"

struct stage_inst {
    const struct nlpd_stage_plugin *plugin;
    struct nlpd_stage_instance inst; /* what init() and process() get: name, type, index, token budget */
    void *ctx;
    int initialised;
    struct nlpd_when *when;
    char *name;
    char *model_id;
    char *model_path;                 /* the file or folder model_id digests */
    char *key_material;               /* stage name, model digest and output-changing options: the cache key's prefix */
    uint64_t hits, misses;            /* cache counters (atomic) */
    struct nlpd_histogram compute_ms; /* time of the stage on one batch, cache lookups included */
    struct nlpd_histogram padded_tokens; /* per micro-batch, as the stage reports it (transformer stages) */
    /* model management: the shadow and canary instances (same plugin, their own model and context) */
    struct stage_inst *shadow, *canary;
    double shadow_sample, canary_fraction;
    enum nlpd_mm_key canary_key;
    struct nlpd_mm_stage *mm; /* drift, agreement and canary counters (primary instances only) */
};

struct worker {
    struct nlpd_pipeline *p;
    pthread_t thread;
    void **tstate; /* one per stage */
    struct nlpd_record **scratch;
    size_t scratch_cap;
    /* cache lookups of one stage run: per eligible record */
    char (*keys)[80];
    const char **key_ptrs;
    struct nlpd_cache_value *vals;
    long *leader; /* -1: computed here; else the index of the record with the same key */
    struct nlpd_record **to_run;
    size_t cache_cap;
    size_t padded_tokens; /* reported by the current stage over its process() calls on one micro-batch */
    void **vtstate;       /* per stage: [2i] its shadow's thread state, [2i + 1] its canary's */
    struct nlpd_record **canary_list;
    struct nlpd_record *shadow_recs; /* scratch records the shadow writes into */
    struct nlpd_record **shadow_ptrs, **shadow_of;
    size_t mm_cap;
};

struct nlpd_pipeline {
    struct nlpd_cache *cache;
    struct nlpd_histogram batch_records;
    size_t nstages;
    struct stage_inst *stages;
    struct nlpd_model_ref *models;
    size_t nmodels;

    pthread_mutex_t lock;
    pthread_cond_t changed;
    struct nlpd_job *head, *tail;
    size_t queued, queue_cap;
    void (*on_space)(void *user); /* see nlpd_pipeline_on_space() */
    void *on_space_user;
    int stopping, fatal, nworkers;
    int pressure;       /* set by the input while it holds back for the pipeline: shadows are skipped (atomic) */
    long test_delay_ms; /* NLPD_TEST_BATCH_DELAY_MS: a slow stage on demand, for flow-control tests */
    struct worker *workers;
    struct worker inline_worker;
};

/* pipeline_build.c: builds the stage at entry (index in the pipeline list) into p->stages; returns how many errors
 * it added to diag (0: built). */
int nlpd_pipeline_build_stage(struct nlpd_pipeline *p, const struct nlpd_config *cfg, const config_setting_t *entry,
                              size_t index, struct nlpd_diag *diag);
/* pipeline_build.c: frees what s holds (its shadow and canary too), not s itself. */
void nlpd_stage_inst_free(struct stage_inst *s);
/* pipeline_stages.c: runs the stage chain on batch with w's scratch space and thread states. */
void nlpd_pipeline_run_chain(struct worker *w, struct nlpd_batch *batch);

#endif
