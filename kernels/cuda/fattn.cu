/* Fused attention, flash-attention style: one thread block per (sequence, head, tile of 16 x warps query rows).
 * The Q tile and 64-key K/V tiles are staged in shared memory as fp16/bf16 (converted on load from fp32 operands,
 * copied as is from half ones), head_dim padded with zeros to a multiple of 16. Each warp owns 16 query rows:
 * S = Q K^T on tensor cores (wmma m16n16k16, fp32 accumulation) into fp32 shared memory, an online softmax in
 * fp32 (running max and sum per row), P rounded to the compute type, O += P V on tensor cores into an fp32 O tile
 * in shared memory (rescaled there: a fragment's layout is opaque, so rows cannot be scaled in registers).
 * Masking is the CPU backend's exactly (kernels/cpu/cpu_ops.c): keys past the last attended one are left out,
 * masked keys inside get -FLT_MAX added (probability 0 beside any attended key; a row with none attended is
 * therefore uniform over its keys), and for ATTENTION_KV the causal limits. The row sum adds the rounded
 * probabilities, the ones the P V product uses, so the weights sum to 1. */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <float.h>
#include <mma.h>

#include "fattn.h"

namespace wmma = nvcuda::wmma;

#define FA_BK   64 /* keys per tile */
#define FA_MAXW 4  /* warps per block (16 query rows each) */
#ifdef NLPD_CU_EMUL
#define FA_UNROLL
#else
#define FA_UNROLL _Pragma("unroll") /* x[] stays in registers */
#endif

/* What the kernel needs: the op, the block decomposition and the shared-memory layout (byte offsets). */
struct fa_geom {
    const void *q, *k, *v;
    void *out;
    const int32_t *kv_map, *mask;
    size_t mask_ld, kv_batch_rows, ld_q, ld_kv, ld_out;
    int heads, head_dim, q_len, kv_len, kv_mode, causal, q_pos0;
    float scale;
    int warps, q_tiles, dp; /* dp: head_dim padded to a multiple of 16 */
    int ldh, lds, ldp, ldo; /* row strides (elements) of the Q/K/V, S, P and O tiles */
    size_t off_k, off_v, off_s, off_p, off_o, off_row, off_flag; /* Q at 0; after the flags the last attended key */
};

template <typename T> __device__ __forceinline__ T fa_from(float x);
template <> __device__ __forceinline__ __half fa_from<__half>(float x)
{
    return __float2half_rn(x);
}
template <> __device__ __forceinline__ __nv_bfloat16 fa_from<__nv_bfloat16>(float x)
{
    return __float2bfloat16_rn(x);
}
__device__ __forceinline__ float fa_to(__half x)
{
    return __half2float(x);
}
__device__ __forceinline__ float fa_to(__nv_bfloat16 x)
{
    return __bfloat162float(x);
}
/* fp16 saturates to +-65504 on load and store, as the half activations do (elementwise.cu): an overflow stays
 * finite instead of becoming inf - inf = NaN in the softmax; NaN passes (the comparisons are false). bf16 has
 * fp32's range. */
template <typename T> __device__ __forceinline__ float fa_sat(float x)
{
    return x;
}
template <> __device__ __forceinline__ float fa_sat<__half>(float x)
{
    return x > 65504.0f ? 65504.0f : x < -65504.0f ? -65504.0f : x;
}
/* an operand element as the compute type */
template <typename T> __device__ __forceinline__ T fa_in(const float *p)
{
    return fa_from<T>(fa_sat<T>(*p));
}
template <typename T> __device__ __forceinline__ T fa_in(const T *p)
{
    return fa_from<T>(fa_sat<T>(fa_to(*p)));
}
__device__ __forceinline__ void fa_store(float *p, float x)
{
    *p = x;
}
__device__ __forceinline__ void fa_store(__half *p, float x)
{
    *p = __float2half_rn(fa_sat<__half>(x));
}
__device__ __forceinline__ void fa_store(__nv_bfloat16 *p, float x)
{
    *p = __float2bfloat16_rn(x);
}

