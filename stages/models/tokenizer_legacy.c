/* Model folder loading: tokenizer.json when present, else the legacy files as transformers' converters turn them
 * into fast tokenizers: vocab.txt -> BERT WordPiece, sentencepiece.bpe.model (protobuf read here) -> XLM-R Unigram
 * with the fairseq id offset, vocab.json + merges.txt -> RoBERTa byte-level BPE; plus tokenizer_config.json and
 * special_tokens_map.json (model_max_length, special tokens and their flags). */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "nlpd_util.h"
#include "protobuf.h"
#include "tokenizer_internal.h"

#define MAX_FILE (1u << 30)

static char *join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p)
        return NULL;
    memcpy(p, dir, a);
    p[a] = '/';
    memcpy(p + a + 1, name, b + 1);
    return p;
}

static int file_exists(const char *dir, const char *name)
{
    char *p = join(dir, name);
    struct stat st;
    int ok = p && stat(p, &st) == 0 && S_ISREG(st.st_mode);
    free(p);
    return ok;
}

/* Reads dir/name whole; NULL with err set. */
static char *read_all(const char *dir, const char *name, size_t *len, struct nlpd_error *err)
{
    char *path = join(dir, name);
    if (!path) {
        nlpd_error_set(err, NLPD_ENOMEM, 0, "%s: out of memory", name);
        return NULL;
    }
    char *buf;
    nlpd_util_read_file(path, MAX_FILE, &buf, len, err);
    free(path);
    return buf;
}

/* ------------------------------------------------------------------ tokenizer_config.json & co */

struct config {
    json_t *cfg, *map;
    size_t model_max_length;
};

static int config_load(const char *dir, struct config *c, struct nlpd_error *err)
{
    int rc = 0;
    memset(c, 0, sizeof *c);
    rc = nlpd_util_load_json(dir, "tokenizer_config.json", NLPD_UTIL_JSON_OPTIONAL, &c->cfg, err);
    if (rc < 0)
        return rc;
    rc = nlpd_util_load_json(dir, "special_tokens_map.json", NLPD_UTIL_JSON_OPTIONAL, &c->map, err);
    if (rc < 0)
        return rc;
    json_t *m = c->cfg ? json_object_get(c->cfg, "model_max_length") : NULL;
    if (m && !json_is_null(m)) {
        if (!json_is_number(m) || json_number_value(m) < 0)
            return nlpd_error_set(err, NLPD_EFORMAT, 0, "tokenizer_config.json: model_max_length: expected a number");
        double v = json_number_value(m);
        c->model_max_length = v >= 1e9 ? 0 : (size_t)v; /* transformers' VERY_LARGE_INTEGER means unlimited */
    }
    return 0;
}

static void config_free(struct config *c)
{
    json_decref(c->cfg);
    json_decref(c->map);
}

/* A special token by role ("unk_token"...): string or {"content": ...}; config first, then the map, then def. */
static const char *config_token(const struct config *c, const char *role, const char *def)
{
    json_t *srcs[2] = {c->cfg, c->map};
    for (int i = 0; i < 2; i++) {
        json_t *v = srcs[i] ? json_object_get(srcs[i], role) : NULL;
        if (json_is_string(v))
            return json_string_value(v);
        if (json_is_object(v) && json_is_string(json_object_get(v, "content")))
            return json_string_value(json_object_get(v, "content"));
    }
    return def;
}

static int config_bool(const struct config *c, const char *key, int def)
{
    json_t *v = c->cfg ? json_object_get(c->cfg, key) : NULL;
    return json_is_boolean(v) ? json_is_true(v) : def;
}

static int jflag(json_t *o, const char *k, int def)
{
    json_t *v = json_object_get(o, k);
    return json_is_boolean(v) ? json_is_true(v) : def;
}

/* added_tokens_decoder of tokenizer_config.json: {"id": {content, lstrip, rstrip, normalized, single_word, special}}.
 * Returns 1 when present. */
