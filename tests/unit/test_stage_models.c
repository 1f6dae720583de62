/* The framework's per-language model choice (nlpd_stage_models_*): what `model` / `models` load, which model a
 * record gets, and how a batch is run model by model. */
#include <stdlib.h>

#include "harness.h"
#include "nlpd_stage.h"

struct fake {
    char path[32];
    int freed;
};

static int loads, unloads;

static int fake_load(void *ctx, void *slot, const char *path, struct nlpd_error *err)
{
    struct fake *f = slot;
    (void)ctx;
    loads++;
    snprintf(f->path, sizeof f->path, "%s", path);
    return strcmp(path, "broken") == 0 ? nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: not a model", path) : 0;
}

static void fake_unload(void *ctx, void *slot)
{
    (void)ctx;
    ((struct fake *)slot)->freed++;
    unloads++;
}

static struct nlpd_conf_map map_of(char **pairs, size_t n, char **from, char **to)
{
    for (size_t i = 0; i < n; i++) {
        from[i] = pairs[2 * i];
        to[i] = pairs[2 * i + 1];
    }
    return (struct nlpd_conf_map){n, from, to};
}

static struct nlpd_record rec(const char *lang)
{
    struct nlpd_record r = {.text = "t", .text_len = 1};
    if (lang) {
        r.lang.set = 1;
        snprintf(r.lang.code, sizeof r.lang.code, "%s", lang);
    }
    return r;
}

static void model_or_models(void)
{
    struct nlpd_stage_models ms;
    struct nlpd_error err = {0};
    struct nlpd_conf_map none = {0};
    char *pairs[] = {"en", "a"}, *from[1], *to[1];
    struct nlpd_conf_map one = map_of(pairs, 1, from, to);
    CHECK(nlpd_stage_models_load(&ms, NULL, &none, sizeof(struct fake), fake_load, NULL, &err) == NLPD_EINVAL);
    CHECK_STR_CONTAINS(err.message, "give either model or models");
    nlpd_stage_models_free(&ms, fake_unload, NULL);
    CHECK(nlpd_stage_models_load(&ms, "m", &one, sizeof(struct fake), fake_load, NULL, &err) == NLPD_EINVAL);
    nlpd_stage_models_free(&ms, fake_unload, NULL);

    loads = unloads = 0;
    CHECK(nlpd_stage_models_load(&ms, "single", &none, sizeof(struct fake), fake_load, NULL, &err) == 0);
    CHECK(ms.n == 1 && strcmp(ms.lang[0], "default") == 0);
    CHECK(strcmp(((struct fake *)nlpd_stage_model(&ms, 0))->path, "single") == 0);
    struct nlpd_record de = rec("de"), unset = rec(NULL);
    CHECK(nlpd_stage_models_pick(&ms, &de) == 0 && nlpd_stage_models_pick(&ms, &unset) == 0);
    nlpd_stage_models_free(&ms, fake_unload, NULL);
    CHECK(loads == 1 && unloads == 1);
}

static void pick_by_language(void)
{
    struct nlpd_stage_models ms;
    struct nlpd_error err = {0};
    char *pairs[] = {"en", "a", "default", "b", "fr", "c"}, *from[3], *to[3];
    struct nlpd_conf_map m = map_of(pairs, 3, from, to);
    CHECK(nlpd_stage_models_load(&ms, NULL, &m, sizeof(struct fake), fake_load, NULL, &err) == 0);
    CHECK(ms.n == 3 && strcmp(((struct fake *)nlpd_stage_model(&ms, 2))->path, "c") == 0);
    struct nlpd_record en = rec("en"), fr = rec("fr"), de = rec("de"), unset = rec(NULL);
    CHECK(nlpd_stage_models_pick(&ms, &en) == 0);
    CHECK(nlpd_stage_models_pick(&ms, &fr) == 2);
    CHECK(nlpd_stage_models_pick(&ms, &de) == 1);    /* the default */
    CHECK(nlpd_stage_models_pick(&ms, &unset) == 1); /* no lang.code: the default */
    nlpd_stage_models_free(&ms, fake_unload, NULL);

    char *pairs2[] = {"en", "a"}, *from2[1], *to2[1];
    struct nlpd_conf_map m2 = map_of(pairs2, 1, from2, to2);
    CHECK(nlpd_stage_models_load(&ms, NULL, &m2, sizeof(struct fake), fake_load, NULL, &err) == 0);
    CHECK(nlpd_stage_models_pick(&ms, &de) == -1 && nlpd_stage_models_pick(&ms, &unset) == -1);
    nlpd_stage_models_free(&ms, fake_unload, NULL);
}

