/* tokenizer.json's decoders, with the semantics of the Rust `tokenizers` library (the decoders folder,
 * Metaspace/ByteLevel in pre_tokenizers, Replace in normalizers): each decoder maps a list of token strings to a
 * list of strings (decode_chain), Sequence chains them, and the result is concatenated. Plus the tokenizer-level
 * decode of ids (added tokens first, specials skipped on request, unknown ids dropped) and transformers'
 * clean_up_tokenization. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grow.h"
#include "tokenizer_internal.h"

/* ------------------------------------------------------------------ token lists */

struct tlist {
    char *buf;
    size_t len, cap;
    size_t *off, *tl;
    size_t n, ncap;
};

/* Appends bytes to the last token of l. */
static int tl_app(struct tlist *l, const char *s, size_t n)
{
    if (nlpd_grow((void **)&l->buf, &l->cap, l->len + n + 1, 1) < 0)
        return -1;
    if (n)
        memcpy(l->buf + l->len, s, n);
    l->len += n;
    l->tl[l->n - 1] += n;
    return 0;
}

/* Starts a new (empty) token. */
static int tl_new(struct tlist *l)
{
    if (nlpd_grow((void **)&l->buf, &l->cap, l->len + 1, 1) < 0) /* buf is never NULL once a token exists */
        return -1;
    size_t c = l->ncap;
    if (nlpd_grow((void **)&l->off, &c, l->n + 1, sizeof *l->off) < 0)
        return -1;
    c = l->ncap;
    if (nlpd_grow((void **)&l->tl, &c, l->n + 1, sizeof *l->tl) < 0)
        return -1;
    l->ncap = c;
    l->off[l->n] = l->len;
    l->tl[l->n] = 0;
    l->n++;
    return 0;
}

static int tl_push(struct tlist *l, const char *s, size_t n)
{
    return tl_new(l) < 0 ? -1 : tl_app(l, s, n);
}

static void tl_free(struct tlist *l)
{
    free(l->buf);
    free(l->off);
    free(l->tl);
}

#define TOK(l, i) ((l)->buf + (l)->off[i])

/* One code point of s[i..n): returns its length (1 for an invalid byte, decoded as U+FFFD). */
static size_t utf8_next(const char *s, size_t i, size_t n, int32_t *cp)
{
    const unsigned char *u = (const unsigned char *)s + i;
    size_t left = n - i, k;
    int32_t c;
    if (u[0] < 0x80) {
        *cp = u[0];
        return 1;
    }
    if (u[0] >= 0xC2 && u[0] <= 0xDF) {
        k = 2;
        c = u[0] & 0x1F;
    } else if (u[0] >= 0xE0 && u[0] <= 0xEF) {
        k = 3;
        c = u[0] & 0x0F;
    } else if (u[0] >= 0xF0 && u[0] <= 0xF4) {
        k = 4;
        c = u[0] & 0x07;
    } else {
        *cp = 0xFFFD;
        return 1;
    }
    if (left < k) {
        *cp = 0xFFFD;
        return 1;
    }
    for (size_t j = 1; j < k; j++) {
        if ((u[j] & 0xC0) != 0x80) {
            *cp = 0xFFFD;
            return 1;
        }
        c = (c << 6) | (u[j] & 0x3F);
    }
    *cp = c;
    return k;
}

