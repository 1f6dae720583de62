/* `nlpd replay`: reads the dead-letter topic from the beginning (or a group's committed offsets) up to the high
 * watermarks taken at start, and produces each matching dead letter's original value, key and headers (without the
 * nlpd.* ones written by kafka_output.c, with nlpd.replayed added) to --to or to its nlpd.source.topic. */
#include "cmd_replay.h"

#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "diag.h"

struct replay_opts {
    const char *config, *from, *to, *reason, *stage, *group;
    int64_t since_ms, until_ms; /* -1: none */
    long long limit;            /* -1: none */
    int dry_run;
};

struct replay_counts {
    uint64_t read, matched, produced, skipped_filter, unreplayable, acked, failed;
};

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: nlpd replay -c FILE [--from TOPIC] [--to TOPIC] [--reason TEXT] [--stage NAME]\n"
                 "                   [--since TIME] [--until TIME] [--limit N] [--group GROUP] [--dry-run]\n"
                 "  TIME: 2026-12-07, 2026-12-07T10:00:00[.123][Z] (UTC), or @UNIX_SECONDS\n");
}

/* "YYYY-MM-DD[THH:MM[:SS[.fff]]][Z]" (UTC) or "@SECONDS" -> milliseconds since the epoch; -1 when malformed.
 * Also reads the nlpd.time header, which kafka_output.c writes in this format. */
static int64_t parse_time(const char *s)
{
    if (s[0] == '@') {
        char *end;
        long long v = strtoll(s + 1, &end, 10);
        return end == s + 1 || *end || v < 0 ? -1 : (int64_t)v * 1000;
    }
    struct tm tm = {0};
    int n = 0, ms = 0;
    if (sscanf(s, "%4d-%2d-%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &n) != 3 || n != 10)
        return -1;
    const char *p = s + n;
    if (*p == 'T' || *p == ' ') {
        int k = 0;
        if (sscanf(p + 1, "%2d:%2d%n", &tm.tm_hour, &tm.tm_min, &k) != 2 || k != 5)
            return -1;
        p += 1 + k;
        if (*p == ':') {
            if (sscanf(p + 1, "%2d%n", &tm.tm_sec, &k) != 1 || k != 2)
                return -1;
            p += 1 + k;
            if (*p == '.') {
                int digits = 0;
                for (p++; *p >= '0' && *p <= '9'; p++, digits++)
                    if (digits < 3)
                        ms = ms * 10 + (*p - '0');
                if (!digits)
                    return -1;
                for (; digits < 3; digits++)
                    ms *= 10;
            }
        }
    }
    if (*p == 'Z')
        p++;
    if (*p || tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 ||
        tm.tm_min > 59 || tm.tm_sec > 60)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t t = timegm(&tm);
    return t < 0 ? -1 : (int64_t)t * 1000 + ms;
}

static int parse_args(int argc, char **argv, struct replay_opts *o)
{
    o->since_ms = o->until_ms = -1;
    o->limit = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        const char **str = !strcmp(a, "-c") || !strcmp(a, "--config") ? &o->config
                           : !strcmp(a, "--from")                     ? &o->from
                           : !strcmp(a, "--to")                       ? &o->to
                           : !strcmp(a, "--reason")                   ? &o->reason
                           : !strcmp(a, "--stage")                    ? &o->stage
                           : !strcmp(a, "--group")                    ? &o->group
                                                                      : NULL;
        if (!strcmp(a, "--dry-run")) {
            o->dry_run = 1;
            continue;
        }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            exit(0);
        }
        int is_time = !strcmp(a, "--since") || !strcmp(a, "--until");
        if (!str && !is_time && strcmp(a, "--limit") != 0) {
            fprintf(stderr, "nlpd replay: unexpected argument '%s'\n", a);
            return -1;
        }
        if (!v || !*v) {
            fprintf(stderr, "nlpd replay: %s needs a value\n", a);
            return -1;
        }
        i++;
        if (str) {
            *str = v;
        } else if (is_time) {
            int64_t t = parse_time(v);
            if (t < 0) {
                fprintf(stderr, "nlpd replay: %s '%s': not a time (2026-12-07T10:00:00Z, 2026-12-07 or @SECONDS)\n", a,
                        v);
                return -1;
            }
            *(a[2] == 's' ? &o->since_ms : &o->until_ms) = t;
        } else {
            char *end;
            o->limit = strtoll(v, &end, 10);
            if (end == v || *end || o->limit < 1) {
                fprintf(stderr, "nlpd replay: --limit '%s': not a positive integer\n", v);
                return -1;
            }
        }
    }
    if (!o->config) {
        fprintf(stderr, "nlpd replay: -c FILE is required\n");
        return -1;
    }
    return 0;
}

