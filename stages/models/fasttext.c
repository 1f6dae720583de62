/* fastText runtime: parses and validates .bin/.ftz supervised models (dense or product-quantised
 * matrices, pruned dictionaries) and predicts exactly as `fasttext predict-prob` 0.9.2 does,
 * including its float/double rounding, heap tie order and hierarchical-softmax pruning. */
#include "fasttext.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nlpd_util.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "fastText model files are little-endian; this loader reads them in place"
#endif

#define FT_MAGIC         793712314
#define FT_VERSION_MAX   12
#define FT_DIM_MAX       10000
#define FT_KSUB          256
#define FT_SIGMOID_TABLE 512
#define FT_MAX_SIGMOID   8
#define FT_MODEL_SUP     3
#define FT_LABEL_PREFIX  "__label__"
#define FT_EOS           "</s>"
#define FT_MAX_FILE      ((size_t)8 << 30) /* read whole; a bound against a device or a runaway file */

/* Product quantiser: nsubq sub-vectors of dsub floats (the last one lastdsub), 256 centroids each. */
struct pq {
    int32_t dim, nsubq, dsub, lastdsub;
    float *centroids; /* 256 * dim */
};

/* A matrix is either dense (rows x cols floats) or quantised (codes + pq, optional norm pq). */
struct matrix {
    int64_t rows, cols;
    int quant, qnorm;
    float *data;         /* dense */
    uint8_t *codes;      /* rows * pq.nsubq */
    uint8_t *norm_codes; /* rows, when qnorm */
    struct pq pq, npq;
};

struct word_slot {
    uint32_t hash;
    int32_t id; /* -1: empty */
};

struct prune_slot {
    int32_t key, val; /* key -1: empty (keys are bucket ids, never negative when looked up) */
};

struct nlpd_ft_model {
    struct nlpd_ft_info info;
    int64_t pruneidx_size;
    /* dictionary */
    int32_t size;
    char *pool;         /* all entry strings, NUL-terminated */
    uint32_t *word_off; /* size */
    uint32_t *word_len; /* size */
    int64_t *counts;    /* size */
    struct word_slot *wtab;
    uint32_t wmask;
    int32_t *sub;     /* subword ids of in-vocab words, word id first */
    int64_t *sub_off; /* nwords + 1 */
    struct prune_slot *ptab;
    uint32_t pmask;
    /* matrices */
    struct matrix in, out;
    /* hierarchical softmax: internal node i (0..nlabels-2) is tree node nlabels + i */
    int32_t *hs_left, *hs_right;
    float sigmoid[FT_SIGMOID_TABLE + 1];
    uint64_t bucket_magic; /* UINT64_MAX / bucket + 1, for bucket_mod */
};

struct ft_heap_item {
    float score;
    int32_t id;
};

struct hs_frame {
    int32_t node;
    float score;
};

struct nlpd_ft_scratch {
    int32_t dim, nlabels;
    float *hidden, *output;
    struct ft_heap_item *heap; /* nlabels + 1 */
    struct hs_frame *stack;    /* 2 * nlabels */
    int32_t *ids, *hashes;
    size_t ids_cap, hashes_cap, ids_len, hashes_len;
    unsigned char *wbuf; /* "<token>" */
    size_t wbuf_cap;
    int oom;
};

/* ---------------------------------------------------------------- hashing and n-grams */

/* FNV-1a over bytes sign-extended to 32 bits, as fastText has always hashed (signed char). */
static inline uint32_t fnv_step(uint32_t h, unsigned char c)
{
    h ^= (uint32_t)(int32_t)(int8_t)c;
    return h * 16777619u;
}

static uint32_t fnv(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = fnv_step(h, (unsigned char)s[i]);
    return h;
}

static inline int is_cont(unsigned char c)
{
    return (c & 0xC0) == 0x80;
}

/* Byte i of "<" + word + ">". */
static inline unsigned char bw_at(const char *w, size_t wlen, size_t i)
{
    if (i == 0)
        return '<';
    if (i == wlen + 1)
        return '>';
    return (unsigned char)w[i - 1];
}

/* Maps a char n-gram bucket to an input row, or -1 when pruned away. */
static inline int32_t ngram_row(const struct nlpd_ft_model *m, int32_t id)
{
    if (m->pruneidx_size == 0 || id < 0)
        return -1;
    if (m->pruneidx_size > 0) {
        uint32_t i = ((uint32_t)id * 2654435761u) & m->pmask;
        for (;;) {
            if (m->ptab[i].key == id) {
                id = m->ptab[i].val;
                break;
            }
            if (m->ptab[i].key == -1)
                return -1;
            i = (i + 1) & m->pmask;
        }
    }
    return m->info.nwords + id;
}

/* h % bucket without a division (Lemire's fastmod, exact for 32-bit operands): it runs once per n-gram. */
static inline uint32_t bucket_mod(const struct nlpd_ft_model *m, uint32_t h)
{
    uint64_t low = m->bucket_magic * h;
    return (uint32_t)(((unsigned __int128)low * (uint32_t)m->info.bucket) >> 64);
}

/* Char n-grams of bw = "<word>" (minn..maxn code points, no lone BOW/EOW), appended to dst (cap entries
 * available); returns how many were produced, even when more than cap (nothing written past cap). */
static size_t char_ngrams(const struct nlpd_ft_model *m, const unsigned char *bw, size_t total, int32_t *dst,
                          size_t cap)
{
    size_t nout = 0;
    int32_t minn = m->info.minn, maxn = m->info.maxn;
    for (size_t i = 0; i < total; i++) {
        if (is_cont(bw[i]))
            continue;
        uint32_t h = 2166136261u;
        size_t j = i;
        for (int32_t n = 1; j < total && n <= maxn; n++) {
            h = fnv_step(h, bw[j++]);
            while (j < total && is_cont(bw[j]))
                h = fnv_step(h, bw[j++]);
            if (n >= minn && !(n == 1 && (i == 0 || j == total))) {
                int32_t row = ngram_row(m, (int32_t)bucket_mod(m, h));
                if (row >= 0) {
                    if (nout < cap)
                        dst[nout] = row;
                    nout++;
                }
            }
        }
    }
    return nout;
}

