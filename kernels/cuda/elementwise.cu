/* Row-wise and element-wise ops: bias + activation, layer norm (bias and residual fused as the op defines),
 * softmax, embedding gather (with word_scale), row gather. Bias + activation, layer norm and embedding take
 * their activations in the op's type (fp32, fp16, bf16; templates on the element type), computing in fp32. Same arithmetic order as kernels/cpu/cpu_ops.c; no
 * fast-math, so erff/tanhf/expf are the accurate CUDA versions. Bad indices set the op's error word (the lowest
 * token / row wins, as the CPU's first-error-in-order) and that row is written as zeros. */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <float.h>

#include "cuda_internal.h"

/* Activation elements (nlpd_kernels.h "Activation element types"): fp32, fp16 or bf16 in memory, fp32 in
 * registers. fp16 saturates to +-65504 on store and on load, so an overflow stays finite (a product's inf read
 * back becomes the largest half) instead of turning into inf - inf = NaN a few ops later; NaN passes through
 * (the comparisons are false) and reaches the logits check. bf16 has fp32's range. */
#define CU_HALF_MAX 65504.0f
__device__ __forceinline__ float cu_sat(float v)
{
    return v > CU_HALF_MAX ? CU_HALF_MAX : v < -CU_HALF_MAX ? -CU_HALF_MAX : v;
}
__device__ __forceinline__ float ld_act(const float *p)
{
    return *p;
}
__device__ __forceinline__ float ld_act(const __half *p)
{
    return cu_sat(__half2float(*p));
}
__device__ __forceinline__ float ld_act(const __nv_bfloat16 *p)
{
    return __bfloat162float(*p);
}
__device__ __forceinline__ void st_act(float *p, float v)
{
    *p = v;
}
__device__ __forceinline__ void st_act(__half *p, float v)
{
    *p = __float2half_rn(cu_sat(v));
}
__device__ __forceinline__ void st_act(__nv_bfloat16 *p, float v)
{
    *p = __float2bfloat16_rn(v);
}

/* Launches kernel<T> for an op's activation type t (fp32, fp16, bf16), the pointers cast by the caller's
 * macro arguments. */
#define CU_TYPED_LAUNCH(t, kernel, grid, block, shmem, stream, ...)                                                   \
    do {                                                                                                               \
        if ((t) == NLPD_DTYPE_F16) {                                                                                   \
            typedef __half T;                                                                                          \
            CU_LAUNCH(kernel<T>, grid, block, shmem, stream)(__VA_ARGS__);                                             \
        } else if ((t) == NLPD_DTYPE_BF16) {                                                                           \
            typedef __nv_bfloat16 T;                                                                                   \
            CU_LAUNCH(kernel<T>, grid, block, shmem, stream)(__VA_ARGS__);                                             \
        } else {                                                                                                       \
            typedef float T;                                                                                           \
            CU_LAUNCH(kernel<T>, grid, block, shmem, stream)(__VA_ARGS__);                                             \
        }                                                                                                              \
    } while (0)

static int bad_type(struct nlpd_error *err, enum nlpd_dtype t, const char *op)
{
    return nlpd_error_set(err, NLPD_EINVAL, 0, "cuda backend: %s: activation type %d is not fp32, fp16 or bf16", op,
                          (int)t);
}

static int type_ok(enum nlpd_dtype t)
{
    return t == NLPD_DTYPE_F32 || t == NLPD_DTYPE_F16 || t == NLPD_DTYPE_BF16;
}

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

template <typename T>
__global__ void k_bias_act(T *x, const float *bias, const T *res, int rows, int cols, size_t ldx, int act)
{
    size_t n = (size_t)rows * (size_t)cols;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        size_t r = i / (size_t)cols, c = i - r * (size_t)cols;
        T *p = x + r * ldx + c;
        float v = ld_act(p);
        if (bias)
            v += bias[c];
        v = act_apply(v, act);
        if (res)
            v += ld_act(res + r * ldx + c);
        st_act(p, v);
    }
}

