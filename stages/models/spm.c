/* SentencePiece model reader, Unigram and BPE encoders, decoder: see spm.h for the semantics followed (sentencepiece
 * 0.1.97: normalizer.cc, model_interface.cc, unigram_model.cc EncodeOptimized, bpe_model.cc Encode,
 * sentencepiece_processor.cc). */
#include "spm.h"

#include <errno.h>
#include <float.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nlpd_util.h"
#include "protobuf.h"

#define SPM_MAX_FILE      ((size_t)1 << 30)
#define SPM_MAX_PIECES    ((size_t)1 << 24)
#define KMAX_TRIE_RESULTS 32 /* Normalizer::kMaxTrieResultsSize */

static const char kSpace[] = "\xe2\x96\x81"; /* U+2581 */
static const char kReplacement[] = "\xef\xbf\xbd";
static const char kDefaultUnkSurface[] = " \xe2\x81\x87 ";

/* ------------------------------------------------------------------ growable byte buffer */
struct sbuf {
    char *p;
    size_t n, cap;
};

static int sbuf_reserve(struct sbuf *b, size_t add)
{
    if (add > SIZE_MAX / 2 - b->n)
        return -1;
    if (b->n + add + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->n + add + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p)
        return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

static int sbuf_add(struct sbuf *b, const void *s, size_t n)
{
    if (sbuf_reserve(b, n) < 0)
        return -1;
    if (n)
        memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return 0;
}

/* ------------------------------------------------------------------ byte trie (hash of edges) */
struct btrie {
    int32_t *val; /* per node: value or -1 */
    size_t nn, ncap;
    uint64_t *ekey; /* ((parent << 8) | byte) + 1; 0: empty slot */
    uint32_t *echild;
    size_t emask, eused;
};

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static int bt_init(struct btrie *t)
{
    memset(t, 0, sizeof *t);
    t->ncap = 64;
    t->val = malloc(t->ncap * sizeof *t->val);
    t->emask = 63;
    t->ekey = calloc(t->emask + 1, sizeof *t->ekey);
    t->echild = malloc((t->emask + 1) * sizeof *t->echild);
    if (!t->val || !t->ekey || !t->echild)
        return -1;
    t->val[0] = -1;
    t->nn = 1;
    return 0;
}

static void bt_free(struct btrie *t)
{
    free(t->val);
    free(t->ekey);
    free(t->echild);
    memset(t, 0, sizeof *t);
}

static inline int32_t bt_child(const struct btrie *t, uint32_t node, uint8_t byte)
{
    uint64_t k = (((uint64_t)node << 8) | byte) + 1;
    for (size_t i = mix64(k) & t->emask;; i = (i + 1) & t->emask) {
        if (t->ekey[i] == k)
            return (int32_t)t->echild[i];
        if (!t->ekey[i])
            return -1;
    }
}

static int bt_grow_edges(struct btrie *t)
{
    size_t nmask = t->emask * 2 + 1;
    uint64_t *nk = calloc(nmask + 1, sizeof *nk);
    uint32_t *nc = malloc((nmask + 1) * sizeof *nc);
    if (!nk || !nc) {
        free(nk);
        free(nc);
        return -1;
    }
    for (size_t i = 0; i <= t->emask; i++) {
        if (!t->ekey[i])
            continue;
        size_t j = mix64(t->ekey[i]) & nmask;
        while (nk[j])
            j = (j + 1) & nmask;
        nk[j] = t->ekey[i];
        nc[j] = t->echild[i];
    }
    free(t->ekey);
    free(t->echild);
    t->ekey = nk;
    t->echild = nc;
    t->emask = nmask;
    return 0;
}

/* Inserts s -> v. Returns 0, 1 when s already has a value (kept), -1 on allocation failure. */
static int bt_insert(struct btrie *t, const char *s, size_t len, int32_t v)
{
    uint32_t node = 0;
    for (size_t i = 0; i < len; i++) {
        uint8_t b = (uint8_t)s[i];
        int32_t c = bt_child(t, node, b);
        if (c < 0) {
            if ((t->eused + 1) * 2 > t->emask + 1 && bt_grow_edges(t) < 0)
                return -1;
            if (t->nn == t->ncap) {
                int32_t *nv = realloc(t->val, t->ncap * 2 * sizeof *nv);
                if (!nv)
                    return -1;
                t->val = nv;
                t->ncap *= 2;
            }
            if (t->nn >= UINT32_MAX / 512)
                return -1;
            c = (int32_t)t->nn++;
            t->val[c] = -1;
            uint64_t k = (((uint64_t)node << 8) | b) + 1;
            size_t j = mix64(k) & t->emask;
            while (t->ekey[j])
                j = (j + 1) & t->emask;
            t->ekey[j] = k;
            t->echild[j] = (uint32_t)c;
            t->eused++;
        }
        node = (uint32_t)c;
    }
    if (t->val[node] >= 0)
        return 1;
    t->val[node] = v;
    return 0;
}

static int32_t bt_get(const struct btrie *t, const char *s, size_t len)
{
    uint32_t node = 0;
    for (size_t i = 0; i < len; i++) {
        int32_t c = bt_child(t, node, (uint8_t)s[i]);
        if (c < 0)
            return -1;
        node = (uint32_t)c;
    }
    return t->val[node];
}

/* Longest key that is a prefix of s[0..len): its length, or 0 when none. */
static size_t bt_longest_prefix(const struct btrie *t, const char *s, size_t len)
{
    uint32_t node = 0;
    size_t best = 0;
    for (size_t i = 0; i < len; i++) {
        int32_t c = bt_child(t, node, (uint8_t)s[i]);
        if (c < 0)
            break;
        node = (uint32_t)c;
        if (t->val[node] >= 0)
            best = i + 1;
    }
    return best;
}

/* ------------------------------------------------------------------ UTF-8 as sentencepiece's util.cc */
static inline size_t one_char_len(uint8_t c)
{
    return (size_t) "\1\1\1\1\1\1\1\1\1\1\1\1\2\2\3\4"[c >> 4];
}

static inline int is_trail(uint8_t c)
{
    return (c & 0xc0) == 0x80;
}

static inline int valid_cp(uint32_t c)
{
    return c < 0xd800 || (c >= 0xe000 && c <= 0x10ffff);
}

/* string_util::IsValidDecodeUTF8: 1 and *mblen for a valid char (U+FFFD itself included), else 0 and 1. */
static int valid_decode_utf8(const uint8_t *s, size_t len, size_t *mblen)
{
    uint32_t cp;
    if (s[0] < 0x80) {
        *mblen = 1;
        return 1;
    } else if (len >= 2 && (s[0] & 0xe0) == 0xc0) {
        cp = (uint32_t)(s[0] & 0x1f) << 6 | (s[1] & 0x3f);
        if (is_trail(s[1]) && cp >= 0x80 && valid_cp(cp)) {
            *mblen = 2;
            return 1;
        }
    } else if (len >= 3 && (s[0] & 0xf0) == 0xe0) {
        cp = (uint32_t)(s[0] & 0x0f) << 12 | (uint32_t)(s[1] & 0x3f) << 6 | (s[2] & 0x3f);
        if (is_trail(s[1]) && is_trail(s[2]) && cp >= 0x800 && valid_cp(cp)) {
            *mblen = 3;
            return 1;
        }
    } else if (len >= 4 && (s[0] & 0xf8) == 0xf0) {
        cp = (uint32_t)(s[0] & 0x07) << 18 | (uint32_t)(s[1] & 0x3f) << 12 | (uint32_t)(s[2] & 0x3f) << 6 |
             (s[3] & 0x3f);
        if (is_trail(s[1]) && is_trail(s[2]) && is_trail(s[3]) && cp >= 0x10000 && valid_cp(cp)) {
            *mblen = 4;
            return 1;
        }
    }
    *mblen = 1;
    return 0;
}

/* ------------------------------------------------------------------ the model */
struct normspec {
    int add_dummy_prefix, remove_extra_ws, escape_ws;
    uint32_t *trie; /* darts-clone units, host order */
    size_t trie_units;
    char *normalized; /* the rules' outputs, NUL-separated */
    size_t normalized_len;
    char *charsmap; /* raw precompiled_charsmap while parsing */
    size_t charsmap_len;
    int present;
};

struct nlpd_spm {
    char *name;
    size_t n;
    char **piece;
    uint32_t *plen;
    float *score;
    uint8_t *type;
    int32_t unk_id;
    int byte_fallback, ws_suffix, model_type;
    float min_score, max_score;
    struct btrie pieces;   /* NORMAL, USER_DEFINED, UNUSED */
    struct btrie reserved; /* CONTROL, UNKNOWN, BYTE */
    struct btrie user;     /* USER_DEFINED: the normaliser's prefix matcher */
    int has_user;
    struct normspec norm, denorm;
    int has_denorm;
    char *unk_surface;
    size_t unk_surface_len;
};

static void normspec_free(struct normspec *s)
{
    free(s->trie);
    free(s->normalized);
    free(s->charsmap);
}

void nlpd_spm_free(struct nlpd_spm *m)
{
    if (!m)
        return;
    if (m->piece)
        for (size_t i = 0; i < m->n; i++)
            free(m->piece[i]);
    free(m->piece);
    free(m->plen);
    free(m->score);
    free(m->type);
    bt_free(&m->pieces);
    bt_free(&m->reserved);
    bt_free(&m->user);
    normspec_free(&m->norm);
    normspec_free(&m->denorm);
    free(m->unk_surface);
    free(m->name);
    free(m);
}

static char *dup_bytes(const void *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p) {
        if (n)
            memcpy(p, s, n);
        p[n] = 0;
    }
    return p;
}

