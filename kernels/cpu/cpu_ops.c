/* CPU ops of the transformer encoder: OpenBLAS sgemm for the matrix products, and element-wise kernels
 * (activations, layer norm, softmax, embedding gather) in scalar C plus AVX2+FMA variants picked at run time
 * with __builtin_cpu_supports, so the binary needs no -march flag. */
#include "cpu_ops.h"

#include <cblas.h>
#include <float.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define HAVE_X86 1
#include <immintrin.h>
#else
#define HAVE_X86 0
#endif

static int simd_avx2 = -1;

void nlpd_cpu_simd_init(int force_scalar)
{
    int ok = 0;
#if HAVE_X86
    __builtin_cpu_init();
    ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    const char *env = getenv("NLPD_KERNELS_SIMD");
    if (force_scalar || (env && !strcmp(env, "scalar")))
        ok = 0;
    simd_avx2 = ok;
}

int nlpd_cpu_simd_avx2(void)
{
    if (simd_avx2 < 0)
        nlpd_cpu_simd_init(0);
    return simd_avx2;
}

const char *nlpd_kernels_cpu_simd(void)
{
    return nlpd_cpu_simd_avx2() ? "avx2+fma" : "scalar";
}

/* ---------------------------------------------------------------- scalar ---- */

static inline float gelu_tanh1(float x)
{
    const float k = 0.7978845608028654f; /* sqrt(2/pi) */
    return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
}

static void act_scalar(float *x, size_t n, enum nlpd_act act)
{
    switch (act) {
    case NLPD_ACT_NONE: break;
    case NLPD_ACT_GELU:
        for (size_t i = 0; i < n; i++)
            x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
        break;
    case NLPD_ACT_GELU_TANH:
        for (size_t i = 0; i < n; i++)
            x[i] = gelu_tanh1(x[i]);
        break;
    case NLPD_ACT_RELU:
        for (size_t i = 0; i < n; i++)
            x[i] = x[i] > 0.0f ? x[i] : 0.0f;
        break;
    case NLPD_ACT_SILU:
        for (size_t i = 0; i < n; i++)
            x[i] = x[i] / (1.0f + expf(-x[i]));
        break;
    case NLPD_ACT_TANH:
        for (size_t i = 0; i < n; i++)
            x[i] = tanhf(x[i]);
        break;
    }
}

static void bias_act_row_scalar(float *x, const float *bias, int n, enum nlpd_act act)
{
    if (bias)
        for (int i = 0; i < n; i++)
            x[i] += bias[i];
    act_scalar(x, (size_t)n, act);
}

static void layer_norm_row_scalar(float *y, const float *x, const float *bias, const float *res, const float *g,
                                  const float *b, int n, float eps)
{
    float sum = 0.0f;
    for (int i = 0; i < n; i++) {
        float v = x[i];
        if (bias)
            v += bias[i];
        if (res)
            v += res[i];
        y[i] = v;
        sum += v;
    }
    float mean = sum / (float)n, var = 0.0f;
    for (int i = 0; i < n; i++) {
        float d = y[i] - mean;
        var += d * d;
    }
    float rstd = 1.0f / sqrtf(var / (float)n + eps);
    for (int i = 0; i < n; i++)
        y[i] = (y[i] - mean) * rstd * g[i] + b[i];
}

static void softmax_row_scalar(float *x, int n)
{
    float mx = -FLT_MAX, sum = 0.0f;
    for (int i = 0; i < n; i++)
        mx = x[i] > mx ? x[i] : mx;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    float inv = 1.0f / sum;
    for (int i = 0; i < n; i++)
        x[i] *= inv;
}

/* ------------------------------------------------------------------ AVX2 ---- */
#if HAVE_X86
#define AVX2 __attribute__((target("avx2,fma")))

static AVX2 inline float hsum8(__m256 v)
{
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}

static AVX2 inline float hmax8(__m256 v)
{
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_max_ps(lo, hi);
    lo = _mm_max_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_max_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}

/* Cephes-style expf: 2^n * p(r), |r| <= ln2/2; about 1 ulp. Inputs below -87.3 give 0 (the masked keys). */
static AVX2 inline __m256 exp8(__m256 x)
{
    const __m256 hi = _mm256_set1_ps(88.3762626647949f), lo = _mm256_set1_ps(-87.3365478515625f);
    __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500E-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507E-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073E-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894E-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459E-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201E-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    p = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
    return _mm256_andnot_ps(under, p);
}