int cu_bias_act(struct cu_ctx *im, const struct nlpd_op_bias_act *p, struct nlpd_error *err)
{
    if ((!p->bias && p->act == NLPD_ACT_NONE && !p->residual) || p->rows <= 0 || p->cols <= 0)
        return 0;
    if (!type_ok(p->x_type))
        return bad_type(err, p->x_type, "bias + activation");
    size_t n = (size_t)p->rows * (size_t)p->cols;
    CU_TYPED_LAUNCH(p->x_type, k_bias_act, cu_grid(im, n, 256), 256, 0, im->stream, (T *)p->x, p->bias,
                    (const T *)p->residual, p->rows, p->cols, (size_t)p->ld, (int)p->act);
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

/* ---- layer norm: one block per row; y may equal x or residual. The row's sum v = x + bias + residual is
 * recomputed in each pass instead of stored, so the statistics see it in fp32 whatever the io type, and each
 * element is read, then written, by the same thread in the last pass only. ---- */

template <typename T>
__device__ __forceinline__ float ln_in(const T *x, const float *bias, const T *res, size_t o, int i)
{
    float v = ld_act(x + o + i);
    if (bias)
        v += bias[i];
    if (res)
        v += ld_act(res + o + i);
    return v;
}

template <typename T>
__global__ void k_layer_norm(T *y, const T *x, const float *bias, const T *res, const float *g, const float *b,
                             int cols, float eps)
{
    __shared__ float sh[32];
    const size_t o = (size_t)blockIdx.x * (size_t)cols;
    float s = 0.0f;
    for (int i = threadIdx.x; i < cols; i += blockDim.x)
        s += ln_in(x, bias, res, o, i);
    const float mean = block_sum(s, sh) / (float)cols;
    float q = 0.0f;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
        float d = ln_in(x, bias, res, o, i) - mean;
        q += d * d;
    }
    const float rstd = 1.0f / sqrtf(block_sum(q, sh) / (float)cols + eps);
    for (int i = threadIdx.x; i < cols; i += blockDim.x)
        st_act(y + o + i, (ln_in(x, bias, res, o, i) - mean) * rstd * g[i] + b[i]);
}

int cu_layer_norm(struct cu_ctx *im, const struct nlpd_op_layer_norm *p, struct nlpd_error *err)
{
    if (p->rows <= 0 || p->cols <= 0)
        return 0;
    if (!type_ok(p->io_type))
        return bad_type(err, p->io_type, "layer norm");
    CU_TYPED_LAUNCH(p->io_type, k_layer_norm, p->rows, row_block(p->cols), 0, im->stream, (T *)p->y,
                    (const T *)p->x, p->bias, (const T *)p->residual, p->gamma, p->beta, p->cols, p->eps);
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

template <typename T>
__global__ void k_embed(T *out, const float *word, const float *pos, const float *type, const int32_t *ids,
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
        T *o = out + (size_t)t * dim;
        if (bad) {
            for (int i = threadIdx.x; i < dim; i += blockDim.x)
                st_act(o + i, 0.0f);
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
            st_act(o + i, v);
        }
    }
}

int cu_embed(struct cu_ctx *im, const struct nlpd_op_embed *p, struct nlpd_error *err)
{
    if (p->tokens <= 0) /* (dim 0 still checks the ids, as the CPU does) */
        return 0;
    if (!type_ok(p->out_type))
        return bad_type(err, p->out_type, "embedding");
    int slot = cu_slot_take(im, NLPD_OP_EMBED, p->n_word, p->n_pos, p->n_type, err);
    if (slot < 0)
        return slot;
    int grid = p->tokens < im->sm_count * 64 ? p->tokens : im->sm_count * 64;
    CU_TYPED_LAUNCH(p->out_type, k_embed, grid, row_block(p->dim), 0, im->stream, (T *)p->out, p->word, p->pos,
                    p->type, p->ids, p->pos_ids, p->type_ids, p->tokens, p->dim, p->n_word, p->n_pos, p->n_type,
                    p->word_scale, im->d_err + slot);
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
