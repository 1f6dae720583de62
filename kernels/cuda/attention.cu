/* ATTENTION and ATTENTION_KV: per (sequence, head) pair, scores = scale * Q K^T with one batched cuBLAS call
 * (pointer arrays built on the device, so kv_map is read there), a masked softmax kernel that applies the CPU's
 * rules exactly (keys past the last attended one get probability 0, masked keys inside get -FLT_MAX added, a row
 * with nothing attended is uniform; causal limits for ATTENTION_KV), then out = P V with a second batched call.
 * Scores live in the scratch arena; pairs are processed in chunks that fit it. fp32 products, or with dtype
 * fp16/bf16 the fp32 fast-16F/16BF compute modes (tensor cores, fp32 accumulation).
 * With dtype fp16/bf16 or half operands (io_type), and head_dim <= 128, the fused kernel of fattn.cu runs instead:
 * no scores in memory, one launch. NLPD_CUDA_ATTENTION=fused|cublas forces one path (A/B measurements). */
#include <float.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"
#include "fattn.h"

struct pair_geom {
    /* ATTENTION: kv_map == NULL, q/k/v from the fused qkv */
    const float *q, *k, *v;
    float *out, *scores;
    const int32_t *kv_map;
    int heads, head_dim, q_len, kv_len;
    size_t q_batch_rows, kv_batch_rows; /* rows between sequences in q / k,v */
    size_t ld_q, ld_kv, ld_out;
};

/* Pointer arrays for pairs p0 .. p0+np-1: [A1 | B1 | C1 | A2 | B2 | C2], np entries each. */
__global__ void k_pair_ptrs(const void **ptrs, struct pair_geom g, int p0, int np)
{
    int p = blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= np)
        return;
    int gp = p0 + p, b = gp / g.heads, h = gp - b * g.heads;
    size_t j = g.kv_map ? (size_t)g.kv_map[b] : (size_t)b;
    const float *q = g.q + (size_t)b * g.q_batch_rows * g.ld_q + (size_t)h * g.head_dim;
    const float *k = g.k + j * g.kv_batch_rows * g.ld_kv + (size_t)h * g.head_dim;
    const float *v = g.v + j * g.kv_batch_rows * g.ld_kv + (size_t)h * g.head_dim;
    float *sc = g.scores + (size_t)p * g.q_len * g.kv_len;
    float *o = g.out + (size_t)b * g.q_len * g.ld_out + (size_t)h * g.head_dim;
    ptrs[p] = k;
    ptrs[np + p] = q;
    ptrs[2 * np + p] = sc;
    ptrs[3 * np + p] = v;
    ptrs[4 * np + p] = sc;
    ptrs[5 * np + p] = o;
}

struct mask_geom {
    const int32_t *mask; /* NULL = every key */
    size_t mask_ld;
    const int32_t *kv_map;
    int heads, q_len, kv_len;
    int kv_mode; /* 0: ATTENTION (mask of sequence b), 1: ATTENTION_KV (mask of kv batch kv_map[b], causal) */
    int causal, q_pos0;
};

/* One warp per score row (pair p, query i); rows are kv_len long. */
__global__ void k_masked_softmax(float *scores, struct mask_geom g, int p0, int np)
{
    const int warps = blockDim.x >> 5, lane = threadIdx.x & 31;
    const size_t rows = (size_t)np * g.q_len;
    for (size_t r = (size_t)blockIdx.x * warps + (threadIdx.x >> 5); r < rows; r += (size_t)gridDim.x * warps) {
        const int p = (int)(r / g.q_len), i = (int)(r - (size_t)p * g.q_len);
        const int b = (p0 + p) / g.heads;
        const size_t j = g.kv_mode && g.kv_map ? (size_t)g.kv_map[b] : (size_t)b;
        const int32_t *m = g.mask ? g.mask + j * g.mask_ld : NULL;
        float *row = scores + r * g.kv_len;
        /* keys past the last attended one: none (nothing attended: uniform over all of them) */
        int kv = g.kv_len;
        if (m) {
            int last = 0;
            for (int t = lane; t < g.kv_len; t += 32)
                if (m[t])
                    last = t + 1;
            last = cu_warp_max_int(last);
            kv = last ? last : g.kv_len;
        }
        int n = kv;
        if (g.kv_mode) {
            if (g.causal && g.q_pos0 + g.q_len < kv)
                kv = g.q_pos0 + g.q_len;
            if (kv <= 0)
                kv = 1;
            n = kv;
            if (g.causal && g.q_pos0 + i + 1 < n)
                n = g.q_pos0 + i + 1;
            if (n > g.kv_len)
                n = g.kv_len;
            if (n < 0)
                n = 0;
        }
        float mx = -FLT_MAX;
        for (int t = lane; t < n; t += 32) {
            float v = row[t];
            if (m && !m[t])
                v += -FLT_MAX;
            row[t] = v;
            mx = v > mx ? v : mx;
        }
        cu_warp_softmax_row(row, mx, n, g.kv_len, lane);
    }
}

