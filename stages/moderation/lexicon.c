/* Word-list matcher of the moderation stage (see lexicon.h). Text and entries go through the same normaliser
 * (NFKC case folding, marks stripped from Latin/Greek/Cyrillic/Hebrew/Arabic letters, a few letters without a
 * decomposition mapped), then the text is split into word tokens whose obfuscated forms (leetspeak, stretched
 * letters, @mentions) are looked up whole; entries in scripts without spaces are looked up as substrings. */
#include "lexicon.h"
#include "grow.h"

#include <dirent.h>
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <utf8proc.h>

#define LANG_MAX     48
#define MAX_PHRASE   8  /* tokens in a phrase */
#define MAX_UNSPACED 32 /* code points in an unspaced entry */
#define MAX_SPELLED  32 /* letters of a spelled-out run looked at */
#define MAX_VARIANTS 18

/* Words innocent in common use that the lists would flag (whole phrases; a hit inside them is dropped). */
static const char *const builtin_allow[] = {
    "dick van dyke", "moby dick",     "philip k dick", "philip k. dick",       "dick cheney",
    "dick tracy",    "spotted dick",  "cum laude",     "magna cum laude",      "summa cum laude",
    "homo sapiens",  "homo erectus",  "homo habilis",  "homo sapiens sapiens", "con leche",
    "leche materna", "leche de vaca",
};
/* Per language: words whose common meaning there is innocent though a list of that language has them. The cuss
 * French list carries English loanwords ("fuck", "bitch", "retard"); in French "retard" is "late"/"delay". */
static const char *const builtin_allow_lang[][2] = {
    {"fr", "retard"},
};
/* Entries dropped only when the text's language is unknown (all lists used): common words of other languages. */
static const char *const ambiguous_all[] = {"con"};

enum { C_SEP = 0, C_WORD, C_SYM, C_UNSP };

/* ---------------------------------------------------------------- hash table */

struct entry {
    const char *key; /* normalised key (arena) */
    uint32_t klen;
    uint64_t hash;
    const char *orig; /* as written in the list (arena) */
    const char *list;
    int single; /* unspaced entry of one base letter: needs non-unspaced neighbours */
};

struct table {
    struct entry *slots;
    size_t cap, n;
};

struct langset {
    char code[LANG_MAX]; /* language subtag ("" for the union and the fallback) */
    struct table words, unspaced;
    int max_tok, max_ucp;
    struct table allow; /* never flagged in text of this language */
    int allow_max_tok;
};

struct chunk {
    struct chunk *next;
    size_t used, cap;
    char data[];
};

struct nlpd_lexicon {
    struct nlpd_lexicon_opts opts;
    struct langset all;
    struct langset fallback; /* the fallback lists' entries, for text in a language without a list */
    char (*fb)[LANG_MAX];    /* the fallback lists' subtags */
    size_t nfb;
    struct langset *langs;
    size_t nlangs;
    struct table allow, ambiguous;
    int allow_max_tok;
    size_t nentries, nlists;
    struct chunk *arena;
    struct nlpd_lexicon_scratch *s; /* for normalising entries */
};

static uint64_t hash_bytes(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 1099511628211ull;
    return h;
}

static const struct entry *table_get(const struct table *t, const char *key, size_t klen)
{
    if (!t->n)
        return NULL;
    uint64_t h = hash_bytes(key, klen);
    for (size_t i = (size_t)h & (t->cap - 1);; i = (i + 1) & (t->cap - 1)) {
        const struct entry *e = &t->slots[i];
        if (!e->key)
            return NULL;
        if (e->hash == h && e->klen == klen && memcmp(e->key, key, klen) == 0)
            return e;
    }
}

static int table_put(struct table *t, const struct entry *src)
{
    if ((t->n + 1) * 2 > t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        struct entry *slots = calloc(cap, sizeof *slots);
        if (!slots)
            return NLPD_ENOMEM;
        for (size_t i = 0; i < t->cap; i++) {
            if (!t->slots[i].key)
                continue;
            size_t j = (size_t)t->slots[i].hash & (cap - 1);
            while (slots[j].key)
                j = (j + 1) & (cap - 1);
            slots[j] = t->slots[i];
        }
        free(t->slots);
        t->slots = slots;
        t->cap = cap;
    }
    size_t i = (size_t)src->hash & (t->cap - 1);
    for (; t->slots[i].key; i = (i + 1) & (t->cap - 1))
        if (t->slots[i].hash == src->hash && t->slots[i].klen == src->klen &&
            memcmp(t->slots[i].key, src->key, src->klen) == 0)
            return 0; /* first list wins */
    t->slots[i] = *src;
    t->n++;
    return 0;
}

static char *arena_dup(struct nlpd_lexicon *lx, const char *s, size_t n)
{
    if (!lx->arena || lx->arena->cap - lx->arena->used < n + 1) {
        size_t cap = n + 1 > 65536 ? n + 1 : 65536;
        struct chunk *c = malloc(sizeof *c + cap);
        if (!c)
            return NULL;
        c->next = lx->arena;
        c->used = 0;
        c->cap = cap;
        lx->arena = c;
    }
    char *p = lx->arena->data + lx->arena->used;
    memcpy(p, s, n);
    p[n] = '\0';
    lx->arena->used += n + 1;
    return p;
}

/* ---------------------------------------------------------------- normaliser */

struct tok {
    size_t start, end; /* code points in s->cp */
    size_t var, nvar;  /* variants in s->vars */
    size_t pick[3];    /* variants for phrases: raw, fully normalised with runs to 2, to 1 */
    int gap;           /* gap before the token: 0 one intra-word mark (.-_*'), 1 spaces/hyphens, 2 other */
    int gap_short;     /* gap of at most 3 code points without a line break (spelled-out letters) */
};

struct var {
    size_t off, len; /* bytes in s->buf */
};

