/* tool_soak: the Kafka client of the chaos soak (tests/soak/soak.py); the mock cluster is tool_kafka's.
 *   tool_soak feed BOOTSTRAP TOPIC RATE      stdin lines KEY<TAB>VALUE, produced at about RATE records/s (0: as fast
 *                                            as it can); records up to 16 MB (the poison records); retries for 10
 *                                            minutes (brokers down); prints the number acknowledged
 *   tool_soak dump BOOTSTRAP TOPIC TIMEOUT_MS  every partition from the beginning to its end, one compact JSON line
 *                                            per record: {"p", "o", "ts", "key", "len"}, plus from an nlpd output
 *                                            value "id", "sp", "so", "sts" (its source partition, offset, timestamp)
 *                                            and from nlpd.* headers "hp", "ho", "err". Values are not printed, so
 *                                            a topic of 2 MB dead letters dumps in a few bytes a record. */
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../integration/kafka_assign_all.h"

#define MAX_RECORD_BYTES "16777216"

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void quiet_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    if (level <= 3 || getenv("TOOL_SOAK_DEBUG"))
        fprintf(stderr, "tool_soak: rdkafka %s: %s\n", fac, buf);
}

static void set(rd_kafka_conf_t *c, const char *k, const char *v)
{
    char why[512];
    if (rd_kafka_conf_set(c, k, v, why, sizeof why) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "tool_soak: %s=%s: %s\n", k, v, why);
        exit(2);
    }
}

static rd_kafka_t *client(rd_kafka_type_t type, rd_kafka_conf_t *c, const char *bootstrap)
{
    char why[512];
    rd_kafka_conf_set_log_cb(c, quiet_log);
    set(c, "bootstrap.servers", bootstrap);
    rd_kafka_t *rk = rd_kafka_new(type, c, why, sizeof why);
    if (!rk) {
        fprintf(stderr, "tool_soak: %s\n", why);
        exit(1);
    }
    return rk;
}

static void signals(void)
{
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

/* ---- feed ---- */

static long acked, failed;

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk, (void)opaque;
    if (!m->err)
        acked++;
    else if (failed++ < 5)
        fprintf(stderr, "tool_soak: delivery failed: %s\n", rd_kafka_err2str(m->err));
}

static int cmd_feed(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: tool_soak feed BOOTSTRAP TOPIC RATE\n");
        return 2;
    }
    double rate = atof(argv[2]);
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    set(c, "linger.ms", "5");
    set(c, "enable.idempotence", "true");
    set(c, "sticky.partitioning.linger.ms", "0");
    set(c, "message.max.bytes", MAX_RECORD_BYTES);
    set(c, "message.timeout.ms", "600000"); /* outlives every outage of the soak */
    rd_kafka_conf_set_dr_msg_cb(c, dr_cb);
    rd_kafka_t *rk = client(RD_KAFKA_PRODUCER, c, argv[0]);
    signals();

    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long sent = 0;
    int rc = 0;
    double t0 = now_s();
    while (!stop && (len = getline(&line, &cap, stdin)) >= 0) {
        if (len > 0 && line[len - 1] == '\n')
            line[--len] = '\0';
        char *tab = memchr(line, '\t', (size_t)len);
        const char *key = tab ? line : NULL, *val = tab ? tab + 1 : line;
        size_t klen = tab ? (size_t)(tab - line) : 0, vlen = (size_t)len - (tab ? klen + 1 : 0);
        if (rate > 0) { /* hold the pace: record n leaves at n / rate s */
            double due = t0 + (double)sent / rate - now_s();
            while (due > 0 && !stop) {
                rd_kafka_poll(rk, due > 0.05 ? 50 : (int)(due * 1000) + 1);
                due = t0 + (double)sent / rate - now_s();
            }
        }
        rd_kafka_resp_err_t e;
        while ((e = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(argv[1]), RD_KAFKA_V_VALUE((void *)val, vlen),
                                      RD_KAFKA_V_KEY((void *)key, klen), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                      RD_KAFKA_V_END)) == RD_KAFKA_RESP_ERR__QUEUE_FULL &&
               !stop)
            rd_kafka_poll(rk, 50);
        if (e) {
            fprintf(stderr, "tool_soak: produce: %s\n", rd_kafka_err2str(e));
            rc = 1;
            break;
        }
        sent++;
        rd_kafka_poll(rk, 0);
    }
    free(line);
    rd_kafka_resp_err_t fe = rd_kafka_flush(rk, stop ? 10000 : 600000);
    if (fe) {
        fprintf(stderr, "tool_soak: flush: %s (%d still queued)\n", rd_kafka_err2str(fe), rd_kafka_outq_len(rk));
        rc = 1;
    }
    rd_kafka_poll(rk, 0);
    if (acked != sent)
        rc = 1;
    if (failed)
        fprintf(stderr, "tool_soak: %ld delivery failure(s)\n", failed);
    printf("%ld\n", acked);
    fflush(stdout);
    rd_kafka_destroy(rk);
    return rc;
}

