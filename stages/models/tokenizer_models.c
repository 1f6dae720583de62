/* The three tokenizer models of HF `tokenizers`, applied to one pre-tokenised piece: WordPiece (greedy longest
 * match), Unigram (Viterbi as unigram/model.rs `encode_optimized`) and BPE (lowest rank first), plus the vocabulary
 * and merge hash tables they look up. Buffers live in a caller's scratch and only grow. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer_internal.h"

#define UNK_PENALTY 10.0 /* unigram/model.rs K_UNK_PENALTY */

/* ------------------------------------------------------------------ vocabulary hash */

static uint64_t hash_bytes(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (uint8_t)s[i];
        h *= 1099511628211ULL;
    }
    return h ^ (h >> 29);
}

int nlpd_tvocab_init(struct tvocab *v, size_t expect)
{
    memset(v, 0, sizeof *v);
    size_t cap = 64;
    while (cap < expect * 2 + 16)
        cap *= 2;
    v->slots = malloc(cap * sizeof *v->slots);
    if (!v->slots)
        return NLPD_ENOMEM;
    memset(v->slots, 0xff, cap * sizeof *v->slots);
    v->mask = cap - 1;
    return 0;
}

static int vocab_rehash(struct tvocab *v)
{
    size_t cap = (v->mask + 1) * 2;
    int32_t *slots = malloc(cap * sizeof *slots);
    if (!slots)
        return NLPD_ENOMEM;
    memset(slots, 0xff, cap * sizeof *slots);
    for (size_t i = 0; i <= v->mask; i++) {
        int32_t id = v->slots[i];
        if (id < 0)
            continue;
        size_t h = (size_t)hash_bytes(v->str[id], v->len[id]) & (cap - 1);
        while (slots[h] >= 0)
            h = (h + 1) & (cap - 1);
        slots[h] = id;
    }
    free(v->slots);
    v->slots = slots;
    v->mask = cap - 1;
    return 0;
}

int nlpd_tvocab_set(struct tvocab *v, const char *s, size_t len, int32_t id)
{
    if (id < 0 || id == INT32_MAX || len > UINT32_MAX)
        return NLPD_EINVAL;
    if (id >= v->nids) {
        size_t cap = 16;
        while (cap < (size_t)id + 1)
            cap *= 2;
        char **str = realloc(v->str, cap * sizeof *str);
        if (!str)
            return NLPD_ENOMEM;
        v->str = str;
        uint32_t *lens = realloc(v->len, cap * sizeof *lens);
        if (!lens)
            return NLPD_ENOMEM;
        v->len = lens;
        for (int32_t i = v->nids; i <= id; i++) {
            v->str[i] = NULL;
            v->len[i] = 0;
        }
        v->nids = id + 1;
    }
    if ((v->used + 1) * 2 > v->mask && vocab_rehash(v) < 0)
        return NLPD_ENOMEM;
    char *copy = malloc(len + 1);
    if (!copy)
        return NLPD_ENOMEM;
    memcpy(copy, s, len);
    copy[len] = 0;
    /* A slot whose id got another string just stops matching: lookups compare the id's current string. */
    free(v->str[id]);
    v->str[id] = copy;
    v->len[id] = (uint32_t)len;
    size_t h = (size_t)hash_bytes(s, len) & v->mask;
    while (v->slots[h] >= 0) {
        int32_t o = v->slots[h];
        if (v->len[o] == len && memcmp(v->str[o], s, len) == 0) {
            v->slots[h] = id; /* HashMap::insert: the later id wins */
            return 0;
        }
        h = (h + 1) & v->mask;
    }
    v->slots[h] = id;
    v->used++;
    return 0;
}

int32_t nlpd_tvocab_get(const struct tvocab *v, const char *s, size_t len)
{
    if (!v->slots)
        return -1;
    size_t h = (size_t)hash_bytes(s, len) & v->mask;
    for (;;) {
        int32_t id = v->slots[h];
        if (id < 0)
            return -1;
        if (v->len[id] == len && memcmp(v->str[id], s, len) == 0)
            return id;
        h = (h + 1) & v->mask;
    }
}

void nlpd_tvocab_free(struct tvocab *v)
{
    for (int32_t i = 0; i < v->nids; i++)
        free(v->str[i]);
    free(v->str);
    free(v->len);
    free(v->slots);
    memset(v, 0, sizeof *v);
}

/* ------------------------------------------------------------------ merges hash */

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
}

