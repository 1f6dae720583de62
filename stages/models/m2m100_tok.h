/* The tokenizers of M2M100-architecture translation models, as transformers' slow tokenizers (v4.47) behave:
 *   M2M100Tokenizer (tokenizer_class "M2M100Tokenizer", or a folder with vocab.json): sentencepiece.bpe.model
 *     pieces -> vocab.json ids (unknown -> <unk>); the language tokens "__xx__" follow the vocabulary at
 *     len(vocab.json) + i in FAIRSEQ_LANGUAGE_CODES[language_codes] order ("m2m100": 100 codes, "wmt21": 8).
 *     Input = [__src__] pieces </s>.
 *   NllbTokenizer (tokenizer_class "NllbTokenizer[Fast]", or no vocab.json): the fairseq offset (<s>=0 <pad>=1
 *     </s>=2 <unk>=3, spm piece id + 1, spm's <unk> -> 3); the FLORES-200 codes ("deu_Latn") are the
 *     additional_special_tokens with the ids tokenizer_config.json's added_tokens_decoder (or added_tokens.json)
 *     pins, else spm size + 1 + i. Input = [src] pieces </s>, or pieces </s> [src] with "legacy_behaviour": true.
 * An NLLB folder with tokenizer.json and no sentencepiece.bpe.model takes its pieces from tokenizer.json (tokenizer.h,
 * without the post-processor, whose template holds the src_lang it was saved with) and decodes with it.
 * The text is first split on the added tokens of tokenizer_config.json (leftmost-longest, with their lstrip /
 * rstrip flags); each other chunk is encoded with the SentencePiece model (spm.h, BPE or Unigram).
 * decode(skip_special_tokens) follows PreTrainedTokenizer._decode: special tokens skipped or kept, M2M100 runs
 * through SentencePiece DecodePieces, NLLB joins pieces with U+2581 -> ' '; strip(); clean_up_tokenization when
 * tokenizer_config.json says clean_up_tokenization_spaces. A loaded tokenizer is immutable and thread-safe. */
#ifndef NLPD_M2M100_TOK_H
#define NLPD_M2M100_TOK_H

#include <stddef.h>
#include <stdint.h>

#include "nlpd_error.h"

struct nlpd_m2m_tok;

enum nlpd_m2m_tok_kind { NLPD_M2M_TOK_M2M100 = 0, NLPD_M2M_TOK_NLLB };

/* Loads the tokenizer files of model_dir. NULL with err naming the file and problem. */
struct nlpd_m2m_tok *nlpd_m2m_tok_load(const char *model_dir, struct nlpd_error *err);
void nlpd_m2m_tok_free(struct nlpd_m2m_tok *t);
enum nlpd_m2m_tok_kind nlpd_m2m_tok_kind(const struct nlpd_m2m_tok *t);

/* text -> ids with the language token of src_lang_id (-1: none) placed as the tokenizer places it, </s>
 * appended; truncated to max_length ids (0 = model_max_length), the specials kept. ids and cap as
 * nlpd_marian_tok_encode (caller-owned, grown with realloc). 0 or a negative code. */
int nlpd_m2m_tok_encode(const struct nlpd_m2m_tok *t, const char *text, size_t len, int32_t src_lang_id,
                        size_t max_length, int32_t **ids, size_t *n, size_t *cap, struct nlpd_error *err);
/* Same, with the language token always in front (legacy 0) or after </s> (legacy 1), for tests of both. */
int nlpd_m2m_tok_encode_placed(const struct nlpd_m2m_tok *t, const char *text, size_t len, int32_t lang_id, int legacy,
                               size_t max_length, int32_t **ids, size_t *n, size_t *cap, struct nlpd_error *err);

/* ids -> *text (malloc'ed, NUL-terminated). NLPD_ERANGE for an id outside [0, vocab size). */
int nlpd_m2m_tok_decode(const struct nlpd_m2m_tok *t, const int32_t *ids, size_t n, int skip_special_tokens,
                        char **text, size_t *len, struct nlpd_error *err);

/* The token string of an id (M2M100 language tokens as "__de__"; an id without a string gives the unk token, as
 * convert_ids_to_tokens does), into buf when it has to be built; NULL for an id outside the vocabulary. */
const char *nlpd_m2m_tok_id_to_token(const struct nlpd_m2m_tok *t, int32_t id, char *buf, size_t bufsz, size_t *len);

/* The id of a language code in the model's own spelling ("de" for M2M100, "__de__" accepted too;
 * "deu_Latn" for NLLB), or -1. */
int32_t nlpd_m2m_tok_lang_id(const struct nlpd_m2m_tok *t, const char *code);
size_t nlpd_m2m_tok_lang_count(const struct nlpd_m2m_tok *t);
/* Code i as the model spells it without decoration ("de", "deu_Latn"). */
const char *nlpd_m2m_tok_lang_code(const struct nlpd_m2m_tok *t, size_t i);
/* tokenizer_config.json's src_lang / tgt_lang defaults (NULL when absent). */
const char *nlpd_m2m_tok_default_src(const struct nlpd_m2m_tok *t);
const char *nlpd_m2m_tok_default_tgt(const struct nlpd_m2m_tok *t);
int nlpd_m2m_tok_legacy(const struct nlpd_m2m_tok *t);
size_t nlpd_m2m_tok_model_max_length(const struct nlpd_m2m_tok *t);
int32_t nlpd_m2m_tok_eos(const struct nlpd_m2m_tok *t);
int32_t nlpd_m2m_tok_pad(const struct nlpd_m2m_tok *t);

#endif
