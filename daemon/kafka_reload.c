/* SIGHUP reload (see kafka.h): the thread that loads the new configuration and builds its pipeline beside the
 * running one, the swap once the old pipeline has handed back its batches, and the generations (struct kgen) that
 * live until their last record is delivered. */
#include <libconfig.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "avro_codec.h"
#include "kafka_internal.h"
#include "log.h"
#include "notify.h"

const char *const nlpd_kd_reload_result_names[] = {"applied", "invalid", "restart_required", "failed"};

/* ---- generations ---- */

void nlpd_kd_gen_free(struct kgen *g)
{
    if (!g)
        return;
    nlpd_avro_out_free(g->avro_out);
    nlpd_avro_in_free(g->avro_in);
    if (g->owned) {
        nlpd_pipeline_free(g->p);
        nlpd_config_free(g->cfg);
    } else if (g->p) {
        nlpd_pipeline_stop(g->p); /* its creator frees it */
    }
    free(g);
}

/* A retired generation goes when its last record does. */
void nlpd_kd_gen_release(struct nlpd_daemon *d, struct kgen *g)
{
    if (!g || --g->items > 0 || g == d->gen)
        return;
    for (struct kgen **pp = &d->retired; *pp; pp = &(*pp)->next)
        if (*pp == g) {
            *pp = g->next;
            nlpd_log(NLPD_LOG_INFO, "main", "reload: the replaced pipeline's last record is delivered: freed");
            nlpd_kd_gen_free(g);
            return;
        }
}

/* ---- reload (SIGHUP) ---- */

/* The reload thread: the slow part (parsing, checks, models, worker threads) runs beside the running pipeline.
 * It only reads d->cfg, which changes only at a swap, after this thread is joined. */
static void *reload_thread(void *arg)
{
    struct nlpd_daemon *d = arg;
    const char *path = d->cfg->path;
    struct nlpd_diag *diag = &d->rl.diag;
    enum reload_result r = RELOAD_INVALID;
    struct nlpd_error err = {0};
    struct kgen *g = calloc(1, sizeof *g);
    if (!g) {
        r = RELOAD_FAILED;
        snprintf(d->rl.why, sizeof d->rl.why, "out of memory");
        goto done;
    }
    g->owned = 1;
    if (!(g->cfg = nlpd_config_load(path, diag)))
        goto done;
    if (nlpd_config_restart_changes(d->cfg, g->cfg, d->rl.why, sizeof d->rl.why)) {
        r = RELOAD_RESTART_REQUIRED; /* decided before loading any model */
        goto done;
    }
    if (nlpd_kafka_check(g->cfg, diag) > 0 || !(g->p = nlpd_pipeline_create(g->cfg, diag))) {
        if (!diag->n) {
            r = RELOAD_FAILED;
            snprintf(d->rl.why, sizeof d->rl.why, "cannot build the pipeline (out of memory)");
        }
        goto done;
    }
    int32_t schema_id;
    if (strcmp(g->cfg->output.format, "avro") == 0 &&
        (nlpd_sr_output_id(&g->cfg->output.registry, g->cfg->output.schema, g->cfg->kafka.output_topic,
                           (int32_t)g->cfg->output.confluent_schema_id, &schema_id, &err) < 0 ||
         !(g->avro_out = nlpd_avro_out_new(g->cfg->output.schema, schema_id, &err)))) {
        nlpd_diag_add(diag, path, 0, "output: %s", err.message);
        goto done;
    }
    if (strcmp(g->cfg->input.format, "avro") == 0 && !(g->avro_in = nlpd_avro_in_new(&g->cfg->input, &err))) {
        nlpd_diag_add(diag, path, 0, "input: %s", err.message);
        goto done;
    }
    if (nlpd_pipeline_start(g->p, (int)g->cfg->kernels.threads, &err) < 0) {
        r = RELOAD_FAILED;
        snprintf(d->rl.why, sizeof d->rl.why, "%s", err.message);
        goto done;
    }
    g->models = nlpd_pipeline_models(g->p, &g->nmodels);
    r = RELOAD_APPLIED; /* ready to be applied */
done:
    if (r != RELOAD_APPLIED) {
        nlpd_kd_gen_free(g);
        g = NULL;
    }
    d->rl.next = g;
    d->rl.result = r;
    pthread_mutex_lock(&d->lock);
    d->rl.finished = 1;
    pthread_mutex_unlock(&d->lock);
    nlpd_kd_wake(d);
    return NULL;
}

/* The end of a reload, whatever its result: count it, tell systemd, start the next one if asked meanwhile. */
static void reload_finish(struct nlpd_daemon *d, enum reload_result r)
{
    d->rl.count[r]++;
    d->rl.last_ok = r == RELOAD_APPLIED;
    if (r == RELOAD_APPLIED)
        d->rl.last_ok_wall = (double)wall_ms() / 1e3;
    if (d->draining)
        return;
    nlpd_notify("READY=1\nSTATUS=running; last reload: %s", nlpd_kd_reload_result_names[r]);
    if (d->rl.again) {
        d->rl.again = 0;
        nlpd_kd_start_reload(d);
    }
}

/* Swaps once the old pipeline has handed back every batch: from then on new batches go to the new pipeline. The
 * old generation stays until its last record is delivered (records point into it), then goes. */