/* A model that fails to load fails init, and the ones loaded before it (and it) are unloaded. */
static void load_failure_unloads(void)
{
    struct nlpd_stage_models ms;
    struct nlpd_error err = {0};
    char *pairs[] = {"en", "a", "fr", "broken", "de", "never"}, *from[3], *to[3];
    struct nlpd_conf_map m = map_of(pairs, 3, from, to);
    loads = unloads = 0;
    CHECK(nlpd_stage_models_load(&ms, NULL, &m, sizeof(struct fake), fake_load, NULL, &err) == NLPD_EFORMAT);
    CHECK_STR_CONTAINS(err.message, "broken: not a model");
    nlpd_stage_models_free(&ms, fake_unload, NULL);
    CHECK(loads == 2 && unloads == 2);
}

struct call {
    size_t model, n;
    struct nlpd_record *first, *last;
};
static struct call calls[8];
static size_t ncalls;

static enum nlpd_stage_status record_run(const struct nlpd_stage_instance *inst, void *ctx, void *tstate, size_t model,
                                         struct nlpd_record **recs, size_t n, struct nlpd_batch *batch,
                                         struct nlpd_error *err)
{
    (void)inst, (void)tstate, (void)err;
    if (ncalls < 8)
        calls[ncalls++] = (struct call){model, n, recs[0], recs[n - 1]};
    batch->padded_tokens += n;
    return ctx && model == *(size_t *)ctx ? NLPD_STAGE_RETRY : NLPD_STAGE_OK;
}

/* One call per model with records, in model order, records in batch order; skip_lang records are left alone;
 * the first status that is not OK ends the batch. */
static void run_model_by_model(void)
{
    struct nlpd_stage_models ms;
    struct nlpd_error err = {0};
    char *pairs[] = {"en", "a", "default", "b", "fr", "c"}, *from[3], *to[3];
    struct nlpd_conf_map m = map_of(pairs, 3, from, to);
    CHECK(nlpd_stage_models_load(&ms, NULL, &m, sizeof(struct fake), fake_load, NULL, &err) == 0);
    struct nlpd_record r[6] = {rec("de"), rec("en"), rec("xx"), rec("en"), rec("de"), rec("es")};
    struct nlpd_record *ptrs[6];
    for (int i = 0; i < 6; i++)
        ptrs[i] = &r[i];
    struct nlpd_batch b = {.n = 6, .recs = ptrs};
    struct nlpd_stage_instance inst = {.name = "s", .type = "s"};
    ncalls = 0;
    CHECK(nlpd_stage_models_run(&ms, &inst, &b, "xx", record_run, NULL, NULL, &err) == NLPD_STAGE_OK);
    CHECK(ncalls == 2); /* fr has no records: not called */
    CHECK(calls[0].model == 0 && calls[0].n == 2 && calls[0].first == &r[1] && calls[0].last == &r[3]);
    CHECK(calls[1].model == 1 && calls[1].n == 3 && calls[1].first == &r[0] && calls[1].last == &r[5]);
    CHECK(b.padded_tokens == 5); /* xx left alone */
    ncalls = 0;
    size_t stop_at = 0;
    CHECK(nlpd_stage_models_run(&ms, &inst, &b, NULL, record_run, &stop_at, NULL, &err) == NLPD_STAGE_RETRY);
    CHECK(ncalls == 1);
    nlpd_stage_models_free(&ms, fake_unload, NULL);
}

int main(void)
{
    RUN(model_or_models);
    RUN(pick_by_language);
    RUN(load_failure_unloads);
    RUN(run_model_by_model);
    return TEST_REPORT();
}