/* Writes "<" word ">" into buf (wlen + 2 bytes). */
static void bracket(unsigned char *buf, const char *w, size_t wlen)
{
    buf[0] = '<';
    memcpy(buf + 1, w, wlen);
    buf[wlen + 1] = '>';
}

/* ---------------------------------------------------------------- loading */

struct cur {
    const uint8_t *p;
    size_t left;
    const char *name;
    struct nlpd_error *err;
    char ctx[96];
};

static int truncated(struct cur *c, size_t need)
{
    return nlpd_error_set(c->err, NLPD_EFORMAT, 0, "%s: truncated in %s (need %zu bytes, %zu left)", c->name, c->ctx,
                          need, c->left);
}

static int take(struct cur *c, size_t n, const uint8_t **out)
{
    if (n > c->left)
        return truncated(c, n);
    *out = c->p;
    c->p += n;
    c->left -= n;
    return 0;
}

static int rd_i32(struct cur *c, int32_t *v)
{
    const uint8_t *p = NULL;
    int rc = take(c, 4, &p);
    if (!rc)
        memcpy(v, p, 4);
    return rc;
}

static int rd_i64(struct cur *c, int64_t *v)
{
    const uint8_t *p = NULL;
    int rc = take(c, 8, &p);
    if (!rc)
        memcpy(v, p, 8);
    return rc;
}

static int rd_bool(struct cur *c, int *v)
{
    const uint8_t *p = NULL;
    int rc = take(c, 1, &p);
    if (rc)
        return rc;
    if (*p > 1)
        return nlpd_error_set(c->err, NLPD_EFORMAT, 0, "%s: %s is %u, not a boolean", c->name, c->ctx, *p);
    *v = *p;
    return 0;
}

