/* CPU ops of the transformer encoder: OpenBLAS sgemm for the matrix products, and element-wise kernels
 * (activations, layer norm, softmax, embedding gather) in scalar C plus AVX2+FMA and AVX-512F variants (one
 * source, cpu_ops_simd.h) picked at run time with __builtin_cpu_supports, so the binary needs no -march flag. */
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

static int simd_level = -1; /* enum nlpd_cpu_simd; -1 until detected */

void nlpd_cpu_simd_set(int cap)
{
    int level = NLPD_SIMD_SCALAR;
#if HAVE_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        level = NLPD_SIMD_AVX2;
        if (__builtin_cpu_supports("avx512f"))
            level = NLPD_SIMD_AVX512;
    }
#endif
    const char *env = getenv("NLPD_KERNELS_SIMD");
    if (env && !strcmp(env, "scalar"))
        cap = NLPD_SIMD_SCALAR;
    else if (env && !strcmp(env, "avx2") && cap > NLPD_SIMD_AVX2)
        cap = NLPD_SIMD_AVX2;
    simd_level = level < cap ? level : cap;
}

void nlpd_cpu_simd_init(int force_scalar)
{
    nlpd_cpu_simd_set(force_scalar ? NLPD_SIMD_SCALAR : NLPD_SIMD_AVX512);
}

int nlpd_cpu_simd(void)
{
    if (simd_level < 0)
        nlpd_cpu_simd_init(0);
    return simd_level;
}

int nlpd_cpu_simd_avx2(void)
{
    return nlpd_cpu_simd() >= NLPD_SIMD_AVX2;
}

