/* The batcher: what `nlpd pipe` and the Kafka daemon share between reading records and writing their outputs. The
 * caller fills a micro-batch with records as read and submits it to a pipeline; the worker that takes it decodes
 * them (JSON or Avro), runs the stage chain and encodes the outputs; finished batches come back through the
 * batcher's one completion queue. The caller's thread never decodes, encodes or waits on a stage. */
#ifndef NLPD_BATCHER_H
#define NLPD_BATCHER_H

#include <stddef.h>

#include "avro_codec.h"
#include "buf.h"
#include "config.h"
#include "metrics.h"
#include "pipeline.h"
#include "record.h"

/* How records are read and written: one per configuration (a reload brings a new one). */
struct nlpd_codec {
    const struct nlpd_input_conf *input; /* JSON input settings (also the text checks of Avro input) */
    struct nlpd_avro_in *avro_in;        /* NULL: JSON input */
    struct nlpd_avro_out *avro_out;      /* NULL: JSON output */
    const struct nlpd_model_ref *models; /* for meta.models */
    size_t nmodels;
};

struct nlpd_batcher_conf {
    /* Nonzero: outputs are lines in one buffer per batch (nlpd_mbatch.out), a failed record an error line, and
     * batches complete in submission order (pipe mode). Zero: one output buffer per record (nlpd_bslot.out), a
     * failed record only marked dead, batches complete as they finish (the Kafka daemon). */
    int lines;
    const int *abandon;              /* nonzero (read atomically): fail the records of batches not yet started */
    struct nlpd_histogram *queue_ms; /* arrival -> decode, per record; NULL: not measured */
    /* A worker thread, after a batch reached the completion queue: a wake-up (quick and thread-safe; what it
     * touches must outlive the pipelines' workers). NULL: none (nlpd_batcher_wait_done() waits instead). */
    void (*notify)(void *user);
    void *user;
};

struct nlpd_bslot {
    struct nlpd_item *item; /* decoded into and encoded from: the caller's, or the batch's own */
    const char *data;       /* the record as read (NULL: copied into the batch, at off) */
    size_t off, len;
    char *pre_error;      /* a reason found before decoding (over-long line), owned; NULL: none */
    struct nlpd_buf *out; /* per-record output (lines == 0) */
    int dead;             /* set by the worker: the record failed, or its output could not be encoded */
    void *user;           /* the caller's per-record pointer */
};

struct nlpd_mbatch {
    struct nlpd_job job; /* the pipeline's; job.batch points at recs */
    struct nlpd_batcher *bt;
    struct nlpd_pipeline *p;
    const struct nlpd_codec *codec;
    size_t n, cap;
    struct nlpd_bslot *slots;
    struct nlpd_record **recs;
    struct nlpd_item *own;    /* items of records added without one (lines mode), cap of them */
    struct nlpd_buf raw;      /* copied input bytes */
    struct nlpd_buf out;      /* lines mode: the output lines */
    double t_done;            /* when the worker finished it (nlpd_now) */
    int complete;             /* under the batcher's lock */
    void *user;               /* the caller's */
    struct nlpd_mbatch *next; /* the batcher's lists; a list from nlpd_batcher_take_done() */
};

struct nlpd_batcher;

/* NULL when out of memory. */
struct nlpd_batcher *nlpd_batcher_new(const struct nlpd_batcher_conf *conf);
/* Frees the batches it still holds (kept or completed; the caller's items are left alone): call once no worker
 * can hold one of its batches (the pipelines stopped). */
void nlpd_batcher_free(struct nlpd_batcher *bt);

/* An empty batch for up to cap records (batch.max_records, which a reload may change); NULL when out of memory. */
struct nlpd_mbatch *nlpd_batcher_batch_new(struct nlpd_batcher *bt, size_t cap);
/* Frees the batch, its own items and buffers; the caller's items are left alone. */
void nlpd_batcher_batch_free(struct nlpd_mbatch *b);
/* Adds a record, pointing at data (kept valid by the caller until the batch completes), or copying it when copy is
 * set. item NULL: the batch's own. Returns the slot; the batch must not be full. */
struct nlpd_bslot *nlpd_batcher_add(struct nlpd_mbatch *b, struct nlpd_item *item, const char *data, size_t len,
                                    int copy);

/* Hands b to p: waiting for room in p's queue (wait != 0, a reader thread), or else keeping it, in order with the
 * batches kept before it, until nlpd_batcher_push() finds room (an event loop never waits on a worker). The batch
 * is the batcher's until it comes back from nlpd_batcher_take_done(). */
void nlpd_batcher_submit(struct nlpd_batcher *bt, struct nlpd_mbatch *b, struct nlpd_pipeline *p,
                         const struct nlpd_codec *codec, int wait);
/* Hands kept batches on while their pipelines' queues have room; returns how many are still kept. */
size_t nlpd_batcher_push(struct nlpd_batcher *bt);
size_t nlpd_batcher_held(const struct nlpd_batcher *bt);
/* The kept batches (a list through next, never handed to a pipeline), now the caller's: at shutdown. */
struct nlpd_mbatch *nlpd_batcher_take_held(struct nlpd_batcher *bt);
/* Batches submitted and not yet taken back (kept ones included). */
size_t nlpd_batcher_outstanding(struct nlpd_batcher *bt);
/* The completed batches (a list through next; in submission order in lines mode), now the caller's; NULL: none. */
struct nlpd_mbatch *nlpd_batcher_take_done(struct nlpd_batcher *bt);
/* Like nlpd_batcher_take_done(), waiting for one; NULL once closed and every submitted batch was taken. */
struct nlpd_mbatch *nlpd_batcher_wait_done(struct nlpd_batcher *bt);
/* No more batches will be submitted (wakes nlpd_batcher_wait_done()). */
void nlpd_batcher_close(struct nlpd_batcher *bt);

#endif