/* erf as a rational function of x on [-4, 4] (the approximation Eigen and XLA use); a few ulp. */
static AVX2 inline __m256 erf8(__m256 x)
{
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-4.0f)), _mm256_set1_ps(4.0f));
    __m256 x2 = _mm256_mul_ps(x, x);
    __m256 p = _mm256_set1_ps(-2.72614225801306e-10f);
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(2.77068142495902e-08f));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-2.10102402082508e-06f));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-5.69250639462346e-05f));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-7.34990630326855e-04f));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-2.95459980854025e-03f));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-1.60960333262415e-02f));
    p = _mm256_mul_ps(p, x);
    __m256 q = _mm256_set1_ps(-1.45660718464996e-05f);
    q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(-2.13374055278905e-04f));
    q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(-1.68282697438203e-03f));
    q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(-7.37332916720468e-03f));
    q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(-1.42647390514189e-02f));
    return _mm256_div_ps(p, q);
}

/* tanh(y) = sign(y) (1 - 2 / (exp(2|y|) + 1)); absolute error about 1e-7. */
static AVX2 inline __m256 tanh8(__m256 y)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 s = _mm256_and_ps(y, sign), a = _mm256_andnot_ps(sign, y);
    __m256 e = exp8(_mm256_min_ps(_mm256_add_ps(a, a), _mm256_set1_ps(88.0f)));
    __m256 t = _mm256_sub_ps(_mm256_set1_ps(1.0f),
                             _mm256_div_ps(_mm256_set1_ps(2.0f), _mm256_add_ps(e, _mm256_set1_ps(1.0f))));
    return _mm256_or_ps(t, s);
}

static AVX2 inline __m256 act8(__m256 v, enum nlpd_act act)
{
    const __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f);
    switch (act) {
    case NLPD_ACT_NONE: return v;
    case NLPD_ACT_GELU:
        return _mm256_mul_ps(_mm256_mul_ps(half, v),
                             _mm256_add_ps(one, erf8(_mm256_mul_ps(v, _mm256_set1_ps(0.70710678118654752f)))));
    case NLPD_ACT_GELU_TANH: {
        __m256 v3 = _mm256_mul_ps(_mm256_mul_ps(v, v), v);
        __m256 in =
            _mm256_mul_ps(_mm256_set1_ps(0.7978845608028654f), _mm256_fmadd_ps(_mm256_set1_ps(0.044715f), v3, v));
        return _mm256_mul_ps(_mm256_mul_ps(half, v), _mm256_add_ps(one, tanh8(in)));
    }
    case NLPD_ACT_RELU: return _mm256_max_ps(v, _mm256_setzero_ps());
    case NLPD_ACT_SILU: return _mm256_div_ps(v, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), v))));
    case NLPD_ACT_TANH: return tanh8(v);
    }
    return v;
}

static AVX2 void bias_act_row_avx2(float *x, const float *bias, int n, enum nlpd_act act)
{
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        if (bias)
            v = _mm256_add_ps(v, _mm256_loadu_ps(bias + i));
        _mm256_storeu_ps(x + i, act8(v, act));
    }
    if (i < n)
        bias_act_row_scalar(x + i, bias ? bias + i : NULL, n - i, act);
}

static AVX2 void act_avx2(float *x, size_t n, enum nlpd_act act)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, act8(_mm256_loadu_ps(x + i), act));
    if (i < n)
        act_scalar(x + i, n - i, act);
}

static AVX2 void layer_norm_row_avx2(float *y, const float *x, const float *bias, const float *res, const float *g,
                                     const float *b, int n, float eps)
{
    __m256 acc = _mm256_setzero_ps();
    float sum = 0.0f;
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        if (bias)
            v = _mm256_add_ps(v, _mm256_loadu_ps(bias + i));
        if (res)
            v = _mm256_add_ps(v, _mm256_loadu_ps(res + i));
        _mm256_storeu_ps(y + i, v);
        acc = _mm256_add_ps(acc, v);
    }
    for (; i < n; i++) {
        float v = x[i] + (bias ? bias[i] : 0.0f) + (res ? res[i] : 0.0f);
        y[i] = v;
        sum += v;
    }
    float mean = (sum + hsum8(acc)) / (float)n;
    __m256 vm = _mm256_set1_ps(mean);
    acc = _mm256_setzero_ps();
    float var = 0.0f;
    for (i = 0; i + 8 <= n; i += 8) {
        __m256 d = _mm256_sub_ps(_mm256_loadu_ps(y + i), vm);
        acc = _mm256_fmadd_ps(d, d, acc);
    }
    for (; i < n; i++)
        var += (y[i] - mean) * (y[i] - mean);
    float rstd = 1.0f / sqrtf((var + hsum8(acc)) / (float)n + eps);
    __m256 vr = _mm256_set1_ps(rstd);
    for (i = 0; i + 8 <= n; i += 8) {
        __m256 d = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(y + i), vm), vr);
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(d, _mm256_loadu_ps(g + i), _mm256_loadu_ps(b + i)));
    }
    for (; i < n; i++)
        y[i] = (y[i] - mean) * rstd * g[i] + b[i];
}