/* ---- dump ---- */

static json_t *header_int(rd_kafka_headers_t *h, const char *name)
{
    const void *v;
    size_t n;
    char buf[32];
    if (!h || rd_kafka_header_get_last(h, name, &v, &n) || !v || n == 0 || n >= sizeof buf)
        return NULL;
    memcpy(buf, v, n);
    buf[n] = '\0';
    char *end;
    long long x = strtoll(buf, &end, 10);
    return *end ? NULL : json_integer(x);
}

static void describe(json_t *o, const rd_kafka_message_t *m)
{
    json_object_set_new(o, "p", json_integer(m->partition));
    json_object_set_new(o, "o", json_integer(m->offset));
    rd_kafka_timestamp_type_t tt;
    json_object_set_new(o, "ts", json_integer(rd_kafka_message_timestamp(m, &tt)));
    json_object_set_new(o, "key", m->key ? json_stringn_nocheck(m->key, m->key_len) : json_null());
    json_object_set_new(o, "len", json_integer((json_int_t)m->len));
    /* An nlpd output record: its id and source (small values only; a dead letter is not parsed). */
    if (m->payload && m->len < 1 << 20) {
        json_t *v = json_loadb(m->payload, m->len, 0, NULL);
        json_t *src = v ? json_object_get(v, "source") : NULL;
        if (v && json_is_object(v)) {
            json_t *id = json_object_get(v, "id");
            if (id)
                json_object_set(o, "id", id);
        }
        if (json_is_object(src)) {
            json_object_set(o, "sp", json_object_get(src, "partition"));
            json_object_set(o, "so", json_object_get(src, "offset"));
            json_object_set(o, "sts", json_object_get(src, "timestamp_ms"));
        }
        json_decref(v);
    }
    rd_kafka_headers_t *h = NULL;
    if (rd_kafka_message_headers(m, &h) == RD_KAFKA_RESP_ERR_NO_ERROR && h) {
        json_t *x;
        if ((x = header_int(h, "nlpd.source.partition")))
            json_object_set_new(o, "hp", x);
        if ((x = header_int(h, "nlpd.source.offset")))
            json_object_set_new(o, "ho", x);
        const void *v;
        size_t n;
        if (!rd_kafka_header_get_last(h, "nlpd.error", &v, &n) && v)
            json_object_set_new(o, "err", json_stringn_nocheck(v, n < 200 ? n : 200));
    }
}

static int cmd_dump(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: tool_soak dump BOOTSTRAP TOPIC TIMEOUT_MS\n");
        return 2;
    }
    const char *topic = argv[1];
    double deadline = now_s() + atof(argv[2]) / 1e3;
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    char group[64]; /* assign() needs a group id; nothing is committed and the group is never joined */
    snprintf(group, sizeof group, "tool_soak-%d", (int)getpid());
    set(c, "group.id", group);
    set(c, "enable.auto.commit", "false");
    set(c, "enable.partition.eof", "true");
    set(c, "fetch.wait.max.ms", "10");
    set(c, "fetch.error.backoff.ms", "50");
    set(c, "receive.message.max.bytes", "100000000");
    rd_kafka_t *rk = client(RD_KAFKA_CONSUMER, c, argv[0]);
    signals();

    int nparts = kafka_assign_all(rk, topic, deadline, &stop, "tool_soak");
    if (!nparts) {
        rd_kafka_destroy(rk);
        return 1;
    }
    char *at_eof = calloc((size_t)nparts, 1);
    int eofs = 0;
    long got = 0;
    while (!stop && eofs < nparts && now_s() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (!m)
            continue;
        int known = m->partition >= 0 && m->partition < nparts;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            if (known && !at_eof[m->partition]) {
                at_eof[m->partition] = 1;
                eofs++;
            }
        } else if (m->err) {
            fprintf(stderr, "tool_soak: consume %s: %s\n", topic, rd_kafka_message_errstr(m));
        } else {
            if (known && at_eof[m->partition]) {
                at_eof[m->partition] = 0;
                eofs--;
            }
            json_t *o = json_object();
            describe(o, m);
            char *s = json_dumps(o, JSON_COMPACT);
            puts(s);
            free(s);
            json_decref(o);
            got++;
        }
        rd_kafka_message_destroy(m);
    }
    fflush(stdout);
    int rc = eofs == nparts ? 0 : 1;
    if (rc)
        fprintf(stderr, "tool_soak: %ld record(s) from %s, not at the end of every partition before the timeout\n", got,
                topic);
    free(at_eof);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return rc;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOFBF, 1 << 16);
    if (argc >= 2 && strcmp(argv[1], "feed") == 0)
        return cmd_feed(argc - 2, argv + 2);
    if (argc >= 2 && strcmp(argv[1], "dump") == 0)
        return cmd_dump(argc - 2, argv + 2);
    fprintf(stderr, "usage: tool_soak feed|dump ... (see the source)\n");
    return 2;
}
