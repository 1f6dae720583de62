/* The CUDA host emulator itself (kernels/cuda/emul/): that it runs kernels as the device would (barriers, shared
 * memory, warp shuffles, wmma, cuBLAS rounding, cuBLASLt epilogues) and that it refuses what the device refuses
 * (a barrier not reached by every thread, a bad launch configuration, too much shared memory, synchronising
 * or copying pageable memory while capturing, a copy past an allocation). Built by g++ against the emulator
 * only (build/emul/tests/test_cuda_emul); the CUDA op tests then trust it. */
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cublasLt.h>
#include <cuda_runtime.h>
#include <mma.h>

#include "cuda_internal.h" /* CU_LAUNCH, CU_DYN_SHARED */

static int passed, failed;
#define CHECK(c)                                                                                                       \
    do {                                                                                                               \
        if (c) {                                                                                                       \
            passed++;                                                                                                  \
        } else {                                                                                                       \
            failed++;                                                                                                  \
            fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #c);                                      \
        }                                                                                                              \
    } while (0)

__global__ void k_block_sum(const float *x, float *out, int n)
{
    __shared__ float sh[1024];
    int t = threadIdx.x;
    sh[t] = t < n ? x[t] : 0.0f;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (t < s)
            sh[t] += sh[t + s];
        __syncthreads();
    }
    if (t == 0)
        out[blockIdx.x] = sh[0];
}

__global__ void k_warp_sum(const float *x, float *out)
{
    float v = x[threadIdx.x];
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    out[threadIdx.x] = v; /* every lane holds its warp's sum */
}

__global__ void k_divergent_barrier(float *out)
{
    if (threadIdx.x < 16)
        __syncthreads(); /* half the block never arrives */
    out[threadIdx.x] = 1.0f;
}

__global__ void k_fill(float *out, float v)
{
    out[blockIdx.x * blockDim.x + threadIdx.x] = v;
}

__global__ void k_dyn(float *out)
{
    CU_DYN_SHARED(float, buf);
    buf[threadIdx.x] = (float)threadIdx.x;
    __syncthreads();
    out[threadIdx.x] = buf[blockDim.x - 1 - threadIdx.x];
}

__global__ void k_wmma(const __half *a, const __half *b, float *c)
{
    using namespace nvcuda;
    wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> fb;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> fc;
    wmma::fill_fragment(fc, 0.0f);
    wmma::load_matrix_sync(fa, a, 16);
    wmma::load_matrix_sync(fb, b, 16);
    wmma::mma_sync(fc, fa, fb, fc);
    wmma::store_matrix_sync(c, fc, 16, wmma::mem_row_major);
}

static float *dev(size_t n)
{
    void *p = NULL;
    CHECK(cudaMalloc(&p, n * sizeof(float)) == cudaSuccess);
    return (float *)p;
}

static void test_barriers_and_shuffles(void)
{
    float h[1024], r[1024];
    for (int i = 0; i < 1024; i++)
        h[i] = (float)(i % 7);
    float *x = dev(1024), *o = dev(1024);
    cudaMemcpy(x, h, sizeof h, cudaMemcpyHostToDevice);
    CU_LAUNCH(k_block_sum, 2, 1024, 0, 0)(x, o, 1000);
    CHECK(cudaGetLastError() == cudaSuccess);
    cudaMemcpy(r, o, 2 * sizeof(float), cudaMemcpyDeviceToHost);
    float want = 0;
    for (int i = 0; i < 1000; i++)
        want += h[i];
    CHECK(r[0] == want && r[1] == want);
    CU_LAUNCH(k_warp_sum, 1, 64, 0, 0)(x, o);
    cudaMemcpy(r, o, 64 * sizeof(float), cudaMemcpyDeviceToHost);
    float w0 = 0, w1 = 0;
    for (int i = 0; i < 32; i++) {
        w0 += h[i];
        w1 += h[32 + i];
    }
    CHECK(r[0] == w0 && r[31] == w0 && r[32] == w1 && r[63] == w1);
    cudaFree(x);
    cudaFree(o);
}

/* A barrier half the block never reaches hangs or corrupts on the device; here it aborts with a message. */
static void test_deadlock_detected(void)
{
    fflush(NULL);
    int fds[2];
    CHECK(pipe(fds) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 2);
        float *o = dev(32);
        CU_LAUNCH(k_divergent_barrier, 1, 32, 0, 0)(o);
        _exit(0);
    }
    close(fds[1]);
    char buf[512] = {0};
    ssize_t n = read(fds[0], buf, sizeof buf - 1);
    close(fds[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    CHECK(n > 0 && strstr(buf, "deadlock"));
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT);
}

