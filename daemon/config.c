/* Daemon configuration: parsing, type checks and defaults of the top-level sections (see config.h). */
#include "config.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf_check.h"
#include "conf_env.h"
#include "conf_map.h"
#include "log.h"

static const struct nlpd_conf_entry kafka_map[] = {
    {"brokers", NLPD_CONF_STRING, NULL, offsetof(struct nlpd_kafka_conf, brokers),
     NLPD_CONF_REQUIRED | NLPD_CONF_RESTART, NULL, 0, 0,
     "bootstrap brokers \"host:port,...\", or \"embedded\": an in-process mock cluster that keeps nothing on disk "
     "(demos and tests only, never production)"},
    {"group_id", NLPD_CONF_STRING, "nlpd", offsetof(struct nlpd_kafka_conf, group_id), NLPD_CONF_RESTART, NULL, 0, 0,
     "consumer group: every nlpd with the same group shares the input partitions"},
    {"input_topics", NLPD_CONF_LIST, NULL, offsetof(struct nlpd_kafka_conf, input_topics),
     NLPD_CONF_REQUIRED | NLPD_CONF_RESTART, NULL, 0, 0,
     "topics to consume; a name starting with ^ is a regular expression, as in librdkafka"},
    {"output_topic", NLPD_CONF_STRING, NULL, offsetof(struct nlpd_kafka_conf, output_topic),
     NLPD_CONF_REQUIRED | NLPD_CONF_RESTART, NULL, 0, 0, "topic the enriched records are produced to"},
    {"dlq_topic", NLPD_CONF_STRING, NULL, offsetof(struct nlpd_kafka_conf, dlq_topic),
     NLPD_CONF_REQUIRED | NLPD_CONF_RESTART, NULL, 0, 0,
     "dead-letter topic: the original bytes of records that could not be processed, with the reason in headers"},
    {"flagged_topic", NLPD_CONF_STRING, NULL, offsetof(struct nlpd_kafka_conf, flagged_topic), NLPD_CONF_RESTART, NULL,
     0, 0,
     "deprecated (use output.routes): with a moderation stage's action = \"route\", the route { when = "
     "\"moderation.flagged\"; topic = flagged_topic; }, ahead of output.routes"},
    {"dlq_oversize", NLPD_CONF_ENUM, "truncate", offsetof(struct nlpd_kafka_conf, dlq_oversize), 0,
     "truncate|skip|stop", 0, 0,
     "a dead letter the producer or the broker refuses (over the producer's message.max.bytes, or another error "
     "about the record itself): \"truncate\" resends one that is too large with only its first bytes and the "
     "header nlpd.original_size, and skips the record if even that is refused; \"skip\" skips it; \"stop\" "
     "stops nlpd (exit 1) without committing past it. A skipped record is logged, counted in "
     "nlpd_records_skipped_total{reason=\"dlq_refused\"} and committed"},
    {"properties", NLPD_CONF_MAP, NULL, offsetof(struct nlpd_kafka_conf, properties), NLPD_CONF_RESTART, NULL, 0, 0,
     "librdkafka properties passed as they are to the consumer and the producer, e.g. "
     "((\"security.protocol\", \"SASL_SSL\"), (\"sasl.mechanisms\", \"PLAIN\"))"},
    {"sasl_password_file", NLPD_CONF_PATH, NULL, offsetof(struct nlpd_kafka_conf, sasl_password_file),
     NLPD_CONF_RESTART, NULL, 0, 0,
     "file holding the SASL password (librdkafka's sasl.password, which properties must then not set); one line, "
     "not readable by others"},
    {"startup_timeout_ms", NLPD_CONF_INT, "30000", offsetof(struct nlpd_kafka_conf, startup_timeout_ms),
     NLPD_CONF_RESTART, NULL, 1000, 3600000,
     "at start, give up (exit 1) when no broker has answered for this long; retries in between"},
    {"embedded_partitions", NLPD_CONF_INT, "8", offsetof(struct nlpd_kafka_conf, embedded_partitions),
     NLPD_CONF_RESTART, NULL, 1, 256, "partitions of each topic of the embedded broker"},
    {"embedded_port", NLPD_CONF_INT, "0", offsetof(struct nlpd_kafka_conf, embedded_port), NLPD_CONF_RESTART, NULL, 0,
     65535,
     "embedded broker: also listen on 127.0.0.1:this port and relay to the mock cluster's own ephemeral port "
     "(librdkafka's mock cannot choose its port), so that kcat -b 127.0.0.1:PORT works without reading the log; "
     "0 = off"},
    {0},
};

