/* Pipeline construction and worker threads (see pipeline.h). */
#include "pipeline.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cache.h"
#include "conf_map.h"
#include "log.h"
#include "metrics.h"
#include "model_info.h"
#include "model_mgmt.h"
#include "pipeline_internal.h"

struct nlpd_pipeline *nlpd_pipeline_create(const struct nlpd_config *cfg, struct nlpd_diag *diag)
{
    struct nlpd_pipeline *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->changed, NULL);
    nlpd_histogram_init_size(&p->batch_records);
    const char *delay = getenv("NLPD_TEST_BATCH_DELAY_MS");
    if (delay && (p->test_delay_ms = strtol(delay, NULL, 10)) > 0)
        nlpd_log(NLPD_LOG_WARNING, "pipeline",
                 "NLPD_TEST_BATCH_DELAY_MS: every micro-batch takes %ld ms more (tests only)", p->test_delay_ms);
    p->nstages = (size_t)config_setting_length(cfg->pipeline);
    p->stages = calloc(p->nstages, sizeof *p->stages);
    p->models = calloc(p->nstages, sizeof *p->models);
    if (!p->stages || !p->models) {
        nlpd_pipeline_free(p);
        return NULL;
    }
    int errors = 0;
    for (size_t i = 0; i < p->nstages; i++)
        errors += nlpd_pipeline_build_stage(p, cfg, config_setting_get_elem(cfg->pipeline, (unsigned)i), i, diag);
    for (size_t i = 0; i < p->nstages && !errors; i++)
        for (size_t j = 0; j < i; j++)
            if (strcmp(p->stages[i].name, p->stages[j].name) == 0) {
                const config_setting_t *e = config_setting_get_elem(cfg->pipeline, (unsigned)i);
                nlpd_diag_add(diag, nlpd_conf_file(e, cfg->path), config_setting_source_line(e),
                              "two stages are named \"%s\": give one a distinct 'name'", p->stages[i].name);
                errors++;
            }
    if (!errors) {
        struct nlpd_error err = {0};
        p->cache = nlpd_cache_new(&cfg->cache, &err);
        if (!p->cache) {
            const config_setting_t *cs = config_lookup(&cfg->cfg, "cache");
            nlpd_diag_add(diag, nlpd_conf_file(cs, cfg->path), cs ? config_setting_source_line(cs) : 0, "cache: %s",
                          err.message);
            errors++;
        }
    }
    if (errors) {
        nlpd_pipeline_free(p);
        return NULL;
    }
    for (size_t i = 0; i < p->nstages; i++)
        if (p->stages[i].model_id) {
            p->models[p->nmodels].stage_index = (unsigned)i;
            p->models[p->nmodels].stage = p->stages[i].name;
            p->models[p->nmodels].id = p->stages[i].model_id;
            p->models[p->nmodels].canary_id = p->stages[i].canary ? p->stages[i].canary->model_id : NULL;
            p->nmodels++;
        }
    return p;
}

static int worker_init(struct nlpd_pipeline *p, struct worker *w)
{
    w->p = p;
    w->tstate = calloc(p->nstages, sizeof *w->tstate);
    if (!w->tstate)
        return NLPD_ENOMEM;
    for (size_t i = 0; i < p->nstages; i++)
        if (p->stages[i].plugin->thread_init && !(w->tstate[i] = p->stages[i].plugin->thread_init(p->stages[i].ctx)))
            return NLPD_ENOMEM;
    if (!(w->vtstate = calloc(2 * p->nstages, sizeof *w->vtstate)))
        return NLPD_ENOMEM;
    for (size_t i = 0; i < p->nstages; i++)
        for (int k = 0; k < 2; k++) {
            struct stage_inst *v = k ? p->stages[i].canary : p->stages[i].shadow;
            if (v && v->plugin->thread_init && !(w->vtstate[2 * i + k] = v->plugin->thread_init(v->ctx)))
                return NLPD_ENOMEM;
        }
    return 0;
}

static void worker_fini(struct worker *w)
{
    struct nlpd_pipeline *p = w->p;
    if (!p)
        return;
    for (size_t i = 0; w->tstate && i < p->nstages; i++)
        if (w->tstate[i] && p->stages[i].plugin->thread_fini)
            p->stages[i].plugin->thread_fini(p->stages[i].ctx, w->tstate[i]);
    for (size_t i = 0; w->vtstate && i < p->nstages; i++)
        for (int k = 0; k < 2; k++) {
            struct stage_inst *v = k ? p->stages[i].canary : p->stages[i].shadow;
            if (w->vtstate[2 * i + k] && v->plugin->thread_fini)
                v->plugin->thread_fini(v->ctx, w->vtstate[2 * i + k]);
        }
    free(w->vtstate);
    free(w->canary_list), free(w->shadow_recs), free(w->shadow_ptrs), free(w->shadow_of);
    free(w->tstate);
    free(w->scratch);
    free(w->keys), free(w->key_ptrs), free(w->vals), free(w->leader), free(w->to_run);
    memset(w, 0, sizeof *w);
}

