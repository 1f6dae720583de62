/* The CPU backend: the vtable of nlpd_kernels.h over host memory. Buffers are 64-byte aligned host blocks, upload
 * and download are memcpy, ops run synchronously on the calling thread (OpenBLAS threads inside sgemm, OpenMP
 * threads inside oneDNN and the element-wise kernels). With dtype bf16/int8 it keeps, per weight matrix that a
 * MATMUL reads, a prepared copy (bf16, or s8 with per-channel scales) made on first use. */
#include <cblas.h>
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cpu_onednn.h"
#include "cpu_ops.h"
#include "cpu_quant.h"
#include "nlpd_backend.h"

/* A weight matrix prepared for bf16 or int8 products, keyed on where b is and how it is read. */
struct prep {
    const float *b;
    int k, n, ldb, trans_b;
    void *q;         /* bf16 or s8, b's layout and row stride */
    float *scale;    /* int8: per output channel */
    int32_t *colsum; /* int8: per output channel, sum of q */
    struct prep *next;
};

struct wbuf {
    const char *p;
    size_t size;
};

struct cpu_impl {
    int threads;
    enum nlpd_dtype dtype;
    enum nlpd_cpu_gemm gemm;
    pthread_mutex_t mu; /* wbufs and preps: ops of one backend run on several worker threads */
    struct wbuf *wbufs;
    size_t nwbufs, capwbufs;
    struct prep *preps;
};

/* Per-thread scratch for converted activations (per-row scales and zero points after the data). */
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
struct scratch {
    void *p;
    size_t cap;
};

static void scratch_free(void *p)
{
    struct scratch *s = p;
    if (s) {
        free(s->p);
        free(s);
    }
}

static void scratch_init(void)
{
    pthread_key_create(&scratch_key, scratch_free);
}

static void *scratch_get(size_t n)
{
    pthread_once(&scratch_once, scratch_init);
    struct scratch *s = pthread_getspecific(scratch_key);
    if (!s) {
        if (!(s = calloc(1, sizeof *s)))
            return NULL;
        pthread_setspecific(scratch_key, s);
    }
    if (n > s->cap) {
        size_t cap = (n + 4095) & ~(size_t)4095;
        void *p = aligned_alloc(64, cap);
        if (!p)
            return NULL;
        free(s->p);
        s->p = p;
        s->cap = cap;
    }
    return s->p;
}

static void prep_free(struct prep *p)
{
    free(p->q);
    free(p->scale);
    free(p->colsum);
    free(p);
}

/* Drops the prepared copies of matrices inside [base, base + size). Called with mu held. */
static void drop_preps(struct cpu_impl *im, const char *base, size_t size)
{
    for (struct prep **pp = &im->preps; *pp;) {
        const char *b = (const char *)(*pp)->b;
        if (b >= base && b < base + size) {
            struct prep *d = *pp;
            *pp = d->next;
            prep_free(d);
        } else {
            pp = &(*pp)->next;
        }
    }
}

/* Whether the whole of b lies in one weight buffer. Called with mu held. */
static int in_weights(const struct cpu_impl *im, const struct nlpd_op_matmul *p)
{
    const char *b = (const char *)p->b;
    size_t last = p->trans_b ? (size_t)(p->n - 1) * p->ldb + p->k : (size_t)(p->k - 1) * p->ldb + p->n;
    for (size_t i = 0; i < im->nwbufs; i++) {
        const struct wbuf *w = &im->wbufs[i];
        if (b >= w->p && b < w->p + w->size && last * sizeof(float) <= (size_t)(w->p + w->size - b))
            return 1;
    }
    return 0;
}

/* *out = the prepared copy of p's b, made on first use, or NULL when p runs in fp32 (not a weight, too small).
 * 0, or NLPD_ENOMEM with err. */
