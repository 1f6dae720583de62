/* Running the stage chain on one micro-batch: retries and splits, cache lookups, primary/canary routing and
 * shadow comparison. */
#include "pipeline.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache.h"
#include "log.h"
#include "metrics.h"
#include "model_mgmt.h"
#include "pipeline_internal.h"
#include "result_codec.h"
#include "results.h"
#include "when.h"

static void mark_fatal(struct nlpd_pipeline *p)
{
    pthread_mutex_lock(&p->lock);
    p->fatal = 1;
    pthread_mutex_unlock(&p->lock);
}

/* Runs one stage on recs[0..n), retrying once and then splitting on NLPD_STAGE_RETRY. */
static void run_stage(struct worker *w, struct stage_inst *s, void *tstate, struct nlpd_record **recs, size_t n,
                      int attempt)
{
    struct nlpd_batch b = {.n = n, .recs = recs};
    struct nlpd_error err = {0};
    enum nlpd_stage_status st = s->plugin->process(&s->inst, s->ctx, tstate, &b, &err);
    w->padded_tokens += b.padded_tokens;
    if (st == NLPD_STAGE_OK)
        return;
    const char *why = err.message[0] ? err.message : nlpd_strerror(err.code);
    if (st == NLPD_STAGE_RETRY) {
        if (attempt == 0) {
            run_stage(w, s, tstate, recs, n, 1);
        } else if (n > 1) {
            run_stage(w, s, tstate, recs, n / 2, 0);
            run_stage(w, s, tstate, recs + n / 2, n - n / 2, 0);
        } else {
            nlpd_record_fail(recs[0], s->name, "stage failed after retries: %s", why);
        }
        return;
    }
    nlpd_log(NLPD_LOG_ERR, s->name, "fatal stage error: %s", why);
    mark_fatal(w->p);
    for (size_t i = 0; i < n; i++)
        nlpd_record_fail(recs[i], s->name, "stage failed: %s", why);
}

static int grow_cache_arrays(struct worker *w, size_t n)
{
    if (n <= w->cache_cap)
        return 0;
    free(w->keys), free(w->key_ptrs), free(w->vals), free(w->leader), free(w->to_run);
    w->keys = malloc(n * sizeof *w->keys);
    w->key_ptrs = malloc(n * sizeof *w->key_ptrs);
    w->vals = malloc(n * sizeof *w->vals);
    w->leader = malloc(n * sizeof *w->leader);
    w->to_run = malloc(n * sizeof *w->to_run);
    w->cache_cap = w->keys && w->key_ptrs && w->vals && w->leader && w->to_run ? n : 0;
    return w->cache_cap ? 0 : -1;
}

/* key = stage name ":" sha256(key material, lang.code for stages after langid, text) */
static void cache_key(EVP_MD_CTX *md, const struct stage_inst *s, const struct nlpd_record *r, char out[80])
{
    unsigned char d[32];
    unsigned len = 0;
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    EVP_DigestUpdate(md, s->key_material, strlen(s->key_material) + 1);
    const char *lang = r->lang.set && !(s->plugin->results & NLPD_RESULT_LANG) ? r->lang.code : "";
    EVP_DigestUpdate(md, lang, strlen(lang) + 1);
    EVP_DigestUpdate(md, r->text, r->text_len);
    EVP_DigestFinal_ex(md, d, &len);
    int n = snprintf(out, 80, "%.12s:", s->plugin->name);
    for (int i = 0; i < 32 && n + 2 < 80; i++, n += 2)
        snprintf(out + n, 3, "%02x", d[i]);
}

/* A cacheable stage: look every record up, run the stage on the distinct misses, store what it computed,
 * and give records with the same key as a computed one its result. */
