/* The CUDA backend against the CPU backend (the reference): every op on random inputs, the error paths (ids and
 * row indices out of range, reported by sync with the CPU's words; a huge allocation -> NLPD_ENOMEM), staging of
 * large and unaligned transfers, the half-precision weight copies, and whole-model parity of the encoder on the
 * hf-tiny fixtures against the transformers goldens. Backend selection is checked everywhere; the rest skips with
 * "skipped: no CUDA device/driver" where libnlpd_cuda.so, the driver or a device is missing.
 *
 * Tolerances. Results are compared normwise: |gpu - cpu| <= tol * (|cpu| + max|cpu|) per output, because the
 * element-wise relative error of a dot product is unbounded near its zero crossings whatever the precision.
 *   fp32: tol 1e-5. Both sides compute in fp32 with different summation orders (cuBLAS vs OpenBLAS, tree vs
 *         sequential reductions); for the k <= 768 used here that is a few 1e-7 normwise.
 *   fp16: tol 5e-3. Inputs are rounded to 11 significant bits (unit roundoff u = 2^-11 = 4.9e-4), products are
 *         exact and accumulated in fp32, so each term carries at most ~2u relative error; with random signs the
 *         sum's error is ~2u/sqrt(k) of sum|a b| while max|c| ~ 3 sigma sqrt(k): about u normwise, 1e-3 at worst
 *         over thousands of outputs. 5e-3 leaves a factor of 5.
 *   bf16: tol 4e-2, the same argument with 8 significant bits (u = 2^-8 = 3.9e-3).
 * Run from the repository root (NLPD_LIBDIR defaults to build/, where make puts libnlpd_cuda.so). */
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "encoder.h"
#include "harness.h"
#include "nlpd_kernels.h"

#define FIX "tests/fixtures/hf-tiny/"

static struct nlpd_backend *cpu, *gpu, *gpu16, *gpub16;
static char skip_why[NLPD_ERROR_MSG_MAX];
/* "cuda", or "cpu" with NLPD_CUDA_TEST_BACKEND=cpu: every comparison then runs against a second CPU backend, a
 * check of this test itself (buffer sizes, shapes, expectations) on machines without a GPU, under ASan too. */
static const char *gpu_name = "cuda";

static uint32_t rng = 12345;
static float frand(void)
{
    rng = rng * 1664525u + 1013904223u;
    return (float)((rng >> 8) & 0xffffff) / (float)0x800000 - 1.0f; /* [-1, 1) */
}

static void fill(float *v, size_t n, float scale)
{
    for (size_t i = 0; i < n; i++)
        v[i] = frand() * scale;
}

/* Two buffers, one per backend, with the same contents: put() appends, P(be, off) is the address. */
struct pair {
    struct nlpd_backend *gb;
    struct nlpd_buffer c, g;
    size_t used, cap;
};

static int pair_init(struct pair *p, struct nlpd_backend *g, size_t cap, int weights)
{
    memset(p, 0, sizeof *p);
    p->gb = g;
    p->cap = cap;
    struct nlpd_error err = {0};
    int rc = weights ? nlpd_backend_alloc_weights(cpu, cap, &p->c, &err) : nlpd_backend_alloc(cpu, cap, &p->c, &err);
    if (!rc)
        rc = weights ? nlpd_backend_alloc_weights(g, cap, &p->g, &err) : nlpd_backend_alloc(g, cap, &p->g, &err);
    if (rc)
        fprintf(stderr, "alloc: %s\n", err.message);
    return rc;
}

static void pair_free(struct pair *p)
{
    nlpd_backend_buffer_free(&p->c);
    nlpd_backend_buffer_free(&p->g);
}

static size_t put(struct pair *p, const void *data, size_t bytes)
{
    size_t off = p->used;
    p->used += (bytes + 255) & ~(size_t)255;
    if (p->used > p->cap) {
        fprintf(stderr, "test pair too small\n");
        abort();
    }
    if (data) {
        nlpd_backend_upload(&p->c, off, data, bytes);
        nlpd_backend_upload(&p->g, off, data, bytes);
    }
    return off;
}

static size_t put_rand(struct pair *p, size_t n, float scale)
{
    float *v = malloc(n * sizeof *v);
    fill(v, n, scale);
    size_t off = put(p, v, n * sizeof *v);
    free(v);
    return off;
}

static void *at(const struct nlpd_buffer *b, size_t off)
{
    return (char *)b->ptr + off;
}

#define F(buf, off) ((float *)at(buf, off))
#define I(buf, off) ((int32_t *)at(buf, off))

/* Runs op_c on the CPU and op_g on the GPU, compares n floats at off (row stride ld, cols wide when ld > 0). */
static double compare_out(struct pair *p, size_t off, size_t rows, size_t cols, size_t ld, double tol, const char *what)
{
    size_t n = rows * ld;
    float *c = malloc(n * sizeof *c), *g = malloc(n * sizeof *g);
    CHECK(nlpd_backend_download(&p->c, off, c, n * sizeof *c) == 0);
    CHECK(nlpd_backend_download(&p->g, off, g, n * sizeof *g) == 0);
    double mx = 0, worst = 0;
    for (size_t r = 0; r < rows; r++)
        for (size_t j = 0; j < cols; j++)
            mx = fmax(mx, fabs(c[r * ld + j]));
    int bad = 0;
    for (size_t r = 0; r < rows; r++)
        for (size_t j = 0; j < cols; j++) {
            double cv = c[r * ld + j], gv = g[r * ld + j], d = fabs(cv - gv), rel = d / (fabs(cv) + mx + 1e-30);
            if (!(rel <= tol) && bad++ < 3)
                fprintf(stderr, "  %s [%zu,%zu]: cpu %.9g gpu %.9g (normwise %.3g > %.3g)\n", what, r, j, cv, gv, rel,
                        tol);
            if (rel > worst || rel != rel)
                worst = rel != rel ? INFINITY : rel;
        }
    CHECK(bad == 0);
    free(c);
    free(g);
    return worst;
}

static int run2(struct pair *p, struct nlpd_op *oc, struct nlpd_op *og)
{
    struct nlpd_error e1 = {0}, e2 = {0};
    int rc = nlpd_backend_run(cpu, oc, &e1);
    int rg = nlpd_backend_run(p->gb, og, &e2);
    if (!rg)
        rg = nlpd_backend_sync(p->gb, &e2);
    if (rc)
        fprintf(stderr, "  cpu: %s\n", e1.message);
    if (rg)
        fprintf(stderr, "  gpu: %s\n", e2.message);
    CHECK(rc == 0 && rg == 0);
    return rc || rg;
}

/* ------------------------------------------------------------------------------------------- selection ---- */

static void test_selection(void)
{
    struct nlpd_error err = {0};
    struct nlpd_backend *c = nlpd_backend_new("cpu", 1, &err);
    CHECK(c && !strcmp(nlpd_backend_name(c), "cpu"));
    CHECK_STR_CONTAINS(c ? nlpd_backend_reason(c) : NULL, "cpu");
    nlpd_backend_free(c);
    struct nlpd_backend_opts o = {.name = "auto", .threads = 1};
    struct nlpd_backend *a = nlpd_backend_new_opts(&o, &err);
    CHECK(a != NULL);
    if (a) {
        CHECK_STR_CONTAINS(nlpd_backend_reason(a), "auto");
        if (!strcmp(nlpd_backend_name(a), "cpu"))
            CHECK_STR_CONTAINS(nlpd_backend_reason(a), "CUDA unavailable");
        printf("auto picked %s: %s\n", nlpd_backend_name(a), nlpd_backend_reason(a));
    }
    nlpd_backend_free(a);
    o.name = "tpu";
    CHECK(nlpd_backend_new_opts(&o, &err) == NULL && err.code == NLPD_EINVAL);
    CHECK(nlpd_dtype_parse("fp16") == NLPD_DTYPE_F16 && nlpd_dtype_parse("bf16") == NLPD_DTYPE_BF16 &&
          nlpd_dtype_parse("fp32") == NLPD_DTYPE_F32 && nlpd_dtype_parse("fp8") < 0);
    o.name = "cuda";
    o.device = 1000;
    struct nlpd_backend *bad = nlpd_backend_new_opts(&o, &err);
    CHECK(bad == NULL);
    CHECK(err.message[0] != 0);
    nlpd_backend_free(bad);
}

/* ----------------------------------------------------------------------------------------------- ops ---- */

static const enum nlpd_act acts[] = {NLPD_ACT_NONE, NLPD_ACT_GELU, NLPD_ACT_GELU_TANH,
                                     NLPD_ACT_RELU, NLPD_ACT_SILU, NLPD_ACT_TANH};

/* c = act(a . b + bias) on both backends; b (and bias) in a weight buffer when weights, boff floats past a 256-byte
 * boundary (an odd boff leaves the half-precision copy of b only 2-byte aligned). */
static void matmul_case_ld(struct nlpd_backend *g, int weights, int m, int n, int k, int trans_b, size_t lda,
                           size_t ldb, size_t ldc, size_t boff, int bias, enum nlpd_act act, double tol)
{
    struct pair p;
    size_t brows = trans_b ? (size_t)n : (size_t)k;
    size_t need = ((size_t)m * lda + brows * ldb + (size_t)m * ldc + (size_t)n + boff) * 4 + 8 * 256;
    if (pair_init(&p, g, need, 0))
        return;
    struct pair w;
    if (pair_init(&w, g, (brows * ldb + (size_t)n + boff) * 4 + 2 * 256, weights)) {
        pair_free(&p);
        return;
    }
    size_t a = put_rand(&p, (size_t)m * lda, 1.0f), c = put(&p, NULL, (size_t)m * ldc * 4);
    struct pair *wp = weights ? &w : &p;
    size_t b = put_rand(wp, brows * ldb + boff, 1.0f) + boff * 4, bs = put_rand(wp, (size_t)n, 1.0f);
    struct nlpd_op oc = {.kind = NLPD_OP_MATMUL}, og = oc;
    oc.u.matmul = (struct nlpd_op_matmul){F(&p.c, c),
                                          F(&p.c, a),
                                          F(&wp->c, b),
                                          bias ? F(&wp->c, bs) : NULL,
                                          m,
                                          n,
                                          k,
                                          (int)lda,
                                          (int)ldb,
                                          (int)ldc,
                                          trans_b,
                                          act,
                                          NLPD_DTYPE_F32,
                                          NLPD_DTYPE_F32};
    og.u.matmul = (struct nlpd_op_matmul){F(&p.g, c),
                                          F(&p.g, a),
                                          F(&wp->g, b),
                                          bias ? F(&wp->g, bs) : NULL,
                                          m,
                                          n,
                                          k,
                                          (int)lda,
                                          (int)ldb,
                                          (int)ldc,
                                          trans_b,
                                          act,
                                          NLPD_DTYPE_F32,
                                          NLPD_DTYPE_F32};
    char what[128];
    snprintf(what, sizeof what, "matmul %dx%dx%d tb%d lda %zu ldb %zu ldc %zu boff %zu act%d w%d", m, n, k, trans_b,
             lda, ldb, ldc, boff, (int)act, weights);
    if (!run2(&p, &oc, &og))
        compare_out(&p, c, (size_t)m, (size_t)n, ldc, tol, what);
    if (weights) { /* new weights after the first use: the shadow copy must follow */
        float *nb = malloc(brows * ldb * 4);
        fill(nb, brows * ldb, 0.5f);
        nlpd_backend_upload(&w.c, b, nb, brows * ldb * 4);
        nlpd_backend_upload(&w.g, b, nb, brows * ldb * 4);
        free(nb);
        if (!run2(&p, &oc, &og))
            compare_out(&p, c, (size_t)m, (size_t)n, ldc, tol, "matmul after re-upload");
    }
    pair_free(&w);
    pair_free(&p);
}

static void matmul_case(struct nlpd_backend *g, int weights, int m, int n, int k, int trans_b, int pad, int bias,
                        enum nlpd_act act, double tol)
{
    size_t lda = (size_t)k + pad, ldb = (size_t)(trans_b ? k : n) + pad, ldc = (size_t)n + pad;
    matmul_case_ld(g, weights, m, n, k, trans_b, lda, ldb, ldc, 0, bias, act, tol);
}

static void test_matmul(void)
{
    for (size_t i = 0; i < sizeof acts / sizeof acts[0]; i++)
        matmul_case(gpu, 0, 37, 53, 29, (int)(i & 1), (int)i, (int)(i != 3), acts[i], 1e-5);
    matmul_case(gpu, 0, 256, 768, 768, 0, 0, 1, NLPD_ACT_GELU, 1e-5);
    matmul_case(gpu, 0, 5, 3, 0, 0, 1, 1, NLPD_ACT_NONE, 1e-5); /* k = 0: bias only */
    matmul_case(gpu, 1, 64, 96, 128, 1, 0, 1, NLPD_ACT_NONE, 1e-5);
    /* the encoder's pooler: the first token of each of 3 sequences of 17, a row stride of S*H */
    for (int tb = 0; tb < 2; tb++)
        matmul_case_ld(gpu, 1, 3, 64, 64, tb, 17 * 64, 64, 64, 0, 1, NLPD_ACT_TANH, 1e-5);
    /* a vocabulary-wide tied projection (Marian: V = 58101 columns, b^T), odd k */
    matmul_case_ld(gpu, 1, 4, 58101, 61, 1, 61, 61, 58101, 0, 1, NLPD_ACT_NONE, 1e-5);
    /* c wider than n, b at an odd float offset, both transposes, m = 1 (one decoder row) */
    for (int tb = 0; tb < 2; tb++)
        matmul_case_ld(gpu, 1, 1, 1030, 33, tb, 40, tb ? 35 : 1031, 1100, 1, 1, NLPD_ACT_SILU, 1e-5);
}

/* fp32 on TF32 tensor cores (NLPD_CUDA_MATH unset: the default; the other tests run strict): each input is rounded
 * or truncated to 10 mantissa bits (relative error < 2^-10), so a product term is off by < ~2^-9 |a||b| and the
 * sum by < 2^-9 sum|a||b|, plus fp32 accumulation (<= k 2^-24 sum|a||b|). Checked per element against a double
 * reference with that bound; also that the backend says which math it uses. */
