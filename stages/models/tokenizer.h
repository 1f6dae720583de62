/* Hugging Face tokenizers in C: tokenizer.json (WordPiece, Unigram, byte-level BPE, with their
 * normalisers, pre-tokenisers, post-processors and added tokens) or the legacy files of a model folder
 * (vocab.txt, sentencepiece.bpe.model). Semantics are those of the Rust `tokenizers` library. */
#ifndef NLPD_TOKENIZER_H
#define NLPD_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "nlpd_error.h"

struct nlpd_tokenizer;
struct nlpd_tok_scratch;

struct nlpd_encoding {
    size_t n;                         /* number of tokens */
    int32_t *ids;                     /* token ids */
    int32_t *type_ids;                /* segment ids (0 for the first sequence, 1 for the pair) */
    int32_t *starts;                  /* offsets into the ORIGINAL text of the token's sequence, */
    int32_t *ends;                    /*   in Unicode code points, as transformers' fast tokenizers give them */
    uint8_t *special;                 /* 1 for tokens added by the post-processor ([CLS], </s>, ...) */
    int32_t *sequence;                /* 0 or 1: which input the token came from; -1 for special tokens */
    size_t cap;                       /* allocated length (internal) */
    struct nlpd_tok_scratch *scratch; /* reusable work buffers of encode (internal; freed by nlpd_encoding_free) */
};

/* Loads the tokenizer of a model folder: tokenizer.json when present, else the legacy files.
 * NULL with err naming the file and the problem on failure. */
struct nlpd_tokenizer *nlpd_tokenizer_load(const char *model_dir, struct nlpd_error *err);
/* Loads a tokenizer.json given as text (len bytes); name is used in error messages. */
struct nlpd_tokenizer *nlpd_tokenizer_load_json(const char *json, size_t len, const char *name, struct nlpd_error *err);
void nlpd_tokenizer_free(struct nlpd_tokenizer *t);

/* Encodes text (and optional pair, NULL when none) as `tokenizer(text, pair, truncation=True,
 * max_length=max_length)` does; max_length 0 means the model's maximum (model_max_length). Appends
 * nothing: out is reset, reused and grown. Returns 0 or a negative NLPD_E* code. Thread-safe for
 * concurrent calls with different `out`. */
int nlpd_tokenizer_encode(const struct nlpd_tokenizer *t, const char *text, size_t len, const char *pair,
                          size_t pair_len, size_t max_length, struct nlpd_encoding *out, struct nlpd_error *err);
void nlpd_encoding_free(struct nlpd_encoding *e);

/* transformers' convert_tokens_to_string of a fast tokenizer: the decoder of tokenizer.json (or the one
 * transformers' converter gives the legacy files) over n token strings, appended to *buf (a malloc'ed buffer of
 * *cap bytes, grown as needed, NUL-terminated; *len its length). 0 or NLPD_ENOMEM. */
int nlpd_tokenizer_convert_tokens_to_string(const struct nlpd_tokenizer *t, const char *const *toks, const size_t *lens,
                                            size_t n, char **buf, size_t *len, size_t *cap);
/* tokenizer.decode(ids, skip_special_tokens) of transformers' fast tokenizers: each id's token (an added token
 * first, ids outside the vocabulary dropped as the Rust library does, special added tokens dropped when asked),
 * the decoder, then clean_up_tokenization when tokenizer_config.json's clean_up_tokenization_spaces is true.
 * *text is malloc'ed and NUL-terminated (caller frees); text_len may be NULL. 0 or a negative code. */
int nlpd_tokenizer_decode(const struct nlpd_tokenizer *t, const int32_t *ids, size_t n, int skip_special_tokens,
                          char **text, size_t *text_len, struct nlpd_error *err);

/* The token string of an id (the added token first, as the Rust library's id_to_token; NULL when out of
 * range), the vocabulary size, the padding id. */
const char *nlpd_tokenizer_id_to_token(const struct nlpd_tokenizer *t, int32_t id);
int32_t nlpd_tokenizer_vocab_size(const struct nlpd_tokenizer *t);
int32_t nlpd_tokenizer_pad_id(const struct nlpd_tokenizer *t);
/* model_max_length of tokenizer_config.json; 0 when unknown (no truncation by default). */
size_t nlpd_tokenizer_model_max_length(const struct nlpd_tokenizer *t);

#endif
