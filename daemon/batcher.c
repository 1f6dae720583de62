/* The batcher (see batcher.h): micro-batches of raw records, their decoding and encoding on the pipeline's worker
 * threads, the batches kept for a full pipeline queue and the completion queue. */
#include "batcher.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

struct nlpd_batcher {
    struct nlpd_batcher_conf conf;
    /* event-loop or reader thread only */
    struct nlpd_mbatch *held_head, *held_tail; /* closed, waiting for room in their pipeline's queue */
    size_t nheld;
    pthread_mutex_t lock; /* guards what follows */
    pthread_cond_t done;  /* a batch completed, or the input closed */
    int closed;
    /* lines mode: every submitted batch in submission order (complete or not); else the completed ones */
    struct nlpd_mbatch *head, *tail;
    size_t outstanding;
};

struct nlpd_batcher *nlpd_batcher_new(const struct nlpd_batcher_conf *conf)
{
    struct nlpd_batcher *bt = calloc(1, sizeof *bt);
    if (!bt)
        return NULL;
    bt->conf = *conf;
    pthread_mutex_init(&bt->lock, NULL);
    pthread_cond_init(&bt->done, NULL);
    return bt;
}

void nlpd_batcher_free(struct nlpd_batcher *bt)
{
    if (!bt)
        return;
    for (struct nlpd_mbatch *b = bt->held_head, *n; b; b = n) {
        n = b->next;
        nlpd_batcher_batch_free(b);
    }
    for (struct nlpd_mbatch *b = bt->head, *n; b; b = n) {
        n = b->next;
        nlpd_batcher_batch_free(b);
    }
    pthread_mutex_destroy(&bt->lock);
    pthread_cond_destroy(&bt->done);
    free(bt);
}

struct nlpd_mbatch *nlpd_batcher_batch_new(struct nlpd_batcher *bt, size_t cap)
{
    struct nlpd_mbatch *b = calloc(1, sizeof *b);
    cap = cap ? cap : 1;
    if (!b || !(b->slots = calloc(cap, sizeof *b->slots)) || !(b->recs = calloc(cap, sizeof *b->recs))) {
        if (b)
            free(b->slots);
        free(b);
        return NULL;
    }
    if (bt->conf.lines && !(b->own = calloc(cap, sizeof *b->own))) {
        free(b->slots), free(b->recs), free(b);
        return NULL;
    }
    b->bt = bt;
    b->cap = cap;
    return b;
}

void nlpd_batcher_batch_free(struct nlpd_mbatch *b)
{
    if (!b)
        return;
    for (size_t i = 0; i < b->n; i++)
        free(b->slots[i].pre_error);
    if (b->own) {
        for (size_t i = 0; i < b->n; i++)
            if (b->slots[i].item == &b->own[i])
                nlpd_item_clear(&b->own[i]);
        free(b->own);
    }
    nlpd_buf_free(&b->raw);
    nlpd_buf_free(&b->out);
    free(b->slots);
    free(b->recs);
    free(b);
}

struct nlpd_bslot *nlpd_batcher_add(struct nlpd_mbatch *b, struct nlpd_item *item, const char *data, size_t len,
                                    int copy)
{
    NLPD_ASSERT(b->n < b->cap);
    struct nlpd_bslot *s = &b->slots[b->n];
    memset(s, 0, sizeof *s);
    NLPD_ASSERT(item || b->own); /* item-less records: lines mode only */
    s->item = item ? item : &b->own[b->n];
    s->len = len;
    if (copy) {
        s->off = b->raw.len;
        nlpd_buf_append(&b->raw, data, len);
        if (b->raw.oom && !s->pre_error)
            s->pre_error = strdup("out of memory");
    } else {
        s->data = data;
    }
    b->n++;
    return s;
}

/* ---- worker thread ---- */

