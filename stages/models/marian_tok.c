/* The Marian (OPUS-MT) tokenizer: see marian_tok.h for the transformers v4.47 semantics followed. */
#include "marian_tok.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nlpd_util.h"
#include "spm.h"
#include "tok_common.h"

static const char kSpace[] = "\xe2\x96\x81";

/* ------------------------------------------------------------------ string -> id hash */
struct shash {
    char **key;
    size_t *klen;
    int32_t *val;
    size_t mask, used;
};

static uint64_t fnv(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 1099511628211ULL;
    return h ^ (h >> 29);
}

static int sh_grow(struct shash *h)
{
    size_t nm = h->mask ? h->mask * 2 + 1 : 255;
    char **k = calloc(nm + 1, sizeof *k);
    size_t *l = calloc(nm + 1, sizeof *l);
    int32_t *v = calloc(nm + 1, sizeof *v);
    if (!k || !l || !v) {
        free(k);
        free(l);
        free(v);
        return -1;
    }
    if (h->key)
        for (size_t i = 0; i <= h->mask; i++) {
            if (!h->key[i])
                continue;
            size_t j = fnv(h->key[i], h->klen[i]) & nm;
            while (k[j])
                j = (j + 1) & nm;
            k[j] = h->key[i];
            l[j] = h->klen[i];
            v[j] = h->val[i];
        }
    free(h->key);
    free(h->klen);
    free(h->val);
    h->key = k;
    h->klen = l;
    h->val = v;
    h->mask = nm;
    return 0;
}

static int32_t sh_get(const struct shash *h, const char *s, size_t n)
{
    if (!h->key)
        return -1;
    for (size_t j = fnv(s, n) & h->mask; h->key[j]; j = (j + 1) & h->mask)
        if (h->klen[j] == n && memcmp(h->key[j], s, n) == 0)
            return h->val[j];
    return -1;
}

/* Sets s -> v (a later set wins, as a Python dict does). */
static int sh_set(struct shash *h, const char *s, size_t n, int32_t v)
{
    if ((h->used + 1) * 2 > h->mask && sh_grow(h) < 0)
        return -1;
    size_t j = fnv(s, n) & h->mask;
    for (; h->key[j]; j = (j + 1) & h->mask)
        if (h->klen[j] == n && memcmp(h->key[j], s, n) == 0) {
            h->val[j] = v;
            return 0;
        }
    h->key[j] = malloc(n + 1);
    if (!h->key[j])
        return -1;
    memcpy(h->key[j], s, n);
    h->key[j][n] = 0;
    h->klen[j] = n;
    h->val[j] = v;
    h->used++;
    return 0;
}

static void sh_free(struct shash *h)
{
    if (h->key)
        for (size_t i = 0; i <= h->mask; i++)
            free(h->key[i]);
    free(h->key);
    free(h->klen);
    free(h->val);
    memset(h, 0, sizeof *h);
}

/* ------------------------------------------------------------------ the tokenizer */
struct added {
    char *s;
    size_t len;
    int32_t id;
    int lstrip, rstrip, single_word, special;
};

struct nlpd_marian_tok {
    struct nlpd_spm *src, *tgt;
    struct shash enc; /* vocab.json: token -> id */
    char **dec;       /* id -> token (target vocab with separate_vocabs), NULL for holes */
    size_t *dec_len;
    size_t ndec; /* max id + 1 */
    struct added *added;
    size_t nadded;
    char **special; /* all_special_tokens */
    size_t *special_len;
    size_t nspecial;
    int32_t *special_ids;
    char *unk_tok;
    int32_t eos, pad, unk;
    size_t model_max_length;
    int clean_up;
    char **langs;
    size_t nlangs;
};

