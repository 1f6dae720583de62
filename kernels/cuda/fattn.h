/* Fused attention on tensor cores (fattn.cu): scores and probabilities stay in shared memory, never in global
 * memory. Used by attention.cu for ATTENTION and ATTENTION_KV when the backend's dtype is fp16/bf16 or the
 * operands are half (see the dispatch there). */
#ifndef NLPD_CUDA_FATTN_H
#define NLPD_CUDA_FATTN_H

#include "cuda_internal.h"

#define CU_FATTN_MAX_HEAD_DIM 128

/* One attention op in the ATTENTION_KV form (ATTENTION: q, k, v point into the fused qkv, kv_map NULL, mask_ld =
 * kv_len, kv_batch_rows = q_len, kv_mode 0). q, k, v and out hold io_type elements (fp32, or the compute type);
 * strides and offsets are in elements. */
struct cu_fattn_args {
    const void *q, *k, *v;
    void *out;
    const int32_t *kv_map; /* NULL: query batch b reads kv batch b */
    const int32_t *mask;   /* [kv batch, kv_len] at row stride mask_ld, 1 = attend; NULL = every key */
    size_t mask_ld;
    int batch, heads, head_dim, q_len, kv_len;
    size_t kv_batch_rows; /* rows between kv batches */
    size_t ld_q, ld_kv, ld_out;
    int kv_mode; /* ATTENTION_KV: the causal limits below apply */
    int causal, q_pos0;
    float scale;
    enum nlpd_dtype io_type; /* NLPD_DTYPE_F32 or the compute type */
};

/* Queues the fused kernel on the context's stream; compute is NLPD_DTYPE_F16 or NLPD_DTYPE_BF16 and head_dim at
 * most CU_FATTN_MAX_HEAD_DIM (else NLPD_EINVAL with err). */
int cu_fattn(struct cu_ctx *im, enum nlpd_dtype compute, const struct cu_fattn_args *a, struct nlpd_error *err);

#endif
