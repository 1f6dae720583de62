/* CPU kernels against naive double-precision references, on the best SIMD path, AVX2+FMA and scalar, through the
 * backend vtable; plus the F16/BF16 conversions. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_ops.h"
#include "harness.h"
#include "nlpd_backend.h"

static struct nlpd_backend *be;
static unsigned rng = 12345;

static float frand(float lo, float hi)
{
    rng = rng * 1103515245u + 12345u;
    return lo + (hi - lo) * (float)((rng >> 8) & 0xffffff) / (float)0x1000000;
}

static float *rnd(size_t n, float lo, float hi)
{
    float *v = malloc((n ? n : 1) * sizeof *v);
    for (size_t i = 0; i < n; i++)
        v[i] = frand(lo, hi);
    return v;
}

static double ref_act(double x, enum nlpd_act act)
{
    switch (act) {
    case NLPD_ACT_NONE: return x;
    case NLPD_ACT_GELU: return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
    case NLPD_ACT_GELU_TANH: return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    case NLPD_ACT_RELU: return x > 0 ? x : 0;
    case NLPD_ACT_SILU: return x / (1.0 + exp(-x));
    case NLPD_ACT_TANH: return tanh(x);
    }
    return x;
}

/* Float32 unit roundoff. Whatever order a kernel sums n terms in (BLAS blocking, SIMD width, CPU), the float
 * result is within gamma(n) times the sum of the terms' magnitudes of the exact sum (Higham, "Accuracy and
 * Stability of Numerical Algorithms", 3.1). The tolerances of the reductions below are built from that, so
 * they hold for any x86-64 CPU and BLAS kernel, not just this one. */
#define U_F32 ((double)FLT_EPSILON / 2)

static double gamma_n(int n)
{
    return n * U_F32 / (1 - n * U_F32);
}

/* exp(fl(s - mx)) for a score s carrying an absolute error s_err: relative error of the term, including the
 * rounding of the subtraction and expf's few ulp. */
static double exp_term_err(double s_err, double arg)
{
    return s_err + U_F32 * fabs(arg) + 4 * U_F32;
}

static void run_op(struct nlpd_op *op)
{
    struct nlpd_error err = {0};
    CHECK(nlpd_backend_run(be, op, &err) == 0);
    CHECK(nlpd_backend_sync(be, &err) == 0);
}

static void check_act(void)
{
    static const enum nlpd_act acts[] = {NLPD_ACT_GELU, NLPD_ACT_GELU_TANH, NLPD_ACT_RELU, NLPD_ACT_SILU,
                                         NLPD_ACT_TANH};
    const size_t n = 4003;
    for (size_t a = 0; a < sizeof acts / sizeof acts[0]; a++) {
        float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
        for (size_t i = 0; i < n; i++)
            x[i] = -12.0f + 24.0f * (float)i / (float)(n - 1);
        x[0] = -90.0f;
        x[1] = 90.0f;
        x[2] = 0.0f;
        x[3] = 1e-6f;
        memcpy(y, x, n * sizeof *y);
        nlpd_cpu_act(y, n, acts[a]);
        double worst = 0;
        for (size_t i = 0; i < n; i++) {
            double want = ref_act(x[i], acts[a]);
            worst = fmax(worst, fabs(y[i] - want) / (1.0 + fabs(want)));
        }
        CHECK(worst < 2e-6);
        if (worst >= 2e-6)
            fprintf(stderr, "  act %d: worst relative error %g\n", (int)acts[a], worst);
        free(x);
        free(y);
    }
}

/* BIAS_ACT with a residual (pre-norm sub-layers): x = act(x + bias) + residual, rows at stride ld; the
 * padding between rows stays untouched. One rounding per add: the sums are exact to 2 ulp. */
static void check_bias_act_residual(void)
{
    const int rows = 5, cols = 37, ld = 40;
    float x[5 * 40], res[5 * 40], bias[37], want[5 * 40];
    for (int i = 0; i < rows * ld; i++) {
        x[i] = (float)((i * 7919) % 201 - 100) / 37.0f;
        res[i] = (float)((i * 104729) % 199 - 99) / 29.0f;
    }
    for (int c = 0; c < cols; c++)
        bias[c] = (float)(c % 11 - 5) / 13.0f;
    for (int a = 0; a < 2; a++) {
        enum nlpd_act act = a ? NLPD_ACT_RELU : NLPD_ACT_NONE;
        float y[5 * 40];
        memcpy(y, x, sizeof y);
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < ld; c++) {
                float v = x[r * ld + c];
                if (c < cols) {
                    v += bias[c];
                    v = act == NLPD_ACT_RELU && v < 0 ? 0.0f : v;
                    v += res[r * ld + c];
                }
                want[r * ld + c] = v;
            }
        struct nlpd_op op = {.kind = NLPD_OP_BIAS_ACT};
        op.u.bias_act = (struct nlpd_op_bias_act){y, bias, rows, cols, ld, act, res, NLPD_DTYPE_F32};
        run_op(&op);
        int bad = 0;
        for (int i = 0; i < rows * ld; i++)
            bad += fabsf(y[i] - want[i]) > 2 * U_F32 * (1.0f + fabsf(want[i]));
        CHECK(bad == 0);
        /* no bias, no activation: the residual alone is still added */
        memcpy(y, x, sizeof y);
        op.u.bias_act = (struct nlpd_op_bias_act){y, NULL, rows, cols, ld, NLPD_ACT_NONE, res, NLPD_DTYPE_F32};
        run_op(&op);
        CHECK(y[0] == x[0] + res[0] && y[ld + 3] == x[ld + 3] + res[ld + 3] && y[cols] == x[cols]);
    }
}

