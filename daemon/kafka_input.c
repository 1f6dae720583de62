/* The daemon's input (see kafka_internal.h): consuming, micro-batches (closing, holding for a full pipeline queue,
 * through the batcher), flow control and its pause reasons, rebalances, and handing delivered offsets to
 * librdkafka. Runs on the event loop, except the two callbacks from worker threads. */
#include <event2/event.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "kafka_internal.h"
#include "log.h"
#include "offsets.h"
#include "record.h"

#define POLL_BATCH   5000 /* consumer messages handled per wake-up before yielding to other events */
#define HOLD_PAUSE_S 1.0  /* input held back for a slow pipeline this long: pause the partitions too */

const char *const nlpd_kd_flow_reason_names[] = {"records", "bytes", "pipeline", "producer", "draining"};

/* ---- flow control ---- */

/* Polls the consumer again on the next loop iteration, after the other ready events: a zero timer,
 * not event_active(), which would run before the loop looks at its descriptors again and starve them. */
void nlpd_kd_poll_again(struct nlpd_daemon *d)
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
    nlpd_pipeline_set_pressure(d->p, paused); /* shadows go first */
    char why[96] = "";
    for (int r = 0, n = 0; r < FLOW_NREASONS; r++)
        if (d->flow_why & (1u << r))
            n += snprintf(why + n, sizeof why - (size_t)n, "%s%s", n ? "," : "", nlpd_kd_flow_reason_names[r]);
    nlpd_log(NLPD_LOG_DEBUG, "kafka", "%s input partitions (%zu records, %llu bytes in flight%s%s)",
             paused ? "paused" : "resumed", d->inflight, (unsigned long long)d->inflight_bytes, paused ? "; " : "",
             why);
    if (!paused)
        nlpd_kd_poll_again(d);
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
    size_t nheld = nlpd_batcher_held(d->bt);
    if (nheld >= hold && !d->held_since) {
        d->held_since = nlpd_now();
        d->flow_pauses[FLOW_PIPELINE]++;
    } else if (nheld <= hold / 2 && d->held_since) {
        d->held_since = 0;
        nlpd_kd_poll_again(d);
    }
    return d->held_since != 0;
}

/* Pause at max_inflight records or max_inflight_bytes (resuming at half), for a pipeline that stays behind (see
 * hold_input()), while the producer queue is full, and for good when draining. */
void nlpd_kd_update_flow(struct nlpd_daemon *d)
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

/* A worker made room in a full pipeline queue (worker thread): the loop hands it the next held batch (see
 * nlpd_batcher_push()). */
void nlpd_kd_on_pipeline_space(void *user)
{
    nlpd_kd_wake(user);
}

/* ---- offsets ---- */

static void add_offset(const char *topic, int32_t partition, int64_t offset, void *user)
{
    rd_kafka_topic_partition_list_add(user, topic, partition)->offset = offset;
}

/* Hands the moved watermarks to librdkafka, which commits them on its timer, at revocation and at close. */
void nlpd_kd_store_offsets(struct nlpd_daemon *d)
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

/* ---- batches ---- */

/* Frees b and the records it still holds (never produced nor committed). */
void nlpd_kd_batch_free(struct nlpd_daemon *d, struct nlpd_mbatch *b)
{
    for (size_t i = 0; i < b->n; i++)
        nlpd_kd_item_free(d, b->slots[i].user);
    nlpd_batcher_batch_free(b);
}

/* Worker thread: a batch reached the batcher's completion queue. */
void nlpd_kd_on_batch_done(void *user)
{
    nlpd_kd_wake(user);
}

static const struct nlpd_codec *gen_codec(struct kgen *g)
{
    if (!g->codec.input)
        g->codec = (struct nlpd_codec){&g->cfg->input, g->avro_in, g->avro_out, g->models, g->nmodels};
    return &g->codec;
}

/* Closes the batch being filled: it goes to the current pipeline, now or (queue full) once there is room. */
void nlpd_kd_submit_current(struct nlpd_daemon *d)
{
    struct nlpd_mbatch *b = d->cur;
    if (!b)
        return;
    d->cur = NULL;
    evtimer_del(d->batch_timer);
    b->user = d->gen;
    for (size_t i = 0; i < b->n; i++)
        ((struct kitem *)b->slots[i].user)->gen = d->gen;
    d->gen->items += b->n;
    d->batches_out++;
    nlpd_batcher_submit(d->bt, b, d->gen->p, gen_codec(d->gen), 0);
}

