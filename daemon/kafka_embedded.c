/* The embedded broker (kafka.brokers = "embedded"): an in-process librdkafka mock cluster with the configured
 * topics, for demos and tests. */
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdlib.h>
#include <string.h>

#include "kafka_forward.h"
#include "kafka_internal.h"
#include "log.h"

/* The handle that only hosts the mock cluster has no brokers to talk to: what it says (e.g. CONFWARN about its
 * missing bootstrap.servers) is about nlpd's internals, not the user's configuration. */
static void mock_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    nlpd_log(level <= 3 ? NLPD_LOG_ERR : NLPD_LOG_DEBUG, "rdkafka", "embedded broker: %s: %s", fac, buf);
}

int nlpd_kd_start_embedded(struct nlpd_daemon *d, struct nlpd_error *err)
{
    char why[512];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(c, mock_log_cb);
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
    for (size_t i = 0; i < d->cfg->routes.n; i++)
        rd_kafka_mock_topic_create(d->mock, d->cfg->routes.r[i].topic, parts, 1);
    d->bootstraps = strdup(rd_kafka_mock_cluster_bootstraps(d->mock));
    /* nlpd's own clients use the mock's address; the fixed port is for the user's tools */
    char fixed[32];
    const char *shown = d->bootstraps;
    if (k->embedded_port > 0) {
        if (!(d->mock_forward = nlpd_kd_forward_start((int)k->embedded_port, d->bootstraps, err)))
            return err ? err->code : NLPD_EFATAL;
        snprintf(fixed, sizeof fixed, "127.0.0.1:%d", (int)k->embedded_port);
        shown = fixed;
    }
    /* the address alone on the next line (text logs), so that `kcat -b` can be given it as it is */
    nlpd_log(NLPD_LOG_NOTICE, "kafka",
             "embedded broker at %s (an in-process mock cluster that keeps nothing on disk; for demos and tests, "
             "never production); its bootstrap address alone on the next line:",
             shown);
    nlpd_log_bare(shown);
    return 0;
}