static void check_matmul(void)
{
    static const int shapes[][3] = {{1, 1, 1}, {5, 7, 3}, {17, 33, 65}, {64, 96, 32}, {3, 9, 0}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int tb = 0; tb < 2; tb++)
            for (int act = NLPD_ACT_NONE; act <= NLPD_ACT_TANH; act++) {
                int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
                float *a = rnd((size_t)m * k, -1, 1), *b = rnd((size_t)n * k, -1, 1), *bias = rnd((size_t)n, -1, 1);
                float *c = rnd((size_t)m * n, 100, 200); /* garbage that must be overwritten */
                struct nlpd_op op = {.kind = NLPD_OP_MATMUL};
                op.u.matmul = (struct nlpd_op_matmul){c,
                                                      a,
                                                      b,
                                                      act % 2 ? bias : NULL,
                                                      m,
                                                      n,
                                                      k,
                                                      k,
                                                      tb ? k : n,
                                                      n,
                                                      tb,
                                                      (enum nlpd_act)act,
                                                      NLPD_DTYPE_F32,
                                                      NLPD_DTYPE_F32};
                run_op(&op);
                int bad = 0;
                for (int i = 0; i < m; i++)
                    for (int j = 0; j < n; j++) {
                        double acc = act % 2 ? bias[j] : 0.0, mag = fabs(acc);
                        for (int l = 0; l < k; l++) {
                            double t =
                                (double)a[(size_t)i * k + l] * (tb ? b[(size_t)j * k + l] : b[(size_t)l * n + j]);
                            acc += t;
                            mag += fabs(t);
                        }
                        /* the sum's bound, through an activation of slope <= 1.2, plus its own few-ulp error */
                        double want = ref_act(acc, (enum nlpd_act)act);
                        double tol = 1.2 * gamma_n(k + 2) * mag + 16 * U_F32 * (1 + fabs(want));
                        bad += fabs(c[(size_t)i * n + j] - want) > tol;
                    }
                CHECK(bad == 0);
                free(a);
                free(b);
                free(bias);
                free(c);
            }
}

static void check_layer_norm(void)
{
    static const int cols[] = {1, 7, 32, 37, 768};
    for (size_t ci = 0; ci < sizeof cols / sizeof cols[0]; ci++)
        for (int variant = 0; variant < 3; variant++) {
            int rows = 5, n = cols[ci];
            float *x = rnd((size_t)rows * n, -3, 5), *res = rnd((size_t)rows * n, -1, 1), *bias = rnd((size_t)n, -1, 1);
            float *g = rnd((size_t)n, 0.5f, 1.5f), *b = rnd((size_t)n, -1, 1), *y = malloc((size_t)rows * n * 4);
            struct nlpd_op op = {.kind = NLPD_OP_LAYER_NORM};
            /* variant 2 writes in place over the residual, as the encoder does */
            float *dst = variant == 2 ? res : y;
            float *res_copy = malloc((size_t)rows * n * 4);
            memcpy(res_copy, res, (size_t)rows * n * 4);
            op.u.layer_norm = (struct nlpd_op_layer_norm){
                dst, x, variant ? bias : NULL, variant ? res : NULL, g, b, rows, n, 1e-5f, NLPD_DTYPE_F32};
            run_op(&op);
            int bad = 0;
            for (int r = 0; r < rows; r++) {
                double v[768], mean = 0, var = 0, mean_abs = 0, in_abs = 0;
                for (int i = 0; i < n; i++) {
                    v[i] = x[(size_t)r * n + i] + (variant ? bias[i] + res_copy[(size_t)r * n + i] : 0.0);
                    mean += v[i];
                    mean_abs += fabs(v[i]) / n;
                    in_abs = fmax(in_abs, fabs(x[(size_t)r * n + i]) +
                                              (variant ? fabs(bias[i]) + fabs(res_copy[(size_t)r * n + i]) : 0.0));
                }
                mean /= n;
                for (int i = 0; i < n; i++)
                    var += (v[i] - mean) * (v[i] - mean);
                var /= n;
                double rstd = 1 / sqrt(var + 1e-5);
                /* the centring error in units of the standard deviation: the mean's sum, the inputs' own sums;
                 * the variance's relative error is at most twice that plus its own sum's gamma */
                double e = (gamma_n(n + 2) * mean_abs + 2 * U_F32 * in_abs) * rstd;
                double e_var = 2 * e + gamma_n(n + 4);
                for (int i = 0; i < n; i++) {
                    double z = (v[i] - mean) * rstd, want = z * g[i] + b[i];
                    double tol = fabs(g[i]) * (e + fabs(z) * (e_var / 2 + 4 * U_F32)) +
                                 4 * U_F32 * (fabs(z * g[i]) + fabs(b[i]));
                    bad += fabs(dst[(size_t)r * n + i] - want) > 2 * tol; /* 2: first-order bound */
                }
            }
            CHECK(bad == 0);
            free(x);
            free(res);
            free(res_copy);
            free(bias);
            free(g);
            free(b);
            free(y);
        }
}

