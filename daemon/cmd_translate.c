/* `nlpd infer --model DIR` for translation (Marian) folders: JSON lines {"text"} or {"input_ids"} in, one line
 * {"input_ids", "output_ids", "text", "score"?} out per input, in order, with generation options as transformers'
 * generate() takes them. The command's machinery is cmd_seq2seq.c's; this file holds Marian's callbacks. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd_model.h"
#include "cmd_seq2seq.h"
#include "json_out.h"
#include "marian.h"
#include "marian_tok.h"
#include "nlpd_util.h"

int nlpd_cmd_is_seq2seq(const char *model_dir)
{
    json_t *j;
    nlpd_util_load_json(model_dir, "config.json", NLPD_UTIL_JSON_OPTIONAL, &j, NULL);
    json_t *mt = json_object_get(j, "model_type");
    int yes = !json_is_string(mt)                         ? 0
              : !strcmp(json_string_value(mt), "marian")  ? 1
              : !strcmp(json_string_value(mt), "m2m_100") ? 2
                                                          : 0;
    json_decref(j);
    return yes;
}

/* Marian's part of the infer command: its tokenizer (no language codes). */
static void marian_text(void *ctx, struct nlpd_s2s_item *it, json_t *root, json_t *text)
{
    const struct nlpd_s2s_model *md = ctx;
    struct nlpd_error err = {0};
    size_t cap = 0;
    (void)root;
    if (!md->tok)
        it->error = nlpd_s2s_dup(md->tok_error);
    else if (nlpd_marian_tok_encode(md->tok, json_string_value(text), json_string_length(text), (size_t)md->max_pos,
                                    &it->ids, &it->n, &cap, &err))
        it->error = nlpd_s2s_dup(err.message);
}

static int marian_decode(const void *tok, const int32_t *ids, size_t n, char **text, size_t *len,
                         struct nlpd_error *err)
{
    return nlpd_marian_tok_decode(tok, ids, n, 1, text, len, err);
}

static int marian_encode(const void *m, void *ws, const int32_t *const *ids, const size_t *lens, int n, float *hidden,
                         struct nlpd_error *err)
{
    return nlpd_marian_encode(m, ws, ids, lens, n, hidden, err);
}

static int marian_generate(const void *m, void *ws, const struct nlpd_gen_params *p, struct nlpd_gen_output *out,
                           struct nlpd_error *err)
{
    return nlpd_marian_generate(m, ws, p, out, err);
}

int nlpd_cmd_infer_seq2seq(int argc, char **argv)
{
    struct nlpd_s2s_args a;
    if (nlpd_s2s_parse(argc, argv, 0, &a))
        return 2;
    struct nlpd_error err = {0};
    nlpd_s2s_set_backend(&a);
    struct nlpd_marian_opts mo = {.threads = a.threads, .dtype = a.dtype};
    struct nlpd_marian *m = nlpd_marian_load(a.model, &mo, &err);
    if (!m) {
        fprintf(stderr, "nlpd infer: %s\n", err.message);
        return 1;
    }
    /* a missing tokenizer is not fatal: lines may carry input_ids */
    struct nlpd_error terr = {0};
    struct nlpd_marian_tok *tok = nlpd_marian_tok_load(a.model, &terr);
    struct nlpd_gen_params gp;
    nlpd_marian_gen_defaults(m, &gp);
    nlpd_s2s_gen_params(&a, &gp);
    struct nlpd_marian_ws *ws = nlpd_marian_ws_new(m, &err);
    struct nlpd_s2s_model md = {.m = m,
                                .ws = ws,
                                .tok = tok,
                                .tok_error = terr.message,
                                .d_model = nlpd_marian_config(m)->d_model,
                                .dec_vocab = nlpd_marian_config(m)->dec_vocab,
                                .max_pos = nlpd_marian_config(m)->max_pos,
                                .encode = marian_encode,
                                .generate = marian_generate,
                                .encode_text = marian_text,
                                .decode = marian_decode};
    md.ctx = &md;
    int rc = ws ? nlpd_s2s_run(&a, &md, &gp) : 1;
    if (rc)
        fprintf(stderr, "nlpd infer: out of memory\n");
    nlpd_marian_ws_free(ws);
    nlpd_marian_tok_free(tok);
    nlpd_marian_free(m);
    return rc;
}