void nlpd_marian_tok_free(struct nlpd_marian_tok *t)
{
    if (!t)
        return;
    nlpd_spm_free(t->src);
    nlpd_spm_free(t->tgt);
    sh_free(&t->enc);
    for (size_t i = 0; i < t->ndec; i++)
        free(t->dec[i]);
    free(t->dec);
    free(t->dec_len);
    for (size_t i = 0; i < t->nadded; i++)
        free(t->added[i].s);
    free(t->added);
    for (size_t i = 0; i < t->nspecial; i++)
        free(t->special[i]);
    free(t->special);
    free(t->special_len);
    free(t->special_ids);
    free(t->unk_tok);
    for (size_t i = 0; i < t->nlangs; i++)
        free(t->langs[i]);
    free(t->langs);
    free(t);
}

static char *path_join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (p) {
        memcpy(p, dir, a);
        p[a] = '/';
        memcpy(p + a + 1, name, b + 1);
    }
    return p;
}

static const char *role(json_t *cfg, json_t *map, const char *key, const char *def)
{
    const char *s = map ? nlpd_tok_content(json_object_get(map, key)) : NULL;
    if (!s && cfg)
        s = nlpd_tok_content(json_object_get(cfg, key));
    return s ? s : def;
}

static int add_added(struct nlpd_marian_tok *t, const char *s, int32_t id, int lstrip, int rstrip, int single_word,
                     int special)
{
    for (size_t i = 0; i < t->nadded; i++)
        if (!strcmp(t->added[i].s, s))
            return 0;
    struct added *a = realloc(t->added, (t->nadded + 1) * sizeof *a);
    if (!a)
        return -1;
    t->added = a;
    a = &t->added[t->nadded];
    a->s = strdup(s);
    if (!a->s)
        return -1;
    a->len = strlen(s);
    a->id = id;
    a->lstrip = lstrip;
    a->rstrip = rstrip;
    a->single_word = single_word;
    a->special = special;
    t->nadded++;
    return 0;
}

static int32_t added_id(const struct nlpd_marian_tok *t, const char *s, size_t n)
{
    for (size_t i = 0; i < t->nadded; i++)
        if (t->added[i].len == n && memcmp(t->added[i].s, s, n) == 0)
            return t->added[i].id;
    return -1;
}

/* convert_tokens_to_ids: the added tokens first, then vocab.json, else unk. */
static int32_t token_id(const struct nlpd_marian_tok *t, const char *s, size_t n)
{
    int32_t id = added_id(t, s, n);
    if (id < 0)
        id = sh_get(&t->enc, s, n);
    return id < 0 ? t->unk : id;
}

static int add_special(struct nlpd_marian_tok *t, const char *s)
{
    for (size_t i = 0; i < t->nspecial; i++)
        if (!strcmp(t->special[i], s))
            return 0;
    char **a = realloc(t->special, (t->nspecial + 1) * sizeof *a);
    if (a)
        t->special = a;
    size_t *l = realloc(t->special_len, (t->nspecial + 1) * sizeof *l);
    if (l)
        t->special_len = l;
    if (!a || !l || !(t->special[t->nspecial] = strdup(s)))
        return -1;
    t->special_len[t->nspecial++] = strlen(s);
    return 0;
}

static int load_vocab(json_t *v, const char *file, struct shash *h, char ***dec, size_t **dec_len, size_t *ndec,
                      struct nlpd_error *err)
{
    const char *k;
    json_t *val;
    size_t maxid;
    int rc = nlpd_tok_vocab_max_id(v, file, &maxid, err);
    if (rc)
        return rc;
    if (dec) {
        *dec = calloc(maxid + 1, sizeof **dec);
        *dec_len = calloc(maxid + 1, sizeof **dec_len);
        if (!*dec || !*dec_len)
            return nlpd_error_set(err, NLPD_ENOMEM, 0, "%s: out of memory", file);
        *ndec = maxid + 1;
    }
    json_object_foreach(v, k, val)
    {
        int32_t id = (int32_t)json_integer_value(val);
        if (h && sh_set(h, k, strlen(k), id) < 0)
            return nlpd_error_set(err, NLPD_ENOMEM, 0, "%s: out of memory", file);
        if (dec) { /* {v: k for k, v in vocab.items()}: the last key of an id wins */
            free((*dec)[id]);
            (*dec)[id] = strdup(k);
            if (!(*dec)[id])
                return nlpd_error_set(err, NLPD_ENOMEM, 0, "%s: out of memory", file);
            (*dec_len)[id] = strlen(k);
        }
    }
    return 0;
}

