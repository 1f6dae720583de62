/* Decoding of token-classification outputs into entities, exactly as transformers' (4.47)
 * TokenClassificationPipeline postprocess does (numpy float32 softmax, aggregate / aggregate_words /
 * group_entities, the tokenizer's decoder for words), plus the window plan for long texts. No model here. */
#ifndef NLPD_NER_AGGREGATE_H
#define NLPD_NER_AGGREGATE_H

#include <stddef.h>
#include <stdint.h>

enum nlpd_ner_agg { NLPD_NER_NONE, NLPD_NER_SIMPLE, NLPD_NER_FIRST, NLPD_NER_AVERAGE, NLPD_NER_MAX };

/* "none|simple|first|average|max" -> enum; -1 when unknown. */
int nlpd_ner_agg_parse(const char *s);

/* One non-special token (gather_pre_entities' pre_entity). */
struct nlpd_ner_pre {
    const char *word; /* the token string, or the text slice for the unknown token (not NUL-terminated) */
    size_t word_len;
    int32_t start, end; /* code points */
    int32_t index;      /* token index in the encoding */
    int is_subword;
    const float *scores; /* num_labels probabilities */
};

struct nlpd_ner_ent {
    const char *group; /* the label ("none") or the label without its B-/I- prefix; points into labels */
    float score;
    size_t word_off, word_len; /* into nlpd_ner_out.words */
    int32_t start, end;
    int32_t index; /* token index for "none", -1 otherwise */
};

/* transformers' convert_tokens_to_string: appends the string of n tokens to *buf (grown with realloc, *len and
 * *cap updated, NUL-terminated). 0, or negative when out of memory. */
typedef int (*nlpd_ner_decode_fn)(const void *ctx, const char *const *toks, const size_t *lens, size_t n, char **buf,
                                  size_t *len, size_t *cap);

/* Results and reusable scratch: zero-initialise, reuse across calls, free with nlpd_ner_out_free(). */
struct nlpd_ner_out {
    nlpd_ner_decode_fn decode; /* the tokenizer's decoder for words; NULL: the WordPiece decoder (nlpd_ner_decode) */
    const void *decode_ctx;
    struct nlpd_ner_ent *ents;
    size_t n, cap;
    char *words;
    size_t words_len, words_cap;
    /* scratch */
    void *tmp;
    size_t tmp_cap;
    char *tbuf;
    size_t tbuf_len, tbuf_cap;
    float *acc;
    size_t acc_cap;
    const char **toks;
    size_t *tlens;
    size_t toks_cap;
};

void nlpd_ner_out_free(struct nlpd_ner_out *o);

/* numpy's float32 softmax of one row: exp(x - max) / sum, the sum pairwise as numpy adds. */
void nlpd_ner_softmax(const float *logits, int n, float *out);

/* transformers' word-aware rule for tokenizers with a continuing-subword prefix:
 * len(token) != len(text[start:end]) (in code points). */
int nlpd_ner_is_subword(const char *token, size_t token_len, int32_t start, int32_t end);

/* The WordPiece decoder (prefix "##", cleanup): appends the decoded string of n tokens to *buf.
 * Returns 0 or -1 when out of memory. */
int nlpd_ner_decode(const char *const *toks, const size_t *lens, size_t n, char **buf, size_t *len, size_t *cap);

/* Aggregates n pre-entities with a strategy and drops the ignored labels/groups into out (reset first).
 * Returns 0 or -1 when out of memory. */
int nlpd_ner_aggregate(const struct nlpd_ner_pre *pre, size_t n, const char *const *labels, int num_labels,
                       enum nlpd_ner_agg agg, const char *const *ignore, size_t nignore, struct nlpd_ner_out *out);

/* Window plan over n content tokens: windows of at most win tokens, consecutive ones overlapping by at
 * least stride (clamped to win / 2), the last one ending at n. Writes up to max starts; returns the count
 * (call with max 0 to count). */
size_t nlpd_ner_windows(size_t n, size_t win, size_t stride, size_t *starts, size_t max);

/* Distance of token j from the nearer edge of the window [s, s + len). */
static inline size_t nlpd_ner_edge_dist(size_t j, size_t s, size_t len)
{
    size_t a = j - s, b = s + len - 1 - j;
    return a < b ? a : b;
}

#endif
