/* `nlpd infer --model DIR` for M2M100 / NLLB folders (model_type m2m_100): JSON lines {"text", "src_lang"?,
 * "tgt_lang"?} or {"input_ids", "tgt_lang"?} in (the model's own language codes: "de" / "deu_Latn"; defaults
 * --src-lang / --tgt-lang, else tokenizer_config.json's src_lang / tgt_lang), one line {"input_ids", "output_ids",
 * "text", "score"?} out per input, in order (--forced-bos-token-id N: the target as an id, for input_ids lines
 * of a folder without a tokenizer). The target language is generate()'s forced_bos_token_id; "text" is
 * the decoded output after it. Lines go through the model in batches of --batch, one sub-batch per target
 * language. Generation options and --debug as cmd_translate.c's Marian command. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd_model.h"
#include "json_out.h"
#include "m2m100.h"
#include "m2m100_tok.h"

#define BATCH_MAX 1024

struct targs {
    const char *model;
    const char *backend, *dtype; /* NULL: the process default */
    int device;
    int threads, batch, debug;
    int max_length, max_new_tokens, num_beams, no_repeat, min_length, early; /* -1: the model's default */
    int forced_eos;                                                          /* -2: the model's default, -1: none */
    const char *src_lang, *tgt_lang;
    int forced_bos; /* --forced-bos-token-id: the target as an id (lines of input_ids need no tokenizer); -1 */
    float length_penalty;
    int has_length_penalty;
};

static int parse(int argc, char **argv, struct targs *a)
{
    *a = (struct targs){.forced_bos = -1,
                        .batch = 8,
                        .max_length = -1,
                        .max_new_tokens = -1,
                        .num_beams = -1,
                        .no_repeat = -1,
                        .min_length = -1,
                        .early = -1,
                        .forced_eos = -2};
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long n = 0;
        int rc = 0;
        if (!strcmp(o, "--debug")) {
            a->debug = 1;
            continue;
        }
        if (!v) {
            fprintf(stderr, "nlpd infer: option \"%s\" needs a value\n", o);
            return -1;
        }
        i++;
        if (!strcmp(o, "--model")) {
            a->model = v;
        } else if (!strcmp(o, "--src-lang")) {
            a->src_lang = v;
        } else if (!strcmp(o, "--tgt-lang")) {
            a->tgt_lang = v;
        } else if (!strcmp(o, "--forced-bos-token-id")) {
            rc = nlpd_cmd_number("infer", o, v, 0, 1 << 24, &n);
            a->forced_bos = (int)n;
        } else if (!strcmp(o, "--threads")) {
            rc = nlpd_cmd_number("infer", o, v, 0, 1024, &n);
            a->threads = (int)n;
        } else if (!strcmp(o, "--backend")) {
            a->backend = v;
            if (strcmp(v, "auto") && strcmp(v, "cpu") && strcmp(v, "cuda")) {
                fprintf(stderr, "nlpd infer: --backend must be auto, cpu or cuda\n");
                return -1;
            }
        } else if (!strcmp(o, "--dtype")) {
            a->dtype = v;
            if (nlpd_dtype_parse(v) < 0) {
                fprintf(stderr, "nlpd infer: --dtype must be fp32, fp16, bf16 or int8\n");
                return -1;
            }
        } else if (!strcmp(o, "--device")) {
            rc = nlpd_cmd_number("infer", o, v, 0, 63, &n);
            a->device = (int)n;
        } else if (!strcmp(o, "--batch")) {
            rc = nlpd_cmd_number("infer", o, v, 1, BATCH_MAX, &n);
            a->batch = (int)n;
        } else if (!strcmp(o, "--max-length")) {
            rc = nlpd_cmd_number("infer", o, v, 2, 1 << 20, &n);
            a->max_length = (int)n;
        } else if (!strcmp(o, "--max-new-tokens")) {
            rc = nlpd_cmd_number("infer", o, v, 1, 1 << 20, &n);
            a->max_new_tokens = (int)n;
        } else if (!strcmp(o, "--num-beams")) {
            rc = nlpd_cmd_number("infer", o, v, 1, 64, &n);
            a->num_beams = (int)n;
        } else if (!strcmp(o, "--no-repeat-ngram-size")) {
            rc = nlpd_cmd_number("infer", o, v, 0, 1024, &n);
            a->no_repeat = (int)n;
        } else if (!strcmp(o, "--forced-eos-token-id")) {
            rc = nlpd_cmd_number("infer", o, v, -1, 1 << 24, &n);
            a->forced_eos = (int)n;
        } else if (!strcmp(o, "--min-length")) {
            rc = nlpd_cmd_number("infer", o, v, 0, 1 << 20, &n);
            a->min_length = (int)n;
        } else if (!strcmp(o, "--length-penalty")) {
            char *end;
            a->length_penalty = strtof(v, &end);
            a->has_length_penalty = 1;
            if (*end || a->length_penalty != a->length_penalty) {
                fprintf(stderr, "nlpd infer: --length-penalty must be a number\n");
                return -1;
            }
        } else if (!strcmp(o, "--early-stopping")) {
            a->early = !strcmp(v, "true")    ? NLPD_EARLY_STOP_TRUE
                       : !strcmp(v, "false") ? NLPD_EARLY_STOP_FALSE
                       : !strcmp(v, "never") ? NLPD_EARLY_STOP_NEVER
                                             : -2;
            if (a->early == -2) {
                fprintf(stderr, "nlpd infer: --early-stopping must be true, false or never\n");
                return -1;
            }
        } else {
            fprintf(stderr, "nlpd infer: unknown option \"%s\"\n", o);
            return -1;
        }
        if (rc)
            return -1;
    }
    if (!a->model) {
        fprintf(stderr, "usage: nlpd infer --model DIR [--src-lang CODE] [--tgt-lang CODE | --forced-bos-token-id N] "
                        "[--num-beams K] [--max-length N | --max-new-tokens N] "
                        "[--length-penalty X] [--early-stopping true|false|never] [--no-repeat-ngram-size N] "
                        "[--min-length N] [--forced-eos-token-id N|-1] [--batch N] [--backend auto|cpu|cuda] "
                        "[--dtype fp32|fp16|bf16|int8] [--device N] [--threads N] [--debug] < lines.jsonl\n");
        return -1;
    }
    return 0;
}

