/* The Kafka daemon (see kafka.h). The event-loop thread consumes, closes micro-batches, produces the
 * finished ones and handles delivery reports; worker threads decode, run the stages and encode. */
#include "kafka.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <fcntl.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "avro_codec.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "offsets.h"
#include "record.h"

#define TICK_MS 50
#define FATAL_CLOSE_S    5.0  /* after a fatal error, the most the group leave (and its commit) may take */
#define SHUTDOWN_SLACK_S 5.0  /* past the drain deadline, the most the clean-up may take before nlpd exits anyway */
#define POLL_BATCH 5000 /* consumer messages handled per wake-up before yielding to other events */
#define HOLD_PAUSE_S 1.0 /* input held back for a slow pipeline this long: pause the partitions too */

/* One configuration and its pipeline. A reload makes a new generation; the old one lives on (retired) until the
 * last record its pipeline processed is delivered and freed: records point into it (stage names, models). */
struct kgen {
    struct nlpd_config *cfg;
    struct nlpd_pipeline *p;
    int owned; /* cfg and p are the daemon's to free (else its creator's) */
    const struct nlpd_model_ref *models;
    size_t nmodels;
    struct nlpd_avro_out *avro_out;
    struct nlpd_avro_in *avro_in; /* points into cfg */
    size_t items;                 /* records handed to p and not yet freed */
    struct kgen *next;            /* retired list */
};

enum reload_result { RELOAD_APPLIED, RELOAD_INVALID, RELOAD_RESTART_REQUIRED, RELOAD_FAILED, RELOAD_NRESULTS };
static const char *const reload_result_names[] = {"applied", "invalid", "restart_required", "failed"};

struct kitem {
    struct nlpd_item item;
    struct kgen *gen;        /* the generation whose pipeline processes it; NULL before its batch is submitted */
    rd_kafka_message_t *msg; /* the consumed record, kept until its output is acknowledged */
    struct nlpd_tp *tp;
    size_t bytes;        /* counted in nlpd_daemon.inflight_bytes: value and key as consumed */
    struct nlpd_buf out; /* encoded output value; empty for a dead letter */
    int dead;            /* produce to the dead-letter topic */
    int cut;             /* the dead letter carries only the first bytes of the value (kafka.dlq_oversize) */
    struct kitem *next;  /* pending-produce list */
};

struct kbatch {
    struct nlpd_job job;
    struct nlpd_daemon *d;
    struct kgen *gen;
    size_t n, cap;
    struct kitem **items;
    struct nlpd_record **recs;
    struct kbatch *next;      /* done list */
    struct kbatch *held_next; /* waiting for room in the pipeline's queue */
};

/* Why the input is paused (DESIGN.md §8): each reason comes and goes on its own. */
enum flow_reason { FLOW_RECORDS, FLOW_BYTES, FLOW_PIPELINE, FLOW_PRODUCER, FLOW_DRAINING, FLOW_NREASONS };
static const char *const flow_reason_names[] = {"records", "bytes", "pipeline", "producer", "draining"};

struct nlpd_daemon {
    const struct nlpd_config *cfg; /* gen->cfg */
    struct nlpd_pipeline *p;       /* gen->p */
    struct kgen *gen;              /* current */
    struct kgen *retired;          /* replaced by a reload, with records still in flight */
    size_t batches_out;            /* closed (held or submitted), not yet back in process_done() */
    /* Closed batches the pipeline's queue had no room for, in order: the loop never waits on a worker. */
    struct kbatch *held_head, *held_tail;
    size_t nheld;

    /* SIGHUP reload: a thread loads and checks the file and builds the new pipeline (models included) while the
     * old one keeps running; then the loop stops polling, lets the old pipeline finish its batches, and swaps. */
    struct {
        pthread_t thread;
        int running;  /* the thread was started and not yet joined */
        int finished; /* under lock: the thread's result is ready */
        int again;    /* another SIGHUP arrived meanwhile */
        int swapping; /* next is ready: waiting for batches_out to reach 0 */
        enum reload_result result;
        struct kgen *next;
        struct nlpd_diag diag;
        char why[1024];
        uint64_t count[RELOAD_NRESULTS];
        double last_ok_wall; /* seconds since the epoch of the last applied configuration (start counts) */
        int last_ok;
    } rl;

    rd_kafka_t *mock_rk;
    rd_kafka_mock_cluster_t *mock;
    char *bootstraps;
    rd_kafka_t *consumer, *producer;
    rd_kafka_queue_t *cq, *pq;

    struct event_base *base;
    struct event *cq_ev, *pq_ev, *wake_ev, *batch_timer, *tick, *more_ev, *sigterm_ev, *sigint_ev, *sighup_ev;
    int cq_pipe[2], pq_pipe[2], wake_pipe[2];

    pthread_mutex_t lock; /* guards done_head/tail and stop_requested */
    struct kbatch *done_head, *done_tail;
    int stop_requested;

    struct kbatch *cur;
    struct nlpd_offsets *offsets;
    size_t inflight;
    uint64_t inflight_bytes; /* values and keys of the records in flight (flow.max_inflight_bytes) */
    unsigned flow_why;       /* FLOW_* bits: why the input is paused */
    double held_since;       /* when closed batches filled the hold (a slow pipeline) and polling stopped; 0: not */
    uint64_t flow_pauses[FLOW_NREASONS];
    struct kitem *pending_head, *pending_tail; /* produce refused (queue full): retried in order */
    int paused, draining, fatal, subscribed;
    int assigned;        /* partitions currently assigned; read from other threads (atomic) */
    int consumer_hung;   /* a close that missed the shutdown deadline still runs: leave the consumer alone */
    int closing;         /* nlpd_daemon_free: delivery reports only release their records */
    int abandon;         /* workers skip the stages of batches still queued (atomic): the daemon is going */
    size_t max_msg;      /* the producer's message.max.bytes */
    uint64_t dlq_refused; /* records skipped: not even a truncated dead letter was accepted */
    struct guard *guard;  /* bounds the shutdown (nlpd_daemon_run to nlpd_daemon_free) */
    uint64_t acked;      /* records delivered (output or dead letter); read from other threads (atomic) */
    double t_first_in;   /* when the first record was consumed */
    double drain_deadline;
    rd_kafka_resp_err_t last_error; /* logged once per change */
    int warned_route;

    struct nlpd_daemon_stats stats;
    struct nlpd_latency_sample lat; /* end to end, for the summary */
    double t_start;
    double watchdog_every, next_watchdog, last_status; /* systemd: seconds */
    struct nlpd_http *http;
    struct nlpd_histogram e2e_ms;   /* record timestamp -> broker ack of its output */
    struct nlpd_histogram queue_ms; /* consumed -> a worker starts its batch */
    struct {
        char topic[128];
        int32_t partition;
        int64_t lag;
    } lag[256]; /* consumer lag per assigned partition, from librdkafka's statistics */
    size_t nlag;
    struct nlpd_label_counts dead_by; /* by the failing stage ("input", "output", a stage name) */
    uint64_t status_consumed;
};

/* ---- small helpers ---- */

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int make_pipe(int fds[2])
{
    if (pipe(fds) < 0)
        return -1;
    for (int i = 0; i < 2; i++) {
        fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
        fcntl(fds[i], F_SETFD, FD_CLOEXEC);
    }
    return 0;
}

static void drain_fd(int fd)
{
    char buf[256];
    while (read(fd, buf, sizeof buf) > 0)
        ;
}

static void wake(struct nlpd_daemon *d)
{
    char c = 1;
    ssize_t w = write(d->wake_pipe[1], &c, 1); /* EAGAIN: a wake-up is already pending */
    (void)w;
}

