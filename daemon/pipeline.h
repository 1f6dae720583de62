/* The pipeline: stage instances built from the config (validated against each stage's conf_map,
 * models loaded and digested) and the worker threads that run the stage chain on micro-batches.
 * Per-record failures never fail a batch; a stage's retry status retries, then splits the batch. */
#ifndef NLPD_PIPELINE_H
#define NLPD_PIPELINE_H

#include <stdint.h>
#include <stdio.h>

#include "buf.h"
#include "cache.h"
#include "config.h"
#include "diag.h"
#include "nlpd_stage.h"
#include "record.h"

struct nlpd_pipeline;

/* The stage chain as a worker thread runs it: handed to a job's run hook. */
struct nlpd_chain;
/* Runs the stage chain on batch in the calling worker thread. */
void nlpd_chain_run(struct nlpd_chain *chain, struct nlpd_batch *batch);

struct nlpd_job {
    struct nlpd_batch batch;
    int done; /* set by the worker, under the pipeline's lock, when there is no run hook */
    /* Called by the worker thread that takes the job, in place of the bare stage chain (NULL: the chain on batch,
     * then done): the job's own work around nlpd_chain_run() (the batcher decodes and encodes there). The job then
     * belongs to it: the pipeline does not touch it again and nlpd_pipeline_wait() must not be used. */
    void (*run)(struct nlpd_job *job, struct nlpd_chain *chain);
    struct nlpd_job *next; /* queue link, owned by the pipeline */
};

const struct nlpd_stage_plugin *nlpd_stage_find(const char *name);
/* Adds a stage beside the built-in ones (tests, embedders); call before building pipelines. */
int nlpd_stage_register(const struct nlpd_stage_plugin *plugin);
/* Prints every stage's options (for `nlpd config-doc`). */
void nlpd_stages_doc(FILE *out);

/* Builds the stages of cfg->pipeline; NULL with FILE:LINE messages in diag on any error. */
struct nlpd_pipeline *nlpd_pipeline_create(const struct nlpd_config *cfg, struct nlpd_diag *diag);
/* Starts the workers: threads = 0 means one per online CPU. */
int nlpd_pipeline_start(struct nlpd_pipeline *p, int threads, struct nlpd_error *err);
/* Queues a job; blocks while the queue is full (backpressure). Not for an event loop: a slow stage would
 * stall it (pipe mode's reader thread uses it). */
void nlpd_pipeline_submit(struct nlpd_pipeline *p, struct nlpd_job *job);
/* Queues a job if the queue has room: 0, or NLPD_EAGAIN when it is full (the job stays the caller's). Never
 * waits on a worker. */
int nlpd_pipeline_try_submit(struct nlpd_pipeline *p, struct nlpd_job *job);
/* fn(user) is called from a worker thread each time it takes a job from a full queue (room for one more
 * nlpd_pipeline_try_submit()); it must be quick and thread-safe (e.g. a write to a wake-up pipe). NULL: none. */
void nlpd_pipeline_on_space(struct nlpd_pipeline *p, void (*fn)(void *user), void *user);
/* Jobs queued and not yet taken by a worker, and the queue's capacity. */
void nlpd_pipeline_queue(struct nlpd_pipeline *p, size_t *queued, size_t *cap);
/* Blocks until the job is done. */
void nlpd_pipeline_wait(struct nlpd_pipeline *p, struct nlpd_job *job);
/* Runs the stage chain on a batch in the calling thread (no workers needed). */
void nlpd_pipeline_run_inline(struct nlpd_pipeline *p, struct nlpd_batch *batch);
/* Stops and joins the workers after the queued jobs are done. */
void nlpd_pipeline_stop(struct nlpd_pipeline *p);
void nlpd_pipeline_free(struct nlpd_pipeline *p);

/* Moves from's cache (its entries and backend counters) into to, freeing to's own: a reload whose cache settings
 * did not change keeps the cache warm (keys hold each stage's model digest and options, so they stay valid). No
 * batch may be running in either pipeline; from then has no cache. */
void nlpd_pipeline_take_cache(struct nlpd_pipeline *to, struct nlpd_pipeline *from);
/* The input says it holds back for the pipeline (on) or no longer (off): while on, shadow models are skipped,
 * and counted in nlpd_shadow_skipped_total. Any thread. */
void nlpd_pipeline_set_pressure(struct nlpd_pipeline *p, int on);
/* Nonzero once a stage reported a fatal error. */
int nlpd_pipeline_failed(struct nlpd_pipeline *p);
int nlpd_pipeline_threads(const struct nlpd_pipeline *p);

struct nlpd_shadow_stats {
    const char *stage;
    uint64_t agree, disagree, skipped, failed;
};
/* Per stage with a shadow (up to cap): its agreement counters. Returns the number filled. */
size_t nlpd_pipeline_shadow_stats(struct nlpd_pipeline *p, struct nlpd_shadow_stats *out, size_t cap);
/* Prints every loaded model (primaries, shadows, canaries) with digest and provenance (`nlpd models`). */
void nlpd_pipeline_models_print(struct nlpd_pipeline *p, FILE *f);
/* Appends the pipeline's Prometheus metrics: per-stage batch time, batch sizes, models, cache. */
void nlpd_pipeline_metrics(struct nlpd_pipeline *p, struct nlpd_buf *out);

struct nlpd_stage_cache_stats {
    const char *stage;
    uint64_t hits, misses;
};
/* Per cacheable stage: cache hits and misses (up to cap stages); total gets the backend's counters.
 * Returns the number of stages filled (0 when the cache is off). */
size_t nlpd_pipeline_cache_stats(struct nlpd_pipeline *p, struct nlpd_stage_cache_stats *out, size_t cap,
                                 struct nlpd_cache_stats *total);
const struct nlpd_model_ref *nlpd_pipeline_models(const struct nlpd_pipeline *p, size_t *n);

/* sha256 of a model as 64 hex digits: a file's content, or a folder's files in name order, recursing into
 * subfolders (relative path, NUL, content each). 0 or a negative NLPD_E* code. */
int nlpd_file_sha256(const char *path, char hex[65], struct nlpd_error *err);

#endif
