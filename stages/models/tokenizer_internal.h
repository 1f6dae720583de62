/* Internals shared by the tokenizer files: the aligned character buffer every stage works on, the vocabulary
 * hash, the mini regex, and the normaliser / pre-tokeniser / model descriptions that tokenizer.c loads and runs.
 * Not a public header: only stages/models/tokenizer*.c include it. */
#ifndef NLPD_TOKENIZER_INTERNAL_H
#define NLPD_TOKENIZER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

/* One code point of a working string with the ORIGINAL byte range it came from (HF's alignments, kept per
 * char: every byte of a char carries the same range there too). */
struct tchar {
    int32_t cp;
    uint32_t os, oe;
};

struct tstr {
    struct tchar *c;
    size_t n, cap;
};

int nlpd_tstr_reserve(struct tstr *s, size_t need);
int nlpd_tstr_push(struct tstr *s, int32_t cp, uint32_t os, uint32_t oe);
void nlpd_tstr_free(struct tstr *s);

/* Unicode predicates with the semantics of Rust's char methods (via utf8proc categories). */
int nlpd_tok_is_whitespace(int32_t cp);          /* char::is_whitespace (White_Space) */
int nlpd_tok_is_alnum(int32_t cp);               /* char::is_alphanumeric (L*, N*) */
int nlpd_tok_is_letter(int32_t cp);              /* \p{L} */
int nlpd_tok_is_number(int32_t cp);              /* \p{N} */
int nlpd_tok_is_punct(int32_t cp);               /* \p{P} */
int nlpd_tok_utf8_encode(int32_t cp, char *out); /* returns bytes written (1..4) */

/* ------------------------------------------------------------------ vocabulary hash (string -> id) */
struct tvocab {
    char **str;     /* by id, NULL for holes */
    uint32_t *len;  /* by id */
    int32_t nids;   /* max id + 1 */
    int32_t *slots; /* open addressing, -1 empty */
    size_t mask, used;
};

int nlpd_tvocab_init(struct tvocab *v, size_t expect);
/* Sets token -> id (a later set of the same string wins, as HashMap::insert does). */
int nlpd_tvocab_set(struct tvocab *v, const char *s, size_t len, int32_t id);
int32_t nlpd_tvocab_get(const struct tvocab *v, const char *s, size_t len);
void nlpd_tvocab_free(struct tvocab *v);

/* ------------------------------------------------------------------ mini regex */
/* Backtracking matcher over code points: literals, ., classes, \s \S \d \D \w \W \p{..} \P{..}, groups (?:...) and
 * (...), alternation, greedy and lazy quantifiers * + ? {n} {n,} {n,m}, anchors ^ $, lookahead (?=) (?!).
 * Anything else is rejected at load time, so a pattern that loads is matched exactly. */
struct trx;
/* NULL with err (the reason alone: a syntax error NLPD_EFORMAT, "regex too large" NLPD_ERANGE, NLPD_ENOMEM). */
struct trx *nlpd_trx_compile(const char *pat, size_t len, struct nlpd_error *err);
/* Leftmost match starting at or after `from`; returns 1 and [*ms, *me) or 0. */
int nlpd_trx_find(const struct trx *rx, const struct tchar *s, size_t n, size_t from, size_t *ms, size_t *me);
void nlpd_trx_free(struct trx *rx);

/* ------------------------------------------------------------------ normalisers */
enum tnorm_type {
    TN_BERT,
    TN_PRECOMPILED,
    TN_NFC,
    TN_NFD,
    TN_NFKC,
    TN_NFKD,
    TN_LOWERCASE,
    TN_STRIP_ACCENTS,
    TN_REPLACE,
    TN_PREPEND,
    TN_STRIP,
    TN_SEQUENCE,
    TN_NMT,
};

struct tnorm {
    enum tnorm_type type;
    int clean_text, handle_chinese, strip_accents, lowercase; /* Bert */
    int strip_left, strip_right;                              /* Strip */
    int spm_mode;      /* Precompiled: sentencepiece's longest match instead of HF's graphemes */
    uint8_t *charsmap; /* Precompiled: the decoded blob */
    size_t charsmap_len;
    const uint32_t *trie; /* into charsmap */
    size_t trie_units;
    const char *normalized; /* into charsmap */
    size_t normalized_len;
    int32_t *pat;
    size_t pat_n;   /* Replace (string pattern) */
    struct trx *rx; /* Replace (regex pattern) */
    int32_t *content;
    size_t content_n; /* Replace / Prepend */
    struct tnorm *subs;
    size_t nsubs;
};

