/* MATMUL on the GPU: cuBLAS, row-major products expressed as column-major ones (C^T = op(B)^T A^T). fp32 by
 * default (on TF32 tensor cores unless NLPD_CUDA_MATH=strict: the handle's math mode, set at creation); with
 * dtype fp16/bf16 and b inside a weight buffer, the weight's 2-byte shadow times a converted to the same type, on
 * tensor cores with fp32 accumulation (cublasGemmEx, CUBLAS_COMPUTE_32F). Bias and activation run afterwards as
 * one fused pass (cu_bias_act). */
#include <cuda_bf16.h>
#include <cuda_fp16.h>

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

int cu_matmul(struct cu_ctx *im, const struct nlpd_op_matmul *p, struct nlpd_error *err)
{
    if (p->m <= 0 || p->n <= 0)
        return 0;
    cublasStatus_t s;
    const float one = 1.0f, zero = 0.0f;
    const cublasOperation_t opb = p->trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    if (p->k <= 0) {
        cudaError_t e = cudaMemset2DAsync(p->c, (size_t)p->ldc * sizeof(float), 0, (size_t)p->n * sizeof(float),
                                          (size_t)p->m, im->stream);
        if (e != cudaSuccess)
            return cu_fail(err, e, "clearing a product with k = 0");
    } else {
        struct cu_weights wc;
        int rc = im->dtype != NLPD_DTYPE_F32 ? cu_weights_of(im, p->b, &wc, err) : 0;
        if (rc < 0)
            return rc;
        const struct cu_weights *w = rc ? &wc : NULL;
        rc = 0;
        /* rows of a converted per pass: as many as the scratch holds */
        size_t row_bytes = (size_t)p->k * 2, max_rows = w ? im->scratch_size / row_bytes : 0;
        if (w && max_rows > 0) {
            const cudaDataType_t ht = im->dtype == NLPD_DTYPE_BF16 ? CUDA_R_16BF : CUDA_R_16F;
            const void *bh = (const char *)w->shadow + (size_t)((const char *)p->b - w->base) / sizeof(float) * 2;
            for (int r0 = 0; r0 < p->m;) {
                int mc = p->m - r0;
                if ((size_t)mc > max_rows)
                    mc = (int)max_rows;
                if ((rc = to_half(im, im->scratch, p->a + (size_t)r0 * p->lda, (size_t)mc, (size_t)p->k, (size_t)p->lda,
                                  err)))
                    return rc;
                s = cublasGemmEx(im->blas, opb, CUBLAS_OP_N, p->n, mc, p->k, &one, bh, ht, p->ldb, im->scratch, ht,
                                 p->k, &zero, p->c + (size_t)r0 * p->ldc, CUDA_R_32F, p->ldc, CUBLAS_COMPUTE_32F,
                                 CUBLAS_GEMM_DEFAULT);
                if (s != CUBLAS_STATUS_SUCCESS)
                    return cu_blas_fail(err, s, "half-precision matrix product");
                r0 += mc;
            }
        } else {
            s = cublasSgemm(im->blas, opb, CUBLAS_OP_N, p->n, p->m, p->k, &one, p->b, p->ldb, p->a, p->lda, &zero, p->c,
                            p->ldc);
            if (s != CUBLAS_STATUS_SUCCESS)
                return cu_blas_fail(err, s, "matrix product");
        }
    }
    if (!p->bias && p->act == NLPD_ACT_NONE)
        return 0;
    struct nlpd_op_bias_act ba = {p->c, p->bias, p->m, p->n, p->ldc, p->act, NULL, NLPD_DTYPE_F32};
    return cu_bias_act(im, &ba, err);
}