static void test_tf32(void)
{
    const int m = 33, n = 70, k = 768;
    unsetenv("NLPD_CUDA_MATH");
    struct nlpd_error err = {0};
    struct nlpd_backend_opts o = {.name = gpu_name, .threads = 1};
    struct nlpd_backend *t = nlpd_backend_new_opts(&o, &err);
    setenv("NLPD_CUDA_MATH", "strict", 1);
    CHECK(t != NULL);
    if (!t)
        return;
    if (!strcmp(gpu_name, "cuda"))
        CHECK_STR_CONTAINS(nlpd_backend_reason(t), "fp32 on TF32 tensor cores");
    struct nlpd_buffer buf;
    size_t na = (size_t)m * k, nb = (size_t)k * n, nc = (size_t)m * n;
    float *h = malloc((na + nb + nc) * sizeof *h);
    CHECK(nlpd_backend_alloc(t, (na + nb + nc) * sizeof *h, &buf, &err) == 0);
    fill(h, na + nb, 1.0f);
    CHECK(nlpd_backend_upload_err(&buf, 0, h, (na + nb) * sizeof *h, &err) == 0);
    struct nlpd_op op = {.kind = NLPD_OP_MATMUL};
    float *base = (float *)buf.ptr;
    op.u.matmul = (struct nlpd_op_matmul){base + na + nb, base,           base + na,     NULL, m, n, k, k, n, n, 0,
                                          NLPD_ACT_NONE,  NLPD_DTYPE_F32, NLPD_DTYPE_F32};
    CHECK(nlpd_backend_run(t, &op, &err) == 0 && nlpd_backend_sync(t, &err) == 0);
    CHECK(nlpd_backend_download_err(&buf, (na + nb) * sizeof *h, h + na + nb, nc * sizeof *h, &err) == 0);
    int bad = 0;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double ref = 0, mag = 0;
            for (int q = 0; q < k; q++) {
                ref += (double)h[(size_t)i * k + q] * h[na + (size_t)q * n + j];
                mag += fabs((double)h[(size_t)i * k + q] * h[na + (size_t)q * n + j]);
            }
            double d = fabs(h[na + nb + (size_t)i * n + j] - ref), bound = (ldexp(1, -9) + k * ldexp(1, -24)) * mag;
            if (!(d <= bound) && bad++ < 3)
                fprintf(stderr, "  tf32 [%d,%d]: %.9g vs %.9g, |diff| %.3g > %.3g\n", i, j,
                        (double)h[na + nb + (size_t)i * n + j], ref, d, bound);
        }
    CHECK(bad == 0);
    nlpd_backend_buffer_free(&buf);
    free(h);
    nlpd_backend_free(t);
    /* another value is refused, not read as one of the two */
    setenv("NLPD_CUDA_MATH", "fast", 1);
    struct nlpd_backend *x = nlpd_backend_new_opts(&o, &err);
    if (!strcmp(gpu_name, "cuda")) {
        CHECK(x == NULL);
        CHECK_STR_CONTAINS(err.message, "NLPD_CUDA_MATH must be tf32 or strict");
    }
    nlpd_backend_free(x);
    setenv("NLPD_CUDA_MATH", "strict", 1);
}

static void test_bias_act(void)
{
    /* res: the residual added last (pre-norm sub-layers), with and without bias / activation */
    for (int res = 0; res < 2; res++)
        for (int wide = 0; wide < 2; wide++)
            for (size_t i = 0; i < sizeof acts / sizeof acts[0]; i++)
                for (int bias = 0; bias < 2; bias++) {
                    struct pair p;
                    int rows = wide ? 7 : 19, cols = wide ? 1500 : 45, ld = wide ? 1503 : 50;
                    if (pair_init(&p, gpu, 128 * 1024, 0))
                        return;
                    size_t x = put_rand(&p, (size_t)rows * ld, 4.0f), b = put_rand(&p, (size_t)cols, 1.0f);
                    size_t r = put_rand(&p, (size_t)rows * ld, 2.0f);
                    struct nlpd_op oc = {.kind = NLPD_OP_BIAS_ACT}, og = oc;
                    oc.u.bias_act =
                        (struct nlpd_op_bias_act){F(&p.c, x), bias ? F(&p.c, b) : NULL, rows,          cols, ld,
                                                  acts[i],    res ? F(&p.c, r) : NULL,  NLPD_DTYPE_F32};
                    og.u.bias_act =
                        (struct nlpd_op_bias_act){F(&p.g, x), bias ? F(&p.g, b) : NULL, rows,          cols, ld,
                                                  acts[i],    res ? F(&p.g, r) : NULL,  NLPD_DTYPE_F32};
                    if (!run2(&p, &oc, &og))
                        compare_out(&p, x, (size_t)rows, (size_t)ld, (size_t)ld, 1e-5, "bias_act");
                    pair_free(&p);
                }
}

static void test_layer_norm(void)
{
    /* variants: plain; bias + residual into a third buffer; y == x; y == residual; then plain and fused at widths
     * over 1024 and under 32 */
    for (int v = 0; v < 8; v++) {
        struct pair p;
        static const int widths[8] = {37, 768, 37, 37, 1500, 1500, 7, 1};
        int rows = 23, cols = widths[v];
        if (pair_init(&p, gpu, 1 << 20, 0))
            return;
        size_t x = put_rand(&p, (size_t)rows * cols, 3.0f), r = put_rand(&p, (size_t)rows * cols, 2.0f);
        size_t b = put_rand(&p, (size_t)cols, 1.0f), g = put_rand(&p, (size_t)cols, 1.0f);
        size_t be = put_rand(&p, (size_t)cols, 1.0f), y = put(&p, NULL, (size_t)rows * cols * 4);
        size_t yo = v == 2 ? x : v == 3 || v == 5 ? r : y;
        int fused = v != 0 && v != 4 && v != 6;
        struct nlpd_op oc = {.kind = NLPD_OP_LAYER_NORM}, og = oc;
        oc.u.layer_norm = (struct nlpd_op_layer_norm){F(&p.c, yo),
                                                      F(&p.c, x),
                                                      fused ? F(&p.c, b) : NULL,
                                                      fused ? F(&p.c, r) : NULL,
                                                      F(&p.c, g),
                                                      F(&p.c, be),
                                                      rows,
                                                      cols,
                                                      1e-12f,
                                                      NLPD_DTYPE_F32};
        og.u.layer_norm = (struct nlpd_op_layer_norm){F(&p.g, yo),
                                                      F(&p.g, x),
                                                      fused ? F(&p.g, b) : NULL,
                                                      fused ? F(&p.g, r) : NULL,
                                                      F(&p.g, g),
                                                      F(&p.g, be),
                                                      rows,
                                                      cols,
                                                      1e-12f,
                                                      NLPD_DTYPE_F32};
        if (!run2(&p, &oc, &og))
            compare_out(&p, yo, (size_t)rows, (size_t)cols, (size_t)cols, 1e-5, "layer_norm");
        pair_free(&p);
    }
}

static void test_softmax(void)
{
    static const int shapes[3][3] = {{33, 300, 310}, {3, 58101, 58110}, {5, 1, 4}}; /* rows, cols, ld */
    for (int v = 0; v < 3; v++) {
        struct pair p;
        int rows = shapes[v][0], cols = shapes[v][1], ld = shapes[v][2];
        if (pair_init(&p, gpu, (size_t)rows * ld * 4 + 256, 0))
            return;
        size_t x = put_rand(&p, (size_t)rows * ld, 20.0f);
        struct nlpd_op oc = {.kind = NLPD_OP_SOFTMAX}, og = oc;
        oc.u.softmax = (struct nlpd_op_softmax){F(&p.c, x), rows, cols, ld};
        og.u.softmax = (struct nlpd_op_softmax){F(&p.g, x), rows, cols, ld};
        if (!run2(&p, &oc, &og))
            compare_out(&p, x, (size_t)rows, (size_t)ld, (size_t)ld, 1e-5, "softmax");
        pair_free(&p);
    }
}

/* mask patterns (row j of a mask, len keys): 0 all attended; 1 the first 9 (trailing padding); 2 none (uniform
 * over every key); 3 holes and trailing padding; 4 left padding (the first 5 masked); 5 only the last key */
static int mask_bit(int pattern, int t, int len)
{
    switch (pattern) {
    case 0: return 1;
    case 1: return t < 9;
    case 2: return 0;
    case 3: return t % 3 != 1 && t < len - 3;
    case 4: return t >= 5;
    default: return t == len - 1;
    }
}

static void attention_case_shape(struct nlpd_backend *g, int B, int S, int NH, int D, double tol)
{
    const int H = NH * D, ldq = 3 * H + 5, ldo = H + 3;
    int32_t *mask = malloc((size_t)B * S * sizeof *mask);
    for (int b = 0; b < B; b++)
        for (int s = 0; s < S; s++)
            mask[b * S + s] = mask_bit(b % 6, s, S);
    for (int with_mask = 0; with_mask < 2; with_mask++) {
        struct pair p;
        if (pair_init(&p, g, ((size_t)B * S * (ldq + ldo) + (size_t)B * S) * 4 + 4 * 256, 0))
            break;
        size_t qkv = put_rand(&p, (size_t)B * S * ldq, 2.0f), out = put_rand(&p, (size_t)B * S * ldo, 1.0f);
        size_t m = put(&p, mask, (size_t)B * S * sizeof *mask);
        struct nlpd_op oc = {.kind = NLPD_OP_ATTENTION}, og = oc;
        oc.u.attention = (struct nlpd_op_attention){F(&p.c, out),
                                                    F(&p.c, qkv),
                                                    with_mask ? I(&p.c, m) : NULL,
                                                    B,
                                                    S,
                                                    NH,
                                                    D,
                                                    ldq,
                                                    ldo,
                                                    1.0f / sqrtf((float)D),
                                                    NULL,
                                                    0,
                                                    NLPD_DTYPE_F32};
        og.u.attention = oc.u.attention;
        og.u.attention.out = F(&p.g, out);
        og.u.attention.qkv = F(&p.g, qkv);
        og.u.attention.mask = with_mask ? I(&p.g, m) : NULL;
        char what[96];
        snprintf(what, sizeof what, "attention B %d S %d heads %d x %d mask %d", B, S, NH, D, with_mask);
        if (!run2(&p, &oc, &og))
            compare_out(&p, out, (size_t)B * S, (size_t)ldo, (size_t)ldo, tol, what);
        pair_free(&p);
    }
    free(mask);
}

static void attention_case(struct nlpd_backend *g, double tol)
{
    attention_case_shape(g, 4, 17, 4, 16, tol);
    attention_case_shape(g, 6, 45, 3, 12, tol); /* rows longer than a warp, every mask pattern */
    attention_case_shape(g, 2, 1, 2, 8, tol);
}

static void test_attention(void)
{
    attention_case(gpu, 1e-5);
}

struct kv_shape {
    int B, Q, KV, NH, D;
    int kvb, stride, mld; /* kv batches, rows between them, mask row stride */
    int q_pos0;
    const int32_t *map; /* B entries in [0, kvb) */
};

static void attention_kv_shape(struct nlpd_backend *g, const struct kv_shape *sh, int causal, int with_map,
                               int with_mask, double tol)
{
    const int B = sh->B, Q = sh->Q, KV = sh->KV, NH = sh->NH, D = sh->D, H = NH * D, kvb = sh->kvb;
    const int stride = sh->stride, mld = sh->mld;
    const int ldq = H + 2, ldkv = 2 * H + 1, ldo = H + 4;
    int32_t *mask = malloc((size_t)kvb * mld * sizeof *mask);
    for (int j = 0; j < kvb; j++)
        for (int t = 0; t < mld; t++)
            mask[j * mld + t] = t < KV ? mask_bit((j + 1) % 6, t, KV) : 1;
    struct pair p;
    size_t need = ((size_t)B * Q * (ldq + ldo) + (size_t)kvb * stride * ldkv + (size_t)kvb * mld + B) * 4 + 8 * 256;
    if (pair_init(&p, g, need, 0)) {
        free(mask);
        return;
    }
    size_t q = put_rand(&p, (size_t)B * Q * ldq, 2.0f), kvbuf = put_rand(&p, (size_t)kvb * stride * ldkv, 2.0f);
    size_t out = put_rand(&p, (size_t)B * Q * ldo, 1.0f), mp = put(&p, sh->map, (size_t)B * sizeof(int32_t));
    size_t mk = put(&p, mask, (size_t)kvb * mld * sizeof *mask);
    struct nlpd_op oc = {.kind = NLPD_OP_ATTENTION_KV}, og = oc;
    struct nlpd_op_attention_kv a = {0};
    a.mask_ld = mld;
    a.batch = with_map ? B : (B < kvb ? B : kvb);
    a.q_len = Q;
    a.kv_len = KV;
    a.heads = NH;
    a.head_dim = D;
    a.ld_q = ldq;
    a.ld_kv = ldkv;
    a.ld_out = ldo;
    a.kv_batch_stride = (size_t)stride;
    a.causal = causal;
    a.q_pos0 = causal ? sh->q_pos0 : 0;
    a.scale = 0.35f;
    oc.u.attention_kv = a;
    og.u.attention_kv = a;
    oc.u.attention_kv.out = F(&p.c, out);
    oc.u.attention_kv.q = F(&p.c, q);
    oc.u.attention_kv.k = F(&p.c, kvbuf);
    oc.u.attention_kv.v = F(&p.c, kvbuf) + H;
    oc.u.attention_kv.kv_map = with_map ? I(&p.c, mp) : NULL;
    oc.u.attention_kv.mask = with_mask ? I(&p.c, mk) : NULL;
    og.u.attention_kv.out = F(&p.g, out);
    og.u.attention_kv.q = F(&p.g, q);
    og.u.attention_kv.k = F(&p.g, kvbuf);
    og.u.attention_kv.v = F(&p.g, kvbuf) + H;
    og.u.attention_kv.kv_map = with_map ? I(&p.g, mp) : NULL;
    og.u.attention_kv.mask = with_mask ? I(&p.g, mk) : NULL;
    if (!run2(&p, &oc, &og)) {
        char what[128];
        snprintf(what, sizeof what, "attention_kv B %d Q %d KV %d q_pos0 %d causal %d map %d mask %d", B, Q, KV,
                 a.q_pos0, causal, with_map, with_mask);
        compare_out(&p, out, (size_t)B * Q, (size_t)ldo, (size_t)ldo, tol, what);
    }
    pair_free(&p);
    free(mask);
}

static const int32_t kv_map4[4] = {3, 0, 4, 1}, kv_map7[7] = {2, 2, 0, 5, 1, 3, 5}, kv_map3[3] = {2, 0, 1};
static const struct kv_shape kv_shapes[] = {
    {4, 3, 11, 2, 8, 5, 13, 12, 6, kv_map4},   /* small; causal: keys t <= 6 + i */
    {7, 5, 77, 3, 12, 6, 80, 79, 40, kv_map7}, /* rows over a warp; causal cuts inside the attended keys */
    {7, 1, 50, 2, 16, 6, 64, 50, 3, kv_map7},  /* one decoder step; causal: only the masked left padding is seen */
};

static void attention_kv_case(struct nlpd_backend *g, int causal, int with_map, int with_mask, double tol)
{
    for (size_t i = 0; i < sizeof kv_shapes / sizeof kv_shapes[0]; i++)
        attention_kv_shape(g, &kv_shapes[i], causal, with_map, with_mask, tol);
}

static void test_attention_kv(void)
{
    for (int c = 0; c < 2; c++)
        for (int m = 0; m < 2; m++)
            for (int k = 0; k < 2; k++)
                attention_kv_case(gpu, c, m, k, 1e-5);
}

