/* Pipe mode (see pipe.h). */
#include "pipe.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "batcher.h"
#include "log.h"
#include "metrics.h"
#include "record.h"

struct pipe_run {
    const struct nlpd_config *cfg;
    struct nlpd_pipeline *p;
    struct nlpd_codec codec;
    struct nlpd_batcher *bt;
    int out_fd;

    pthread_mutex_t lock;
    pthread_cond_t cond; /* a batch was written */
    size_t outstanding, limit;
    int write_failed;
    uint64_t ok, errors;
    struct nlpd_latency_sample lat; /* ms, for the summary; bounded however long the input */
};

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Writes the completed batches in input order (the batcher's lines mode keeps it). */
static void *writer_main(void *arg)
{
    struct pipe_run *run = arg;
    struct nlpd_mbatch *b;
    while ((b = nlpd_batcher_wait_done(run->bt))) {
        while (b) {
            struct nlpd_mbatch *next = b->next;
            size_t ok = 0;
            for (size_t i = 0; i < b->n; i++)
                ok += !b->slots[i].dead;
            int failed = b->out.oom || write_all(run->out_fd, b->out.data, b->out.len) < 0;
            pthread_mutex_lock(&run->lock);
            run->ok += ok;
            run->errors += b->n - ok;
            for (size_t i = 0; i < b->n; i++)
                nlpd_latency_add(&run->lat, (b->t_done - b->slots[i].item->t_in) * 1e3);
            if (failed && !run->write_failed) {
                run->write_failed = 1;
                nlpd_log(NLPD_LOG_ERR, "pipe", "cannot write the output: %m");
            }
            run->outstanding--;
            pthread_cond_broadcast(&run->cond);
            pthread_mutex_unlock(&run->lock);
            nlpd_batcher_batch_free(b);
            b = next;
        }
    }
    return NULL;
}

static void submit(struct pipe_run *run, struct nlpd_mbatch *b)
{
    pthread_mutex_lock(&run->lock);
    /* Bounded memory: a slow reader of our output stops our reading. */
    while (run->outstanding >= run->limit)
        pthread_cond_wait(&run->cond, &run->lock);
    run->outstanding++;
    pthread_mutex_unlock(&run->lock);
    nlpd_batcher_submit(run->bt, b, run->p, &run->codec, 1);
}

static void add_line(struct nlpd_mbatch *b, const char *data, size_t len, int64_t line, double t_in,
                     const char *pre_error)
{
    struct nlpd_bslot *s = nlpd_batcher_add(b, NULL, data, len, 1);
    s->item->line = line;
    s->item->t_in = t_in;
    if (pre_error && !s->pre_error)
        s->pre_error = strdup(pre_error);
}

int nlpd_pipe_run(const struct nlpd_config *cfg, struct nlpd_pipeline *p, int in_fd, int out_fd,
                  struct nlpd_pipe_stats *stats)
{
    struct pipe_run run = {.cfg = cfg, .p = p, .out_fd = out_fd};
    run.codec.input = &cfg->input;
    run.codec.models = nlpd_pipeline_models(p, &run.codec.nmodels);
    run.limit = (size_t)nlpd_pipeline_threads(p) * 4 + 4;
    struct nlpd_batcher_conf bc = {.lines = 1};
    run.bt = nlpd_batcher_new(&bc);
    if (!run.bt) {
        nlpd_log(NLPD_LOG_ERR, "pipe", "out of memory");
        return 1;
    }
    pthread_mutex_init(&run.lock, NULL);
    pthread_cond_init(&run.cond, NULL);
    pthread_t writer;
    if (pthread_create(&writer, NULL, writer_main, &run) != 0) {
        nlpd_log(NLPD_LOG_ERR, "pipe", "cannot start the writer thread");
        nlpd_batcher_free(run.bt);
        return 1;
    }

    const size_t max_records = (size_t)cfg->batch.max_records;
    const double max_wait = (double)cfg->batch.max_wait_ms / 1e3;
    /* A JSON line may escape every byte of its text (\u00XX: 6 bytes) and carry other fields. */
    const size_t max_line = (size_t)cfg->input.max_text_bytes * 6 + (1 << 20);
    struct nlpd_buf in = {0};
    size_t start = 0; /* first byte of the current line in `in` */
    int skipping = 0; /* inside an over-long line: drop bytes up to its newline */
    int64_t line = 0;
    struct nlpd_mbatch *cur = NULL;
    double t_first = 0, t0 = nlpd_now();
    int eof = 0, rc = 0;

    while (!eof) {
        pthread_mutex_lock(&run.lock);
        int gone = run.write_failed;
        pthread_mutex_unlock(&run.lock);
        if (gone) /* nobody reads our output any more: stop reading input too */
            break;
        if (cur && cur->n) {
            double left = t_first + max_wait - nlpd_now();
            struct pollfd pfd = {in_fd, POLLIN, 0};
            int timeout = left <= 0 ? 0 : (int)ceil(left * 1e3);
            if (poll(&pfd, 1, timeout) == 0) {
                submit(&run, cur);
                cur = NULL;
                continue;
            }
        }
        nlpd_buf_reserve(&in, 1 << 16);
        if (in.oom) {
            nlpd_log(NLPD_LOG_ERR, "pipe", "out of memory reading input");
            rc = 1;
            break;
        }
        ssize_t r = read(in_fd, in.data + in.len, in.cap - in.len - 1);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            nlpd_log(NLPD_LOG_ERR, "pipe", "cannot read input: %m");
            rc = 1;
            r = 0;
        }
        if (r == 0) {
            eof = 1;
            if (in.len > start || skipping) /* a last line without its newline still counts */
                nlpd_buf_append(&in, "\n", 1);
        } else {
            in.len += (size_t)r;
        }
        double now = nlpd_now();
        size_t scan = start;
        for (;;) {
            char *nl = memchr(in.data + scan, '\n', in.len - scan);
            if (!nl) {
                if (in.len - start > max_line && !skipping) {
                    skipping = 1; /* drop what we have; the line's error is emitted at its end */
                }
                if (skipping)
                    start = in.len;
                break;
            }
            size_t len = (size_t)(nl - (in.data + start));
            line++;
            if (!cur) {
                cur = nlpd_batcher_batch_new(run.bt, max_records);
                if (!cur) {
                    nlpd_log(NLPD_LOG_ERR, "pipe", "out of memory");
                    rc = 1;
                    eof = 1;
                    break;
                }
                t_first = now;
            }
            if (skipping || len > max_line) {
                char why[96];
                snprintf(why, sizeof why, "line is longer than %zu bytes", max_line);
                add_line(cur, "", 0, line, now, why);
                skipping = 0;
            } else {
                if (len && in.data[start + len - 1] == '\r')
                    len--; /* CRLF input */
                add_line(cur, in.data + start, len, line, now, NULL);
            }
            start = scan = (size_t)(nl - in.data) + 1;
            if (cur->n == max_records) {
                submit(&run, cur);
                cur = NULL;
            }
        }
        /* Keep only the unfinished line. */
        if (start > 0) {
            memmove(in.data, in.data + start, in.len - start);
            in.len -= start;
            start = 0;
        }
    }
    if (cur && cur->n)
        submit(&run, cur);
    else if (cur)
        nlpd_batcher_batch_free(cur);
    nlpd_buf_free(&in);

    nlpd_batcher_close(run.bt);
    pthread_join(writer, NULL);

    if (stats) {
        memset(stats, 0, sizeof *stats);
        stats->lines = (uint64_t)line;
        stats->ok = run.ok;
        stats->errors = run.errors;
        stats->seconds = nlpd_now() - t0;
        stats->latency_p50_ms = nlpd_latency_percentile(&run.lat, 0.5);
        stats->latency_p99_ms = nlpd_latency_percentile(&run.lat, 0.99);
        stats->latency_max_ms = run.lat.max;
    }
    nlpd_latency_free(&run.lat);
    nlpd_batcher_free(run.bt);
    pthread_mutex_destroy(&run.lock);
    pthread_cond_destroy(&run.cond);
    if (run.write_failed || nlpd_pipeline_failed(p))
        rc = 1;
    return rc;
}