static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    if (level <= 3)
        fprintf(stderr, "nlpd replay: kafka %s: %s\n", fac, buf);
}

static int set(rd_kafka_conf_t *c, const char *k, const char *v)
{
    char why[512];
    if (rd_kafka_conf_set(c, k, v, why, sizeof why) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "nlpd replay: %s = \"%s\": %s\n", k, v, why);
        return -1;
    }
    return 0;
}

/* The config's properties first (security and the like), then what replay needs. */
static rd_kafka_t *client_new(const struct nlpd_config *cfg, rd_kafka_type_t type, const char *group, void *opaque,
                              void (*dr)(rd_kafka_t *, const rd_kafka_message_t *, void *))
{
    char why[512];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(c, log_cb);
    int bad = 0;
    for (size_t i = 0; i < cfg->kafka.properties.n; i++)
        bad |= set(c, cfg->kafka.properties.from[i], cfg->kafka.properties.to[i]);
    bad |= set(c, "bootstrap.servers", cfg->kafka.brokers) | set(c, "client.id", "nlpd-replay");
    if (type == RD_KAFKA_CONSUMER) {
        bad |= set(c, "group.id", group) | set(c, "enable.auto.commit", "false") |
               set(c, "enable.auto.offset.store", "false") | set(c, "enable.partition.eof", "true") |
               set(c, "auto.offset.reset", "earliest");
    } else {
        bad |= set(c, "enable.idempotence", "true");
        rd_kafka_conf_set_opaque(c, opaque);
        rd_kafka_conf_set_dr_msg_cb(c, dr);
    }
    if (bad) {
        rd_kafka_conf_destroy(c);
        return NULL;
    }
    rd_kafka_t *rk = rd_kafka_new(type, c, why, sizeof why);
    if (!rk)
        fprintf(stderr, "nlpd replay: %s\n", why);
    return rk;
}

static void delivered(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    struct replay_counts *n = opaque;
    (void)rk;
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        n->acked++;
    } else if (n->failed++ < 10) {
        fprintf(stderr, "nlpd replay: delivery to %s failed: %s\n", rd_kafka_topic_name(m->rkt),
                rd_kafka_err2str(m->err));
    }
}