static int prepared(struct cpu_impl *im, const struct nlpd_op_matmul *p, const struct prep **out,
                    struct nlpd_error *err)
{
    *out = NULL;
    if (p->n < 32 || p->k < 32 || p->ldb <= 0)
        return 0;
    pthread_mutex_lock(&im->mu);
    struct prep *r = NULL;
    for (struct prep *q = im->preps; q && !r; q = q->next)
        if (q->b == p->b && q->k == p->k && q->n == p->n && q->ldb == p->ldb && q->trans_b == p->trans_b)
            r = q;
    if (r || !in_weights(im, p)) {
        pthread_mutex_unlock(&im->mu);
        *out = r;
        return 0;
    }
    size_t elems = p->trans_b ? (size_t)(p->n - 1) * p->ldb + p->k : (size_t)(p->k - 1) * p->ldb + p->n;
    int int8 = im->dtype == NLPD_DTYPE_INT8;
    r = calloc(1, sizeof *r);
    if (r) {
        *r = (struct prep){.b = p->b, .k = p->k, .n = p->n, .ldb = p->ldb, .trans_b = p->trans_b};
        r->q = calloc(elems, int8 ? 1 : 2);
        if (int8) {
            r->scale = malloc((size_t)p->n * sizeof(float));
            r->colsum = malloc((size_t)p->n * sizeof(int32_t));
        }
    }
    if (!r || !r->q || (int8 && (!r->scale || !r->colsum))) {
        if (r)
            prep_free(r);
        pthread_mutex_unlock(&im->mu);
        return nlpd_error_set(err, NLPD_ENOMEM, 0, "cpu backend: out of memory preparing a %d x %d %s weight", p->k,
                              p->n, nlpd_dtype_name(im->dtype));
    }
    if (int8)
        nlpd_cpu_quant_weights_s8(p->b, p->k, p->n, p->ldb, p->trans_b, r->q, r->scale, r->colsum);
    else
        nlpd_cpu_weights_bf16(p->b, elems, r->q);
    r->next = im->preps;
    im->preps = r;
    pthread_mutex_unlock(&im->mu);
    *out = r;
    return 0;
}

/* oneDNN beats OpenBLAS's Haswell kernels (what OPENBLAS_CORETYPE=Haswell and pre-AVX-512 CPUs get) on fp32
 * products once they are large enough to amortise its per-call set-up; see README "Performance". */
static int fp32_on_onednn(const struct cpu_impl *im, const struct nlpd_op_matmul *p)
{
    (void)p;
    if (im->gemm == NLPD_CPU_GEMM_ONEDNN)
        return 1;
    if (im->gemm == NLPD_CPU_GEMM_OPENBLAS)
        return 0;
    /* small products (decoding steps, classifier heads) stay on OpenBLAS: oneDNN's per-call set-up dominates */
    return (double)p->m * p->n * p->k >= (double)(1 << 18);
}

/* Self-attention with oneDNN's batched products: per sequence, a group of heads at a time (the scores of at most
 * ATT_SCORES floats live at once, so long sequences do not materialise every head's S x S scores). */
#define ATT_SCORES (1u << 20)
static int attention_onednn(struct cpu_impl *im, const struct nlpd_op_attention *p, struct nlpd_error *err)
{
    const int S = p->seq, D = p->head_dim, H = p->heads * p->head_dim;
    for (int b = 0; b < p->batch; b++) {
        const int32_t *mask = p->mask ? p->mask + (size_t)b * S : NULL;
        int kv = S; /* keys past the last attended one contribute exactly 0: skip them */
        if (mask) {
            while (kv > 0 && !mask[kv - 1])
                kv--;
            if (kv == 0)
                kv = S; /* nothing attended: uniform over every key, as transformers does */
        }
        size_t per_head = (size_t)S * kv;
        int hc = per_head >= ATT_SCORES ? 1 : (int)(ATT_SCORES / per_head);
        if (hc > p->heads)
            hc = p->heads;
        float *sc = scratch_get((size_t)hc * per_head * sizeof(float));
        if (!sc)
            return nlpd_error_set(err, NLPD_ENOMEM, 0, "cpu backend: out of memory for attention scores");
        const float *base = p->qkv + (size_t)b * S * p->ld_qkv;
        for (int h0 = 0; h0 < p->heads; h0 += hc) {
            int nh = p->heads - h0 < hc ? p->heads - h0 : hc;
            const float *q = base + (size_t)h0 * D, *k = base + H + (size_t)h0 * D, *v = base + 2 * H + (size_t)h0 * D;
            const long long sq[3] = {D, p->ld_qkv, 1}, skt[3] = {D, 1, p->ld_qkv}, ss[3] = {(long long)per_head, kv, 1};
            const long long sv[3] = {D, p->ld_qkv, 1}, so[3] = {D, p->ld_out, 1};
            int rc = nlpd_onednn_matmul_batched(nh, S, kv, D, p->scale, q, sq, k, skt, sc, ss, im->threads, err);
            if (rc)
                return rc;
            nlpd_cpu_softmax_masked(sc, nh * S, kv, mask);
            rc = nlpd_onednn_matmul_batched(nh, S, D, kv, 1.0f, sc, ss, v, sv,
                                            p->out + (size_t)b * S * p->ld_out + (size_t)h0 * D, so, im->threads, err);
            if (rc)
                return rc;
        }
    }
    return 0;
}

