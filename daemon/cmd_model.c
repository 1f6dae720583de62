/* `nlpd infer` and `nlpd tokenize` (see cmd_model.h): JSON lines in, one JSON line out per input line, in order.
 * infer runs the encoder of a Hugging Face folder on each text (or on given "input_ids") and prints raw logits;
 * tokenize prints ids, tokens and offsets. A bad line gives {"error", "line"} and processing goes on. */
#include "cmd_model.h"

#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "encoder.h"
#include "json_out.h"
#include "tokenizer.h"

struct args {
    const char *model;
    size_t max_length;
    int threads;
    const char *backend; /* --backend; NULL = the process default (auto) */
    const char *dtype;
    int device;
    int decode; /* tokenize --decode */
};

static int parse_args(int argc, char **argv, struct args *a)
{
    memset(a, 0, sizeof *a);
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(argv[i], "--model") && (!v || !strncmp(v, "--", 2))) {
            fprintf(stderr, "nlpd %s: --model needs a model folder\n", argv[0]);
            return -1;
        } else if (!strcmp(argv[i], "--model") && v) {
            a->model = v;
            i++;
        } else if (!strcmp(argv[i], "--max-length") && v) {
            long n;
            if (nlpd_cmd_number(argv[0], argv[i], v, 0, 1000000, &n))
                return -1;
            a->max_length = (size_t)n;
            i++;
        } else if (!strcmp(argv[i], "--backend") && v) {
            if (nlpd_backend_kind_parse(v) < 0) {
                fprintf(stderr, "nlpd %s: --backend must be one of %s\n", argv[0], nlpd_backend_kind_list());
                return -1;
            }
            a->backend = v;
            i++;
        } else if (!strcmp(argv[i], "--dtype") && v) {
            if (nlpd_dtype_parse(v) < 0) {
                fprintf(stderr, "nlpd %s: --dtype must be auto, fp32, fp16, bf16 or int8\n", argv[0]);
                return -1;
            }
            a->dtype = v;
            i++;
        } else if (!strcmp(argv[i], "--device") && v) {
            long n;
            if (nlpd_cmd_number(argv[0], argv[i], v, 0, 63, &n))
                return -1;
            a->device = (int)n;
            i++;
        } else if (!strcmp(argv[i], "--decode") && !strcmp(argv[0], "tokenize")) {
            a->decode = 1;
        } else if (!strcmp(argv[i], "--threads") && v) {
            long n;
            if (nlpd_cmd_number(argv[0], argv[i], v, 0, 1024, &n))
                return -1;
            a->threads = (int)n;
            i++;
        } else {
            fprintf(stderr, "nlpd %s: unknown or incomplete option \"%s\"\n", argv[0], argv[i]);
            return -1;
        }
    }
    if (!a->model) {
        fprintf(stderr,
                "usage: nlpd %s --model DIR [--max-length N] [--threads N] [--backend auto|cpu|cuda]\n"
                "       [--dtype auto|fp32|fp16|bf16|int8] [--device N]%s < lines.jsonl\n",
                argv[0], strcmp(argv[0], "tokenize") ? "" : " [--decode]");
        return -1;
    }
    struct stat st;
    if (stat(a->model, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "nlpd %s: model folder '%s': %s\n", argv[0], a->model,
                stat(a->model, &st) != 0 ? strerror(errno) : "not a folder");
        return -1;
    }
    return 0;
}

/* Parses one input line: {"text": str, "text_pair"?: str|null} or (infer only) {"input_ids": [int...],
 * "token_type_ids"?: [int...]}. Returns the root (caller frees) or NULL with msg filled. */