static void run_cached(struct worker *w, struct stage_inst *s, void *tstate, struct nlpd_record **recs, size_t n)
{
    unsigned mask = s->plugin->results;
    EVP_MD_CTX *md = grow_cache_arrays(w, n) < 0 ? NULL : EVP_MD_CTX_new(); /* one context per batch */
    if (!md) {
        run_stage(w, s, tstate, recs, n, 0);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        cache_key(md, s, recs[i], w->keys[i]);
        w->key_ptrs[i] = w->keys[i];
    }
    EVP_MD_CTX_free(md);
    nlpd_cache_mget(w->p->cache, w->key_ptrs, n, w->vals);
    size_t nrun = 0, hits = 0;
    for (size_t i = 0; i < n; i++) {
        w->leader[i] = -1;
        if (w->vals[i].data && nlpd_results_decode(recs[i], mask, w->vals[i].data, w->vals[i].len) == 0) {
            w->leader[i] = -2; /* served from the cache */
            hits++;
        } else {
            if (w->vals[i].data) /* computed again below, and stored over it */
                nlpd_cache_reject(w->p->cache, NLPD_CACHE_REJECT_INVALID, w->keys[i]);
            for (size_t j = 0; j < i; j++) /* duplicates inside the batch are computed once */
                if (w->leader[j] == -1 && strcmp(w->keys[j], w->keys[i]) == 0) {
                    w->leader[i] = (long)j;
                    break;
                }
            if (w->leader[i] == -1)
                w->to_run[nrun++] = recs[i];
        }
        free(w->vals[i].data);
        w->vals[i].data = NULL;
    }
    __atomic_add_fetch(&s->hits, hits, __ATOMIC_RELAXED);
    __atomic_add_fetch(&s->misses, n - hits, __ATOMIC_RELAXED);
    if (nrun)
        run_stage(w, s, tstate, w->to_run, nrun, 0);

    /* Store the computed results; hand them to the duplicates. */
    size_t nset = 0;
    struct nlpd_buf *bufs = nrun ? calloc(n, sizeof *bufs) : NULL;
    for (size_t i = 0; bufs && i < n; i++) {
        if (w->leader[i] != -1 || recs[i]->error)
            continue;
        nlpd_results_encode(recs[i], mask, &bufs[i]);
        if (bufs[i].oom)
            continue;
        w->key_ptrs[nset] = w->keys[i];
        w->vals[nset].data = (unsigned char *)bufs[i].data;
        w->vals[nset].len = bufs[i].len;
        nset++;
    }
    for (size_t i = 0; i < n; i++) {
        long j = w->leader[i];
        if (j < 0)
            continue;
        if (recs[j]->error)
            nlpd_record_fail(recs[i], s->name, "%s", recs[j]->error);
        else if (!bufs || !bufs[j].data ||
                 nlpd_results_decode(recs[i], mask, (unsigned char *)bufs[j].data, bufs[j].len) < 0)
            nlpd_record_fail(recs[i], s->name, "out of memory");
    }
    nlpd_cache_mset(w->p->cache, w->key_ptrs, w->vals, nset);
    for (size_t i = 0; bufs && i < n; i++)
        nlpd_buf_free(&bufs[i]);
    free(bufs);
    for (size_t i = 0; i < nset; i++)
        w->vals[i].data = NULL;
}

/* Whether a stage that declares result fields wrote one for this record (a stage may leave a record alone,
 * e.g. translate for a record already in the target language): only then do meta.models name its model. */
static int wrote_result(unsigned results, const struct nlpd_record *r)
{
    if (!results)
        return 1;
    return nlpd_results_any_set(results, r);
}

static void run_one(struct worker *w, struct stage_inst *s, void *tstate, struct nlpd_record **recs, size_t n)
{
    if (s->key_material && nlpd_cache_enabled(w->p->cache))
        run_cached(w, s, tstate, recs, n);
    else
        run_stage(w, s, tstate, recs, n, 0);
}

static int grow_mm_arrays(struct worker *w, size_t n)
{
    if (n <= w->mm_cap)
        return 0;
    free(w->canary_list), free(w->shadow_recs), free(w->shadow_ptrs), free(w->shadow_of);
    w->canary_list = malloc(n * sizeof *w->canary_list);
    w->shadow_recs = malloc(n * sizeof *w->shadow_recs);
    w->shadow_ptrs = malloc(n * sizeof *w->shadow_ptrs);
    w->shadow_of = malloc(n * sizeof *w->shadow_of);
    w->mm_cap = w->canary_list && w->shadow_recs && w->shadow_ptrs && w->shadow_of ? n : 0;
    return w->mm_cap ? 0 : -1;
}

/* Stage si on recs[0..n): with a canary, each record goes to the canary or the primary by the stable hash of its
 * canary key; recs is reordered (primary's first). */
static void run_models(struct worker *w, size_t si, struct nlpd_record **recs, size_t n)
{
    struct stage_inst *s = &w->p->stages[si];
    if (!s->canary) {
        run_one(w, s, w->tstate[si], recs, n);
        return;
    }
    if (grow_mm_arrays(w, n) < 0) {
        for (size_t i = 0; i < n; i++)
            nlpd_record_fail(recs[i], s->name, "out of memory");
        return;
    }
    size_t np = 0, nc = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const char *k = nlpd_mm_key_of(recs[i], s->canary_key, &len);
        if (nlpd_mm_in_fraction(nlpd_mm_hash(s->name, k, len), s->canary_fraction))
            w->canary_list[nc++] = recs[i];
        else
            recs[np++] = recs[i];
    }
    memcpy(recs + np, w->canary_list, nc * sizeof *recs);
    if (np)
        run_one(w, s, w->tstate[si], recs, np);
    if (nc)
        run_one(w, s->canary, w->vtstate[2 * si + 1], recs + np, nc);
    for (size_t i = np; i < n && si < 32; i++)
        recs[i]->canary_run |= 1u << si;
    __atomic_add_fetch(&s->mm->served_primary, np, __ATOMIC_RELAXED);
    __atomic_add_fetch(&s->mm->served_canary, nc, __ATOMIC_RELAXED);
}

/* The shadow of stage si: on the sampled records the primary served, into scratch records that hold the input
 * the stage read (text, lang), never into the records themselves; then compared with the primary's results.
 * While the input holds back for the pipeline the shadow is skipped (and counted): it is the first work to go. */
