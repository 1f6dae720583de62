/* The daemon's output (see kafka_internal.h): producing enriched records and dead letters, the producer's delivery
 * reports, the classification of produce errors, oversize dead letters (kafka.dlq_oversize) and the records waiting
 * for room in the producer's queue. Runs on the event loop. */
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kafka_internal.h"
#include "log.h"
#include "offsets.h"
#include "record.h"

/* ---- producing ---- */

void nlpd_kd_item_free(struct nlpd_daemon *d, struct kitem *it)
{
    struct kgen *g = it->gen;
    nlpd_item_clear(&it->item);
    nlpd_buf_free(&it->out);
    if (it->msg)
        rd_kafka_message_destroy(it->msg);
    free(it);
    nlpd_kd_gen_release(d, g);
}

static void add_header_str(rd_kafka_headers_t *h, const char *name, const char *value)
{
    rd_kafka_header_add(h, name, -1, value, -1);
}

static rd_kafka_headers_t *dead_letter_headers(const struct kitem *it)
{
    rd_kafka_headers_t *orig = NULL;
    rd_kafka_headers_t *h;
    if (rd_kafka_message_headers(it->msg, &orig) == RD_KAFKA_RESP_ERR_NO_ERROR && orig)
        h = rd_kafka_headers_copy(orig);
    else
        h = rd_kafka_headers_new(8);
    char num[32], when[64];
    add_header_str(h, "nlpd.error", it->item.rec.error ? it->item.rec.error : "unknown error");
    add_header_str(h, "nlpd.stage", it->item.rec.error_stage ? it->item.rec.error_stage : "nlpd");
    add_header_str(h, "nlpd.source.topic", rd_kafka_topic_name(it->msg->rkt));
    snprintf(num, sizeof num, "%d", (int)it->msg->partition);
    add_header_str(h, "nlpd.source.partition", num);
    snprintf(num, sizeof num, "%lld", (long long)it->msg->offset);
    add_header_str(h, "nlpd.source.offset", num);
    int64_t now = wall_ms();
    time_t secs = (time_t)(now / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t n = strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + n, sizeof when - n, ".%03dZ", (int)(now % 1000));
    add_header_str(h, "nlpd.time", when);
    return h;
}

/* Delivery and produce errors in three kinds (DESIGN.md §7): only an error about the record itself may turn it into
 * a dead letter; one about the topic, the cluster or the client stops the daemon without committing past the
 * record (every record would fail alike); anything else is transient and the record is produced again. */
enum produce_error { PERR_RETRY, PERR_RECORD, PERR_STOP };

static enum produce_error classify(rd_kafka_resp_err_t err)
{
    switch (err) {
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_INVALID_RECORD:
    case RD_KAFKA_RESP_ERR_INVALID_TIMESTAMP: return PERR_RECORD;
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_TRANSACTIONAL_ID_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_SASL_AUTHENTICATION_FAILED:
    case RD_KAFKA_RESP_ERR__AUTHENTICATION:
    case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
    case RD_KAFKA_RESP_ERR_UNSUPPORTED_VERSION:
    case RD_KAFKA_RESP_ERR_UNSUPPORTED_FOR_MESSAGE_FORMAT:
    case RD_KAFKA_RESP_ERR_INVALID_REQUIRED_ACKS:
    case RD_KAFKA_RESP_ERR__UNSUPPORTED_FEATURE:
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
    case RD_KAFKA_RESP_ERR__FATAL: return PERR_STOP;
    default: return PERR_RETRY;
    }
}

static int size_error(rd_kafka_resp_err_t err)
{
    return err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE || err == RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE;
}

/* What librdkafka counts against message.max.bytes besides the value: a record's fixed overhead (at most 36
 * bytes in v2), the key and the serialised headers. An upper bound. */
static size_t record_overhead(const rd_kafka_headers_t *h, size_t keylen)
{
    size_t n = 64 + keylen;
    const char *name;
    const void *val;
    size_t vlen;
    for (size_t i = 0; h && rd_kafka_header_get_all(h, i, &name, &val, &vlen) == RD_KAFKA_RESP_ERR_NO_ERROR; i++)
        n += strlen(name) + vlen + 10; /* two varints of at most 5 bytes */
    return n;
}