const char *nlpd_kernels_cpu_simd(void)
{
    static const char *const names[] = {"scalar", "avx2+fma", "avx512f"};
    return names[nlpd_cpu_simd()];
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

/* ------------------------------------------------------- AVX2 and AVX-512 ---- */
#if HAVE_X86
/* AVX2 + FMA: 8 floats */
#define V                     __m256
#define VI                    __m256i
#define VW                    8
#define SIMD_ATTR             __attribute__((target("avx2,fma")))
#define SIMD_FN(name)         name##_avx2
#define VLOAD                 _mm256_loadu_ps
#define VSTORE                _mm256_storeu_ps
#define VSET1                 _mm256_set1_ps
#define VZERO                 _mm256_setzero_ps
#define VADD                  _mm256_add_ps
#define VSUB                  _mm256_sub_ps
#define VMUL                  _mm256_mul_ps
#define VDIV                  _mm256_div_ps
#define VFMADD                _mm256_fmadd_ps
#define VFNMADD               _mm256_fnmadd_ps
#define VMAX                  _mm256_max_ps
#define VMIN                  _mm256_min_ps
#define VAND                  _mm256_and_ps
#define VANDNOT               _mm256_andnot_ps
#define VOR                   _mm256_or_ps
#define VROUND(x)             _mm256_round_ps((x), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define VZERO_IF_LT(p, x, lo) _mm256_andnot_ps(_mm256_cmp_ps((x), (lo), _CMP_LT_OQ), (p))
#define VCVT_I                _mm256_cvtps_epi32
#define VADD_I                _mm256_add_epi32
#define VSET1_I               _mm256_set1_epi32
#define VSLLI_I               _mm256_slli_epi32
#define VCAST_I2F             _mm256_castsi256_ps
#define VHSUM                 hsum8
#define VHMAX                 hmax8

static SIMD_ATTR inline float hsum8(__m256 v)
{
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}

static SIMD_ATTR inline float hmax8(__m256 v)
{
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_max_ps(lo, hi);
    lo = _mm_max_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_max_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}

#include "cpu_ops_simd.h"

#undef V
#undef VI
#undef VW
#undef SIMD_ATTR
#undef SIMD_FN
#undef VLOAD
#undef VSTORE
#undef VSET1
#undef VZERO
#undef VADD
#undef VSUB
#undef VMUL
#undef VDIV
#undef VFMADD
#undef VFNMADD
#undef VMAX
#undef VMIN
#undef VAND
#undef VANDNOT
#undef VOR
#undef VROUND
#undef VZERO_IF_LT
#undef VCVT_I
#undef VADD_I
#undef VSET1_I
#undef VSLLI_I
#undef VCAST_I2F
#undef VHSUM
#undef VHMAX

/* AVX-512F: 16 floats (AVX-512F has no float and/or: they go through the integer forms). No 512-bit layer norm:
 * it measured 20-25% slower than the AVX2 one on BERT-base rows (bench/kernels/bench_elementwise.c, AMD family 26),
 * where GELU is 1.9x and softmax 1.6x faster. */
#define SIMD_NO_LAYER_NORM
#define V                     __m512
#define VI                    __m512i
#define VW                    16
#define SIMD_ATTR             __attribute__((target("avx512f")))
#define SIMD_FN(name)         name##_avx512
#define VLOAD                 _mm512_loadu_ps
#define VSTORE                _mm512_storeu_ps
#define VSET1                 _mm512_set1_ps
#define VZERO                 _mm512_setzero_ps
#define VADD                  _mm512_add_ps
#define VSUB                  _mm512_sub_ps
#define VMUL                  _mm512_mul_ps
#define VDIV                  _mm512_div_ps
#define VFMADD                _mm512_fmadd_ps
#define VFNMADD               _mm512_fnmadd_ps
#define VMAX                  _mm512_max_ps
#define VMIN                  _mm512_min_ps
#define VAND(a, b)            _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(a), _mm512_castps_si512(b)))
#define VANDNOT(a, b)         _mm512_castsi512_ps(_mm512_andnot_si512(_mm512_castps_si512(a), _mm512_castps_si512(b)))
#define VOR(a, b)             _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(a), _mm512_castps_si512(b)))
#define VROUND(x)             _mm512_roundscale_ps((x), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define VZERO_IF_LT(p, x, lo) _mm512_mask_mov_ps((p), _mm512_cmp_ps_mask((x), (lo), _CMP_LT_OQ), _mm512_setzero_ps())
#define VCVT_I                _mm512_cvtps_epi32
#define VADD_I                _mm512_add_epi32
#define VSET1_I               _mm512_set1_epi32
#define VSLLI_I               _mm512_slli_epi32
#define VCAST_I2F             _mm512_castsi512_ps
#define VHSUM                 _mm512_reduce_add_ps
#define VHMAX                 _mm512_reduce_max_ps

#include "cpu_ops_simd.h"
#undef SIMD_NO_LAYER_NORM
#endif

/* --------------------------------------------------------------- dispatch ---- */

float nlpd_kernels_logsumexp(const float *x, int n)
{
#if HAVE_X86
    int level = nlpd_cpu_simd();
    if (level == NLPD_SIMD_AVX512)
        return logsumexp_avx512(x, n);
    if (level == NLPD_SIMD_AVX2)
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
    int level = nlpd_cpu_simd();
    if (level == NLPD_SIMD_AVX512) {
        act_avx512(x, n, act);
        return;
    }
    if (level == NLPD_SIMD_AVX2) {
        act_avx2(x, n, act);
        return;
    }
#endif
    act_scalar(x, n, act);
}

static void bias_act_row(float *x, const float *bias, int n, enum nlpd_act act)
{
#if HAVE_X86
    if (simd_level == NLPD_SIMD_AVX512) {
        bias_act_row_avx512(x, bias, n, act);
        return;
    }
    if (simd_level == NLPD_SIMD_AVX2) {
        bias_act_row_avx2(x, bias, n, act);
        return;
    }
#endif
    bias_act_row_scalar(x, bias, n, act);
}

static void softmax_row(float *x, int n)
{
#if HAVE_X86
    if (simd_level == NLPD_SIMD_AVX512) {
        softmax_row_avx512(x, n);
        return;
    }
    if (simd_level == NLPD_SIMD_AVX2) {
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
    nlpd_cpu_simd();
    if (!p->bias && p->act == NLPD_ACT_NONE && !p->residual)
        return;
#pragma omp parallel for num_threads(row_team(p->rows, p->cols)) schedule(static)
    for (int r = 0; r < p->rows; r++) {
        float *x = p->x + (size_t)r * p->ld;
        if (p->bias || p->act != NLPD_ACT_NONE)
            bias_act_row(x, p->bias, p->cols, p->act);
        if (p->residual) {
            const float *res = p->residual + (size_t)r * p->ld;
            for (int c = 0; c < p->cols; c++)
                x[c] += res[c];
        }
    }
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
    struct nlpd_op_bias_act ba = {p->c, p->bias, p->m, p->n, p->ldc, p->act, NULL, NLPD_DTYPE_F32};
    nlpd_cpu_bias_act(&ba);
}

void nlpd_cpu_layer_norm(const struct nlpd_op_layer_norm *p)
{
    int level = nlpd_cpu_simd();
    (void)level;
#pragma omp parallel for num_threads(row_team(p->rows, p->cols)) schedule(static)
    for (int r = 0; r < p->rows; r++) {
        size_t o = (size_t)r * p->cols;
        const float *bias = p->bias, *res = p->residual ? p->residual + o : NULL;
#if HAVE_X86
        if (level >= NLPD_SIMD_AVX2) { /* AVX2 on AVX-512 CPUs too: see SIMD_NO_LAYER_NORM */
            layer_norm_row_avx2(p->y + o, p->x + o, bias, res, p->gamma, p->beta, p->cols, p->eps);
            continue;
        }
#endif
        layer_norm_row_scalar(p->y + o, p->x + o, bias, res, p->gamma, p->beta, p->cols, p->eps);
    }
}

void nlpd_cpu_softmax(const struct nlpd_op_softmax *p)
{
    nlpd_cpu_simd();
    for (int r = 0; r < p->rows; r++)
        softmax_row(p->x + (size_t)r * p->ld, p->cols);
}

void nlpd_cpu_softmax_masked(float *x, int rows, int cols, const int32_t *mask)
{
    nlpd_cpu_simd();
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
    nlpd_cpu_simd();
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
    nlpd_cpu_simd();
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

static float topk_key(float v)
{
    return v != v ? -INFINITY : v;
}

int nlpd_cpu_log_softmax_topk(const struct nlpd_op_log_softmax_topk *p, struct nlpd_error *err)
{
    if (p->rows <= 0)
        return 0;
    if (p->k < 1 || p->k > NLPD_TOPK_MAX || p->k > p->cols)
        return nlpd_error_set(err, NLPD_EINVAL, 0, "top-k: k %d out of range (1..%d, at most %d columns)", p->k,
                              NLPD_TOPK_MAX, p->cols);
    for (int r = 0; r < p->rows; r++) {
        const float *x = p->x + (size_t)r * p->ld;
        int32_t *idx = p->idx + (size_t)r * p->k;
        float key[NLPD_TOPK_MAX];
        int n = 0, finite = 1;
        for (int i = 0; i < p->cols; i++) {
            float v = topk_key(x[i]);
            finite &= isfinite(x[i]) != 0;
            if (n == p->k && !(v > key[n - 1]))
                continue; /* scanning in column order: an equal value later is not better */
            int j = n < p->k ? n++ : n - 1;
            while (j > 0 && v > key[j - 1]) {
                key[j] = key[j - 1];
                idx[j] = idx[j - 1];
                j--;
            }
            key[j] = v;
            idx[j] = i;
        }
        /* generate.c's host path shifts by this same function: on this backend both paths agree to the bit */
        float lse = finite ? nlpd_kernels_logsumexp(x, p->cols) : NAN;
        for (int j = 0; j < p->k; j++)
            p->vals[(size_t)r * p->k + j] = x[idx[j]] - lse;
    }
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
