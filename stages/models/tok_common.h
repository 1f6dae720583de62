/* What the translation tokenizers (marian_tok.c, m2m100_tok.c) share: reading transformers' tokenizer files
 * (special token entries, vocab.json ids) and a growing string for decode. */
#ifndef NLPD_TOK_COMMON_H
#define NLPD_TOK_COMMON_H

#include <jansson.h>
#include <stddef.h>

#include "nlpd_error.h"

/* A special token's content: a string or an AddedToken dict {"content": ...}; NULL otherwise. */
const char *nlpd_tok_content(json_t *v);

/* Checks that every id of the vocab.json object v is an integer in [0, 2^30) and that there is one; the largest
 * id in *maxid. 0, or an NLPD_EFORMAT error naming file. */
int nlpd_tok_vocab_max_id(json_t *v, const char *file, size_t *maxid, struct nlpd_error *err);

/* A NUL-terminated string that grows (p: malloc'ed, NULL until the first add). */
struct nlpd_tok_sb {
    char *p;
    size_t n, cap;
};
int nlpd_tok_sb_add(struct nlpd_tok_sb *b, const char *s, size_t n);

#endif