/* The value of a dead letter cut to fit the producer's limit; it ends on a UTF-8 character boundary, so that a
 * text record stays readable. */
static size_t cut_length(const struct nlpd_daemon *d, const struct kitem *it, const rd_kafka_headers_t *h)
{
    size_t over = record_overhead(h, it->msg->key_len), len = it->msg->len;
    if (d->max_msg <= over)
        return 0;
    if (len > d->max_msg - over)
        len = d->max_msg - over;
    const unsigned char *v = it->msg->payload;
    for (int i = 0; i < 3 && len > 0 && len < it->msg->len && (v[len] & 0xC0) == 0x80; i++)
        len--;
    return len;
}

/* A record whose dead letter the broker or the producer refused: its offset is committed without any copy. */
static void skip_record(struct nlpd_daemon *d, struct kitem *it, rd_kafka_resp_err_t err)
{
    nlpd_log(NLPD_LOG_ERR, "kafka", "%s[%d]@%lld skipped: its dead letter (%s) was refused by %s: %s",
             rd_kafka_topic_name(it->msg->rkt), (int)it->msg->partition, (long long)it->msg->offset,
             it->item.rec.error ? it->item.rec.error : "unknown error", d->cfg->kafka.dlq_topic, rd_kafka_err2str(err));
    d->dlq_refused++;
    int64_t commit;
    nlpd_offsets_done(it->tp, it->msg->offset, &commit);
    d->inflight--;
    d->inflight_bytes -= it->bytes;
    __atomic_add_fetch(&d->acked, 1, __ATOMIC_RELEASE);
    nlpd_kd_item_free(d, it);
}

enum refusal { REF_AGAIN, REF_DONE, REF_STOP };

/* A record-specific refusal of it: the output becomes a dead letter; a dead letter too large is cut (once);
 * after that, kafka.dlq_oversize decides: skip it (REF_DONE: it is freed) or stop (REF_STOP: the caller keeps it,
 * never to be committed). REF_AGAIN: produce it again, changed. */
static enum refusal refused(struct nlpd_daemon *d, struct kitem *it, rd_kafka_resp_err_t err)
{
    const char *policy = d->cfg->kafka.dlq_oversize;
    if (!it->dead) {
        nlpd_record_fail(&it->item.rec, "output", "output record rejected by the broker: %s", rd_kafka_err2str(err));
        it->dead = 1;
        return REF_AGAIN;
    }
    if (size_error(err) && !it->cut && strcmp(policy, "truncate") == 0) {
        it->cut = 1;
        nlpd_log(NLPD_LOG_WARNING, "kafka",
                 "dead letter of %s[%d]@%lld (%zu bytes) refused (%s): sending its first "
                 "bytes with nlpd.original_size",
                 rd_kafka_topic_name(it->msg->rkt), (int)it->msg->partition, (long long)it->msg->offset, it->msg->len,
                 rd_kafka_err2str(err));
        return REF_AGAIN;
    }
    if (strcmp(policy, "stop") == 0) {
        nlpd_kd_fail_fatal(d, "the dead-letter topic %s refuses %s[%d]@%lld (kafka.dlq_oversize = \"stop\"): %s",
                           d->cfg->kafka.dlq_topic, rd_kafka_topic_name(it->msg->rkt), (int)it->msg->partition,
                           (long long)it->msg->offset, rd_kafka_err2str(err));
        return REF_STOP;
    }
    skip_record(d, it, err);
    return REF_DONE;
}

/* Hands one record to the producer. Returns 0 when it is no longer the caller's (queued, or skipped), 1 when the
 * caller keeps it: the queue is full, or a fatal error stopped the daemon (then it is never committed). */
