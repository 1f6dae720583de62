/* Internal to libnlpd_cuda.so (C++ compiled by nvcc): the backend instance, its per-thread contexts and the op
 * entry points of the .cu files. The ops run on the calling thread's context (its mutex held), on its device and
 * its stream. */
#ifndef NLPD_CUDA_INTERNAL_H
#define NLPD_CUDA_INTERNAL_H

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <pthread.h>
#include <stdint.h>

extern "C" {
#include "nlpd_backend.h"
#include "nlpd_error.h"
}
#include "graph_cache.h"

/* Kernel launches go through CU_LAUNCH(kernel, grid, block, shared bytes, stream)(args...): nvcc's <<<...>>>, or
 * under the host emulator (kernels/cuda/emul/, NLPD_CU_EMUL) a call that runs the grid on the CPU, so the same
 * sources are tested without a GPU. */
#ifdef NLPD_CU_EMUL
#define CU_LAUNCH(kernel, grid, block, shmem, stream) cu_emul_launch(kernel, (grid), (block), (shmem), (stream))
#define CU_DYN_SHARED(type, name)                     type *name = (type *)cu_emul_dyn_shared()
#else
#define CU_LAUNCH(kernel, grid, block, shmem, stream) kernel<<<(grid), (block), (shmem), (stream)>>>
/* the block's dynamic shared memory (the launch's shmem bytes), 16-byte aligned */
#define CU_DYN_SHARED(type, name)                                                                                      \
    extern __shared__ __align__(16) unsigned char cu_dyn_shared_[];                                                    \
    type *name = (type *)cu_dyn_shared_
#endif

#define CU_ERR_SLOTS     256 /* device error words: one per op that can find bad indices, until a sync reads them */
#define CU_BLAS_WS_BYTES ((size_t)32 << 20) /* the arena's first part: cuBLAS and cuBLASLt workspace */
#define CU_LT_CACHE      32 /* cuBLASLt plans kept per thread (a model runs a handful of product shapes) */

/* A weight buffer: its fp32 contents at base, and (dtype fp16/bf16) a 2-byte shadow with the same element
 * offsets; [dirty_lo, dirty_hi) floats were uploaded since the shadow was last converted. */
struct cu_weights {
    char *base;
    size_t size;
    void *shadow;
    size_t dirty_lo, dirty_hi;
};

/* What an error word belongs to: the op, its limits, and the thread that queued it (only that thread's sync
 * reports it). */
struct cu_slot {
    int in_use;
    enum nlpd_op_kind op;
    int limit[3]; /* embed: n_word, n_pos, n_type; gather: src_rows */
    unsigned long long seq;
    pthread_t owner;
};

struct cu_impl;

/* A cuBLASLt plan for one product shape (half weights x half/fp32 activations with a bias/activation epilogue):
 * descriptors and the heuristic's algorithm, built on first use so a forward does not rebuild them per call.
 * ok = 0: Lt found no algorithm for it, the product runs on cublasGemmEx and a separate bias + activation pass. */
struct cu_lt_plan {
    int used;
    int m, n, k, lda, ldb, ldc, trans_b, a_type, c_type, epi, align[4]; /* the key; align: a, b, c, bias */
    int ok;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatmulAlgo_t algo;
};

/* One thread's share of a backend: its stream, cuBLAS handle, scratch arena, pinned staging and error words,
 * created on the thread's first call. Only its thread queues work on it, so pipeline workers overlap instead of
 * taking turns on one stream; mu is uncontended except when another thread publishes weights or frees a buffer
 * (see struct cu_impl). The ops see dtype, tf32 and sm_count here too. */
struct cu_ctx {
    struct cu_impl *impl;
    pthread_t owner;
    pthread_mutex_t mu;
    struct cu_ctx *next;
    enum nlpd_dtype dtype;
    enum nlpd_dtype act_dtype; /* activation operands accepted in half (be->act_dtype); fp32 = none */
    int epi_lt;                /* bias + activation in the cuBLASLt epilogue where it has one (NLPD_CUDA_EPILOGUE) */
    int tf32; /* fp32 products on TF32 tensor cores (fp32 accumulation); 0: strict fp32 (NLPD_CUDA_MATH=strict) */
    int sm_count;
    cudaStream_t stream;
    cublasHandle_t blas;
    cublasLtHandle_t lt;
    struct cu_lt_plan lt_plans[CU_LT_CACHE];
    int lt_next; /* the slot the next new plan replaces when all are used */

