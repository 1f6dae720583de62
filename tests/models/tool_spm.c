/* Test driver for the SentencePiece and Marian tokenizers (tests/models/test_spm_parity.sh): JSON lines in, one
 * JSON line out per input line. Byte strings travel as hex so that any bytes (invalid UTF-8 included) pass.
 *   tool_spm spm MODEL      {"hex": H}            -> {"pieces": [hex...], "ids": [...], "decoded": hex}
 *                           {"decode_ids": [...]} -> {"decoded": hex} | {"error": msg}
 *   tool_spm marian DIR     {"hex": H, "max_length": N} -> {"ids": [...]}
 *                           {"decode": [...], "skip": 0|1} -> {"text": hex} | {"error": msg}
 *                           {"info": 1} -> {"eos", "pad", "unk", "langs": [...]} */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "marian_tok.h"
#include "spm.h"

static char *from_hex(const char *h, size_t *n)
{
    size_t l = strlen(h) / 2;
    char *o = malloc(l + 1);
    for (size_t i = 0; i < l; i++) {
        unsigned v;
        sscanf(h + 2 * i, "%2x", &v);
        o[i] = (char)v;
    }
    o[l] = 0;
    *n = l;
    return o;
}

static json_t *to_hex(const char *s, size_t n)
{
    char *o = malloc(2 * n + 1);
    for (size_t i = 0; i < n; i++)
        sprintf(o + 2 * i, "%02x", (unsigned)(unsigned char)s[i]);
    o[2 * n] = 0;
    json_t *j = json_string(o);
    free(o);
    return j;
}

int main(int argc, char **argv)
{
    if (argc != 3 || (strcmp(argv[1], "spm") && strcmp(argv[1], "marian"))) {
        fprintf(stderr, "usage: %s spm MODEL | marian DIR  (JSON lines on stdin)\n", argv[0]);
        return 2;
    }
    struct nlpd_error err = {0};
    struct nlpd_spm *m = NULL;
    struct nlpd_marian_tok *t = NULL;
    if (!strcmp(argv[1], "spm"))
        m = nlpd_spm_load(argv[2], &err);
    else
        t = nlpd_marian_tok_load(argv[2], &err);
    if (!m && !t) {
        fprintf(stderr, "load: %s\n", err.message);
        return 1;
    }
    struct nlpd_spm_pieces pc = {0};
    int32_t *ids = NULL;
    size_t nids = 0, idcap = 0;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t ll;
    while ((ll = getline(&line, &lcap, stdin)) > 0) {
        json_error_t je;
        json_t *in = json_loadb(line, (size_t)ll, 0, &je);
        json_t *out = json_object();
        if (!in) {
            json_object_set_new(out, "error", json_string("bad JSON line"));
        } else if (m && json_object_get(in, "hex")) {
            size_t n;
            char *s = from_hex(json_string_value(json_object_get(in, "hex")), &n);
            if (nlpd_spm_encode(m, s, n, &pc, &err) < 0) {
                json_object_set_new(out, "error", json_string(err.message));
            } else {
                json_t *ps = json_array(), *is = json_array();
                const char **pp = malloc((pc.n + 1) * sizeof *pp);
                for (size_t i = 0; i < pc.n; i++) {
                    json_array_append_new(ps, to_hex(pc.buf + pc.off[i], pc.len[i]));
                    json_array_append_new(is, json_integer(pc.id[i]));
                    pp[i] = pc.buf + pc.off[i];
                }
                json_object_set_new(out, "pieces", ps);
                json_object_set_new(out, "ids", is);
                char *txt;
                size_t tl;
                if (nlpd_spm_decode_pieces(m, pp, pc.len, pc.n, &txt, &tl, &err) == 0) {
                    json_object_set_new(out, "decoded", to_hex(txt, tl));
                    free(txt);
                } else {
                    json_object_set_new(out, "error", json_string(err.message));
                }
                free(pp);
            }
            free(s);
        } else if (m && json_object_get(in, "decode_ids")) {
            json_t *a = json_object_get(in, "decode_ids");
            size_t n = json_array_size(a);
            int32_t *v = malloc((n + 1) * sizeof *v);
            for (size_t i = 0; i < n; i++)
                v[i] = (int32_t)json_integer_value(json_array_get(a, i));
            char *txt;
            size_t tl;
            if (nlpd_spm_decode_ids(m, v, n, &txt, &tl, &err) == 0) {
                json_object_set_new(out, "decoded", to_hex(txt, tl));
                free(txt);
            } else {
                json_object_set_new(out, "error", json_string(err.message));
            }
            free(v);
        } else if (t && json_object_get(in, "hex")) {
            size_t n;
            char *s = from_hex(json_string_value(json_object_get(in, "hex")), &n);
            size_t maxl = (size_t)json_integer_value(json_object_get(in, "max_length"));
            if (nlpd_marian_tok_encode(t, s, n, maxl, &ids, &nids, &idcap, &err) < 0) {
                json_object_set_new(out, "error", json_string(err.message));
            } else {
                json_t *is = json_array();
                for (size_t i = 0; i < nids; i++)
                    json_array_append_new(is, json_integer(ids[i]));
                json_object_set_new(out, "ids", is);
            }
            free(s);
        } else if (t && json_object_get(in, "decode")) {
            json_t *a = json_object_get(in, "decode");
            size_t n = json_array_size(a);
            int32_t *v = malloc((n + 1) * sizeof *v);
            for (size_t i = 0; i < n; i++)
                v[i] = (int32_t)json_integer_value(json_array_get(a, i));
            char *txt;
            size_t tl;
            int skip =
                json_is_true(json_object_get(in, "skip")) || json_integer_value(json_object_get(in, "skip")) != 0;
            if (nlpd_marian_tok_decode(t, v, n, skip, &txt, &tl, &err) == 0) {
                json_object_set_new(out, "text", to_hex(txt, tl));
                free(txt);
            } else {
                json_object_set_new(out, "error", json_string(err.message));
            }
            free(v);
        } else if (t && json_object_get(in, "info")) {
            json_object_set_new(out, "eos", json_integer(nlpd_marian_tok_eos(t)));
            json_object_set_new(out, "pad", json_integer(nlpd_marian_tok_pad(t)));
            json_object_set_new(out, "unk", json_integer(nlpd_marian_tok_unk(t)));
            json_t *ls = json_array();
            for (size_t i = 0; i < nlpd_marian_tok_lang_count(t); i++)
                json_array_append_new(ls, json_string(nlpd_marian_tok_lang_code(t, i)));
            json_object_set_new(out, "langs", ls);
        } else {
            json_object_set_new(out, "error", json_string("unknown request"));
        }
        char *o = json_dumps(out, JSON_COMPACT | JSON_ENSURE_ASCII);
        puts(o);
        free(o);
        json_decref(out);
        json_decref(in);
    }
    free(line);
    free(ids);
    nlpd_spm_pieces_free(&pc);
    nlpd_spm_free(m);
    nlpd_marian_tok_free(t);
    return 0;
}