static int produce_one(struct nlpd_daemon *d, struct kitem *it)
{
    const struct nlpd_kafka_conf *k = &d->cfg->kafka;
again:;
    rd_kafka_headers_t *h;
    const void *value;
    size_t len;
    if (it->dead) {
        h = dead_letter_headers(it);
        value = it->msg->payload;
        len = it->msg->len;
        if (it->cut) {
            char num[32];
            snprintf(num, sizeof num, "%zu", it->msg->len);
            add_header_str(h, "nlpd.original_size", num);
            len = cut_length(d, it, h);
        }
    } else {
        rd_kafka_headers_t *orig = NULL;
        h = rd_kafka_message_headers(it->msg, &orig) == RD_KAFKA_RESP_ERR_NO_ERROR && orig ? rd_kafka_headers_copy(orig)
                                                                                           : NULL;
        value = it->out.data;
        len = it->out.len;
    }
    const char *topic = k->output_topic;
    if (it->dead)
        topic = k->dlq_topic;
    else if (it->route && !it->routed) /* output.routes; with copy, output_topic comes after */
        topic = it->route->topic;
    else if (!it->route && it->item.rec.route) /* a stage's choice */
        topic = it->item.rec.route;
    /* No copy flag: value and key stay valid (owned by the item) until the delivery report. */
    rd_kafka_resp_err_t err = rd_kafka_producev(
        d->producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_VALUE((void *)value, len),
        RD_KAFKA_V_KEY(it->msg->key, it->msg->key_len), RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_OPAQUE(it), RD_KAFKA_V_END);
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
        return 0;
    if (h)
        rd_kafka_headers_destroy(h);
    if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL)
        return 1;
    if (classify(err) == PERR_RECORD) { /* e.g. over message.max.bytes */
        enum refusal r = refused(d, it, err);
        if (r == REF_AGAIN)
            goto again;
        return r == REF_DONE ? 0 : 1;
    }
    nlpd_kd_fail_fatal(d, "cannot produce to %s: %s", topic, rd_kafka_err2str(err));
    return 1; /* kept, never acknowledged: its offset is never committed */
}

void nlpd_kd_push_pending(struct nlpd_daemon *d, struct kitem *it)
{
    it->next = NULL;
    if (d->pending_tail)
        d->pending_tail->next = it;
    else
        d->pending_head = it;
    d->pending_tail = it;
}

void nlpd_kd_produce_pending(struct nlpd_daemon *d)
{
    while (d->pending_head && !d->fatal) {
        struct kitem *it = d->pending_head;
        if (produce_one(d, it))
            break;
        d->pending_head = it->next;
        if (!d->pending_head)
            d->pending_tail = NULL;
    }
}

void nlpd_kd_produce(struct nlpd_daemon *d, struct kitem *it)
{
    if (d->pending_head || produce_one(d, it))
        nlpd_kd_push_pending(d, it);
}

static void record_latency(struct nlpd_daemon *d, const struct kitem *it)
{
    rd_kafka_timestamp_type_t tt;
    int64_t ts = rd_kafka_message_timestamp(it->msg, &tt);
    if (ts < 0)
        return;
    double ms = (double)(wall_ms() - ts);
    nlpd_histogram_observe(&d->e2e_ms, ms);
    nlpd_latency_add(&d->lat, ms);
}

static void count_dead(struct nlpd_daemon *d, const char *reason)
{
    nlpd_label_counts_add(&d->dead_by, reason ? reason : "nlpd");
}

static void count_routed(struct nlpd_daemon *d, const struct nlpd_route *r)
{
    size_t i = 0;
    while (i < d->nrouted && (strcmp(d->routed[i].route, r->name) || strcmp(d->routed[i].topic, r->topic)))
        i++;
    if (i == d->nrouted) {
        if (i == sizeof d->routed / sizeof d->routed[0])
            return; /* more routes than series: a configuration far beyond what routing is for */
        snprintf(d->routed[i].route, sizeof d->routed[i].route, "%s", r->name);
        snprintf(d->routed[i].topic, sizeof d->routed[i].topic, "%s", r->topic);
        d->nrouted++;
    }
    d->routed[i].n++;
}

/* Each dead letter at info with what finds it again (id, source topic[partition]@offset, stage, reason), at most
 * DEAD_LOG_MAX lines per DEAD_LOG_WINDOW seconds; the rest are counted in one line when the window ends. Runs on
 * the event-loop thread only (delivery reports), hence the plain statics. */