/* ------------------------------------------------------------------ protobuf parsing */
#define BROKEN(what) nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: corrupt sentencepiece model: %s", m->name, what)

static int parse_piece(struct nlpd_spm *m, struct nlpd_pb b, struct nlpd_error *err)
{
    const uint8_t *s = NULL;
    size_t slen = 0;
    float score = 0;
    int type = NLPD_SPM_NORMAL;
    while (b.p < b.end) {
        uint32_t f, wt;
        uint64_t v = 0;
        struct nlpd_pb sub = {0};
        if (nlpd_pb_field(&b, &f, &wt, &v, &sub) < 0)
            return BROKEN("truncated piece");
        if (f == 1 && wt == 2) {
            s = sub.p;
            slen = (size_t)(sub.end - sub.p);
        } else if (f == 2 && wt == 5) {
            uint32_t u = (uint32_t)v;
            memcpy(&score, &u, sizeof score);
        } else if (f == 3 && wt == 0) {
            if (v >= 1 && v <= 6) /* an unknown enum value leaves the field as it was (proto2) */
                type = (int)v;
        }
    }
    if (m->n >= SPM_MAX_PIECES)
        return nlpd_error_set(err, NLPD_ERANGE, 0, "%s: more than %zu pieces", m->name, SPM_MAX_PIECES);
    if ((m->n & (m->n - 1)) == 0) { /* grow at powers of two */
        size_t cap = m->n ? m->n * 2 : 256;
        char **np = realloc(m->piece, cap * sizeof *np);
        if (np)
            m->piece = np;
        uint32_t *nl = realloc(m->plen, cap * sizeof *nl);
        if (nl)
            m->plen = nl;
        float *ns = realloc(m->score, cap * sizeof *ns);
        if (ns)
            m->score = ns;
        uint8_t *nt = realloc(m->type, cap * sizeof *nt);
        if (nt)
            m->type = nt;
        if (!np || !nl || !ns || !nt)
            return nlpd_error_set(err, NLPD_ENOMEM, 0, "%s: out of memory", m->name);
    }
    if (slen > UINT32_MAX - 1)
        return BROKEN("piece too long");
    m->piece[m->n] = dup_bytes(s ? (const char *)s : "", slen);
    if (!m->piece[m->n])
        return nlpd_error_set(err, NLPD_ENOMEM, 0, "%s: out of memory", m->name);
    m->plen[m->n] = (uint32_t)slen;
    m->score[m->n] = score;
    m->type[m->n] = (uint8_t)type;
    m->n++;
    return 0;
}

