/* The pipeline runner with test stages: per-record failures never fail a batch, retry then split,
 * fatal errors, `when` filtering, stage options, worker threads and ordering. */
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "config.h"
#include "harness.h"
#include "pipeline.h"

/* "tag": writes sentiment.label = its `label` option; fails records whose text contains "bad". */
struct tag_ctx {
    char *label;
    long long fail_inits;
};

static const struct nlpd_conf_entry tag_conf[] = {
    {"label", NLPD_CONF_STRING, "tagged", offsetof(struct tag_ctx, label), 0, NULL, 0, 0, "label to write"},
    {"fail_init", NLPD_CONF_INT, "0", offsetof(struct tag_ctx, fail_inits), 0, NULL, 0, 1, "make init fail"},
    {0},
};

static int tag_init(const struct nlpd_stage_instance *inst, void *ctx, struct nlpd_error *err)
{
    struct tag_ctx *t = ctx;
    (void)inst;
    return t->fail_inits ? nlpd_error_set(err, NLPD_EFORMAT, 0, "model is broken") : 0;
}

static enum nlpd_stage_status tag_process(const struct nlpd_stage_instance *inst, void *ctx, void *ts,
                                          struct nlpd_batch *b, struct nlpd_error *err)
{
    struct tag_ctx *t = ctx;
    (void)ts, (void)err;
    for (size_t i = 0; i < b->n; i++) {
        if (strstr(b->recs[i]->text, "bad")) {
            nlpd_stage_fail(inst, b->recs[i], "bad record");
            continue;
        }
        snprintf(b->recs[i]->sentiment.label, NLPD_LABEL_MAX, "%s", t->label);
        b->recs[i]->sentiment.set = 1;
        b->padded_tokens += 16; /* as if each record were padded to 16 tokens */
    }
    return NLPD_STAGE_OK;
}

static const struct nlpd_stage_plugin tag_stage = {.abi = NLPD_STAGE_ABI,
                                                   .name = "tag",
                                                   .description = "test",
                                                   .conf_map = tag_conf,
                                                   .ctx_size = sizeof(struct tag_ctx),
                                                   .init = tag_init,
                                                   .process = tag_process};

/* "picky": asks for a retry whenever a batch holds more than one record mentioning "oom" (so the
 * runner must split) or any "oom-always" (which must end as that record's error alone); "fatal" in a
 * text is fatal. Counts calls. */
static int picky_calls;
static pthread_mutex_t picky_lock = PTHREAD_MUTEX_INITIALIZER;

static enum nlpd_stage_status picky_process(const struct nlpd_stage_instance *inst, void *ctx, void *ts,
                                            struct nlpd_batch *b, struct nlpd_error *err)
{
    (void)inst, (void)ctx, (void)ts;
    pthread_mutex_lock(&picky_lock);
    picky_calls++;
    pthread_mutex_unlock(&picky_lock);
    size_t ooms = 0, always = 0;
    for (size_t i = 0; i < b->n; i++) {
        if (strstr(b->recs[i]->text, "fatal"))
            return nlpd_error_set(err, NLPD_EFATAL, 0, "device lost"), NLPD_STAGE_FATAL;
        ooms += strstr(b->recs[i]->text, "oom") != NULL;
        always += strstr(b->recs[i]->text, "oom-always") != NULL;
    }
    if (ooms > 1 || always) {
        nlpd_error_set(err, NLPD_EAGAIN, 1, "out of device memory");
        return NLPD_STAGE_RETRY;
    }
    for (size_t i = 0; i < b->n; i++) {
        b->recs[i]->lang.set = 1;
        strcpy(b->recs[i]->lang.code, strstr(b->recs[i]->text, "fr") ? "fr" : "en");
    }
    return NLPD_STAGE_OK;
}

static const struct nlpd_conf_entry no_conf[] = {{0}};
static const struct nlpd_stage_plugin picky_stage = {
    .abi = NLPD_STAGE_ABI, .name = "picky", .description = "test", .conf_map = no_conf, .process = picky_process};

static int noop_init(const struct nlpd_stage_instance *inst, void *ctx, struct nlpd_error *err)
{
    (void)inst, (void)ctx, (void)err;
    return 0;
}