struct nlpd_chain {
    struct worker *w;
};

void nlpd_chain_run(struct nlpd_chain *chain, struct nlpd_batch *batch)
{
    nlpd_pipeline_run_chain(chain->w, batch);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct nlpd_pipeline *p = w->p;
    for (;;) {
        pthread_mutex_lock(&p->lock);
        while (!p->head && !p->stopping)
            pthread_cond_wait(&p->changed, &p->lock);
        struct nlpd_job *job = p->head;
        if (!job) {
            pthread_mutex_unlock(&p->lock);
            return NULL;
        }
        p->head = job->next;
        if (!p->head)
            p->tail = NULL;
        int was_full = p->queued-- >= p->queue_cap;
        void (*on_space)(void *) = was_full ? p->on_space : NULL;
        void *space_user = p->on_space_user;
        pthread_cond_broadcast(&p->changed);
        pthread_mutex_unlock(&p->lock);
        if (on_space)
            on_space(space_user);

        /* With a run hook the job belongs to it: it may be freed before the hook returns. */
        if (job->run) {
            struct nlpd_chain chain = {w};
            job->run(job, &chain);
            continue;
        }
        nlpd_pipeline_run_chain(w, &job->batch);
        pthread_mutex_lock(&p->lock);
        job->done = 1;
        pthread_cond_broadcast(&p->changed);
        pthread_mutex_unlock(&p->lock);
    }
}

int nlpd_pipeline_start(struct nlpd_pipeline *p, int threads, struct nlpd_error *err)
{
    if (threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? (int)n : 1;
    }
    p->workers = calloc((size_t)threads, sizeof *p->workers);
    if (!p->workers)
        return nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
    p->queue_cap = (size_t)threads * 2;
    for (int i = 0; i < threads; i++) {
        if (worker_init(p, &p->workers[i]) < 0) {
            worker_fini(&p->workers[i]);
            nlpd_pipeline_stop(p);
            return nlpd_error_set(err, NLPD_ENOMEM, 0, "cannot set up worker %d", i);
        }
        if (pthread_create(&p->workers[i].thread, NULL, worker_main, &p->workers[i]) != 0) {
            worker_fini(&p->workers[i]);
            nlpd_pipeline_stop(p);
            return nlpd_error_set(err, NLPD_ENOMEM, 0, "cannot start worker thread %d", i);
        }
        p->nworkers++;
    }
    return 0;
}

static void enqueue(struct nlpd_pipeline *p, struct nlpd_job *job)
{
    if (p->tail)
        p->tail->next = job;
    else
        p->head = job;
    p->tail = job;
    p->queued++;
    pthread_cond_broadcast(&p->changed);
}

void nlpd_pipeline_submit(struct nlpd_pipeline *p, struct nlpd_job *job)
{
    NLPD_ASSERT(p->nworkers > 0);
    job->done = 0;
    job->next = NULL;
    pthread_mutex_lock(&p->lock);
    while (p->queued >= p->queue_cap)
        pthread_cond_wait(&p->changed, &p->lock);
    enqueue(p, job);
    pthread_mutex_unlock(&p->lock);
}

int nlpd_pipeline_try_submit(struct nlpd_pipeline *p, struct nlpd_job *job)
{
    NLPD_ASSERT(p->nworkers > 0);
    job->done = 0;
    job->next = NULL;
    pthread_mutex_lock(&p->lock);
    int full = p->queued >= p->queue_cap;
    if (!full)
        enqueue(p, job);
    pthread_mutex_unlock(&p->lock);
    return full ? NLPD_EAGAIN : 0;
}

void nlpd_pipeline_on_space(struct nlpd_pipeline *p, void (*fn)(void *user), void *user)
{
    pthread_mutex_lock(&p->lock);
    p->on_space = fn;
    p->on_space_user = user;
    pthread_mutex_unlock(&p->lock);
}

void nlpd_pipeline_queue(struct nlpd_pipeline *p, size_t *queued, size_t *cap)
{
    pthread_mutex_lock(&p->lock);
    *queued = p->queued;
    *cap = p->queue_cap;
    pthread_mutex_unlock(&p->lock);
}

void nlpd_pipeline_wait(struct nlpd_pipeline *p, struct nlpd_job *job)
{
    pthread_mutex_lock(&p->lock);
    while (!job->done)
        pthread_cond_wait(&p->changed, &p->lock);
    pthread_mutex_unlock(&p->lock);
}

