/* The batcher shared by pipe mode and the Kafka daemon: decoding and encoding on the workers, lines mode's output
 * order and error lines, record mode's dead flags, batches kept for a full queue, abandoned batches, and the end
 * of the completion queue. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "batcher.h"
#include "config.h"
#include "harness.h"
#include "pipeline.h"

/* "gate": holds every batch until the gate opens; fails records whose text contains "bad"; tags the others. */
static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static int gate_open = 1, gate_entered;

static enum nlpd_stage_status gate_process(const struct nlpd_stage_instance *inst, void *ctx, void *ts,
                                           struct nlpd_batch *b, struct nlpd_error *err)
{
    (void)ctx, (void)ts, (void)err;
    pthread_mutex_lock(&gate_lock);
    gate_entered++;
    pthread_cond_broadcast(&gate_cond);
    while (!gate_open)
        pthread_cond_wait(&gate_cond, &gate_lock);
    pthread_mutex_unlock(&gate_lock);
    for (size_t i = 0; i < b->n; i++) {
        if (strstr(b->recs[i]->text, "bad")) {
            nlpd_stage_fail(inst, b->recs[i], "bad record");
            continue;
        }
        snprintf(b->recs[i]->sentiment.label, NLPD_LABEL_MAX, "ok");
        b->recs[i]->sentiment.set = 1;
    }
    return NLPD_STAGE_OK;
}

static int noop_init(const struct nlpd_stage_instance *inst, void *ctx, struct nlpd_error *err)
{
    (void)inst, (void)ctx, (void)err;
    return 0;
}

static const struct nlpd_conf_entry no_conf[] = {{0}};
static const struct nlpd_stage_plugin gate_stage = {.abi = NLPD_STAGE_ABI,
                                                    .name = "gate",
                                                    .description = "test",
                                                    .conf_map = no_conf,
                                                    .init = noop_init,
                                                    .process = gate_process};

static void set_gate(int open)
{
    pthread_mutex_lock(&gate_lock);
    gate_open = open;
    gate_entered = 0;
    pthread_cond_broadcast(&gate_cond);
    pthread_mutex_unlock(&gate_lock);
}

static struct nlpd_pipeline *start(int threads, struct nlpd_config **cfg)
{
    struct nlpd_diag d = {0};
    *cfg = nlpd_config_load_string("pipeline = ( { stage = \"gate\"; } );", "(test)", &d);
    struct nlpd_pipeline *p = *cfg ? nlpd_pipeline_create(*cfg, &d) : NULL;
    struct nlpd_error err;
    nlpd_diag_print(&d, stderr);
    nlpd_diag_free(&d);
    if (p && nlpd_pipeline_start(p, threads, &err) < 0) {
        nlpd_pipeline_free(p);
        p = NULL;
    }
    return p;
}

static size_t count_lines(const struct nlpd_buf *b, const char *needle)
{
    size_t n = 0;
    for (const char *s = b->data, *e; s && (e = strchr(s, '\n')); s = e + 1)
        if (!needle || memmem(s, (size_t)(e - s), needle, strlen(needle)))
            n++;
    return n;
}

#define NBATCH 60
#define PER    5

/* Pipe mode: batches come back in submission order however the workers finish them; a bad line, a failed record
 * and a reason found by the reader each give an error line; the queue ends once closed and drained. */
static void lines_mode_keeps_order_and_error_lines(void)
{
    set_gate(1);
    struct nlpd_config *cfg;
    struct nlpd_pipeline *p = start(3, &cfg);
    CHECK(p != NULL);
    if (!p)
        return;
    struct nlpd_codec codec = {.input = &cfg->input};
    codec.models = nlpd_pipeline_models(p, &codec.nmodels);
    struct nlpd_batcher_conf bc = {.lines = 1};
    struct nlpd_batcher *bt = nlpd_batcher_new(&bc);
    const char *lines[PER] = {"{\"text\":\"fine\"}", "{\"text\":", "{\"text\":\"bad one\"}", "{\"text\":\"x\"}",
                              "{\"text\":\"y\"}"};
    for (intptr_t j = 0; j < NBATCH; j++) {
        struct nlpd_mbatch *b = nlpd_batcher_batch_new(bt, PER);
        for (int i = 0; i < PER; i++) {
            struct nlpd_bslot *s = nlpd_batcher_add(b, NULL, lines[i], strlen(lines[i]), 1);
            s->item->line = j * PER + i + 1;
            if (i == 3)
                s->pre_error = strdup("line is too long");
        }
        b->user = (void *)j;
        nlpd_batcher_submit(bt, b, p, &codec, 1);
    }
    nlpd_batcher_close(bt);
    intptr_t next = 0;
    size_t errors = 0, ok = 0;
    struct nlpd_mbatch *b;
    while ((b = nlpd_batcher_wait_done(bt))) {
        while (b) {
            struct nlpd_mbatch *n = b->next;
            CHECK((intptr_t)b->user == next);
            next++;
            CHECK(count_lines(&b->out, NULL) == PER);
            errors += count_lines(&b->out, "\"error\"");
            ok += count_lines(&b->out, "\"sentiment\":{");
            CHECK(b->slots[1].dead && b->slots[2].dead && b->slots[3].dead && !b->slots[0].dead);
            nlpd_batcher_batch_free(b);
            b = n;
        }
    }
    CHECK(next == NBATCH);
    CHECK(errors == 3 * NBATCH);
    CHECK(ok == 2 * NBATCH);
    CHECK(nlpd_batcher_outstanding(bt) == 0);
    nlpd_batcher_free(bt);
    nlpd_pipeline_free(p);
    nlpd_config_free(cfg);
}

