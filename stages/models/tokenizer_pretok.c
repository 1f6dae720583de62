/* Pre-tokenisers of HF `tokenizers` on aligned char buffers: Bert, Whitespace, WhitespaceSplit, Metaspace, ByteLevel
 * (with the GPT-2 split regex written out by hand), Punctuation, Digits, Split and Sequence, with the five
 * SplitDelimiterBehaviors of NormalizedString::split. */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tokenizer_internal.h"

/* GPT-2's bytes_to_unicode(): printable Latin-1 bytes map to themselves, the rest to U+0100 upwards. */
const int32_t nlpd_tok_byte_to_char[256] = {
    256, 257, 258, 259, 260, 261, 262, 263, 264, 265, 266, 267, 268, 269, 270, 271, 272, 273, 274, 275, 276, 277,
    278, 279, 280, 281, 282, 283, 284, 285, 286, 287, 288, 33,  34,  35,  36,  37,  38,  39,  40,  41,  42,  43,
    44,  45,  46,  47,  48,  49,  50,  51,  52,  53,  54,  55,  56,  57,  58,  59,  60,  61,  62,  63,  64,  65,
    66,  67,  68,  69,  70,  71,  72,  73,  74,  75,  76,  77,  78,  79,  80,  81,  82,  83,  84,  85,  86,  87,
    88,  89,  90,  91,  92,  93,  94,  95,  96,  97,  98,  99,  100, 101, 102, 103, 104, 105, 106, 107, 108, 109,
    110, 111, 112, 113, 114, 115, 116, 117, 118, 119, 120, 121, 122, 123, 124, 125, 126, 289, 290, 291, 292, 293,
    294, 295, 296, 297, 298, 299, 300, 301, 302, 303, 304, 305, 306, 307, 308, 309, 310, 311, 312, 313, 314, 315,
    316, 317, 318, 319, 320, 321, 322, 161, 162, 163, 164, 165, 166, 167, 168, 169, 170, 171, 172, 323, 174, 175,
    176, 177, 178, 179, 180, 181, 182, 183, 184, 185, 186, 187, 188, 189, 190, 191, 192, 193, 194, 195, 196, 197,
    198, 199, 200, 201, 202, 203, 204, 205, 206, 207, 208, 209, 210, 211, 212, 213, 214, 215, 216, 217, 218, 219,
    220, 221, 222, 223, 224, 225, 226, 227, 228, 229, 230, 231, 232, 233, 234, 235, 236, 237, 238, 239, 240, 241,
    242, 243, 244, 245, 246, 247, 248, 249, 250, 251, 252, 253, 254, 255,
};

int nlpd_tpieces_add(struct tpieces *p, const struct tchar *c, size_t n)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 64;
        size_t *off = realloc(p->off, cap * sizeof *off);
        if (!off)
            return NLPD_ENOMEM;
        p->off = off;
        size_t *len = realloc(p->len, cap * sizeof *len);
        if (!len)
            return NLPD_ENOMEM;
        p->len = len;
        p->cap = cap;
    }
    if (nlpd_tstr_reserve(&p->buf, p->buf.n + n) < 0)
        return NLPD_ENOMEM;
    if (n)
        memcpy(p->buf.c + p->buf.n, c, n * sizeof *c);
    p->off[p->n] = p->buf.n;
    p->len[p->n] = n;
    p->buf.n += n;
    p->n++;
    return 0;
}

void nlpd_tpieces_free(struct tpieces *p)
{
    nlpd_tstr_free(&p->buf);
    free(p->off);
    free(p->len);
    memset(p, 0, sizeof *p);
}

/* A split of one piece: (start, end, is_match) ranges covering it, then NormalizedString::split's behaviours. */
struct seg {
    size_t s, e;
    int m;
};

struct segs {
    struct seg *v;
    size_t n, cap;
};

static int seg_push(struct segs *g, size_t s, size_t e, int m)
{
    if (g->n == g->cap) {
        size_t cap = g->cap ? g->cap * 2 : 32;
        struct seg *v = realloc(g->v, cap * sizeof *v);
        if (!v)
            return NLPD_ENOMEM;
        g->v = v;
        g->cap = cap;
    }
    g->v[g->n].s = s;
    g->v[g->n].e = e;
    g->v[g->n].m = m;
    g->n++;
    return 0;
}