static int config_added(const struct config *c, struct nlpd_tokenizer *t, struct nlpd_error *err)
{
    json_t *d = c->cfg ? json_object_get(c->cfg, "added_tokens_decoder") : NULL;
    if (!d)
        return 0;
    if (!json_is_object(d))
        return nlpd_error_set(err, NLPD_EFORMAT, 0, "tokenizer_config.json: added_tokens_decoder: expected an object");
    const char *key;
    json_t *v;
    json_object_foreach(d, key, v)
    {
        char *end;
        long id = strtol(key, &end, 10);
        json_t *content = json_object_get(v, "content");
        if (*end || id < 0 || id >= (1 << 24) || !json_is_object(v) || !json_is_string(content))
            return nlpd_error_set(err, NLPD_EFORMAT, 0,
                                  "tokenizer_config.json: added_tokens_decoder: bad entry \"%.40s\"", key);
        int special = jflag(v, "special", 0);
        int rc = nlpd_tok_add_token(t, json_string_value(content), json_string_length(content), (int32_t)id, special,
                                    jflag(v, "single_word", 0), jflag(v, "lstrip", 0), jflag(v, "rstrip", 0),
                                    jflag(v, "normalized", !special));
        if (rc < 0)
            return rc;
    }
    return 1;
}

/* Adds the role tokens that exist in the vocabulary as special added tokens (when no added_tokens_decoder). */
static int add_role_tokens(const struct config *c, struct nlpd_tokenizer *t, const char *const *roles,
                           const char *const *defs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const char *tok = config_token(c, roles[i], defs[i]);
        if (!tok)
            continue;
        int32_t id = nlpd_tvocab_get(&t->model.vocab, tok, strlen(tok));
        if (id < 0)
            continue;
        int lstrip = !strcmp(roles[i], "mask_token") && strcmp(tok, "[MASK]") != 0;
        int rc = nlpd_tok_add_token(t, tok, strlen(tok), id, 1, 0, lstrip, 0, 0);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int32_t must_id(struct nlpd_tokenizer *t, const char *tok, const char *file, const char *role,
                       struct nlpd_error *err)
{
    int32_t id = nlpd_tvocab_get(&t->model.vocab, tok, strlen(tok));
    for (size_t i = 0; id < 0 && i < t->nadded; i++)
        if (!strcmp(t->added[i].content, tok))
            id = t->added[i].id;
    if (id < 0)
        nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: %s \"%.40s\" is not in the vocabulary", file, role, tok);
    return id;
}

/* ------------------------------------------------------------------ vocab.txt (BERT) */

