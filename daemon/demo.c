/* `nlpd demo`: the whole loop in one process. The daemon runs on its embedded broker; sample records
 * are produced to the input topic; the enriched records and then the dead letters are consumed back and
 * printed as JSON lines (stdout); then a summary of what the stages found (stderr). */
#include "demo.h"

#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "kafka.h"
#include "log.h"
#include "metrics.h"
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

/* What the stages wrote into the enriched records, for the summary. */
struct demo_lang {
    char code[16];
    long n;
};

struct demo_tally {
    struct demo_lang lang[64];
    size_t nlang;
    long moderated, flagged, positive, negative, other_sentiment, entities, translated;
};

static void tally_record(struct demo_tally *t, const void *data, size_t len)
{
    json_t *r = json_loadb(data, len, 0, NULL);
    const char *code = json_string_value(json_object_get(json_object_get(r, "lang"), "code"));
    if (code) {
        size_t i = 0;
        while (i < t->nlang && strcmp(t->lang[i].code, code) != 0)
            i++;
        if (i == t->nlang && t->nlang < sizeof t->lang / sizeof t->lang[0])
            snprintf(t->lang[t->nlang++].code, sizeof t->lang[0].code, "%s", code);
        if (i < t->nlang)
            t->lang[i].n++;
    }
    json_t *mod = json_object_get(r, "moderation");
    if (json_is_object(mod)) {
        t->moderated++;
        t->flagged += json_is_true(json_object_get(mod, "flagged"));
    }
    const char *label = json_string_value(json_object_get(json_object_get(r, "sentiment"), "label"));
    if (label && !strcmp(label, "positive"))
        t->positive++;
    else if (label && !strcmp(label, "negative"))
        t->negative++;
    else if (label)
        t->other_sentiment++;
    t->entities += (long)json_array_size(json_object_get(r, "entities"));
    t->translated += json_is_object(json_object_get(r, "translation"));
    json_decref(r);
}

static int by_count(const void *a, const void *b)
{
    long na = ((const struct demo_lang *)a)->n, nb = ((const struct demo_lang *)b)->n;
    return (na < nb) - (na > nb);
}

/* The stage that rejected a dead letter (its nlpd.stage header), "?" without one. */
static const char *dead_stage(const rd_kafka_message_t *m, char *dst, size_t cap)
{
    rd_kafka_headers_t *h = NULL;
    const void *v = NULL;
    size_t len = 0;
    snprintf(dst, cap, "?");
    if (rd_kafka_message_headers(m, &h) == RD_KAFKA_RESP_ERR_NO_ERROR &&
        rd_kafka_header_get_last(h, "nlpd.stage", &v, &len) == RD_KAFKA_RESP_ERR_NO_ERROR && v)
        snprintf(dst, cap, "%.*s", (int)len, (const char *)v);
    return dst;
}

/* The stages of the configuration, in order ("langid -> moderation -> sentiment"). */
static size_t stage_chain(const struct nlpd_config *cfg, char *out, size_t cap)
{
    size_t n = 0, len = 0;
    out[0] = '\0';
    for (int i = 0; cfg->pipeline && i < config_setting_length(cfg->pipeline); i++) {
        const char *name = NULL;
        config_setting_t *st = config_setting_get_elem(cfg->pipeline, (unsigned)i);
        if (!config_setting_lookup_string(st, "name", &name))
            config_setting_lookup_string(st, "stage", &name);
        int w = snprintf(out + len, cap - len, "%s%s", n ? " -> " : "", name ? name : "?");
        if (w < 0 || (size_t)w >= cap - len)
            break;
        len += (size_t)w;
        n++;
    }
    return n;
}

static void print_summary(const struct nlpd_config *cfg, struct demo_tally *t, long sent, long out, long dead,
                          const struct nlpd_label_counts *reasons)
{
    char chain[512];
    size_t nstages = stage_chain(cfg, chain, sizeof chain);
    fprintf(stderr, "demo: %ld records: %ld enriched, %ld dead letters", sent, out, dead);
    for (size_t i = 0; i < reasons->n; i++)
        fprintf(stderr, "%s%s: %llu", i ? ", " : " (rejected by ", reasons->c[i].label,
                (unsigned long long)reasons->c[i].n);
    fprintf(stderr, "%s\n", reasons->n ? ")" : "");
    fprintf(stderr, "demo: %zu stages: %s\n", nstages, chain);
    if (t->nlang) {
        qsort(t->lang, t->nlang, sizeof t->lang[0], by_count);
        fprintf(stderr, "demo: languages:");
        for (size_t i = 0; i < t->nlang && i < 12; i++)
            fprintf(stderr, " %s %ld%s", t->lang[i].code, t->lang[i].n, i + 1 < t->nlang ? "," : "");
        if (t->nlang > 12)
            fprintf(stderr, " and %zu more", t->nlang - 12);
        fprintf(stderr, "\n");
    }
    if (t->moderated)
        fprintf(stderr, "demo: moderation: %ld of %ld records flagged\n", t->flagged, t->moderated);
    if (t->positive + t->negative + t->other_sentiment)
        fprintf(stderr, "demo: sentiment: %ld positive, %ld negative%s (only where its `when` held)\n", t->positive,
                t->negative, t->other_sentiment ? ", others" : "");
    if (t->entities)
        fprintf(stderr, "demo: ner: %ld entities\n", t->entities);
    if (t->translated)
        fprintf(stderr, "demo: translate: %ld records translated\n", t->translated);
    fprintf(stderr, "demo: for NER and translation, put a Hugging Face folder in models/ and add a stage, e.g. "
                    "{ stage = \"ner\"; model = \"models/<folder>\"; } (README \"Stages\"), then nlpd demo -c FILE\n");
}