static void test_launch_checks(void)
{
    float *o = dev(4096);
    CU_LAUNCH(k_fill, 1, 2048, 0, 0)(o, 1.0f); /* more than 1024 threads */
    CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration);
    CHECK(cudaGetLastError() == cudaSuccess); /* read once */
    CU_LAUNCH(k_dyn, 1, 64, 64 << 10, 0)(o); /* 64 KiB of dynamic shared memory without opting in */
    CHECK(cudaGetLastError() == cudaErrorInvalidValue);
    CHECK(cudaFuncSetAttribute(k_dyn, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 << 10) == cudaSuccess);
    CU_LAUNCH(k_dyn, 1, 64, 64 << 10, 0)(o);
    CHECK(cudaGetLastError() == cudaSuccess);
    float r[64];
    cudaMemcpy(r, o, sizeof r, cudaMemcpyDeviceToHost);
    CHECK(r[0] == 63.0f && r[63] == 0.0f);
    /* device memory starts undefined (NaN), a copy past an allocation is refused */
    float *fresh = dev(16), v = 0;
    cudaMemcpy(&v, fresh, sizeof v, cudaMemcpyDeviceToHost);
    CHECK(v != v);
    CHECK(cudaMemcpy(r, fresh, 17 * sizeof(float), cudaMemcpyDeviceToHost) == cudaErrorInvalidValue);
    CHECK(cudaFree(fresh + 1) == cudaErrorInvalidValue);
    cudaFree(fresh);
    cudaFree(o);
}

static void test_capture(void)
{
    cudaStream_t s;
    cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    float *o = dev(32), r[32];
    float *pinned;
    cudaHostAlloc((void **)&pinned, 32 * sizeof(float), 0);
    CU_LAUNCH(k_fill, 1, 32, 0, s)(o, 0.0f);
    CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
    CU_LAUNCH(k_fill, 1, 32, 0, s)(o, 2.0f);
    CHECK(cudaMemcpyAsync(pinned, o, 32 * sizeof(float), cudaMemcpyDeviceToHost, s) == cudaSuccess);
    cudaGraph_t g;
    CHECK(cudaStreamEndCapture(s, &g) == cudaSuccess && g);
    cudaMemcpy(r, o, sizeof r, cudaMemcpyDeviceToHost);
    CHECK(r[5] == 0.0f); /* recorded, not run */
    cudaGraphExec_t x;
    CHECK(cudaGraphInstantiate(&x, g, 0) == cudaSuccess);
    unsigned long long before = cu_emul_graph_launch_count();
    pinned[5] = 0.0f;
    CHECK(cudaGraphLaunch(x, s) == cudaSuccess && cudaStreamSynchronize(s) == cudaSuccess);
    CHECK(pinned[5] == 2.0f && cu_emul_graph_launch_count() == before + 1);
    cudaGraphExecDestroy(x);
    cudaGraphDestroy(g);
    /* synchronising inside a capture invalidates it */
    CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
    CHECK(cudaStreamSynchronize(s) == cudaErrorStreamCaptureUnsupported);
    CHECK(cudaStreamEndCapture(s, &g) == cudaErrorStreamCaptureInvalidated && !g);
    /* a captured copy from pageable memory would replay from a stale address: refused */
    CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
    CHECK(cudaMemcpyAsync(o, r, sizeof r, cudaMemcpyHostToDevice, s) == cudaErrorStreamCaptureUnsupported);
    CHECK(cudaStreamEndCapture(s, &g) == cudaErrorStreamCaptureInvalidated);
    cudaGetLastError();
    cudaFreeHost(pinned);
    cudaFree(o);
    cudaStreamDestroy(s);
}

/* cuBLAS rounds fp32 inputs as its compute type does: 1 + 2^-12 survives fp32, not fp16 (11 bits) or TF32. */
static void test_blas_rounding(void)
{
    cublasHandle_t h;
    cublasCreate(&h);
    const float one = 1.0f, zero = 0.0f, a = 1.0f + 1.0f / 4096.0f;
    float *A = dev(1), *B = dev(1), *C = dev(1), r;
    cudaMemcpy(A, &a, 4, cudaMemcpyHostToDevice);
    cudaMemcpy(B, &one, 4, cudaMemcpyHostToDevice);
    CHECK(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &one, A, 1, B, 1, &zero, C, 1) == CUBLAS_STATUS_SUCCESS);
    cudaMemcpy(&r, C, 4, cudaMemcpyDeviceToHost);
    CHECK(r == a);
    cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &one, A, CUDA_R_32F, 1, B, CUDA_R_32F, 1, &zero, C, CUDA_R_32F,
                 1, CUBLAS_COMPUTE_32F_FAST_16F, CUBLAS_GEMM_DEFAULT);
    cudaMemcpy(&r, C, 4, cudaMemcpyDeviceToHost);
    CHECK(r == 1.0f);
    cublasSetMathMode(h, CUBLAS_TF32_TENSOR_OP_MATH);
    cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &one, A, 1, B, 1, &zero, C, 1);
    cudaMemcpy(&r, C, 4, cudaMemcpyDeviceToHost);
    CHECK(r == 1.0f);
    cublasDestroy(h);
    cudaFree(A);
    cudaFree(B);
    cudaFree(C);
}