static const struct nlpd_conf_entry output_map[] = {
    {"format", NLPD_CONF_ENUM, "json", offsetof(struct nlpd_output_conf, format), 0, "json|avro", 0, 0,
     "enriched record format on the output topic: \"json\" or \"avro\" (binary, schema in output.schema)"},
    /* a string, not a path: read (and checked) only for format "avro" */
    {"schema", NLPD_CONF_STRING, "schemas/enriched.avsc", offsetof(struct nlpd_output_conf, schema), 0, NULL, 0, 0,
     "Avro schema of the enriched record, for format \"avro\" (not read for \"json\"); a relative path resolves "
     "against the working directory"},
    {"confluent_schema_id", NLPD_CONF_INT, "0", offsetof(struct nlpd_output_conf, confluent_schema_id), 0, NULL, 0,
     2147483647, "when > 0, Avro values get the Confluent wire framing: byte 0, this schema id (4 bytes), datum"},
    {0},
};

static const struct nlpd_conf_entry flow_map[] = {
    {"max_inflight", NLPD_CONF_INT, "20000", offsetof(struct nlpd_flow_conf, max_inflight), 0, NULL, 1, 10000000,
     "records consumed but not yet acknowledged by the broker; above it the input partitions pause, and resume "
     "below half of it"},
    {"max_inflight_bytes", NLPD_CONF_INT, "268435456", offsetof(struct nlpd_flow_conf, max_inflight_bytes), 0, NULL,
     65536, 1e12,
     "bytes (values and keys) of the records consumed but not yet acknowledged; above it the input partitions "
     "pause, and resume below half of it (nlpd holds about 3 bytes per in-flight byte: the record, its decoded "
     "text and its enriched output)"},
    {"shutdown_timeout_ms", NLPD_CONF_INT, "30000", offsetof(struct nlpd_flow_conf, shutdown_timeout_ms), 0, NULL, 0,
     3600000, "on SIGTERM/SIGINT: time to finish in-flight records, flush and commit before exiting"},
    {"commit_interval_ms", NLPD_CONF_INT, "5000", offsetof(struct nlpd_flow_conf, commit_interval_ms),
     NLPD_CONF_RESTART, NULL, 100, 3600000, "how often the offsets of delivered records are committed"},
    {0},
};

