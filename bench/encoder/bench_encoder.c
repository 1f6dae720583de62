/* nlpd side of bench/encoder: times nlpd_encoder_forward on one batch (median of RUNS after a warm-up), and
 * OpenBLAS sgemm alone on the same four matrix shapes of a layer, so the encoder's GFLOP/s can be read against
 * the GEMM ceiling of this machine. Writes the ids/mask it used and the logits for the PyTorch side.
 * usage: bench_encoder MODEL_DIR IDS_OUT LOGITS_OUT BATCH SEQ RUNS THREADS [BACKEND [DTYPE [CPU_GEMM]]]
 * BACKEND: cpu (default) | cuda | auto; DTYPE: fp32 (default) | fp16 | bf16 | int8; CPU_GEMM: auto (default) |
 * openblas | onednn. On CUDA the sgemm reference is
 * skipped (it measures the host CPU) and each timed run ends with the logits downloaded (a full sync).
 * BENCH_WARMUP: untimed forward passes before the timed ones (default 1; 0..100): a GPU's clocks, cuBLAS's
 * heuristics and a first-shape graph capture settle over the first few. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "encoder.h"

/* BENCH_CLOCK=cpu: the process's CPU time instead of wall time, for 1-thread comparisons on a shared machine
 * (time-slicing by other jobs does not count; cache and memory contention still do). */
static clockid_t bench_clock = CLOCK_MONOTONIC;

