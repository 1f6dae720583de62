/* CPU kernels behind the CPU backend (internal to kernels/; tests include it to compare each op with a naive
 * reference). Each op has a scalar path and AVX2+FMA / AVX-512F paths chosen at run time. */
#ifndef NLPD_CPU_OPS_H
#define NLPD_CPU_OPS_H

#include "nlpd_kernels.h"

enum nlpd_cpu_simd { NLPD_SIMD_SCALAR, NLPD_SIMD_AVX2, NLPD_SIMD_AVX512 };
/* Picks the SIMD path (done once on first use): the best the CPU has, at most cap (tests pin each path);
 * NLPD_KERNELS_SIMD=scalar|avx2 in the environment caps it too. */
void nlpd_cpu_simd_set(int cap);
/* force_scalar != 0 pins the scalar path (tests), 0 detects again. */
void nlpd_cpu_simd_init(int force_scalar);
int nlpd_cpu_simd(void);      /* enum nlpd_cpu_simd */
int nlpd_cpu_simd_avx2(void); /* AVX2+FMA or better */

void nlpd_cpu_matmul(const struct nlpd_op_matmul *p);
void nlpd_cpu_bias_act(const struct nlpd_op_bias_act *p);
void nlpd_cpu_layer_norm(const struct nlpd_op_layer_norm *p);
void nlpd_cpu_softmax(const struct nlpd_op_softmax *p);
/* scratch: at least seq*seq floats. */
void nlpd_cpu_attention(const struct nlpd_op_attention *p, float *scratch);
/* scratch: at least q_len * kv_len floats. */
void nlpd_cpu_attention_kv(const struct nlpd_op_attention_kv *p, float *scratch);
/* Row-wise softmax of x[rows, cols] (dense), mask[cols] (1 = attend, may be NULL) applied as -FLT_MAX added,
 * rows shared among OpenMP threads. */
void nlpd_cpu_softmax_masked(float *x, int rows, int cols, const int32_t *mask);
/* DeBERTa's disentangled attention (cpu_rel_attention.c) on oneDNN products; scratch of
 * nlpd_cpu_attention_rel_scratch(p) floats. */
size_t nlpd_cpu_attention_rel_scratch(const struct nlpd_op_attention_rel *p);
int nlpd_cpu_attention_rel(const struct nlpd_op_attention_rel *p, float *scratch, int threads, struct nlpd_error *err);
int nlpd_cpu_gather_rows(const struct nlpd_op_gather_rows *p, struct nlpd_error *err);
int nlpd_cpu_log_softmax_topk(const struct nlpd_op_log_softmax_topk *p, struct nlpd_error *err);
int nlpd_cpu_embed(const struct nlpd_op_embed *p, struct nlpd_error *err);

int nlpd_backend_cpu_threads(const struct nlpd_backend *be);

/* Element-wise activation over n contiguous floats (in place). */
void nlpd_cpu_act(float *x, size_t n, enum nlpd_act act);

#endif