static int load_bert(const char *dir, struct nlpd_tokenizer *t, const struct config *c, struct nlpd_error *err)
{
    size_t len;
    char *s = read_all(dir, "vocab.txt", &len, err);
    if (!s)
        return err ? err->code : NLPD_EIO;
    struct tmodel *m = &t->model;
    m->type = TM_WORDPIECE;
    int rc = nlpd_tvocab_init(&m->vocab, len / 4 + 16);
    int32_t id = 0;
    /* One token per line; load_vocab strips only the trailing "\n". */
    for (size_t i = 0; rc == 0 && i < len; id++) {
        const char *nl = memchr(s + i, '\n', len - i);
        size_t e = nl ? (size_t)(nl - s) : len;
        if (id >= (1 << 24))
            rc = nlpd_error_set(err, NLPD_ERANGE, 0, "vocab.txt: too many lines");
        else
            rc = nlpd_tvocab_set(&m->vocab, s + i, e - i, id);
        i = e + 1;
    }
    free(s);
    if (rc < 0)
        return err && err->message[0] ? rc : nlpd_error_set(err, rc, 0, "vocab.txt: out of memory");
    if (id == 0)
        return nlpd_error_set(err, NLPD_EFORMAT, 0, "vocab.txt: empty vocabulary");
    const char *unk = config_token(c, "unk_token", "[UNK]");
    m->unk_id = must_id(t, unk, "vocab.txt", "unk_token", err);
    if (m->unk_id < 0)
        return NLPD_EFORMAT;
    m->max_input_chars = 100;
    m->prefix = malloc(3);
    if (!m->prefix)
        return NLPD_ENOMEM;
    memcpy(m->prefix, "##", 3);
    m->prefix_len = 2;
    t->norm = calloc(1, sizeof *t->norm);
    t->pre = calloc(1, sizeof *t->pre);
    if (!t->norm || !t->pre)
        return NLPD_ENOMEM;
    t->norm->type = TN_BERT;
    t->norm->clean_text = 1;
    t->norm->handle_chinese = config_bool(c, "tokenize_chinese_chars", 1);
    t->norm->lowercase = config_bool(c, "do_lower_case", 1);
    t->norm->strip_accents = config_bool(c, "strip_accents", t->norm->lowercase);
    t->pre->type = TP_BERT;
    if ((rc = config_added(c, t, err)) < 0)
        return rc;
    if (rc == 0) {
        static const char *const roles[] = {"pad_token", "unk_token", "cls_token", "sep_token", "mask_token"};
        static const char *const defs[] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
        if ((rc = add_role_tokens(c, t, roles, defs, 5)) < 0)
            return rc;
    }
    int32_t cls = must_id(t, config_token(c, "cls_token", "[CLS]"), "vocab.txt", "cls_token", err);
    int32_t sep = must_id(t, config_token(c, "sep_token", "[SEP]"), "vocab.txt", "sep_token", err);
    if (cls < 0 || sep < 0)
        return NLPD_EFORMAT;
    return nlpd_tok_post_bert_like(&t->post, cls, sep, 0) < 0 ? NLPD_ENOMEM : (t->post.has_template = 1, 0);
}

/* ------------------------------------------------------------------ sentencepiece ModelProto */

struct spm_piece {
    const char *s;
    size_t len;
    float score;
    int type;
};

