/* M2M100 / NLLB tokenizers: see m2m100_tok.h for the transformers v4.47 semantics followed. */
#include "m2m100_tok.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "spm.h"
#include "tok_common.h"
#include "tokenizer.h"

#define FAIRSEQ_OFFSET 1

/* transformers' FAIRSEQ_LANGUAGE_CODES of M2M100Tokenizer */
static const char *const kM2M100Codes[] = {
    "af", "am", "ar", "ast", "az", "ba",  "be", "bg", "bn", "br", "bs", "ca", "ceb", "cs", "cy", "da", "de",
    "el", "en", "es", "et",  "fa", "ff",  "fi", "fr", "fy", "ga", "gd", "gl", "gu",  "ha", "he", "hi", "hr",
    "ht", "hu", "hy", "id",  "ig", "ilo", "is", "it", "ja", "jv", "ka", "kk", "km",  "kn", "ko", "lb", "lg",
    "ln", "lo", "lt", "lv",  "mg", "mk",  "ml", "mn", "mr", "ms", "my", "ne", "nl",  "no", "ns", "oc", "or",
    "pa", "pl", "ps", "pt",  "ro", "ru",  "sd", "si", "sk", "sl", "so", "sq", "sr",  "ss", "su", "sv", "sw",
    "ta", "th", "tl", "tn",  "tr", "uk",  "ur", "uz", "vi", "wo", "xh", "yi", "yo",  "zh", "zu"};
static const char *const kWmt21Codes[] = {"en", "ha", "is", "ja", "cs", "ru", "zh", "de"};

struct added {
    char *s;
    size_t len;
    int32_t id;
    int lstrip, rstrip;
};

struct lang {
    char *code; /* undecorated */
    int32_t id;
};

struct nlpd_m2m_tok {
    enum nlpd_m2m_tok_kind kind;
    struct nlpd_spm *spm;
    struct nlpd_tokenizer *fast; /* NLLB folders with tokenizer.json but no sentencepiece.bpe.model */
    int32_t *spm2id;             /* M2M100: spm piece id -> vocab.json id (-1: not in vocab.json) */
    char **dec;                  /* id -> token for ids not handled otherwise (M2M100: vocab.json), NULL holes */
    size_t ndec;
    size_t vocab_end; /* ids below: vocabulary tokens; M2M100 language tokens start here */
    size_t madeup;    /* M2M100's num_madeup_words: ids after the languages without a token string */
    struct added *added;
    size_t nadded;
    struct lang *langs;
    size_t nlangs;
    int32_t *special; /* all_special_ids */
    size_t nspecial;
    char **special_tok; /* all_special_tokens (M2M100 keeps unskipped ones out of DecodePieces) */
    int32_t eos, pad, unk;
    size_t model_max_length;
    int legacy, clean_up;
    char *src_lang, *tgt_lang;
};

/* ------------------------------------------------------------------ loading */
static json_t *load_json(const char *dir, const char *name, int optional, int *rc, struct nlpd_error *err)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    *rc = 0;
    struct stat st;
    if (stat(p, &st) != 0) {
        if (!optional)
            *rc = nlpd_error_set(err, NLPD_ENOTFOUND, 0, "%s: %s", p, strerror(errno));
        return NULL;
    }
    json_error_t je;
    json_t *j = json_load_file(p, 0, &je);
    if (!j)
        *rc = nlpd_error_set(err, NLPD_EFORMAT, 0, "%s:%d: %s", p, je.line, je.text);
    else if (!json_is_object(j)) {
        *rc = nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: not a JSON object", p);
        json_decref(j);
        j = NULL;
    }
    return j;
}

static const char *role(json_t *cfg, json_t *map, const char *key)
{
    const char *s = map ? nlpd_tok_content(json_object_get(map, key)) : NULL;
    return s ? s : cfg ? nlpd_tok_content(json_object_get(cfg, key)) : NULL;
}

