/* Offset tracker: per partition, the offsets consumed and not yet delivered, and the contiguous
 * watermark below which every record is delivered (its output or dead-letter copy acknowledged by the
 * broker). Only that watermark is ever stored for commit, so a commit never passes a record that is
 * merely queued or has failed. Used from one thread (the event loop). */
#ifndef NLPD_OFFSETS_H
#define NLPD_OFFSETS_H

#include <stddef.h>
#include <stdint.h>

struct nlpd_offsets;
struct nlpd_tp; /* one assignment of one partition */

struct nlpd_offsets *nlpd_offsets_new(void);
void nlpd_offsets_free(struct nlpd_offsets *o);

/* The current assignment of topic/partition, created on first use. */
struct nlpd_tp *nlpd_offsets_get(struct nlpd_offsets *o, const char *topic, int32_t partition);
/* Ends the current assignment of topic/partition: records of it still in flight complete into the old
 * one, which no longer reports watermarks (the partition may belong to another consumer now). The old one
 * is freed at once when nothing is in flight, else by the nlpd_offsets_done() of its last record: a
 * revoked tp must not be used after that. */
void nlpd_offsets_revoke(struct nlpd_offsets *o, const char *topic, int32_t partition);

/* Registers a consumed offset (increasing per partition). Returns 0 or NLPD_EINVAL / NLPD_ENOMEM. */
int nlpd_offsets_add(struct nlpd_tp *tp, int64_t offset);
/* Marks a consumed offset delivered. Returns 1 and sets *commit (the next offset to consume, which is
 * what Kafka commits) when the watermark advanced and the assignment is still current; else 0. */
int nlpd_offsets_done(struct nlpd_tp *tp, int64_t offset, int64_t *commit);

/* Calls store() once for each current assignment whose watermark moved since the last flush, with the
 * newest watermark (stores are batched: one call per partition however many records were delivered).
 * Returns the number of partitions stored. */
size_t nlpd_offsets_flush(struct nlpd_offsets *o,
                          void (*store)(const char *topic, int32_t partition, int64_t offset, void *user), void *user);
struct nlpd_offsets_stats {
    size_t current;             /* assignments in the lookup table */
    size_t tracked;             /* current ones plus revoked ones with records still in flight */
    size_t buckets;             /* hash table size */
    size_t longest_chain;       /* most entries a lookup walks */
    uint64_t lookups, compares; /* since creation: entries compared per lookup */
};
void nlpd_offsets_stats(const struct nlpd_offsets *o, struct nlpd_offsets_stats *st);

size_t nlpd_offsets_inflight(const struct nlpd_tp *tp);
const char *nlpd_offsets_topic(const struct nlpd_tp *tp);
int32_t nlpd_offsets_partition(const struct nlpd_tp *tp);
int nlpd_offsets_revoked(const struct nlpd_tp *tp);

#endif
