/* Row-wise and element-wise ops: bias + activation, layer norm (bias and residual fused as the op defines),
 * softmax, embedding gather (with word_scale), row gather. Same arithmetic order as kernels/cpu/cpu_ops.c; no
 * fast-math, so erff/tanhf/expf are the accurate CUDA versions. Bad indices set the op's error word (the lowest
 * token / row wins, as the CPU's first-error-in-order) and that row is written as zeros. */
#include <float.h>

#include "cuda_internal.h"

__device__ __forceinline__ float act_apply(float x, int act)
{
    switch (act) {
    case NLPD_ACT_GELU: return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case NLPD_ACT_GELU_TANH: {
        const float k = 0.7978845608028654f; /* sqrt(2/pi) */
        return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
    }
    case NLPD_ACT_RELU: return x > 0.0f ? x : 0.0f;
    case NLPD_ACT_SILU: return x / (1.0f + expf(-x));
    case NLPD_ACT_TANH: return tanhf(x);
    default: return x;
    }
}

static int launched(struct nlpd_error *err, const char *what)
{
    cudaError_t e = cudaGetLastError();
    return e == cudaSuccess ? 0 : cu_fail(err, e, what);
}

/* ---- bias + activation ---- */

__global__ void k_bias_act(float *x, const float *bias, const float *res, int rows, int cols, size_t ld, int act)
{
    size_t n = (size_t)rows * (size_t)cols;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        size_t r = i / (size_t)cols, c = i - r * (size_t)cols;
        float *p = x + r * ld + c;
        float v = *p;
        if (bias)
            v += bias[c];
        v = act_apply(v, act);
        if (res)
            v += res[r * ld + c];
        *p = v;
    }
}

int cu_bias_act(struct cu_ctx *im, const struct nlpd_op_bias_act *p, struct nlpd_error *err)
{
    if ((!p->bias && p->act == NLPD_ACT_NONE && !p->residual) || p->rows <= 0 || p->cols <= 0)
        return 0;
    size_t n = (size_t)p->rows * (size_t)p->cols;
    CU_LAUNCH(k_bias_act, cu_grid(im, n, 256), 256, 0, im->stream)
    (p->x, p->bias, p->residual, p->rows, p->cols, (size_t)p->ld, (int)p->act);
    return launched(err, "bias + activation");
}

/* ---- block reductions (blockDim a multiple of 32, at most 1024) ---- */

__device__ float block_sum(float v, float *sh)
{
    v = cu_warp_sum(v);
    __syncthreads(); /* sh may still be read from the previous reduction */
    if ((threadIdx.x & 31) == 0)
        sh[threadIdx.x >> 5] = v;
    __syncthreads();
    int nw = (int)(blockDim.x >> 5), lane = (int)(threadIdx.x & 31);
    v = lane < nw ? sh[lane] : 0.0f;
    return cu_warp_sum(v);
}

__device__ float block_max(float v, float *sh)
{
    v = cu_warp_max(v);
    __syncthreads();
    if ((threadIdx.x & 31) == 0)
        sh[threadIdx.x >> 5] = v;
    __syncthreads();
    int nw = (int)(blockDim.x >> 5), lane = (int)(threadIdx.x & 31);
    v = lane < nw ? sh[lane] : -FLT_MAX;
    return cu_warp_max(v);
}

static int row_block(int cols)
{
    int b = 32;
    while (b < cols && b < 1024)
        b *= 2;
    return b > 256 ? 256 : b;
}

/* ---- layer norm: one block per row; y may equal x or residual (each element is read, then written, by the
 * same thread) ---- */

__global__ void k_layer_norm(float *y, const float *x, const float *bias, const float *res, const float *g,
                             const float *b, int cols, float eps)
{
    __shared__ float sh[32];
    const size_t o = (size_t)blockIdx.x * (size_t)cols;
    float s = 0.0f;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
        float v = x[o + i];
        if (bias)
            v += bias[i];
        if (res)
            v += res[o + i];
        y[o + i] = v;
        s += v;
    }
    const float mean = block_sum(s, sh) / (float)cols;
    float q = 0.0f;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
        float d = y[o + i] - mean;
        q += d * d;
    }
    const float rstd = 1.0f / sqrtf(block_sum(q, sh) / (float)cols + eps);
    for (int i = threadIdx.x; i < cols; i += blockDim.x)
        y[o + i] = (y[o + i] - mean) * rstd * g[i] + b[i];
}

int cu_layer_norm(struct cu_ctx *im, const struct nlpd_op_layer_norm *p, struct nlpd_error *err)
{
    if (p->rows <= 0 || p->cols <= 0)
        return 0;
    CU_LAUNCH(k_layer_norm, p->rows, row_block(p->cols), 0, im->stream)
    (p->y, p->x, p->bias, p->residual, p->gamma, p->beta, p->cols, p->eps);
    return launched(err, "layer norm");
}

/* ---- softmax: one block per row ---- */

__global__ void k_softmax(float *x, int cols, size_t ld)
{
    __shared__ float sh[32];
    float *row = x + (size_t)blockIdx.x * ld;
    float mx = -FLT_MAX;
    for (int i = threadIdx.x; i < cols; i += blockDim.x)
        mx = row[i] > mx ? row[i] : mx;
    mx = block_max(mx, sh);
    float s = 0.0f;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
        float e = expf(row[i] - mx);
        row[i] = e;
        s += e;
    }
    const float inv = 1.0f / block_sum(s, sh);
    for (int i = threadIdx.x; i < cols; i += blockDim.x)
        row[i] *= inv;
}