/* Rust's String::from_utf8_lossy: each maximal invalid subpart becomes one U+FFFD. Appends to l's last token. */
static int lossy_app(struct tlist *l, const unsigned char *b, size_t n)
{
    static const char rep[] = "\xEF\xBF\xBD";
    size_t i = 0;
    while (i < n) {
        unsigned char c = b[i];
        size_t k = 0;
        unsigned char lo = 0x80, hi = 0xBF;
        if (c < 0x80)
            k = 1;
        else if (c >= 0xC2 && c <= 0xDF)
            k = 2;
        else if (c >= 0xE0 && c <= 0xEF) {
            k = 3;
            lo = c == 0xE0 ? 0xA0 : 0x80;
            hi = c == 0xED ? 0x9F : 0xBF;
        } else if (c >= 0xF0 && c <= 0xF4) {
            k = 4;
            lo = c == 0xF0 ? 0x90 : 0x80;
            hi = c == 0xF4 ? 0x8F : 0xBF;
        }
        if (k == 0) {
            if (tl_app(l, rep, 3) < 0)
                return -1;
            i++;
            continue;
        }
        size_t j = 1;
        while (j < k && i + j < n) {
            unsigned char d = b[i + j];
            if (j == 1 ? (d < lo || d > hi) : (d & 0xC0) != 0x80)
                break;
            j++;
        }
        if (j == k) {
            if (tl_app(l, (const char *)b + i, k) < 0)
                return -1;
        } else if (tl_app(l, rep, 3) < 0) {
            return -1;
        }
        i += j;
    }
    return 0;
}

static int valid_utf8(const unsigned char *b, size_t n)
{
    for (size_t i = 0; i < n;) {
        int32_t cp;
        size_t k = utf8_next((const char *)b, i, n, &cp);
        if (cp == 0xFFFD && !(k == 3 && b[i] == 0xEF && b[i + 1] == 0xBF && b[i + 2] == 0xBD))
            return 0;
        i += k;
    }
    return 1;
}

/* Rust's str::replace: every non-overlapping `from` (left to right) becomes `to`; an empty `from` matches at every
 * char boundary. Appends to l's last token. */
static int replace_app(struct tlist *l, const char *s, size_t n, const char *from, size_t fl, const char *to,
                       size_t tol)
{
    if (fl == 0) {
        for (size_t i = 0; i < n;) {
            int32_t cp;
            size_t k = utf8_next(s, i, n, &cp);
            if (tl_app(l, to, tol) < 0 || tl_app(l, s + i, k) < 0)
                return -1;
            i += k;
        }
        return tl_app(l, to, tol);
    }
    size_t i = 0, last = 0;
    while (i + fl <= n) {
        if (memcmp(s + i, from, fl) == 0) {
            if (tl_app(l, s + last, i - last) < 0 || tl_app(l, to, tol) < 0)
                return -1;
            i += fl;
            last = i;
        } else {
            i++;
        }
    }
    return tl_app(l, s + last, n - last);
}

/* WordPiece's cleanup(), in place on l's last token (every replacement is no longer than its pattern). */
static int cleanup_last(struct tlist *l, struct tlist *tmp)
{
    static const char *const from[] = {" .", " ?", " !", " ,", " ' ", " n't", " 'm", " do not", " 's", " 've", " 're"};
    static const char *const to[] = {".", "?", "!", ",", "'", "n't", "'m", " don't", "'s", "'ve", "'re"};
    for (size_t k = 0; k < sizeof from / sizeof from[0]; k++) {
        size_t i = l->n - 1, fl = strlen(from[k]);
        if (l->tl[i] < fl || !memmem(TOK(l, i), l->tl[i], from[k], fl))
            continue;
        tmp->n = tmp->len = 0;
        if (tl_new(tmp) < 0 || replace_app(tmp, TOK(l, i), l->tl[i], from[k], fl, to[k], strlen(to[k])) < 0)
            return -1;
        memcpy(TOK(l, i), tmp->buf, tmp->tl[0]);
        l->len -= l->tl[i] - tmp->tl[0];
        l->tl[i] = tmp->tl[0];
    }
    return 0;
}

/* ------------------------------------------------------------------ the decoders */

static int run(const struct tdec *d, struct tlist *in, struct tlist *out, struct tlist *tmp);

