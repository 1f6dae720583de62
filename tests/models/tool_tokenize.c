/* tool_tokenize MODEL_DIR < jsonl: the tokenizer of a model folder on {"text", "text_pair"?} lines, printing
 * {"ids":[...],"tokens":[...],"offsets":[[s,e],...],"type_ids":[...]} per line (offsets in code points), for parity
 * checks against the Rust `tokenizers` library (tests/models/test_tokenizer_ref.sh). Optional "max_length". */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s MODEL_DIR < jsonl\n", argv[0]);
        return 2;
    }
    struct nlpd_error err = {0};
    struct nlpd_tokenizer *t = nlpd_tokenizer_load(argv[1], &err);
    if (!t) {
        fprintf(stderr, "error: %s\n", err.message);
        return 1;
    }
    struct nlpd_encoding enc = {0};
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int status = 0;
    while ((n = getline(&line, &cap, stdin)) > 0) {
        json_error_t je;
        json_t *j = json_loadb(line, (size_t)n, JSON_ALLOW_NUL, &je);
        json_t *text = json_object_get(j, "text"), *pair = json_object_get(j, "text_pair");
        json_t *ml = json_object_get(j, "max_length");
        if (!json_is_string(text)) {
            printf("{\"error\":\"bad line\"}\n");
            json_decref(j);
            status = 1;
            continue;
        }
        int rc = nlpd_tokenizer_encode(t, json_string_value(text), json_string_length(text),
                                       json_is_string(pair) ? json_string_value(pair) : NULL,
                                       json_is_string(pair) ? json_string_length(pair) : 0,
                                       json_is_integer(ml) ? (size_t)json_integer_value(ml) : 0, &enc, &err);
        json_t *o = json_object();
        if (rc < 0) {
            json_object_set_new(o, "error", json_string(err.message));
            status = 1;
        } else {
            json_t *ids = json_array(), *toks = json_array(), *offs = json_array(), *tys = json_array();
            for (size_t i = 0; i < enc.n; i++) {
                json_array_append_new(ids, json_integer(enc.ids[i]));
                const char *s = nlpd_tokenizer_id_to_token(t, enc.ids[i]);
                json_array_append_new(toks, s ? json_string(s) : json_null());
                json_t *p = json_array();
                json_array_append_new(p, json_integer(enc.starts[i]));
                json_array_append_new(p, json_integer(enc.ends[i]));
                json_array_append_new(offs, p);
                json_array_append_new(tys, json_integer(enc.type_ids[i]));
            }
            json_object_set_new(o, "ids", ids);
            json_object_set_new(o, "tokens", toks);
            json_object_set_new(o, "offsets", offs);
            json_object_set_new(o, "type_ids", tys);
        }
        char *s = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
        printf("%s\n", s ? s : "{}");
        free(s);
        json_decref(o);
        json_decref(j);
    }
    free(line);
    nlpd_encoding_free(&enc);
    nlpd_tokenizer_free(t);
    return status;
}