struct nlpd_marian_tok *nlpd_marian_tok_load(const char *dir, struct nlpd_error *err)
{
    struct nlpd_marian_tok *t = calloc(1, sizeof *t);
    json_t *cfg = NULL, *map = NULL, *vocab = NULL, *tvocab = NULL;
    char *p = NULL;
    int rc = 0;
    if (!t) {
        nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
        return NULL;
    }
    rc = nlpd_util_load_json(dir, "tokenizer_config.json", NLPD_UTIL_JSON_OPTIONAL, &cfg, err);
    if (!rc)
        rc = nlpd_util_load_json(dir, "special_tokens_map.json", NLPD_UTIL_JSON_OPTIONAL, &map, err);
    if (!rc)
        rc = nlpd_util_load_json(dir, "vocab.json", 0, &vocab, err);
    if (rc)
        goto fail;
    int separate = cfg && json_is_true(json_object_get(cfg, "separate_vocabs"));
    if (separate && (rc = nlpd_util_load_json(dir, "target_vocab.json", 0, &tvocab, err)))
        goto fail;
    t->model_max_length = 512;
    json_t *mml = cfg ? json_object_get(cfg, "model_max_length") : NULL;
    if (json_is_integer(mml) && json_integer_value(mml) > 0)
        t->model_max_length = (size_t)json_integer_value(mml);
    else if (json_is_real(mml) && json_real_value(mml) > 0) /* 1e30 for "no limit" */
        t->model_max_length = json_real_value(mml) >= 1e18 ? SIZE_MAX : (size_t)json_real_value(mml);
    t->clean_up = cfg && json_is_true(json_object_get(cfg, "clean_up_tokenization_spaces"));

    p = path_join(dir, "vocab.json");
    if (!p) {
        rc = nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
        goto fail;
    }
    if ((rc = load_vocab(vocab, p, &t->enc, separate ? NULL : &t->dec, &t->dec_len, &t->ndec, err)) < 0)
        goto fail;
    if (separate) {
        free(p);
        p = path_join(dir, "target_vocab.json");
        if (!p || (rc = load_vocab(tvocab, p, NULL, &t->dec, &t->dec_len, &t->ndec, err)) < 0) {
            rc = rc ? rc : nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
            goto fail;
        }
    }
    /* supported_language_codes */
    const char *k;
    json_t *val;
    json_object_foreach(vocab, k, val)
    {
        size_t kl = strlen(k);
        if (kl >= 4 && !strncmp(k, ">>", 2) && !strcmp(k + kl - 2, "<<")) {
            char **nl = realloc(t->langs, (t->nlangs + 1) * sizeof *nl);
            if (!nl || !(nl[t->nlangs] = strdup(k))) {
                if (nl)
                    t->langs = nl;
                rc = nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
                goto fail;
            }
            t->langs = nl;
            t->nlangs++;
        }
    }