static int32_t added_id(const struct nlpd_m2m_tok *t, const char *s, size_t n)
{
    for (size_t i = 0; i < t->nadded; i++)
        if (t->added[i].len == n && !memcmp(t->added[i].s, s, n))
            return t->added[i].id;
    return -1;
}

static int add_added(struct nlpd_m2m_tok *t, const char *s, int32_t id, int lstrip, int rstrip)
{
    if (added_id(t, s, strlen(s)) >= 0)
        return 0;
    struct added *a = realloc(t->added, (t->nadded + 1) * sizeof *a);
    if (!a)
        return -1;
    t->added = a;
    a = &t->added[t->nadded];
    if (!(a->s = strdup(s)))
        return -1;
    a->len = strlen(s);
    a->id = id;
    a->lstrip = lstrip;
    a->rstrip = rstrip;
    t->nadded++;
    return 0;
}

/* convert_tokens_to_ids for a single token string */
static int32_t token_id(const struct nlpd_m2m_tok *t, const char *s, size_t n)
{
    int32_t id = added_id(t, s, n);
    if (id >= 0)
        return id;
    if (t->kind == NLPD_M2M_TOK_M2M100) {
        for (size_t i = 0; i < t->nlangs; i++) { /* lang_token_to_id comes first in _convert_token_to_id */
            size_t cl = strlen(t->langs[i].code);
            if (n == cl + 4 && !memcmp(s, "__", 2) && !memcmp(s + 2, t->langs[i].code, cl) &&
                !memcmp(s + n - 2, "__", 2))
                return t->langs[i].id;
        }
        if (!nlpd_spm_has_piece(t->spm, s, n))
            return t->unk;
        int32_t v = t->spm2id[nlpd_spm_piece_id(t->spm, s, n)];
        return v >= 0 ? v : t->unk;
    }
    if (!t->spm || !nlpd_spm_has_piece(t->spm, s, n))
        return t->unk;
    int32_t sp = nlpd_spm_piece_id(t->spm, s, n);
    return sp ? sp + FAIRSEQ_OFFSET : t->unk;
}

static int add_lang(struct nlpd_m2m_tok *t, const char *code, int32_t id)
{
    struct lang *l = realloc(t->langs, (t->nlangs + 1) * sizeof *l);
    if (!l)
        return -1;
    t->langs = l;
    if (!(l[t->nlangs].code = strdup(code)))
        return -1;
    l[t->nlangs++].id = id;
    return 0;
}

static int add_special(struct nlpd_m2m_tok *t, const char *s)
{
    if (!s)
        return 0;
    int32_t id = token_id(t, s, strlen(s));
    for (size_t i = 0; i < t->nspecial; i++)
        if (!strcmp(t->special_tok[i], s))
            return 0;
    int32_t *a = realloc(t->special, (t->nspecial + 1) * sizeof *a);
    if (a)
        t->special = a;
    char **b = realloc(t->special_tok, (t->nspecial + 1) * sizeof *b);
    if (b)
        t->special_tok = b;
    if (!a || !b || !(t->special_tok[t->nspecial] = strdup(s)))
        return -1;
    t->special[t->nspecial++] = id;
    return 0;
}

static int load_m2m_vocab(struct nlpd_m2m_tok *t, json_t *v, const char *file, struct nlpd_error *err)
{
    const char *k;
    json_t *val;
    size_t maxid;
    int rc = nlpd_tok_vocab_max_id(v, file, &maxid, err);
    if (rc)
        return rc;
    size_t nsp = nlpd_spm_size(t->spm);
    t->dec = calloc(maxid + 1, sizeof *t->dec);
    t->spm2id = malloc(nsp * sizeof *t->spm2id);
    if (!t->dec || !t->spm2id)
        return nlpd_error_set(err, NLPD_ENOMEM, 0, "%s: out of memory", file);
    t->ndec = maxid + 1;
    for (size_t i = 0; i < nsp; i++)
        t->spm2id[i] = -1;
    json_object_foreach(v, k, val)
    {
        int32_t id = (int32_t)json_integer_value(val);
        size_t kl = strlen(k);
        free(t->dec[id]);
        if (!(t->dec[id] = strdup(k)))
            return nlpd_error_set(err, NLPD_ENOMEM, 0, "%s: out of memory", file);
        if (nlpd_spm_has_piece(t->spm, k, kl))
            t->spm2id[nlpd_spm_piece_id(t->spm, k, kl)] = id;
    }
    t->vocab_end = json_object_size(v); /* language ids start at len(encoder) */
    return 0;
}

