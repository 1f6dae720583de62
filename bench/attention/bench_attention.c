/* ATTENTION alone on a backend, the fused CUDA kernel against the cuBLAS path (NLPD_CUDA_ATTENTION, README "Fused
 * attention"): median time of --runs runs of one op (after a warm-up), TFLOP/s of its two products (4 B S^2 H D),
 * and each path's normwise deviation from the CPU backend on the first sequence (all heads). Padding: sequence b
 * attends its first S - (b % 4) * S / 8 keys. A path that fails prints its error; the exit status is 1 when any path
 * failed or deviated past --tol. Usage:
 *   build/bench/bench_attention [--backend cuda] [--dtype fp16] [--batch 32] [--seq 128] [--heads 12] [--dim 64]
 *                               [--runs 20] [--half-io] [--tol T]
 * --half-io: qkv and out in the backend's half activation type (fused only: cublas must refuse it); fp32 dtype:
 * fused must refuse. Default --tol: 5e-3 (fp16, fp32 on TF32), 4e-2 (bf16). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nlpd_kernels.h"

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

static float h2f(enum nlpd_dtype t, uint16_t h)
{
    return t == NLPD_DTYPE_BF16 ? nlpd_kernels_bf16_to_f32(h) : nlpd_kernels_f16_to_f32(h);
}

static uint16_t f2h(enum nlpd_dtype t, float x)
{
    return t == NLPD_DTYPE_BF16 ? nlpd_kernels_f32_to_bf16(x) : nlpd_kernels_f32_to_f16(x);
}

int main(int argc, char **argv)
{
    const char *backend = "cuda", *dtype = "fp16";
    int B = 32, S = 128, NH = 12, D = 64, runs = 20, half_io = 0;
    double tol = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--half-io")) {
            half_io = 1;
            continue;
        }
        if (!v) {
            fprintf(stderr, "bench_attention: %s needs a value (see the usage at the top of the source)\n", a);
            return 2;
        }
        i++;
        if (!strcmp(a, "--backend"))
            backend = v;
        else if (!strcmp(a, "--dtype"))
            dtype = v;
        else if (!strcmp(a, "--batch"))
            B = atoi(v);
        else if (!strcmp(a, "--seq"))
            S = atoi(v);
        else if (!strcmp(a, "--heads"))
            NH = atoi(v);
        else if (!strcmp(a, "--dim"))
            D = atoi(v);
        else if (!strcmp(a, "--runs"))
            runs = atoi(v);
        else if (!strcmp(a, "--tol"))
            tol = atof(v);
        else {
            fprintf(stderr, "bench_attention: unknown option %s\n", a);
            return 2;
        }
    }
    int dt = nlpd_dtype_parse(dtype);
    if (tol < 0) /* test_cuda_ops' bounds: inputs and P rounded to 11 (fp16, TF32) or 8 (bf16) bits */
        tol = dt == NLPD_DTYPE_BF16 ? 4e-2 : 5e-3;
    if (dt < 0 || B <= 0 || S <= 0 || NH <= 0 || D <= 0 || runs <= 0) {
        fprintf(stderr, "bench_attention: bad --dtype, --batch, --seq, --heads, --dim or --runs\n");
        return 2;
    }
    struct nlpd_error err = {0};
    struct nlpd_backend_opts o = {.name = backend, .threads = 1, .dtype = (enum nlpd_dtype)dt, .dtype_strict = 1};
    struct nlpd_backend *be = nlpd_backend_new_opts(&o, &err), *cpu = nlpd_backend_new("cpu", 0, &err);
    if (!be || !cpu) {
        fprintf(stderr, "bench_attention: %s\n", err.message);
        return 1;
    }
    const enum nlpd_dtype io = half_io ? nlpd_backend_act_dtype(be) : NLPD_DTYPE_F32;
    if (half_io && io == NLPD_DTYPE_F32) {
        fprintf(stderr, "bench_attention: --half-io: backend %s keeps fp32 activations\n", backend);
        return 1;
    }
    const size_t es = io == NLPD_DTYPE_F32 ? 4 : 2, H = (size_t)NH * D, ldq = 3 * H, rows = (size_t)B * S;
    float *qkv = malloc(rows * ldq * 4), *ref = malloc((size_t)S * H * 4), *got = malloc((size_t)S * H * 4);
    uint16_t *qkv_h = malloc(rows * ldq * 2), *got_h = malloc((size_t)S * H * 2);
    int32_t *mask = malloc(rows * sizeof *mask);
    unsigned r = 11;
    for (size_t i = 0; i < rows * ldq; i++) {
        r = r * 1664525u + 1013904223u;
        qkv[i] = 4.0f * ((float)((r >> 8) & 0xffff) / 65536.0f - 0.5f);
        qkv_h[i] = f2h(io == NLPD_DTYPE_F32 ? NLPD_DTYPE_F16 : io, qkv[i]);
        if (io != NLPD_DTYPE_F32)
            qkv[i] = h2f(io, qkv_h[i]);
    }
    for (int b = 0; b < B; b++)
        for (int s = 0; s < S; s++)
            mask[(size_t)b * S + s] = s < S - (b % 4) * S / 8;
    struct nlpd_buffer bq, bo, bm, cq, co, cm;
    if (nlpd_backend_alloc(be, rows * ldq * es, &bq, &err) || nlpd_backend_alloc(be, rows * H * es, &bo, &err) ||
        nlpd_backend_alloc(be, rows * 4, &bm, &err) || nlpd_backend_alloc(cpu, (size_t)S * ldq * 4, &cq, &err) ||
        nlpd_backend_alloc(cpu, (size_t)S * H * 4, &co, &err) || nlpd_backend_alloc(cpu, (size_t)S * 4, &cm, &err)) {
        fprintf(stderr, "bench_attention: %s\n", err.message);
        return 1;
    }
    if (nlpd_backend_upload_err(&bq, 0, io == NLPD_DTYPE_F32 ? (void *)qkv : (void *)qkv_h, rows * ldq * es, &err) ||
        nlpd_backend_upload_err(&bm, 0, mask, rows * 4, &err) ||
        nlpd_backend_upload_err(&cq, 0, qkv, (size_t)S * ldq * 4, &err) ||
        nlpd_backend_upload_err(&cm, 0, mask, (size_t)S * 4, &err)) {
        fprintf(stderr, "bench_attention: %s\n", err.message);
        return 1;
    }
    struct nlpd_op op = {.kind = NLPD_OP_ATTENTION};
    op.u.attention = (struct nlpd_op_attention){.out = co.ptr,
                                                .qkv = cq.ptr,
                                                .mask = cm.ptr,
                                                .batch = 1,
                                                .seq = S,
                                                .heads = NH,
                                                .head_dim = D,
                                                .ld_qkv = (int)ldq,
                                                .ld_out = (int)H,
                                                .scale = 1.0f / sqrtf((float)D)};
    if (nlpd_backend_run(cpu, &op, &err) || nlpd_backend_download_err(&co, 0, ref, (size_t)S * H * 4, &err)) {
        fprintf(stderr, "bench_attention: cpu: %s\n", err.message);
        return 1;
    }
    double mx = 0;
    for (size_t i = 0; i < (size_t)S * H; i++)
        mx = fmax(mx, fabs(ref[i]));
    op.u.attention.out = bo.ptr;
    op.u.attention.qkv = bq.ptr;
    op.u.attention.mask = bm.ptr;
    op.u.attention.batch = B;
    op.u.attention.io_type = io;
    const double flop = 4.0 * B * (double)S * S * (double)H;
    printf("attention on %s (%s, io %s): batch %d seq %d heads %d x %d, %d runs\n", backend, dtype, nlpd_dtype_name(io),
           B, S, NH, D, runs);
    printf("%-7s %10s %9s %12s\n", "path", "median ms", "TFLOP/s", "normwise dev");
    static const char *const paths[] = {"fused", "cublas"};
    int bad = 0;
    double *t = malloc((size_t)runs * sizeof *t);
    for (int p = 0; p < 2; p++) {
        setenv("NLPD_CUDA_ATTENTION", paths[p], 1);
        /* warm-up, and the output checked */
        if (nlpd_backend_run(be, &op, &err) || nlpd_backend_sync(be, &err)) {
            const int expected = p == 1 ? half_io : dt == NLPD_DTYPE_F32;
            printf("%-7s %s%s\n", paths[p], expected ? "refused as expected: " : "", err.message);
            bad |= !expected;
            continue;
        }
        if (io == NLPD_DTYPE_F32) {
            nlpd_backend_download_err(&bo, 0, got, (size_t)S * H * 4, &err);
        } else {
            nlpd_backend_download_err(&bo, 0, got_h, (size_t)S * H * 2, &err);
            for (size_t i = 0; i < (size_t)S * H; i++)
                got[i] = h2f(io, got_h[i]);
        }
        double dev = 0;
        for (size_t i = 0; i < (size_t)S * H; i++) {
            double d = fabs((double)got[i] - ref[i]) / (fabs(ref[i]) + mx + 1e-30);
            dev = d == d ? fmax(dev, d) : INFINITY;
        }
        int failed = 0;
        for (int k = 0; k < runs && !failed; k++) {
            double t0 = now();
            failed = nlpd_backend_run(be, &op, &err) || nlpd_backend_sync(be, &err);
            t[k] = now() - t0;
        }
        if (failed) {
            printf("%-7s %s\n", paths[p], err.message);
            bad = 1;
            continue;
        }
        qsort(t, (size_t)runs, sizeof *t, cmp);
        double med = t[runs / 2];
        printf("%-7s %10.3f %9.2f %12.3g%s\n", paths[p], med * 1e3, flop / med * 1e-12, dev,
               dev <= tol ? "" : "  (over --tol)");
        bad |= !(dev <= tol);
    }
    unsetenv("NLPD_CUDA_ATTENTION");
    printf("%s\n", bad ? "FAIL" : "ok");
    free(t);
    free(qkv);
    free(qkv_h);
    free(ref);
    free(got);
    free(got_h);
    free(mask);
    nlpd_backend_buffer_free(&bq);
    nlpd_backend_buffer_free(&bo);
    nlpd_backend_buffer_free(&bm);
    nlpd_backend_buffer_free(&cq);
    nlpd_backend_buffer_free(&co);
    nlpd_backend_buffer_free(&cm);
    nlpd_backend_free(be);
    nlpd_backend_free(cpu);
    return bad;
}
