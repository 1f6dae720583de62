/* ATTENTION_REL (DeBERTa-v2's disentangled self-attention) on the device, per (sequence, head) pair: batched
 * cuBLAS calls give the content scores scale * Q K^T and the relative products scale * Q PK^T (c2p) and
 * scale * K PQ^T (p2c) against all n_rel position rows of the head; a kernel (one warp per score row) gathers
 * score(i, j) += c2p[i][c] + p2c[j][c], c = rel_idx[i - j + seq - 1], applies the CPU's masking (keys past the last
 * attended one get probability 0, masked keys inside the score -FLT_MAX, nothing attended -> uniform) and takes
 * the softmax; a last batched call gives out = P V. The CPU multiplies only the band of position rows a block of
 * queries reads (kernels/cpu/cpu_rel_attention.c); here the band would need rel_idx, which lives on the device, so
 * the products take every row (n_rel / seq times the work of the band, on tensor cores unless strict). All of it
 * lives in the scratch arena, pairs run in chunks that fit it (as attention.cu). */
#include <float.h>

#include "cuda_internal.h"

struct rel_geom {
    const float *qkv, *pos_k, *pos_q;
    const int32_t *mask, *rel_idx;
    float *out, *scores, *c2p, *p2c; /* c2p / p2c: seq x n_rel per pair, NULL when the term is absent */
    int seq, heads, head_dim, n_rel, ld_qkv, ld_out, ld_pos;
};

#define REL_PTRS 12 /* pointer arrays per chunk */

/* Pointer arrays for pairs p0 .. p0+np-1, np entries each: [K | Q | S] scores, [V | S | O] output,
 * [PK | Q | C2P] and [PQ | K | P2C] the relative products. */
__global__ void k_rel_ptrs(const void **ptrs, struct rel_geom g, int p0, int np)
{
    int p = blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= np)
        return;
    int gp = p0 + p, b = gp / g.heads, h = gp - b * g.heads;
    const size_t H = (size_t)g.heads * g.head_dim, rel = (size_t)g.seq * g.n_rel;
    const float *q = g.qkv + (size_t)b * g.seq * g.ld_qkv + (size_t)h * g.head_dim;
    float *sc = g.scores + (size_t)p * g.seq * g.seq;
    const void *v[REL_PTRS] = {q + H,
                               q,
                               sc,
                               q + 2 * H,
                               sc,
                               g.out + (size_t)b * g.seq * g.ld_out + (size_t)h * g.head_dim,
                               g.pos_k ? g.pos_k + (size_t)h * g.head_dim : NULL,
                               q,
                               g.c2p ? g.c2p + p * rel : NULL,
                               g.pos_q ? g.pos_q + (size_t)h * g.head_dim : NULL,
                               q + H,
                               g.p2c ? g.p2c + p * rel : NULL};
    for (int a = 0; a < REL_PTRS; a++)
        ptrs[(size_t)a * np + p] = v[a];
}

/* The CPU's check of the table: every entry in [0, n_rel) and none below its predecessor; the first bad index
 * goes to the error word (reported at the next sync), and the scores kernel clamps, so nothing reads outside. */
__global__ void k_rel_check(const int32_t *ridx, int n, int n_rel, unsigned long long *errw)
{
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        int c = ridx[i];
        if (c < 0 || c >= n_rel || (i && c < ridx[i - 1]))
            atomicMin(errw, (unsigned long long)i);
    }
}

/* One warp per score row (pair p, query i), seq long: lanes over keys. */
__global__ void k_rel_softmax(struct rel_geom g, int p0, int np)
{
    const int warps = blockDim.x >> 5, lane = threadIdx.x & 31, S = g.seq;
    const size_t rows = (size_t)np * S;
    for (size_t r = (size_t)blockIdx.x * warps + (threadIdx.x >> 5); r < rows; r += (size_t)gridDim.x * warps) {
        const int p = (int)(r / S), i = (int)(r - (size_t)p * S);
        const int b = (p0 + p) / g.heads;
        const int32_t *m = g.mask ? g.mask + (size_t)b * S : NULL;
        float *row = g.scores + r * S;
        int kv = S;
        if (m) {
            int last = 0;
            for (int t = lane; t < S; t += 32)
                if (m[t])
                    last = t + 1;
            last = cu_warp_max_int(last);
            kv = last ? last : S;
        }
        const size_t rel = (size_t)S * g.n_rel;
        const float *c2p = g.c2p ? g.c2p + p * rel + (size_t)i * g.n_rel : NULL; /* row i */
        const float *p2c = g.p2c ? g.p2c + p * rel : NULL;                       /* row t: key t */
        const int32_t *ix = g.rel_idx + i + S - 1;                               /* ix[-t] = c(i, t) */
        float mx = -FLT_MAX;
        for (int t = lane; t < kv; t += 32) {
            int c = ix[-t];
            c = c < 0 ? 0 : c >= g.n_rel ? g.n_rel - 1 : c; /* a bad table is reported by k_rel_check */
            float v = row[t];
            if (c2p)
                v += c2p[c];
            if (p2c)
                v += p2c[(size_t)t * g.n_rel + c];
            if (m && !m[t])
                v = -FLT_MAX; /* as the CPU: the masked score is the dtype's minimum, not added to */
            row[t] = v;
            mx = v > mx ? v : mx;
        }
        cu_warp_softmax_row(row, mx, kv, S, lane);
    }
}

/* pointer array a of a chunk of np pairs (k_rel_ptrs' layout) */
static const void *const *arr(const void **ptrs, int a, int np)
{
    return ptrs + (size_t)a * np;
}