    char *arena; /* one cudaMalloc at creation: cuBLAS workspace | error words | scratch */
    size_t arena_size;
    unsigned long long *d_err; /* CU_ERR_SLOTS words, ULLONG_MAX = no error */
    char *scratch;             /* per-op temporaries (stream order makes reuse between ops safe) */
    size_t scratch_size;

    unsigned char *staging; /* pinned host memory, two halves used in turn */
    size_t staging_half;
    int stage_cur;
    size_t stage_pos;
    cudaEvent_t stage_done[2];
    /* uploads contiguous on both sides (a weight loader's rows) become one copy: queued by flush_uploads
     * before anything else touches the stream or the staging */
    char *pend_dst;
    const unsigned char *pend_src;
    size_t pend_n;

    struct cu_slot slots[CU_ERR_SLOTS];
    unsigned long long next_seq;

    /* weights uploaded on this stream that other streams have not waited for yet; pub_event marks the last
     * publication on this stream, pub_seen the impl's pub_gen this context last caught up with */
    int unpublished, pub_recorded;
    cudaEvent_t pub_event;
    unsigned long pub_seen;

    struct cu_grec rec;      /* the open graph region's ops (graph.cu) */
    struct cu_gcache graphs; /* this thread's captured regions; dropped whenever any buffer is freed */
};

/* Locks, in this order only: mu (the context list, publishing), then a context's mu, then wmu (a leaf: the
 * weight table, the deferred error). Weights uploaded by one thread (a model loader) become visible to another
 * thread's stream at that thread's next call: it sees pub_gen move, flushes the uploader's pending copies, and
 * waits for them on its own stream with an event. */
struct cu_impl {
    int device;
    unsigned long id; /* unique per backend created in this process (thread-local caches key on it) */
    enum nlpd_dtype dtype;
    enum nlpd_dtype act_dtype;
    int epi_lt;
    int tf32;
    int sm_count;
    size_t arena_bytes;
    pthread_mutex_t mu;
    struct cu_ctx *ctxs;
    unsigned long pub_gen; /* atomic: bumped by every upload into a weight buffer */

    pthread_mutex_t wmu;
    struct cu_weights *weights;
    int n_weights, cap_weights;
    struct nlpd_error deferred; /* a failure free() could not report: the next sync reports it */

    /* counters of struct nlpd_backend_stats, updated atomically by every context */
    unsigned long long n_copies, n_launch, n_capture, n_eager, n_evict, n_inval;
};

#define CU_COUNT(im, field, n) __atomic_add_fetch(&(im)->field, (unsigned long long)(n), __ATOMIC_RELAXED)

/* helpers (cuda_backend.cu) */
int cu_fail(struct nlpd_error *err, cudaError_t e, const char *what);
int cu_blas_fail(struct nlpd_error *err, cublasStatus_t s, const char *what);
/* An error word for one op, cleared on the stream: its index (>= 0), or a negative NLPD_E* code with err when
 * none can be had (every word holds an unreported error of another thread, or a CUDA call failed). */
int cu_slot_take(struct cu_ctx *im, enum nlpd_op_kind op, int l0, int l1, int l2, struct nlpd_error *err);
/* Whether an op of this kind takes an error word (the callers of cu_slot_take): a capture needs that many free. */
static inline int cu_op_takes_slot(enum nlpd_op_kind k)
{
    return k == NLPD_OP_EMBED || k == NLPD_OP_GATHER_ROWS;
}
/* Waits for the stream and frees the error words that saw no error (outside a capture only). */
int cu_slots_reclaim(struct cu_ctx *im, struct nlpd_error *err);
/* Converts every weight shadow uploads left dirty (and waits), so that no op of a capture has to. */
int cu_weights_clean(struct cu_ctx *im, struct nlpd_error *err);
/* One op on the stream, launch errors included (cu_run outside a region; graph.cu eagerly or under capture). */
int cu_dispatch(struct cu_ctx *im, const struct nlpd_op *op, struct nlpd_error *err);

