/* The CUDA backend: the vtable of nlpd_kernels.h over device memory, one stream, one cuBLAS handle, a scratch
 * arena sized at creation, pinned staging for uploads and downloads, and device error words for ops that find
 * bad indices (reported by sync in the CPU backend's words). Built into libnlpd_cuda.so, loaded by backend.c. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_entry.h"
#include "cuda_internal.h"

#define CU_ALIGN 256
#define CU_STAGING_BYTES ((size_t)16 << 20)
#define CU_BLAS_WS_BYTES ((size_t)32 << 20)
#define CU_DEFAULT_ARENA ((size_t)256 << 20)

/* (nlpd_dtype_name lives in the nlpd binary, which this library does not link against) */
static const char *dtype_name(enum nlpd_dtype d)
{
    return d == NLPD_DTYPE_F16 ? "fp16" : d == NLPD_DTYPE_BF16 ? "bf16" : "fp32";
}

static size_t align_up(size_t n)
{
    return (n + CU_ALIGN - 1) & ~(size_t)(CU_ALIGN - 1);
}

int cu_fail(struct nlpd_error *err, cudaError_t e, const char *what)
{
    int code = e == cudaErrorMemoryAllocation ? NLPD_ENOMEM : NLPD_EIO;
    return nlpd_error_set(err, code, 0, "cuda backend: %s: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e));
}

int cu_blas_fail(struct nlpd_error *err, cublasStatus_t s, const char *what)
{
    int code = s == CUBLAS_STATUS_ALLOC_FAILED ? NLPD_ENOMEM : NLPD_EIO;
    return nlpd_error_set(err, code, 0, "cuda backend: %s: cuBLAS status %d", what, (int)s);
}

int cu_grid(const struct cu_impl *im, size_t n, int block)
{
    size_t blocks = (n + (size_t)block - 1) / (size_t)block;
    size_t cap = (size_t)im->sm_count * 32;
    if (blocks > cap)
        blocks = cap;
    return blocks ? (int)blocks : 1;
}

static struct cu_impl *impl_of(const struct nlpd_backend *be)
{
    return (struct cu_impl *)be->impl;
}

/* The device this thread last selected through a backend: cudaSetDevice only when it changes (once per thread
 * with one device), not on every call. */
static __thread int tls_device = -1;

/* Every entry point: the lock, then the backend's device for this thread; on failure the lock is not held. */
static int enter(struct cu_impl *im, struct nlpd_error *err)
{
    pthread_mutex_lock(&im->mu);
    if (tls_device != im->device) {
        cudaError_t e = cudaSetDevice(im->device);
        if (e != cudaSuccess) {
            pthread_mutex_unlock(&im->mu);
            char what[64];
            snprintf(what, sizeof what, "selecting device %d", im->device);
            return cu_fail(err, e, what);
        }
        tls_device = im->device;
    }
    return 0;
}

/* A failure in a call that cannot report it (free): kept for the next sync, of whichever thread. */
static void defer_error(struct cu_impl *im, cudaError_t e, const char *what)
{
    if (!im->deferred.code)
        cu_fail(&im->deferred, e, what);
}

/* The calling thread's batch failed: its pending error words are moot (they must not surface in its next batch).
 * Reusing them is safe: a word is cleared on the stream, after the op that may still write it. */
static void drop_pending(struct cu_impl *im)
{
    pthread_t self = pthread_self();
    for (int i = 0; i < CU_ERR_SLOTS; i++)
        if (im->slots[i].in_use && pthread_equal(im->slots[i].owner, self))
            im->slots[i].in_use = 0;
}

static void leave(struct cu_impl *im)
{
    pthread_mutex_unlock(&im->mu);
}

/* ---------------------------------------------------------------- error words ---- */

static int error_message(const struct cu_slot *s, unsigned long long key, struct nlpd_error *err)
{
    if (s->op == NLPD_OP_GATHER_ROWS)
        return nlpd_error_set(err, NLPD_EINVAL, 0, "gather: row index %d out of range (%d rows)",
                              (int)(uint32_t)(key & 0xffffffffu), s->limit[0]);
    int token = (int)(key >> 34), kind = (int)((key >> 32) & 3), v = (int)(uint32_t)(key & 0xffffffffu);
    if (kind == 0)
        return nlpd_error_set(err, NLPD_EINVAL, 0, "token %d: id %d out of range (vocabulary of %d)", token, v,
                              s->limit[0]);
    if (kind == 1)
        return nlpd_error_set(err, NLPD_EINVAL, 0, "token %d: position %d out of range (max_position_embeddings %d)",
                              token, v, s->limit[1]);
    return nlpd_error_set(err, NLPD_EINVAL, 0, "token %d: token type %d out of range (type_vocab_size %d)", token, v,
                          s->limit[2]);
}

/* After a stream synchronisation: reads the error words, frees every slot without an error, and (owner != NULL)
 * reports and frees the owner's first error in queue order. */
static int reap(struct cu_impl *im, const pthread_t *owner, struct nlpd_error *err)
{
    unsigned long long words[CU_ERR_SLOTS];
    cudaError_t e = cudaMemcpy(words, im->d_err, sizeof words, cudaMemcpyDeviceToHost);
    if (e != cudaSuccess)
        return cu_fail(err, e, "reading the error words");
    int first = -1;
    for (int i = 0; i < CU_ERR_SLOTS; i++) {
        struct cu_slot *s = &im->slots[i];
        if (!s->in_use)
            continue;
        if (words[i] == ULLONG_MAX) {
            s->in_use = 0;
        } else if (owner && pthread_equal(s->owner, *owner)) {
            if (first < 0 || s->seq < im->slots[first].seq)
                first = i;
        }
    }
    if (first < 0)
        return 0;
    int rc = error_message(&im->slots[first], words[first], err);
    for (int i = 0; i < CU_ERR_SLOTS; i++) /* the later errors of this thread's batch are moot */
        if (im->slots[i].in_use && pthread_equal(im->slots[i].owner, *owner))
            im->slots[i].in_use = 0;
    return rc;
}

int cu_slot_take(struct cu_impl *im, enum nlpd_op_kind op, int l0, int l1, int l2, struct nlpd_error *err)
{
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < CU_ERR_SLOTS; i++) {
            struct cu_slot *s = &im->slots[i];
            if (s->in_use)
                continue;
            cudaError_t e = cudaMemsetAsync(im->d_err + i, 0xff, sizeof *im->d_err, im->stream);
            if (e != cudaSuccess)
                return cu_fail(err, e, "clearing an error word");
            s->in_use = 1;
            s->op = op;
            s->limit[0] = l0;
            s->limit[1] = l1;
            s->limit[2] = l2;
            s->seq = im->next_seq++;
            s->owner = pthread_self();
            return i;
        }
        /* all in use: wait for the queued work, then reuse the words that saw no error */
        cudaError_t e = cudaStreamSynchronize(im->stream);
        if (e != cudaSuccess)
            return cu_fail(err, e, "synchronising");
        int rc = reap(im, NULL, err);
        if (rc)
            return rc;
    }
    return nlpd_error_set(err, NLPD_EAGAIN, 1, "cuda backend: %d unreported device errors pending", CU_ERR_SLOTS);
}

