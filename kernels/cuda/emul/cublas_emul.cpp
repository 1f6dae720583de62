/* The host emulator's cuBLAS and cuBLASLt (see emul/include/cublas_v2.h, cublasLt.h): plain loops, inputs
 * rounded as the compute type does on the device, fp32 accumulation, results in the output type. */
#include <math.h>
#include <stdlib.h>

#include "cublasLt.h"
#include "cuda_bf16.h"
#include "cuda_fp16.h"

struct cu_emul_blas {
    cudaStream_t stream;
    cublasMath_t math;
};

float cu_emul_round(float v, enum cu_emul_round r)
{
    switch (r) {
    case CU_EMUL_ROUND_F16: return (float)__half(v);
    case CU_EMUL_ROUND_BF16: return (float)__nv_bfloat16(v);
    case CU_EMUL_ROUND_TF32: { /* 10 explicit mantissa bits, round to nearest (ties away, as the hardware's cvt.rna) */
        uint32_t x;
        memcpy(&x, &v, 4);
        if ((x & 0x7f800000u) != 0x7f800000u)
            x = (x + 0x1000u) & ~0x1fffu;
        memcpy(&v, &x, 4);
        return v;
    }
    default: return v;
    }
}

float cu_emul_load(const void *base, cudaDataType_t t, size_t i)
{
    switch (t) {
    case CUDA_R_16F: return (float)((const __half *)base)[i];
    case CUDA_R_16BF: return (float)((const __nv_bfloat16 *)base)[i];
    default: return ((const float *)base)[i];
    }
}

void cu_emul_store(void *base, cudaDataType_t t, size_t i, float v)
{
    switch (t) {
    case CUDA_R_16F: ((__half *)base)[i] = __half(v); break;
    case CUDA_R_16BF: ((__nv_bfloat16 *)base)[i] = __nv_bfloat16(v); break;
    default: ((float *)base)[i] = v; break;
    }
}

static int type_ok(cudaDataType_t t)
{
    return t == CUDA_R_32F || t == CUDA_R_16F || t == CUDA_R_16BF;
}

/* How the inputs are rounded: the 16-bit types are exact already; fp32 inputs follow the compute type. */
static enum cu_emul_round rounding(cublasComputeType_t c, cublasMath_t math, cudaDataType_t in)
{
    if (in != CUDA_R_32F)
        return CU_EMUL_ROUND_NONE;
    switch (c) {
    case CUBLAS_COMPUTE_32F_FAST_16F: return CU_EMUL_ROUND_F16;
    case CUBLAS_COMPUTE_32F_FAST_16BF: return CU_EMUL_ROUND_BF16;
    case CUBLAS_COMPUTE_32F_FAST_TF32: return CU_EMUL_ROUND_TF32;
    case CUBLAS_COMPUTE_32F: return math == CUBLAS_TF32_TENSOR_OP_MATH ? CU_EMUL_ROUND_TF32 : CU_EMUL_ROUND_NONE;
    default: return CU_EMUL_ROUND_NONE;
    }
}

struct gemm_args {
    cublasOperation_t ta, tb;
    int m, n, k;
    float alpha, beta;
    const void *A, *B;
    void *C;
    cudaDataType_t at, bt, ct;
    int lda, ldb, ldc;
    enum cu_emul_round ra, rb;
};

/* Column-major C[m,n] = alpha op(A) op(B) + beta C (beta 0: C is not read, as cuBLAS). */
static void gemm(const gemm_args &g)
{
    for (int j = 0; j < g.n; j++)
        for (int i = 0; i < g.m; i++) {
            float s = 0.0f;
            for (int t = 0; t < g.k; t++) {
                size_t ai = g.ta == CUBLAS_OP_N ? (size_t)t * g.lda + i : (size_t)i * g.lda + t;
                size_t bi = g.tb == CUBLAS_OP_N ? (size_t)j * g.ldb + t : (size_t)t * g.ldb + j;
                s +=
                    cu_emul_round(cu_emul_load(g.A, g.at, ai), g.ra) * cu_emul_round(cu_emul_load(g.B, g.bt, bi), g.rb);
            }
            size_t ci = (size_t)j * g.ldc + i;
            float v = g.alpha * s;
            if (g.beta != 0.0f)
                v += g.beta * cu_emul_load(g.C, g.ct, ci);
            cu_emul_store(g.C, g.ct, ci, v);
        }
}