    /* Special tokens: special_tokens_map.json over tokenizer_config.json over the defaults. */
    const char *eos = role(cfg, map, "eos_token", "</s>");
    const char *unk = role(cfg, map, "unk_token", "<unk>");
    const char *pad = role(cfg, map, "pad_token", "<pad>");
    t->unk = sh_get(&t->enc, unk, strlen(unk));
    if (t->unk < 0) {
        rc = nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: the unk token \"%.64s\" is not in the vocabulary", p, unk);
        goto fail;
    }
    t->unk_tok = strdup(unk);
    if (!t->unk_tok || add_special(t, eos) < 0 || add_special(t, unk) < 0 || add_special(t, pad) < 0) {
        rc = nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
        goto fail;
    }
    json_t *extra = map ? json_object_get(map, "additional_special_tokens") : NULL;
    if (!json_is_array(extra) && cfg)
        extra = json_object_get(cfg, "additional_special_tokens");
    size_t i;
    json_array_foreach(extra, i, val)
    {
        const char *s = nlpd_tok_content(val);
        if (s && add_special(t, s) < 0) {
            rc = nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
            goto fail;
        }
    }
    /* Added tokens: added_tokens_decoder of tokenizer_config.json, then the special tokens missing from it. */
    json_t *atd = cfg ? json_object_get(cfg, "added_tokens_decoder") : NULL;
    json_object_foreach(atd, k, val)
    {
        char *end;
        long id = strtol(k, &end, 10);
        const char *s = nlpd_tok_content(val);
        if (*end || id < 0 || id >= (1L << 30) || !s || !*s) {
            rc = nlpd_error_set(err, NLPD_EFORMAT, 0,
                                "%s/tokenizer_config.json: bad added_tokens_decoder entry \"%.32s\"", dir, k);
            goto fail;
        }
        if (add_added(t, s, (int32_t)id, json_is_true(json_object_get(val, "lstrip")),
                      json_is_true(json_object_get(val, "rstrip")), json_is_true(json_object_get(val, "single_word")),
                      json_is_true(json_object_get(val, "special"))) < 0) {
            rc = nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
            goto fail;
        }
    }
    for (i = 0; i < t->nspecial; i++) {
        if (added_id(t, t->special[i], t->special_len[i]) >= 0)
            continue;
        int32_t id = sh_get(&t->enc, t->special[i], t->special_len[i]);
        if (id < 0) {
            rc = nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: the special token \"%.64s\" is not in the vocabulary", p,
                                t->special[i]);
            goto fail;
        }
        if (add_added(t, t->special[i], id, 0, 0, 0, 1) < 0) {
            rc = nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
            goto fail;
        }
    }
    t->special_ids = malloc(t->nspecial * sizeof *t->special_ids);
    if (!t->special_ids) {
        rc = nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
        goto fail;
    }
    for (i = 0; i < t->nspecial; i++)
        t->special_ids[i] = token_id(t, t->special[i], t->special_len[i]);
    t->eos = token_id(t, eos, strlen(eos));
    t->pad = token_id(t, pad, strlen(pad));
    t->unk = token_id(t, unk, strlen(unk));
    for (i = 0; i < t->nadded; i++)
        if ((size_t)t->added[i].id >= t->ndec) {
            rc = nlpd_error_set(err, NLPD_EFORMAT, 0,
                                "%s/tokenizer_config.json: added token \"%.64s\" has id %d beyond the vocabulary", dir,
                                t->added[i].s, (int)t->added[i].id);
            goto fail;
        }

    free(p);
    p = path_join(dir, "source.spm");
    if (!p || !(t->src = nlpd_spm_load(p, err))) {
        rc = p ? (err ? err->code : NLPD_EFORMAT) : nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
        goto fail;
    }
    free(p);
    p = path_join(dir, "target.spm");
    if (!p || !(t->tgt = nlpd_spm_load(p, err))) {
        rc = p ? (err ? err->code : NLPD_EFORMAT) : nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
        goto fail;
    }
    free(p);
    json_decref(cfg);
    json_decref(map);
    json_decref(vocab);
    json_decref(tvocab);
    return t;
fail:
    (void)rc;
    free(p);
    json_decref(cfg);
    json_decref(map);
    json_decref(vocab);
    json_decref(tvocab);
    nlpd_marian_tok_free(t);
    return NULL;
}

