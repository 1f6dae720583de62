/* MATMUL on the GPU: cuBLAS, row-major products expressed as column-major ones (C^T = op(B)^T A^T). fp32 by
 * default (on TF32 tensor cores unless NLPD_CUDA_MATH=strict: the handle's math mode, set at creation); with
 * dtype fp16/bf16 and b inside a weight buffer, the weight's 2-byte shadow times a in the same type (a half
 * activation as is, an fp32 one converted into the scratch), on tensor cores with fp32 accumulation, c written in
 * its own type (fp32 or half). Bias and activation: in the product's epilogue (cuBLASLt) where Lt has it (bias,
 * ReLU, the tanh GELU: Lt's GELU is the tanh approximation, so HF's exact "gelu" is not fused) unless
 * NLPD_CUDA_EPILOGUE=separate; otherwise one fused pass afterwards (cu_bias_act). */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>
#include <string.h>

#include "cuda_internal.h"

template <typename T> __device__ __forceinline__ T cvt(float x);
template <> __device__ __forceinline__ __half cvt<__half>(float x)
{
    return __float2half_rn(x);
}
template <> __device__ __forceinline__ __nv_bfloat16 cvt<__nv_bfloat16>(float x)
{
    return __float2bfloat16_rn(x);
}

/* dst[r * cols + c] = src[r * ld + c] */
template <typename T> __global__ void k_to_half(T *dst, const float *src, size_t rows, size_t cols, size_t ld)
{
    size_t n = rows * cols;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        size_t r = i / cols, c = i - r * cols;
        dst[i] = cvt<T>(src[r * ld + c]);
    }
}

static int to_half(struct cu_ctx *im, void *dst, const float *src, size_t rows, size_t cols, size_t ld,
                   struct nlpd_error *err)
{
    if (!rows || !cols)
        return 0;
    int grid = cu_grid(im, rows * cols, 256);
    if (im->dtype == NLPD_DTYPE_BF16)
        CU_LAUNCH(k_to_half<__nv_bfloat16>, grid, 256, 0, im->stream)((__nv_bfloat16 *)dst, src, rows, cols, ld);
    else
        CU_LAUNCH(k_to_half<__half>, grid, 256, 0, im->stream)((__half *)dst, src, rows, cols, ld);
    cudaError_t e = cudaGetLastError();
    return e == cudaSuccess ? 0 : cu_fail(err, e, "converting to half precision");
}

int cu_convert_weights(struct cu_ctx *im, void *dst, const float *src, size_t n, struct nlpd_error *err)
{
    return to_half(im, dst, src, 1, n, n, err);
}

static cudaDataType_t cuda_type(const struct cu_ctx *im, enum nlpd_dtype t)
{
    return t == NLPD_DTYPE_F32 ? CUDA_R_32F : im->dtype == NLPD_DTYPE_BF16 ? CUDA_R_16BF : CUDA_R_16F;
}

static size_t elem_size(enum nlpd_dtype t)
{
    return t == NLPD_DTYPE_F32 ? sizeof(float) : 2;
}

/* The largest power of two (<= 256) dividing the address: what cuBLASLt's heuristic may assume. */
static int align_of(const void *p)
{
    uintptr_t a = (uintptr_t)p;
    int al = 256;
    while (al > 1 && (a & (uintptr_t)(al - 1)))
        al >>= 1;
    return al;
}

/* The Lt epilogue doing act(x + bias), or -1 when Lt has none for it (or there is nothing to fuse). */
static int lt_epilogue(enum nlpd_act act, int bias)
{
    switch (act) {
    case NLPD_ACT_NONE: return bias ? (int)CUBLASLT_EPILOGUE_BIAS : -1;
    case NLPD_ACT_RELU: return (int)(bias ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_RELU);
    case NLPD_ACT_GELU_TANH: return (int)(bias ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_GELU);
    default: return -1;
    }
}

