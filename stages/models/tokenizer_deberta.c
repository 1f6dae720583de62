/* DeBERTa-v2/v3 folders without tokenizer.json (spm.model + tokenizer_config.json): the fast tokenizer
 * transformers' DebertaV2Converter makes of them, written here as tokenizer.json text and loaded by the JSON
 * path, so that both kinds of folder share one implementation. Vocabulary = the spm pieces in order (no offset),
 * normaliser [Lowercase] Strip, Precompiled (the model's charsmap), Replace(" {2,}", " "), pre-tokeniser
 * [Punctuation isolated when split_by_punct] Metaspace (prepend "always"),
 * "[CLS] A [SEP] (B [SEP])" with type ids 0 / 1, Metaspace decoder. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protobuf.h"
#include "tokenizer_internal.h"

#define SPM_MAX (1u << 30)

static char *read_file(const char *path, size_t *len, struct nlpd_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        nlpd_error_set(err, NLPD_EIO, 0, "%s: cannot open", path);
        return NULL;
    }
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            cap = cap ? 2 * cap : 1 << 16;
            char *nb = cap <= SPM_MAX ? realloc(buf, cap) : NULL;
            if (!nb) {
                free(buf);
                fclose(f);
                nlpd_error_set(err, NLPD_ERANGE, 0, "%s: too large or out of memory", path);
                return NULL;
            }
            buf = nb;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (!got)
            break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        nlpd_error_set(err, NLPD_EIO, 0, "%s: read error", path);
        return NULL;
    }
    *len = n;
    return buf;
}

static char *base64(const uint8_t *p, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *o = malloc((n + 2) / 3 * 4 + 1), *w = o;
    if (!o)
        return NULL;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
        *w++ = tab[v >> 18 & 63];
        *w++ = tab[v >> 12 & 63];
        *w++ = i + 1 < n ? tab[v >> 6 & 63] : '=';
        *w++ = i + 2 < n ? tab[v & 63] : '=';
    }
    *w = 0;
    return o;
}

/* ModelProto -> the converter's "model" object (Unigram vocab, unk_id, byte_fallback) and the charsmap. */
static int read_proto(const char *path, const uint8_t *data, size_t len, json_t *model, char **charsmap_b64,
                      struct nlpd_error *err)
{
    struct nlpd_pb b = {data, data + len};
    json_t *vocab = json_array();
    long long unk_id = 0, model_type = 1;
    int byte_fallback = 0;
    const uint8_t *cm = NULL;
    size_t cm_len = 0, np = 0;
    if (!vocab)
        return nlpd_error_set(err, NLPD_ENOMEM, 0, "%s: out of memory", path);
    json_object_set_new(model, "vocab", vocab);
    while (b.p < b.end) {
        uint32_t f, wt, f2, wt2;
        uint64_t v, v2;
        struct nlpd_pb sub = {0}, s2 = {0};
        if (nlpd_pb_field(&b, &f, &wt, &v, &sub) < 0)
            return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: corrupt protobuf (ModelProto)", path);
        if (wt != 2)
            continue;
        while (sub.p < sub.end) { /* pieces {piece 1, score 2}, trainer_spec {model_type 3, byte_fallback 35,
                                     unk_id 40}, normalizer_spec {precompiled_charsmap 2} */
            if (nlpd_pb_field(&sub, &f2, &wt2, &v2, &s2) < 0)
                return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: corrupt protobuf (field %u)", path, f);
            if (f == 1 && f2 == 1 && wt2 == 2) {
                json_t *pair = json_array();
                if (!pair || json_array_append_new(vocab, pair) ||
                    json_array_append_new(pair, json_stringn((const char *)s2.p, (size_t)(s2.end - s2.p))) ||
                    json_array_append_new(pair, json_real(0.0)))
                    return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: pieces[%zu]: not UTF-8 or out of memory", path,
                                          np);
                np++;
            } else if (f == 1 && f2 == 2 && wt2 == 5 && json_array_size(vocab) == np && np) {
                uint32_t u = (uint32_t)v2;
                float sc;
                memcpy(&sc, &u, 4);
                json_array_set_new(json_array_get(vocab, np - 1), 1, json_real(sc));
            } else if (f == 2 && f2 == 3 && wt2 == 0) {
                model_type = (long long)v2;
            } else if (f == 2 && f2 == 35 && wt2 == 0) {
                byte_fallback = v2 != 0;
            } else if (f == 2 && f2 == 40 && wt2 == 0) {
                unk_id = (long long)(int32_t)v2;
            } else if (f == 3 && f2 == 2 && wt2 == 2) {
                cm = s2.p;
                cm_len = (size_t)(s2.end - s2.p);
            }
        }
    }
    if (model_type != 1)
        return nlpd_error_set(err, NLPD_EFORMAT, 0,
                              "%s: model_type %lld: only Unigram SentencePiece models are "
                              "supported",
                              path, model_type);
    if (np < 1 || unk_id < 0 || (size_t)unk_id >= np)
        return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: %zu pieces, unk_id %lld", path, np, unk_id);
    json_object_set_new(model, "type", json_string("Unigram"));
    json_object_set_new(model, "unk_id", json_integer(unk_id));
    json_object_set_new(model, "byte_fallback", json_boolean(byte_fallback));
    if (cm_len && !(*charsmap_b64 = base64(cm, cm_len)))
        return nlpd_error_set(err, NLPD_ENOMEM, 0, "%s: out of memory", path);
    return 0;
}