static void check_softmax(void)
{
    static const int cols[] = {1, 3, 8, 19, 128};
    for (size_t ci = 0; ci < sizeof cols / sizeof cols[0]; ci++) {
        int rows = 4, n = cols[ci], ld = n + 3;
        float *x = rnd((size_t)rows * ld, -20, 20), *x0 = malloc((size_t)rows * ld * 4);
        for (int i = 0; i < n; i += 3)
            x[i] += -FLT_MAX; /* masked keys in row 0 */
        for (int i = 0; i < n; i++)
            x[(size_t)3 * ld + i] = -FLT_MAX; /* row 3 fully masked: uniform */
        memcpy(x0, x, (size_t)rows * ld * 4);
        struct nlpd_op op = {.kind = NLPD_OP_SOFTMAX};
        op.u.softmax = (struct nlpd_op_softmax){x, rows, n, ld};
        run_op(&op);
        int bad = 0;
        for (int r = 0; r < rows; r++) {
            double mx = -DBL_MAX, sum = 0;
            for (int i = 0; i < n; i++)
                mx = fmax(mx, x0[(size_t)r * ld + i]);
            for (int i = 0; i < n; i++)
                sum += exp((double)x0[(size_t)r * ld + i] - mx);
            /* each probability carries its exp term's error, the sum's gamma and a rounding of the division */
            double e_sum = gamma_n(n + 1), e_max = 0;
            for (int i = 0; i < n; i++) {
                double arg = (double)x0[(size_t)r * ld + i] - mx, p = exp(arg) / sum;
                if (p > 0)
                    e_max = fmax(e_max, exp_term_err(0, arg));
            }
            for (int i = 0; i < n; i++) {
                double arg = (double)x0[(size_t)r * ld + i] - mx, p = exp(arg) / sum;
                double tol = p * (exp_term_err(0, arg) + e_max + e_sum + 2 * U_F32);
                bad += fabs(x[(size_t)r * ld + i] - p) > tol;
            }
            bad += x[(size_t)r * ld + n] != x0[(size_t)r * ld + n]; /* stride padding untouched */
        }
        CHECK(bad == 0);
        free(x);
        free(x0);
    }
}

static void check_attention(void)
{
    const int B = 3, S = 7, NH = 2, D = 5, H = NH * D, ld = 3 * H + 2;
    float *qkv = rnd((size_t)B * S * ld, -2, 2), *out = rnd((size_t)B * S * H, 50, 60);
    int32_t mask[3 * 7] = {1, 1, 1, 1, 1, 0, 0, /**/ 1, 0, 1, 1, 0, 1, 0, /**/ 0, 0, 0, 0, 0, 0, 0};
    for (int with_scratch = 0; with_scratch < 2; with_scratch++) {
        float scratch[49];
        struct nlpd_op op = {.kind = NLPD_OP_ATTENTION};
        op.u.attention = (struct nlpd_op_attention){out,
                                                    qkv,
                                                    mask,
                                                    B,
                                                    S,
                                                    NH,
                                                    D,
                                                    ld,
                                                    H,
                                                    1.0f / sqrtf((float)D),
                                                    with_scratch ? scratch : NULL,
                                                    with_scratch ? 49 : 0,
                                                    NLPD_DTYPE_F32};
        run_op(&op);
        int bad = 0;
        for (int b = 0; b < B; b++)
            for (int h = 0; h < NH; h++)
                for (int i = 0; i < S; i++) {
                    double sc[7], err[7], mx = -DBL_MAX, sum = 0;
                    const float *q = qkv + ((size_t)b * S + i) * ld + h * D;
                    for (int j = 0; j < S; j++) {
                        const float *k = qkv + ((size_t)b * S + j) * ld + H + h * D;
                        double d = 0, mag = 0;
                        for (int e = 0; e < D; e++) {
                            d += (double)q[e] * k[e];
                            mag += fabs((double)q[e] * k[e]);
                        }
                        sc[j] = d / sqrt((double)D) + (mask[b * S + j] ? 0.0 : -FLT_MAX);
                        err[j] = (gamma_n(D + 2) * mag + 2 * U_F32 * fabs(d)) / sqrt((double)D);
                        mx = fmax(mx, sc[j]);
                    }
                    double e_p = 0;
                    for (int j = 0; j < S; j++) {
                        double arg = sc[j] - mx;
                        sum += (sc[j] = exp(arg));
                        if (sc[j] > 0)
                            e_p = fmax(e_p, exp_term_err(err[j], arg));
                    }
                    e_p = 2 * e_p + gamma_n(S + 1) + 2 * U_F32; /* numerator, sum and division */
                    for (int e = 0; e < D; e++) {
                        double o = 0, mag = 0;
                        for (int j = 0; j < S; j++) {
                            double t = sc[j] / sum * qkv[((size_t)b * S + j) * ld + 2 * H + h * D + e];
                            o += t;
                            mag += fabs(t);
                        }
                        bad += fabs(out[((size_t)b * S + i) * H + h * D + e] - o) > mag * (e_p + gamma_n(S + 1));
                    }
                }
        CHECK(bad == 0);
    }
    free(qkv);
    free(out);
}