static struct nlpd_pipeline *build(const char *conf, struct nlpd_config **cfg, struct nlpd_diag *d)
{
    *cfg = nlpd_config_load_string(conf, "(test)", d);
    if (!*cfg)
        return NULL;
    return nlpd_pipeline_create(*cfg, d);
}

static void records(struct nlpd_record *r, struct nlpd_record **ptrs, const char *const *texts, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        memset(&r[i], 0, sizeof r[i]);
        r[i].text = texts[i];
        r[i].text_len = strlen(texts[i]);
        ptrs[i] = &r[i];
    }
}

static void clear(struct nlpd_record *r, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(r[i].error);
}

static void per_record_errors_and_when(void)
{
    struct nlpd_diag d = {0};
    struct nlpd_config *cfg;
    struct nlpd_pipeline *p = build("pipeline = ( { stage = \"picky\"; },"
                                    " { stage = \"tag\"; label = \"french\"; when = \"lang.code == 'fr'\"; } );",
                                    &cfg, &d);
    CHECK(p != NULL);
    nlpd_diag_print(&d, stderr);
    const char *texts[] = {"hello", "bonjour fr", "bad fr", "fr again"};
    struct nlpd_record r[4], *ptrs[4];
    records(r, ptrs, texts, 4);
    struct nlpd_batch b = {.n = 4, .recs = ptrs};
    nlpd_pipeline_run_inline(p, &b);
    CHECK(r[0].lang.set && !r[0].sentiment.set && !r[0].error); /* when: not French */
    CHECK(r[1].sentiment.set && strcmp(r[1].sentiment.label, "french") == 0);
    CHECK(r[2].error && strcmp(r[2].error, "bad record") == 0 && strcmp(r[2].error_stage, "tag") == 0);
    CHECK(r[3].sentiment.set && !r[3].error); /* the failure of r[2] did not fail the batch */
    clear(r, 4);
    nlpd_pipeline_free(p);
    nlpd_config_free(cfg);
    nlpd_diag_free(&d);
}

static void retry_then_split(void)
{
    struct nlpd_diag d = {0};
    struct nlpd_config *cfg;
    struct nlpd_pipeline *p = build("pipeline = ( { stage = \"picky\"; } );", &cfg, &d);
    CHECK(p != NULL);
    const char *texts[] = {"a", "oom 1", "b", "oom 2", "c", "oom-always", "d", "e"};
    struct nlpd_record r[8], *ptrs[8];
    records(r, ptrs, texts, 8);
    struct nlpd_batch b = {.n = 8, .recs = ptrs};
    picky_calls = 0;
    nlpd_pipeline_run_inline(p, &b);
    for (int i = 0; i < 8; i++)
        if (i != 5)
            CHECK(r[i].lang.set && !r[i].error);
    CHECK(r[5].error && strstr(r[5].error, "after retries: out of device memory"));
    CHECK(picky_calls > 3);
    CHECK(!nlpd_pipeline_failed(p));
    clear(r, 8);
    nlpd_pipeline_free(p);
    nlpd_config_free(cfg);
}

static void fatal_marks_batch(void)
{
    struct nlpd_diag d = {0};
    struct nlpd_config *cfg;
    struct nlpd_pipeline *p = build("pipeline = ( { stage = \"picky\"; } );", &cfg, &d);
    const char *texts[] = {"a", "fatal", "b"};
    struct nlpd_record r[3], *ptrs[3];
    records(r, ptrs, texts, 3);
    struct nlpd_batch b = {.n = 3, .recs = ptrs};
    nlpd_pipeline_run_inline(p, &b);
    for (int i = 0; i < 3; i++)
        CHECK(r[i].error && strstr(r[i].error, "stage failed: device lost"));
    CHECK(nlpd_pipeline_failed(p));
    clear(r, 3);
    nlpd_pipeline_free(p);
    nlpd_config_free(cfg);
}

