/* oneDNN matmul primitives for the CPU backend (see cpu_onednn.h): one engine per process, primitives cached by
 * shape (creating one costs far more than running a small one), memory objects wrapped around the caller's
 * pointers on each call. */
#include "cpu_onednn.h"

#include <omp.h>
#include <oneapi/dnnl/dnnl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static pthread_once_t engine_once = PTHREAD_ONCE_INIT;
static dnnl_engine_t engine;
static dnnl_status_t engine_status;

static void engine_init(void)
{
    engine_status = dnnl_engine_create(&engine, dnnl_cpu, 0);
}

const char *nlpd_onednn_isa(void)
{
    switch (dnnl_get_effective_cpu_isa()) {
    case dnnl_cpu_isa_sse41: return "sse41";
    case dnnl_cpu_isa_avx: return "avx";
    case dnnl_cpu_isa_avx2: return "avx2";
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
    case dnnl_cpu_isa_avx512_mic:
    case dnnl_cpu_isa_avx512_mic_4ops: return "avx512_mic";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    default: return "baseline";
    }
}

int nlpd_onednn_supports(enum nlpd_dtype dtype, char *why, size_t n)
{
    dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    int vnni = isa == dnnl_cpu_isa_avx2_vnni || isa == dnnl_cpu_isa_avx512_core_vnni ||
               isa == dnnl_cpu_isa_avx512_core_bf16 || isa == dnnl_cpu_isa_avx512_core_amx;
    int bf16 = isa == dnnl_cpu_isa_avx512_core_bf16 || isa == dnnl_cpu_isa_avx512_core_amx;
    /* Without VNNI, u8 x s8 products go through vpmaddubsw, whose int16 pairs saturate: wrong results, not slow
     * ones. Without AVX512-BF16, bf16 is emulated and slower than fp32. */
    if (dtype == NLPD_DTYPE_INT8 && !vnni) {
        if (why && n)
            snprintf(why, n, "int8 needs AVX512-VNNI or AVX-VNNI; oneDNN runs %s here", nlpd_onednn_isa());
        return 0;
    }
    if (dtype == NLPD_DTYPE_BF16 && !bf16) {
        if (why && n)
            snprintf(why, n, "bf16 needs AVX512-BF16; oneDNN runs %s here", nlpd_onednn_isa());
        return 0;
    }
    if (dtype == NLPD_DTYPE_F16) {
        if (why && n)
            snprintf(why, n, "fp16 products are CUDA-only");
        return 0;
    }
    pthread_once(&engine_once, engine_init);
    if (engine_status != dnnl_success) {
        if (why && n)
            snprintf(why, n, "oneDNN CPU engine unavailable (status %d)", (int)engine_status);
        return 0;
    }
    return 1;
}

/* ---- primitive cache ---- */

/* Batched products: operand X's element (i, r, c) is at X + i*sX[0] + r*sX[1] + c*sX[2] (elements). */
struct key { /* no padding: hashed and compared as bytes */
    int type, batch, m, n, k, act, has_bias, zero_;
    int64_t sa[3], sb[3], sc[3];
    uint32_t scale_bits, zero2_; /* output scale (attention's 1/sqrt(d)); 1.0f for none */
};

struct entry {
    struct key key;
    dnnl_primitive_t prim;
    dnnl_memory_desc_t src, wei, bias, dst;
    int refs;   /* callers running it (under cache_mu) */
    int cached; /* in the table; else destroyed by the last release */
};

/* Shapes vary with every batch (rows, padded length, the decoder's growing key length), and each primitive holds
 * JIT code: the table keeps at most CACHE_MAX of them and is emptied when full (entries in use go with their last
 * release), so memory stays bounded however many shapes a stream brings. */
#define CACHE_SLOTS 1024 /* power of two, >= 2 x CACHE_MAX */
#define CACHE_MAX   256
static pthread_mutex_t cache_mu = PTHREAD_MUTEX_INITIALIZER;
static struct entry *cache[CACHE_SLOTS];
static int cache_used;

static void entry_destroy(struct entry *e)
{
    dnnl_primitive_destroy(e->prim);
    free(e);
}

/* Under cache_mu. */
static void cache_flush(void)
{
    for (int i = 0; i < CACHE_SLOTS; i++) {
        struct entry *e = cache[i];
        if (!e)
            continue;
        cache[i] = NULL;
        e->cached = 0;
        if (e->refs == 0)
            entry_destroy(e);
    }
    cache_used = 0;
}

int nlpd_onednn_cached(void)
{
    pthread_mutex_lock(&cache_mu);
    int n = cache_used;
    pthread_mutex_unlock(&cache_mu);
    return n;
}

static uint32_t key_hash(const struct key *k)
{
    const unsigned char *w = (const unsigned char *)k;
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < sizeof *k; i++)
        h = (h ^ w[i]) * 16777619u;
    return h;
}