static cublasStatus_t check_dims(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, int lda, int ldb,
                                 int ldc)
{
    if (m < 0 || n < 0 || k < 0 || ldc < (m > 1 ? m : 1) ||
        lda < ((ta == CUBLAS_OP_N ? m : k) > 1 ? (ta == CUBLAS_OP_N ? m : k) : 1) ||
        ldb < ((tb == CUBLAS_OP_N ? k : n) > 1 ? (tb == CUBLAS_OP_N ? k : n) : 1))
        return CUBLAS_STATUS_INVALID_VALUE;
    return CUBLAS_STATUS_SUCCESS;
}

/* What every Ex entry point checks and fills: shapes, types (A and B alike; fp32 inputs need an fp32 C), the
 * input rounding of the compute type. g's pointers are the caller's. */
static cublasStatus_t prepare(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                              const void *alpha, cudaDataType_t at, int lda, cudaDataType_t bt, int ldb,
                              const void *beta, cudaDataType_t ct, int ldc, cublasComputeType_t compute, int count,
                              gemm_args *g)
{
    cublasStatus_t st = check_dims(ta, tb, m, n, k, lda, ldb, ldc);
    if (st || count < 0)
        return st ? st : CUBLAS_STATUS_INVALID_VALUE;
    if (!type_ok(at) || !type_ok(bt) || !type_ok(ct) || at != bt || (at == CUDA_R_32F && ct != CUDA_R_32F))
        return CUBLAS_STATUS_NOT_SUPPORTED;
    *g = gemm_args{
        ta, tb, m,   n,   k,   *(const float *)alpha,          *(const float *)beta,          NULL, NULL, NULL, at,
        bt, ct, lda, ldb, ldc, rounding(compute, h->math, at), rounding(compute, h->math, bt)};
    return CUBLAS_STATUS_SUCCESS;
}

static cublasStatus_t queue(cublasHandle_t h, std::function<void()> fn)
{
    /* a kernel of cuBLAS's own: runs in the handle's stream order, recorded while it captures */
    std::function<void()> body = std::move(fn);
    cudaError_t e = cu_emul_submit((const void *)&queue, dim3(1), dim3(1), 0, h->stream, [body]() { body(); });
    return e == cudaSuccess ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
}

cublasStatus_t cublasCreate(cublasHandle_t *h)
{
    *h = new cu_emul_blas();
    (*h)->stream = 0;
    (*h)->math = CUBLAS_DEFAULT_MATH;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy(cublasHandle_t h)
{
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s)
{
    h->stream = s;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetWorkspace(cublasHandle_t h, void *ws, size_t bytes)
{
    (void)h;
    (void)ws;
    (void)bytes;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t m)
{
    h->math = m;
    return CUBLAS_STATUS_SUCCESS;
}

const char *cublasGetStatusString(cublasStatus_t s)
{
    return s == CUBLAS_STATUS_SUCCESS ? "CUBLAS_STATUS_SUCCESS" : "CUBLAS_STATUS_ERROR";
}

cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                            const void *alpha, const void *A, cudaDataType_t at, int lda, const void *B,
                            cudaDataType_t bt, int ldb, const void *beta, void *C, cudaDataType_t ct, int ldc,
                            cublasComputeType_t compute, cublasGemmAlgo_t algo)
{
    (void)algo;
    gemm_args g;
    cublasStatus_t st = prepare(h, ta, tb, m, n, k, alpha, at, lda, bt, ldb, beta, ct, ldc, compute, 1, &g);
    if (st)
        return st;
    g.A = A;
    g.B = B;
    g.C = C;
    return queue(h, [g]() { gemm(g); });
}

cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                           const float *alpha, const float *A, int lda, const float *B, int ldb, const float *beta,
                           float *C, int ldc)
{
    return cublasGemmEx(h, ta, tb, m, n, k, alpha, A, CUDA_R_32F, lda, B, CUDA_R_32F, ldb, beta, C, CUDA_R_32F, ldc,
                        CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
}

cublasStatus_t cublasGemmBatchedEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                   const void *alpha, const void *const A[], cudaDataType_t at, int lda,
                                   const void *const B[], cudaDataType_t bt, int ldb, const void *beta, void *const C[],
                                   cudaDataType_t ct, int ldc, int count, cublasComputeType_t compute,
                                   cublasGemmAlgo_t algo)
{
    (void)algo;
    gemm_args g;
    cublasStatus_t st = prepare(h, ta, tb, m, n, k, alpha, at, lda, bt, ldb, beta, ct, ldc, compute, count, &g);
    if (st)
        return st;
    /* the pointer arrays live in device memory and are read when the product runs */
    return queue(h, [g, A, B, C, count]() {
        for (int i = 0; i < count; i++) {
            gemm_args x = g;
            x.A = A[i];
            x.B = B[i];
            x.C = C[i];
            gemm(x);
        }
    });
}

cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                          int k, const void *alpha, const void *A, cudaDataType_t at, int lda,
                                          long long sa, const void *B, cudaDataType_t bt, int ldb, long long sb,
                                          const void *beta, void *C, cudaDataType_t ct, int ldc, long long sc,
                                          int count, cublasComputeType_t compute, cublasGemmAlgo_t algo)
{
    (void)algo;
    gemm_args g;
    cublasStatus_t st = prepare(h, ta, tb, m, n, k, alpha, at, lda, bt, ldb, beta, ct, ldc, compute, count, &g);
    if (st)
        return st;
    g.A = A;
    g.B = B;
    g.C = C;
    size_t ea = at == CUDA_R_32F ? 4 : 2, ec = ct == CUDA_R_32F ? 4 : 2;
    return queue(h, [g, sa, sb, sc, count, ea, ec]() {
        for (int i = 0; i < count; i++) {
            gemm_args x = g;
            x.A = (const char *)g.A + (size_t)(sa * i) * ea;
            x.B = (const char *)g.B + (size_t)(sb * i) * ea;
            x.C = (char *)g.C + (size_t)(sc * i) * ec;
            gemm(x);
        }
    });
}

/* ------------------------------------------------------------------ cuBLASLt ---- */

struct cu_emul_lt {
    int unused;
};
struct cu_emul_lt_desc {
    cublasComputeType_t compute;
    cudaDataType_t scale;
    cublasOperation_t ta, tb;
    cublasLtEpilogue_t epilogue;
    const void *bias;
    int bias_type; /* -1: D's type */
};
struct cu_emul_lt_layout {
    cudaDataType_t type;
    uint64_t rows, cols;
    int64_t ld;
    int order;
};
struct cu_emul_lt_pref {
    size_t ws;
};