static void fail_fatal(struct nlpd_daemon *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail_fatal(struct nlpd_daemon *d, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (!d->fatal)
        nlpd_log(NLPD_LOG_ERR, "kafka", "fatal: %s; stopping without committing past it", msg);
    d->fatal = 1;
    event_base_loopbreak(d->base);
}

/* ---- flow control ---- */

/* Polls the consumer again on the next loop iteration, after the other ready events: a zero timer,
 * not event_active(), which would run before the loop looks at its descriptors again and starve them. */
static void poll_again(struct nlpd_daemon *d)
{
    static const struct timeval now = {0, 0};
    evtimer_add(d->more_ev, &now);
}

static void set_paused(struct nlpd_daemon *d, int paused)
{
    if (d->paused == paused)
        return;
    rd_kafka_topic_partition_list_t *parts = NULL;
    if (rd_kafka_assignment(d->consumer, &parts) == RD_KAFKA_RESP_ERR_NO_ERROR && parts) {
        if (paused)
            rd_kafka_pause_partitions(d->consumer, parts);
        else
            rd_kafka_resume_partitions(d->consumer, parts);
        rd_kafka_topic_partition_list_destroy(parts);
    }
    d->paused = paused;
    char why[96] = "";
    for (int r = 0, n = 0; r < FLOW_NREASONS; r++)
        if (d->flow_why & (1u << r))
            n += snprintf(why + n, sizeof why - (size_t)n, "%s%s", n ? "," : "", flow_reason_names[r]);
    nlpd_log(NLPD_LOG_DEBUG, "kafka", "%s input partitions (%zu records, %llu bytes in flight%s%s)",
             paused ? "paused" : "resumed", d->inflight, (unsigned long long)d->inflight_bytes, paused ? "; " : "",
             why);
    if (!paused)
        poll_again(d);
}

/* Sets reason r at `on`, clears it at `off` (hysteresis: pausing drops librdkafka's prefetched messages). */
static void flow_reason(struct nlpd_daemon *d, enum flow_reason r, int on, int off)
{
    unsigned bit = 1u << r;
    if (on && !(d->flow_why & bit)) {
        d->flow_why |= bit;
        d->flow_pauses[r]++;
    } else if (off) {
        d->flow_why &= ~bit;
    }
}

/* A slow pipeline: once as many closed batches wait for room in its queue as the queue holds, the loop stops taking
 * records (librdkafka keeps its prefetch, which a pause would drop: the stages are often only briefly behind);
 * held back longer than HOLD_PAUSE_S, the partitions pause too, so that polling can serve the group again. Both end
 * once half the hold is handed on. Returns nonzero while records are held back. */
static int hold_input(struct nlpd_daemon *d)
{
    size_t queued, cap;
    nlpd_pipeline_queue(d->p, &queued, &cap);
    size_t hold = cap ? cap : 1;
    if (d->nheld >= hold && !d->held_since) {
        d->held_since = nlpd_now();
        d->flow_pauses[FLOW_PIPELINE]++;
    } else if (d->nheld <= hold / 2 && d->held_since) {
        d->held_since = 0;
        poll_again(d);
    }
    return d->held_since != 0;
}

/* Pause at max_inflight records or max_inflight_bytes (resuming at half), for a pipeline that stays behind (see
 * hold_input()), while the producer queue is full, and for good when draining. */
static void update_flow(struct nlpd_daemon *d)
{
    size_t hi = (size_t)d->cfg->flow.max_inflight;
    uint64_t hib = (uint64_t)d->cfg->flow.max_inflight_bytes;
    flow_reason(d, FLOW_RECORDS, d->inflight >= hi, d->inflight <= hi / 2);
    flow_reason(d, FLOW_BYTES, d->inflight_bytes >= hib, d->inflight_bytes <= hib / 2);
    if (hold_input(d) && nlpd_now() - d->held_since >= HOLD_PAUSE_S)
        d->flow_why |= 1u << FLOW_PIPELINE; /* counted when the hold began */
    else
        d->flow_why &= ~(1u << FLOW_PIPELINE);
    flow_reason(d, FLOW_PRODUCER, d->pending_head != NULL, !d->pending_head);
    flow_reason(d, FLOW_DRAINING, d->draining, !d->draining);
    set_paused(d, d->flow_why != 0);
}

/* A worker made room in a full pipeline queue (worker thread): the loop hands it the next held batch. */
static void on_pipeline_space(void *user)
{
    wake(user);
}

/* ---- producing ---- */

static void gen_free(struct kgen *g)
{
    if (!g)
        return;
    nlpd_avro_out_free(g->avro_out);
    nlpd_avro_in_free(g->avro_in);
    if (g->owned) {
        nlpd_pipeline_free(g->p);
        nlpd_config_free(g->cfg);
    } else if (g->p) {
        nlpd_pipeline_stop(g->p); /* its creator frees it */
    }
    free(g);
}

/* A retired generation goes when its last record does. */
static void gen_release(struct nlpd_daemon *d, struct kgen *g)
{
    if (!g || --g->items > 0 || g == d->gen)
        return;
    for (struct kgen **pp = &d->retired; *pp; pp = &(*pp)->next)
        if (*pp == g) {
            *pp = g->next;
            nlpd_log(NLPD_LOG_INFO, "main", "reload: the replaced pipeline's last record is delivered: freed");
            gen_free(g);
            return;
        }
}

static void item_free(struct nlpd_daemon *d, struct kitem *it)
{
    struct kgen *g = it->gen;
    nlpd_item_clear(&it->item);
    nlpd_buf_free(&it->out);
    if (it->msg)
        rd_kafka_message_destroy(it->msg);
    free(it);
    gen_release(d, g);
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
    item_free(d, it);
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
        fail_fatal(d, "the dead-letter topic %s refuses %s[%d]@%lld (kafka.dlq_oversize = \"stop\"): %s",
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
        h = rd_kafka_message_headers(it->msg, &orig) == RD_KAFKA_RESP_ERR_NO_ERROR && orig
                ? rd_kafka_headers_copy(orig)
                : NULL;
        value = it->out.data;
        len = it->out.len;
    }
    const char *topic = it->dead ? k->dlq_topic : k->output_topic;
    if (!it->dead && it->item.rec.moderation.route && it->item.rec.moderation.flagged) {
        if (k->flagged_topic)
            topic = k->flagged_topic;
        else if (!d->warned_route++)
            nlpd_log(NLPD_LOG_WARNING, "kafka", "moderation routes flagged records but kafka.flagged_topic is not set: "
                                                "they go to %s",
                     k->output_topic);
    }
    /* No copy flag: value and key stay valid (owned by the item) until the delivery report. */
    rd_kafka_resp_err_t err =
        rd_kafka_producev(d->producer, RD_KAFKA_V_TOPIC(topic),
                          RD_KAFKA_V_VALUE((void *)value, len), RD_KAFKA_V_KEY(it->msg->key, it->msg->key_len),
                          RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_OPAQUE(it), RD_KAFKA_V_END);
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
    fail_fatal(d, "cannot produce to %s: %s", topic, rd_kafka_err2str(err));
    return 1; /* kept, never acknowledged: its offset is never committed */
}

static void push_pending(struct nlpd_daemon *d, struct kitem *it)
{
    it->next = NULL;
    if (d->pending_tail)
        d->pending_tail->next = it;
    else
        d->pending_head = it;
    d->pending_tail = it;
}

static void produce_pending(struct nlpd_daemon *d)
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

static void produce(struct nlpd_daemon *d, struct kitem *it)
{
    if (d->pending_head || produce_one(d, it))
        push_pending(d, it);
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

static void delivered(struct nlpd_daemon *d, struct kitem *it)
{
    if (it->dead) {
        d->stats.dead_lettered++;
        count_dead(d, it->item.rec.error_stage);
    } else {
        d->stats.produced++;
        record_latency(d, it);
    }
    int64_t commit;
    nlpd_offsets_done(it->tp, it->msg->offset, &commit); /* stored in batches by store_offsets() */
    d->inflight--;
    d->inflight_bytes -= it->bytes;
    __atomic_add_fetch(&d->acked, 1, __ATOMIC_RELEASE);
    item_free(d, it);
}

static void add_offset(const char *topic, int32_t partition, int64_t offset, void *user)
{
    rd_kafka_topic_partition_list_add(user, topic, partition)->offset = offset;
}

/* Hands the moved watermarks to librdkafka, which commits them on its timer, at revocation and at close. */
static void store_offsets(struct nlpd_daemon *d)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(16);
    if (nlpd_offsets_flush(d->offsets, add_offset, l)) {
        rd_kafka_resp_err_t err = rd_kafka_offsets_store(d->consumer, l);
        for (int i = 0; err == RD_KAFKA_RESP_ERR_NO_ERROR && i < l->cnt; i++)
            err = l->elems[i].err;
        if (err && err != RD_KAFKA_RESP_ERR__STATE && err != RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION)
            nlpd_log(NLPD_LOG_WARNING, "kafka", "cannot store offsets: %s", rd_kafka_err2str(err));
    }
    rd_kafka_topic_partition_list_destroy(l);
}

static void dr_msg_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    struct nlpd_daemon *d = opaque;
    struct kitem *it = m->_private;
    (void)rk;
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        delivered(d, it);
        return;
    }
    if (d->closing || m->err == RD_KAFKA_RESP_ERR__PURGE_QUEUE || m->err == RD_KAFKA_RESP_ERR__PURGE_INFLIGHT) {
        item_free(d, it); /* purged at a forced stop: never acknowledged, so never committed */
        return;
    }
    switch (classify(m->err)) {
    case PERR_RETRY:
        d->stats.produce_retries++;
        nlpd_log(NLPD_LOG_WARNING, "kafka", "delivery of %s[%d]@%lld failed (%s): producing it again",
                 rd_kafka_topic_name(it->msg->rkt), (int)it->msg->partition, (long long)it->msg->offset,
                 rd_kafka_err2str(m->err));
        produce(d, it);
        return;
    case PERR_RECORD:
        switch (refused(d, it, m->err)) {
        case REF_AGAIN: produce(d, it); return;
        case REF_DONE: return;
        case REF_STOP: break;
        }
        break;
    case PERR_STOP:
        fail_fatal(d, "%s refuses %s[%d]@%lld: %s", rd_kafka_topic_name(m->rkt), rd_kafka_topic_name(it->msg->rkt),
                   (int)it->msg->partition, (long long)it->msg->offset, rd_kafka_err2str(m->err));
        break;
    }
    push_pending(d, it); /* kept after a fatal error: never produced again, never committed, freed at the end */
}

/* ---- batches ---- */

static void batch_free(struct kbatch *b)
{
    free(b->items);
    free(b->recs);
    free(b);
}

static struct kbatch *batch_new(struct nlpd_daemon *d)
{
    struct kbatch *b = calloc(1, sizeof *b);
    size_t cap = (size_t)d->cfg->batch.max_records;
    if (!b || !(b->items = calloc(cap, sizeof *b->items)) || !(b->recs = calloc(cap, sizeof *b->recs))) {
        if (b)
            batch_free(b);
        return NULL;
    }
    b->d = d;
    b->cap = cap;
    return b;
}

/* Worker thread: decode. */
static void batch_decode(struct nlpd_job *job, void *user)
{
    struct kbatch *b = user;
    struct nlpd_daemon *d = b->d;
    (void)job;
    double now = nlpd_now();
    int abandon = __atomic_load_n(&d->abandon, __ATOMIC_ACQUIRE);
    for (size_t i = 0; i < b->n; i++) {
        struct kitem *it = b->items[i];
        const char *data = it->msg->payload ? it->msg->payload : "";
        b->recs[i] = &it->item.rec;
        if (abandon) { /* a failed record skips every stage; process_done() drops it */
            nlpd_record_fail(&it->item.rec, "nlpd", "abandoned at shutdown");
            continue;
        }
        nlpd_histogram_observe(&d->queue_ms, (now - it->item.t_in) * 1e3);
        if (b->gen->avro_in)
            nlpd_avro_in_decode(b->gen->avro_in, &it->item, data, it->msg->len);
        else
            nlpd_item_decode_json(&it->item, &b->gen->cfg->input, data, it->msg->len);
    }
    b->job.batch.n = b->n;
    b->job.batch.recs = b->recs;
}