/* ---------------------------------------------------------------- weights ---- */

static struct cu_weights *find_weights(struct cu_impl *im, const void *p)
{
    const char *c = (const char *)p;
    for (int i = 0; i < im->n_weights; i++) {
        struct cu_weights *w = &im->weights[i];
        if (c >= w->base && c < w->base + w->size)
            return w;
    }
    return NULL;
}

const struct cu_weights *cu_weights_of(struct cu_impl *im, const void *p, struct nlpd_error *err, int *rc)
{
    *rc = 0;
    struct cu_weights *w = find_weights(im, p);
    if (!w || !w->shadow)
        return NULL;
    if (w->dirty_hi > w->dirty_lo) {
        *rc = cu_convert_weights(im, (char *)w->shadow + w->dirty_lo * 2, (const float *)w->base + w->dirty_lo,
                                 w->dirty_hi - w->dirty_lo, err);
        if (*rc)
            return NULL;
        w->dirty_lo = w->dirty_hi = 0;
    }
    return w;
}

/* ---------------------------------------------------------------- vtable ---- */

static int cu_supports(const struct nlpd_backend *be, enum nlpd_op_kind kind)
{
    (void)be;
    return kind >= 0 && kind < NLPD_OP_COUNT && kind != NLPD_OP_ATTENTION_REL; /* DeBERTa: CPU backend only */
}