static int cfg_bool(json_t *cfg, const char *key, int def)
{
    json_t *v = cfg ? json_object_get(cfg, key) : NULL;
    return json_is_boolean(v) ? json_is_true(v) : def;
}

static const char *cfg_token(json_t *cfg, json_t *map, const char *role, const char *def)
{
    json_t *srcs[2] = {cfg, map};
    for (int i = 0; i < 2; i++) {
        json_t *v = srcs[i] ? json_object_get(srcs[i], role) : NULL;
        if (json_is_string(v))
            return json_string_value(v);
        if (json_is_object(v) && json_is_string(json_object_get(v, "content")))
            return json_string_value(json_object_get(v, "content"));
    }
    return def;
}

static json_t *added(long long id, const char *content, int special, int normalized, int lstrip, int rstrip,
                     int single_word)
{
    return json_pack("{s:I, s:s, s:b, s:b, s:b, s:b, s:b}", "id", (json_int_t)id, "content", content, "single_word",
                     single_word, "lstrip", lstrip, "rstrip", rstrip, "normalized", normalized, "special", special);
}

static long long piece_id(json_t *vocab, const char *s)
{
    size_t i;
    json_t *v;
    json_array_foreach(vocab, i, v) if (!strcmp(json_string_value(json_array_get(v, 0)), s)) return (long long)i;
    return -1;
}

/* added_tokens: tokenizer_config.json's added_tokens_decoder as given; else the special-token roles found in the
 * vocabulary or added_tokens.json (older folders), as the slow tokenizer registers them. */