static void gather_case(int rows, int cols, int src_rows, size_t ld_dst, size_t ld_src, const int32_t *idx)
{
    struct pair p;
    if (pair_init(&p, gpu, ((size_t)src_rows * ld_src + (size_t)rows * ld_dst + (size_t)rows) * 4 + 4 * 256, 0))
        return;
    size_t src = put_rand(&p, (size_t)src_rows * ld_src, 1.0f), dst = put_rand(&p, (size_t)rows * ld_dst, 1.0f);
    size_t ix = put(&p, idx, (size_t)rows * sizeof *idx);
    struct nlpd_op oc = {.kind = NLPD_OP_GATHER_ROWS}, og = oc;
    oc.u.gather_rows =
        (struct nlpd_op_gather_rows){F(&p.c, dst), F(&p.c, src), I(&p.c, ix), rows, cols, src_rows, ld_dst, ld_src};
    og.u.gather_rows =
        (struct nlpd_op_gather_rows){F(&p.g, dst), F(&p.g, src), I(&p.g, ix), rows, cols, src_rows, ld_dst, ld_src};
    if (!run2(&p, &oc, &og))
        compare_out(&p, dst, (size_t)rows, ld_dst, ld_dst, 0.0, "gather_rows");
    pair_free(&p);
}

static void test_gather_rows(void)
{
    static const int32_t idx[6] = {4, 0, 0, 7, 2, 5}, wide[9] = {10, 0, 3, 3, 9, 1, 0, 10, 5};
    gather_case(6, 33, 8, 36, 40, idx);
    gather_case(9, 1030, 11, 1031, 1040, wide); /* rows wider than a block, the first and the last source row */
}

static void test_embed(void)
{
    const int T = 21, D = 301, NW = 50, NP = 30, NT = 2; /* rows wider than a block */
    int32_t ids[21], pos[21], types[21];
    for (int t = 0; t < T; t++) {
        ids[t] = (t * 7) % NW;
        pos[t] = t % NP;
        types[t] = t & 1;
    }
    /* variants: word+pos+type; word+pos; word only; scaled word+pos; scaled with type; type table without ids;
     * word_scale exactly 1 (same as 0: no multiplication); word+type without positions */
    for (int v = 0; v < 8; v++) {
        struct pair p;
        if (pair_init(&p, gpu, 1 << 18, 0))
            return;
        size_t w = put_rand(&p, (size_t)NW * D, 1.0f), ps = put_rand(&p, (size_t)NP * D, 1.0f);
        size_t ty = put_rand(&p, (size_t)NT * D, 1.0f), out = put(&p, NULL, (size_t)T * D * 4);
        size_t i0 = put(&p, ids, sizeof ids), i1 = put(&p, pos, sizeof pos), i2 = put(&p, types, sizeof types);
        int use_pos = v != 2 && v != 7, use_type = v == 0 || v == 4 || v == 5 || v == 6 || v == 7;
        float scale = v == 3 || v == 4 ? 27.712813f : v == 6 ? 1.0f : 0.0f;
        struct nlpd_op oc = {.kind = NLPD_OP_EMBED}, og = oc;
        oc.u.embed = (struct nlpd_op_embed){F(&p.c, out),
                                            F(&p.c, w),
                                            use_pos ? F(&p.c, ps) : NULL,
                                            use_type ? F(&p.c, ty) : NULL,
                                            I(&p.c, i0),
                                            I(&p.c, i1),
                                            v == 5 ? NULL : I(&p.c, i2),
                                            T,
                                            D,
                                            NW,
                                            NP,
                                            NT,
                                            scale,
                                            NLPD_DTYPE_F32};
        og.u.embed = (struct nlpd_op_embed){F(&p.g, out),
                                            F(&p.g, w),
                                            use_pos ? F(&p.g, ps) : NULL,
                                            use_type ? F(&p.g, ty) : NULL,
                                            I(&p.g, i0),
                                            I(&p.g, i1),
                                            v == 5 ? NULL : I(&p.g, i2),
                                            T,
                                            D,
                                            NW,
                                            NP,
                                            NT,
                                            scale,
                                            NLPD_DTYPE_F32};
        if (!run2(&p, &oc, &og))
            compare_out(&p, out, (size_t)T, (size_t)D, (size_t)D, 1e-7, "embed"); /* same order of operations */
        pair_free(&p);
    }
}

/* -------------------------------------------------------------------------------------------- errors ---- */

/* The CPU reports from run, the GPU from the next sync: same code, same message. */
static void expect_same_error(struct pair *p, struct nlpd_op *oc, struct nlpd_op *og)
{
    struct nlpd_error ec = {0}, eg = {0};
    int rc = nlpd_backend_run(cpu, oc, &ec);
    int rg = nlpd_backend_run(gpu, og, &eg);
    if (!rg)
        rg = nlpd_backend_sync(gpu, &eg);
    CHECK(rc == NLPD_EINVAL && rg == NLPD_EINVAL);
    if (strcmp(ec.message, eg.message)) {
        fprintf(stderr, "  cpu: %s\n  gpu: %s\n", ec.message, eg.message);
        CHECK(!"messages differ");
    }
    /* the backend goes on working */
    CHECK(nlpd_backend_sync(gpu, &eg) == 0);
    (void)p;
}

static void test_bad_indices(void)
{
    struct pair p;
    if (pair_init(&p, gpu, 1 << 18, 0))
        return;
    const int T = 6, D = 8;
    size_t w = put_rand(&p, 10 * D, 1.0f), ps = put_rand(&p, 6 * D, 1.0f), ty = put_rand(&p, 2 * D, 1.0f);
    size_t out = put(&p, NULL, (size_t)T * D * 4);
    int32_t cases[4][3][6] = {
        {{1, 2, 10, 3, -1, 4}, {0, 1, 2, 3, 4, 5}, {0, 0, 0, 0, 0, 0}}, /* id 10 at token 2 (and -1 later) */
        {{1, 2, 3, 4, 5, 6}, {0, 1, 2, 3, 9, 5}, {0, 0, 0, 0, 0, 0}},   /* position 9 at token 4 */
        {{1, 2, 3, 4, 5, 6}, {0, 1, 2, 3, 4, 5}, {0, 0, 0, 2, 0, 0}},   /* type 2 at token 3 */
        {{1, 2, 3, 4, 5, -7}, {0, 7, 2, 3, 4, 5}, {0, 0, 0, 0, 0, 0}},  /* position at token 1 before id at 5 */
    };
    for (int c = 0; c < 4; c++) {
        size_t i0 = put(&p, cases[c][0], sizeof cases[c][0]), i1 = put(&p, cases[c][1], sizeof cases[c][1]);
        size_t i2 = put(&p, cases[c][2], sizeof cases[c][2]);
        struct nlpd_op oc = {.kind = NLPD_OP_EMBED}, og = oc;
        oc.u.embed = (struct nlpd_op_embed){
            F(&p.c, out), F(&p.c, w), F(&p.c, ps), F(&p.c, ty), I(&p.c, i0),   I(&p.c, i1), I(&p.c, i2), T, D,
            10,           6,          2,           0.0f,        NLPD_DTYPE_F32};
        og.u.embed = (struct nlpd_op_embed){
            F(&p.g, out), F(&p.g, w), F(&p.g, ps), F(&p.g, ty), I(&p.g, i0),   I(&p.g, i1), I(&p.g, i2), T, D,
            10,           6,          2,           0.0f,        NLPD_DTYPE_F32};
        expect_same_error(&p, &oc, &og);
    }
    int32_t idx[4] = {1, 5, 0, 9};
    size_t ix = put(&p, idx, sizeof idx), dst = put(&p, NULL, 4 * D * 4);
    struct nlpd_op oc = {.kind = NLPD_OP_GATHER_ROWS}, og = oc;
    oc.u.gather_rows = (struct nlpd_op_gather_rows){F(&p.c, dst), F(&p.c, w), I(&p.c, ix), 4, D, 5, D, D};
    og.u.gather_rows = (struct nlpd_op_gather_rows){F(&p.g, dst), F(&p.g, w), I(&p.g, ix), 4, D, 5, D, D};
    expect_same_error(&p, &oc, &og);
    /* more queued ops than error words, none bad: no error, no exhaustion */
    int32_t good[6] = {1, 2, 3, 4, 5, 6}, z[6] = {0};
    size_t g0 = put(&p, good, sizeof good), g1 = put(&p, z, sizeof z);
    struct nlpd_op e = {.kind = NLPD_OP_EMBED};
    e.u.embed = (struct nlpd_op_embed){
        F(&p.g, out), F(&p.g, w), F(&p.g, ps), F(&p.g, ty), I(&p.g, g0),   I(&p.g, g1), I(&p.g, g1), T, D,
        10,           6,          2,           0.0f,        NLPD_DTYPE_F32};
    struct nlpd_error err = {0};
    /* a bad id belongs to the batch that queued it: the download of its results reports it (CUDA), or the run did
     * (CPU); the thread's next batch is clean (issue 20: it used to surface there) */
    size_t b0 = put(&p, cases[0][0], sizeof cases[0][0]);
    struct nlpd_op bad = e;
    bad.u.embed.ids = I(&p.g, b0);
    float host[6 * 8]; /* T x D */
    if (nlpd_backend_run(gpu, &bad, &err) == 0)
        CHECK(nlpd_backend_download_err(&p.g, out, host, sizeof host, &err) == NLPD_EINVAL);
    CHECK_STR_CONTAINS(err.message, "token 2: id 10 out of range (vocabulary of 10)");
    CHECK(nlpd_backend_run(gpu, &e, &err) == 0 && nlpd_backend_sync(gpu, &err) == 0);
    CHECK(nlpd_backend_download_err(&p.g, out, host, sizeof host, &err) == 0);
    int rc = 0;
    for (int i = 0; i < 600 && !rc; i++)
        rc = nlpd_backend_run(gpu, &e, &err);
    CHECK(rc == 0 && nlpd_backend_sync(gpu, &err) == 0);
    pair_free(&p);
}

static void test_oom(void)
{
    struct nlpd_buffer b;
    struct nlpd_error err = {0};
    CHECK(nlpd_backend_alloc(gpu, (size_t)1 << 52, &b, &err) == NLPD_ENOMEM);
    CHECK_STR_CONTAINS(err.message, "out of device memory");
    CHECK(nlpd_backend_alloc_weights(gpu16, (size_t)1 << 52, &b, &err) == NLPD_ENOMEM);
    CHECK(nlpd_backend_alloc(gpu, 4096, &b, &err) == 0); /* and the device is still fine */
    nlpd_backend_buffer_free(&b);
    CHECK(nlpd_backend_sync(gpu, &err) == 0);
}

static void test_transfers(void)
{
    /* larger than the staging (16 MiB), odd offsets and sizes, interleaved with small ones */
    size_t n = (size_t)40 << 20;
    unsigned char *src = malloc(n), *back = malloc(n);
    for (size_t i = 0; i < n; i++)
        src[i] = (unsigned char)(i * 2654435761u >> 13);
    struct nlpd_buffer b;
    struct nlpd_error err = {0};
    CHECK(nlpd_backend_alloc(gpu, n + 64, &b, &err) == 0);
    if (b.ptr) {
        CHECK(nlpd_backend_upload(&b, 3, src, n - 7) == 0);
        for (int i = 0; i < 100; i++)
            CHECK(nlpd_backend_upload(&b, (size_t)i * 1000 + 5, src + i, 17) == 0);
        memset(back, 0, n);
        CHECK(nlpd_backend_download(&b, 3, back, n - 7) == 0);
        int ok = 1;
        for (int i = 0; i < 100 && ok; i++)
            ok = !memcmp(back + (size_t)i * 1000 + 2, src + i, 17);
        for (int i = 0; i < 100; i++) /* restore what the small uploads overwrote, then compare everything */
            memcpy(back + (size_t)i * 1000 + 2, src + (size_t)i * 1000 + 2, 17);
        CHECK(ok && !memcmp(back, src, n - 7));
        CHECK(nlpd_backend_upload(&b, n, src, 65) == NLPD_ERANGE);
        nlpd_backend_buffer_free(&b);
    }
    free(src);
    free(back);
}

/* ------------------------------------------------------------------------------------ half precision ---- */

static void half_cases(struct nlpd_backend *g, double tol)
{
    matmul_case(g, 1, 128, 256, 768, 0, 0, 1, NLPD_ACT_GELU, tol);
    matmul_case(g, 1, 33, 70, 48, 1, 3, 1, NLPD_ACT_TANH, tol);  /* tied output projection shape (b^T) */
    matmul_case(g, 0, 40, 64, 96, 0, 0, 1, NLPD_ACT_NONE, 1e-5); /* b not a weight: stays fp32 */
    /* odd k (the converted a has an odd leading dimension), b 2-byte aligned in the copy, both transposes */
    for (int tb = 0; tb < 2; tb++)
        matmul_case_ld(g, 1, 5, 300, 61, tb, 64, tb ? 61 : 301, 300, 1, 1, NLPD_ACT_GELU_TANH, tol);
    /* the pooler's strided a (first token of each sequence), and the vocabulary-wide tied projection */
    matmul_case_ld(g, 1, 3, 64, 64, 0, 17 * 64, 64, 64, 0, 1, NLPD_ACT_TANH, tol);
    matmul_case_ld(g, 1, 4, 58101, 64, 1, 64, 64, 58101, 0, 1, NLPD_ACT_NONE, tol);
    attention_case(g, tol);
    attention_kv_case(g, 1, 1, 1, tol);
    attention_kv_case(g, 0, 1, 1, tol);
}

static void test_fp16(void)
{
    half_cases(gpu16, 5e-3);
}

static void test_bf16(void)
{
    half_cases(gpub16, 4e-2);
}

/* A backend with the smallest arena (48 MiB: 16 MiB of scratch) makes the chunked paths run: attention scores of
 * more (sequence, head) pairs than the scratch holds, and a half-precision product whose converted a does not fit. */
static void test_small_arena(void)
{
    struct nlpd_error err = {0};
    struct nlpd_backend_opts o = {.name = gpu_name, .threads = 1, .arena_bytes = (size_t)48 << 20};
    struct nlpd_backend *small = nlpd_backend_new_opts(&o, &err);
    o.dtype = NLPD_DTYPE_F16;
    struct nlpd_backend *small16 = nlpd_backend_new_opts(&o, &err);
    CHECK(small && small16);
    if (small && small16) {
        attention_case_shape(small, 2, 512, 12, 64, 1e-5); /* 24 pairs of 1 MiB of scores */
        /* fp16 takes the fused kernel (no scores) by default */
        setenv("NLPD_CUDA_ATTENTION", "cublas", 1);
        attention_case_shape(small16, 2, 512, 12, 64, 5e-3);
        unsetenv("NLPD_CUDA_ATTENTION");
        static const struct kv_shape big = {3, 256, 400, 16, 8, 3, 400, 400, 100, kv_map3}; /* 48 x 400 KB */
        attention_kv_shape(small, &big, 1, 1, 1, 1e-5);
        matmul_case(small16, 1, 9000, 32, 1024, 0, 0, 1, NLPD_ACT_NONE, 5e-3); /* 18 MB of converted a */
    }
    nlpd_backend_free(small);
    nlpd_backend_free(small16);
}