static int dec_wordpiece(const struct tdec *d, struct tlist *in, struct tlist *out, struct tlist *tmp)
{
    for (size_t i = 0; i < in->n; i++) {
        const char *s = TOK(in, i);
        size_t n = in->tl[i];
        if (tl_new(out) < 0)
            return -1;
        if (i != 0) {
            if (n >= d->s1_len && memcmp(s, d->s1, d->s1_len) == 0) {
                s += d->s1_len;
                n -= d->s1_len;
            } else if (tl_app(out, " ", 1) < 0) {
                return -1;
            }
        }
        if (tl_app(out, s, n) < 0 || (d->cleanup && cleanup_last(out, tmp) < 0))
            return -1;
    }
    return 0;
}

static int dec_metaspace(const struct tdec *d, struct tlist *in, struct tlist *out)
{
    for (size_t i = 0; i < in->n; i++) {
        const char *s = TOK(in, i);
        size_t n = in->tl[i];
        if (tl_new(out) < 0)
            return -1;
        for (size_t k = 0; k < n;) {
            int32_t cp;
            size_t len = utf8_next(s, k, n, &cp);
            if (cp == d->replacement) {
                if (!(i == 0 && d->prepend_scheme != 2) && tl_app(out, " ", 1) < 0)
                    return -1;
            } else if (tl_app(out, s + k, len) < 0) {
                return -1;
            }
            k += len;
        }
    }
    return 0;
}

static int char_to_byte(int32_t cp)
{
    static int16_t table[324];
    static int ready;
    if (!ready) { /* benign race: every thread writes the same values */
        for (int i = 0; i < 324; i++)
            table[i] = -1;
        for (int b = 0; b < 256; b++)
            table[nlpd_tok_byte_to_char[b]] = (int16_t)b;
        ready = 1;
    }
    return cp >= 0 && cp < 324 ? table[cp] : -1;
}

static int dec_bytelevel(struct tlist *in, struct tlist *out, struct tlist *tmp)
{
    /* tmp collects the bytes of all tokens in one buffer */
    tmp->n = tmp->len = 0;
    if (tl_new(tmp) < 0)
        return -1;
    for (size_t i = 0; i < in->n; i++) {
        const char *s = TOK(in, i);
        size_t n = in->tl[i], mark = tmp->len, k = 0;
        for (; k < n;) {
            int32_t cp;
            size_t len = utf8_next(s, k, n, &cp);
            int b = char_to_byte(cp);
            if (b < 0)
                break;
            char c = (char)b;
            if (tl_app(tmp, &c, 1) < 0)
                return -1;
            k += len;
        }
        if (k < n) { /* a char outside the byte table: the token's own bytes */
            tmp->len = mark;
            tmp->tl[0] = mark;
            if (tl_app(tmp, s, n) < 0)
                return -1;
        }
    }
    if (tl_new(out) < 0)
        return -1;
    return lossy_app(out, (const unsigned char *)tmp->buf, tmp->len);
}