static json_t *parse_line(const char *line, size_t len, int allow_ids, char *msg, size_t msg_cap)
{
    if (len == 0) {
        snprintf(msg, msg_cap, "empty line");
        return NULL;
    }
    json_error_t je;
    json_t *root = json_loadb(line, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        snprintf(msg, msg_cap, "invalid JSON: %s (column %d)", je.text, je.column);
        return NULL;
    }
    if (!json_is_object(root)) {
        snprintf(msg, msg_cap, "not a JSON object");
        json_decref(root);
        return NULL;
    }
    json_t *text = json_object_get(root, "text"), *pair = json_object_get(root, "text_pair");
    if (allow_ids && !text && json_object_get(root, "input_ids"))
        return root;
    if (!json_is_string(text)) {
        snprintf(msg, msg_cap, text ? "\"text\" is not a string" : "missing \"text\"");
        json_decref(root);
        return NULL;
    }
    if (pair && !json_is_null(pair) && !json_is_string(pair)) {
        snprintf(msg, msg_cap, "\"text_pair\" is not a string");
        json_decref(root);
        return NULL;
    }
    return root;
}

static int encode(const struct nlpd_tokenizer *tok, json_t *root, size_t max_length, struct nlpd_encoding *e,
                  struct nlpd_error *err)
{
    json_t *text = json_object_get(root, "text"), *pair = json_object_get(root, "text_pair");
    const char *ps = json_is_string(pair) ? json_string_value(pair) : NULL;
    return nlpd_tokenizer_encode(tok, json_string_value(text), json_string_length(text), ps,
                                 ps ? json_string_length(pair) : 0, max_length, e, err);
}

/* --decode: {"ids": [int...], "skip_special_tokens"?: bool} -> {"text": str}, as transformers'
 * tokenizer.decode(ids, skip_special_tokens) (default false, as there); {"tokens": [str...]} -> {"text": str}, as
 * convert_tokens_to_string (the decoder alone, what the ner stage uses for words). -1 with msg on a bad line. */
static int decode_line(const struct nlpd_tokenizer *tok, const char *line, size_t len, struct nlpd_buf *o, char *msg,
                       size_t msg_cap)
{
    json_error_t je;
    json_t *root = len ? json_loadb(line, len, JSON_REJECT_DUPLICATES, &je) : NULL;
    if (!root) {
        if (len)
            snprintf(msg, msg_cap, "invalid JSON: %s (column %d)", je.text, je.column);
        else
            snprintf(msg, msg_cap, "empty line");
        return -1;
    }
    json_t *ids = json_object_get(root, "ids"), *toks = json_object_get(root, "tokens");
    json_t *skip = json_object_get(root, "skip_special_tokens");
    json_t *arr = ids ? ids : toks;
    int rc = -1;
    if (!json_is_object(root))
        snprintf(msg, msg_cap, "not a JSON object");
    else if (!arr)
        snprintf(msg, msg_cap, "missing \"ids\" (or \"tokens\")");
    else if (ids && toks)
        snprintf(msg, msg_cap, "both \"ids\" and \"tokens\"");
    else if (!json_is_array(arr))
        snprintf(msg, msg_cap, "\"%s\" is not an array", ids ? "ids" : "tokens");
    else if (skip && !json_is_boolean(skip))
        snprintf(msg, msg_cap, "\"skip_special_tokens\" is not a boolean");
    else
        rc = 0;
    size_t n = json_array_size(arr), cap = 0, tl = 0;
    int32_t *v = rc == 0 ? malloc((n ? n : 1) * sizeof *v) : NULL;
    const char **ts = rc == 0 ? malloc((n ? n : 1) * sizeof *ts) : NULL;
    size_t *tls = rc == 0 ? malloc((n ? n : 1) * sizeof *tls) : NULL;
    if (rc == 0 && (!v || !ts || !tls)) {
        snprintf(msg, msg_cap, "out of memory");
        rc = -1;
    }
    for (size_t i = 0; rc == 0 && i < n; i++) {
        json_t *x = json_array_get(arr, i);
        if (toks) {
            if (!json_is_string(x)) {
                snprintf(msg, msg_cap, "\"tokens\"[%zu] is not a string", i);
                rc = -1;
            } else {
                ts[i] = json_string_value(x);
                tls[i] = json_string_length(x);
            }
        } else if (!json_is_integer(x) || json_integer_value(x) < INT32_MIN || json_integer_value(x) > INT32_MAX) {
            snprintf(msg, msg_cap, "\"ids\"[%zu] is not a 32-bit integer", i);
            rc = -1;
        } else {
            v[i] = (int32_t)json_integer_value(x);
        }
    }
    char *text = NULL;
    struct nlpd_error err = {0};
    if (rc == 0 && toks) {
        if (nlpd_tokenizer_convert_tokens_to_string(tok, ts, tls, n, &text, &tl, &cap) < 0 ||
            (!text && !(text = calloc(1, 1)))) {
            snprintf(msg, msg_cap, "out of memory");
            rc = -1;
        }
    } else if (rc == 0 && nlpd_tokenizer_decode(tok, v, n, json_is_true(skip), &text, &tl, &err) < 0) {
        snprintf(msg, msg_cap, "%s", err.message);
        rc = -1;
    }
    if (rc == 0) {
        nlpd_buf_reset(o);
        nlpd_out_str(o, "{\"text\": ");
        nlpd_out_jstr(o, text, tl);
        nlpd_out_str(o, "}\n");
    }
    free(text);
    free(v);
    free(ts);
    free(tls);
    json_decref(root);
    return rc;
}