/* DeBERTa's disentangled attention against a float64 reference, within the same kind of bound as the plain
 * attention (three dot products of D terms per score, scaled): c2p and p2c together and alone, row strides that
 * are not the width, a monotone relative index with clamped ends, masks with holes, a fully masked row. */
static void check_attention_rel_at(int S, int NR)
{
    const int B = 3, NH = 2, D = 5, H = NH * D, ld = 3 * H + 2, ldp = H + 1;
    float *qkv = rnd((size_t)B * S * ld, -2, 2), *out = rnd((size_t)B * S * H, 50, 60);
    float *pk = rnd((size_t)NR * ldp, -2, 2), *pq = rnd((size_t)NR * ldp, -2, 2);
    int32_t *mask = calloc((size_t)B * S, sizeof *mask), *ridx = calloc(2 * (size_t)S, sizeof *ridx);
    double *sc = calloc((size_t)S, sizeof *sc), *err = calloc((size_t)S, sizeof *err);
    for (int j = 0; j < S; j++) { /* trailing padding; holes and a padded end; everything masked */
        mask[j] = j < S - 2;
        mask[S + j] = j % 3 != 1 && j < S - 1;
    }
    for (int k = 0; k < 2 * S - 1; k++) { /* (i - j) / 2 + NR / 2, clamped: monotone, several d per row */
        int v = (k - (S - 1)) / 2 + NR / 2;
        ridx[k] = v < 0 ? 0 : v > NR - 1 ? NR - 1 : v;
    }
    const float scale = 1.0f / sqrtf((float)D * 3);
    for (int variant = 0; variant < 3; variant++) {
        const float *use_k = variant != 2 ? pk : NULL, *use_q = variant != 1 ? pq : NULL;
        struct nlpd_op op = {.kind = NLPD_OP_ATTENTION_REL};
        op.u.attention_rel = (struct nlpd_op_attention_rel){.out = out,
                                                            .qkv = qkv,
                                                            .mask = mask,
                                                            .pos_k = use_k,
                                                            .pos_q = use_q,
                                                            .rel_idx = ridx,
                                                            .batch = B,
                                                            .seq = S,
                                                            .heads = NH,
                                                            .head_dim = D,
                                                            .n_rel = NR,
                                                            .ld_qkv = ld,
                                                            .ld_out = H,
                                                            .ld_pos = ldp,
                                                            .scale = scale};
        run_op(&op);
        int bad = 0;
        for (int b = 0; b < B; b++)
            for (int h = 0; h < NH; h++)
                for (int i = 0; i < S; i++) {
                    double mx = -DBL_MAX, sum = 0;
                    const float *q = qkv + ((size_t)b * S + i) * ld + h * D;
                    for (int j = 0; j < S; j++) {
                        const float *k = qkv + ((size_t)b * S + j) * ld + H + h * D;
                        int c = ridx[i - j + S - 1];
                        double d = 0, mag = 0;
                        for (int e = 0; e < D; e++) {
                            double t1 = (double)q[e] * k[e];
                            double t2 = use_k ? (double)q[e] * use_k[(size_t)c * ldp + h * D + e] : 0;
                            double t3 = use_q ? (double)k[e] * use_q[(size_t)c * ldp + h * D + e] : 0;
                            d += t1 + t2 + t3;
                            mag += fabs(t1) + fabs(t2) + fabs(t3);
                        }
                        sc[j] = mask[b * S + j] ? d * scale : -FLT_MAX;
                        err[j] = (gamma_n(D + 4) * mag + 4 * U_F32 * fabs(d)) * scale;
                        mx = fmax(mx, sc[j]);
                    }
                    double e_p = 0;
                    for (int j = 0; j < S; j++) {
                        double arg = sc[j] - mx;
                        sum += (sc[j] = exp(arg));
                        if (sc[j] > 0)
                            e_p = fmax(e_p, exp_term_err(err[j], arg));
                    }
                    e_p = 2 * e_p + gamma_n(S + 1) + 2 * U_F32;
                    for (int e = 0; e < D; e++) {
                        double o = 0, mag = 0;
                        for (int j = 0; j < S; j++) {
                            double t = sc[j] / sum * qkv[((size_t)b * S + j) * ld + 2 * H + h * D + e];
                            o += t;
                            mag += fabs(t);
                        }
                        bad += fabs(out[((size_t)b * S + i) * H + h * D + e] - o) > mag * (e_p + gamma_n(S + 1));
                    }
                }
        CHECK(bad == 0);
    }
    /* a relative index table that decreases is refused, not read out of order */
    ridx[3] = ridx[4] + 1;
    struct nlpd_op op = {.kind = NLPD_OP_ATTENTION_REL};
    op.u.attention_rel =
        (struct nlpd_op_attention_rel){out, qkv, mask, pk, pq, ridx, B, S, NH, D, NR, ld, H, ldp, scale};
    struct nlpd_error e = {0};
    CHECK(nlpd_backend_run(be, &op, &e) == NLPD_EINVAL);
    CHECK_STR_CONTAINS(e.message, "relative index");
    free(qkv);
    free(out);
    free(pk);
    free(pq);
    free(mask);
    free(ridx);
    free(sc);
    free(err);
}