static int alloc_common(struct nlpd_backend *be, size_t size, struct nlpd_buffer *out, int weights,
                        struct nlpd_error *err)
{
    struct cu_impl *im = impl_of(be);
    size_t rounded = align_up(size ? size : 1);
    if (rounded < size)
        return nlpd_error_set(err, NLPD_ERANGE, 0, "cuda backend: allocation of %zu bytes too large", size);
    int rc = enter(im, err);
    if (rc)
        return rc;
    void *p = NULL, *shadow = NULL;
    cudaError_t e = cudaMalloc(&p, rounded);
    if (e != cudaSuccess) {
        cudaGetLastError(); /* an allocation failure is not sticky: clear it */
        rc = nlpd_error_set(err, e == cudaErrorMemoryAllocation ? NLPD_ENOMEM : NLPD_EIO, 0,
                            "cuda backend: out of device memory allocating %zu bytes (%s)", size, cudaGetErrorName(e));
        goto out;
    }
    if (weights && im->dtype != NLPD_DTYPE_F32) {
        size_t sh = align_up((rounded / sizeof(float)) * 2);
        e = cudaMalloc(&shadow, sh);
        if (e != cudaSuccess) {
            cudaGetLastError();
            cudaFree(p);
            rc = nlpd_error_set(err, NLPD_ENOMEM, 0,
                                "cuda backend: out of device memory allocating the %s copy of %zu bytes of weights",
                                dtype_name(im->dtype), size);
            goto out;
        }
    }
    if (weights) {
        if (im->n_weights == im->cap_weights) {
            int cap = im->cap_weights ? 2 * im->cap_weights : 8;
            struct cu_weights *nw = (struct cu_weights *)realloc(im->weights, (size_t)cap * sizeof *nw);
            if (!nw) {
                cudaFree(p);
                cudaFree(shadow);
                rc = nlpd_error_set(err, NLPD_ENOMEM, 0, "cuda backend: out of memory");
                goto out;
            }
            im->weights = nw;
            im->cap_weights = cap;
        }
        struct cu_weights *w = &im->weights[im->n_weights++];
        w->base = (char *)p;
        w->size = size;
        w->shadow = shadow;
        w->dirty_lo = w->dirty_hi = 0;
    }
    out->backend = be;
    out->ptr = p;
    out->size = size;
out:
    leave(im);
    return rc;
}

static int cu_alloc(struct nlpd_backend *be, size_t size, struct nlpd_buffer *out, struct nlpd_error *err)
{
    return alloc_common(be, size, out, 0, err);
}

static int cu_alloc_weights(struct nlpd_backend *be, size_t size, struct nlpd_buffer *out, struct nlpd_error *err)
{
    return alloc_common(be, size, out, 1, err);
}

static int range_error(const char *what, const struct nlpd_buffer *buf, size_t offset, size_t n, struct nlpd_error *err)
{
    return nlpd_error_set(err, NLPD_ERANGE, 0,
                          "cuda backend: %s of %zu bytes at offset %zu: outside the buffer of %zu bytes", what, n,
                          offset, buf->size);
}

static int copy_fail(struct nlpd_error *err, cudaError_t e, const char *what, size_t n, size_t offset)
{
    char w[96];
    snprintf(w, sizeof w, "%s of %zu bytes at offset %zu", what, n, offset);
    return cu_fail(err, e, w);
}

/* Queues the pending coalesced upload. */
static cudaError_t flush_uploads(struct cu_impl *im)
{
    if (!im->pend_n)
        return cudaSuccess;
    cudaError_t e = cudaMemcpyAsync(im->pend_dst, im->pend_src, im->pend_n, cudaMemcpyHostToDevice, im->stream);
    im->pend_n = 0;
    return e;
}