/* Worker thread: encode, then hand the batch to the event loop. */
static void batch_encode(struct nlpd_job *job, void *user)
{
    struct kbatch *b = user;
    struct nlpd_daemon *d = b->d;
    (void)job;
    double now = nlpd_now();
    for (size_t i = 0; i < b->n; i++) {
        struct kitem *it = b->items[i];
        if (it->item.rec.error) {
            it->dead = 1;
            continue;
        }
        const struct kgen *g = b->gen;
        int rc = g->avro_out ? nlpd_avro_out_encode(g->avro_out, &it->item, g->models, g->nmodels, now, &it->out)
                             : (nlpd_item_encode_json(&it->item, g->models, g->nmodels, now, &it->out), 0);
        if (rc < 0 || it->out.oom) {
            nlpd_record_fail(&it->item.rec, "output", "cannot encode the output record%s",
                             it->out.oom ? ": out of memory" : "");
            it->dead = 1;
        }
    }
    pthread_mutex_lock(&d->lock);
    b->next = NULL;
    if (d->done_tail)
        d->done_tail->next = b;
    else
        d->done_head = b;
    d->done_tail = b;
    pthread_mutex_unlock(&d->lock);
    wake(d);
}

/* Hands held batches to their pipeline in order, as long as its queue has room; never waits. */
static void submit_held(struct nlpd_daemon *d)
{
    while (d->held_head) {
        struct kbatch *b = d->held_head, *next = b->held_next; /* once submitted, b is the worker's */
        if (nlpd_pipeline_try_submit(b->gen->p, &b->job) < 0)
            return; /* full: a worker taking a job wakes the loop (on_pipeline_space) */
        d->held_head = next;
        if (!d->held_head)
            d->held_tail = NULL;
        d->nheld--;
    }
}

/* Closes the batch being filled: it goes to the current pipeline, now or (queue full) once there is room. */
static void submit_current(struct nlpd_daemon *d)
{
    struct kbatch *b = d->cur;
    if (!b)
        return;
    d->cur = NULL;
    evtimer_del(d->batch_timer);
    b->job.on_start = batch_decode;
    b->job.on_done = batch_encode;
    b->job.user = b;
    b->gen = d->gen;
    for (size_t i = 0; i < b->n; i++)
        b->items[i]->gen = d->gen;
    d->gen->items += b->n;
    d->batches_out++;
    b->held_next = NULL;
    if (d->held_tail)
        d->held_tail->held_next = b;
    else
        d->held_head = b;
    d->held_tail = b;
    d->nheld++;
    submit_held(d);
}

static void try_swap(struct nlpd_daemon *d);

static void process_done(struct nlpd_daemon *d)
{
    pthread_mutex_lock(&d->lock);
    struct kbatch *b = d->done_head;
    d->done_head = d->done_tail = NULL;
    pthread_mutex_unlock(&d->lock);
    int abandon = __atomic_load_n(&d->abandon, __ATOMIC_ACQUIRE);
    submit_held(d);
    while (b) {
        struct kbatch *next = b->next;
        for (size_t i = 0; i < b->n; i++) {
            if (abandon) /* stopping past the deadline or after a fatal error: never produced nor committed */
                item_free(d, b->items[i]);
            else
                produce(d, b->items[i]);
        }
        batch_free(b);
        d->batches_out--;
        b = next;
    }
    update_flow(d);
    try_swap(d);
}

/* ---- consuming ---- */

static void handle_message(struct nlpd_daemon *d, rd_kafka_message_t *m)
{
    if (m->err) {
        if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF && m->err != d->last_error) {
            nlpd_log(NLPD_LOG_WARNING, "kafka", "consumer: %s", rd_kafka_message_errstr(m));
            d->last_error = m->err;
        }
        rd_kafka_message_destroy(m);
        return;
    }
    struct kitem *it = calloc(1, sizeof *it);
    struct nlpd_tp *tp = nlpd_offsets_get(d->offsets, rd_kafka_topic_name(m->rkt), m->partition);
    int rc = it && tp ? nlpd_offsets_add(tp, m->offset) : NLPD_ENOMEM;
    if (rc == NLPD_EINVAL) {
        /* At or below the newest offset tracked for this assignment: consumed again (the consumer went back). Its
         * earlier copy is in flight or delivered, and the watermark cannot pass it before that copy is. */
        nlpd_log(NLPD_LOG_WARNING, "kafka", "%s[%d]@%lld consumed again: ignored (its first copy is tracked)",
                 rd_kafka_topic_name(m->rkt), (int)m->partition, (long long)m->offset);
        free(it);
        rd_kafka_message_destroy(m);
        return;
    }
    if (rc < 0) {
        /* Untracked, later offsets of the partition would commit past it: stop before any of them is consumed. */
        fail_fatal(d, "cannot track %s[%d]@%lld: out of memory", rd_kafka_topic_name(m->rkt), (int)m->partition,
                   (long long)m->offset);
        free(it);
        rd_kafka_message_destroy(m);
        return;
    }
    rd_kafka_timestamp_type_t tt;
    it->msg = m;
    it->tp = tp;
    it->bytes = m->len + m->key_len;
    it->item.t_in = nlpd_now();
    it->item.source = (struct nlpd_source){1, rd_kafka_topic_name(m->rkt), m->partition, m->offset,
                                           rd_kafka_message_timestamp(m, &tt)};
    d->inflight++;
    d->inflight_bytes += it->bytes;
    if (d->stats.consumed++ == 0)
        d->t_first_in = nlpd_now();
    if (!d->cur) {
        d->cur = batch_new(d);
        if (!d->cur) { /* not the record's fault: no dead letter; kept, never committed */
            fail_fatal(d, "cannot batch %s[%d]@%lld: out of memory", rd_kafka_topic_name(m->rkt), (int)m->partition,
                       (long long)m->offset);
            push_pending(d, it);
            return;
        }
        struct timeval tv = {d->cfg->batch.max_wait_ms / 1000, (d->cfg->batch.max_wait_ms % 1000) * 1000};
        evtimer_add(d->batch_timer, &tv);
    }
    d->cur->items[d->cur->n++] = it;
    if (d->cur->n == d->cur->cap)
        submit_current(d);
}

static void poll_consumer(struct nlpd_daemon *d)
{
    if (d->rl.swapping)
        return; /* a reload waits for the old pipeline's batches; polling resumes after the swap */
    if (d->held_since && !d->paused)
        return; /* held back for the pipeline; polling resumes when the hold eases (or it pauses) */
    for (int i = 0; i < POLL_BATCH && !d->fatal; i++) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(d->consumer, 0);
        if (!m) {
            update_flow(d);
            return;
        }
        handle_message(d, m);
        if (d->inflight >= (size_t)d->cfg->flow.max_inflight ||
            d->inflight_bytes >= (uint64_t)d->cfg->flow.max_inflight_bytes || d->nheld) {
            update_flow(d); /* pause at the bound, not a poll batch later */
            if (d->held_since && !d->paused)
                return;
        }
        if (i % 256 == 255) { /* keep finished batches flowing out while input pours in */
            process_done(d);
            rd_kafka_poll(d->producer, 0);
        }
    }
    update_flow(d);
    poll_again(d); /* more may be waiting */
}

/* ---- rebalances ---- */

static int partitions_idle(struct nlpd_daemon *d, const rd_kafka_topic_partition_list_t *parts)
{
    for (int i = 0; i < parts->cnt; i++) {
        struct nlpd_tp *tp = nlpd_offsets_get(d->offsets, parts->elems[i].topic, parts->elems[i].partition);
        if (tp && nlpd_offsets_inflight(tp) > 0)
            return 0;
    }
    return 1;
}

/* Finishes the in-flight records of parts (or gives up at the deadline) so their offsets can be committed. */
static void notify_tick(struct nlpd_daemon *d);

static void drain_partitions(struct nlpd_daemon *d, const rd_kafka_topic_partition_list_t *parts, double deadline)
{
    submit_current(d);
    while (!partitions_idle(d, parts) && nlpd_now() < deadline && !d->fatal) {
        process_done(d);
        produce_pending(d);
        rd_kafka_poll(d->producer, 10);
        notify_tick(d); /* up to 20 s outside the loop: systemd's watchdog must still hear from us */
    }
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts,
                         void *opaque)
{
    struct nlpd_daemon *d = opaque;
    int cooperative = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        nlpd_log(NLPD_LOG_INFO, "kafka", "assigned %d partition(s)", parts->cnt);
        rd_kafka_error_t *e = NULL;
        if (cooperative)
            e = rd_kafka_incremental_assign(rk, parts);
        else
            rd_kafka_assign(rk, parts);
        if (e) {
            nlpd_log(NLPD_LOG_ERR, "kafka", "assign: %s", rd_kafka_error_string(e));
            rd_kafka_error_destroy(e);
        }
        if (d->paused)
            rd_kafka_pause_partitions(rk, parts);
        __atomic_add_fetch(&d->assigned, parts->cnt, __ATOMIC_SEQ_CST);
        return;
    }
    int lost = rd_kafka_assignment_lost(rk);
    nlpd_log(NLPD_LOG_INFO, "kafka", "%s %d partition(s)", lost ? "lost" : "revoked", parts->cnt);
    if (!lost) {
        /* Deliver what we hold of these partitions, then commit, so the next owner starts after it. */
        double limit = (double)d->cfg->flow.shutdown_timeout_ms / 1e3;
        double until = nlpd_now() + (limit < 20 ? limit : 20);
        if (d->draining && d->drain_deadline < until) /* the close at shutdown: no later than the deadline */
            until = d->drain_deadline;
        drain_partitions(d, parts, until);
        if (!partitions_idle(d, parts))
            nlpd_log(NLPD_LOG_WARNING, "kafka", "revoked partitions still have records in flight: their offsets "
                                                "stay uncommitted and the next owner processes them again");
        store_offsets(d);
        rd_kafka_resp_err_t cerr = rd_kafka_commit(rk, NULL, 0);
        if (cerr && cerr != RD_KAFKA_RESP_ERR__NO_OFFSET)
            nlpd_log(NLPD_LOG_WARNING, "kafka", "commit on revocation: %s", rd_kafka_err2str(cerr));
    }
    for (int i = 0; i < parts->cnt; i++)
        nlpd_offsets_revoke(d->offsets, parts->elems[i].topic, parts->elems[i].partition);
    __atomic_sub_fetch(&d->assigned, cooperative ? parts->cnt : __atomic_load_n(&d->assigned, __ATOMIC_SEQ_CST),
                       __ATOMIC_SEQ_CST);
    if (cooperative) {
        rd_kafka_error_t *e = rd_kafka_incremental_unassign(rk, parts);
        if (e)
            rd_kafka_error_destroy(e);
    } else {
        rd_kafka_assign(rk, NULL);
    }
}

