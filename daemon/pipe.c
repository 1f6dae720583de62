/* Pipe mode (see pipe.h). */
#include "pipe.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"
#include "record.h"

struct pipe_job {
    struct nlpd_job job;
    struct pipe_run *run;
    struct nlpd_buf raw;     /* the batch's input lines, back to back */
    size_t *line_off, *line_len;
    struct nlpd_item *items;
    struct nlpd_record **recs;
    size_t n, cap;
    int64_t first_line;
    char **pre_error; /* per line: a reason found by the reader (over-long line), or NULL */
    struct nlpd_buf out;
    int finished;
    struct pipe_job *next;
};

struct pipe_run {
    const struct nlpd_config *cfg;
    struct nlpd_pipeline *p;
    const struct nlpd_model_ref *models;
    size_t nmodels;
    int out_fd;

    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct pipe_job *head, *tail; /* submitted, in input order */
    size_t outstanding, limit;
    int eof, write_failed;
    uint64_t ok, errors;
    struct nlpd_latency_sample lat; /* ms, for the summary; bounded however long the input */
};

static struct pipe_job *job_new(struct pipe_run *run, size_t cap)
{
    struct pipe_job *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    j->run = run;
    j->cap = cap;
    j->line_off = calloc(cap, sizeof *j->line_off);
    j->line_len = calloc(cap, sizeof *j->line_len);
    j->pre_error = calloc(cap, sizeof *j->pre_error);
    j->items = calloc(cap, sizeof *j->items);
    j->recs = calloc(cap, sizeof *j->recs);
    if (!j->line_off || !j->line_len || !j->pre_error || !j->items || !j->recs) {
        free(j->line_off), free(j->line_len), free(j->pre_error), free(j->items), free(j->recs), free(j);
        return NULL;
    }
    return j;
}

static void job_free(struct pipe_job *j)
{
    for (size_t i = 0; i < j->n; i++) {
        nlpd_item_clear(&j->items[i]);
        free(j->pre_error[i]);
    }
    nlpd_buf_free(&j->raw);
    nlpd_buf_free(&j->out);
    free(j->line_off), free(j->line_len), free(j->pre_error), free(j->items), free(j->recs), free(j);
}

/* Worker thread, before the stages: decode every line. */
static void job_decode(struct nlpd_job *job, void *user)
{
    struct pipe_job *j = user;
    (void)job;
    for (size_t i = 0; i < j->n; i++) {
        struct nlpd_item *it = &j->items[i];
        if (j->pre_error[i])
            nlpd_record_fail(&it->rec, "input", "%s", j->pre_error[i]);
        else
            nlpd_item_decode_json(it, &j->run->cfg->input, j->raw.data + j->line_off[i], j->line_len[i]);
        j->recs[i] = &it->rec;
    }
    j->job.batch.n = j->n;
    j->job.batch.recs = j->recs;
}

/* Worker thread, after the stages: encode the output lines, then hand the job to the writer. */
static void job_encode(struct nlpd_job *job, void *user)
{
    struct pipe_job *j = user;
    struct pipe_run *run = j->run;
    (void)job;
    double now = nlpd_now();
    size_t ok = 0;
    for (size_t i = 0; i < j->n; i++) {
        struct nlpd_item *it = &j->items[i];
        if (it->rec.error) {
            nlpd_item_encode_error(it, &j->out);
        } else {
            nlpd_item_encode_json(it, run->models, run->nmodels, now, &j->out);
            ok++;
        }
        nlpd_buf_append(&j->out, "\n", 1);
    }
    pthread_mutex_lock(&run->lock);
    run->ok += ok;
    run->errors += j->n - ok;
    for (size_t i = 0; i < j->n; i++)
        nlpd_latency_add(&run->lat, (now - j->items[i].t_in) * 1e3);
    j->finished = 1;
    pthread_cond_broadcast(&run->cond);
    pthread_mutex_unlock(&run->lock);
}

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