int cu_softmax(struct cu_ctx *im, const struct nlpd_op_softmax *p, struct nlpd_error *err)
{
    if (p->rows <= 0 || p->cols <= 0)
        return 0;
    CU_LAUNCH(k_softmax, p->rows, row_block(p->cols), 0, im->stream)(p->x, p->cols, (size_t)p->ld);
    return launched(err, "softmax");
}

/* ---- embedding ---- */

/* key: token (30 bits) | kind (2 bits: 0 id, 1 position, 2 type) | value (32 bits); atomicMin keeps the first
 * token's first problem, as the CPU loop reports it. */
__device__ __forceinline__ void embed_error(unsigned long long *word, int t, int kind, int v)
{
    unsigned long long tok = (unsigned long long)(t < (1 << 30) ? t : (1 << 30) - 1);
    atomicMin(word, (tok << 34) | ((unsigned long long)kind << 32) | (unsigned long long)(uint32_t)v);
}

__global__ void k_embed(float *out, const float *word, const float *pos, const float *type, const int32_t *ids,
                        const int32_t *pos_ids, const int32_t *type_ids, int tokens, int dim, int n_word, int n_pos,
                        int n_type, float scale, unsigned long long *errw)
{
    for (int t = blockIdx.x; t < tokens; t += gridDim.x) {
        const int32_t id = ids[t];
        const int32_t pi = pos ? pos_ids[t] : 0;
        const int32_t ti = type ? (type_ids ? type_ids[t] : 0) : 0;
        int bad = 0;
        if (id < 0 || id >= n_word) {
            bad = 1;
            if (threadIdx.x == 0)
                embed_error(errw, t, 0, id);
        } else if (pos && (pi < 0 || pi >= n_pos)) {
            bad = 1;
            if (threadIdx.x == 0)
                embed_error(errw, t, 1, pi);
        } else if (type && (ti < 0 || ti >= n_type)) {
            bad = 1;
            if (threadIdx.x == 0)
                embed_error(errw, t, 2, ti);
        }
        float *o = out + (size_t)t * dim;
        if (bad) {
            for (int i = threadIdx.x; i < dim; i += blockDim.x)
                o[i] = 0.0f;
            continue;
        }
        const float *w = word + (size_t)id * dim;
        const float *ps = pos ? pos + (size_t)pi * dim : NULL, *ty = type ? type + (size_t)ti * dim : NULL;
        for (int i = threadIdx.x; i < dim; i += blockDim.x) {
            float v;
            if (scale != 0.0f && scale != 1.0f) { /* Marian: word * scale + position (+ type) */
                v = __fmul_rn(w[i], scale);
                if (ps)
                    v = __fadd_rn(v, ps[i]);
                if (ty)
                    v = __fadd_rn(v, ty[i]);
            } else if (ty && ps) { /* transformers' order: (word + type) + position */
                v = (w[i] + ty[i]) + ps[i];
            } else if (ps) {
                v = w[i] + ps[i];
            } else if (ty) {
                v = w[i] + ty[i];
            } else {
                v = w[i];
            }
            o[i] = v;
        }
    }
}

int cu_embed(struct cu_ctx *im, const struct nlpd_op_embed *p, struct nlpd_error *err)
{
    if (p->tokens <= 0) /* (dim 0 still checks the ids, as the CPU does) */
        return 0;
    int slot = cu_slot_take(im, NLPD_OP_EMBED, p->n_word, p->n_pos, p->n_type, err);
    if (slot < 0)
        return slot;
    int grid = p->tokens < im->sm_count * 64 ? p->tokens : im->sm_count * 64;
    CU_LAUNCH(k_embed, grid, row_block(p->dim), 0, im->stream)
    (p->out, p->word, p->pos, p->type, p->ids, p->pos_ids, p->type_ids, p->tokens, p->dim, p->n_word, p->n_pos,
     p->n_type, p->word_scale, im->d_err + slot);
    return launched(err, "embedding");
}

/* ---- row gather ---- */

__global__ void k_gather_rows(float *dst, const float *src, const int32_t *idx, int rows, int cols, int src_rows,
                              size_t ld_dst, size_t ld_src, unsigned long long *errw)
{
    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
        const int32_t j = idx[r];
        if (j < 0 || j >= src_rows) {
            if (threadIdx.x == 0)
                atomicMin(errw, ((unsigned long long)r << 32) | (unsigned long long)(uint32_t)j);
            continue;
        }
        const float *s = src + (size_t)j * ld_src;
        float *d = dst + (size_t)r * ld_dst;
        for (int i = threadIdx.x; i < cols; i += blockDim.x)
            d[i] = s[i];
    }
}

int cu_gather_rows(struct cu_ctx *im, const struct nlpd_op_gather_rows *p, struct nlpd_error *err)
{
    if (p->rows <= 0)
        return 0;
    int slot = cu_slot_take(im, NLPD_OP_GATHER_ROWS, p->src_rows, 0, 0, err);
    if (slot < 0)
        return slot;
    int grid = p->rows < im->sm_count * 64 ? p->rows : im->sm_count * 64;
    CU_LAUNCH(k_gather_rows, grid, row_block(p->cols > 0 ? p->cols : 1), 0, im->stream)
    (p->dst, p->src, p->idx, p->rows, p->cols, p->src_rows, p->ld_dst, p->ld_src, im->d_err + slot);
    return launched(err, "row gather");
}