/* One block of queries; several (the products are cut in blocks of 32 queries / keys) with clamped ends. */
static void check_attention_rel(void)
{
    check_attention_rel_at(7, 6);
    check_attention_rel_at(70, 40);
}

static void check_embed(void)
{
    const int V = 11, P = 6, TY = 2, D = 9, T = 5;
    float *w = rnd((size_t)V * D, -1, 1), *p = rnd((size_t)P * D, -1, 1), *ty = rnd((size_t)TY * D, -1, 1);
    float out[5 * 9];
    int32_t ids[5] = {0, 10, 3, 3, 7}, pos[5] = {0, 1, 2, 5, 4}, types[5] = {0, 1, 1, 0, 1};
    struct nlpd_op op = {.kind = NLPD_OP_EMBED};
    op.u.embed = (struct nlpd_op_embed){out, w, p, ty, ids, pos, types, T, D, V, P, TY, 0.0f, NLPD_DTYPE_F32};
    run_op(&op);
    int bad = 0;
    for (int t = 0; t < T; t++)
        for (int i = 0; i < D; i++)
            bad += out[t * D + i] != (w[ids[t] * D + i] + ty[types[t] * D + i]) + p[pos[t] * D + i];
    CHECK(bad == 0);
    /* without type and position tables */
    op.u.embed.pos = NULL;
    op.u.embed.type = NULL;
    run_op(&op);
    for (int t = 0; t < T; t++)
        for (int i = 0; i < D; i++)
            bad += out[t * D + i] != w[ids[t] * D + i];
    CHECK(bad == 0);
    /* out-of-range ids, positions, types are errors */
    struct nlpd_error err = {0};
    op.u.embed.pos = p;
    op.u.embed.type = ty;
    ids[2] = 11;
    CHECK(nlpd_backend_run(be, &op, &err) == NLPD_EINVAL);
    CHECK_STR_CONTAINS(err.message, "id 11 out of range");
    ids[2] = -1;
    CHECK(nlpd_backend_run(be, &op, &err) == NLPD_EINVAL);
    ids[2] = 3;
    pos[1] = 6;
    CHECK(nlpd_backend_run(be, &op, &err) == NLPD_EINVAL);
    CHECK_STR_CONTAINS(err.message, "position 6");
    pos[1] = 1;
    types[0] = 2;
    CHECK(nlpd_backend_run(be, &op, &err) == NLPD_EINVAL);
    CHECK_STR_CONTAINS(err.message, "token type 2");
    /* Marian: word * scale + position, in that order */
    types[0] = 0;
    op.u.embed.type = NULL;
    op.u.embed.word_scale = 3.0f;
    run_op(&op);
    for (int t = 0; t < T; t++)
        for (int i = 0; i < D; i++)
            bad += out[t * D + i] != w[ids[t] * D + i] * 3.0f + p[pos[t] * D + i];
    CHECK(bad == 0);
    free(w);
    free(p);
    free(ty);
}

