/* The Marian (OPUS-MT) tokenizer, as transformers' slow MarianTokenizer (v4.47) behaves, on top of spm.h:
 *   encode = tokenizer(text, truncation=True, max_length=N)["input_ids"]:
 *     - the text is first split on the added tokens (tokenizer_config.json added_tokens_decoder plus the special
 *       tokens), leftmost-longest as PreTrainedTokenizer.tokenize's trie does, with their lstrip / rstrip /
 *       single_word flags; an added token becomes its own id;
 *     - every other chunk goes through MarianTokenizer._tokenize: a leading language code (the regex ">>.+<<"
 *       matched at the start: greedy, up to the last "<<" of the first line) becomes its own token, and every
 *       match of that regex is removed from the chunk (re.sub, as v4.47 does); the rest is encoded with the
 *       source SentencePiece model (add_dummy_prefix per chunk);
 *     - tokens -> vocab.json ids (an unknown token -> the unk id), then </s> is appended; truncation keeps room
 *       for </s> (HF's quirk kept: with max_length < 2 nothing is truncated). No Moses punctuation
 *       normalisation (MarianTokenizer._tokenize does not apply it).
 *   decode = tokenizer.decode(ids, skip_special_tokens=...): ids -> target vocabulary strings (target_vocab.json
 *     with separate_vocabs, else vocab.json; a hole -> the unk token), special tokens skipped or kept as text,
 *     runs of the other tokens through the target SentencePiece DecodePieces, U+2581 -> ' ', Python strip(), and
 *     clean_up_tokenization when tokenizer_config.json says clean_up_tokenization_spaces. An id outside the
 *     vocabulary is an error (transformers would print <unk>).
 * Files of the model folder: source.spm, target.spm, vocab.json, target_vocab.json (separate_vocabs),
 * tokenizer_config.json and special_tokens_map.json (both optional: eos </s>, unk <unk>, pad <pad>,
 * model_max_length 512 by default). A loaded tokenizer is immutable and may be shared between threads. */
#ifndef NLPD_MARIAN_TOK_H
#define NLPD_MARIAN_TOK_H

#include <stddef.h>
#include <stdint.h>

#include "nlpd_error.h"

struct nlpd_marian_tok;

/* Loads the tokenizer files of model_dir. NULL on error (err names the file and the problem). */
struct nlpd_marian_tok *nlpd_marian_tok_load(const char *model_dir, struct nlpd_error *err);
void nlpd_marian_tok_free(struct nlpd_marian_tok *t);

/* text[0..len) (UTF-8) -> input ids, </s> included, into *ids (a caller-owned buffer of *cap entries, grown
 * with realloc as needed; start with NULL/0 and free() it at the end); *n gets the count. max_length 0 means the
 * tokenizer's model_max_length. 0 or a negative code. */
int nlpd_marian_tok_encode(const struct nlpd_marian_tok *t, const char *text, size_t len, size_t max_length,
                           int32_t **ids, size_t *n, size_t *cap, struct nlpd_error *err);

/* ids -> *text (malloc'ed, NUL-terminated, caller frees; *len its length, len may be NULL). 0 or a negative
 * code (NLPD_ERANGE for an id outside the vocabulary). */
int nlpd_marian_tok_decode(const struct nlpd_marian_tok *t, const int32_t *ids, size_t n, int skip_special_tokens,
                           char **text, size_t *len, struct nlpd_error *err);

int32_t nlpd_marian_tok_eos(const struct nlpd_marian_tok *t);
int32_t nlpd_marian_tok_pad(const struct nlpd_marian_tok *t);
int32_t nlpd_marian_tok_unk(const struct nlpd_marian_tok *t);
size_t nlpd_marian_tok_model_max_length(const struct nlpd_marian_tok *t);
/* Number of ids of the decoder's vocabulary (max id + 1): valid ids for decode are [0, this). */
size_t nlpd_marian_tok_vocab_size(const struct nlpd_marian_tok *t);

/* The id of the language token ">>code<<" in vocab.json, or -1. */
int32_t nlpd_marian_tok_lang_token(const struct nlpd_marian_tok *t, const char *code);
/* The language tokens of vocab.json (keys of the form ">>...<<", in file order: HF's supported_language_codes;
 * multi-target models have them), as full tokens (">>por<<"). */
size_t nlpd_marian_tok_lang_count(const struct nlpd_marian_tok *t);
const char *nlpd_marian_tok_lang_code(const struct nlpd_marian_tok *t, size_t i);

#endif