int nlpd_cmd_tokenize(int argc, char **argv)
{
    if (nlpd_cmd_tokenize_is_m2m(argc, argv))
        return nlpd_cmd_tokenize_m2m(argc, argv);
    struct args a;
    if (parse_args(argc, argv, &a))
        return 2;
    if (nlpd_cmd_is_seq2seq(a.model) == 1) /* Marian; an M2M100 / NLLB folder with tokenizer.json goes on below */
        return nlpd_cmd_tokenize_marian(a.model, a.decode, a.max_length);
    struct nlpd_error err = {0};
    struct nlpd_tokenizer *tok = nlpd_tokenizer_load(a.model, &err);
    if (!tok) {
        fprintf(stderr, "nlpd tokenize: %s\n", err.message);
        return 1;
    }
    struct nlpd_encoding e = {0};
    struct nlpd_buf o = {0};
    char *line = NULL, msg[NLPD_ERROR_MSG_MAX + 64];
    size_t cap = 0;
    ssize_t got;
    long long lineno = 0;
    while ((got = getline(&line, &cap, stdin)) >= 0) {
        lineno++;
        size_t len = (size_t)got;
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            len--;
        if (a.decode) {
            if (decode_line(tok, line, len, &o, msg, sizeof msg) < 0) {
                nlpd_out_error(lineno, msg);
            } else {
                nlpd_out_line(&o, lineno, stdout);
            }
            continue;
        }
        json_t *root = parse_line(line, len, 0, msg, sizeof msg);
        if (!root) {
            nlpd_out_error(lineno, msg);
            continue;
        }
        if (encode(tok, root, a.max_length, &e, &err)) {
            nlpd_out_error(lineno, err.message);
            json_decref(root);
            continue;
        }
        json_decref(root);
        nlpd_buf_reset(&o);
        nlpd_out_str(&o, "{\"ids\": ");
        nlpd_out_ints(&o, e.ids, e.n);
        nlpd_out_str(&o, ", \"tokens\": [");
        for (size_t i = 0; i < e.n; i++) {
            const char *t = nlpd_tokenizer_id_to_token(tok, e.ids[i]);
            if (i)
                nlpd_out_str(&o, ", ");
            if (t)
                nlpd_out_jstr(&o, t, strlen(t));
            else
                nlpd_out_str(&o, "null");
        }
        nlpd_out_str(&o, "], \"offsets\": [");
        for (size_t i = 0; i < e.n; i++) {
            nlpd_out_str(&o, i ? ", [" : "[");
            nlpd_out_int(&o, e.starts[i]);
            nlpd_out_str(&o, ", ");
            nlpd_out_int(&o, e.ends[i]);
            nlpd_out_str(&o, "]");
        }
        nlpd_out_str(&o, "]}\n");
        nlpd_out_line(&o, lineno, stdout);
    }
    free(line);
    nlpd_buf_free(&o);
    nlpd_encoding_free(&e);
    nlpd_tokenizer_free(tok);
    return 0;
}

