/* tool_kafka: the Kafka peer of the integration tests (tests/integration/test_kafka.sh).
 *   tool_kafka mock PARTITIONS TOPIC[:PARTS]...   a 3-broker librdkafka mock cluster; prints the bootstrap list,
 *                                                 then obeys stdin: "down N", "up N", "quit" (EOF, SIGTERM: quit),
 *                                                 "reqerr APIKEY COUNT ERR" (the next COUNT requests of that
 *                                                 ApiKey fail with ERR), "reqclear APIKEY" (drops those left),
 *                                                 "topicerr TOPIC ERR" (metadata: the topic has ERR; 0 clears it)
 *   tool_kafka produce BOOTSTRAP TOPIC [--header-lines] [--key-lines] [--hex] [--partition N]
 *                                                 one record per stdin line (no newline); --header-lines: the line
 *                                                 starts with NAME=VALUE;NAME=VALUE...<TAB> (record headers, in
 *                                                 order; may be empty); --key-lines: then KEY<TAB>VALUE; --hex:
 *                                                 the value is written in hex (binary records); prints the number
 *                                                 acknowledged
 *   tool_kafka consume BOOTSTRAP TOPIC COUNT|all TIMEOUT_MS [--avro-out DIR]
 *                                                 every partition from the beginning, no group; one JSON line per
 *                                                 record; "all" stops at the end of every partition
 *   tool_kafka committed BOOTSTRAP GROUP TOPIC     the group's committed offsets: {"PARTITION": OFFSET, ...}
 *                                                 (-1: none), without joining the group */
#include <errno.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kafka_assign_all.h"

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
    if (level <= 3 || getenv("TOOL_KAFKA_DEBUG"))
        fprintf(stderr, "tool_kafka: rdkafka %s: %s\n", fac, buf);
}

static rd_kafka_conf_t *conf_new(const char *bootstrap)
{
    char why[512];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(c, quiet_log);
    if (bootstrap && rd_kafka_conf_set(c, "bootstrap.servers", bootstrap, why, sizeof why) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "tool_kafka: %s\n", why);
        exit(2);
    }
    return c;
}

static void set(rd_kafka_conf_t *c, const char *k, const char *v)
{
    char why[512];
    if (rd_kafka_conf_set(c, k, v, why, sizeof why) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "tool_kafka: %s=%s: %s\n", k, v, why);
        exit(2);
    }
}

/* ---- mock ---- */

