/* The Kafka daemon's lifecycle (see kafka.h): set-up of the clients and the event loop, nlpd_daemon_run with its
 * signals, ticks and drain, the bounded shutdown, and nlpd_daemon_free. The parts live in kafka_input.c (consuming),
 * kafka_output.c (producing), kafka_reload.c (SIGHUP), kafka_metrics.c and kafka_embedded.c. */
#include "kafka.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "kafka_forward.h"
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "http.h"
#include "kafka_internal.h"
#include "log.h"
#include "notify.h"
#include "offsets.h"

#define TICK_MS          50
#define FATAL_CLOSE_S    5.0 /* after a fatal error, the most the group leave (and its commit) may take */
#define SHUTDOWN_SLACK_S 5.0 /* past the drain deadline, the most the clean-up may take before nlpd exits anyway */

/* ---- small helpers ---- */

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

void nlpd_kd_wake(struct nlpd_daemon *d)
{
    char c = 1;
    ssize_t w = write(d->wake_pipe[1], &c, 1); /* EAGAIN: a wake-up is already pending */
    (void)w;
}

void nlpd_kd_fail_fatal(struct nlpd_daemon *d, const char *fmt, ...)
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

/* ---- events ---- */

static void on_consumer(evutil_socket_t fd, short what, void *arg)
{
    struct nlpd_daemon *d = arg;
    (void)what;
    drain_fd(fd);
    nlpd_kd_poll_consumer(d);
}

static void on_more(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    nlpd_kd_poll_consumer(arg);
}

static void on_producer(evutil_socket_t fd, short what, void *arg)
{
    struct nlpd_daemon *d = arg;
    (void)what;
    drain_fd(fd);
    rd_kafka_poll(d->producer, 0);
    nlpd_kd_produce_pending(d);
    nlpd_kd_update_flow(d);
}
static void start_drain(struct nlpd_daemon *d, const char *why)
{
    if (d->draining)
        return;
    nlpd_log(NLPD_LOG_NOTICE, "kafka", "%s: draining %zu record(s) in flight", why, d->inflight);
    nlpd_notify("STOPPING=1\nSTATUS=draining %zu record(s) in flight", d->inflight);
    d->draining = 1;
    d->drain_deadline = nlpd_now() + (double)d->cfg->flow.shutdown_timeout_ms / 1e3;
    nlpd_kd_reload_abandon(d);
    nlpd_kd_submit_current(d);
    nlpd_kd_update_flow(d);
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
    nlpd_kd_process_done(d);
    nlpd_kd_reload_collect(d);
}

static void on_batch_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    nlpd_kd_submit_current(arg);
}

/* systemd: the watchdog is fed from the event loop, so a stuck loop stops feeding it; none after a fatal
 * error. STATUS carries throughput every few seconds. */
void nlpd_kd_notify_tick(struct nlpd_daemon *d)
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
    nlpd_kd_notify_tick(d);
    nlpd_kd_poll_consumer(d); /* also keeps the group membership alive while paused */
    rd_kafka_poll(d->producer, 0);
    nlpd_kd_process_done(d);
    nlpd_kd_produce_pending(d);
    nlpd_kd_store_offsets(d);
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
    nlpd_kd_start_reload(arg);
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    struct nlpd_daemon *d = opaque;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char why[512];
        rd_kafka_fatal_error(rk, why, sizeof why);
        nlpd_kd_fail_fatal(d, "%s: %s", rd_kafka_name(rk), why);
        return;
    }
    if (err != (int)d->last_error) { /* brokers down etc.: librdkafka retries; say it once */
        nlpd_log(NLPD_LOG_WARNING, "kafka", "%s: %s", rd_kafka_name(rk), reason);
        d->last_error = err;
    }
}

/* librdkafka's syslog levels map one to one. A broker connection failure ("FAIL") also reaches the error callback,
 * which logs it once with the client's name at the level that fits a retried failure: not twice here. */
void nlpd_kd_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    if (strcmp(fac, "FAIL") == 0)
        return;
    enum nlpd_log_level l = level <= 3   ? NLPD_LOG_ERR
                            : level == 4 ? NLPD_LOG_WARNING
                            : level == 5 ? NLPD_LOG_NOTICE
                            : level == 6 ? NLPD_LOG_INFO
                                         : NLPD_LOG_DEBUG;
    nlpd_log(l, "rdkafka", "%s: %s", fac, buf);
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
    rd_kafka_conf_set_log_cb(c, nlpd_kd_log_cb);
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
            for (size_t i = 0; i < d->cfg->routes.n; i++)
                warm_topic(d, d->cfg->routes.r[i].topic);
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