void nlpd_kd_try_swap(struct nlpd_daemon *d)
{
    if (!d->rl.swapping || d->batches_out > 0)
        return;
    struct kgen *old = d->gen, *g = d->rl.next;
    nlpd_pipeline_stop(old->p); /* idle: joins its workers */
    nlpd_pipeline_on_space(old->p, NULL, NULL);
    nlpd_pipeline_on_space(g->p, nlpd_kd_on_pipeline_space, d);
    nlpd_pipeline_set_pressure(g->p, d->paused); /* the new pipeline's shadows see a pause already on */
    int kept = nlpd_config_section_equal(old->cfg, g->cfg, "cache");
    if (kept)
        nlpd_pipeline_take_cache(g->p, old->p);
    d->gen = g;
    d->cfg = g->cfg;
    d->p = g->p;
    d->rl.next = NULL;
    d->rl.swapping = 0;
    nlpd_log_setup(nlpd_log_level_parse(g->cfg->log.level),
                   strcmp(g->cfg->log.format, "json") == 0 ? NLPD_LOG_JSON : NLPD_LOG_TEXT);
    if (old->items == 0) {
        nlpd_kd_gen_free(old);
    } else {
        old->next = d->retired;
        d->retired = old;
    }
    nlpd_log(NLPD_LOG_NOTICE, "main", "reload: applied %s: %d stage(s), %zu model(s), %d worker(s)%s", g->cfg->path,
             config_setting_length(g->cfg->pipeline), g->nmodels, nlpd_pipeline_threads(g->p),
             kept ? "; cache kept" : "; new cache");
    reload_finish(d, RELOAD_APPLIED);
    nlpd_kd_update_flow(d);
    nlpd_kd_poll_again(d);
}

/* The loop takes the reload thread's result. */
void nlpd_kd_reload_collect(struct nlpd_daemon *d)
{
    pthread_mutex_lock(&d->lock);
    int finished = d->rl.finished;
    pthread_mutex_unlock(&d->lock);
    if (!d->rl.running || !finished)
        return;
    pthread_join(d->rl.thread, NULL);
    d->rl.running = d->rl.finished = 0;
    const char *path = d->cfg->path;
    for (size_t i = 0; i < d->rl.diag.n; i++)
        nlpd_log(NLPD_LOG_ERR, "main", "reload: %s", d->rl.diag.msgs[i]);
    nlpd_diag_free(&d->rl.diag);
    enum reload_result r = d->rl.result;
    if (r == RELOAD_APPLIED && d->draining) {
        nlpd_log(NLPD_LOG_NOTICE, "main", "reload: abandoned: nlpd is stopping");
        nlpd_kd_gen_free(d->rl.next);
        d->rl.next = NULL;
        return;
    }
    switch (r) {
    case RELOAD_APPLIED:
        d->rl.swapping = 1;
        nlpd_kd_submit_current(d); /* the batch being filled still goes to the old pipeline */
        nlpd_log(NLPD_LOG_INFO, "main",
                 "reload: %s is valid and its models are loaded; switching once the current "
                 "pipeline has finished its %zu batch(es) in flight",
                 path, d->batches_out);
        nlpd_kd_try_swap(d);
        return;
    case RELOAD_INVALID:
        nlpd_log(NLPD_LOG_ERR, "main", "reload: %s is invalid; still running on the current configuration", path);
        break;
    case RELOAD_RESTART_REQUIRED:
        nlpd_log(NLPD_LOG_ERR, "main",
                 "reload: %s changes %s, which nlpd reads only at start: reload refused, "
                 "nothing applied (systemctl restart nlpd applies them); still running on the "
                 "current configuration",
                 path, d->rl.why);
        break;
    default:
        nlpd_log(NLPD_LOG_ERR, "main", "reload: %s: %s; still running on the current configuration", path, d->rl.why);
        break;
    }
    reload_finish(d, r);
}

void nlpd_kd_start_reload(struct nlpd_daemon *d)
{
    if (d->draining) {
        nlpd_log(NLPD_LOG_NOTICE, "main", "reload: ignored, nlpd is stopping");
        return;
    }
    if (d->rl.running || d->rl.swapping) {
        d->rl.again = 1;
        nlpd_log(NLPD_LOG_NOTICE, "main", "reload: one is under way; reloading again when it is done");
        return;
    }
    /* MONOTONIC_USEC: systemd (253+) matches the READY=1 that ends the reload to this message. */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    nlpd_notify("RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading %s",
                (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000ULL, d->cfg->path);
    nlpd_log(NLPD_LOG_NOTICE, "main", "reload: reading %s", d->cfg->path);
    d->rl.finished = 0;
    d->rl.next = NULL;
    d->rl.why[0] = '\0';
    memset(&d->rl.diag, 0, sizeof d->rl.diag);
    int e = pthread_create(&d->rl.thread, NULL, reload_thread, d);
    if (e != 0) {
        nlpd_log(NLPD_LOG_ERR, "main",
                 "reload: cannot start its thread: %s; still running on the current "
                 "configuration",
                 strerror(e));
        reload_finish(d, RELOAD_FAILED);
        return;
    }
    d->rl.running = 1;
}

/* A stop while switching: the new generation is dropped, the old pipeline finishes what it has. */
void nlpd_kd_reload_abandon(struct nlpd_daemon *d)
{
    d->rl.again = 0;
    if (!d->rl.swapping)
        return;
    nlpd_log(NLPD_LOG_NOTICE, "main", "reload: abandoned: nlpd is stopping");
    nlpd_kd_gen_free(d->rl.next);
    d->rl.next = NULL;
    d->rl.swapping = 0;
}