/* Normalises s in place (tmp is scratch). Returns 0 or NLPD_ENOMEM. */
int nlpd_tnorm_apply(const struct tnorm *n, struct tstr *s, struct tstr *tmp);
void nlpd_tnorm_free(struct tnorm *n);
/* Checks and indexes a decoded precompiled_charsmap blob (takes ownership of blob). 0 or -1. */
int nlpd_tnorm_precompiled_init(struct tnorm *n, uint8_t *blob, size_t len);

/* ------------------------------------------------------------------ pre-tokenisers */
enum tpre_type {
    TP_BERT,
    TP_WHITESPACE,
    TP_WHITESPACE_SPLIT,
    TP_METASPACE,
    TP_BYTELEVEL,
    TP_PUNCTUATION,
    TP_DIGITS,
    TP_SPLIT,
    TP_SEQUENCE,
};

enum tsplit_behavior { TB_REMOVED, TB_ISOLATED, TB_MERGED_PREV, TB_MERGED_NEXT, TB_CONTIGUOUS };

struct tpre {
    enum tpre_type type;
    int32_t replacement;             /* Metaspace */
    int prepend_scheme;              /* Metaspace: 0 always, 1 first, 2 never */
    int split;                       /* Metaspace */
    int add_prefix_space, use_regex; /* ByteLevel */
    int individual_digits;           /* Digits */
    enum tsplit_behavior behavior;   /* Punctuation, Split */
    int invert;                      /* Split */
    int32_t *pat;
    size_t pat_n;   /* Split (string) */
    struct trx *rx; /* Split (regex) */
    struct tpre *subs;
    size_t nsubs;
};

/* A list of pieces, each a run of chars in one buffer. */
struct tpieces {
    struct tstr buf;
    size_t *off, *len;
    size_t n, cap;
};

int nlpd_tpieces_add(struct tpieces *p, const struct tchar *c, size_t n);
void nlpd_tpieces_free(struct tpieces *p);
/* Pre-tokenises every piece of in into out (cleared first); tmp is scratch. 0 or NLPD_ENOMEM. */
int nlpd_tpre_apply(const struct tpre *pt, struct tpieces *in, struct tpieces *out, struct tpieces *tmp);
void nlpd_tpre_free(struct tpre *pt);
extern const int32_t nlpd_tok_byte_to_char[256]; /* ByteLevel's bytes_char table */

/* ------------------------------------------------------------------ models */
enum tmodel_type { TM_WORDPIECE, TM_UNIGRAM, TM_BPE };

struct tmerge_slot {
    uint64_t key; /* left << 32 | right, UINT64_MAX when empty */
    int32_t rank, id;
};

struct tmodel {
    enum tmodel_type type;
    struct tvocab vocab;
    int32_t unk_id; /* -1 when none */
    /* WordPiece */
    char *prefix;
    size_t prefix_len; /* also BPE continuing_subword_prefix */
    size_t max_input_chars;
    /* Unigram */
    double *scores; /* by id */
    double min_score;
    size_t max_piece_len; /* bytes */
    int byte_fallback, fuse_unk;
    /* BPE */
    char *suffix;
    size_t suffix_len; /* end_of_word_suffix */
    int ignore_merges;
    struct tmerge_slot *merges;
    size_t merges_mask;
};

struct ttok {
    int32_t id;
    uint32_t bs, be; /* byte range in the piece */
};

struct tscratch_model {
    struct ttok *t;
    size_t n, cap; /* output */
    /* Unigram lattice / BPE symbols */
    double *score;
    int32_t *from, *id;
    size_t lat_cap;
    int32_t *sym_id;
    uint32_t *sym_s, *sym_e;
    size_t sym_cap;
    char *str;
    size_t str_cap;
};

/* Tokenises one pre-tokenised piece (UTF-8, s[0..len)) and appends its tokens to sc->t. 0 or negative code. */
int nlpd_tmodel_tokenize(const struct tmodel *m, const char *s, size_t len, struct tscratch_model *sc,
                         struct nlpd_error *err);
int nlpd_tmodel_merge_add(struct tmodel *m, int32_t left, int32_t right, int32_t rank, int32_t id);
void nlpd_tmodel_free(struct tmodel *m);
void nlpd_tscratch_model_free(struct tscratch_model *sc);

