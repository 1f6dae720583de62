/* Multilingual models for the translate stage (see translate_m2m.h). */
#include "translate_m2m.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lang_codes.h"
#include "m2m100.h"
#include "m2m100_tok.h"

struct nlpd_tml {
    struct nlpd_m2m *mt;
    struct nlpd_m2m_tok *tok;
    const struct nlpd_conf_map *lang_map; /* the stage's, lives as long as the stage */
    int32_t target;
};

struct nlpd_tml_ws {
    struct nlpd_m2m_ws *ws;
};

int nlpd_tml_is_multilingual(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_t *j = json_load_file(path, 0, NULL);
    json_t *mt = json_object_get(j, "model_type");
    int yes = json_is_string(mt) && !strcmp(json_string_value(mt), "m2m_100");
    json_decref(j);
    return yes;
}

/* lang.code -> the model's code: lang_map, the code itself, the built-in table. */
static const char *resolve(const struct nlpd_tml *m, const char *code, int32_t *id)
{
    for (size_t i = 0; m->lang_map && i < m->lang_map->n; i++)
        if (!strcmp(m->lang_map->from[i], code)) {
            *id = nlpd_m2m_tok_lang_id(m->tok, m->lang_map->to[i]);
            return m->lang_map->to[i];
        }
    if ((*id = nlpd_m2m_tok_lang_id(m->tok, code)) >= 0)
        return code;
    const char *c = nlpd_m2m_tok_kind(m->tok) == NLPD_M2M_TOK_NLLB ? nlpd_lang_flores200(code) : nlpd_lang_m2m100(code);
    *id = c ? nlpd_m2m_tok_lang_id(m->tok, c) : -1;
    return c ? c : code;
}

int32_t nlpd_tml_target(const struct nlpd_tml *m)
{
    return m->target;
}

int32_t nlpd_tml_source(const struct nlpd_tml *m, const char *lang_code, const char **model_code)
{
    int32_t id = -1;
    const char *c = lang_code ? resolve(m, lang_code, &id) : NULL;
    if (model_code)
        *model_code = c;
    return id;
}

struct nlpd_tml *nlpd_tml_load(const struct nlpd_stage_instance *inst, const char *dir, const char *dtype,
                               const struct nlpd_conf_map *lang_map, const char *target_lang,
                               struct nlpd_gen_params *gen, struct nlpd_error *err)
{
    struct nlpd_tml *m = calloc(1, sizeof *m);
    if (!m) {
        nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
        return NULL;
    }
    m->lang_map = lang_map;
    struct nlpd_m2m_opts opts = {.threads = 1, .dtype = dtype};
    if (!(m->mt = nlpd_m2m_load(dir, &opts, err)) || !(m->tok = nlpd_m2m_tok_load(dir, err)))
        goto fail;
    const struct nlpd_m2m_config *c = nlpd_m2m_config(m->mt);
    for (size_t i = 0; i < nlpd_m2m_tok_lang_count(m->tok); i++) {
        int32_t id = nlpd_m2m_tok_lang_id(m->tok, nlpd_m2m_tok_lang_code(m->tok, i));
        if (id < 0 || id >= c->vocab) { /* every batch would fail */
            nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: language token %s has id %d, the model's vocabulary only %d", dir,
                           nlpd_m2m_tok_lang_code(m->tok, i), id, c->vocab);
            goto fail;
        }
    }
    for (size_t i = 0; lang_map && i < lang_map->n; i++)
        if (nlpd_m2m_tok_lang_id(m->tok, lang_map->to[i]) < 0) {
            nlpd_error_set(err, NLPD_EINVAL, 0, "lang_map: \"%s\" -> \"%s\": %s has no language \"%s\"",
                           lang_map->from[i], lang_map->to[i], dir, lang_map->to[i]);
            goto fail;
        }
    const char *tc = resolve(m, target_lang, &m->target);
    if (m->target < 0) {
        nlpd_error_set(err, NLPD_EINVAL, 0,
                       "target_lang \"%s\": %s has no such language (map it with lang_map, "
                       "e.g. ((\"%s\", \"%s\")))",
                       target_lang, dir, target_lang, nlpd_m2m_tok_lang_code(m->tok, 0));
        goto fail;
    }
    nlpd_m2m_gen_defaults(m->mt, gen);
    gen->has_forced_bos = 1;
    gen->forced_bos = m->target;
    /* say up front which languages langid can write that this model cannot take */
    char miss[1024] = "";
    size_t o = 0, nmiss = 0;
    for (size_t i = 0; i < nlpd_lang_lid176_count(); i++) {
        int32_t id;
        resolve(m, nlpd_lang_lid176(i), &id);
        if (id >= 0)
            continue;
        if (o + 8 < sizeof miss)
            o += (size_t)snprintf(miss + o, sizeof miss - o, "%s%s", nmiss ? " " : "", nlpd_lang_lid176(i));
        nmiss++;
    }
    nlpd_stage_log(inst, NLPD_LOG_INFO,
                   "%s: target %s (%s); %zu of lid.176's %zu languages have no language "
                   "in this model (lang_map can map them): %s",
                   dir, target_lang, tc, nmiss, nlpd_lang_lid176_count(), nmiss ? miss : "none");
    return m;
