/* bench/kafka: end-to-end records/s through an embedded (mock) broker, nlpd with a pipeline against
 * a plain consume-and-produce passthrough with the same delivery discipline (idempotent producer,
 * offsets stored only after the broker acknowledged the copy), in one process, same input.
 * Usage: bench_kafka CONFIG RECORDS.jsonl [RUNS]  (CONFIG supplies the pipeline and batch settings). */
#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "config.h"
#include "kafka.h"
#include "log.h"
#include "pipe.h"
#include "pipeline.h"
#include "record.h"

#define PARTITIONS 8

static rd_kafka_t *client(rd_kafka_type_t type, const char *bs, const char *group, rd_kafka_conf_t *c)
{
    char why[256];
    if (!c)
        c = rd_kafka_conf_new();
    rd_kafka_conf_set(c, "bootstrap.servers", bs, why, sizeof why);
    if (group) {
        rd_kafka_conf_set(c, "group.id", group, why, sizeof why);
        rd_kafka_conf_set(c, "auto.offset.reset", "earliest", why, sizeof why);
        rd_kafka_conf_set(c, "enable.auto.offset.store", "false", why, sizeof why);
    } else {
        rd_kafka_conf_set(c, "linger.ms", "5", why, sizeof why);
        rd_kafka_conf_set(c, "enable.idempotence", "true", why, sizeof why);
    }
    rd_kafka_t *rk = rd_kafka_new(type, c, why, sizeof why);
    if (!rk) {
        fprintf(stderr, "bench_kafka: %s\n", why);
        exit(1);
    }
    return rk;
}