/* LOG_SOFTMAX_TOPK (issue 20 item 6). The columns must be the CPU's exactly: both pick by the logits alone in the
 * same order (value descending, column ascending, NaN as -inf). The values differ only by the log-sum-exp: the CPU
 * sums exp in double, the GPU in fp32 over ~cols/256 terms per thread then a tree, a relative error of the sum
 * below (cols/256 + 16) 2^-24 (2e-5 for 58101 columns), plus expf/logf's few ulps: 1e-4 absolute leaves 5x. */
static void topk_case(int rows, int cols, size_t ld, int k, int ties, int bad_row, float bad)
{
    struct pair p;
    size_t xn = (size_t)rows * ld;
    if (pair_init(&p, gpu, xn * 4 + (size_t)rows * k * 8 + 4096, 0))
        return;
    float *x = malloc(xn * 4);
    fill(x, xn, 8.0f);
    if (ties) /* few distinct values: equal logits must come out in column order on both sides */
        for (size_t i = 0; i < xn; i++)
            x[i] = floorf(x[i]);
    if (bad_row >= 0)
        x[(size_t)bad_row * ld + (size_t)cols / 2] = bad;
    size_t xo = put(&p, x, xn * 4), vo = put(&p, NULL, (size_t)rows * k * 4), io = put(&p, NULL, (size_t)rows * k * 4);
    struct nlpd_op oc = {.kind = NLPD_OP_LOG_SOFTMAX_TOPK}, og = oc;
    oc.u.topk = (struct nlpd_op_log_softmax_topk){F(&p.c, xo), F(&p.c, vo), I(&p.c, io), rows, cols, k, ld};
    og.u.topk = (struct nlpd_op_log_softmax_topk){F(&p.g, xo), F(&p.g, vo), I(&p.g, io), rows, cols, k, ld};
    if (!run2(&p, &oc, &og)) {
        size_t n = (size_t)rows * k;
        float *vc = malloc(n * 4), *vg = malloc(n * 4);
        int32_t *ic = malloc(n * 4), *ig = malloc(n * 4);
        CHECK(nlpd_backend_download(&p.c, vo, vc, n * 4) == 0 && nlpd_backend_download(&p.g, vo, vg, n * 4) == 0);
        CHECK(nlpd_backend_download(&p.c, io, ic, n * 4) == 0 && nlpd_backend_download(&p.g, io, ig, n * 4) == 0);
        int bad_n = 0;
        double worst = 0;
        for (size_t i = 0; i < n; i++) {
            int r = (int)(i / (size_t)k), nonfinite = r == bad_row;
            int ok = ic[i] == ig[i] && ic[i] >= 0 && ic[i] < cols;
            if (i % (size_t)k) /* best first, equal values in column order (the CPU is the reference) */
                ok = ok &&
                     (x[(size_t)r * ld + ic[i - 1]] > x[(size_t)r * ld + ic[i]] ||
                      (x[(size_t)r * ld + ic[i - 1]] == x[(size_t)r * ld + ic[i]] && ic[i - 1] < ic[i]) || nonfinite);
            if (nonfinite)
                ok = ok && !isfinite(vc[i]) && !isfinite(vg[i]);
            else {
                double d = fabs((double)vc[i] - vg[i]);
                worst = d > worst ? d : worst;
                ok = ok && d <= 1e-4 && vc[i] <= 0;
            }
            if (!ok && bad_n++ < 3)
                fprintf(stderr, "  topk %dx%d k %d [%zu]: cpu col %d %.9g, gpu col %d %.9g\n", rows, cols, k, i, ic[i],
                        vc[i], ig[i], vg[i]);
        }
        CHECK(bad_n == 0);
        printf("  topk %d x %d (ld %zu) k %d%s%s: columns equal, max |dlogp| %.3g\n", rows, cols, ld, k,
               ties ? " ties" : "", bad_row >= 0 ? " non-finite row" : "", worst);
        free(vc);
        free(vg);
        free(ic);
        free(ig);
    }
    free(x);
    pair_free(&p);
}

static void test_topk(void)
{
    topk_case(8, 58101, 58101, 8, 0, -1, 0);           /* Marian's vocabulary, beam 4 x 2 candidates */
    topk_case(3, 37, 40, 37, 0, -1, 0);                /* k = cols, padded rows */
    topk_case(5, 1000, 1000, NLPD_TOPK_MAX, 1, -1, 0); /* many equal logits */
    topk_case(4, 500, 500, 5, 0, 2, NAN);              /* a NaN logit: that row's values are NaN */
    topk_case(4, 500, 500, 5, 0, 1, INFINITY);         /* an inf logit: non-finite too */
    struct pair p;                                     /* k out of range: an error on both, not a read past the row */
    if (pair_init(&p, gpu, 4096, 0))
        return;
    for (int k = 0; k < 3; k++) {
        int kk = k == 0 ? 0 : k == 1 ? NLPD_TOPK_MAX + 1 : 11;
        struct nlpd_op o = {.kind = NLPD_OP_LOG_SOFTMAX_TOPK};
        struct nlpd_error e1 = {0}, e2 = {0};
        o.u.topk = (struct nlpd_op_log_softmax_topk){F(&p.c, 0), F(&p.c, 1024), I(&p.c, 2048), 1, 10, kk, 10};
        CHECK(nlpd_backend_run(cpu, &o, &e1) == NLPD_EINVAL);
        o.u.topk = (struct nlpd_op_log_softmax_topk){F(&p.g, 0), F(&p.g, 1024), I(&p.g, 2048), 1, 10, kk, 10};
        int rc = nlpd_backend_run(gpu, &o, &e2);
        if (!rc)
            rc = nlpd_backend_sync(gpu, &e2);
        CHECK(rc == NLPD_EINVAL);
        CHECK_STR_CONTAINS(e2.message, "out of range");
    }
    pair_free(&p);
}

/* Threads (issue 20 item 4: a stream per thread, no backend-wide lock). A loader thread uploads the weights row by
 * row and exits without a sync (the model loaders do the same); then TH_N workers, each with its own buffers,
 * queue products against them at the same time. Every worker's results must match the CPU's: the workers' streams
 * must wait for the loader's copies (and, fp16/bf16, for the one shadow conversion) although no thread synced. */
enum { TH_N = 4, TH_ITERS = 6, TH_M = 33, TH_K = 96, TH_N_COLS = 80 };

struct th_job {
    struct nlpd_backend *be;
    struct nlpd_buffer *w;
    const float *wsrc;
    float a[TH_ITERS][TH_M * TH_K], c[TH_ITERS][TH_M * TH_N_COLS];
    int rc;
};

static void *th_loader(void *arg)
{
    struct th_job *j = arg;
    for (int r = 0; r < TH_K && !j->rc; r++) /* row by row, like the weight loader */
        j->rc = nlpd_backend_upload(j->w, (size_t)r * TH_N_COLS * 4, j->wsrc + (size_t)r * TH_N_COLS, TH_N_COLS * 4);
    return NULL;
}

static void *th_worker(void *arg)
{
    struct th_job *j = arg;
    struct nlpd_buffer b = {0};
    struct nlpd_error err = {0};
    size_t an = (size_t)TH_M * TH_K * 4, cn = (size_t)TH_M * TH_N_COLS * 4;
    if ((j->rc = nlpd_backend_alloc(j->be, 2 * (an + cn), &b, &err)))
        return NULL;
    for (int it = 0; it < TH_ITERS && !j->rc; it++) {
        size_t ao = (size_t)(it & 1) * (an + cn), co = ao + an; /* two sets in turn: queued work overlaps */
        struct nlpd_op op = {.kind = NLPD_OP_MATMUL};
        op.u.matmul = (struct nlpd_op_matmul){(float *)((char *)b.ptr + co),
                                              (float *)((char *)b.ptr + ao),
                                              j->w->ptr,
                                              NULL,
                                              TH_M,
                                              TH_N_COLS,
                                              TH_K,
                                              TH_K,
                                              TH_N_COLS,
                                              TH_N_COLS,
                                              0,
                                              NLPD_ACT_NONE,
                                              NLPD_DTYPE_F32,
                                              NLPD_DTYPE_F32};
        if ((j->rc = nlpd_backend_upload(&b, ao, j->a[it], an)) || (j->rc = nlpd_backend_run(j->be, &op, &err)) ||
            (j->rc = nlpd_backend_download(&b, co, j->c[it], cn)))
            fprintf(stderr, "  worker: %s\n", err.message);
    }
    nlpd_backend_buffer_free(&b);
    return NULL;
}

static void threads_case(struct nlpd_backend *g, double tol)
{
    static struct th_job jobs[TH_N];
    static float wsrc[TH_K * TH_N_COLS];
    fill(wsrc, TH_K * TH_N_COLS, 1.0f);
    struct nlpd_buffer wg = {0}, wc = {0}, ref = {0};
    struct nlpd_error err = {0};
    CHECK(nlpd_backend_alloc_weights(g, sizeof wsrc, &wg, &err) == 0);
    CHECK(nlpd_backend_alloc_weights(cpu, sizeof wsrc, &wc, &err) == 0);
    CHECK(nlpd_backend_alloc(cpu, (size_t)TH_M * (TH_K + TH_N_COLS) * 4, &ref, &err) == 0);
    if (!wg.ptr || !wc.ptr || !ref.ptr)
        goto out;
    CHECK(nlpd_backend_upload(&wc, 0, wsrc, sizeof wsrc) == 0);
    pthread_t t[TH_N];
    jobs[0].w = &wg;
    jobs[0].wsrc = wsrc;
    jobs[0].rc = 0;
    CHECK(pthread_create(&t[0], NULL, th_loader, &jobs[0]) == 0);
    pthread_join(t[0], NULL);
    CHECK(jobs[0].rc == 0);
    for (int i = 0; i < TH_N; i++) {
        jobs[i].be = g;
        jobs[i].w = &wg;
        jobs[i].rc = 0;
        for (int it = 0; it < TH_ITERS; it++)
            fill(jobs[i].a[it], (size_t)TH_M * TH_K, 1.0f);
    }
    for (int i = 0; i < TH_N; i++)
        CHECK(pthread_create(&t[i], NULL, th_worker, &jobs[i]) == 0);
    for (int i = 0; i < TH_N; i++)
        pthread_join(t[i], NULL);
    double worst = 0;
    int bad = 0;
    float *rc_ = (float *)ref.ptr + (size_t)TH_M * TH_K;
    for (int i = 0; i < TH_N; i++) {
        CHECK(jobs[i].rc == 0);
        for (int it = 0; it < TH_ITERS && !jobs[i].rc; it++) {
            CHECK(nlpd_backend_upload(&ref, 0, jobs[i].a[it], sizeof jobs[i].a[it]) == 0);
            struct nlpd_op op = {.kind = NLPD_OP_MATMUL};
            op.u.matmul = (struct nlpd_op_matmul){rc_,       ref.ptr,       wc.ptr,         NULL,          TH_M,
                                                  TH_N_COLS, TH_K,          TH_K,           TH_N_COLS,     TH_N_COLS,
                                                  0,         NLPD_ACT_NONE, NLPD_DTYPE_F32, NLPD_DTYPE_F32};
            CHECK(nlpd_backend_run(cpu, &op, &err) == 0 && nlpd_backend_sync(cpu, &err) == 0);
            double mx = 0;
            for (int e = 0; e < TH_M * TH_N_COLS; e++)
                mx = fmax(mx, fabs(rc_[e]));
            for (int e = 0; e < TH_M * TH_N_COLS; e++) {
                double d = fabs((double)rc_[e] - jobs[i].c[it][e]) / (fabs(rc_[e]) + mx + 1e-30);
                if (!(d <= tol) && bad++ < 3)
                    fprintf(stderr, "  thread %d iteration %d [%d]: cpu %.9g gpu %.9g\n", i, it, e, rc_[e],
                            jobs[i].c[it][e]);
                worst = d > worst || d != d ? (d != d ? INFINITY : d) : worst;
            }
        }
    }
    CHECK(bad == 0);
    printf("  threads (%s): %d workers x %d products, worst normwise %.3g (tol %.3g)\n", nlpd_backend_reason(g), TH_N,
           TH_ITERS, worst, tol);
out:
    nlpd_backend_buffer_free(&wg);
    nlpd_backend_buffer_free(&wc);
    nlpd_backend_buffer_free(&ref);
}

static void test_threads(void)
{
    threads_case(gpu, 1e-5);
    if (gpu16)
        threads_case(gpu16, 5e-3);
}

/* upload returns once the source is copied: the caller may overwrite it at once */
static void test_upload_reuse(void)
{
    enum { N = 3000 };
    static int32_t h[N], want[3][N], back[N];
    struct nlpd_buffer b;
    struct nlpd_error err = {0};
    CHECK(nlpd_backend_alloc(gpu, 3 * sizeof h, &b, &err) == 0);
    if (!b.ptr)
        return;
    for (int r = 0; r < 3; r++) {
        for (int i = 0; i < N; i++)
            h[i] = want[r][i] = r * 1000003 + i;
        CHECK(nlpd_backend_upload(&b, (size_t)r * sizeof h, h, sizeof h) == 0);
        memset(h, 0xab, sizeof h);
    }
    for (int r = 0; r < 3; r++) {
        CHECK(nlpd_backend_download(&b, (size_t)r * sizeof h, back, sizeof back) == 0);
        CHECK(!memcmp(back, want[r], sizeof back));
    }
    /* row by row, as the weight loader uploads (the CUDA backend coalesces contiguous ones into one copy): rows of
     * 7 ints, contiguous, then a gap, then backwards; an op reads them before any sync (the pending copy must be
     * queued first), then a download */
    for (int i = 0; i < N; i++)
        h[i] = want[0][i] = 7 * i + 1;
    for (int r = 0; r + 7 <= 2100; r += 7)
        CHECK(nlpd_backend_upload(&b, (size_t)r * 4, h + r, 7 * 4) == 0);
    for (int r = 2107 + 7 * 126; r >= 2107; r -= 7) /* 2107 .. 2995 */
        CHECK(nlpd_backend_upload(&b, (size_t)r * 4, h + r, 7 * 4) == 0);
    CHECK(nlpd_backend_upload(&b, 2100 * 4, h + 2100, 7 * 4) == 0);
    CHECK(nlpd_backend_upload(&b, 2996 * 4, h + 2996, 4 * 4) == 0);
    int32_t idx[2] = {1, 0};
    CHECK(nlpd_backend_upload(&b, (size_t)(2 * N) * 4, idx, sizeof idx) == 0);
    /* gather rows 1 and 0 of the first 2 x 1500 ints (as floats: bit copies) into the second third */
    struct nlpd_op g = {.kind = NLPD_OP_GATHER_ROWS};
    int32_t *base = (int32_t *)b.ptr;
    g.u.gather_rows =
        (struct nlpd_op_gather_rows){(float *)(base + N), (const float *)base, base + 2 * N, 2, 1500, 2, 1500, 1500};
    CHECK(nlpd_backend_run(gpu, &g, &err) == 0);
    CHECK(nlpd_backend_download(&b, 0, back, sizeof back) == 0);
    CHECK(!memcmp(back, want[0], sizeof back));
    CHECK(nlpd_backend_download(&b, sizeof h, back, sizeof back) == 0);
    CHECK(!memcmp(back, want[0] + 1500, 1500 * 4) && !memcmp(back + 1500, want[0], 1500 * 4));
    /* a pending upload, then the buffer freed */
    CHECK(nlpd_backend_upload(&b, 0, h, 64) == 0);
    nlpd_backend_buffer_free(&b);
    CHECK(nlpd_backend_sync(gpu, &err) == 0);
}