int nlpd_tmodel_merge_add(struct tmodel *m, int32_t left, int32_t right, int32_t rank, int32_t id)
{
    if (!m->merges) {
        m->merges_mask = 255;
        m->merges = malloc((m->merges_mask + 1) * sizeof *m->merges);
        if (!m->merges)
            return NLPD_ENOMEM;
        memset(m->merges, 0xff, (m->merges_mask + 1) * sizeof *m->merges);
    }
    if ((size_t)rank * 2 >= m->merges_mask) {
        size_t cap = (m->merges_mask + 1) * 2;
        struct tmerge_slot *ns = malloc(cap * sizeof *ns);
        if (!ns)
            return NLPD_ENOMEM;
        memset(ns, 0xff, cap * sizeof *ns);
        for (size_t i = 0; i <= m->merges_mask; i++) {
            if (m->merges[i].key == UINT64_MAX)
                continue;
            size_t h = (size_t)mix64(m->merges[i].key) & (cap - 1);
            while (ns[h].key != UINT64_MAX)
                h = (h + 1) & (cap - 1);
            ns[h] = m->merges[i];
        }
        free(m->merges);
        m->merges = ns;
        m->merges_mask = cap - 1;
    }
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    size_t h = (size_t)mix64(key) & m->merges_mask;
    while (m->merges[h].key != UINT64_MAX) {
        if (m->merges[h].key == key) { /* HashMap semantics: the later merge line wins */
            m->merges[h].rank = rank;
            m->merges[h].id = id;
            return 0;
        }
        h = (h + 1) & m->merges_mask;
    }
    m->merges[h].key = key;
    m->merges[h].rank = rank;
    m->merges[h].id = id;
    return 0;
}

static const struct tmerge_slot *merge_get(const struct tmodel *m, int32_t left, int32_t right)
{
    if (!m->merges)
        return NULL;
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    size_t h = (size_t)mix64(key) & m->merges_mask;
    while (m->merges[h].key != UINT64_MAX) {
        if (m->merges[h].key == key)
            return &m->merges[h];
        h = (h + 1) & m->merges_mask;
    }
    return NULL;
}

void nlpd_tmodel_free(struct tmodel *m)
{
    nlpd_tvocab_free(&m->vocab);
    free(m->prefix);
    free(m->suffix);
    free(m->scores);
    free(m->merges);
    memset(m, 0, sizeof *m);
}

void nlpd_tscratch_model_free(struct tscratch_model *sc)
{
    free(sc->t);
    free(sc->score);
    free(sc->from);
    free(sc->id);
    free(sc->sym_id);
    free(sc->sym_s);
    free(sc->sym_e);
    free(sc->str);
    memset(sc, 0, sizeof *sc);
}

/* ------------------------------------------------------------------ helpers */

static int push_tok(struct tscratch_model *sc, int32_t id, size_t bs, size_t be)
{
    if (sc->n == sc->cap) {
        size_t cap = sc->cap ? sc->cap * 2 : 64;
        struct ttok *t = realloc(sc->t, cap * sizeof *t);
        if (!t)
            return NLPD_ENOMEM;
        sc->t = t;
        sc->cap = cap;
    }
    sc->t[sc->n].id = id;
    sc->t[sc->n].bs = (uint32_t)bs;
    sc->t[sc->n].be = (uint32_t)be;
    sc->n++;
    return 0;
}

static int str_reserve(struct tscratch_model *sc, size_t need)
{
    if (need <= sc->str_cap)
        return 0;
    size_t cap = sc->str_cap ? sc->str_cap : 256;
    while (cap < need)
        cap *= 2;
    char *p = realloc(sc->str, cap);
    if (!p)
        return NLPD_ENOMEM;
    sc->str = p;
    sc->str_cap = cap;
    return 0;
}

static size_t utf8_len(uint8_t b)
{
    return b < 0x80 ? 1 : b < 0xe0 ? 2 : b < 0xf0 ? 3 : 4;
}

/* Byte length of the char starting at s[i], clipped to the buffer (the pipeline only produces valid UTF-8). */
static size_t char_len_at(const char *s, size_t len, size_t i)
{
    size_t k = utf8_len((uint8_t)s[i]);
    return i + k > len ? len - i : k;
}

/* ------------------------------------------------------------------ WordPiece */