/* T: compute type (__half, __nv_bfloat16); IO: operand type (float or T). blockDim.x = 32 * g.warps. */
template <typename T, typename IO> __global__ void k_fattn(struct fa_geom g)
{
    /* no static __shared__ here: it would push the dynamic region's start to a 16-byte boundary, and wmma wants
     * 32-byte aligned tiles */
    CU_DYN_SHARED(unsigned char, smem);
    T *sq = (T *)smem, *sk = (T *)(smem + g.off_k), *sv = (T *)(smem + g.off_v), *sp = (T *)(smem + g.off_p);
    float *ss = (float *)(smem + g.off_s), *so = (float *)(smem + g.off_o), *srow = (float *)(smem + g.off_row);
    int *sflag = (int *)(smem + g.off_flag), *s_last = sflag + FA_BK;

    const int tid = threadIdx.x, nthr = blockDim.x, warp = tid >> 5, lane = tid & 31;
    const int BQ = 16 * g.warps, DP = g.dp, D = g.head_dim;
    int blk = blockIdx.x;
    const int q0 = (blk % g.q_tiles) * BQ;
    blk /= g.q_tiles;
    const int h = blk % g.heads, b = blk / g.heads;
    const size_t j = g.kv_map ? (size_t)g.kv_map[b] : (size_t)b;
    const int32_t *m = g.mask ? g.mask + j * g.mask_ld : NULL;

    /* keys past the last attended one are left out (nothing attended: every key, uniformly) */
    if (tid == 0)
        *s_last = 0;
    __syncthreads();
    if (m) {
        int last = 0;
        for (int t = tid; t < g.kv_len; t += nthr)
            if (m[t])
                last = t + 1;
        if (last)
            atomicMax(s_last, last);
    }
    __syncthreads();
    int kv = m && *s_last ? *s_last : g.kv_len;
    if (g.kv_mode) {
        if (g.causal && g.q_pos0 + g.q_len < kv)
            kv = g.q_pos0 + g.q_len;
        if (kv <= 0)
            kv = 1;
    }
    /* this lane pair's row (lanes 2r and 2r + 1 hold 32 keys each of a tile) and its key count */
    const int r = lane >> 1, half = lane & 1, wr = warp * 16 + r, i = q0 + wr;
    int n = kv;
    if (g.kv_mode && g.causal && g.q_pos0 + i + 1 < n)
        n = g.q_pos0 + i + 1;
    if (n > g.kv_len)
        n = g.kv_len;
    if (n < 0 || i >= g.q_len)
        n = 0;
    /* the block's key count: the most any of its rows reads */
    int kv_end = kv;
    if (g.kv_mode && g.causal) {
        int i_max = q0 + BQ < g.q_len ? q0 + BQ - 1 : g.q_len - 1;
        if (g.q_pos0 + i_max + 1 < kv_end)
            kv_end = g.q_pos0 + i_max + 1;
    }
    if (kv_end > g.kv_len)
        kv_end = g.kv_len;

    const T zero = fa_from<T>(0.0f);
    const IO *qp = (const IO *)g.q + (size_t)b * g.q_len * g.ld_q + (size_t)h * D;
    const IO *kp = (const IO *)g.k + j * g.kv_batch_rows * g.ld_kv + (size_t)h * D;
    const IO *vp = (const IO *)g.v + j * g.kv_batch_rows * g.ld_kv + (size_t)h * D;
    for (int e = tid; e < BQ * DP; e += nthr) {
        int rr = e / DP, d = e - rr * DP;
        sq[rr * g.ldh + d] = q0 + rr < g.q_len && d < D ? fa_in<T>(qp + (size_t)(q0 + rr) * g.ld_q + d) : zero;
        so[rr * g.ldo + d] = 0.0f;
    }
    float m_run = -INFINITY, l_run = 0.0f;

    for (int t0 = 0; t0 < kv_end; t0 += FA_BK) {
        __syncthreads(); /* the previous tile's K, V and flags are no longer read (first pass: Q and O are set) */
        for (int e = tid; e < FA_BK * DP; e += nthr) {
            int rr = e / DP, d = e - rr * DP;
            T xk = zero, xv = zero;
            if (t0 + rr < kv_end && d < D) { /* zeros elsewhere: 0 * garbage could be NaN */
                xk = fa_in<T>(kp + (size_t)(t0 + rr) * g.ld_kv + d);
                xv = fa_in<T>(vp + (size_t)(t0 + rr) * g.ld_kv + d);
            }
            sk[rr * g.ldh + d] = xk;
            sv[rr * g.ldh + d] = xv;
        }
        for (int e = tid; e < FA_BK; e += nthr)
            sflag[e] = !m || t0 + e >= kv_end || m[t0 + e] != 0;
        __syncthreads();

        /* S = Q K^T for this warp's 16 rows */
        for (int nt = 0; nt < FA_BK / 16; nt++) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
            wmma::fill_fragment(acc, 0.0f);
            for (int ks = 0; ks < DP / 16; ks++) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fb;
                wmma::load_matrix_sync(fa, sq + warp * 16 * g.ldh + ks * 16, g.ldh);
                wmma::load_matrix_sync(fb, sk + nt * 16 * g.ldh + ks * 16, g.ldh);
                wmma::mma_sync(acc, fa, fb, acc);
            }
            wmma::store_matrix_sync(ss + warp * 16 * g.lds + nt * 16, acc, g.lds, wmma::mem_row_major);
        }
        __syncwarp();

        /* online softmax of row wr over this tile's keys t0 + half * 32 + c */
        {
            const float *srow_s = ss + wr * g.lds + half * 32;
            T *prow = sp + wr * g.ldp + half * 32;
            float x[32], mx = -INFINITY;
            FA_UNROLL
            for (int c = 0; c < 32; c++) {
                const int t = t0 + half * 32 + c;
                float s = -INFINITY;
                if (t < n) {
                    s = srow_s[c] * g.scale;
                    if (!sflag[half * 32 + c])
                        s += -FLT_MAX;
                }
                x[c] = s;
                mx = fmaxf(mx, s);
            }
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            const float m_new = fmaxf(m_run, mx);
            float corr = 1.0f, sum = 0.0f;
            if (m_new != -INFINITY)
                corr = expf(m_run - m_new); /* 0 when m_run is -inf */
            FA_UNROLL
            for (int c = 0; c < 32; c++) {
                const T p = x[c] == -INFINITY ? zero : fa_from<T>(expf(x[c] - m_new));
                prow[c] = p;
                sum += fa_to(p);
            }
            sum += __shfl_xor_sync(0xffffffffu, sum, 1);
            l_run = l_run * corr + sum;
            m_run = m_new;
            if (!half)
                srow[wr] = corr;
        }
        __syncwarp();
        if (!__all_sync(0xffffffffu, srow[wr] == 1.0f)) { /* some row's max moved: rescale its O */
            for (int e = lane; e < 16 * DP; e += 32) {
                int rr = e / DP, d = e - rr * DP;
                so[(warp * 16 + rr) * g.ldo + d] *= srow[warp * 16 + rr];
            }
            __syncwarp();
        }

        /* O += P V */
        for (int dt = 0; dt < DP / 16; dt++) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
            float *o = so + warp * 16 * g.ldo + dt * 16;
            wmma::load_matrix_sync(acc, o, g.ldo, wmma::mem_row_major);
            for (int ks = 0; ks < FA_BK / 16; ks++) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> fb;
                wmma::load_matrix_sync(fa, sp + warp * 16 * g.ldp + ks * 16, g.ldp);
                wmma::load_matrix_sync(fb, sv + ks * 16 * g.ldh + dt * 16, g.ldh);
                wmma::mma_sync(acc, fa, fb, acc);
            }
            wmma::store_matrix_sync(o, acc, g.ldo, wmma::mem_row_major);
        }
    }
    __syncthreads(); /* O's zeros when there was no tile */
    if (!half)
        srow[wr] = l_run;
    __syncwarp();
    IO *op = (IO *)g.out + (size_t)b * g.q_len * g.ld_out + (size_t)h * D;
    for (int e = lane; e < 16 * D; e += 32) {
        int rr = e / D, d = e - rr * D, row = q0 + warp * 16 + rr;
        if (row >= g.q_len)
            continue;
        float l = srow[warp * 16 + rr];
        fa_store(op + (size_t)row * g.ld_out + d, l > 0.0f ? so[(warp * 16 + rr) * g.ldo + d] / l : 0.0f);
    }
}