static dnnl_alg_kind_t act_alg(enum nlpd_act act, float *alpha)
{
    *alpha = 0.0f;
    switch (act) {
    case NLPD_ACT_GELU: return dnnl_eltwise_gelu_erf;
    case NLPD_ACT_GELU_TANH: return dnnl_eltwise_gelu_tanh;
    case NLPD_ACT_RELU: return dnnl_eltwise_relu;
    case NLPD_ACT_SILU: *alpha = 1.0f; return dnnl_eltwise_swish;
    case NLPD_ACT_TANH: return dnnl_eltwise_tanh;
    case NLPD_ACT_NONE: break;
    }
    return dnnl_alg_kind_undef;
}

static int create(struct entry *e, struct nlpd_error *err)
{
    const struct key *k = &e->key;
    dnnl_data_type_t ta = k->type == NLPD_ONEDNN_F32 ? dnnl_f32 : k->type == NLPD_ONEDNN_BF16 ? dnnl_bf16 : dnnl_u8;
    dnnl_data_type_t tb = k->type == NLPD_ONEDNN_F32 ? dnnl_f32 : k->type == NLPD_ONEDNN_BF16 ? dnnl_bf16 : dnnl_s8;
    dnnl_data_type_t tc = k->type == NLPD_ONEDNN_U8S8 ? dnnl_s32 : dnnl_f32;
    dnnl_dims_t sd = {k->batch, k->m, k->k}, wd = {k->batch, k->k, k->n}, dd = {k->batch, k->m, k->n};
    dnnl_dims_t ss = {k->sa[0], k->sa[1], k->sa[2]}, ws = {k->sb[0], k->sb[1], k->sb[2]};
    dnnl_dims_t ds = {k->sc[0], k->sc[1], k->sc[2]}, bd = {1, 1, k->n}, bs = {k->n, k->n, 1};
    dnnl_matmul_desc_t md;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_status_t st;
    float oscale;
    memcpy(&oscale, &k->scale_bits, sizeof oscale);
    if ((st = dnnl_memory_desc_init_by_strides(&e->src, 3, sd, ta, ss)) ||
        (st = dnnl_memory_desc_init_by_strides(&e->wei, 3, wd, tb, ws)) ||
        (st = dnnl_memory_desc_init_by_strides(&e->dst, 3, dd, tc, ds)) ||
        (k->has_bias && (st = dnnl_memory_desc_init_by_strides(&e->bias, 3, bd, dnnl_f32, bs))) ||
        (st = dnnl_matmul_desc_init(&md, &e->src, &e->wei, k->has_bias ? &e->bias : NULL, &e->dst)) ||
        (st = dnnl_primitive_attr_create(&attr)) ||
        (st = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_library)) ||
        (oscale != 1.0f && (st = dnnl_primitive_attr_set_output_scales(attr, 1, 0, &oscale))))
        goto out;
    float alpha;
    dnnl_alg_kind_t alg = act_alg((enum nlpd_act)k->act, &alpha);
    if (alg != dnnl_alg_kind_undef) {
        if ((st = dnnl_post_ops_create(&po)) || (st = dnnl_post_ops_append_eltwise(po, 1.0f, alg, alpha, 0.0f)) ||
            (st = dnnl_primitive_attr_set_post_ops(attr, po)))
            goto out;
    }
    if ((st = dnnl_primitive_desc_create(&pd, &md, attr, engine, NULL)) || (st = dnnl_primitive_create(&e->prim, pd)))
        goto out;
out:
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    if (po)
        dnnl_post_ops_destroy(po);
    if (attr)
        dnnl_primitive_attr_destroy(attr);
    if (st != dnnl_success)
        return nlpd_error_set(err, NLPD_EINVAL, 0, "oneDNN: no %s matmul for %d x %d x %d (status %d, ISA %s)",
                              k->type == NLPD_ONEDNN_F32    ? "fp32"
                              : k->type == NLPD_ONEDNN_BF16 ? "bf16"
                                                            : "u8s8",
                              k->m, k->n, k->k, (int)st, nlpd_onednn_isa());
    return 0;
}

/* The cached primitive for k (created on first use), held until release(); NULL with err. */
static struct entry *lookup(const struct key *k, struct nlpd_error *err)
{
    uint32_t h = key_hash(k) & (CACHE_SLOTS - 1);
    pthread_mutex_lock(&cache_mu);
    for (uint32_t i = 0; i < CACHE_SLOTS; i++) {
        struct entry *e = cache[(h + i) & (CACHE_SLOTS - 1)];
        if (!e)
            break;
        if (!memcmp(&e->key, k, sizeof *k)) {
            e->refs++;
            pthread_mutex_unlock(&cache_mu);
            return e;
        }
    }
    struct entry *e = calloc(1, sizeof *e);
    if (!e) {
        pthread_mutex_unlock(&cache_mu);
        nlpd_error_set(err, NLPD_ENOMEM, 0, "oneDNN: out of memory");
        return NULL;
    }
    e->key = *k;
    if (create(e, err)) {
        pthread_mutex_unlock(&cache_mu);
        free(e);
        return NULL;
    }
    if (cache_used >= CACHE_MAX)
        cache_flush();
    uint32_t i = h;
    while (cache[i & (CACHE_SLOTS - 1)])
        i++;
    cache[i & (CACHE_SLOTS - 1)] = e;
    cache_used++;
    e->cached = 1;
    e->refs = 1;
    pthread_mutex_unlock(&cache_mu);
    return e;
}

