/* oneDNN matrix products for the CPU backend (internal to kernels/): fp32, bf16 (fp32 accumulation) and u8 x s8
 * -> s32 int8 products through oneDNN's C API, which picks AVX2 / AVX-512 / VNNI / AVX512-BF16 code at run time
 * and does not depend on OPENBLAS_CORETYPE. Primitives are created once per shape and cached. */
#ifndef NLPD_CPU_ONEDNN_H
#define NLPD_CPU_ONEDNN_H

#include <stddef.h>

#include "nlpd_kernels.h"

enum nlpd_onednn_type {
    NLPD_ONEDNN_F32 = 0, /* a, b, c f32; bias and act fused */
    NLPD_ONEDNN_BF16,    /* a, b bf16; c f32; bias and act fused */
    NLPD_ONEDNN_U8S8,    /* a u8, b s8, c s32; bias and act are the caller's (after dequantisation) */
};

/* The ISA oneDNN dispatches to ("avx512_core_bf16", ...); honours DNNL_MAX_CPU_ISA. */
const char *nlpd_onednn_isa(void);
/* 1 when dtype's products run natively here (int8: AVX512-VNNI or AVX-VNNI; bf16: AVX512-BF16), else 0 with
 * the reason in why. fp32 is always 1. */
int nlpd_onednn_supports(enum nlpd_dtype dtype, char *why, size_t n);

/* c[m,n] = act(a[m,k] . b[k,n] + bias) (b is [n,k] when trans_b), row strides in elements of each operand's type.
 * threads: OpenMP threads for this call. */
int nlpd_onednn_matmul(enum nlpd_onednn_type type, int m, int n, int k, const void *a, int lda, const void *b, int ldb,
                       int trans_b, void *c, int ldc, const float *bias, enum nlpd_act act, int threads,
                       struct nlpd_error *err);

/* Batched fp32 products: c[i] = scale * a[i] . b[i], i < batch, each operand given by element strides
 * {batch, row, column} (so a transposed operand is just swapped strides). */
int nlpd_onednn_matmul_batched(int batch, int m, int n, int k, float scale, const float *a, const long long sa[3],
                               const float *b, const long long sb[3], float *c, const long long sc[3], int threads,
                               struct nlpd_error *err);

/* Primitives held by the shape cache now (at most 256: it is emptied when full). */
int nlpd_onednn_cached(void);

#endif