static const struct nlpd_conf_entry cache_map[] = {
    {"backend", NLPD_CONF_ENUM, "memory", offsetof(struct nlpd_cache_conf, backend), 0, "memory|redis|none", 0, 0,
     "where stage results are cached: \"memory\" (bounded in-process LRU), \"redis\" (shared by every nlpd "
     "of a group), \"none\""},
    {"redis", NLPD_CONF_STRING, "127.0.0.1:6379", offsetof(struct nlpd_cache_conf, redis), 0, NULL, 0, 0,
     "Redis address: host:port, or the path of a unix socket"},
    {"redis_user", NLPD_CONF_STRING, "", offsetof(struct nlpd_cache_conf, redis_user), 0, NULL, 0, 0,
     "Redis ACL user (empty: none, or the default user with redis_password)"},
    {"redis_password", NLPD_CONF_STRING, "", offsetof(struct nlpd_cache_conf, redis_password), 0, NULL, 0, 0,
     "Redis password (empty: no AUTH)"},
    {"redis_password_file", NLPD_CONF_PATH, NULL, offsetof(struct nlpd_cache_conf, redis_password_file), 0, NULL, 0, 0,
     "file holding redis_password instead (one line; must not be readable by others)"},
    {"key_prefix", NLPD_CONF_STRING, "nlpd:", offsetof(struct nlpd_cache_conf, key_prefix), 0, NULL, 0, 0,
     "prefix of every Redis key"},
    {"ttl_s", NLPD_CONF_INT, "86400", offsetof(struct nlpd_cache_conf, ttl_s), 0, NULL, 1, 315360000,
     "Redis: expiry of a cached result (seconds)"},
    {"max_entries", NLPD_CONF_INT, "100000", offsetof(struct nlpd_cache_conf, max_entries), 0, NULL, 1, 1e9,
     "memory: most results kept (least recently used evicted first)"},
    {"max_bytes", NLPD_CONF_INT, "268435456", offsetof(struct nlpd_cache_conf, max_bytes), 0, NULL, 1024, 1e12,
     "memory: most bytes of keys and values kept"},
    {"timeout_ms", NLPD_CONF_INT, "20", offsetof(struct nlpd_cache_conf, timeout_ms), 0, NULL, 1, 60000,
     "Redis: deadline of one lookup; past it the batch goes on uncached"},
    {"breaker_failures", NLPD_CONF_INT, "5", offsetof(struct nlpd_cache_conf, breaker_failures), 0, NULL, 1, 1000000,
     "Redis: consecutive failures that stop lookups for breaker_backoff_ms"},
    {"breaker_backoff_ms", NLPD_CONF_INT, "5000", offsetof(struct nlpd_cache_conf, breaker_backoff_ms), 0, NULL, 10,
     3600000, "Redis: how long lookups stay off before one probe"},
    {"redis_hmac_key", NLPD_CONF_STRING, "", offsetof(struct nlpd_cache_conf, redis_hmac_key), 0, NULL, 0, 0,
     "secret that authenticates cached values (HMAC-SHA256 over key and value, stored with the value): a value "
     "without a valid tag, e.g. written by someone else or by an nlpd without the key, is a miss (\"\": off)"},
    {"redis_hmac_key_file", NLPD_CONF_PATH, NULL, offsetof(struct nlpd_cache_conf, redis_hmac_key_file), 0, NULL, 0, 0,
     "file holding redis_hmac_key instead (one line; must not be readable by others)"},
    {0},
};

static const struct nlpd_conf_entry metrics_map[] = {
    {"listen", NLPD_CONF_STRING, "127.0.0.1:9464", offsetof(struct nlpd_metrics_conf, listen), NLPD_CONF_RESTART, NULL,
     0, 0,
     "host:port (or [v6]:port) of the HTTP server of `nlpd run` (/metrics in Prometheus text format, /live, "
     "/ready); \"\" = off; the host is required (\"127.0.0.1:9464\" or \"0.0.0.0:9464\", not \":9464\")"},
    {"max_connections", NLPD_CONF_INT, "64", offsetof(struct nlpd_metrics_conf, max_connections), NLPD_CONF_RESTART,
     NULL, 1, 10000, "open connections the HTTP server keeps; one more is answered 503 and closed"},
    {"idle_timeout_ms", NLPD_CONF_INT, "10000", offsetof(struct nlpd_metrics_conf, idle_timeout_ms), NLPD_CONF_RESTART,
     NULL, 10, 3600000,
     "an HTTP connection with no request under way (or an answer the client does not take) is closed after this"},
    {"request_timeout_ms", NLPD_CONF_INT, "5000", offsetof(struct nlpd_metrics_conf, request_timeout_ms),
     NLPD_CONF_RESTART, NULL, 10, 600000,
     "a request's line and headers (8 KiB at most) must arrive within this long of their first byte"},
    {0},
};