static int wordpiece(const struct tmodel *m, const char *s, size_t len, struct tscratch_model *sc,
                     struct nlpd_error *err)
{
    size_t nchars = 0;
    for (size_t i = 0; i < len; i += char_len_at(s, len, i))
        nchars++;
    size_t first = sc->n;
    if (nchars <= m->max_input_chars) {
        if (str_reserve(sc, m->prefix_len + len + 1) < 0)
            return NLPD_ENOMEM;
        memcpy(sc->str, m->prefix, m->prefix_len);
        size_t start = 0;
        while (start < len) {
            size_t end = len;
            int32_t found = -1;
            while (start < end) {
                if (start > 0) {
                    memcpy(sc->str + m->prefix_len, s + start, end - start);
                    found = nlpd_tvocab_get(&m->vocab, sc->str, m->prefix_len + end - start);
                } else {
                    found = nlpd_tvocab_get(&m->vocab, s, end);
                }
                if (found >= 0)
                    break;
                /* step back one char */
                size_t e = end - 1;
                while (e > start && ((uint8_t)s[e] & 0xc0) == 0x80)
                    e--;
                end = e;
            }
            if (found < 0)
                break;
            if (push_tok(sc, found, start, end) < 0)
                return NLPD_ENOMEM;
            start = end;
        }
        if (start >= len)
            return 0;
    }
    sc->n = first;
    if (m->unk_id < 0)
        return nlpd_error_set(err, NLPD_EINVAL, 0, "tokenizer: WordPiece: unk_token is not in the vocabulary");
    return push_tok(sc, m->unk_id, 0, len);
}

/* ------------------------------------------------------------------ Unigram */

static int lattice_reserve(struct tscratch_model *sc, size_t n)
{
    if (n <= sc->lat_cap)
        return 0;
    size_t cap = sc->lat_cap ? sc->lat_cap : 256;
    while (cap < n)
        cap *= 2;
    double *score = realloc(sc->score, cap * sizeof *score);
    if (!score)
        return NLPD_ENOMEM;
    sc->score = score;
    int32_t *from = realloc(sc->from, cap * sizeof *from);
    if (!from)
        return NLPD_ENOMEM;
    sc->from = from;
    int32_t *id = realloc(sc->id, cap * sizeof *id);
    if (!id)
        return NLPD_ENOMEM;
    sc->id = id;
    sc->lat_cap = cap;
    return 0;
}

static int unigram_emit(const struct tmodel *m, const char *s, size_t bs, size_t be, struct tscratch_model *sc,
                        struct nlpd_error *err)
{
    int32_t id = nlpd_tvocab_get(&m->vocab, s + bs, be - bs);
    if (id < 0 && m->byte_fallback) {
        char name[8];
        int ok = 1;
        for (size_t i = bs; i < be && ok; i++) {
            static const char hex[] = "0123456789ABCDEF";
            uint8_t b = (uint8_t)s[i];
            memcpy(name, "<0x", 3);
            name[3] = hex[b >> 4];
            name[4] = hex[b & 15];
            name[5] = '>';
            ok = nlpd_tvocab_get(&m->vocab, name, 6) >= 0;
        }
        if (ok) {
            for (size_t i = bs; i < be; i++) {
                static const char hex[] = "0123456789ABCDEF";
                uint8_t b = (uint8_t)s[i];
                name[3] = hex[b >> 4];
                name[4] = hex[b & 15];
                if (push_tok(sc, nlpd_tvocab_get(&m->vocab, name, 6), bs, be) < 0)
                    return NLPD_ENOMEM;
            }
            return 0;
        }
    }
    if (id < 0) {
        if (m->unk_id < 0)
            return nlpd_error_set(err, NLPD_EINVAL, 0, "tokenizer: Unigram: unknown piece and no unk_id");
        id = m->unk_id;
    }
    return push_tok(sc, id, bs, be);
}

/* Viterbi over byte positions, as `encode_optimized`. Ties: a node keeps the FIRST candidate reaching it with the
 * best score (strict >), candidates arriving in order of start position, then shorter pieces first. */