static void init_failure_and_names(void)
{
    struct nlpd_diag d = {0};
    struct nlpd_config *cfg;
    struct nlpd_pipeline *p = build("pipeline = ( { stage = \"tag\"; fail_init = 1; } );", &cfg, &d);
    CHECK(p == NULL);
    CHECK(d.n == 1 && strstr(d.msgs[0], "(test):1: pipeline[0] (tag): model is broken"));
    nlpd_diag_free(&d);
    nlpd_config_free(cfg);
    p = build("pipeline = ( { stage = \"tag\"; }, { stage = \"tag\"; } );", &cfg, &d);
    CHECK(p == NULL && d.n == 1 && strstr(d.msgs[0], "two stages are named \"tag\""));
    nlpd_diag_free(&d);
    nlpd_config_free(cfg);
    p = build("pipeline = ( { stage = \"tag\"; }, { stage = \"tag\"; name = \"tag2\"; } );", &cfg, &d);
    CHECK(p != NULL && d.n == 0);
    nlpd_pipeline_free(p);
    nlpd_config_free(cfg);
    p = build("pipeline = ( { stage = \"nope\"; } );", &cfg, &d);
    CHECK(p == NULL && d.n == 1 &&
          strstr(d.msgs[0], "unknown stage \"nope\" (this build has: langid, translate, sentiment"));
    CHECK(d.n == 1 && strstr(d.msgs[0], "tag, picky)")); /* registered stages are listed after the built-in ones */
    nlpd_diag_free(&d);
    nlpd_config_free(cfg);
}

#define NJOBS   200
#define PER_JOB 7

static void workers_keep_every_record(void)
{
    struct nlpd_diag d = {0};
    struct nlpd_config *cfg;
    struct nlpd_pipeline *p = build("pipeline = ( { stage = \"picky\"; }, { stage = \"tag\"; } );", &cfg, &d);
    struct nlpd_error err;
    CHECK(p && nlpd_pipeline_start(p, 3, &err) == 0);
    static struct nlpd_job jobs[NJOBS];
    static struct nlpd_record r[NJOBS][PER_JOB];
    static struct nlpd_record *ptrs[NJOBS][PER_JOB];
    const char *texts[PER_JOB] = {"x", "bad", "oom a", "oom b", "fr", "y", "z"};
    for (int j = 0; j < NJOBS; j++) {
        records(r[j], ptrs[j], texts, PER_JOB);
        memset(&jobs[j], 0, sizeof jobs[j]);
        jobs[j].batch.n = PER_JOB;
        jobs[j].batch.recs = ptrs[j];
        nlpd_pipeline_submit(p, &jobs[j]);
    }
    int ok = 0, failed = 0;
    for (int j = 0; j < NJOBS; j++) {
        nlpd_pipeline_wait(p, &jobs[j]);
        for (int i = 0; i < PER_JOB; i++) {
            if (r[j][i].error)
                failed++;
            else if (r[j][i].sentiment.set && r[j][i].lang.set)
                ok++;
        }
        clear(r[j], PER_JOB);
    }
    CHECK(ok == NJOBS * (PER_JOB - 1));
    CHECK(failed == NJOBS);
    CHECK(nlpd_pipeline_threads(p) == 3);
    nlpd_pipeline_free(p);
    nlpd_config_free(cfg);
}

/* A stage's nlpd_batch.padded_tokens lands in its nlpd_stage_batch_padded_tokens histogram, once per micro-batch;
 * a stage that reports nothing has no series. */
static void padded_tokens_histogram(void)
{
    struct nlpd_diag d = {0};
    struct nlpd_config *cfg;
    struct nlpd_pipeline *p = build("pipeline = ( { stage = \"picky\"; }, { stage = \"tag\"; } );", &cfg, &d);
    CHECK(p != NULL);
    const char *texts[] = {"one", "two", "bad three"};
    struct nlpd_record r[3], *ptrs[3];
    records(r, ptrs, texts, 3);
    struct nlpd_batch b = {.n = 3, .recs = ptrs};
    nlpd_pipeline_run_inline(p, &b);
    clear(r, 3);
    records(r, ptrs, texts, 2);
    b.n = 2;
    nlpd_pipeline_run_inline(p, &b);
    clear(r, 2);
    struct nlpd_buf out = {0};
    nlpd_pipeline_metrics(p, &out);
    CHECK_STR_CONTAINS(out.data, "# TYPE nlpd_stage_batch_padded_tokens histogram\n");
    CHECK_STR_CONTAINS(out.data, "nlpd_stage_batch_padded_tokens_bucket{stage=\"tag\",le=\"32\"} 2\n");
    CHECK_STR_CONTAINS(out.data, "nlpd_stage_batch_padded_tokens_sum{stage=\"tag\"} 64.000000\n");
    CHECK_STR_CONTAINS(out.data, "nlpd_stage_batch_padded_tokens_count{stage=\"tag\"} 2\n");
    CHECK(out.data && !strstr(out.data, "nlpd_stage_batch_padded_tokens_count{stage=\"picky\"}"));
    nlpd_buf_free(&out);
    nlpd_pipeline_free(p);
    nlpd_config_free(cfg);
    nlpd_diag_free(&d);
}