static int load_spm(const char *dir, struct nlpd_tokenizer *t, const struct config *c, struct nlpd_error *err)
{
    const char *file = "sentencepiece.bpe.model";
    size_t len;
    char *data = read_all(dir, file, &len, err);
    if (!data)
        return err ? err->code : NLPD_EIO;
    struct nlpd_pb b = {(const uint8_t *)data, (const uint8_t *)data + len};
    struct spm_piece *pieces = NULL;
    size_t np = 0, cap = 0;
    const uint8_t *charsmap = NULL;
    size_t charsmap_len = 0;
    int rc = 0;
    while (b.p < b.end) {
        uint32_t f, wt;
        uint64_t v;
        struct nlpd_pb sub = {0};
        if (nlpd_pb_field(&b, &f, &wt, &v, &sub) < 0) {
            rc = nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: corrupt protobuf (ModelProto)", file);
            goto out;
        }
        if (f == 1 && wt == 2) { /* SentencePiece {piece = 1, score = 2, type = 3} */
            struct spm_piece sp = {"", 0, 0, 1};
            int has_piece = 0;
            while (sub.p < sub.end) {
                uint32_t f2, wt2;
                uint64_t v2;
                struct nlpd_pb s2 = {0};
                if (nlpd_pb_field(&sub, &f2, &wt2, &v2, &s2) < 0) {
                    rc = nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: corrupt protobuf (pieces[%zu])", file, np);
                    goto out;
                }
                if (f2 == 1 && wt2 == 2) {
                    sp.s = (const char *)s2.p;
                    sp.len = (size_t)(s2.end - s2.p);
                    has_piece = 1;
                } else if (f2 == 2 && wt2 == 5) {
                    uint32_t u = (uint32_t)v2;
                    memcpy(&sp.score, &u, 4);
                } else if (f2 == 3 && wt2 == 0) {
                    sp.type = (int)v2;
                }
            }
            if (!has_piece) {
                rc = nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: pieces[%zu]: no piece string", file, np);
                goto out;
            }
            if (np == cap) {
                cap = cap ? cap * 2 : 1024;
                if (cap > (1 << 24)) {
                    rc = nlpd_error_set(err, NLPD_ERANGE, 0, "%s: too many pieces", file);
                    goto out;
                }
                struct spm_piece *npc = realloc(pieces, cap * sizeof *npc);
                if (!npc) {
                    rc = nlpd_error_set(err, NLPD_ENOMEM, 0, "%s: out of memory", file);
                    goto out;
                }
                pieces = npc;
            }
            pieces[np++] = sp;
        } else if (f == 3 && wt == 2) { /* NormalizerSpec {precompiled_charsmap = 2} */
            while (sub.p < sub.end) {
                uint32_t f2, wt2;
                uint64_t v2;
                struct nlpd_pb s2 = {0};
                if (nlpd_pb_field(&sub, &f2, &wt2, &v2, &s2) < 0) {
                    rc = nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: corrupt protobuf (normalizer_spec)", file);
                    goto out;
                }
                if (f2 == 2 && wt2 == 2) {
                    charsmap = s2.p;
                    charsmap_len = (size_t)(s2.end - s2.p);
                }
            }
        }
    }
    if (np < 4) {
        rc = nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: no or too few pieces (%zu)", file, np);
        goto out;
    }
    /* XLMRobertaConverter: <s> <pad> </s> <unk> (score 0), spm pieces 3.. shifted by one, <mask> last. */
    struct tmodel *m = &t->model;
    m->type = TM_UNIGRAM;
    m->fuse_unk = 1;
    size_t nv = np + 2;
    if ((rc = nlpd_tvocab_init(&m->vocab, nv)) < 0)
        goto oom;
    m->scores = calloc(nv, sizeof *m->scores);
    if (!m->scores)
        goto oom;
    static const char *const head[] = {"<s>", "<pad>", "</s>", "<unk>"};
    for (int i = 0; i < 4; i++)
        if ((rc = nlpd_tvocab_set(&m->vocab, head[i], strlen(head[i]), i)) < 0)
            goto oom;
    for (size_t i = 3; i < np; i++) {
        if ((rc = nlpd_tvocab_set(&m->vocab, pieces[i].s, pieces[i].len, (int32_t)(i + 1))) < 0)
            goto oom;
        m->scores[i + 1] = pieces[i].score;
    }
    if ((rc = nlpd_tvocab_set(&m->vocab, "<mask>", 6, (int32_t)(np + 1))) < 0)
        goto oom;
    m->unk_id = 3;
    nlpd_tok_unigram_finish(m);
    /* Normalizer: Precompiled (sentencepiece's longest match), Strip right, Replace " {2,}" -> "▁". */
    t->norm = calloc(1, sizeof *t->norm);
    t->pre = calloc(1, sizeof *t->pre);
    if (!t->norm || !t->pre)
        goto oom;
    t->norm->type = TN_SEQUENCE;
    t->norm->subs = calloc(3, sizeof *t->norm->subs);
    if (!t->norm->subs)
        goto oom;
    struct tnorm *sn = t->norm->subs;
    size_t k = 0;
    if (charsmap_len) {
        uint8_t *blob = malloc(charsmap_len);
        if (!blob)
            goto oom;
        memcpy(blob, charsmap, charsmap_len);
        sn[k].type = TN_PRECOMPILED;
        sn[k].spm_mode = 1;
        t->norm->nsubs = k + 1;
        if (nlpd_tnorm_precompiled_init(&sn[k], blob, charsmap_len) < 0) {
            rc = nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: normalizer_spec.precompiled_charsmap: malformed", file);
            goto out;
        }
        k++;
    }
    sn[k].type = TN_STRIP;
    sn[k++].strip_right = 1;
    sn[k].type = TN_REPLACE;
    t->norm->nsubs = k + 1;
    sn[k].rx = nlpd_trx_compile(" {2,}", 5, NULL);
    sn[k].content = malloc(sizeof *sn[k].content);
    if (!sn[k].rx || !sn[k].content)
        goto oom;
    sn[k].content[0] = 0x2581;
    sn[k].content_n = 1;
    t->pre->type = TP_METASPACE;
    t->pre->replacement = 0x2581;
    t->pre->prepend_scheme = 0;
    t->pre->split = 1;
    if ((rc = config_added(c, t, err)) < 0)
        goto out;
    if (rc == 0) {
        for (int i = 0; i < 4; i++)
            if ((rc = nlpd_tok_add_token(t, head[i], strlen(head[i]), i, 1, 0, 0, 0, 0)) < 0)
                goto oom;
        if ((rc = nlpd_tok_add_token(t, "<mask>", 6, (int32_t)(np + 1), 1, 0, 1, 0, 0)) < 0)
            goto oom;
    }
    /* TemplateProcessing "<s> $A </s>" / "<s> $A </s> </s> $B </s>" (all type 0): Roberta's layout. */
    if (nlpd_tok_post_bert_like(&t->post, 0, 2, 1) < 0)
        goto oom;
    t->post.has_template = 1;
    rc = 0;
    goto out;
oom:
    rc = nlpd_error_set(err, NLPD_ENOMEM, 0, "%s: out of memory", file);
out:
    free(pieces);
    free(data);
    return rc;
}