static const struct nlpd_conf_entry input_map[] = {
    {"format", NLPD_CONF_ENUM, "json", offsetof(struct nlpd_input_conf, format), 0, "json|avro", 0, 0,
     "record format: \"json\" (one JSON object per record) or \"avro\" (binary datum with the writer schema in "
     "input.schema, Confluent framing detected by its magic byte)"},
    {"schema", NLPD_CONF_PATH, NULL, offsetof(struct nlpd_input_conf, schema), 0, NULL, 0, 0,
     "Avro writer schema (.avsc) of the input records, for format \"avro\""},
    {"text_field", NLPD_CONF_STRING, "text", offsetof(struct nlpd_input_conf, text_field), 0, NULL, 0, 0,
     "field holding the text; a dotted path (\"payload.body\") walks nested objects"},
    {"id_field", NLPD_CONF_STRING, "id", offsetof(struct nlpd_input_conf, id_field), 0, NULL, 0, 0,
     "field holding the record id (string or number; dotted path allowed); copied to the output's \"id\""},
    {"max_text_bytes", NLPD_CONF_INT, "1048576", offsetof(struct nlpd_input_conf, max_text_bytes), 0, NULL, 1,
     1073741824, "longest text accepted, in bytes; a longer one is a per-record error"},
    {0},
};

static const struct nlpd_conf_entry batch_map[] = {
    {"max_records", NLPD_CONF_INT, "64", offsetof(struct nlpd_batch_conf, max_records), 0, NULL, 1, 65536,
     "a micro-batch closes when it holds this many records"},
    {"max_tokens", NLPD_CONF_INT, "8192", offsetof(struct nlpd_batch_conf, max_tokens), 0, NULL, 16, 1 << 24,
     "padded-token budget of one model batch of every transformer stage (sentiment, translate, ner, moderation) "
     "that sets no max_tokens of its own; fastText models ignore it"},
    {"max_wait_ms", NLPD_CONF_INT, "10", offsetof(struct nlpd_batch_conf, max_wait_ms), 0, NULL, 0, 60000,
     "a micro-batch closes this long after its first record arrived, full or not"},
    {0},
};

static const struct nlpd_conf_entry kernels_map[] = {
    {"backend", NLPD_CONF_ENUM, "auto", offsetof(struct nlpd_kernels_conf, backend), NLPD_CONF_RESTART, "auto|cpu|cuda",
     0, 0,
     "compute backend of transformer stages: \"cuda\" (libnlpd_cuda.so, an NVIDIA GPU; an error without one), "
     "\"cpu\", or \"auto\" (CUDA when it works, else the CPU; the log says which and why)"},
    {"device", NLPD_CONF_INT, "0", offsetof(struct nlpd_kernels_conf, device), NLPD_CONF_RESTART, NULL, 0, 63,
     "CUDA device ordinal used by the cuda backend"},
    {"dtype", NLPD_CONF_ENUM, "auto", offsetof(struct nlpd_kernels_conf, dtype), NLPD_CONF_RESTART,
     "auto|fp32|fp16|bf16|int8", 0, 0,
     "default precision of transformer stages' matrix products (a stage's own dtype overrides it): \"auto\" = "
     "fp16 on the CUDA backend, fp32 on the CPU; CUDA: \"fp16\"/\"bf16\" weights and activations on tensor cores, "
     "fp32 accumulation, \"fp32\" on TF32 tensor cores; CPU (oneDNN): \"bf16\" (AVX512-BF16) or \"int8\" "
     "(dynamic quantisation, AVX512-VNNI / AVX-VNNI; CPU only); a CPU without them computes in fp32 and logs why"},
    {"cpu_gemm", NLPD_CONF_ENUM, "auto", offsetof(struct nlpd_kernels_conf, cpu_gemm), NLPD_CONF_RESTART,
     "auto|openblas|onednn", 0, 0,
     "library of the CPU backend's fp32 matrix products: \"auto\" = oneDNN for large products and attention, "
     "OpenBLAS for small ones (measured, README \"Performance\"); bf16/int8 always run on oneDNN"},
    {"threads", NLPD_CONF_INT, "0", offsetof(struct nlpd_kernels_conf, threads), 0, NULL, 0, 1024,
     "worker threads running stage chains on batches; 0 = one per online CPU"},
    {0},
};