struct rec {
    struct nlpd_item item;
    struct nlpd_buf out;
};

static struct nlpd_mbatch *kafka_batch(struct nlpd_batcher *bt, struct rec *r, const char *const *values, size_t n)
{
    struct nlpd_mbatch *b = nlpd_batcher_batch_new(bt, n);
    for (size_t i = 0; i < n; i++) {
        memset(&r[i], 0, sizeof r[i]);
        struct nlpd_bslot *s = nlpd_batcher_add(b, &r[i].item, values[i], strlen(values[i]), 0);
        s->out = &r[i].out;
        s->user = &r[i];
    }
    return b;
}

static void notify_count(void *user)
{
    __atomic_add_fetch((int *)user, 1, __ATOMIC_SEQ_CST);
}

/* Kafka mode: a full queue keeps batches instead of waiting (in order, handed on by nlpd_batcher_push()); every
 * completion calls notify; a failed or undecodable record is dead with an empty output, the others encoded, and
 * their decoded input is already freed; batches started after abandon fail every record. */
static void record_mode_holds_marks_dead_and_abandons(void)
{
    set_gate(0);
    struct nlpd_config *cfg;
    struct nlpd_pipeline *p = start(1, &cfg);
    CHECK(p != NULL);
    if (!p)
        return;
    struct nlpd_codec codec = {.input = &cfg->input};
    codec.models = nlpd_pipeline_models(p, &codec.nmodels);
    int abandon = 0, notified = 0;
    struct nlpd_batcher_conf bc = {.abandon = &abandon, .notify = notify_count, .user = &notified};
    struct nlpd_batcher *bt = nlpd_batcher_new(&bc);
    const char *values[3] = {"{\"text\":\"fine\"}", "not json", "{\"text\":\"bad\"}"};
    static struct rec r[5][3];
    for (int j = 0; j < 4; j++) /* one taken by the worker (held at the gate), two queued, one kept */
        nlpd_batcher_submit(bt, kafka_batch(bt, r[j], values, 3), p, &codec, 0);
    CHECK(nlpd_batcher_held(bt) >= 1);
    CHECK(nlpd_batcher_outstanding(bt) == 4);
    set_gate(1);
    size_t got = 0;
    for (int spin = 0; got < 4 && spin < 5000; spin++) {
        nlpd_batcher_push(bt);
        for (struct nlpd_mbatch *b = nlpd_batcher_take_done(bt), *n; b; b = n, got++) {
            n = b->next;
            CHECK(!b->slots[0].dead && b->slots[1].dead && b->slots[2].dead);
            struct rec *x = b->slots[0].user;
            CHECK_STR_CONTAINS(x->out.data, "\"sentiment\":{\"label\":\"ok\"");
            CHECK(x->item.json == NULL); /* dropped on the worker */
            x = b->slots[1].user;
            CHECK(x->out.len == 0 && x->item.rec.error && strcmp(x->item.rec.error_stage, "input") == 0);
            x = b->slots[2].user;
            CHECK(x->out.len == 0 && x->item.rec.error && strcmp(x->item.rec.error_stage, "gate") == 0);
            nlpd_batcher_batch_free(b);
        }
        usleep(1000);
    }
    CHECK(got == 4);
    CHECK(__atomic_load_n(&notified, __ATOMIC_SEQ_CST) == 4);
    __atomic_store_n(&abandon, 1, __ATOMIC_SEQ_CST);
    nlpd_batcher_submit(bt, kafka_batch(bt, r[4], values, 3), p, &codec, 0);
    struct nlpd_mbatch *b = NULL;
    for (int spin = 0; !b && spin < 5000; spin++, usleep(1000))
        b = nlpd_batcher_take_done(bt);
    CHECK(b != NULL);
    for (size_t i = 0; b && i < b->n; i++) {
        CHECK(b->slots[i].dead);
        CHECK_STR_CONTAINS(b->slots[i].item->rec.error, "abandoned");
    }
    nlpd_batcher_batch_free(b);
    for (int j = 0; j < 5; j++)
        for (int i = 0; i < 3; i++) {
            nlpd_item_clear(&r[j][i].item);
            nlpd_buf_free(&r[j][i].out);
        }
    nlpd_batcher_free(bt);
    nlpd_pipeline_free(p);
    nlpd_config_free(cfg);
}

/* nlpd_buf_printf formats once into the room there is, and again after growing when the text is longer. */
static void buf_printf_grows(void)
{
    struct nlpd_buf b = {0};
    nlpd_buf_printf(&b, "%d", 42);
    CHECK(b.len == 2 && strcmp(b.data, "42") == 0);
    char big[1000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    nlpd_buf_printf(&b, "[%s]", big);
    CHECK(b.len == 2 + 1001 && b.data[2] == '[' && b.data[b.len - 1] == ']' && b.data[b.len] == '\0');
    nlpd_buf_printf(&b, "%s", "");
    CHECK(b.len == 1003);
    nlpd_buf_free(&b);
}

int main(void)
{
    nlpd_stage_register(&gate_stage);
    RUN(lines_mode_keeps_order_and_error_lines);
    RUN(record_mode_holds_marks_dead_and_abandons);
    RUN(buf_printf_grows);
    return TEST_REPORT();
}