static int dec_bpe(const struct tdec *d, struct tlist *in, struct tlist *out)
{
    for (size_t i = 0; i < in->n; i++) {
        const char *rep = i + 1 == in->n ? "" : " ";
        if (tl_new(out) < 0 || replace_app(out, TOK(in, i), in->tl[i], d->s1, d->s1_len, rep, strlen(rep)) < 0)
            return -1;
    }
    return 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* "<0xHH>" -> the byte, as u8::from_str_radix(&token[3..5], 16) (which also takes "+H"); -1 otherwise. */
static int byte_token(const char *s, size_t n)
{
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>')
        return -1;
    if (s[3] == '+')
        return hexval(s[4]);
    int a = hexval(s[3]), b = hexval(s[4]);
    return a < 0 || b < 0 ? -1 : a * 16 + b;
}

static int flush_bytes(struct tlist *out, const unsigned char *b, size_t n)
{
    if (!n)
        return 0;
    if (valid_utf8(b, n))
        return tl_push(out, (const char *)b, n);
    for (size_t i = 0; i < n; i++)
        if (tl_push(out, "\xEF\xBF\xBD", 3) < 0)
            return -1;
    return 0;
}

static int dec_bytefallback(struct tlist *in, struct tlist *out, struct tlist *tmp)
{
    tmp->n = tmp->len = 0;
    if (tl_new(tmp) < 0)
        return -1;
    for (size_t i = 0; i < in->n; i++) {
        int b = byte_token(TOK(in, i), in->tl[i]);
        if (b >= 0) {
            char c = (char)b;
            if (tl_app(tmp, &c, 1) < 0)
                return -1;
            continue;
        }
        if (flush_bytes(out, (const unsigned char *)tmp->buf, tmp->len) < 0)
            return -1;
        tmp->len = tmp->tl[0] = 0;
        if (tl_push(out, TOK(in, i), in->tl[i]) < 0)
            return -1;
    }
    return flush_bytes(out, (const unsigned char *)tmp->buf, tmp->len);
}

static int dec_strip(const struct tdec *d, struct tlist *in, struct tlist *out)
{
    for (size_t i = 0; i < in->n; i++) {
        const char *s = TOK(in, i);
        size_t n = in->tl[i], a = 0, b = n, nchars = 0;
        int32_t cp;
        for (size_t k = 0; k < n; nchars++)
            k += utf8_next(s, k, n, &cp);
        size_t skipped = 0;
        while (skipped < d->start && a < n) {
            size_t len = utf8_next(s, a, n, &cp);
            if (cp != d->content)
                break;
            a += len;
            skipped++;
        }
        /* at most min(stop, chars left after the start cut) chars from the end */
        size_t lim = d->stop < nchars - skipped ? d->stop : nchars - skipped;
        for (size_t k = 0; k < lim; k++) {
            size_t p = b - 1;
            while (p > a && ((unsigned char)s[p] & 0xC0) == 0x80)
                p--;
            utf8_next(s, p, b, &cp);
            if (cp != d->content)
                break;
            b = p;
        }
        if (tl_push(out, s + a, b - a) < 0)
            return -1;
    }
    return 0;
}

static int dec_replace(const struct tdec *d, struct tlist *in, struct tlist *out)
{
    struct tstr s = {0};
    int rc = 0;
    for (size_t i = 0; i < in->n && rc == 0; i++) {
        const char *t = TOK(in, i);
        size_t n = in->tl[i];
        s.n = 0;
        for (size_t k = 0; k < n && rc == 0;) {
            int32_t cp;
            size_t len = utf8_next(t, k, n, &cp);
            rc = nlpd_tstr_push(&s, cp, (uint32_t)k, (uint32_t)(k + len)); /* os/oe: byte range in the token */
            k += len;
        }
        if (rc < 0 || (rc = tl_new(out)) < 0)
            break;
        size_t pos = 0;
        while (pos < s.n && rc == 0) {
            size_t ms = 0, me = 0;
            int found = 0;
            if (d->rx) {
                found = nlpd_trx_find(d->rx, s.c, s.n, pos, &ms, &me);
            } else if (d->pat_n) {
                for (ms = pos; ms + d->pat_n <= s.n && !found; ms++) {
                    size_t k = 0;
                    while (k < d->pat_n && s.c[ms + k].cp == d->pat[k])
                        k++;
                    found = k == d->pat_n;
                }
                if (found) {
                    ms--;
                    me = ms + d->pat_n;
                }
            }
            if (!found)
                break;
            if (ms > pos)
                rc = tl_app(out, t + s.c[pos].os, s.c[ms - 1].oe - s.c[pos].os);
            if (rc == 0)
                rc = tl_app(out, d->s1, d->s1_len);
            if (me == ms) { /* an empty match: the char after it is kept and the search moves past it */
                if (ms < s.n && rc == 0)
                    rc = tl_app(out, t + s.c[ms].os, s.c[ms].oe - s.c[ms].os);
                pos = ms + 1;
            } else {
                pos = me;
            }
        }
        if (rc == 0 && pos < s.n)
            rc = tl_app(out, t + s.c[pos].os, n - s.c[pos].os);
    }
    nlpd_tstr_free(&s);
    return rc < 0 ? -1 : 0;
}

static int dec_ctc(const struct tdec *d, struct tlist *in, struct tlist *out, struct tlist *tmp)
{
    for (size_t i = 0; i < in->n; i++) {
        if (i > 0 && in->tl[i] == in->tl[i - 1] && memcmp(TOK(in, i), TOK(in, i - 1), in->tl[i]) == 0)
            continue; /* dedup of consecutive equal tokens */
        size_t mark = out->len;
        if (tl_new(out) < 0 || replace_app(out, TOK(in, i), in->tl[i], d->s1, d->s1_len, "", 0) < 0)
            return -1;
        if (d->cleanup) {
            if (cleanup_last(out, tmp) < 0)
                return -1;
            size_t last = out->n - 1;
            tmp->n = tmp->len = 0;
            if (tl_new(tmp) < 0 || replace_app(tmp, TOK(out, last), out->tl[last], d->s2, d->s2_len, " ", 1) < 0)
                return -1;
            out->len = mark;
            out->tl[last] = 0;
            if (tl_app(out, tmp->buf, tmp->tl[0]) < 0)
                return -1;
        }
        if (out->tl[out->n - 1] == 0) {
            out->n--;
            out->len = mark;
        }
    }
    return 0;
}

static int run(const struct tdec *d, struct tlist *in, struct tlist *out, struct tlist *tmp)
{
    out->n = out->len = 0;
    switch (d->type) {
    case TD_WORDPIECE: return dec_wordpiece(d, in, out, tmp);
    case TD_METASPACE: return dec_metaspace(d, in, out);
    case TD_BYTELEVEL: return dec_bytelevel(in, out, tmp);
    case TD_BPE: return dec_bpe(d, in, out);
    case TD_BYTEFALLBACK: return dec_bytefallback(in, out, tmp);
    case TD_FUSE:
        if (tl_new(out) < 0)
            return -1;
        for (size_t i = 0; i < in->n; i++)
            if (tl_app(out, TOK(in, i), in->tl[i]) < 0)
                return -1;
        return 0;
    case TD_STRIP: return dec_strip(d, in, out);
    case TD_REPLACE: return dec_replace(d, in, out);
    case TD_CTC: return dec_ctc(d, in, out, tmp);
    case TD_SEQUENCE: {
        struct tlist *a = in, *b = out, mid = {0};
        /* ping-pong between out and mid so that the last step writes out */
        struct tlist *bufs[2] = {out, &mid};
        int which = d->nsubs % 2 == 1 ? 0 : 1;
        int rc = 0;
        if (d->nsubs == 0) {
            for (size_t i = 0; i < in->n && rc == 0; i++)
                rc = tl_push(out, TOK(in, i), in->tl[i]);
            tl_free(&mid);
            return rc;
        }
        for (size_t k = 0; k < d->nsubs && rc == 0; k++) {
            b = bufs[which];
            rc = run(&d->subs[k], a, b, tmp);
            a = b;
            which ^= 1;
        }
        tl_free(&mid);
        return rc;
    }
    }
    return 0;
}

void nlpd_tdec_free(struct tdec *d)
{
    if (!d)
        return;
    free(d->s1);
    free(d->s2);
    free(d->pat);
    if (d->rx)
        nlpd_trx_free(d->rx);
    for (size_t i = 0; i < d->nsubs; i++)
        nlpd_tdec_free(&d->subs[i]);
    free(d->subs);
}

int nlpd_tdec_set_simple(struct tdec *d, enum tdec_type type)
{
    memset(d, 0, sizeof *d);
    d->type = type;
    if (type == TD_WORDPIECE) {
        d->cleanup = 1;
        d->s1 = strdup("##");
        d->s1_len = 2;
        return d->s1 ? 0 : NLPD_ENOMEM;
    }
    if (type == TD_METASPACE)
        d->replacement = 0x2581;
    return 0;
}

/* ------------------------------------------------------------------ public entry points */

/* Runs the decoder (or joins with " " without one) and appends the concatenation to *buf. */
static int decode_tokens(const struct tdec *d, const char *const *toks, const size_t *lens, size_t n, char **buf,
                         size_t *len, size_t *cap)
{
    struct tlist in = {0}, out = {0}, tmp = {0};
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (!d && i > 0)
            rc = tl_push(&in, " ", 1);
        if (rc == 0)
            rc = tl_push(&in, toks[i], lens[i]);
    }
    struct tlist *res = &in;
    if (rc == 0 && d) {
        rc = run(d, &in, &out, &tmp);
        res = &out;
    }
    if (rc == 0 && nlpd_grow((void **)buf, cap, *len + res->len + 1, 1) < 0)
        rc = -1;
    if (rc == 0) {
        /* tokens are stored in order and contiguously, but a step may leave gaps: copy token by token */
        for (size_t i = 0; i < res->n; i++) {
            memcpy(*buf + *len, TOK(res, i), res->tl[i]);
            *len += res->tl[i];
        }
        (*buf)[*len] = 0;
    }
    tl_free(&in);
    tl_free(&out);
    tl_free(&tmp);
    return rc < 0 ? NLPD_ENOMEM : 0;
}