static json_t *added_tokens(const char *dir, json_t *cfg, json_t *map, json_t *vocab)
{
    json_t *out = json_array(), *d = cfg ? json_object_get(cfg, "added_tokens_decoder") : NULL;
    if (!out)
        return NULL;
    if (json_is_object(d)) {
        const char *key;
        json_t *v;
        json_object_foreach(d, key, v)
        {
            json_t *c = json_object_get(v, "content");
            if (!json_is_string(c))
                continue;
            int special = cfg_bool(v, "special", 0);
            json_array_append_new(out, added(strtoll(key, NULL, 10), json_string_value(c), special,
                                             cfg_bool(v, "normalized", !special), cfg_bool(v, "lstrip", 0),
                                             cfg_bool(v, "rstrip", 0), cfg_bool(v, "single_word", 0)));
        }
        return out;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/added_tokens.json", dir ? dir : ".");
    json_t *extra = dir ? json_load_file(path, 0, NULL) : NULL;
    static const char *roles[] = {"pad_token", "cls_token", "sep_token", "unk_token", "mask_token"};
    static const char *defs[] = {"[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"};
    for (int i = 0; i < 5; i++) {
        const char *tok = cfg_token(cfg, map, roles[i], defs[i]);
        long long id = piece_id(vocab, tok);
        json_t *e = json_is_object(extra) ? json_object_get(extra, tok) : NULL;
        if (id < 0 && json_is_integer(e))
            id = json_integer_value(e);
        if (id >= 0)
            json_array_append_new(out, added(id, tok, 1, 0, 0, 0, 0));
    }
    json_decref(extra);
    return out;
}

struct nlpd_tokenizer *nlpd_tok_load_deberta_spm(const char *dir, json_t *cfg, json_t *map, struct nlpd_error *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/spm.model", dir);
    size_t len = 0;
    char *data = read_file(path, &len, err);
    if (!data)
        return NULL;
    struct nlpd_tokenizer *t = nlpd_tok_deberta_spm_mem(data, len, path, dir, cfg, map, err);
    free(data);
    return t;
}

struct nlpd_tokenizer *nlpd_tok_deberta_spm_mem(const void *data, size_t len, const char *path, const char *dir,
                                                json_t *cfg, json_t *map, struct nlpd_error *err)
{
    char *cm = NULL, *text = NULL;
    json_t *root = json_object(), *model = json_object();
    struct nlpd_tokenizer *t = NULL;
    if (!root || !model) {
        nlpd_error_set(err, NLPD_ENOMEM, 0, "%s: out of memory", path);
        json_decref(model);
        goto out;
    }
    json_object_set_new(root, "model", model);
    if (read_proto(path, (const uint8_t *)data, len, model, &cm, err))
        goto out;
    json_t *vocab = json_object_get(model, "vocab");
    const char *cls = cfg_token(cfg, map, "cls_token", "[CLS]"), *sep = cfg_token(cfg, map, "sep_token", "[SEP]");
    long long cls_id = piece_id(vocab, cls), sep_id = piece_id(vocab, sep);
    if (cls_id < 0 || sep_id < 0) {
        nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: %s or %s is not a piece of the model", path, cls, sep);
        goto out;
    }
    json_t *norms = json_array(), *pres = json_array();
    if (cfg_bool(cfg, "do_lower_case", 0))
        json_array_append_new(norms, json_pack("{s:s}", "type", "Lowercase"));
    json_array_append_new(norms, json_pack("{s:s, s:b, s:b}", "type", "Strip", "strip_left", 1, "strip_right", 1));
    if (cm)
        json_array_append_new(norms, json_pack("{s:s, s:s}", "type", "Precompiled", "precompiled_charsmap", cm));
    json_array_append_new(
        norms, json_pack("{s:s, s:{s:s}, s:s}", "type", "Replace", "pattern", "Regex", " {2,}", "content", " "));
    const char *scheme = "always"; /* DebertaV2Tokenizer has no `legacy`: the converter keeps "always" */
    if (cfg_bool(cfg, "split_by_punct", 0))
        json_array_append_new(pres, json_pack("{s:s, s:s}", "type", "Punctuation", "behavior", "Isolated"));
    json_array_append_new(pres, json_pack("{s:s, s:s, s:s, s:b}", "type", "Metaspace", "replacement", "\xe2\x96\x81",
                                          "prepend_scheme", scheme, "split", 1));
    json_object_set_new(root, "normalizer", json_pack("{s:s, s:o}", "type", "Sequence", "normalizers", norms));
    json_object_set_new(root, "pre_tokenizer", json_pack("{s:s, s:o}", "type", "Sequence", "pretokenizers", pres));
    json_object_set_new(root, "decoder",
                        json_pack("{s:s, s:s, s:s, s:b}", "type", "Metaspace", "replacement", "\xe2\x96\x81",
                                  "prepend_scheme", scheme, "split", 1));
    json_object_set_new(root, "post_processor",
                        json_pack("{s:s, s:[{s:{s:s, s:i}}, {s:{s:s, s:i}}, {s:{s:s, s:i}}],"
                                  " s:[{s:{s:s, s:i}}, {s:{s:s, s:i}}, {s:{s:s, s:i}}, {s:{s:s, s:i}}, {s:{s:s, s:i}}],"
                                  " s:{s:{s:s, s:[I], s:[s]}, s:{s:s, s:[I], s:[s]}}}",
                                  "type", "TemplateProcessing", "single", "SpecialToken", "id", cls, "type_id", 0,
                                  "Sequence", "id", "A", "type_id", 0, "SpecialToken", "id", sep, "type_id", 0, "pair",
                                  "SpecialToken", "id", cls, "type_id", 0, "Sequence", "id", "A", "type_id", 0,
                                  "SpecialToken", "id", sep, "type_id", 0, "Sequence", "id", "B", "type_id", 1,
                                  "SpecialToken", "id", sep, "type_id", 1, "special_tokens", cls, "id", cls, "ids",
                                  (json_int_t)cls_id, "tokens", cls, sep, "id", sep, "ids", (json_int_t)sep_id,
                                  "tokens", sep));
    json_object_set_new(root, "added_tokens", added_tokens(dir, cfg, map, vocab));
    if (!json_object_get(root, "post_processor") || !json_object_get(root, "added_tokens") ||
        !(text = json_dumps(root, JSON_COMPACT))) {
        nlpd_error_set(err, NLPD_ENOMEM, 0, "%s: out of memory", path);
        goto out;
    }
    t = nlpd_tokenizer_load_json(text, strlen(text), path, err);
out:
    free(cm);
    free(text);
    json_decref(root);
    return t;
}
