/* What the files of the Kafka daemon share (kafka.c, kafka_input.c, kafka_output.c, kafka_reload.c,
 * kafka_metrics.c, kafka_embedded.c): its state and the functions they call across. Everything here runs on the
 * event-loop thread unless it says otherwise. Not for the rest of nlpd: kafka.h is the daemon's interface. */
#ifndef NLPD_KAFKA_INTERNAL_H
#define NLPD_KAFKA_INTERNAL_H

#include <event2/event.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <pthread.h>
#include <stdint.h>
#include <time.h>

#include "avro_codec.h"
#include "batcher.h"
#include "buf.h"
#include "http.h"
#include "kafka.h"
#include "metrics.h"
#include "offsets.h"
#include "record.h"

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
    struct nlpd_codec codec;      /* the above for the batcher, set before the first batch is submitted */
    size_t items;                 /* records handed to p and not yet freed */
    struct kgen *next;            /* retired list */
};

enum reload_result { RELOAD_APPLIED, RELOAD_INVALID, RELOAD_RESTART_REQUIRED, RELOAD_FAILED, RELOAD_NRESULTS };
extern const char *const nlpd_kd_reload_result_names[];

struct kitem {
    struct nlpd_item item;
    struct kgen *gen;        /* the generation whose pipeline processes it; NULL before its batch is submitted */
    rd_kafka_message_t *msg; /* the consumed record, kept until its output is acknowledged */
    struct nlpd_tp *tp;
    size_t bytes;        /* counted in nlpd_daemon.inflight_bytes: value and key as consumed */
    struct nlpd_buf out; /* encoded output value; empty for a dead letter */
    int dead;            /* produce to the dead-letter topic */
    int cut;             /* the dead letter carries only the first bytes of the value (kafka.dlq_oversize) */
    /* output.routes: the matching route (in gen's config), set by the worker; with copy, the record goes to the
     * route's topic first and, once that copy is acknowledged (routed), to output_topic: its offset is stored only
     * after both. */
    const struct nlpd_route *route;
    int routed;
    struct kitem *next; /* pending-produce list */
};

/* Why the input is paused (DESIGN.md §8): each reason comes and goes on its own. */
enum flow_reason { FLOW_RECORDS, FLOW_BYTES, FLOW_PIPELINE, FLOW_PRODUCER, FLOW_DRAINING, FLOW_NREASONS };
extern const char *const nlpd_kd_flow_reason_names[];

/* The daemon's state, grouped by the file that writes it; /metrics (kafka_metrics.c) reads much of it. Everything
 * belongs to the event-loop thread except what says otherwise (lock, atomics). */
struct nlpd_daemon {
    /* The running generation (swapped by kafka_reload.c) */
    const struct nlpd_config *cfg; /* gen->cfg */
    struct nlpd_pipeline *p;       /* gen->p */
    struct kgen *gen;              /* current */
    struct kgen *retired;          /* replaced by a reload, with records still in flight */

    /* kafka_reload.c: SIGHUP reload: a thread loads and checks the file and builds the new pipeline (models
     * included) while the old one keeps running; then the loop stops polling, lets the old pipeline finish its
     * batches, and swaps. */
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

    /* kafka.c: clients, event loop, lifecycle (kafka_embedded.c sets mock_rk, mock and bootstraps) */
    rd_kafka_t *mock_rk;
    rd_kafka_mock_cluster_t *mock;
    struct nlpd_kd_forward *mock_forward; /* kafka.embedded_port (kafka_forward.c); NULL without it */
    char *bootstraps;
    rd_kafka_t *consumer, *producer;
    rd_kafka_queue_t *cq, *pq;
    struct event_base *base;
    struct event *cq_ev, *pq_ev, *wake_ev, *batch_timer, *tick, *more_ev, *sigterm_ev, *sigint_ev, *sighup_ev;
    int cq_pipe[2], pq_pipe[2], wake_pipe[2];
    pthread_mutex_t lock; /* guards stop_requested */
    int stop_requested;
    int draining, fatal, subscribed;
    int consumer_hung;   /* a close that missed the shutdown deadline still runs: leave the consumer alone */
    int closing;         /* nlpd_daemon_free: delivery reports only release their records */
    int abandon;         /* workers skip the stages of batches still queued (atomic): the daemon is going */
    struct guard *guard; /* bounds the shutdown (nlpd_daemon_run to nlpd_daemon_free) */
    double drain_deadline;
    rd_kafka_resp_err_t last_error; /* logged once per change (also by kafka_input.c) */
    double t_start;
    double watchdog_every, next_watchdog, last_status; /* systemd: seconds */
    uint64_t status_consumed;
    struct nlpd_http *http;

