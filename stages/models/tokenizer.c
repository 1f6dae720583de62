/* Tokenizer front end: loads tokenizer.json (jansson) into normaliser / pre-tokeniser / model / post-processor
 * descriptions, and runs the HF `tokenizers` encode pipeline: added tokens split out first, then normalise,
 * pre-tokenise, model, offsets trimming, longest-first truncation and the post-processor's specials. The legacy
 * folder loaders (vocab.txt, sentencepiece.bpe.model, vocab.json + merges.txt) live in tokenizer_legacy.c. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tokenizer_internal.h"

#define MAX_IDS  (1 << 24) /* a vocabulary id above this is a broken file, not a model */
#define MAX_NEST 32        /* Sequence nesting */

/* ------------------------------------------------------------------ JSON helpers (errors name file and key) */

struct jctx {
    const char *file;
    struct nlpd_error *err;
};

static int jfail(struct jctx *c, const char *key, const char *what)
{
    return nlpd_error_set(c->err, NLPD_EFORMAT, 0, "%s: %s: %s", c->file, key, what);
}

/* Key lookup: required -> error when missing; returns NULL when missing (and optional) or null. */
static json_t *jget(struct jctx *c, json_t *obj, const char *key, const char *path, int required, int *rc)
{
    json_t *v = json_object_get(obj, key);
    if (!v && required)
        *rc = jfail(c, path, "missing");
    if (v && json_is_null(v))
        return NULL;
    return v;
}

static int jbool(struct jctx *c, json_t *obj, const char *key, const char *path, int def, int *out)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return 0;
    }
    if (!json_is_boolean(v))
        return jfail(c, path, "expected a boolean");
    *out = json_is_true(v);
    return 0;
}

static int jstr(struct jctx *c, json_t *obj, const char *key, const char *path, int required, const char **out,
                size_t *len)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        if (required)
            return jfail(c, path, "missing");
        *out = NULL;
        if (len)
            *len = 0;
        return 0;
    }
    if (!json_is_string(v))
        return jfail(c, path, "expected a string");
    *out = json_string_value(v);
    if (len)
        *len = json_string_length(v);
    return 0;
}

/* Decodes UTF-8 into a malloc'ed code point array. */
static int to_cps(const char *s, size_t len, int32_t **out, size_t *n)
{
    int32_t *v = malloc((len + 1) * sizeof *v);
    if (!v)
        return NLPD_ENOMEM;
    size_t k = 0;
    for (size_t i = 0; i < len;) {
        int32_t cp;
        utf8proc_ssize_t r = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(len - i), &cp);
        if (r <= 0) {
            cp = 0xfffd;
            r = 1;
        }
        v[k++] = cp;
        i += (size_t)r;
    }
    *out = v;
    *n = k;
    return 0;
}

static int32_t single_cp(const char *s, size_t len)
{
    int32_t cp;
    utf8proc_ssize_t r = utf8proc_iterate((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)len, &cp);
    return r > 0 && (size_t)r == len ? cp : -1;
}

/* ------------------------------------------------------------------ normalizer */

static const unsigned char b64tab[256] = {
    ['A'] = 1,  ['B'] = 2,  ['C'] = 3,  ['D'] = 4,  ['E'] = 5,  ['F'] = 6,  ['G'] = 7,  ['H'] = 8,
    ['I'] = 9,  ['J'] = 10, ['K'] = 11, ['L'] = 12, ['M'] = 13, ['N'] = 14, ['O'] = 15, ['P'] = 16,
    ['Q'] = 17, ['R'] = 18, ['S'] = 19, ['T'] = 20, ['U'] = 21, ['V'] = 22, ['W'] = 23, ['X'] = 24,
    ['Y'] = 25, ['Z'] = 26, ['a'] = 27, ['b'] = 28, ['c'] = 29, ['d'] = 30, ['e'] = 31, ['f'] = 32,
    ['g'] = 33, ['h'] = 34, ['i'] = 35, ['j'] = 36, ['k'] = 37, ['l'] = 38, ['m'] = 39, ['n'] = 40,
    ['o'] = 41, ['p'] = 42, ['q'] = 43, ['r'] = 44, ['s'] = 45, ['t'] = 46, ['u'] = 47, ['v'] = 48,
    ['w'] = 49, ['x'] = 50, ['y'] = 51, ['z'] = 52, ['0'] = 53, ['1'] = 54, ['2'] = 55, ['3'] = 56,
    ['4'] = 57, ['5'] = 58, ['6'] = 59, ['7'] = 60, ['8'] = 61, ['9'] = 62, ['+'] = 63, ['/'] = 64,
};

static uint8_t *b64_decode(const char *s, size_t len, size_t *out_len)
{
    uint8_t *out = malloc(len / 4 * 3 + 4);
    if (!out)
        return NULL;
    size_t k = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '=')
            break;
        if (!b64tab[ch]) {
            free(out);
            return NULL;
        }
        acc = acc << 6 | (uint32_t)(b64tab[ch] - 1);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[k++] = (uint8_t)(acc >> bits);
        }
    }
    *out_len = k;
    return out;
}

static int pattern_of(struct jctx *c, json_t *obj, const char *path, int32_t **pat, size_t *pat_n, struct trx **rx)
{
    json_t *p = json_object_get(obj, "pattern");
    if (!p || !json_is_object(p))
        return jfail(c, path, "pattern: expected {\"String\": ...} or {\"Regex\": ...}");
    json_t *s = json_object_get(p, "String"), *r = json_object_get(p, "Regex");
    if (s && json_is_string(s))
        return to_cps(json_string_value(s), json_string_length(s), pat, pat_n);
    if (r && json_is_string(r)) {
        struct nlpd_error why = {0};
        *rx = nlpd_trx_compile(json_string_value(r), json_string_length(r), &why);
        if (!*rx)
            return nlpd_error_set(c->err, why.code, 0, "%s: %s: pattern: unsupported regex \"%.80s\": %s", c->file,
                                  path, json_string_value(r), why.message);
        return 0;
    }
    return jfail(c, path, "pattern: expected {\"String\": ...} or {\"Regex\": ...}");
}