/* ------------------------------------------------------------------ decoders (tokenizer_decode.c) */
enum tdec_type {
    TD_WORDPIECE,
    TD_METASPACE,
    TD_BYTELEVEL,
    TD_BPE,
    TD_BYTEFALLBACK,
    TD_FUSE,
    TD_STRIP,
    TD_REPLACE,
    TD_CTC,
    TD_SEQUENCE,
};

struct tdec {
    enum tdec_type type;
    char *s1;
    size_t s1_len; /* WordPiece prefix, BPE suffix, Replace content, CTC pad_token */
    char *s2;
    size_t s2_len;       /* CTC word_delimiter_token */
    int cleanup;         /* WordPiece, CTC */
    int32_t replacement; /* Metaspace */
    int prepend_scheme;  /* Metaspace: 0 always, 1 first, 2 never */
    int32_t content;     /* Strip */
    size_t start, stop;  /* Strip */
    int32_t *pat;
    size_t pat_n;   /* Replace (string) */
    struct trx *rx; /* Replace (regex) */
    struct tdec *subs;
    size_t nsubs;
};

void nlpd_tdec_free(struct tdec *d); /* frees what d owns, not d */
/* The decoder transformers' converters give a legacy folder: TD_WORDPIECE ("##", cleanup), TD_METASPACE
 * (U+2581, always) or TD_BYTELEVEL. 0 or NLPD_ENOMEM. */
int nlpd_tdec_set_simple(struct tdec *d, enum tdec_type type);

/* ------------------------------------------------------------------ the tokenizer */
struct added_tok {
    char *content;
    size_t len;
    int32_t *cps;
    size_t ncps;
    int32_t id;
    int special, single_word, lstrip, rstrip, normalized;
};

struct tpl_item {
    int is_seq, seq; /* Sequence A (0) or B (1), else special ids */
    int32_t type_id;
    int32_t *ids;
    size_t nids;
};

struct tpost {
    int has_template;
    struct tpl_item *single, *pair;
    size_t nsingle, npair;
    int trim_offsets, add_prefix_space; /* ByteLevel / Roberta offsets trimming */
};

struct nlpd_tokenizer {
    struct tnorm *norm; /* NULL: none */
    struct tpre *pre;   /* NULL: none */
    struct tmodel model;
    struct added_tok *added;
    size_t nadded;
    uint64_t first_mask[4]; /* added tokens' first code points, low 8 bits */
    struct tpost post;
    size_t nspecial_single, nspecial_pair;
    size_t model_max_length; /* 0: unlimited */
    int32_t pad_id;
    int32_t nids;
    const char **id_str;  /* by id: into the vocab or the added tokens */
    const char **dec_str; /* by id, as the Rust id_to_token: the added token first, else the vocab */
    uint8_t *dec_special; /* by id: dec_str is the content of a special added token */
    struct tdec *dec;     /* NULL: tokens joined with " " */
    int clean_up_spaces;  /* tokenizer_config.json clean_up_tokenization_spaces (transformers' decode) */
};

struct nlpd_tokenizer *nlpd_tok_new(void);
/* spm.model + tokenizer_config.json (cfg) / special_tokens_map.json (map), either may be NULL: DeBERTa-v2/v3's
 * DebertaV2Converter tokenizer (tokenizer_deberta.c). */
struct json_t;
struct nlpd_tokenizer *nlpd_tok_load_deberta_spm(const char *dir, struct json_t *cfg, struct json_t *map,
                                                 struct nlpd_error *err);
/* The same from spm.model's bytes (path names it in errors; dir, for added_tokens.json, may be NULL). */
struct nlpd_tokenizer *nlpd_tok_deberta_spm_mem(const void *data, size_t len, const char *path, const char *dir,
                                                struct json_t *cfg, struct json_t *map, struct nlpd_error *err);
int nlpd_tok_finish(struct nlpd_tokenizer *t, const char *pad_token);
int nlpd_tok_add_token(struct nlpd_tokenizer *t, const char *content, size_t len, int32_t id, int special,
                       int single_word, int lstrip, int rstrip, int normalized);
int nlpd_tok_post_bert_like(struct tpost *p, int32_t cls, int32_t sep, int roberta);
int nlpd_tok_unigram_finish(struct tmodel *m);
/* err gets the reason alone ("merge token not in the vocabulary"); callers add where the merge came from. */
int nlpd_tok_bpe_add_merge(struct tmodel *m, const char *a, size_t al, const char *b, size_t bl, int32_t rank,
                           struct nlpd_error *err);

#endif