struct item {
    long long line;
    char *error;  /* set: this line failed */
    int32_t *ids; /* source ids */
    int32_t tgt;  /* target language id */
    size_t n;
    struct nlpd_gen_output out;
    float *hidden;        /* --debug: [n, d_model] */
    float *first;         /* --debug: raw first-step logits */
    struct nlpd_buf top5; /* --debug: per-step top-5 of the raw logits (JSON) */
    int steps;
};

struct debug_ctx {
    struct item **items; /* by sentence index in the batch */
    int vocab;
};

static void on_logits(void *ctx, int step, const int32_t *sent, int rows, const float *logits, int vocab)
{
    struct debug_ctx *d = ctx;
    for (int r = 0; r < rows; r++) {
        struct item *it = d->items[sent[r]];
        const float *row = logits + (size_t)r * vocab;
        if (step == 0 && !it->first && (it->first = malloc((size_t)vocab * sizeof(float))))
            memcpy(it->first, row, (size_t)vocab * sizeof(float));
        if (r > 0 && sent[r] == sent[r - 1])
            continue; /* beams: the first row of a sentence only */
        int top[5], k = 0;
        for (int t = 0; t < vocab; t++) {
            if (k == 5 && !(row[t] > row[top[4]]))
                continue;
            int i = k < 5 ? k++ : 4;
            while (i > 0 && row[t] > row[top[i - 1]]) {
                top[i] = top[i - 1];
                i--;
            }
            top[i] = t;
        }
        nlpd_out_str(&it->top5, it->steps++ ? ", {\"ids\": [" : "{\"ids\": [");
        for (int i = 0; i < k; i++) {
            if (i)
                nlpd_out_str(&it->top5, ", ");
            nlpd_out_int(&it->top5, top[i]);
        }
        nlpd_out_str(&it->top5, "], \"logits\": [");
        for (int i = 0; i < k; i++) {
            if (i)
                nlpd_out_str(&it->top5, ", ");
            nlpd_out_float(&it->top5, row[top[i]]);
        }
        nlpd_out_str(&it->top5, "]}");
    }
}

static void item_clear(struct item *it)
{
    free(it->error);
    free(it->ids);
    free(it->hidden);
    free(it->first);
    nlpd_buf_free(&it->top5);
    free(it->out.ids);
    memset(it, 0, sizeof *it);
}

static char *dupf(const char *msg)
{
    char *s = strdup(msg);
    return s ? s : strdup("out of memory");
}

/* Reads one input line into it (ids from "input_ids" or the tokenizer); an error is kept on the item. */
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