/* graph regions (graph.cu); the context's mu held, its pending uploads flushed */
/* Runs the recorded region: a cached graph, a new capture, or op by op. */
int cu_graph_run(struct cu_ctx *im, struct nlpd_error *err);
/* Drops the cached graphs (a buffer is going, or the context); returns how many. */
int cu_graph_drop_all(struct cu_ctx *im);
/* The weight buffer holding p, with its shadow converted, copied to out: 1; 0 when p is not in one that has a
 * shadow; a negative NLPD_E* code with err. */
int cu_weights_of(struct cu_ctx *im, const void *p, struct cu_weights *out, struct nlpd_error *err);
int cu_grid(const struct cu_ctx *im, size_t n, int block);

/* ops */
int cu_matmul(struct cu_ctx *im, const struct nlpd_op_matmul *p, struct nlpd_error *err);
int cu_bias_act(struct cu_ctx *im, const struct nlpd_op_bias_act *p, struct nlpd_error *err);
int cu_layer_norm(struct cu_ctx *im, const struct nlpd_op_layer_norm *p, struct nlpd_error *err);
int cu_softmax(struct cu_ctx *im, const struct nlpd_op_softmax *p, struct nlpd_error *err);
int cu_embed(struct cu_ctx *im, const struct nlpd_op_embed *p, struct nlpd_error *err);
int cu_gather_rows(struct cu_ctx *im, const struct nlpd_op_gather_rows *p, struct nlpd_error *err);
int cu_attention(struct cu_ctx *im, const struct nlpd_op_attention *p, struct nlpd_error *err);
int cu_attention_kv(struct cu_ctx *im, const struct nlpd_op_attention_kv *p, struct nlpd_error *err);
int cu_attention_rel(struct cu_ctx *im, const struct nlpd_op_attention_rel *p, struct nlpd_error *err);
int cu_log_softmax_topk(struct cu_ctx *im, const struct nlpd_op_log_softmax_topk *p, struct nlpd_error *err);
/* Drops a thread's cuBLASLt plans (before its handle goes). */
void cu_lt_release(struct cu_ctx *im);
/* Batched fp32 products for attention scores and outputs (C_i = alpha op(A_i) B_i, pointer arrays on the device)
 * in the backend's compute mode: the fp16/bf16 fast modes, TF32 unless strict, fp32 where no fast mode exists for
 * the shape (attention.cu). */
cublasStatus_t cu_batched_gemm(struct cu_ctx *im, cublasOperation_t ta, int m, int n, int k, float alpha,
                               const void *const *a, int lda, const void *const *b, int ldb, void *const *c, int ldc,
                               int count);
/* dst[i] = (half or bf16) src[i], i < n (a weight shadow). */
int cu_convert_weights(struct cu_ctx *im, void *dst, const float *src, size_t n, struct nlpd_error *err);

/* device helpers shared by the kernels */
__device__ __forceinline__ float cu_warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float cu_warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* The end of a warp's masked softmax over one score row: mx is this lane's max over row[0..n) (already masked);
 * row[t] becomes the probability for t < n and 0 for n <= t < len (keys past the last attended one). */
__device__ __forceinline__ void cu_warp_softmax_row(float *row, float mx, int n, int len, int lane)
{
    mx = cu_warp_max(mx);
    float s = 0.0f;
    for (int t = lane; t < n; t += 32) {
        float e = expf(row[t] - mx);
        row[t] = e;
        s += e;
    }
    s = cu_warp_sum(s);
    const float inv = 1.0f / s;
    for (int t = lane; t < len; t += 32)
        row[t] = t < n ? row[t] * inv : 0.0f;
}

__device__ __forceinline__ int cu_warp_max_int(int v)
{
    for (int o = 16; o > 0; o >>= 1)
        v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

#endif
