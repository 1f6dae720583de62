/* Token-classification decoding as transformers' TokenClassificationPipeline.postprocess (v4.47) does it:
 * float32 softmax, per-token / per-word aggregation, B-/I- grouping, WordPiece decoding of words, and the
 * ignore_labels filter. Score arithmetic follows numpy (float32 pairwise sums, float64 division). */
#include "ner_aggregate.h"
#include "grow.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct tent {
    int label;
    float score;
    const char *word;
    size_t wlen, woff; /* woff: offset into tbuf when word is NULL (word-level strategies) */
    int32_t start, end, index;
};

int nlpd_ner_agg_parse(const char *s)
{
    static const char *const names[] = {"none", "simple", "first", "average", "max"};
    for (int i = 0; i < 5; i++)
        if (s && strcmp(s, names[i]) == 0)
            return i;
    return -1;
}

void nlpd_ner_out_free(struct nlpd_ner_out *o)
{
    free(o->ents);
    free(o->words);
    free(o->tmp);
    free(o->tbuf);
    free(o->acc);
    free(o->toks);
    free(o->tlens);
    memset(o, 0, sizeof *o);
}

/* numpy's pairwise_sum for float32 (contiguous), starting from the identity 0. */
static float pairwise_sum(const float *a, size_t n)
{
    if (n < 8) {
        float res = 0.0f;
        for (size_t i = 0; i < n; i++)
            res += a[i];
        return res;
    }
    if (n <= 128) {
        float r[8];
        size_t i;
        for (i = 0; i < 8; i++)
            r[i] = a[i];
        for (i = 8; i < n - (n % 8); i += 8)
            for (size_t k = 0; k < 8; k++)
                r[k] += a[i + k];
        float res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; i++)
            res += a[i];
        return res;
    }
    size_t n2 = n / 2;
    n2 -= n2 % 8;
    return pairwise_sum(a, n2) + pairwise_sum(a + n2, n - n2);
}

void nlpd_ner_softmax(const float *logits, int n, float *out)
{
    if (n <= 0)
        return;
    float m = logits[0];
    for (int i = 1; i < n; i++)
        if (logits[i] > m)
            m = logits[i];
    for (int i = 0; i < n; i++)
        out[i] = (float)exp((double)(logits[i] - m));
    float s = pairwise_sum(out, (size_t)n);
    for (int i = 0; i < n; i++)
        out[i] = out[i] / s;
}

static size_t cp_count(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += ((unsigned char)s[i] & 0xC0) != 0x80;
    return n;
}

int nlpd_ner_is_subword(const char *token, size_t token_len, int32_t start, int32_t end)
{
    return cp_count(token, token_len) != (size_t)(end - start);
}

static int append(char **buf, size_t *len, size_t *cap, const char *s, size_t n)
{
    if (nlpd_grow((void **)buf, cap, *len + n + 1, 1) < 0)
        return -1;
    memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = 0;
    return 0;
}

/* Replaces every non-overlapping `from` by `to` (no longer than from) in s[0..*n), left to right. */
static void replace_all(char *s, size_t *n, const char *from, const char *to)
{
    size_t fl = strlen(from), tl = strlen(to), r = 0, w = 0;
    while (r < *n) {
        if (r + fl <= *n && memcmp(s + r, from, fl) == 0) {
            memmove(s + w, to, tl);
            w += tl;
            r += fl;
        } else {
            s[w++] = s[r++];
        }
    }
    *n = w;
}

int nlpd_ner_decode(const char *const *toks, const size_t *lens, size_t n, char **buf, size_t *len, size_t *cap)
{
    /* tokenizers' WordPiece decoder cleanup(), applied to each token separately. */
    static const char *const from[] = {" .", " ?", " !", " ,", " ' ", " n't", " 'm", " do not", " 's", " 've", " 're"};
    static const char *const to[] = {".", "?", "!", ",", "'", "n't", "'m", " don't", "'s", "'ve", "'re"};
    for (size_t i = 0; i < n; i++) {
        size_t p = *len;
        const char *t = toks[i];
        size_t tl = lens[i];
        if (i > 0) {
            if (tl >= 2 && t[0] == '#' && t[1] == '#') {
                t += 2;
                tl -= 2;
            } else if (append(buf, len, cap, " ", 1) < 0) {
                return -1;
            }
        }
        if (append(buf, len, cap, t, tl) < 0)
            return -1;
        size_t pl = *len - p;
        for (size_t k = 0; k < sizeof from / sizeof from[0]; k++)
            replace_all(*buf + p, &pl, from[k], to[k]);
        *len = p + pl;
        (*buf)[*len] = 0;
    }
    return 0;
}

