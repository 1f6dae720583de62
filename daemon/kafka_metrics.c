/* The daemon's /metrics and readiness (see kafka_internal.h): its counters, gauges and histograms, the process's
 * CPU and memory, and the consumer lag from librdkafka's statistics. Served from the event loop: no locks. */
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "kafka_internal.h"
#include "metrics.h"

#ifndef NLPD_VERSION /* the Makefile passes it */
#define NLPD_VERSION "unknown"
#endif

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

/* Seconds since the epoch when the system booted (btime in /proc/stat), 0 when unknown. */
static double boot_time(void)
{
    FILE *f = fopen("/proc/stat", "r");
    char line[256];
    double bt = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "btime %lf", &bt) == 1)
            break;
    if (f)
        fclose(f);
    return bt;
}

static void process_metrics(struct nlpd_buf *out)
{
    FILE *f = fopen("/proc/self/stat", "r");
    unsigned long ut = 0, st = 0;
    unsigned long long start = 0;
    long rss = 0;
    if (f) {
        /* fields 14, 15 (utime, stime) and 22 (starttime) follow the command name in parentheses */
        char line[1024];
        if (fgets(line, sizeof line, f)) {
            char *p = strrchr(line, ')');
            if (p)
                sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d %*d %*d %*d %*d %llu", &ut,
                       &st, &start);
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
    nlpd_metric_head(out, "process_cpu_seconds_total", "counter", "User and system CPU time, in seconds");
    nlpd_buf_printf(out, "process_cpu_seconds_total %.2f\n", (double)(ut + st) / tick);
    nlpd_metric_head(out, "process_resident_memory_bytes", "gauge", "Resident memory, in bytes");
    nlpd_buf_printf(out, "process_resident_memory_bytes %ld\n", rss);
    double bt = boot_time();
    if (bt > 0 && start > 0) {
        nlpd_metric_head(out, "process_start_time_seconds", "gauge",
                         "Start time of the process since the epoch, in seconds");
        nlpd_buf_printf(out, "process_start_time_seconds %.2f\n", bt + (double)start / tick);
    }
}

static void daemon_metrics(struct nlpd_daemon *d, struct nlpd_buf *out)
{
    char esc[160];
    nlpd_metric_head(out, "nlpd_build_info", "gauge", "Always 1; the labels say which build runs");
    nlpd_buf_printf(out, "nlpd_build_info{version=\"%s\",librdkafka=\"%s\"} 1\n", NLPD_VERSION,
                    nlpd_metric_label(esc, sizeof esc, rd_kafka_version_str()));
    nlpd_metric_head(out, "nlpd_records_consumed_total", "counter", "Records consumed from the input topics");
    nlpd_buf_printf(out, "nlpd_records_consumed_total %llu\n", (unsigned long long)d->stats.consumed);
    nlpd_metric_head(out, "nlpd_records_produced_total", "counter", "Enriched records acknowledged by the broker");
    nlpd_buf_printf(out, "nlpd_records_produced_total %llu\n", (unsigned long long)d->stats.produced);
    nlpd_metric_head(out, "nlpd_output_records_total", "counter",
                     "Records acknowledged by the broker, by destination topic (output, route and dead-letter "
                     "topics)");
    nlpd_label_counts_write(&d->produced_by, "nlpd_output_records_total", "topic", out);
    nlpd_metric_head(out, "nlpd_records_flagged_total", "counter",
                     "Enriched records a moderation stage flagged, acknowledged by the broker");
    nlpd_buf_printf(out, "nlpd_records_flagged_total %llu\n", (unsigned long long)d->flagged);
    nlpd_metric_head(out, "nlpd_records_dead_lettered_total", "counter",
                     "Dead letters acknowledged by the broker, by the stage that rejected them");
    nlpd_label_counts_write(&d->dead_by, "nlpd_records_dead_lettered_total", "reason", out);
    nlpd_metric_head(out, "nlpd_routed_records_total", "counter",
                     "Records acknowledged on a route's topic (output.routes), by route name and topic");
    for (size_t i = 0; i < d->nrouted; i++) {
        char route[160], topic[288];
        nlpd_buf_printf(out, "nlpd_routed_records_total{route=\"%s\",topic=\"%s\"} %llu\n",
                        nlpd_metric_label(route, sizeof route, d->routed[i].route),
                        nlpd_metric_label(topic, sizeof topic, d->routed[i].topic), (unsigned long long)d->routed[i].n);
    }
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
        nlpd_buf_printf(out, "nlpd_input_paused_reason{reason=\"%s\"} %d\n", nlpd_kd_flow_reason_names[r],
                        r == FLOW_PIPELINE ? d->held_since != 0 : (d->flow_why >> r) & 1);
    nlpd_metric_head(out, "nlpd_input_pauses_total", "counter", "Times each reason started holding the input paused");
    for (int r = 0; r < FLOW_NREASONS; r++)
        nlpd_buf_printf(out, "nlpd_input_pauses_total{reason=\"%s\"} %llu\n", nlpd_kd_flow_reason_names[r],
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
    nlpd_buf_printf(out, "nlpd_batches_waiting %zu\n", nlpd_batcher_held(d->bt));
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
        nlpd_buf_printf(out, "nlpd_config_reloads_total{result=\"%s\"} %llu\n", nlpd_kd_reload_result_names[r],
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

/* An integer field of a statistics object, or -1 when it is missing. */
static json_int_t stat_int(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_integer(v) ? json_integer_value(v) : -1;
}

/* The lag of one partition of the statistics, or -1 when it is not assigned to this member or unknown.
 * librdkafka's consumer_lag is -1 until a record was consumed or an offset committed: a partition that has
 * received nothing since the assignment then counts from the fetch position (the reset offset), and an empty
 * partition (low = high watermark) has lag 0. */
static int64_t partition_lag(json_t *p)
{
    if (!json_is_true(json_object_get(p, "desired")))
        return -1;
    json_int_t lag = stat_int(p, "consumer_lag"), hi = stat_int(p, "hi_offset");
    if (lag >= 0)
        return lag;
    if (hi < 0)
        return -1;
    json_int_t pos = stat_int(p, "committed_offset");
    if (pos < 0)
        pos = stat_int(p, "next_offset");
    if (pos < 0 && stat_int(p, "lo_offset") == hi)
        pos = hi;
    return pos >= 0 && pos <= hi ? hi - pos : -1;
}

/* librdkafka's statistics (every statistics.interval.ms, on the event loop): keep each assigned partition's lag. */
int nlpd_kd_stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque)
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
            int64_t lag = partition_lag(p);
            int32_t part = (int32_t)stat_int(p, "partition");
            if (part < 0 || lag < 0 || n == sizeof d->lag / sizeof d->lag[0] || strlen(tname) >= sizeof d->lag[0].topic)
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

void nlpd_kd_http_metrics(void *arg, struct nlpd_buf *out)
{
    daemon_metrics(arg, out);
}

const char *nlpd_kd_http_not_ready(void *arg)
{
    return ready_problem(arg);
}