static void read_item(struct item *it, const char *line, size_t len, const struct nlpd_m2m_tok *tok,
                      const char *tok_error, int max_pos, const char *src_def, const char *tgt_def, int32_t forced)
{
    json_error_t je;
    json_t *root = json_loadb(line, len, JSON_REJECT_DUPLICATES, &je);
    char msg[NLPD_ERROR_MSG_MAX + 64];
    if (!root || !json_is_object(root)) {
        snprintf(msg, sizeof msg, root ? "not a JSON object" : "invalid JSON: %s (column %d)", je.text, je.column);
        it->error = dupf(msg);
        json_decref(root);
        return;
    }
    json_t *text = json_object_get(root, "text"), *ids = json_object_get(root, "input_ids");
    json_t *tl = json_object_get(root, "tgt_lang");
    if ((tl || forced < 0 || json_is_string(text)) && !tok) {
        it->error = dupf(tok_error); /* language codes and texts need the tokenizer */
        json_decref(root);
        return;
    }
    if (!tl && forced >= 0)
        it->tgt = forced;
    else
        it->tgt = lang_of(tok, tl, tgt_def, "tgt_lang", &it->error);
    if (it->error) {
        json_decref(root);
        return;
    }
    if (json_is_string(text)) {
        struct nlpd_error err = {0};
        size_t cap = 0;
        int32_t src = lang_of(tok, json_object_get(root, "src_lang"), src_def, "src_lang", &it->error);
        if (!it->error && nlpd_m2m_tok_encode(tok, json_string_value(text), json_string_length(text), src,
                                              (size_t)max_pos, &it->ids, &it->n, &cap, &err))
            it->error = dupf(err.message);
    } else if (json_is_array(ids) && json_array_size(ids) > 0 && json_array_size(ids) <= (size_t)max_pos) {
        it->n = json_array_size(ids);
        if (!(it->ids = malloc(it->n * sizeof *it->ids))) {
            it->error = dupf("out of memory");
        } else {
            for (size_t i = 0; i < it->n && !it->error; i++) {
                json_t *v = json_array_get(ids, i);
                if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX)
                    it->error = dupf("\"input_ids\" must hold token ids");
                else
                    it->ids[i] = (int32_t)json_integer_value(v);
            }
        }
    } else {
        snprintf(msg, sizeof msg, "expected {\"text\": string} or {\"input_ids\": [1 .. %d ids]}", max_pos);
        it->error = dupf(msg);
    }
    json_decref(root);
}

static void emit(const struct item *it, const struct nlpd_m2m_tok *tok, int beams, int H, int V)
{
    if (it->error) {
        nlpd_out_error(it->line, it->error);
        return;
    }
    struct nlpd_buf o = {0};
    nlpd_out_str(&o, "{\"input_ids\": ");
    nlpd_out_ints(&o, it->ids, it->n);
    nlpd_out_str(&o, ", \"output_ids\": ");
    nlpd_out_ints(&o, it->out.ids, it->out.n);
    if (tok) {
        char *text = NULL;
        size_t len = 0;
        struct nlpd_error err = {0};
        nlpd_out_str(&o, ", \"text\": ");
        size_t skip = it->out.n >= 2 ? 2 : it->out.n; /* the decoder start and the forced language token */
        if (nlpd_m2m_tok_decode(tok, it->out.ids + skip, it->out.n - skip, 1, &text, &len, &err) == 0)
            nlpd_out_jstr(&o, text, len);
        else
            nlpd_out_str(&o, "null");
        free(text);
    }
    if (beams > 1) {
        nlpd_out_str(&o, ", \"score\": ");
        nlpd_out_float(&o, it->out.score);
    }
    if (it->hidden) {
        nlpd_out_str(&o, ", \"encoder_last_hidden_state\": [");
        for (size_t t = 0; t < it->n; t++) {
            nlpd_out_str(&o, t ? ", [" : "[");
            for (int h = 0; h < H; h++) {
                if (h)
                    nlpd_out_str(&o, ", ");
                nlpd_out_float(&o, it->hidden[t * H + h]);
            }
            nlpd_out_str(&o, "]");
        }
        nlpd_out_str(&o, "]");
    }
    if (it->first) {
        nlpd_out_str(&o, ", \"steps_top5\": [");
        if (it->top5.data)
            nlpd_out_str(&o, it->top5.data);
        if (it->top5.oom)
            o.oom = 1;
        nlpd_out_str(&o, "], \"first_step_logits\": [");
        for (int v = 0; v < V; v++) {
            if (v)
                nlpd_out_str(&o, ", ");
            nlpd_out_float(&o, it->first[v]);
        }
        nlpd_out_str(&o, "]");
    }
    nlpd_out_str(&o, "}\n");
    nlpd_out_line(&o, it->line, stdout);
    nlpd_buf_free(&o);
}

