/* Normalisers of HF `tokenizers` on aligned char buffers (BertNormalizer, Precompiled, NF*, Lowercase,
 * StripAccents, Replace, Prepend, Strip, Nmt, Sequence) and the Unicode predicates they share (the mini regex of
 * Replace and Split is in tokenizer_regex.c). Alignment rule of NormalizedString::transform: new char i of a
 * replacement of k old chars takes old char min(i, k-1)'s original range; Replace's inserted chars take the last
 * replaced char's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tokenizer_internal.h"

/* ------------------------------------------------------------------ buffers and predicates */

int nlpd_tstr_reserve(struct tstr *s, size_t need)
{
    if (need <= s->cap)
        return 0;
    size_t cap = s->cap ? s->cap : 64;
    while (cap < need)
        cap *= 2;
    struct tchar *c = realloc(s->c, cap * sizeof *c);
    if (!c)
        return NLPD_ENOMEM;
    s->c = c;
    s->cap = cap;
    return 0;
}

int nlpd_tstr_push(struct tstr *s, int32_t cp, uint32_t os, uint32_t oe)
{
    if (s->n == s->cap && nlpd_tstr_reserve(s, s->n + 1) < 0)
        return NLPD_ENOMEM;
    s->c[s->n].cp = cp;
    s->c[s->n].os = os;
    s->c[s->n].oe = oe;
    s->n++;
    return 0;
}

void nlpd_tstr_free(struct tstr *s)
{
    free(s->c);
    memset(s, 0, sizeof *s);
}

static void tstr_swap(struct tstr *a, struct tstr *b)
{
    struct tstr t = *a;
    *a = *b;
    *b = t;
}

static int cat(int32_t cp)
{
    return (int)utf8proc_category(cp);
}

int nlpd_tok_is_whitespace(int32_t cp)
{
    if ((cp >= 9 && cp <= 13) || cp == 0x85)
        return 1;
    int c = cat(cp);
    return c == UTF8PROC_CATEGORY_ZS || c == UTF8PROC_CATEGORY_ZL || c == UTF8PROC_CATEGORY_ZP;
}

int nlpd_tok_is_letter(int32_t cp)
{
    int c = cat(cp);
    return c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_LO;
}

int nlpd_tok_is_number(int32_t cp)
{
    int c = cat(cp);
    return c >= UTF8PROC_CATEGORY_ND && c <= UTF8PROC_CATEGORY_NO;
}

int nlpd_tok_is_alnum(int32_t cp)
{
    return nlpd_tok_is_letter(cp) || nlpd_tok_is_number(cp);
}

int nlpd_tok_is_punct(int32_t cp)
{
    int c = cat(cp);
    return c >= UTF8PROC_CATEGORY_PC && c <= UTF8PROC_CATEGORY_PO;
}

int nlpd_tok_utf8_encode(int32_t cp, char *out)
{
    if (cp < 0 || cp > 0x10ffff)
        cp = 0xfffd;
    return (int)utf8proc_encode_char(cp, (utf8proc_uint8_t *)out);
}

/* ------------------------------------------------------------------ precompiled charsmap (darts-clone trie) */

int nlpd_tnorm_precompiled_init(struct tnorm *n, uint8_t *blob, size_t len)
{
    n->charsmap = blob;
    n->charsmap_len = len;
    if (len < 4)
        return -1;
    uint32_t tsize = (uint32_t)blob[0] | (uint32_t)blob[1] << 8 | (uint32_t)blob[2] << 16 | (uint32_t)blob[3] << 24;
    if (tsize % 4 || tsize > len - 4 || tsize == 0)
        return -1;
    /* The blob is malloc'ed, so blob + 4 is 4-aligned. */
    n->trie = (const uint32_t *)(blob + 4);
    n->trie_units = tsize / 4;
    n->normalized = (const char *)blob + 4 + tsize;
    n->normalized_len = len - 4 - tsize;
    return 0;
}

