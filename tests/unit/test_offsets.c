/* Offset tracker: the stored watermark never passes an undelivered record. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "offsets.h"

static void contiguous_watermark(void)
{
    struct nlpd_offsets *o = nlpd_offsets_new();
    struct nlpd_tp *tp = nlpd_offsets_get(o, "in", 3);
    for (int64_t off = 10; off < 20; off++)
        CHECK(nlpd_offsets_add(tp, off) == 0);
    CHECK(nlpd_offsets_add(tp, 15) < 0); /* offsets only grow */
    int64_t c = -1;
    CHECK(nlpd_offsets_done(tp, 12, &c) == 0 && c == -1); /* 10 and 11 still in flight */
    CHECK(nlpd_offsets_done(tp, 11, &c) == 0);
    CHECK(nlpd_offsets_done(tp, 10, &c) == 1 && c == 13);
    CHECK(nlpd_offsets_inflight(tp) == 7);
    CHECK(nlpd_offsets_done(tp, 99, &c) == 0); /* unknown offset: ignored */
    CHECK(nlpd_offsets_done(tp, 10, &c) == 0); /* twice: ignored */
    for (int64_t off = 19; off >= 13; off--)
        nlpd_offsets_done(tp, off, &c);
    CHECK(c == 20 && nlpd_offsets_inflight(tp) == 0);
    CHECK(nlpd_offsets_get(o, "in", 3) == tp && nlpd_offsets_get(o, "in", 4) != tp);
    nlpd_offsets_free(o);
}

static void gaps_and_growth(void)
{
    struct nlpd_offsets *o = nlpd_offsets_new();
    struct nlpd_tp *tp = nlpd_offsets_get(o, "t", 0);
    /* Compacted topics have gaps; many in flight makes the ring grow and wrap. */
    int64_t c = -1, expect = 0;
    srand(7);
    int64_t next_add = 0, added[5000];
    int nadded = 0;
    for (int round = 0; round < 5000; round++) {
        next_add += 1 + rand() % 3;
        CHECK(nlpd_offsets_add(tp, next_add) == 0);
        added[nadded++] = next_add;
        if (round % 7 == 6) { /* deliver the oldest few, in reverse order */
            for (int k = 6; k >= 0; k--) {
                int64_t off = added[nadded - 7 + k];
                if (nlpd_offsets_done(tp, off, &c))
                    expect = c;
            }
        }
    }
    /* 5000 = 7 * 714 + 2: the last two are still in flight, so the watermark stops before them. */
    CHECK(expect == added[nadded - 3] + 1);
    CHECK(nlpd_offsets_inflight(tp) == 2);
    CHECK(nlpd_offsets_done(tp, added[nadded - 1], &c) == 0);
    CHECK(nlpd_offsets_done(tp, added[nadded - 2], &c) == 1 && c == added[nadded - 1] + 1);
    nlpd_offsets_free(o);
}

static void revoked_assignment_reports_nothing(void)
{
    struct nlpd_offsets *o = nlpd_offsets_new();
    struct nlpd_tp *old = nlpd_offsets_get(o, "in", 0);
    nlpd_offsets_add(old, 5);
    nlpd_offsets_revoke(o, "in", 0);
    CHECK(nlpd_offsets_revoked(old));
    struct nlpd_tp *now = nlpd_offsets_get(o, "in", 0);
    CHECK(now != old);
    int64_t c = -1;
    CHECK(nlpd_offsets_done(old, 5, &c) == 0 && c == -1); /* not ours any more: never stored */
    CHECK(nlpd_offsets_add(now, 3) == 0);                 /* the new owner may restart lower */
    CHECK(nlpd_offsets_done(now, 3, &c) == 1 && c == 4);
    nlpd_offsets_free(o);
}

static int stores;
static int64_t stored[4];

static void record_store(const char *topic, int32_t partition, int64_t offset, void *user)
{
    (void)topic, (void)user;
    stores++;
    stored[partition] = offset;
}

static void flush_batches_stores(void)
{
    struct nlpd_offsets *o = nlpd_offsets_new();
    struct nlpd_tp *a = nlpd_offsets_get(o, "t", 0), *b = nlpd_offsets_get(o, "t", 1);
    int64_t c;
    for (int64_t off = 0; off < 100; off++) {
        nlpd_offsets_add(a, off);
        nlpd_offsets_add(b, off);
    }
    for (int64_t off = 0; off < 50; off++)
        nlpd_offsets_done(a, off, &c);
    nlpd_offsets_done(b, 1, &c); /* not contiguous: nothing to store for b */
    stores = 0;
    CHECK(nlpd_offsets_flush(o, record_store, NULL) == 1 && stores == 1 && stored[0] == 50);
    CHECK(nlpd_offsets_flush(o, record_store, NULL) == 0); /* nothing moved since */
    nlpd_offsets_done(b, 0, &c);
    nlpd_offsets_done(a, 50, &c);
    CHECK(nlpd_offsets_flush(o, record_store, NULL) == 2 && stored[0] == 51 && stored[1] == 2);
    nlpd_offsets_done(a, 51, &c);
    nlpd_offsets_revoke(o, "t", 0); /* revoked before the flush: its watermark is not ours to store */
    CHECK(nlpd_offsets_flush(o, record_store, NULL) == 0);
    nlpd_offsets_free(o);
}