/* ------------------------------------------------------------------------------------ whole models ---- */

static int32_t *ints2d(json_t *a, int *rows, int *cols)
{
    *rows = (int)json_array_size(a);
    *cols = *rows ? (int)json_array_size(json_array_get(a, 0)) : 0;
    int32_t *v = calloc((size_t)(*rows) * (*cols) + 1, sizeof *v);
    for (int r = 0; r < *rows; r++)
        for (int c = 0; c < *cols; c++)
            v[(size_t)r * *cols + c] = (int32_t)json_integer_value(json_array_get(json_array_get(a, r), c));
    return v;
}

/* The golden batch through the encoder on CUDA; returns max |logit - golden| (-1 on failure). */
static double model_parity(const char *name, const char *dtype)
{
    char dir[256], path[300];
    snprintf(dir, sizeof dir, FIX "%s", name);
    snprintf(path, sizeof path, "%s/golden.json", dir);
    json_error_t je;
    json_t *g = json_load_file(path, 0, &je);
    struct nlpd_error err = {0};
    struct nlpd_encoder_opts opts = {.backend = gpu_name, .threads = 1, .dtype = dtype};
    struct nlpd_encoder *enc = g ? nlpd_encoder_load(dir, &opts, &err) : NULL;
    if (!enc) {
        fprintf(stderr, "%s: %s\n", name, g ? err.message : je.text);
        json_decref(g);
        return -1;
    }
    int token = nlpd_encoder_task(enc) == NLPD_HF_TASK_TOKEN_CLS, NL = nlpd_encoder_num_labels(enc);
    json_t *batch = json_object_get(g, "batch");
    int B, S, b2, s2;
    int32_t *ids = ints2d(json_object_get(batch, "input_ids"), &B, &S);
    int32_t *mask = ints2d(json_object_get(batch, "attention_mask"), &b2, &s2);
    int32_t *types =
        json_object_get(batch, "token_type_ids") ? ints2d(json_object_get(batch, "token_type_ids"), &b2, &s2) : NULL;
    struct nlpd_encoder_ws *ws = nlpd_encoder_ws_new(enc, B, S, &err);
    size_t rows = token ? (size_t)B * S : (size_t)B;
    float *logits = calloc(rows * NL, sizeof(float));
    struct nlpd_encoder_input in = {B, S, ids, mask, types};
    struct nlpd_encoder_output out = {.logits = logits};
    double worst = -1;
    if (ws && nlpd_encoder_forward(enc, ws, &in, &out, &err) == 0) {
        worst = 0;
        json_t *bl = json_object_get(g, "batch_logits");
        for (int b = 0; b < B; b++)
            for (int s = 0; s < (token ? S : 1); s++) {
                if (token && !mask[(size_t)b * S + s])
                    continue;
                json_t *row = token ? json_array_get(json_array_get(bl, b), s) : json_array_get(bl, b);
                for (int l = 0; l < NL; l++) {
                    double want = json_number_value(json_array_get(row, l));
                    double got = logits[((size_t)b * (token ? S : 1) + s) * NL + l];
                    double d = fabs(got - want);
                    worst = d > worst || d != d ? (d != d ? INFINITY : d) : worst;
                }
            }
    } else {
        fprintf(stderr, "%s (%s): %s\n", name, dtype, err.message);
    }
    free(logits);
    free(ids);
    free(mask);
    free(types);
    nlpd_encoder_ws_free(ws);
    nlpd_encoder_free(enc);
    json_decref(g);
    return worst;
}

static const char *models[] = {"bert-seq-cls", "bert-token-cls", "distilbert-seq-cls", "xlm-roberta-seq-cls"};

static int attention_half_io(struct nlpd_backend *g, enum nlpd_dtype t);

static void test_models(void)
{
    /* half activations need attention with half io (fattn.cu); without it these run with fp32 activations */
    int act32 = nlpd_backend_act_dtype(gpu16) == NLPD_DTYPE_F16 && !attention_half_io(gpu16, NLPD_DTYPE_F16);
    if (act32)
        setenv("NLPD_CUDA_ACT", "fp32", 1);
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++) {
        double f32 = model_parity(models[i], "fp32"), f16 = model_parity(models[i], "fp16");
        double bf = model_parity(models[i], "bf16");
        printf("model %-20s max |logit - golden|: fp32 %.3g, fp16 %.3g, bf16 %.3g\n", models[i], f32, f16, bf);
        CHECK(f32 >= 0 && f32 <= 1e-4 * 2); /* goldens' own tolerance: atol 1e-4 + rtol 1e-4 (|logits| < 1) */
        CHECK(f16 >= 0 && isfinite(f16));   /* reported; the op tests above bound the precision */
        CHECK(bf >= 0 && isfinite(bf));
    }
    unsetenv("NLPD_CUDA_ACT");
}

/* ---------------------------------------------------------------------------------- DeBERTa on CUDA ---- */

/* A monotone relative index table of 2 S - 1 entries in [0, nr): i - j + nr / 2 near 0, coarser (as log buckets)
 * past +-4, clamped at the ends, so rows read repeated and skipped position rows. */
static void rel_table(int32_t *ridx, int S, int nr)
{
    for (int k = 0; k < 2 * S - 1; k++) {
        int d = k - (S - 1), a = d < 0 ? -d : d, v = a <= 4 ? a : 4 + (a - 4) / 3;
        v = nr / 2 + (d < 0 ? -v : v);
        ridx[k] = v < 0 ? 0 : v > nr - 1 ? nr - 1 : v;
    }
}

/* ATTENTION_REL against the CPU backend. Variants: c2p + p2c, c2p alone, p2c alone (masked), both unmasked. The
 * masks (mask_bit patterns pat0 + b) cover no mask, trailing padding, a fully masked sequence (uniform), holes,
 * left padding. Tolerance: each score is three fp32 dot products of head_dim terms on both sides (cuBLAS + the
 * gather kernel against oneDNN), so the scores differ by a few ulps of sum|terms| * scale; the softmax turns an
 * absolute score error e into a relative probability error ~e, and P V is an fp32 product: the plain attention's
 * 1e-5 normwise bound holds with the same margin. */
static void attention_rel_shape(struct nlpd_backend *g, int B, int S, int NH, int D, int NR, int pat0, double tol)
{
    const int H = NH * D, ldq = 3 * H + 5, ldo = H + 3, ldp = H + 1;
    int32_t *mask = malloc((size_t)B * S * sizeof *mask), *ridx = malloc((2 * (size_t)S - 1) * sizeof *ridx);
    for (int b = 0; b < B; b++)
        for (int s = 0; s < S; s++)
            mask[b * S + s] = mask_bit((pat0 + b) % 6, s, S);
    rel_table(ridx, S, NR);
    struct pair p;
    size_t need = ((size_t)B * S * (ldq + ldo + 1) + 2 * (size_t)NR * ldp + 6 * (size_t)S) * 4 + 10 * 256;
    if (pair_init(&p, g, need, 0)) {
        free(mask);
        free(ridx);
        return;
    }
    /* magnitudes: q.k, q.pos and k.pos terms of order one after the scale, so the softmax is neither flat nor
     * one-hot */
    const float mag = D >= 64 ? 0.6f : 1.5f;
    size_t qkv = put_rand(&p, (size_t)B * S * ldq, mag), out = put_rand(&p, (size_t)B * S * ldo, 1.0f);
    size_t pk = put_rand(&p, (size_t)NR * ldp, mag), pq = put_rand(&p, (size_t)NR * ldp, mag);
    size_t m = put(&p, mask, (size_t)B * S * sizeof *mask), ri = put(&p, ridx, (2 * (size_t)S - 1) * sizeof *ridx);
    for (int variant = 0; variant < 4; variant++) {
        const int use_k = variant != 2, use_q = variant != 1, use_mask = variant != 3;
        struct nlpd_op oc = {.kind = NLPD_OP_ATTENTION_REL}, og = oc;
        struct nlpd_op_attention_rel a = {.batch = B,
                                          .seq = S,
                                          .heads = NH,
                                          .head_dim = D,
                                          .n_rel = NR,
                                          .ld_qkv = ldq,
                                          .ld_out = ldo,
                                          .ld_pos = ldp,
                                          .scale = 1.0f / sqrtf((float)D * (float)(1 + use_k + use_q))};
        oc.u.attention_rel = a;
        oc.u.attention_rel.out = F(&p.c, out);
        oc.u.attention_rel.qkv = F(&p.c, qkv);
        oc.u.attention_rel.mask = use_mask ? I(&p.c, m) : NULL;
        oc.u.attention_rel.pos_k = use_k ? F(&p.c, pk) : NULL;
        oc.u.attention_rel.pos_q = use_q ? F(&p.c, pq) : NULL;
        oc.u.attention_rel.rel_idx = I(&p.c, ri);
        og.u.attention_rel = a;
        og.u.attention_rel.out = F(&p.g, out);
        og.u.attention_rel.qkv = F(&p.g, qkv);
        og.u.attention_rel.mask = use_mask ? I(&p.g, m) : NULL;
        og.u.attention_rel.pos_k = use_k ? F(&p.g, pk) : NULL;
        og.u.attention_rel.pos_q = use_q ? F(&p.g, pq) : NULL;
        og.u.attention_rel.rel_idx = I(&p.g, ri);
        char what[128];
        snprintf(what, sizeof what, "attention_rel B %d S %d heads %d x %d n_rel %d c2p %d p2c %d mask %d", B, S, NH, D,
                 NR, use_k, use_q, use_mask);
        if (!run2(&p, &oc, &og))
            printf("  %s: normwise %.3g (tol %.3g)\n", what,
                   compare_out(&p, out, (size_t)B * S, (size_t)ldo, (size_t)ldo, tol, what), tol);
    }
    /* a table that decreases, or leaves [0, n_rel), is refused with the CPU's words (CUDA: at the sync) */
    for (int c = 0; c < 2 && S > 2 && g == gpu; c++) {
        int32_t *bad = malloc((2 * (size_t)S - 1) * sizeof *bad);
        memcpy(bad, ridx, (2 * (size_t)S - 1) * sizeof *bad);
        if (c == 0)
            bad[3] = bad[4] + 1; /* index 4 is below index 3 */
        else
            bad[2 * S - 2] = NR; /* the last entry out of range */
        size_t bi = put(&p, bad, (2 * (size_t)S - 1) * sizeof *bad);
        struct nlpd_op oc = {.kind = NLPD_OP_ATTENTION_REL}, og = oc;
        oc.u.attention_rel = (struct nlpd_op_attention_rel){
            F(&p.c, out), F(&p.c, qkv), I(&p.c, m), F(&p.c, pk), F(&p.c, pq), I(&p.c, bi), B, S, NH, D,
            NR,           ldq,          ldo,        ldp,         0.25f};
        og.u.attention_rel = (struct nlpd_op_attention_rel){
            F(&p.g, out), F(&p.g, qkv), I(&p.g, m), F(&p.g, pk), F(&p.g, pq), I(&p.g, bi), B, S, NH, D,
            NR,           ldq,          ldo,        ldp,         0.25f};
        expect_same_error(&p, &oc, &og);
        free(bad);
    }
    pair_free(&p);
    free(mask);
    free(ridx);
}

static void test_attention_rel(void)
{
    CHECK(nlpd_backend_supports(gpu, NLPD_OP_ATTENTION_REL));
    attention_rel_shape(gpu, 3, 7, 4, 8, 4, 0, 1e-5);     /* n_rel smaller than the 13 distances: clamped ends */
    attention_rel_shape(gpu, 3, 33, 1, 64, 256, 3, 1e-5); /* rows over a warp, n_rel larger than 2 S - 1 */
    attention_rel_shape(gpu, 3, 33, 4, 8, 24, 0, 1e-5);   /* several heads; padding, all masked */
    attention_rel_shape(gpu, 2, 1, 4, 64, 2, 4, 1e-5);    /* one token */
    /* pairs in chunks: 32 pairs of (128^2 + 2 x 128 x 512) floats (576 KiB) against ~16 MiB of scratch */
    struct nlpd_error err = {0};
    struct nlpd_backend_opts o = {.name = gpu_name, .threads = 1, .arena_bytes = (size_t)48 << 20};
    struct nlpd_backend *small = nlpd_backend_new_opts(&o, &err);
    CHECK(small != NULL);
    if (small)
        attention_rel_shape(small, 4, 128, 8, 8, 512, 0, 1e-5);
    nlpd_backend_free(small);
    /* the products on tensor cores: fp16 / bf16 compute (the dtype's backends), TF32 (NLPD_CUDA_MATH unset). The
     * relative products are the same kind of dot products as q.k, so the plain attention's bounds hold (fp16 and
     * TF32 keep 11 significant bits: 5e-3; bf16 8: 4e-2; see the top of the file) */
    if (gpu16 && gpub16) {
        attention_rel_shape(gpu16, 3, 33, 4, 8, 24, 0, 5e-3);
        attention_rel_shape(gpub16, 3, 33, 4, 8, 24, 0, 4e-2);
    }
    unsetenv("NLPD_CUDA_MATH");
    o.arena_bytes = 0;
    struct nlpd_backend *t = nlpd_backend_new_opts(&o, &err);
    setenv("NLPD_CUDA_MATH", "strict", 1);
    CHECK(t != NULL);
    if (t)
        attention_rel_shape(t, 3, 33, 1, 64, 256, 3, 5e-3);
    nlpd_backend_free(t);
}

/* The DeBERTa fixtures (and the config branches of _deberta_variants) through the encoder on CUDA against the
 * transformers goldens, as test_models: fp32 (strict, set in main) within the goldens' own atol 1e-4 + rtol 1e-4
 * (the logits reach |6|: the bound is taken from the largest golden), fp16 printed for the small variants (the
 * 20 x 160 token fixtures take long under the emulator; tests/integration/test_cuda_deberta.sh runs those
 * through `nlpd infer` too). */
static const char *deberta_models[] = {"deberta-v2-seq-cls",
                                       "deberta-v2-token-cls",
                                       "_deberta_variants/own-proj-buckets",
                                       "_deberta_variants/c2p-nobuckets",
                                       "_deberta_variants/p2c-maxpos",
                                       "_deberta_variants/absolute-proj"};

static double max_golden(const char *name)
{
    char path[300];
    snprintf(path, sizeof path, FIX "%s/golden.json", name);
    json_error_t je;
    json_t *g = json_load_file(path, 0, &je), *bl = json_object_get(g, "batch_logits"), *row, *v, *x;
    size_t i, j, k;
    double mx = 0;
    json_array_foreach(bl, i, row) json_array_foreach(row, j, v)
    {
        if (json_is_array(v)) {
            json_array_foreach(v, k, x) mx = fmax(mx, fabs(json_number_value(x)));
        } else {
            mx = fmax(mx, fabs(json_number_value(v)));
        }
    }
    json_decref(g);
    return mx;
}