/* ---- events ---- */

static void on_consumer(evutil_socket_t fd, short what, void *arg)
{
    struct nlpd_daemon *d = arg;
    (void)what;
    drain_fd(fd);
    poll_consumer(d);
}

static void on_more(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    poll_consumer(arg);
}

static void on_producer(evutil_socket_t fd, short what, void *arg)
{
    struct nlpd_daemon *d = arg;
    (void)what;
    drain_fd(fd);
    rd_kafka_poll(d->producer, 0);
    produce_pending(d);
    update_flow(d);
}

/* ---- reload (SIGHUP) ---- */

static void start_reload(struct nlpd_daemon *d);

/* The reload thread: the slow part (parsing, checks, models, worker threads) runs beside the running pipeline.
 * It only reads d->cfg, which changes only at a swap, after this thread is joined. */
static void *reload_thread(void *arg)
{
    struct nlpd_daemon *d = arg;
    const char *path = d->cfg->path;
    struct nlpd_diag *diag = &d->rl.diag;
    enum reload_result r = RELOAD_INVALID;
    struct nlpd_error err = {0};
    struct kgen *g = calloc(1, sizeof *g);
    if (!g) {
        r = RELOAD_FAILED;
        snprintf(d->rl.why, sizeof d->rl.why, "out of memory");
        goto done;
    }
    g->owned = 1;
    if (!(g->cfg = nlpd_config_load(path, diag)))
        goto done;
    if (nlpd_config_restart_changes(d->cfg, g->cfg, d->rl.why, sizeof d->rl.why)) {
        r = RELOAD_RESTART_REQUIRED; /* decided before loading any model */
        goto done;
    }
    if (nlpd_kafka_check(g->cfg, diag) > 0 || !(g->p = nlpd_pipeline_create(g->cfg, diag))) {
        if (!diag->n) {
            r = RELOAD_FAILED;
            snprintf(d->rl.why, sizeof d->rl.why, "cannot build the pipeline (out of memory)");
        }
        goto done;
    }
    if (strcmp(g->cfg->output.format, "avro") == 0 &&
        !(g->avro_out = nlpd_avro_out_new(g->cfg->output.schema, (int32_t)g->cfg->output.confluent_schema_id, &err))) {
        nlpd_diag_add(diag, path, 0, "output: %s", err.message);
        goto done;
    }
    if (strcmp(g->cfg->input.format, "avro") == 0 && !(g->avro_in = nlpd_avro_in_new(&g->cfg->input, &err))) {
        nlpd_diag_add(diag, path, 0, "input: %s", err.message);
        goto done;
    }
    if (nlpd_pipeline_start(g->p, (int)g->cfg->kernels.threads, &err) < 0) {
        r = RELOAD_FAILED;
        snprintf(d->rl.why, sizeof d->rl.why, "%s", err.message);
        goto done;
    }
    g->models = nlpd_pipeline_models(g->p, &g->nmodels);
    r = RELOAD_APPLIED; /* ready to be applied */
done:
    if (r != RELOAD_APPLIED) {
        gen_free(g);
        g = NULL;
    }
    d->rl.next = g;
    d->rl.result = r;
    pthread_mutex_lock(&d->lock);
    d->rl.finished = 1;
    pthread_mutex_unlock(&d->lock);
    wake(d);
    return NULL;
}

/* The end of a reload, whatever its result: count it, tell systemd, start the next one if asked meanwhile. */
static void reload_finish(struct nlpd_daemon *d, enum reload_result r)
{
    d->rl.count[r]++;
    d->rl.last_ok = r == RELOAD_APPLIED;
    if (r == RELOAD_APPLIED)
        d->rl.last_ok_wall = (double)wall_ms() / 1e3;
    if (d->draining)
        return;
    nlpd_notify("READY=1\nSTATUS=running; last reload: %s", reload_result_names[r]);
    if (d->rl.again) {
        d->rl.again = 0;
        start_reload(d);
    }
}

/* Swaps once the old pipeline has handed back every batch: from then on new batches go to the new pipeline. The
 * old generation stays until its last record is delivered (records point into it), then goes. */
static void try_swap(struct nlpd_daemon *d)
{
    if (!d->rl.swapping || d->batches_out > 0)
        return;
    struct kgen *old = d->gen, *g = d->rl.next;
    nlpd_pipeline_stop(old->p); /* idle: joins its workers */
    nlpd_pipeline_on_space(old->p, NULL, NULL);
    nlpd_pipeline_on_space(g->p, on_pipeline_space, d);
    int kept = nlpd_config_section_equal(old->cfg, g->cfg, "cache");
    if (kept)
        nlpd_pipeline_take_cache(g->p, old->p);
    d->gen = g;
    d->cfg = g->cfg;
    d->p = g->p;
    d->rl.next = NULL;
    d->rl.swapping = 0;
    nlpd_log_setup(nlpd_log_level_parse(g->cfg->log.level),
                   strcmp(g->cfg->log.format, "json") == 0 ? NLPD_LOG_JSON : NLPD_LOG_TEXT);
    if (old->items == 0) {
        gen_free(old);
    } else {
        old->next = d->retired;
        d->retired = old;
    }
    nlpd_log(NLPD_LOG_NOTICE, "main", "reload: applied %s: %d stage(s), %zu model(s), %d worker(s)%s", g->cfg->path,
             config_setting_length(g->cfg->pipeline), g->nmodels, nlpd_pipeline_threads(g->p),
             kept ? "; cache kept" : "; new cache");
    reload_finish(d, RELOAD_APPLIED);
    update_flow(d);
    poll_again(d);
}

/* The loop takes the reload thread's result. */
static void reload_collect(struct nlpd_daemon *d)
{
    pthread_mutex_lock(&d->lock);
    int finished = d->rl.finished;
    pthread_mutex_unlock(&d->lock);
    if (!d->rl.running || !finished)
        return;
    pthread_join(d->rl.thread, NULL);
    d->rl.running = d->rl.finished = 0;
    const char *path = d->cfg->path;
    for (size_t i = 0; i < d->rl.diag.n; i++)
        nlpd_log(NLPD_LOG_ERR, "main", "reload: %s", d->rl.diag.msgs[i]);
    nlpd_diag_free(&d->rl.diag);
    enum reload_result r = d->rl.result;
    if (r == RELOAD_APPLIED && d->draining) {
        nlpd_log(NLPD_LOG_NOTICE, "main", "reload: abandoned: nlpd is stopping");
        gen_free(d->rl.next);
        d->rl.next = NULL;
        return;
    }
    switch (r) {
    case RELOAD_APPLIED:
        d->rl.swapping = 1;
        submit_current(d); /* the batch being filled still goes to the old pipeline */
        nlpd_log(NLPD_LOG_INFO, "main",
                 "reload: %s is valid and its models are loaded; switching once the current "
                 "pipeline has finished its %zu batch(es) in flight",
                 path, d->batches_out);
        try_swap(d);
        return;
    case RELOAD_INVALID:
        nlpd_log(NLPD_LOG_ERR, "main", "reload: %s is invalid; still running on the current configuration", path);
        break;
    case RELOAD_RESTART_REQUIRED:
        nlpd_log(NLPD_LOG_ERR, "main",
                 "reload: %s changes %s, which nlpd reads only at start: reload refused, "
                 "nothing applied (systemctl restart nlpd applies them); still running on the "
                 "current configuration",
                 path, d->rl.why);
        break;
    default:
        nlpd_log(NLPD_LOG_ERR, "main", "reload: %s: %s; still running on the current configuration", path, d->rl.why);
        break;
    }
    reload_finish(d, r);
}

static void start_reload(struct nlpd_daemon *d)
{
    if (d->draining) {
        nlpd_log(NLPD_LOG_NOTICE, "main", "reload: ignored, nlpd is stopping");
        return;
    }
    if (d->rl.running || d->rl.swapping) {
        d->rl.again = 1;
        nlpd_log(NLPD_LOG_NOTICE, "main", "reload: one is under way; reloading again when it is done");
        return;
    }
    /* MONOTONIC_USEC: systemd (253+) matches the READY=1 that ends the reload to this message. */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    nlpd_notify("RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading %s",
                (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000ULL, d->cfg->path);
    nlpd_log(NLPD_LOG_NOTICE, "main", "reload: reading %s", d->cfg->path);
    d->rl.finished = 0;
    d->rl.next = NULL;
    d->rl.why[0] = '\0';
    memset(&d->rl.diag, 0, sizeof d->rl.diag);
    int e = pthread_create(&d->rl.thread, NULL, reload_thread, d);
    if (e != 0) {
        nlpd_log(NLPD_LOG_ERR, "main",
                 "reload: cannot start its thread: %s; still running on the current "
                 "configuration",
                 strerror(e));
        reload_finish(d, RELOAD_FAILED);
        return;
    }
    d->rl.running = 1;
}

/* A stop while switching: the new generation is dropped, the old pipeline finishes what it has. */
static void reload_abandon(struct nlpd_daemon *d)
{
    d->rl.again = 0;
    if (!d->rl.swapping)
        return;
    nlpd_log(NLPD_LOG_NOTICE, "main", "reload: abandoned: nlpd is stopping");
    gen_free(d->rl.next);
    d->rl.next = NULL;
    d->rl.swapping = 0;
}

static void start_drain(struct nlpd_daemon *d, const char *why)
{
    if (d->draining)
        return;
    nlpd_log(NLPD_LOG_NOTICE, "kafka", "%s: draining %zu record(s) in flight", why, d->inflight);
    nlpd_notify("STOPPING=1\nSTATUS=draining %zu record(s) in flight", d->inflight);
    d->draining = 1;
    d->drain_deadline = nlpd_now() + (double)d->cfg->flow.shutdown_timeout_ms / 1e3;
    reload_abandon(d);
    submit_current(d);
    update_flow(d);
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    struct nlpd_daemon *d = arg;
    (void)what;
    drain_fd(fd);
    pthread_mutex_lock(&d->lock);
    int stop = d->stop_requested;
    pthread_mutex_unlock(&d->lock);
    if (stop)
        start_drain(d, "stop requested");
    process_done(d);
    reload_collect(d);
}

static void on_batch_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    submit_current(arg);
}