static int bad(struct cur *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad(struct cur *c, const char *fmt, ...)
{
    char msg[320];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return nlpd_error_set(c->err, NLPD_EFORMAT, 0, "%s: %s", c->name, msg);
}

static int oom(struct cur *c, const char *what)
{
    return nlpd_error_set(c->err, NLPD_ENOMEM, 0, "%s: out of memory for %s", c->name, what);
}

/* Copies count floats after checking they are in the file. */
static int rd_floats(struct cur *c, int64_t count, float **out)
{
    if (count < 0 || (uint64_t)count > c->left / 4)
        return truncated(c, count < 0 || (uint64_t)count > SIZE_MAX / 4 ? SIZE_MAX : (size_t)count * 4);
    size_t bytes = (size_t)count * 4;
    float *f = malloc(bytes ? bytes : 4);
    if (!f)
        return oom(c, c->ctx);
    memcpy(f, c->p, bytes);
    c->p += bytes;
    c->left -= bytes;
    *out = f;
    return 0;
}

static int rd_bytes(struct cur *c, int64_t count, uint8_t **out)
{
    if (count < 0 || (uint64_t)count > c->left)
        return truncated(c, count < 0 ? SIZE_MAX : (size_t)count);
    uint8_t *b = malloc(count ? (size_t)count : 1);
    if (!b)
        return oom(c, c->ctx);
    memcpy(b, c->p, (size_t)count);
    c->p += count;
    c->left -= (size_t)count;
    *out = b;
    return 0;
}

static int load_pq(struct cur *c, struct pq *q, int32_t want_dim, const char *what)
{
    int rc;
    snprintf(c->ctx, sizeof c->ctx, "%s header", what);
    if ((rc = rd_i32(c, &q->dim)) || (rc = rd_i32(c, &q->nsubq)) || (rc = rd_i32(c, &q->dsub)) ||
        (rc = rd_i32(c, &q->lastdsub)))
        return rc;
    if (q->dim != want_dim)
        return bad(c, "%s dim is %d, expected %d", what, q->dim, want_dim);
    if (q->dsub < 1 || q->dsub > q->dim)
        return bad(c, "%s dsub %d out of range 1..%d", what, q->dsub, q->dim);
    int32_t nsubq = (q->dim + q->dsub - 1) / q->dsub;
    int32_t lastdsub = q->dim - (nsubq - 1) * q->dsub;
    if (q->nsubq != nsubq || q->lastdsub != lastdsub)
        return bad(c, "%s geometry inconsistent: dim %d dsub %d gives nsubq %d lastdsub %d, file has %d %d", what,
                   q->dim, q->dsub, nsubq, lastdsub, q->nsubq, q->lastdsub);
    snprintf(c->ctx, sizeof c->ctx, "%s centroids", what);
    return rd_floats(c, (int64_t)q->dim * FT_KSUB, &q->centroids);
}

static int load_matrix(struct cur *c, struct matrix *mx, int quant, const char *what, int32_t dim)
{
    int rc;
    mx->quant = quant;
    if (quant) {
        snprintf(c->ctx, sizeof c->ctx, "%s header", what);
        if ((rc = rd_bool(c, &mx->qnorm)))
            return rc;
    }
    snprintf(c->ctx, sizeof c->ctx, "%s header", what);
    if ((rc = rd_i64(c, &mx->rows)) || (rc = rd_i64(c, &mx->cols)))
        return rc;
    if (mx->rows < 0 || mx->rows > INT32_MAX)
        return bad(c, "%s has %lld rows", what, (long long)mx->rows);
    if (mx->cols != dim)
        return bad(c, "%s has %lld columns, dim is %d", what, (long long)mx->cols, dim);
    if (!quant) {
        snprintf(c->ctx, sizeof c->ctx, "%s data", what);
        return rd_floats(c, mx->rows * mx->cols, &mx->data);
    }
    int32_t codesize;
    if ((rc = rd_i32(c, &codesize)))
        return rc;
    if (codesize < 0)
        return bad(c, "%s codesize %d is negative", what, codesize);
    snprintf(c->ctx, sizeof c->ctx, "%s codes", what);
    if ((rc = rd_bytes(c, codesize, &mx->codes)))
        return rc;
    char pqname[64];
    snprintf(pqname, sizeof pqname, "%s quantiser", what);
    if ((rc = load_pq(c, &mx->pq, dim, pqname)))
        return rc;
    if ((int64_t)codesize != mx->rows * mx->pq.nsubq)
        return bad(c, "%s codesize %d does not match %lld rows x %d sub-quantisers", what, codesize,
                   (long long)mx->rows, mx->pq.nsubq);
    if (mx->qnorm) {
        snprintf(c->ctx, sizeof c->ctx, "%s norm codes", what);
        if ((rc = rd_bytes(c, mx->rows, &mx->norm_codes)))
            return rc;
        snprintf(pqname, sizeof pqname, "%s norm quantiser", what);
        if ((rc = load_pq(c, &mx->npq, 1, pqname)))
            return rc;
    }
    return 0;
}

static uint32_t pow2_at_least(uint64_t n)
{
    uint64_t p = 16;
    while (p < n)
        p <<= 1;
    return (uint32_t)p;
}

static int build_word_table(struct cur *c, struct nlpd_ft_model *m)
{
    uint32_t cap = pow2_at_least((uint64_t)m->size * 2);
    m->wtab = malloc(sizeof *m->wtab * cap);
    if (!m->wtab)
        return oom(c, "word table");
    m->wmask = cap - 1;
    for (uint32_t i = 0; i < cap; i++)
        m->wtab[i].id = -1;
    for (int32_t id = 0; id < m->size; id++) {
        const char *w = m->pool + m->word_off[id];
        uint32_t len = m->word_len[id], h = fnv(w, len);
        uint32_t i = h & m->wmask;
        /* a duplicated entry maps to its last occurrence, as in fastText */
        while (m->wtab[i].id != -1) {
            int32_t o = m->wtab[i].id;
            if (m->wtab[i].hash == h && m->word_len[o] == len && !memcmp(m->pool + m->word_off[o], w, len))
                break;
            i = (i + 1) & m->wmask;
        }
        m->wtab[i].hash = h;
        m->wtab[i].id = id;
    }
    return 0;
}

static int32_t find_word(const struct nlpd_ft_model *m, const char *w, size_t len, uint32_t h)
{
    uint32_t i = h & m->wmask;
    for (;;) {
        int32_t id = m->wtab[i].id;
        if (id < 0)
            return -1;
        if (m->wtab[i].hash == h && m->word_len[id] == len && !memcmp(m->pool + m->word_off[id], w, len))
            return id;
        i = (i + 1) & m->wmask;
    }
}

/* Number of char n-grams of "<word>" before pruning: lets the table be sized and bounded first. */
static uint64_t count_ngrams(const struct nlpd_ft_model *m, const char *w, size_t wlen)
{
    size_t total = wlen + 2;
    uint64_t cp = 0, n = 0;
    for (size_t i = 0; i < total; i++)
        cp += !is_cont(bw_at(w, wlen, i));
    /* start at code point s of cp: lengths 1..min(maxn, cp - s); a 1-gram at either end is skipped */
    int64_t minn = m->info.minn < 1 ? 1 : m->info.minn, maxn = m->info.maxn;
    for (uint64_t s = 0; s < cp; s++) {
        int64_t hi = (int64_t)(cp - s) < maxn ? (int64_t)(cp - s) : maxn;
        if (hi >= minn)
            n += (uint64_t)(hi - minn + 1);
        if (minn == 1 && hi >= 1 && (s == 0 || s == cp - 1))
            n--;
    }
    return n;
}

static int build_subwords(struct cur *c, struct nlpd_ft_model *m, size_t file_size)
{
    int32_t nwords = m->info.nwords;
    int with_ngrams = m->info.maxn > 0;
    m->sub_off = malloc(sizeof *m->sub_off * ((size_t)nwords + 1));
    if (!m->sub_off)
        return oom(c, "subword index");
    uint64_t total = 0, limit = (uint64_t)file_size * 32 + (1u << 20);
    for (int32_t id = 0; id < nwords; id++) {
        const char *w = m->pool + m->word_off[id];
        size_t len = m->word_len[id];
        m->sub_off[id] = (int64_t)total;
        total += 1;
        if (with_ngrams && !(len == 4 && !memcmp(w, FT_EOS, 4)))
            total += count_ngrams(m, w, len);
        if (total > limit)
            return nlpd_error_set(c->err, NLPD_ERANGE, 0, "%s: words have too many char n-grams (over %llu)", c->name,
                                  (unsigned long long)limit);
    }
    m->sub_off[nwords] = (int64_t)total;
    m->sub = malloc(sizeof *m->sub * (total ? total : 1));
    size_t maxlen = 0;
    for (int32_t id = 0; id < nwords; id++)
        maxlen = m->word_len[id] > maxlen ? m->word_len[id] : maxlen;
    unsigned char *bw = malloc(maxlen + 2);
    if (!m->sub || !bw) {
        free(bw);
        return oom(c, "subword table");
    }
    for (int32_t id = 0; id < nwords; id++) {
        const char *w = m->pool + m->word_off[id];
        size_t len = m->word_len[id];
        int64_t o = m->sub_off[id];
        size_t room = (size_t)(m->sub_off[id + 1] - o - 1);
        m->sub[o] = id;
        size_t got = 0;
        if (with_ngrams && !(len == 4 && !memcmp(w, FT_EOS, 4))) {
            bracket(bw, w, len);
            got = char_ngrams(m, bw, len + 2, m->sub + o + 1, room);
        }
        if (got > room) {
            free(bw);
            return bad(c, "internal n-gram count mismatch for word %d", id);
        }
        /* pruned-away n-grams were counted but not produced: the next list starts right after */
        m->sub_off[id + 1] = o + 1 + (int64_t)got;
    }
    free(bw);
    return 0;
}

static int build_hs_tree(struct cur *c, struct nlpd_ft_model *m)
{
    int32_t osz = m->info.nlabels;
    size_t nodes = 2 * (size_t)osz - 1;
    int64_t *count = malloc(sizeof *count * nodes);
    int32_t *left = malloc(sizeof *left * (size_t)osz), *right = malloc(sizeof *right * (size_t)osz);
    if (!count || !left || !right) {
        free(count);
        free(left);
        free(right);
        return oom(c, "hierarchical softmax tree");
    }
    for (size_t i = 0; i < nodes; i++)
        count[i] = (int64_t)1e15;
    for (int32_t i = 0; i < osz; i++)
        count[i] = m->counts[m->info.nwords + i];
    /* Huffman tree over labels assumed sorted by decreasing count (two queues: leaves, new nodes) */
    int32_t leaf = osz - 1, node = osz;
    for (int32_t i = osz; i < 2 * osz - 1; i++) {
        int32_t mini[2];
        for (int j = 0; j < 2; j++) {
            if (leaf >= 0 && count[leaf] < count[node])
                mini[j] = leaf--;
            else
                mini[j] = node++;
            if (mini[j] >= i) {
                free(count);
                free(left);
                free(right);
                return bad(c, "label counts (>= 1e15) break the hierarchical softmax tree");
            }
        }
        left[i - osz] = mini[0];
        right[i - osz] = mini[1];
        count[i] = (int64_t)((uint64_t)count[mini[0]] + (uint64_t)count[mini[1]]);
    }
    free(count);
    m->hs_left = left;
    m->hs_right = right;
    return 0;
}

static int parse(struct cur *c, struct nlpd_ft_model *m, size_t file_size)
{
    int rc;
    int32_t magic, version, a[12];
    struct nlpd_ft_info *in = &m->info;

    snprintf(c->ctx, sizeof c->ctx, "header");
    if ((rc = rd_i32(c, &magic)) || (rc = rd_i32(c, &version)))
        return rc;
    if (magic != FT_MAGIC)
        return bad(c, "not a fastText model (magic %d, expected %d)", magic, FT_MAGIC);
    if (version < 1 || version > FT_VERSION_MAX)
        return bad(c, "unsupported fastText format version %d (1..%d)", version, FT_VERSION_MAX);
    snprintf(c->ctx, sizeof c->ctx, "arguments");
    for (int i = 0; i < 12; i++)
        if ((rc = rd_i32(c, &a[i])))
            return rc;
    const uint8_t *skip = NULL;
    if ((rc = take(c, 8, &skip))) /* double t: sampling threshold, unused for prediction */
        return rc;
    /* dim ws epoch minCount neg wordNgrams loss model bucket minn maxn lrUpdateRate */
    in->version = version;
    in->dim = a[0];
    in->word_ngrams = a[5];
    in->loss = a[6];
    in->model = a[7];
    in->bucket = a[8];
    in->minn = a[9];
    in->maxn = a[10];
    if (version == 11)
        in->maxn = 0; /* old supervised models had no char n-grams */
    if (in->model != FT_MODEL_SUP)
        return bad(c, "model type %d is not supervised (3); only classifiers can predict", in->model);
    if (in->dim < 1 || in->dim > FT_DIM_MAX)
        return bad(c, "dim %d out of range 1..%d", in->dim, FT_DIM_MAX);
    if (in->loss < NLPD_FT_LOSS_HS || in->loss > NLPD_FT_LOSS_OVA)
        return bad(c, "unknown loss %d", in->loss);
    if (in->bucket < 0)
        return bad(c, "bucket %d is negative", in->bucket);
    if (in->word_ngrams < 1 || in->word_ngrams > 1024)
        return bad(c, "wordNgrams %d out of range 1..1024", in->word_ngrams);
    if (in->maxn > 0 && (in->maxn > 256 || in->minn > in->maxn))
        return bad(c, "char n-gram range minn %d maxn %d invalid (need minn <= maxn <= 256)", in->minn, in->maxn);
    if ((in->maxn > 0 || in->word_ngrams > 1) && in->bucket == 0)
        return bad(c, "n-grams enabled but bucket is 0");

    /* dictionary */
    int64_t ntokens;
    snprintf(c->ctx, sizeof c->ctx, "dictionary header");
    if ((rc = rd_i32(c, &m->size)) || (rc = rd_i32(c, &in->nwords)) || (rc = rd_i32(c, &in->nlabels)) ||
        (rc = rd_i64(c, &ntokens)) || (rc = rd_i64(c, &m->pruneidx_size)))
        return rc;
    if (in->nwords < 0 || in->nlabels < 1 || (int64_t)in->nwords + in->nlabels != m->size)
        return bad(c, "dictionary counts inconsistent: size %d, %d words, %d labels (need >= 1 label)", m->size,
                   in->nwords, in->nlabels);
    if (m->pruneidx_size < -1 || m->pruneidx_size > (1 << 30))
        return bad(c, "pruneidx size %lld is invalid", (long long)m->pruneidx_size);
    if (m->size > (1 << 30))
        return bad(c, "dictionary size %d is too large", m->size);
    /* each entry is at least 10 bytes: NUL, int64 count, int8 type */
    if ((uint64_t)m->size > c->left / 10)
        return bad(c, "truncated in dictionary (%d entries need at least %llu bytes, %zu left)", m->size,
                   (unsigned long long)m->size * 10, c->left);
    m->word_off = malloc(sizeof *m->word_off * (size_t)m->size);
    m->word_len = malloc(sizeof *m->word_len * (size_t)m->size);
    m->counts = malloc(sizeof *m->counts * (size_t)m->size);
    m->pool = malloc(c->left ? c->left : 1);
    if (!m->word_off || !m->word_len || !m->counts || !m->pool)
        return oom(c, "dictionary");
    size_t pool_len = 0;
    for (int32_t i = 0; i < m->size; i++) {
        snprintf(c->ctx, sizeof c->ctx, "dictionary entry %d", i);
        const uint8_t *nul = memchr(c->p, 0, c->left);
        if (!nul)
            return bad(c, "truncated in dictionary entry %d (string not NUL-terminated, %zu bytes left)", i, c->left);
        size_t len = (size_t)(nul - c->p);
        if (len >= UINT32_MAX - pool_len)
            return bad(c, "dictionary strings exceed 4 GiB at entry %d", i);
        memcpy(m->pool + pool_len, c->p, len + 1);
        m->word_off[i] = (uint32_t)pool_len;
        m->word_len[i] = (uint32_t)len;
        pool_len += len + 1;
        c->p += len + 1;
        c->left -= len + 1;
        const uint8_t *p = NULL;
        if ((rc = take(c, 9, &p)))
            return rc;
        memcpy(&m->counts[i], p, 8);
        int type = (int8_t)p[8];
        int want = i < in->nwords ? 0 : 1;
        if (type != want)
            return bad(c, "dictionary entry %d has type %d, expected %s (words come before labels)", i, type,
                       want ? "label (1)" : "word (0)");
    }
    char *pool = realloc(m->pool, pool_len ? pool_len : 1);
    if (pool)
        m->pool = pool;
    if (m->pruneidx_size > 0) {
        snprintf(c->ctx, sizeof c->ctx, "pruned n-gram index");
        if ((uint64_t)m->pruneidx_size > c->left / 8)
            return truncated(c, (uint64_t)m->pruneidx_size > SIZE_MAX / 8 ? SIZE_MAX : (size_t)m->pruneidx_size * 8);
        uint32_t cap = pow2_at_least((uint64_t)m->pruneidx_size * 2);
        m->ptab = malloc(sizeof *m->ptab * cap);
        if (!m->ptab)
            return oom(c, "pruned n-gram index");
        m->pmask = cap - 1;
        for (uint32_t i = 0; i < cap; i++)
            m->ptab[i].key = -1;
        for (int64_t k = 0; k < m->pruneidx_size; k++) {
            int32_t key, val;
            memcpy(&key, c->p, 4);
            memcpy(&val, c->p + 4, 4);
            c->p += 8;
            c->left -= 8;
            if (val < 0 || val >= m->pruneidx_size)
                return bad(c, "pruned n-gram index pair %lld maps to row %d, outside 0..%lld", (long long)k, val,
                           (long long)m->pruneidx_size - 1);
            if (key < 0)
                continue; /* never looked up */
            uint32_t i = ((uint32_t)key * 2654435761u) & m->pmask;
            while (m->ptab[i].key != -1 && m->ptab[i].key != key)
                i = (i + 1) & m->pmask;
            m->ptab[i].key = key; /* a repeated key keeps the last value, like std::map assignment */
            m->ptab[i].val = val;
        }
    }
    in->pruned = m->pruneidx_size >= 0;

    /* input matrix */
    snprintf(c->ctx, sizeof c->ctx, "input matrix flag");
    if ((rc = rd_bool(c, &in->quant_input)))
        return rc;
    if (!in->quant_input && in->pruned)
        return bad(c, "pruned dictionary with a dense input matrix (outdated model file, see fastText issue #332)");
    if ((rc = load_matrix(c, &m->in, in->quant_input, "input matrix", in->dim)))
        return rc;
    int64_t want_rows = (int64_t)in->nwords + (in->pruned ? m->pruneidx_size : in->bucket);
    if (m->in.rows != want_rows)
        return bad(c, "input matrix has %lld rows, expected %lld (%d words + %lld %s)", (long long)m->in.rows,
                   (long long)want_rows, in->nwords, (long long)(want_rows - in->nwords),
                   in->pruned ? "pruned n-grams" : "buckets");

    /* output matrix */
    int qout;
    snprintf(c->ctx, sizeof c->ctx, "output matrix flag");
    if ((rc = rd_bool(c, &qout)))
        return rc;
    in->quant_output = in->quant_input && qout;
    if ((rc = load_matrix(c, &m->out, in->quant_output, "output matrix", in->dim)))
        return rc;
    if (m->out.rows != in->nlabels)
        return bad(c, "output matrix has %lld rows, expected %d labels", (long long)m->out.rows, in->nlabels);
    if (c->left)
        return bad(c, "%zu bytes of trailing garbage after the output matrix", c->left);

    if (in->bucket > 0)
        m->bucket_magic = UINT64_MAX / (uint32_t)in->bucket + 1;
    if ((rc = build_word_table(c, m)) || (rc = build_subwords(c, m, file_size)))
        return rc;
    if (in->loss == NLPD_FT_LOSS_HS && (rc = build_hs_tree(c, m)))
        return rc;
    for (int i = 0; i <= FT_SIGMOID_TABLE; i++) {
        float x = (float)(i * 2 * FT_MAX_SIGMOID) / FT_SIGMOID_TABLE - FT_MAX_SIGMOID;
        m->sigmoid[i] = (float)(1.0 / (1.0 + expf(-x)));
    }
    return 0;
}

struct nlpd_ft_model *nlpd_ft_load_mem(const void *data, size_t size, const char *name, struct nlpd_error *err)
{
    struct nlpd_ft_model *m = calloc(1, sizeof *m);
    if (!m) {
        nlpd_error_set(err, NLPD_ENOMEM, 0, "%s: out of memory", name ? name : "(memory)");
        return NULL;
    }
    struct cur c = {.p = data, .left = size, .name = name ? name : "(memory)", .err = err};
    if (!data && size) {
        nlpd_error_set(err, NLPD_EINVAL, 0, "%s: no data", c.name);
        free(m);
        return NULL;
    }
    if (!data)
        c.p = (const uint8_t *)"";
    if (parse(&c, m, size)) {
        nlpd_ft_free(m);
        return NULL;
    }
    return m;
}

struct nlpd_ft_model *nlpd_ft_load(const char *path, struct nlpd_error *err)
{
    char *buf;
    size_t len;
    if (nlpd_util_read_file(path, FT_MAX_FILE, &buf, &len, err))
        return NULL;
    struct nlpd_ft_model *m = nlpd_ft_load_mem(buf, len, path, err);
    free(buf);
    return m;
}

static void free_matrix(struct matrix *mx)
{
    free(mx->data);
    free(mx->codes);
    free(mx->norm_codes);
    free(mx->pq.centroids);
    free(mx->npq.centroids);
}

void nlpd_ft_free(struct nlpd_ft_model *m)
{
    if (!m)
        return;
    free(m->pool);
    free(m->word_off);
    free(m->word_len);
    free(m->counts);
    free(m->wtab);
    free(m->sub);
    free(m->sub_off);
    free(m->ptab);
    free_matrix(&m->in);
    free_matrix(&m->out);
    free(m->hs_left);
    free(m->hs_right);
    free(m);
}

void nlpd_ft_get_info(const struct nlpd_ft_model *m, struct nlpd_ft_info *info)
{
    *info = m->info;
}

const char *nlpd_ft_label(const struct nlpd_ft_model *m, int32_t label)
{
    if (label < 0 || label >= m->info.nlabels)
        return NULL;
    return m->pool + m->word_off[m->info.nwords + label];
}

/* ---------------------------------------------------------------- scratch */

struct nlpd_ft_scratch *nlpd_ft_scratch_new(const struct nlpd_ft_model *m)
{
    struct nlpd_ft_scratch *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->dim = m->info.dim;
    s->nlabels = m->info.nlabels;
    s->hidden = malloc(sizeof *s->hidden * (size_t)s->dim);
    s->output = malloc(sizeof *s->output * (size_t)s->nlabels);
    s->heap = malloc(sizeof *s->heap * ((size_t)s->nlabels + 1));
    s->stack = malloc(sizeof *s->stack * 2 * (size_t)s->nlabels);
    s->ids_cap = 256;
    s->hashes_cap = 64;
    s->ids = malloc(sizeof *s->ids * s->ids_cap);
    s->hashes = malloc(sizeof *s->hashes * s->hashes_cap);
    if (!s->hidden || !s->output || !s->heap || !s->stack || !s->ids || !s->hashes) {
        nlpd_ft_scratch_free(s);
        return NULL;
    }
    return s;
}

void nlpd_ft_scratch_free(struct nlpd_ft_scratch *s)
{
    if (!s)
        return;
    free(s->hidden);
    free(s->output);
    free(s->heap);
    free(s->stack);
    free(s->ids);
    free(s->hashes);
    free(s->wbuf);
    free(s);
}

static int grow(int32_t **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t nc = *cap;
    while (nc < need)
        nc *= 2;
    int32_t *nb = realloc(*buf, sizeof *nb * nc);
    if (!nb)
        return NLPD_ENOMEM;
    *buf = nb;
    *cap = nc;
    return 0;
}

/* ---------------------------------------------------------------- prediction */

static int push_id(struct nlpd_ft_scratch *s, int32_t id)
{
    if (s->ids_len == s->ids_cap && grow(&s->ids, &s->ids_cap, s->ids_len + 1))
        return NLPD_ENOMEM;
    s->ids[s->ids_len++] = id;
    return 0;
}

static int add_token(const struct nlpd_ft_model *m, struct nlpd_ft_scratch *s, const char *tok, size_t len)
{
    uint32_t h = fnv(tok, len);
    int32_t wid = find_word(m, tok, len, h);
    if (wid >= 0 ? wid >= m->info.nwords
                 : (len >= sizeof FT_LABEL_PREFIX - 1 && !memcmp(tok, FT_LABEL_PREFIX, sizeof FT_LABEL_PREFIX - 1)))
        return 0; /* a label: ignored for prediction */
    if (wid >= 0) {
        int64_t o = m->sub_off[wid], n = m->sub_off[wid + 1] - o;
        if (m->info.maxn <= 0)
            n = 1;
        if (grow(&s->ids, &s->ids_cap, s->ids_len + (size_t)n))
            return NLPD_ENOMEM;
        memcpy(s->ids + s->ids_len, m->sub + o, sizeof *s->ids * (size_t)n);
        s->ids_len += (size_t)n;
    } else if (m->info.maxn > 0 && !(len == 4 && !memcmp(tok, FT_EOS, 4))) {
        if (len + 2 > s->wbuf_cap) {
            size_t nc = s->wbuf_cap * 2 > len + 2 ? s->wbuf_cap * 2 : len + 2;
            unsigned char *nb = realloc(s->wbuf, nc);
            if (!nb)
                return NLPD_ENOMEM;
            s->wbuf = nb;
            s->wbuf_cap = nc;
        }
        bracket(s->wbuf, tok, len);
        for (;;) {
            size_t room = s->ids_cap - s->ids_len;
            size_t n = char_ngrams(m, s->wbuf, len + 2, s->ids + s->ids_len, room);
            if (n <= room) {
                s->ids_len += n;
                break;
            }
            if (grow(&s->ids, &s->ids_cap, s->ids_len + n))
                return NLPD_ENOMEM;
        }
    }
    if (s->hashes_len == s->hashes_cap && grow(&s->hashes, &s->hashes_cap, s->hashes_len + 1))
        return NLPD_ENOMEM;
    s->hashes[s->hashes_len++] = (int32_t)h;
    return 0;
}

static int add_word_ngrams(const struct nlpd_ft_model *m, struct nlpd_ft_scratch *s)
{
    int32_t n = m->info.word_ngrams;
    uint64_t bucket = (uint64_t)m->info.bucket;
    size_t nh = s->hashes_len;
    for (size_t i = 0; i < nh; i++) {
        uint64_t h = (uint64_t)(int64_t)s->hashes[i];
        for (size_t j = i + 1; j < nh && j < i + (size_t)n; j++) {
            h = h * 116049371u + (uint64_t)(int64_t)s->hashes[j];
            int32_t row = ngram_row(m, (int32_t)(h % bucket));
            if (row >= 0 && push_id(s, row))
                return NLPD_ENOMEM;
        }
    }
    return 0;
}

static void add_row(const struct matrix *mx, int32_t row, float *x)
{
    if (!mx->quant) {
        const float *r = mx->data + (size_t)row * (size_t)mx->cols;
        for (int64_t j = 0; j < mx->cols; j++)
            x[j] += r[j];
        return;
    }
    const struct pq *q = &mx->pq;
    const uint8_t *code = mx->codes + (size_t)row * (size_t)q->nsubq;
    float norm = mx->qnorm ? mx->npq.centroids[mx->norm_codes[row]] : 1.0f;
    for (int32_t sq = 0; sq < q->nsubq; sq++) {
        const float *cen;
        int32_t d = q->dsub;
        if (sq == q->nsubq - 1) {
            d = q->lastdsub;
            cen = q->centroids + (size_t)sq * FT_KSUB * q->dsub + (size_t)code[sq] * d;
        } else {
            cen = q->centroids + ((size_t)sq * FT_KSUB + code[sq]) * q->dsub;
        }
        float *xs = x + (size_t)sq * q->dsub;
        for (int32_t k = 0; k < d; k++)
            xs[k] += norm * cen[k];
    }
}

static float dot_row(const struct matrix *mx, const float *x, int32_t row)
{
    float d = 0.0f;
    if (!mx->quant) {
        const float *r = mx->data + (size_t)row * (size_t)mx->cols;
        for (int64_t j = 0; j < mx->cols; j++)
            d += r[j] * x[j];
        return d;
    }
    const struct pq *q = &mx->pq;
    const uint8_t *code = mx->codes + (size_t)row * (size_t)q->nsubq;
    float norm = mx->qnorm ? mx->npq.centroids[mx->norm_codes[row]] : 1.0f;
    for (int32_t sq = 0; sq < q->nsubq; sq++) {
        const float *cen;
        int32_t dd = q->dsub;
        if (sq == q->nsubq - 1) {
            dd = q->lastdsub;
            cen = q->centroids + (size_t)sq * FT_KSUB * q->dsub + (size_t)code[sq] * dd;
        } else {
            cen = q->centroids + ((size_t)sq * FT_KSUB + code[sq]) * q->dsub;
        }
        const float *xs = x + (size_t)sq * q->dsub;
        for (int32_t k = 0; k < dd; k++)
            d += xs[k] * cen[k];
    }
    return d * norm;
}

/* std_log of fastText: log(x + 1e-5) in double, rounded to float. */
static inline float std_log(float x)
{
    return (float)log((double)x + 1e-5);
}

/* libstdc++'s heap algorithms with fastText's comparator (a > b: a min-heap on score), replicated so that
 * ties come out in the same order. */
static inline int heap_less(const struct ft_heap_item *a, const struct ft_heap_item *b)
{
    return a->score > b->score;
}

static void heap_sift_up(struct ft_heap_item *h, size_t hole, size_t top, struct ft_heap_item v)
{
    size_t parent = (hole - 1) / 2;
    while (hole > top && heap_less(&h[parent], &v)) {
        h[hole] = h[parent];
        hole = parent;
        parent = (hole - 1) / 2;
    }
    h[hole] = v;
}

static void heap_adjust(struct ft_heap_item *h, size_t hole, size_t len, struct ft_heap_item v)
{
    size_t top = hole, child = hole;
    while (len > 2 && child < (len - 1) / 2) {
        child = 2 * (child + 1);
        if (heap_less(&h[child], &h[child - 1]))
            child--;
        h[hole] = h[child];
        hole = child;
    }
    if ((len & 1) == 0 && child == (len - 2) / 2) {
        child = 2 * (child + 1);
        h[hole] = h[child - 1];
        hole = child - 1;
    }
    heap_sift_up(h, hole, top, v);
}

/* Moves the top to h[len-1] and restores the heap on [0, len-1). */
static void heap_pop(struct ft_heap_item *h, size_t len)
{
    if (len < 2)
        return;
    struct ft_heap_item v = h[len - 1];
    h[len - 1] = h[0];
    heap_adjust(h, 0, len - 1, v);
}

/* push_back + push_heap, then pop_heap + pop_back when over k. */
static void heap_offer(struct ft_heap_item *h, size_t *len, size_t k, float score, int32_t id)
{
    struct ft_heap_item v = {score, id};
    h[*len] = v;
    heap_sift_up(h, *len, 0, v);
    (*len)++;
    if (*len > k) {
        heap_pop(h, *len);
        (*len)--;
    }
}

static float sigmoid_lut(const struct nlpd_ft_model *m, float x)
{
    if (x < -FT_MAX_SIGMOID)
        return 0.0f;
    if (x > FT_MAX_SIGMOID)
        return 1.0f;
    if (x != x)
        return x;
    int64_t i = (int64_t)((x + FT_MAX_SIGMOID) * FT_SIGMOID_TABLE / FT_MAX_SIGMOID / 2);
    return m->sigmoid[i];
}

static size_t predict_hs(const struct nlpd_ft_model *m, struct nlpd_ft_scratch *s, size_t k, float threshold)
{
    int32_t osz = m->info.nlabels;
    float min_score = std_log(threshold);
    size_t len = 0, sp = 0;
    s->stack[sp++] = (struct hs_frame){2 * osz - 2, 0.0f};
    while (sp) {
        struct hs_frame f = s->stack[--sp];
        if (f.score < min_score)
            continue;
        if (len == k && f.score < s->heap[0].score)
            continue;
        if (f.node < osz) {
            heap_offer(s->heap, &len, k, f.score, f.node);
            continue;
        }
        int32_t in = f.node - osz;
        float p = dot_row(&m->out, s->hidden, in);
        p = (float)(1. / (double)(1.0f + expf(-p)));
        /* right is visited after the whole left subtree, as in the recursive dfs */
        s->stack[sp++] = (struct hs_frame){m->hs_right[in], f.score + std_log(p)};
        s->stack[sp++] = (struct hs_frame){m->hs_left[in], f.score + std_log((float)(1.0 - (double)p))};
    }
    return len;
}

static size_t predict_flat(const struct nlpd_ft_model *m, struct nlpd_ft_scratch *s, size_t k, float threshold)
{
    int32_t osz = m->info.nlabels;
    float *out = s->output;
    for (int32_t i = 0; i < osz; i++)
        out[i] = dot_row(&m->out, s->hidden, i);
    if (m->info.loss == NLPD_FT_LOSS_SOFTMAX) {
        float max = out[0], z = 0.0f;
        for (int32_t i = 0; i < osz; i++)
            max = out[i] < max ? max : out[i];
        for (int32_t i = 0; i < osz; i++) {
            out[i] = (float)exp((double)(out[i] - max));
            z += out[i];
        }
        for (int32_t i = 0; i < osz; i++)
            out[i] /= z;
    } else {
        for (int32_t i = 0; i < osz; i++)
            out[i] = sigmoid_lut(m, out[i]);
    }
    size_t len = 0;
    for (int32_t i = 0; i < osz; i++) {
        if (out[i] < threshold)
            continue;
        float lp = std_log(out[i]);
        if (len == k && lp < s->heap[0].score)
            continue;
        heap_offer(s->heap, &len, k, lp, i);
    }
    return len;
}

static inline int is_sep(unsigned char c)
{
    return c == ' ' || c == '\n' || c == '\r' || c == '\t' || c == '\v' || c == '\f' || c == '\0';
}

int nlpd_ft_predict_ex(const struct nlpd_ft_model *m, struct nlpd_ft_scratch *s, const char *text, size_t len,
                       int flags, int k, float threshold, struct nlpd_ft_pred *out, size_t *consumed)
{
    if (!m || !s || (!text && len) || k < 1 || !out || s->dim != m->info.dim || s->nlabels != m->info.nlabels)
        return NLPD_EINVAL;
    s->ids_len = 0;
    s->hashes_len = 0;
    size_t i = 0;
    int hit_eos = 0;
    while (i < len) {
        while (i < len && is_sep((unsigned char)text[i]))
            i++;
        if (i == len)
            break;
        size_t start = i;
        while (i < len && !is_sep((unsigned char)text[i]))
            i++;
        if (add_token(m, s, text + start, i - start))
            return NLPD_ENOMEM;
        if (i - start == 4 && !memcmp(text + start, FT_EOS, 4)) {
            /* fastText ends the line at a literal end-of-sentence token */
            hit_eos = 1;
            if (i < len)
                i++; /* its separator is consumed with it */
            break;
        }
    }
    if (consumed)
        *consumed = hit_eos ? i : 0;
    if (!hit_eos && !(flags & NLPD_FT_NO_EOS) && add_token(m, s, FT_EOS, 4))
        return NLPD_ENOMEM;
    if (m->info.word_ngrams > 1 && add_word_ngrams(m, s))
        return NLPD_ENOMEM;
    if (s->ids_len == 0)
        return 0;

    float *hid = s->hidden;
    int32_t dim = m->info.dim;
    memset(hid, 0, sizeof *hid * (size_t)dim);
    for (size_t j = 0; j < s->ids_len; j++)
        add_row(&m->in, s->ids[j], hid);
    float inv = (float)(1.0 / (double)s->ids_len);
    for (int32_t j = 0; j < dim; j++)
        hid[j] *= inv;

    size_t kk = (size_t)k < (size_t)m->info.nlabels ? (size_t)k : (size_t)m->info.nlabels;
    size_t n = m->info.loss == NLPD_FT_LOSS_HS ? predict_hs(m, s, kk, threshold) : predict_flat(m, s, kk, threshold);
    /* sort_heap: repeated pop_heap leaves the best first */
    for (size_t l = n; l > 1; l--)
        heap_pop(s->heap, l);
    for (size_t j = 0; j < n; j++) {
        out[j].label = s->heap[j].id;
        out[j].prob = expf(s->heap[j].score);
    }
    return (int)n;
}

float nlpd_ft_probability(float tool_prob)
{
    double p = (double)tool_prob - 1e-5;
    return p <= 0.0 ? 0.0f : p >= 1.0 ? 1.0f : (float)p;
}

int nlpd_ft_predict(const struct nlpd_ft_model *m, struct nlpd_ft_scratch *s, const char *text, size_t len, int k,
                    float threshold, struct nlpd_ft_pred *out)
{
    return nlpd_ft_predict_ex(m, s, text, len, 0, k, threshold, out, NULL);
}
