/* The CPU backend: the vtable of nlpd_kernels.h over host memory. Buffers are 64-byte aligned host blocks, upload
 * and download are memcpy, ops run synchronously on the calling thread (OpenBLAS threads inside sgemm). */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cpu_ops.h"

struct cpu_impl {
    int threads;
};

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

static int cpu_upload(struct nlpd_backend *be, struct nlpd_buffer *buf, size_t offset, const void *src, size_t n)
{
    (void)be;
    if (offset > buf->size || n > buf->size - offset)
        return NLPD_ERANGE;
    memcpy((char *)buf->ptr + offset, src, n);
    return 0;
}

static int cpu_download(struct nlpd_backend *be, const struct nlpd_buffer *buf, size_t offset, void *dst, size_t n)
{
    (void)be;
    if (offset > buf->size || n > buf->size - offset)
        return NLPD_ERANGE;
    memcpy(dst, (const char *)buf->ptr + offset, n);
    return 0;
}

static int cpu_run(struct nlpd_backend *be, const struct nlpd_op *op, struct nlpd_error *err)
{
    (void)be;
    switch (op->kind) {
    case NLPD_OP_MATMUL: nlpd_cpu_matmul(&op->u.matmul); return 0;
    case NLPD_OP_BIAS_ACT: nlpd_cpu_bias_act(&op->u.bias_act); return 0;
    case NLPD_OP_LAYER_NORM: nlpd_cpu_layer_norm(&op->u.layer_norm); return 0;
    case NLPD_OP_SOFTMAX: nlpd_cpu_softmax(&op->u.softmax); return 0;
    case NLPD_OP_EMBED: return nlpd_cpu_embed(&op->u.embed, err);
    case NLPD_OP_ATTENTION: {
        const struct nlpd_op_attention *a = &op->u.attention;
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
    (void)be;
    free(buf->ptr);
    buf->ptr = NULL;
    buf->size = 0;
}

static void cpu_destroy(struct nlpd_backend *be)
{
    free(be->impl);
    free(be);
}

static const struct nlpd_backend_ops cpu_ops = {
    .name = "cpu",
    .supports = cpu_supports,
    .alloc = cpu_alloc,
    .upload = cpu_upload,
    .download = cpu_download,
    .run = cpu_run,
    .sync = cpu_sync,
    .free = cpu_free,
    .destroy = cpu_destroy,
};

struct nlpd_backend *nlpd_backend_cpu_new(int threads, struct nlpd_error *err)
{
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
    be->ops = &cpu_ops;
    be->impl = impl;
    nlpd_cpu_simd_avx2(); /* detect now, not inside the first batch */
    openblas_set_num_threads(threads);
    return be;
}

int nlpd_backend_cpu_threads(const struct nlpd_backend *be)
{
    return ((const struct cpu_impl *)be->impl)->threads;
}