#define DEAD_LOG_MAX    20
#define DEAD_LOG_WINDOW 10.0
static void log_dead(const struct kitem *it)
{
    static double window_start;
    static unsigned long in_window, unlogged;
    double now = nlpd_now();
    if (now - window_start >= DEAD_LOG_WINDOW) {
        if (unlogged)
            nlpd_log(NLPD_LOG_INFO, "kafka",
                     "%lu more dead letter%s in %.0f s not logged one by one (see "
                     "nlpd_records_dead_lettered_total)",
                     unlogged, unlogged == 1 ? "" : "s", DEAD_LOG_WINDOW);
        window_start = now;
        in_window = unlogged = 0;
    }
    if (++in_window > DEAD_LOG_MAX) {
        unlogged++;
        return;
    }
    nlpd_log(NLPD_LOG_INFO, "kafka", "dead letter: id %.200s, %s[%d]@%lld, stage %s: %s",
             it->item.id ? it->item.id : "(none)", rd_kafka_topic_name(it->msg->rkt), (int)it->msg->partition,
             (long long)it->msg->offset, it->item.rec.error_stage ? it->item.rec.error_stage : "nlpd",
             it->item.rec.error ? it->item.rec.error : "unknown error");
}

static void delivered(struct nlpd_daemon *d, struct kitem *it)
{
    if (!it->dead && it->route && !it->routed) {
        count_routed(d, it->route);
        if (it->route->copy) { /* the route's copy is acknowledged: now the output topic's */
            it->routed = 1;
            if (d->closing)
                nlpd_kd_item_free(d, it); /* a forced stop: never acknowledged twice, so never committed */
            else
                nlpd_kd_produce(d, it);
            return;
        }
    }
    if (it->dead) {
        d->stats.dead_lettered++;
        count_dead(d, it->item.rec.error_stage);
        log_dead(it);
    } else {
        d->stats.produced++;
        if (it->item.rec.moderation.flagged)
            d->flagged++;
        record_latency(d, it);
    }
    int64_t commit;
    nlpd_offsets_done(it->tp, it->msg->offset, &commit); /* stored in batches by nlpd_kd_store_offsets() */
    d->inflight--;
    d->inflight_bytes -= it->bytes;
    __atomic_add_fetch(&d->acked, 1, __ATOMIC_RELEASE);
    nlpd_kd_item_free(d, it);
}

void nlpd_kd_dr_msg_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    struct nlpd_daemon *d = opaque;
    struct kitem *it = m->_private;
    (void)rk;
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        nlpd_label_counts_add(&d->produced_by, rd_kafka_topic_name(m->rkt)); /* every acknowledgement */
        delivered(d, it);
        return;
    }
    if (d->closing || m->err == RD_KAFKA_RESP_ERR__PURGE_QUEUE || m->err == RD_KAFKA_RESP_ERR__PURGE_INFLIGHT) {
        nlpd_kd_item_free(d, it); /* purged at a forced stop: never acknowledged, so never committed */
        return;
    }
    switch (classify(m->err)) {
    case PERR_RETRY:
        d->stats.produce_retries++;
        nlpd_log(NLPD_LOG_WARNING, "kafka", "delivery of %s[%d]@%lld failed (%s): producing it again",
                 rd_kafka_topic_name(it->msg->rkt), (int)it->msg->partition, (long long)it->msg->offset,
                 rd_kafka_err2str(m->err));
        nlpd_kd_produce(d, it);
        return;
    case PERR_RECORD:
        switch (refused(d, it, m->err)) {
        case REF_AGAIN: nlpd_kd_produce(d, it); return;
        case REF_DONE: return;
        case REF_STOP: break;
        }
        break;
    case PERR_STOP:
        nlpd_kd_fail_fatal(d, "%s refuses %s[%d]@%lld: %s", rd_kafka_topic_name(m->rkt),
                           rd_kafka_topic_name(it->msg->rkt), (int)it->msg->partition, (long long)it->msg->offset,
                           rd_kafka_err2str(m->err));
        break;
    }
    nlpd_kd_push_pending(d, it); /* kept after a fatal error: never produced again, never committed, freed at the end */
}