fail:
    nlpd_tml_free(m);
    return NULL;
}

void nlpd_tml_free(struct nlpd_tml *m)
{
    if (!m)
        return;
    nlpd_m2m_tok_free(m->tok);
    nlpd_m2m_free(m->mt);
    free(m);
}

int nlpd_tml_encode(const struct nlpd_tml *m, int32_t src, const char *text, size_t len, int32_t **ids, size_t *n,
                    struct nlpd_error *err)
{
    size_t cap = 0;
    *ids = NULL;
    return nlpd_m2m_tok_encode(m->tok, text, len, src, (size_t)nlpd_m2m_config(m->mt)->max_pos, ids, n, &cap, err);
}

struct nlpd_tml_ws *nlpd_tml_ws_new(const struct nlpd_tml *m)
{
    struct nlpd_tml_ws *w = calloc(1, sizeof *w);
    if (w && !(w->ws = nlpd_m2m_ws_new(m->mt, NULL))) {
        free(w);
        w = NULL;
    }
    return w;
}

void nlpd_tml_ws_free(struct nlpd_tml_ws *ws)
{
    if (ws)
        nlpd_m2m_ws_free(ws->ws);
    free(ws);
}

int nlpd_tml_translate(const struct nlpd_tml *m, struct nlpd_tml_ws *ws, const int32_t *const *ids, const size_t *lens,
                       int n, const struct nlpd_gen_params *p, char **texts, size_t *text_lens, struct nlpd_error *err)
{
    struct nlpd_gen_output *out = calloc((size_t)n, sizeof *out);
    if (!out)
        return nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
    int rc = nlpd_m2m_encode(m->mt, ws->ws, ids, lens, n, NULL, err);
    if (!rc)
        rc = nlpd_m2m_generate(m->mt, ws->ws, p, out, err);
    for (int i = 0; i < n && !rc; i++) {
        size_t skip = out[i].n >= 2 ? 2 : out[i].n; /* the decoder start and the forced target language */
        rc = nlpd_m2m_tok_decode(m->tok, out[i].ids + skip, out[i].n - skip, 1, &texts[i], &text_lens[i], err);
    }
    nlpd_gen_output_free(out, n);
    free(out);
    return rc;
}

int nlpd_tml_max_pos(const struct nlpd_tml *m)
{
    return nlpd_m2m_config(m->mt)->max_pos;
}

const char *nlpd_tml_dtype_name(const struct nlpd_tml *m)
{
    return nlpd_dtype_name(nlpd_m2m_dtype(m->mt));
}

void nlpd_tml_describe(const struct nlpd_tml *m, char *buf, size_t len)
{
    const struct nlpd_m2m_config *c = nlpd_m2m_config(m->mt);
    snprintf(buf, len, "%s d_model %d, %d+%d layers, vocabulary %d, %zu languages, %.1f MB of weights",
             nlpd_m2m_tok_kind(m->tok) == NLPD_M2M_TOK_NLLB ? "NLLB" : "M2M100", c->d_model, c->enc_layers,
             c->dec_layers, c->vocab, nlpd_m2m_tok_lang_count(m->tok), (double)nlpd_m2m_weight_bytes(m->mt) / 1e6);
}