    /* kafka_input.c: consuming, batches, flow control, offsets */
    /* Batches (a batch's user is its kgen, a slot's user its kitem): closed ones the pipeline's queue had no room
     * for wait in it, in order (the loop never waits on a worker); finished ones come back through it. */
    struct nlpd_batcher *bt;
    struct nlpd_mbatch *cur;
    size_t batches_out; /* closed (held or submitted), not yet back in nlpd_kd_process_done() */
    struct nlpd_offsets *offsets;
    size_t inflight;         /* consumed, not yet delivered (kafka_output.c counts them down) */
    uint64_t inflight_bytes; /* values and keys of the records in flight (flow.max_inflight_bytes) */
    unsigned flow_why;       /* FLOW_* bits: why the input is paused */
    double held_since;       /* when closed batches filled the hold (a slow pipeline) and polling stopped; 0: not */
    uint64_t flow_pauses[FLOW_NREASONS];
    int paused;
    int assigned;                   /* partitions currently assigned; read from other threads (atomic) */
    double t_first_in;              /* when the first record was consumed */
    struct nlpd_histogram queue_ms; /* consumed -> a worker starts its batch */

    /* kafka_output.c: producing, delivery reports, dead letters */
    struct kitem *pending_head, *pending_tail; /* produce refused (queue full): retried in order */
    size_t max_msg;                            /* the producer's message.max.bytes */
    uint64_t dlq_refused;                      /* records skipped: not even a truncated dead letter was accepted */
    uint64_t acked; /* records delivered (output or dead letter); read from other threads (atomic) */
    struct {
        char route[64], topic[128]; /* copies: a reload frees the configuration they came from */
        uint64_t n;
    } routed[32]; /* acknowledged route copies, by route (nlpd_routed_records_total) */
    size_t nrouted;
    struct nlpd_latency_sample lat;   /* end to end, for the summary */
    struct nlpd_histogram e2e_ms;     /* record timestamp -> broker ack of its output */
    struct nlpd_label_counts dead_by; /* by the failing stage ("input", "output", a stage name) */

    struct nlpd_daemon_stats stats; /* consumed: kafka_input.c; produced and the rest: kafka_output.c */

    /* kafka_output.c, shown by kafka_metrics.c */
    struct nlpd_label_counts produced_by; /* acknowledged records by destination topic */
    uint64_t flagged;                     /* acknowledged enriched records a moderation stage flagged */

    /* kafka_metrics.c: consumer lag per assigned partition, from librdkafka's statistics */
    struct {
        char topic[128];
        int32_t partition;
        int64_t lag;
    } lag[256];
    size_t nlag;
};

static inline int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* kafka.c: the event loop and the lifecycle */
void nlpd_kd_wake(struct nlpd_daemon *d); /* any thread */
void nlpd_kd_fail_fatal(struct nlpd_daemon *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void nlpd_kd_notify_tick(struct nlpd_daemon *d);
void nlpd_kd_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf);

/* kafka_input.c: consuming, batches, flow control, rebalances, offsets */
void nlpd_kd_poll_again(struct nlpd_daemon *d);
void nlpd_kd_update_flow(struct nlpd_daemon *d);
void nlpd_kd_on_pipeline_space(void *user);                            /* worker thread */
void nlpd_kd_on_batch_done(void *user);                                /* worker thread */
void nlpd_kd_batch_free(struct nlpd_daemon *d, struct nlpd_mbatch *b); /* and its records */
void nlpd_kd_submit_current(struct nlpd_daemon *d);
void nlpd_kd_process_done(struct nlpd_daemon *d);
void nlpd_kd_poll_consumer(struct nlpd_daemon *d);
void nlpd_kd_store_offsets(struct nlpd_daemon *d);
void nlpd_kd_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts,
                          void *opaque);

/* kafka_output.c: producing, delivery reports, dead letters */
void nlpd_kd_item_free(struct nlpd_daemon *d, struct kitem *it);
void nlpd_kd_push_pending(struct nlpd_daemon *d, struct kitem *it);
void nlpd_kd_produce_pending(struct nlpd_daemon *d);
void nlpd_kd_produce(struct nlpd_daemon *d, struct kitem *it);
void nlpd_kd_dr_msg_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque);

/* kafka_reload.c: SIGHUP reload and generations */
void nlpd_kd_gen_free(struct kgen *g);
void nlpd_kd_gen_release(struct nlpd_daemon *d, struct kgen *g);
void nlpd_kd_start_reload(struct nlpd_daemon *d);
void nlpd_kd_try_swap(struct nlpd_daemon *d);
void nlpd_kd_reload_collect(struct nlpd_daemon *d);
void nlpd_kd_reload_abandon(struct nlpd_daemon *d);

/* kafka_metrics.c: /metrics, readiness, librdkafka statistics */
int nlpd_kd_stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque);
void nlpd_kd_http_metrics(void *arg, struct nlpd_buf *out);
const char *nlpd_kd_http_not_ready(void *arg);

/* kafka_embedded.c */
int nlpd_kd_start_embedded(struct nlpd_daemon *d, struct nlpd_error *err);

#endif