static int unigram(const struct tmodel *m, const char *s, size_t len, struct tscratch_model *sc, struct nlpd_error *err)
{
    if (len == 0)
        return 0;
    if (lattice_reserve(sc, len + 1) < 0)
        return NLPD_ENOMEM;
    double *best = sc->score;
    int32_t *from = sc->from, *ids = sc->id;
    for (size_t i = 0; i <= len; i++)
        from[i] = -1;
    best[0] = 0;
    double unk_score = m->min_score - UNK_PENALTY;
    for (size_t st = 0; st < len;) {
        double here = best[st];
        size_t mblen = char_len_at(s, len, st);
        int single = 0;
        size_t maxl = m->max_piece_len < len - st ? m->max_piece_len : len - st;
        for (size_t l = mblen; l <= maxl; l += char_len_at(s, len, st + l)) {
            int32_t id = nlpd_tvocab_get(&m->vocab, s + st, l);
            if (id >= 0) {
                double cand = m->scores[id] + here;
                size_t kp = st + l;
                if (from[kp] < 0 || cand > best[kp]) {
                    best[kp] = cand;
                    from[kp] = (int32_t)st;
                    ids[kp] = id;
                }
                if (l == mblen)
                    single = 1;
            }
            if (st + l >= len)
                break;
        }
        if (!single) {
            size_t kp = st + mblen;
            double cand = unk_score + here;
            if (from[kp] < 0 || cand > best[kp]) {
                if (m->unk_id < 0)
                    return nlpd_error_set(err, NLPD_EINVAL, 0, "tokenizer: Unigram: unknown piece and no unk_id");
                best[kp] = cand;
                from[kp] = (int32_t)st;
                ids[kp] = m->unk_id;
            }
        }
        st += mblen;
    }
    /* Backtrack into sym_s/sym_e (reversed), fusing consecutive unk nodes. */
    if (sc->sym_cap < len + 1) {
        size_t cap = len + 1;
        uint32_t *a = realloc(sc->sym_s, cap * sizeof *a);
        if (!a)
            return NLPD_ENOMEM;
        sc->sym_s = a;
        uint32_t *b = realloc(sc->sym_e, cap * sizeof *b);
        if (!b)
            return NLPD_ENOMEM;
        sc->sym_e = b;
        int32_t *c = realloc(sc->sym_id, cap * sizeof *c);
        if (!c)
            return NLPD_ENOMEM;
        sc->sym_id = c;
        sc->sym_cap = cap;
    }
    size_t k = 0;
    size_t end = len;
    int prev_unk = 0;
    while (end > 0) {
        size_t st = (size_t)from[end];
        int is_unk = m->fuse_unk && m->unk_id >= 0 && ids[end] == m->unk_id;
        if (is_unk && prev_unk) {
            sc->sym_s[k - 1] = (uint32_t)st;
        } else {
            sc->sym_s[k] = (uint32_t)st;
            sc->sym_e[k] = (uint32_t)end;
            k++;
        }
        prev_unk = is_unk;
        end = st;
    }
    for (size_t i = k; i-- > 0;) {
        int rc = unigram_emit(m, s, sc->sym_s[i], sc->sym_e[i], sc, err);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* ------------------------------------------------------------------ BPE */

static int sym_reserve(struct tscratch_model *sc, size_t n)
{
    if (n <= sc->sym_cap)
        return 0;
    size_t cap = sc->sym_cap ? sc->sym_cap : 64;
    while (cap < n)
        cap *= 2;
    int32_t *a = realloc(sc->sym_id, cap * sizeof *a);
    if (!a)
        return NLPD_ENOMEM;
    sc->sym_id = a;
    uint32_t *b = realloc(sc->sym_s, cap * sizeof *b);
    if (!b)
        return NLPD_ENOMEM;
    sc->sym_s = b;
    uint32_t *c = realloc(sc->sym_e, cap * sizeof *c);
    if (!c)
        return NLPD_ENOMEM;
    sc->sym_e = c;
    sc->sym_cap = cap;
    return 0;
}

static int bpe(const struct tmodel *m, const char *s, size_t len, struct tscratch_model *sc, struct nlpd_error *err)
{
    (void)err;
    if (len == 0)
        return 0;
    if (m->ignore_merges) {
        int32_t id = nlpd_tvocab_get(&m->vocab, s, len);
        if (id >= 0)
            return push_tok(sc, id, 0, len);
    }
    if (sym_reserve(sc, len + 1) < 0 || str_reserve(sc, m->prefix_len + m->suffix_len + 8) < 0)
        return NLPD_ENOMEM;
    size_t n = 0;
    int32_t unk = -1;
    size_t unk_s = 0, unk_e = 0;
    for (size_t i = 0; i < len;) {
        size_t cl = char_len_at(s, len, i);
        size_t e = i + cl, k = 0;
        if (i > 0 && m->prefix_len) {
            memcpy(sc->str, m->prefix, m->prefix_len);
            k = m->prefix_len;
        }
        memcpy(sc->str + k, s + i, cl);
        k += cl;
        if (e == len && m->suffix_len) {
            memcpy(sc->str + k, m->suffix, m->suffix_len);
            k += m->suffix_len;
        }
        int32_t id = nlpd_tvocab_get(&m->vocab, sc->str, k);
        if (id >= 0) {
            if (unk >= 0) {
                sc->sym_id[n] = unk;
                sc->sym_s[n] = (uint32_t)unk_s;
                sc->sym_e[n++] = (uint32_t)unk_e;
                unk = -1;
            }
            sc->sym_id[n] = id;
            sc->sym_s[n] = (uint32_t)i;
            sc->sym_e[n++] = (uint32_t)e;
        } else {
            int done = 0;
            if (m->byte_fallback) {
                char name[8];
                static const char hex[] = "0123456789ABCDEF";
                int ok = 1;
                for (size_t b = i; b < e && ok; b++) {
                    snprintf(name, sizeof name, "<0x%c%c>", hex[(uint8_t)s[b] >> 4], hex[(uint8_t)s[b] & 15]);
                    ok = nlpd_tvocab_get(&m->vocab, name, 6) >= 0;
                }
                if (ok) {
                    if (unk >= 0) {
                        sc->sym_id[n] = unk;
                        sc->sym_s[n] = (uint32_t)unk_s;
                        sc->sym_e[n++] = (uint32_t)unk_e;
                        unk = -1;
                    }
                    for (size_t b = i; b < e; b++) {
                        snprintf(name, sizeof name, "<0x%c%c>", hex[(uint8_t)s[b] >> 4], hex[(uint8_t)s[b] & 15]);
                        sc->sym_id[n] = nlpd_tvocab_get(&m->vocab, name, 6);
                        sc->sym_s[n] = (uint32_t)b;
                        sc->sym_e[n++] = (uint32_t)b + 1;
                    }
                    done = 1;
                }
            }
            if (!done && m->unk_id >= 0) {
                if (unk >= 0 && m->fuse_unk) {
                    unk_e = e;
                } else {
                    if (unk >= 0) {
                        sc->sym_id[n] = unk;
                        sc->sym_s[n] = (uint32_t)unk_s;
                        sc->sym_e[n++] = (uint32_t)unk_e;
                    }
                    unk = m->unk_id;
                    unk_s = i;
                    unk_e = e;
                }
            }
        }
        i = e;
    }
    if (unk >= 0) {
        sc->sym_id[n] = unk;
        sc->sym_s[n] = (uint32_t)unk_s;
        sc->sym_e[n++] = (uint32_t)unk_e;
    }
    /* Merge the lowest-rank adjacent pair, leftmost first: the order of the Rust priority queue. */
    for (;;) {
        int32_t best_rank = INT32_MAX, best_id = -1;
        size_t best_i = 0;
        for (size_t i = 0; i + 1 < n; i++) {
            const struct tmerge_slot *ms = merge_get(m, sc->sym_id[i], sc->sym_id[i + 1]);
            if (ms && ms->rank < best_rank) {
                best_rank = ms->rank;
                best_id = ms->id;
                best_i = i;
            }
        }
        if (best_id < 0)
            break;
        sc->sym_id[best_i] = best_id;
        sc->sym_e[best_i] = sc->sym_e[best_i + 1];
        memmove(sc->sym_id + best_i + 1, sc->sym_id + best_i + 2, (n - best_i - 2) * sizeof *sc->sym_id);
        memmove(sc->sym_s + best_i + 1, sc->sym_s + best_i + 2, (n - best_i - 2) * sizeof *sc->sym_s);
        memmove(sc->sym_e + best_i + 1, sc->sym_e + best_i + 2, (n - best_i - 2) * sizeof *sc->sym_e);
        n--;
    }
    for (size_t i = 0; i < n; i++)
        if (push_tok(sc, sc->sym_id[i], sc->sym_s[i], sc->sym_e[i]) < 0)
            return NLPD_ENOMEM;
    return 0;
}

int nlpd_tmodel_tokenize(const struct tmodel *m, const char *s, size_t len, struct tscratch_model *sc,
                         struct nlpd_error *err)
{
    switch (m->type) {
    case TM_WORDPIECE: return len ? wordpiece(m, s, len, sc, err) : 0;
    case TM_UNIGRAM: return unigram(m, s, len, sc, err);
    case TM_BPE: return bpe(m, s, len, sc, err);
    }
    return NLPD_EINVAL;
}
