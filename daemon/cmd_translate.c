/* `nlpd infer --model DIR` for translation (Marian) folders: JSON lines {"text"} or {"input_ids"} in, one line
 * {"input_ids", "output_ids", "text", "score"?} out per input, in order, with generation options as transformers'
 * generate() takes them. Lines go through the model in batches of --batch (padded, as a stage batches them).
 * --debug adds the encoder output and the raw first-step logits and per-step top-5 (greedy), for parity checks. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd_model.h"
#include "json_out.h"
#include "marian.h"
#include "marian_tok.h"
#include "nlpd_util.h"

#define BATCH_MAX 1024

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

struct targs {
    const char *model;
    const char *backend, *dtype; /* NULL: the process default */
    int device;
    int threads, batch, debug;
    int max_length, max_new_tokens, num_beams, no_repeat, min_length, early; /* -1: the model's default */
    int forced_eos;                                                          /* -2: the model's default, -1: none */
    float length_penalty;
    int has_length_penalty;
};

static int parse(int argc, char **argv, struct targs *a)
{
    *a = (struct targs){.batch = 8,
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
        } else if (!strcmp(o, "--threads")) {
            rc = nlpd_cmd_number("infer", o, v, 0, 1024, &n);
            a->threads = (int)n;
        } else if (!strcmp(o, "--backend")) {
            a->backend = v;
            if (nlpd_backend_kind_parse(v) < 0) {
                fprintf(stderr, "nlpd infer: --backend must be one of %s\n", nlpd_backend_kind_list());
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
        fprintf(stderr, "usage: nlpd infer --model DIR [--num-beams K] [--max-length N | --max-new-tokens N] "
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
static void read_item(struct item *it, const char *line, size_t len, const struct nlpd_marian_tok *tok,
                      const char *tok_error, int max_pos)
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
    if (json_is_string(text)) {
        struct nlpd_error err = {0};
        size_t cap = 0;
        if (!tok)
            it->error = dupf(tok_error);
        else if (nlpd_marian_tok_encode(tok, json_string_value(text), json_string_length(text), (size_t)max_pos,
                                        &it->ids, &it->n, &cap, &err))
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

static void emit(const struct item *it, const struct nlpd_marian_tok *tok, int beams, int H, int V)
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
        if (nlpd_marian_tok_decode(tok, it->out.ids, it->out.n, 1, &text, &len, &err) == 0)
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
static void run_batch(const struct nlpd_marian *m, struct nlpd_marian_ws *ws, struct item *items, int n,
                      const struct nlpd_gen_params *gp, int debug)
{
    const int H = nlpd_marian_config(m)->d_model;
    const int32_t *ids[BATCH_MAX];
    size_t lens[BATCH_MAX], maxlen = 0;
    struct item *live[BATCH_MAX];
    int k = 0;
    for (int i = 0; i < n; i++)
        if (!items[i].error) {
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
    struct debug_ctx dctx = {live, nlpd_marian_config(m)->dec_vocab};
    struct nlpd_gen_params p = *gp;
    if (debug) {
        p.on_logits = on_logits;
        p.on_logits_ctx = &dctx;
    }
    int rc = !outs || (debug && !hidden) ? nlpd_error_set(&err, NLPD_ENOMEM, 0, "out of memory")
                                         : nlpd_marian_encode(m, ws, ids, lens, k, hidden, &err);
    if (!rc)
        rc = nlpd_marian_generate(m, ws, &p, outs, &err);
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

int nlpd_cmd_infer_seq2seq(int argc, char **argv)
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
    struct nlpd_marian_ws *ws = nlpd_marian_ws_new(m, &err);
    struct item *items = calloc((size_t)a.batch, sizeof *items);
    if (!ws || !items) {
        fprintf(stderr, "nlpd infer: out of memory\n");
        nlpd_marian_ws_free(ws);
        nlpd_marian_tok_free(tok);
        nlpd_marian_free(m);
        free(items);
        return 1;
    }
    const int max_pos = nlpd_marian_config(m)->max_pos;
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
            read_item(&items[n], line, len, tok, terr.message, max_pos);
            n++;
        } else {
            eof = 1;
        }
        if (n == a.batch || (eof && n)) {
            run_batch(m, ws, items, n, &gp, a.debug);
            for (int i = 0; i < n; i++) {
                emit(&items[i], tok, gp.num_beams, nlpd_marian_config(m)->d_model, nlpd_marian_config(m)->dec_vocab);
                item_clear(&items[i]);
            }
            fflush(stdout);
            n = 0;
        }
    }
    free(line);
    free(items);
    nlpd_marian_ws_free(ws);
    nlpd_marian_tok_free(tok);
    nlpd_marian_free(m);
    return 0;
}