/* systemd: the watchdog is fed from the event loop, so a stuck loop stops feeding it; none after a fatal
 * error. STATUS carries throughput every few seconds. */
static void notify_tick(struct nlpd_daemon *d)
{
    double now = nlpd_now();
    if (d->watchdog_every > 0 && now >= d->next_watchdog && !d->fatal) {
        nlpd_notify("WATCHDOG=1");
        d->next_watchdog = now + d->watchdog_every;
    }
    if (now >= d->last_status + 5.0) {
        double rate = (double)(d->stats.consumed - d->status_consumed) / (now - d->last_status);
        nlpd_notify("STATUS=%s: %llu consumed, %llu produced, %llu dead-lettered, %zu in flight, %.0f records/s",
                    d->draining ? "draining" : "running", (unsigned long long)d->stats.consumed,
                    (unsigned long long)d->stats.produced, (unsigned long long)d->stats.dead_lettered, d->inflight,
                    rate);
        d->status_consumed = d->stats.consumed;
        d->last_status = now;
    }
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct nlpd_daemon *d = arg;
    (void)fd, (void)what;
    notify_tick(d);
    poll_consumer(d); /* also keeps the group membership alive while paused */
    rd_kafka_poll(d->producer, 0);
    process_done(d);
    produce_pending(d);
    store_offsets(d);
    if (d->draining) {
        if (d->inflight == 0) {
            event_base_loopbreak(d->base);
        } else if (nlpd_now() > d->drain_deadline) {
            nlpd_log(NLPD_LOG_WARNING, "kafka",
                     "shutdown timeout: %zu record(s) not delivered; their offsets are not committed", d->inflight);
            event_base_loopbreak(d->base);
        }
    }
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    start_drain(arg, sig == SIGTERM ? "SIGTERM" : "SIGINT");
}

static void on_sighup(evutil_socket_t sig, short what, void *arg)
{
    (void)sig, (void)what;
    start_reload(arg);
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    struct nlpd_daemon *d = opaque;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char why[512];
        rd_kafka_fatal_error(rk, why, sizeof why);
        fail_fatal(d, "%s: %s", rd_kafka_name(rk), why);
        return;
    }
    if (err != (int)d->last_error) { /* brokers down etc.: librdkafka retries; say it once */
        nlpd_log(NLPD_LOG_WARNING, "kafka", "%s: %s", rd_kafka_name(rk), reason);
        d->last_error = err;
    }
}

static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    nlpd_log(level <= 3 ? NLPD_LOG_ERR : level == 4 ? NLPD_LOG_WARNING : NLPD_LOG_DEBUG, "rdkafka", "%s: %s", fac,
             buf);
}

/* ---- metrics and health (served from the event loop: counters need no locks) ---- */

static const char *ready_problem(struct nlpd_daemon *d)
{
    if (d->fatal)
        return "stopped after a fatal error";
    if (d->draining)
        return "draining";
    if (!d->subscribed)
        return "not subscribed";
    return NULL; /* consuming, or waiting for an assignment */
}

static void process_metrics(struct nlpd_buf *out)
{
    FILE *f = fopen("/proc/self/stat", "r");
    unsigned long ut = 0, st = 0;
    long rss = 0;
    if (f) {
        /* fields 14 and 15 (utime, stime) follow the command name in parentheses */
        char line[1024];
        if (fgets(line, sizeof line, f)) {
            char *p = strrchr(line, ')');
            if (p)
                sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st);
        }
        fclose(f);
    }
    f = fopen("/proc/self/statm", "r");
    if (f) {
        long pages;
        if (fscanf(f, "%*s %ld", &pages) == 1)
            rss = pages * sysconf(_SC_PAGESIZE);
        fclose(f);
    }
    double tick = (double)sysconf(_SC_CLK_TCK);
    nlpd_metric_head(out, "process_cpu_seconds_total", "counter", "User and system CPU time");
    nlpd_buf_printf(out, "process_cpu_seconds_total %.2f\n", (double)(ut + st) / tick);
    nlpd_metric_head(out, "process_resident_memory_bytes", "gauge", "Resident memory");
    nlpd_buf_printf(out, "process_resident_memory_bytes %ld\n", rss);
}

static void daemon_metrics(struct nlpd_daemon *d, struct nlpd_buf *out)
{
    nlpd_metric_head(out, "nlpd_records_consumed_total", "counter", "Records consumed from the input topics");
    nlpd_buf_printf(out, "nlpd_records_consumed_total %llu\n", (unsigned long long)d->stats.consumed);
    nlpd_metric_head(out, "nlpd_records_produced_total", "counter", "Enriched records acknowledged by the broker");
    nlpd_buf_printf(out, "nlpd_records_produced_total %llu\n", (unsigned long long)d->stats.produced);
    nlpd_metric_head(out, "nlpd_records_dead_lettered_total", "counter",
                     "Dead letters acknowledged by the broker, by the stage that rejected them");
    nlpd_label_counts_write(&d->dead_by, "nlpd_records_dead_lettered_total", "reason", out);
    nlpd_metric_head(out, "nlpd_records_skipped_total", "counter",
                     "Records committed without output or dead letter: dlq_refused = even the truncated dead "
                     "letter was refused (kafka.dlq_oversize)");
    nlpd_buf_printf(out, "nlpd_records_skipped_total{reason=\"dlq_refused\"} %llu\n",
                    (unsigned long long)d->dlq_refused);
    nlpd_metric_head(out, "nlpd_produce_retries_total", "counter", "Records produced again after a delivery error");
    nlpd_buf_printf(out, "nlpd_produce_retries_total %llu\n", (unsigned long long)d->stats.produce_retries);
    nlpd_metric_head(out, "nlpd_inflight_records", "gauge", "Records consumed and not yet acknowledged");
    nlpd_buf_printf(out, "nlpd_inflight_records %zu\n", d->inflight);
    nlpd_metric_head(out, "nlpd_inflight_bytes", "gauge",
                     "Bytes (values and keys) of the records consumed and not yet acknowledged");
    nlpd_buf_printf(out, "nlpd_inflight_bytes %llu\n", (unsigned long long)d->inflight_bytes);
    nlpd_metric_head(out, "nlpd_input_paused", "gauge", "1 while the input partitions are paused (backpressure)");
    nlpd_buf_printf(out, "nlpd_input_paused %d\n", d->paused);
    nlpd_metric_head(out, "nlpd_input_paused_reason", "gauge",
                     "1 while this reason holds the input back: records (flow.max_inflight), bytes "
                     "(flow.max_inflight_bytes), pipeline (closed batches wait for its full queue: no polling, "
                     "paused after 1 s), producer (queue full), draining");
    for (int r = 0; r < FLOW_NREASONS; r++)
        nlpd_buf_printf(out, "nlpd_input_paused_reason{reason=\"%s\"} %d\n", flow_reason_names[r],
                        r == FLOW_PIPELINE ? d->held_since != 0 : (d->flow_why >> r) & 1);
    nlpd_metric_head(out, "nlpd_input_pauses_total", "counter", "Times each reason started holding the input paused");
    for (int r = 0; r < FLOW_NREASONS; r++)
        nlpd_buf_printf(out, "nlpd_input_pauses_total{reason=\"%s\"} %llu\n", flow_reason_names[r],
                        (unsigned long long)d->flow_pauses[r]);
    size_t queued, cap;
    nlpd_pipeline_queue(d->p, &queued, &cap);
    nlpd_metric_head(out, "nlpd_pipeline_queued_batches", "gauge",
                     "Micro-batches queued for the pipeline's workers, not yet started");
    nlpd_buf_printf(out, "nlpd_pipeline_queued_batches %zu\n", queued);
    nlpd_metric_head(out, "nlpd_pipeline_queue_capacity", "gauge", "Micro-batches the pipeline's queue holds");
    nlpd_buf_printf(out, "nlpd_pipeline_queue_capacity %zu\n", cap);
    nlpd_metric_head(out, "nlpd_batches_waiting", "gauge",
                     "Closed micro-batches waiting for room in the pipeline's queue (the input is paused meanwhile)");
    nlpd_buf_printf(out, "nlpd_batches_waiting %zu\n", d->nheld);
    nlpd_metric_head(out, "nlpd_assigned_partitions", "gauge", "Input partitions assigned to this member");
    nlpd_buf_printf(out, "nlpd_assigned_partitions %d\n", __atomic_load_n(&d->assigned, __ATOMIC_SEQ_CST));
    nlpd_metric_head(out, "nlpd_producer_queue_messages", "gauge", "Messages in the producer queue");
    nlpd_buf_printf(out, "nlpd_producer_queue_messages %d\n", rd_kafka_outq_len(d->producer));
    nlpd_metric_head(out, "nlpd_end_to_end_latency_seconds", "histogram",
                     "From the input record's Kafka timestamp to the broker's acknowledgement of its output");
    nlpd_histogram_write(&d->e2e_ms, "nlpd_end_to_end_latency_seconds", "", 1e-3, out);
    nlpd_metric_head(out, "nlpd_queue_wait_seconds", "histogram", "From consumption to a worker starting the batch");
    nlpd_histogram_write(&d->queue_ms, "nlpd_queue_wait_seconds", "", 1e-3, out);
    nlpd_metric_head(out, "nlpd_consumer_lag_records", "gauge",
                     "Records behind the partition's end, per assigned partition (librdkafka statistics)");
    for (size_t i = 0; i < d->nlag; i++)
        nlpd_buf_printf(out, "nlpd_consumer_lag_records{topic=\"%s\",partition=\"%d\"} %lld\n", d->lag[i].topic,
                        (int)d->lag[i].partition, (long long)d->lag[i].lag);
    nlpd_metric_head(out, "nlpd_config_reloads_total", "counter",
                     "SIGHUP reloads by result: applied, invalid (file or models), restart_required (a key read "
                     "only at start changed), failed");
    for (int r = 0; r < RELOAD_NRESULTS; r++)
        nlpd_buf_printf(out, "nlpd_config_reloads_total{result=\"%s\"} %llu\n", reload_result_names[r],
                        (unsigned long long)d->rl.count[r]);
    nlpd_metric_head(out, "nlpd_config_last_reload_successful", "gauge",
                     "1 when the last reload was applied (or none was asked since the start), else 0");
    nlpd_buf_printf(out, "nlpd_config_last_reload_successful %d\n", d->rl.last_ok);
    nlpd_metric_head(out, "nlpd_config_last_reload_success_timestamp_seconds", "gauge",
                     "When the running configuration was applied (the start, or the last applied reload), Unix time");
    nlpd_buf_printf(out, "nlpd_config_last_reload_success_timestamp_seconds %.3f\n", d->rl.last_ok_wall);
    nlpd_pipeline_metrics(d->p, out);
    process_metrics(out);
}