/* Runs the items that have no error as one batch. */
static void run_batch(const struct nlpd_m2m *m, struct nlpd_m2m_ws *ws, struct item *items, int n,
                      const struct nlpd_gen_params *gp, int debug, int32_t tgt)
{
    const int H = nlpd_m2m_config(m)->d_model;
    const int32_t *ids[BATCH_MAX];
    size_t lens[BATCH_MAX], maxlen = 0;
    struct item *live[BATCH_MAX];
    int k = 0;
    for (int i = 0; i < n; i++)
        if (!items[i].error && items[i].tgt == tgt && !items[i].out.ids) {
            live[k] = &items[i];
            ids[k] = items[i].ids;
            lens[k] = items[i].n;
            maxlen = lens[k] > maxlen ? lens[k] : maxlen;
            k++;
        }
    if (!k)
        return;
    struct nlpd_error err = {0};
    float *hidden = debug ? malloc((size_t)k * maxlen * H * sizeof *hidden) : NULL;
    struct nlpd_gen_output *outs = calloc((size_t)k, sizeof *outs);
    struct debug_ctx dctx = {live, nlpd_m2m_config(m)->dec_vocab};
    struct nlpd_gen_params p = *gp;
    p.has_forced_bos = 1;
    p.forced_bos = tgt;
    if (debug) {
        p.on_logits = on_logits;
        p.on_logits_ctx = &dctx;
    }
    int rc = !outs || (debug && !hidden) ? nlpd_error_set(&err, NLPD_ENOMEM, 0, "out of memory")
                                         : nlpd_m2m_encode(m, ws, ids, lens, k, hidden, &err);
    if (!rc)
        rc = nlpd_m2m_generate(m, ws, &p, outs, &err);
    for (int i = 0; i < k; i++) {
        if (rc) {
            live[i]->error = dupf(err.message);
            continue;
        }
        live[i]->out = outs[i];
        if (hidden && (live[i]->hidden = malloc(live[i]->n * H * sizeof(float))))
            memcpy(live[i]->hidden, hidden + (size_t)i * maxlen * H, live[i]->n * H * sizeof(float));
    }
    free(hidden);
    free(outs);
}

int nlpd_cmd_infer_m2m(int argc, char **argv)
{
    struct targs a;
    if (parse(argc, argv, &a))
        return 2;
    struct nlpd_error err = {0};
    if (a.backend || a.dtype) { /* the model's backend is created from the process defaults */
        struct nlpd_backend_opts d;
        nlpd_backend_opts_default(&d);
        nlpd_kernels_set_defaults(a.backend ? a.backend : "auto", a.device,
                                  a.dtype ? (enum nlpd_dtype)nlpd_dtype_parse(a.dtype) : d.dtype);
        nlpd_kernels_set_logger(nlpd_cmd_log_backend);
    }
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
    if (a.num_beams > 0)
        gp.num_beams = a.num_beams;
    if (a.max_new_tokens > 0)
        gp.max_length = a.max_new_tokens + 1;
    else if (a.max_length > 0)
        gp.max_length = a.max_length;
    if (a.has_length_penalty)
        gp.length_penalty = a.length_penalty;
    if (a.early >= 0)
        gp.early_stopping = (enum nlpd_early_stopping)a.early;
    if (a.no_repeat >= 0)
        gp.no_repeat_ngram_size = a.no_repeat;
    if (a.min_length >= 0)
        gp.min_length = a.min_length;
    if (a.forced_eos >= -1)
        gp.forced_eos = a.forced_eos;
    struct nlpd_m2m_ws *ws = nlpd_m2m_ws_new(m, &err);
    struct item *items = calloc((size_t)a.batch, sizeof *items);
    if (!ws || !items) {
        fprintf(stderr, "nlpd infer: out of memory\n");
        nlpd_m2m_ws_free(ws);
        nlpd_m2m_tok_free(tok);
        nlpd_m2m_free(m);
        free(items);
        return 1;
    }
    const int max_pos = nlpd_m2m_config(m)->max_pos;
    const char *src_def = a.src_lang ? a.src_lang : tok ? nlpd_m2m_tok_default_src(tok) : NULL;
    const char *tgt_def = a.tgt_lang ? a.tgt_lang : tok ? nlpd_m2m_tok_default_tgt(tok) : NULL;
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    long long lineno = 0;
    int n = 0, eof = 0;
    while (!eof) {
        got = getline(&line, &cap, stdin);
        if (got >= 0) {
            size_t len = (size_t)got;
            while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
                len--;
            items[n].line = ++lineno;
            read_item(&items[n], line, len, tok, terr.message, max_pos, src_def, tgt_def, a.forced_bos);
            n++;
        } else {
            eof = 1;
        }
        if (n == a.batch || (eof && n)) {
            for (int i = 0; i < n; i++) /* one sub-batch per target language, in first-seen order */
                if (!items[i].error && !items[i].out.ids)
                    run_batch(m, ws, items, n, &gp, a.debug, items[i].tgt);
            for (int i = 0; i < n; i++) {
                emit(&items[i], tok, gp.num_beams, nlpd_m2m_config(m)->d_model, nlpd_m2m_config(m)->dec_vocab);
                item_clear(&items[i]);
            }
            fflush(stdout);
            n = 0;
        }
    }
    free(line);
    free(items);
    nlpd_m2m_ws_free(ws);
    nlpd_m2m_tok_free(tok);
    nlpd_m2m_free(m);
    return 0;
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