/* Matches given as ranges (already in g, gaps not yet filled) -> pieces appended to out. */
static int emit_split(const struct tchar *c, size_t n, struct segs *matches, enum tsplit_behavior b, int invert,
                      struct tpieces *out)
{
    /* Fill the gaps between matches: g2 = full cover. */
    struct segs all = {0};
    size_t prev = 0;
    int rc = 0;
    for (size_t i = 0; i < matches->n && rc == 0; i++) {
        if (matches->v[i].s > prev)
            rc = seg_push(&all, prev, matches->v[i].s, 0);
        if (rc == 0)
            rc = seg_push(&all, matches->v[i].s, matches->v[i].e, 1);
        prev = matches->v[i].e;
    }
    if (rc == 0 && prev < n)
        rc = seg_push(&all, prev, n, 0);
    if (rc) {
        free(all.v);
        return rc;
    }
    if (invert)
        for (size_t i = 0; i < all.n; i++)
            all.v[i].m = !all.v[i].m;
    /* Apply the behaviour in place into a list of kept ranges. */
    size_t k = 0;
    int prevm = 0;
    switch (b) {
    case TB_REMOVED:
        for (size_t i = 0; i < all.n; i++)
            if (!all.v[i].m)
                all.v[k++] = all.v[i];
        break;
    case TB_ISOLATED: k = all.n; break;
    case TB_MERGED_PREV:
        for (size_t i = 0; i < all.n; i++) {
            if (all.v[i].m && !prevm && k > 0)
                all.v[k - 1].e = all.v[i].e;
            else
                all.v[k++] = all.v[i];
            prevm = all.v[i].m;
        }
        break;
    case TB_MERGED_NEXT: {
        /* Walk backwards, building from the end of the array. */
        size_t w = all.n;
        for (size_t i = all.n; i-- > 0;) {
            struct seg sg = all.v[i];
            if (sg.m && !prevm && w < all.n)
                all.v[w].s = sg.s;
            else
                all.v[--w] = sg;
            prevm = sg.m;
        }
        memmove(all.v, all.v + w, (all.n - w) * sizeof *all.v);
        k = all.n - w;
        break;
    }
    case TB_CONTIGUOUS:
        for (size_t i = 0; i < all.n; i++) {
            if (all.v[i].m == prevm && k > 0)
                all.v[k - 1].e = all.v[i].e;
            else
                all.v[k++] = all.v[i];
            prevm = all.v[i].m;
        }
        break;
    }
    for (size_t i = 0; i < k && rc == 0; i++)
        if (all.v[i].e > all.v[i].s)
            rc = nlpd_tpieces_add(out, c + all.v[i].s, all.v[i].e - all.v[i].s);
    free(all.v);
    return rc;
}

static int bert_punc(int32_t cp)
{
    return (cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) || (cp >= 123 && cp <= 126) ||
           nlpd_tok_is_punct(cp);
}

/* Regex \w of the Rust regex crate (letters, marks, decimal and letter numbers, connector punctuation). */
static int pred_word(int32_t cp)
{
    int c = utf8proc_category(cp);
    return nlpd_tok_is_letter(cp) || c == UTF8PROC_CATEGORY_MN || c == UTF8PROC_CATEGORY_MC ||
           c == UTF8PROC_CATEGORY_ME || c == UTF8PROC_CATEGORY_ND || c == UTF8PROC_CATEGORY_NL ||
           c == UTF8PROC_CATEGORY_PC;
}

static size_t gpt2_match(const struct tchar *c, size_t n, size_t i)
{
    int32_t x = c[i].cp;
    if (x == '\'' && i + 1 < n) {
        int32_t y = c[i + 1].cp;
        if (y == 's' || y == 't' || y == 'm' || y == 'd')
            return i + 2;
        if (i + 2 < n) {
            int32_t z = c[i + 2].cp;
            if ((y == 'r' && z == 'e') || (y == 'v' && z == 'e') || (y == 'l' && z == 'l'))
                return i + 3;
        }
    }
    size_t j = x == ' ' ? i + 1 : i;
    if (j < n) {
        if (nlpd_tok_is_letter(c[j].cp)) {
            while (j < n && nlpd_tok_is_letter(c[j].cp))
                j++;
            return j;
        }
        if (nlpd_tok_is_number(c[j].cp)) {
            while (j < n && nlpd_tok_is_number(c[j].cp))
                j++;
            return j;
        }
        if (!nlpd_tok_is_whitespace(c[j].cp)) {
            while (j < n && !nlpd_tok_is_whitespace(c[j].cp) && !nlpd_tok_is_letter(c[j].cp) &&
                   !nlpd_tok_is_number(c[j].cp))
                j++;
            return j;
        }
    }
    /* \s+(?!\S) then \s+ */
    j = i;
    while (j < n && nlpd_tok_is_whitespace(c[j].cp))
        j++;
    if (j == n || j - i == 1)
        return j;
    return j - 1;
}