static void test_deberta_models(void)
{
    for (size_t i = 0; i < sizeof deberta_models / sizeof deberta_models[0]; i++) {
        const int variant = deberta_models[i][0] == '_';
        double f32 = model_parity(deberta_models[i], "fp32"), tol = 1e-4 + 1e-4 * max_golden(deberta_models[i]);
        double f16 = variant ? model_parity(deberta_models[i], "fp16") : 0;
        printf("model %-34s max |logit - golden|: fp32 %.3g (bound %.3g)", deberta_models[i], f32, tol);
        if (variant)
            printf(", fp16 %.3g", f16);
        printf("\n");
        CHECK(f32 >= 0 && f32 <= tol);
        CHECK(f16 >= 0 && isfinite(f16));
    }
}

/* ------------------------------------------------------------------------------- fused attention ---- */

/* The fused kernel (kernels/cuda/fattn.cu, issue 20 item 5) against the CPU's attention. It runs whenever the
 * backend's dtype is fp16/bf16 (the ATTENTION and ATTENTION_KV cases of test_fp16/test_bf16 take it too); these
 * cases add the shapes that exercise its tiling: seq 1 and across the 16-row query tiles and 64-key tiles (15, 17,
 * 64, 129), head_dim padded to a multiple of 16 (80) up to 128, 1..12 heads, every mask pattern of mask_bit (one per
 * sequence: the only-last-key pattern at seq 129 leaves two whole key tiles masked before the attended one), and
 * half operands.
 * Tolerance (normwise, as compare_out): q, k and v are rounded to the compute type (u = 2^-11 fp16, 2^-8 bf16) and
 * so are the probabilities P before P V; products are exact and accumulate in fp32. A score's error is at most
 * 2u of scale * sum |q k| (random signs: far less), which moves the probabilities by that much relatively; P and v
 * add u each, and half outputs u/2 more. The output is a weighted mean of v, so these relative errors carry over
 * normwise: a few u, 10u at worst over thousands of outputs: 5e-3 fp16, 4e-2 bf16 (as the other half ops). */
static uint16_t to_half_bits(enum nlpd_dtype t, float x)
{
    return t == NLPD_DTYPE_BF16 ? nlpd_kernels_f32_to_bf16(x) : nlpd_kernels_f32_to_f16(x);
}

static float from_half_bits(enum nlpd_dtype t, uint16_t h)
{
    return t == NLPD_DTYPE_BF16 ? nlpd_kernels_bf16_to_f32(h) : nlpd_kernels_f16_to_f32(h);
}

/* ATTENTION on B sequences of S tokens (mask pattern (b + mask0) % 6 for sequence b, or no mask) with fp32 operands,
 * or half ones (io: the backend's activation type), in which case the CPU gets the same half values as fp32 and its
 * output is compared with the GPU's half output. Returns the GPU side's error code (0: ran and compared). */
static int fattn_case(struct nlpd_backend *g, enum nlpd_dtype io, int B, int S, int NH, int D, int with_mask, int mask0,
                      int big, double tol)
{
    const int H = NH * D, ldq = 3 * H + 3, ldo = H + 5;
    const size_t nq = (size_t)B * S * ldq, no = (size_t)B * S * ldo;
    int32_t *mask = malloc((size_t)B * S * sizeof *mask);
    for (int b = 0; b < B; b++)
        for (int s = 0; s < S; s++)
            mask[b * S + s] = mask_bit((b + mask0) % 6, s, S);
    float *qkv = malloc(nq * sizeof *qkv);
    uint16_t *qkv_h = malloc(nq * sizeof *qkv_h);
    fill(qkv, nq, 2.0f);
    float *qkv_g = malloc(nq * sizeof *qkv_g);
    if (big) /* values past fp16's range in v (every 7th): the fp16 kernel saturates them, the CPU gets them clamped */
        for (size_t r = 0; r < (size_t)B * S; r++)
            for (int j = 0; j < H; j += 7)
                qkv[r * ldq + 2 * H + j] = (j & 1 ? -1.0e5f : 7.0e4f) * (1.0f + 0.25f * frand());
    for (size_t i = 0; i < nq; i++) {
        qkv_g[i] = qkv[i];
        if (io != NLPD_DTYPE_F32) {
            qkv_h[i] = to_half_bits(io, qkv[i]);
            qkv[i] = from_half_bits(io, qkv_h[i]);
        }
        if (big && nlpd_backend_dtype(g) == NLPD_DTYPE_F16)
            qkv[i] = fmaxf(-65504.0f, fminf(65504.0f, qkv[i]));
    }
    struct pair p;
    int rg = -1;
    if (pair_init(&p, g, (nq + no + (size_t)B * S) * 4 + 4 * 256, 0))
        goto out;
    size_t q = put(&p, NULL, nq * 4), o = put(&p, NULL, no * 4), m = put(&p, mask, (size_t)B * S * sizeof *mask);
    nlpd_backend_upload(&p.c, q, qkv, nq * 4);
    nlpd_backend_upload(&p.g, q, io != NLPD_DTYPE_F32 ? (const void *)qkv_h : (const void *)qkv_g,
                        nq * (io != NLPD_DTYPE_F32 ? 2 : 4));
    struct nlpd_op oc = {.kind = NLPD_OP_ATTENTION}, og = oc;
    oc.u.attention = (struct nlpd_op_attention){.out = F(&p.c, o),
                                                .qkv = F(&p.c, q),
                                                .mask = with_mask ? I(&p.c, m) : NULL,
                                                .batch = B,
                                                .seq = S,
                                                .heads = NH,
                                                .head_dim = D,
                                                .ld_qkv = ldq,
                                                .ld_out = ldo,
                                                .scale = 1.0f / sqrtf((float)D)};
    og.u.attention = oc.u.attention;
    og.u.attention.out = F(&p.g, o);
    og.u.attention.qkv = F(&p.g, q);
    og.u.attention.mask = with_mask ? I(&p.g, m) : NULL;
    og.u.attention.io_type = io;
    struct nlpd_error e1 = {0}, e2 = {0};
    CHECK(nlpd_backend_run(cpu, &oc, &e1) == 0);
    rg = nlpd_backend_run(g, &og, &e2);
    if (!rg)
        rg = nlpd_backend_sync(g, &e2);
    char what[128];
    snprintf(what, sizeof what, "fused attention B %d S %d heads %d x %d mask %d io %s%s", B, S, NH, D, with_mask,
             nlpd_dtype_name(io), big ? " (v past fp16's range)" : "");
    if (rg) {
        printf("  %s: %s\n", what, e2.message);
        goto done;
    }
    float *c = malloc(no * 4), *gv = malloc(no * 4);
    uint16_t *gh = malloc(no * 2);
    CHECK(nlpd_backend_download(&p.c, o, c, no * 4) == 0);
    if (io != NLPD_DTYPE_F32) {
        CHECK(nlpd_backend_download(&p.g, o, gh, no * 2) == 0);
        for (size_t i = 0; i < no; i++)
            gv[i] = from_half_bits(io, gh[i]);
    } else {
        CHECK(nlpd_backend_download(&p.g, o, gv, no * 4) == 0);
    }
    double mx = 0, worst = 0;
    for (size_t r = 0; r < (size_t)B * S; r++)
        for (int j = 0; j < H; j++)
            mx = fmax(mx, fabs(c[r * ldo + j]));
    int bad = 0;
    for (size_t r = 0; r < (size_t)B * S; r++)
        for (int j = 0; j < H; j++) {
            double cv = c[r * ldo + j], v = gv[r * ldo + j], rel = fabs(cv - v) / (fabs(cv) + mx + 1e-30);
            if (!(rel <= tol) && bad++ < 3)
                fprintf(stderr, "  %s [%zu,%d]: cpu %.9g gpu %.9g (normwise %.3g > %.3g)\n", what, r, j, cv, v, rel,
                        tol);
            worst = rel != rel ? INFINITY : fmax(worst, rel);
        }
    CHECK(bad == 0);
    printf("  %s: normwise %.2g (tol %.2g)\n", what, worst, tol);
    free(c);
    free(gv);
    free(gh);
done:
    pair_free(&p);
out:
    free(mask);
    free(qkv);
    free(qkv_g);
    free(qkv_h);
    return rg;
}

struct fattn_shape {
    int B, S, NH, D, with_mask;
};
/* kept small: under the host emulator every wmma call computes its whole tile in each of the warp's 32 fibers */
static const struct fattn_shape fattn_shapes[] = {
    {6, 1, 2, 16, 1},   {6, 15, 3, 32, 1},   {6, 17, 1, 80, 1},  {6, 64, 4, 64, 1},  {2, 33, 12, 32, 1},
    {6, 129, 1, 32, 1}, {1, 129, 1, 128, 1}, {2, 129, 2, 48, 0}, {3, 17, 7, 128, 0},
};

/* half io where the backend keeps half activations (nlpd_backend_act_dtype): else said and skipped */
static void fattn_cases(struct nlpd_backend *g, enum nlpd_dtype dt, double tol)
{
    const int half_io = nlpd_backend_act_dtype(g) == dt && dt != NLPD_DTYPE_F32;
    if (!half_io)
        printf("  %s: half operands skipped (the backend's activation type is %s)\n", nlpd_dtype_name(dt),
               nlpd_dtype_name(nlpd_backend_act_dtype(g)));
    for (size_t i = 0; i < sizeof fattn_shapes / sizeof fattn_shapes[0]; i++) {
        const struct fattn_shape *s = &fattn_shapes[i];
        CHECK(fattn_case(g, NLPD_DTYPE_F32, s->B, s->S, s->NH, s->D, s->with_mask, 0, 0, tol) == 0);
        if (half_io)
            CHECK(fattn_case(g, dt, s->B, s->S, s->NH, s->D, s->with_mask, 0, 0, tol) == 0);
    }
}

static void test_fattn_fp16(void)
{
    fattn_cases(gpu16, NLPD_DTYPE_F16, 5e-3);
}

static void test_fattn_bf16(void)
{
    fattn_cases(gpub16, NLPD_DTYPE_BF16, 4e-2);
}

/* ATTENTION_KV through the fused kernel: several query tiles (70 rows) against 130 keys in three key tiles, causal
 * limits falling inside tiles, kv_map, strided kv batches; plus the decoder-step shapes of kv_shapes. */
static void test_fattn_kv(void)
{
    static const struct kv_shape big = {3, 70, 130, 1, 40, 3, 140, 135, 50, kv_map3};
    for (int c = 0; c < 2; c++) {
        attention_kv_shape(gpu16, &big, c, 1, 1, 5e-3);
        attention_kv_shape(gpub16, &big, c, 1, 1, 4e-2);
    }
    attention_kv_case(gpu16, 1, 0, 1, 5e-3);
    attention_kv_case(gpu16, 0, 1, 0, 5e-3);
}

/* v past fp16's range (7e4 .. 1.25e5): the fp16 kernel saturates operands to +-65504 as the half activations do,
 * so the output is the CPU's on clamped values, finite, not inf or NaN; bf16 keeps them (fp32's range). */
static void test_fattn_saturation(void)
{
    CHECK(fattn_case(gpu16, NLPD_DTYPE_F32, 3, 20, 2, 32, 1, 0, 1, 5e-3) == 0);
    CHECK(fattn_case(gpub16, NLPD_DTYPE_F32, 3, 20, 2, 32, 1, 0, 1, 4e-2) == 0);
    if (nlpd_backend_act_dtype(gpu16) == NLPD_DTYPE_F16) /* half operands: 1e5 is inf in fp16, read as 65504 */
        CHECK(fattn_case(gpu16, NLPD_DTYPE_F16, 3, 20, 2, 32, 1, 0, 1, 5e-3) == 0);
}

/* The env switch and the path's limits. The scores of one 2200-token sequence (19 MB) do not fit a 48 MiB arena's
 * 16 MiB of scratch: the cuBLAS path refuses, the fused one (no scores in memory) runs and matches (its first 9
 * keys attended: one key tile per block, cheap under the emulator). head_dim above 128 takes cuBLAS with fp32
 * operands and is refused with half ones. Forcing fused on a fp32 backend, cublas with half operands, or an
 * unknown value is an error that says so. */
static void test_fattn_dispatch(void)
{
    if (strcmp(gpu_name, "cuda")) {
        printf("  (the CPU stand-in has no attention paths to choose)\n");
        return;
    }
    struct nlpd_error err = {0};
    struct nlpd_backend_opts o = {.name = gpu_name, .threads = 1, .arena_bytes = (size_t)48 << 20};
    o.dtype = NLPD_DTYPE_F16;
    struct nlpd_backend *small16 = nlpd_backend_new_opts(&o, &err);
    CHECK(small16 != NULL);
    if (small16) {
        CHECK(fattn_case(small16, NLPD_DTYPE_F32, 1, 2200, 1, 16, 1, 1, 0, 5e-3) == 0);
        setenv("NLPD_CUDA_ATTENTION", "cublas", 1);
        CHECK(fattn_case(small16, NLPD_DTYPE_F32, 1, 2200, 1, 16, 1, 1, 0, 5e-3) == NLPD_ENOMEM);
        CHECK(fattn_case(small16, NLPD_DTYPE_F32, 2, 33, 2, 16, 1, 0, 0, 5e-3) == 0); /* the cuBLAS fp16 path itself */
        unsetenv("NLPD_CUDA_ATTENTION");
    }
    nlpd_backend_free(small16);
    /* head_dim 160: cuBLAS (fast-16F) */
    CHECK(fattn_case(gpu16, NLPD_DTYPE_F32, 2, 20, 2, 160, 1, 0, 0, 5e-3) == 0);
    if (nlpd_backend_act_dtype(gpu16) == NLPD_DTYPE_F16) {
        CHECK(fattn_case(gpu16, NLPD_DTYPE_F16, 2, 20, 2, 160, 1, 0, 0, 5e-3) == NLPD_EINVAL);
        setenv("NLPD_CUDA_ATTENTION", "cublas", 1);
        CHECK(fattn_case(gpu16, NLPD_DTYPE_F16, 2, 20, 2, 16, 1, 0, 0, 5e-3) == NLPD_EINVAL);
        unsetenv("NLPD_CUDA_ATTENTION");
    }
    setenv("NLPD_CUDA_ATTENTION", "fused", 1);
    CHECK(fattn_case(gpu, NLPD_DTYPE_F32, 2, 20, 2, 16, 1, 0, 0, 1e-5) == NLPD_EINVAL);
    CHECK(fattn_case(gpu16, NLPD_DTYPE_F32, 2, 20, 2, 16, 1, 0, 0, 5e-3) == 0);
    setenv("NLPD_CUDA_ATTENTION", "flash", 1);
    CHECK(fattn_case(gpu16, NLPD_DTYPE_F32, 2, 20, 2, 16, 1, 0, 0, 5e-3) == NLPD_EINVAL);
    unsetenv("NLPD_CUDA_ATTENTION");
}