struct nlpd_lexicon_scratch {
    utf8proc_int32_t *cp;
    size_t ncp, cp_cap;
    unsigned char *cls;
    size_t cls_cap;
    struct tok *toks;
    size_t ntok, tok_cap;
    struct var *vars;
    size_t nvar, var_cap;
    char *buf; /* variant strings */
    size_t blen, bcap;
    char *key; /* keys being built */
    size_t klen, kcap;
    utf8proc_int32_t *tmp; /* one token's code points while making variants */
    size_t tmp_cap;
    utf8proc_int32_t *seg; /* unspaced segment */
    unsigned char *segcls;
    size_t seg_cap;
    unsigned char *allowed;
    size_t allowed_cap;
};

struct nlpd_lexicon_scratch *nlpd_lexicon_scratch_new(void)
{
    return calloc(1, sizeof(struct nlpd_lexicon_scratch));
}

void nlpd_lexicon_scratch_free(struct nlpd_lexicon_scratch *s)
{
    if (!s)
        return;
    free(s->cp);
    free(s->cls);
    free(s->toks);
    free(s->vars);
    free(s->buf);
    free(s->key);
    free(s->tmp);
    free(s->seg);
    free(s->segcls);
    free(s->allowed);
    free(s);
}

/* Letters whose accents are stripped (their scripts write accents optionally or as decoration). */
static int strip_base(utf8proc_int32_t c)
{
    return c < 0x0530 || (c >= 0x0590 && c < 0x0700) || (c >= 0x1D00 && c < 0x2000) || (c >= 0x2C60 && c < 0x2C80) ||
           (c >= 0xA640 && c < 0xA6A0) || (c >= 0xA720 && c < 0xA800) || (c >= 0xAB30 && c < 0xAB70);
}

/* Scripts written without spaces between words: entries match as substrings. */
static int unspaced_script(utf8proc_int32_t c)
{
    return (c >= 0x0E00 && c < 0x0F00) || (c >= 0x1000 && c < 0x10A0) || (c >= 0x1100 && c < 0x1200) ||
           (c >= 0x1780 && c < 0x1800) || (c >= 0x2E80 && c < 0x2FE0) || (c >= 0x3005 && c <= 0x3007) ||
           (c >= 0x3040 && c < 0x3190) || (c >= 0x31A0 && c < 0x3200) || (c >= 0x3400 && c < 0x4DC0) ||
           (c >= 0x4E00 && c < 0xA000) || (c >= 0xA960 && c < 0xA980) || (c >= 0xAC00 && c < 0xD800) ||
           (c >= 0xF900 && c < 0xFB00) || (c >= 0xFF66 && c < 0xFFA0) || (c >= 0x20000 && c < 0x40000);
}

static int is_mark(utf8proc_category_t k)
{
    return k == UTF8PROC_CATEGORY_MN || k == UTF8PROC_CATEGORY_MC || k == UTF8PROC_CATEGORY_ME;
}

static int is_letter(utf8proc_category_t k)
{
    return k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_LO;
}

static int is_space(utf8proc_int32_t c)
{
    return c == ' ' || c == '\t' || utf8proc_category(c) == UTF8PROC_CATEGORY_ZS;
}

static int is_break(utf8proc_int32_t c)
{
    return c == '\n' || c == '\r' || c == 0x2028 || c == 0x2029;
}

/* Text -> s->cp (normalised code points) and s->cls (their classes). */
static int normalise(struct nlpd_lexicon_scratch *s, const char *text, size_t len)
{
    const utf8proc_option_t opts =
        UTF8PROC_CASEFOLD | UTF8PROC_COMPAT | UTF8PROC_IGNORE | UTF8PROC_LUMP | UTF8PROC_DECOMPOSE | UTF8PROC_STABLE;
    utf8proc_ssize_t n;
    for (;;) {
        n = utf8proc_decompose((const utf8proc_uint8_t *)text, (utf8proc_ssize_t)len, s->cp,
                               (utf8proc_ssize_t)s->cp_cap, opts);
        if (n < 0)
            return n == UTF8PROC_ERROR_NOMEM ? NLPD_ENOMEM : NLPD_EINVAL;
        if ((size_t)n <= s->cp_cap)
            break;
        if (nlpd_grow((void **)&s->cp, &s->cp_cap, (size_t)n + 1, sizeof *s->cp))
            return NLPD_ENOMEM;
    }
    size_t j = 0;
    utf8proc_int32_t base = 0;
    for (size_t i = 0; i < (size_t)n; i++) {
        utf8proc_int32_t c = s->cp[i];
        utf8proc_category_t k = utf8proc_category(c);
        if (is_mark(k)) {
            if (!base || strip_base(base))
                continue;
        } else {
            base = is_letter(k) || k == UTF8PROC_CATEGORY_ND ? c : 0;
        }
        switch (c) {
        case 0x0142: c = 'l'; break; /* ł */
        case 0x00F8: c = 'o'; break; /* ø */
        case 0x0111: c = 'd'; break; /* đ */
        case 0x0131: c = 'i'; break; /* dotless i */
        case 0x0127: c = 'h'; break; /* ħ */
        case 0x0640: continue;       /* Arabic tatweel: stretches words */
        default: break;
        }
        s->cp[j++] = c;
    }
    n = utf8proc_normalize_utf32(s->cp, (utf8proc_ssize_t)j, UTF8PROC_COMPOSE | UTF8PROC_STABLE);
    if (n < 0)
        return NLPD_EINVAL;
    s->ncp = (size_t)n;
    if (nlpd_grow((void **)&s->cls, &s->cls_cap, s->ncp + 1, 1))
        return NLPD_ENOMEM;
    unsigned char prev = C_SEP;
    for (size_t i = 0; i < s->ncp; i++) {
        utf8proc_int32_t c = s->cp[i];
        utf8proc_category_t k = utf8proc_category(c);
        unsigned char cl;
        if (c == '@' || c == '$')
            cl = C_SYM;
        else if (is_mark(k))
            cl = prev == C_UNSP || prev == C_WORD ? prev : C_SEP;
        else if (is_letter(k) || (k >= UTF8PROC_CATEGORY_ND && k <= UTF8PROC_CATEGORY_NO))
            cl = unspaced_script(c) ? C_UNSP : C_WORD;
        else
            cl = C_SEP;
        s->cls[i] = prev = cl;
    }
    return 0;
}

