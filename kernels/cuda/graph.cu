/* Graph regions of the CUDA backend (nlpd_backend_graph_begin/end): a region's ops, recorded by cu_run, run at
 * graph_end as one cudaGraphLaunch of a graph captured earlier from the same op list, or are captured now. What
 * a capture cannot hold (no free error words, a failing capture) runs op by op, as without a region. The error
 * words a graph uses are cleared by its own memset nodes; their host bookkeeping is re-armed on every launch, so
 * a bad id in a replayed graph is reported by the next download or sync exactly as an eager run's. */
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"

/* NLPD_CUDA_GRAPHS=0: regions run op by op (A/B measurements); read per region so tests can switch it. */
static int graphs_on(void)
{
    const char *v = getenv("NLPD_CUDA_GRAPHS");
    return !(v && !strcmp(v, "0"));
}

static void destroy_exec(void *x)
{
    cudaGraphExecDestroy((cudaGraphExec_t)x);
}

int cu_graph_drop_all(struct cu_ctx *c)
{
    if (!c->graphs.n)
        return 0;
    cudaStreamSynchronize(c->stream); /* a launched graph has finished before its executable goes */
    return cu_gcache_clear(&c->graphs, destroy_exec);
}

static int run_eager(struct cu_ctx *c, const struct cu_grec *r, struct nlpd_error *err)
{
    CU_COUNT(c->impl, n_eager, 1);
    for (int i = 0; i < r->n; i++) {
        int rc = cu_dispatch(c, &r->ops[i], err);
        if (rc)
            return rc;
    }
    return 0;
}

static int free_slots(const struct cu_ctx *c)
{
    int n = 0;
    for (int i = 0; i < CU_ERR_SLOTS; i++)
        n += !c->slots[i].in_use;
    return n;
}

/* Marks g's error words as taken, in g's order, as cu_slot_take did while capturing: 0; 1 when one of them
 * still holds an unreported error (the region then runs op by op); a negative NLPD_E* code. */
static int arm_slots(struct cu_ctx *c, const struct cu_gentry *g, struct nlpd_error *err)
{
    for (int pass = 0;; pass++) {
        int busy = 0;
        for (int i = 0; i < g->n_slots && !busy; i++)
            busy = c->slots[g->slots[i].index].in_use;
        if (!busy)
            break;
        if (pass)
            return 1;
        int rc = cu_slots_reclaim(c, err);
        if (rc)
            return rc;
    }
    for (int i = 0; i < g->n_slots; i++) {
        struct cu_slot *s = &c->slots[g->slots[i].index];
        s->in_use = 1;
        s->op = g->slots[i].op;
        memcpy(s->limit, g->slots[i].limit, sizeof s->limit);
        s->seq = c->next_seq++;
        s->owner = pthread_self();
    }
    return 0;
}

static int launch(struct cu_ctx *c, cudaGraphExec_t x, struct nlpd_error *err)
{
    cudaError_t e = cudaGraphLaunch(x, c->stream);
    return e == cudaSuccess ? 0 : cu_fail(err, e, "launching a CUDA graph");
}

/* Captures the recorded ops into a graph, caches and launches it: 0, 1 when capture failed (nothing ran, the
 * caller runs the ops one by one, which reports a genuine op error in its own words), or a negative code. */
static int capture(struct cu_ctx *c, const struct cu_grec *r, struct nlpd_error *err)
{
    int need = 0;
    for (int i = 0; i < r->n; i++)
        need += cu_op_takes_slot(r->ops[i].kind);
    if (free_slots(c) < need) { /* cu_slot_take would have to wait on the stream: not while capturing */
        int rc = cu_slots_reclaim(c, err);
        if (rc)
            return rc;
        if (free_slots(c) < need)
            return 1;
    }
    unsigned char before[CU_ERR_SLOTS];
    for (int i = 0; i < CU_ERR_SLOTS; i++)
        before[i] = (unsigned char)c->slots[i].in_use;
    cudaError_t e = cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return 1;
    }
    int rc = 0;
    struct nlpd_error scratch = {};
    for (int i = 0; i < r->n && !rc; i++)
        rc = cu_dispatch(c, &r->ops[i], &scratch);
    cudaGraph_t g = NULL;
    e = cudaStreamEndCapture(c->stream, &g); /* even after a failure: the stream leaves capture mode */
    cudaGraphExec_t x = NULL;
    if (!rc && e == cudaSuccess && g)
        e = cudaGraphInstantiate(&x, g, 0);
    if (g)
        cudaGraphDestroy(g);
    /* the words taken while capturing, in the order the ops took them */
    struct cu_gslot gs[CU_ERR_SLOTS];
    int ns = 0;
    for (int i = 0; i < CU_ERR_SLOTS; i++) {
        const struct cu_slot *s = &c->slots[i];
        if (before[i] || !s->in_use)
            continue;
        int j = ns++;
        while (j > 0 && c->slots[gs[j - 1].index].seq > s->seq) {
            gs[j] = gs[j - 1];
            j--;
        }
        gs[j].index = i;
        gs[j].op = s->op;
        memcpy(gs[j].limit, s->limit, sizeof gs[j].limit);
    }
    int evicted = 0;
    if (rc || e != cudaSuccess || !x ||
        cu_gcache_put(&c->graphs, r->ops, r->n, gs, ns, (void *)x, destroy_exec, &evicted) < 0) {
        if (x)
            cudaGraphExecDestroy(x);
        cudaGetLastError();          /* a capture failure is not the eager run's */
        for (int i = 0; i < ns; i++) /* their clearing memsets never ran */
            c->slots[gs[i].index].in_use = 0;
        return 1;
    }
    CU_COUNT(c->impl, n_capture, 1);
    CU_COUNT(c->impl, n_evict, evicted);
    return launch(c, x, err);
}

int cu_graph_run(struct cu_ctx *c, struct nlpd_error *err)
{
    struct cu_grec *r = &c->rec;
    r->on = 0;
    if (r->oom)
        return nlpd_error_set(err, NLPD_ENOMEM, 0, "cuda backend: out of memory recording a graph region");
    if (!r->n)
        return 0;
    if (!graphs_on())
        return run_eager(c, r, err);
    int rc = cu_weights_clean(c, err); /* a shadow conversion waits on the stream: before, not inside, a capture */
    if (rc)
        return rc;
    int i = cu_gcache_find(&c->graphs, r->ops, r->n);
    if (i >= 0) {
        if ((rc = arm_slots(c, &c->graphs.e[i], err)) < 0)
            return rc;
        if (rc == 0) {
            CU_COUNT(c->impl, n_launch, 1);
            return launch(c, (cudaGraphExec_t)c->graphs.e[i].exec, err);
        }
        return run_eager(c, r, err);
    }
    rc = capture(c, r, err);
    return rc == 1 ? run_eager(c, r, err) : rc;
}