/* Token ids of one line: from the tokenizer, or given directly as "input_ids" (parity checks). */
struct ids {
    const int32_t *ids, *types;
    size_t n;
    int32_t *own_ids, *own_types; /* buffers for ids given directly */
    size_t cap;
};

static int ids_from_json(json_t *root, struct ids *d, char *msg, size_t msg_cap)
{
    json_t *ids = json_object_get(root, "input_ids"), *types = json_object_get(root, "token_type_ids");
    size_t n = json_array_size(ids);
    if (!json_is_array(ids) || n == 0 || (types && (!json_is_array(types) || json_array_size(types) != n))) {
        snprintf(msg, msg_cap, "\"input_ids\" must be a non-empty array of ids (\"token_type_ids\" as long)");
        return -1;
    }
    if (n > d->cap) {
        int32_t *a = realloc(d->own_ids, n * sizeof *a);
        if (a)
            d->own_ids = a;
        int32_t *b = a ? realloc(d->own_types, n * sizeof *b) : NULL;
        if (b)
            d->own_types = b;
        if (!a || !b) {
            snprintf(msg, msg_cap, "out of memory");
            return -1;
        }
        d->cap = n;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(ids, i), *t = types ? json_array_get(types, i) : NULL;
        if (!json_is_integer(v) || json_integer_value(v) < INT32_MIN || json_integer_value(v) > INT32_MAX ||
            (t && (!json_is_integer(t) || json_integer_value(t) < 0 || json_integer_value(t) > INT32_MAX))) {
            snprintf(msg, msg_cap, "\"input_ids\"[%zu] or \"token_type_ids\"[%zu] is not an integer id", i, i);
            return -1;
        }
        d->own_ids[i] = (int32_t)json_integer_value(v);
        d->own_types[i] = t ? (int32_t)json_integer_value(t) : 0;
    }
    d->ids = d->own_ids;
    d->types = d->own_types;
    d->n = n;
    return 0;
}

int nlpd_cmd_number(const char *cmd, const char *opt, const char *v, long lo, long hi, long *out)
{
    char *end;
    long n = v ? strtol(v, &end, 10) : 0;
    if (!v || *end || end == v || n < lo || n > hi) {
        fprintf(stderr, "nlpd %s: %s must be a number in %ld .. %ld\n", cmd, opt, lo, hi);
        return -1;
    }
    *out = n;
    return 0;
}

void nlpd_cmd_log_backend(const char *line)
{
    fprintf(stderr, "nlpd infer: %s\n", line);
}