static AVX2 void softmax_row_avx2(float *x, int n)
{
    __m256 vmx = _mm256_set1_ps(-FLT_MAX);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        vmx = _mm256_max_ps(vmx, _mm256_loadu_ps(x + i));
    float mx = hmax8(vmx);
    for (; i < n; i++)
        mx = x[i] > mx ? x[i] : mx;
    vmx = _mm256_set1_ps(mx);
    __m256 acc = _mm256_setzero_ps();
    float sum = 0.0f;
    for (i = 0; i + 8 <= n; i += 8) {
        __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmx));
        _mm256_storeu_ps(x + i, e);
        acc = _mm256_add_ps(acc, e);
    }
    for (; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    float inv = 1.0f / (sum + hsum8(acc));
    __m256 vi = _mm256_set1_ps(inv);
    for (i = 0; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), vi));
    for (; i < n; i++)
        x[i] *= inv;
}

static AVX2 float logsumexp_avx2(const float *x, int n)
{
    __m256 vmx = _mm256_set1_ps(-INFINITY);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        vmx = _mm256_max_ps(vmx, _mm256_loadu_ps(x + i));
    float mx = hmax8(vmx);
    for (; i < n; i++)
        mx = x[i] > mx ? x[i] : mx;
    if (mx == -INFINITY || mx != mx)
        return mx;
    vmx = _mm256_set1_ps(mx);
    __m256 acc = _mm256_setzero_ps();
    for (i = 0; i + 8 <= n; i += 8)
        acc = _mm256_add_ps(acc, exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmx)));
    double sum = hsum8(acc);
    for (; i < n; i++)
        sum += expf(x[i] - mx);
    return mx + (float)log(sum);
}
#endif

/* --------------------------------------------------------------- dispatch ---- */

float nlpd_kernels_logsumexp(const float *x, int n)
{
#if HAVE_X86
    if (nlpd_cpu_simd_avx2())
        return logsumexp_avx2(x, n);
#endif
    float mx = -INFINITY;
    for (int i = 0; i < n; i++)
        mx = x[i] > mx ? x[i] : mx;
    if (mx == -INFINITY)
        return mx;
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += expf(x[i] - mx);
    return mx + (float)log(sum);
}

void nlpd_cpu_act(float *x, size_t n, enum nlpd_act act)
{
#if HAVE_X86
    if (nlpd_cpu_simd_avx2()) {
        act_avx2(x, n, act);
        return;
    }
#endif
    act_scalar(x, n, act);
}

static void bias_act_row(float *x, const float *bias, int n, enum nlpd_act act)
{
#if HAVE_X86
    if (simd_avx2) {
        bias_act_row_avx2(x, bias, n, act);
        return;
    }
#endif
    bias_act_row_scalar(x, bias, n, act);
}

static void softmax_row(float *x, int n)
{
#if HAVE_X86
    if (simd_avx2) {
        softmax_row_avx2(x, n);
        return;
    }
#endif
    softmax_row_scalar(x, n);
}

/* OpenMP threads for a row-wise pass over rows x cols floats (see team() in cpu_quant.c). */
static int row_team(int rows, int cols)
{
    if ((size_t)rows * (size_t)cols < ((size_t)1 << 19) || rows < 2)
        return 1;
    int t = omp_get_max_threads();
    return t < rows ? t : rows;
}

void nlpd_cpu_bias_act(const struct nlpd_op_bias_act *p)
{
    nlpd_cpu_simd_avx2();
    if (!p->bias && p->act == NLPD_ACT_NONE)
        return;
#pragma omp parallel for num_threads(row_team(p->rows, p->cols)) schedule(static)
    for (int r = 0; r < p->rows; r++)
        bias_act_row(p->x + (size_t)r * p->ld, p->bias, p->cols, p->act);
}