/* Queries against separate K/V rows with a kv_map, a key mask and a causal limit, against a double reference. */
static void check_attention_kv(void)
{
    const int B = 3, Q = 4, KVB = 2, KV = 7, NH = 2, D = 5, H = NH * D, STRIDE = 9, LDKV = 2 * H;
    float *q = rnd((size_t)B * Q * H, -1, 1), *kv = rnd((size_t)KVB * STRIDE * LDKV, -1, 1);
    float *out = calloc((size_t)B * Q * H, sizeof(float));
    int32_t map[3] = {1, 0, 1}, mask[2 * 7] = {1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 0, 0, 0};
    for (int causal = 0; causal <= 1; causal++)
        for (int use_mask = 0; use_mask <= 1; use_mask++) {
            const int pos0 = 2;
            struct nlpd_op op = {.kind = NLPD_OP_ATTENTION_KV};
            op.u.attention_kv = (struct nlpd_op_attention_kv){.out = out,
                                                              .q = q,
                                                              .k = kv,
                                                              .v = kv + H,
                                                              .kv_map = map,
                                                              .mask = use_mask ? mask : NULL,
                                                              .mask_ld = KV,
                                                              .batch = B,
                                                              .q_len = Q,
                                                              .kv_len = KV,
                                                              .heads = NH,
                                                              .head_dim = D,
                                                              .ld_q = H,
                                                              .ld_kv = LDKV,
                                                              .ld_out = H,
                                                              .kv_batch_stride = STRIDE,
                                                              .causal = causal,
                                                              .q_pos0 = pos0,
                                                              .scale = 0.7f};
            run_op(&op);
            int bad = 0;
            for (int b = 0; b < B; b++)
                for (int i = 0; i < Q; i++)
                    for (int h = 0; h < NH; h++) {
                        const float *kb = kv + (size_t)map[b] * STRIDE * LDKV;
                        double sc[7], err[7], mx = -1e300, sum = 0;
                        int n = causal && pos0 + i + 1 < KV ? pos0 + i + 1 : KV;
                        for (int t = 0; t < n; t++) {
                            double d = 0, mag = 0;
                            for (int e = 0; e < D; e++) {
                                double m =
                                    (double)q[((size_t)b * Q + i) * H + h * D + e] * kb[(size_t)t * LDKV + h * D + e];
                                d += m;
                                mag += fabs(m);
                            }
                            sc[t] = d * 0.7 + (use_mask && !mask[map[b] * KV + t] ? -1e30 : 0);
                            err[t] = 0.7 * (gamma_n(D + 2) * mag + 2 * U_F32 * fabs(d));
                            mx = sc[t] > mx ? sc[t] : mx;
                        }
                        double e_p = 0;
                        for (int t = 0; t < n; t++) {
                            double arg = sc[t] - mx;
                            sum += (sc[t] = exp(arg));
                            if (sc[t] > 0)
                                e_p = fmax(e_p, exp_term_err(err[t], arg));
                        }
                        e_p = 2 * e_p + gamma_n(n + 1) + 2 * U_F32; /* numerator, sum and division */
                        for (int e = 0; e < D; e++) {
                            double o = 0, mag = 0;
                            for (int t = 0; t < n; t++) {
                                double v = sc[t] / sum * kb[(size_t)t * LDKV + H + h * D + e];
                                o += v;
                                mag += fabs(v);
                            }
                            bad += fabs(out[((size_t)b * Q + i) * H + h * D + e] - o) > mag * (e_p + gamma_n(n + 1));
                        }
                    }
            CHECK(bad == 0);
        }
    free(q);
    free(kv);
    free(out);
}

static void check_gather_rows(void)
{
    float src[4 * 3], dst[3 * 5];
    for (int i = 0; i < 12; i++)
        src[i] = (float)i;
    int32_t idx[3] = {3, 0, 3};
    struct nlpd_op op = {.kind = NLPD_OP_GATHER_ROWS};
    op.u.gather_rows = (struct nlpd_op_gather_rows){dst, src, idx, 3, 2, 4, 5, 3};
    run_op(&op);
    CHECK(dst[0] == 9 && dst[1] == 10 && dst[5] == 0 && dst[6] == 1 && dst[10] == 9 && dst[11] == 10);
    struct nlpd_error err = {0};
    idx[1] = 4;
    CHECK(nlpd_backend_run(be, &op, &err) == NLPD_EINVAL);
    CHECK_STR_CONTAINS(err.message, "out of range");
}

/* |got - log-sum-exp of x[from..n)|, within its float32 bound: each exp term's relative error (weighted by its
 * share), the sum's gamma, then the rounding of the log and of the final addition. */
static int logsumexp_ok(const float *x, int from, int n)
{
    double mx = -1e300, sum = 0, werr = 0;
    for (int i = from; i < n; i++)
        mx = x[i] > mx ? x[i] : mx;
    for (int i = from; i < n; i++)
        sum += exp(x[i] - mx);
    for (int i = from; i < n; i++)
        werr += exp(x[i] - mx) / sum * exp_term_err(0, x[i] - mx);
    double want = mx + log(sum);
    double tol = werr + gamma_n(n + 1) + 2 * U_F32 * (fabs(log(sum)) + fabs(want));
    return fabs(nlpd_kernels_logsumexp(x, n) - want) <= tol;
}

static void check_logsumexp(void)
{
    for (int n = 1; n < 40; n += 7) {
        float *x = rnd((size_t)n, -30, 30);
        CHECK(logsumexp_ok(x, 0, n));
        x[0] = -INFINITY; /* masked entries count as 0 */
        if (n > 1)
            CHECK(logsumexp_ok(x, 1, n));
        free(x);
    }
    float all[3] = {-INFINITY, -INFINITY, -INFINITY};
    CHECK(nlpd_kernels_logsumexp(all, 3) == -INFINITY);
}

