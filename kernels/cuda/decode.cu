/* LOG_SOFTMAX_TOPK on the GPU: one block per row. The row's max and sum of exp (fp32, tree-reduced) give its
 * log-sum-exp; then k passes, each a block-wide argmax over the entries ranked below the previous pick in the
 * CPU's order (value descending, column ascending, NaN as -inf), so the columns picked are the CPU's exactly and
 * only the log-sum-exp differs by rounding (a non-finite logit makes the row's values NaN). k * cols reads per row: for
 * a 58k vocabulary and k = 8 about 2 MB, against downloading 232 KB of logits per row to the host. */
#include <float.h>
#include <math.h>

#include "cuda_internal.h"

#define TOPK_BLOCK 256

__device__ __forceinline__ float topk_key(float v)
{
    return v != v ? -INFINITY : v;
}

/* a NaN anywhere stays NaN: the row's vals become NaN, as on the CPU */
__device__ __forceinline__ float nan_max(float a, float b)
{
    return a != a || b != b ? NAN : fmaxf(a, b);
}

/* (key, col) better than (bk, bc): larger key, or equal key and lower column; col < 0 is nothing */
__device__ __forceinline__ bool topk_better(float key, int col, float bk, int bc)
{
    return bc < 0 || (col >= 0 && (key > bk || (key == bk && col < bc)));
}

__global__ void k_log_softmax_topk(struct nlpd_op_log_softmax_topk p)
{
    __shared__ float s_f[TOPK_BLOCK / 32];
    __shared__ int s_i[TOPK_BLOCK / 32];
    __shared__ float s_lse, s_pk;
    __shared__ int s_pc;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int r = blockIdx.x; r < p.rows; r += gridDim.x) {
        const float *x = p.x + (size_t)r * p.ld;
        float mx = -INFINITY;
        int bad = 0;
        for (int i = threadIdx.x; i < p.cols; i += blockDim.x) {
            mx = nan_max(mx, x[i]);
            bad |= !isfinite(x[i]);
        }
        bad = __syncthreads_or(bad);
        for (int o = 16; o > 0; o >>= 1)
            mx = nan_max(mx, __shfl_xor_sync(0xffffffffu, mx, o));
        if (lane == 0)
            s_f[warp] = mx;
        __syncthreads();
        mx = s_f[0];
        for (int w = 1; w < nw; w++)
            mx = nan_max(mx, s_f[w]);
        __syncthreads();
        float sum = 0.0f;
        for (int i = threadIdx.x; i < p.cols; i += blockDim.x)
            sum += expf(x[i] - mx);
        sum = cu_warp_sum(sum);
        if (lane == 0)
            s_f[warp] = sum;
        __syncthreads();
        if (threadIdx.x == 0) {
            float t = 0.0f;
            for (int w = 0; w < nw; w++)
                t += s_f[w];
            s_lse = bad ? NAN : mx + logf(t); /* a non-finite logit: the row's vals are NaN, as on the CPU */
            s_pk = INFINITY;
            s_pc = -1;
        }
        __syncthreads();
        for (int j = 0; j < p.k; j++) {
            const float pk = s_pk;
            const int pc = s_pc;
            float bk = -INFINITY;
            int bc = -1;
            for (int i = threadIdx.x; i < p.cols; i += blockDim.x) {
                float key = topk_key(x[i]);
                bool below = key < pk || (key == pk && i > pc); /* ranked after the previous pick */
                if (below && topk_better(key, i, bk, bc)) {
                    bk = key;
                    bc = i;
                }
            }
            for (int o = 16; o > 0; o >>= 1) {
                float ok = __shfl_xor_sync(0xffffffffu, bk, o);
                int oc = __shfl_xor_sync(0xffffffffu, bc, o);
                if (topk_better(ok, oc, bk, bc)) {
                    bk = ok;
                    bc = oc;
                }
            }
            if (lane == 0) {
                s_f[warp] = bk;
                s_i[warp] = bc;
            }
            __syncthreads();
            if (threadIdx.x == 0) {
                for (int w = 1; w < nw; w++)
                    if (topk_better(s_f[w], s_i[w], bk, bc)) {
                        bk = s_f[w];
                        bc = s_i[w];
                    }
                /* k <= cols: there is always a pick */
                p.idx[(size_t)r * p.k + j] = bc;
                p.vals[(size_t)r * p.k + j] = x[bc] - s_lse;
                s_pk = bk;
                s_pc = bc;
            }
            __syncthreads();
        }
    }
}

int cu_log_softmax_topk(struct cu_ctx *im, const struct nlpd_op_log_softmax_topk *p, struct nlpd_error *err)
{
    if (p->rows <= 0)
        return 0;
    if (p->k < 1 || p->k > NLPD_TOPK_MAX || p->k > p->cols)
        return nlpd_error_set(err, NLPD_EINVAL, 0, "top-k: k %d out of range (1..%d, at most %d columns)", p->k,
                              NLPD_TOPK_MAX, p->cols);
    int grid = p->rows < im->sm_count * 8 ? p->rows : im->sm_count * 8;
    CU_LAUNCH(k_log_softmax_topk, grid, TOPK_BLOCK, 0, im->stream)(*p);
    cudaError_t e = cudaGetLastError();
    return e == cudaSuccess ? 0 : cu_fail(err, e, "log-softmax top-k");
}