void nlpd_cpu_matmul(const struct nlpd_op_matmul *p)
{
    if (p->m <= 0 || p->n <= 0)
        return;
    if (p->k <= 0) {
        for (int r = 0; r < p->m; r++)
            memset(p->c + (size_t)r * p->ldc, 0, (size_t)p->n * sizeof(float));
    } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, p->trans_b ? CblasTrans : CblasNoTrans, p->m, p->n, p->k, 1.0f, p->a,
                    p->lda, p->b, p->ldb, 0.0f, p->c, p->ldc);
    }
    struct nlpd_op_bias_act ba = {p->c, p->bias, p->m, p->n, p->ldc, p->act};
    nlpd_cpu_bias_act(&ba);
}

void nlpd_cpu_layer_norm(const struct nlpd_op_layer_norm *p)
{
    int avx = nlpd_cpu_simd_avx2();
    (void)avx;
#pragma omp parallel for num_threads(row_team(p->rows, p->cols)) schedule(static)
    for (int r = 0; r < p->rows; r++) {
        size_t o = (size_t)r * p->cols;
        const float *bias = p->bias, *res = p->residual ? p->residual + o : NULL;
#if HAVE_X86
        if (avx) {
            layer_norm_row_avx2(p->y + o, p->x + o, bias, res, p->gamma, p->beta, p->cols, p->eps);
            continue;
        }
#endif
        layer_norm_row_scalar(p->y + o, p->x + o, bias, res, p->gamma, p->beta, p->cols, p->eps);
    }
}

void nlpd_cpu_softmax(const struct nlpd_op_softmax *p)
{
    nlpd_cpu_simd_avx2();
    for (int r = 0; r < p->rows; r++)
        softmax_row(p->x + (size_t)r * p->ld, p->cols);
}

void nlpd_cpu_softmax_masked(float *x, int rows, int cols, const int32_t *mask)
{
    nlpd_cpu_simd_avx2();
#pragma omp parallel for num_threads(row_team(rows, cols)) schedule(static)
    for (int r = 0; r < rows; r++) {
        float *row = x + (size_t)r * cols;
        if (mask)
            for (int j = 0; j < cols; j++)
                if (!mask[j])
                    row[j] += -FLT_MAX;
        softmax_row(row, cols);
    }
}

void nlpd_cpu_attention(const struct nlpd_op_attention *p, float *scratch)
{
    nlpd_cpu_simd_avx2();
    const int S = p->seq, D = p->head_dim, H = p->heads * p->head_dim;
    for (int b = 0; b < p->batch; b++) {
        const int32_t *mask = p->mask ? p->mask + (size_t)b * S : NULL;
        /* Keys past the last attended one contribute exp(-FLT_MAX - max) = 0 exactly: skip them. */
        int kv = S;
        if (mask) {
            while (kv > 0 && !mask[kv - 1])
                kv--;
            if (kv == 0)
                kv = S; /* nothing attended: uniform over every key, as transformers does */
        }
        const float *base = p->qkv + (size_t)b * S * p->ld_qkv;
        for (int h = 0; h < p->heads; h++) {
            const float *q = base + (size_t)h * D, *k = base + H + (size_t)h * D, *v = base + 2 * H + (size_t)h * D;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, S, kv, D, p->scale, q, p->ld_qkv, k, p->ld_qkv, 0.0f,
                        scratch, kv);
            for (int i = 0; i < S; i++) {
                float *row = scratch + (size_t)i * kv;
                if (mask)
                    for (int j = 0; j < kv; j++)
                        if (!mask[j])
                            row[j] += -FLT_MAX;
                softmax_row(row, kv);
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, S, D, kv, 1.0f, scratch, kv, v, p->ld_qkv, 0.0f,
                        p->out + (size_t)b * S * p->ld_out + (size_t)h * D, p->ld_out);
        }
    }
}