static int flush_or_fail(struct cu_impl *im, struct nlpd_error *err)
{
    cudaError_t e = flush_uploads(im);
    return e == cudaSuccess ? 0 : cu_fail(err, e, "uploading");
}

static int cu_upload(struct nlpd_backend *be, struct nlpd_buffer *buf, size_t offset, const void *src, size_t n,
                     struct nlpd_error *err)
{
    if (offset > buf->size || n > buf->size - offset)
        return range_error("upload", buf, offset, n, err);
    struct cu_impl *im = impl_of(be);
    int rc = enter(im, err);
    if (rc)
        return rc;
    const unsigned char *s = (const unsigned char *)src;
    char *dst = (char *)buf->ptr + offset;
    size_t left = n;
    cudaError_t e = cudaSuccess;
    while (left && e == cudaSuccess) {
        if (im->stage_pos == im->staging_half) { /* this half is full: hand it over, take the other one */
            if ((e = flush_uploads(im)) != cudaSuccess ||
                (e = cudaEventRecord(im->stage_done[im->stage_cur], im->stream)) != cudaSuccess)
                break;
            im->stage_cur ^= 1;
            im->stage_pos = 0;
            if ((e = cudaEventSynchronize(im->stage_done[im->stage_cur])) != cudaSuccess)
                break;
        }
        size_t chunk = im->staging_half - im->stage_pos;
        if (chunk > left)
            chunk = left;
        unsigned char *st = im->staging + (size_t)im->stage_cur * im->staging_half + im->stage_pos;
        memcpy(st, s, chunk);
        if (im->pend_n && im->pend_dst + im->pend_n == dst && im->pend_src + im->pend_n == st) {
            im->pend_n += chunk; /* continues the pending copy on both sides */
        } else if ((e = flush_uploads(im)) == cudaSuccess) {
            im->pend_dst = dst;
            im->pend_src = st;
            im->pend_n = chunk;
        }
        im->stage_pos += chunk;
        s += chunk;
        dst += chunk;
        left -= chunk;
    }
    if (e == cudaSuccess && n) {
        struct cu_weights *w = find_weights(im, buf->ptr);
        if (w && w->shadow) {
            size_t lo = offset / sizeof(float), hi = (offset + n + sizeof(float) - 1) / sizeof(float);
            if (w->dirty_hi <= w->dirty_lo) {
                w->dirty_lo = lo;
                w->dirty_hi = hi;
            } else {
                w->dirty_lo = lo < w->dirty_lo ? lo : w->dirty_lo;
                w->dirty_hi = hi > w->dirty_hi ? hi : w->dirty_hi;
            }
        }
    }
    leave(im);
    return e == cudaSuccess ? 0 : copy_fail(err, e, "upload", n, offset);
}

static int cu_download(struct nlpd_backend *be, const struct nlpd_buffer *buf, size_t offset, void *dst, size_t n,
                       struct nlpd_error *err)
{
    if (offset > buf->size || n > buf->size - offset)
        return range_error("download", buf, offset, n, err);
    struct cu_impl *im = impl_of(be);
    int rc = enter(im, err);
    if (rc)
        return rc;
    /* everything queued before (uploads included) finishes first; the staging is then free */
    cudaError_t e = flush_uploads(im);
    if (e == cudaSuccess)
        e = cudaStreamSynchronize(im->stream);
    if (e != cudaSuccess) {
        rc = cu_fail(err, e, "synchronising before a download (an earlier op failed on the device)");
        drop_pending(im);
        leave(im);
        return rc;
    }
    /* this thread's device-side errors (bad ids) belong to the batch whose results it is downloading */
    pthread_t self = pthread_self();
    if ((rc = reap(im, &self, err))) {
        leave(im);
        return rc;
    }
    im->stage_cur = 0;
    im->stage_pos = 0;
    const char *src = (const char *)buf->ptr + offset;
    unsigned char *d = (unsigned char *)dst;
    size_t cap = 2 * im->staging_half;
    while (n && e == cudaSuccess) {
        size_t chunk = n < cap ? n : cap;
        e = cudaMemcpyAsync(im->staging, src, chunk, cudaMemcpyDeviceToHost, im->stream);
        if (e == cudaSuccess)
            e = cudaStreamSynchronize(im->stream);
        if (e == cudaSuccess)
            memcpy(d, im->staging, chunk);
        src += chunk;
        d += chunk;
        n -= chunk;
    }
    leave(im);
    return e == cudaSuccess ? 0 : copy_fail(err, e, "download", n, offset);
}

