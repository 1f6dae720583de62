/* For the test tools (tool_kafka, tool_soak): assign every partition of a topic from its beginning, the partition
 * count read from metadata and retried while the brokers start. Header-only: each tool is one file. */
#ifndef NLPD_TEST_KAFKA_ASSIGN_ALL_H
#define NLPD_TEST_KAFKA_ASSIGN_ALL_H

#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static inline double assign_all_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Returns the partition count, or 0 after a message on stderr (prefixed by who) when the topic has no metadata
 * before deadline (CLOCK_MONOTONIC seconds), *stop is set, or the assignment fails. */
static inline int kafka_assign_all(rd_kafka_t *rk, const char *topic, double deadline,
                                   const volatile sig_atomic_t *stop, const char *who)
{
    int nparts = 0;
    while (!nparts && assign_all_now() < deadline && !*stop) {
        rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
        const struct rd_kafka_metadata *md = NULL;
        if (rd_kafka_metadata(rk, 0, rkt, &md, 2000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
            if (md->topic_cnt == 1 && !md->topics[0].err)
                nparts = md->topics[0].partition_cnt;
            rd_kafka_metadata_destroy(md);
        }
        rd_kafka_topic_destroy(rkt);
        if (!nparts)
            usleep(200000);
    }
    if (!nparts) {
        fprintf(stderr, "%s: no metadata for topic %s\n", who, topic);
        return 0;
    }
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(nparts);
    for (int p = 0; p < nparts; p++)
        rd_kafka_topic_partition_list_add(l, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_resp_err_t ae = rd_kafka_assign(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (ae) {
        fprintf(stderr, "%s: assign: %s\n", who, rd_kafka_err2str(ae));
        return 0;
    }
    return nparts;
}

#endif