/* ------------------------------------------------------------------ Python helpers */
/* Length of the str.isspace() char at s (UTF-8), or 0. */
static size_t py_space_at(const unsigned char *s, size_t n)
{
    if (!n)
        return 0;
    unsigned c = s[0];
    if ((c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20))
        return 1;
    if (c == 0xc2 && n >= 2 && (s[1] == 0x85 || s[1] == 0xa0))
        return 2;
    if (c == 0xe1 && n >= 3 && s[1] == 0x9a && s[2] == 0x80) /* U+1680 */
        return 3;
    if (c == 0xe2 && n >= 3) {
        if (s[1] == 0x80 &&
            (s[2] <= 0x8a || s[2] == 0xa8 || s[2] == 0xa9 || s[2] == 0xaf)) /* U+2000-200A 2028 2029 202F */
            return 3;
        if (s[1] == 0x81 && s[2] == 0x9f) /* U+205F */
            return 3;
    }
    if (c == 0xe3 && n >= 3 && s[1] == 0x80 && s[2] == 0x80) /* U+3000 */
        return 3;
    return 0;
}

/* Length of the str.isspace() char ending at s[n-1], or 0. */
static size_t py_space_before(const unsigned char *s, size_t n)
{
    for (size_t k = 1; k <= 3 && k <= n; k++)
        if (py_space_at(s + n - k, k) == k)
            return k;
    return 0;
}

static void py_lstrip(const char **s, size_t *n)
{
    size_t k;
    while ((k = py_space_at((const unsigned char *)*s, *n)) > 0) {
        *s += k;
        *n -= k;
    }
}

static void py_rstrip(const char *s, size_t *n)
{
    size_t k;
    while ((k = py_space_before((const unsigned char *)s, *n)) > 0)
        *n -= k;
}

/* ------------------------------------------------------------------ encode */
/* The regex ">>.+<<" anchored at s[at]: the end of the match, or 0. Greedy: the last "<<" of the line. */
static size_t lang_match(const char *s, size_t n, size_t at)
{
    if (n - at < 5 || s[at] != '>' || s[at + 1] != '>')
        return 0;
    const char *nl = memchr(s + at + 2, '\n', n - at - 2);
    size_t line_end = nl ? (size_t)(nl - s) : n;
    for (size_t e = line_end; e >= at + 5; e--) /* e: end of "<<" */
        if (s[e - 1] == '<' && s[e - 2] == '<')
            return e;
    return 0;
}

struct chunk {
    const char *s;
    size_t n;
    int32_t added; /* id of the added token, or -1 */
};

static int push_id(int32_t **ids, size_t *n, size_t *cap, int32_t id)
{
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 64;
        int32_t *q = realloc(*ids, c * sizeof *q);
        if (!q)
            return -1;
        *ids = q;
        *cap = c;
    }
    (*ids)[(*n)++] = id;
    return 0;
}

/* MarianTokenizer._tokenize + convert_tokens_to_ids for one chunk of text. */
static int tokenize_chunk(const struct nlpd_marian_tok *t, const char *s, size_t n, int32_t **ids, size_t *nids,
                          size_t *cap, struct nlpd_spm_pieces *pc, struct nlpd_error *err)
{
    size_t code_end = lang_match(s, n, 0);
    if (code_end && push_id(ids, nids, cap, token_id(t, s, code_end)) < 0)
        return nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
    /* re.sub(">>.+<<", "", text): every non-overlapping match, left to right. */
    struct nlpd_tok_sb rest = {0};
    size_t i = 0, copied = 0;
    while (i < n) {
        size_t e = s[i] == '>' ? lang_match(s, n, i) : 0;
        if (e) {
            if (nlpd_tok_sb_add(&rest, s + copied, i - copied) < 0)
                goto oom;
            i = copied = e;
        } else {
            i++;
        }
    }
    if (nlpd_tok_sb_add(&rest, s + copied, n - copied) < 0)
        goto oom;
    int rc = nlpd_spm_encode(t->src, rest.p, rest.n, pc, err);
    free(rest.p);
    if (rc < 0)
        return rc;
    for (size_t k = 0; k < pc->n; k++)
        if (push_id(ids, nids, cap, token_id(t, pc->buf + pc->off[k], pc->len[k])) < 0)
            return nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
    return 0;
oom:
    free(rest.p);
    return nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
}