static int cu_run(struct nlpd_backend *be, const struct nlpd_op *op, struct nlpd_error *err)
{
    struct cu_impl *im = impl_of(be);
    int rc = enter(im, err);
    if (rc)
        return rc;
    if ((rc = flush_or_fail(im, err))) { /* the op may read what was uploaded */
        leave(im);
        return rc;
    }
    switch (op->kind) {
    case NLPD_OP_MATMUL: rc = cu_matmul(im, &op->u.matmul, err); break;
    case NLPD_OP_BIAS_ACT: rc = cu_bias_act(im, &op->u.bias_act, err); break;
    case NLPD_OP_LAYER_NORM: rc = cu_layer_norm(im, &op->u.layer_norm, err); break;
    case NLPD_OP_SOFTMAX: rc = cu_softmax(im, &op->u.softmax, err); break;
    case NLPD_OP_ATTENTION: rc = cu_attention(im, &op->u.attention, err); break;
    case NLPD_OP_EMBED: rc = cu_embed(im, &op->u.embed, err); break;
    case NLPD_OP_ATTENTION_KV: rc = cu_attention_kv(im, &op->u.attention_kv, err); break;
    case NLPD_OP_GATHER_ROWS: rc = cu_gather_rows(im, &op->u.gather_rows, err); break;
    default: rc = nlpd_error_set(err, NLPD_EINVAL, 0, "cuda backend: unknown op %d", (int)op->kind); break;
    }
    if (!rc) {
        cudaError_t e = cudaGetLastError(); /* launch failures */
        if (e != cudaSuccess)
            rc = cu_fail(err, e, "launching an op");
    }
    if (rc) /* the caller abandons this batch */
        drop_pending(im);
    leave(im);
    return rc;
}

static int cu_sync(struct nlpd_backend *be, struct nlpd_error *err)
{
    struct cu_impl *im = impl_of(be);
    int rc = enter(im, err);
    if (rc)
        return rc;
    cudaError_t e = flush_uploads(im);
    if (e == cudaSuccess)
        e = cudaStreamSynchronize(im->stream);
    if (im->deferred.code) { /* reported once, to the first thread that asks */
        rc = nlpd_error_set(err, im->deferred.code, 0, "%s", im->deferred.message);
        nlpd_error_clear(&im->deferred);
    } else if (e != cudaSuccess) {
        rc = cu_fail(err, e, "synchronising");
        drop_pending(im);
    } else {
        pthread_t self = pthread_self();
        rc = reap(im, &self, err);
    }
    leave(im);
    return rc;
}

static void cu_free(struct nlpd_backend *be, struct nlpd_buffer *buf)
{
    struct cu_impl *im = impl_of(be);
    struct nlpd_error why = {};
    if (enter(im, &why)) { /* still free what we can: the lock is taken again without the device */
        pthread_mutex_lock(&im->mu);
        if (!im->deferred.code)
            im->deferred = why;
    }
    cudaError_t e = flush_uploads(im); /* a pending copy may target this buffer: queued before it is freed */
    if (e != cudaSuccess)
        defer_error(im, e, "uploading");
    for (int i = 0; i < im->n_weights; i++)
        if (im->weights[i].base == (char *)buf->ptr) {
            if ((e = cudaFree(im->weights[i].shadow)) != cudaSuccess)
                defer_error(im, e, "freeing a weight shadow");
            im->weights[i] = im->weights[--im->n_weights];
            break;
        }
    if ((e = cudaFree(buf->ptr)) != cudaSuccess) /* waits for the device to finish with it */
        defer_error(im, e, "freeing a buffer (an earlier op failed on the device)");
    buf->ptr = NULL;
    buf->size = 0;
    leave(im);
}