static void *writer_main(void *arg)
{
    struct pipe_run *run = arg;
    pthread_mutex_lock(&run->lock);
    for (;;) {
        while (!(run->head && run->head->finished) && !(run->eof && !run->head))
            pthread_cond_wait(&run->cond, &run->lock);
        struct pipe_job *j = run->head;
        if (!j)
            break;
        run->head = j->next;
        if (!run->head)
            run->tail = NULL;
        pthread_mutex_unlock(&run->lock);
        int failed = j->out.oom || write_all(run->out_fd, j->out.data, j->out.len) < 0;
        job_free(j);
        pthread_mutex_lock(&run->lock);
        if (failed && !run->write_failed) {
            run->write_failed = 1;
            nlpd_log(NLPD_LOG_ERR, "pipe", "cannot write the output: %m");
        }
        run->outstanding--;
        pthread_cond_broadcast(&run->cond);
    }
    pthread_mutex_unlock(&run->lock);
    return NULL;
}

static void submit(struct pipe_run *run, struct pipe_job *j)
{
    j->job.on_start = job_decode;
    j->job.on_done = job_encode;
    j->job.user = j;
    pthread_mutex_lock(&run->lock);
    /* Bounded memory: a slow reader of our output stops our reading. */
    while (run->outstanding >= run->limit)
        pthread_cond_wait(&run->cond, &run->lock);
    run->outstanding++;
    if (run->tail)
        run->tail->next = j;
    else
        run->head = j;
    run->tail = j;
    pthread_mutex_unlock(&run->lock);
    nlpd_pipeline_submit(run->p, &j->job);
}

static void add_line(struct pipe_job *j, const char *data, size_t len, int64_t line, double t_in,
                     const char *pre_error)
{
    size_t i = j->n++;
    if (i == 0)
        j->first_line = line;
    j->line_off[i] = j->raw.len;
    j->line_len[i] = len;
    nlpd_buf_append(&j->raw, data, len);
    j->items[i].line = line;
    j->items[i].t_in = t_in;
    j->pre_error[i] = pre_error ? strdup(pre_error) : NULL;
    if (j->raw.oom && !j->pre_error[i])
        j->pre_error[i] = strdup("out of memory");
}

int nlpd_pipe_run(const struct nlpd_config *cfg, struct nlpd_pipeline *p, int in_fd, int out_fd,
                  struct nlpd_pipe_stats *stats)
{
    struct pipe_run run = {.cfg = cfg, .p = p, .out_fd = out_fd};
    run.models = nlpd_pipeline_models(p, &run.nmodels);
    run.limit = (size_t)nlpd_pipeline_threads(p) * 4 + 4;
    pthread_mutex_init(&run.lock, NULL);
    pthread_cond_init(&run.cond, NULL);
    pthread_t writer;
    if (pthread_create(&writer, NULL, writer_main, &run) != 0) {
        nlpd_log(NLPD_LOG_ERR, "pipe", "cannot start the writer thread");
        return 1;
    }

    const size_t max_records = (size_t)cfg->batch.max_records;
    const double max_wait = (double)cfg->batch.max_wait_ms / 1e3;
    /* A JSON line may escape every byte of its text (\u00XX: 6 bytes) and carry other fields. */
    const size_t max_line = (size_t)cfg->input.max_text_bytes * 6 + (1 << 20);
    struct nlpd_buf in = {0};
    size_t start = 0;     /* first byte of the current line in `in` */
    int skipping = 0;     /* inside an over-long line: drop bytes up to its newline */
    int64_t line = 0;
    struct pipe_job *cur = NULL;
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
                cur = job_new(&run, max_records);
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
        job_free(cur);
    nlpd_buf_free(&in);

    pthread_mutex_lock(&run.lock);
    run.eof = 1;
    pthread_cond_broadcast(&run.cond);
    pthread_mutex_unlock(&run.lock);
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
    pthread_mutex_destroy(&run.lock);
    pthread_cond_destroy(&run.cond);
    if (run.write_failed || nlpd_pipeline_failed(p))
        rc = 1;
    return rc;
}