static int key_reset(struct nlpd_lexicon_scratch *s)
{
    s->klen = 0;
    return nlpd_grow((void **)&s->key, &s->kcap, 64, 1);
}

static int key_put_cp(struct nlpd_lexicon_scratch *s, utf8proc_int32_t c)
{
    if (nlpd_grow((void **)&s->key, &s->kcap, s->klen + 5, 1))
        return NLPD_ENOMEM;
    s->klen += (size_t)utf8proc_encode_char(c, (utf8proc_uint8_t *)s->key + s->klen);
    return 0;
}

static int key_put(struct nlpd_lexicon_scratch *s, const char *p, size_t n)
{
    if (nlpd_grow((void **)&s->key, &s->kcap, s->klen + n + 1, 1))
        return NLPD_ENOMEM;
    memcpy(s->key + s->klen, p, n);
    s->klen += n;
    return 0;
}

/* Adds the UTF-8 of cp[0..n) as a variant of the current token unless it is already one; returns its index. */
static long add_variant(struct nlpd_lexicon_scratch *s, size_t first, const utf8proc_int32_t *cp, size_t n)
{
    size_t off = s->blen;
    if (nlpd_grow((void **)&s->buf, &s->bcap, s->blen + 4 * n + 1, 1))
        return NLPD_ENOMEM;
    for (size_t i = 0; i < n; i++)
        s->blen += (size_t)utf8proc_encode_char(cp[i], (utf8proc_uint8_t *)s->buf + s->blen);
    size_t len = s->blen - off;
    for (size_t v = first; v < s->nvar; v++)
        if (s->vars[v].len == len && memcmp(s->buf + s->vars[v].off, s->buf + off, len) == 0) {
            s->blen = off;
            return (long)v;
        }
    if (s->nvar - first >= MAX_VARIANTS) {
        s->blen = off;
        return (long)first;
    }
    if (nlpd_grow((void **)&s->vars, &s->var_cap, s->nvar + 1, sizeof *s->vars))
        return NLPD_ENOMEM;
    s->vars[s->nvar].off = off;
    s->vars[s->nvar].len = len;
    return (long)s->nvar++;
}

static utf8proc_int32_t leet(utf8proc_int32_t c, int one_is_l)
{
    switch (c) {
    case '0': return 'o';
    case '1': return one_is_l ? 'l' : 'i';
    case '3': return 'e';
    case '4': return 'a';
    case '5': return 's';
    case '7': return 't';
    case '@': return 'a';
    case '$': return 's';
    default: return c;
    }
}

/* Leetspeak applies to a token that has letters (or @ $) at least as many as digits, and only digits that
 * stand for letters: "sh1t", "@$$", "n1gg3r" but not "a55", "1990s", "2g1c". */
static int leet_applies(const utf8proc_int32_t *cp, size_t n)
{
    size_t letters = 0, digits = 0, leetable = 0;
    for (size_t i = 0; i < n; i++) {
        if (cp[i] >= '0' && cp[i] <= '9') {
            digits++;
            if (leet(cp[i], 0) == cp[i])
                return 0;
            leetable++;
        } else if (cp[i] == '@' || cp[i] == '$') {
            letters++;
            leetable++;
        } else if (is_letter(utf8proc_category(cp[i]))) {
            letters++;
        }
    }
    return leetable && letters && letters >= digits;
}

/* Runs of three or more equal letters collapsed to `to` (1 or 2); returns the new length. */
static size_t collapse(const utf8proc_int32_t *in, size_t n, utf8proc_int32_t *out, size_t to)
{
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && in[j] == in[i])
            j++;
        size_t run = j - i;
        if (run >= 3 && is_letter(utf8proc_category(in[i])))
            run = to;
        for (size_t r = 0; r < run; r++)
            out[o++] = in[i];
        i = j;
    }
    return o;
}

/* Makes the variants of one token given as code points; fills t->var, t->nvar and t->pick. */
static int make_variants(struct nlpd_lexicon_scratch *s, struct tok *t, const utf8proc_int32_t *cp, size_t n)
{
    size_t first = s->nvar;
    t->var = first;
    /* tmp holds: base (n), leet (n), collapsed (n) */
    if (nlpd_grow((void **)&s->tmp, &s->tmp_cap, 3 * n + 3, sizeof *s->tmp))
        return NLPD_ENOMEM;
    long raw = add_variant(s, first, cp, n);
    if (raw < 0)
        return (int)raw;
    t->pick[0] = t->pick[1] = t->pick[2] = (size_t)raw;
    /* bases: the token, and without the @ $ at its ends (mentions, "$hit" stays "$hit" too) */
    size_t b0 = 0, b1 = n;
    while (b0 < n && (cp[b0] == '@' || cp[b0] == '$'))
        b0++;
    while (b1 > b0 && (cp[b1 - 1] == '@' || cp[b1 - 1] == '$'))
        b1--;
    int nbases = (b0 > 0 || b1 < n) && b1 > b0 ? 2 : 1;
    for (int b = 0; b < nbases; b++) {
        const utf8proc_int32_t *bp = b ? cp + b0 : cp;
        size_t bn = b ? b1 - b0 : n;
        int lt = leet_applies(bp, bn);
        int has_one = 0;
        for (size_t i = 0; i < bn; i++)
            has_one |= bp[i] == '1';
        for (int l = 0; l < (lt ? (has_one ? 3 : 2) : 1); l++) {
            utf8proc_int32_t *lp = s->tmp + n;
            for (size_t i = 0; i < bn; i++)
                lp[i] = l == 0 ? bp[i] : leet(bp[i], l == 2);
            long v = add_variant(s, first, lp, bn);
            if (v < 0)
                return (int)v;
            utf8proc_int32_t *cpl = s->tmp + 2 * n;
            long c2 = add_variant(s, first, cpl, collapse(lp, bn, cpl, 2));
            if (c2 < 0)
                return (int)c2;
            long c1 = add_variant(s, first, cpl, collapse(lp, bn, cpl, 1));
            if (c1 < 0)
                return (int)c1;
            /* phrases use the fullest form: stripped base, leet with 1 -> i */
            if ((b == nbases - 1) && l == (lt ? 1 : 0)) {
                t->pick[1] = (size_t)c2;
                t->pick[2] = (size_t)c1;
            }
        }
    }
    t->nvar = s->nvar - first;
    return 0;
}

