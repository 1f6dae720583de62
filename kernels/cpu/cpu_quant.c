/* Dynamic int8 quantisation around oneDNN's u8 x s8 -> s32 products, and f32 -> bf16 conversion of activations:
 * weights per output channel (symmetric s8, once at load), activations per row (asymmetric u8, per call), and
 * the dequantisation with bias and activation fused in one pass over the s32 result. Rows are shared out among
 * OpenMP threads; AVX-512 where the CPU has it, scalar C otherwise (the same rounding: nearest even). */
#include "cpu_quant.h"

#include <math.h>
#include <omp.h>
#include <string.h>

#include "cpu_ops.h"

#if defined(__x86_64__)
#define HAVE_X86 1
#include <immintrin.h>
#define AVX512     __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
#define AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))
#else
#define HAVE_X86 0
#endif

static int have_avx512 = -1, have_avx512bf16 = -1;

static void detect(void)
{
    if (have_avx512 >= 0)
        return;
    int a = 0, b = 0;
#if HAVE_X86
    __builtin_cpu_init();
    a = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq") && nlpd_cpu_simd_avx2();
    b = a && __builtin_cpu_supports("avx512bf16");
#endif
    have_avx512bf16 = b;
    have_avx512 = a;
}

int nlpd_cpu_quant_avx512(void)
{
    detect();
    return have_avx512;
}

/* Threads for a pass over rows x cols floats: below about 2^19 elements (~50 us on one core) a parallel region
 * costs more than it saves, and on a busy machine each region can wait a time slice for a descheduled thread. */
static int team(int rows, size_t cols)
{
    int t = omp_get_max_threads();
    size_t work = (size_t)rows * cols;
    if (work < ((size_t)1 << 19) || rows < 2)
        return 1;
    return t < rows ? t : rows;
}

void nlpd_cpu_quant_weights_s8(const float *b, int k, int n, int ldb, int trans_b, int8_t *q, float *scale,
                               int32_t *colsum)
{
    /* output channel j is column j of b[k,n], or row j of b[n,k] (trans_b); q has b's layout and strides. Both
     * passes walk b row by row (a column walk of a [768, 3072] matrix misses the cache on every element). */
    for (int j = 0; j < n; j++) {
        scale[j] = 0.0f;
        colsum[j] = 0;
    }
    for (int i = 0; i < (trans_b ? n : k); i++) {
        const float *row = b + (size_t)i * ldb;
        int len = trans_b ? k : n;
        if (trans_b) {
            float mx = 0.0f;
            for (int c = 0; c < len; c++)
                mx = fabsf(row[c]) > mx ? fabsf(row[c]) : mx;
            scale[i] = mx;
        } else {
            for (int c = 0; c < len; c++)
                scale[c] = fabsf(row[c]) > scale[c] ? fabsf(row[c]) : scale[c];
        }
    }
    for (int j = 0; j < n; j++)
        scale[j] = scale[j] > 0.0f ? scale[j] / 127.0f : 1.0f;
    for (int i = 0; i < (trans_b ? n : k); i++) {
        const float *row = b + (size_t)i * ldb;
        int8_t *qr = q + (size_t)i * ldb;
        int len = trans_b ? k : n;
        for (int c = 0; c < len; c++) {
            int j = trans_b ? i : c;
            float r = nearbyintf(row[c] / scale[j]);
            r = r > 127.0f ? 127.0f : r < -127.0f ? -127.0f : r;
            qr[c] = (int8_t)r;
            colsum[j] += (int32_t)r;
        }
    }
}

/* ---- activations: per row asymmetric u8 ---- */

static void row_params(float mn, float mx, float *scale, int32_t *zp)
{
    mn = mn < 0.0f ? mn : 0.0f; /* 0 stays exact (padding, ReLU zeros) */
    mx = mx > 0.0f ? mx : 0.0f;
    float s = (mx - mn) / 255.0f;
    if (!(s > 0.0f) || !isfinite(s)) { /* all zeros, or inf/nan in the row: scale 1 keeps nan visible */
        *scale = 1.0f;
        *zp = 0;
        return;
    }
    float z = nearbyintf(-mn / s);
    *scale = s;
    *zp = (int32_t)(z < 0.0f ? 0.0f : z > 255.0f ? 255.0f : z);
}

static void quant_row_scalar(const float *x, int k, uint8_t *q, float *scale, int32_t *zp)
{
    float mn = 0.0f, mx = 0.0f;
    for (int i = 0; i < k; i++) {
        mn = x[i] < mn ? x[i] : mn;
        mx = x[i] > mx ? x[i] : mx;
    }
    row_params(mn, mx, scale, zp);
    const float inv = 1.0f / *scale, z = (float)*zp;
    for (int i = 0; i < k; i++) {
        float r = nearbyintf(x[i] * inv) + z;
        q[i] = (uint8_t)(r < 0.0f ? 0.0f : r > 255.0f ? 255.0f : r);
    }
}

