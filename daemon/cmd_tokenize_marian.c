/* `nlpd tokenize` on a Marian (OPUS-MT) folder: source.spm + vocab.json through marian_tok.h, which has no
 * offsets, so lines give {"ids"} ({"text"} with --decode), as MarianTokenizer(text)["input_ids"] and
 * tokenizer.decode(ids) do. */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd_model.h"
#include "json_out.h"
#include "marian_tok.h"

static int one_line(const struct nlpd_marian_tok *t, const char *line, size_t len, int decode, size_t max_length,
                    struct nlpd_buf *o, int32_t **ids, size_t *cap, char *msg, size_t msg_cap)
{
    json_error_t je;
    json_t *root = len ? json_loadb(line, len, JSON_REJECT_DUPLICATES, &je) : NULL;
    struct nlpd_error err = {0};
    int rc = -1;
    if (!root) {
        snprintf(msg, msg_cap, len ? "invalid JSON: %s" : "empty line", je.text);
        return -1;
    }
    json_t *text = json_object_get(root, "text"), *in = json_object_get(root, "ids");
    json_t *skip = json_object_get(root, "skip_special_tokens");
    if (!decode) {
        size_t n = 0;
        if (!json_is_string(text))
            snprintf(msg, msg_cap, text ? "\"text\" is not a string" : "missing \"text\"");
        else if (json_object_get(root, "text_pair") && !json_is_null(json_object_get(root, "text_pair")))
            snprintf(msg, msg_cap, "a Marian tokenizer takes no \"text_pair\"");
        else if (nlpd_marian_tok_encode(t, json_string_value(text), json_string_length(text), max_length, ids, &n, cap,
                                        &err) < 0)
            snprintf(msg, msg_cap, "%s", err.message);
        else {
            nlpd_out_str(o, "{\"ids\": ");
            nlpd_out_ints(o, *ids, n);
            nlpd_out_str(o, "}\n");
            rc = 0;
        }
    } else if (!json_is_array(in)) {
        snprintf(msg, msg_cap, "missing \"ids\" (a Marian folder decodes ids only)");
    } else {
        size_t n = json_array_size(in);
        int32_t *v = malloc((n ? n : 1) * sizeof *v);
        char *out = NULL;
        size_t olen = 0;
        rc = v ? 0 : -1;
        for (size_t i = 0; v && i < n && !rc; i++) {
            json_t *x = json_array_get(in, i);
            if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) > INT32_MAX) {
                snprintf(msg, msg_cap, "\"ids\"[%zu] is not an id", i);
                rc = -1;
            } else {
                v[i] = (int32_t)json_integer_value(x);
            }
        }
        if (!v)
            snprintf(msg, msg_cap, "out of memory");
        else if (!rc && nlpd_marian_tok_decode(t, v, n, json_is_true(skip), &out, &olen, &err) < 0) {
            snprintf(msg, msg_cap, "%s", err.message);
            rc = -1;
        }
        if (!rc) {
            nlpd_out_str(o, "{\"text\": ");
            nlpd_out_jstr(o, out, olen);
            nlpd_out_str(o, "}\n");
        }
        free(out);
        free(v);
    }
    json_decref(root);
    return rc;
}

int nlpd_cmd_tokenize_marian(const char *model, int decode, size_t max_length)
{
    struct nlpd_error err = {0};
    struct nlpd_marian_tok *t = nlpd_marian_tok_load(model, &err);
    if (!t) {
        fprintf(stderr, "nlpd tokenize: %s\n", err.message);
        return 1;
    }
    struct nlpd_buf o = {0};
    int32_t *ids = NULL;
    size_t cap = 0, lcap = 0;
    char *line = NULL, msg[NLPD_ERROR_MSG_MAX + 64];
    ssize_t got;
    long long lineno = 0;
    while ((got = getline(&line, &lcap, stdin)) >= 0) {
        lineno++;
        size_t len = (size_t)got;
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            len--;
        if (one_line(t, line, len, decode, max_length, &o, &ids, &cap, msg, sizeof msg) < 0) {
            nlpd_out_error(lineno, msg);
            nlpd_buf_reset(&o);
            continue;
        }
        nlpd_out_line(&o, lineno, stdout);
    }
    free(line);
    free(ids);
    nlpd_buf_free(&o);
    nlpd_marian_tok_free(t);
    return 0;
}