void nlpd_pipeline_run_inline(struct nlpd_pipeline *p, struct nlpd_batch *batch)
{
    if (!p->inline_worker.p && worker_init(p, &p->inline_worker) < 0) {
        worker_fini(&p->inline_worker);
        for (size_t i = 0; i < batch->n; i++)
            nlpd_record_fail(batch->recs[i], "pipeline", "out of memory");
        return;
    }
    nlpd_pipeline_run_chain(&p->inline_worker, batch);
}

void nlpd_pipeline_stop(struct nlpd_pipeline *p)
{
    pthread_mutex_lock(&p->lock);
    p->stopping = 1;
    pthread_cond_broadcast(&p->changed);
    pthread_mutex_unlock(&p->lock);
    for (int i = 0; i < p->nworkers; i++) {
        pthread_join(p->workers[i].thread, NULL);
        worker_fini(&p->workers[i]);
    }
    free(p->workers);
    p->workers = NULL;
    p->nworkers = 0;
}

void nlpd_pipeline_free(struct nlpd_pipeline *p)
{
    if (!p)
        return;
    if (p->nworkers)
        nlpd_pipeline_stop(p);
    worker_fini(&p->inline_worker);
    for (size_t i = 0; i < p->nstages; i++)
        nlpd_stage_inst_free(&p->stages[i]);
    free(p->stages);
    free(p->models);
    nlpd_cache_free(p->cache);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->changed);
    free(p);
}

void nlpd_pipeline_set_pressure(struct nlpd_pipeline *p, int on)
{
    __atomic_store_n(&p->pressure, on, __ATOMIC_RELAXED);
}

void nlpd_pipeline_take_cache(struct nlpd_pipeline *to, struct nlpd_pipeline *from)
{
    if (!from->cache)
        return;
    if (to->cache)
        nlpd_cache_swap_key(from->cache, to->cache);
    nlpd_cache_free(to->cache);
    to->cache = from->cache;
    from->cache = NULL;
}

int nlpd_pipeline_failed(struct nlpd_pipeline *p)
{
    pthread_mutex_lock(&p->lock);
    int fatal = p->fatal;
    pthread_mutex_unlock(&p->lock);
    return fatal;
}

size_t nlpd_pipeline_cache_stats(struct nlpd_pipeline *p, struct nlpd_stage_cache_stats *out, size_t cap,
                                 struct nlpd_cache_stats *total)
{
    size_t n = 0;
    for (size_t i = 0; i < p->nstages && n < cap; i++) {
        if (!p->stages[i].key_material)
            continue;
        out[n].stage = p->stages[i].name;
        out[n].hits = __atomic_load_n(&p->stages[i].hits, __ATOMIC_RELAXED);
        out[n].misses = __atomic_load_n(&p->stages[i].misses, __ATOMIC_RELAXED);
        n++;
    }
    if (total)
        nlpd_cache_get_stats(p->cache, total);
    return nlpd_cache_enabled(p->cache) ? n : 0;
}

/* nlpd_model_info: every loaded model, the shadow's and the canary's too, with where it came from. */
static void model_info_metrics(struct nlpd_pipeline *p, struct nlpd_buf *out)
{
    static const char *const roles[] = {"primary", "shadow", "canary"};
    nlpd_metric_head(out, "nlpd_model_info", "gauge",
                     "Model of each stage (role primary, shadow or canary), with its sha256 digest and provenance");
    for (size_t i = 0; i < p->nstages; i++)
        for (int k = 0; k < 3; k++) {
            const struct stage_inst *v = k == 0 ? &p->stages[i] : k == 1 ? p->stages[i].shadow : p->stages[i].canary;
            if (!v || !v->model_id)
                continue;
            nlpd_model_info_line(p->stages[i].name, roles[k], v->model_id, v->model_path, out);
        }
}

size_t nlpd_pipeline_shadow_stats(struct nlpd_pipeline *p, struct nlpd_shadow_stats *out, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < p->nstages && n < cap; i++) {
        const struct nlpd_mm_stage *m = p->stages[i].mm;
        if (!p->stages[i].shadow || !m)
            continue;
        out[n++] = (struct nlpd_shadow_stats){p->stages[i].name, __atomic_load_n(&m->agree, __ATOMIC_RELAXED),
                                              __atomic_load_n(&m->disagree, __ATOMIC_RELAXED),
                                              __atomic_load_n(&m->shadow_skipped, __ATOMIC_RELAXED),
                                              __atomic_load_n(&m->shadow_failed, __ATOMIC_RELAXED)};
    }
    return n;
}

void nlpd_pipeline_models_print(struct nlpd_pipeline *p, FILE *f)
{
    static const char *const roles[] = {"primary", "shadow", "canary"};
    for (size_t i = 0; i < p->nstages; i++)
        for (int k = 0; k < 3; k++) {
            const struct stage_inst *v = k == 0 ? &p->stages[i] : k == 1 ? p->stages[i].shadow : p->stages[i].canary;
            if (v && v->model_id)
                nlpd_model_info_print(f, p->stages[i].name, roles[k], v->model_id, v->model_path);
        }
}