static int cpu_matmul(struct cpu_impl *im, const struct nlpd_op_matmul *p, struct nlpd_error *err)
{
    if (p->m <= 0 || p->n <= 0 || p->k <= 0) {
        nlpd_cpu_matmul(p);
        return 0;
    }
    const struct prep *w = NULL;
    if (im->dtype == NLPD_DTYPE_INT8 || im->dtype == NLPD_DTYPE_BF16) {
        int rc = prepared(im, p, &w, err);
        if (rc)
            return rc;
    }
    if (w && im->dtype == NLPD_DTYPE_INT8) {
        size_t qa = ((size_t)p->m * p->k + 63) & ~(size_t)63;
        uint8_t *q = scratch_get(qa + (size_t)p->m * (sizeof(float) + sizeof(int32_t)));
        if (!q)
            return nlpd_error_set(err, NLPD_ENOMEM, 0, "cpu backend: out of memory quantising a %d x %d batch", p->m,
                                  p->k);
        float *sa = (float *)(q + qa);
        int32_t *zp = (int32_t *)(sa + p->m);
        nlpd_cpu_quant_rows_u8(p->a, p->m, p->k, p->lda, q, sa, zp);
        int rc = nlpd_onednn_matmul(NLPD_ONEDNN_U8S8, p->m, p->n, p->k, q, p->k, w->q, p->ldb, p->trans_b, p->c, p->ldc,
                                    NULL, NLPD_ACT_NONE, im->threads, err);
        if (rc)
            return rc;
        nlpd_cpu_dequant(p->c, p->m, p->n, p->ldc, sa, zp, w->scale, w->colsum, p->bias, p->act);
        return 0;
    }
    if (w) { /* bf16 */
        uint16_t *q = scratch_get((size_t)p->m * p->k * sizeof(uint16_t));
        if (!q)
            return nlpd_error_set(err, NLPD_ENOMEM, 0, "cpu backend: out of memory converting a %d x %d batch", p->m,
                                  p->k);
        nlpd_cpu_rows_bf16(p->a, p->m, p->k, p->lda, q);
        return nlpd_onednn_matmul(NLPD_ONEDNN_BF16, p->m, p->n, p->k, q, p->k, w->q, p->ldb, p->trans_b, p->c, p->ldc,
                                  p->bias, p->act, im->threads, err);
    }
    if (fp32_on_onednn(im, p))
        return nlpd_onednn_matmul(NLPD_ONEDNN_F32, p->m, p->n, p->k, p->a, p->lda, p->b, p->ldb, p->trans_b, p->c,
                                  p->ldc, p->bias, p->act, im->threads, err);
    nlpd_cpu_matmul(p);
    return 0;
}

static int cpu_supports(const struct nlpd_backend *be, enum nlpd_op_kind kind)
{
    (void)be;
    return kind >= 0 && kind < NLPD_OP_COUNT;
}

static int cpu_alloc(struct nlpd_backend *be, size_t size, struct nlpd_buffer *out, struct nlpd_error *err)
{
    size_t rounded = (size + 63) & ~(size_t)63;
    if (rounded < size)
        return nlpd_error_set(err, NLPD_ERANGE, 0, "cpu backend: allocation of %zu bytes too large", size);
    void *p = aligned_alloc(64, rounded ? rounded : 64);
    if (!p)
        return nlpd_error_set(err, NLPD_ENOMEM, 0, "cpu backend: out of memory allocating %zu bytes", size);
    out->backend = be;
    out->ptr = p;
    out->size = size;
    return 0;
}

static int cpu_alloc_weights(struct nlpd_backend *be, size_t size, struct nlpd_buffer *out, struct nlpd_error *err)
{
    struct cpu_impl *im = be->impl;
    int rc = cpu_alloc(be, size, out, err);
    if (rc || im->dtype == NLPD_DTYPE_F32)
        return rc;
    pthread_mutex_lock(&im->mu);
    if (im->nwbufs == im->capwbufs) {
        size_t cap = im->capwbufs ? 2 * im->capwbufs : 8;
        struct wbuf *nw = realloc(im->wbufs, cap * sizeof *nw);
        if (!nw) {
            pthread_mutex_unlock(&im->mu);
            free(out->ptr);
            out->ptr = NULL;
            return nlpd_error_set(err, NLPD_ENOMEM, 0, "cpu backend: out of memory");
        }
        im->wbufs = nw;
        im->capwbufs = cap;
    }
    im->wbufs[im->nwbufs++] = (struct wbuf){out->ptr, size};
    pthread_mutex_unlock(&im->mu);
    return 0;
}