/* A header's last value as a NUL-terminated string in buf (cut to cap - 1 bytes); NULL when absent. */
static const char *header(rd_kafka_headers_t *h, const char *name, char *buf, size_t cap)
{
    const void *v;
    size_t len;
    if (!h || rd_kafka_header_get_last(h, name, &v, &len) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return NULL;
    if (len >= cap)
        len = cap - 1;
    if (len)
        memcpy(buf, v, len);
    buf[len] = '\0';
    return buf;
}

struct replay {
    const struct replay_opts *o;
    const char *from;
    rd_kafka_t *producer;
    struct replay_counts n;
};

static int matches(const struct replay *r, const rd_kafka_message_t *m, rd_kafka_headers_t *h)
{
    char reason[4096], stage[256], when[64];
    const struct replay_opts *o = r->o;
    if (o->reason) {
        const char *s = header(h, "nlpd.error", reason, sizeof reason);
        if (!s || !strstr(s, o->reason))
            return 0;
    }
    if (o->stage) {
        const char *s = header(h, "nlpd.stage", stage, sizeof stage);
        if (!s || strcmp(s, o->stage) != 0)
            return 0;
    }
    if (o->since_ms >= 0 || o->until_ms >= 0) {
        /* when the record was dead-lettered: nlpd.time, else the dead letter's own timestamp */
        const char *s = header(h, "nlpd.time", when, sizeof when);
        rd_kafka_timestamp_type_t tt;
        int64_t t = s ? parse_time(s) : -1;
        if (t < 0)
            t = rd_kafka_message_timestamp(m, &tt);
        if (t < 0 || (o->since_ms >= 0 && t < o->since_ms) || (o->until_ms >= 0 && t >= o->until_ms))
            return 0;
    }
    return 1;
}

/* One matching dead letter: produced (or listed with --dry-run), or counted as unreplayable with the reason. */
static void replay_one(struct replay *r, const rd_kafka_message_t *m, rd_kafka_headers_t *h)
{
    char src[512], size[32], why[600] = "";
    const char *dest = r->o->to ? r->o->to : header(h, "nlpd.source.topic", src, sizeof src);
    if (header(h, "nlpd.original_size", size, sizeof size))
        snprintf(why, sizeof why,
                 "its value was cut to fit the dead-letter topic (nlpd.original_size %s): the "
                 "original is lost",
                 size);
    else if (!dest || !*dest)
        snprintf(why, sizeof why, "no nlpd.source.topic header (give --to TOPIC)");
    if (*why) {
        r->n.unreplayable++;
        fprintf(stderr, "nlpd replay: %s[%d]@%lld not replayed: %s\n", r->from, (int)m->partition, (long long)m->offset,
                why);
        return;
    }
    if (r->o->dry_run) {
        char reason[1024], stage[256];
        json_t *j = json_pack("{s:i, s:I, s:s, s:s?, s:s?}", "partition", (int)m->partition, "offset",
                              (json_int_t)m->offset, "to", dest, "stage", header(h, "nlpd.stage", stage, sizeof stage),
                              "reason", header(h, "nlpd.error", reason, sizeof reason));
        char *s = j ? json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
        if (s)
            puts(s);
        free(s);
        json_decref(j);
        return;
    }
    rd_kafka_headers_t *out = rd_kafka_headers_new(8);
    const char *name;
    const void *val;
    size_t vlen;
    for (size_t i = 0; h && rd_kafka_header_get_all(h, i, &name, &val, &vlen) == RD_KAFKA_RESP_ERR_NO_ERROR; i++)
        if (strncmp(name, "nlpd.", 5) != 0)
            rd_kafka_header_add(out, name, -1, val, (ssize_t)vlen);
    char origin[600];
    snprintf(origin, sizeof origin, "%s[%d]@%lld", r->from, (int)m->partition, (long long)m->offset);
    rd_kafka_header_add(out, "nlpd.replayed", -1, origin, -1);
    for (;;) {
        rd_kafka_resp_err_t err =
            rd_kafka_producev(r->producer, RD_KAFKA_V_TOPIC(dest), RD_KAFKA_V_VALUE(m->payload, m->len),
                              RD_KAFKA_V_KEY(m->key, m->key_len), RD_KAFKA_V_HEADERS(out),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            r->n.produced++;
            break;
        }
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL || stop_flag) {
            rd_kafka_headers_destroy(out);
            r->n.failed++;
            fprintf(stderr, "nlpd replay: cannot produce %s to %s: %s\n", origin, dest, rd_kafka_err2str(err));
            break;
        }
        rd_kafka_poll(r->producer, 100);
    }
    rd_kafka_poll(r->producer, 0);
}

static int partition_count(rd_kafka_t *rk, const char *topic, int64_t timeout_ms)
{
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
        const struct rd_kafka_metadata *md = NULL;
        int n = 0;
        rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, 2000);
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            if (md->topic_cnt == 1)
                err = md->topics[0].err, n = md->topics[0].partition_cnt;
            rd_kafka_metadata_destroy(md);
        }
        rd_kafka_topic_destroy(rkt);
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR && n > 0)
            return n;
        clock_gettime(CLOCK_MONOTONIC, &t);
        if (stop_flag || (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 > timeout_ms) {
            fprintf(stderr, "nlpd replay: no metadata for topic %s: %s\n", topic,
                    err ? rd_kafka_err2str(err) : "no partitions");
            return -1;
        }
        struct timespec nap = {0, 200000000};
        nanosleep(&nap, NULL);
    }
}

