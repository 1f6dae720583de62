/* `nlpd infer --model DIR` for M2M100 / NLLB folders (model_type m2m_100): JSON lines {"text", "src_lang"?,
 * "tgt_lang"?} or {"input_ids", "tgt_lang"?} in (the model's own language codes: "de" / "deu_Latn"; defaults
 * --src-lang / --tgt-lang, else tokenizer_config.json's src_lang / tgt_lang), one line {"input_ids", "output_ids",
 * "text", "score"?} out per input, in order (--forced-bos-token-id N: the target as an id, for input_ids lines
 * of a folder without a tokenizer). The target language is generate()'s forced_bos_token_id; "text" is
 * the decoded output after it. Lines go through the model in batches of --batch, one sub-batch per target
 * language. Generation options, --debug and the batching are cmd_seq2seq.c's; this file holds the M2M callbacks. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd_model.h"
#include "cmd_seq2seq.h"
#include "json_out.h"
#include "m2m100.h"
#include "m2m100_tok.h"

static char *dupf(const char *msg)
{
    return nlpd_s2s_dup(msg);
}

/* The language id of a line's code (v) or the default; an error is kept in *error. */
static int32_t lang_of(const struct nlpd_m2m_tok *tok, json_t *v, const char *def, const char *key, char **error)
{
    const char *code = json_is_string(v) ? json_string_value(v) : def;
    char msg[256];
    if (v && !json_is_string(v)) {
        snprintf(msg, sizeof msg, "\"%s\" must be a language code string", key);
        *error = dupf(msg);
        return -1;
    }
    if (!code) {
        snprintf(msg, sizeof msg, "no \"%s\" (and no --%s default)", key,
                 !strcmp(key, "src_lang") ? "src-lang" : "tgt-lang");
        *error = dupf(msg);
        return -1;
    }
    int32_t id = tok ? nlpd_m2m_tok_lang_id(tok, code) : -1;
    if (id < 0) {
        snprintf(msg, sizeof msg, "%s \"%.64s\" is not a language of this model", key, code);
        *error = dupf(msg);
    }
    return id;
}

struct m2m_ctx {
    const struct nlpd_m2m_tok *tok;
    const char *tok_error, *src_def, *tgt_def;
    int32_t forced; /* --forced-bos-token-id, -1 */
    int max_pos;
};

/* The target language first: language codes and texts need the tokenizer. */
static void m2m_prepare(void *ctx, struct nlpd_s2s_item *it, json_t *root)
{
    const struct m2m_ctx *c = ctx;
    json_t *tl = json_object_get(root, "tgt_lang");
    if ((tl || c->forced < 0 || json_is_string(json_object_get(root, "text"))) && !c->tok) {
        it->error = dupf(c->tok_error);
        return;
    }
    if (!tl && c->forced >= 0)
        it->tgt = c->forced;
    else
        it->tgt = lang_of(c->tok, tl, c->tgt_def, "tgt_lang", &it->error);
}

static void m2m_text(void *ctx, struct nlpd_s2s_item *it, json_t *root, json_t *text)
{
    const struct m2m_ctx *c = ctx;
    struct nlpd_error err = {0};
    size_t cap = 0;
    int32_t src = lang_of(c->tok, json_object_get(root, "src_lang"), c->src_def, "src_lang", &it->error);
    if (!it->error && nlpd_m2m_tok_encode(c->tok, json_string_value(text), json_string_length(text), src,
                                          (size_t)c->max_pos, &it->ids, &it->n, &cap, &err))
        it->error = dupf(err.message);
}

static int m2m_decode(const void *tok, const int32_t *ids, size_t n, char **text, size_t *len, struct nlpd_error *err)
{
    size_t skip = n >= 2 ? 2 : n; /* the decoder start and the forced language token */
    return nlpd_m2m_tok_decode(tok, ids + skip, n - skip, 1, text, len, err);
}

static int m2m_encode(const void *m, void *ws, const int32_t *const *ids, const size_t *lens, int n, float *hidden,
                      struct nlpd_error *err)
{
    return nlpd_m2m_encode(m, ws, ids, lens, n, hidden, err);
}

static int m2m_generate(const void *m, void *ws, const struct nlpd_gen_params *p, struct nlpd_gen_output *out,
                        struct nlpd_error *err)
{
    return nlpd_m2m_generate(m, ws, p, out, err);
}

