/* `nlpd infer` for translation models: what Marian and M2M100 / NLLB share (see cmd_seq2seq.h). Lines go
 * through the model in batches of --batch (padded, as a stage batches them); --debug adds the encoder output and
 * the raw first-step logits and per-step top-5, for parity checks. */
#include "cmd_seq2seq.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd_model.h"

int nlpd_s2s_parse(int argc, char **argv, int langs, struct nlpd_s2s_args *a)
{
    *a = (struct nlpd_s2s_args){.forced_bos = -1,
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
        } else if (langs && !strcmp(o, "--src-lang")) {
            a->src_lang = v;
        } else if (langs && !strcmp(o, "--tgt-lang")) {
            a->tgt_lang = v;
        } else if (langs && !strcmp(o, "--forced-bos-token-id")) {
            rc = nlpd_cmd_number("infer", o, v, 0, 1 << 24, &n);
            a->forced_bos = (int)n;
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
                fprintf(stderr, "nlpd infer: --dtype must be auto, fp32, fp16, bf16 or int8\n");
                return -1;
            }
        } else if (!strcmp(o, "--device")) {
            rc = nlpd_cmd_number("infer", o, v, 0, 63, &n);
            a->device = (int)n;
        } else if (!strcmp(o, "--batch")) {
            rc = nlpd_cmd_number("infer", o, v, 1, NLPD_S2S_BATCH_MAX, &n);
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
        fprintf(stderr,
                "usage: nlpd infer --model DIR %s[--num-beams K] [--max-length N | --max-new-tokens N] "
                "[--length-penalty X] [--early-stopping true|false|never] [--no-repeat-ngram-size N] "
                "[--min-length N] [--forced-eos-token-id N|-1] [--batch N] [--backend auto|cpu|cuda] "
                "[--dtype auto|fp32|fp16|bf16|int8] [--device N] [--threads N] [--debug] < lines.jsonl\n",
                langs ? "[--src-lang CODE] [--tgt-lang CODE | --forced-bos-token-id N] " : "");
        return -1;
    }
    return 0;
}

void nlpd_s2s_set_backend(const struct nlpd_s2s_args *a)
{
    if (!a->backend && !a->dtype)
        return;
    struct nlpd_backend_opts d;
    nlpd_backend_opts_default(&d);
    nlpd_kernels_set_defaults(a->backend ? a->backend : "auto", a->device,
                              a->dtype ? (enum nlpd_dtype)nlpd_dtype_parse(a->dtype) : d.dtype);
    nlpd_kernels_set_logger(nlpd_cmd_log_backend);
}

void nlpd_s2s_gen_params(const struct nlpd_s2s_args *a, struct nlpd_gen_params *gp)
{
    if (a->num_beams > 0)
        gp->num_beams = a->num_beams;
    if (a->max_new_tokens > 0)
        gp->max_length = a->max_new_tokens + 1;
    else if (a->max_length > 0)
        gp->max_length = a->max_length;
    if (a->has_length_penalty)
        gp->length_penalty = a->length_penalty;
    if (a->early >= 0)
        gp->early_stopping = (enum nlpd_early_stopping)a->early;
    if (a->no_repeat >= 0)
        gp->no_repeat_ngram_size = a->no_repeat;
    if (a->min_length >= 0)
        gp->min_length = a->min_length;
    if (a->forced_eos >= -1)
        gp->forced_eos = a->forced_eos;
}

char *nlpd_s2s_dup(const char *msg)
{
    char *s = strdup(msg);
    return s ? s : strdup("out of memory");
}

struct debug_ctx {
    struct nlpd_s2s_item **items; /* by sentence index in the batch */
    int vocab;
};