/* ------------------------------------------------------------------ vocab.json + merges.txt (RoBERTa) */

static int load_roberta(const char *dir, struct nlpd_tokenizer *t, const struct config *c, struct nlpd_error *err)
{
    json_t *v;
    int rc = nlpd_util_load_json(dir, "vocab.json", 0, &v, err);
    if (rc)
        return rc;
    struct tmodel *m = &t->model;
    m->type = TM_BPE;
    m->unk_id = -1;
    if ((rc = nlpd_tvocab_init(&m->vocab, json_object_size(v))) < 0)
        goto done;
    const char *key;
    json_t *val;
    json_object_foreach(v, key, val)
    {
        if (!json_is_integer(val) || json_integer_value(val) < 0 || json_integer_value(val) >= (1 << 24)) {
            rc = nlpd_error_set(err, NLPD_EFORMAT, 0, "vocab.json: \"%.40s\": expected an id", key);
            goto done;
        }
        if ((rc = nlpd_tvocab_set(&m->vocab, key, strlen(key), (int32_t)json_integer_value(val))) < 0)
            goto done;
    }
    size_t len;
    char *s = read_all(dir, "merges.txt", &len, err);
    if (!s) {
        rc = err ? err->code : NLPD_EIO;
        goto done;
    }
    int32_t rank = 0;
    for (size_t i = 0, line = 1; i < len; line++) {
        const char *nl = memchr(s + i, '\n', len - i);
        size_t e = nl ? (size_t)(nl - s) : len, le = e;
        if (le > i && s[le - 1] == '\r')
            le--;
        if (!(line == 1 && le - i >= 8 && !memcmp(s + i, "#version", 8)) && le > i) {
            const char *sp = memchr(s + i, ' ', le - i);
            struct nlpd_error why = {0};
            if (!sp) {
                rc = nlpd_error_set(err, NLPD_EFORMAT, 0, "merges.txt: line %zu: expected \"a b\"", line);
                break;
            }
            rc = nlpd_tok_bpe_add_merge(m, s + i, (size_t)(sp - (s + i)), sp + 1, le - (size_t)(sp + 1 - s), rank++,
                                        &why);
            if (rc < 0) {
                rc = nlpd_error_set(err, rc, 0, "merges.txt: line %zu: %s", line, why.message);
                break;
            }
        }
        i = e + 1;
    }
    free(s);
    if (rc < 0)
        goto done;
    t->pre = calloc(1, sizeof *t->pre);
    if (!t->pre) {
        rc = NLPD_ENOMEM;
        goto done;
    }
    t->pre->type = TP_BYTELEVEL;
    t->pre->add_prefix_space = config_bool(c, "add_prefix_space", 0);
    t->pre->use_regex = 1;
    if ((rc = config_added(c, t, err)) < 0)
        goto done;
    if (rc == 0) {
        static const char *const roles[] = {"bos_token", "pad_token", "eos_token", "unk_token", "mask_token"};
        static const char *const defs[] = {"<s>", "<pad>", "</s>", "<unk>", "<mask>"};
        if ((rc = add_role_tokens(c, t, roles, defs, 5)) < 0)
            goto done;
    }
    int32_t cls = must_id(t, config_token(c, "cls_token", "<s>"), "vocab.json", "cls_token", err);
    int32_t sep = must_id(t, config_token(c, "sep_token", "</s>"), "vocab.json", "sep_token", err);
    if (cls < 0 || sep < 0) {
        rc = NLPD_EFORMAT;
        goto done;
    }
    if ((rc = nlpd_tok_post_bert_like(&t->post, cls, sep, 1)) < 0)
        goto done;
    t->post.has_template = 1;
    t->post.trim_offsets = 1;
    t->post.add_prefix_space = t->pre->add_prefix_space;
    rc = 0;
done:
    json_decref(v);
    return rc;
}