/* ------------------------------------------------------------------ half-precision activations ---- */

/* Ops whose activations are 2-byte elements (a CUDA backend's act_dtype fp16/bf16) against the CPU backend on the
 * same values in fp32: the GPU's inputs are the CPU's rounded to the type, so both compute in fp32 from identical
 * inputs and what differs is one rounding of each stored output, at most u |y| (u = 2^-11 fp16, 2^-8 bf16; the
 * normwise measure divides by |y| + max|y| >= |y|), plus the fp32 differences of the fp32 tests (1e-5). Products
 * add the weights' rounding, bounded as in the file's header (fp16 5e-3, bf16 4e-2). */

static double unit_roundoff(enum nlpd_dtype t)
{
    return t == NLPD_DTYPE_BF16 ? 1.0 / 256 : 1.0 / 2048;
}

static uint16_t h_enc(enum nlpd_dtype t, float v)
{
    return t == NLPD_DTYPE_BF16 ? nlpd_kernels_f32_to_bf16(v) : nlpd_kernels_f32_to_f16(v);
}

static float h_dec(enum nlpd_dtype t, uint16_t h)
{
    return t == NLPD_DTYPE_BF16 ? nlpd_kernels_bf16_to_f32(h) : nlpd_kernels_f16_to_f32(h);
}

/* n random values (scale) rounded to t: fp32 on the CPU side, 2-byte on the GPU side, at the same offset */
static size_t put_half(struct pair *p, enum nlpd_dtype t, size_t n, float scale)
{
    float *f = malloc(n * sizeof *f);
    uint16_t *h = malloc(n * sizeof *h);
    fill(f, n, scale);
    for (size_t i = 0; i < n; i++) {
        h[i] = h_enc(t, f[i]);
        f[i] = h_dec(t, h[i]);
    }
    size_t off = put(p, NULL, n * sizeof *f);
    nlpd_backend_upload(&p->c, off, f, n * sizeof *f);
    nlpd_backend_upload(&p->g, off, h, n * sizeof *h);
    free(f);
    free(h);
    return off;
}

/* The GPU's 2-byte output (t) at off against the CPU's fp32, normwise as compare_out. */
static double compare_half(struct pair *p, size_t off, size_t rows, size_t cols, size_t ld, enum nlpd_dtype t,
                           double tol, const char *what)
{
    size_t n = rows * ld;
    float *c = malloc(n * sizeof *c);
    uint16_t *h = malloc(n * sizeof *h);
    CHECK(nlpd_backend_download(&p->c, off, c, n * sizeof *c) == 0);
    CHECK(nlpd_backend_download(&p->g, off, h, n * sizeof *h) == 0);
    double mx = 0, worst = 0;
    for (size_t r = 0; r < rows; r++)
        for (size_t j = 0; j < cols; j++)
            mx = fmax(mx, fabs(c[r * ld + j]));
    int bad = 0;
    for (size_t r = 0; r < rows; r++)
        for (size_t j = 0; j < cols; j++) {
            double cv = c[r * ld + j], gv = h_dec(t, h[r * ld + j]), d = fabs(cv - gv);
            double rel = d / (fabs(cv) + mx + 1e-30);
            if (!(rel <= tol) && bad++ < 3)
                fprintf(stderr, "  %s [%zu,%zu]: cpu %.9g gpu %.9g (normwise %.3g > %.3g)\n", what, r, j, cv, gv, rel,
                        tol);
            worst = rel != rel ? INFINITY : fmax(worst, rel);
        }
    CHECK(bad == 0);
    free(c);
    free(h);
    return worst;
}

static int has_half_act(struct nlpd_backend *g, enum nlpd_dtype t)
{
    if (nlpd_backend_act_dtype(g) == t)
        return 1;
    printf("  skipped: %s backend without %s activations\n", gpu_name, nlpd_dtype_name(t));
    return 0;
}

static void half_io_elementwise(struct nlpd_backend *g, enum nlpd_dtype t)
{
    if (!has_half_act(g, t))
        return;
    const double tol = unit_roundoff(t) + 1e-5;
    double worst = 0;
    /* bias + activation: x and residual in t, bias fp32 */
    for (size_t i = 0; i < sizeof acts / sizeof acts[0]; i++)
        for (int v = 0; v < 2; v++) {
            struct pair p;
            int rows = 7, cols = 1500, ld = 1503;
            if (pair_init(&p, g, 1 << 18, 0))
                return;
            size_t x = put_half(&p, t, (size_t)rows * ld, 4.0f), b = put_rand(&p, (size_t)cols, 1.0f);
            size_t r = put_half(&p, t, (size_t)rows * ld, 2.0f);
            struct nlpd_op oc = {.kind = NLPD_OP_BIAS_ACT}, og = oc;
            oc.u.bias_act = (struct nlpd_op_bias_act){F(&p.c, x), v ? F(&p.c, b) : NULL, rows,          cols, ld,
                                                      acts[i],    v ? F(&p.c, r) : NULL, NLPD_DTYPE_F32};
            og.u.bias_act = (struct nlpd_op_bias_act){F(&p.g, x), v ? F(&p.g, b) : NULL, rows, cols, ld,
                                                      acts[i],    v ? F(&p.g, r) : NULL, t};
            if (!run2(&p, &oc, &og))
                worst = fmax(worst, compare_half(&p, x, (size_t)rows, (size_t)cols, (size_t)ld, t, tol, "bias_act"));
            pair_free(&p);
        }
    /* layer norm: plain, bias + residual into y, y == x, y == residual (x, residual, y in t) */
    for (int v = 0; v < 4; v++) {
        struct pair p;
        int rows = 23, cols = v == 1 ? 768 : 37;
        if (pair_init(&p, g, 1 << 20, 0))
            return;
        size_t x = put_half(&p, t, (size_t)rows * cols, 3.0f), r = put_half(&p, t, (size_t)rows * cols, 2.0f);
        size_t b = put_rand(&p, (size_t)cols, 1.0f), ga = put_rand(&p, (size_t)cols, 1.0f);
        size_t be = put_rand(&p, (size_t)cols, 1.0f), y = put(&p, NULL, (size_t)rows * cols * 4);
        size_t yo = v == 2 ? x : v == 3 ? r : y;
        int fused = v != 0;
        struct nlpd_op oc = {.kind = NLPD_OP_LAYER_NORM}, og = oc;
        oc.u.layer_norm = (struct nlpd_op_layer_norm){F(&p.c, yo),
                                                      F(&p.c, x),
                                                      fused ? F(&p.c, b) : NULL,
                                                      fused ? F(&p.c, r) : NULL,
                                                      F(&p.c, ga),
                                                      F(&p.c, be),
                                                      rows,
                                                      cols,
                                                      1e-12f,
                                                      NLPD_DTYPE_F32};
        og.u.layer_norm = (struct nlpd_op_layer_norm){F(&p.g, yo),
                                                      F(&p.g, x),
                                                      fused ? F(&p.g, b) : NULL,
                                                      fused ? F(&p.g, r) : NULL,
                                                      F(&p.g, ga),
                                                      F(&p.g, be),
                                                      rows,
                                                      cols,
                                                      1e-12f,
                                                      t};
        if (!run2(&p, &oc, &og))
            worst = fmax(worst, compare_half(&p, yo, (size_t)rows, (size_t)cols, (size_t)cols, t, tol, "layer_norm"));
        pair_free(&p);
    }
    /* embedding (word + type + position, and Marian's scaled word + position) into t */
    for (int v = 0; v < 2; v++) {
        const int T = 21, D = 301, NW = 50, NP = 30, NT = 2;
        int32_t ids[21], pos[21], types[21];
        for (int k = 0; k < T; k++) {
            ids[k] = (k * 7) % NW;
            pos[k] = k % NP;
            types[k] = k & 1;
        }
        struct pair p;
        if (pair_init(&p, g, 1 << 18, 0))
            return;
        size_t w = put_rand(&p, (size_t)NW * D, 1.0f), ps = put_rand(&p, (size_t)NP * D, 1.0f);
        size_t ty = put_rand(&p, (size_t)NT * D, 1.0f), out = put(&p, NULL, (size_t)T * D * 4);
        size_t i0 = put(&p, ids, sizeof ids), i1 = put(&p, pos, sizeof pos), i2 = put(&p, types, sizeof types);
        float scale = v ? 27.712813f : 0.0f;
        struct nlpd_op oc = {.kind = NLPD_OP_EMBED}, og = oc;
        oc.u.embed = (struct nlpd_op_embed){F(&p.c, out),
                                            F(&p.c, w),
                                            F(&p.c, ps),
                                            v ? NULL : F(&p.c, ty),
                                            I(&p.c, i0),
                                            I(&p.c, i1),
                                            I(&p.c, i2),
                                            T,
                                            D,
                                            NW,
                                            NP,
                                            NT,
                                            scale,
                                            NLPD_DTYPE_F32};
        og.u.embed = (struct nlpd_op_embed){F(&p.g, out),
                                            F(&p.g, w),
                                            F(&p.g, ps),
                                            v ? NULL : F(&p.g, ty),
                                            I(&p.g, i0),
                                            I(&p.g, i1),
                                            I(&p.g, i2),
                                            T,
                                            D,
                                            NW,
                                            NP,
                                            NT,
                                            scale,
                                            t};
        if (!run2(&p, &oc, &og))
            worst = fmax(worst, compare_half(&p, out, (size_t)T, (size_t)D, (size_t)D, t, tol, "embed"));
        pair_free(&p);
    }
    printf("  %s activations: bias_act, layer_norm, embed worst normwise %.3g (bound %.3g)\n", nlpd_dtype_name(t),
           worst, tol);
}

/* fp16 stores saturate: an overflow becomes +-65504, not inf; NaN stays NaN (the logits check catches it). bf16
 * has fp32's range: 1e5 stays 1e5 (to 8 bits). */
static void half_saturation(struct nlpd_backend *g, enum nlpd_dtype t)
{
    if (!has_half_act(g, t))
        return;
    struct pair p;
    if (pair_init(&p, g, 4096, 0))
        return;
    const float xs[4] = {60000.0f, -60000.0f, 1.0f, NAN}, bias[4] = {30000.0f, -30000.0f, 0.0f, 0.0f};
    uint16_t hx[4];
    for (int i = 0; i < 4; i++)
        hx[i] = h_enc(t, xs[i]);
    size_t x = put(&p, hx, sizeof hx), b = put(&p, bias, sizeof bias);
    struct nlpd_op op = {.kind = NLPD_OP_BIAS_ACT};
    op.u.bias_act = (struct nlpd_op_bias_act){F(&p.g, x), F(&p.g, b), 1, 4, 4, NLPD_ACT_NONE, NULL, t};
    struct nlpd_error err = {0};
    CHECK(nlpd_backend_run(g, &op, &err) == 0 && nlpd_backend_sync(g, &err) == 0);
    uint16_t out[4];
    CHECK(nlpd_backend_download(&p.g, x, out, sizeof out) == 0);
    float y[4];
    for (int i = 0; i < 4; i++)
        y[i] = h_dec(t, out[i]);
    if (t == NLPD_DTYPE_F16) {
        CHECK(y[0] == 65504.0f && y[1] == -65504.0f);
    } else {
        CHECK(fabs(y[0] - 90000.0) <= 90000.0 / 256 && fabs(y[1] + 90000.0) <= 90000.0 / 256);
    }
    CHECK(y[2] == 1.0f && isnan(y[3]));
    printf("  %s: 60000 + 30000 -> %g, NaN -> %g\n", nlpd_dtype_name(t), (double)y[0], (double)y[3]);
    pair_free(&p);
}

/* MATMUL with a in t (and c in t or fp32), b and bias in a weight buffer: the cuBLASLt epilogues (bias, ReLU, tanh
 * GELU) and the separate pass (exact GELU, tanh, SiLU, no bias), both transposes, padded strides. */
static void half_io_matmul(struct nlpd_backend *g, enum nlpd_dtype t, double tol)
{
    if (!has_half_act(g, t))
        return;
    static const enum nlpd_act mm_acts[] = {NLPD_ACT_NONE, NLPD_ACT_RELU, NLPD_ACT_GELU_TANH, NLPD_ACT_GELU,
                                            NLPD_ACT_TANH};
    static const int shapes[][4] = {{64, 96, 48, 0}, {5, 300, 61, 1}, {33, 70, 48, 1}}; /* m, n, k, trans_b */
    double worst = 0;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
        for (size_t ai = 0; ai < sizeof mm_acts / sizeof mm_acts[0]; ai++)
            for (int v = 0; v < 4; v++) { /* bit 0: bias; bit 1: c in fp32 (a head's output) */
                const int m = shapes[si][0], n = shapes[si][1], k = shapes[si][2], tb = shapes[si][3];
                const int bias = v & 1, c32 = v >> 1, pad = (int)si;
                const size_t lda = (size_t)k + pad, ldb = (size_t)(tb ? k : n) + pad, ldc = (size_t)n + pad;
                const size_t brows = tb ? (size_t)n : (size_t)k;
                struct pair p, w;
                if (pair_init(&p, g, ((size_t)m * lda + (size_t)m * ldc) * 4 + 4 * 256, 0))
                    return;
                if (pair_init(&w, g, (brows * ldb + (size_t)n) * 4 + 4 * 256, 1)) {
                    pair_free(&p);
                    return;
                }
                size_t a = put_half(&p, t, (size_t)m * lda, 1.0f), c = put(&p, NULL, (size_t)m * ldc * 4);
                size_t b = put_rand(&w, brows * ldb, 1.0f), bs = put_rand(&w, (size_t)n, 1.0f);
                struct nlpd_op oc = {.kind = NLPD_OP_MATMUL}, og = oc;
                oc.u.matmul = (struct nlpd_op_matmul){F(&p.c, c),
                                                      F(&p.c, a),
                                                      F(&w.c, b),
                                                      bias ? F(&w.c, bs) : NULL,
                                                      m,
                                                      n,
                                                      k,
                                                      (int)lda,
                                                      (int)ldb,
                                                      (int)ldc,
                                                      tb,
                                                      mm_acts[ai],
                                                      NLPD_DTYPE_F32,
                                                      NLPD_DTYPE_F32};
                og.u.matmul = (struct nlpd_op_matmul){F(&p.g, c), F(&p.g, a),
                                                      F(&w.g, b), bias ? F(&w.g, bs) : NULL,
                                                      m,          n,
                                                      k,          (int)lda,
                                                      (int)ldb,   (int)ldc,
                                                      tb,         mm_acts[ai],
                                                      t,          c32 ? NLPD_DTYPE_F32 : t};
                char what[128];
                snprintf(what, sizeof what, "half matmul %dx%dx%d tb%d act%d bias%d c%s", m, n, k, tb, (int)mm_acts[ai],
                         bias, c32 ? "fp32" : nlpd_dtype_name(t));
                if (!run2(&p, &oc, &og))
                    worst = fmax(worst, c32 ? compare_out(&p, c, (size_t)m, (size_t)n, ldc, tol, what)
                                            : compare_half(&p, c, (size_t)m, (size_t)n, ldc, t, tol, what));
                pair_free(&w);
                pair_free(&p);
            }
    printf("  %s activations: matmul worst normwise %.3g (bound %.3g)\n", nlpd_dtype_name(t), worst, tol);
    /* a half operand with b outside a weight buffer has no half b to pair with: a clear error */
    struct pair p;
    if (pair_init(&p, g, 1 << 16, 0))
        return;
    size_t a = put_half(&p, t, 64, 1.0f), b = put_rand(&p, 64, 1.0f), c = put(&p, NULL, 64 * 4);
    struct nlpd_op op = {.kind = NLPD_OP_MATMUL};
    op.u.matmul =
        (struct nlpd_op_matmul){F(&p.g, c), F(&p.g, a), F(&p.g, b), NULL, 8, 8, 8, 8, 8, 8, 0, NLPD_ACT_NONE, t, t};
    struct nlpd_error err = {0};
    CHECK(nlpd_backend_run(g, &op, &err) == NLPD_EINVAL);
    CHECK_STR_CONTAINS(err.message, "weight buffer");
    pair_free(&p);
}