static int parse_trainer(struct nlpd_spm *m, struct nlpd_pb b, struct nlpd_error *err)
{
    while (b.p < b.end) {
        uint32_t f, wt;
        uint64_t v = 0;
        struct nlpd_pb sub = {0};
        if (nlpd_pb_field(&b, &f, &wt, &v, &sub) < 0)
            return BROKEN("truncated trainer_spec");
        if (f == 3 && wt == 0) {
            if (v >= 1 && v <= 4)
                m->model_type = (int)v;
        } else if (f == 24 && wt == 0) {
            m->ws_suffix = v != 0;
        } else if (f == 35 && wt == 0) {
            m->byte_fallback = v != 0;
        } else if (f == 44 && wt == 2) {
            free(m->unk_surface);
            m->unk_surface_len = (size_t)(sub.end - sub.p);
            m->unk_surface = dup_bytes(sub.p, m->unk_surface_len);
            if (!m->unk_surface)
                return nlpd_error_set(err, NLPD_ENOMEM, 0, "%s: out of memory", m->name);
        }
    }
    return 0;
}

static int parse_normspec(struct nlpd_spm *m, struct normspec *ns, struct nlpd_pb b, struct nlpd_error *err)
{
    ns->present = 1;
    while (b.p < b.end) {
        uint32_t f, wt;
        uint64_t v = 0;
        struct nlpd_pb sub = {0};
        if (nlpd_pb_field(&b, &f, &wt, &v, &sub) < 0)
            return BROKEN("truncated normalizer_spec");
        if (f == 2 && wt == 2) {
            free(ns->charsmap);
            ns->charsmap_len = (size_t)(sub.end - sub.p);
            ns->charsmap = dup_bytes(sub.p, ns->charsmap_len);
            if (!ns->charsmap)
                return nlpd_error_set(err, NLPD_ENOMEM, 0, "%s: out of memory", m->name);
        } else if (f == 3 && wt == 0) {
            ns->add_dummy_prefix = v != 0;
        } else if (f == 4 && wt == 0) {
            ns->remove_extra_ws = v != 0;
        } else if (f == 5 && wt == 0) {
            ns->escape_ws = v != 0;
        }
    }
    return 0;
}

/* Normalizer::DecodePrecompiledCharsMap: <trie size (4 bytes LE)><darts-clone units><normalized strings>. */
static int charsmap_init(struct nlpd_spm *m, struct normspec *ns, const char *which, struct nlpd_error *err)
{
    if (!ns->charsmap_len)
        return 0;
    const uint8_t *b = (const uint8_t *)ns->charsmap;
    size_t len = ns->charsmap_len;
    uint32_t tsize = len > 4 ? (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24 : 0;
    if (len <= 4 || tsize > len - 4)
        return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: %s precompiled_charsmap is broken (trie size)", m->name,
                              which);
    ns->trie_units = tsize / 4;
    if (ns->trie_units == 0)
        return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: %s precompiled_charsmap has an empty trie", m->name, which);
    ns->trie = malloc(ns->trie_units * sizeof *ns->trie);
    ns->normalized_len = len - 4 - tsize;
    ns->normalized = dup_bytes(b + 4 + tsize, ns->normalized_len);
    if (!ns->trie || !ns->normalized)
        return nlpd_error_set(err, NLPD_ENOMEM, 0, "%s: out of memory", m->name);
    for (size_t i = 0; i < ns->trie_units; i++) {
        const uint8_t *u = b + 4 + 4 * i;
        ns->trie[i] = (uint32_t)u[0] | (uint32_t)u[1] << 8 | (uint32_t)u[2] << 16 | (uint32_t)u[3] << 24;
    }
    return 0;
}

/* darts-clone commonPrefixSearch (bounds-checked): the longest key that prefixes s, its value in *val. */
static size_t darts_longest(const struct normspec *ns, const uint8_t *s, size_t len, uint32_t *val)
{
    const uint32_t *a = ns->trie;
    size_t units = ns->trie_units, best = 0, found = 0;
    uint32_t unit = a[0];
    size_t pos = (size_t)((unit >> 10) << ((unit & (1u << 9)) >> 6));
    for (size_t i = 0; i < len; i++) {
        pos ^= s[i];
        if (pos >= units)
            break;
        unit = a[pos];
        if ((unit & ((1u << 31) | 0xff)) != s[i])
            break;
        pos ^= (size_t)((unit >> 10) << ((unit & (1u << 9)) >> 6));
        if (pos >= units)
            break;
        if ((unit >> 8) & 1) {
            if (found < KMAX_TRIE_RESULTS && i + 1 > best) {
                best = i + 1;
                *val = a[pos] & 0x7fffffffu;
            }
            found++;
        }
    }
    return best;
}