/* Appends a dead letter (its nlpd.* headers and the value) as one JSON line to b. */
static void dead_letter_line(struct nlpd_buf *b, const rd_kafka_message_t *m)
{
    rd_kafka_headers_t *h = NULL;
    nlpd_buf_puts(b, "{\"dead_letter\":{");
    if (rd_kafka_message_headers(m, &h) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        const char *name;
        const void *val;
        size_t len;
        for (size_t i = 0; rd_kafka_header_get_all(h, i, &name, &val, &len) == RD_KAFKA_RESP_ERR_NO_ERROR; i++) {
            if (strncmp(name, "nlpd.", 5) != 0)
                continue;
            nlpd_buf_json_string(b, name, strlen(name));
            nlpd_buf_puts(b, ":");
            nlpd_buf_json_string(b, val ? val : "", val ? len : 0);
            nlpd_buf_puts(b, ",");
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
        nlpd_buf_puts(b, "\"value\":");
        nlpd_buf_json_string(b, v, m->len);
        free(v);
    }
    nlpd_buf_puts(b, "}}\n");
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
    struct demo_tally tally = {0};
    struct nlpd_label_counts reasons = {0};
    struct nlpd_buf dead_lines = {0}; /* printed after the enriched records */
    if (prod && cons) {
        rd_kafka_poll_set_consumer(cons);
        rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(2);
        rd_kafka_topic_partition_list_add(topics, cfg->kafka.output_topic, RD_KAFKA_PARTITION_UA);
        rd_kafka_topic_partition_list_add(topics, cfg->kafka.dlq_topic, RD_KAFKA_PARTITION_UA);
        rd_kafka_subscribe(cons, topics);
        rd_kafka_topic_partition_list_destroy(topics);
        /* Joining the group takes a few seconds; produce once the daemon consumes. */
        if (!nlpd_daemon_wait_assigned(d, 30.0))
            nlpd_log(NLPD_LOG_WARNING, "demo", "the daemon has no partitions after 30 s; producing anyway");
        /* After the assignment the consumer still looks up its start offsets (the first fetch comes
         * about a second later on the embedded broker). */
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
                    dead_letter_line(&dead_lines, m);
                    char stage[64];
                    nlpd_label_counts_add(&reasons, dead_stage(m, stage, sizeof stage));
                    dead++;
                } else {
                    fwrite(m->payload, 1, m->len, stdout);
                    fputc('\n', stdout);
                    fflush(stdout);
                    tally_record(&tally, m->payload, m->len);
                    out++;
                }
            }
            rd_kafka_message_destroy(m);
        }
        if (sent >= 0 && out + dead < sent)
            nlpd_log(NLPD_LOG_ERR, "demo", "only %ld of %ld records came back within %.0f s", out + dead, sent,
                     DEMO_TIMEOUT_S);
    }
    fwrite(dead_lines.data ? dead_lines.data : "", 1, dead_lines.len, stdout);
    fflush(stdout);
    nlpd_buf_free(&dead_lines);
    if (cons) {
        rd_kafka_consumer_close(cons);
        rd_kafka_destroy(cons);
    }
    if (prod)
        rd_kafka_destroy(prod);
    nlpd_daemon_stop(d);
    pthread_join(th, NULL);
    nlpd_daemon_free(d);
    struct nlpd_stage_cache_stats cs[16];
    struct nlpd_cache_stats total;
    size_t ncs = nlpd_pipeline_cache_stats(p, cs, 16, &total);
    if (sent >= 0)
        print_summary(cfg, &tally, sent, out, dead, &reasons);
    /* Only a cache that served something is worth a line (a second run on a shared Redis). */
    for (size_t i = 0; i < ncs; i++)
        if (cs[i].hits)
            fprintf(stderr, "demo: cache %s: %llu hits, %llu misses\n", cs[i].stage, (unsigned long long)cs[i].hits,
                    (unsigned long long)cs[i].misses);
    return sent >= 0 && out + dead == sent && arg.rc == 0 ? 0 : 1;
}