static long preload(const char *bs, const char *path)
{
    rd_kafka_t *p = client(RD_KAFKA_PRODUCER, bs, NULL, NULL);
    FILE *f = fopen(path, "r");
    if (!f) {
        perror(path);
        exit(1);
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    long count = 0;
    while ((n = getline(&line, &cap, f)) > 0) {
        n -= line[n - 1] == '\n';
        while (rd_kafka_producev(p, RD_KAFKA_V_TOPIC("in"), RD_KAFKA_V_VALUE(line, (size_t)n),
                                 RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                 RD_KAFKA_V_END) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
            rd_kafka_poll(p, 10);
        count++;
    }
    free(line);
    fclose(f);
    rd_kafka_flush(p, 60000);
    rd_kafka_destroy(p);
    return count;
}

/* The passthrough: consume, produce the same value, store the offset once acknowledged. */
struct pt {
    rd_kafka_t *cons;
    long acked;
};

static void pt_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    struct pt *pt = opaque;
    rd_kafka_message_t *src = m->_private;
    (void)rk;
    if (!src) /* the warm-up record */
        return;
    if (!m->err) {
        rd_kafka_offset_store(src->rkt, src->partition, src->offset);
        pt->acked++;
    }
    rd_kafka_message_destroy(src);
}

static double run_passthrough(const char *bs, long n, int round)
{
    struct pt pt = {0};
    char group[64];
    snprintf(group, sizeof group, "pt-%d", round);
    rd_kafka_conf_t *pc = rd_kafka_conf_new();
    rd_kafka_conf_set_dr_msg_cb(pc, pt_dr);
    rd_kafka_conf_set_opaque(pc, &pt);
    rd_kafka_t *prod = client(RD_KAFKA_PRODUCER, bs, NULL, pc);
    /* Warm up: producer id and the output topic's metadata first, as nlpd has them before its first record. */
    rd_kafka_producev(prod, RD_KAFKA_V_TOPIC("pt_out"), RD_KAFKA_V_VALUE("x", 1), RD_KAFKA_V_OPAQUE(NULL),
                      RD_KAFKA_V_END);
    rd_kafka_flush(prod, 10000);
    pt.acked = 0;
    pt.cons = client(RD_KAFKA_CONSUMER, bs, group, NULL);
    rd_kafka_poll_set_consumer(pt.cons);
    rd_kafka_topic_partition_list_t *t = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(t, "in", RD_KAFKA_PARTITION_UA);
    rd_kafka_subscribe(pt.cons, t);
    rd_kafka_topic_partition_list_destroy(t);
    double t0 = 0;
    while (pt.acked < n) {
        /* Drain what the consumer has, then serve delivery reports: no per-record wait. */
        int got = 0;
        rd_kafka_message_t *m;
        while (got < 10000 && (m = rd_kafka_consumer_poll(pt.cons, 0))) {
            if (m->err) {
                rd_kafka_message_destroy(m);
                continue;
            }
            if (t0 == 0)
                t0 = nlpd_now();
            while (rd_kafka_producev(prod, RD_KAFKA_V_TOPIC("pt_out"), RD_KAFKA_V_VALUE(m->payload, m->len),
                                     RD_KAFKA_V_OPAQUE(m), RD_KAFKA_V_END) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
                rd_kafka_poll(prod, 1);
            got++;
        }
        rd_kafka_poll(prod, got ? 0 : 1);
    }
    double secs = nlpd_now() - t0;
    rd_kafka_consumer_close(pt.cons);
    rd_kafka_destroy(pt.cons);
    rd_kafka_destroy(prod);
    return secs;
}

struct nlpd_run {
    struct nlpd_daemon *d;
};

static void *nlpd_thread(void *arg)
{
    nlpd_daemon_run(((struct nlpd_run *)arg)->d, 0);
    return NULL;
}

static double run_nlpd(const char *conf_path, const char *bs, long n, int round)
{
    char text[8192];
    FILE *f = fopen(conf_path, "r");
    if (!f) {
        perror(conf_path);
        exit(1);
    }
    size_t len = fread(text, 1, sizeof text - 1024, f);
    fclose(f);
    text[len] = '\0';
    snprintf(text + len, sizeof text - len,
             "\nkafka: { brokers = \"%s\"; group_id = \"nlpd-%d\"; input_topics = [\"in\"]; "
             "output_topic = \"out\"; dlq_topic = \"dlq\"; };\n",
             bs, round);
    struct nlpd_diag diag = {0};
    struct nlpd_config *cfg = nlpd_config_load_string(text, conf_path, &diag);
    struct nlpd_pipeline *p = cfg ? nlpd_pipeline_create(cfg, &diag) : NULL;
    struct nlpd_error err = {0};
    if (!p || nlpd_pipeline_start(p, (int)cfg->kernels.threads, &err) < 0) {
        nlpd_diag_print(&diag, stderr);
        fprintf(stderr, "bench_kafka: %s\n", err.message);
        exit(1);
    }
    struct nlpd_run r = {nlpd_daemon_new(cfg, p, &err)};
    if (!r.d) {
        fprintf(stderr, "bench_kafka: %s\n", err.message);
        exit(1);
    }
    pthread_t th;
    pthread_create(&th, NULL, nlpd_thread, &r);
    double t_first = 0;
    while ((long)nlpd_daemon_acked(r.d, &t_first) < n)
        usleep(1000);
    double secs = nlpd_now() - t_first;
    nlpd_daemon_stop(r.d);
    pthread_join(th, NULL);
    nlpd_daemon_free(r.d);
    nlpd_pipeline_free(p);
    nlpd_config_free(cfg);
    return secs;
}

/* `nlpd pipe` on the same records and pipeline, in this process: the reference for nlpd run's cost. */
static double run_pipe(const char *conf_path, const char *records)
{
    struct nlpd_diag diag = {0};
    struct nlpd_config *cfg = nlpd_config_load(conf_path, &diag);
    struct nlpd_pipeline *p = cfg ? nlpd_pipeline_create(cfg, &diag) : NULL;
    struct nlpd_error err = {0};
    if (!p || nlpd_pipeline_start(p, (int)cfg->kernels.threads, &err) < 0) {
        nlpd_diag_print(&diag, stderr);
        fprintf(stderr, "bench_kafka: %s\n", err.message);
        exit(1);
    }
    int in = open(records, O_RDONLY), out = open("/dev/null", O_WRONLY);
    struct nlpd_pipe_stats st;
    if (in < 0 || out < 0 || nlpd_pipe_run(cfg, p, in, out, &st) != 0) {
        fprintf(stderr, "bench_kafka: pipe mode failed on %s\n", records);
        exit(1);
    }
    close(in);
    close(out);
    nlpd_pipeline_free(p);
    nlpd_config_free(cfg);
    return st.seconds;
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
           (double)ru.ru_stime.tv_usec * 1e-6;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: bench_kafka CONFIG RECORDS.jsonl [RUNS]\n");
        return 2;
    }
    int runs = argc > 3 ? atoi(argv[3]) : 3;
    if (runs < 1 || runs > 50)
        runs = 3;
    nlpd_log_setup(NLPD_LOG_WARNING, NLPD_LOG_TEXT);
    char why[256];
    rd_kafka_conf_t *mc = rd_kafka_conf_new();
    rd_kafka_conf_set(mc, "log_level", "3", why, sizeof why);
    rd_kafka_t *mrk = rd_kafka_new(RD_KAFKA_PRODUCER, mc, why, sizeof why);
    rd_kafka_mock_cluster_t *mock = rd_kafka_mock_cluster_new(mrk, 1);
    const char *topics[] = {"in", "out", "dlq", "pt_out", "pt_warmup"};
    for (size_t i = 0; i < 5; i++)
        rd_kafka_mock_topic_create(mock, topics[i], PARTITIONS, 1);
    const char *bs = rd_kafka_mock_cluster_bootstraps(mock);
    long n = preload(bs, argv[2]);
    double pt[50], nl[50], pm[50];
    /* BENCH_ONLY=run|pipe|passthrough runs that one alone (for a profiler); the others read 1 s. */
    const char *only = getenv("BENCH_ONLY");
    for (int r = 0; r < runs; r++) {
        double c0 = cpu_seconds();
        pt[r] = !only || !strcmp(only, "passthrough") ? run_passthrough(bs, n, r) : 1;
        double c1 = cpu_seconds();
        nl[r] = !only || !strcmp(only, "run") ? run_nlpd(argv[1], bs, n, r) : 1;
        double c2 = cpu_seconds();
        pm[r] = !only || !strcmp(only, "pipe") ? run_pipe(argv[1], argv[2]) : 1;
        double c3 = cpu_seconds();
        fprintf(stderr,
                "run %d: passthrough %.3f s (process CPU %.2f s), nlpd run %.3f s (process CPU %.2f s), "
                "nlpd pipe %.3f s (process CPU %.2f s)\n",
                r + 1, pt[r], c1 - c0, nl[r], c2 - c1, pm[r], c3 - c2);
    }
    qsort(pt, (size_t)runs, sizeof *pt, cmp);
    qsort(nl, (size_t)runs, sizeof *nl, cmp);
    qsort(pm, (size_t)runs, sizeof *pm, cmp);
    double mp = pt[runs / 2], mn = nl[runs / 2], mpipe = pm[runs / 2];
    printf("records: %ld over %d partitions (embedded mock broker), median of %d runs, first consumed to last acked\n",
           n, PARTITIONS, runs);
    printf("%-44s %10s %12s %8s\n", "command", "median s", "records/s", "ratio");
    printf("%-44s %10.3f %12.0f %8.2f\n", "passthrough (consume, produce, ack, store)", mp, (double)n / mp, 1.0);
    printf("%-44s %10.3f %12.0f %8.2f\n", "nlpd run (config pipeline)", mn, (double)n / mn, mp / mn);
    printf("%-44s %10.3f %12.0f %8.2f\n", "nlpd pipe (same pipeline, same records)", mpipe, (double)n / mpipe,
           mp / mpipe);
    printf("nlpd run / nlpd pipe: %.2fx\n", mpipe / mn);
    rd_kafka_mock_cluster_destroy(mock);
    rd_kafka_destroy(mrk);
    return 0;
}