static int metaspace(const struct tpre *pt, const struct tchar *c, size_t n, struct tpieces *out, struct tstr *w,
                     struct segs *m)
{
    w->n = 0;
    for (size_t i = 0; i < n; i++)
        if (nlpd_tstr_push(w, c[i].cp == ' ' ? pt->replacement : c[i].cp, c[i].os, c[i].oe) < 0)
            return NLPD_ENOMEM;
    int prepend = pt->prepend_scheme == 0 || (pt->prepend_scheme == 1 && n && c[0].os == 0);
    if (prepend && w->n && w->c[0].cp != pt->replacement) {
        if (nlpd_tstr_reserve(w, w->n + 1) < 0)
            return NLPD_ENOMEM;
        memmove(w->c + 1, w->c, w->n * sizeof *w->c);
        w->c[0].cp = pt->replacement;
        w->n++;
    }
    if (!pt->split)
        return w->n ? nlpd_tpieces_add(out, w->c, w->n) : 0;
    m->n = 0;
    for (size_t i = 0; i < w->n; i++)
        if (w->c[i].cp == pt->replacement && seg_push(m, i, i + 1, 1) < 0)
            return NLPD_ENOMEM;
    return emit_split(w->c, w->n, m, TB_MERGED_NEXT, 0, out);
}

static int bytelevel(const struct tpre *pt, const struct tchar *c, size_t n, struct tpieces *out, struct tstr *w,
                     struct segs *m)
{
    if (!n)
        return 0;
    w->n = 0;
    if (pt->add_prefix_space && c[0].cp != ' ' && nlpd_tstr_push(w, ' ', c[0].os, c[0].oe) < 0)
        return NLPD_ENOMEM;
    for (size_t i = 0; i < n; i++)
        if (nlpd_tstr_push(w, c[i].cp, c[i].os, c[i].oe) < 0)
            return NLPD_ENOMEM;
    m->n = 0;
    if (pt->use_regex) {
        for (size_t i = 0; i < w->n;) {
            size_t e = gpt2_match(w->c, w->n, i);
            if (e <= i)
                e = i + 1;
            if (seg_push(m, i, e, 1) < 0)
                return NLPD_ENOMEM;
            i = e;
        }
    } else if (seg_push(m, 0, w->n, 1) < 0) {
        return NLPD_ENOMEM;
    }
    /* Each piece's chars become one char per UTF-8 byte. */
    for (size_t k = 0; k < m->n; k++) {
        size_t before = out->buf.n;
        if (nlpd_tpieces_add(out, NULL, 0) < 0)
            return NLPD_ENOMEM;
        for (size_t i = m->v[k].s; i < m->v[k].e; i++) {
            char b[4];
            int nb = nlpd_tok_utf8_encode(w->c[i].cp, b);
            for (int j = 0; j < nb; j++)
                if (nlpd_tstr_push(&out->buf, nlpd_tok_byte_to_char[(uint8_t)b[j]], w->c[i].os, w->c[i].oe) < 0)
                    return NLPD_ENOMEM;
        }
        out->len[out->n - 1] = out->buf.n - before;
        if (out->len[out->n - 1] == 0)
            out->n--;
    }
    return 0;
}