void nlpd_m2m_tok_free(struct nlpd_m2m_tok *t)
{
    if (!t)
        return;
    nlpd_spm_free(t->spm);
    nlpd_tokenizer_free(t->fast);
    free(t->spm2id);
    for (size_t i = 0; i < t->ndec; i++)
        free(t->dec[i]);
    free(t->dec);
    for (size_t i = 0; i < t->nadded; i++)
        free(t->added[i].s);
    free(t->added);
    for (size_t i = 0; i < t->nlangs; i++)
        free(t->langs[i].code);
    free(t->langs);
    for (size_t i = 0; i < t->nspecial; i++)
        free(t->special_tok[i]);
    free(t->special_tok);
    free(t->special);
    free(t->src_lang);
    free(t->tgt_lang);
    free(t);
}

static json_t *extra_specials(json_t *cfg, json_t *map)
{
    json_t *a = map ? json_object_get(map, "additional_special_tokens") : NULL;
    if (!json_is_array(a) || !json_array_size(a))
        a = cfg ? json_object_get(cfg, "additional_special_tokens") : NULL;
    return json_is_array(a) ? a : NULL;
}

struct nlpd_m2m_tok *nlpd_m2m_tok_load(const char *dir, struct nlpd_error *err)
{
    struct nlpd_m2m_tok *t = calloc(1, sizeof *t);
    json_t *cfg = NULL, *map = NULL, *vocab = NULL, *addj = NULL;
    int rc = 0;
    char path[4096];
    if (!t) {
        nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
        return NULL;
    }
    cfg = load_json(dir, "tokenizer_config.json", 1, &rc, err);
    if (!rc)
        map = load_json(dir, "special_tokens_map.json", 1, &rc, err);
    if (!rc)
        vocab = load_json(dir, "vocab.json", 1, &rc, err);
    if (!rc)
        addj = load_json(dir, "added_tokens.json", 1, &rc, err);
    if (rc)
        goto fail;
    const char *cls = cfg ? json_string_value(json_object_get(cfg, "tokenizer_class")) : NULL;
    if (cls && !strncmp(cls, "Nllb", 4))
        t->kind = NLPD_M2M_TOK_NLLB;
    else if (cls && !strncmp(cls, "M2M100", 6))
        t->kind = NLPD_M2M_TOK_M2M100;
    else
        t->kind = vocab ? NLPD_M2M_TOK_M2M100 : NLPD_M2M_TOK_NLLB;
    if (t->kind == NLPD_M2M_TOK_M2M100 && !vocab) {
        rc = nlpd_error_set(err, NLPD_ENOTFOUND, 0, "%s/vocab.json: missing (an M2M100 tokenizer needs it)", dir);
        goto fail;
    }
    snprintf(path, sizeof path, "%s/sentencepiece.bpe.model", dir);
    struct stat st;
    char tj[4096];
    snprintf(tj, sizeof tj, "%s/tokenizer.json", dir);
    if (t->kind == NLPD_M2M_TOK_NLLB && stat(path, &st) != 0 && stat(tj, &st) == 0) {
        /* a fast-only NLLB folder: tokenizer.json gives the pieces, the language placement stays ours (its
         * post-processor holds whatever src_lang it was saved with) */
        if (!(t->fast = nlpd_tokenizer_load(dir, err))) {
            rc = err ? err->code : NLPD_EFORMAT;
            goto fail;
        }
        t->vocab_end = (size_t)nlpd_tokenizer_vocab_size(t->fast);
    } else if (!(t->spm = nlpd_spm_load(path, err))) {
        rc = err ? err->code : NLPD_EFORMAT;
        goto fail;
    } else if (t->kind == NLPD_M2M_TOK_M2M100) {
        snprintf(path, sizeof path, "%s/vocab.json", dir);
        if ((rc = load_m2m_vocab(t, vocab, path, err)))
            goto fail;
    } else {
        t->vocab_end = nlpd_spm_size(t->spm) + FAIRSEQ_OFFSET;
    }
    /* the added tokens pinned by tokenizer_config.json, then added_tokens.json */
    json_t *atd = cfg ? json_object_get(cfg, "added_tokens_decoder") : NULL;
    if (json_is_object(atd)) {
        const char *k;
        json_t *v;
        json_object_foreach(atd, k, v)
        {
            char *end;
            long id = strtol(k, &end, 10);
            const char *c = nlpd_tok_content(v);
            if (*end || id < 0 || id >= (1L << 30) || !c) {
                rc = nlpd_error_set(err, NLPD_EFORMAT, 0,
                                    "%s/tokenizer_config.json: added_tokens_decoder \"%.32s\" "
                                    "is not an id with a content",
                                    dir, k);
                goto fail;
            }
            if (add_added(t, c, (int32_t)id, json_is_true(json_object_get(v, "lstrip")),
                          json_is_true(json_object_get(v, "rstrip"))) < 0)
                goto oom;
        }
    }
    if (addj) {
        const char *k;
        json_t *v;
        json_object_foreach(addj, k, v) if (json_is_integer(v) && json_integer_value(v) >= 0 &&
                                            json_integer_value(v) < (1 << 30) &&
                                            add_added(t, k, (int32_t)json_integer_value(v), 0, 0) < 0) goto oom;
    }
    /* NLLB's specials are fixed by the fairseq layout when nothing pins them */
    if (t->kind == NLPD_M2M_TOK_NLLB) {
        static const char *const fs[4] = {"<s>", "<pad>", "</s>", "<unk>"};
        for (int i = 0; i < 4; i++)
            if (add_added(t, fs[i], i, 0, 0) < 0)
                goto oom;
    }
    const char *eos = role(cfg, map, "eos_token"), *pad = role(cfg, map, "pad_token"),
               *unk = role(cfg, map, "unk_token");
    if (!unk)
        unk = "<unk>";
    t->unk = added_id(t, unk, strlen(unk));
    if (t->unk < 0 && t->kind == NLPD_M2M_TOK_M2M100 && nlpd_spm_has_piece(t->spm, unk, strlen(unk)))
        t->unk = t->spm2id[nlpd_spm_piece_id(t->spm, unk, strlen(unk))];
    if (t->unk < 0)
        t->unk = 3;
    t->eos = token_id(t, eos ? eos : "</s>", strlen(eos ? eos : "</s>"));
    t->pad = token_id(t, pad ? pad : "<pad>", strlen(pad ? pad : "<pad>"));
    /* language codes */
    json_t *extra = extra_specials(cfg, map);
    if (t->kind == NLPD_M2M_TOK_M2M100) {
        const char *lc = cfg ? json_string_value(json_object_get(cfg, "language_codes")) : NULL;
        const char *const *codes = kM2M100Codes;
        size_t nc = sizeof kM2M100Codes / sizeof *kM2M100Codes;
        if (lc && !strcmp(lc, "wmt21")) {
            codes = kWmt21Codes;
            nc = sizeof kWmt21Codes / sizeof *kWmt21Codes;
        } else if (lc && strcmp(lc, "m2m100")) {
            rc = nlpd_error_set(err, NLPD_EFORMAT, 0,
                                "%s/tokenizer_config.json: language_codes \"%.32s\" is not "
                                "m2m100 or wmt21",
                                dir, lc);
            goto fail;
        }
        for (size_t i = 0; i < nc; i++)
            if (add_lang(t, codes[i], (int32_t)(t->vocab_end + i)) < 0)
                goto oom;
    } else if (extra) {
        size_t i;
        json_t *v;
        json_array_foreach(extra, i, v)
        {
            const char *c = nlpd_tok_content(v);
            if (!c)
                continue;
            int32_t id = added_id(t, c, strlen(c));
            if (id < 0 && t->fast) {
                rc = nlpd_error_set(err, NLPD_EFORMAT, 0,
                                    "%s: language %s has no id in tokenizer_config.json's "
                                    "added_tokens_decoder or added_tokens.json",
                                    dir, c);
                goto fail;
            }
            if (id < 0) /* NllbTokenizer's own layout: after the spm pieces */
                id = (int32_t)(t->vocab_end + i);
            if (add_lang(t, c, id) < 0)
                goto oom;
        }
    }
    if (!t->nlangs) {
        rc = nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: no language codes (additional_special_tokens) found", dir);
        goto fail;
    }
    static const char *const roles[] = {"bos_token", "eos_token", "unk_token", "sep_token",
                                        "pad_token", "cls_token", "mask_token"};
    for (size_t i = 0; i < sizeof roles / sizeof *roles; i++)
        if (add_special(t, role(cfg, map, roles[i])) < 0)
            goto oom;
    if (extra) {
        size_t i;
        json_t *v;
        json_array_foreach(extra, i, v) if (add_special(t, nlpd_tok_content(v)) < 0) goto oom;
    }
    json_t *mml = cfg ? json_object_get(cfg, "model_max_length") : NULL;
    t->model_max_length = json_is_integer(mml) && json_integer_value(mml) > 0 && json_integer_value(mml) < (1 << 30)
                              ? (size_t)json_integer_value(mml)
                              : 1024;
    json_t *mw = cfg ? json_object_get(cfg, "num_madeup_words") : NULL;
    t->madeup = json_is_integer(mw) && json_integer_value(mw) >= 0 && json_integer_value(mw) < 4096
                    ? (size_t)json_integer_value(mw)
                    : 8;
    t->legacy = cfg && json_is_true(json_object_get(cfg, "legacy_behaviour"));
    t->clean_up = cfg && json_is_true(json_object_get(cfg, "clean_up_tokenization_spaces"));
    const char *s = cfg ? json_string_value(json_object_get(cfg, "src_lang")) : NULL;
    if (s && !(t->src_lang = strdup(s)))
        goto oom;
    s = cfg ? json_string_value(json_object_get(cfg, "tgt_lang")) : NULL;
    if (s && !(t->tgt_lang = strdup(s)))
        goto oom;
    json_decref(cfg);
    json_decref(map);
    json_decref(vocab);
    json_decref(addj);
    return t;
oom:
    rc = nlpd_error_set(err, NLPD_ENOMEM, 0, "%s: out of memory loading the tokenizer", dir);
fail:
    (void)rc;
    json_decref(cfg);
    json_decref(map);
    json_decref(vocab);
    json_decref(addj);
    nlpd_m2m_tok_free(t);
    return NULL;
}