static int build(struct nlpd_spm *m, struct nlpd_error *err)
{
    if (m->model_type != 1 && m->model_type != 2) {
        static const char *const names[] = {"", "UNIGRAM", "BPE", "WORD", "CHAR"};
        return nlpd_error_set(err, NLPD_EFORMAT, 0,
                              "%s: sentencepiece model type %s is not supported (only Unigram and BPE models are)",
                              m->name, names[m->model_type]);
    }
    if (charsmap_init(m, &m->norm, "normalizer_spec", err) < 0 ||
        charsmap_init(m, &m->denorm, "denormalizer_spec", err) < 0)
        return err ? err->code : NLPD_EFORMAT;
    m->has_denorm = m->denorm.present && m->denorm.charsmap_len > 0;
    if (bt_init(&m->pieces) < 0 || bt_init(&m->reserved) < 0 || bt_init(&m->user) < 0)
        return nlpd_error_set(err, NLPD_ENOMEM, 0, "%s: out of memory", m->name);
    int byte_found[256] = {0};
    size_t nbytes = 0, nnormal = 0;
    m->unk_id = -1;
    m->min_score = FLT_MAX;
    m->max_score = FLT_MIN; /* as the library: the smallest positive float, not -FLT_MAX */
    for (size_t i = 0; i < m->n; i++) {
        int t = m->type[i];
        if (m->plen[i] == 0)
            return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: piece %zu is empty", m->name, i);
        int normal = t == NLPD_SPM_NORMAL || t == NLPD_SPM_USER_DEFINED || t == NLPD_SPM_UNUSED;
        int r = bt_insert(normal ? &m->pieces : &m->reserved, m->piece[i], m->plen[i], (int32_t)i);
        if (r < 0)
            return nlpd_error_set(err, NLPD_ENOMEM, 0, "%s: out of memory", m->name);
        if (r > 0)
            return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: piece %zu \"%.64s\" is already defined", m->name, i,
                                  m->piece[i]);
        nnormal += normal;
        if (t == NLPD_SPM_USER_DEFINED) {
            if (bt_insert(&m->user, m->piece[i], m->plen[i], (int32_t)i) < 0)
                return nlpd_error_set(err, NLPD_ENOMEM, 0, "%s: out of memory", m->name);
            m->has_user = 1;
        }
        if (t == NLPD_SPM_UNKNOWN) {
            if (m->unk_id >= 0)
                return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: unk is already defined", m->name);
            m->unk_id = (int32_t)i;
        }
        if (t == NLPD_SPM_BYTE) {
            if (!m->byte_fallback)
                return nlpd_error_set(err, NLPD_EFORMAT, 0,
                                      "%s: byte piece %.16s is found although byte_fallback is false", m->name,
                                      m->piece[i]);
            unsigned x;
            char tail;
            static const char hex[] = "0123456789ABCDEF";
            const char *p = m->piece[i];
            if (m->plen[i] != 6 || sscanf(p, "<0x%2X%c", &x, &tail) != 2 || tail != '>' || x > 255 ||
                p[3] != hex[x >> 4] || p[4] != hex[x & 15])
                return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: byte piece %.16s is invalid", m->name, p);
            if (!byte_found[x])
                nbytes++;
            byte_found[x] = 1;
        }
        if (t == NLPD_SPM_NORMAL) {
            if (m->score[i] < m->min_score)
                m->min_score = m->score[i];
            if (m->score[i] > m->max_score)
                m->max_score = m->score[i];
        }
    }
    if (m->unk_id < 0)
        return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: unk is not defined", m->name);
    if (m->byte_fallback && nbytes != 256)
        return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: there are not 256 byte pieces although byte_fallback is true",
                              m->name);
    if (!nnormal)
        return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: no pieces are loaded", m->name);
    if (!m->unk_surface) {
        m->unk_surface_len = sizeof kDefaultUnkSurface - 1;
        m->unk_surface = dup_bytes(kDefaultUnkSurface, m->unk_surface_len);
        if (!m->unk_surface)
            return nlpd_error_set(err, NLPD_ENOMEM, 0, "%s: out of memory", m->name);
    }
    return 0;
}

struct nlpd_spm *nlpd_spm_load_mem(const void *data, size_t len, const char *name, struct nlpd_error *err)
{
    struct nlpd_spm *m = calloc(1, sizeof *m);
    if (!m) {
        nlpd_error_set(err, NLPD_ENOMEM, 0, "%s: out of memory", name ? name : "(memory)");
        return NULL;
    }
    m->name = dup_bytes(name ? name : "(memory)", strlen(name ? name : "(memory)"));
    if (!m->name) {
        free(m);
        nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
        return NULL;
    }
    m->model_type = 1;
    struct normspec defaults = {.add_dummy_prefix = 1, .remove_extra_ws = 1, .escape_ws = 1};
    m->norm = defaults;
    m->denorm = defaults;
    struct nlpd_pb b = {(const uint8_t *)data, (const uint8_t *)data + len};
    int rc = 0;
    if (!data && len)
        rc = BROKEN("no data");
    while (!rc && b.p < b.end) {
        uint32_t f, wt;
        uint64_t v = 0;
        struct nlpd_pb sub = {0};
        if (nlpd_pb_field(&b, &f, &wt, &v, &sub) < 0) {
            rc = BROKEN("truncated or not a protobuf ModelProto");
            break;
        }
        if (wt != 2)
            continue;
        if (f == 1)
            rc = parse_piece(m, sub, err);
        else if (f == 2)
            rc = parse_trainer(m, sub, err);
        else if (f == 3)
            rc = parse_normspec(m, &m->norm, sub, err);
        else if (f == 5)
            rc = parse_normspec(m, &m->denorm, sub, err);
    }
    if (!rc)
        rc = build(m, err);
    if (rc) {
        nlpd_spm_free(m);
        return NULL;
    }
    return m;
}

struct nlpd_spm *nlpd_spm_load(const char *path, struct nlpd_error *err)
{
    char *buf;
    size_t len;
    if (nlpd_util_read_file(path, SPM_MAX_FILE, &buf, &len, err))
        return NULL;
    struct nlpd_spm *m = NULL;
    if (len == 0)
        nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: empty file, not a sentencepiece model", path);
    else
        m = nlpd_spm_load_mem(buf, len, path, err);
    free(buf);
    return m;
}

/* ------------------------------------------------------------------ accessors */
size_t nlpd_spm_size(const struct nlpd_spm *m)
{
    return m->n;
}

const char *nlpd_spm_id_piece(const struct nlpd_spm *m, int32_t id, size_t *len)
{
    if (id < 0 || (size_t)id >= m->n)
        return NULL;
    if (len)
        *len = m->plen[id];
    return m->piece[id];
}