/* "gate": holds every batch until the test opens the gate; counts the batches that entered. */
static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static int gate_open, gate_entered, space_calls;

static enum nlpd_stage_status gate_process(const struct nlpd_stage_instance *inst, void *ctx, void *ts,
                                           struct nlpd_batch *b, struct nlpd_error *err)
{
    (void)inst, (void)ctx, (void)ts, (void)b, (void)err;
    pthread_mutex_lock(&gate_lock);
    gate_entered++;
    pthread_cond_broadcast(&gate_cond);
    while (!gate_open)
        pthread_cond_wait(&gate_cond, &gate_lock);
    pthread_mutex_unlock(&gate_lock);
    return NLPD_STAGE_OK;
}

static const struct nlpd_stage_plugin gate_stage = {.abi = NLPD_STAGE_ABI,
                                                    .name = "gate",
                                                    .description = "test",
                                                    .conf_map = no_conf,
                                                    .init = noop_init,
                                                    .process = gate_process};

static void count_space(void *user)
{
    pthread_mutex_lock(&gate_lock);
    space_calls++;
    pthread_mutex_unlock(&gate_lock);
    CHECK(user == &space_calls);
}

/* Issue 13 item 6: the event loop submits with nlpd_pipeline_try_submit(), which refuses a full queue at once
 * instead of waiting for a stage (here one that never finishes until told), and a worker taking a job from the
 * full queue calls the space callback, which is how the loop learns it can submit again. */
static void try_submit_never_waits(void)
{
    struct nlpd_diag d = {0};
    struct nlpd_config *cfg;
    CHECK(nlpd_stage_register(&gate_stage) == 0); /* here: init_failure_and_names lists the registered stages */
    struct nlpd_pipeline *p = build("pipeline = ( { stage = \"gate\"; } );", &cfg, &d);
    struct nlpd_error err;
    CHECK(p && nlpd_pipeline_start(p, 1, &err) == 0);
    nlpd_pipeline_on_space(p, count_space, &space_calls);
    static struct nlpd_job jobs[4];
    static struct nlpd_record r[4], *ptrs[4];
    const char *texts[] = {"a", "b", "c", "d"};
    records(r, ptrs, texts, 4);
    for (int j = 0; j < 4; j++) {
        memset(&jobs[j], 0, sizeof jobs[j]);
        jobs[j].batch.n = 1;
        jobs[j].batch.recs = &ptrs[j];
    }
    CHECK(nlpd_pipeline_try_submit(p, &jobs[0]) == 0);
    pthread_mutex_lock(&gate_lock);
    while (gate_entered < 1) /* the worker holds job 0 */
        pthread_cond_wait(&gate_cond, &gate_lock);
    pthread_mutex_unlock(&gate_lock);
    size_t queued, cap;
    CHECK(nlpd_pipeline_try_submit(p, &jobs[1]) == 0);
    CHECK(nlpd_pipeline_try_submit(p, &jobs[2]) == 0);
    nlpd_pipeline_queue(p, &queued, &cap);
    CHECK(queued == 2 && cap == 2);                              /* 2 x threads */
    CHECK(nlpd_pipeline_try_submit(p, &jobs[3]) == NLPD_EAGAIN); /* full: refused, not waited for */
    CHECK(space_calls == 0);
    pthread_mutex_lock(&gate_lock);
    gate_open = 1;
    pthread_cond_broadcast(&gate_cond);
    pthread_mutex_unlock(&gate_lock);
    nlpd_pipeline_wait(p, &jobs[1]); /* taking job 1 from the full queue made room: one callback */
    pthread_mutex_lock(&gate_lock);
    CHECK(space_calls == 1);
    pthread_mutex_unlock(&gate_lock);
    nlpd_pipeline_wait(p, &jobs[2]);
    CHECK(nlpd_pipeline_try_submit(p, &jobs[3]) == 0);
    nlpd_pipeline_wait(p, &jobs[3]);
    nlpd_pipeline_wait(p, &jobs[0]);
    nlpd_pipeline_queue(p, &queued, &cap);
    CHECK(queued == 0 && gate_entered == 4);
    clear(r, 4);
    nlpd_pipeline_free(p);
    nlpd_config_free(cfg);
}