/* ------------------------------------------------------------------ encode */
static int push_id(int32_t **ids, size_t *n, size_t *cap, int32_t id)
{
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 64;
        int32_t *p = realloc(*ids, c * sizeof *p);
        if (!p)
            return -1;
        *ids = p;
        *cap = c;
    }
    (*ids)[(*n)++] = id;
    return 0;
}

static int is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static int encode_chunk(const struct nlpd_m2m_tok *t, const char *s, size_t n, struct nlpd_spm_pieces *pc,
                        int32_t **ids, size_t *nids, size_t *cap, struct nlpd_error *err)
{
    if (!n)
        return 0;
    int rc = nlpd_spm_encode(t->spm, s, n, pc, err);
    if (rc)
        return rc;
    for (size_t i = 0; i < pc->n; i++)
        if (push_id(ids, nids, cap, token_id(t, pc->buf + pc->off[i], pc->len[i])) < 0)
            return nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
    return 0;
}

int nlpd_m2m_tok_encode_placed(const struct nlpd_m2m_tok *t, const char *text, size_t len, int32_t lang_id, int legacy,
                               size_t max_length, int32_t **ids, size_t *n, size_t *cap, struct nlpd_error *err)
{
    struct nlpd_spm_pieces pc = {0};
    int rc = 0;
    *n = 0;
    if (lang_id >= 0 && !legacy && push_id(ids, n, cap, lang_id) < 0)
        return nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
    if (t->fast) { /* the pieces of tokenizer.json without its post-processor's specials */
        struct nlpd_encoding enc = {0};
        rc = nlpd_tokenizer_encode(t->fast, text, len, NULL, 0, 0, &enc, err);
        for (size_t i = 0; !rc && i < enc.n; i++)
            if (!enc.special[i] && push_id(ids, n, cap, enc.ids[i]) < 0)
                rc = nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
        nlpd_encoding_free(&enc);
        if (rc)
            return rc;
        len = 0; /* nothing left for the SentencePiece path below */
    }
    /* split on the added tokens, leftmost then longest */
    size_t start = 0, i = 0;
    while (i < len && !rc) {
        const struct added *best = NULL;
        for (size_t a = 0; a < t->nadded; a++) {
            const struct added *x = &t->added[a];
            if (x->len && x->len <= len - i && !memcmp(text + i, x->s, x->len) && (!best || x->len > best->len))
                best = x;
        }
        if (!best) {
            i++;
            continue;
        }
        size_t end = i;
        if (best->lstrip)
            while (end > start && is_space((unsigned char)text[end - 1]))
                end--;
        rc = encode_chunk(t, text + start, end - start, &pc, ids, n, cap, err);
        if (!rc && push_id(ids, n, cap, best->id) < 0)
            rc = nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
        i += best->len;
        if (best->rstrip)
            while (i < len && is_space((unsigned char)text[i]))
                i++;
        start = i;
    }
    if (!rc)
        rc = encode_chunk(t, text + start, len - start, &pc, ids, n, cap, err);
    nlpd_spm_pieces_free(&pc);
    if (rc)
        return rc;
    if (!max_length)
        max_length = t->model_max_length;
    size_t prefix = lang_id >= 0 && !legacy, specials = 1 + (lang_id >= 0);
    if (*n - prefix + specials > max_length && max_length >= specials) /* truncation keeps the specials */
        *n = prefix + max_length - specials;
    if (push_id(ids, n, cap, t->eos) < 0 || (lang_id >= 0 && legacy && push_id(ids, n, cap, lang_id) < 0))
        return nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
    return 0;
}