static int range_error(const char *what, const struct nlpd_buffer *buf, size_t offset, size_t n, struct nlpd_error *err)
{
    return nlpd_error_set(err, NLPD_ERANGE, 0, "%s of %zu bytes at offset %zu: outside the buffer of %zu bytes", what,
                          n, offset, buf->size);
}

static int cpu_upload(struct nlpd_backend *be, struct nlpd_buffer *buf, size_t offset, const void *src, size_t n,
                      struct nlpd_error *err)
{
    struct cpu_impl *im = be->impl;
    if (offset > buf->size || n > buf->size - offset)
        return range_error("upload", buf, offset, n, err);
    memcpy((char *)buf->ptr + offset, src, n);
    if (im->preps) { /* new weights: their prepared copies are stale */
        pthread_mutex_lock(&im->mu);
        drop_preps(im, buf->ptr, buf->size);
        pthread_mutex_unlock(&im->mu);
    }
    return 0;
}

static int cpu_download(struct nlpd_backend *be, const struct nlpd_buffer *buf, size_t offset, void *dst, size_t n,
                        struct nlpd_error *err)
{
    (void)be;
    if (offset > buf->size || n > buf->size - offset)
        return range_error("download", buf, offset, n, err);
    memcpy(dst, (const char *)buf->ptr + offset, n);
    return 0;
}

static int cpu_run(struct nlpd_backend *be, const struct nlpd_op *op, struct nlpd_error *err)
{
    struct cpu_impl *im = be->impl;
    omp_set_num_threads(im->threads); /* the calling thread's team for oneDNN and the element-wise kernels */
    switch (op->kind) {
    case NLPD_OP_MATMUL: return cpu_matmul(im, &op->u.matmul, err);
    case NLPD_OP_BIAS_ACT: nlpd_cpu_bias_act(&op->u.bias_act); return 0;
    case NLPD_OP_LAYER_NORM: nlpd_cpu_layer_norm(&op->u.layer_norm); return 0;
    case NLPD_OP_SOFTMAX: nlpd_cpu_softmax(&op->u.softmax); return 0;
    case NLPD_OP_EMBED: return nlpd_cpu_embed(&op->u.embed, err);
    case NLPD_OP_ATTENTION: {
        const struct nlpd_op_attention *a = &op->u.attention;
        if (im->gemm != NLPD_CPU_GEMM_OPENBLAS)
            return attention_onednn(im, a, err);
        size_t need = (size_t)a->seq * (size_t)a->seq;
        if (a->scratch && a->scratch_floats >= need) {
            nlpd_cpu_attention(a, a->scratch);
            return 0;
        }
        float *s = malloc((need ? need : 1) * sizeof(float));
        if (!s)
            return nlpd_error_set(err, NLPD_ENOMEM, 0, "cpu backend: out of memory for attention scores");
        nlpd_cpu_attention(a, s);
        free(s);
        return 0;
    }
    case NLPD_OP_ATTENTION_KV: {
        const struct nlpd_op_attention_kv *a = &op->u.attention_kv;
        size_t need = (size_t)(a->q_len > 0 ? a->q_len : 1) * (size_t)(a->kv_len > 0 ? a->kv_len : 1);
        float stack[1024], *s = need <= 1024 ? stack : malloc(need * sizeof(float));
        if (!s)
            return nlpd_error_set(err, NLPD_ENOMEM, 0, "cpu backend: out of memory for attention scores");
        nlpd_cpu_attention_kv(a, s);
        if (s != stack)
            free(s);
        return 0;
    }
    case NLPD_OP_GATHER_ROWS: return nlpd_cpu_gather_rows(&op->u.gather_rows, err);
    case NLPD_OP_ATTENTION_REL: {
        const struct nlpd_op_attention_rel *a = &op->u.attention_rel;
        float *sc = scratch_get(nlpd_cpu_attention_rel_scratch(a) * sizeof(float));
        if (!sc)
            return nlpd_error_set(err, NLPD_ENOMEM, 0, "cpu backend: out of memory for attention scores");
        return nlpd_cpu_attention_rel(a, sc, im->threads, err);
    }
    case NLPD_OP_LOG_SOFTMAX_TOPK: return nlpd_cpu_log_softmax_topk(&op->u.topk, err);
    case NLPD_OP_COUNT: break;
    }
    return nlpd_error_set(err, NLPD_EINVAL, 0, "cpu backend: unknown op %d", (int)op->kind);
}