/* librdkafka's statistics (every statistics.interval.ms, on the event loop): keep each partition's lag. */
static int stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque)
{
    struct nlpd_daemon *d = opaque;
    (void)rk;
    json_t *root = json_loadb(json, len, 0, NULL), *topics = json_object_get(root, "topics"), *t;
    const char *tname;
    size_t n = 0;
    json_object_foreach(topics, tname, t)
    {
        json_t *parts = json_object_get(t, "partitions"), *p;
        const char *pname;
        json_object_foreach(parts, pname, p)
        {
            json_int_t lag = json_integer_value(json_object_get(p, "consumer_lag"));
            int32_t part = (int32_t)json_integer_value(json_object_get(p, "partition"));
            if (part < 0 || !json_is_integer(json_object_get(p, "consumer_lag")) || lag < 0 ||
                n == sizeof d->lag / sizeof d->lag[0] || strlen(tname) >= sizeof d->lag[0].topic)
                continue;
            snprintf(d->lag[n].topic, sizeof d->lag[n].topic, "%s", tname);
            d->lag[n].partition = part;
            d->lag[n].lag = lag;
            n++;
        }
    }
    d->nlag = n;
    json_decref(root);
    return 0; /* librdkafka frees json */
}

static void http_metrics(void *arg, struct nlpd_buf *out)
{
    daemon_metrics(arg, out);
}

static const char *http_not_ready(void *arg)
{
    return ready_problem(arg);
}

/* ---- set-up ---- */

static int conf_set(rd_kafka_conf_t *c, const char *name, const char *value, struct nlpd_error *err)
{
    char why[512];
    if (rd_kafka_conf_set(c, name, value, why, sizeof why) != RD_KAFKA_CONF_OK)
        return nlpd_error_set(err, NLPD_EINVAL, 0, "kafka property %s: %s", name, why);
    return 0;
}

static int has_property(const struct nlpd_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->kafka.properties.n; i++)
        if (strcmp(cfg->kafka.properties.from[i], name) == 0)
            return 1;
    return 0;
}

/* librdkafka prefetches up to queued.max.messages.kbytes (64 MiB by default) outside flow.max_inflight_bytes: unless
 * the properties say otherwise, it gets a quarter of that budget (1 MiB to 64 MiB), so the memory bound holds for
 * small budgets too. librdkafka caps fetch.max.bytes to it (but not below message.max.bytes) unless that is set. */
static void set_prefetch_bound(rd_kafka_conf_t *cc, const struct nlpd_config *cfg)
{
    long long kb = cfg->flow.max_inflight_bytes / 4 / 1024;
    kb = kb < 1024 ? 1024 : kb > 65536 ? 65536 : kb;
    char v[32];
    snprintf(v, sizeof v, "%lld", kb);
    if (!has_property(cfg, "queued.max.messages.kbytes"))
        conf_set(cc, "queued.max.messages.kbytes", v, NULL);
}

static rd_kafka_conf_t *base_conf(struct nlpd_daemon *d, struct nlpd_error *err)
{
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    const struct nlpd_kafka_conf *k = &d->cfg->kafka;
    if (conf_set(c, "bootstrap.servers", d->bootstraps, err) < 0)
        goto bad;
    conf_set(c, "client.id", "nlpd", NULL);
    rd_kafka_conf_set_opaque(c, d);
    rd_kafka_conf_set_error_cb(c, error_cb);
    rd_kafka_conf_set_log_cb(c, log_cb);
    for (size_t i = 0; i < k->properties.n; i++)
        if (conf_set(c, k->properties.from[i], k->properties.to[i], err) < 0)
            goto bad;
    return c;
bad:
    rd_kafka_conf_destroy(c);
    return NULL;
}

int nlpd_kafka_check(const struct nlpd_config *cfg, struct nlpd_diag *diag)
{
    if (!cfg->has_kafka)
        return 0;
    const config_setting_t *s = config_lookup(&cfg->cfg, "kafka.properties");
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    int errors = 0;
    for (size_t i = 0; i < cfg->kafka.properties.n; i++) {
        char why[512];
        if (rd_kafka_conf_set(c, cfg->kafka.properties.from[i], cfg->kafka.properties.to[i], why, sizeof why) !=
            RD_KAFKA_CONF_OK) {
            const config_setting_t *e = s ? config_setting_get_elem(s, (unsigned)i) : NULL;
            nlpd_diag_add(diag, cfg->path, e ? config_setting_source_line(e) : 0, "kafka.properties: %s", why);
            errors++;
        }
    }
    rd_kafka_conf_destroy(c);
    return errors;
}

static int start_embedded(struct nlpd_daemon *d, struct nlpd_error *err)
{
    char why[512];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(c, log_cb);
    d->mock_rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, why, sizeof why);
    if (!d->mock_rk)
        return nlpd_error_set(err, NLPD_EFATAL, 0, "embedded broker: %s", why);
    d->mock = rd_kafka_mock_cluster_new(d->mock_rk, 1);
    if (!d->mock)
        return nlpd_error_set(err, NLPD_EFATAL, 0, "embedded broker: cannot start the mock cluster");
    const struct nlpd_kafka_conf *k = &d->cfg->kafka;
    int parts = (int)k->embedded_partitions;
    for (size_t i = 0; i < k->input_topics.n; i++)
        if (k->input_topics.items[i][0] != '^')
            rd_kafka_mock_topic_create(d->mock, k->input_topics.items[i], parts, 1);
    rd_kafka_mock_topic_create(d->mock, k->output_topic, parts, 1);
    rd_kafka_mock_topic_create(d->mock, k->dlq_topic, parts, 1);
    if (k->flagged_topic)
        rd_kafka_mock_topic_create(d->mock, k->flagged_topic, parts, 1);
    d->bootstraps = strdup(rd_kafka_mock_cluster_bootstraps(d->mock));
    nlpd_log(NLPD_LOG_NOTICE, "kafka",
             "embedded broker at %s: an in-process mock cluster that keeps nothing on disk; for demos and tests, "
             "never production",
             d->bootstraps);
    return 0;
}

/* Learns an output topic's partitions now rather than at the first record (which would wait for it),
 * and says early when the topic is missing. */
static void warm_topic(struct nlpd_daemon *d, const char *name)
{
    rd_kafka_topic_t *t = rd_kafka_topic_new(d->producer, name, NULL);
    const struct rd_kafka_metadata *md = NULL;
    if (!t)
        return;
    rd_kafka_resp_err_t e = rd_kafka_metadata(d->producer, 0, t, &md, 5000);
    if (e == RD_KAFKA_RESP_ERR_NO_ERROR && md->topic_cnt == 1 && md->topics[0].err)
        e = md->topics[0].err;
    if (e)
        nlpd_log(NLPD_LOG_WARNING, "kafka", "topic %s: %s (records for it wait until it exists)", name,
                 rd_kafka_err2str(e));
    if (md)
        rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(t);
}

/* Waits for the brokers (metadata answer) up to startup_timeout_ms, retrying in between. */
static int wait_for_brokers(struct nlpd_daemon *d, struct nlpd_error *err)
{
    double deadline = nlpd_now() + (double)d->cfg->kafka.startup_timeout_ms / 1e3;
    rd_kafka_resp_err_t e;
    int said = 0;
    for (;;) {
        const struct rd_kafka_metadata *md = NULL;
        e = rd_kafka_metadata(d->producer, 0, NULL, &md, 2000);
        if (e == RD_KAFKA_RESP_ERR_NO_ERROR) {
            rd_kafka_metadata_destroy(md);
            warm_topic(d, d->cfg->kafka.output_topic);
            warm_topic(d, d->cfg->kafka.dlq_topic);
            if (d->cfg->kafka.flagged_topic)
                warm_topic(d, d->cfg->kafka.flagged_topic);
            return 0;
        }
        if (nlpd_now() >= deadline)
            break;
        if (!said++)
            nlpd_log(NLPD_LOG_WARNING, "kafka", "waiting for brokers %s: %s", d->bootstraps, rd_kafka_err2str(e));
        usleep(200000);
    }
    return nlpd_error_set(err, NLPD_EFATAL, 0, "brokers %s unreachable for %lld ms: %s", d->bootstraps,
                          d->cfg->kafka.startup_timeout_ms, rd_kafka_err2str(e));
}

static int io_event(struct nlpd_daemon *d, rd_kafka_queue_t *q, int fds[2], struct event **ev,
                    event_callback_fn cb)
{
    if (make_pipe(fds) < 0)
        return -1;
    rd_kafka_queue_io_event_enable(q, fds[1], "1", 1);
    *ev = event_new(d->base, fds[0], EV_READ | EV_PERSIST, cb, d);
    return *ev && event_add(*ev, NULL) == 0 ? 0 : -1;
}