int nlpd_m2m_tok_encode(const struct nlpd_m2m_tok *t, const char *text, size_t len, int32_t src_lang_id,
                        size_t max_length, int32_t **ids, size_t *n, size_t *cap, struct nlpd_error *err)
{
    return nlpd_m2m_tok_encode_placed(t, text, len, src_lang_id, t->legacy, max_length, ids, n, cap, err);
}

/* ------------------------------------------------------------------ decode */
static const char *id_token(const struct nlpd_m2m_tok *t, int32_t id, size_t *len, char *buf, size_t bufsz)
{
    for (size_t i = 0; i < t->nadded; i++)
        if (t->added[i].id == id) {
            *len = t->added[i].len;
            return t->added[i].s;
        }
    for (size_t i = 0; i < t->nlangs; i++)
        if (t->langs[i].id == id) {
            if (t->kind == NLPD_M2M_TOK_M2M100) {
                snprintf(buf, bufsz, "__%s__", t->langs[i].code);
                *len = strlen(buf);
                return buf;
            }
            *len = strlen(t->langs[i].code);
            return t->langs[i].code;
        }
    const char *s = NULL;
    if (t->kind == NLPD_M2M_TOK_M2M100) {
        s = (size_t)id < t->ndec ? t->dec[id] : NULL;
    } else if (id >= FAIRSEQ_OFFSET) {
        s = nlpd_spm_id_piece(t->spm, id - FAIRSEQ_OFFSET, len);
    }
    if (!s) { /* decoder.get(index, unk_token) */
        s = "<unk>";
        for (size_t i = 0; i < t->nadded; i++)
            if (t->added[i].id == t->unk)
                s = t->added[i].s;
    }
    *len = strlen(s);
    return s;
}

