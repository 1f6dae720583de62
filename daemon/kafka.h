/* The Kafka daemon (`nlpd run`): a consumer-group member that runs the pipeline on micro-batches and
 * produces enriched records (or dead letters) with at-least-once delivery: an offset is stored for
 * commit only when it and every earlier offset of its partition are acknowledged by the broker.
 * One event-loop thread (libevent) owns both Kafka clients, the offset tracker and the timers. */
#ifndef NLPD_KAFKA_H
#define NLPD_KAFKA_H

#include <stdint.h>

#include "config.h"
#include "diag.h"
#include "pipeline.h"

struct nlpd_daemon;

struct nlpd_daemon_stats {
    uint64_t consumed, produced, dead_lettered, produce_retries;
    double latency_p50_ms, latency_p99_ms, latency_max_ms; /* record timestamp -> broker ack */
    double seconds;                                        /* wall time of nlpd_daemon_run */
};

/* Checks the Kafka part of a config beyond types: librdkafka accepts every property. */
int nlpd_kafka_check(const struct nlpd_config *cfg, struct nlpd_diag *diag);

/* Creates the clients (and the embedded broker when kafka.brokers is "embedded") and waits until the
 * brokers answer, up to kafka.startup_timeout_ms. The pipeline's workers must be started. */
struct nlpd_daemon *nlpd_daemon_new(const struct nlpd_config *cfg, struct nlpd_pipeline *p, struct nlpd_error *err);
/* From now on d owns the cfg and p it was created with (nlpd_daemon_free frees them), so that a SIGHUP reload can
 * free them once a new configuration replaced them; without it they stay allocated until their creator frees
 * them after nlpd_daemon_free. Call before nlpd_daemon_run. */
void nlpd_daemon_own_config(struct nlpd_daemon *d);
/* Runs until nlpd_daemon_stop() or SIGTERM/SIGINT (when handle_signals), then drains: stops fetching,
 * finishes in-flight records, flushes, commits and closes. Returns 0, or 1 after a fatal error.
 * With handle_signals, SIGHUP reloads the config file: an invalid file, a model that does not load, or a
 * changed key flagged NLPD_CONF_RESTART leaves everything as it is; otherwise the new pipeline is built beside
 * the running one, which finishes its batches before new batches go to the new one (no record lost or run
 * twice). */
int nlpd_daemon_run(struct nlpd_daemon *d, int handle_signals);
/* Asks a running daemon to drain and stop; safe from any thread. */
void nlpd_daemon_stop(struct nlpd_daemon *d);
/* Waits (from another thread) until the running daemon has partitions assigned; 0 on timeout. */
int nlpd_daemon_wait_assigned(struct nlpd_daemon *d, double timeout_s);
/* Records delivered so far (output or dead letter), from any thread; *t_first_in (may be NULL) gets the
 * monotonic time the first record was consumed, once one was. For progress and benchmarks. */
uint64_t nlpd_daemon_acked(struct nlpd_daemon *d, double *t_first_in);
/* The bootstrap servers the daemon uses (the embedded broker's address when embedded). */
const char *nlpd_daemon_bootstraps(const struct nlpd_daemon *d);
void nlpd_daemon_get_stats(struct nlpd_daemon *d, struct nlpd_daemon_stats *st);
void nlpd_daemon_free(struct nlpd_daemon *d);

#endif
