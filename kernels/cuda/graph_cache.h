/* The op-list half of the CUDA backend's graph regions (graph.cu): recording a region's op descriptors and a
 * small LRU cache of graphs keyed by the exact bytes of that list. Header-only C that nvcc's C++ compiles too, so
 * tests/unit/test_cuda_graph.c checks the same code without a GPU; the graph itself is opaque here. */
#ifndef NLPD_GRAPH_CACHE_H
#define NLPD_GRAPH_CACHE_H

#include <stdlib.h>
#include <string.h>

#include "nlpd_kernels.h"

#define CU_GRAPH_CACHE 8 /* graphs per thread context: a worker sees a few batch shapes at a time */

/* An error word a graph's ops use (struct cu_slot's identity): re-armed on every launch of the graph. */
struct cu_gslot {
    int index;
    enum nlpd_op_kind op;
    int limit[3];
};

struct cu_gentry {
    struct nlpd_op *ops; /* the key: the region's descriptors, compared byte for byte */
    int n_ops;
    void *exec; /* cudaGraphExec_t */
    struct cu_gslot *slots;
    int n_slots;
    unsigned long long last_use;
};

struct cu_gcache {
    struct cu_gentry e[CU_GRAPH_CACHE];
    int n;
    unsigned long long tick;
};

/* The ops of the open region (on: a region is open). */
struct cu_grec {
    struct nlpd_op *ops;
    int n, cap;
    int on;
    int oom; /* an op could not be recorded: graph_end reports it */
};

typedef void (*cu_gdestroy_fn)(void *exec);

static inline void cu_grec_begin(struct cu_grec *r)
{
    r->n = 0;
    r->oom = 0;
    r->on = 1;
}

/* Appends a copy holding only op's kind and its own union member (the rest zero), so that stale bytes of another
 * member in the caller's descriptor do not make equal regions differ. Returns 0, or -1 out of memory (r->oom). */
static inline int cu_grec_add(struct cu_grec *r, const struct nlpd_op *op)
{
    if (r->n == r->cap) {
        int cap = r->cap ? 2 * r->cap : 64;
        struct nlpd_op *ops = (struct nlpd_op *)realloc(r->ops, (size_t)cap * sizeof *ops);
        if (!ops) {
            r->oom = 1;
            return -1;
        }
        r->ops = ops;
        r->cap = cap;
    }
    struct nlpd_op *d = &r->ops[r->n++];
    memset(d, 0, sizeof *d);
    d->kind = op->kind;
    switch (op->kind) {
    case NLPD_OP_MATMUL: d->u.matmul = op->u.matmul; break;
    case NLPD_OP_BIAS_ACT: d->u.bias_act = op->u.bias_act; break;
    case NLPD_OP_LAYER_NORM: d->u.layer_norm = op->u.layer_norm; break;
    case NLPD_OP_SOFTMAX: d->u.softmax = op->u.softmax; break;
    case NLPD_OP_ATTENTION: d->u.attention = op->u.attention; break;
    case NLPD_OP_EMBED: d->u.embed = op->u.embed; break;
    case NLPD_OP_ATTENTION_KV: d->u.attention_kv = op->u.attention_kv; break;
    case NLPD_OP_GATHER_ROWS: d->u.gather_rows = op->u.gather_rows; break;
    case NLPD_OP_ATTENTION_REL: d->u.attention_rel = op->u.attention_rel; break;
    case NLPD_OP_LOG_SOFTMAX_TOPK: d->u.topk = op->u.topk; break;
    default: d->u = op->u; break;
    }
    return 0;
}

static inline void cu_grec_free(struct cu_grec *r)
{
    free(r->ops);
    memset(r, 0, sizeof *r);
}

/* The entry whose op list equals ops[0..n) (now the most recently used), or -1. */
static inline int cu_gcache_find(struct cu_gcache *c, const struct nlpd_op *ops, int n)
{
    for (int i = 0; i < c->n; i++) {
        struct cu_gentry *e = &c->e[i];
        if (e->n_ops == n && !memcmp(e->ops, ops, (size_t)n * sizeof *ops)) {
            e->last_use = ++c->tick;
            return i;
        }
    }
    return -1;
}

static inline void cu_gentry_free(struct cu_gentry *e, cu_gdestroy_fn destroy)
{
    if (e->exec && destroy)
        destroy(e->exec);
    free(e->ops);
    free(e->slots);
    memset(e, 0, sizeof *e);
}

/* Stores exec for ops[0..n) with its error words (both copied), evicting the least recently used entry when the
 * cache is full. Returns the entry's index and sets *evicted (0 or 1), or -1 out of memory: then nothing changed
 * and exec is still the caller's. */
static inline int cu_gcache_put(struct cu_gcache *c, const struct nlpd_op *ops, int n, const struct cu_gslot *slots,
                                int n_slots, void *exec, cu_gdestroy_fn destroy, int *evicted)
{
    struct nlpd_op *ko = (struct nlpd_op *)malloc((size_t)(n ? n : 1) * sizeof *ko);
    struct cu_gslot *ks = (struct cu_gslot *)malloc((size_t)(n_slots ? n_slots : 1) * sizeof *ks);
    if (!ko || !ks) {
        free(ko);
        free(ks);
        return -1;
    }
    memcpy(ko, ops, (size_t)n * sizeof *ko);
    if (n_slots)
        memcpy(ks, slots, (size_t)n_slots * sizeof *ks);
    int i = c->n;
    *evicted = 0;
    if (i == CU_GRAPH_CACHE) {
        i = 0;
        for (int j = 1; j < c->n; j++)
            if (c->e[j].last_use < c->e[i].last_use)
                i = j;
        cu_gentry_free(&c->e[i], destroy);
        *evicted = 1;
    } else {
        c->n++;
    }
    struct cu_gentry *e = &c->e[i];
    e->ops = ko;
    e->n_ops = n;
    e->exec = exec;
    e->slots = ks;
    e->n_slots = n_slots;
    e->last_use = ++c->tick;
    return i;
}

/* Drops every entry (a buffer a graph may reference was freed, or the context goes); returns how many. */
static inline int cu_gcache_clear(struct cu_gcache *c, cu_gdestroy_fn destroy)
{
    int n = c->n;
    for (int i = 0; i < n; i++)
        cu_gentry_free(&c->e[i], destroy);
    c->n = 0;
    return n;
}

#endif