static cublasComputeType_t compute_type(const struct cu_ctx *im)
{
    return im->dtype == NLPD_DTYPE_F16    ? CUBLAS_COMPUTE_32F_FAST_16F
           : im->dtype == NLPD_DTYPE_BF16 ? CUBLAS_COMPUTE_32F_FAST_16BF
           : im->tf32                     ? CUBLAS_COMPUTE_32F_FAST_TF32
                                          : CUBLAS_COMPUTE_32F;
}

cublasStatus_t cu_batched_gemm(struct cu_ctx *im, cublasOperation_t ta, int m, int n, int k, float alpha,
                               const void *const *a, int lda, const void *const *b, int ldb, void *const *c, int ldc,
                               int count)
{
    const float zero = 0.0f;
    cublasComputeType_t ct = compute_type(im);
    cublasStatus_t s = cublasGemmBatchedEx(im->blas, ta, CUBLAS_OP_N, m, n, k, &alpha, a, CUDA_R_32F, lda, b,
                                           CUDA_R_32F, ldb, &zero, c, CUDA_R_32F, ldc, count, ct, CUBLAS_GEMM_DEFAULT);
    if (s == CUBLAS_STATUS_NOT_SUPPORTED && ct != CUBLAS_COMPUTE_32F) /* no fast mode for this shape: fp32 */
        s = cublasGemmBatchedEx(im->blas, ta, CUBLAS_OP_N, m, n, k, &alpha, a, CUDA_R_32F, lda, b, CUDA_R_32F, ldb,
                                &zero, c, CUDA_R_32F, ldc, count, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    return s;
}

static int run_pairs(struct cu_ctx *im, struct pair_geom g, struct mask_geom mg, int pairs, float scale,
                     struct nlpd_error *err)
{
    const size_t score_bytes = (size_t)g.q_len * g.kv_len * sizeof(float), ptr_bytes = 6 * sizeof(void *);
    size_t per_pair = score_bytes + ptr_bytes, room = im->scratch_size > 1024 ? im->scratch_size - 1024 : 0;
    size_t chunk = room / per_pair;
    if (chunk == 0)
        return nlpd_error_set(err, NLPD_ENOMEM, 0,
                              "cuda backend: attention scores of %d x %d do not fit the %zu MiB scratch arena "
                              "(raise NLPD_CUDA_ARENA_MB)",
                              g.q_len, g.kv_len, im->scratch_size >> 20);
    if (chunk > (size_t)pairs)
        chunk = (size_t)pairs;
    const void **ptrs = (const void **)im->scratch;
    g.scores = (float *)(im->scratch + ((chunk * ptr_bytes + 255) & ~(size_t)255));
    for (int p0 = 0; p0 < pairs; p0 += (int)chunk) {
        int np = pairs - p0 < (int)chunk ? pairs - p0 : (int)chunk;
        CU_LAUNCH(k_pair_ptrs, (np + 127) / 128, 128, 0, im->stream)(ptrs, g, p0, np);
        /* scores[i, t] (row-major, kv_len wide) = scale * q_i . k_t */
        cublasStatus_t s = cu_batched_gemm(im, CUBLAS_OP_T, g.kv_len, g.q_len, g.head_dim, scale, ptrs, (int)g.ld_kv,
                                           ptrs + np, (int)g.ld_q, (void *const *)(ptrs + 2 * np), g.kv_len, np);
        if (s != CUBLAS_STATUS_SUCCESS)
            return cu_blas_fail(err, s, "attention scores");
        size_t rows = (size_t)np * g.q_len;
        int grid = cu_grid(im, rows, 4);
        CU_LAUNCH(k_masked_softmax, grid, 128, 0, im->stream)(g.scores, mg, p0, np);
        /* out[i, d] = sum_t p[i, t] v[t, d] */
        s = cu_batched_gemm(im, CUBLAS_OP_N, g.head_dim, g.q_len, g.kv_len, 1.0f, ptrs + 3 * np, (int)g.ld_kv,
                            ptrs + 4 * np, g.kv_len, (void *const *)(ptrs + 5 * np), (int)g.ld_out, np);
        if (s != CUBLAS_STATUS_SUCCESS)
            return cu_blas_fail(err, s, "attention output");
    }
    cudaError_t e = cudaGetLastError();
    return e == cudaSuccess ? 0 : cu_fail(err, e, "attention");
}

enum attn_path { PATH_CUBLAS, PATH_FUSED };

/* The path for an op computing in compute (fp32 or the half type) with operands of io_type: fused when compute is
 * half and head_dim fits, unless NLPD_CUDA_ATTENTION says otherwise; an impossible forced choice is an error. */
static int attn_path(enum nlpd_dtype compute, enum nlpd_dtype io_type, int head_dim, const char *op,
                     struct nlpd_error *err)
{
    const char *env = getenv("NLPD_CUDA_ATTENTION");
    const int half = compute == NLPD_DTYPE_F16 || compute == NLPD_DTYPE_BF16, fits = head_dim <= CU_FATTN_MAX_HEAD_DIM;
    if (!env || !*env || !strcmp(env, "auto")) {
        if (half && fits)
            return PATH_FUSED;
        if (io_type != NLPD_DTYPE_F32) /* cuBLAS cannot multiply fp32 probabilities by half values */
            return nlpd_error_set(err, NLPD_EINVAL, 0,
                                  "cuda backend: %s with half operands and head_dim %d (the fused kernel takes at "
                                  "most %d)",
                                  op, head_dim, CU_FATTN_MAX_HEAD_DIM);
        return PATH_CUBLAS;
    }
    if (!strcmp(env, "fused")) {
        if (!half)
            return nlpd_error_set(err, NLPD_EINVAL, 0,
                                  "cuda backend: NLPD_CUDA_ATTENTION=fused needs kernels.dtype fp16 or bf16 (this "
                                  "backend computes in fp32)");
        if (!fits)
            return nlpd_error_set(err, NLPD_EINVAL, 0,
                                  "cuda backend: NLPD_CUDA_ATTENTION=fused: %s has head_dim %d, the fused kernel "
                                  "takes at most %d",
                                  op, head_dim, CU_FATTN_MAX_HEAD_DIM);
        return PATH_FUSED;
    }
    if (!strcmp(env, "cublas")) {
        if (io_type != NLPD_DTYPE_F32)
            return nlpd_error_set(err, NLPD_EINVAL, 0,
                                  "cuda backend: NLPD_CUDA_ATTENTION=cublas cannot run %s on half operands (the "
                                  "cuBLAS path takes fp32 qkv; unset it or use fused)",
                                  op);
        return PATH_CUBLAS;
    }
    return nlpd_error_set(err, NLPD_EINVAL, 0, "cuda backend: NLPD_CUDA_ATTENTION=%s: expected fused, cublas or auto",
                          env);
}

int cu_attention(struct cu_ctx *im, const struct nlpd_op_attention *p, struct nlpd_error *err)
{
    if (p->batch <= 0 || p->seq <= 0 || p->heads <= 0 || p->head_dim <= 0)
        return 0;
    const size_t H = (size_t)p->heads * p->head_dim;
    /* half operands: compute in their type (the backend's activation type) */
    const enum nlpd_dtype compute = p->io_type != NLPD_DTYPE_F32 ? p->io_type : im->dtype;
    int path = attn_path(compute, p->io_type, p->head_dim, "attention", err);
    if (path < 0)
        return path;
    if (path == PATH_FUSED) {
        const size_t es = p->io_type == NLPD_DTYPE_F32 ? sizeof(float) : 2;
        struct cu_fattn_args a = {};
        a.q = p->qkv;
        a.k = (const char *)p->qkv + H * es;
        a.v = (const char *)p->qkv + 2 * H * es;
        a.out = p->out;
        a.mask = p->mask;
        a.mask_ld = (size_t)p->seq;
        a.batch = p->batch;
        a.heads = p->heads;
        a.head_dim = p->head_dim;
        a.q_len = a.kv_len = p->seq;
        a.kv_batch_rows = (size_t)p->seq;
        a.ld_q = a.ld_kv = (size_t)p->ld_qkv;
        a.ld_out = (size_t)p->ld_out;
        a.scale = p->scale;
        a.io_type = p->io_type;
        return cu_fattn(im, compute, &a, err);
    }
    struct pair_geom g = {};
    g.q = p->qkv;
    g.k = p->qkv + H;
    g.v = p->qkv + 2 * H;
    g.out = p->out;
    g.heads = p->heads;
    g.head_dim = p->head_dim;
    g.q_len = g.kv_len = p->seq;
    g.q_batch_rows = g.kv_batch_rows = (size_t)p->seq;
    g.ld_q = g.ld_kv = (size_t)p->ld_qkv;
    g.ld_out = (size_t)p->ld_out;
    struct mask_geom mg = {};
    mg.mask = p->mask;
    mg.mask_ld = (size_t)p->seq;
    mg.heads = p->heads;
    mg.q_len = mg.kv_len = p->seq;
    return run_pairs(im, g, mg, p->batch * p->heads, p->scale, err);
}

int cu_attention_kv(struct cu_ctx *im, const struct nlpd_op_attention_kv *p, struct nlpd_error *err)
{
    if (p->batch <= 0 || p->q_len <= 0 || p->heads <= 0 || p->head_dim <= 0)
        return 0;
    if (p->kv_len <= 0) { /* nothing to attend to */
        for (int b = 0; b < p->batch; b++) {
            cudaError_t e =
                cudaMemset2DAsync(p->out + (size_t)b * p->q_len * p->ld_out, (size_t)p->ld_out * sizeof(float), 0,
                                  (size_t)p->heads * p->head_dim * sizeof(float), (size_t)p->q_len, im->stream);
            if (e != cudaSuccess)
                return cu_fail(err, e, "attention");
        }
        return 0;
    }
    /* fused for decoder steps too (q_len 1: one warp per (sequence, head), 15 of its 16 query rows idle): it reads
     * each K/V row once and makes one launch, where cuBLAS makes four and writes the scores */
    int path = attn_path(im->dtype, NLPD_DTYPE_F32, p->head_dim, "attention_kv", err);
    if (path < 0)
        return path;
    if (path == PATH_FUSED) {
        struct cu_fattn_args a = {};
        a.q = p->q;
        a.k = p->k;
        a.v = p->v;
        a.out = p->out;
        a.kv_map = p->kv_map;
        a.mask = p->mask;
        a.mask_ld = (size_t)p->mask_ld;
        a.batch = p->batch;
        a.heads = p->heads;
        a.head_dim = p->head_dim;
        a.q_len = p->q_len;
        a.kv_len = p->kv_len;
        a.kv_batch_rows = p->kv_batch_stride;
        a.ld_q = (size_t)p->ld_q;
        a.ld_kv = (size_t)p->ld_kv;
        a.ld_out = (size_t)p->ld_out;
        a.kv_mode = 1;
        a.causal = p->causal;
        a.q_pos0 = p->q_pos0;
        a.scale = p->scale;
        a.io_type = NLPD_DTYPE_F32;
        return cu_fattn(im, im->dtype, &a, err);
    }
    struct pair_geom g = {};
    g.q = p->q;
    g.k = p->k;
    g.v = p->v;
    g.out = p->out;
    g.kv_map = p->kv_map;
    g.heads = p->heads;
    g.head_dim = p->head_dim;
    g.q_len = p->q_len;
    g.kv_len = p->kv_len;
    g.q_batch_rows = (size_t)p->q_len;
    g.kv_batch_rows = p->kv_batch_stride;
    g.ld_q = (size_t)p->ld_q;
    g.ld_kv = (size_t)p->ld_kv;
    g.ld_out = (size_t)p->ld_out;
    struct mask_geom mg = {};
    mg.mask = p->mask;
    mg.mask_ld = (size_t)p->mask_ld;
    mg.kv_map = p->kv_map;
    mg.heads = p->heads;
    mg.q_len = p->q_len;
    mg.kv_len = p->kv_len;
    mg.kv_mode = 1;
    mg.causal = p->causal;
    mg.q_pos0 = p->q_pos0;
    return run_pairs(im, g, mg, p->batch * p->heads, p->scale, err);
}
