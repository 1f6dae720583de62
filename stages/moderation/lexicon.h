/* The moderation stage's word-list matcher: JSON word lists (LDNOOBW arrays, cuss {word: rating} objects) loaded
 * into one hash set per language plus their union, and a matcher that normalises text against obfuscation
 * (case folding, accents, leetspeak, stretched letters, spelled-out letters) and matches whole words and phrases;
 * entries of scripts written without spaces (CJK, Thai) match as substrings. */
#ifndef NLPD_LEXICON_H
#define NLPD_LEXICON_H

#include <stddef.h>

#include "nlpd_error.h"

struct nlpd_lexicon;
struct nlpd_lexicon_scratch;

struct nlpd_lexicon_opts {
    int min_rating;               /* rated lists (cuss: 0..2): entries rated below this are left out */
    const char *const *languages; /* load only these lists (a file's name without .json, or its language
                                     subtag: "fr" loads fr.json and fr-CA-....json); NULL/0: every list */
    size_t nlanguages;
    const char *const *allow; /* words and phrases never flagged (added to the built-in ones) */
    size_t nallow;
    /* allow_lang[i] is never flagged in text of language allow_lang_code[i] (its lists only, not the union) */
    const char *const *allow_lang_code;
    const char *const *allow_lang;
    size_t nallow_lang;
    int no_builtin_allow; /* 1: leave out the built-in allowlists ("dick van dyke", French "retard", ...) */
    /* Lists (names or language subtags) that text in a language without a list of its own is checked against;
     * NULL/0: such text is not checked at all. */
    const char *const *fallback;
    size_t nfallback;
};

/* Loads PATH: one word-list file, or a folder of them (*.json, also one folder level down; other files are
 * ignored). A file's language is its name without .json. NULL with err set on failure. */
struct nlpd_lexicon *nlpd_lexicon_load(const char *path, const struct nlpd_lexicon_opts *opts, struct nlpd_error *err);
/* An empty lexicon for entries added one by one (tests, embedders). */
struct nlpd_lexicon *nlpd_lexicon_new(const struct nlpd_lexicon_opts *opts, struct nlpd_error *err);
/* Adds one entry to list LANG (rating < 0: unrated). Returns 0 (also for an entry left out: no letters, or rated
 * below min_rating) or NLPD_ENOMEM. */
int nlpd_lexicon_add(struct nlpd_lexicon *lx, const char *lang, const char *entry, int rating);
void nlpd_lexicon_free(struct nlpd_lexicon *lx);

/* Entries loaded (in all lists together) and the number of lists. */
size_t nlpd_lexicon_size(const struct nlpd_lexicon *lx);
size_t nlpd_lexicon_nlists(const struct nlpd_lexicon *lx);
/* 1 when some list is for language CODE (its language subtag, e.g. "pt" for pt-PT). */
int nlpd_lexicon_has_language(const struct nlpd_lexicon *lx, const char *code);

/* 1 when text in language CODE is checked against some list: CODE NULL or "" (unknown: every list), a language
 * with a list, or any other when fallback lists were given; 0: nlpd_lexicon_match would look at no list. */
int nlpd_lexicon_checks(const struct nlpd_lexicon *lx, const char *code);

/* Per-thread scratch buffers. */
struct nlpd_lexicon_scratch *nlpd_lexicon_scratch_new(void);
void nlpd_lexicon_scratch_free(struct nlpd_lexicon_scratch *s);

struct nlpd_lexicon_hit {
    const char *entry; /* the list's entry as written in the file (owned by the lexicon) */
    const char *list;  /* the list's name, e.g. "en" */
};

/* Looks for a listed word or phrase in TEXT (valid UTF-8, len bytes). LANG: the text's language; when some list
 * has it, only that language's lists are used; another language uses only the fallback lists (none: no match);
 * NULL (unknown) uses every list. Returns 1 and fills *hit (may be
 * NULL) for the first match, 0 for none, NLPD_ENOMEM or NLPD_EINVAL (not UTF-8). */
int nlpd_lexicon_match(const struct nlpd_lexicon *lx, struct nlpd_lexicon_scratch *s, const char *lang,
                       const char *text, size_t len, struct nlpd_lexicon_hit *hit);

#endif