/* Common prefix search over key[0..len): calls back for each (length, value) in increasing length. */
static size_t darts_search(const struct tnorm *n, const uint8_t *key, size_t len, size_t *lens, uint32_t *vals,
                           size_t max)
{
    const uint32_t *a = n->trie;
    size_t units = n->trie_units, found = 0;
    uint32_t unit = a[0];
    size_t pos = (size_t)((unit >> 10) << ((unit & (1u << 9)) >> 6));
    for (size_t i = 0; i < len; i++) {
        pos ^= key[i];
        if (pos >= units)
            return found;
        unit = a[pos];
        if ((unit & ((1u << 31) | 0xff)) != key[i])
            return found;
        pos ^= (size_t)((unit >> 10) << ((unit & (1u << 9)) >> 6));
        if (pos >= units)
            return found;
        if ((unit >> 8) & 1) {
            if (found < max) {
                lens[found] = i + 1;
                vals[found] = a[pos] & 0x7fffffffu;
                found++;
            }
        }
    }
    return found;
}

/* Decodes the replacement at value v (a NUL-terminated string in the normalized blob) into cps. */
static size_t precompiled_repl(const struct tnorm *n, uint32_t v, int32_t *out, size_t max)
{
    if (v >= n->normalized_len)
        return 0;
    const char *p = n->normalized + v;
    size_t rem = n->normalized_len - v;
    size_t slen = strnlen(p, rem), k = 0;
    for (size_t i = 0; i < slen && k < max;) {
        int32_t cp;
        utf8proc_ssize_t r = utf8proc_iterate((const utf8proc_uint8_t *)p + i, (utf8proc_ssize_t)(slen - i), &cp);
        if (r <= 0) {
            cp = 0xfffd;
            r = 1;
        }
        out[k++] = cp;
        i += (size_t)r;
    }
    return k;
}

/* Replaces old[0..k) by the cps rep[0..m) with the alignment rule of the file comment. */
static int push_repl(struct tstr *out, const struct tchar *old, size_t k, const int32_t *rep, size_t m)
{
    for (size_t i = 0; i < m; i++) {
        const struct tchar *o = &old[i < k ? i : k - 1];
        if (nlpd_tstr_push(out, rep[i], o->os, o->oe) < 0)
            return NLPD_ENOMEM;
    }
    return 0;
}

#define REPL_MAX 256

static int precompiled(const struct tnorm *n, struct tstr *s, struct tstr *tmp)
{
    tmp->n = 0;
    if (!n->trie)
        return 0;
    uint8_t bytes[REPL_MAX * 4 + 8];
    size_t lens[32];
    uint32_t vals[32];
    int32_t rep[REPL_MAX];
    size_t i = 0;
    if (n->spm_mode) {
        /* sentencepiece NormalizePrefix: longest rule over the remaining input, else one char unchanged. Only a
         * bounded window of chars is searched (rules are far shorter). */
        while (i < s->n) {
            size_t nb = 0, nc = 0;
            size_t ends[64];
            while (i + nc < s->n && nc < 64 && nb + 4 <= sizeof bytes) {
                nb += (size_t)nlpd_tok_utf8_encode(s->c[i + nc].cp, (char *)bytes + nb);
                ends[nc++] = nb;
            }
            size_t f = darts_search(n, bytes, nb, lens, vals, 32);
            size_t best = 0;
            uint32_t bv = 0;
            for (size_t k = 0; k < f; k++)
                if (lens[k] > best) {
                    best = lens[k];
                    bv = vals[k];
                }
            size_t k = 0; /* chars covered: the rule must end on a char boundary */
            while (k < nc && ends[k] < best)
                k++;
            if (best && k < nc && ends[k] == best) {
                size_t m = precompiled_repl(n, bv, rep, REPL_MAX);
                if (push_repl(tmp, &s->c[i], k + 1, rep, m) < 0)
                    return NLPD_ENOMEM;
                i += k + 1;
            } else {
                if (nlpd_tstr_push(tmp, s->c[i].cp, s->c[i].os, s->c[i].oe) < 0)
                    return NLPD_ENOMEM;
                i++;
            }
        }
    } else {
        /* HF Precompiled: per grapheme; a grapheme under 6 bytes is looked up whole (first, i.e. shortest,
         * prefix hit), else each char alone. */
        while (i < s->n) {
            size_t g = 1;
            utf8proc_int32_t state = 0;
            while (i + g < s->n && !utf8proc_grapheme_break_stateful(s->c[i + g - 1].cp, s->c[i + g].cp, &state))
                g++;
            size_t nb = 0;
            for (size_t k = 0; k < g && nb < 8; k++)
                nb += (size_t)nlpd_tok_utf8_encode(s->c[i + k].cp, (char *)bytes + nb);
            if (nb < 6) {
                size_t f = darts_search(n, bytes, nb, lens, vals, 32);
                if (f) {
                    size_t m = precompiled_repl(n, vals[0], rep, REPL_MAX);
                    if (push_repl(tmp, &s->c[i], g, rep, m) < 0)
                        return NLPD_ENOMEM;
                    i += g;
                    continue;
                }
            }
            for (size_t k = 0; k < g; k++, i++) {
                int b = nlpd_tok_utf8_encode(s->c[i].cp, (char *)bytes);
                size_t f = darts_search(n, bytes, (size_t)b, lens, vals, 32);
                if (f) {
                    size_t m = precompiled_repl(n, vals[0], rep, REPL_MAX);
                    if (push_repl(tmp, &s->c[i], 1, rep, m) < 0)
                        return NLPD_ENOMEM;
                } else if (nlpd_tstr_push(tmp, s->c[i].cp, s->c[i].os, s->c[i].oe) < 0) {
                    return NLPD_ENOMEM;
                }
            }
        }
    }
    tstr_swap(s, tmp);
    return 0;
}