/* Reads every partition from its start (the group's committed offset, or the beginning) to the high watermark
 * taken before; next[p] ends as the offset after the last record read. Returns 0, or -1 after a message. */
static int read_all(struct replay *r, rd_kafka_t *c, int nparts, int64_t *next, int64_t timeout_ms)
{
    int64_t *hi = calloc((size_t)nparts, sizeof *hi);
    char *done = calloc((size_t)nparts, 1);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(nparts);
    int left = 0, rc = 0;
    for (int p = 0; p < nparts; p++)
        rd_kafka_topic_partition_list_add(l, r->from, p);
    if (r->o->group) {
        rd_kafka_resp_err_t err = rd_kafka_committed(c, l, (int)timeout_ms);
        if (err) {
            fprintf(stderr, "nlpd replay: committed offsets of group %s: %s\n", r->o->group, rd_kafka_err2str(err));
            rc = -1;
            goto out;
        }
    }
    for (int p = 0; p < nparts; p++) {
        int64_t lo;
        rd_kafka_resp_err_t err = rd_kafka_query_watermark_offsets(c, r->from, p, &lo, &hi[p], (int)timeout_ms);
        if (err) {
            fprintf(stderr, "nlpd replay: offsets of %s[%d]: %s\n", r->from, p, rd_kafka_err2str(err));
            rc = -1;
            goto out;
        }
        int64_t start = r->o->group && l->elems[p].offset >= 0 ? l->elems[p].offset : lo;
        l->elems[p].offset = start > lo ? start : RD_KAFKA_OFFSET_BEGINNING;
        next[p] = start > lo ? start : lo;
        done[p] = next[p] >= hi[p];
        left += !done[p];
    }
    rd_kafka_resp_err_t err = rd_kafka_assign(c, l);
    if (err) {
        fprintf(stderr, "nlpd replay: assign %s: %s\n", r->from, rd_kafka_err2str(err));
        rc = -1;
        goto out;
    }
    struct timespec last, t;
    clock_gettime(CLOCK_MONOTONIC, &last);
    while (left > 0 && !stop_flag && (r->o->limit < 0 || (long long)r->n.matched < r->o->limit)) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 100);
        if (r->producer)
            rd_kafka_poll(r->producer, 0);
        clock_gettime(CLOCK_MONOTONIC, &t);
        if (!m) {
            if ((t.tv_sec - last.tv_sec) * 1000 + (t.tv_nsec - last.tv_nsec) / 1000000 > timeout_ms) {
                fprintf(stderr, "nlpd replay: no progress reading %s for %lld ms: stopping\n", r->from,
                        (long long)timeout_ms);
                rc = -1;
                break;
            }
            continue;
        }
        last = t;
        int p = m->partition;
        if (p < 0 || p >= nparts || done[p]) {
            rd_kafka_message_destroy(m);
            continue;
        }
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            done[p] = 1, left--; /* the tail up to the watermark may be gone (retention, compaction) */
        } else if (m->err) {
            fprintf(stderr, "nlpd replay: reading %s[%d]: %s\n", r->from, p, rd_kafka_message_errstr(m));
        } else if (m->offset < hi[p]) {
            rd_kafka_headers_t *h = NULL;
            if (rd_kafka_message_headers(m, &h) != RD_KAFKA_RESP_ERR_NO_ERROR)
                h = NULL;
            r->n.read++;
            if (!matches(r, m, h)) {
                r->n.skipped_filter++;
            } else {
                r->n.matched++;
                replay_one(r, m, h);
            }
            next[p] = m->offset + 1;
            if (next[p] >= hi[p])
                done[p] = 1, left--;
        } else {
            done[p] = 1, left--;
        }
        rd_kafka_message_destroy(m);
    }
out:
    rd_kafka_topic_partition_list_destroy(l);
    free(hi);
    free(done);
    return rc;
}

