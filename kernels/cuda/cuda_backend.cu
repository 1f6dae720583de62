/* The CUDA backend: the vtable of nlpd_kernels.h over device memory. Each calling thread gets its own context
 * (struct cu_ctx: a stream, a cuBLAS handle, a scratch arena, pinned staging for uploads and downloads, device
 * error words for ops that find bad indices, reported by sync in the CPU backend's words), so worker threads
 * queue work concurrently instead of serialising on one lock and one stream. Built into libnlpd_cuda.so, loaded
 * by backend.c. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_entry.h"
#include "cuda_internal.h"

#define CU_ALIGN         256
#define CU_STAGING_BYTES ((size_t)16 << 20)
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

int cu_grid(const struct cu_ctx *im, size_t n, int block)
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
/* The context this thread last used, keyed by the backend's id (an address could be reused by a new backend). */
static __thread unsigned long tls_id;
static __thread struct cu_ctx *tls_ctx;
static unsigned long next_backend_id;

static int select_device(int device, struct nlpd_error *err)
{
    if (tls_device == device)
        return 0;
    cudaError_t e = cudaSetDevice(device);
    if (e != cudaSuccess) {
        char what[64];
        snprintf(what, sizeof what, "selecting device %d", device);
        return cu_fail(err, e, what);
    }
    tls_device = device;
    return 0;
}

static size_t align_up(size_t n);
static int ctx_create(struct cu_impl *im, struct cu_ctx **out, struct nlpd_error *err);

/* This thread's context of im, created on first use (im->mu held only then). */
static int ctx_of(struct cu_impl *im, struct cu_ctx **out, struct nlpd_error *err)
{
    if (tls_ctx && tls_id == im->id) {
        *out = tls_ctx;
        return 0;
    }
    pthread_t self = pthread_self();
    pthread_mutex_lock(&im->mu);
    struct cu_ctx *c = im->ctxs;
    while (c && !pthread_equal(c->owner, self))
        c = c->next;
    int rc = 0;
    if (!c && !(rc = ctx_create(im, &c, err))) {
        c->next = im->ctxs;
        im->ctxs = c;
    }
    pthread_mutex_unlock(&im->mu);
    if (rc)
        return rc;
    tls_id = im->id;
    tls_ctx = c;
    *out = c;
    return 0;
}

/* Queues the pending coalesced upload (the context's mu held). */
static cudaError_t flush_uploads(struct cu_ctx *c)
{
    if (!c->pend_n)
        return cudaSuccess;
    cudaError_t e = cudaMemcpyAsync(c->pend_dst, c->pend_src, c->pend_n, cudaMemcpyHostToDevice, c->stream);
    c->pend_n = 0;
    CU_COUNT(c->impl, n_copies, 1);
    return e;
}

static void defer_error(struct cu_impl *im, cudaError_t e, const char *what);

/* Weights other threads uploaded since self last looked: their pending copies are queued and self's stream waits
 * for them. im->mu held, self's mu not (lock order). */
static int publish_locked(struct cu_impl *im, struct cu_ctx *self, struct nlpd_error *err)
{
    cudaError_t e = cudaSuccess;
    for (struct cu_ctx *c = im->ctxs; c && e == cudaSuccess; c = c->next) {
        if (c == self)
            continue;
        pthread_mutex_lock(&c->mu);
        if (c->unpublished) {
            if ((e = flush_uploads(c)) == cudaSuccess &&
                (e = cudaEventRecord(c->pub_event, c->stream)) == cudaSuccess) {
                c->unpublished = 0;
                c->pub_recorded = 1;
            }
        }
        int recorded = c->pub_recorded;
        pthread_mutex_unlock(&c->mu);
        if (e == cudaSuccess && recorded && self)
            e = cudaStreamWaitEvent(self->stream, c->pub_event, 0);
    }
    return e == cudaSuccess ? 0 : cu_fail(err, e, "waiting for weights another thread uploaded");
}

/* Every entry point that queues work: this thread's device and context, caught up with other threads' weight
 * uploads, its mu held. On failure nothing is held. */