static void decode(struct nlpd_mbatch *b)
{
    const struct nlpd_batcher_conf *c = &b->bt->conf;
    const struct nlpd_codec *codec = b->codec;
    double now = nlpd_now();
    int abandon = c->abandon && __atomic_load_n(c->abandon, __ATOMIC_ACQUIRE);
    for (size_t i = 0; i < b->n; i++) {
        struct nlpd_bslot *s = &b->slots[i];
        struct nlpd_item *it = s->item;
        b->recs[i] = &it->rec;
        if (abandon) { /* a failed record skips every stage; the caller drops it */
            nlpd_record_fail(&it->rec, "nlpd", "abandoned at shutdown");
            continue;
        }
        if (c->queue_ms)
            nlpd_histogram_observe(c->queue_ms, (now - it->t_in) * 1e3);
        const char *data = s->data ? s->data : b->raw.data ? b->raw.data + s->off : "";
        if (s->pre_error)
            nlpd_record_fail(&it->rec, "input", "%s", s->pre_error);
        else if (codec->avro_in)
            nlpd_avro_in_decode(codec->avro_in, it, data, s->len);
        else
            nlpd_item_decode_json(it, codec->input, data, s->len);
    }
    b->job.batch.n = b->n;
    b->job.batch.recs = b->recs;
}

static void encode(struct nlpd_mbatch *b)
{
    const struct nlpd_codec *codec = b->codec;
    int lines = b->bt->conf.lines;
    double now = nlpd_now();
    for (size_t i = 0; i < b->n; i++) {
        struct nlpd_bslot *s = &b->slots[i];
        struct nlpd_item *it = s->item;
        if (lines) {
            if (it->rec.error) {
                s->dead = 1;
                nlpd_item_encode_error(it, &b->out);
            } else {
                nlpd_item_encode_json(it, codec->models, codec->nmodels, now, &b->out);
            }
            nlpd_buf_append(&b->out, "\n", 1);
            continue;
        }
        if (it->rec.error) {
            s->dead = 1;
            continue;
        }
        int rc = codec->avro_out ? nlpd_avro_out_encode(codec->avro_out, it, codec->models, codec->nmodels, now, s->out)
                                 : (nlpd_item_encode_json(it, codec->models, codec->nmodels, now, s->out), 0);
        if (rc < 0 || s->out->oom) {
            nlpd_record_fail(&it->rec, "output", "cannot encode the output record%s",
                             s->out->oom ? ": out of memory" : "");
            s->dead = 1;
        }
    }
    if (!lines) /* the caller keeps its items until delivered: free what only decoding needed, here */
        for (size_t i = 0; i < b->n; i++)
            nlpd_item_drop_input(b->slots[i].item);
    b->t_done = now;
}

static void complete(struct nlpd_mbatch *b)
{
    struct nlpd_batcher *bt = b->bt;
    pthread_mutex_lock(&bt->lock);
    b->complete = 1;
    if (!bt->conf.lines) { /* lines mode: already in the list, in submission order */
        b->next = NULL;
        if (bt->tail)
            bt->tail->next = b;
        else
            bt->head = b;
        bt->tail = b;
    }
    pthread_cond_broadcast(&bt->done); /* under the lock: a waiter may free bt as soon as it sees b */
    void (*notify)(void *) = bt->conf.notify;
    void *user = bt->conf.user;
    pthread_mutex_unlock(&bt->lock);
    if (notify)
        notify(user);
}

static void batch_run(struct nlpd_job *job, struct nlpd_chain *chain)
{
    struct nlpd_mbatch *b = (struct nlpd_mbatch *)job; /* job is b's first member */
    decode(b);
    nlpd_chain_run(chain, &b->job.batch);
    encode(b);
    complete(b);
}

/* ---- the caller's thread ---- */