static const struct nlpd_conf_entry log_map[] = {
    {"level", NLPD_CONF_ENUM, "info", offsetof(struct nlpd_log_conf, level), 0, "err|warning|notice|info|debug", 0, 0,
     "lowest priority logged"},
    {"format", NLPD_CONF_ENUM, "text", offsetof(struct nlpd_log_conf, format), 0, "text|json", 0, 0,
     "\"text\": journald priority prefixes on stderr; \"json\": one JSON object per line"},
    {0},
};

static const char *const top_keys[] = {"kafka", "input",   "output", "flow",     "cache", "metrics",
                                       "batch", "kernels", "log",    "pipeline", NULL};

static void release_sections(struct nlpd_config *c)
{
    nlpd_conf_release(kafka_map, &c->kafka);
    nlpd_conf_release(output_map, &c->output);
    nlpd_conf_release(flow_map, &c->flow);
    nlpd_conf_release(cache_map, &c->cache);
    nlpd_conf_release(metrics_map, &c->metrics);
    nlpd_conf_release(input_map, &c->input);
    nlpd_sr_conf_release(&c->input.registry);
    nlpd_sr_conf_release(&c->output.registry);
    nlpd_conf_release(batch_map, &c->batch);
    nlpd_conf_release(kernels_map, &c->kernels);
    nlpd_conf_release(log_map, &c->log);
}

/* Moves the content of a *_file secret into its value; an error when both are set. */
static int load_secrets(struct nlpd_config *c, struct nlpd_diag *diag)
{
    int errors = 0;
    char why[600], *v;
    if (c->cache.redis_password_file) {
        const config_setting_t *s = config_lookup(&c->cfg, "cache.redis_password_file");
        if (*c->cache.redis_password)
            snprintf(why, sizeof why, "set cache.redis_password or cache.redis_password_file, not both");
        if (*c->cache.redis_password ||
            nlpd_conf_read_secret("cache.redis_password_file", c->cache.redis_password_file, &v, why, sizeof why)) {
            nlpd_diag_add(diag, nlpd_conf_file(s, c->path), s ? config_setting_source_line(s) : 0, "%s", why);
            errors++;
        } else {
            free(c->cache.redis_password);
            c->cache.redis_password = v;
        }
    }
    if (c->has_kafka && c->kafka.sasl_password_file) {
        const config_setting_t *s = config_lookup(&c->cfg, "kafka.sasl_password_file");
        struct nlpd_conf_map *m = &c->kafka.properties;
        if (nlpd_conf_map_get(m, "sasl.password"))
            snprintf(why, sizeof why, "set kafka.properties' sasl.password or kafka.sasl_password_file, not both");
        if (nlpd_conf_map_get(m, "sasl.password") ||
            nlpd_conf_read_secret("kafka.sasl_password_file", c->kafka.sasl_password_file, &v, why, sizeof why)) {
            nlpd_diag_add(diag, nlpd_conf_file(s, c->path), s ? config_setting_source_line(s) : 0, "%s", why);
            return errors + 1;
        }
        char **from = realloc(m->from, (m->n + 2) * sizeof *from);
        if (from)
            m->from = from;
        char **to = from ? realloc(m->to, (m->n + 2) * sizeof *to) : NULL;
        if (to)
            m->to = to;
        if (!from || !to || !(m->from[m->n] = strdup("sasl.password"))) {
            free(v);
            nlpd_diag_add(diag, c->path, 0, "out of memory");
            return errors + 1;
        }
        m->to[m->n++] = v;
        m->from[m->n] = m->to[m->n] = NULL;
    }
    return errors;
}