static void check_all_ops(void)
{
    check_logsumexp();
    check_act();
    check_bias_act_residual();
    check_matmul();
    check_layer_norm();
    check_softmax();
    check_attention();
    check_attention_rel();
    check_embed();
    check_attention_kv();
    check_gather_rows();
}

static void test_ops_simd(void)
{
    nlpd_cpu_simd_init(0);
    printf("simd path: %s\n", nlpd_kernels_cpu_simd());
    check_all_ops();
}

/* AVX2 pinned, where the best path is AVX-512: both vector widths are checked on such a CPU. */
static void test_ops_avx2(void)
{
    nlpd_cpu_simd_set(NLPD_SIMD_AVX2);
    printf("simd path pinned: %s\n", nlpd_kernels_cpu_simd());
    CHECK(nlpd_cpu_simd() <= NLPD_SIMD_AVX2);
    check_all_ops();
    nlpd_cpu_simd_init(0);
}

static void test_ops_scalar(void)
{
    nlpd_cpu_simd_init(1);
    CHECK(!strcmp(nlpd_kernels_cpu_simd(), "scalar"));
    check_all_ops();
    nlpd_cpu_simd_init(0);
}

static char logged[512];
static void keep_line(const char *line)
{
    snprintf(logged, sizeof logged, "%s", line);
}

static void test_backend_vtable(void)
{
    struct nlpd_error err = {0};
    CHECK(!strcmp(nlpd_backend_name(be), "cpu"));
    CHECK(nlpd_backend_threads(be) == 1);
    for (int k = 0; k < NLPD_OP_COUNT; k++)
        CHECK(be->ops->supports(be, (enum nlpd_op_kind)k));
    struct nlpd_buffer buf;
    CHECK(nlpd_backend_alloc(be, 100, &buf, &err) == 0);
    CHECK(((uintptr_t)buf.ptr & 63) == 0);
    char in[100], out[100];
    for (int i = 0; i < 100; i++)
        in[i] = (char)i;
    CHECK(nlpd_backend_upload(&buf, 0, in, 100) == 0);
    CHECK(nlpd_backend_upload(&buf, 50, in, 51) == NLPD_ERANGE);
    CHECK(nlpd_backend_download(&buf, 10, out, 90) == 0);
    CHECK(!memcmp(out, in + 10, 90));
    CHECK(nlpd_backend_download(&buf, 101, out, 0) == NLPD_ERANGE);
    /* the err forms say what failed; the forms without err log it (issue 20: bare codes said nothing) */
    CHECK(nlpd_backend_upload_err(&buf, 50, in, 51, &err) == NLPD_ERANGE);
    CHECK_STR_CONTAINS(err.message, "upload of 51 bytes at offset 50: outside the buffer of 100 bytes");
    CHECK(nlpd_backend_download_err(&buf, 101, out, 0, &err) == NLPD_ERANGE);
    CHECK_STR_CONTAINS(err.message, "download of 0 bytes at offset 101");
    CHECK(nlpd_backend_download_err(&buf, 0, out, 100, &err) == 0);
    logged[0] = 0;
    nlpd_kernels_set_logger(keep_line);
    CHECK(nlpd_backend_download(&buf, 60, out, 41) == NLPD_ERANGE);
    nlpd_kernels_set_logger(NULL);
    CHECK_STR_CONTAINS(logged, "kernels: download of 41 bytes at offset 60: outside the buffer of 100 bytes");
    nlpd_backend_buffer_free(&buf);
    CHECK(nlpd_backend_new("cuda", 1, &err) == NULL);
    CHECK_STR_CONTAINS(err.message, "cuda");
    CHECK(nlpd_backend_new("tpu", 1, &err) == NULL);
    CHECK_STR_CONTAINS(err.message, "unknown kernels backend \"tpu\" (auto, cpu, cuda)");
    /* the one name table */
    CHECK(be->ops->version == NLPD_BACKEND_API_VERSION);
    for (int k = 0; k < NLPD_BACKEND_KIND_COUNT; k++) {
        CHECK(nlpd_backend_kind_parse(nlpd_backend_kind_name((enum nlpd_backend_kind)k)) == k);
        CHECK_STR_CONTAINS(nlpd_backend_kind_list(), nlpd_backend_kind_name((enum nlpd_backend_kind)k));
    }
    CHECK(nlpd_backend_kind_parse("cpu") == NLPD_BACKEND_CPU && nlpd_backend_kind_parse("CPU") == -1 &&
          nlpd_backend_kind_parse(NULL) == -1);
    struct nlpd_backend *b2 = nlpd_backend_new("auto", 1, &err);
    CHECK(b2 && !strcmp(nlpd_backend_name(b2), "cpu"));
    nlpd_backend_free(b2);
    struct nlpd_op bad = {.kind = NLPD_OP_COUNT};
    CHECK(nlpd_backend_run(be, &bad, &err) != 0);
}