/* ------------------------------------------------------------------ entry point */

struct nlpd_tokenizer *nlpd_tokenizer_load(const char *model_dir, struct nlpd_error *err)
{
    nlpd_error_clear(err);
    if (!model_dir) {
        nlpd_error_set(err, NLPD_EINVAL, 0, "tokenizer: no model folder");
        return NULL;
    }
    struct config c;
    if (config_load(model_dir, &c, err) < 0) {
        config_free(&c);
        return NULL;
    }
    struct nlpd_tokenizer *t = NULL;
    const char *pad = config_token(&c, "pad_token", NULL);
    if (file_exists(model_dir, "tokenizer.json")) {
        size_t len;
        char *s = read_all(model_dir, "tokenizer.json", &len, err);
        if (s)
            t = nlpd_tokenizer_load_json(s, len, "tokenizer.json", err);
        free(s);
    } else if (file_exists(model_dir, "spm.model")) {
        t = nlpd_tok_load_deberta_spm(model_dir, c.cfg, c.map, err);
    } else {
        int rc;
        t = nlpd_tok_new();
        if (!t) {
            nlpd_error_set(err, NLPD_ENOMEM, 0, "tokenizer: out of memory");
        } else {
            /* with the decoder transformers' converter gives each family */
            enum tdec_type dt = TD_WORDPIECE;
            if (file_exists(model_dir, "vocab.txt"))
                rc = load_bert(model_dir, t, &c, err);
            else if (file_exists(model_dir, "sentencepiece.bpe.model"))
                dt = TD_METASPACE, rc = load_spm(model_dir, t, &c, err);
            else if (file_exists(model_dir, "vocab.json") && file_exists(model_dir, "merges.txt"))
                dt = TD_BYTELEVEL, rc = load_roberta(model_dir, t, &c, err);
            else
                rc = nlpd_error_set(err, NLPD_ENOTFOUND, 0,
                                    "%s: no tokenizer.json, vocab.txt, sentencepiece.bpe.model or vocab.json + "
                                    "merges.txt",
                                    model_dir);
            if (rc == 0 && !(t->dec = calloc(1, sizeof *t->dec)))
                rc = NLPD_ENOMEM;
            if (rc == 0)
                rc = nlpd_tdec_set_simple(t->dec, dt);
            if (rc == 0)
                rc = nlpd_tok_finish(t, NULL);
            if (rc < 0) {
                if (err && !err->message[0])
                    nlpd_error_set(err, rc, 0, "%s: cannot load the tokenizer", model_dir);
                nlpd_tokenizer_free(t);
                t = NULL;
            }
        }
    }
    if (t) {
        t->model_max_length = c.model_max_length;
        t->clean_up_spaces = config_bool(&c, "clean_up_tokenization_spaces", 0); /* transformers 4.47's default */
        if (pad) {
            int32_t id = must_id(t, pad, "tokenizer_config.json", "pad_token", NULL);
            if (id >= 0)
                t->pad_id = id;
        }
    }
    config_free(&c);
    return t;
}