static int validate(struct nlpd_config *c, struct nlpd_diag *diag)
{
    const config_setting_t *root = config_root_setting(&c->cfg);
    /* ${VAR} first: every value below is checked as it will be used */
    int errors = nlpd_conf_expand_env(config_root_setting(&c->cfg), c->path, diag);
    int n = config_setting_length(root);
    for (int i = 0; i < n; i++) {
        const config_setting_t *s = config_setting_get_elem(root, (unsigned)i);
        const char *name = config_setting_name(s);
        int known = 0;
        for (const char *const *k = top_keys; *k && !known; k++)
            known = strcmp(*k, name) == 0;
        if (!known) {
            const char *near = nlpd_conf_suggest(name, top_keys, sizeof top_keys / sizeof top_keys[0] - 1);
            nlpd_diag_add(diag, nlpd_conf_file(s, c->path), config_setting_source_line(s),
                          "unknown key '%s' at top level%s%s%s (known: kafka, input, output, flow, cache, metrics, "
                          "batch, kernels, log, pipeline)",
                          name, near ? " (did you mean '" : "", near ? near : "", near ? "'?)" : "");
            errors++;
        }
    }
    const config_setting_t *kafka = config_lookup(&c->cfg, "kafka");
    c->has_kafka = kafka != NULL;
    if (kafka)
        errors += nlpd_conf_apply(kafka_map, kafka, &c->kafka, NULL, "kafka", c->path, diag);
    static const char *const input_skip[] = {"schema_registry", NULL};
    static const char *const output_skip[] = {"routes", "schema_registry", NULL};
    const config_setting_t *in_group = config_lookup(&c->cfg, "input"), *out_group = config_lookup(&c->cfg, "output");
    errors += nlpd_conf_apply(input_map, in_group, &c->input, input_skip, "input", c->path, diag);
    errors += nlpd_conf_apply(output_map, out_group, &c->output, output_skip, "output", c->path, diag);
    if (in_group && config_setting_is_group(in_group))
        errors += nlpd_sr_conf_apply(in_group, &c->input.registry, "input", c->path, diag);
    if (out_group && config_setting_is_group(out_group))
        errors += nlpd_sr_conf_apply(out_group, &c->output.registry, "output", c->path, diag);
    /* the deprecated moderation action "route" is a route of the Kafka daemon only */
    errors +=
        nlpd_routes_load(&c->routes, config_lookup(&c->cfg, "output.routes"),
                         kafka ? config_lookup(&c->cfg, "pipeline") : NULL, c->kafka.flagged_topic, c->path, diag);
    errors += nlpd_conf_apply(flow_map, config_lookup(&c->cfg, "flow"), &c->flow, NULL, "flow", c->path, diag);
    errors += nlpd_conf_apply(cache_map, config_lookup(&c->cfg, "cache"), &c->cache, NULL, "cache", c->path, diag);
    errors +=
        nlpd_conf_apply(metrics_map, config_lookup(&c->cfg, "metrics"), &c->metrics, NULL, "metrics", c->path, diag);
    if (strcmp(c->output.format, "avro") == 0 && access(c->output.schema, R_OK) != 0) {
        int en = errno;
        const config_setting_t *s = config_lookup(&c->cfg, "output.schema");
        if (!s)
            s = config_lookup(&c->cfg, "output");
        nlpd_diag_add(diag, nlpd_conf_file(s, c->path), s ? config_setting_source_line(s) : 0,
                      "output.schema: cannot read '%s': %s", c->output.schema, strerror(en));
        errors++;
    }
    for (int out = 0; out < 2; out++) { /* a registry serves Avro only: not silently ignored */
        const char *sec = out ? "output" : "input", *fmt = out ? c->output.format : c->input.format;
        if ((out ? c->output.registry.set : c->input.registry.set) && strcmp(fmt, "avro") != 0) {
            const config_setting_t *s =
                config_lookup(&c->cfg, out ? "output.schema_registry" : "input.schema_registry");
            nlpd_diag_add(diag, nlpd_conf_file(s, c->path), s ? config_setting_source_line(s) : 0,
                          "%s.schema_registry needs %s.format \"avro\"", sec, sec);
            errors++;
        }
    }
    if (strcmp(c->input.format, "avro") == 0 && !c->input.schema && !c->input.registry.set) {
        const config_setting_t *s = config_lookup(&c->cfg, "input");
        nlpd_diag_add(diag, nlpd_conf_file(s, c->path), s ? config_setting_source_line(s) : 0,
                      "input.format \"avro\" needs input.schema (the writer schema, .avsc) or input.schema_registry");
        errors++;
    }
    errors += nlpd_conf_apply(batch_map, config_lookup(&c->cfg, "batch"), &c->batch, NULL, "batch", c->path, diag);
    errors +=
        nlpd_conf_apply(kernels_map, config_lookup(&c->cfg, "kernels"), &c->kernels, NULL, "kernels", c->path, diag);
    errors += nlpd_conf_apply(log_map, config_lookup(&c->cfg, "log"), &c->log, NULL, "log", c->path, diag);

    for (const char *const *f = (const char *const[]){c->input.text_field, c->input.id_field, NULL}; *f; f++) {
        const char *p = *f;
        if (!*p || p[0] == '.' || p[strlen(p) - 1] == '.' || strstr(p, "..")) {
            const config_setting_t *s = config_lookup(&c->cfg, "input");
            nlpd_diag_add(diag, nlpd_conf_file(s, c->path), s ? config_setting_source_line(s) : 0,
                          "input: field path \"%s\" is not a valid dotted path", p);
            errors++;
        }
    }

    errors += load_secrets(c, diag);

    const config_setting_t *pl = config_lookup(&c->cfg, "pipeline");
    if (!pl) {
        nlpd_diag_add(diag, c->path, 0,
                      "missing 'pipeline' (a list of stages, e.g. pipeline = ( { stage = \"langid\"; model = "
                      "\"models/lid.176.ftz\"; } );)");
        errors++;
    } else if (config_setting_type(pl) != CONFIG_TYPE_LIST) {
        nlpd_diag_add(diag, nlpd_conf_file(pl, c->path), config_setting_source_line(pl),
                      "pipeline must be a list ( { stage = ...; }, ... )");
        errors++;
    } else if (config_setting_length(pl) == 0) {
        nlpd_diag_add(diag, nlpd_conf_file(pl, c->path), config_setting_source_line(pl),
                      "pipeline is empty: name at least one stage");
        errors++;
    } else {
        c->pipeline = pl;
    }
    errors += nlpd_conf_check(c, diag);
    return errors;
}