static void release(struct cu_impl *im)
{
    /* destroy cannot report: without the device the frees below fail and leak nothing the process keeps */
    tls_device = cudaSetDevice(im->device) == cudaSuccess ? im->device : -1;
    im->pend_n = 0; /* a pending upload into buffers about to go is moot */
    if (im->stream)
        cudaStreamSynchronize(im->stream);
    for (int i = 0; i < im->n_weights; i++) /* buffers their owners never freed */
        cudaFree(im->weights[i].shadow);
    free(im->weights);
    if (im->blas)
        cublasDestroy(im->blas);
    for (int i = 0; i < 2; i++)
        if (im->stage_done[i])
            cudaEventDestroy(im->stage_done[i]);
    if (im->staging)
        cudaFreeHost(im->staging);
    if (im->arena)
        cudaFree(im->arena);
    if (im->stream)
        cudaStreamDestroy(im->stream);
    pthread_mutex_destroy(&im->mu);
    free(im);
}

static void cu_destroy(struct nlpd_backend *be)
{
    release(impl_of(be));
    free(be);
}

static const struct nlpd_backend_ops cuda_ops = {
    /* .version = */ NLPD_BACKEND_API_VERSION,
    /* .name = */ "cuda",
    /* .supports = */ cu_supports,
    /* .alloc = */ cu_alloc,
    /* .upload = */ cu_upload,
    /* .download = */ cu_download,
    /* .run = */ cu_run,
    /* .sync = */ cu_sync,
    /* .free = */ cu_free,
    /* .destroy = */ cu_destroy,
    /* .alloc_weights = */ cu_alloc_weights,
};

/* ---------------------------------------------------------------- creation ---- */

static size_t arena_bytes(const struct nlpd_backend_opts *o)
{
    if (o->arena_bytes)
        return o->arena_bytes;
    const char *env = getenv("NLPD_CUDA_ARENA_MB");
    if (env && *env) {
        char *end;
        unsigned long long mb = strtoull(env, &end, 10);
        if (!*end && mb >= 16 && mb <= (1ull << 20))
            return (size_t)mb << 20;
    }
    return CU_DEFAULT_ARENA;
}

/* NLPD_CUDA_MATH: "tf32" (the default) lets fp32 products use TF32 tensor cores (inputs rounded to 10 mantissa
 * bits, fp32 accumulation; ~8x the fp32 rate on an A100/H100), "strict" keeps IEEE fp32 (CPU parity to 1e-4).
 * 1 tf32, 0 strict, -1 another value. */
static int math_tf32(void)
{
    const char *m = getenv("NLPD_CUDA_MATH");
    if (!m || !*m || !strcmp(m, "tf32"))
        return 1;
    return !strcmp(m, "strict") ? 0 : -1;
}

