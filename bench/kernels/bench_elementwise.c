/* The element-wise CPU kernels on BERT-base shapes (batch 32 x seq 128 rows: LayerNorm over 768 with the
 * residual and bias fused, GELU over the 3072-wide FFN activations, softmax over 128-key score rows), one
 * thread, on each SIMD path this CPU has: scalar, AVX2+FMA, AVX-512F. Prints the median of 15 runs per path
 * and the speed-up over AVX2. Usage: build/bench/bench_elementwise */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "cpu_ops.h"

#define RUNS 15

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static float *filled(size_t n, float scale)
{
    float *v = malloc(n * sizeof *v);
    unsigned r = 7;
    for (size_t i = 0; i < n; i++) {
        r = r * 1103515245u + 12345u;
        v[i] = scale * ((float)((r >> 8) & 0xffff) / 65536.0f - 0.5f);
    }
    return v;
}

int main(void)
{
    const int rows = 32 * 128, H = 768, F = 3072, S = 128;
    float *x = filled((size_t)rows * H, 4), *res = filled((size_t)rows * H, 2), *y = filled((size_t)rows * H, 1);
    float *g = filled(H, 1), *b = filled(H, 1), *bias = filled(H, 1);
    float *ffn = filled((size_t)rows * F, 6), *sc = filled((size_t)rows * S, 20);
    static const char *const names[] = {"scalar", "avx2+fma", "avx512f"};
    double med[3][3] = {{0}};
    int have[3] = {0};
    for (int level = NLPD_SIMD_SCALAR; level <= NLPD_SIMD_AVX512; level++) {
        nlpd_cpu_simd_set(level);
        if (nlpd_cpu_simd() != level)
            continue;
        have[level] = 1;
        double t[3][RUNS];
        for (int r = 0; r < RUNS; r++) {
            double t0 = now();
            struct nlpd_op_layer_norm ln = {y, x, bias, res, g, b, rows, H, 1e-12f, NLPD_DTYPE_F32};
            nlpd_cpu_layer_norm(&ln);
            double t1 = now();
            nlpd_cpu_act(ffn, (size_t)rows * F, NLPD_ACT_GELU);
            double t2 = now();
            nlpd_cpu_softmax_masked(sc, rows, S, NULL);
            double t3 = now();
            t[0][r] = t1 - t0, t[1][r] = t2 - t1, t[2][r] = t3 - t2;
        }
        for (int k = 0; k < 3; k++) {
            qsort(t[k], RUNS, sizeof(double), cmp);
            med[level][k] = t[k][RUNS / 2];
        }
    }
    static const char *const ops[] = {"layer_norm 4096x768 (+res+bias)", "gelu 4096x3072", "softmax 4096x128"};
    printf("%-32s %12s %12s %12s %10s\n", "op (1 thread, median of 15)", "scalar ms", "avx2 ms", "avx512 ms",
           "512/avx2");
    for (int k = 0; k < 3; k++) {
        printf("%-32s", ops[k]);
        for (int l = 0; l < 3; l++)
            if (have[l])
                printf(" %12.2f", med[l][k] * 1e3);
            else
                printf(" %12s", "-");
        if (have[1] && have[2])
            printf(" %9.2fx", med[1][k] / med[2][k]);
        printf("\n");
    }
    printf("best path here: %s (the avx512f path runs the AVX2 layer norm: its 512-bit one was slower)\n",
           names[have[2]   ? 2
                 : have[1] ? 1
                           : 0]);
    free(x), free(res), free(y), free(g), free(b), free(bias), free(ffn), free(sc);
    return 0;
}
