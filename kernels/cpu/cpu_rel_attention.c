/* DeBERTa-v2 disentangled self-attention on the CPU (NLPD_OP_ATTENTION_REL): the content, content-to-position
 * and position-to-content products run as batched oneDNN products over a chunk of heads, then one fused pass
 * gathers the relative terms into the scores, masks and takes the softmax, and a last product applies V. */
#include <float.h>
#include <stdint.h>

#include "cpu_onednn.h"
#include "cpu_ops.h"

/* At most this many score floats per chunk of heads, as the plain attention does. */
#define REL_SCORES (1u << 20)
/* Queries (keys) per relative-position product: smaller blocks read fewer position rows, larger ones make
 * better products; 32 of 128 tokens reads 159 rows instead of 255. */
#define REL_BLOCK 32

/* Position rows the widest batch row reads (a bad table is refused by the op; the bound keeps scratch sane). */
static int band(const struct nlpd_op_attention_rel *p)
{
    long n = (long)p->rel_idx[2 * p->seq - 2] - p->rel_idx[0] + 1;
    return n < 1 ? 1 : n > p->n_rel ? p->n_rel : (int)n;
}

static int heads_per_chunk(const struct nlpd_op_attention_rel *p)
{
    size_t per_head = (size_t)p->seq * (size_t)p->seq;
    int hc = per_head >= REL_SCORES ? 1 : (int)(REL_SCORES / per_head);
    return hc > p->heads ? p->heads : hc;
}

size_t nlpd_cpu_attention_rel_scratch(const struct nlpd_op_attention_rel *p)
{
    size_t S = (size_t)p->seq, nc = (size_t)band(p);
    return (size_t)heads_per_chunk(p) * (S * S + 2 * S * nc) + 1;
}

