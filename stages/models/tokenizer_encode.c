/* The encode pipeline of HF `tokenizers` (TokenizerImpl::encode + post_process): added tokens split out of the raw
 * text (then of the normalised text for `normalized` ones), normalise, pre-tokenise, model, ByteLevel offsets
 * trimming, longest-first truncation, the post-processor's template, and offsets turned into code points. */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "grow.h"
#include "tokenizer_internal.h"

struct seqtoks {
    int32_t *id;
    uint32_t *os, *oe;
    uint16_t *ws; /* added tokens: leading | trailing << 8 whitespace chars of the matched text; else 0xffff */
    size_t n, cap;
};

struct nlpd_tok_scratch {
    struct tstr raw, norm, tmp;
    struct tpieces p1, p2, p3;
    struct tscratch_model ms;
    struct seqtoks seq[2];
    char *str;
    size_t str_cap;
    uint32_t *b2c, *cpidx;
    size_t b2c_cap, cpidx_cap;
};

static int seq_push(struct seqtoks *s, int32_t id, uint32_t os, uint32_t oe, uint16_t ws)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        int32_t *a = realloc(s->id, cap * sizeof *a);
        if (!a)
            return NLPD_ENOMEM;
        s->id = a;
        uint32_t *b = realloc(s->os, cap * sizeof *b);
        if (!b)
            return NLPD_ENOMEM;
        s->os = b;
        uint32_t *c = realloc(s->oe, cap * sizeof *c);
        if (!c)
            return NLPD_ENOMEM;
        s->oe = c;
        uint16_t *w = realloc(s->ws, cap * sizeof *w);
        if (!w)
            return NLPD_ENOMEM;
        s->ws = w;
        s->cap = cap;
    }
    s->ws[s->n] = ws;
    s->id[s->n] = id;
    s->os[s->n] = os;
    s->oe[s->n] = oe;
    s->n++;
    return 0;
}

/* Regex \w, as the added-token single_word check uses. */
static int word_char(int32_t cp)
{
    int c = utf8proc_category(cp);
    return nlpd_tok_is_letter(cp) || c == UTF8PROC_CATEGORY_MN || c == UTF8PROC_CATEGORY_MC ||
           c == UTF8PROC_CATEGORY_ME || c == UTF8PROC_CATEGORY_ND || c == UTF8PROC_CATEGORY_NL ||
           c == UTF8PROC_CATEGORY_PC;
}

/* Next added token (of the given `normalized` kind) in c[from..n): leftmost, then longest, as aho-corasick's
 * LeftmostLongest; single_word rejects resume after the rejected match; lstrip/rstrip widen over whitespace but never
 * before seg_start (the end of the previous match). */
static int find_added(const struct nlpd_tokenizer *t, const struct tchar *c, size_t n, size_t from, size_t seg_start,
                      int normalized, size_t *ms, size_t *me, int32_t *id)
{
    while (from < n) {
        size_t bi = 0, blen = 0;
        const struct added_tok *best = NULL;
        for (size_t i = from; i < n && !best; i++) {
            int32_t f = c[i].cp;
            if (!((t->first_mask[(f & 255) >> 6] >> (f & 63)) & 1))
                continue;
            for (size_t k = 0; k < t->nadded; k++) {
                const struct added_tok *a = &t->added[k];
                if (a->normalized != normalized || a->ncps > n - i || a->ncps <= blen)
                    continue;
                size_t j = 0;
                while (j < a->ncps && c[i + j].cp == a->cps[j])
                    j++;
                if (j == a->ncps) {
                    best = a;
                    blen = a->ncps;
                    bi = i;
                }
            }
        }
        if (!best)
            return 0;
        size_t s = bi, e = bi + blen;
        if (best->single_word) {
            int start_ok = s == 0 || !word_char(c[s - 1].cp);
            int stop_ok = e == n || !word_char(c[e].cp);
            if (!start_ok || !stop_ok) {
                from = e;
                continue;
            }
        }
        if (best->lstrip)
            while (s > seg_start && nlpd_tok_is_whitespace(c[s - 1].cp))
                s--;
        if (best->rstrip)
            while (e < n && nlpd_tok_is_whitespace(c[e].cp))
                e++;
        *ms = s;
        *me = e;
        *id = best->id;
        return 1;
    }
    return 0;
}

/* The token of an added-token match is its matched text (with what lstrip/rstrip took): ByteLevel trimming counts
 * that text's whitespace. */
static uint16_t added_ws(const struct tchar *c, size_t s, size_t e)
{
    size_t lead = 0, trail = 0;
    while (s + lead < e && nlpd_tok_is_whitespace(c[s + lead].cp))
        lead++;
    while (e - trail > s && nlpd_tok_is_whitespace(c[e - 1 - trail].cp))
        trail++;
    return (uint16_t)((lead > 255 ? 255 : lead) | (trail > 255 ? 255 : trail) << 8);
}

