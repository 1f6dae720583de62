/* Per-language model choice for model stages (see nlpd_stage.h): loading `model` or `models`, picking a record's
 * model by lang.code, and running a batch model by model. */
#include <stdlib.h>
#include <string.h>

#include "nlpd_stage.h"

int nlpd_stage_models_load(struct nlpd_stage_models *ms, const char *model, const struct nlpd_conf_map *models,
                           size_t slot_size, nlpd_stage_model_load_fn load, void *ctx, struct nlpd_error *err)
{
    memset(ms, 0, sizeof *ms);
    if (!model == !models->n)
        return nlpd_error_set(err, NLPD_EINVAL, 0, "give either model or models");
    size_t n = model ? 1 : models->n;
    ms->slot_size = slot_size;
    ms->lang = calloc(n, sizeof *ms->lang);
    ms->slots = calloc(n, slot_size ? slot_size : 1);
    if (!ms->lang || !ms->slots)
        return nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
    ms->n = n;
    for (size_t i = 0; i < n; i++)
        ms->lang[i] = model ? "default" : models->from[i];
    for (size_t i = 0; i < n; i++) {
        ms->loaded = i + 1;
        int rc = load(ctx, nlpd_stage_model(ms, i), model ? model : models->to[i], err);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int nlpd_stage_models_pick(const struct nlpd_stage_models *ms, const struct nlpd_record *rec)
{
    int dflt = -1;
    for (size_t i = 0; i < ms->n; i++) {
        if (rec->lang.set && strcmp(ms->lang[i], rec->lang.code) == 0)
            return (int)i;
        if (strcmp(ms->lang[i], "default") == 0)
            dflt = (int)i;
    }
    return dflt;
}

enum nlpd_stage_status nlpd_stage_models_run(const struct nlpd_stage_models *ms, const struct nlpd_stage_instance *inst,
                                             struct nlpd_batch *batch, const char *skip_lang,
                                             nlpd_stage_model_run_fn run, void *ctx, void *tstate,
                                             struct nlpd_error *err)
{
    if (!batch->n || !ms->n)
        return NLPD_STAGE_OK;
    /* one pick per record, then one pass per model: records keep their batch order within a model */
    int *pick = malloc(batch->n * sizeof *pick);
    struct nlpd_record **group = malloc(batch->n * sizeof *group);
    enum nlpd_stage_status st = NLPD_STAGE_OK;
    if (!pick || !group) {
        st = NLPD_STAGE_RETRY;
        goto done;
    }
    for (size_t i = 0; i < batch->n; i++) {
        const struct nlpd_record *r = batch->recs[i];
        pick[i] = skip_lang && r->lang.set && strcmp(r->lang.code, skip_lang) == 0 ? -1 : nlpd_stage_models_pick(ms, r);
    }
    for (size_t mi = 0; mi < ms->n && st == NLPD_STAGE_OK; mi++) {
        size_t n = 0;
        for (size_t i = 0; i < batch->n; i++)
            if (pick[i] == (int)mi)
                group[n++] = batch->recs[i];
        if (n)
            st = run(inst, ctx, tstate, mi, group, n, batch, err);
    }
done:
    free(pick);
    free(group);
    return st;
}

void nlpd_stage_models_free(struct nlpd_stage_models *ms, void (*unload)(void *ctx, void *slot), void *ctx)
{
    for (size_t i = 0; unload && ms->slots && i < ms->loaded; i++)
        unload(ctx, nlpd_stage_model(ms, i));
    free(ms->lang);
    free(ms->slots);
    memset(ms, 0, sizeof *ms);
}