/* Splits s->cp into word tokens with their variants. */
static int tokenise(struct nlpd_lexicon_scratch *s)
{
    s->ntok = 0;
    s->nvar = 0;
    s->blen = 0;
    size_t i = 0, prev_end = 0;
    while (i < s->ncp) {
        if (s->cls[i] != C_WORD && s->cls[i] != C_SYM) {
            i++;
            continue;
        }
        size_t j = i;
        while (j < s->ncp && (s->cls[j] == C_WORD || s->cls[j] == C_SYM))
            j++;
        if (nlpd_grow((void **)&s->toks, &s->tok_cap, s->ntok + 1, sizeof *s->toks))
            return NLPD_ENOMEM;
        struct tok *t = &s->toks[s->ntok];
        t->start = i;
        t->end = j;
        /* the gap before: intra-word mark, spaces and hyphens, or other */
        int gap = 1, brk = 0, unsp = 0;
        size_t glen = i - prev_end;
        for (size_t g = prev_end; g < i; g++) {
            utf8proc_int32_t c = s->cp[g];
            brk |= is_break(c);
            unsp |= s->cls[g] == C_UNSP;
            if (!is_space(c) && c != '-' && c != '_')
                gap = 2;
        }
        if (glen == 1 && !unsp && strchr(".-_*'~+", (int)(s->cp[prev_end] < 128 ? s->cp[prev_end] : 'X')))
            gap = 0;
        if (s->ntok == 0 || brk || unsp)
            gap = 3;
        t->gap = gap;
        t->gap_short = s->ntok > 0 && !brk && !unsp && glen <= 3;
        int rc = make_variants(s, t, s->cp + i, j - i);
        if (rc)
            return rc;
        s->ntok++;
        prev_end = j;
        i = j;
    }
    return 0;
}

/* ---------------------------------------------------------------- loading */

static struct langset *langset_get(struct nlpd_lexicon *lx, const char *code)
{
    for (size_t i = 0; i < lx->nlangs; i++)
        if (strcmp(lx->langs[i].code, code) == 0)
            return &lx->langs[i];
    struct langset *l = realloc(lx->langs, (lx->nlangs + 1) * sizeof *l);
    if (!l)
        return NULL;
    lx->langs = l;
    l = &lx->langs[lx->nlangs++];
    memset(l, 0, sizeof *l);
    snprintf(l->code, sizeof l->code, "%s", code);
    return l;
}

/* Language subtag of a list name or a record's lang.code, lowercased, with a few aliases. */
static void primary_subtag(const char *name, char *out, size_t cap)
{
    size_t i = 0;
    for (; name[i] && name[i] != '-' && name[i] != '_' && i + 1 < cap; i++)
        out[i] = (char)(name[i] >= 'A' && name[i] <= 'Z' ? name[i] + 32 : name[i]);
    out[i] = '\0';
    static const char *const alias[][2] = {{"tl", "fil"}, {"nb", "no"}, {"nn", "no"}};
    for (size_t a = 0; a < sizeof alias / sizeof alias[0]; a++)
        if (strcmp(out, alias[a][0]) == 0)
            snprintf(out, cap, "%s", alias[a][1]);
}

/* Normalises an entry into s->key: words joined by one space, or, for an entry with a letter of an unspaced
 * script, the code points without the spaces (and marks) around them. Returns the number of words (0: the entry
 * has fewer than two letters and is left out) or -1 for an unspaced entry (*ucp: its code points, *single). */
static int entry_key(struct nlpd_lexicon_scratch *s, const char *entry, int *ucp, int *single)
{
    int rc = normalise(s, entry, strlen(entry));
    if (rc)
        return rc == NLPD_ENOMEM ? -2 : 0;
    size_t letters = 0, unsp = 0;
    for (size_t i = 0; i < s->ncp; i++) {
        letters += s->cls[i] == C_WORD || s->cls[i] == C_UNSP ? is_letter(utf8proc_category(s->cp[i])) : 0;
        unsp += s->cls[i] == C_UNSP;
    }
    if (key_reset(s))
        return -2;
    if (unsp) {
        size_t bases = 0, n = 0;
        for (size_t i = 0; i < s->ncp; i++) {
            if (s->cls[i] == C_SEP)
                continue;
            if (key_put_cp(s, s->cp[i]))
                return -2;
            n++;
            bases += !is_mark(utf8proc_category(s->cp[i]));
        }
        *ucp = (int)n;
        *single = bases == 1;
        return -1;
    }
    if (letters < 2)
        return 0;
    int words = 0;
    for (size_t i = 0; i < s->ncp;) {
        if (s->cls[i] == C_SEP) {
            i++;
            continue;
        }
        if (words && key_put(s, " ", 1))
            return -2;
        for (; i < s->ncp && s->cls[i] != C_SEP; i++)
            if (key_put_cp(s, s->cp[i]))
                return -2;
        words++;
    }
    return words;
}