static int cpu_sync(struct nlpd_backend *be, struct nlpd_error *err)
{
    (void)be;
    (void)err;
    return 0;
}

static void cpu_free(struct nlpd_backend *be, struct nlpd_buffer *buf)
{
    struct cpu_impl *im = be->impl;
    pthread_mutex_lock(&im->mu);
    for (size_t i = 0; i < im->nwbufs; i++)
        if (im->wbufs[i].p == buf->ptr) {
            drop_preps(im, buf->ptr, buf->size);
            im->wbufs[i] = im->wbufs[--im->nwbufs];
            break;
        }
    pthread_mutex_unlock(&im->mu);
    free(buf->ptr);
    buf->ptr = NULL;
    buf->size = 0;
}

static void cpu_destroy(struct nlpd_backend *be)
{
    struct cpu_impl *im = be->impl;
    while (im->preps) {
        struct prep *d = im->preps;
        im->preps = d->next;
        prep_free(d);
    }
    free(im->wbufs);
    pthread_mutex_destroy(&im->mu);
    free(im);
    free(be);
}

static const struct nlpd_backend_ops cpu_ops = {
    .version = NLPD_BACKEND_API_VERSION,
    .name = "cpu",
    .supports = cpu_supports,
    .alloc = cpu_alloc,
    .upload = cpu_upload,
    .download = cpu_download,
    .run = cpu_run,
    .sync = cpu_sync,
    .free = cpu_free,
    .destroy = cpu_destroy,
    .alloc_weights = cpu_alloc_weights,
};

struct nlpd_backend *nlpd_backend_cpu_new(int threads, struct nlpd_error *err)
{
    struct nlpd_backend_opts o = {.name = "cpu", .threads = threads};
    return nlpd_backend_cpu_new_opts(&o, err);
}

struct nlpd_backend *nlpd_backend_cpu_new_opts(const struct nlpd_backend_opts *o, struct nlpd_error *err)
{
    int threads = o->threads;
    char why[160];
    const enum nlpd_dtype dtype = o->dtype == NLPD_DTYPE_AUTO ? NLPD_DTYPE_F32 : o->dtype; /* auto: fp32 here */
    if (dtype != NLPD_DTYPE_F32 && !nlpd_kernels_cpu_supports(dtype, why, sizeof why)) {
        nlpd_error_set(err, NLPD_EINVAL, 0, "cpu backend: dtype %s: %s", nlpd_dtype_name(o->dtype), why);
        return NULL;
    }
    if (threads < 0 || threads > 1024) {
        nlpd_error_set(err, NLPD_ERANGE, 0, "cpu backend: threads %d out of range (0 .. 1024)", threads);
        return NULL;
    }
    if (threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? (int)n : 1;
    }
    struct nlpd_backend *be = calloc(1, sizeof *be);
    struct cpu_impl *impl = calloc(1, sizeof *impl);
    if (!be || !impl) {
        free(be);
        free(impl);
        nlpd_error_set(err, NLPD_ENOMEM, 0, "cpu backend: out of memory");
        return NULL;
    }
    impl->threads = threads;
    impl->dtype = dtype;
    impl->gemm = o->cpu_gemm;
    pthread_mutex_init(&impl->mu, NULL);
    be->ops = &cpu_ops;
    be->impl = impl;
    be->dtype = dtype;
    nlpd_cpu_simd_avx2(); /* detect now, not inside the first batch */
    openblas_set_num_threads(threads);
    return be;
}

int nlpd_backend_cpu_threads(const struct nlpd_backend *be)
{
    return ((const struct cpu_impl *)be->impl)->threads;
}

const char *nlpd_kernels_onednn_isa(void)
{
    return nlpd_onednn_isa();
}

int nlpd_kernels_cpu_supports(enum nlpd_dtype dtype, char *why, size_t n)
{
    if (dtype == NLPD_DTYPE_F32)
        return 1;
    return nlpd_onednn_supports(dtype, why, n);
}