static int io_event(struct nlpd_daemon *d, rd_kafka_queue_t *q, int fds[2], struct event **ev, event_callback_fn cb)
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
        nlpd_error_set(err, NLPD_EINVAL, 0,
                       "%s: no kafka section: `nlpd run` needs kafka.brokers, input_topics, "
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
    int32_t schema_id;
    if (strcmp(cfg->output.format, "avro") == 0 &&
        (nlpd_sr_output_id(&cfg->output.registry, cfg->output.schema, cfg->kafka.output_topic,
                           (int32_t)cfg->output.confluent_schema_id, &schema_id, err) < 0 ||
         !(d->gen->avro_out = nlpd_avro_out_new(cfg->output.schema, schema_id, err))))
        goto bad;
    if (strcmp(cfg->input.format, "avro") == 0 && !(d->gen->avro_in = nlpd_avro_in_new(&cfg->input, err)))
        goto bad;
    if (strcmp(cfg->kafka.brokers, "embedded") == 0) {
        if (nlpd_kd_start_embedded(d, err) < 0)
            goto bad;
    } else {
        d->bootstraps = strdup(cfg->kafka.brokers);
    }

    rd_kafka_conf_t *pc = base_conf(d, err);
    if (!pc)
        goto bad;
    conf_set(pc, "enable.idempotence", "true", NULL);
    conf_set(pc, "linger.ms", "5", NULL);
    rd_kafka_conf_set_dr_msg_cb(pc, nlpd_kd_dr_msg_cb);
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
            nlpd_log(NLPD_LOG_WARNING, "kafka",
                     "ignoring enable.auto.offset.store: nlpd stores offsets itself, "
                     "only for delivered records");
            continue;
        }
        conf_set(cc, cfg->kafka.properties.from[i], cfg->kafka.properties.to[i], NULL);
    }
    rd_kafka_conf_set_rebalance_cb(cc, nlpd_kd_rebalance_cb);
    if (cfg->metrics.listen && *cfg->metrics.listen) { /* consumer lag for /metrics */
        conf_set(cc, "statistics.interval.ms", "5000", NULL);
        rd_kafka_conf_set_stats_cb(cc, nlpd_kd_stats_cb);
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
    nlpd_pipeline_on_space(p, nlpd_kd_on_pipeline_space, d);
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
    struct nlpd_batcher_conf bc = {
        .abandon = &d->abandon, .queue_ms = &d->queue_ms, .notify = nlpd_kd_on_batch_done, .user = d};
    if (!(d->bt = nlpd_batcher_new(&bc)))
        goto bad_sys;
    struct nlpd_http_handlers hh = {nlpd_kd_http_metrics, nlpd_kd_http_not_ready, d};
    if (nlpd_http_start(d->base, &cfg->metrics, &hh, &d->http, err) < 0)
        goto bad;
    struct timeval tick = {0, TICK_MS * 1000};
    if (!d->wake_ev || !d->batch_timer || !d->tick || !d->more_ev || event_add(d->wake_ev, NULL) < 0 ||
        event_add(d->tick, &tick) < 0)
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
    nlpd_kd_store_offsets(d);
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
    nlpd_log(NLPD_LOG_WARNING, "kafka",
             "shutdown timeout: left the group without a clean close (the group "
             "coordinator does not answer); uncommitted records are consumed again "
             "after a restart");
}

void nlpd_daemon_stop(struct nlpd_daemon *d)
{
    pthread_mutex_lock(&d->lock);
    d->stop_requested = 1;
    pthread_mutex_unlock(&d->lock);
    nlpd_kd_wake(d);
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
     * still queued only come back (abandoned: no stage runs); the batcher hands them back to d, still whole. */
    __atomic_store_n(&d->abandon, 1, __ATOMIC_RELEASE);
    if (d->gen && d->gen->p) {
        nlpd_pipeline_stop(d->gen->p);
        nlpd_pipeline_on_space(d->gen->p, NULL, NULL); /* its creator may keep it */
    }
    struct event *evs[] = {d->cq_ev,   d->pq_ev,      d->wake_ev,   d->batch_timer, d->tick,
                           d->more_ev, d->sigterm_ev, d->sigint_ev, d->sighup_ev};
    for (size_t i = 0; i < sizeof evs / sizeof evs[0]; i++)
        if (evs[i])
            event_free(evs[i]);
    if (d->cq)
        rd_kafka_queue_destroy(d->cq);
    if (d->pq)
        rd_kafka_queue_destroy(d->pq);
    if (d->cur)
        nlpd_kd_batch_free(d, d->cur);
    if (d->bt) {
        for (struct nlpd_mbatch *b = nlpd_batcher_take_held(d->bt), *n; b; b = n) { /* never taken by a worker */
            n = b->next;
            nlpd_kd_batch_free(d, b);
        }
        for (struct nlpd_mbatch *b = nlpd_batcher_take_done(d->bt), *n; b; b = n) {
            n = b->next;
            nlpd_kd_batch_free(d, b);
        }
    }
    for (struct kitem *it = d->pending_head, *n; it; it = n) {
        n = it->next;
        nlpd_kd_item_free(d, it);
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
    nlpd_kd_forward_stop(d->mock_forward);
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
        nlpd_kd_gen_free(g);
    }
    nlpd_kd_gen_free(d->rl.next);
    nlpd_kd_gen_free(d->gen);
    nlpd_offsets_free(d->offsets);
    nlpd_batcher_free(d->bt);
    pthread_mutex_destroy(&d->lock);
    nlpd_latency_free(&d->lat);
    free(d->bootstraps);
    guard_disarm(d);
    free(d);
}