int nlpd_cmd_infer_m2m(int argc, char **argv)
{
    struct nlpd_s2s_args a;
    if (nlpd_s2s_parse(argc, argv, 1, &a))
        return 2;
    struct nlpd_error err = {0};
    nlpd_s2s_set_backend(&a);
    struct nlpd_m2m_opts mo = {.threads = a.threads, .dtype = a.dtype};
    struct nlpd_m2m *m = nlpd_m2m_load(a.model, &mo, &err);
    if (!m) {
        fprintf(stderr, "nlpd infer: %s\n", err.message);
        return 1;
    }
    if (a.forced_bos >= nlpd_m2m_config(m)->vocab) {
        fprintf(stderr, "nlpd infer: --forced-bos-token-id %d is outside the vocabulary (%d)\n", a.forced_bos,
                nlpd_m2m_config(m)->vocab);
        nlpd_m2m_free(m);
        return 2;
    }
    /* a missing tokenizer is not fatal: lines may carry input_ids */
    struct nlpd_error terr = {0};
    struct nlpd_m2m_tok *tok = nlpd_m2m_tok_load(a.model, &terr);
    struct nlpd_gen_params gp;
    nlpd_m2m_gen_defaults(m, &gp);
    nlpd_s2s_gen_params(&a, &gp);
    struct nlpd_m2m_ws *ws = nlpd_m2m_ws_new(m, &err);
    struct m2m_ctx c = {.tok = tok,
                        .tok_error = terr.message,
                        .src_def = a.src_lang ? a.src_lang
                                   : tok      ? nlpd_m2m_tok_default_src(tok)
                                              : NULL,
                        .tgt_def = a.tgt_lang ? a.tgt_lang
                                   : tok      ? nlpd_m2m_tok_default_tgt(tok)
                                              : NULL,
                        .forced = a.forced_bos,
                        .max_pos = nlpd_m2m_config(m)->max_pos};
    struct nlpd_s2s_model md = {.m = m,
                                .ws = ws,
                                .tok = tok,
                                .tok_error = terr.message,
                                .ctx = &c,
                                .d_model = nlpd_m2m_config(m)->d_model,
                                .dec_vocab = nlpd_m2m_config(m)->dec_vocab,
                                .max_pos = nlpd_m2m_config(m)->max_pos,
                                .per_target = 1,
                                .encode = m2m_encode,
                                .generate = m2m_generate,
                                .prepare = m2m_prepare,
                                .encode_text = m2m_text,
                                .decode = m2m_decode};
    int rc = ws ? nlpd_s2s_run(&a, &md, &gp) : 1;
    if (rc)
        fprintf(stderr, "nlpd infer: out of memory\n");
    nlpd_m2m_ws_free(ws);
    nlpd_m2m_tok_free(tok);
    nlpd_m2m_free(m);
    return rc;
}

/* `nlpd tokenize --model DIR` for M2M100 / NLLB folders (see cmd_model.h for when): {"text", "src_lang"?} ->
 * {"ids", "tokens"} with the
 * language token where the tokenizer puts it (--src-lang, then tokenizer_config.json's src_lang; none when
 * neither), and with --decode {"ids", "skip_special_tokens"?} -> {"text"}. */