static int load_normalizer(struct jctx *c, json_t *j, struct tnorm *n, int depth)
{
    const char *path = "normalizer";
    int rc = 0;
    if (depth > MAX_NEST)
        return jfail(c, path, "nested too deep");
    if (!json_is_object(j))
        return jfail(c, path, "expected an object");
    const char *type;
    if ((rc = jstr(c, j, "type", "normalizer.type", 1, &type, NULL)) < 0)
        return rc;
    if (!strcmp(type, "BertNormalizer")) {
        n->type = TN_BERT;
        if ((rc = jbool(c, j, "clean_text", "normalizer.clean_text", 1, &n->clean_text)) < 0 ||
            (rc = jbool(c, j, "handle_chinese_chars", "normalizer.handle_chinese_chars", 1, &n->handle_chinese)) < 0 ||
            (rc = jbool(c, j, "lowercase", "normalizer.lowercase", 1, &n->lowercase)) < 0 ||
            (rc = jbool(c, j, "strip_accents", "normalizer.strip_accents", n->lowercase, &n->strip_accents)) < 0)
            return rc;
    } else if (!strcmp(type, "Precompiled")) {
        n->type = TN_PRECOMPILED;
        const char *b64;
        size_t len;
        if ((rc = jstr(c, j, "precompiled_charsmap", "normalizer.precompiled_charsmap", 0, &b64, &len)) < 0)
            return rc;
        if (b64 && len) {
            size_t bl;
            uint8_t *blob = b64_decode(b64, len, &bl);
            if (!blob)
                return jfail(c, "normalizer.precompiled_charsmap", "invalid base64");
            if (nlpd_tnorm_precompiled_init(n, blob, bl) < 0)
                return jfail(c, "normalizer.precompiled_charsmap", "malformed charsmap (bad trie size)");
        }
    } else if (!strcmp(type, "NFC")) {
        n->type = TN_NFC;
    } else if (!strcmp(type, "NFD")) {
        n->type = TN_NFD;
    } else if (!strcmp(type, "NFKC")) {
        n->type = TN_NFKC;
    } else if (!strcmp(type, "NFKD")) {
        n->type = TN_NFKD;
    } else if (!strcmp(type, "Lowercase")) {
        n->type = TN_LOWERCASE;
    } else if (!strcmp(type, "StripAccents")) {
        n->type = TN_STRIP_ACCENTS;
    } else if (!strcmp(type, "Nmt")) {
        n->type = TN_NMT;
    } else if (!strcmp(type, "Strip")) {
        n->type = TN_STRIP;
        if ((rc = jbool(c, j, "strip_left", "normalizer.strip_left", 1, &n->strip_left)) < 0 ||
            (rc = jbool(c, j, "strip_right", "normalizer.strip_right", 1, &n->strip_right)) < 0)
            return rc;
    } else if (!strcmp(type, "Replace")) {
        n->type = TN_REPLACE;
        const char *content;
        size_t len;
        if ((rc = pattern_of(c, j, "normalizer.Replace", &n->pat, &n->pat_n, &n->rx)) < 0 ||
            (rc = jstr(c, j, "content", "normalizer.content", 1, &content, &len)) < 0 ||
            (rc = to_cps(content, len, &n->content, &n->content_n)) < 0)
            return rc;
    } else if (!strcmp(type, "Prepend")) {
        n->type = TN_PREPEND;
        const char *content;
        size_t len;
        if ((rc = jstr(c, j, "prepend", "normalizer.prepend", 1, &content, &len)) < 0 ||
            (rc = to_cps(content, len, &n->content, &n->content_n)) < 0)
            return rc;
    } else if (!strcmp(type, "Sequence")) {
        n->type = TN_SEQUENCE;
        json_t *a = json_object_get(j, "normalizers");
        if (!json_is_array(a))
            return jfail(c, "normalizer.normalizers", "expected an array");
        n->subs = calloc(json_array_size(a) + 1, sizeof *n->subs);
        if (!n->subs)
            return NLPD_ENOMEM;
        for (size_t i = 0; i < json_array_size(a); i++) {
            n->nsubs = i + 1;
            if ((rc = load_normalizer(c, json_array_get(a, i), &n->subs[i], depth + 1)) < 0)
                return rc;
        }
    } else {
        return nlpd_error_set(c->err, NLPD_EFORMAT, 0, "%s: normalizer.type: unsupported \"%.60s\"", c->file, type);
    }
    return 0;
}

/* ------------------------------------------------------------------ pre-tokenizer */

static int behavior_of(struct jctx *c, json_t *j, const char *path, enum tsplit_behavior def, enum tsplit_behavior *out)
{
    const char *b = NULL;
    int rc = jstr(c, j, "behavior", path, 0, &b, NULL);
    if (rc < 0)
        return rc;
    *out = def;
    if (!b)
        return 0;
    if (!strcmp(b, "Removed"))
        *out = TB_REMOVED;
    else if (!strcmp(b, "Isolated"))
        *out = TB_ISOLATED;
    else if (!strcmp(b, "MergedWithPrevious"))
        *out = TB_MERGED_PREV;
    else if (!strcmp(b, "MergedWithNext"))
        *out = TB_MERGED_NEXT;
    else if (!strcmp(b, "Contiguous"))
        *out = TB_CONTIGUOUS;
    else
        return jfail(c, path, "unknown split behavior");
    return 0;
}