/* A stage name is the user's text: in a metric label it is escaped, so /metrics stays parseable. */
static void stage_name_label_escaped(void)
{
    struct nlpd_diag d = {0};
    struct nlpd_config *cfg;
    struct nlpd_pipeline *p = build("pipeline = ( { stage = \"tag\"; name = \"a\\\"} 1\\nb\\\\\"; } );", &cfg, &d);
    CHECK(p != NULL);
    if (p) {
        const char *texts[] = {"one"};
        struct nlpd_record r[1], *ptrs[1];
        records(r, ptrs, texts, 1);
        struct nlpd_batch b = {.n = 1, .recs = ptrs};
        nlpd_pipeline_run_inline(p, &b);
        clear(r, 1);
        struct nlpd_buf out = {0};
        nlpd_pipeline_metrics(p, &out);
        CHECK_STR_CONTAINS(out.data, "nlpd_stage_batch_seconds_count{stage=\"a\\\"} 1\\nb\\\\\"} 1\n");
        CHECK_STR_CONTAINS(out.data, "nlpd_stage_batch_padded_tokens_count{stage=\"a\\\"} 1\\nb\\\\\"} 1\n");
        nlpd_buf_free(&out);
    }
    nlpd_pipeline_free(p);
    nlpd_config_free(cfg);
    nlpd_diag_free(&d);
}

/* "inst": a stage with a token budget that keeps what the framework handed it (issue 15 item 3). */
struct inst_seen {
    const struct nlpd_stage_instance *at_init, *at_process;
    char name[32], type[32];
    size_t index, max_tokens;
};
static struct inst_seen inst_seen;

static int inst_init(const struct nlpd_stage_instance *inst, void *ctx, struct nlpd_error *err)
{
    (void)ctx, (void)err;
    inst_seen.at_init = inst;
    snprintf(inst_seen.name, sizeof inst_seen.name, "%s", inst->name);
    snprintf(inst_seen.type, sizeof inst_seen.type, "%s", inst->type);
    inst_seen.index = inst->index;
    inst_seen.max_tokens = inst->max_tokens;
    nlpd_stage_log(inst, NLPD_LOG_WARNING, "loaded as %s #%zu", inst->type, inst->index);
    return 0;
}

static enum nlpd_stage_status inst_process(const struct nlpd_stage_instance *inst, void *ctx, void *ts,
                                           struct nlpd_batch *b, struct nlpd_error *err)
{
    (void)ctx, (void)ts, (void)err;
    inst_seen.at_process = inst;
    for (size_t i = 0; i < b->n; i++)
        if (strstr(b->recs[i]->text, "bad"))
            nlpd_stage_fail(inst, b->recs[i], "bad at %zu", inst->index);
    return NLPD_STAGE_OK;
}

static const struct nlpd_stage_plugin inst_stage = {
    .abi = NLPD_STAGE_ABI,
    .name = "inst",
    .description = "test",
    .conf_map = no_conf,
    .init = inst_init,
    .process = inst_process,
    .token_budget = 1,
};

/* The instance handle: init and process get the same one, with the configured name, the type and the index;
 * a record failure is tagged with the configured name (a stage spelling "inst" would tag it "inst"). */