static void on_logits(void *ctx, int step, const int32_t *sent, int rows, const float *logits, int vocab)
{
    struct debug_ctx *d = ctx;
    for (int r = 0; r < rows; r++) {
        struct nlpd_s2s_item *it = d->items[sent[r]];
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

static void item_clear(struct nlpd_s2s_item *it)
{
    free(it->error);
    free(it->ids);
    free(it->hidden);
    free(it->first);
    nlpd_buf_free(&it->top5);
    free(it->out.ids);
    memset(it, 0, sizeof *it);
}

/* Reads one input line into it (ids from "input_ids" or the tokenizer); an error is kept on the item. */
static void read_item(struct nlpd_s2s_item *it, const char *line, size_t len, const struct nlpd_s2s_model *md)
{
    json_error_t je;
    json_t *root = json_loadb(line, len, JSON_REJECT_DUPLICATES, &je);
    char msg[NLPD_ERROR_MSG_MAX + 64];
    if (!root || !json_is_object(root)) {
        snprintf(msg, sizeof msg, root ? "not a JSON object" : "invalid JSON: %s (column %d)", je.text, je.column);
        it->error = nlpd_s2s_dup(msg);
        json_decref(root);
        return;
    }
    if (md->prepare)
        md->prepare(md->ctx, it, root);
    if (it->error) {
        json_decref(root);
        return;
    }
    json_t *text = json_object_get(root, "text"), *ids = json_object_get(root, "input_ids");
    if (json_is_string(text)) {
        md->encode_text(md->ctx, it, root, text);
    } else if (json_is_array(ids) && json_array_size(ids) > 0 && json_array_size(ids) <= (size_t)md->max_pos) {
        it->n = json_array_size(ids);
        if (!(it->ids = malloc(it->n * sizeof *it->ids))) {
            it->error = nlpd_s2s_dup("out of memory");
        } else {
            for (size_t i = 0; i < it->n && !it->error; i++) {
                json_t *v = json_array_get(ids, i);
                if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX)
                    it->error = nlpd_s2s_dup("\"input_ids\" must hold token ids");
                else
                    it->ids[i] = (int32_t)json_integer_value(v);
            }
        }
    } else {
        snprintf(msg, sizeof msg, "expected {\"text\": string} or {\"input_ids\": [1 .. %d ids]}", md->max_pos);
        it->error = nlpd_s2s_dup(msg);
    }
    json_decref(root);
}

static void emit(const struct nlpd_s2s_item *it, const struct nlpd_s2s_model *md, int beams)
{
    const int H = md->d_model, V = md->dec_vocab;
    if (it->error) {
        nlpd_out_error(it->line, it->error);
        return;
    }
    struct nlpd_buf o = {0};
    nlpd_out_str(&o, "{\"input_ids\": ");
    nlpd_out_ints(&o, it->ids, it->n);
    nlpd_out_str(&o, ", \"output_ids\": ");
    nlpd_out_ints(&o, it->out.ids, it->out.n);
    if (md->tok) {
        char *text = NULL;
        size_t len = 0;
        struct nlpd_error err = {0};
        nlpd_out_str(&o, ", \"text\": ");
        if (md->decode(md->tok, it->out.ids, it->out.n, &text, &len, &err) == 0)
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

/* Runs the items that have no error as one batch: all of them (tgt < 0), or those for target tgt not yet run. */
static void run_batch(const struct nlpd_s2s_model *md, struct nlpd_s2s_item *items, int n,
                      const struct nlpd_gen_params *gp, int debug, int32_t tgt)
{
    const int H = md->d_model;
    const int32_t *ids[NLPD_S2S_BATCH_MAX];
    size_t lens[NLPD_S2S_BATCH_MAX], maxlen = 0;
    struct nlpd_s2s_item *live[NLPD_S2S_BATCH_MAX];
    int k = 0;
    for (int i = 0; i < n; i++)
        if (!items[i].error && (tgt < 0 || (items[i].tgt == tgt && !items[i].out.ids))) {
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
    struct debug_ctx dctx = {live, md->dec_vocab};
    struct nlpd_gen_params p = *gp;
    if (tgt >= 0) {
        p.has_forced_bos = 1;
        p.forced_bos = tgt;
    }
    if (debug) {
        p.on_logits = on_logits;
        p.on_logits_ctx = &dctx;
    }
    int rc = !outs || (debug && !hidden) ? nlpd_error_set(&err, NLPD_ENOMEM, 0, "out of memory")
                                         : md->encode(md->m, md->ws, ids, lens, k, hidden, &err);
    if (!rc)
        rc = md->generate(md->m, md->ws, &p, outs, &err);
    for (int i = 0; i < k; i++) {
        if (rc) {
            live[i]->error = nlpd_s2s_dup(err.message);
            continue;
        }
        live[i]->out = outs[i];
        if (hidden && (live[i]->hidden = malloc(live[i]->n * H * sizeof(float))))
            memcpy(live[i]->hidden, hidden + (size_t)i * maxlen * H, live[i]->n * H * sizeof(float));
    }
    free(hidden);
    free(outs);
}

int nlpd_s2s_run(const struct nlpd_s2s_args *a, const struct nlpd_s2s_model *md, const struct nlpd_gen_params *gp)
{
    struct nlpd_s2s_item *items = calloc((size_t)a->batch, sizeof *items);
    if (!items)
        return 1;
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
            read_item(&items[n], line, len, md);
            n++;
        } else {
            eof = 1;
        }
        if (n == a->batch || (eof && n)) {
            if (!md->per_target)
                run_batch(md, items, n, gp, a->debug, -1);
            else
                for (int i = 0; i < n; i++) /* one sub-batch per target language, in first-seen order */
                    if (!items[i].error && !items[i].out.ids)
                        run_batch(md, items, n, gp, a->debug, items[i].tgt);
            for (int i = 0; i < n; i++) {
                emit(&items[i], md, gp->num_beams);
                item_clear(&items[i]);
            }
            fflush(stdout);
            n = 0;
        }
    }
    free(line);
    free(items);
    return 0;
}