static int load_pretok(struct jctx *c, json_t *j, struct tpre *p, int depth)
{
    int rc = 0;
    if (depth > MAX_NEST)
        return jfail(c, "pre_tokenizer", "nested too deep");
    if (!json_is_object(j))
        return jfail(c, "pre_tokenizer", "expected an object");
    const char *type;
    if ((rc = jstr(c, j, "type", "pre_tokenizer.type", 1, &type, NULL)) < 0)
        return rc;
    if (!strcmp(type, "BertPreTokenizer")) {
        p->type = TP_BERT;
    } else if (!strcmp(type, "Whitespace")) {
        p->type = TP_WHITESPACE;
    } else if (!strcmp(type, "WhitespaceSplit")) {
        p->type = TP_WHITESPACE_SPLIT;
    } else if (!strcmp(type, "Metaspace")) {
        p->type = TP_METASPACE;
        const char *r, *scheme;
        size_t rl;
        int add_prefix_space;
        if ((rc = jstr(c, j, "replacement", "pre_tokenizer.replacement", 0, &r, &rl)) < 0 ||
            (rc = jstr(c, j, "prepend_scheme", "pre_tokenizer.prepend_scheme", 0, &scheme, NULL)) < 0 ||
            (rc = jbool(c, j, "split", "pre_tokenizer.split", 1, &p->split)) < 0 ||
            (rc = jbool(c, j, "add_prefix_space", "pre_tokenizer.add_prefix_space", 1, &add_prefix_space)) < 0)
            return rc;
        p->replacement = r ? single_cp(r, rl) : 0x2581;
        if (p->replacement < 0)
            return jfail(c, "pre_tokenizer.replacement", "expected a single character");
        if (!scheme)
            p->prepend_scheme = add_prefix_space ? 0 : 2; /* older files */
        else if (!strcmp(scheme, "always"))
            p->prepend_scheme = 0;
        else if (!strcmp(scheme, "first"))
            p->prepend_scheme = 1;
        else if (!strcmp(scheme, "never"))
            p->prepend_scheme = 2;
        else
            return jfail(c, "pre_tokenizer.prepend_scheme", "expected always, first or never");
    } else if (!strcmp(type, "ByteLevel")) {
        p->type = TP_BYTELEVEL;
        if ((rc = jbool(c, j, "add_prefix_space", "pre_tokenizer.add_prefix_space", 1, &p->add_prefix_space)) < 0 ||
            (rc = jbool(c, j, "use_regex", "pre_tokenizer.use_regex", 1, &p->use_regex)) < 0)
            return rc;
    } else if (!strcmp(type, "Punctuation")) {
        p->type = TP_PUNCTUATION;
        if ((rc = behavior_of(c, j, "pre_tokenizer.behavior", TB_ISOLATED, &p->behavior)) < 0)
            return rc;
    } else if (!strcmp(type, "Digits")) {
        p->type = TP_DIGITS;
        if ((rc = jbool(c, j, "individual_digits", "pre_tokenizer.individual_digits", 0, &p->individual_digits)) < 0)
            return rc;
    } else if (!strcmp(type, "Split")) {
        p->type = TP_SPLIT;
        if ((rc = pattern_of(c, j, "pre_tokenizer.Split", &p->pat, &p->pat_n, &p->rx)) < 0 ||
            (rc = behavior_of(c, j, "pre_tokenizer.behavior", TB_REMOVED, &p->behavior)) < 0 ||
            (rc = jbool(c, j, "invert", "pre_tokenizer.invert", 0, &p->invert)) < 0)
            return rc;
        if (!json_object_get(j, "behavior"))
            return jfail(c, "pre_tokenizer.behavior", "missing");
    } else if (!strcmp(type, "Sequence")) {
        p->type = TP_SEQUENCE;
        json_t *a = json_object_get(j, "pretokenizers");
        if (!json_is_array(a))
            return jfail(c, "pre_tokenizer.pretokenizers", "expected an array");
        p->subs = calloc(json_array_size(a) + 1, sizeof *p->subs);
        if (!p->subs)
            return NLPD_ENOMEM;
        for (size_t i = 0; i < json_array_size(a); i++) {
            p->nsubs = i + 1;
            if ((rc = load_pretok(c, json_array_get(a, i), &p->subs[i], depth + 1)) < 0)
                return rc;
        }
    } else {
        return nlpd_error_set(c->err, NLPD_EFORMAT, 0, "%s: pre_tokenizer.type: unsupported \"%.60s\"", c->file, type);
    }
    return 0;
}

/* ------------------------------------------------------------------ decoder */

static int dup_json_str(struct jctx *c, json_t *j, const char *key, const char *path, const char *def, char **out,
                        size_t *out_len)
{
    const char *v;
    size_t len;
    int rc = jstr(c, j, key, path, 0, &v, &len);
    if (rc < 0)
        return rc;
    if (!v) {
        v = def;
        len = strlen(def);
    }
    if (!(*out = malloc(len + 1)))
        return NLPD_ENOMEM;
    memcpy(*out, v, len);
    (*out)[len] = 0;
    *out_len = len;
    return 0;
}