static int pre_one(const struct tpre *pt, const struct tchar *c, size_t n, struct tpieces *out, struct tstr *w,
                   struct segs *m)
{
    m->n = 0;
    switch (pt->type) {
    case TP_BERT: {
        for (size_t i = 0; i < n; i++) {
            if (nlpd_tok_is_whitespace(c[i].cp)) {
                continue;
            }
            if (bert_punc(c[i].cp)) {
                if (nlpd_tpieces_add(out, c + i, 1) < 0)
                    return NLPD_ENOMEM;
                continue;
            }
            size_t j = i;
            while (j < n && !nlpd_tok_is_whitespace(c[j].cp) && !bert_punc(c[j].cp))
                j++;
            if (nlpd_tpieces_add(out, c + i, j - i) < 0)
                return NLPD_ENOMEM;
            i = j - 1;
        }
        return 0;
    }
    case TP_WHITESPACE:
        for (size_t i = 0; i < n;) {
            if (nlpd_tok_is_whitespace(c[i].cp)) {
                i++;
                continue;
            }
            int w0 = pred_word(c[i].cp);
            size_t j = i;
            while (j < n && !nlpd_tok_is_whitespace(c[j].cp) && pred_word(c[j].cp) == w0)
                j++;
            if (nlpd_tpieces_add(out, c + i, j - i) < 0)
                return NLPD_ENOMEM;
            i = j;
        }
        return 0;
    case TP_WHITESPACE_SPLIT:
        for (size_t i = 0; i < n;) {
            if (nlpd_tok_is_whitespace(c[i].cp)) {
                i++;
                continue;
            }
            size_t j = i;
            while (j < n && !nlpd_tok_is_whitespace(c[j].cp))
                j++;
            if (nlpd_tpieces_add(out, c + i, j - i) < 0)
                return NLPD_ENOMEM;
            i = j;
        }
        return 0;
    case TP_METASPACE: return metaspace(pt, c, n, out, w, m);
    case TP_BYTELEVEL: return bytelevel(pt, c, n, out, w, m);
    case TP_PUNCTUATION:
        for (size_t i = 0; i < n; i++)
            if (bert_punc(c[i].cp) && seg_push(m, i, i + 1, 1) < 0)
                return NLPD_ENOMEM;
        return emit_split(c, n, m, pt->behavior, 0, out);
    case TP_DIGITS:
        for (size_t i = 0; i < n; i++)
            if (c[i].cp >= '0' && c[i].cp <= '9' && seg_push(m, i, i + 1, 1) < 0)
                return NLPD_ENOMEM;
        return emit_split(c, n, m, pt->individual_digits ? TB_ISOLATED : TB_CONTIGUOUS, 0, out);
    case TP_SPLIT:
        if (pt->rx) {
            size_t from = 0, ms, me;
            while (from <= n && nlpd_trx_find(pt->rx, c, n, from, &ms, &me)) {
                if (me > ms && seg_push(m, ms, me, 1) < 0)
                    return NLPD_ENOMEM;
                from = me > ms ? me : ms + 1;
            }
        } else if (pt->pat_n) {
            for (size_t i = 0; i + pt->pat_n <= n;) {
                size_t k = 0;
                while (k < pt->pat_n && c[i + k].cp == pt->pat[k])
                    k++;
                if (k == pt->pat_n) {
                    if (seg_push(m, i, i + k, 1) < 0)
                        return NLPD_ENOMEM;
                    i += k;
                } else {
                    i++;
                }
            }
        }
        return emit_split(c, n, m, pt->behavior, pt->invert, out);
    case TP_SEQUENCE: break;
    }
    return 0;
}

int nlpd_tpre_apply(const struct tpre *pt, struct tpieces *in, struct tpieces *out, struct tpieces *tmp)
{
    out->n = 0;
    out->buf.n = 0;
    if (pt->type == TP_SEQUENCE) {
        struct tpieces *a = in;
        struct tpieces spare = {0};
        int rc = 0;
        for (size_t i = 0; i < pt->nsubs && rc == 0; i++) {
            struct tpieces *dst = i % 2 ? tmp : out;
            rc = nlpd_tpre_apply(&pt->subs[i], a, dst, &spare);
            a = dst;
        }
        if (rc == 0 && a != out) {
            out->n = 0;
            out->buf.n = 0;
            for (size_t i = 0; i < a->n && rc == 0; i++)
                rc = nlpd_tpieces_add(out, a->buf.c + a->off[i], a->len[i]);
        }
        nlpd_tpieces_free(&spare);
        return rc;
    }
    struct tstr w = {0};
    struct segs m = {0};
    int rc = 0;
    for (size_t i = 0; i < in->n && rc == 0; i++)
        rc = pre_one(pt, in->buf.c + in->off[i], in->len[i], out, &w, &m);
    nlpd_tstr_free(&w);
    free(m.v);
    (void)tmp;
    return rc;
}

void nlpd_tpre_free(struct tpre *pt)
{
    if (!pt)
        return;
    for (size_t i = 0; i < pt->nsubs; i++)
        nlpd_tpre_free(&pt->subs[i]);
    free(pt->subs);
    free(pt->pat);
    nlpd_trx_free(pt->rx);
    memset(pt, 0, sizeof *pt);
}