static size_t fa_align(size_t x)
{
    return (x + 127) & ~(size_t)127;
}

/* The layout for w warps and padded head_dim dp; returns the shared bytes. Strides keep every 16-row tile start
 * 32-byte aligned (wmma) and shift rows across banks. */
static size_t fa_layout(struct fa_geom *g, int w, int dp)
{
    const size_t bq = 16 * (size_t)w;
    g->warps = w;
    g->dp = dp;
    g->ldh = dp + 8;
    g->lds = FA_BK + 4;
    g->ldp = FA_BK + 8;
    g->ldo = dp + 4;
    size_t at = fa_align(bq * g->ldh * 2);
    g->off_k = at;
    at = fa_align(at + FA_BK * (size_t)g->ldh * 2);
    g->off_v = at;
    at = fa_align(at + FA_BK * (size_t)g->ldh * 2);
    g->off_s = at;
    at = fa_align(at + bq * g->lds * 4);
    g->off_p = at;
    at = fa_align(at + bq * g->ldp * 2);
    g->off_o = at;
    at = fa_align(at + bq * g->ldo * 4);
    g->off_row = at;
    at = fa_align(at + bq * 4);
    g->off_flag = at;
    return at + (FA_BK + 1) * 4; /* flags, then the last attended key */
}

template <typename T, typename IO>
static int fa_launch(struct cu_ctx *im, const struct fa_geom *g, int grid, size_t bytes, struct nlpd_error *err)
{
    void (*kern)(struct fa_geom) = k_fattn<T, IO>;
    if (bytes > 48 * 1024) {
        /* the opt-in limit (163 KiB on sm_80, 227 KiB on sm_90), always set to the largest layout: a per-launch
         * value would race with another thread's launch of a larger one */
        struct fa_geom big = {};
        const int most = (int)fa_layout(&big, FA_MAXW, CU_FATTN_MAX_HEAD_DIM);
        cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, most);
        if (e != cudaSuccess)
            return cu_fail(err, e, "fused attention (shared memory size)");
    }
    CU_LAUNCH(kern, grid, 32 * g->warps, bytes, im->stream)(*g);
    cudaError_t e = cudaGetLastError();
    return e == cudaSuccess ? 0 : cu_fail(err, e, "fused attention");
}