static struct nlpd_config *finish(struct nlpd_config *c, int parsed, int keep_invalid, struct nlpd_diag *diag)
{
    if (!parsed) {
        const char *f = config_error_file(&c->cfg);
        nlpd_diag_add(diag, f ? nlpd_conf_path_of(f, c->path) : c->path, config_error_line(&c->cfg), "%s",
                      config_error_text(&c->cfg));
        nlpd_config_free(c);
        return NULL;
    }
    if (validate(c, diag) > 0 && !keep_invalid) {
        nlpd_config_free(c);
        return NULL;
    }
    return c;
}

static struct nlpd_config *config_new(const char *name)
{
    struct nlpd_config *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->path = strdup(name);
    config_init(&c->cfg);
    config_set_auto_convert(&c->cfg, 0);
    return c;
}

static struct nlpd_config *load_file(const char *path, int keep_invalid, struct nlpd_diag *diag)
{
    struct nlpd_config *c = config_new(path);
    if (!c)
        return NULL;
    FILE *f = fopen(path, "r");
    if (!f) {
        nlpd_diag_add(diag, path, 0, "cannot open: %m");
        nlpd_config_free(c);
        return NULL;
    }
    fclose(f);
    /* Relative @include paths resolve against the config file's folder. */
    char *dir = strdup(path);
    char *slash = strrchr(dir, '/');
    if (slash) {
        *slash = '\0';
        config_set_include_dir(&c->cfg, dir);
    }
    free(dir);
    return finish(c, config_read_file(&c->cfg, path) == CONFIG_TRUE, keep_invalid, diag);
}