/* ------------------------------------------------------------------ Unicode normal forms */

static int is_chinese(int32_t cp)
{
    return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) || (cp >= 0x20000 && cp <= 0x2A6DF) ||
           (cp >= 0x2A700 && cp <= 0x2B73F) || (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B920 && cp <= 0x2CEAF) ||
           (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

static int ccc(int32_t cp)
{
    return utf8proc_get_property(cp)->combining_class;
}

/* Decomposes s (canonical or compatibility) keeping each source char's range, then orders marks canonically. */
static int decompose(struct tstr *s, struct tstr *tmp, int compat)
{
    tmp->n = 0;
    for (size_t i = 0; i < s->n; i++) {
        utf8proc_int32_t buf[32];
        int last = 0;
        utf8proc_ssize_t k =
            utf8proc_decompose_char(s->c[i].cp, buf, 32, UTF8PROC_DECOMPOSE | (compat ? UTF8PROC_COMPAT : 0), &last);
        if (k < 0 || k > 32) {
            buf[0] = s->c[i].cp;
            k = 1;
        }
        for (utf8proc_ssize_t j = 0; j < k; j++)
            if (nlpd_tstr_push(tmp, buf[j], s->c[i].os, s->c[i].oe) < 0)
                return NLPD_ENOMEM;
    }
    /* Canonical ordering: stable insertion sort of each run of non-starters by combining class. */
    for (size_t i = 1; i < tmp->n; i++) {
        int ci = ccc(tmp->c[i].cp);
        if (!ci)
            continue;
        size_t j = i;
        struct tchar t = tmp->c[i];
        while (j > 0 && ccc(tmp->c[j - 1].cp) > ci) {
            tmp->c[j] = tmp->c[j - 1];
            j--;
        }
        tmp->c[j] = t;
    }
    tstr_swap(s, tmp);
    return 0;
}

static int hangul_vt(int32_t cp)
{
    return (cp >= 0x1161 && cp <= 0x1175) || (cp >= 0x11A8 && cp <= 0x11C2);
}

/* Composes a decomposed s: each segment (a starter and what follows it up to the next starter) is composed on its
 * own by utf8proc; the outputs take the rule's alignment. Starter+starter compositions other than Hangul are not
 * tried (rare: a few Indic vowel signs). */
static int compose(struct tstr *s, struct tstr *tmp)
{
    tmp->n = 0;
    utf8proc_int32_t buf[64];
    for (size_t i = 0; i < s->n;) {
        size_t g = 1;
        while (i + g < s->n && g < 64 && (ccc(s->c[i + g].cp) != 0 || hangul_vt(s->c[i + g].cp)))
            g++;
        for (size_t k = 0; k < g; k++)
            buf[k] = s->c[i + k].cp;
        utf8proc_ssize_t m =
            g > 1 ? utf8proc_normalize_utf32(buf, (utf8proc_ssize_t)g, UTF8PROC_COMPOSE) : (utf8proc_ssize_t)1;
        if (m < 0)
            m = (utf8proc_ssize_t)g;
        if (push_repl(tmp, &s->c[i], g, buf, (size_t)m) < 0)
            return NLPD_ENOMEM;
        i += g;
    }
    tstr_swap(s, tmp);
    return 0;
}

static int lowercase(struct tstr *s, struct tstr *tmp)
{
    tmp->n = 0;
    for (size_t i = 0; i < s->n; i++) {
        const struct tchar *c = &s->c[i];
        if (c->cp == 0x130) { /* the one unconditional multi-char lowercase mapping */
            if (nlpd_tstr_push(tmp, 'i', c->os, c->oe) < 0 || nlpd_tstr_push(tmp, 0x307, c->os, c->oe) < 0)
                return NLPD_ENOMEM;
        } else if (nlpd_tstr_push(tmp, utf8proc_tolower(c->cp), c->os, c->oe) < 0) {
            return NLPD_ENOMEM;
        }
    }
    tstr_swap(s, tmp);
    return 0;
}

static int strip_marks(struct tstr *s)
{
    size_t k = 0;
    for (size_t i = 0; i < s->n; i++)
        if (cat(s->c[i].cp) != UTF8PROC_CATEGORY_MN)
            s->c[k++] = s->c[i];
    s->n = k;
    return 0;
}

static int bert(const struct tnorm *n, struct tstr *s, struct tstr *tmp)
{
    if (n->clean_text || n->handle_chinese) {
        tmp->n = 0;
        for (size_t i = 0; i < s->n; i++) {
            struct tchar c = s->c[i];
            if (n->clean_text) {
                int k = cat(c.cp);
                int control = c.cp != '\t' && c.cp != '\n' && c.cp != '\r' &&
                              (k == UTF8PROC_CATEGORY_CC || k == UTF8PROC_CATEGORY_CF || k == UTF8PROC_CATEGORY_CS ||
                               k == UTF8PROC_CATEGORY_CO || k == UTF8PROC_CATEGORY_CN);
                if (c.cp == 0 || c.cp == 0xfffd || control)
                    continue;
                if (nlpd_tok_is_whitespace(c.cp))
                    c.cp = ' ';
            }
            if (n->handle_chinese && is_chinese(c.cp)) {
                if (nlpd_tstr_push(tmp, ' ', c.os, c.oe) < 0 || nlpd_tstr_push(tmp, c.cp, c.os, c.oe) < 0 ||
                    nlpd_tstr_push(tmp, ' ', c.os, c.oe) < 0)
                    return NLPD_ENOMEM;
            } else if (nlpd_tstr_push(tmp, c.cp, c.os, c.oe) < 0) {
                return NLPD_ENOMEM;
            }
        }
        tstr_swap(s, tmp);
    }
    if (n->strip_accents) {
        if (decompose(s, tmp, 0) < 0)
            return NLPD_ENOMEM;
        strip_marks(s);
    }
    if (n->lowercase)
        return lowercase(s, tmp);
    return 0;
}

static int cps_equal(const struct tchar *c, const int32_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (c[i].cp != p[i])
            return 0;
    return 1;
}

static int replace(const struct tnorm *n, struct tstr *s, struct tstr *tmp)
{
    tmp->n = 0;
    size_t i = 0;
    while (i < s->n) {
        size_t ms, me;
        int found;
        if (n->rx) {
            found = nlpd_trx_find(n->rx, s->c, s->n, i, &ms, &me);
        } else {
            found = 0;
            if (n->pat_n)
                for (ms = i; ms + n->pat_n <= s->n; ms++)
                    if (cps_equal(&s->c[ms], n->pat, n->pat_n)) {
                        found = 1;
                        me = ms + n->pat_n;
                        break;
                    }
        }
        if (!found)
            break;
        for (; i < ms; i++)
            if (nlpd_tstr_push(tmp, s->c[i].cp, s->c[i].os, s->c[i].oe) < 0)
                return NLPD_ENOMEM;
        if (me == ms) { /* empty match: insert, then step over one char */
            uint32_t os = ms > 0 ? s->c[ms - 1].os : (s->n ? s->c[0].os : 0);
            uint32_t oe = ms > 0 ? s->c[ms - 1].oe : os;
            for (size_t k = 0; k < n->content_n; k++)
                if (nlpd_tstr_push(tmp, n->content[k], os, oe) < 0)
                    return NLPD_ENOMEM;
            if (ms < s->n && nlpd_tstr_push(tmp, s->c[ms].cp, s->c[ms].os, s->c[ms].oe) < 0)
                return NLPD_ENOMEM;
            i = ms + 1;
            continue;
        }
        const struct tchar *last = &s->c[me - 1];
        for (size_t k = 0; k < n->content_n; k++)
            if (nlpd_tstr_push(tmp, n->content[k], last->os, last->oe) < 0)
                return NLPD_ENOMEM;
        i = me;
    }
    for (; i < s->n; i++)
        if (nlpd_tstr_push(tmp, s->c[i].cp, s->c[i].os, s->c[i].oe) < 0)
            return NLPD_ENOMEM;
    tstr_swap(s, tmp);
    return 0;
}

static int nmt(struct tstr *s)
{
    size_t k = 0;
    for (size_t i = 0; i < s->n; i++) {
        int32_t c = s->c[i].cp;
        if ((c >= 1 && c <= 8) || c == 0xb || (c >= 0xe && c <= 0x1f) || c == 0x7f || c == 0x8f || c == 0x9f)
            continue;
        if (c == 9 || c == 10 || c == 12 || c == 13 || c == 0x1680 || (c >= 0x200b && c <= 0x200f) || c == 0x2028 ||
            c == 0x2029 || c == 0x2581 || c == 0xfeff || c == 0xfffd)
            c = ' ';
        s->c[k] = s->c[i];
        s->c[k++].cp = c;
    }
    s->n = k;
    return 0;
}

int nlpd_tnorm_apply(const struct tnorm *n, struct tstr *s, struct tstr *tmp)
{
    switch (n->type) {
    case TN_BERT: return bert(n, s, tmp);
    case TN_PRECOMPILED: return precompiled(n, s, tmp);
    case TN_NFD:
    case TN_NFKD: return decompose(s, tmp, n->type == TN_NFKD);
    case TN_NFC:
    case TN_NFKC:
        if (decompose(s, tmp, n->type == TN_NFKC) < 0)
            return NLPD_ENOMEM;
        return compose(s, tmp);
    case TN_LOWERCASE: return lowercase(s, tmp);
    case TN_STRIP_ACCENTS: return strip_marks(s);
    case TN_REPLACE: return replace(n, s, tmp);
    case TN_PREPEND:
        if (s->n && n->content_n) {
            tmp->n = 0;
            for (size_t k = 0; k < n->content_n; k++)
                if (nlpd_tstr_push(tmp, n->content[k], s->c[0].os, s->c[0].oe) < 0)
                    return NLPD_ENOMEM;
            for (size_t i = 0; i < s->n; i++)
                if (nlpd_tstr_push(tmp, s->c[i].cp, s->c[i].os, s->c[i].oe) < 0)
                    return NLPD_ENOMEM;
            tstr_swap(s, tmp);
        }
        return 0;
    case TN_STRIP: {
        size_t a = 0, b = s->n;
        if (n->strip_left)
            while (a < b && nlpd_tok_is_whitespace(s->c[a].cp))
                a++;
        if (n->strip_right)
            while (b > a && nlpd_tok_is_whitespace(s->c[b - 1].cp))
                b--;
        memmove(s->c, s->c + a, (b - a) * sizeof *s->c);
        s->n = b - a;
        return 0;
    }
    case TN_NMT: return nmt(s);
    case TN_SEQUENCE:
        for (size_t i = 0; i < n->nsubs; i++) {
            int rc = nlpd_tnorm_apply(&n->subs[i], s, tmp);
            if (rc < 0)
                return rc;
        }
        return 0;
    }
    return 0;
}

void nlpd_tnorm_free(struct tnorm *n)
{
    if (!n)
        return;
    for (size_t i = 0; i < n->nsubs; i++)
        nlpd_tnorm_free(&n->subs[i]);
    free(n->subs);
    free(n->charsmap);
    free(n->pat);
    free(n->content);
    nlpd_trx_free(n->rx);
    memset(n, 0, sizeof *n);
}