struct nlpd_daemon *nlpd_daemon_new(const struct nlpd_config *cfg, struct nlpd_pipeline *p, struct nlpd_error *err)
{
    if (!cfg->has_kafka) {
        nlpd_error_set(err, NLPD_EINVAL, 0, "%s: no kafka section: `nlpd run` needs kafka.brokers, input_topics, "
                                            "output_topic and dlq_topic",
                       cfg->path);
        return NULL;
    }
    struct nlpd_daemon *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->cfg = cfg;
    d->p = p;
    d->gen = calloc(1, sizeof *d->gen);
    if (!d->gen) {
        free(d);
        return NULL;
    }
    d->gen->cfg = (struct nlpd_config *)cfg; /* its creator's unless nlpd_daemon_own_config() */
    d->gen->p = p;
    d->gen->models = nlpd_pipeline_models(p, &d->gen->nmodels);
    d->rl.last_ok = 1;
    d->rl.last_ok_wall = (double)wall_ms() / 1e3;
    d->cq_pipe[0] = d->cq_pipe[1] = d->pq_pipe[0] = d->pq_pipe[1] = d->wake_pipe[0] = d->wake_pipe[1] = -1;
    pthread_mutex_init(&d->lock, NULL);
    d->offsets = nlpd_offsets_new();
    char why[512];
    if (strcmp(cfg->output.format, "avro") == 0 &&
        !(d->gen->avro_out = nlpd_avro_out_new(cfg->output.schema, (int32_t)cfg->output.confluent_schema_id, err)))
        goto bad;
    if (strcmp(cfg->input.format, "avro") == 0 && !(d->gen->avro_in = nlpd_avro_in_new(&cfg->input, err)))
        goto bad;
    if (strcmp(cfg->kafka.brokers, "embedded") == 0) {
        if (start_embedded(d, err) < 0)
            goto bad;
    } else {
        d->bootstraps = strdup(cfg->kafka.brokers);
    }

    rd_kafka_conf_t *pc = base_conf(d, err);
    if (!pc)
        goto bad;
    conf_set(pc, "enable.idempotence", "true", NULL);
    conf_set(pc, "linger.ms", "5", NULL);
    rd_kafka_conf_set_dr_msg_cb(pc, dr_msg_cb);
    for (size_t i = 0; i < cfg->kafka.properties.n; i++) /* the user's values win over ours */
        conf_set(pc, cfg->kafka.properties.from[i], cfg->kafka.properties.to[i], NULL);
    d->producer = rd_kafka_new(RD_KAFKA_PRODUCER, pc, why, sizeof why);
    if (!d->producer) {
        nlpd_error_set(err, NLPD_EFATAL, 0, "producer: %s", why);
        goto bad;
    }
    char mmb[32];
    size_t mmb_len = sizeof mmb;
    d->max_msg = rd_kafka_conf_get(rd_kafka_conf(d->producer), "message.max.bytes", mmb, &mmb_len) == RD_KAFKA_CONF_OK
                     ? (size_t)strtoull(mmb, NULL, 10)
                     : 1000000;
    if (wait_for_brokers(d, err) < 0)
        goto bad;

    rd_kafka_conf_t *cc = base_conf(d, err);
    if (!cc)
        goto bad;
    char interval[32];
    snprintf(interval, sizeof interval, "%lld", cfg->flow.commit_interval_ms);
    if (conf_set(cc, "group.id", cfg->kafka.group_id, err) < 0)
        goto bad_cc;
    conf_set(cc, "enable.auto.offset.store", "false", NULL);
    conf_set(cc, "enable.auto.commit", "true", NULL); /* commits only what we stored, on this timer */
    conf_set(cc, "auto.commit.interval.ms", interval, NULL);
    conf_set(cc, "partition.assignment.strategy", "cooperative-sticky", NULL);
    conf_set(cc, "auto.offset.reset", "earliest", NULL);
    if (d->mock) /* the mock broker does not long-poll: an idle fetch would otherwise sleep its full wait */
        conf_set(cc, "fetch.wait.max.ms", "10", NULL), conf_set(cc, "fetch.error.backoff.ms", "10", NULL);
    set_prefetch_bound(cc, cfg);
    for (size_t i = 0; i < cfg->kafka.properties.n; i++) {
        if (strcmp(cfg->kafka.properties.from[i], "enable.auto.offset.store") == 0) {
            nlpd_log(NLPD_LOG_WARNING, "kafka", "ignoring enable.auto.offset.store: nlpd stores offsets itself, "
                                                "only for delivered records");
            continue;
        }
        conf_set(cc, cfg->kafka.properties.from[i], cfg->kafka.properties.to[i], NULL);
    }
    rd_kafka_conf_set_rebalance_cb(cc, rebalance_cb);
    if (cfg->metrics.listen && *cfg->metrics.listen) { /* consumer lag for /metrics */
        conf_set(cc, "statistics.interval.ms", "5000", NULL);
        rd_kafka_conf_set_stats_cb(cc, stats_cb);
    }
    d->consumer = rd_kafka_new(RD_KAFKA_CONSUMER, cc, why, sizeof why);
    if (!d->consumer) {
        nlpd_error_set(err, NLPD_EFATAL, 0, "consumer: %s", why);
        goto bad;
    }
    rd_kafka_poll_set_consumer(d->consumer);

    d->base = event_base_new();
    if (!d->base || make_pipe(d->wake_pipe) < 0)
        goto bad_sys;
    nlpd_pipeline_on_space(p, on_pipeline_space, d);
    d->cq = rd_kafka_queue_get_consumer(d->consumer);
    d->pq = rd_kafka_queue_get_main(d->producer);
    if (io_event(d, d->cq, d->cq_pipe, &d->cq_ev, on_consumer) < 0 ||
        io_event(d, d->pq, d->pq_pipe, &d->pq_ev, on_producer) < 0)
        goto bad_sys;
    d->wake_ev = event_new(d->base, d->wake_pipe[0], EV_READ | EV_PERSIST, on_wake, d);
    d->batch_timer = evtimer_new(d->base, on_batch_timer, d);
    d->tick = event_new(d->base, -1, EV_PERSIST, on_tick, d);
    d->more_ev = evtimer_new(d->base, on_more, d);
    nlpd_histogram_init_ms(&d->e2e_ms);
    nlpd_histogram_init_ms(&d->queue_ms);
    struct nlpd_http_handlers hh = {http_metrics, http_not_ready, d};
    if (nlpd_http_start(d->base, &cfg->metrics, &hh, &d->http, err) < 0)
        goto bad;
    struct timeval tick = {0, TICK_MS * 1000};
    if (!d->wake_ev || !d->batch_timer || !d->tick || !d->more_ev || event_add(d->wake_ev, NULL) < 0 || event_add(d->tick, &tick) < 0)
        goto bad_sys;
    return d;

bad_cc:
    rd_kafka_conf_destroy(cc);
    goto bad;
bad_sys:
    nlpd_error_set(err, NLPD_EFATAL, 0, "cannot set up the event loop: %s", strerror(errno));
bad:
    nlpd_daemon_free(d);
    return NULL;
}

static int subscribe(struct nlpd_daemon *d)
{
    const struct nlpd_conf_list *topics = &d->cfg->kafka.input_topics;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)topics->n);
    for (size_t i = 0; i < topics->n; i++)
        rd_kafka_topic_partition_list_add(l, topics->items[i], RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(d->consumer, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (e) {
        nlpd_log(NLPD_LOG_ERR, "kafka", "subscribe: %s", rd_kafka_err2str(e));
        return -1;
    }
    d->subscribed = 1;
    return 0;
}

/* The shutdown guard: from the end of the event loop, nlpd exits at the latest SHUTDOWN_SLACK_S after the drain
 * deadline, with the status it would have had, whatever librdkafka or a stage still waits for; nothing
 * uncommitted is lost (it is consumed again after the restart). */
struct guard {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int disarmed, rc;
    double seconds;
};

static void *guard_thread(void *arg)
{
    struct guard *g = arg;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += (time_t)g->seconds;
    until.tv_nsec += (long)((g->seconds - (double)(time_t)g->seconds) * 1e9);
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&g->lock);
    while (!g->disarmed && pthread_cond_timedwait(&g->cond, &g->lock, &until) == 0)
        ;
    int fire = !g->disarmed, rc = g->rc;
    pthread_mutex_unlock(&g->lock);
    if (fire) {
        nlpd_log(NLPD_LOG_ERR, "kafka",
                 "shutdown: the clean-up still runs %.1f s after the loop ended: exiting now "
                 "(uncommitted records are consumed again after a restart)",
                 g->seconds);
        _exit(rc);
    }
    return NULL;
}

static void guard_arm(struct nlpd_daemon *d)
{
    struct guard *g = calloc(1, sizeof *g);
    if (!g || d->guard) {
        free(g);
        return;
    }
    double left = d->drain_deadline - nlpd_now();
    g->seconds = (left > 0 ? left : 0) + SHUTDOWN_SLACK_S;
    g->rc = d->fatal ? 1 : 0;
    pthread_mutex_init(&g->lock, NULL);
    pthread_cond_init(&g->cond, NULL);
    if (pthread_create(&g->thread, NULL, guard_thread, g) != 0) {
        pthread_mutex_destroy(&g->lock);
        pthread_cond_destroy(&g->cond);
        free(g);
        return;
    }
    d->guard = g;
}

static void guard_disarm(struct nlpd_daemon *d)
{
    struct guard *g = d->guard;
    if (!g)
        return;
    pthread_mutex_lock(&g->lock);
    g->disarmed = 1;
    pthread_cond_signal(&g->cond);
    pthread_mutex_unlock(&g->lock);
    pthread_join(g->thread, NULL);
    pthread_mutex_destroy(&g->lock);
    pthread_cond_destroy(&g->cond);
    free(g);
    d->guard = NULL;
}

static void close_consumer(struct nlpd_daemon *d);