static int cmd_mock(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: tool_kafka mock PARTITIONS TOPIC[:PARTS]...\n");
        return 2;
    }
    int parts = atoi(argv[0]);
    if (parts < 1) {
        fprintf(stderr, "tool_kafka: bad partition count %s\n", argv[0]);
        return 2;
    }
    char why[512];
    rd_kafka_conf_t *c = conf_new(NULL);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, why, sizeof why);
    if (!rk) {
        fprintf(stderr, "tool_kafka: %s\n", why);
        return 1;
    }
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, 3);
    if (!mc) {
        fprintf(stderr, "tool_kafka: cannot start the mock cluster\n");
        rd_kafka_destroy(rk);
        return 1;
    }
    for (int i = 1; i < argc; i++) {
        char name[512];
        int n = parts;
        snprintf(name, sizeof name, "%s", argv[i]);
        char *colon = strrchr(name, ':');
        if (colon) {
            *colon = '\0';
            n = atoi(colon + 1);
        }
        /* Replication 3: every broker holds a replica (the mock keeps one log per partition; leadership
         * does not move when a broker goes down, so its partitions wait for it to come back). */
        rd_kafka_resp_err_t e = rd_kafka_mock_topic_create(mc, name, n, 3);
        if (e) {
            fprintf(stderr, "tool_kafka: create %s: %s\n", name, rd_kafka_err2str(e));
            rd_kafka_mock_cluster_destroy(mc);
            rd_kafka_destroy(rk);
            return 1;
        }
    }
    printf("%s\n", rd_kafka_mock_cluster_bootstraps(mc));
    fflush(stdout);

    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    char line[256];
    size_t n = 0;
    while (!stop) {
        struct pollfd p = {0, POLLIN, 0};
        int r = poll(&p, 1, 200);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            continue;
        char ch;
        ssize_t got = read(0, &ch, 1);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            break; /* EOF */
        if (ch != '\n') {
            if (n < sizeof line - 1)
                line[n++] = ch;
            continue;
        }
        line[n] = '\0';
        n = 0;
        int id, api, cnt, code;
        char topic[256];
        if (sscanf(line, "reqerr %d %d %d", &api, &cnt, &code) == 3) { /* the next cnt requests of ApiKey api fail */
            rd_kafka_resp_err_t errs[64];
            cnt = cnt < 0 ? 0 : cnt > 64 ? 64 : cnt;
            for (int i = 0; i < cnt; i++)
                errs[i] = (rd_kafka_resp_err_t)code;
            rd_kafka_mock_push_request_errors_array(mc, (int16_t)api, (size_t)cnt, errs);
            fprintf(stderr, "tool_kafka: next %d request(s) of ApiKey %d fail with %s\n", cnt, api,
                    rd_kafka_err2str((rd_kafka_resp_err_t)code));
        } else if (sscanf(line, "reqclear %d", &api) == 1) {
            rd_kafka_mock_clear_request_errors(mc, (int16_t)api);
            fprintf(stderr, "tool_kafka: request errors of ApiKey %d cleared\n", api);
        } else if (sscanf(line, "topicerr %255s %d", topic, &code) == 2) { /* metadata: the topic has this error */
            rd_kafka_mock_topic_set_error(mc, topic, (rd_kafka_resp_err_t)code);
            fprintf(stderr, "tool_kafka: topic %s: %s\n", topic, rd_kafka_err2str((rd_kafka_resp_err_t)code));
        } else if (sscanf(line, "down %d", &id) == 1) {
            rd_kafka_resp_err_t e = rd_kafka_mock_broker_set_down(mc, id);
            fprintf(stderr, "tool_kafka: broker %d down: %s\n", id, rd_kafka_err2str(e));
        } else if (sscanf(line, "up %d", &id) == 1) {
            rd_kafka_resp_err_t e = rd_kafka_mock_broker_set_up(mc, id);
            fprintf(stderr, "tool_kafka: broker %d up: %s\n", id, rd_kafka_err2str(e));
        } else if (strcmp(line, "quit") == 0) {
            break;
        } else if (line[0]) {
            fprintf(stderr, "tool_kafka: unknown command: %s\n", line);
        }
    }
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(rk);
    return 0;
}

/* ---- produce ---- */

static long acked, failed;

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk, (void)opaque;
    if (m->err) {
        if (failed++ < 5)
            fprintf(stderr, "tool_kafka: delivery failed: %s\n", rd_kafka_err2str(m->err));
    } else {
        acked++;
    }
}

