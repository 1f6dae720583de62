/* Offset tracker (see offsets.h): per assignment, a ring of in-flight offsets in consumption order. */
#include "offsets.h"

#include <stdlib.h>
#include <string.h>

#include "nlpd_error.h"

struct slot {
    int64_t offset;
    int done;
};

struct nlpd_tp {
    char *topic;
    int32_t partition;
    int revoked;
    int dirty;        /* the watermark moved since the last nlpd_offsets_flush() */
    int64_t to_store; /* the watermark to store for commit */
    struct slot *ring;
    size_t cap, head, n; /* n slots from head, in increasing offset order */
    struct nlpd_tp *next;
};

struct nlpd_offsets {
    struct nlpd_tp *all; /* every assignment ever made, current ones not revoked */
};

struct nlpd_offsets *nlpd_offsets_new(void)
{
    return calloc(1, sizeof(struct nlpd_offsets));
}

void nlpd_offsets_free(struct nlpd_offsets *o)
{
    if (!o)
        return;
    for (struct nlpd_tp *tp = o->all, *next; tp; tp = next) {
        next = tp->next;
        free(tp->topic);
        free(tp->ring);
        free(tp);
    }
    free(o);
}

static struct nlpd_tp *find(struct nlpd_offsets *o, const char *topic, int32_t partition)
{
    for (struct nlpd_tp *tp = o->all; tp; tp = tp->next)
        if (!tp->revoked && tp->partition == partition && strcmp(tp->topic, topic) == 0)
            return tp;
    return NULL;
}

struct nlpd_tp *nlpd_offsets_get(struct nlpd_offsets *o, const char *topic, int32_t partition)
{
    struct nlpd_tp *tp = find(o, topic, partition);
    if (tp)
        return tp;
    tp = calloc(1, sizeof *tp);
    if (!tp || !(tp->topic = strdup(topic))) {
        free(tp);
        return NULL;
    }
    tp->partition = partition;
    tp->next = o->all;
    o->all = tp;
    return tp;
}

void nlpd_offsets_revoke(struct nlpd_offsets *o, const char *topic, int32_t partition)
{
    struct nlpd_tp *tp = find(o, topic, partition);
    if (tp)
        tp->revoked = 1;
}

static struct slot *at(const struct nlpd_tp *tp, size_t i)
{
    return &tp->ring[(tp->head + i) % tp->cap];
}

int nlpd_offsets_add(struct nlpd_tp *tp, int64_t offset)
{
    if (tp->n && at(tp, tp->n - 1)->offset >= offset)
        return NLPD_EINVAL;
    if (tp->n == tp->cap) {
        size_t cap = tp->cap ? tp->cap * 2 : 64;
        struct slot *ring = malloc(cap * sizeof *ring);
        if (!ring)
            return NLPD_ENOMEM;
        for (size_t i = 0; i < tp->n; i++)
            ring[i] = *at(tp, i);
        free(tp->ring);
        tp->ring = ring;
        tp->cap = cap;
        tp->head = 0;
    }
    tp->n++;
    *at(tp, tp->n - 1) = (struct slot){offset, 0};
    return 0;
}

int nlpd_offsets_done(struct nlpd_tp *tp, int64_t offset, int64_t *commit)
{
    size_t lo = 0, hi = tp->n;
    while (lo < hi) { /* binary search: the ring is sorted by offset */
        size_t mid = (lo + hi) / 2;
        if (at(tp, mid)->offset < offset)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == tp->n || at(tp, lo)->offset != offset)
        return 0;
    at(tp, lo)->done = 1;
    if (lo != 0)
        return 0;
    int64_t last = offset;
    while (tp->n && at(tp, 0)->done) {
        last = at(tp, 0)->offset;
        tp->head = (tp->head + 1) % tp->cap;
        tp->n--;
    }
    if (tp->revoked)
        return 0;
    *commit = tp->to_store = last + 1;
    tp->dirty = 1;
    return 1;
}

size_t nlpd_offsets_flush(struct nlpd_offsets *o,
                          void (*store)(const char *topic, int32_t partition, int64_t offset, void *user), void *user)
{
    size_t n = 0;
    for (struct nlpd_tp *tp = o->all; tp; tp = tp->next) {
        if (tp->dirty && !tp->revoked) {
            store(tp->topic, tp->partition, tp->to_store, user);
            n++;
        }
        tp->dirty = 0;
    }
    return n;
}

size_t nlpd_offsets_inflight(const struct nlpd_tp *tp)
{
    return tp->n;
}

const char *nlpd_offsets_topic(const struct nlpd_tp *tp)
{
    return tp->topic;
}

int32_t nlpd_offsets_partition(const struct nlpd_tp *tp)
{
    return tp->partition;
}

int nlpd_offsets_revoked(const struct nlpd_tp *tp)
{
    return tp->revoked;
}