int cu_attention_rel(struct cu_ctx *im, const struct nlpd_op_attention_rel *p, struct nlpd_error *err)
{
    if (p->batch <= 0 || p->seq <= 0 || p->heads <= 0 || p->head_dim <= 0)
        return 0;
    if (p->n_rel <= 0 || !p->rel_idx)
        return nlpd_error_set(err, NLPD_EINVAL, 0, "attention_rel: no relative index table (n_rel %d)", p->n_rel);
    const int S = p->seq, NR = p->n_rel;
    const size_t score_bytes = (size_t)S * S * sizeof(float), rel_bytes = (size_t)S * NR * sizeof(float);
    const size_t per_pair = score_bytes + (p->pos_k ? rel_bytes : 0) + (p->pos_q ? rel_bytes : 0) +
                            REL_PTRS * sizeof(void *) + 3 * 256; /* + alignment of the three areas */
    size_t room = im->scratch_size > 1024 ? im->scratch_size - 1024 : 0, chunk = room / per_pair;
    if (chunk == 0)
        return nlpd_error_set(err, NLPD_ENOMEM, 0,
                              "cuda backend: relative attention scores of %d x %d and %d position rows do not fit "
                              "the %zu MiB scratch arena (raise NLPD_CUDA_ARENA_MB)",
                              S, S, NR, im->scratch_size >> 20);
    int slot = cu_slot_take(im, NLPD_OP_ATTENTION_REL, NR, 0, 0, err);
    if (slot < 0)
        return slot;
    CU_LAUNCH(k_rel_check, (2 * S - 1 + 255) / 256, 256, 0, im->stream)(p->rel_idx, 2 * S - 1, NR, im->d_err + slot);
    const int pairs = p->batch * p->heads;
    if (chunk > (size_t)pairs)
        chunk = (size_t)pairs;
    struct rel_geom g = {};
    g.qkv = p->qkv;
    g.pos_k = p->pos_k;
    g.pos_q = p->pos_q;
    g.mask = p->mask;
    g.rel_idx = p->rel_idx;
    g.out = p->out;
    g.seq = S;
    g.heads = p->heads;
    g.head_dim = p->head_dim;
    g.n_rel = NR;
    g.ld_qkv = p->ld_qkv;
    g.ld_out = p->ld_out;
    g.ld_pos = p->ld_pos;
    const void **ptrs = (const void **)im->scratch;
    char *area = im->scratch + ((chunk * REL_PTRS * sizeof(void *) + 255) & ~(size_t)255);
    g.scores = (float *)area;
    area += (chunk * score_bytes + 255) & ~(size_t)255;
    if (p->pos_k) {
        g.c2p = (float *)area;
        area += (chunk * rel_bytes + 255) & ~(size_t)255;
    }
    if (p->pos_q)
        g.p2c = (float *)area;
    const int D = p->head_dim, ldq = p->ld_qkv;
    for (int p0 = 0; p0 < pairs; p0 += (int)chunk) {
        int np = pairs - p0 < (int)chunk ? pairs - p0 : (int)chunk;
        CU_LAUNCH(k_rel_ptrs, (np + 127) / 128, 128, 0, im->stream)(ptrs, g, p0, np);
        /* scores[i, t] (row-major, seq wide) = scale * q_i . k_t */
        cublasStatus_t s = cu_batched_gemm(im, CUBLAS_OP_T, S, S, D, p->scale, arr(ptrs, 0, np), ldq, arr(ptrs, 1, np),
                                           ldq, (void *const *)arr(ptrs, 2, np), S, np);
        if (s != CUBLAS_STATUS_SUCCESS)
            return cu_blas_fail(err, s, "relative attention scores");
        /* c2p[i, c] = scale * q_i . pos_k[c], p2c[t, c] = scale * k_t . pos_q[c] (row-major, n_rel wide) */
        if (p->pos_k &&
            (s = cu_batched_gemm(im, CUBLAS_OP_T, NR, S, D, p->scale, arr(ptrs, 6, np), p->ld_pos, arr(ptrs, 7, np),
                                 ldq, (void *const *)arr(ptrs, 8, np), NR, np)) != CUBLAS_STATUS_SUCCESS)
            return cu_blas_fail(err, s, "relative attention c2p");
        if (p->pos_q &&
            (s = cu_batched_gemm(im, CUBLAS_OP_T, NR, S, D, p->scale, arr(ptrs, 9, np), p->ld_pos, arr(ptrs, 10, np),
                                 ldq, (void *const *)arr(ptrs, 11, np), NR, np)) != CUBLAS_STATUS_SUCCESS)
            return cu_blas_fail(err, s, "relative attention p2c");
        CU_LAUNCH(k_rel_softmax, cu_grid(im, (size_t)np * S, 4), 128, 0, im->stream)(g, p0, np);
        /* out[i, d] = sum_t p[i, t] v[t, d] (probabilities past the last attended key are 0) */
        s = cu_batched_gemm(im, CUBLAS_OP_N, D, S, S, 1.0f, arr(ptrs, 3, np), ldq, arr(ptrs, 4, np), S,
                            (void *const *)arr(ptrs, 5, np), p->ld_out, np);
        if (s != CUBLAS_STATUS_SUCCESS)
            return cu_blas_fail(err, s, "relative attention output");
    }
    cudaError_t e = cudaGetLastError();
    return e == cudaSuccess ? 0 : cu_fail(err, e, "relative attention");
}