int nlpd_daemon_run(struct nlpd_daemon *d, int handle_signals)
{
    d->t_start = nlpd_now();
    if (subscribe(d) < 0)
        return 1;
    if (handle_signals) {
        d->sigterm_ev = evsignal_new(d->base, SIGTERM, on_signal, d);
        d->sigint_ev = evsignal_new(d->base, SIGINT, on_signal, d);
        if (d->sigterm_ev)
            event_add(d->sigterm_ev, NULL);
        if (d->sigint_ev)
            event_add(d->sigint_ev, NULL);
        d->sighup_ev = evsignal_new(d->base, SIGHUP, on_sighup, d);
        if (d->sighup_ev)
            event_add(d->sighup_ev, NULL);
    }
    nlpd_log(NLPD_LOG_INFO, "kafka", "consuming %s as group %s, producing to %s (dead letters: %s)",
             d->cfg->kafka.input_topics.items[0], d->cfg->kafka.group_id, d->cfg->kafka.output_topic,
             d->cfg->kafka.dlq_topic);
    /* Models are loaded and the consumer is subscribed: ready. The watchdog is fed at half its interval. */
    uint64_t wd = nlpd_notify_watchdog_usec();
    d->watchdog_every = wd ? (double)wd / 2e6 : 0;
    d->next_watchdog = d->last_status = nlpd_now();
    nlpd_notify("READY=1\nSTATUS=consuming %s", d->cfg->kafka.input_topics.items[0]);
    event_base_dispatch(d->base);

    /* Drained (or fatal, or timed out): flush what is queued, then leave the group, which commits what is
     * stored (auto commit) after the revocation handler delivered what it could. All of it within the drain
     * deadline: with the group coordinator unreachable librdkafka would wait for the session timeout. */
    if (!d->draining)
        d->drain_deadline = nlpd_now() + (double)d->cfg->flow.shutdown_timeout_ms / 1e3;
    if (d->fatal && d->drain_deadline > nlpd_now() + FATAL_CLOSE_S) /* nothing more is delivered: leave now */
        d->drain_deadline = nlpd_now() + FATAL_CLOSE_S;
    d->draining = 1;
    if (d->fatal || d->inflight > 0) /* batches still queued are not worth running: none would be delivered */
        __atomic_store_n(&d->abandon, 1, __ATOMIC_RELEASE);
    guard_arm(d);
    if (!d->fatal) {
        double left = d->drain_deadline - nlpd_now();
        rd_kafka_flush(d->producer, left > 0.5 ? (int)(left * 1e3) : 500);
        rd_kafka_poll(d->producer, 0);
    }
    store_offsets(d);
    close_consumer(d);
    d->stats.seconds = nlpd_now() - d->t_start;
    nlpd_log(NLPD_LOG_INFO, "kafka", "stopped: %llu consumed, %llu produced, %llu dead-lettered%s",
             (unsigned long long)d->stats.consumed, (unsigned long long)d->stats.produced,
             (unsigned long long)d->stats.dead_lettered, d->dlq_refused ? ", some skipped (dlq_refused)" : "");
    if (d->guard) { /* a fatal error during the close changes the status */
        pthread_mutex_lock(&d->guard->lock);
        d->guard->rc = d->fatal ? 1 : 0;
        pthread_mutex_unlock(&d->guard->lock);
    }
    return d->fatal ? 1 : 0;
}

struct closer {
    rd_kafka_t *rk;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int done, abandoned;
};

static void *close_thread(void *arg)
{
    struct closer *c = arg;
    rd_kafka_consumer_close(c->rk);
    pthread_mutex_lock(&c->lock);
    c->done = 1;
    int abandoned = c->abandoned;
    pthread_cond_signal(&c->cond);
    pthread_mutex_unlock(&c->lock);
    if (abandoned) { /* the waiter left: the closer is ours to free */
        pthread_mutex_destroy(&c->lock);
        pthread_cond_destroy(&c->cond);
        free(c);
    }
    return NULL;
}

/* rd_kafka_consumer_close() with the drain deadline (at least a second): past it nlpd exits without a clean
 * group leave; what was committed stays committed, the rest is consumed again after the restart. */
static void close_consumer(struct nlpd_daemon *d)
{
    struct closer *c = calloc(1, sizeof *c);
    pthread_t th;
    if (c) {
        c->rk = d->consumer;
        pthread_mutex_init(&c->lock, NULL);
        pthread_cond_init(&c->cond, NULL);
    }
    if (!c || pthread_create(&th, NULL, close_thread, c) != 0) {
        free(c);
        rd_kafka_consumer_close(d->consumer);
        d->subscribed = 0;
        return;
    }
    double left = d->drain_deadline - nlpd_now();
    if (left < 1.0)
        left = 1.0;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += (time_t)left;
    until.tv_nsec += (long)((left - (double)(time_t)left) * 1e9);
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&c->lock);
    while (!c->done && pthread_cond_timedwait(&c->cond, &c->lock, &until) == 0)
        ;
    int done = c->done;
    if (!done)
        c->abandoned = 1;
    pthread_mutex_unlock(&c->lock);
    d->subscribed = 0;
    if (done) {
        pthread_join(th, NULL);
        pthread_mutex_destroy(&c->lock);
        pthread_cond_destroy(&c->cond);
        free(c);
        return;
    }
    pthread_detach(th);
    d->consumer_hung = 1; /* still inside librdkafka: never destroyed, the process is about to exit */
    nlpd_log(NLPD_LOG_WARNING, "kafka", "shutdown timeout: left the group without a clean close (the group "
                                        "coordinator does not answer); uncommitted records are consumed again "
                                        "after a restart");
}

void nlpd_daemon_stop(struct nlpd_daemon *d)
{
    pthread_mutex_lock(&d->lock);
    d->stop_requested = 1;
    pthread_mutex_unlock(&d->lock);
    wake(d);
}

uint64_t nlpd_daemon_acked(struct nlpd_daemon *d, double *t_first_in)
{
    if (t_first_in)
        *t_first_in = d->t_first_in; /* written once, before the first ack can be seen */
    return __atomic_load_n(&d->acked, __ATOMIC_ACQUIRE);
}

int nlpd_daemon_wait_assigned(struct nlpd_daemon *d, double timeout_s)
{
    double end = nlpd_now() + timeout_s;
    while (__atomic_load_n(&d->assigned, __ATOMIC_SEQ_CST) == 0) {
        if (nlpd_now() > end)
            return 0;
        usleep(20000);
    }
    return 1;
}

const char *nlpd_daemon_bootstraps(const struct nlpd_daemon *d)
{
    return d->bootstraps;
}

void nlpd_daemon_get_stats(struct nlpd_daemon *d, struct nlpd_daemon_stats *st)
{
    *st = d->stats;
    st->latency_p50_ms = nlpd_latency_percentile(&d->lat, 0.5);
    st->latency_p99_ms = nlpd_latency_percentile(&d->lat, 0.99);
    st->latency_max_ms = d->lat.max;
}

void nlpd_daemon_own_config(struct nlpd_daemon *d)
{
    d->gen->owned = 1;
}

void nlpd_daemon_free(struct nlpd_daemon *d)
{
    if (!d)
        return;
    if (d->rl.running) { /* a reload still loading: let it end (it only reads) */
        pthread_join(d->rl.thread, NULL);
        d->rl.running = 0;
        nlpd_diag_free(&d->rl.diag);
    }
    if (d->consumer_hung) {
        guard_disarm(d);
        return; /* its close still runs and may call back into d: the process exits instead of freeing */
    }
    /* Every consumed message must be destroyed before the consumer, or rd_kafka_destroy() waits for them forever:
     * the records still held (a fatal stop or the deadline) go first, uncommitted: consumed again later. Jobs
     * still queued only come back (abandoned: no stage runs); their on_done hands them to d, still whole. */
    __atomic_store_n(&d->abandon, 1, __ATOMIC_RELEASE);
    if (d->gen && d->gen->p) {
        nlpd_pipeline_stop(d->gen->p);
        nlpd_pipeline_on_space(d->gen->p, NULL, NULL); /* its creator may keep it */
    }
    struct event *evs[] = {d->cq_ev,   d->pq_ev,      d->wake_ev,  d->batch_timer,
                           d->tick,    d->more_ev,    d->sigterm_ev, d->sigint_ev, d->sighup_ev};
    for (size_t i = 0; i < sizeof evs / sizeof evs[0]; i++)
        if (evs[i])
            event_free(evs[i]);
    if (d->cq)
        rd_kafka_queue_destroy(d->cq);
    if (d->pq)
        rd_kafka_queue_destroy(d->pq);
    if (d->cur) {
        for (size_t i = 0; i < d->cur->n; i++)
            item_free(d, d->cur->items[i]);
        batch_free(d->cur);
    }
    for (struct kbatch *b = d->held_head, *n; b; b = n) { /* closed, never taken by a worker */
        n = b->held_next;
        for (size_t i = 0; i < b->n; i++)
            item_free(d, b->items[i]);
        batch_free(b);
    }
    for (struct kbatch *b = d->done_head, *n; b; b = n) {
        n = b->next;
        for (size_t i = 0; i < b->n; i++)
            item_free(d, b->items[i]);
        batch_free(b);
    }
    for (struct kitem *it = d->pending_head, *n; it; it = n) {
        n = it->next;
        item_free(d, it);
    }
    int held = 0; /* messages the producer still references (key and value point into consumed messages) */
    if (d->producer) {
        d->closing = 1;
        rd_kafka_purge(d->producer, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        double until = nlpd_now() + 2.0;
        do /* the delivery reports of purged messages free their items */
            rd_kafka_poll(d->producer, 10);
        while ((held = rd_kafka_outq_len(d->producer)) > 0 && nlpd_now() < until);
    }
    if (held) {
        nlpd_log(NLPD_LOG_WARNING, "kafka",
                 "%d message(s) not released by the producer: exiting without freeing "
                 "the Kafka clients",
                 held);
        guard_disarm(d);
        return;
    }
    if (d->consumer) {
        if (d->subscribed)
            rd_kafka_consumer_close(d->consumer);
        rd_kafka_destroy(d->consumer);
    }
    if (d->producer)
        rd_kafka_destroy(d->producer);
    if (d->mock)
        rd_kafka_mock_cluster_destroy(d->mock);
    if (d->mock_rk)
        rd_kafka_destroy(d->mock_rk);
    nlpd_http_free(d->http);
    if (d->base)
        event_base_free(d->base);
    int fds[] = {d->cq_pipe[0], d->cq_pipe[1], d->pq_pipe[0], d->pq_pipe[1], d->wake_pipe[0], d->wake_pipe[1]};
    for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    /* After every item (records point into their generation). */
    for (struct kgen *g = d->retired, *n; g; g = n) {
        n = g->next;
        gen_free(g);
    }
    gen_free(d->rl.next);
    gen_free(d->gen);
    nlpd_offsets_free(d->offsets);
    pthread_mutex_destroy(&d->lock);
    nlpd_latency_free(&d->lat);
    free(d->bootstraps);
    guard_disarm(d);
    free(d);
}