static size_t vocab_size(const struct nlpd_m2m_tok *t)
{
    size_t vocab = t->kind == NLPD_M2M_TOK_M2M100 ? t->vocab_end + t->nlangs + t->madeup : t->vocab_end;
    for (size_t i = 0; i < t->nadded; i++)
        if ((size_t)t->added[i].id + 1 > vocab)
            vocab = (size_t)t->added[i].id + 1;
    return vocab;
}

const char *nlpd_m2m_tok_id_to_token(const struct nlpd_m2m_tok *t, int32_t id, char *buf, size_t bufsz, size_t *len)
{
    size_t l = 0;
    if (id < 0 || (size_t)id >= vocab_size(t))
        return NULL;
    const char *s = t->fast ? nlpd_tokenizer_id_to_token(t->fast, id) : id_token(t, id, &l, buf, bufsz);
    if (s && t->fast)
        l = strlen(s);
    if (len)
        *len = l;
    return s;
}

static int is_special_tok(const struct nlpd_m2m_tok *t, const char *s, size_t n)
{
    for (size_t i = 0; i < t->nspecial; i++)
        if (strlen(t->special_tok[i]) == n && !memcmp(t->special_tok[i], s, n))
            return 1;
    return 0;
}

static void clean_up(struct nlpd_tok_sb *s)
{
    static const char *const from[] = {" .", " ?", " !", " ,", " ' ", " n't", " 'm", " 's", " 've", " 're"};
    static const char *const to[] = {".", "?", "!", ",", "'", "n't", "'m", "'s", "'ve", "'re"};
    for (size_t r = 0; r < sizeof from / sizeof *from; r++) { /* Python's chained str.replace, in order */
        size_t fl = strlen(from[r]), tl = strlen(to[r]), w = 0;
        for (size_t i = 0; i < s->n;) {
            if (i + fl <= s->n && !memcmp(s->p + i, from[r], fl)) {
                memmove(s->p + w, to[r], tl);
                w += tl;
                i += fl;
            } else {
                s->p[w++] = s->p[i++];
            }
        }
        s->n = w;
        s->p[w] = 0;
    }
}