int nlpd_marian_tok_encode(const struct nlpd_marian_tok *t, const char *text, size_t len, size_t max_length,
                           int32_t **ids, size_t *n, size_t *cap, struct nlpd_error *err)
{
    *n = 0;
    /* Split on the added tokens: leftmost, longest at that position. */
    struct chunk *ch = NULL;
    size_t nch = 0, chcap = 0, last = 0;
    int rc = 0;
    for (size_t i = 0; i <= len; i++) {
        size_t best = 0;
        int32_t bid = -1;
        if (i < len)
            for (size_t a = 0; a < t->nadded; a++)
                if (t->added[a].len > best && t->added[a].len <= len - i &&
                    memcmp(text + i, t->added[a].s, t->added[a].len) == 0) {
                    best = t->added[a].len;
                    bid = (int32_t)a;
                }
        if (i < len && !best)
            continue;
        if (nch + 2 > chcap) {
            size_t c = chcap ? chcap * 2 : 16;
            struct chunk *q = realloc(ch, c * sizeof *q);
            if (!q) {
                free(ch);
                return nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
            }
            ch = q;
            chcap = c;
        }
        if (i > last || (nch == 0 && i == len))
            ch[nch++] = (struct chunk){text + last, i - last, -1};
        if (best) {
            ch[nch++] = (struct chunk){text + i, best, bid};
            i += best - 1;
            last = i + 1;
        }
    }
    /* lstrip / rstrip / single_word of the added tokens (PreTrainedTokenizer.tokenize). */
    for (size_t c = 0; c < nch; c++) {
        if (ch[c].added < 0)
            continue;
        const struct added *a = &t->added[ch[c].added];
        struct chunk *left = c > 0 ? &ch[c - 1] : NULL, *right = c + 1 < nch ? &ch[c + 1] : NULL;
        if (a->rstrip && right && right->n)
            py_lstrip(&right->s, &right->n);
        if (a->lstrip && left && left->n)
            py_rstrip(left->s, &left->n);
        /* single_word glues the token to a neighbour that is not space-separated: it is then ordinary text,
         * which only an unusual configuration produces; not supported beyond this. */
    }
    struct nlpd_spm_pieces pc = {0};
    for (size_t c = 0; c < nch && !rc; c++) {
        if (!ch[c].n)
            continue;
        if (ch[c].added >= 0)
            rc = push_id(ids, n, cap, t->added[ch[c].added].id) < 0
                     ? nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory")
                     : 0;
        else
            rc = tokenize_chunk(t, ch[c].s, ch[c].n, ids, n, cap, &pc, err);
    }
    nlpd_spm_pieces_free(&pc);
    free(ch);
    if (rc < 0)
        return rc;
    /* truncation=True (longest_first on one sequence, from the right), keeping room for </s>. */
    size_t maxl = max_length ? max_length : t->model_max_length;
    if (*n + 1 > maxl) {
        size_t remove = *n + 1 - maxl;
        if (*n > remove) /* else transformers logs an error and leaves the ids as they are */
            *n -= remove;
    }
    if (push_id(ids, n, cap, t->eos) < 0)
        return nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
    return 0;
}

/* ------------------------------------------------------------------ decode */
static int is_special_tok(const struct nlpd_marian_tok *t, const char *s, size_t n)
{
    for (size_t i = 0; i < t->nspecial; i++)
        if (t->special_len[i] == n && memcmp(t->special[i], s, n) == 0)
            return 1;
    return 0;
}