static void tokenize_line(const struct nlpd_m2m_tok *tok, const char *line, size_t len, int decode, const char *src_def,
                          size_t max_length, long long lineno)
{
    json_error_t je;
    json_t *root = json_loadb(line, len, JSON_REJECT_DUPLICATES, &je);
    char *error = NULL;
    struct nlpd_error err = {0};
    struct nlpd_buf o = {0};
    int32_t *ids = NULL;
    size_t n = 0, cap = 0;
    if (!root || !json_is_object(root)) {
        nlpd_out_error(lineno, root ? "not a JSON object" : je.text);
        json_decref(root);
        return;
    }
    if (decode) {
        json_t *v = json_object_get(root, "ids"), *x;
        size_t i;
        if (!json_is_array(v) || !(ids = malloc((json_array_size(v) + 1) * sizeof *ids))) {
            error = dupf("expected {\"ids\": [token ids], \"skip_special_tokens\"?: bool}");
        } else {
            json_array_foreach(v, i, x)
            {
                if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) > INT32_MAX) {
                    error = dupf("\"ids\" must hold token ids");
                    break;
                }
                ids[n++] = (int32_t)json_integer_value(x);
            }
        }
        char *text = NULL;
        size_t tl = 0;
        if (!error && nlpd_m2m_tok_decode(tok, ids, n, json_is_true(json_object_get(root, "skip_special_tokens")),
                                          &text, &tl, &err))
            error = dupf(err.message);
        if (!error) {
            nlpd_out_str(&o, "{\"text\": ");
            nlpd_out_jstr(&o, text, tl);
            nlpd_out_str(&o, "}\n");
        }
        free(text);
    } else {
        json_t *text = json_object_get(root, "text"), *sl = json_object_get(root, "src_lang");
        int32_t src = -1;
        if (!json_is_string(text))
            error = dupf("expected {\"text\": string, \"src_lang\"?: code}");
        else if (sl || src_def)
            src = lang_of(tok, sl, src_def, "src_lang", &error);
        if (!error && nlpd_m2m_tok_encode(tok, json_string_value(text), json_string_length(text), src, max_length, &ids,
                                          &n, &cap, &err))
            error = dupf(err.message);
        if (!error) {
            nlpd_out_str(&o, "{\"ids\": ");
            nlpd_out_ints(&o, ids, n);
            nlpd_out_str(&o, ", \"tokens\": [");
            for (size_t i = 0; i < n; i++) {
                char buf[64];
                size_t l = 0;
                const char *t = nlpd_m2m_tok_id_to_token(tok, ids[i], buf, sizeof buf, &l);
                nlpd_out_str(&o, i ? ", " : "");
                if (t)
                    nlpd_out_jstr(&o, t, l);
                else
                    nlpd_out_str(&o, "null");
            }
            nlpd_out_str(&o, "]}\n");
        }
    }
    if (error)
        nlpd_out_error(lineno, error);
    else
        nlpd_out_line(&o, lineno, stdout);
    free(error);
    nlpd_buf_free(&o);
    free(ids);
    json_decref(root);
}

int nlpd_cmd_tokenize_is_m2m(int argc, char **argv)
{
    const char *model = NULL;
    int src = 0;
    for (int i = 1; i + 1 < argc; i++) {
        if (!strcmp(argv[i], "--model"))
            model = argv[i + 1];
        src |= !strcmp(argv[i], "--src-lang");
    }
    if (!model || nlpd_cmd_is_seq2seq(model) != 2)
        return 0;
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", model);
    FILE *f = fopen(path, "rb");
    if (f)
        fclose(f);
    return src || !f;
}

int nlpd_cmd_tokenize_m2m(int argc, char **argv)
{
    const char *model = NULL, *src = NULL;
    int decode = 0;
    long max_length = 0;
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(argv[i], "--decode")) {
            decode = 1;
        } else if (!strcmp(argv[i], "--model") && v) {
            model = argv[++i];
        } else if (!strcmp(argv[i], "--src-lang") && v) {
            src = argv[++i];
        } else if (!strcmp(argv[i], "--max-length") && v) {
            if (nlpd_cmd_number("tokenize", argv[i], v, 0, 1000000, &max_length))
                return 2;
            i++;
        } else {
            fprintf(stderr, "nlpd tokenize: unknown or incomplete option \"%s\"\n", argv[i]);
            return 2;
        }
    }
    if (!model) {
        fprintf(stderr, "usage: nlpd tokenize --model DIR [--src-lang CODE] [--max-length N] [--decode] < lines\n");
        return 2;
    }
    struct nlpd_error err = {0};
    struct nlpd_m2m_tok *tok = nlpd_m2m_tok_load(model, &err);
    if (!tok) {
        fprintf(stderr, "nlpd tokenize: %s\n", err.message);
        return 1;
    }
    if (!src)
        src = nlpd_m2m_tok_default_src(tok);
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    long long lineno = 0;
    while ((got = getline(&line, &cap, stdin)) >= 0) {
        size_t len = (size_t)got;
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            len--;
        tokenize_line(tok, line, len, decode, src, (size_t)max_length, ++lineno);
        fflush(stdout);
    }
    free(line);
    nlpd_m2m_tok_free(tok);
    return 0;
}