/* Pre-tokenise and model one text segment, appending tokens to out. */
static int model_segment(const struct nlpd_tokenizer *t, struct nlpd_tok_scratch *sc, const struct tchar *c, size_t n,
                         struct seqtoks *out, struct nlpd_error *err)
{
    if (!n)
        return 0;
    sc->p1.n = 0;
    sc->p1.buf.n = 0;
    if (nlpd_tpieces_add(&sc->p1, c, n) < 0)
        return NLPD_ENOMEM;
    struct tpieces *pieces = &sc->p1;
    if (t->pre) {
        if (nlpd_tpre_apply(t->pre, &sc->p1, &sc->p2, &sc->p3) < 0)
            return NLPD_ENOMEM;
        pieces = &sc->p2;
    }
    for (size_t p = 0; p < pieces->n; p++) {
        const struct tchar *pc = pieces->buf.c + pieces->off[p];
        size_t pn = pieces->len[p];
        if (nlpd_grow((void **)&sc->str, &sc->str_cap, pn * 4 + 1, 1) < 0 ||
            nlpd_grow((void **)&sc->b2c, &sc->b2c_cap, pn * 4 + 1, sizeof *sc->b2c) < 0)
            return NLPD_ENOMEM;
        size_t nb = 0;
        for (size_t i = 0; i < pn; i++) {
            int k = nlpd_tok_utf8_encode(pc[i].cp, sc->str + nb);
            for (int j = 0; j < k; j++)
                sc->b2c[nb + (size_t)j] = (uint32_t)i;
            nb += (size_t)k;
        }
        sc->ms.n = 0;
        int rc = nlpd_tmodel_tokenize(&t->model, sc->str, nb, &sc->ms, err);
        if (rc < 0)
            return rc;
        for (size_t k = 0; k < sc->ms.n; k++) {
            const struct ttok *tk = &sc->ms.t[k];
            uint32_t a = sc->b2c[tk->bs], b = sc->b2c[tk->be - 1];
            if (seq_push(out, tk->id, pc[a].os, pc[b].oe, 0xffff) < 0)
                return NLPD_ENOMEM;
        }
    }
    return 0;
}

/* Normalise one raw segment, split normalized added tokens out of it, model the rest. */
static int text_segment(const struct nlpd_tokenizer *t, struct nlpd_tok_scratch *sc, const struct tchar *c, size_t n,
                        struct seqtoks *out, struct nlpd_error *err)
{
    sc->norm.n = 0;
    if (nlpd_tstr_reserve(&sc->norm, n) < 0)
        return NLPD_ENOMEM;
    if (n)
        memcpy(sc->norm.c, c, n * sizeof *c);
    sc->norm.n = n;
    if (t->norm && nlpd_tnorm_apply(t->norm, &sc->norm, &sc->tmp) < 0)
        return NLPD_ENOMEM;
    const struct tchar *nc = sc->norm.c;
    size_t nn = sc->norm.n, pos = 0, s, e;
    int32_t id;
    int rc;
    while (find_added(t, nc, nn, pos, pos, 1, &s, &e, &id)) {
        if (s > pos && (rc = model_segment(t, sc, nc + pos, s - pos, out, err)) < 0)
            return rc;
        if (seq_push(out, id, nc[s].os, nc[e - 1].oe, added_ws(nc, s, e)) < 0)
            return NLPD_ENOMEM;
        pos = e;
    }
    return model_segment(t, sc, nc + pos, nn - pos, out, err);
}

static int encode_seq(const struct nlpd_tokenizer *t, struct nlpd_tok_scratch *sc, const char *text, size_t len,
                      struct seqtoks *out, struct nlpd_error *err)
{
    out->n = 0;
    sc->raw.n = 0;
    if (nlpd_tstr_reserve(&sc->raw, len + 1) < 0)
        return NLPD_ENOMEM;
    for (size_t i = 0; i < len;) {
        int32_t cp;
        utf8proc_ssize_t r = utf8proc_iterate((const utf8proc_uint8_t *)text + i, (utf8proc_ssize_t)(len - i), &cp);
        if (r <= 0) {
            cp = 0xfffd;
            r = 1;
        }
        nlpd_tstr_push(&sc->raw, cp, (uint32_t)i, (uint32_t)(i + (size_t)r));
        i += (size_t)r;
    }
    const struct tchar *c = sc->raw.c;
    size_t n = sc->raw.n, pos = 0, s, e;
    int32_t id;
    int rc;
    while (find_added(t, c, n, pos, pos, 0, &s, &e, &id)) {
        if (s > pos && (rc = text_segment(t, sc, c + pos, s - pos, out, err)) < 0)
            return rc;
        if (seq_push(out, id, c[s].os, c[e - 1].oe, added_ws(c, s, e)) < 0)
            return NLPD_ENOMEM;
        pos = e;
    }
    return text_segment(t, sc, c + pos, n - pos, out, err);
}