/* Issue 13 item 8: 2000 rebalances of 64 partitions, each leaving records in flight that complete only after the
 * next assignment, track the assigned partitions plus those still draining; never every assignment ever made. */
static void rebalances_stay_bounded(void)
{
    struct nlpd_offsets *o = nlpd_offsets_new();
    struct nlpd_offsets_stats st;
    struct nlpd_tp *prev[64] = {0}, *cur[64];
    size_t most = 0;
    int64_t c, base = 0;
    for (int round = 0; round < 2000; round++) {
        for (int32_t p = 0; p < 64; p++) {
            cur[p] = nlpd_offsets_get(o, "in", p);
            for (int64_t off = base; off < base + 3; off++)
                CHECK(nlpd_offsets_add(cur[p], off) == 0);
            nlpd_offsets_done(cur[p], base, &c);
        }
        for (int32_t p = 0; p < 64 && prev[0]; p++) { /* the previous owner's stragglers complete now */
            CHECK(nlpd_offsets_done(prev[p], base - 1, &c) == 0);
            CHECK(nlpd_offsets_done(prev[p], base - 2, &c) == 0); /* its last record: prev[p] is freed */
        }
        nlpd_offsets_stats(o, &st);
        if (st.tracked > most)
            most = st.tracked;
        for (int32_t p = 0; p < 64; p++)
            nlpd_offsets_revoke(o, "in", p); /* two records of each still in flight */
        nlpd_offsets_revoke(o, "in", 999);   /* never assigned: nothing happens */
        memcpy(prev, cur, sizeof prev);
        base += 3;
    }
    nlpd_offsets_stats(o, &st);
    CHECK(most == 64); /* the current 64; the revoked ones went with their last record */
    CHECK(st.current == 0 && st.tracked == 64);
    for (int32_t p = 0; p < 64; p++) {
        nlpd_offsets_done(prev[p], base - 1, &c);
        nlpd_offsets_done(prev[p], base - 2, &c);
    }
    nlpd_offsets_stats(o, &st);
    CHECK(st.tracked == 0);
    nlpd_offsets_free(o);
}

/* Lookups go through a hash table: with 10k current assignments (and revoked ones beside them), a lookup
 * compares a handful of entries, not all of them. The table keeps at most one entry per two buckets. */
static void lookups_are_hashed(void)
{
    struct nlpd_offsets *o = nlpd_offsets_new();
    char topic[32];
    for (int t = 0; t < 10; t++) {
        snprintf(topic, sizeof topic, "topic-%d", t);
        for (int32_t p = 0; p < 1000; p++)
            CHECK(nlpd_offsets_get(o, topic, p) != NULL);
        for (int32_t p = 0; p < 1000; p += 2) { /* revoked with a record in flight: not in the table */
            nlpd_offsets_add(nlpd_offsets_get(o, topic, p), 1);
            nlpd_offsets_revoke(o, topic, p);
            nlpd_offsets_get(o, topic, p);
        }
    }
    struct nlpd_offsets_stats before, after;
    nlpd_offsets_stats(o, &before);
    CHECK(before.current == 10000 && before.tracked == 15000);
    CHECK(before.buckets >= 2 * before.current);
    struct nlpd_tp *tp = NULL;
    for (int i = 0; i < 10000; i++) {
        snprintf(topic, sizeof topic, "topic-%d", i % 10);
        tp = nlpd_offsets_get(o, topic, (int32_t)(i * 7919 % 1000));
    }
    CHECK(tp && nlpd_offsets_partition(tp) == (int32_t)(9999 * 7919 % 1000) && !nlpd_offsets_revoked(tp));
    nlpd_offsets_stats(o, &after);
    CHECK(after.lookups - before.lookups == 10000);
    /* A linear list would compare thousands per lookup; a hashed lookup walks one short chain. */
    CHECK(after.compares - before.compares <= 10000 * 4);
    CHECK(after.longest_chain <= 16);
    nlpd_offsets_free(o);
}

int main(void)
{
    RUN(contiguous_watermark);
    RUN(gaps_and_growth);
    RUN(revoked_assignment_reports_nothing);
    RUN(flush_batches_stores);
    RUN(rebalances_stay_bounded);
    RUN(lookups_are_hashed);
    return TEST_REPORT();
}