static void test_conversions(void)
{
    /* every half: f16 -> f32 -> f16 is the identity (NaNs stay NaNs) */
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = nlpd_kernels_f16_to_f32((uint16_t)h);
        if (isnan(f)) {
            bad += (h & 0x7c00) != 0x7c00 || !(h & 0x3ff);
            continue;
        }
        bad += nlpd_kernels_f32_to_f16(f) != h;
    }
    CHECK(bad == 0);
    CHECK(nlpd_kernels_f16_to_f32(0x3c00) == 1.0f);
    CHECK(nlpd_kernels_f16_to_f32(0xc000) == -2.0f);
    CHECK(nlpd_kernels_f16_to_f32(0x7bff) == 65504.0f);
    CHECK(nlpd_kernels_f16_to_f32(0x0001) == ldexpf(1.0f, -24));
    CHECK(nlpd_kernels_f16_to_f32(0x03ff) == ldexpf(1023.0f, -24));
    CHECK(isinf(nlpd_kernels_f16_to_f32(0xfc00)) && nlpd_kernels_f16_to_f32(0xfc00) < 0);
    CHECK(nlpd_kernels_f32_to_f16(1e6f) == 0x7c00);
    CHECK(nlpd_kernels_f32_to_f16(1.0f + ldexpf(1.0f, -11)) == 0x3c00); /* tie to even */
    CHECK(nlpd_kernels_f32_to_f16(ldexpf(1.0f, -26)) == 0);
    for (uint32_t b = 0; b < 65536; b++) {
        float f = nlpd_kernels_bf16_to_f32((uint16_t)b);
        if (!isnan(f))
            bad += nlpd_kernels_f32_to_bf16(f) != b;
    }
    CHECK(bad == 0);
    CHECK(nlpd_kernels_bf16_to_f32(0x3f80) == 1.0f);
    CHECK(nlpd_kernels_f32_to_bf16(3.14159f) == 0x4049);
    /* bulk converters read little-endian from unaligned memory */
    unsigned char raw[7] = {0xff, 0x00, 0x3c, 0x00, 0xc0, 0x80, 0x3f};
    float out[3];
    nlpd_kernels_convert_f16(out, raw + 1, 3);
    CHECK(out[0] == 1.0f && out[1] == -2.0f);
    nlpd_kernels_convert_bf16(out, raw + 3, 2);
    CHECK(out[0] == -2.0f && out[1] == 1.0f);
}

/* Half-precision activation operands go only to a backend that keeps them (nlpd_backend_act_dtype): the CPU
 * backend refuses them by name instead of reading 2-byte elements as floats. */
static void test_act_types(void)
{
    CHECK(nlpd_backend_act_dtype(be) == NLPD_DTYPE_F32);
    float a[4] = {1, 2, 3, 4}, b[4] = {1, 0, 0, 1}, c[4] = {0};
    struct nlpd_error err = {0};
    struct nlpd_op op = {.kind = NLPD_OP_MATMUL};
    op.u.matmul = (struct nlpd_op_matmul){.c = c, .a = a, .b = b, .m = 2, .n = 2, .k = 2, .lda = 2, .ldb = 2, .ldc = 2};
    CHECK(nlpd_backend_run(be, &op, &err) == 0 && c[3] == 4.0f);
    op.u.matmul.a_type = NLPD_DTYPE_F16;
    c[3] = 0;
    CHECK(nlpd_backend_run(be, &op, &err) == NLPD_EINVAL && c[3] == 0.0f);
    CHECK(strstr(err.message, "matmul with fp16 activations") && strstr(err.message, "fp32 only"));
    op.u.matmul.a_type = NLPD_DTYPE_F32;
    op.u.matmul.c_type = NLPD_DTYPE_BF16;
    CHECK(nlpd_backend_run(be, &op, &err) == NLPD_EINVAL && strstr(err.message, "bf16 activations"));
    float g[2] = {1, 1}, z[2] = {0, 0};
    op = (struct nlpd_op){.kind = NLPD_OP_LAYER_NORM};
    op.u.layer_norm = (struct nlpd_op_layer_norm){
        .y = c, .x = a, .gamma = g, .beta = z, .rows = 2, .cols = 2, .eps = 1e-5f, .io_type = NLPD_DTYPE_F16};
    CHECK(nlpd_backend_run(be, &op, &err) == NLPD_EINVAL && strstr(err.message, "layer_norm"));
}

int main(void)
{
    struct nlpd_error err = {0};
    be = nlpd_backend_cpu_new(1, &err);
    if (!be) {
        fprintf(stderr, "%s\n", err.message);
        return 1;
    }
    RUN(test_ops_simd);
    RUN(test_ops_avx2);
    RUN(test_ops_scalar);
    RUN(test_backend_vtable);
    RUN(test_conversions);
    RUN(test_act_types);
    nlpd_backend_free(be);
    return TEST_REPORT();
}