static void run_shadow(struct worker *w, size_t si, struct nlpd_record **recs, size_t n)
{
    struct stage_inst *s = &w->p->stages[si];
    unsigned mask = s->plugin->results;
    char salt[160];
    snprintf(salt, sizeof salt, "%s.shadow", s->name);
    if (grow_mm_arrays(w, n) < 0)
        return;
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        struct nlpd_record *r = recs[i];
        if (r->error || (si < 32 && (r->canary_run & (1u << si))) || !wrote_result(mask, r))
            continue;
        if (s->shadow_sample < 1 && !nlpd_mm_in_fraction(nlpd_mm_hash(salt, r->text, r->text_len), s->shadow_sample))
            continue;
        w->shadow_of[m++] = r;
    }
    if (!m)
        return;
    if (__atomic_load_n(&w->p->pressure, __ATOMIC_RELAXED)) {
        __atomic_add_fetch(&s->mm->shadow_skipped, m, __ATOMIC_RELAXED);
        return;
    }
    for (size_t i = 0; i < m; i++) {
        const struct nlpd_record *r = w->shadow_of[i];
        struct nlpd_record *t = &w->shadow_recs[i];
        memset(t, 0, sizeof *t);
        t->text = r->text, t->text_len = r->text_len;
        if (mask & NLPD_RESULT_TRANSLATION) /* the primary's translation now feeds r->text: read what it read */
            t->text = nlpd_record_input_text(r, &t->text_len);
        t->lang = r->lang;
        t->id = r->id, t->key = r->key, t->key_len = r->key_len, t->topic = r->topic;
        if (mask & NLPD_RESULT_LANG) /* langid's own result: the shadow writes it afresh */
            memset(&t->lang, 0, sizeof t->lang);
        w->shadow_ptrs[i] = t;
    }
    double t0 = nlpd_now();
    struct nlpd_batch b = {.n = m, .recs = w->shadow_ptrs};
    struct nlpd_error err = {0};
    enum nlpd_stage_status st =
        s->shadow->plugin->process(&s->shadow->inst, s->shadow->ctx, w->vtstate[2 * si], &b, &err);
    nlpd_histogram_observe(&s->mm->shadow_ms, (nlpd_now() - t0) * 1e3);
    if (st != NLPD_STAGE_OK) /* a shadow never fails the pipeline */
        nlpd_log(NLPD_LOG_WARNING, s->shadow->name, "shadow batch failed: %s",
                 err.message[0] ? err.message : nlpd_strerror(err.code));
    for (size_t i = 0; i < m; i++) {
        struct nlpd_record *t = &w->shadow_recs[i];
        if (st != NLPD_STAGE_OK || t->error)
            __atomic_add_fetch(&s->mm->shadow_failed, 1, __ATOMIC_RELAXED);
        else
            nlpd_mm_compare(s->mm, mask, w->shadow_of[i], t);
        nlpd_record_free_results(t);
        if (t->error && strcmp(t->error, "out of memory") != 0)
            free(t->error);
    }
}

void nlpd_pipeline_run_chain(struct worker *w, struct nlpd_batch *batch)
{
    struct nlpd_pipeline *p = w->p;
    if (w->scratch_cap < batch->n) {
        free(w->scratch);
        w->scratch = malloc(batch->n * sizeof *w->scratch);
        w->scratch_cap = w->scratch ? batch->n : 0;
        if (!w->scratch) {
            for (size_t i = 0; i < batch->n; i++)
                nlpd_record_fail(batch->recs[i], "pipeline", "out of memory");
            return;
        }
    }
    nlpd_histogram_observe(&p->batch_records, (double)batch->n);
    /* before the stages: a slow model, whose batch meets the input as the wait left it (e.g. paused) */
    if (p->test_delay_ms > 0) {
        struct timespec ts = {p->test_delay_ms / 1000, p->test_delay_ms % 1000 * 1000000L};
        nanosleep(&ts, NULL);
    }
    for (size_t si = 0; si < p->nstages; si++) {
        size_t n = 0;
        for (size_t i = 0; i < batch->n; i++) {
            struct nlpd_record *r = batch->recs[i];
            if (!r->error && (!p->stages[si].when || nlpd_when_eval(p->stages[si].when, r)))
                w->scratch[n++] = r;
        }
        double t0 = n ? nlpd_now() : 0;
        w->padded_tokens = 0;
        if (n)
            run_models(w, si, w->scratch, n);
        if (n)
            nlpd_histogram_observe(&p->stages[si].compute_ms, (nlpd_now() - t0) * 1e3);
        if (w->padded_tokens)
            nlpd_histogram_observe(&p->stages[si].padded_tokens, (double)w->padded_tokens);
        for (size_t i = 0; i < n; i++)
            if (!w->scratch[i]->error && wrote_result(p->stages[si].plugin->results, w->scratch[i])) {
                if (si < 32)
                    w->scratch[i]->stages_run |= 1u << si;
                if (p->stages[si].plugin->results)
                    nlpd_mm_observe(p->stages[si].mm, p->stages[si].plugin->results, w->scratch[i]);
            }
        if (n && p->stages[si].shadow)
            run_shadow(w, si, w->scratch, n);
    }
}