void nlpd_kd_process_done(struct nlpd_daemon *d)
{
    struct nlpd_mbatch *b = nlpd_batcher_take_done(d->bt);
    int abandon = __atomic_load_n(&d->abandon, __ATOMIC_ACQUIRE);
    nlpd_batcher_push(d->bt);
    while (b) {
        struct nlpd_mbatch *next = b->next;
        for (size_t i = 0; i < b->n; i++) {
            struct kitem *it = b->slots[i].user;
            it->dead = b->slots[i].dead;
            if (!it->dead && !it->item.rec.route) /* a topic a stage chose wins over output.routes */
                it->route = nlpd_routes_match(&it->gen->cfg->routes, &it->item.rec);
            if (abandon) /* stopping past the deadline or after a fatal error: never produced nor committed */
                nlpd_kd_item_free(d, it);
            else
                nlpd_kd_produce(d, it);
        }
        nlpd_batcher_batch_free(b);
        d->batches_out--;
        b = next;
    }
    nlpd_kd_update_flow(d);
    nlpd_kd_try_swap(d);
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
        nlpd_kd_fail_fatal(d, "cannot track %s[%d]@%lld: out of memory", rd_kafka_topic_name(m->rkt), (int)m->partition,
                           (long long)m->offset);
        free(it);
        rd_kafka_message_destroy(m);
        return;
    }
    rd_kafka_timestamp_type_t tt;
    it->msg = m;
    it->tp = tp;
    it->bytes = m->len + m->key_len;
    double now = nlpd_now();
    it->item.t_in = now;
    it->item.source = (struct nlpd_source){1, rd_kafka_topic_name(m->rkt), m->partition, m->offset,
                                           rd_kafka_message_timestamp(m, &tt)};
    it->item.rec.topic = it->item.source.topic;
    it->item.rec.key = m->key, it->item.rec.key_len = m->key_len; /* m lives as long as the item */
    d->inflight++;
    d->inflight_bytes += it->bytes;
    if (d->stats.consumed++ == 0)
        d->t_first_in = now;
    if (!d->cur) {
        d->cur = nlpd_batcher_batch_new(d->bt, (size_t)d->cfg->batch.max_records);
        if (!d->cur) { /* not the record's fault: no dead letter; kept, never committed */
            nlpd_kd_fail_fatal(d, "cannot batch %s[%d]@%lld: out of memory", rd_kafka_topic_name(m->rkt),
                               (int)m->partition, (long long)m->offset);
            nlpd_kd_push_pending(d, it);
            return;
        }
        struct timeval tv = {d->cfg->batch.max_wait_ms / 1000, (d->cfg->batch.max_wait_ms % 1000) * 1000};
        evtimer_add(d->batch_timer, &tv);
    }
    struct nlpd_bslot *slot = nlpd_batcher_add(d->cur, &it->item, m->payload ? m->payload : "", m->len, 0);
    slot->user = it;
    slot->out = &it->out;
    if (d->cur->n == d->cur->cap)
        nlpd_kd_submit_current(d);
}

void nlpd_kd_poll_consumer(struct nlpd_daemon *d)
{
    if (d->rl.swapping)
        return; /* a reload waits for the old pipeline's batches; polling resumes after the swap */
    if (d->held_since && !d->paused)
        return; /* held back for the pipeline; polling resumes when the hold eases (or it pauses) */
    for (int i = 0; i < POLL_BATCH && !d->fatal; i++) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(d->consumer, 0);
        if (!m) {
            nlpd_kd_update_flow(d);
            return;
        }
        handle_message(d, m);
        if (d->inflight >= (size_t)d->cfg->flow.max_inflight ||
            d->inflight_bytes >= (uint64_t)d->cfg->flow.max_inflight_bytes || nlpd_batcher_held(d->bt)) {
            nlpd_kd_update_flow(d); /* pause at the bound, not a poll batch later */
            if (d->held_since && !d->paused)
                return;
        }
        if (i % 256 == 255) { /* keep finished batches flowing out while input pours in */
            nlpd_kd_process_done(d);
            rd_kafka_poll(d->producer, 0);
        }
    }
    nlpd_kd_update_flow(d);
    nlpd_kd_poll_again(d); /* more may be waiting */
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
static void drain_partitions(struct nlpd_daemon *d, const rd_kafka_topic_partition_list_t *parts, double deadline)
{
    nlpd_kd_submit_current(d);
    while (!partitions_idle(d, parts) && nlpd_now() < deadline && !d->fatal) {
        nlpd_kd_process_done(d);
        nlpd_kd_produce_pending(d);
        rd_kafka_poll(d->producer, 10);
        nlpd_kd_notify_tick(d); /* up to 20 s outside the loop: systemd's watchdog must still hear from us */
    }
}

void nlpd_kd_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts, void *opaque)
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
            nlpd_log(NLPD_LOG_WARNING, "kafka",
                     "revoked partitions still have records in flight: their offsets "
                     "stay uncommitted and the next owner processes them again");
        nlpd_kd_store_offsets(d);
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