static double now(void)
{
    struct timespec ts;
    clock_gettime(bench_clock, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void log_backend(const char *line)
{
    fprintf(stderr, "%s\n", line);
}

int main(int argc, char **argv)
{
    nlpd_kernels_omp_env(argv); /* as nlpd does */
    const char *bc = getenv("BENCH_CLOCK");
    if (bc && !strcmp(bc, "cpu"))
        bench_clock = CLOCK_PROCESS_CPUTIME_ID;
    if (argc < 8 || argc > 11) {
        fprintf(stderr, "usage: %s MODEL_DIR IDS_OUT LOGITS_OUT BATCH SEQ RUNS THREADS [BACKEND [DTYPE [CPU_GEMM]]]\n",
                argv[0]);
        return 2;
    }
    int B = atoi(argv[4]), S = atoi(argv[5]), runs = atoi(argv[6]), threads = atoi(argv[7]);
    if (B <= 0 || S <= 0 || runs <= 0 || runs > 1000)
        return 2;
    struct nlpd_error err = {0};
    const char *backend = argc > 8 ? argv[8] : "cpu", *dtype = argc > 9 ? argv[9] : "fp32";
    int on_cpu = nlpd_backend_kind_parse(backend) == NLPD_BACKEND_CPU;
    int gemm = nlpd_cpu_gemm_parse(argc > 10 ? argv[10] : "auto");
    if (gemm < 0) {
        fprintf(stderr, "CPU_GEMM must be auto, openblas or onednn\n");
        return 2;
    }
    nlpd_kernels_set_cpu_gemm((enum nlpd_cpu_gemm)gemm);
    struct nlpd_encoder_opts opts = {.threads = threads, .backend = backend, .dtype = dtype};
    nlpd_kernels_set_logger(log_backend); /* which backend ran it, and why */
    double t0 = now();
    struct nlpd_encoder *enc = nlpd_encoder_load(argv[1], &opts, &err);
    if (!enc) {
        fprintf(stderr, "%s\n", err.message);
        return 1;
    }
    double load_s = now() - t0;
    const struct nlpd_hf_config *c = nlpd_encoder_config(enc);
    int32_t *buf = malloc(2 * (size_t)B * S * sizeof *buf), *ids = buf, *mask = buf + (size_t)B * S;
    unsigned r = 7;
    for (int i = 0; i < B * S; i++) {
        r = r * 1103515245u + 12345u;
        ids[i] = i % S == 0 ? 101 : 1000 + (int32_t)((r >> 8) % (unsigned)(c->vocab_size - 1000));
        mask[i] = 1;
    }
    FILE *f = fopen(argv[2], "wb");
    if (!f || fwrite(buf, sizeof *buf, 2 * (size_t)B * S, f) != 2 * (size_t)B * S || fclose(f))
        return 1;
    struct nlpd_encoder_ws *ws = nlpd_encoder_ws_new(enc, B, S, &err);
    int NL = nlpd_encoder_num_labels(enc);
    float *logits = malloc((size_t)B * NL * sizeof *logits);
    struct nlpd_encoder_input in = {B, S, ids, mask, NULL};
    struct nlpd_encoder_output out = {.logits = logits};
    const char *wu = getenv("BENCH_WARMUP");
    char *wend = NULL;
    long warmup = wu && *wu ? strtol(wu, &wend, 10) : 1;
    if ((wend && *wend) || warmup < 0 || warmup > 100) {
        fprintf(stderr, "BENCH_WARMUP must be an integer from 0 to 100, not '%s'\n", wu);
        return 2;
    }
    if (!ws) {
        fprintf(stderr, "workspace: %s\n", err.message);
        return 1;
    }
    for (long i = 0; i < warmup; i++)
        if (nlpd_encoder_forward(enc, ws, &in, &out, &err)) {
            fprintf(stderr, "warm-up %ld of %ld: %s\n", i + 1, warmup, err.message);
            return 1;
        }
    /* sgemm alone on one layer's shapes: [T,H]x[H,3H], [T,H]x[H,H], [T,H]x[H,I], [T,I]x[I,H]; timed between
     * the encoder runs so both see the same machine load */
    const int T = B * S, H = c->hidden_size, FF = c->intermediate_size;
    const int shapes[4][3] = {{T, 3 * H, H}, {T, H, H}, {T, FF, H}, {T, H, FF}};
    size_t maxa = (size_t)T * FF, maxb = (size_t)FF * 3 * H;
    float *a = malloc(maxa * sizeof *a), *b = malloc(maxb * sizeof *b), *cc = malloc((size_t)T * FF * 3 * sizeof *cc);
    for (size_t i = 0; i < maxa; i++)
        a[i] = (float)((i * 7919) % 1000) * 1e-3f - 0.5f;
    for (size_t i = 0; i < maxb; i++)
        b[i] = (float)((i * 104729) % 1000) * 1e-3f - 0.5f;
    double gflop = 0;
    for (int s = 0; s < 4; s++)
        gflop += 2.0 * shapes[s][0] * shapes[s][1] * shapes[s][2] * 1e-9;
    double *times = malloc((size_t)runs * sizeof *times), *gtimes = malloc((size_t)(runs + 1) * sizeof *gtimes);
    /* BENCH_SGEMM=0: no sgemm reference (bench/encoder/peers.py times engines, not the GEMM ceiling) */
    const char *sg = getenv("BENCH_SGEMM");
    int do_sgemm = on_cpu && !(sg && !strcmp(sg, "0"));
    for (int i = -1; i < runs; i++) { /* i = -1 warms sgemm up */
        t0 = now();
        for (int s = 0; s < 4 && do_sgemm; s++)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, shapes[s][0], shapes[s][1], shapes[s][2], 1.0f, a,
                        shapes[s][2], b, shapes[s][1], 0.0f, cc, shapes[s][1]);
        gtimes[i + 1] = now() - t0;
        if (i < 0)
            continue;
        t0 = now();
        if (nlpd_encoder_forward(enc, ws, &in, &out, &err)) { /* a failed run has no time to report */
            fprintf(stderr, "run %d of %d: %s\n", i + 1, runs, err.message);
            return 1;
        }
        times[i] = now() - t0;
    }
    for (size_t i = 0; i < (size_t)B * NL; i++)
        if (!isfinite(logits[i])) { /* an overflow in half precision: not a result */
            fprintf(stderr, "logit %zu of %zu is %g\n", i, (size_t)B * NL, (double)logits[i]);
            return 1;
        }
    f = fopen(argv[3], "wb");
    if (!f || fwrite(logits, sizeof *logits, (size_t)B * NL, f) != (size_t)B * NL || fclose(f))
        return 1;
    printf("{\"nlpd_times\": [");
    for (int i = 0; i < runs; i++)
        printf("%s%.6f", i ? ", " : "", times[i]);
    printf("], \"sgemm_gflops_runs\": [");
    for (int i = 1; i <= runs; i++)
        printf("%s%.3f", i > 1 ? ", " : "", do_sgemm ? gflop / gtimes[i] : 0.0);
    double enc_s = median(times, runs);
    double sgemm_s = median(gtimes + 1, runs);
    double flops = nlpd_encoder_flops(enc, B, S);
    printf("], \"nlpd_median_s\": %.6f, \"nlpd_seq_per_s\": %.3f, \"nlpd_gflops\": %.2f, \"sgemm_gflops\": %.2f, "
           "\"load_s\": %.3f, \"simd\": \"%s\", \"threads\": %d, \"gflop_per_batch\": %.2f, "
           "\"backend\": \"%s\", \"dtype\": \"%s\", \"cpu_gemm\": \"%s\", \"batch\": %d, \"seq\": %d, "
           "\"latency_ms\": %.3f, \"warmup\": %ld}\n",
           enc_s, B / enc_s, flops * 1e-9 / enc_s, do_sgemm ? gflop / sgemm_s : 0.0, load_s, nlpd_kernels_cpu_simd(),
           openblas_get_num_threads(), flops * 1e-9, backend, dtype, nlpd_cpu_gemm_name((enum nlpd_cpu_gemm)gemm), B, S,
           enc_s * 1e3, warmup);
    free(a);
    free(b);
    free(cc);
    free(times);
    free(gtimes);
    free(logits);
    free(buf);
    nlpd_encoder_ws_free(ws);
    nlpd_encoder_free(enc);
    return 0;
}