int nlpd_spm_id_type(const struct nlpd_spm *m, int32_t id)
{
    return id < 0 || (size_t)id >= m->n ? 0 : m->type[id];
}

float nlpd_spm_id_score(const struct nlpd_spm *m, int32_t id)
{
    return id < 0 || (size_t)id >= m->n ? 0.0f : m->score[id];
}

int32_t nlpd_spm_unk_id(const struct nlpd_spm *m)
{
    return m->unk_id;
}

int nlpd_spm_has_piece(const struct nlpd_spm *m, const char *piece, size_t len)
{
    return bt_get(&m->reserved, piece, len) >= 0 || bt_get(&m->pieces, piece, len) >= 0;
}

int32_t nlpd_spm_piece_id(const struct nlpd_spm *m, const char *piece, size_t len)
{
    int32_t id = bt_get(&m->reserved, piece, len);
    if (id < 0)
        id = bt_get(&m->pieces, piece, len);
    return id < 0 ? m->unk_id : id;
}

/* ------------------------------------------------------------------ normaliser */
/* Normalizer::NormalizePrefix: the output (*o, *olen) for the longest prefix of s and the bytes it consumes. */
static size_t norm_prefix(const struct normspec *ns, const struct btrie *user, const uint8_t *s, size_t len,
                          const char **o, size_t *olen)
{
    if (user) {
        size_t ml = bt_longest_prefix(user, (const char *)s, len);
        if (ml) {
            *o = (const char *)s;
            *olen = ml;
            return ml;
        }
    }
    size_t longest = 0;
    uint32_t val = 0;
    if (ns->trie)
        longest = darts_longest(ns, s, len, &val);
    if (longest) {
        if (val < ns->normalized_len) {
            *o = ns->normalized + val;
            *olen = strnlen(*o, ns->normalized_len - val);
        } else { /* a corrupt rule: nothing to output */
            *o = "";
            *olen = 0;
        }
        return longest;
    }
    size_t mblen;
    if (!valid_decode_utf8(s, len, &mblen)) {
        *o = kReplacement;
        *olen = 3;
        return 1;
    }
    *o = (const char *)s;
    *olen = mblen;
    return mblen;
}

static int normalize(const struct normspec *ns, const struct btrie *user, int ws_suffix, const uint8_t *in, size_t len,
                     struct sbuf *out)
{
    out->n = 0;
    if (sbuf_reserve(out, 0) < 0)
        return -1;
    out->p[0] = 0;
    const char *o;
    size_t olen, c;
    if (ns->remove_extra_ws) {
        while (len) {
            c = norm_prefix(ns, user, in, len, &o, &olen);
            if (!(olen == 1 && o[0] == ' '))
                break;
            in += c;
            len -= c;
        }
    }
    if (!len)
        return 0;
    const char *sp = ns->escape_ws ? kSpace : " ";
    size_t splen = ns->escape_ws ? 3 : 1;
    if (!ws_suffix && ns->add_dummy_prefix && sbuf_add(out, sp, splen) < 0)
        return -1;
    int prev_space = ns->remove_extra_ws;
    while (len) {
        c = norm_prefix(ns, user, in, len, &o, &olen);
        if (prev_space)
            while (olen && *o == ' ') {
                o++;
                olen--;
            }
        if (olen) {
            for (size_t k = 0; k < olen; k++) {
                int r = ns->escape_ws && o[k] == ' ' ? sbuf_add(out, kSpace, 3) : sbuf_add(out, o + k, 1);
                if (r < 0)
                    return -1;
            }
            prev_space = o[olen - 1] == ' ';
        }
        in += c;
        len -= c;
        if (!ns->remove_extra_ws)
            prev_space = 0;
    }
    if (ns->remove_extra_ws) {
        while (out->n >= splen && memcmp(out->p + out->n - splen, sp, splen) == 0)
            out->n -= splen;
        out->p[out->n] = 0;
    }
    if (ws_suffix && ns->add_dummy_prefix && sbuf_add(out, sp, splen) < 0)
        return -1;
    return 0;
}

int nlpd_spm_normalize(const struct nlpd_spm *m, const char *text, size_t len, char **out, size_t *out_len,
                       struct nlpd_error *err)
{
    struct sbuf b = {0};
    if (normalize(&m->norm, m->has_user ? &m->user : NULL, m->ws_suffix, (const uint8_t *)text, len, &b) < 0) {
        free(b.p);
        return nlpd_error_set(err, NLPD_ENOMEM, 0, "%s: out of memory normalising", m->name);
    }
    *out = b.p;
    *out_len = b.n;
    return 0;
}

/* ------------------------------------------------------------------ encoder */
struct best {
    float score;
    int32_t start; /* -1: not reached */
    int32_t id;
};

static int pieces_add(struct nlpd_spm_pieces *p, const char *s, size_t n, int32_t id)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 32;
        size_t *no = realloc(p->off, cap * sizeof *no);
        if (no)
            p->off = no;
        size_t *nl = realloc(p->len, cap * sizeof *nl);
        if (nl)
            p->len = nl;
        int32_t *ni = realloc(p->id, cap * sizeof *ni);
        if (ni)
            p->id = ni;
        if (!no || !nl || !ni)
            return -1;
        p->cap = cap;
    }
    struct sbuf b = {p->buf, 0, p->buf_cap};
    b.n = p->n ? p->off[p->n - 1] + p->len[p->n - 1] : 0;
    if (sbuf_add(&b, s, n) < 0)
        return -1;
    p->buf = b.p;
    p->buf_cap = b.cap;
    p->off[p->n] = b.n - n;
    p->len[p->n] = n;
    p->id[p->n] = id;
    p->n++;
    return 0;
}