static int put_entry(struct nlpd_lexicon *lx, struct langset *set, const struct entry *e, int words, int ucp)
{
    if (words < 0) {
        if (ucp > MAX_UNSPACED)
            return 0;
        if (ucp > set->max_ucp)
            set->max_ucp = ucp;
        return table_put(&set->unspaced, e);
    }
    if (words > MAX_PHRASE)
        return 0;
    (void)lx;
    if (words > set->max_tok)
        set->max_tok = words;
    return table_put(&set->words, e);
}

int nlpd_lexicon_add(struct nlpd_lexicon *lx, const char *lang, const char *entry, int rating)
{
    if (rating >= 0 && rating < lx->opts.min_rating)
        return 0;
    int ucp = 0, single = 0;
    int words = entry_key(lx->s, entry, &ucp, &single);
    if (words == -2)
        return NLPD_ENOMEM;
    if (words == 0)
        return 0;
    char code[LANG_MAX];
    primary_subtag(lang, code, sizeof code);
    struct langset *set = langset_get(lx, code);
    struct entry e = {0};
    e.klen = (uint32_t)lx->s->klen;
    e.key = arena_dup(lx, lx->s->key, lx->s->klen);
    e.orig = arena_dup(lx, entry, strlen(entry));
    e.list = arena_dup(lx, lang, strlen(lang));
    if (!set || !e.key || !e.orig || !e.list)
        return NLPD_ENOMEM;
    e.hash = hash_bytes(e.key, e.klen);
    e.single = single;
    if (put_entry(lx, set, &e, words, ucp) || put_entry(lx, &lx->all, &e, words, ucp))
        return NLPD_ENOMEM;
    for (size_t i = 0; i < lx->nfb; i++)
        if (strcmp(lx->fb[i], code) == 0 && put_entry(lx, &lx->fallback, &e, words, ucp))
            return NLPD_ENOMEM;
    lx->nentries++;
    return 0;
}

static int add_plain(struct nlpd_lexicon *lx, struct table *t, const char *phrase, int *max_tok)
{
    int ucp = 0, single = 0;
    int words = entry_key(lx->s, phrase, &ucp, &single);
    if (words == -2)
        return NLPD_ENOMEM;
    if (words <= 0 || words > MAX_PHRASE)
        return 0;
    struct entry e = {0};
    e.klen = (uint32_t)lx->s->klen;
    e.key = arena_dup(lx, lx->s->key, lx->s->klen);
    e.orig = e.list = e.key;
    if (!e.key)
        return NLPD_ENOMEM;
    e.hash = hash_bytes(e.key, e.klen);
    if (max_tok && words > *max_tok)
        *max_tok = words;
    return table_put(t, &e);
}

static int add_lang_allow(struct nlpd_lexicon *lx, const char *lang, const char *phrase)
{
    char code[LANG_MAX];
    primary_subtag(lang, code, sizeof code);
    struct langset *set = langset_get(lx, code);
    return set ? add_plain(lx, &set->allow, phrase, &set->allow_max_tok) : NLPD_ENOMEM;
}

struct nlpd_lexicon *nlpd_lexicon_new(const struct nlpd_lexicon_opts *opts, struct nlpd_error *err)
{
    struct nlpd_lexicon *lx = calloc(1, sizeof *lx);
    if (!lx || !(lx->s = nlpd_lexicon_scratch_new()))
        goto oom;
    if (opts)
        lx->opts = *opts;
    lx->opts.languages = NULL; /* not kept: only used while loading */
    lx->opts.allow = NULL;
    lx->opts.allow_lang_code = lx->opts.allow_lang = NULL;
    lx->opts.fallback = NULL;
    if (opts && opts->nfallback) {
        if (!(lx->fb = calloc(opts->nfallback, sizeof *lx->fb)))
            goto oom;
        for (; lx->nfb < opts->nfallback; lx->nfb++)
            primary_subtag(opts->fallback[lx->nfb], lx->fb[lx->nfb], LANG_MAX);
    }
    if (!(opts && opts->no_builtin_allow))
        for (size_t i = 0; i < sizeof builtin_allow_lang / sizeof builtin_allow_lang[0]; i++)
            if (add_lang_allow(lx, builtin_allow_lang[i][0], builtin_allow_lang[i][1]))
                goto oom;
    for (size_t i = 0; opts && i < opts->nallow_lang; i++)
        if (add_lang_allow(lx, opts->allow_lang_code[i], opts->allow_lang[i]))
            goto oom;
    if (!(opts && opts->no_builtin_allow))
        for (size_t i = 0; i < sizeof builtin_allow / sizeof builtin_allow[0]; i++)
            if (add_plain(lx, &lx->allow, builtin_allow[i], &lx->allow_max_tok))
                goto oom;
    for (size_t i = 0; opts && i < opts->nallow; i++)
        if (add_plain(lx, &lx->allow, opts->allow[i], &lx->allow_max_tok))
            goto oom;
    for (size_t i = 0; i < sizeof ambiguous_all / sizeof ambiguous_all[0]; i++)
        if (add_plain(lx, &lx->ambiguous, ambiguous_all[i], NULL))
            goto oom;
    return lx;
oom:
    nlpd_lexicon_free(lx);
    nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
    return NULL;
}

static void langset_free(struct langset *l)
{
    free(l->words.slots);
    free(l->unspaced.slots);
    free(l->allow.slots);
}

void nlpd_lexicon_free(struct nlpd_lexicon *lx)
{
    if (!lx)
        return;
    langset_free(&lx->all);
    langset_free(&lx->fallback);
    free(lx->fb);
    for (size_t i = 0; i < lx->nlangs; i++)
        langset_free(&lx->langs[i]);
    free(lx->langs);
    free(lx->allow.slots);
    free(lx->ambiguous.slots);
    while (lx->arena) {
        struct chunk *c = lx->arena;
        lx->arena = c->next;
        free(c);
    }
    nlpd_lexicon_scratch_free(lx->s);
    free(lx);
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n > m && strcmp(s + n - m, suffix) == 0;
}