static int jsize(struct jctx *c, json_t *j, const char *key, const char *path, size_t *out)
{
    json_t *v = json_object_get(j, key);
    if (!v || json_is_null(v)) {
        *out = 0;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return jfail(c, path, "expected a non-negative integer");
    *out = (size_t)json_integer_value(v);
    return 0;
}

static int load_decoder(struct jctx *c, json_t *j, struct tdec *d, int depth)
{
    int rc = 0;
    if (depth > MAX_NEST)
        return jfail(c, "decoder", "nested too deep");
    if (!json_is_object(j))
        return jfail(c, "decoder", "expected an object");
    const char *type;
    if ((rc = jstr(c, j, "type", "decoder.type", 1, &type, NULL)) < 0)
        return rc;
    if (!strcmp(type, "WordPiece")) {
        d->type = TD_WORDPIECE;
        if ((rc = dup_json_str(c, j, "prefix", "decoder.prefix", "##", &d->s1, &d->s1_len)) < 0 ||
            (rc = jbool(c, j, "cleanup", "decoder.cleanup", 1, &d->cleanup)) < 0)
            return rc;
    } else if (!strcmp(type, "Metaspace")) {
        /* the same fields as the pre-tokenizer */
        struct tpre p = {0};
        rc = load_pretok(c, j, &p, depth);
        d->type = TD_METASPACE;
        d->replacement = p.replacement;
        d->prepend_scheme = p.prepend_scheme;
        nlpd_tpre_free(&p);
        if (rc < 0)
            return rc;
    } else if (!strcmp(type, "ByteLevel")) {
        d->type = TD_BYTELEVEL;
    } else if (!strcmp(type, "BPEDecoder")) {
        d->type = TD_BPE;
        if ((rc = dup_json_str(c, j, "suffix", "decoder.suffix", "</w>", &d->s1, &d->s1_len)) < 0)
            return rc;
    } else if (!strcmp(type, "ByteFallback")) {
        d->type = TD_BYTEFALLBACK;
    } else if (!strcmp(type, "Fuse")) {
        d->type = TD_FUSE;
    } else if (!strcmp(type, "Strip")) {
        d->type = TD_STRIP;
        const char *ct;
        size_t cl;
        if ((rc = jstr(c, j, "content", "decoder.content", 1, &ct, &cl)) < 0 ||
            (rc = jsize(c, j, "start", "decoder.start", &d->start)) < 0 ||
            (rc = jsize(c, j, "stop", "decoder.stop", &d->stop)) < 0)
            return rc;
        if ((d->content = single_cp(ct, cl)) < 0)
            return jfail(c, "decoder.content", "expected a single character");
    } else if (!strcmp(type, "Replace")) {
        d->type = TD_REPLACE;
        if ((rc = pattern_of(c, j, "decoder.Replace", &d->pat, &d->pat_n, &d->rx)) < 0 ||
            (rc = dup_json_str(c, j, "content", "decoder.content", "", &d->s1, &d->s1_len)) < 0)
            return rc;
        if (!json_object_get(j, "content"))
            return jfail(c, "decoder.content", "missing");
    } else if (!strcmp(type, "CTC")) {
        d->type = TD_CTC;
        if ((rc = dup_json_str(c, j, "pad_token", "decoder.pad_token", "<pad>", &d->s1, &d->s1_len)) < 0 ||
            (rc = dup_json_str(c, j, "word_delimiter_token", "decoder.word_delimiter_token", "|", &d->s2, &d->s2_len)) <
                0 ||
            (rc = jbool(c, j, "cleanup", "decoder.cleanup", 1, &d->cleanup)) < 0)
            return rc;
    } else if (!strcmp(type, "Sequence")) {
        d->type = TD_SEQUENCE;
        json_t *a = json_object_get(j, "decoders");
        if (!json_is_array(a))
            return jfail(c, "decoder.decoders", "expected an array");
        d->subs = calloc(json_array_size(a) + 1, sizeof *d->subs);
        if (!d->subs)
            return NLPD_ENOMEM;
        for (size_t i = 0; i < json_array_size(a); i++) {
            d->nsubs = i + 1;
            if ((rc = load_decoder(c, json_array_get(a, i), &d->subs[i], depth + 1)) < 0)
                return rc;
        }
    } else {
        return nlpd_error_set(c->err, NLPD_EFORMAT, 0, "%s: decoder.type: unsupported \"%.60s\"", c->file, type);
    }
    return 0;
}

/* ------------------------------------------------------------------ model */

static int id_of(struct jctx *c, json_t *v, const char *path, int32_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= MAX_IDS)
        return jfail(c, path, "expected an id (integer 0..2^24)");
    *out = (int32_t)json_integer_value(v);
    return 0;
}

static int load_vocab_object(struct jctx *c, json_t *vocab, struct tmodel *m)
{
    if (!json_is_object(vocab))
        return jfail(c, "model.vocab", "expected an object");
    if (json_object_size(vocab) > MAX_IDS)
        return jfail(c, "model.vocab", "too large");
    int rc = nlpd_tvocab_init(&m->vocab, json_object_size(vocab));
    if (rc < 0)
        return rc;
    const char *key;
    json_t *v;
    json_object_foreach(vocab, key, v)
    {
        int32_t id;
        if ((rc = id_of(c, v, "model.vocab", &id)) < 0)
            return rc;
        if ((rc = nlpd_tvocab_set(&m->vocab, key, strlen(key), id)) < 0)
            return rc;
    }
    return 0;
}

static int dup_str(const char *s, size_t len, char **out, size_t *out_len)
{
    *out = malloc(len + 1);
    if (!*out)
        return NLPD_ENOMEM;
    memcpy(*out, s, len);
    (*out)[len] = 0;
    *out_len = len;
    return 0;
}

/* Finishes a Unigram model: scores by id and the derived limits. */
int nlpd_tok_unigram_finish(struct tmodel *m)
{
    m->min_score = 0;
    int first = 1;
    m->max_piece_len = 1;
    for (int32_t i = 0; i < m->vocab.nids; i++) {
        if (!m->vocab.str[i])
            continue;
        if (first || m->scores[i] < m->min_score)
            m->min_score = m->scores[i];
        first = 0;
        if (m->vocab.len[i] > m->max_piece_len)
            m->max_piece_len = m->vocab.len[i];
    }
    return 0;
}

/* Adds merges "a b" (rank = index) for BPE; the merged token must be in the vocabulary. */
int nlpd_tok_bpe_add_merge(struct tmodel *m, const char *a, size_t al, const char *b, size_t bl, int32_t rank,
                           struct nlpd_error *err)
{
    int32_t ia = nlpd_tvocab_get(&m->vocab, a, al), ib = nlpd_tvocab_get(&m->vocab, b, bl);
    if (ia < 0 || ib < 0)
        return nlpd_error_set(err, NLPD_EFORMAT, 0, "merge token not in the vocabulary");
    size_t skip = 0;
    if (m->prefix_len && bl >= m->prefix_len && !memcmp(b, m->prefix, m->prefix_len))
        skip = m->prefix_len;
    char stackbuf[256];
    size_t nl = al + bl - skip;
    char *buf = nl <= sizeof stackbuf ? stackbuf : malloc(nl);
    if (!buf)
        return nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
    memcpy(buf, a, al);
    memcpy(buf + al, b + skip, bl - skip);
    int32_t id = nlpd_tvocab_get(&m->vocab, buf, nl);
    if (buf != stackbuf)
        free(buf);
    if (id < 0)
        return nlpd_error_set(err, NLPD_EFORMAT, 0, "merged token not in the vocabulary");
    int rc = nlpd_tmodel_merge_add(m, ia, ib, rank, id);
    return rc < 0 ? nlpd_error_set(err, rc, 0, "out of memory") : rc;
}