int nlpd_cmd_infer(int argc, char **argv)
{
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--model") && nlpd_cmd_is_seq2seq(argv[i + 1]))
            return nlpd_cmd_is_seq2seq(argv[i + 1]) == 2 ? nlpd_cmd_infer_m2m(argc, argv)
                                                         : nlpd_cmd_infer_seq2seq(argc, argv);
    struct args a;
    if (parse_args(argc, argv, &a))
        return 2;
    struct nlpd_error err = {0};
    struct nlpd_encoder_opts opts = {.threads = a.threads, .backend = a.backend, .device = a.device, .dtype = a.dtype};
    if (a.backend || a.dtype) {
        if (!a.backend)
            opts.backend = "auto";
        nlpd_kernels_set_logger(nlpd_cmd_log_backend); /* says which backend ran it, and why */
    }
    struct nlpd_encoder *enc = nlpd_encoder_load(a.model, &opts, &err);
    if (!enc) {
        fprintf(stderr, "nlpd infer: %s\n", err.message);
        return 1;
    }
    enum nlpd_hf_task task = nlpd_encoder_task(enc);
    if (task == NLPD_HF_TASK_NONE) {
        fprintf(stderr, "nlpd infer: %s has no sequence- or token-classification head\n", a.model);
        nlpd_encoder_free(enc);
        return 1;
    }
    /* a missing tokenizer is not fatal: lines may carry input_ids */
    struct nlpd_error terr = {0};
    struct nlpd_tokenizer *tok = nlpd_tokenizer_load(a.model, &terr);
    size_t max_seq = (size_t)nlpd_encoder_max_seq(enc);
    size_t max_length = a.max_length && a.max_length < max_seq ? a.max_length : max_seq;
    int NL = nlpd_encoder_num_labels(enc);
    struct nlpd_encoder_ws *ws = nlpd_encoder_ws_new(enc, 1, 64, &err);
    if (!ws) {
        fprintf(stderr, "nlpd infer: %s\n", err.message);
        nlpd_tokenizer_free(tok);
        nlpd_encoder_free(enc);
        return 1;
    }
    struct nlpd_encoding e = {0};
    struct ids d = {0};
    struct nlpd_buf o = {0};
    float *logits = NULL;
    size_t logits_cap = 0;
    char *line = NULL, msg[NLPD_ERROR_MSG_MAX + 64];
    size_t cap = 0;
    ssize_t got;
    long long lineno = 0;
    int has_types = nlpd_encoder_config(enc)->type_vocab_size > 0;
    while ((got = getline(&line, &cap, stdin)) >= 0) {
        lineno++;
        size_t len = (size_t)got;
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            len--;
        json_t *root = parse_line(line, len, 1, msg, sizeof msg);
        if (!root) {
            nlpd_out_error(lineno, msg);
            continue;
        }
        int rc;
        if (json_object_get(root, "text")) {
            if (!tok) {
                nlpd_out_error(lineno, terr.message);
                json_decref(root);
                continue;
            }
            rc = encode(tok, root, max_length, &e, &err);
            if (rc)
                snprintf(msg, sizeof msg, "%s", err.message);
            d.ids = e.ids;
            d.types = e.type_ids;
            d.n = e.n;
        } else {
            rc = ids_from_json(root, &d, msg, sizeof msg);
        }
        json_decref(root);
        if (rc) {
            nlpd_out_error(lineno, msg);
            continue;
        }
        size_t need = (task == NLPD_HF_TASK_TOKEN_CLS ? d.n : 1) * (size_t)NL;
        if (need > logits_cap) {
            float *l = realloc(logits, need * sizeof *l);
            if (!l) {
                nlpd_out_error(lineno, "out of memory");
                continue;
            }
            logits = l;
            logits_cap = need;
        }
        if (d.n == 0 || d.n > max_seq) {
            snprintf(msg, sizeof msg, "%zu tokens: the model takes 1 .. %zu", d.n, max_seq);
            nlpd_out_error(lineno, msg);
            continue;
        }
        struct nlpd_encoder_input in = {1, (int)d.n, d.ids, NULL, has_types ? d.types : NULL};
        struct nlpd_encoder_output res = {.logits = logits};
        if (nlpd_encoder_forward(enc, ws, &in, &res, &err)) {
            nlpd_out_error(lineno, err.message);
            continue;
        }
        nlpd_buf_reset(&o);
        nlpd_out_str(&o, "{\"input_ids\": ");
        nlpd_out_ints(&o, d.ids, d.n);
        if (task == NLPD_HF_TASK_SEQ_CLS) {
            nlpd_out_str(&o, ", \"logits\": [");
            for (int l = 0; l < NL; l++) {
                if (l)
                    nlpd_out_str(&o, ", ");
                nlpd_out_float(&o, logits[l]);
            }
            nlpd_out_str(&o, "]}\n");
        } else {
            nlpd_out_str(&o, ", \"token_logits\": [");
            for (size_t t = 0; t < d.n; t++) {
                nlpd_out_str(&o, t ? ", [" : "[");
                for (int l = 0; l < NL; l++) {
                    if (l)
                        nlpd_out_str(&o, ", ");
                    nlpd_out_float(&o, logits[t * NL + l]);
                }
                nlpd_out_str(&o, "]");
            }
            nlpd_out_str(&o, "]}\n");
        }
        nlpd_out_line(&o, lineno, stdout);
    }
    free(line);
    nlpd_buf_free(&o);
    free(logits);
    free(d.own_ids);
    free(d.own_types);
    nlpd_encoding_free(&e);
    nlpd_encoder_ws_free(ws);
    nlpd_tokenizer_free(tok);
    nlpd_encoder_free(enc);
    return 0;
}