static int wanted(const char *list, const struct nlpd_lexicon_opts *o, unsigned char *used)
{
    if (!o || !o->nlanguages)
        return 1;
    char code[LANG_MAX];
    primary_subtag(list, code, sizeof code);
    int want = 0;
    for (size_t i = 0; i < o->nlanguages; i++)
        if (strcasecmp(o->languages[i], list) == 0 || strcasecmp(o->languages[i], code) == 0) {
            used[i] = 1;
            want = 1;
        }
    return want;
}

static int load_file(struct nlpd_lexicon *lx, const char *path, const struct nlpd_lexicon_opts *o, unsigned char *used,
                     struct nlpd_error *err)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    char list[LANG_MAX];
    size_t bl = strlen(base);
    if (ends_with(base, ".json"))
        bl -= 5;
    if (bl == 0 || bl >= sizeof list)
        return nlpd_error_set(err, NLPD_EINVAL, 0, "lexicon %s: the file name is not a language tag", path);
    memcpy(list, base, bl);
    list[bl] = '\0';
    if (!wanted(list, o, used))
        return 0;
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root)
        return nlpd_error_set(err, NLPD_EFORMAT, 0, "lexicon %s:%d: %s", path, je.line, je.text);
    int rc = 0;
    if (json_is_array(root)) {
        size_t i;
        json_t *v;
        json_array_foreach(root, i, v)
        {
            if (!json_is_string(v)) {
                rc = nlpd_error_set(err, NLPD_EFORMAT, 0, "lexicon %s: item %zu is not a string", path, i);
                break;
            }
            if ((rc = nlpd_lexicon_add(lx, list, json_string_value(v), -1)))
                break;
        }
    } else if (json_is_object(root)) {
        const char *k;
        json_t *v;
        json_object_foreach(root, k, v)
        {
            if (!json_is_integer(v)) {
                rc =
                    nlpd_error_set(err, NLPD_EFORMAT, 0, "lexicon %s: the rating of \"%s\" is not an integer", path, k);
                break;
            }
            if ((rc = nlpd_lexicon_add(lx, list, k, (int)json_integer_value(v))))
                break;
        }
    } else {
        rc = nlpd_error_set(err, NLPD_EFORMAT, 0,
                            "lexicon %s: expected a JSON array of strings or an object {\"word\": rating}", path);
    }
    json_decref(root);
    if (rc == NLPD_ENOMEM)
        nlpd_error_set(err, rc, 0, "out of memory");
    if (!rc)
        lx->nlists++;
    return rc;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Loads the *.json of DIR (sorted, for a deterministic "first list wins"), and its subfolders when depth > 0. */
static int load_dir(struct nlpd_lexicon *lx, const char *dir, int depth, const struct nlpd_lexicon_opts *o,
                    unsigned char *used, struct nlpd_error *err)
{
    DIR *d = opendir(dir);
    if (!d)
        return nlpd_error_set(err, NLPD_EIO, 0, "lexicon %s: cannot open the folder", dir);
    char **names = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        if (nlpd_grow((void **)&names, &cap, n + 1, sizeof *names) || !(names[n] = strdup(de->d_name))) {
            rc = nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
            break;
        }
        n++;
    }
    closedir(d);
    if (n)
        qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n && !rc; i++) {
        size_t plen = strlen(dir) + strlen(names[i]) + 2;
        char *p = malloc(plen);
        if (!p) {
            rc = nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
            break;
        }
        snprintf(p, plen, "%s/%s", dir, names[i]);
        struct stat st;
        if (stat(p, &st) == 0 && S_ISDIR(st.st_mode)) {
            if (depth > 0)
                rc = load_dir(lx, p, depth - 1, o, used, err);
        } else if (ends_with(names[i], ".json")) {
            rc = load_file(lx, p, o, used, err);
        }
        free(p);
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc;
}

struct nlpd_lexicon *nlpd_lexicon_load(const char *path, const struct nlpd_lexicon_opts *opts, struct nlpd_error *err)
{
    struct nlpd_lexicon *lx = nlpd_lexicon_new(opts, err);
    if (!lx)
        return NULL;
    unsigned char *used = calloc(opts && opts->nlanguages ? opts->nlanguages : 1, 1);
    struct stat st;
    int rc;
    if (!used)
        rc = nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
    else if (stat(path, &st) != 0)
        rc = nlpd_error_set(err, NLPD_ENOTFOUND, 0, "lexicon %s: not found (run `make models`)", path);
    else if (S_ISDIR(st.st_mode))
        rc = load_dir(lx, path, 1, opts, used, err);
    else
        rc = load_file(lx, path, NULL, used, err);
    for (size_t i = 0; !rc && opts && i < opts->nlanguages && S_ISDIR(st.st_mode); i++)
        if (!used[i])
            rc = nlpd_error_set(err, NLPD_ENOTFOUND, 0, "lexicon %s: no word list for language \"%s\"", path,
                                opts->languages[i]);
    for (size_t i = 0; !rc && i < lx->nfb; i++)
        if (!nlpd_lexicon_has_language(lx, lx->fb[i]))
            rc = nlpd_error_set(err, NLPD_ENOTFOUND, 0, "lexicon %s: no word list for fallback language \"%s\"", path,
                                opts->fallback[i]);
    if (!rc && lx->nentries == 0)
        rc = nlpd_error_set(err, NLPD_EFORMAT, 0, "lexicon %s: no word lists (*.json) with entries", path);
    free(used);
    if (rc) {
        nlpd_lexicon_free(lx);
        return NULL;
    }
    /* the loading scratch is not needed any more */
    nlpd_lexicon_scratch_free(lx->s);
    lx->s = NULL;
    return lx;
}