/* A backend created under env (name=value; NULL value: unset). */
static struct nlpd_backend *backend_with_env(const char *name, const char *value, enum nlpd_dtype dt,
                                             struct nlpd_error *err)
{
    if (value)
        setenv(name, value, 1);
    struct nlpd_backend_opts o = {.name = gpu_name, .threads = 1, .dtype = dt};
    struct nlpd_backend *be = nlpd_backend_new_opts(&o, err);
    unsetenv(name);
    return be;
}

static void test_half_activations(void)
{
    for (int bf = 0; bf < 2; bf++) {
        enum nlpd_dtype t = bf ? NLPD_DTYPE_BF16 : NLPD_DTYPE_F16;
        struct nlpd_backend *g = bf ? gpub16 : gpu16;
        half_io_elementwise(g, t);
        half_saturation(g, t);
        half_io_matmul(g, t, bf ? 4e-2 : 5e-3); /* default NLPD_CUDA_EPILOGUE=lt */
        struct nlpd_error err = {0};
        struct nlpd_backend *sep = backend_with_env("NLPD_CUDA_EPILOGUE", "separate", t, &err);
        CHECK(sep != NULL);
        if (sep) {
            if (!strcmp(gpu_name, "cuda"))
                CHECK_STR_CONTAINS(nlpd_backend_reason(sep), "separate bias+act");
            half_io_matmul(sep, t, bf ? 4e-2 : 5e-3);
        }
        nlpd_backend_free(sep);
    }
    if (strcmp(gpu_name, "cuda"))
        return;
    /* the switches: fp32 activations (half operands then refused), and a bad value is an error at creation */
    struct nlpd_error err = {0};
    struct nlpd_backend *f32 = backend_with_env("NLPD_CUDA_ACT", "fp32", NLPD_DTYPE_F16, &err);
    CHECK(f32 && nlpd_backend_act_dtype(f32) == NLPD_DTYPE_F32 && nlpd_backend_dtype(f32) == NLPD_DTYPE_F16);
    CHECK_STR_CONTAINS(f32 ? nlpd_backend_reason(f32) : NULL, "NLPD_CUDA_ACT=fp32");
    nlpd_backend_free(f32);
    CHECK(nlpd_backend_act_dtype(gpu16) == NLPD_DTYPE_F16 && nlpd_backend_act_dtype(gpub16) == NLPD_DTYPE_BF16);
    CHECK(nlpd_backend_act_dtype(gpu) == NLPD_DTYPE_F32); /* fp32 weights: fp32 activations */
    struct nlpd_backend *bad = backend_with_env("NLPD_CUDA_ACT", "fp8", NLPD_DTYPE_F16, &err);
    CHECK(bad == NULL);
    CHECK_STR_CONTAINS(err.message, "NLPD_CUDA_ACT must be half or fp32");
    bad = backend_with_env("NLPD_CUDA_EPILOGUE", "fused", NLPD_DTYPE_F16, &err);
    CHECK(bad == NULL);
    CHECK_STR_CONTAINS(err.message, "NLPD_CUDA_EPILOGUE must be lt or separate");
    /* dtype auto on CUDA: fp16 weights and activations */
    struct nlpd_backend *au = backend_with_env("NLPD_CUDA_ACT", NULL, NLPD_DTYPE_AUTO, &err);
    CHECK(au && nlpd_backend_dtype(au) == NLPD_DTYPE_F16 && nlpd_backend_act_dtype(au) == NLPD_DTYPE_F16);
    nlpd_backend_free(au);
}

/* ------------------------------------------------ the encoder with half-precision activations ---- */

/* Whether the backend's ATTENTION takes half io (the fused kernel of kernels/cuda/fattn.cu; before it, attention
 * reads the 2-byte elements as floats): one small case against the CPU. Garbage and a correct result are far
 * apart, so the threshold (0.1 normwise) only separates those two; fattn's own tests bound the precision. */
static int attention_half_io(struct nlpd_backend *g, enum nlpd_dtype t)
{
    const int S = 6, NH = 2, D = 8, H = NH * D;
    struct pair p;
    if (pair_init(&p, g, 1 << 16, 0))
        return 0;
    size_t qkv = put_half(&p, t, (size_t)S * 3 * H, 2.0f), out = put(&p, NULL, (size_t)S * H * 4);
    struct nlpd_op oc = {.kind = NLPD_OP_ATTENTION}, og = oc;
    oc.u.attention = (struct nlpd_op_attention){
        F(&p.c, out), F(&p.c, qkv), NULL, 1, S, NH, D, 3 * H, H, 1.0f / sqrtf((float)D), NULL, 0, NLPD_DTYPE_F32};
    og.u.attention = oc.u.attention;
    og.u.attention.out = F(&p.g, out);
    og.u.attention.qkv = F(&p.g, qkv);
    og.u.attention.io_type = t;
    struct nlpd_error e1 = {0}, e2 = {0};
    int ok =
        nlpd_backend_run(cpu, &oc, &e1) == 0 && nlpd_backend_run(g, &og, &e2) == 0 && nlpd_backend_sync(g, &e2) == 0;
    if (ok) {
        float c[6 * 16];
        uint16_t h[6 * 16];
        ok = nlpd_backend_download(&p.c, out, c, sizeof c) == 0 && nlpd_backend_download(&p.g, out, h, sizeof h) == 0;
        double mx = 0;
        for (int i = 0; i < S * H; i++)
            mx = fmax(mx, fabs(c[i]));
        for (int i = 0; ok && i < S * H; i++)
            ok = fabs(c[i] - h_dec(t, h[i])) <= 0.1 * (fabs(c[i]) + mx);
    }
    pair_free(&p);
    return ok;
}

/* The golden batch of FIX name through the encoder on `backend` in `dtype`: logits (rows x NL) and the last hidden
 * state (T x H), malloc'd; 0, or -1 with the message printed. */
static int encoder_batch(const char *name, const char *backend, const char *dtype, float **logits, float **hidden,
                         size_t *n_logits, size_t *n_hidden, int *layers)
{
    char dir[256], path[300];
    snprintf(dir, sizeof dir, FIX "%s", name);
    snprintf(path, sizeof path, "%s/golden.json", dir);
    json_error_t je;
    json_t *g = json_load_file(path, 0, &je);
    struct nlpd_error err = {0};
    struct nlpd_encoder_opts opts = {.backend = backend, .threads = 1, .dtype = dtype};
    struct nlpd_encoder *enc = g ? nlpd_encoder_load(dir, &opts, &err) : NULL;
    int rc = -1;
    if (enc) {
        json_t *batch = json_object_get(g, "batch");
        int B, S, b2, s2;
        int32_t *ids = ints2d(json_object_get(batch, "input_ids"), &B, &S);
        int32_t *mask = ints2d(json_object_get(batch, "attention_mask"), &b2, &s2);
        int32_t *types = json_object_get(batch, "token_type_ids")
                             ? ints2d(json_object_get(batch, "token_type_ids"), &b2, &s2)
                             : NULL;
        int token = nlpd_encoder_task(enc) == NLPD_HF_TASK_TOKEN_CLS;
        *n_logits = (token ? (size_t)B * S : (size_t)B) * (size_t)nlpd_encoder_num_labels(enc);
        *n_hidden = (size_t)B * S * (size_t)nlpd_encoder_hidden_size(enc);
        *layers = nlpd_encoder_config(enc)->num_layers;
        *logits = calloc(*n_logits, sizeof(float));
        *hidden = calloc(*n_hidden, sizeof(float));
        struct nlpd_encoder_ws *ws = nlpd_encoder_ws_new(enc, B, S, &err);
        struct nlpd_encoder_input in = {B, S, ids, mask, types};
        struct nlpd_encoder_output out = {.logits = *logits, .hidden = *hidden};
        rc = ws && nlpd_encoder_forward(enc, ws, &in, &out, &err) == 0 ? 0 : -1;
        nlpd_encoder_ws_free(ws);
        free(ids);
        free(mask);
        free(types);
    }
    if (rc)
        fprintf(stderr, "%s (%s, %s): %s\n", name, backend, dtype, g ? err.message : je.text);
    nlpd_encoder_free(enc);
    json_decref(g);
    return rc;
}

/* normwise max |a - b| / (|b| + max|b|) */
static double normwise(const float *a, const float *b, size_t n)
{
    double mx = 0, worst = 0;
    for (size_t i = 0; i < n; i++)
        mx = fmax(mx, fabs(b[i]));
    for (size_t i = 0; i < n; i++) {
        double r = fabs((double)a[i] - b[i]) / (fabs(b[i]) + mx + 1e-30);
        worst = r != r ? INFINITY : fmax(worst, r);
    }
    return worst;
}

/* The hf-tiny encoders with fp16 / bf16 activations (the default of those dtypes) against the CPU backend in fp32:
 * logits and the last hidden state (downloaded in 2-byte elements and widened on the host). Bound, a first-order
 * estimate: a forward of L layers stores or rounds R = 4 + 11 L quantities in the type (embedding and its layer
 * norm; per layer four products' weights and outputs, attention's inputs and output, two layer norms; the two head
 * weights), each a relative error of at most u; with layer norms renormalising, each stage passes an error on
 * with a gain taken as <= 1 and the products add about u normwise each (file header), so 2 R u normwise. It is not
 * a proof for every model: one whose layers amplify errors more needs a wider bound. */
static void test_models_half_act(void)
{
    for (int bf = 0; bf < 2; bf++) {
        const enum nlpd_dtype t = bf ? NLPD_DTYPE_BF16 : NLPD_DTYPE_F16;
        if (!has_half_act(bf ? gpub16 : gpu16, t))
            continue;
        /* a backend keeping half activations must run attention on them (fattn.cu): a refusal fails, not skips */
        CHECK(attention_half_io(bf ? gpub16 : gpu16, t));
        for (size_t i = 0; i < sizeof models / sizeof models[0]; i++) {
            float *lc = NULL, *hc = NULL, *lg = NULL, *hg = NULL;
            size_t nl, nh, nl2, nh2;
            int L = 0;
            if (encoder_batch(models[i], "cpu", "fp32", &lc, &hc, &nl, &nh, &L) == 0 &&
                encoder_batch(models[i], gpu_name, nlpd_dtype_name(t), &lg, &hg, &nl2, &nh2, &L) == 0) {
                CHECK(nl == nl2 && nh == nh2);
                const double tol = 2.0 * (4 + 11 * L) * unit_roundoff(t);
                double dl = normwise(lg, lc, nl), dh = normwise(hg, hc, nh);
                printf("  %-20s %s activations: logits normwise %.3g, hidden %.3g (bound %.3g)\n", models[i],
                       nlpd_dtype_name(t), dl, dh, tol);
                CHECK(dl <= tol && dh <= tol);
            } else {
                CHECK(0);
            }
            free(lc);
            free(hc);
            free(lg);
            free(hg);
        }
    }
}

int main(void)
{
    if (!getenv("NLPD_LIBDIR"))
        setenv("NLPD_LIBDIR", "build", 0);
    RUN(test_selection);
    const char *self = getenv("NLPD_CUDA_TEST_BACKEND");
    if (self && !strcmp(self, "cpu")) {
        gpu_name = "cpu";
        printf("NLPD_CUDA_TEST_BACKEND=cpu: the CUDA tests against a second CPU backend (a check of the test)\n");
    }
    struct nlpd_error err = {0};
    struct nlpd_backend_opts o = {.name = gpu_name, .threads = 1};
    setenv("NLPD_CUDA_MATH", "strict", 1); /* the fp32 comparisons below are IEEE fp32 against IEEE fp32 */
    cpu = nlpd_backend_new("cpu", 1, &err);
    gpu = nlpd_backend_new_opts(&o, &err);
    if (!gpu) {
        snprintf(skip_why, sizeof skip_why, "%s", err.message);
        printf("skipped: no CUDA device/driver (%s)\n", skip_why);
        nlpd_backend_free(cpu);
        return TEST_REPORT();
    }
    printf("cuda: %s\n", nlpd_backend_reason(gpu));
    o.dtype = NLPD_DTYPE_F16;
    gpu16 = nlpd_backend_new_opts(&o, &err);
    o.dtype = NLPD_DTYPE_BF16;
    gpub16 = nlpd_backend_new_opts(&o, &err);
    CHECK(gpu16 && gpub16);
    RUN(test_matmul);
    RUN(test_tf32);
    RUN(test_bias_act);
    RUN(test_layer_norm);
    RUN(test_softmax);
    RUN(test_attention);
    RUN(test_attention_kv);
    RUN(test_gather_rows);
    RUN(test_embed);
    RUN(test_bad_indices);
    RUN(test_transfers);
    RUN(test_upload_reuse);
    RUN(test_threads);
    RUN(test_topk);
    if (gpu16 && gpub16) {
        if (!strcmp(gpu_name, "cuda"))
            RUN(test_oom);
        RUN(test_fp16);
        RUN(test_bf16);
        RUN(test_half_activations);
    }
    RUN(test_small_arena);
    if (gpu16 && gpub16) {
        RUN(test_fattn_fp16);
        RUN(test_fattn_bf16);
        RUN(test_fattn_kv);
        RUN(test_fattn_saturation);
        RUN(test_fattn_dispatch);
    }
    RUN(test_attention_rel);
    /* NLPD_CUDA_OPS_ONLY=1: the ops alone (scripts/gpu-check.sh runs them under compute-sanitizer) */
    const char *ops_only = getenv("NLPD_CUDA_OPS_ONLY");
    if (!ops_only || strcmp(ops_only, "1")) {
        RUN(test_models);
        RUN(test_deberta_models);
        if (gpu16 && gpub16)
            RUN(test_models_half_act);
    }
    nlpd_backend_free(gpu);
    nlpd_backend_free(gpu16);
    nlpd_backend_free(gpub16);
    nlpd_backend_free(cpu);
    return TEST_REPORT();
}
