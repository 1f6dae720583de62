/* `nlpd demo`: the whole loop in one process. The daemon runs on its embedded broker; sample records
 * are produced to the input topic; the enriched records and dead letters are consumed back and printed
 * as JSON lines; then a summary of records in/out/dead-lettered, throughput and end-to-end latency. */
#include "demo.h"

#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "kafka.h"
#include "log.h"
#include "record.h"

#define DEMO_TIMEOUT_S 60.0

struct run_arg {
    struct nlpd_daemon *d;
    int rc;
};

static void *daemon_thread(void *arg)
{
    struct run_arg *a = arg;
    a->rc = nlpd_daemon_run(a->d, 1);
    return NULL;
}

static rd_kafka_t *client(rd_kafka_type_t type, const char *bootstraps, const char *group)
{
    char why[256];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    rd_kafka_conf_set(c, "bootstrap.servers", bootstraps, why, sizeof why);
    if (group) {
        rd_kafka_conf_set(c, "group.id", group, why, sizeof why);
        rd_kafka_conf_set(c, "auto.offset.reset", "earliest", why, sizeof why);
    }
    rd_kafka_t *rk = rd_kafka_new(type, c, why, sizeof why);
    if (!rk)
        nlpd_log(NLPD_LOG_ERR, "demo", "%s", why);
    return rk;
}