/* Appends s to the last piece (merging a run of unknown pieces). */
static int pieces_extend(struct nlpd_spm_pieces *p, const char *s, size_t n)
{
    struct sbuf b = {p->buf, p->off[p->n - 1] + p->len[p->n - 1], p->buf_cap};
    if (sbuf_add(&b, s, n) < 0)
        return -1;
    p->buf = b.p;
    p->buf_cap = b.cap;
    p->len[p->n - 1] += n;
    return 0;
}

void nlpd_spm_pieces_free(struct nlpd_spm_pieces *p)
{
    free(p->buf);
    free(p->off);
    free(p->len);
    free(p->id);
    free(p->norm);
    free(p->lattice);
    memset(p, 0, sizeof *p);
}

/* ------------------------------------------------------------------ BPE (bpe_model.cc Encode) */
struct bpe_sym {
    int32_t prev, next;
    uint32_t off, len;
    int freeze;
};

struct bpe_pair {
    int32_t left, right;
    float score;
    uint32_t size;
};

/* bpe_model.cc's agenda order: the highest score first, then the leftmost pair */
static int pair_before(const struct bpe_pair *a, const struct bpe_pair *b)
{
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

struct bpe_heap {
    struct bpe_pair *h;
    size_t n, cap;
};

static int heap_push(struct bpe_heap *q, struct bpe_pair p)
{
    if (q->n == q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 64;
        struct bpe_pair *nh = realloc(q->h, cap * sizeof *nh);
        if (!nh)
            return -1;
        q->h = nh;
        q->cap = cap;
    }
    size_t i = q->n++;
    while (i > 0 && pair_before(&p, &q->h[(i - 1) / 2])) {
        q->h[i] = q->h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    q->h[i] = p;
    return 0;
}

static struct bpe_pair heap_pop(struct bpe_heap *q)
{
    struct bpe_pair top = q->h[0], last = q->h[--q->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= q->n)
            break;
        if (c + 1 < q->n && pair_before(&q->h[c + 1], &q->h[c]))
            c++;
        if (!pair_before(&q->h[c], &last))
            break;
        q->h[i] = q->h[c];
        i = c;
    }
    if (q->n)
        q->h[i] = last;
    return top;
}

static int bpe_add_pair(const struct nlpd_spm *m, const uint8_t *s, const struct bpe_sym *sy, int32_t l, int32_t r,
                        struct bpe_heap *q)
{
    if (l < 0 || r < 0 || sy[l].freeze || sy[r].freeze)
        return 0;
    uint32_t size = sy[l].len + sy[r].len;
    int32_t id = bt_get(&m->pieces, (const char *)s + sy[l].off, size);
    if (id < 0)
        return 0;
    return heap_push(q, (struct bpe_pair){l, r, m->score[id], size});
}

/* bpe_model.cc's rev_merge: an unused piece made by a merge -> its left part's length. Keyed by the piece's text,
 * the last merge winning, as the library's map is. */
struct bpe_rev {
    uint32_t off, len, left;
};

static uint32_t rev_left(const uint8_t *s, const struct bpe_rev *rev, size_t nrev, uint32_t off, uint32_t len)
{
    for (size_t i = nrev; i-- > 0;)
        if (rev[i].len == len && (rev[i].off == off || !memcmp(s + rev[i].off, s + off, len)))
            return rev[i].left;
    return 0;
}

/* An unused piece is split back into the two symbols it was merged from (bpe_model.cc's resegment). */
static int bpe_emit(const struct nlpd_spm *m, const uint8_t *s, uint32_t off, uint32_t len, const struct bpe_rev *rev,
                    size_t nrev, struct nlpd_spm_pieces *out, int *prev_unk, int depth)
{
    const char *w = (const char *)s + off;
    int32_t id = bt_get(&m->pieces, w, len);
    uint32_t k = id >= 0 && m->type[id] == NLPD_SPM_UNUSED && depth < 256 ? rev_left(s, rev, nrev, off, len) : 0;
    if (k > 0 && k < len) {
        if (bpe_emit(m, s, off, k, rev, nrev, out, prev_unk, depth + 1) < 0)
            return -1;
        return bpe_emit(m, s, off + k, len - k, rev, nrev, out, prev_unk, depth + 1);
    }
    int32_t rid = bt_get(&m->reserved, w, len);
    if (rid >= 0)
        id = rid;
    if (id < 0)
        id = m->unk_id;
    int is_unk = m->type[id] == NLPD_SPM_UNKNOWN, rc = 0;
    if (is_unk && m->byte_fallback) {
        for (uint32_t i = 0; i < len && !rc; i++) {
            char bpiece[8];
            snprintf(bpiece, sizeof bpiece, "<0x%02X>", (unsigned)(uint8_t)w[i]);
            rc = pieces_add(out, bpiece, 6, nlpd_spm_piece_id(m, bpiece, 6));
        }
    } else if (*prev_unk && is_unk) {
        rc = pieces_extend(out, w, len);
    } else {
        rc = pieces_add(out, w, len, id);
    }
    *prev_unk = is_unk;
    return rc;
}

static int encode_bpe(const struct nlpd_spm *m, const uint8_t *s, size_t size, struct nlpd_spm_pieces *out,
                      struct nlpd_error *err)
{
    struct bpe_sym *sy = malloc(size * sizeof *sy);
    struct bpe_rev *rev = malloc(size * sizeof *rev); /* at most one merge per byte */
    size_t nrev = 0;
    struct bpe_heap q = {0};
    int rc = 0;
    if (!sy || !rev) {
        rc = -1;
        goto done;
    }
    int32_t n = 0;
    for (size_t i = 0; i < size; n++) {
        size_t ul = m->has_user ? bt_longest_prefix(&m->user, (const char *)s + i, size - i) : 0;
        size_t l = ul ? ul : one_char_len(s[i]);
        if (l > size - i)
            l = size - i;
        sy[n] = (struct bpe_sym){n - 1, i + l < size ? n + 1 : -1, (uint32_t)i, (uint32_t)l, ul > 0};
        i += l;
    }
    for (int32_t i = 1; i < n && !rc; i++)
        rc = bpe_add_pair(m, s, sy, i - 1, i, &q);
    while (!rc && q.n) {
        struct bpe_pair top = heap_pop(&q);
        struct bpe_sym *L = &sy[top.left], *R = &sy[top.right];
        if (!L->len || !R->len || L->len + R->len != top.size) /* stale: a side was merged since */
            continue;
        int32_t id = bt_get(&m->pieces, (const char *)s + L->off, top.size);
        if (id >= 0 && m->type[id] == NLPD_SPM_UNUSED && nrev < size)
            rev[nrev++] = (struct bpe_rev){L->off, top.size, L->len};
        L->len += R->len;
        L->next = R->next;
        if (R->next >= 0)
            sy[R->next].prev = top.left;
        R->len = 0;
        rc = bpe_add_pair(m, s, sy, L->prev, top.left, &q);
        if (!rc)
            rc = bpe_add_pair(m, s, sy, top.left, L->next, &q);
    }
    int prev_unk = 0;
    for (int32_t i = n ? 0 : -1; i >= 0 && !rc; i = sy[i].next)
        rc = bpe_emit(m, s, sy[i].off, sy[i].len, rev, nrev, out, &prev_unk, 0);
done:
    free(sy);
    free(rev);
    free(q.h);
    if (rc < 0)
        return nlpd_error_set(err, NLPD_ENOMEM, 0, "%s: out of memory encoding", m->name);
    return 0;
}

int nlpd_spm_encode(const struct nlpd_spm *m, const char *text, size_t len, struct nlpd_spm_pieces *out,
                    struct nlpd_error *err)
{
    out->n = 0;
    if (len > (size_t)INT32_MAX / 4)
        return nlpd_error_set(err, NLPD_ERANGE, 0, "%s: text of %zu bytes is too long to encode", m->name, len);
    struct sbuf nb = {out->norm, 0, out->norm_cap};
    int rc = normalize(&m->norm, m->has_user ? &m->user : NULL, m->ws_suffix, (const uint8_t *)text, len, &nb);
    out->norm = nb.p;
    out->norm_cap = nb.cap;
    if (rc < 0)
        return nlpd_error_set(err, NLPD_ENOMEM, 0, "%s: out of memory normalising", m->name);
    const uint8_t *s = (const uint8_t *)nb.p;
    size_t size = nb.n;
    if (size == 0)
        return 0;
    if (m->model_type == 2)
        return encode_bpe(m, s, size, out, err);
    if (size + 1 > out->lattice_cap) {
        void *nl = realloc(out->lattice, (size + 1) * sizeof(struct best));
        if (!nl)
            return nlpd_error_set(err, NLPD_ENOMEM, 0, "%s: out of memory encoding", m->name);
        out->lattice = nl;
        out->lattice_cap = size + 1;
    }
    struct best *bp = out->lattice;
    for (size_t i = 0; i <= size; i++) {
        bp[i].score = 0;
        bp[i].start = -1;
        bp[i].id = -1;
    }
    /* unigram_model.cc EncodeOptimized, with its float/double mix: a candidate is computed in double, compared
     * with the stored float and stored as float; the unknown candidate is float arithmetic. */
    const float unk_score = m->min_score - 10.0f;
    const struct btrie *t = &m->pieces;
    size_t start = 0;
    while (start < size) {
        const float till_here = bp[start].score;
        size_t mblen = one_char_len(s[start]);
        if (mblen > size - start)
            mblen = size - start;
        int has_single = 0;
        uint32_t node = 0;
        for (size_t kp = start; kp < size;) {
            int32_t c = bt_child(t, node, s[kp]);
            if (c < 0)
                break;
            node = (uint32_t)c;
            kp++;
            int32_t id = t->val[node];
            if (id < 0)
                continue;
            int ty = m->type[id];
            if (ty == NLPD_SPM_UNUSED)
                continue;
            size_t length = kp - start;
            double score =
                ty == NLPD_SPM_USER_DEFINED ? (double)((float)length * m->max_score) - 0.1 : (double)m->score[id];
            double cand = score + (double)till_here;
            struct best *tn = &bp[kp];
            if (tn->start == -1 || cand > (double)tn->score) {
                tn->score = (float)cand;
                tn->start = (int32_t)start;
                tn->id = id;
            }
            if (!has_single && length == mblen)
                has_single = 1;
        }
        if (!has_single) {
            struct best *tn = &bp[start + mblen];
            float cand = unk_score + till_here;
            if (tn->start == -1 || cand > tn->score) {
                tn->score = cand;
                tn->start = (int32_t)start;
                tn->id = m->unk_id;
            }
        }
        start += mblen;
    }
    /* Backtrack: count the pieces, then emit them in order (reusing bp[].id of the ends as a forward link). */
    size_t npieces = 0;
    for (size_t e = size; e > 0;) {
        int32_t st = bp[e].start;
        if (st < 0 || (size_t)st >= e)
            return nlpd_error_set(err, NLPD_EFATAL, 0, "%s: internal error: broken Viterbi path", m->name);
        npieces++;
        e = (size_t)st;
    }
    /* Forward order: collect the end positions. */
    size_t *ends = malloc(npieces * sizeof *ends);
    if (!ends)
        return nlpd_error_set(err, NLPD_ENOMEM, 0, "%s: out of memory encoding", m->name);
    size_t k = npieces;
    for (size_t e = size; e > 0; e = (size_t)bp[e].start)
        ends[--k] = e;
    int prev_unk = 0;
    rc = 0;
    for (k = 0; k < npieces && !rc; k++) {
        size_t e = ends[k], st = (size_t)bp[e].start;
        int32_t id = bp[e].id;
        const char *w = (const char *)s + st;
        size_t wl = e - st;
        int is_unk = m->type[id] == NLPD_SPM_UNKNOWN;
        if (m->type[id] == NLPD_SPM_CONTROL) {
            rc = pieces_add(out, w, wl, id);
        } else if (is_unk && m->byte_fallback) {
            for (size_t i = 0; i < wl && !rc; i++) {
                char bpiece[8];
                snprintf(bpiece, sizeof bpiece, "<0x%02X>", (unsigned)(uint8_t)w[i]);
                rc = pieces_add(out, bpiece, 6, nlpd_spm_piece_id(m, bpiece, 6));
            }
        } else if (prev_unk && is_unk) {
            rc = pieces_extend(out, w, wl);
        } else {
            rc = pieces_add(out, w, wl, id);
        }
        prev_unk = is_unk;
    }
    free(ends);
    if (rc < 0)
        return nlpd_error_set(err, NLPD_ENOMEM, 0, "%s: out of memory encoding", m->name);
    return 0;
}

/* ------------------------------------------------------------------ decoder */
static int piece_to_byte(const char *p, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    if (n != 6 || memcmp(p, "<0x", 3) != 0 || p[5] != '>')
        return -1;
    const char *a = memchr(hex, p[3], 16), *b = memchr(hex, p[4], 16);
    if (!a || !b || !p[3] || !p[4])
        return -1;
    return (int)((a - hex) * 16 + (b - hex));
}

/* Appends s with every U+2581 replaced by ' '. */
static int add_unescaped(struct sbuf *t, const char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        const char *q = n - i >= 3 ? memmem(s + i, n - i, kSpace, 3) : NULL;
        size_t upto = q ? (size_t)(q - s) : n;
        if (sbuf_add(t, s + i, upto - i) < 0)
            return -1;
        if (!q)
            break;
        if (sbuf_add(t, " ", 1) < 0)
            return -1;
        i = upto + 3;
    }
    return 0;
}

