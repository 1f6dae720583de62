/* Offset tracker (see offsets.h): per assignment, a ring of in-flight offsets in consumption order. Current
 * assignments sit in a hash table (O(1) lookup); a revoked one leaves it at once and is freed with its last
 * in-flight record, so memory follows what is assigned and in flight, not how many rebalances there were. */
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
    uint32_t hash;
    int revoked;
    int dirty;        /* the watermark moved since the last nlpd_offsets_flush() */
    int64_t to_store; /* the watermark to store for commit */
    struct slot *ring;
    size_t cap, head, n;         /* n slots from head, in increasing offset order */
    struct nlpd_tp *chain;       /* hash bucket link (current assignments only) */
    struct nlpd_tp *prev, *next; /* every tracked assignment, current or revoked with records in flight */
    struct nlpd_offsets *owner;
};

struct nlpd_offsets {
    struct nlpd_tp **buckets; /* power-of-two count; current assignments */
    size_t nbuckets, ncurrent, ntracked;
    struct nlpd_tp *all;
    uint64_t lookups, compares; /* for nlpd_offsets_stats() */
};

struct nlpd_offsets *nlpd_offsets_new(void)
{
    return calloc(1, sizeof(struct nlpd_offsets));
}

static void tp_free(struct nlpd_tp *tp)
{
    free(tp->topic);
    free(tp->ring);
    free(tp);
}

void nlpd_offsets_free(struct nlpd_offsets *o)
{
    if (!o)
        return;
    for (struct nlpd_tp *tp = o->all, *next; tp; tp = next) {
        next = tp->next;
        tp_free(tp);
    }
    free(o->buckets);
    free(o);
}

static uint32_t hash_tp(const char *topic, int32_t partition)
{
    uint32_t h = 2166136261u; /* FNV-1a over the topic, then the partition mixed in (murmur3 finaliser) */
    for (const unsigned char *s = (const unsigned char *)topic; *s; s++)
        h = (h ^ *s) * 16777619u;
    h ^= (uint32_t)partition * 0x9e3779b9u;
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    return h;
}

/* The bucket link that points at topic/partition's current assignment, or at the bucket's NULL end. */
static struct nlpd_tp **slot_of(struct nlpd_offsets *o, const char *topic, int32_t partition, uint32_t h)
{
    struct nlpd_tp **pp = &o->buckets[h & (o->nbuckets - 1)];
    o->lookups++;
    for (; *pp; pp = &(*pp)->chain) {
        o->compares++;
        if ((*pp)->hash == h && (*pp)->partition == partition && strcmp((*pp)->topic, topic) == 0)
            break;
    }
    return pp;
}

/* Keeps the load factor at most 1/2 (so chains stay a few entries long). */
static int grow(struct nlpd_offsets *o)
{
    if (o->nbuckets && (o->ncurrent + 1) * 2 <= o->nbuckets)
        return 0;
    size_t nb = o->nbuckets ? o->nbuckets * 2 : 64;
    struct nlpd_tp **b = calloc(nb, sizeof *b);
    if (!b)
        return NLPD_ENOMEM;
    for (size_t i = 0; i < o->nbuckets; i++)
        for (struct nlpd_tp *tp = o->buckets[i], *next; tp; tp = next) {
            next = tp->chain;
            tp->chain = b[tp->hash & (nb - 1)];
            b[tp->hash & (nb - 1)] = tp;
        }
    free(o->buckets);
    o->buckets = b;
    o->nbuckets = nb;
    return 0;
}

struct nlpd_tp *nlpd_offsets_get(struct nlpd_offsets *o, const char *topic, int32_t partition)
{
    uint32_t h = hash_tp(topic, partition);
    if (o->nbuckets) {
        struct nlpd_tp *tp = *slot_of(o, topic, partition, h);
        if (tp)
            return tp;
    }
    if (grow(o) < 0)
        return NULL;
    struct nlpd_tp *tp = calloc(1, sizeof *tp);
    if (!tp || !(tp->topic = strdup(topic))) {
        free(tp);
        return NULL;
    }
    tp->partition = partition;
    tp->hash = h;
    tp->owner = o;
    struct nlpd_tp **bucket = &o->buckets[h & (o->nbuckets - 1)];
    tp->chain = *bucket;
    *bucket = tp;
    tp->next = o->all;
    if (o->all)
        o->all->prev = tp;
    o->all = tp;
    o->ncurrent++;
    o->ntracked++;
    return tp;
}

static void untrack(struct nlpd_tp *tp)
{
    struct nlpd_offsets *o = tp->owner;
    if (tp->prev)
        tp->prev->next = tp->next;
    else
        o->all = tp->next;
    if (tp->next)
        tp->next->prev = tp->prev;
    o->ntracked--;
    tp_free(tp);
}

void nlpd_offsets_revoke(struct nlpd_offsets *o, const char *topic, int32_t partition)
{
    if (!o->nbuckets)
        return;
    struct nlpd_tp **pp = slot_of(o, topic, partition, hash_tp(topic, partition));
    struct nlpd_tp *tp = *pp;
    if (!tp)
        return;
    *pp = tp->chain;
    tp->chain = NULL;
    tp->revoked = 1;
    tp->dirty = 0;
    o->ncurrent--;
    if (tp->n == 0)
        untrack(tp); /* nothing in flight points at it */
}

static struct slot *at(const struct nlpd_tp *tp, size_t i)
{
    return &tp->ring[(tp->head + i) % tp->cap];
}

int nlpd_offsets_add(struct nlpd_tp *tp, int64_t offset)
{
    if (tp->revoked)
        return NLPD_EINVAL; /* a revoked assignment only drains */
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
    if (tp->revoked) {
        if (tp->n == 0)
            untrack(tp); /* its last record: tp is gone */
        return 0;
    }
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

void nlpd_offsets_stats(const struct nlpd_offsets *o, struct nlpd_offsets_stats *st)
{
    memset(st, 0, sizeof *st);
    st->current = o->ncurrent;
    st->tracked = o->ntracked;
    st->buckets = o->nbuckets;
    st->lookups = o->lookups;
    st->compares = o->compares;
    for (size_t i = 0; i < o->nbuckets; i++) {
        size_t len = 0;
        for (const struct nlpd_tp *tp = o->buckets[i]; tp; tp = tp->chain)
            len++;
        if (len > st->longest_chain)
            st->longest_chain = len;
    }
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