static int enter(struct cu_impl *im, struct cu_ctx **out, struct nlpd_error *err)
{
    struct cu_ctx *c;
    int rc = select_device(im->device, err);
    if (rc || (rc = ctx_of(im, &c, err)))
        return rc;
    unsigned long gen = __atomic_load_n(&im->pub_gen, __ATOMIC_ACQUIRE);
    if (gen != c->pub_seen) {
        pthread_mutex_lock(&im->mu);
        rc = publish_locked(im, c, err);
        pthread_mutex_unlock(&im->mu);
        if (rc)
            return rc;
        c->pub_seen = gen;
    }
    pthread_mutex_lock(&c->mu);
    *out = c;
    return 0;
}

/* A failure in a call that cannot report it (free): kept for the next sync, of whichever thread. */
static void defer_error(struct cu_impl *im, cudaError_t e, const char *what)
{
    pthread_mutex_lock(&im->wmu);
    if (!im->deferred.code)
        cu_fail(&im->deferred, e, what);
    pthread_mutex_unlock(&im->wmu);
}

/* The calling thread's batch failed: its pending error words are moot (they must not surface in its next batch).
 * Reusing them is safe: a word is cleared on the stream, after the op that may still write it. */
static void drop_pending(struct cu_ctx *im)
{
    for (int i = 0; i < CU_ERR_SLOTS; i++)
        im->slots[i].in_use = 0;
}

static void leave(struct cu_ctx *c)
{
    pthread_mutex_unlock(&c->mu);
}

/* ---------------------------------------------------------------- error words ---- */