static int commit(struct replay *r, rd_kafka_t *c, int nparts, const int64_t *next)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(nparts);
    for (int p = 0; p < nparts; p++)
        rd_kafka_topic_partition_list_add(l, r->from, p)->offset = next[p];
    rd_kafka_resp_err_t err = rd_kafka_commit(c, l, 0);
    rd_kafka_topic_partition_list_destroy(l);
    if (err)
        fprintf(stderr, "nlpd replay: commit for group %s: %s\n", r->o->group, rd_kafka_err2str(err));
    return err ? -1 : 0;
}

int nlpd_cmd_replay(int argc, char **argv)
{
    struct replay_opts o = {0};
    if (parse_args(argc, argv, &o) < 0) {
        usage(stderr);
        return 2;
    }
    struct nlpd_diag diag = {0};
    struct nlpd_config *cfg = nlpd_config_load(o.config, &diag);
    if (!cfg || diag.n) {
        nlpd_diag_print(&diag, stderr);
        nlpd_diag_free(&diag);
        nlpd_config_free(cfg);
        return 1;
    }
    if (!cfg->has_kafka || strcmp(cfg->kafka.brokers, "embedded") == 0) {
        fprintf(stderr, "nlpd replay: %s: %s\n", o.config,
                cfg->has_kafka ? "kafka.brokers is \"embedded\": that broker lives only inside a running nlpd"
                               : "no kafka section");
        nlpd_config_free(cfg);
        return 1;
    }
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    struct replay r = {.o = &o, .from = o.from ? o.from : cfg->kafka.dlq_topic};
    char group[64];
    snprintf(group, sizeof group, "nlpd-replay-%d", (int)getpid()); /* assign() needs one; never joined */
    int64_t timeout_ms = cfg->kafka.startup_timeout_ms;
    rd_kafka_t *c = client_new(cfg, RD_KAFKA_CONSUMER, o.group ? o.group : group, NULL, NULL);
    r.producer = o.dry_run ? NULL : client_new(cfg, RD_KAFKA_PRODUCER, NULL, &r.n, delivered);
    int rc = 1, nparts = -1;
    int64_t *next = NULL;
    if (c && (o.dry_run || r.producer) && (nparts = partition_count(c, r.from, timeout_ms)) > 0) {
        next = calloc((size_t)nparts, sizeof *next);
        int read_rc = read_all(&r, c, nparts, next, timeout_ms);
        while (r.producer && rd_kafka_outq_len(r.producer) > 0) /* each message ends by message.timeout.ms */
            rd_kafka_flush(r.producer, 1000);
        int all_ok =
            read_rc == 0 && !stop_flag && !r.n.unreplayable && !r.n.failed && (o.dry_run || r.n.acked == r.n.matched);
        const char *committed = "";
        if (o.group && !o.dry_run)
            committed = all_ok ? (commit(&r, c, nparts, next) == 0 ? ", committed" : (all_ok = 0, ", commit failed"))
                               : ", not committed";
        printf("replay %s -> %s: read %llu, matched %llu, %s %llu, skipped by filter %llu, unreplayable %llu, "
               "failed %llu%s%s\n",
               r.from, o.to ? o.to : "nlpd.source.topic", (unsigned long long)r.n.read, (unsigned long long)r.n.matched,
               o.dry_run ? "would produce" : "produced",
               (unsigned long long)(o.dry_run ? r.n.matched - r.n.unreplayable : r.n.acked),
               (unsigned long long)r.n.skipped_filter, (unsigned long long)r.n.unreplayable,
               (unsigned long long)r.n.failed,
               o.limit > 0 && (long long)r.n.matched >= o.limit ? ", limit reached" : "", committed);
        fflush(stdout);
        rc = all_ok ? 0 : 1;
    }
    free(next);
    if (c) {
        rd_kafka_consumer_close(c);
        rd_kafka_destroy(c);
    }
    if (r.producer)
        rd_kafka_destroy(r.producer);
    nlpd_config_free(cfg);
    return rc;
}