static int cmd_produce(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: tool_kafka produce BOOTSTRAP TOPIC [--key-lines] [--partition N]\n");
        return 2;
    }
    int key_lines = 0, hex = 0, header_lines = 0;
    int32_t partition = RD_KAFKA_PARTITION_UA;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--header-lines") == 0)
            header_lines = 1;
        else if (strcmp(argv[i], "--key-lines") == 0)
            key_lines = 1;
        else if (strcmp(argv[i], "--hex") == 0)
            hex = 1;
        else if (strcmp(argv[i], "--partition") == 0 && i + 1 < argc)
            partition = atoi(argv[++i]);
        else {
            fprintf(stderr, "tool_kafka: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    char why[512];
    rd_kafka_conf_t *c = conf_new(argv[0]);
    set(c, "linger.ms", "20");
    set(c, "enable.idempotence", "true");
    set(c, "sticky.partitioning.linger.ms", "0"); /* keyless records spread over every partition */
    set(c, "message.timeout.ms", "120000");
    set(c, "message.max.bytes", "10000000"); /* oversized records are test input */
    rd_kafka_conf_set_dr_msg_cb(c, dr_cb);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, why, sizeof why);
    if (!rk) {
        fprintf(stderr, "tool_kafka: %s\n", why);
        return 1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long sent = 0;
    int rc = 0;
    while ((len = getline(&line, &cap, stdin)) >= 0) {
        if (len > 0 && line[len - 1] == '\n')
            len--;
        const char *key = NULL, *val = line;
        size_t klen = 0, vlen = (size_t)len;
        rd_kafka_headers_t *hdrs = NULL;
        if (header_lines) {
            char *tab = memchr(line, '\t', (size_t)len);
            if (tab) {
                *tab = '\0';
                hdrs = rd_kafka_headers_new(4);
                for (char *save = NULL, *kv = strtok_r(line, ";", &save); kv; kv = strtok_r(NULL, ";", &save)) {
                    char *eq = strchr(kv, '=');
                    if (eq)
                        *eq = '\0';
                    rd_kafka_header_add(hdrs, kv, -1, eq ? eq + 1 : NULL, eq ? -1 : 0);
                }
                val = tab + 1;
                vlen = (size_t)len - (size_t)(val - line);
            }
        }
        if (key_lines) {
            char *tab = memchr(val, '\t', vlen);
            if (tab) {
                key = val;
                klen = (size_t)(tab - val);
                vlen -= klen + 1;
                val = tab + 1;
            }
        }
        if (hex) { /* decoded in place: the value only shrinks */
            size_t o = 0;
            for (size_t i = 0; i + 1 < vlen; i += 2) {
                unsigned b;
                if (sscanf(val + i, "%2x", &b) != 1)
                    break;
                ((char *)val)[o++] = (char)b;
            }
            vlen = o;
        }
        rd_kafka_resp_err_t e;
        for (;;) {
            e = hdrs ? rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(argv[1]), RD_KAFKA_V_PARTITION(partition),
                                         RD_KAFKA_V_VALUE((void *)val, vlen), RD_KAFKA_V_KEY((void *)key, klen),
                                         RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                         RD_KAFKA_V_END)
                     : rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(argv[1]), RD_KAFKA_V_PARTITION(partition),
                                         RD_KAFKA_V_VALUE((void *)val, vlen), RD_KAFKA_V_KEY((void *)key, klen),
                                         RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
            if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL)
                break;
            rd_kafka_poll(rk, 50);
        }
        if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
            hdrs = NULL; /* the producer owns them now */
        if (hdrs)
            rd_kafka_headers_destroy(hdrs);
        if (e) {
            fprintf(stderr, "tool_kafka: produce: %s\n", rd_kafka_err2str(e));
            rc = 1;
            break;
        }
        sent++;
        rd_kafka_poll(rk, 0);
    }
    free(line);
    rd_kafka_resp_err_t fe = rd_kafka_flush(rk, 120000);
    if (fe) {
        fprintf(stderr, "tool_kafka: flush: %s (%d still queued)\n", rd_kafka_err2str(fe), rd_kafka_outq_len(rk));
        rc = 1;
    }
    rd_kafka_poll(rk, 0);
    if (acked != sent)
        rc = 1;
    if (failed)
        fprintf(stderr, "tool_kafka: %ld delivery failure(s)\n", failed);
    printf("%ld\n", acked);
    fflush(stdout);
    rd_kafka_destroy(rk);
    return rc;
}

/* ---- consume ---- */