void nlpd_batcher_submit(struct nlpd_batcher *bt, struct nlpd_mbatch *b, struct nlpd_pipeline *p,
                         const struct nlpd_codec *codec, int wait)
{
    b->p = p;
    b->codec = codec;
    b->job.run = batch_run;
    b->complete = 0;
    pthread_mutex_lock(&bt->lock);
    bt->outstanding++;
    if (bt->conf.lines) {
        b->next = NULL;
        if (bt->tail)
            bt->tail->next = b;
        else
            bt->head = b;
        bt->tail = b;
    }
    pthread_mutex_unlock(&bt->lock);
    if (wait) {
        nlpd_pipeline_submit(p, &b->job);
        return;
    }
    NLPD_ASSERT(!bt->conf.lines); /* its list is the submission order: it waits instead */
    b->next = NULL;
    if (bt->held_tail)
        bt->held_tail->next = b;
    else
        bt->held_head = b;
    bt->held_tail = b;
    bt->nheld++;
    nlpd_batcher_push(bt);
}

size_t nlpd_batcher_push(struct nlpd_batcher *bt)
{
    while (bt->held_head) {
        struct nlpd_mbatch *b = bt->held_head, *next = b->next; /* once submitted, b is the worker's */
        if (nlpd_pipeline_try_submit(b->p, &b->job) < 0)
            break; /* full: nlpd_pipeline_on_space() tells the caller when to push again */
        bt->held_head = next;
        if (!next)
            bt->held_tail = NULL;
        bt->nheld--;
    }
    return bt->nheld;
}

struct nlpd_mbatch *nlpd_batcher_take_held(struct nlpd_batcher *bt)
{
    struct nlpd_mbatch *b = bt->held_head;
    pthread_mutex_lock(&bt->lock);
    bt->outstanding -= bt->nheld;
    pthread_mutex_unlock(&bt->lock);
    bt->held_head = bt->held_tail = NULL;
    bt->nheld = 0;
    return b;
}

size_t nlpd_batcher_held(const struct nlpd_batcher *bt)
{
    return bt->nheld;
}

size_t nlpd_batcher_outstanding(struct nlpd_batcher *bt)
{
    pthread_mutex_lock(&bt->lock);
    size_t n = bt->outstanding;
    pthread_mutex_unlock(&bt->lock);
    return n;
}

static struct nlpd_mbatch *take_done_locked(struct nlpd_batcher *bt);

struct nlpd_mbatch *nlpd_batcher_take_done(struct nlpd_batcher *bt)
{
    pthread_mutex_lock(&bt->lock);
    struct nlpd_mbatch *first = take_done_locked(bt);
    pthread_mutex_unlock(&bt->lock);
    return first;
}

struct nlpd_mbatch *nlpd_batcher_wait_done(struct nlpd_batcher *bt)
{
    pthread_mutex_lock(&bt->lock);
    struct nlpd_mbatch *first;
    while (!(first = take_done_locked(bt)) && !(bt->closed && !bt->outstanding))
        pthread_cond_wait(&bt->done, &bt->lock);
    pthread_mutex_unlock(&bt->lock);
    return first;
}

void nlpd_batcher_close(struct nlpd_batcher *bt)
{
    pthread_mutex_lock(&bt->lock);
    bt->closed = 1;
    pthread_cond_broadcast(&bt->done);
    pthread_mutex_unlock(&bt->lock);
}

static struct nlpd_mbatch *take_done_locked(struct nlpd_batcher *bt)
{
    struct nlpd_mbatch *first = NULL, *last = NULL;
    if (bt->conf.lines) {
        while (bt->head && bt->head->complete) { /* the completed prefix, in submission order */
            struct nlpd_mbatch *b = bt->head;
            bt->head = b->next;
            b->next = NULL;
            if (last)
                last->next = b;
            else
                first = b;
            last = b;
            bt->outstanding--;
        }
        if (!bt->head)
            bt->tail = NULL;
    } else {
        first = bt->head;
        bt->head = bt->tail = NULL;
        for (struct nlpd_mbatch *b = first; b; b = b->next)
            bt->outstanding--;
    }
    return first;
}