static int load_model(struct jctx *c, json_t *j, struct tmodel *m)
{
    int rc = 0;
    if (!json_is_object(j))
        return jfail(c, "model", "expected an object");
    const char *type = NULL;
    if ((rc = jstr(c, j, "type", "model.type", 0, &type, NULL)) < 0)
        return rc;
    json_t *vocab = json_object_get(j, "vocab");
    if (!vocab)
        return jfail(c, "model.vocab", "missing");
    m->unk_id = -1;
    if (!type) /* older files omit the type: infer it like serde's untagged enum does */
        type = json_is_array(vocab) ? "Unigram" : json_object_get(j, "merges") ? "BPE" : "WordPiece";
    if (!strcmp(type, "WordPiece")) {
        m->type = TM_WORDPIECE;
        const char *unk, *prefix;
        size_t unk_len, plen;
        json_t *mx = json_object_get(j, "max_input_chars_per_word");
        if ((rc = load_vocab_object(c, vocab, m)) < 0 ||
            (rc = jstr(c, j, "unk_token", "model.unk_token", 1, &unk, &unk_len)) < 0 ||
            (rc = jstr(c, j, "continuing_subword_prefix", "model.continuing_subword_prefix", 0, &prefix, &plen)) < 0)
            return rc;
        if (mx && !json_is_null(mx) && (!json_is_integer(mx) || json_integer_value(mx) < 0))
            return jfail(c, "model.max_input_chars_per_word", "expected a non-negative integer");
        m->max_input_chars = mx && json_is_integer(mx) ? (size_t)json_integer_value(mx) : 100;
        if ((rc = dup_str(prefix ? prefix : "##", prefix ? plen : 2, &m->prefix, &m->prefix_len)) < 0)
            return rc;
        m->unk_id = nlpd_tvocab_get(&m->vocab, unk, unk_len);
        if (m->unk_id < 0)
            return jfail(c, "model.unk_token", "not in the vocabulary");
    } else if (!strcmp(type, "Unigram")) {
        m->type = TM_UNIGRAM;
        m->fuse_unk = 1;
        if (!json_is_array(vocab))
            return jfail(c, "model.vocab", "expected an array of [piece, score]");
        size_t n = json_array_size(vocab);
        if (n == 0 || n > MAX_IDS)
            return jfail(c, "model.vocab", "empty or too large");
        if ((rc = nlpd_tvocab_init(&m->vocab, n)) < 0)
            return rc;
        m->scores = calloc(n, sizeof *m->scores);
        if (!m->scores)
            return NLPD_ENOMEM;
        for (size_t i = 0; i < n; i++) {
            json_t *e = json_array_get(vocab, i);
            json_t *p = json_array_get(e, 0), *s = json_array_get(e, 1);
            if (!json_is_array(e) || json_array_size(e) != 2 || !json_is_string(p) || !json_is_number(s))
                return jfail(c, "model.vocab", "expected [piece, score] entries");
            if ((rc = nlpd_tvocab_set(&m->vocab, json_string_value(p), json_string_length(p), (int32_t)i)) < 0)
                return rc;
            m->scores[i] = json_number_value(s);
        }
        json_t *u = json_object_get(j, "unk_id");
        if (u && !json_is_null(u)) {
            if (!json_is_integer(u) || json_integer_value(u) < 0 || (size_t)json_integer_value(u) >= n)
                return jfail(c, "model.unk_id", "expected an id inside the vocabulary");
            m->unk_id = (int32_t)json_integer_value(u);
        }
        if ((rc = jbool(c, j, "byte_fallback", "model.byte_fallback", 0, &m->byte_fallback)) < 0)
            return rc;
        nlpd_tok_unigram_finish(m);
    } else if (!strcmp(type, "BPE")) {
        m->type = TM_BPE;
        const char *unk, *prefix, *suffix;
        size_t unk_len, plen, slen;
        if ((rc = load_vocab_object(c, vocab, m)) < 0 ||
            (rc = jstr(c, j, "unk_token", "model.unk_token", 0, &unk, &unk_len)) < 0 ||
            (rc = jstr(c, j, "continuing_subword_prefix", "model.continuing_subword_prefix", 0, &prefix, &plen)) < 0 ||
            (rc = jstr(c, j, "end_of_word_suffix", "model.end_of_word_suffix", 0, &suffix, &slen)) < 0 ||
            (rc = jbool(c, j, "fuse_unk", "model.fuse_unk", 0, &m->fuse_unk)) < 0 ||
            (rc = jbool(c, j, "byte_fallback", "model.byte_fallback", 0, &m->byte_fallback)) < 0 ||
            (rc = jbool(c, j, "ignore_merges", "model.ignore_merges", 0, &m->ignore_merges)) < 0)
            return rc;
        if (prefix && plen && (rc = dup_str(prefix, plen, &m->prefix, &m->prefix_len)) < 0)
            return rc;
        if (suffix && slen && (rc = dup_str(suffix, slen, &m->suffix, &m->suffix_len)) < 0)
            return rc;
        if (unk) {
            m->unk_id = nlpd_tvocab_get(&m->vocab, unk, unk_len);
            if (m->unk_id < 0)
                return jfail(c, "model.unk_token", "not in the vocabulary");
        }
        json_t *merges = json_object_get(j, "merges");
        if (!json_is_array(merges))
            return jfail(c, "model.merges", "expected an array");
        for (size_t i = 0; i < json_array_size(merges); i++) {
            json_t *e = json_array_get(merges, i);
            const char *a, *b;
            size_t al, bl;
            if (json_is_string(e)) {
                a = json_string_value(e);
                const char *sp = memchr(a, ' ', json_string_length(e));
                if (!sp)
                    return jfail(c, "model.merges", "a merge string is not \"a b\"");
                al = (size_t)(sp - a);
                b = sp + 1;
                bl = json_string_length(e) - al - 1;
            } else if (json_is_array(e) && json_array_size(e) == 2 && json_is_string(json_array_get(e, 0)) &&
                       json_is_string(json_array_get(e, 1))) {
                a = json_string_value(json_array_get(e, 0));
                al = json_string_length(json_array_get(e, 0));
                b = json_string_value(json_array_get(e, 1));
                bl = json_string_length(json_array_get(e, 1));
            } else {
                return jfail(c, "model.merges", "expected \"a b\" strings or [a, b] pairs");
            }
            struct nlpd_error why = {0};
            rc = nlpd_tok_bpe_add_merge(m, a, al, b, bl, (int32_t)i, &why);
            if (rc < 0)
                return nlpd_error_set(c->err, rc, 0, "%s: model.merges[%zu]: %s", c->file, i, why.message);
        }
    } else {
        return nlpd_error_set(c->err, NLPD_EFORMAT, 0, "%s: model.type: unsupported \"%.60s\"", c->file, type);
    }
    return 0;
}