static void release(struct entry *e)
{
    pthread_mutex_lock(&cache_mu);
    int gone = --e->refs == 0 && !e->cached;
    pthread_mutex_unlock(&cache_mu);
    if (gone)
        entry_destroy(e);
}

static int execute(const struct key *key, const void *a, const void *b, void *c, const float *bias, int threads,
                   struct nlpd_error *err);

int nlpd_onednn_matmul(enum nlpd_onednn_type type, int m, int n, int k, const void *a, int lda, const void *b, int ldb,
                       int trans_b, void *c, int ldc, const float *bias, enum nlpd_act act, int threads,
                       struct nlpd_error *err)
{
    if (type == NLPD_ONEDNN_U8S8) {
        bias = NULL;
        act = NLPD_ACT_NONE;
    }
    struct key key = {.type = (int)type,
                      .batch = 1,
                      .m = m,
                      .n = n,
                      .k = k,
                      .act = (int)act,
                      .has_bias = bias != NULL,
                      .sa = {(int64_t)m * lda, lda, 1},
                      .sb = {(int64_t)k * n, trans_b ? 1 : ldb, trans_b ? ldb : 1},
                      .sc = {(int64_t)m * ldc, ldc, 1}};
    float one = 1.0f;
    memcpy(&key.scale_bits, &one, sizeof one);
    return execute(&key, a, b, c, bias, threads, err);
}

int nlpd_onednn_matmul_batched(int batch, int m, int n, int k, float scale, const float *a, const long long sa[3],
                               const float *b, const long long sb[3], float *c, const long long sc[3], int threads,
                               struct nlpd_error *err)
{
    struct key key = {.type = NLPD_ONEDNN_F32,
                      .batch = batch,
                      .m = m,
                      .n = n,
                      .k = k,
                      .sa = {sa[0], sa[1], sa[2]},
                      .sb = {sb[0], sb[1], sb[2]},
                      .sc = {sc[0], sc[1], sc[2]}};
    memcpy(&key.scale_bits, &scale, sizeof scale);
    return execute(&key, a, b, c, NULL, threads, err);
}

static int execute(const struct key *kp, const void *a, const void *b, void *c, const float *bias, int threads,
                   struct nlpd_error *err)
{
    pthread_once(&engine_once, engine_init);
    if (engine_status != dnnl_success)
        return nlpd_error_set(err, NLPD_EINVAL, 0, "oneDNN CPU engine unavailable (status %d)", (int)engine_status);
    struct key key = *kp;
    const int m = key.m, n = key.n, k = key.k;
    struct entry *e = lookup(&key, err);
    if (!e)
        return err ? err->code : NLPD_EINVAL;
    dnnl_memory_t ms = NULL, mw = NULL, mb = NULL, md = NULL;
    dnnl_stream_t stream = NULL;
    dnnl_status_t st;
    if ((st = dnnl_memory_create(&ms, &e->src, engine, (void *)a)) ||
        (st = dnnl_memory_create(&mw, &e->wei, engine, (void *)b)) ||
        (st = dnnl_memory_create(&md, &e->dst, engine, c)) ||
        (bias && (st = dnnl_memory_create(&mb, &e->bias, engine, (void *)bias))) ||
        (st = dnnl_stream_create(&stream, engine, dnnl_stream_default_flags)))
        goto out;
    dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, ms}, {DNNL_ARG_WEIGHTS, mw}, {DNNL_ARG_DST, md}, {DNNL_ARG_BIAS, mb}};
    omp_set_num_threads(threads > 0 ? threads : 1); /* this thread's OpenMP team size, used inside oneDNN */
    if ((st = dnnl_primitive_execute(e->prim, stream, bias ? 4 : 3, args)) == dnnl_success)
        st = dnnl_stream_wait(stream);
out:
    if (stream)
        dnnl_stream_destroy(stream);
    if (ms)
        dnnl_memory_destroy(ms);
    if (mw)
        dnnl_memory_destroy(mw);
    if (mb)
        dnnl_memory_destroy(mb);
    if (md)
        dnnl_memory_destroy(md);
    release(e);
    if (st != dnnl_success)
        return nlpd_error_set(err, NLPD_EINVAL, 0, "oneDNN: matmul %d x %d x %d failed (status %d)", m, n, k, (int)st);
    return 0;
}