size_t nlpd_lexicon_size(const struct nlpd_lexicon *lx)
{
    return lx->nentries;
}

size_t nlpd_lexicon_nlists(const struct nlpd_lexicon *lx)
{
    return lx->nlists;
}

static const struct langset *find_lang(const struct nlpd_lexicon *lx, const char *code)
{
    if (!code || !*code)
        return NULL;
    char c[LANG_MAX];
    primary_subtag(code, c, sizeof c);
    for (size_t i = 0; i < lx->nlangs; i++) /* a language with only allowed phrases has no list */
        if (strcmp(lx->langs[i].code, c) == 0 && lx->langs[i].words.n + lx->langs[i].unspaced.n)
            return &lx->langs[i];
    return NULL;
}

int nlpd_lexicon_has_language(const struct nlpd_lexicon *lx, const char *code)
{
    return find_lang(lx, code) != NULL;
}

int nlpd_lexicon_checks(const struct nlpd_lexicon *lx, const char *code)
{
    return !code || !*code || find_lang(lx, code) || lx->fallback.words.n + lx->fallback.unspaced.n;
}

/* ---------------------------------------------------------------- matching */

struct match_ctx {
    const struct nlpd_lexicon *lx;
    const struct langset *set;
    struct nlpd_lexicon_scratch *s;
    int fallback; /* not the text's language's lists: the union or the fallback lists */
    struct nlpd_lexicon_hit *hit;
};

static int found(struct match_ctx *m, const struct entry *e)
{
    if (m->fallback && table_get(&m->lx->ambiguous, e->key, e->klen))
        return 0;
    if (m->hit) {
        m->hit->entry = e->orig;
        m->hit->list = e->list;
    }
    return 1;
}

/* Key of tokens [i, i + k) in pick p, joined by spaces (or, with join = 0, concatenated) into s->key. */
static int window_key(struct nlpd_lexicon_scratch *s, size_t i, size_t k, int p, int join)
{
    if (key_reset(s))
        return NLPD_ENOMEM;
    for (size_t j = i; j < i + k; j++) {
        const struct var *v = &s->vars[s->toks[j].pick[p]];
        if ((join && j > i && key_put(s, " ", 1)) || key_put(s, s->buf + v->off, v->len))
            return NLPD_ENOMEM;
    }
    return 0;
}

static int window_all_allowed(const struct nlpd_lexicon_scratch *s, size_t i, size_t k)
{
    for (size_t j = i; j < i + k; j++)
        if (!s->allowed[j])
            return 0;
    return 1;
}

static int window_has_variants(const struct nlpd_lexicon_scratch *s, size_t i, size_t k)
{
    for (size_t j = i; j < i + k; j++)
        if (s->toks[j].nvar > 1)
            return 1;
    return 0;
}

static void mark_allowed_by(const struct table *allow, int max_tok, struct nlpd_lexicon_scratch *s)
{
    if (!allow->n)
        return;
    for (size_t i = 0; i < s->ntok; i++)
        for (size_t k = 1; k <= (size_t)max_tok && i + k <= s->ntok; k++) {
            if (k > 1 && s->toks[i + k - 1].gap >= 2)
                break;
            for (int p = 0; p < 2; p++)
                if (!window_key(s, i, k, p, 1) && table_get(allow, s->key, s->klen))
                    memset(s->allowed + i, 1, k);
        }
}

static void mark_allowed(const struct nlpd_lexicon *lx, const struct langset *set, struct nlpd_lexicon_scratch *s)
{
    memset(s->allowed, 0, s->ntok);
    mark_allowed_by(&lx->allow, lx->allow_max_tok, s);
    if (set)
        mark_allowed_by(&set->allow, set->allow_max_tok, s);
}

/* Words and phrases: every token's variants, phrases of the fullest forms, intra-word marks (f-uck) joined. */
static int match_words(struct match_ctx *m)
{
    struct nlpd_lexicon_scratch *s = m->s;
    const struct table *t = &m->set->words;
    for (size_t i = 0; i < s->ntok; i++) {
        const struct tok *tk = &s->toks[i];
        if (!s->allowed[i])
            for (size_t v = tk->var; v < tk->var + tk->nvar; v++) {
                const struct entry *e = table_get(t, s->buf + s->vars[v].off, s->vars[v].len);
                if (e && found(m, e))
                    return 1;
            }
        for (size_t k = 2; k <= (size_t)m->set->max_tok && i + k <= s->ntok; k++) {
            if (s->toks[i + k - 1].gap >= 2)
                break;
            if (window_all_allowed(s, i, k))
                continue;
            int np = window_has_variants(s, i, k) ? 3 : 1;
            for (int p = 0; p < np; p++) {
                if (window_key(s, i, k, p, 1))
                    return NLPD_ENOMEM;
                const struct entry *e = table_get(t, s->key, s->klen);
                if (e && found(m, e))
                    return 1;
            }
        }
        /* "fu-ck", "sh.it": up to four tokens split by single intra-word marks */
        for (size_t k = 2; k <= 4 && i + k <= s->ntok; k++) {
            if (s->toks[i + k - 1].gap != 0)
                break;
            if (window_all_allowed(s, i, k))
                continue;
            for (int p = 0; p < 3; p++) {
                if (window_key(s, i, k, p, 0))
                    return NLPD_ENOMEM;
                const struct entry *e = table_get(t, s->key, s->klen);
                if (e && found(m, e))
                    return 1;
            }
        }
    }
    return 0;
}

/* Spelled-out words: three or more one-letter tokens a short gap apart ("f u c k", "f.u.c.k", "$ h 1 t");
 * every stretch of three or more of them is looked up as a word. */