int nlpd_cpu_attention_rel(const struct nlpd_op_attention_rel *p, float *scratch, int threads, struct nlpd_error *err)
{
    const int S = p->seq, D = p->head_dim, H = p->heads * p->head_dim, hc = heads_per_chunk(p);
    const int32_t *ridx = p->rel_idx;
    for (int i = 0; i < 2 * S - 1; i++)
        if (ridx[i] < 0 || ridx[i] >= p->n_rel || (i && ridx[i] < ridx[i - 1]))
            return nlpd_error_set(err, NLPD_EINVAL, 0, "attention_rel: relative index %d out of order or range", i);
    for (int b = 0; b < p->batch; b++) {
        const int32_t *mask = p->mask ? p->mask + (size_t)b * S : NULL;
        int kv = S; /* keys past the last attended one get probability exactly 0: skip them */
        if (mask) {
            while (kv > 0 && !mask[kv - 1])
                kv--;
            if (kv == 0)
                kv = S;
        }
        /* Each block of REL_BLOCK queries (keys, for p2c) reads only the position rows of its own i - j range:
         * kv + REL_BLOCK - 1 rows instead of the 2 S - 1 of the whole band (fewer for log buckets). wq / wk: the
         * widest block, the row stride of the products. */
        int wq = 1, wk = 1;
        for (int i0 = 0; i0 < S; i0 += REL_BLOCK) {
            int i1 = i0 + REL_BLOCK < S ? i0 + REL_BLOCK : S, w = ridx[i1 + S - 2] - ridx[i0 + S - kv] + 1;
            wq = w > wq ? w : wq;
        }
        for (int j0 = 0; j0 < kv; j0 += REL_BLOCK) {
            int j1 = j0 + REL_BLOCK < kv ? j0 + REL_BLOCK : kv, w = ridx[2 * S - 2 - j0] - ridx[S - j1] + 1;
            wk = w > wk ? w : wk;
        }
        const size_t per = (size_t)S * kv, per_q = (size_t)S * wq, per_k = (size_t)S * wk;
        float *sc = scratch, *c2p = sc + (size_t)hc * per, *p2c = c2p + (size_t)hc * per_q;
        const float *base = p->qkv + (size_t)b * S * p->ld_qkv;
        for (int h0 = 0; h0 < p->heads; h0 += hc) {
            const int nh = p->heads - h0 < hc ? p->heads - h0 : hc;
            const float *q = base + (size_t)h0 * D, *k = base + H + (size_t)h0 * D, *v = base + 2 * H + (size_t)h0 * D;
            const long long sq[3] = {D, p->ld_qkv, 1}, skt[3] = {D, 1, p->ld_qkv}, ss[3] = {(long long)per, kv, 1};
            const long long spt[3] = {D, 1, p->ld_pos}, sq2[3] = {(long long)per_q, wq, 1},
                            sk2[3] = {(long long)per_k, wk, 1};
            int rc = nlpd_onednn_matmul_batched(nh, S, kv, D, p->scale, q, sq, k, skt, sc, ss, threads, err);
            for (int i0 = 0; !rc && p->pos_k && i0 < S; i0 += REL_BLOCK) {
                int i1 = i0 + REL_BLOCK < S ? i0 + REL_BLOCK : S, lo = ridx[i0 + S - kv];
                rc = nlpd_onednn_matmul_batched(
                    nh, i1 - i0, ridx[i1 + S - 2] - lo + 1, D, p->scale, q + (size_t)i0 * p->ld_qkv, sq,
                    p->pos_k + (size_t)lo * p->ld_pos + (size_t)h0 * D, spt, c2p + (size_t)i0 * wq, sq2, threads, err);
            }
            for (int j0 = 0; !rc && p->pos_q && j0 < kv; j0 += REL_BLOCK) { /* rows are keys j < kv */
                int j1 = j0 + REL_BLOCK < kv ? j0 + REL_BLOCK : kv, lo = ridx[S - j1];
                rc = nlpd_onednn_matmul_batched(
                    nh, j1 - j0, ridx[2 * S - 2 - j0] - lo + 1, D, p->scale, k + (size_t)j0 * p->ld_qkv, sq,
                    p->pos_q + (size_t)lo * p->ld_pos + (size_t)h0 * D, spt, p2c + (size_t)j0 * wk, sk2, threads, err);
            }
            if (rc)
                return rc;
            const float *pk = p->pos_k ? c2p : NULL, *pq = p->pos_q ? p2c : NULL;
            /* small passes stay on the calling thread: waking a team costs more than the work (as row_team) */
            const int team = (size_t)nh * per < ((size_t)1 << 19) || threads < 1 ? 1 : threads;
#pragma omp parallel for num_threads(team) schedule(static)
            for (int r = 0; r < nh * S; r++) {
                const int h = r / S, i = r % S;
                float *row = sc + (size_t)h * per + (size_t)i * kv;
                const int32_t *ix = ridx + i + S - 1; /* ix[-j] = c(i, j) */
                if (pk) { /* row i of its block's product, whose column 0 is position row lo */
                    const float *cr =
                        pk + (size_t)h * per_q + (size_t)i * wq - ridx[i / REL_BLOCK * REL_BLOCK + S - kv];
                    for (int j = 0; j < kv; j++)
                        row[j] += cr[ix[-j]];
                }
                if (pq) {
                    const float *pr = pq + (size_t)h * per_k;
                    for (int j0 = 0; j0 < kv; j0 += REL_BLOCK) {
                        const int j1 = j0 + REL_BLOCK < kv ? j0 + REL_BLOCK : kv;
                        const float *pb = pr - ridx[S - j1];
                        for (int j = j0; j < j1; j++)
                            row[j] += pb[(size_t)j * wk + ix[-j]];
                    }
                }
                if (mask)
                    for (int j = 0; j < kv; j++)
                        if (!mask[j])
                            row[j] = -FLT_MAX; /* transformers fills masked pairs with the dtype's minimum */
            }
            nlpd_cpu_softmax_masked(sc, nh * S, kv, NULL);
            const long long sv[3] = {D, p->ld_qkv, 1}, so[3] = {D, p->ld_out, 1};
            rc = nlpd_onednn_matmul_batched(nh, S, D, kv, 1.0f, sc, ss, v, sv,
                                            p->out + (size_t)b * S * p->ld_out + (size_t)h0 * D, so, threads, err);
            if (rc)
                return rc;
        }
    }
    return 0;
}