static int is_special_id(const struct nlpd_marian_tok *t, int32_t id)
{
    for (size_t i = 0; i < t->nspecial; i++)
        if (t->special_ids[i] == id)
            return 1;
    return 0;
}

/* sp_model.decode_pieces(tokens[0..n)) appended to out. */
static int decode_run(const struct nlpd_marian_tok *t, const char **tok, const size_t *len, size_t n,
                      struct nlpd_tok_sb *out, struct nlpd_error *err)
{
    char *s;
    size_t sl;
    int rc = nlpd_spm_decode_pieces(t->tgt, tok, len, n, &s, &sl, err);
    if (rc < 0)
        return rc;
    rc = nlpd_tok_sb_add(out, s, sl) < 0 ? nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory") : 0;
    free(s);
    return rc;
}

/* MarianTokenizer.convert_tokens_to_string: appended to out. */
static int tokens_to_string(const struct nlpd_marian_tok *t, const char **tok, const size_t *len, size_t n,
                            struct nlpd_tok_sb *out, struct nlpd_error *err)
{
    struct nlpd_tok_sb s = {0};
    size_t start = 0;
    int rc = nlpd_tok_sb_add(&s, "", 0) < 0 ? NLPD_ENOMEM : 0;
    for (size_t i = 0; i < n && !rc; i++) {
        if (!is_special_tok(t, tok[i], len[i]))
            continue;
        rc = decode_run(t, tok + start, len + start, i - start, &s, err);
        if (!rc && (nlpd_tok_sb_add(&s, tok[i], len[i]) < 0 || nlpd_tok_sb_add(&s, " ", 1) < 0))
            rc = NLPD_ENOMEM;
        start = i + 1;
    }
    if (!rc)
        rc = decode_run(t, tok + start, len + start, n - start, &s, err);
    if (!rc) { /* replace U+2581 by ' ', then strip() */
        size_t w = 0;
        for (size_t r = 0; r < s.n;) {
            if (s.n - r >= 3 && memcmp(s.p + r, kSpace, 3) == 0) {
                s.p[w++] = ' ';
                r += 3;
            } else {
                s.p[w++] = s.p[r++];
            }
        }
        s.n = w;
        const char *b = s.p;
        size_t bn = s.n;
        py_lstrip(&b, &bn);
        py_rstrip(b, &bn);
        if (nlpd_tok_sb_add(out, b, bn) < 0)
            rc = NLPD_ENOMEM;
    }
    free(s.p);
    if (rc == NLPD_ENOMEM)
        return nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
    return rc;
}

/* PreTrainedTokenizerBase.clean_up_tokenization: the replacements one after the other. */
static void clean_up(struct nlpd_tok_sb *s)
{
    static const char *const from[] = {" .", " ?", " !", " ,", " ' ", " n't", " 'm", " 's", " 've", " 're"};
    static const char *const to[] = {".", "?", "!", ",", "'", "n't", "'m", "'s", "'ve", "'re"};
    for (size_t k = 0; k < sizeof from / sizeof *from; k++) {
        size_t fl = strlen(from[k]), tl = strlen(to[k]), w = 0;
        for (size_t r = 0; r < s->n;) {
            if (s->n - r >= fl && memcmp(s->p + r, from[k], fl) == 0) {
                memmove(s->p + w, to[k], tl);
                w += tl;
                r += fl;
            } else {
                s->p[w++] = s->p[r++];
            }
        }
        s->n = w;
        s->p[w] = 0;
    }
}