static int match_spelled(struct match_ctx *m)
{
    struct nlpd_lexicon_scratch *s = m->s;
    utf8proc_int32_t run[MAX_SPELLED];
    for (size_t i = 0; i < s->ntok;) {
        size_t j = i;
        while (j < s->ntok && s->toks[j].end - s->toks[j].start == 1 && (j == i || s->toks[j].gap_short))
            j++;
        if (j - i < 3) {
            i = j > i ? j : i + 1;
            continue;
        }
        size_t n = j - i < MAX_SPELLED ? j - i : MAX_SPELLED;
        for (size_t r = 0; r < n; r++)
            run[r] = s->cp[s->toks[i + r].start];
        for (size_t a = 0; a + 3 <= n; a++)
            for (size_t b = a + 3; b <= n; b++) {
                if (window_all_allowed(s, i + a, b - a))
                    continue;
                /* variants go after the text's; they are dropped afterwards */
                size_t nvar = s->nvar, blen = s->blen;
                struct tok t;
                int rc = make_variants(s, &t, run + a, b - a);
                if (rc)
                    return rc;
                for (size_t v = t.var; v < t.var + t.nvar; v++) {
                    const struct entry *e = table_get(&m->set->words, s->buf + s->vars[v].off, s->vars[v].len);
                    if (e && found(m, e))
                        return 1;
                }
                s->nvar = nvar;
                s->blen = blen;
            }
        i = j;
    }
    return 0;
}

#define SPACED    0x10 /* segcls: spaces were dropped before this letter */
#define SEGCLS(i) (s->segcls[i] & 0x0f)

static int match_segment(struct match_ctx *m, size_t n)
{
    struct nlpd_lexicon_scratch *s = m->s;
    for (size_t p = 0; p < n; p++) {
        if (SEGCLS(p) != C_UNSP && p > 0 && SEGCLS(p - 1) != C_UNSP && !(s->segcls[p] & SPACED))
            continue;
        if (key_reset(s))
            return NLPD_ENOMEM;
        for (size_t q = p + 1; q <= n && q - p <= (size_t)m->set->max_ucp; q++) {
            if (key_put_cp(s, s->seg[q - 1]))
                return NLPD_ENOMEM;
            const struct entry *e = table_get(&m->set->unspaced, s->key, s->klen);
            if (!e)
                continue;
            if (SEGCLS(q - 1) != C_UNSP && q < n && SEGCLS(q) != C_UNSP && !(s->segcls[q] & SPACED))
                continue;
            if (e->single && ((p > 0 && SEGCLS(p - 1) == C_UNSP && !(s->segcls[p] & SPACED)) ||
                              (q < n && SEGCLS(q) == C_UNSP && !(s->segcls[q] & SPACED))))
                continue;
            if (found(m, e))
                return 1;
        }
    }
    return 0;
}

/* Entries with letters of unspaced scripts: substrings of segments (runs of letters; spaces next to an unspaced
 * letter are dropped). A match may not start or end inside a spaced word; a one-letter entry needs neighbours
 * that are not unspaced letters (乳 alone, but not 牛乳 "milk"). */
static int match_unspaced(struct match_ctx *m)
{
    struct nlpd_lexicon_scratch *s = m->s;
    int any = 0;
    for (size_t i = 0; i < s->ncp && !any; i++)
        any = s->cls[i] == C_UNSP;
    if (!any)
        return 0;
    if (nlpd_grow((void **)&s->seg, &s->seg_cap, s->ncp + 1, sizeof *s->seg))
        return NLPD_ENOMEM;
    size_t cap = s->seg_cap;
    unsigned char *sc = realloc(s->segcls, cap);
    if (!sc)
        return NLPD_ENOMEM;
    s->segcls = sc;
    size_t n = 0, u = 0;
    int spaced = 0;
    for (size_t i = 0; i <= s->ncp;) {
        if (i < s->ncp && s->cls[i] != C_SEP) {
            s->seg[n] = s->cp[i];
            s->segcls[n++] = (unsigned char)(s->cls[i] | (spaced ? SPACED : 0));
            spaced = 0;
            u += s->cls[i] == C_UNSP;
            i++;
            continue;
        }
        /* spaces between two letters, one of them unspaced, are dropped */
        size_t k = i;
        while (k < s->ncp && is_space(s->cp[k]))
            k++;
        if (k > i && n > 0 && k < s->ncp && s->cls[k] != C_SEP &&
            ((s->segcls[n - 1] & 0x0f) == C_UNSP || s->cls[k] == C_UNSP)) {
            i = k;
            spaced = 1;
            continue;
        }
        if (u) {
            int rc = match_segment(m, n);
            if (rc)
                return rc;
        }
        n = u = 0;
        spaced = 0;
        i++;
    }
    return 0;
}

int nlpd_lexicon_match(const struct nlpd_lexicon *lx, struct nlpd_lexicon_scratch *s, const char *lang,
                       const char *text, size_t len, struct nlpd_lexicon_hit *hit)
{
    struct match_ctx m = {lx, find_lang(lx, lang), s, 0, hit};
    const struct langset *own = m.set;
    if (!m.set) {
        /* a known language without a list: other languages' lists would flag its innocent words (Vietnamese
         * "hộ" is the English list's "ho"), so only the configured fallback lists, maybe none */
        m.set = lang && *lang ? &lx->fallback : &lx->all;
        m.fallback = 1;
    }
    if (!m.set->words.n && !m.set->unspaced.n)
        return 0;
    int rc = normalise(s, text, len);
    if (!rc)
        rc = tokenise(s);
    if (!rc && nlpd_grow((void **)&s->allowed, &s->allowed_cap, s->ntok + 1, 1))
        rc = NLPD_ENOMEM;
    if (rc)
        return rc;
    mark_allowed(lx, own, s);
    if ((rc = match_words(&m)))
        return rc;
    if (m.set->words.n && (rc = match_spelled(&m)))
        return rc;
    if (m.set->unspaced.n && (rc = match_unspaced(&m)))
        return rc;
    return 0;
}