cublasStatus_t cublasLtCreate(cublasLtHandle_t *h)
{
    *h = new cu_emul_lt();
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtDestroy(cublasLtHandle_t h)
{
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t compute, cudaDataType_t scale)
{
    *d = new cu_emul_lt_desc{compute, scale, CUBLAS_OP_N, CUBLAS_OP_N, CUBLASLT_EPILOGUE_DEFAULT, NULL, -1};
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d)
{
    delete d;
    return CUBLAS_STATUS_SUCCESS;
}

template <typename T> static cublasStatus_t get_attr(T *dst, const void *buf, size_t n)
{
    if (n != sizeof(T))
        return CUBLAS_STATUS_INVALID_VALUE;
    memcpy(dst, buf, n);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t a, const void *buf,
                                              size_t n)
{
    int32_t v;
    switch (a) {
    case CUBLASLT_MATMUL_DESC_TRANSA:
        if (get_attr(&v, buf, n))
            return CUBLAS_STATUS_INVALID_VALUE;
        d->ta = (cublasOperation_t)v;
        return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_MATMUL_DESC_TRANSB:
        if (get_attr(&v, buf, n))
            return CUBLAS_STATUS_INVALID_VALUE;
        d->tb = (cublasOperation_t)v;
        return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_MATMUL_DESC_EPILOGUE: {
        uint32_t e;
        if (get_attr(&e, buf, n))
            return CUBLAS_STATUS_INVALID_VALUE;
        d->epilogue = (cublasLtEpilogue_t)e;
        return CUBLAS_STATUS_SUCCESS;
    }
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER: return get_attr(&d->bias, buf, n);
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE:
        if (get_attr(&v, buf, n))
            return CUBLAS_STATUS_INVALID_VALUE;
        d->bias_type = v;
        return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_MATMUL_DESC_COMPUTE_TYPE: return get_attr(&d->compute, buf, n);
    case CUBLASLT_MATMUL_DESC_SCALE_TYPE: return get_attr(&d->scale, buf, n);
    default: return CUBLAS_STATUS_NOT_SUPPORTED;
    }
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType_t t, uint64_t rows, uint64_t cols,
                                          int64_t ld)
{
    *l = new cu_emul_lt_layout{t, rows, cols, ld, CUBLASLT_ORDER_COL};
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l)
{
    delete l;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t l, cublasLtMatrixLayoutAttribute_t a,
                                                const void *buf, size_t n)
{
    if (a == CUBLASLT_MATRIX_LAYOUT_ORDER)
        return get_attr(&l->order, buf, n);
    if (a == CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT) {
        int32_t c;
        if (get_attr(&c, buf, n))
            return CUBLAS_STATUS_INVALID_VALUE;
        return c == 1 ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_NOT_SUPPORTED;
    }
    return CUBLAS_STATUS_NOT_SUPPORTED;
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p)
{
    *p = new cu_emul_lt_pref{0};
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p)
{
    delete p;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p,
                                                    cublasLtMatmulPreferenceAttributes_t a, const void *buf, size_t n)
{
    if (a == CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES || a == CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES ||
        a == CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES || a == CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES) {
        uint32_t al; /* a power of two, as cuBLASLt requires */
        if (get_attr(&al, buf, n) || !al || (al & (al - 1)))
            return CUBLAS_STATUS_INVALID_VALUE;
        return CUBLAS_STATUS_SUCCESS;
    }
    if (a != CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    uint64_t v;
    if (get_attr(&v, buf, n))
        return CUBLAS_STATUS_INVALID_VALUE;
    p->ws = (size_t)v;
    return CUBLAS_STATUS_SUCCESS;
}

/* What the emulated cuBLASLt accepts: the layouts agree with the product's shape, A and B share a type, D is
 * fp32 or that type, the bias is fp32 or D's type, column order. */
static cublasStatus_t lt_check(cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                               cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t dl)
{
    uint64_t m = dl->rows, n = dl->cols, k = d->ta == CUBLAS_OP_N ? a->cols : a->rows;
    uint64_t am = d->ta == CUBLAS_OP_N ? a->rows : a->cols;
    uint64_t bk = d->tb == CUBLAS_OP_N ? b->rows : b->cols, bn = d->tb == CUBLAS_OP_N ? b->cols : b->rows;
    if (am != m || bk != k || bn != n || c->rows != m || c->cols != n)
        return CUBLAS_STATUS_INVALID_VALUE;
    if (a->order || b->order || c->order || dl->order)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    if ((int64_t)a->rows > a->ld || (int64_t)b->rows > b->ld || (int64_t)c->rows > c->ld || (int64_t)dl->rows > dl->ld)
        return CUBLAS_STATUS_INVALID_VALUE;
    if (!type_ok(a->type) || a->type != b->type || c->type != dl->type ||
        (dl->type != CUDA_R_32F && dl->type != a->type))
        return CUBLAS_STATUS_NOT_SUPPORTED;
    int bias = d->epilogue == CUBLASLT_EPILOGUE_BIAS || d->epilogue == CUBLASLT_EPILOGUE_RELU_BIAS ||
               d->epilogue == CUBLASLT_EPILOGUE_GELU_BIAS;
    if (bias && d->bias_type != -1 && d->bias_type != CUDA_R_32F && d->bias_type != (int)dl->type)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    if (d->epilogue != CUBLASLT_EPILOGUE_DEFAULT && d->epilogue != CUBLASLT_EPILOGUE_RELU && !bias &&
        d->epilogue != CUBLASLT_EPILOGUE_GELU)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t h, cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t a,
                                              cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c,
                                              cublasLtMatrixLayout_t dl, cublasLtMatmulPreference_t p, int requested,
                                              cublasLtMatmulHeuristicResult_t results[], int *returned)
{
    (void)h;
    (void)p;
    *returned = 0;
    cublasStatus_t st = lt_check(d, a, b, c, dl);
    if (st)
        return st;
    if (requested < 1)
        return CUBLAS_STATUS_INVALID_VALUE;
    memset(&results[0], 0, sizeof results[0]);
    results[0].algo.data[0] = 0x6e6c7064; /* any non-zero token */
    results[0].wavesCount = 1.0f;
    *returned = 1;
    return CUBLAS_STATUS_SUCCESS;
}

static float lt_act(float x, cublasLtEpilogue_t e)
{
    if (e == CUBLASLT_EPILOGUE_RELU || e == CUBLASLT_EPILOGUE_RELU_BIAS)
        return x > 0.0f ? x : 0.0f;
    if (e == CUBLASLT_EPILOGUE_GELU || e == CUBLASLT_EPILOGUE_GELU_BIAS)
        return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
    return x;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t h, cublasLtMatmulDesc_t d, const void *alpha, const void *A,
                              cublasLtMatrixLayout_t al, const void *B, cublasLtMatrixLayout_t bl, const void *beta,
                              const void *C, cublasLtMatrixLayout_t cl, void *D, cublasLtMatrixLayout_t dl,
                              const cublasLtMatmulAlgo_t *algo, void *ws, size_t ws_bytes, cudaStream_t s)
{
    (void)h;
    (void)algo;
    (void)ws;
    (void)ws_bytes;
    cublasStatus_t st = lt_check(d, al, bl, cl, dl);
    if (st)
        return st;
    int bias = d->epilogue == CUBLASLT_EPILOGUE_BIAS || d->epilogue == CUBLASLT_EPILOGUE_RELU_BIAS ||
               d->epilogue == CUBLASLT_EPILOGUE_GELU_BIAS;
    if (bias && !d->bias)
        return CUBLAS_STATUS_INVALID_VALUE;
    const float fa = *(const float *)alpha, fb = *(const float *)beta;
    const int m = (int)dl->rows, n = (int)dl->cols, k = (int)(d->ta == CUBLAS_OP_N ? al->cols : al->rows);
    const cudaDataType_t bt = d->bias_type == -1 ? dl->type : (cudaDataType_t)d->bias_type;
    const enum cu_emul_round r = rounding(d->compute, CUBLAS_DEFAULT_MATH, al->type);
    const cublasOperation_t ta = d->ta, tb = d->tb;
    const cublasLtEpilogue_t ep = d->epilogue;
    const void *bp = d->bias;
    const cudaDataType_t at = al->type, ct = cl->type, dt = dl->type;
    const int64_t lda = al->ld, ldb = bl->ld, ldc = cl->ld, ldd = dl->ld;
    struct cu_emul_blas hb = {s, CUBLAS_DEFAULT_MATH};
    return queue(&hb, [=]() {
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
                float acc = 0.0f;
                for (int t = 0; t < k; t++) {
                    size_t ai = ta == CUBLAS_OP_N ? (size_t)t * lda + i : (size_t)i * lda + t;
                    size_t bi = tb == CUBLAS_OP_N ? (size_t)j * ldb + t : (size_t)t * ldb + j;
                    acc += cu_emul_round(cu_emul_load(A, at, ai), r) * cu_emul_round(cu_emul_load(B, at, bi), r);
                }
                float v = fa * acc;
                if (fb != 0.0f)
                    v += fb * cu_emul_load(C, ct, (size_t)j * ldc + i);
                if (bias)
                    v += cu_emul_load(bp, bt, (size_t)i);
                cu_emul_store(D, dt, (size_t)j * ldd + i, lt_act(v, ep));
            }
    });
}
