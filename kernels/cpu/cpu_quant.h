/* Dynamic int8 quantisation and bf16 conversion around the oneDNN products (internal to kernels/). */
#ifndef NLPD_CPU_QUANT_H
#define NLPD_CPU_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "nlpd_kernels.h"

/* 1 when the AVX-512 variants run (NLPD_KERNELS_SIMD=scalar turns them off with the AVX2 ones). */
int nlpd_cpu_quant_avx512(void);

/* Symmetric per-output-channel s8: channel j is column j of b[k,n] (row j of b[n,k] when trans_b); q has b's
 * layout and row stride ldb; scale[j] = max|channel| / 127; colsum[j] = sum of channel j's q. */
void nlpd_cpu_quant_weights_s8(const float *b, int k, int n, int ldb, int trans_b, int8_t *q, float *scale,
                               int32_t *colsum);
/* Asymmetric per-row u8: x ~ scale[r] * (q - zp[r]), the range widened to include 0. q is [m, k], dense. */
void nlpd_cpu_quant_rows_u8(const float *a, int m, int k, int lda, uint8_t *q, float *scale, int32_t *zp);
/* c holds s32 accumulators of q_a . q_b (row stride ldc); overwritten in place with
 * act(sa[r] * sw[j] * (acc - zp[r] * colsum[j]) + bias[j]). bias may be NULL. */
void nlpd_cpu_dequant(void *c, int m, int n, int ldc, const float *sa, const int32_t *zp, const float *sw,
                      const int32_t *colsum, const float *bias, enum nlpd_act act);

void nlpd_cpu_weights_bf16(const float *b, size_t n, uint16_t *dst);
/* a[m, k] at row stride lda -> q[m, k] dense bf16, round to nearest even. */
void nlpd_cpu_rows_bf16(const float *a, int m, int k, int lda, uint16_t *q);

#endif