static void plan_destroy(struct cu_lt_plan *pl)
{
    if (pl->desc)
        cublasLtMatmulDescDestroy(pl->desc);
    if (pl->la)
        cublasLtMatrixLayoutDestroy(pl->la);
    if (pl->lb)
        cublasLtMatrixLayoutDestroy(pl->lb);
    if (pl->lc)
        cublasLtMatrixLayoutDestroy(pl->lc);
    memset(pl, 0, sizeof *pl);
}

void cu_lt_release(struct cu_ctx *im)
{
    for (int i = 0; i < CU_LT_CACHE; i++)
        plan_destroy(&im->lt_plans[i]);
}

/* One Lt product: what varies per call besides the key is the pointers (the bias one is set on the cached
 * descriptor before each call). */
struct lt_call {
    struct cu_lt_plan key;
    const void *wb, *a, *bias;
    void *c;
};

/* The cached plan for the key, built (descriptors, heuristic) on first use; NULL with err when a cuBLASLt call
 * fails for another reason than "no algorithm" (then the plan's ok is 0). */
static struct cu_lt_plan *lt_plan(struct cu_ctx *im, const struct lt_call *q, struct nlpd_error *err)
{
    const size_t key_bytes = offsetof(struct cu_lt_plan, ok);
    for (int i = 0; i < CU_LT_CACHE; i++) {
        struct cu_lt_plan *pl = &im->lt_plans[i];
        if (pl->used && !memcmp(pl, &q->key, key_bytes))
            return pl;
    }
    struct cu_lt_plan *pl = &im->lt_plans[im->lt_next];
    im->lt_next = (im->lt_next + 1) % CU_LT_CACHE;
    plan_destroy(pl);
    memcpy(pl, &q->key, key_bytes);
    pl->used = 1;
    const struct cu_lt_plan *k = &q->key;
    const cudaDataType_t ht = cuda_type(im, NLPD_DTYPE_F16), ct = cuda_type(im, (enum nlpd_dtype)k->c_type);
    const int32_t ta = k->trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, tb = CUBLAS_OP_N;
    const uint32_t epi = (uint32_t)k->epi;
    cublasLtMatmulPreference_t pref = NULL;
    cublasStatus_t s;
    /* Lt's A is the weight (n x k column-major, or k x n transposed), B is a^T (k x m), D is c^T (n x m) */
    if ((s = cublasLtMatmulDescCreate(&pl->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F)) ||
        (s = cublasLtMatmulDescSetAttribute(pl->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta)) ||
        (s = cublasLtMatmulDescSetAttribute(pl->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb)) ||
        (s = cublasLtMatmulDescSetAttribute(pl->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi)) ||
        (q->bias && (s = cublasLtMatmulDescSetAttribute(pl->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &q->bias,
                                                        sizeof q->bias))) ||
        (s = cublasLtMatrixLayoutCreate(&pl->la, ht, k->trans_b ? k->k : k->n, k->trans_b ? k->n : k->k, k->ldb)) ||
        (s = cublasLtMatrixLayoutCreate(&pl->lb, ht, k->k, k->m, k->lda)) ||
        (s = cublasLtMatrixLayoutCreate(&pl->lc, ct, k->n, k->m, k->ldc)) ||
        (s = cublasLtMatmulPreferenceCreate(&pref))) {
        if (pref)
            cublasLtMatmulPreferenceDestroy(pref);
        plan_destroy(pl);
        cu_blas_fail(err, s, "setting up a cuBLASLt product");
        return NULL;
    }
    const uint64_t ws = CU_BLAS_WS_BYTES;
    const uint32_t al[4] = {(uint32_t)k->align[1], (uint32_t)k->align[0], (uint32_t)k->align[2], (uint32_t)k->align[2]};
    const cublasLtMatmulPreferenceAttributes_t al_attr[4] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
    s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
    for (int i = 0; i < 4 && s == CUBLAS_STATUS_SUCCESS; i++)
        s = cublasLtMatmulPreferenceSetAttribute(pref, al_attr[i], &al[i], sizeof al[i]);
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulAlgoGetHeuristic(im->lt, pl->desc, pl->la, pl->lb, pl->lc, pl->lc, pref, 1, &res, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (s == CUBLAS_STATUS_SUCCESS && found > 0) {
        pl->algo = res.algo;
        pl->ok = 1;
    } else if (s != CUBLAS_STATUS_SUCCESS && s != CUBLAS_STATUS_NOT_SUPPORTED) {
        plan_destroy(pl);
        cu_blas_fail(err, s, "choosing a cuBLASLt algorithm");
        return NULL;
    } /* else no algorithm: ok stays 0, the product takes the cublasGemmEx path from now on */
    return pl;
}

/* 1: done by Lt (bias and activation included); 0: Lt has no algorithm for it; negative with err. */
static int lt_matmul(struct cu_ctx *im, const struct lt_call *q, struct nlpd_error *err)
{
    struct cu_lt_plan *pl = lt_plan(im, q, err);
    if (!pl)
        return err && err->code ? err->code : NLPD_EIO;
    if (!pl->ok)
        return 0;
    const float one = 1.0f, zero = 0.0f;
    cublasStatus_t s = CUBLAS_STATUS_SUCCESS;
    if (q->bias)
        s = cublasLtMatmulDescSetAttribute(pl->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &q->bias, sizeof q->bias);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmul(im->lt, pl->desc, &one, q->wb, pl->la, q->a, pl->lb, &zero, q->c, pl->lc, q->c, pl->lc,
                           &pl->algo, im->arena, CU_BLAS_WS_BYTES, im->stream);
    return s == CUBLAS_STATUS_SUCCESS ? 1 : cu_blas_fail(err, s, "cuBLASLt matrix product");
}

/* The half copy of an fp32 pointer into a weight buffer (same element offset in the shadow). */
static const void *shadow_of(const struct cu_weights *w, const void *p)
{
    return (const char *)w->shadow + (size_t)((const char *)p - w->base) / sizeof(float) * 2;
}

int cu_matmul(struct cu_ctx *im, const struct nlpd_op_matmul *p, struct nlpd_error *err)
{
    if (p->m <= 0 || p->n <= 0)
        return 0;
    const enum nlpd_dtype at = p->a_type, ct = p->c_type;
    const int half_io = at != NLPD_DTYPE_F32 || ct != NLPD_DTYPE_F32;
    if ((at != NLPD_DTYPE_F32 && at != im->act_dtype) || (ct != NLPD_DTYPE_F32 && ct != im->act_dtype))
        return nlpd_error_set(err, NLPD_EINVAL, 0, "cuda backend: matmul: activation types %d/%d not supported here",
                              (int)at, (int)ct);
    const size_t ce = elem_size(ct);
    cublasStatus_t s;
    const float one = 1.0f, zero = 0.0f;
    const cublasOperation_t opb = p->trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    int fused = 0; /* bias and activation done by the product */
    if (p->k <= 0) {
        cudaError_t e = cudaMemset2DAsync(p->c, (size_t)p->ldc * ce, 0, (size_t)p->n * ce, (size_t)p->m, im->stream);
        if (e != cudaSuccess)
            return cu_fail(err, e, "clearing a product with k = 0");
    } else {
        struct cu_weights wc;
        int rc = im->dtype != NLPD_DTYPE_F32 ? cu_weights_of(im, p->b, &wc, err) : 0;
        if (rc < 0)
            return rc;
        const struct cu_weights *w = rc ? &wc : NULL;
        if (!w && half_io) /* (a half a needs a half b; the model keeps its weights in weight buffers) */
            return nlpd_error_set(err, NLPD_EINVAL, 0,
                                  "cuda backend: matmul with half-precision activations needs b in a weight buffer");
        rc = 0;
        /* a fp32 a is converted, as many rows per pass as the scratch holds; a half a is used in place */
        size_t max_rows = !w ? 0 : at == NLPD_DTYPE_F32 ? im->scratch_size / ((size_t)p->k * 2) : (size_t)p->m;
        if (!max_rows && half_io) /* (the fp32 path below cannot write a half c) */
            return nlpd_error_set(err, NLPD_ERANGE, 0,
                                  "cuda backend: matmul: a row of k = %d does not fit the scratch arena", p->k);
        if (w && max_rows > 0) {
            const cudaDataType_t ht = cuda_type(im, NLPD_DTYPE_F16);
            const void *bh = shadow_of(w, p->b);
            /* the epilogue's bias has c's type: fp32 as is, half from the shadow of the bias's weight buffer */
            int epi = im->epi_lt ? lt_epilogue(p->act, p->bias != NULL) : -1;
            const void *bias = p->bias;
            if (epi >= 0 && p->bias && ct != NLPD_DTYPE_F32) {
                struct cu_weights bw;
                int brc = cu_weights_of(im, p->bias, &bw, err);
                if (brc < 0)
                    return brc;
                bias = brc ? shadow_of(&bw, p->bias) : NULL;
                if (!bias)
                    epi = -1;
            }
            if ((size_t)p->m > max_rows) /* several passes could differ in fusing: keep it simple */
                epi = -1;
            for (int r0 = 0; r0 < p->m;) {
                int mc = p->m - r0;
                if ((size_t)mc > max_rows)
                    mc = (int)max_rows;
                const void *a;
                int lda = p->lda;
                if (at == NLPD_DTYPE_F32) {
                    if ((rc = to_half(im, im->scratch, p->a + (size_t)r0 * p->lda, (size_t)mc, (size_t)p->k,
                                      (size_t)p->lda, err)))
                        return rc;
                    a = im->scratch;
                    lda = p->k;
                } else {
                    a = (const char *)p->a + (size_t)r0 * p->lda * 2;
                }
                void *c = (char *)p->c + (size_t)r0 * p->ldc * ce;
                int done = 0;
                if (epi >= 0) {
                    struct lt_call q;
                    memset(&q, 0, sizeof q);
                    q.key.used = 1;
                    q.key.m = mc;
                    q.key.n = p->n;
                    q.key.k = p->k;
                    q.key.lda = lda;
                    q.key.ldb = p->ldb;
                    q.key.ldc = p->ldc;
                    q.key.trans_b = p->trans_b;
                    q.key.a_type = (int)at;
                    q.key.c_type = (int)ct;
                    q.key.epi = epi;
                    q.key.align[0] = align_of(a);
                    q.key.align[1] = align_of(bh);
                    q.key.align[2] = align_of(c);
                    q.key.align[3] = bias ? align_of(bias) : 256;
                    q.wb = bh;
                    q.a = a;
                    q.bias = bias;
                    q.c = c;
                    if ((done = lt_matmul(im, &q, err)) < 0)
                        return done;
                }
                if (!done) {
                    s = cublasGemmEx(im->blas, opb, CUBLAS_OP_N, p->n, mc, p->k, &one, bh, ht, p->ldb, a, ht, lda,
                                     &zero, c, cuda_type(im, ct), p->ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
                    if (s != CUBLAS_STATUS_SUCCESS)
                        return cu_blas_fail(err, s, "half-precision matrix product");
                }
                fused = done; /* (one pass only when epi >= 0) */
                r0 += mc;
            }
        } else {
            s = cublasSgemm(im->blas, opb, CUBLAS_OP_N, p->n, p->m, p->k, &one, p->b, p->ldb, p->a, p->lda, &zero, p->c,
                            p->ldc);
            if (s != CUBLAS_STATUS_SUCCESS)
                return cu_blas_fail(err, s, "matrix product");
        }
    }
    if (fused || (!p->bias && p->act == NLPD_ACT_NONE))
        return 0;
    struct nlpd_op_bias_act ba = {p->c, p->bias, p->m, p->n, p->ldc, p->act, NULL, ct};
    return cu_bias_act(im, &ba, err);
}