/* ByteLevel's process_offsets: leading/trailing 'Ġ' (or whitespace) of a token leave its offsets. */
static void trim_offsets(const struct nlpd_tokenizer *t, struct seqtoks *s)
{
    for (size_t i = 0; i < s->n; i++) {
        size_t lead = 0, trail = 0;
        if (s->ws[i] != 0xffff) {
            lead = s->ws[i] & 0xff;
            trail = s->ws[i] >> 8;
        } else {
            const char *tok = s->id[i] >= 0 && s->id[i] < t->nids ? t->id_str[s->id[i]] : NULL;
            if (!tok)
                continue;
            size_t tl = strlen(tok), nchars = 0;
            int32_t cps[64];
            for (size_t k = 0; k < tl && nchars < 64;) {
                int32_t cp;
                utf8proc_ssize_t r =
                    utf8proc_iterate((const utf8proc_uint8_t *)tok + k, (utf8proc_ssize_t)(tl - k), &cp);
                if (r <= 0)
                    break;
                cps[nchars++] = cp;
                k += (size_t)r;
            }
            while (lead < nchars && (cps[lead] == 0x120 || nlpd_tok_is_whitespace(cps[lead])))
                lead++;
            while (trail < nchars &&
                   (cps[nchars - 1 - trail] == 0x120 || nlpd_tok_is_whitespace(cps[nchars - 1 - trail])))
                trail++;
        }
        if (lead) {
            int is_first = i == 0 || s->os[i] == 0;
            if (is_first && t->post.add_prefix_space && lead == 1)
                lead = 0;
            uint32_t ns = s->os[i] + (uint32_t)lead;
            s->os[i] = ns < s->oe[i] ? ns : s->oe[i];
        }
        if (trail && s->oe[i] >= trail) {
            uint32_t ne = s->oe[i] - (uint32_t)trail;
            s->oe[i] = ne > s->os[i] ? ne : s->os[i];
        }
    }
}

static int out_reserve(struct nlpd_encoding *o, size_t need)
{
    if (need <= o->cap)
        return 0;
    size_t cap = o->cap ? o->cap : 64;
    while (cap < need)
        cap *= 2;
#define G(f)                                                                                                           \
    do {                                                                                                               \
        void *p_ = realloc(o->f, cap * sizeof *o->f);                                                                  \
        if (!p_)                                                                                                       \
            return NLPD_ENOMEM;                                                                                        \
        o->f = p_;                                                                                                     \
    } while (0)
    G(ids);
    G(type_ids);
    G(starts);
    G(ends);
    G(special);
    G(sequence);
#undef G
    o->cap = cap;
    return 0;
}

/* Byte offset -> code point index for one text. */
static int build_cpidx(struct nlpd_tok_scratch *sc, const char *text, size_t len)
{
    if (nlpd_grow((void **)&sc->cpidx, &sc->cpidx_cap, len + 1, sizeof *sc->cpidx) < 0)
        return NLPD_ENOMEM;
    uint32_t k = 0;
    for (size_t i = 0; i < len;) {
        int32_t cp;
        utf8proc_ssize_t r = utf8proc_iterate((const utf8proc_uint8_t *)text + i, (utf8proc_ssize_t)(len - i), &cp);
        if (r <= 0)
            r = 1;
        for (utf8proc_ssize_t j = 0; j < r; j++)
            sc->cpidx[i + (size_t)j] = k;
        k++;
        i += (size_t)r;
    }
    sc->cpidx[len] = k;
    return 0;
}

static int emit_seq(struct nlpd_encoding *o, struct nlpd_tok_scratch *sc, const struct seqtoks *s, size_t n,
                    int32_t type_id, int which, const char *text, size_t len)
{
    if (out_reserve(o, o->n + n) < 0 || build_cpidx(sc, text, len) < 0)
        return NLPD_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        size_t k = o->n++;
        o->ids[k] = s->id[i];
        o->type_ids[k] = type_id;
        o->starts[k] = (int32_t)sc->cpidx[s->os[i] <= len ? s->os[i] : len];
        o->ends[k] = (int32_t)sc->cpidx[s->oe[i] <= len ? s->oe[i] : len];
        o->special[k] = 0;
        o->sequence[k] = which;
    }
    return 0;
}