static void strip(struct nlpd_tok_sb *s)
{
    size_t a = 0;
    while (a < s->n && is_space((unsigned char)s->p[a]))
        a++;
    size_t b = s->n;
    while (b > a && is_space((unsigned char)s->p[b - 1]))
        b--;
    memmove(s->p, s->p + a, b - a);
    s->n = b - a;
    s->p[s->n] = 0;
}

/* M2M100's convert_tokens_to_string: special tokens verbatim, runs of others through DecodePieces */
static int flush_run(const struct nlpd_m2m_tok *t, const char **tok, const size_t *tl, size_t k,
                     struct nlpd_tok_sb *out, struct nlpd_error *err)
{
    if (!k)
        return 0;
    char *txt = NULL;
    size_t n = 0;
    int rc = nlpd_spm_decode_pieces(t->spm, tok, tl, k, &txt, &n, err);
    if (!rc && nlpd_tok_sb_add(out, txt, n) < 0)
        rc = nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
    free(txt);
    return rc;
}

int nlpd_m2m_tok_decode(const struct nlpd_m2m_tok *t, const int32_t *ids, size_t n, int skip_special_tokens,
                        char **text, size_t *len, struct nlpd_error *err)
{
    if (t->fast)
        return nlpd_tokenizer_decode(t->fast, ids, n, skip_special_tokens, text, len, err);
    struct nlpd_tok_sb out = {0};
    const char **tok = malloc((n ? n : 1) * sizeof *tok);
    size_t *tl = malloc((n ? n : 1) * sizeof *tl);
    char(*bufs)[64] = malloc((n ? n : 1) * sizeof *bufs);
    int rc = 0;
    size_t k = 0;
    if (!tok || !tl || !bufs || nlpd_tok_sb_add(&out, "", 0) < 0) {
        rc = nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
        goto done;
    }
    size_t vocab = vocab_size(t);
    for (size_t i = 0; i < n && !rc; i++) {
        if (ids[i] < 0 || (size_t)ids[i] >= vocab) {
            rc = nlpd_error_set(err, NLPD_ERANGE, 0, "token id %d is outside the vocabulary", ids[i]);
            break;
        }
        size_t l;
        const char *s = id_token(t, ids[i], &l, bufs[i], sizeof bufs[i]);
        int special = is_special_tok(t, s, l);
        if (skip_special_tokens && special)
            continue;
        if (t->kind == NLPD_M2M_TOK_M2M100 && special) {
            rc = flush_run(t, tok, tl, k, &out, err);
            k = 0;
            if (!rc && nlpd_tok_sb_add(&out, s, l) < 0)
                rc = nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
            continue;
        }
        if (t->kind == NLPD_M2M_TOK_NLLB) {
            /* "".join(tokens).replace("\u2581", " ") */
            for (size_t j = 0; j < l && !rc;) {
                if (j + 3 <= l && !memcmp(s + j, "\xe2\x96\x81", 3)) {
                    rc = nlpd_tok_sb_add(&out, " ", 1);
                    j += 3;
                } else {
                    rc = nlpd_tok_sb_add(&out, s + j, 1);
                    j++;
                }
            }
            if (rc)
                rc = nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
            continue;
        }
        tok[k] = s;
        tl[k++] = l;
    }
    if (!rc && t->kind == NLPD_M2M_TOK_M2M100)
        rc = flush_run(t, tok, tl, k, &out, err);
    if (!rc) {
        strip(&out);
        if (t->clean_up)
            clean_up(&out);
    }
done:
    free(tok);
    free(tl);
    free(bufs);
    if (rc) {
        free(out.p);
        return rc;
    }
    *text = out.p;
    if (len)
        *len = out.n;
    return 0;
}