static int flush_bytes(struct sbuf *t, struct sbuf *bytes)
{
    const uint8_t *b = (const uint8_t *)bytes->p;
    size_t off = 0;
    while (off < bytes->n) {
        size_t c;
        if (!valid_decode_utf8(b + off, bytes->n - off, &c)) {
            if (sbuf_add(t, kReplacement, 3) < 0)
                return -1;
        } else if (sbuf_add(t, b + off, c) < 0) {
            return -1;
        }
        off += c;
    }
    bytes->n = 0;
    return 0;
}

int nlpd_spm_decode_pieces(const struct nlpd_spm *m, const char *const *pieces, const size_t *lens, size_t n,
                           char **text, size_t *len, struct nlpd_error *err)
{
    struct sbuf t = {0}, bytes = {0};
    int oom = sbuf_reserve(&t, 0) < 0;
    if (!oom)
        t.p[0] = 0;
    int is_bos_ws = 1, bos_ws_seen = 0;
    const struct normspec *ns = &m->norm;
    for (size_t i = 0; i < n && !oom; i++) {
        const char *p = pieces[i];
        size_t pl = lens ? lens[i] : strlen(p);
        int32_t id = nlpd_spm_piece_id(m, p, pl);
        int ty = m->type[id];
        if (ty == NLPD_SPM_BYTE) {
            int v = piece_to_byte(p, pl);
            uint8_t c = (uint8_t)(v < 0 ? 0 : v);
            if (sbuf_add(&bytes, &c, 1) < 0)
                oom = 1;
            continue;
        }
        if (bytes.n && flush_bytes(&t, &bytes) < 0) {
            oom = 1;
            break;
        }
        if (bos_ws_seen || t.n)
            is_bos_ws = 0;
        bos_ws_seen = 0;
        if (ty == NLPD_SPM_CONTROL)
            continue;
        if (ty == NLPD_SPM_UNKNOWN) {
            if (pl == m->plen[id] && memcmp(p, m->piece[id], pl) == 0)
                oom = sbuf_add(&t, m->unk_surface, m->unk_surface_len) < 0;
            else
                oom = sbuf_add(&t, p, pl) < 0;
            continue;
        }
        if (is_bos_ws && (ns->add_dummy_prefix || ns->remove_extra_ws)) {
            if (pl >= 3 && memcmp(p, kSpace, 3) == 0) {
                p += 3;
                pl -= 3;
                bos_ws_seen = 1;
            }
            if (ns->remove_extra_ws)
                bos_ws_seen = 0;
        }
        oom = add_unescaped(&t, p, pl) < 0;
    }
    if (!oom && bytes.n)
        oom = flush_bytes(&t, &bytes) < 0;
    free(bytes.p);
    if (!oom && m->has_denorm) {
        struct sbuf d = {0};
        if (normalize(&m->denorm, NULL, 0, (const uint8_t *)t.p, t.n, &d) < 0) {
            free(d.p);
            oom = 1;
        } else {
            free(t.p);
            t = d;
        }
    }
    if (oom) {
        free(t.p);
        return nlpd_error_set(err, NLPD_ENOMEM, 0, "%s: out of memory decoding", m->name);
    }
    *text = t.p;
    if (len)
        *len = t.n;
    return 0;
}

int nlpd_spm_decode_ids(const struct nlpd_spm *m, const int32_t *ids, size_t n, char **text, size_t *len,
                        struct nlpd_error *err)
{
    const char **p = malloc((n ? n : 1) * sizeof *p);
    size_t *l = malloc((n ? n : 1) * sizeof *l);
    if (!p || !l) {
        free(p);
        free(l);
        return nlpd_error_set(err, NLPD_ENOMEM, 0, "%s: out of memory decoding", m->name);
    }
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || (size_t)ids[i] >= m->n) {
            free(p);
            free(l);
            return nlpd_error_set(err, NLPD_ERANGE, 0, "%s: invalid id %d (the model has %zu pieces)", m->name,
                                  (int)ids[i], m->n);
        }
        p[i] = m->piece[ids[i]];
        l[i] = m->plen[ids[i]];
    }
    int rc = nlpd_spm_decode_pieces(m, p, l, n, text, len, err);
    free(p);
    free(l);
    return rc;
}