int cu_fattn(struct cu_ctx *im, enum nlpd_dtype compute, const struct cu_fattn_args *a, struct nlpd_error *err)
{
    if (compute != NLPD_DTYPE_F16 && compute != NLPD_DTYPE_BF16)
        return nlpd_error_set(err, NLPD_EINVAL, 0, "cuda backend: fused attention computes in fp16 or bf16 only");
    if (a->io_type != NLPD_DTYPE_F32 && a->io_type != compute)
        return nlpd_error_set(err, NLPD_EINVAL, 0, "cuda backend: fused attention with operands of another type");
    if (a->head_dim > CU_FATTN_MAX_HEAD_DIM)
        return nlpd_error_set(err, NLPD_EINVAL, 0, "cuda backend: fused attention takes head_dim <= %d, not %d",
                              CU_FATTN_MAX_HEAD_DIM, a->head_dim);
    if (a->batch <= 0 || a->q_len <= 0 || a->heads <= 0 || a->head_dim <= 0 || a->kv_len <= 0)
        return 0;
    struct fa_geom g = {};
    g.q = a->q;
    g.k = a->k;
    g.v = a->v;
    g.out = a->out;
    g.kv_map = a->kv_map;
    g.mask = a->mask;
    g.mask_ld = a->mask_ld;
    g.kv_batch_rows = a->kv_batch_rows;
    g.ld_q = a->ld_q;
    g.ld_kv = a->ld_kv;
    g.ld_out = a->ld_out;
    g.heads = a->heads;
    g.head_dim = a->head_dim;
    g.q_len = a->q_len;
    g.kv_len = a->kv_len;
    g.kv_mode = a->kv_mode;
    g.causal = a->causal;
    g.q_pos0 = a->q_pos0;
    g.scale = a->scale;
    /* short queries (decoder steps, short sequences) take fewer warps, not 64 mostly empty rows */
    int w = (a->q_len + 15) / 16;
    if (w > FA_MAXW)
        w = FA_MAXW;
    size_t bytes = fa_layout(&g, w, (a->head_dim + 15) / 16 * 16);
    g.q_tiles = (a->q_len + 16 * w - 1) / (16 * w);
    long long blocks = (long long)g.q_tiles * a->heads * a->batch;
    if (blocks > 0x7fffffffLL)
        return nlpd_error_set(err, NLPD_EINVAL, 0, "cuda backend: fused attention grid of %lld blocks", blocks);
    const int grid = (int)blocks;
    if (compute == NLPD_DTYPE_BF16)
        return a->io_type == NLPD_DTYPE_F32 ? fa_launch<__nv_bfloat16, float>(im, &g, grid, bytes, err)
                                            : fa_launch<__nv_bfloat16, __nv_bfloat16>(im, &g, grid, bytes, err);
    return a->io_type == NLPD_DTYPE_F32 ? fa_launch<__half, float>(im, &g, grid, bytes, err)
                                        : fa_launch<__half, __half>(im, &g, grid, bytes, err);
}