void nlpd_pipeline_metrics(struct nlpd_pipeline *p, struct nlpd_buf *out)
{
    char labels[160], esc[128]; /* esc: a stage name as a label value */
    nlpd_metric_head(out, "nlpd_stage_batch_seconds", "histogram",
                     "Time a stage spends on one micro-batch (cache lookups included), in seconds");
    for (size_t i = 0; i < p->nstages; i++) {
        snprintf(labels, sizeof labels, "stage=\"%s\"", nlpd_metric_label(esc, sizeof esc, p->stages[i].name));
        nlpd_histogram_write(&p->stages[i].compute_ms, "nlpd_stage_batch_seconds", labels, 1e-3, out);
    }
    nlpd_metric_head(out, "nlpd_batch_records", "histogram", "Records per micro-batch");
    nlpd_histogram_write(&p->batch_records, "nlpd_batch_records", "", 1.0, out);
    nlpd_metric_head(out, "nlpd_stage_batch_padded_tokens", "histogram",
                     "Padded tokens a transformer stage ran on per micro-batch (sequences x padded length)");
    for (size_t i = 0; i < p->nstages; i++) {
        if (!__atomic_load_n(&p->stages[i].padded_tokens.count, __ATOMIC_ACQUIRE))
            continue; /* stages without a padded model never report */
        snprintf(labels, sizeof labels, "stage=\"%s\"", nlpd_metric_label(esc, sizeof esc, p->stages[i].name));
        nlpd_histogram_write(&p->stages[i].padded_tokens, "nlpd_stage_batch_padded_tokens", labels, 1.0, out);
    }
    model_info_metrics(p, out);
    struct nlpd_mm_stage *mms[64];
    size_t nmm = 0;
    for (size_t i = 0; i < p->nstages && nmm < 64; i++)
        if (p->stages[i].mm && p->stages[i].plugin->results)
            mms[nmm++] = p->stages[i].mm;
    nlpd_mm_metrics(mms, nmm, out);
    if (!nlpd_cache_enabled(p->cache))
        return;
    nlpd_metric_head(out, "nlpd_cache_hits_total", "counter", "Stage results served from the cache");
    for (size_t i = 0; i < p->nstages; i++)
        if (p->stages[i].key_material)
            nlpd_buf_printf(out, "nlpd_cache_hits_total{stage=\"%s\"} %llu\n",
                            nlpd_metric_label(esc, sizeof esc, p->stages[i].name),
                            (unsigned long long)__atomic_load_n(&p->stages[i].hits, __ATOMIC_RELAXED));
    nlpd_metric_head(out, "nlpd_cache_misses_total", "counter", "Stage results computed (not in the cache)");
    for (size_t i = 0; i < p->nstages; i++)
        if (p->stages[i].key_material)
            nlpd_buf_printf(out, "nlpd_cache_misses_total{stage=\"%s\"} %llu\n",
                            nlpd_metric_label(esc, sizeof esc, p->stages[i].name),
                            (unsigned long long)__atomic_load_n(&p->stages[i].misses, __ATOMIC_RELAXED));
    struct nlpd_cache_stats st;
    nlpd_cache_get_stats(p->cache, &st);
    nlpd_metric_head(out, "nlpd_cache_errors_total", "counter", "Failed cache lookups and stores");
    nlpd_buf_printf(out, "nlpd_cache_errors_total %llu\n", (unsigned long long)st.errors);
    nlpd_metric_head(out, "nlpd_cache_lookup_seconds_total", "counter", "Time spent in cache lookups");
    nlpd_buf_printf(out, "nlpd_cache_lookup_seconds_total %.6f\n", st.lookup_seconds);
    nlpd_metric_head(out, "nlpd_cache_rejected_total", "counter",
                     "Cached values refused (computed again): invalid encoding, or HMAC tag missing or wrong");
    for (size_t i = 0; i < sizeof st.rejected / sizeof st.rejected[0]; i++)
        nlpd_buf_printf(out, "nlpd_cache_rejected_total{reason=\"%s\"} %llu\n", nlpd_cache_reject_names[i],
                        (unsigned long long)st.rejected[i]);
    nlpd_metric_head(out, "nlpd_cache_breaker_open", "gauge", "1 while the Redis circuit breaker is open");
    nlpd_buf_printf(out, "nlpd_cache_breaker_open %d\n", st.breaker_open ? 1 : 0);
}

int nlpd_pipeline_threads(const struct nlpd_pipeline *p)
{
    return p->nworkers;
}

const struct nlpd_model_ref *nlpd_pipeline_models(const struct nlpd_pipeline *p, size_t *n)
{
    *n = p->nmodels;
    return p->models;
}