/* Valid UTF-8 as is; every byte of an invalid sequence becomes U+FFFD. */
static json_t *utf8_string(const char *s, size_t n)
{
    char *out = malloc(n * 3 + 1);
    size_t o = 0;
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        unsigned c = p[i];
        size_t len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
        int ok = len > 0 && i + len <= n;
        if (ok && len > 1) {
            unsigned cp = c & (0xFF >> (len + 1));
            for (size_t k = 1; k < len; k++) {
                if ((p[i + k] & 0xC0) != 0x80) {
                    ok = 0;
                    break;
                }
                cp = (cp << 6) | (p[i + k] & 0x3F);
            }
            if (ok && ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
                       cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)))
                ok = 0;
        }
        if (ok) {
            memcpy(out + o, p + i, len);
            o += len;
            i += len;
        } else {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        }
    }
    json_t *j = json_stringn(out, o);
    free(out);
    return j;
}

static json_t *hex_string(const void *data, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    char *out = malloc(n * 2 + 1);
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    json_t *j = json_stringn(out, n * 2);
    free(out);
    return j;
}

static int cmd_consume(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: tool_kafka consume BOOTSTRAP TOPIC COUNT|all TIMEOUT_MS [--avro-out DIR]\n");
        return 2;
    }
    const char *topic = argv[1];
    int all = strcmp(argv[2], "all") == 0;
    long want = all ? -1 : atol(argv[2]);
    double deadline = now_s() + atof(argv[3]) / 1e3;
    const char *avro_dir = NULL;
    for (int i = 4; i < argc; i++) {
        if (strcmp(argv[i], "--avro-out") == 0 && i + 1 < argc)
            avro_dir = argv[++i];
        else {
            fprintf(stderr, "tool_kafka: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    char why[512];
    rd_kafka_conf_t *c = conf_new(argv[0]);
    char group[64]; /* assign() needs a group id; nothing is committed and the group is never joined */
    snprintf(group, sizeof group, "tool_kafka-%d", (int)getpid());
    set(c, "group.id", group);
    set(c, "enable.auto.commit", "false");
    set(c, "enable.partition.eof", "true");
    set(c, "fetch.wait.max.ms", "10");
    set(c, "fetch.error.backoff.ms", "50");
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, why, sizeof why);
    if (!rk) {
        fprintf(stderr, "tool_kafka: %s\n", why);
        return 1;
    }
    int nparts = kafka_assign_all(rk, topic, deadline, &stop, "tool_kafka");
    if (!nparts) {
        rd_kafka_destroy(rk);
        return 1;
    }
    char *at_eof = calloc((size_t)nparts, 1);
    int eofs = 0;
    long got = 0;
    while (!stop && (all ? eofs < nparts : got < want) && now_s() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (!m)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            if (m->partition >= 0 && m->partition < nparts && !at_eof[m->partition]) {
                at_eof[m->partition] = 1;
                eofs++;
            }
            rd_kafka_message_destroy(m);
            continue;
        }
        if (m->err) {
            fprintf(stderr, "tool_kafka: consume: %s\n", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            continue;
        }
        if (m->partition >= 0 && m->partition < nparts && at_eof[m->partition]) {
            at_eof[m->partition] = 0; /* more arrived after an EOF */
            eofs--;
        }
        json_t *o = json_object();
        json_object_set_new(o, "partition", json_integer(m->partition));
        json_object_set_new(o, "offset", json_integer(m->offset));
        rd_kafka_timestamp_type_t tt;
        json_object_set_new(o, "timestamp", json_integer(rd_kafka_message_timestamp(m, &tt)));
        json_object_set_new(o, "key", m->key ? utf8_string(m->key, m->key_len) : json_null());
        json_object_set_new(o, "value", m->payload ? utf8_string(m->payload, m->len) : json_null());
        json_object_set_new(o, "value_hex", m->payload ? hex_string(m->payload, m->len) : json_null());
        json_t *hs = json_object();
        rd_kafka_headers_t *h = NULL;
        if (rd_kafka_message_headers(m, &h) == RD_KAFKA_RESP_ERR_NO_ERROR && h) {
            const char *name;
            const void *val;
            size_t vlen;
            for (size_t i = 0; rd_kafka_header_get_all(h, i, &name, &val, &vlen) == RD_KAFKA_RESP_ERR_NO_ERROR; i++)
                json_object_set_new(hs, name, val ? utf8_string(val, vlen) : json_null());
        }
        json_object_set_new(o, "headers", hs);
        if (avro_dir) {
            char path[4096];
            snprintf(path, sizeof path, "%s/%ld.bin", avro_dir, got);
            FILE *f = fopen(path, "wb");
            if (!f || (m->len && fwrite(m->payload, 1, m->len, f) != m->len)) {
                fprintf(stderr, "tool_kafka: %s: %s\n", path, strerror(errno));
                if (f)
                    fclose(f);
                json_decref(o);
                rd_kafka_message_destroy(m);
                break;
            }
            fclose(f);
            json_object_set_new(o, "file", json_string(strrchr(path, '/') + 1));
        }
        char *s = json_dumps(o, JSON_COMPACT);
        puts(s);
        free(s);
        json_decref(o);
        rd_kafka_message_destroy(m);
        got++;
    }
    fflush(stdout);
    int rc = all ? (eofs == nparts ? 0 : 1) : (got >= want ? 0 : 1);
    if (rc)
        fprintf(stderr, "tool_kafka: %ld record(s) from %s, %s\n", got, topic,
                all ? "not at the end of every partition before the timeout" : "fewer than asked before the timeout");
    free(at_eof);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return rc;
}

/* ---- committed ---- */

static int cmd_committed(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: tool_kafka committed BOOTSTRAP GROUP TOPIC\n");
        return 2;
    }
    char why[512];
    rd_kafka_conf_t *c = conf_new(argv[0]);
    set(c, "group.id", argv[1]);
    set(c, "enable.auto.commit", "false");
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, why, sizeof why);
    if (!rk) {
        fprintf(stderr, "tool_kafka: %s\n", why);
        return 1;
    }
    int nparts = 0, rc = 1;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, argv[2], NULL);
    const struct rd_kafka_metadata *md = NULL;
    if (rd_kafka_metadata(rk, 0, rkt, &md, 10000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        if (md->topic_cnt == 1 && !md->topics[0].err)
            nparts = md->topics[0].partition_cnt;
        rd_kafka_metadata_destroy(md);
    }
    rd_kafka_topic_destroy(rkt);
    if (nparts) {
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(nparts);
        for (int p = 0; p < nparts; p++)
            rd_kafka_topic_partition_list_add(l, argv[2], p);
        rd_kafka_resp_err_t e = rd_kafka_committed(rk, l, 20000);
        if (e) {
            fprintf(stderr, "tool_kafka: committed: %s\n", rd_kafka_err2str(e));
        } else {
            json_t *o = json_object();
            for (int i = 0; i < l->cnt; i++) {
                char k[16];
                snprintf(k, sizeof k, "%d", (int)l->elems[i].partition);
                json_object_set_new(o, k, json_integer(l->elems[i].err ? -2 : l->elems[i].offset));
            }
            char *s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
            puts(s);
            free(s);
            json_decref(o);
            rc = 0;
        }
        rd_kafka_topic_partition_list_destroy(l);
    } else {
        fprintf(stderr, "tool_kafka: no metadata for topic %s\n", argv[2]);
    }
    fflush(stdout);
    rd_kafka_destroy(rk);
    return rc;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOFBF, 1 << 16);
    if (argc >= 2 && strcmp(argv[1], "mock") == 0)
        return cmd_mock(argc - 2, argv + 2);
    if (argc >= 2 && strcmp(argv[1], "produce") == 0)
        return cmd_produce(argc - 2, argv + 2);
    if (argc >= 2 && strcmp(argv[1], "consume") == 0)
        return cmd_consume(argc - 2, argv + 2);
    if (argc >= 2 && strcmp(argv[1], "committed") == 0)
        return cmd_committed(argc - 2, argv + 2);
    fprintf(stderr, "usage: tool_kafka mock|produce|consume|committed ... (see the source)\n");
    return 2;
}