static int decode(const struct nlpd_ner_out *o, const char *const *toks, const size_t *lens, size_t n, char **buf,
                  size_t *len, size_t *cap)
{
    if (o->decode)
        return o->decode(o->decode_ctx, toks, lens, n, buf, len, cap) < 0 ? -1 : 0;
    return nlpd_ner_decode(toks, lens, n, buf, len, cap);
}

static int argmax(const float *s, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (s[i] > s[best])
            best = i;
    return best;
}

static float maxval(const float *s, int n)
{
    return s[argmax(s, n)];
}

static int ignored(const char *name, const char *const *ignore, size_t nignore)
{
    for (size_t i = 0; i < nignore; i++)
        if (strcmp(name, ignore[i]) == 0)
            return 1;
    return 0;
}

/* get_tag: B-x / I-x, anything else is an I- continuation of itself. */
static void get_tag(const char *label, char *bi, const char **tag)
{
    if ((label[0] == 'B' || label[0] == 'I') && label[1] == '-') {
        *bi = label[0];
        *tag = label + 2;
    } else {
        *bi = 'I';
        *tag = label;
    }
}

/* raw: the word as it is (the token string of "none"), else the decoder's string of the tokens. */
static int push_ent(struct nlpd_ner_out *o, const char *group, float score, const char *const *toks, const size_t *lens,
                    size_t ntok, int raw, int32_t start, int32_t end, int32_t index)
{
    if (nlpd_grow((void **)&o->ents, &o->cap, o->n + 1, sizeof *o->ents) < 0)
        return -1;
    size_t off = o->words_len;
    if (raw ? append(&o->words, &o->words_len, &o->words_cap, toks[0], lens[0]) < 0
            : decode(o, toks, lens, ntok, &o->words, &o->words_len, &o->words_cap) < 0)
        return -1;
    if (!o->words && nlpd_grow((void **)&o->words, &o->words_cap, 1, 1) < 0)
        return -1;
    struct nlpd_ner_ent *e = &o->ents[o->n++];
    e->group = group;
    e->score = score;
    e->word_off = off;
    e->word_len = o->words_len - off;
    e->start = start;
    e->end = end;
    e->index = index;
    return 0;
}

static int ensure_toks(struct nlpd_ner_out *o, size_t n)
{
    if (n <= o->toks_cap)
        return 0;
    size_t c = o->toks_cap;
    if (nlpd_grow((void **)&o->toks, &c, n, sizeof *o->toks) < 0)
        return -1;
    c = o->toks_cap;
    if (nlpd_grow((void **)&o->tlens, &c, n, sizeof *o->tlens) < 0)
        return -1;
    o->toks_cap = c;
    return 0;
}

/* aggregate_word over pre[a..b) into *t (word decoded into tbuf). */
static int aggregate_word(const struct nlpd_ner_pre *pre, size_t a, size_t b, int nl, enum nlpd_ner_agg agg,
                          struct nlpd_ner_out *o, struct tent *t)
{
    size_t n = b - a;
    if (ensure_toks(o, n) < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        o->toks[i] = pre[a + i].word;
        o->tlens[i] = pre[a + i].word_len;
    }
    t->word = NULL;
    t->woff = o->tbuf_len;
    if (decode(o, o->toks, o->tlens, n, &o->tbuf, &o->tbuf_len, &o->tbuf_cap) < 0)
        return -1;
    t->wlen = o->tbuf_len - t->woff;
    if (agg == NLPD_NER_FIRST) {
        t->label = argmax(pre[a].scores, nl);
        t->score = pre[a].scores[t->label];
    } else if (agg == NLPD_NER_MAX) {
        size_t best = a;
        float bv = maxval(pre[a].scores, nl);
        for (size_t i = a + 1; i < b; i++) {
            float v = maxval(pre[i].scores, nl);
            if (v > bv) {
                bv = v;
                best = i;
            }
        }
        t->label = argmax(pre[best].scores, nl);
        t->score = pre[best].scores[t->label];
    } else {
        /* np.nanmean(np.stack(scores), axis=0): float32 row-by-row sums, float64 division by the count. */
        size_t c = o->acc_cap;
        if (nlpd_grow((void **)&o->acc, &c, (size_t)nl, sizeof *o->acc) < 0)
            return -1;
        o->acc_cap = c;
        for (int k = 0; k < nl; k++)
            o->acc[k] = 0.0f;
        for (size_t i = a; i < b; i++)
            for (int k = 0; k < nl; k++)
                o->acc[k] += pre[i].scores[k];
        for (int k = 0; k < nl; k++)
            o->acc[k] = (float)((double)o->acc[k] / (double)n);
        t->label = argmax(o->acc, nl);
        t->score = o->acc[t->label];
    }
    t->start = pre[a].start;
    t->end = pre[b - 1].end;
    t->index = -1;
    return 0;
}