/* ------------------------------------------------------------------ added tokens */

int nlpd_tok_add_token(struct nlpd_tokenizer *t, const char *content, size_t len, int32_t id, int special,
                       int single_word, int lstrip, int rstrip, int normalized)
{
    if (len == 0)
        return 0;                          /* HF ignores empty added tokens */
    for (size_t i = 0; i < t->nadded; i++) /* same content: the later entry wins */
        if (t->added[i].len == len && !memcmp(t->added[i].content, content, len)) {
            t->added[i].id = id;
            t->added[i].special = special;
            t->added[i].single_word = single_word;
            t->added[i].lstrip = lstrip;
            t->added[i].rstrip = rstrip;
            t->added[i].normalized = normalized;
            return 0;
        }
    if (t->nadded % 16 == 0) {
        struct added_tok *a = realloc(t->added, (t->nadded + 16) * sizeof *a);
        if (!a)
            return NLPD_ENOMEM;
        t->added = a;
    }
    struct added_tok *a = &t->added[t->nadded];
    memset(a, 0, sizeof *a);
    int rc = dup_str(content, len, &a->content, &a->len);
    if (rc < 0)
        return rc;
    if ((rc = to_cps(content, len, &a->cps, &a->ncps)) < 0) {
        free(a->content);
        return rc;
    }
    a->id = id;
    a->special = special;
    a->single_word = single_word;
    a->lstrip = lstrip;
    a->rstrip = rstrip;
    a->normalized = normalized;
    t->nadded++;
    return 0;
}

static int load_added(struct jctx *c, json_t *a, struct nlpd_tokenizer *t)
{
    if (!a)
        return 0;
    if (!json_is_array(a))
        return jfail(c, "added_tokens", "expected an array");
    for (size_t i = 0; i < json_array_size(a); i++) {
        json_t *e = json_array_get(a, i);
        if (!json_is_object(e))
            return jfail(c, "added_tokens", "expected objects");
        const char *content;
        size_t len;
        int32_t id;
        int special = 0, sw = 0, ls = 0, rs = 0, norm = 0, rc;
        json_t *idv = json_object_get(e, "id");
        if (!idv)
            return jfail(c, "added_tokens.id", "missing");
        if ((rc = id_of(c, idv, "added_tokens.id", &id)) < 0 ||
            (rc = jstr(c, e, "content", "added_tokens.content", 1, &content, &len)) < 0 ||
            (rc = jbool(c, e, "special", "added_tokens.special", 0, &special)) < 0 ||
            (rc = jbool(c, e, "single_word", "added_tokens.single_word", 0, &sw)) < 0 ||
            (rc = jbool(c, e, "lstrip", "added_tokens.lstrip", 0, &ls)) < 0 ||
            (rc = jbool(c, e, "rstrip", "added_tokens.rstrip", 0, &rs)) < 0 ||
            (rc = jbool(c, e, "normalized", "added_tokens.normalized", !special, &norm)) < 0)
            return rc;
        if ((rc = nlpd_tok_add_token(t, content, len, id, special, sw, ls, rs, norm)) < 0)
            return rc;
    }
    return 0;
}

/* ------------------------------------------------------------------ post-processor */