/* D (fp16, 2 x 3 column-major) = gelu_tanh(A^T B + bias) with an fp32 bias over D's rows. */
static void test_lt_epilogue(void)
{
    const int m = 2, n = 3, k = 4;
    __half ha[k * m], hb[k * n];
    float bias[m] = {0.5f, -1.0f};
    for (int i = 0; i < k * m; i++)
        ha[i] = __half(0.25f * (float)(i - 3));
    for (int i = 0; i < k * n; i++)
        hb[i] = __half(0.125f * (float)(i % 5));
    void *A, *B, *D, *bp;
    cudaMalloc(&A, sizeof ha);
    cudaMalloc(&B, sizeof hb);
    cudaMalloc(&D, m * n * 2);
    cudaMalloc(&bp, sizeof bias);
    cudaMemcpy(A, ha, sizeof ha, cudaMemcpyHostToDevice);
    cudaMemcpy(B, hb, sizeof hb, cudaMemcpyHostToDevice);
    cudaMemcpy(bp, bias, sizeof bias, cudaMemcpyHostToDevice);
    cublasLtHandle_t lt;
    cublasLtCreate(&lt);
    cublasLtMatmulDesc_t d;
    cublasLtMatmulDescCreate(&d, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    int32_t ta = CUBLAS_OP_T, bt = CUDA_R_32F;
    uint32_t ep = CUBLASLT_EPILOGUE_GELU_BIAS;
    cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta);
    cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_EPILOGUE, &ep, sizeof ep);
    cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bp, sizeof bp);
    cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt);
    cublasLtMatrixLayout_t la, lb, ld;
    cublasLtMatrixLayoutCreate(&la, CUDA_R_16F, k, m, k);
    cublasLtMatrixLayoutCreate(&lb, CUDA_R_16F, k, n, k);
    cublasLtMatrixLayoutCreate(&ld, CUDA_R_16F, m, n, m);
    cublasLtMatmulHeuristicResult_t res;
    int got = 0;
    cublasLtMatmulPreference_t pref;
    cublasLtMatmulPreferenceCreate(&pref);
    CHECK(cublasLtMatmulAlgoGetHeuristic(lt, d, la, lb, ld, ld, pref, 1, &res, &got) == CUBLAS_STATUS_SUCCESS &&
          got == 1);
    const float one = 1.0f, zero = 0.0f;
    CHECK(cublasLtMatmul(lt, d, &one, A, la, B, lb, &zero, D, ld, D, ld, &res.algo, NULL, 0, 0) ==
          CUBLAS_STATUS_SUCCESS);
    __half hd[m * n];
    cudaMemcpy(hd, D, sizeof hd, cudaMemcpyDeviceToHost);
    int ok = 1;
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            float s = 0;
            for (int t = 0; t < k; t++)
                s += (float)ha[i * k + t] * (float)hb[j * k + t];
            s += bias[i];
            float g = 0.5f * s * (1.0f + tanhf(0.7978845608028654f * (s + 0.044715f * s * s * s)));
            ok &= fabsf((float)hd[j * m + i] - g) <= 1e-3f * (1.0f + fabsf(g));
        }
    CHECK(ok);
    cublasLtMatmulPreferenceDestroy(pref);
    cublasLtMatrixLayoutDestroy(la);
    cublasLtMatrixLayoutDestroy(lb);
    cublasLtMatrixLayoutDestroy(ld);
    cublasLtMatmulDescDestroy(d);
    cublasLtDestroy(lt);
    cudaFree(A);
    cudaFree(B);
    cudaFree(D);
    cudaFree(bp);
}

static void test_wmma(void)
{
    __half a[256], b[256];
    for (int i = 0; i < 256; i++) {
        a[i] = __half((float)((i * 7) % 11) - 5.0f);
        b[i] = __half((float)((i * 3) % 5) - 2.0f);
    }
    void *da, *db;
    cudaMalloc(&da, sizeof a);
    cudaMalloc(&db, sizeof b);
    float *dc = dev(256), c[256];
    cudaMemcpy(da, a, sizeof a, cudaMemcpyHostToDevice);
    cudaMemcpy(db, b, sizeof b, cudaMemcpyHostToDevice);
    CU_LAUNCH(k_wmma, 1, 32, 0, 0)((const __half *)da, (const __half *)db, dc);
    cudaMemcpy(c, dc, sizeof c, cudaMemcpyDeviceToHost);
    int ok = 1;
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 16; j++) {
            float s = 0;
            for (int t = 0; t < 16; t++)
                s += (float)a[i * 16 + t] * (float)b[j * 16 + t]; /* b col_major: element (t, j) at j*16 + t */
            ok &= c[i * 16 + j] == s;
        }
    CHECK(ok);
    cudaFree(da);
    cudaFree(db);
    cudaFree(dc);
}

int main(void)
{
    test_barriers_and_shuffles();
    test_deadlock_detected();
    test_launch_checks();
    test_capture();
    test_blas_rounding();
    test_lt_epilogue();
    test_wmma();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