/* Produces every line of path to the input topic; returns the number produced or -1. */
static long produce_samples(rd_kafka_t *prod, const char *topic, const char *path)
{
    /* Learn the topic's partitions first: records are timestamped when produced, and would otherwise
     * count the producer's own metadata wait as end-to-end latency. */
    rd_kafka_topic_t *t = rd_kafka_topic_new(prod, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    if (t && rd_kafka_metadata(prod, 0, t, &md, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR)
        rd_kafka_metadata_destroy(md);
    if (t)
        rd_kafka_topic_destroy(t);
    FILE *f = fopen(path, "r");
    if (!f) {
        nlpd_log(NLPD_LOG_ERR, "demo", "cannot open %s: %m (run from the source tree, or give -i RECORDS)", path);
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    long count = 0;
    while ((n = getline(&line, &cap, f)) > 0) {
        if (line[n - 1] == '\n')
            n--;
        rd_kafka_resp_err_t err;
        while ((err = rd_kafka_producev(prod, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_VALUE(line, (size_t)n),
                                        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END)) ==
               RD_KAFKA_RESP_ERR__QUEUE_FULL)
            rd_kafka_poll(prod, 100);
        if (err) {
            nlpd_log(NLPD_LOG_ERR, "demo", "produce: %s", rd_kafka_err2str(err));
            break;
        }
        count++;
    }
    free(line);
    fclose(f);
    rd_kafka_flush(prod, 10000);
    return count;
}

static void print_dead_letter(const rd_kafka_message_t *m)
{
    struct nlpd_buf b = {0};
    rd_kafka_headers_t *h = NULL;
    nlpd_buf_puts(&b, "{\"dead_letter\":{");
    if (rd_kafka_message_headers(m, &h) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        const char *name;
        const void *val;
        size_t len;
        for (size_t i = 0; rd_kafka_header_get_all(h, i, &name, &val, &len) == RD_KAFKA_RESP_ERR_NO_ERROR; i++) {
            if (strncmp(name, "nlpd.", 5) != 0)
                continue;
            nlpd_buf_json_string(&b, name, strlen(name));
            nlpd_buf_puts(&b, ":");
            nlpd_buf_json_string(&b, val ? val : "", val ? len : 0);
            nlpd_buf_puts(&b, ",");
        }
    }
    /* The original bytes, shown as text with invalid UTF-8 replaced. */
    char *v = malloc(m->len + 1);
    if (v) {
        memcpy(v, m->payload ? m->payload : "", m->len);
        v[m->len] = '\0';
        long bad;
        while ((bad = nlpd_utf8_invalid_at(v, m->len)) >= 0)
            v[bad] = '?';
        nlpd_buf_puts(&b, "\"value\":");
        nlpd_buf_json_string(&b, v, m->len);
        free(v);
    }
    nlpd_buf_puts(&b, "}}\n");
    fwrite(b.data, 1, b.len, stdout);
    nlpd_buf_free(&b);
}

int nlpd_demo_kafka(const struct nlpd_config *cfg, struct nlpd_pipeline *p, const char *records)
{
    struct nlpd_error err = {0};
    struct nlpd_daemon *d = nlpd_daemon_new(cfg, p, &err);
    if (!d) {
        nlpd_log(NLPD_LOG_ERR, "demo", "%s", err.message);
        return 1;
    }
    struct run_arg arg = {d, 0};
    pthread_t th;
    if (pthread_create(&th, NULL, daemon_thread, &arg) != 0) {
        nlpd_daemon_free(d);
        return 1;
    }
    const char *bs = nlpd_daemon_bootstraps(d);
    rd_kafka_t *prod = client(RD_KAFKA_PRODUCER, bs, NULL);
    rd_kafka_t *cons = client(RD_KAFKA_CONSUMER, bs, "nlpd-demo-reader");
    long sent = -1, out = 0, dead = 0;
    double t0 = nlpd_now();
    if (prod && cons) {
        rd_kafka_poll_set_consumer(cons);
        rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(2);
        rd_kafka_topic_partition_list_add(topics, cfg->kafka.output_topic, RD_KAFKA_PARTITION_UA);
        rd_kafka_topic_partition_list_add(topics, cfg->kafka.dlq_topic, RD_KAFKA_PARTITION_UA);
        rd_kafka_subscribe(cons, topics);
        rd_kafka_topic_partition_list_destroy(topics);
        /* Joining the group takes a few seconds; start the clock once the daemon consumes. */
        if (!nlpd_daemon_wait_assigned(d, 30.0))
            nlpd_log(NLPD_LOG_WARNING, "demo", "the daemon has no partitions after 30 s; producing anyway");
        /* After the assignment the consumer still looks up its start offsets (the first fetch comes
         * about a second later on the embedded broker): measure the running loop, not its start. */
        struct timespec settle = {1, 500000000};
        nanosleep(&settle, NULL);
        t0 = nlpd_now();
        sent = produce_samples(prod, cfg->kafka.input_topics.items[0], records);
        while (sent >= 0 && out + dead < sent && nlpd_now() - t0 < DEMO_TIMEOUT_S) {
            rd_kafka_message_t *m = rd_kafka_consumer_poll(cons, 200);
            if (!m)
                continue;
            if (!m->err) {
                if (strcmp(rd_kafka_topic_name(m->rkt), cfg->kafka.dlq_topic) == 0) {
                    print_dead_letter(m);
                    dead++;
                } else {
                    fwrite(m->payload, 1, m->len, stdout);
                    fputc('\n', stdout);
                    out++;
                }
                fflush(stdout);
            }
            rd_kafka_message_destroy(m);
        }
        if (sent >= 0 && out + dead < sent)
            nlpd_log(NLPD_LOG_ERR, "demo", "only %ld of %ld records came back within %.0f s", out + dead, sent,
                     DEMO_TIMEOUT_S);
    }
    double elapsed = nlpd_now() - t0;
    if (cons) {
        rd_kafka_consumer_close(cons);
        rd_kafka_destroy(cons);
    }
    if (prod)
        rd_kafka_destroy(prod);
    nlpd_daemon_stop(d);
    pthread_join(th, NULL);
    struct nlpd_daemon_stats st;
    nlpd_daemon_get_stats(d, &st);
    nlpd_daemon_free(d);
    struct nlpd_stage_cache_stats cs[16];
    struct nlpd_cache_stats total;
    size_t ncs = nlpd_pipeline_cache_stats(p, cs, 16, &total);
    for (size_t i = 0; i < ncs; i++)
        fprintf(stderr, "demo: cache %s: %llu hits, %llu misses\n", cs[i].stage, (unsigned long long)cs[i].hits,
                (unsigned long long)cs[i].misses);
    if (ncs)
        fprintf(stderr, "demo: cache backend: %llu lookups, %llu errors, %.3f ms per lookup%s\n",
                (unsigned long long)total.lookups, (unsigned long long)total.errors,
                total.lookups ? total.lookup_seconds * 1e3 / (double)total.lookups : 0.0,
                total.breaker_open ? ", breaker open" : "");
    if (sent >= 0)
        fprintf(stderr,
                "demo: %ld records in, %ld enriched out, %ld dead-lettered in %.2f s (%.0f records/s); end-to-end latency p50 %.1f ms, p99 %.1f ms (record timestamp to broker ack)\n",
                sent, out, dead, elapsed, elapsed > 0 ? (double)(out + dead) / elapsed : 0.0, st.latency_p50_ms,
                st.latency_p99_ms);
    return sent >= 0 && out + dead == sent && arg.rc == 0 ? 0 : 1;
}
