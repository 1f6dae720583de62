/* SentencePiece: the ModelProto reader (.model / .spm files) and the Unigram / BPE encoder and decoder, with the
 * semantics of the sentencepiece C++ library 0.1.97 (what Debian's python3-sentencepiece wraps), not those of
 * Hugging Face tokenizers' conversion:
 *   - normalizer.cc: user-defined symbols first (longest match, copied as is), then the precompiled_charsmap
 *     (longest rule of the darts-clone trie over the raw bytes), else one UTF-8 char unchanged; a malformed byte
 *     becomes U+FFFD and consumes one byte. add_dummy_prefix, remove_extra_whitespaces (heading, trailing and
 *     repeated spaces), escape_whitespaces (' ' -> U+2581) and TrainerSpec.treat_whitespace_as_suffix.
 *   - unigram_model.cc EncodeOptimized: Viterbi over byte positions; user-defined pieces score
 *     bytes * max_score - 0.1, unused pieces are skipped, a char with no single-char piece gets <unk> at
 *     min_score - 10; the first candidate wins ties (strict >), scores kept in float as the library does.
 *   - SentencePieceProcessor::Encode: consecutive unknown pieces are merged (their raw surface text, the id of
 *     <unk>), or with TrainerSpec.byte_fallback each unknown piece becomes its <0xXX> byte pieces.
 *   - SentencePieceProcessor::Decode: control pieces are empty, <unk> gives the unk_surface (" \u2047 " by
 *     default), a piece unknown to the model is copied as is, byte pieces are joined and decoded as UTF-8 (a bad
 *     byte gives U+FFFD), U+2581 -> ' ', the leading U+2581 of the first piece(s) is dropped as the library does,
 *     and the denormalizer_spec's charsmap is applied when the model has one.
 *   - bpe_model.cc Encode (BPE models, e.g. M2M100's and NLLB's sentencepiece.bpe.model): characters (user-defined
 *     symbols frozen), then the adjacent pair whose concatenation is a piece with the highest score is merged
 *     first (ties: the leftmost), an unused piece is split back into the two symbols it was made of.
 * Unigram and BPE models are supported: WORD and CHAR models are rejected at load with a clear error.
 * Every model file is untrusted: a truncated or corrupt file is an error naming the file, never a crash.
 * A loaded model is immutable: encode/decode may run concurrently on it, each thread with its own output. */
#ifndef NLPD_SPM_H
#define NLPD_SPM_H

#include <stddef.h>
#include <stdint.h>

#include "nlpd_error.h"

struct nlpd_spm;

/* Piece types of ModelProto.SentencePiece.Type. */
enum nlpd_spm_type {
    NLPD_SPM_NORMAL = 1,
    NLPD_SPM_UNKNOWN = 2,
    NLPD_SPM_CONTROL = 3,
    NLPD_SPM_USER_DEFINED = 4,
    NLPD_SPM_UNUSED = 5,
    NLPD_SPM_BYTE = 6,
};

/* Result of nlpd_spm_encode, reusable across calls (zero-initialise once, free with nlpd_spm_pieces_free).
 * Piece i is buf[off[i] .. off[i] + len[i]) (UTF-8, not NUL-terminated), its id id[i]. */
struct nlpd_spm_pieces {
    size_t n;
    char *buf;
    size_t *off, *len;
    int32_t *id;
    /* private: capacities and scratch */
    size_t buf_cap, cap;
    char *norm;
    size_t norm_cap;
    void *lattice;
    size_t lattice_cap;
};

/* Loads a serialized ModelProto from a file (err names the file) or from memory (name is used in messages). The
 * memory is copied: data may be freed after the call. NULL on error. */
struct nlpd_spm *nlpd_spm_load(const char *path, struct nlpd_error *err);
struct nlpd_spm *nlpd_spm_load_mem(const void *data, size_t len, const char *name, struct nlpd_error *err);
void nlpd_spm_free(struct nlpd_spm *m);

/* Encodes text[0..len) (UTF-8; malformed bytes are handled as the library does) into pieces and ids, as
 * SentencePieceProcessor::Encode (python: encode(text, out_type=str) and encode(text)). 0 or a negative code. */
int nlpd_spm_encode(const struct nlpd_spm *m, const char *text, size_t len, struct nlpd_spm_pieces *out,
                    struct nlpd_error *err);
void nlpd_spm_pieces_free(struct nlpd_spm_pieces *p);

/* The normalised text alone (Normalizer::Normalize), into *out (malloc'ed, NUL-terminated; caller frees). */
int nlpd_spm_normalize(const struct nlpd_spm *m, const char *text, size_t len, char **out, size_t *out_len,
                       struct nlpd_error *err);

/* PieceToId: the id of a piece, or the id of <unk> when the model does not know it (as the library does).
 * nlpd_spm_has_piece tells the two apart: 1 when the piece is in the model. */
int32_t nlpd_spm_piece_id(const struct nlpd_spm *m, const char *piece, size_t len);
int nlpd_spm_has_piece(const struct nlpd_spm *m, const char *piece, size_t len);

/* Number of pieces, piece i (NUL-terminated, *len its byte length; NULL when i is out of range), its type and
 * score, the id of <unk>. */
size_t nlpd_spm_size(const struct nlpd_spm *m);
const char *nlpd_spm_id_piece(const struct nlpd_spm *m, int32_t id, size_t *len);
int nlpd_spm_id_type(const struct nlpd_spm *m, int32_t id);
float nlpd_spm_id_score(const struct nlpd_spm *m, int32_t id);
int32_t nlpd_spm_unk_id(const struct nlpd_spm *m);

/* DecodePieces: pieces[i][0..lens[i]) -> *text (malloc'ed, NUL-terminated, caller frees), *len its length.
 * lens may be NULL for NUL-terminated pieces. 0 or a negative code. */
int nlpd_spm_decode_pieces(const struct nlpd_spm *m, const char *const *pieces, const size_t *lens, size_t n,
                           char **text, size_t *len, struct nlpd_error *err);
/* DecodeIds: ids -> pieces -> DecodePieces; an id outside [0, size) is an NLPD_ERANGE error. */
int nlpd_spm_decode_ids(const struct nlpd_spm *m, const int32_t *ids, size_t n, char **text, size_t *len,
                        struct nlpd_error *err);

#endif