extern "C" __attribute__((visibility("default"))) struct nlpd_backend *
nlpd_cuda_backend_create(const struct nlpd_backend_opts *o, unsigned long abi, struct nlpd_error *err)
{
    if (abi != NLPD_CUDA_ABI) {
        nlpd_error_set(err, NLPD_EINVAL, 0,
                       "libnlpd_cuda.so was built from another version of nlpd_kernels.h (rebuild it with nlpd)");
        return NULL;
    }
    int tf32 = math_tf32();
    if (tf32 < 0) {
        nlpd_error_set(err, NLPD_EINVAL, 0, "NLPD_CUDA_MATH must be tf32 or strict, not \"%.40s\"",
                       getenv("NLPD_CUDA_MATH"));
        return NULL;
    }
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        nlpd_error_set(err, NLPD_ENOTFOUND, 0, "no CUDA device (cudaGetDeviceCount: %s)",
                       e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        return NULL;
    }
    if (o->device < 0 || o->device >= count) {
        nlpd_error_set(err, NLPD_ENOTFOUND, 0, "CUDA device %d does not exist (%d device%s)", o->device, count,
                       count == 1 ? "" : "s");
        return NULL;
    }
    cudaDeviceProp prop;
    if ((e = cudaSetDevice(o->device)) != cudaSuccess ||
        (e = cudaGetDeviceProperties(&prop, o->device)) != cudaSuccess) {
        tls_device = -1;
        cu_fail(err, e, "opening the device");
        return NULL;
    }
    tls_device = o->device;
    if (prop.major < 8) {
        nlpd_error_set(err, NLPD_ENOTFOUND, 0,
                       "CUDA device %d (%s) has compute capability %d.%d; this build needs 8.0 or newer", o->device,
                       prop.name, prop.major, prop.minor);
        return NULL;
    }
    struct nlpd_backend *be = (struct nlpd_backend *)calloc(1, sizeof *be);
    struct cu_impl *im = (struct cu_impl *)calloc(1, sizeof *im);
    if (!be || !im) {
        free(be);
        free(im);
        nlpd_error_set(err, NLPD_ENOMEM, 0, "cuda backend: out of memory");
        return NULL;
    }
    pthread_mutex_init(&im->mu, NULL);
    im->device = o->device;
    im->dtype = o->dtype;
    im->tf32 = tf32;
    im->sm_count = prop.multiProcessorCount > 0 ? prop.multiProcessorCount : 1;
    size_t want = arena_bytes(o);
    if (want < CU_BLAS_WS_BYTES + ((size_t)16 << 20))
        want = CU_BLAS_WS_BYTES + ((size_t)16 << 20);
    cublasStatus_t bs;
    if ((e = cudaStreamCreateWithFlags(&im->stream, cudaStreamNonBlocking)) != cudaSuccess) {
        cu_fail(err, e, "creating a stream");
        goto fail;
    }
    if ((e = cudaMalloc((void **)&im->arena, want)) != cudaSuccess) {
        cudaGetLastError();
        nlpd_error_set(err, NLPD_ENOMEM, 0, "cuda backend: cannot allocate the %zu MiB arena on device %d (%s)",
                       want >> 20, o->device, cudaGetErrorName(e));
        goto fail;
    }
    im->arena_size = want;
    im->d_err = (unsigned long long *)(im->arena + CU_BLAS_WS_BYTES);
    im->scratch = im->arena + CU_BLAS_WS_BYTES + align_up(CU_ERR_SLOTS * sizeof(unsigned long long));
    im->scratch_size = want - (size_t)(im->scratch - im->arena);
    if ((e = cudaHostAlloc((void **)&im->staging, CU_STAGING_BYTES, cudaHostAllocDefault)) != cudaSuccess) {
        cudaGetLastError();
        nlpd_error_set(err, NLPD_ENOMEM, 0, "cuda backend: cannot allocate %zu MiB of pinned host memory (%s)",
                       CU_STAGING_BYTES >> 20, cudaGetErrorName(e));
        goto fail;
    }
    im->staging_half = CU_STAGING_BYTES / 2;
    for (int i = 0; i < 2; i++)
        if ((e = cudaEventCreateWithFlags(&im->stage_done[i], cudaEventDisableTiming)) != cudaSuccess) {
            cu_fail(err, e, "creating an event");
            goto fail;
        }
    if ((bs = cublasCreate(&im->blas)) != CUBLAS_STATUS_SUCCESS || (bs = cublasSetStream(im->blas, im->stream)) ||
        (bs = cublasSetWorkspace(im->blas, im->arena, CU_BLAS_WS_BYTES)) ||
        (bs = cublasSetMathMode(im->blas, tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH))) {
        cu_blas_fail(err, bs, "setting up cuBLAS");
        goto fail;
    }
    if ((e = cudaMemsetAsync(im->d_err, 0xff, CU_ERR_SLOTS * sizeof(unsigned long long), im->stream)) != cudaSuccess ||
        (e = cudaStreamSynchronize(im->stream)) != cudaSuccess) {
        cu_fail(err, e, "initialising the arena");
        goto fail;
    }
    be->ops = &cuda_ops;
    be->impl = im;
    snprintf(be->reason, sizeof be->reason, "device %d: %.100s, sm_%d%d, %zu MiB, %d SMs; %s matrix products, fp32 %s",
             o->device, prop.name, prop.major, prop.minor, (size_t)(prop.totalGlobalMem >> 20),
             prop.multiProcessorCount, dtype_name(o->dtype), tf32 ? "on TF32 tensor cores" : "strict");
    return be;
fail:
    release(im);
    free(be);
    return NULL;
}