static void instance_handle(void)
{
    struct nlpd_diag d = {0};
    struct nlpd_config *cfg;
    CHECK(nlpd_stage_register(&inst_stage) == 0); /* after init_failure_and_names, which lists the stages */
    memset(&inst_seen, 0, sizeof inst_seen);
    char path[] = "/tmp/nlpd-test-inst-XXXXXX"; /* stderr, for the stage's log line */
    int fd = mkstemp(path), saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    struct nlpd_pipeline *p =
        build("pipeline = ( { stage = \"picky\"; }, { stage = \"inst\"; name = \"my-inst\"; } );", &cfg, &d);
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    char logged[4096];
    ssize_t got = pread(fd, logged, sizeof logged - 1, 0);
    logged[got > 0 ? got : 0] = '\0';
    close(fd);
    unlink(path);
    CHECK_STR_CONTAINS(logged, "[my-inst]"); /* tagged by the framework with the configured name */
    CHECK_STR_CONTAINS(logged, "loaded as inst #1");
    CHECK(p != NULL && d.n == 0);
    if (p) {
        CHECK(strcmp(inst_seen.name, "my-inst") == 0 && strcmp(inst_seen.type, "inst") == 0);
        CHECK(inst_seen.index == 1);
        const char *texts[] = {"good", "bad one"};
        struct nlpd_record r[2], *ptrs[2];
        records(r, ptrs, texts, 2);
        struct nlpd_batch b = {.n = 2, .recs = ptrs};
        nlpd_pipeline_run_inline(p, &b);
        CHECK(inst_seen.at_process && inst_seen.at_process == inst_seen.at_init);
        CHECK(!r[0].error);
        CHECK(r[1].error && strcmp(r[1].error, "bad at 1") == 0);
        CHECK(r[1].error_stage && strcmp(r[1].error_stage, "my-inst") == 0);
        clear(r, 2);
    }
    nlpd_pipeline_free(p);
    nlpd_config_free(cfg);
    nlpd_diag_free(&d);
}

/* The token budget is the framework's: a stage's max_tokens, else batch.max_tokens, one bound for both; a
 * stage without a budget has no max_tokens key. */
static void token_budget(void)
{
    static const struct {
        const char *conf;
        size_t max_tokens; /* 0: the config is refused */
        const char *why;
    } cases[] = {
        {"pipeline = ( { stage = \"inst\"; } );", 8192, NULL}, /* batch.max_tokens's default */
        {"batch: { max_tokens = 1000; }; pipeline = ( { stage = \"inst\"; } );", 1000, NULL},
        {"batch: { max_tokens = 1000; }; pipeline = ( { stage = \"inst\"; max_tokens = 500; } );", 500, NULL},
        {"pipeline = ( { stage = \"inst\"; max_tokens = 4; } );", 0, "pipeline[0] (inst).max_tokens"},
        {"batch: { max_tokens = 4; }; pipeline = ( { stage = \"inst\"; } );", 0, "batch.max_tokens"},
        {"pipeline = ( { stage = \"tag\"; max_tokens = 500; } );", 0, "unknown key 'max_tokens'"},
        {"pipeline = ( { stage = \"inst\"; bogus = 1; } );", 0, "unknown key 'bogus'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct nlpd_diag d = {0};
        struct nlpd_config *cfg = NULL;
        memset(&inst_seen, 0, sizeof inst_seen);
        struct nlpd_pipeline *p = build(cases[i].conf, &cfg, &d);
        if (cases[i].max_tokens) {
            CHECK(p != NULL && inst_seen.max_tokens == cases[i].max_tokens);
        } else {
            CHECK(p == NULL);
            CHECK(d.n == 1); /* one message, not one from the stage's table and one from the framework's */
            CHECK_STR_CONTAINS(d.n ? d.msgs[0] : NULL, cases[i].why);
        }
        nlpd_pipeline_free(p);
        nlpd_config_free(cfg);
        nlpd_diag_free(&d);
    }
}

int main(void)
{
    static struct nlpd_stage_plugin picky;
    picky = picky_stage;
    picky.init = noop_init;
    CHECK(nlpd_stage_register(&tag_stage) == 0);
    CHECK(nlpd_stage_register(&picky) == 0);
    CHECK(nlpd_stage_register(&tag_stage) < 0); /* names are unique */
    RUN(per_record_errors_and_when);
    RUN(retry_then_split);
    RUN(fatal_marks_batch);
    RUN(init_failure_and_names);
    RUN(workers_keep_every_record);
    RUN(padded_tokens_histogram);
    RUN(try_submit_never_waits);
    RUN(stage_name_label_escaped);
    RUN(instance_handle);
    RUN(token_budget);
    return TEST_REPORT();
}