static int error_message(const struct cu_slot *s, unsigned long long key, struct nlpd_error *err)
{
    if (s->op == NLPD_OP_ATTENTION_REL) /* the CPU's message */
        return nlpd_error_set(err, NLPD_EINVAL, 0, "attention_rel: relative index %d out of order or range",
                              (int)(uint32_t)(key & 0xffffffffu));
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
static int reap(struct cu_ctx *im, const pthread_t *owner, struct nlpd_error *err)
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

int cu_slots_reclaim(struct cu_ctx *im, struct nlpd_error *err)
{
    cudaError_t e = cudaStreamSynchronize(im->stream);
    return e != cudaSuccess ? cu_fail(err, e, "synchronising") : reap(im, NULL, err);
}

int cu_slot_take(struct cu_ctx *im, enum nlpd_op_kind op, int l0, int l1, int l2, struct nlpd_error *err)
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
        int rc = cu_slots_reclaim(im, err);
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

/* w's shadow brought up to date with its uploads (im->wmu held): converted once, by whichever thread reads it
 * first; the others see it clean only once it is done. */
static int convert_dirty(struct cu_ctx *c, struct cu_weights *w, struct nlpd_error *err)
{
    if (!w->shadow || w->dirty_hi <= w->dirty_lo)
        return 0;
    int rc = cu_convert_weights(c, (char *)w->shadow + w->dirty_lo * 2, (const float *)w->base + w->dirty_lo,
                                w->dirty_hi - w->dirty_lo, err);
    if (rc)
        return rc;
    cudaError_t e = cudaStreamSynchronize(c->stream);
    if (e != cudaSuccess)
        return cu_fail(err, e, "converting weights to half precision");
    w->dirty_lo = w->dirty_hi = 0;
    return 0;
}

int cu_weights_of(struct cu_ctx *c, const void *p, struct cu_weights *out, struct nlpd_error *err)
{
    struct cu_impl *im = c->impl;
    pthread_mutex_lock(&im->wmu);
    struct cu_weights *w = find_weights(im, p);
    int rc = w && w->shadow;
    if (rc) {
        int crc = convert_dirty(c, w, err);
        if (crc)
            rc = crc;
    }
    if (rc > 0)
        *out = *w;
    pthread_mutex_unlock(&im->wmu);
    return rc;
}

int cu_weights_clean(struct cu_ctx *c, struct nlpd_error *err)
{
    struct cu_impl *im = c->impl;
    int rc = 0;
    pthread_mutex_lock(&im->wmu);
    for (int i = 0; i < im->n_weights && !rc; i++)
        rc = convert_dirty(c, &im->weights[i], err);
    pthread_mutex_unlock(&im->wmu);
    return rc;
}

/* ---------------------------------------------------------------- vtable ---- */

static int cu_supports(const struct nlpd_backend *be, enum nlpd_op_kind kind)
{
    (void)be;
    return kind >= 0 && kind < NLPD_OP_COUNT;
}

static int alloc_common(struct nlpd_backend *be, size_t size, struct nlpd_buffer *out, int weights,
                        struct nlpd_error *err)
{
    struct cu_impl *im = impl_of(be);
    size_t rounded = align_up(size ? size : 1);
    if (rounded < size)
        return nlpd_error_set(err, NLPD_ERANGE, 0, "cuda backend: allocation of %zu bytes too large", size);
    int rc = select_device(im->device, err);
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
        pthread_mutex_lock(&im->wmu);
        if (im->n_weights == im->cap_weights) {
            int cap = im->cap_weights ? 2 * im->cap_weights : 8;
            struct cu_weights *nw = (struct cu_weights *)realloc(im->weights, (size_t)cap * sizeof *nw);
            if (!nw) {
                cudaFree(p);
                cudaFree(shadow);
                pthread_mutex_unlock(&im->wmu);
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
        pthread_mutex_unlock(&im->wmu);
    }
    out->backend = be;
    out->ptr = p;
    out->size = size;
out:
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

static int flush_or_fail(struct cu_ctx *c, struct nlpd_error *err)
{
    cudaError_t e = flush_uploads(c);
    return e == cudaSuccess ? 0 : cu_fail(err, e, "uploading");
}

/* An upload into a weight buffer: its dirty range grows (the shadow is converted before the next product that
 * reads it) and the uploader's stream has weights other threads must wait for. */
static void note_upload(struct cu_impl *im, struct cu_ctx *c, const struct nlpd_buffer *buf, size_t offset, size_t n)
{
    pthread_mutex_lock(&im->wmu);
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
    pthread_mutex_unlock(&im->wmu);
    if (w && !c->unpublished) {
        c->unpublished = 1;
        __atomic_add_fetch(&im->pub_gen, 1, __ATOMIC_RELEASE);
    }
}

static int cu_upload(struct nlpd_backend *be, struct nlpd_buffer *buf, size_t offset, const void *src, size_t n,
                     struct nlpd_error *err)
{
    if (offset > buf->size || n > buf->size - offset)
        return range_error("upload", buf, offset, n, err);
    struct cu_impl *im = impl_of(be);
    struct cu_ctx *c;
    int rc = enter(im, &c, err);
    if (rc)
        return rc;
    const unsigned char *s = (const unsigned char *)src;
    char *dst = (char *)buf->ptr + offset;
    size_t left = n;
    cudaError_t e = cudaSuccess;
    while (left && e == cudaSuccess) {
        if (c->stage_pos == c->staging_half) { /* this half is full: hand it over, take the other one */
            if ((e = flush_uploads(c)) != cudaSuccess ||
                (e = cudaEventRecord(c->stage_done[c->stage_cur], c->stream)) != cudaSuccess)
                break;
            c->stage_cur ^= 1;
            c->stage_pos = 0;
            if ((e = cudaEventSynchronize(c->stage_done[c->stage_cur])) != cudaSuccess)
                break;
        }
        size_t chunk = c->staging_half - c->stage_pos;
        if (chunk > left)
            chunk = left;
        unsigned char *st = c->staging + (size_t)c->stage_cur * c->staging_half + c->stage_pos;
        memcpy(st, s, chunk);
        if (c->pend_n && c->pend_dst + c->pend_n == dst && c->pend_src + c->pend_n == st) {
            c->pend_n += chunk; /* continues the pending copy on both sides */
        } else if ((e = flush_uploads(c)) == cudaSuccess) {
            c->pend_dst = dst;
            c->pend_src = st;
            c->pend_n = chunk;
        }
        c->stage_pos += chunk;
        s += chunk;
        dst += chunk;
        left -= chunk;
    }
    if (e == cudaSuccess && n)
        note_upload(im, c, buf, offset, n);
    leave(c);
    return e == cudaSuccess ? 0 : copy_fail(err, e, "upload", n, offset);
}

/* Rows gathered into staging back to back, then one cudaMemcpy2DAsync per staging half they fill (backend.c has
 * checked the range). Rows wider than a staging half go one by one. */
static int cu_upload_2d(struct nlpd_backend *be, struct nlpd_buffer *buf, size_t offset, size_t dpitch, const void *src,
                        size_t spitch, size_t width, size_t rows, struct nlpd_error *err)
{
    const unsigned char *s = (const unsigned char *)src;
    if (width > CU_STAGING_BYTES / 2) {
        for (size_t r = 0; r < rows; r++) {
            int rc = cu_upload(be, buf, offset + r * dpitch, s + r * spitch, width, err);
            if (rc)
                return rc;
        }
        return 0;
    }
    struct cu_impl *im = impl_of(be);
    struct cu_ctx *c;
    int rc = enter(im, &c, err);
    if (rc)
        return rc;
    char *dst = (char *)buf->ptr + offset;
    size_t left = rows;
    cudaError_t e = flush_uploads(c); /* copies stay in upload order */
    while (left && e == cudaSuccess) {
        if (c->stage_pos + width > c->staging_half) { /* this half is full: hand it over, take the other one */
            if ((e = cudaEventRecord(c->stage_done[c->stage_cur], c->stream)) != cudaSuccess)
                break;
            c->stage_cur ^= 1;
            c->stage_pos = 0;
            if ((e = cudaEventSynchronize(c->stage_done[c->stage_cur])) != cudaSuccess)
                break;
        }
        size_t n = (c->staging_half - c->stage_pos) / width;
        if (n > left)
            n = left;
        unsigned char *st = c->staging + (size_t)c->stage_cur * c->staging_half + c->stage_pos;
        for (size_t r = 0; r < n; r++)
            memcpy(st + r * width, s + r * spitch, width);
        e = cudaMemcpy2DAsync(dst, dpitch, st, width, width, n, cudaMemcpyHostToDevice, c->stream);
        CU_COUNT(im, n_copies, 1);
        c->stage_pos += n * width;
        s += n * spitch;
        dst += n * dpitch;
        left -= n;
    }
    if (e == cudaSuccess)
        note_upload(im, c, buf, offset, (rows - 1) * dpitch + width);
    leave(c);
    return e == cudaSuccess ? 0 : copy_fail(err, e, "strided upload", (rows - 1) * dpitch + width, offset);
}

static int cu_download(struct nlpd_backend *be, const struct nlpd_buffer *buf, size_t offset, void *dst, size_t n,
                       struct nlpd_error *err)
{
    if (offset > buf->size || n > buf->size - offset)
        return range_error("download", buf, offset, n, err);
    struct cu_impl *im = impl_of(be);
    struct cu_ctx *c;
    int rc = enter(im, &c, err);
    if (rc)
        return rc;
    /* everything this thread queued before (uploads included) finishes first; the staging is then free */
    cudaError_t e = flush_uploads(c);
    if (e == cudaSuccess)
        e = cudaStreamSynchronize(c->stream);
    if (e != cudaSuccess) {
        rc = cu_fail(err, e, "synchronising before a download (an earlier op failed on the device)");
        drop_pending(c);
        leave(c);
        return rc;
    }
    /* this thread's device-side errors (bad ids) belong to the batch whose results it is downloading */
    pthread_t self = pthread_self();
    if ((rc = reap(c, &self, err))) {
        leave(c);
        return rc;
    }
    c->stage_cur = 0;
    c->stage_pos = 0;
    const char *src = (const char *)buf->ptr + offset;
    unsigned char *d = (unsigned char *)dst;
    size_t cap = 2 * c->staging_half;
    while (n && e == cudaSuccess) {
        size_t chunk = n < cap ? n : cap;
        e = cudaMemcpyAsync(c->staging, src, chunk, cudaMemcpyDeviceToHost, c->stream);
        if (e == cudaSuccess)
            e = cudaStreamSynchronize(c->stream);
        if (e == cudaSuccess)
            memcpy(d, c->staging, chunk);
        src += chunk;
        d += chunk;
        n -= chunk;
    }
    leave(c);
    return e == cudaSuccess ? 0 : copy_fail(err, e, "download", n, offset);
}

int cu_dispatch(struct cu_ctx *c, const struct nlpd_op *op, struct nlpd_error *err)
{
    int rc;
    switch (op->kind) {
    case NLPD_OP_MATMUL: rc = cu_matmul(c, &op->u.matmul, err); break;
    case NLPD_OP_BIAS_ACT: rc = cu_bias_act(c, &op->u.bias_act, err); break;
    case NLPD_OP_LAYER_NORM: rc = cu_layer_norm(c, &op->u.layer_norm, err); break;
    case NLPD_OP_SOFTMAX: rc = cu_softmax(c, &op->u.softmax, err); break;
    case NLPD_OP_ATTENTION: rc = cu_attention(c, &op->u.attention, err); break;
    case NLPD_OP_EMBED: rc = cu_embed(c, &op->u.embed, err); break;
    case NLPD_OP_ATTENTION_KV: rc = cu_attention_kv(c, &op->u.attention_kv, err); break;
    case NLPD_OP_GATHER_ROWS: rc = cu_gather_rows(c, &op->u.gather_rows, err); break;
    case NLPD_OP_LOG_SOFTMAX_TOPK: rc = cu_log_softmax_topk(c, &op->u.topk, err); break;
    case NLPD_OP_ATTENTION_REL: rc = cu_attention_rel(c, &op->u.attention_rel, err); break;
    default: rc = nlpd_error_set(err, NLPD_EINVAL, 0, "cuda backend: unknown op %d", (int)op->kind); break;
    }
    if (!rc) {
        cudaError_t e = cudaGetLastError(); /* launch failures */
        if (e != cudaSuccess)
            rc = cu_fail(err, e, "launching an op");
    }
    return rc;
}

static int cu_run(struct nlpd_backend *be, const struct nlpd_op *op, struct nlpd_error *err)
{
    struct cu_impl *im = impl_of(be);
    struct cu_ctx *c;
    int rc = enter(im, &c, err);
    if (rc)
        return rc;
    if (c->rec.on) { /* inside a graph region: runs at graph_end */
        if (cu_grec_add(&c->rec, op))
            rc = nlpd_error_set(err, NLPD_ENOMEM, 0, "cuda backend: out of memory recording a graph region");
        leave(c);
        return rc;
    }
    if (!(rc = flush_or_fail(c, err))) /* the op may read what was uploaded */
        rc = cu_dispatch(c, op, err);
    if (rc) /* the caller abandons this batch */
        drop_pending(c);
    leave(c);
    return rc;
}

static int cu_graph_begin(struct nlpd_backend *be, struct nlpd_error *err)
{
    struct cu_ctx *c;
    int rc = enter(impl_of(be), &c, err);
    if (rc)
        return rc;
    cu_grec_begin(&c->rec);
    leave(c);
    return 0;
}

static int cu_graph_end(struct nlpd_backend *be, struct nlpd_error *err)
{
    struct cu_ctx *c;
    int rc = enter(impl_of(be), &c, err);
    if (rc)
        return rc;
    /* the region's uploads land before its ops, whether they run from a graph or not */
    if ((rc = flush_or_fail(c, err)) || (rc = cu_graph_run(c, err)))
        drop_pending(c);
    c->rec.on = 0;
    c->rec.n = 0;
    leave(c);
    return rc;
}

static void cu_graph_abort(struct nlpd_backend *be)
{
    struct cu_ctx *c;
    struct nlpd_error ignored = {};
    if (enter(impl_of(be), &c, &ignored))
        return;
    c->rec.on = 0;
    c->rec.n = 0;
    leave(c);
}

static void cu_stats(const struct nlpd_backend *be, struct nlpd_backend_stats *out)
{
    struct cu_impl *im = impl_of(be);
    out->upload_copies = __atomic_load_n(&im->n_copies, __ATOMIC_RELAXED);
    out->graph_launches = __atomic_load_n(&im->n_launch, __ATOMIC_RELAXED);
    out->graph_captures = __atomic_load_n(&im->n_capture, __ATOMIC_RELAXED);
    out->graph_eager = __atomic_load_n(&im->n_eager, __ATOMIC_RELAXED);
    out->graph_evictions = __atomic_load_n(&im->n_evict, __ATOMIC_RELAXED);
    out->graph_invalidations = __atomic_load_n(&im->n_inval, __ATOMIC_RELAXED);
}

static int cu_sync(struct nlpd_backend *be, struct nlpd_error *err)
{
    struct cu_impl *im = impl_of(be);
    struct cu_ctx *c;
    int rc = enter(im, &c, err);
    if (rc)
        return rc;
    cudaError_t e = flush_uploads(c);
    if (e == cudaSuccess)
        e = cudaStreamSynchronize(c->stream);
    struct nlpd_error deferred = {};
    pthread_mutex_lock(&im->wmu); /* reported once, to the first thread that asks */
    deferred = im->deferred;
    nlpd_error_clear(&im->deferred);
    pthread_mutex_unlock(&im->wmu);
    if (deferred.code) {
        rc = nlpd_error_set(err, deferred.code, 0, "%s", deferred.message);
    } else if (e != cudaSuccess) {
        rc = cu_fail(err, e, "synchronising");
        drop_pending(c);
    } else {
        pthread_t self = pthread_self();
        rc = reap(c, &self, err);
    }
    leave(c);
    return rc;
}

/* Before a buffer goes: every context's pending copy is queued (one may target it), and every cached graph is
 * dropped (one may read it, and a new buffer at the same address would make its op list match). im->mu held. */
static void flush_all_locked(struct cu_impl *im)
{
    for (struct cu_ctx *c = im->ctxs; c; c = c->next) {
        pthread_mutex_lock(&c->mu);
        cudaError_t e = flush_uploads(c);
        CU_COUNT(im, n_inval, cu_graph_drop_all(c));
        pthread_mutex_unlock(&c->mu);
        if (e != cudaSuccess)
            defer_error(im, e, "uploading");
    }
}

static void cu_free(struct nlpd_backend *be, struct nlpd_buffer *buf)
{
    struct cu_impl *im = impl_of(be);
    struct nlpd_error why = {};
    if (select_device(im->device, &why)) { /* still free what we can */
        pthread_mutex_lock(&im->wmu);
        if (!im->deferred.code)
            im->deferred = why;
        pthread_mutex_unlock(&im->wmu);
    }
    pthread_mutex_lock(&im->mu);
    flush_all_locked(im);
    pthread_mutex_unlock(&im->mu);
    cudaError_t e;
    void *shadow = NULL;
    pthread_mutex_lock(&im->wmu);
    for (int i = 0; i < im->n_weights; i++)
        if (im->weights[i].base == (char *)buf->ptr) {
            shadow = im->weights[i].shadow;
            im->weights[i] = im->weights[--im->n_weights];
            break;
        }
    pthread_mutex_unlock(&im->wmu);
    if (shadow && (e = cudaFree(shadow)) != cudaSuccess)
        defer_error(im, e, "freeing a weight shadow");
    if ((e = cudaFree(buf->ptr)) != cudaSuccess) /* waits for the device to finish with it */
        defer_error(im, e, "freeing a buffer (an earlier op failed on the device)");
    buf->ptr = NULL;
    buf->size = 0;
}

static void ctx_release(struct cu_ctx *c)
{
    cu_graph_drop_all(c); /* waits for the stream when it has graphs */
    cu_grec_free(&c->rec);
    c->pend_n = 0; /* a pending upload into buffers about to go is moot */
    if (c->stream)
        cudaStreamSynchronize(c->stream);
    if (c->lt) {
        cu_lt_release(c);
        cublasLtDestroy(c->lt);
    }
    if (c->blas)
        cublasDestroy(c->blas);
    for (int i = 0; i < 2; i++)
        if (c->stage_done[i])
            cudaEventDestroy(c->stage_done[i]);
    if (c->pub_event)
        cudaEventDestroy(c->pub_event);
    if (c->staging)
        cudaFreeHost(c->staging);
    if (c->arena)
        cudaFree(c->arena);
    if (c->stream)
        cudaStreamDestroy(c->stream);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static void release(struct cu_impl *im)
{
    /* destroy cannot report: without the device the frees below fail and leak nothing the process keeps */
    tls_device = cudaSetDevice(im->device) == cudaSuccess ? im->device : -1;
    if (tls_id == im->id)
        tls_ctx = NULL;
    while (im->ctxs) {
        struct cu_ctx *c = im->ctxs;
        im->ctxs = c->next;
        ctx_release(c);
    }
    for (int i = 0; i < im->n_weights; i++) /* buffers their owners never freed */
        cudaFree(im->weights[i].shadow);
    free(im->weights);
    pthread_mutex_destroy(&im->mu);
    pthread_mutex_destroy(&im->wmu);
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
    /* .upload_2d = */ cu_upload_2d,
    /* .graph_begin = */ cu_graph_begin,
    /* .graph_end = */ cu_graph_end,
    /* .graph_abort = */ cu_graph_abort,
    /* .stats = */ cu_stats,
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

/* NLPD_CUDA_ACT: unset, "" or "half" keeps activations in the backend's fp16/bf16 between ops; "fp32" keeps them
 * fp32 (converted around each product, for A/B runs). NLPD_CUDA_EPILOGUE: "lt" (the default) fuses bias +
 * activation into the cuBLASLt product where Lt has that epilogue, "separate" runs them as their own pass.
 * 1 / 0 as said, -1 another value. */
static int env_choice(const char *name, const char *yes, const char *no)
{
    const char *v = getenv(name);
    if (!v || !*v || !strcmp(v, yes))
        return 1;
    return !strcmp(v, no) ? 0 : -1;
}

/* A thread's context: stream, cuBLAS handle, arena (workspace | error words | scratch), pinned staging. im->mu
 * held; the calling thread has selected the device. */
static int ctx_create(struct cu_impl *im, struct cu_ctx **out, struct nlpd_error *err)
{
    struct cu_ctx *c = (struct cu_ctx *)calloc(1, sizeof *c);
    if (!c)
        return nlpd_error_set(err, NLPD_ENOMEM, 0, "cuda backend: out of memory");
    pthread_mutex_init(&c->mu, NULL);
    c->impl = im;
    c->owner = pthread_self();
    c->dtype = im->dtype;
    c->act_dtype = im->act_dtype;
    c->epi_lt = im->epi_lt;
    c->tf32 = im->tf32;
    c->sm_count = im->sm_count;
    /* weights published before this context existed: the first call waits for them */
    c->pub_seen = __atomic_load_n(&im->pub_gen, __ATOMIC_ACQUIRE) - 1;
    size_t want = im->arena_bytes;
    int rc = 0;
    cudaError_t e;
    cublasStatus_t bs;
    if ((e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking)) != cudaSuccess) {
        rc = cu_fail(err, e, "creating a stream");
        goto fail;
    }
    if ((e = cudaMalloc((void **)&c->arena, want)) != cudaSuccess) {
        cudaGetLastError();
        rc = nlpd_error_set(err, NLPD_ENOMEM, 0,
                            "cuda backend: cannot allocate the %zu MiB arena of a thread on device %d (%s)", want >> 20,
                            im->device, cudaGetErrorName(e));
        goto fail;
    }
    c->arena_size = want;
    c->d_err = (unsigned long long *)(c->arena + CU_BLAS_WS_BYTES);
    c->scratch = c->arena + CU_BLAS_WS_BYTES + align_up(CU_ERR_SLOTS * sizeof(unsigned long long));
    c->scratch_size = want - (size_t)(c->scratch - c->arena);
    if ((e = cudaHostAlloc((void **)&c->staging, CU_STAGING_BYTES, cudaHostAllocDefault)) != cudaSuccess) {
        cudaGetLastError();
        rc = nlpd_error_set(err, NLPD_ENOMEM, 0, "cuda backend: cannot allocate %zu MiB of pinned host memory (%s)",
                            CU_STAGING_BYTES >> 20, cudaGetErrorName(e));
        goto fail;
    }
    c->staging_half = CU_STAGING_BYTES / 2;
    for (int i = 0; i < 3; i++) {
        cudaEvent_t *ev = i < 2 ? &c->stage_done[i] : &c->pub_event;
        if ((e = cudaEventCreateWithFlags(ev, cudaEventDisableTiming)) != cudaSuccess) {
            rc = cu_fail(err, e, "creating an event");
            goto fail;
        }
    }
    if ((bs = cublasCreate(&c->blas)) != CUBLAS_STATUS_SUCCESS || (bs = cublasSetStream(c->blas, c->stream)) ||
        (bs = cublasSetWorkspace(c->blas, c->arena, CU_BLAS_WS_BYTES)) ||
        (bs = cublasSetMathMode(c->blas, c->tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH))) {
        rc = cu_blas_fail(err, bs, "setting up cuBLAS");
        goto fail;
    }
    if ((bs = cublasLtCreate(&c->lt)) != CUBLAS_STATUS_SUCCESS) {
        c->lt = NULL;
        rc = cu_blas_fail(err, bs, "setting up cuBLASLt");
        goto fail;
    }
    if ((e = cudaMemsetAsync(c->d_err, 0xff, CU_ERR_SLOTS * sizeof(unsigned long long), c->stream)) != cudaSuccess ||
        (e = cudaStreamSynchronize(c->stream)) != cudaSuccess) {
        rc = cu_fail(err, e, "initialising the arena");
        goto fail;
    }
    *out = c;
    return 0;
fail:
    ctx_release(c);
    return rc;
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
    int half_act = env_choice("NLPD_CUDA_ACT", "half", "fp32"), epi_lt = env_choice("NLPD_CUDA_EPILOGUE", "lt", "separate");
    if (half_act < 0 || epi_lt < 0) {
        nlpd_error_set(err, NLPD_EINVAL, 0, "%s must be %s, not \"%.40s\"",
                       half_act < 0 ? "NLPD_CUDA_ACT" : "NLPD_CUDA_EPILOGUE", half_act < 0 ? "half or fp32" : "lt or separate",
                       getenv(half_act < 0 ? "NLPD_CUDA_ACT" : "NLPD_CUDA_EPILOGUE"));
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
    pthread_mutex_init(&im->wmu, NULL);
    im->id = __atomic_add_fetch(&next_backend_id, 1, __ATOMIC_RELAXED);
    im->device = o->device;
    im->dtype = o->dtype;
    /* half activations need the weights' half type (the products' a and b types must agree) */
    im->act_dtype = half_act && (o->dtype == NLPD_DTYPE_F16 || o->dtype == NLPD_DTYPE_BF16) ? o->dtype : NLPD_DTYPE_F32;
    im->epi_lt = epi_lt;
    im->tf32 = tf32;
    im->sm_count = prop.multiProcessorCount > 0 ? prop.multiProcessorCount : 1;
    im->arena_bytes = arena_bytes(o);
    if (im->arena_bytes < CU_BLAS_WS_BYTES + ((size_t)16 << 20))
        im->arena_bytes = CU_BLAS_WS_BYTES + ((size_t)16 << 20);
    /* the creating thread's context now: a device that cannot hold one arena fails here, not on the first batch */
    struct cu_ctx *c;
    if (ctx_of(im, &c, err)) {
        release(im);
        free(be);
        return NULL;
    }
    be->ops = &cuda_ops;
    be->impl = im;
    be->act_dtype = im->act_dtype;
    char acts[96] = "";
    if (o->dtype != NLPD_DTYPE_F32)
        snprintf(acts, sizeof acts, ", %s activations%s, %s", dtype_name(im->act_dtype),
                 half_act ? "" : " (NLPD_CUDA_ACT=fp32)", epi_lt ? "Lt epilogues" : "separate bias+act");
    snprintf(be->reason, sizeof be->reason,
             "device %d: %.48s, sm_%d%d, %zu MiB, %d SMs; %s matrix products%.64s, fp32 %s; a stream and a %zu "
             "MiB arena per thread",
             o->device, prop.name, prop.major, prop.minor, (size_t)(prop.totalGlobalMem >> 20),
             prop.multiProcessorCount, dtype_name(o->dtype), acts, tf32 ? "on TF32 tensor cores" : "strict",
             im->arena_bytes >> 20);
    return be;
}
