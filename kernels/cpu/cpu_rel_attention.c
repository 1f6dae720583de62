/* DeBERTa-v2 disentangled self-attention on the CPU (NLPD_OP_ATTENTION_REL): the content, content-to-position
 * and position-to-content products run as batched oneDNN products over a chunk of heads, then one fused pass
 * gathers the relative terms into the scores, masks and takes the softmax, and a last product applies V. */
#include <float.h>
#include <stdint.h>

#include "cpu_onednn.h"
#include "cpu_ops.h"

/* At most this many score floats per chunk of heads, as the plain attention does. */
#define REL_SCORES (1u << 20)

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
        /* i - j spans [-(kv-1), S-1]: the band of position rows this batch row reads */
        const int c_lo = ridx[S - kv], c_hi = ridx[2 * S - 2], nc = c_hi - c_lo + 1;
        const size_t per = (size_t)S * kv, per_c = (size_t)S * nc;
        float *sc = scratch, *c2p = sc + (size_t)hc * per, *p2c = c2p + (size_t)hc * per_c;
        const float *base = p->qkv + (size_t)b * S * p->ld_qkv;
        for (int h0 = 0; h0 < p->heads; h0 += hc) {
            const int nh = p->heads - h0 < hc ? p->heads - h0 : hc;
            const float *q = base + (size_t)h0 * D, *k = base + H + (size_t)h0 * D, *v = base + 2 * H + (size_t)h0 * D;
            const long long sq[3] = {D, p->ld_qkv, 1}, skt[3] = {D, 1, p->ld_qkv}, ss[3] = {(long long)per, kv, 1};
            const long long spt[3] = {D, 1, p->ld_pos}, sc2[3] = {(long long)per_c, nc, 1};
            int rc = nlpd_onednn_matmul_batched(nh, S, kv, D, p->scale, q, sq, k, skt, sc, ss, threads, err);
            if (!rc && p->pos_k)
                rc = nlpd_onednn_matmul_batched(nh, S, nc, D, p->scale, q, sq,
                                                p->pos_k + (size_t)c_lo * p->ld_pos + (size_t)h0 * D, spt, c2p, sc2,
                                                threads, err);
            if (!rc && p->pos_q) /* rows are keys j < kv */
                rc = nlpd_onednn_matmul_batched(nh, kv, nc, D, p->scale, k, sq,
                                                p->pos_q + (size_t)c_lo * p->ld_pos + (size_t)h0 * D, spt, p2c, sc2,
                                                threads, err);
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
                if (pk) {
                    const float *cr = pk + (size_t)h * per_c + (size_t)i * nc - c_lo;
                    for (int j = 0; j < kv; j++)
                        row[j] += cr[ix[-j]];
                }
                if (pq) {
                    const float *pr = pq + (size_t)h * per_c - c_lo;
                    for (int j = 0; j < kv; j++)
                        row[j] += pr[(size_t)j * nc + ix[-j]];
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