/* group_sub_entities over t[a..b). */
static int group_sub(const struct tent *t, size_t a, size_t b, const char *const *labels, const char *const *ignore,
                     size_t nignore, struct nlpd_ner_out *o)
{
    const char *label = labels[t[a].label];
    const char *dash = strchr(label, '-');
    const char *group = dash ? dash + 1 : label;
    if (ignored(group, ignore, nignore))
        return 0;
    size_t n = b - a;
    if (ensure_toks(o, n) < 0)
        return -1;
    /* np.nanmean of float32 scores: a float32 pairwise sum (reuse acc as its input). */
    size_t c = o->acc_cap;
    if (nlpd_grow((void **)&o->acc, &c, n, sizeof *o->acc) < 0)
        return -1;
    o->acc_cap = c;
    for (size_t i = 0; i < n; i++) {
        o->acc[i] = t[a + i].score;
        o->toks[i] = t[a + i].word;
        o->tlens[i] = t[a + i].wlen;
    }
    float score = (float)((double)pairwise_sum(o->acc, n) / (double)n);
    return push_ent(o, group, score, o->toks, o->tlens, n, 0, t[a].start, t[b - 1].end, -1);
}

int nlpd_ner_aggregate(const struct nlpd_ner_pre *pre, size_t n, const char *const *labels, int num_labels,
                       enum nlpd_ner_agg agg, const char *const *ignore, size_t nignore, struct nlpd_ner_out *o)
{
    o->n = 0;
    o->words_len = 0;
    o->tbuf_len = 0;
    if (n == 0)
        return 0;
    if (nlpd_grow(&o->tmp, &o->tmp_cap, n, sizeof(struct tent)) < 0)
        return -1;
    struct tent *t = o->tmp;
    size_t nt = 0;
    if (agg == NLPD_NER_NONE || agg == NLPD_NER_SIMPLE) {
        for (size_t i = 0; i < n; i++) {
            int l = argmax(pre[i].scores, num_labels);
            t[nt++] = (struct tent){l, pre[i].scores[l], pre[i].word, pre[i].word_len,
                                    0, pre[i].start,     pre[i].end,  pre[i].index};
        }
    } else {
        size_t a = 0;
        for (size_t i = 1; i <= n; i++) {
            if (i < n && pre[i].is_subword)
                continue;
            if (aggregate_word(pre, a, i, num_labels, agg, o, &t[nt]) < 0)
                return -1;
            nt++;
            a = i;
        }
        for (size_t i = 0; i < nt; i++)
            t[i].word = o->tbuf + t[i].woff; /* tbuf no longer moves */
    }
    if (agg == NLPD_NER_NONE) {
        for (size_t i = 0; i < nt; i++) {
            const char *label = labels[t[i].label];
            if (ignored(label, ignore, nignore))
                continue;
            if (push_ent(o, label, t[i].score, &t[i].word, &t[i].wlen, 1, 1, t[i].start, t[i].end, t[i].index) < 0)
                return -1;
        }
        return 0;
    }
    size_t a = 0;
    for (size_t i = 1; i <= nt; i++) {
        if (i < nt) {
            char bi, lbi;
            const char *tag, *ltag;
            get_tag(labels[t[i].label], &bi, &tag);
            get_tag(labels[t[i - 1].label], &lbi, &ltag);
            if (strcmp(tag, ltag) == 0 && bi != 'B')
                continue;
        }
        if (group_sub(t, a, i, labels, ignore, nignore, o) < 0)
            return -1;
        a = i;
    }
    return 0;
}

size_t nlpd_ner_windows(size_t n, size_t win, size_t stride, size_t *starts, size_t max)
{
    if (win == 0)
        return 0;
    if (n <= win) {
        if (max)
            starts[0] = 0;
        return 1;
    }
    if (stride > win / 2)
        stride = win / 2;
    size_t step = win - stride, k = 0;
    for (size_t s = 0;; s += step) {
        size_t st = s + win >= n ? n - win : s;
        if (k < max)
            starts[k] = st;
        k++;
        if (s + win >= n)
            break;
    }
    return k;
}