static int special_ids(struct jctx *c, json_t *st, const char *name, int32_t **ids, size_t *n)
{
    json_t *e = json_object_get(st, name);
    if (!json_is_object(e))
        return nlpd_error_set(c->err, NLPD_EFORMAT, 0, "%s: post_processor.special_tokens: \"%.60s\" missing", c->file,
                              name);
    json_t *a = json_object_get(e, "ids");
    if (!json_is_array(a) || json_array_size(a) > 64)
        return jfail(c, "post_processor.special_tokens.ids", "expected an array");
    *ids = malloc((json_array_size(a) + 1) * sizeof **ids);
    if (!*ids)
        return NLPD_ENOMEM;
    *n = json_array_size(a);
    for (size_t i = 0; i < *n; i++) {
        int rc = id_of(c, json_array_get(a, i), "post_processor.special_tokens.ids", &(*ids)[i]);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int load_template(struct jctx *c, json_t *a, json_t *st, struct tpl_item **items, size_t *n, const char *path)
{
    if (!json_is_array(a))
        return jfail(c, path, "expected an array");
    *items = calloc(json_array_size(a) + 1, sizeof **items);
    if (!*items)
        return NLPD_ENOMEM;
    for (size_t i = 0; i < json_array_size(a); i++) {
        json_t *e = json_array_get(a, i);
        json_t *sp = json_object_get(e, "SpecialToken"), *sq = json_object_get(e, "Sequence");
        struct tpl_item *it = &(*items)[i];
        *n = i + 1;
        json_t *body = sp ? sp : sq;
        if (!json_is_object(body))
            return jfail(c, path, "expected SpecialToken or Sequence items");
        json_t *tid = json_object_get(body, "type_id");
        if (!json_is_integer(tid) || json_integer_value(tid) < 0 || json_integer_value(tid) > 255)
            return jfail(c, path, "type_id: expected a small integer");
        it->type_id = (int32_t)json_integer_value(tid);
        const char *id;
        int rc = jstr(c, body, "id", path, 1, &id, NULL);
        if (rc < 0)
            return rc;
        if (sq) {
            it->is_seq = 1;
            if (!strcmp(id, "A"))
                it->seq = 0;
            else if (!strcmp(id, "B"))
                it->seq = 1;
            else
                return jfail(c, path, "Sequence id must be A or B");
        } else if ((rc = special_ids(c, st, id, &it->ids, &it->nids)) < 0) {
            return rc;
        }
    }
    return 0;
}

static int pair_token(struct jctx *c, json_t *j, const char *key, int32_t *id)
{
    json_t *a = json_object_get(j, key);
    if (!json_is_array(a) || json_array_size(a) != 2 || !json_is_string(json_array_get(a, 0)))
        return nlpd_error_set(c->err, NLPD_EFORMAT, 0, "%s: post_processor.%s: expected [token, id]", c->file, key);
    return id_of(c, json_array_get(a, 1), "post_processor", id);
}

/* Builds the Bert/Roberta layouts as templates. */
int nlpd_tok_post_bert_like(struct tpost *p, int32_t cls, int32_t sep, int roberta)
{
    p->nsingle = 3;
    p->npair = roberta ? 6 : 5;
    p->single = calloc(3, sizeof *p->single);
    p->pair = calloc(6, sizeof *p->pair);
    if (!p->single || !p->pair)
        return NLPD_ENOMEM;
    int32_t seq_single[3] = {-1, 0, -1}, seq_pair[6] = {-1, 0, -1, 1, -1, -1};
    int32_t rseq_pair[6] = {-1, 0, -1, -1, 1, -1};
    for (int i = 0; i < 3; i++) {
        struct tpl_item *it = &p->single[i];
        it->is_seq = seq_single[i] >= 0;
        it->seq = 0;
        if (!it->is_seq) {
            it->ids = malloc(sizeof *it->ids);
            if (!it->ids)
                return NLPD_ENOMEM;
            it->ids[0] = i == 0 ? cls : sep;
            it->nids = 1;
        }
    }
    for (size_t i = 0; i < p->npair; i++) {
        struct tpl_item *it = &p->pair[i];
        int32_t s = roberta ? rseq_pair[i] : seq_pair[i];
        it->is_seq = s >= 0;
        it->seq = s >= 0 ? s : 0;
        it->type_id = roberta ? 0 : (i >= 3 ? 1 : 0);
        if (!it->is_seq) {
            it->ids = malloc(sizeof *it->ids);
            if (!it->ids)
                return NLPD_ENOMEM;
            it->ids[0] = i == 0 ? cls : sep;
            it->nids = 1;
        }
    }
    return 0;
}

static int load_post(struct jctx *c, json_t *j, struct tpost *p, int depth)
{
    int rc = 0;
    if (depth > MAX_NEST)
        return jfail(c, "post_processor", "nested too deep");
    if (!json_is_object(j))
        return jfail(c, "post_processor", "expected an object");
    const char *type;
    if ((rc = jstr(c, j, "type", "post_processor.type", 1, &type, NULL)) < 0)
        return rc;
    if (!strcmp(type, "TemplateProcessing")) {
        json_t *st = json_object_get(j, "special_tokens");
        if (!json_is_object(st))
            return jfail(c, "post_processor.special_tokens", "expected an object");
        if ((rc = load_template(c, json_object_get(j, "single"), st, &p->single, &p->nsingle,
                                "post_processor.single")) < 0 ||
            (rc = load_template(c, json_object_get(j, "pair"), st, &p->pair, &p->npair, "post_processor.pair")) < 0)
            return rc;
        p->has_template = 1;
    } else if (!strcmp(type, "BertProcessing") || !strcmp(type, "RobertaProcessing")) {
        int32_t cls, sep;
        int roberta = type[0] == 'R';
        if ((rc = pair_token(c, j, "cls", &cls)) < 0 || (rc = pair_token(c, j, "sep", &sep)) < 0)
            return rc;
        if (p->has_template)
            return jfail(c, "post_processor", "more than one template in a Sequence");
        if ((rc = nlpd_tok_post_bert_like(p, cls, sep, roberta)) < 0)
            return rc;
        p->has_template = 1;
        if (roberta) {
            if ((rc = jbool(c, j, "trim_offsets", "post_processor.trim_offsets", 1, &p->trim_offsets)) < 0 ||
                (rc = jbool(c, j, "add_prefix_space", "post_processor.add_prefix_space", 1, &p->add_prefix_space)) < 0)
                return rc;
        }
    } else if (!strcmp(type, "ByteLevel")) {
        if ((rc = jbool(c, j, "trim_offsets", "post_processor.trim_offsets", 1, &p->trim_offsets)) < 0 ||
            (rc = jbool(c, j, "add_prefix_space", "post_processor.add_prefix_space", 1, &p->add_prefix_space)) < 0)
            return rc;
    } else if (!strcmp(type, "Sequence")) {
        json_t *a = json_object_get(j, "processors");
        if (!json_is_array(a))
            return jfail(c, "post_processor.processors", "expected an array");
        for (size_t i = 0; i < json_array_size(a); i++)
            if ((rc = load_post(c, json_array_get(a, i), p, depth + 1)) < 0)
                return rc;
    } else {
        return nlpd_error_set(c->err, NLPD_EFORMAT, 0, "%s: post_processor.type: unsupported \"%.60s\"", c->file, type);
    }
    return 0;
}

/* ------------------------------------------------------------------ object lifetime */

struct nlpd_tokenizer *nlpd_tok_new(void)
{
    struct nlpd_tokenizer *t = calloc(1, sizeof *t);
    if (t)
        t->model.unk_id = -1;
    return t;
}

void nlpd_tokenizer_free(struct nlpd_tokenizer *t)
{
    if (!t)
        return;
    if (t->norm) {
        nlpd_tnorm_free(t->norm);
        free(t->norm);
    }
    if (t->pre) {
        nlpd_tpre_free(t->pre);
        free(t->pre);
    }
    nlpd_tmodel_free(&t->model);
    for (size_t i = 0; i < t->nadded; i++) {
        free(t->added[i].content);
        free(t->added[i].cps);
    }
    free(t->added);
    for (size_t i = 0; i < t->post.nsingle; i++)
        free(t->post.single[i].ids);
    for (size_t i = 0; i < t->post.npair; i++)
        free(t->post.pair[i].ids);
    free(t->post.single);
    free(t->post.pair);
    free(t->id_str);
    free(t->dec_str);
    free(t->dec_special);
    if (t->dec) {
        nlpd_tdec_free(t->dec);
        free(t->dec);
    }
    free(t);
}

/* Indexes the added tokens (id -> string, first-char filter) and picks the pad id once everything is loaded. */
int nlpd_tok_finish(struct nlpd_tokenizer *t, const char *pad_token)
{
    int32_t nids = t->model.vocab.nids;
    for (size_t i = 0; i < t->nadded; i++)
        if (t->added[i].id >= nids)
            nids = t->added[i].id + 1;
    t->nids = nids;
    t->id_str = calloc((size_t)nids + 1, sizeof *t->id_str);
    if (!t->id_str)
        return NLPD_ENOMEM;
    for (int32_t i = 0; i < t->model.vocab.nids; i++)
        t->id_str[i] = t->model.vocab.str[i];
    t->dec_str = calloc((size_t)nids + 1, sizeof *t->dec_str);
    t->dec_special = calloc((size_t)nids + 1, 1);
    if (!t->dec_str || !t->dec_special)
        return NLPD_ENOMEM;
    memcpy(t->dec_str, t->id_str, (size_t)nids * sizeof *t->dec_str);
    for (size_t i = 0; i < t->nadded; i++) {
        const struct added_tok *a = &t->added[i];
        t->dec_str[a->id] = a->content;
        if (a->special) {
            /* the Rust library skips by content: a vocabulary token with the same string goes too */
            t->dec_special[a->id] = 1;
            int32_t v = nlpd_tvocab_get(&t->model.vocab, a->content, a->len);
            if (v >= 0)
                t->dec_special[v] = 1;
        }
    }
    for (size_t i = 0; i < t->nadded; i++) {
        if (!t->id_str[t->added[i].id])
            t->id_str[t->added[i].id] = t->added[i].content;
        int32_t f = t->added[i].cps[0];
        t->first_mask[(f & 255) >> 6] |= 1ull << (f & 63);
    }
    t->pad_id = -1;
    const char *cands[] = {pad_token, "[PAD]", "<pad>", "<|endoftext|>"};
    for (size_t i = 0; i < sizeof cands / sizeof cands[0] && t->pad_id < 0; i++) {
        if (!cands[i])
            continue;
        for (size_t k = 0; k < t->nadded && t->pad_id < 0; k++)
            if (!strcmp(t->added[k].content, cands[i]))
                t->pad_id = t->added[k].id;
        if (t->pad_id < 0)
            t->pad_id = nlpd_tvocab_get(&t->model.vocab, cands[i], strlen(cands[i]));
    }
    if (t->pad_id < 0)
        t->pad_id = 0;
    for (size_t i = 0; i < t->post.nsingle; i++)
        t->nspecial_single += t->post.single[i].is_seq ? 0 : t->post.single[i].nids;
    for (size_t i = 0; i < t->post.npair; i++)
        t->nspecial_pair += t->post.pair[i].is_seq ? 0 : t->post.pair[i].nids;
    return 0;
}

static struct nlpd_tokenizer *load_json_root(json_t *root, const char *file, struct nlpd_error *err)
{
    struct jctx c = {file, err};
    struct nlpd_tokenizer *t = nlpd_tok_new();
    if (!t) {
        nlpd_error_set(err, NLPD_ENOMEM, 0, "%s: out of memory", file);
        return NULL;
    }
    int rc = 0;
    json_t *v;
    if (!json_is_object(root)) {
        jfail(&c, "(root)", "expected an object");
        goto fail;
    }
    if (!(v = json_object_get(root, "model"))) {
        jfail(&c, "model", "missing");
        goto fail;
    }
    if ((rc = load_model(&c, v, &t->model)) < 0)
        goto fail;
    if ((rc = load_added(&c, jget(&c, root, "added_tokens", "added_tokens", 0, &rc), t)) < 0)
        goto fail;
    if ((v = json_object_get(root, "normalizer")) && !json_is_null(v)) {
        t->norm = calloc(1, sizeof *t->norm);
        if (!t->norm || (rc = load_normalizer(&c, v, t->norm, 0)) < 0)
            goto fail;
    }
    if ((v = json_object_get(root, "pre_tokenizer")) && !json_is_null(v)) {
        t->pre = calloc(1, sizeof *t->pre);
        if (!t->pre || (rc = load_pretok(&c, v, t->pre, 0)) < 0)
            goto fail;
    }
    if ((v = json_object_get(root, "decoder")) && !json_is_null(v)) {
        t->dec = calloc(1, sizeof *t->dec);
        if (!t->dec || (rc = load_decoder(&c, v, t->dec, 0)) < 0)
            goto fail;
    }
    if ((v = json_object_get(root, "post_processor")) && !json_is_null(v) && (rc = load_post(&c, v, &t->post, 0)) < 0)
        goto fail;
    if ((rc = nlpd_tok_finish(t, NULL)) < 0)
        goto fail;
    return t;
fail:
    if (err && !err->message[0])
        nlpd_error_set(err, NLPD_ENOMEM, 0, "%s: out of memory", file);
    nlpd_tokenizer_free(t);
    return NULL;
}

struct nlpd_tokenizer *nlpd_tokenizer_load_json(const char *json, size_t len, const char *name, struct nlpd_error *err)
{
    nlpd_error_clear(err);
    json_error_t je;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: invalid JSON at line %d column %d: %s", name, je.line, je.column,
                       je.text);
        return NULL;
    }
    struct nlpd_tokenizer *t = load_json_root(root, name, err);
    json_decref(root);
    return t;
}

/* ------------------------------------------------------------------ accessors */

const char *nlpd_tokenizer_id_to_token(const struct nlpd_tokenizer *t, int32_t id)
{
    if (!t || id < 0 || id >= t->nids)
        return NULL;
    return t->dec_str[id];
}

int32_t nlpd_tokenizer_vocab_size(const struct nlpd_tokenizer *t)
{
    return t ? t->nids : 0;
}

int32_t nlpd_tokenizer_pad_id(const struct nlpd_tokenizer *t)
{
    return t ? t->pad_id : 0;
}

size_t nlpd_tokenizer_model_max_length(const struct nlpd_tokenizer *t)
{
    return t ? t->model_max_length : 0;
}