#if HAVE_X86
static AVX512 void quant_row_avx512(const float *x, int k, uint8_t *q, float *scale, int32_t *zp)
{
    __m512 vmn = _mm512_setzero_ps(), vmx = _mm512_setzero_ps();
    int i = 0;
    for (; i + 16 <= k; i += 16) {
        __m512 v = _mm512_loadu_ps(x + i);
        vmn = _mm512_min_ps(vmn, v);
        vmx = _mm512_max_ps(vmx, v);
    }
    float mn = _mm512_reduce_min_ps(vmn), mx = _mm512_reduce_max_ps(vmx);
    for (; i < k; i++) {
        mn = x[i] < mn ? x[i] : mn;
        mx = x[i] > mx ? x[i] : mx;
    }
    row_params(mn, mx, scale, zp);
    const float inv = 1.0f / *scale;
    const __m512 vi = _mm512_set1_ps(inv);
    const __m512i vz = _mm512_set1_epi32(*zp), lo = _mm512_setzero_si512(), hi = _mm512_set1_epi32(255);
    for (i = 0; i + 16 <= k; i += 16) {
        __m512i r = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + i), vi)); /* nearest even */
        r = _mm512_min_epi32(_mm512_max_epi32(_mm512_add_epi32(r, vz), lo), hi);
        _mm_storeu_si128((__m128i *)(q + i), _mm512_cvtepi32_epi8(r));
    }
    const float z = (float)*zp;
    for (; i < k; i++) {
        float r = nearbyintf(x[i] * inv) + z;
        q[i] = (uint8_t)(r < 0.0f ? 0.0f : r > 255.0f ? 255.0f : r);
    }
}
#endif

void nlpd_cpu_quant_rows_u8(const float *a, int m, int k, int lda, uint8_t *q, float *scale, int32_t *zp)
{
    detect();
    int avx = have_avx512;
#pragma omp parallel for num_threads(team(m, (size_t)k)) schedule(static)
    for (int r = 0; r < m; r++) {
#if HAVE_X86
        if (avx) {
            quant_row_avx512(a + (size_t)r * lda, k, q + (size_t)r * k, scale + r, zp + r);
            continue;
        }
#endif
        quant_row_scalar(a + (size_t)r * lda, k, q + (size_t)r * k, scale + r, zp + r);
    }
    (void)avx;
}

/* ---- dequantisation: c = sa[r] * sw[j] * (acc - zp[r] * colsum[j]) + bias[j], then act ---- */

static void dequant_row_scalar(int32_t *acc, float *y, int n, float sa, int32_t zp, const float *sw,
                               const int32_t *colsum, const float *bias)
{
    for (int j = 0; j < n; j++) {
        float v = (float)(acc[j] - zp * colsum[j]) * (sa * sw[j]);
        y[j] = bias ? v + bias[j] : v;
    }
}

#if HAVE_X86
static AVX512 void dequant_row_avx512(int32_t *acc, float *y, int n, float sa, int32_t zp, const float *sw,
                                      const int32_t *colsum, const float *bias)
{
    const __m512 vsa = _mm512_set1_ps(sa);
    const __m512i vzp = _mm512_set1_epi32(zp);
    int j = 0;
    for (; j + 16 <= n; j += 16) {
        __m512i v =
            _mm512_sub_epi32(_mm512_loadu_si512(acc + j), _mm512_mullo_epi32(vzp, _mm512_loadu_si512(colsum + j)));
        __m512 s = _mm512_mul_ps(vsa, _mm512_loadu_ps(sw + j));
        __m512 f = _mm512_cvtepi32_ps(v);
        __m512 o = bias ? _mm512_fmadd_ps(f, s, _mm512_loadu_ps(bias + j)) : _mm512_mul_ps(f, s);
        _mm512_storeu_ps(y + j, o);
    }
    if (j < n)
        dequant_row_scalar(acc + j, y + j, n - j, sa, zp, sw + j, colsum + j, bias ? bias + j : NULL);
}
#endif

void nlpd_cpu_dequant(void *c, int m, int n, int ldc, const float *sa, const int32_t *zp, const float *sw,
                      const int32_t *colsum, const float *bias, enum nlpd_act act)
{
    detect();
    int avx = have_avx512;
#pragma omp parallel for num_threads(team(m, (size_t)n)) schedule(static)
    for (int r = 0; r < m; r++) {
        /* the s32 accumulators and their f32 results share c's storage, element for element */
        int32_t *acc = (int32_t *)c + (size_t)r * ldc;
        float *y = (float *)c + (size_t)r * ldc;
#if HAVE_X86
        if (avx)
            dequant_row_avx512(acc, y, n, sa[r], zp[r], sw, colsum, bias);
        else
#endif
            dequant_row_scalar(acc, y, n, sa[r], zp[r], sw, colsum, bias);
        if (act != NLPD_ACT_NONE)
            nlpd_cpu_act(y, (size_t)n, act);
    }
    (void)avx;
}

/* ---- bf16 ---- */

void nlpd_cpu_weights_bf16(const float *b, size_t n, uint16_t *dst)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = nlpd_kernels_f32_to_bf16(b[i]);
}

#if HAVE_X86
static AVX512BF16 void bf16_row_avx512(const float *x, int k, uint16_t *q)
{
    int i = 0;
    for (; i + 16 <= k; i += 16) {
        __m256bh h = _mm512_cvtneps_pbh(_mm512_loadu_ps(x + i)); /* nearest even, as nlpd_kernels_f32_to_bf16 */
        _mm256_storeu_si256((__m256i *)(q + i), (__m256i)h);
    }
    for (; i < k; i++)
        q[i] = nlpd_kernels_f32_to_bf16(x[i]);
}
#endif

void nlpd_cpu_rows_bf16(const float *a, int m, int k, int lda, uint16_t *q)
{
    detect();
    int avx = have_avx512bf16;
#pragma omp parallel for num_threads(team(m, (size_t)k)) schedule(static)
    for (int r = 0; r < m; r++) {
        const float *x = a + (size_t)r * lda;
        uint16_t *o = q + (size_t)r * k;
#if HAVE_X86
        if (avx) {
            bf16_row_avx512(x, k, o);
            continue;
        }
#endif
        for (int i = 0; i < k; i++)
            o[i] = nlpd_kernels_f32_to_bf16(x[i]);
    }
    (void)avx;
}