/* ------------------------------------------------------------------ accessors */
int32_t nlpd_m2m_tok_lang_id(const struct nlpd_m2m_tok *t, const char *code)
{
    size_t n = strlen(code);
    if (t->kind == NLPD_M2M_TOK_M2M100 && n > 4 && !strncmp(code, "__", 2) && !strcmp(code + n - 2, "__")) {
        code += 2;
        n -= 4;
    }
    for (size_t i = 0; i < t->nlangs; i++)
        if (strlen(t->langs[i].code) == n && !memcmp(t->langs[i].code, code, n))
            return t->langs[i].id;
    return -1;
}

size_t nlpd_m2m_tok_lang_count(const struct nlpd_m2m_tok *t)
{
    return t->nlangs;
}

const char *nlpd_m2m_tok_lang_code(const struct nlpd_m2m_tok *t, size_t i)
{
    return i < t->nlangs ? t->langs[i].code : NULL;
}

enum nlpd_m2m_tok_kind nlpd_m2m_tok_kind(const struct nlpd_m2m_tok *t)
{
    return t->kind;
}

const char *nlpd_m2m_tok_default_src(const struct nlpd_m2m_tok *t)
{
    return t->src_lang;
}

const char *nlpd_m2m_tok_default_tgt(const struct nlpd_m2m_tok *t)
{
    return t->tgt_lang;
}

int nlpd_m2m_tok_legacy(const struct nlpd_m2m_tok *t)
{
    return t->legacy;
}

size_t nlpd_m2m_tok_model_max_length(const struct nlpd_m2m_tok *t)
{
    return t->model_max_length;
}

int32_t nlpd_m2m_tok_eos(const struct nlpd_m2m_tok *t)
{
    return t->eos;
}

int32_t nlpd_m2m_tok_pad(const struct nlpd_m2m_tok *t)
{
    return t->pad;
}