int nlpd_marian_tok_decode(const struct nlpd_marian_tok *t, const int32_t *ids, size_t n, int skip_special_tokens,
                           char **text, size_t *len, struct nlpd_error *err)
{
    const char **tok = malloc((n ? n : 1) * sizeof *tok);
    size_t *tl = malloc((n ? n : 1) * sizeof *tl);
    struct nlpd_tok_sb out = {0};
    size_t nt = 0;
    int rc = 0;
    if (!tok || !tl || nlpd_tok_sb_add(&out, "", 0) < 0) {
        rc = nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || (size_t)id >= t->ndec) {
            rc = nlpd_error_set(err, NLPD_ERANGE, 0, "Marian decode: id %d is outside the vocabulary [0, %zu)", (int)id,
                                t->ndec);
            goto done;
        }
        if (skip_special_tokens && is_special_id(t, id))
            continue;
        const char *s = NULL;
        size_t sl = 0;
        for (size_t a = 0; a < t->nadded; a++)
            if (t->added[a].id == id) {
                s = t->added[a].s;
                sl = t->added[a].len;
                break;
            }
        if (!s) {
            s = t->dec[id] ? t->dec[id] : t->unk_tok;
            sl = t->dec[id] ? t->dec_len[id] : strlen(t->unk_tok);
        }
        tok[nt] = s;
        tl[nt++] = sl;
    }
    /* _decode: the non-special added tokens ("legacy" added tokens) stand alone, the rest goes through
     * convert_tokens_to_string, the parts joined with ' '. */
    size_t start = 0;
    int parts = 0;
    for (size_t i = 0; i <= nt && !rc; i++) {
        int legacy = 0;
        if (i < nt) {
            int32_t aid = added_id(t, tok[i], tl[i]);
            legacy = aid >= 0 && !is_special_tok(t, tok[i], tl[i]);
            if (!legacy)
                continue;
        }
        if (i > start) {
            size_t before = out.n;
            if (parts && nlpd_tok_sb_add(&out, " ", 1) < 0) {
                rc = nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
                break;
            }
            size_t mark = out.n;
            rc = tokens_to_string(t, tok + start, tl + start, i - start, &out, err);
            if (!rc && out.n == mark && i < nt)
                out.n = before; /* an empty part before a legacy token is dropped */
            else
                parts++;
        }
        if (!rc && i < nt) {
            if ((parts && nlpd_tok_sb_add(&out, " ", 1) < 0) || nlpd_tok_sb_add(&out, tok[i], tl[i]) < 0)
                rc = nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
            parts++;
        }
        start = i + 1;
    }
    if (!rc && t->clean_up)
        clean_up(&out);
done:
    free(tok);
    free(tl);
    if (rc < 0) {
        free(out.p);
        return rc;
    }
    out.p[out.n] = 0;
    *text = out.p;
    if (len)
        *len = out.n;
    return 0;
}

/* ------------------------------------------------------------------ accessors */
int32_t nlpd_marian_tok_eos(const struct nlpd_marian_tok *t)
{
    return t->eos;
}

int32_t nlpd_marian_tok_pad(const struct nlpd_marian_tok *t)
{
    return t->pad;
}

int32_t nlpd_marian_tok_unk(const struct nlpd_marian_tok *t)
{
    return t->unk;
}

size_t nlpd_marian_tok_model_max_length(const struct nlpd_marian_tok *t)
{
    return t->model_max_length;
}

size_t nlpd_marian_tok_vocab_size(const struct nlpd_marian_tok *t)
{
    return t->ndec;
}

int32_t nlpd_marian_tok_lang_token(const struct nlpd_marian_tok *t, const char *code)
{
    size_t n = strlen(code);
    char *s = malloc(n + 5);
    if (!s)
        return -1;
    memcpy(s, ">>", 2);
    memcpy(s + 2, code, n);
    memcpy(s + 2 + n, "<<", 3);
    int32_t id = sh_get(&t->enc, s, n + 4);
    free(s);
    return id;
}

size_t nlpd_marian_tok_lang_count(const struct nlpd_marian_tok *t)
{
    return t->nlangs;
}

const char *nlpd_marian_tok_lang_code(const struct nlpd_marian_tok *t, size_t i)
{
    return i < t->nlangs ? t->langs[i] : NULL;
}