int nlpd_tokenizer_encode(const struct nlpd_tokenizer *t, const char *text, size_t len, const char *pair,
                          size_t pair_len, size_t max_length, struct nlpd_encoding *out, struct nlpd_error *err)
{
    if (!t || !out || (!text && len))
        return nlpd_error_set(err, NLPD_EINVAL, 0, "tokenizer: encode: bad arguments");
    if (len > UINT32_MAX / 2 || pair_len > UINT32_MAX / 2)
        return nlpd_error_set(err, NLPD_ERANGE, 0, "tokenizer: encode: text too long");
    out->n = 0;
    if (!out->scratch) {
        out->scratch = calloc(1, sizeof *out->scratch);
        if (!out->scratch)
            return nlpd_error_set(err, NLPD_ENOMEM, 0, "tokenizer: out of memory");
    }
    struct nlpd_tok_scratch *sc = out->scratch;
    int has_pair = pair != NULL;
    int rc = encode_seq(t, sc, text ? text : "", len, &sc->seq[0], err);
    if (rc == 0 && has_pair)
        rc = encode_seq(t, sc, pair, pair_len, &sc->seq[1], err);
    if (rc < 0)
        return rc == NLPD_ENOMEM ? nlpd_error_set(err, rc, 0, "tokenizer: out of memory") : rc;
    if (t->post.trim_offsets) {
        trim_offsets(t, &sc->seq[0]);
        if (has_pair)
            trim_offsets(t, &sc->seq[1]);
    }
    /* Truncation (longest_first, stride 0, from the right), leaving room for the specials. */
    size_t n1 = sc->seq[0].n, n2 = has_pair ? sc->seq[1].n : 0;
    size_t maxl = max_length ? max_length : t->model_max_length;
    size_t nspecial = t->post.has_template ? (has_pair ? t->nspecial_pair : t->nspecial_single) : 0;
    if (maxl) {
        size_t target = maxl > nspecial ? maxl - nspecial : 0;
        if (n1 + n2 > target) {
            if (!has_pair) {
                n1 = target;
            } else {
                size_t a = n1, b = n2;
                int swap = a > b;
                if (swap) {
                    size_t x = a;
                    a = b;
                    b = x;
                }
                size_t nb = a > target ? a : (target - a > a ? target - a : a);
                b = nb < b ? nb : b;
                if (a + b > target) {
                    a = target / 2;
                    b = a + target % 2;
                }
                if (swap) {
                    n1 = b;
                    n2 = a;
                } else {
                    n1 = a;
                    n2 = b;
                }
            }
        }
    }
    const char *texts[2] = {text ? text : "", pair};
    size_t lens[2] = {len, pair_len}, counts[2] = {n1, n2};
    if (t->post.has_template) {
        const struct tpl_item *items = has_pair ? t->post.pair : t->post.single;
        size_t nitems = has_pair ? t->post.npair : t->post.nsingle;
        for (size_t i = 0; i < nitems; i++) {
            const struct tpl_item *it = &items[i];
            if (it->is_seq) {
                if (it->seq == 1 && !has_pair)
                    continue;
                rc = emit_seq(out, sc, &sc->seq[it->seq], counts[it->seq], it->type_id, it->seq, texts[it->seq],
                              lens[it->seq]);
                if (rc < 0)
                    return nlpd_error_set(err, rc, 0, "tokenizer: out of memory");
                continue;
            }
            if (out_reserve(out, out->n + it->nids) < 0)
                return nlpd_error_set(err, NLPD_ENOMEM, 0, "tokenizer: out of memory");
            for (size_t k = 0; k < it->nids; k++) {
                size_t o = out->n++;
                out->ids[o] = it->ids[k];
                out->type_ids[o] = it->type_id;
                out->starts[o] = out->ends[o] = 0;
                out->special[o] = 1;
                out->sequence[o] = -1;
            }
        }
    } else {
        for (int s = 0; s < 1 + has_pair; s++)
            if ((rc = emit_seq(out, sc, &sc->seq[s], counts[s], s, s, texts[s], lens[s])) < 0)
                return nlpd_error_set(err, rc, 0, "tokenizer: out of memory");
    }
    return 0;
}

void nlpd_encoding_free(struct nlpd_encoding *e)
{
    if (!e)
        return;
    free(e->ids);
    free(e->type_ids);
    free(e->starts);
    free(e->ends);
    free(e->special);
    free(e->sequence);
    struct nlpd_tok_scratch *sc = e->scratch;
    if (sc) {
        nlpd_tstr_free(&sc->raw);
        nlpd_tstr_free(&sc->norm);
        nlpd_tstr_free(&sc->tmp);
        nlpd_tpieces_free(&sc->p1);
        nlpd_tpieces_free(&sc->p2);
        nlpd_tpieces_free(&sc->p3);
        nlpd_tscratch_model_free(&sc->ms);
        for (int i = 0; i < 2; i++) {
            free(sc->seq[i].id);
            free(sc->seq[i].os);
            free(sc->seq[i].oe);
            free(sc->seq[i].ws);
        }
        free(sc->str);
        free(sc->b2c);
        free(sc->cpidx);
        free(sc);
    }
    memset(e, 0, sizeof *e);
}