void nlpd_cpu_attention_kv(const struct nlpd_op_attention_kv *p, float *scratch)
{
    nlpd_cpu_simd_avx2();
    const int Q = p->q_len, D = p->head_dim;
    for (int b = 0; b < p->batch; b++) {
        const size_t j = p->kv_map ? (size_t)p->kv_map[b] : (size_t)b;
        const int32_t *mask = p->mask ? p->mask + j * (size_t)p->mask_ld : NULL;
        int kv = p->kv_len; /* keys past the last attended one contribute exactly 0: skip them */
        if (mask) {
            while (kv > 0 && !mask[kv - 1])
                kv--;
            if (kv == 0)
                kv = p->kv_len; /* nothing attended: uniform over every key, as transformers does */
        }
        if (p->causal && p->q_pos0 + Q < kv)
            kv = p->q_pos0 + Q;
        if (kv <= 0)
            kv = 1;
        const size_t kv0 = j * p->kv_batch_stride;
        for (int h = 0; h < p->heads; h++) {
            const float *q = p->q + (size_t)b * Q * p->ld_q + (size_t)h * D;
            const float *k = p->k + kv0 * p->ld_kv + (size_t)h * D, *v = p->v + kv0 * p->ld_kv + (size_t)h * D;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Q, kv, D, p->scale, q, p->ld_q, k, p->ld_kv, 0.0f,
                        scratch, kv);
            for (int i = 0; i < Q; i++) {
                float *row = scratch + (size_t)i * kv;
                int n = kv;
                if (p->causal && p->q_pos0 + i + 1 < n)
                    n = p->q_pos0 + i + 1;
                if (mask)
                    for (int t = 0; t < n; t++)
                        if (!mask[t])
                            row[t] += -FLT_MAX;
                softmax_row(row, n);
                for (int t = n; t < kv; t++)
                    row[t] = 0.0f;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Q, D, kv, 1.0f, scratch, kv, v, p->ld_kv, 0.0f,
                        p->out + (size_t)b * Q * p->ld_out + (size_t)h * D, p->ld_out);
        }
    }
}

int nlpd_cpu_gather_rows(const struct nlpd_op_gather_rows *p, struct nlpd_error *err)
{
    for (int i = 0; i < p->rows; i++)
        if (p->idx[i] < 0 || p->idx[i] >= p->src_rows)
            return nlpd_error_set(err, NLPD_EINVAL, 0, "gather: row index %d out of range (%d rows)", p->idx[i],
                                  p->src_rows);
    for (int i = 0; i < p->rows; i++)
        memcpy(p->dst + (size_t)i * p->ld_dst, p->src + (size_t)p->idx[i] * p->ld_src, (size_t)p->cols * sizeof(float));
    return 0;
}

int nlpd_cpu_embed(const struct nlpd_op_embed *p, struct nlpd_error *err)
{
    const int D = p->dim;
    for (int t = 0; t < p->tokens; t++) {
        int32_t id = p->ids[t];
        if (id < 0 || id >= p->n_word)
            return nlpd_error_set(err, NLPD_EINVAL, 0, "token %d: id %d out of range (vocabulary of %d)", t, id,
                                  p->n_word);
        const float *w = p->word + (size_t)id * D, *ps = NULL, *ty = NULL;
        if (p->pos) {
            int32_t pi = p->pos_ids[t];
            if (pi < 0 || pi >= p->n_pos)
                return nlpd_error_set(err, NLPD_EINVAL, 0,
                                      "token %d: position %d out of range (max_position_embeddings %d)", t, pi,
                                      p->n_pos);
            ps = p->pos + (size_t)pi * D;
        }
        if (p->type) {
            int32_t ti = p->type_ids ? p->type_ids[t] : 0;
            if (ti < 0 || ti >= p->n_type)
                return nlpd_error_set(err, NLPD_EINVAL, 0, "token %d: token type %d out of range (type_vocab_size %d)",
                                      t, ti, p->n_type);
            ty = p->type + (size_t)ti * D;
        }
        float *o = p->out + (size_t)t * D;
        if (p->word_scale != 0.0f && p->word_scale != 1.0f) { /* Marian: embed(ids) * scale + position */
            const float sc = p->word_scale;
            if (ps)
                for (int i = 0; i < D; i++)
                    o[i] = w[i] * sc + ps[i];
            else
                for (int i = 0; i < D; i++)
                    o[i] = w[i] * sc;
            if (ty)
                for (int i = 0; i < D; i++)
                    o[i] += ty[i];
            continue;
        }
        /* Same summation order as transformers: (word + type) + position for BERT, word + position otherwise.
         * Branch-free loops so the compiler vectorises them. */
        if (ty && ps)
            for (int i = 0; i < D; i++)
                o[i] = (w[i] + ty[i]) + ps[i];
        else if (ps)
            for (int i = 0; i < D; i++)
                o[i] = w[i] + ps[i];
        else if (ty)
            for (int i = 0; i < D; i++)
                o[i] = w[i] + ty[i];
        else
            memcpy(o, w, (size_t)D * sizeof *o);
    }
    return 0;
}