struct nlpd_config *nlpd_config_load(const char *path, struct nlpd_diag *diag)
{
    return load_file(path, 0, diag);
}

struct nlpd_config *nlpd_config_load_all(const char *path, struct nlpd_diag *diag)
{
    return load_file(path, 1, diag);
}

struct nlpd_config *nlpd_config_load_string(const char *text, const char *name, struct nlpd_diag *diag)
{
    struct nlpd_config *c = config_new(name);
    if (!c)
        return NULL;
    return finish(c, config_read_string(&c->cfg, text) == CONFIG_TRUE, 0, diag);
}

void nlpd_config_free(struct nlpd_config *c)
{
    if (!c)
        return;
    release_sections(c);
    nlpd_routes_free(&c->routes);
    config_destroy(&c->cfg);
    free(c->path);
    free(c);
}

/* The daemon's sections, for comparisons between two loaded configurations. */
static const struct {
    const char *name;
    const struct nlpd_conf_entry *map;
    size_t offset;
} sections[] = {
    {"kafka", kafka_map, offsetof(struct nlpd_config, kafka)},
    {"output", output_map, offsetof(struct nlpd_config, output)},
    {"flow", flow_map, offsetof(struct nlpd_config, flow)},
    {"cache", cache_map, offsetof(struct nlpd_config, cache)},
    {"metrics", metrics_map, offsetof(struct nlpd_config, metrics)},
    {"input", input_map, offsetof(struct nlpd_config, input)},
    {"batch", batch_map, offsetof(struct nlpd_config, batch)},
    {"kernels", kernels_map, offsetof(struct nlpd_config, kernels)},
    {"log", log_map, offsetof(struct nlpd_config, log)},
};

size_t nlpd_config_restart_changes(const struct nlpd_config *a, const struct nlpd_config *b, char *out, size_t cap)
{
    size_t n = 0, o = 0;
    if (cap)
        out[0] = '\0';
    for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++)
        for (const struct nlpd_conf_entry *e = sections[i].map; e->type != NLPD_CONF_END; e++) {
            if (!(e->flags & NLPD_CONF_RESTART) ||
                nlpd_conf_equal(e, (const char *)a + sections[i].offset, (const char *)b + sections[i].offset))
                continue;
            if (o < cap)
                o += (size_t)snprintf(out + o, cap - o, "%s%s.%s", n ? ", " : "", sections[i].name, e->key);
            n++;
        }
    return n;
}

int nlpd_config_section_equal(const struct nlpd_config *a, const struct nlpd_config *b, const char *section)
{
    for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++) {
        if (strcmp(sections[i].name, section) != 0)
            continue;
        for (const struct nlpd_conf_entry *e = sections[i].map; e->type != NLPD_CONF_END; e++)
            if (!nlpd_conf_equal(e, (const char *)a + sections[i].offset, (const char *)b + sections[i].offset))
                return 0;
        return 1;
    }
    return 0;
}

void nlpd_config_doc(FILE *out)
{
    nlpd_conf_doc(kafka_map, "kafka", out);
    nlpd_conf_doc(output_map, "output", out);
    fputs("  output.routes  (list of groups { when; topic; copy; name; })\n"
          "      content routing of `nlpd run`: the first route whose `when` condition holds sends the record to its "
          "topic instead of kafka.output_topic (with copy = true: to both; the offset is stored once both are "
          "acknowledged); name (default: the topic) labels nlpd_routed_records_total. Conditions as in a stage's "
          "`when` (README \"Routing\")\n",
          out);
    nlpd_sr_conf_doc("output", out);
    nlpd_conf_doc(flow_map, "flow", out);
    nlpd_conf_doc(cache_map, "cache", out);
    nlpd_conf_doc(metrics_map, "metrics", out);
    nlpd_conf_doc(input_map, "input", out);
    nlpd_sr_conf_doc("input", out);
    nlpd_conf_doc(batch_map, "batch", out);
    nlpd_conf_doc(kernels_map, "kernels", out);
    nlpd_conf_doc(log_map, "log", out);
}