int nlpd_tokenizer_convert_tokens_to_string(const struct nlpd_tokenizer *t, const char *const *toks, const size_t *lens,
                                            size_t n, char **buf, size_t *len, size_t *cap)
{
    return decode_tokens(t->dec, toks, lens, n, buf, len, cap);
}

/* transformers' PreTrainedTokenizerBase.clean_up_tokenization, in place. */
static void clean_up(char *s, size_t *n)
{
    static const char *const from[] = {" .", " ?", " !", " ,", " ' ", " n't", " 'm", " 's", " 've", " 're"};
    static const char *const to[] = {".", "?", "!", ",", "'", "n't", "'m", "'s", "'ve", "'re"};
    for (size_t k = 0; k < sizeof from / sizeof from[0]; k++) {
        size_t fl = strlen(from[k]), tol = strlen(to[k]), r = 0, w = 0;
        while (r < *n) {
            if (r + fl <= *n && memcmp(s + r, from[k], fl) == 0) {
                memmove(s + w, to[k], tol);
                w += tol;
                r += fl;
            } else {
                s[w++] = s[r++];
            }
        }
        *n = w;
    }
    s[*n] = 0;
}

int nlpd_tokenizer_decode(const struct nlpd_tokenizer *t, const int32_t *ids, size_t n, int skip_special_tokens,
                          char **text, size_t *text_len, struct nlpd_error *err)
{
    const char **toks = malloc((n ? n : 1) * sizeof *toks);
    size_t *lens = malloc((n ? n : 1) * sizeof *lens), k = 0, len = 0, cap = 0;
    char *buf = NULL;
    int rc = 0;
    if (!toks || !lens) {
        rc = NLPD_ENOMEM;
    } else {
        for (size_t i = 0; i < n; i++) {
            int32_t id = ids[i];
            if (id < 0 || id >= t->nids || !t->dec_str[id])
                continue; /* the Rust library drops ids it does not know */
            if (skip_special_tokens && t->dec_special[id])
                continue;
            toks[k] = t->dec_str[id];
            lens[k++] = strlen(t->dec_str[id]);
        }
        rc = decode_tokens(t->dec, toks, lens, k, &buf, &len, &cap);
        if (rc == 0 && !buf && !(buf = calloc(1, 1)))
            rc = NLPD_ENOMEM;
    }
    free(toks);
    free(lens);
    if (rc < 0) {
        free(buf);
        return nlpd_error_set(err, rc, 0, "tokenizer: out of memory while decoding");
    }
    if (t->clean_up_spaces)
        clean_up(buf, &len);
    *text = buf;
    if (text_len)
        *text_len = len;
    return 0;
}
