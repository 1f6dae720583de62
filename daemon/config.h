/* The daemon's configuration (libconfig): the sections of DESIGN.md §10 that this build implements,
 * validated with FILE:LINE messages. Pipeline entries are validated by pipeline.c against each
 * stage's own conf_map. */
#ifndef NLPD_CONFIG_H
#define NLPD_CONFIG_H

#include <libconfig.h>
#include <stdio.h>

#include "cache.h"
#include "diag.h"
#include "nlpd_stage.h"
#include "routes.h"
#include "schema_registry.h"

struct nlpd_input_conf {
    char *format;
    char *schema; /* Avro writer schema (.avsc) for format "avro" */
    char *text_field;
    char *id_field;
    long long max_text_bytes;
    struct nlpd_sr_conf registry; /* input.schema_registry: writer schemas by id */
};

struct nlpd_kafka_conf {
    char *brokers; /* "host:port,..." or "embedded" */
    char *group_id;
    struct nlpd_conf_list input_topics;
    char *output_topic;
    char *dlq_topic;
    char *flagged_topic;             /* optional: where flagged records go when the moderation stage routes them */
    char *dlq_oversize;              /* "truncate" | "skip" | "stop": a dead letter the producer or broker refuses */
    struct nlpd_conf_map properties; /* passed to librdkafka as they are (plus sasl.password from its file) */
    char *sasl_password_file;
    long long startup_timeout_ms;
    long long embedded_partitions;
    long long embedded_port; /* 0: the mock's ephemeral port only */
};

struct nlpd_output_conf {
    char *format;
    char *schema;
    long long confluent_schema_id;
    struct nlpd_sr_conf registry; /* output.schema_registry: the id records are framed with */
};

struct nlpd_flow_conf {
    long long max_inflight;
    long long max_inflight_bytes;
    long long shutdown_timeout_ms;
    long long commit_interval_ms;
};

struct nlpd_metrics_conf {
    char *listen; /* "host:port" of the metrics and health server; "" = off */
    long long max_connections, idle_timeout_ms, request_timeout_ms;
};

struct nlpd_batch_conf {
    long long max_records;
    long long max_tokens;
    long long max_wait_ms;
};

struct nlpd_kernels_conf {
    char *backend;
    long long threads;
    long long device;
    char *dtype;
    char *cpu_gemm;
};

struct nlpd_log_conf {
    char *level;
    char *format;
};

struct nlpd_config {
    char *path; /* the file name used in messages */
    config_t cfg;
    int has_kafka; /* the file has a kafka section (needed by `nlpd run`) */
    struct nlpd_kafka_conf kafka;
    struct nlpd_input_conf input;
    struct nlpd_output_conf output;
    struct nlpd_routes routes; /* output.routes (and the deprecated moderation action "route") */
    struct nlpd_flow_conf flow;
    struct nlpd_cache_conf cache;
    struct nlpd_metrics_conf metrics;
    struct nlpd_batch_conf batch;
    struct nlpd_kernels_conf kernels;
    struct nlpd_log_conf log;
    const config_setting_t *pipeline; /* list of stage groups, owned by cfg */
};

/* Parses and validates a file; returns NULL when it has errors (all of them added to diag). */
struct nlpd_config *nlpd_config_load(const char *path, struct nlpd_diag *diag);
/* Like nlpd_config_load, but a file whose syntax is fine is returned even when its values have errors
 * (they are in diag), so that `nlpd check` can go on to report the pipeline's problems too.
 * pipeline is NULL unless it is a non-empty list. */
struct nlpd_config *nlpd_config_load_all(const char *path, struct nlpd_diag *diag);
/* Same from text; name is used in messages. */
struct nlpd_config *nlpd_config_load_string(const char *text, const char *name, struct nlpd_diag *diag);
void nlpd_config_free(struct nlpd_config *c);
/* The keys flagged NLPD_CONF_RESTART (read only at start) whose values differ between a and b: their count, and
 * their names ("kafka.group_id, metrics.listen") in out. A reload that changes one is refused. */
size_t nlpd_config_restart_changes(const struct nlpd_config *a, const struct nlpd_config *b, char *out, size_t cap);
/* 1 when every key of the daemon section `section` ("cache", "input", ...) is the same in a and b. */
int nlpd_config_section_equal(const struct nlpd_config *a, const struct nlpd_config *b, const char *section);
/* Prints every key of the daemon's sections with type, default and documentation. */
void nlpd_config_doc(FILE *out);

#endif
