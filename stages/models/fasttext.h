/* fastText supervised models (.bin and .ftz): loader and predictor.
 * Semantics are those of the fastText tool 0.9.2 (`fasttext predict-prob`): same tokenisation, hashing,
 * word and char n-grams, product quantisation, softmax / hierarchical softmax / one-vs-all. */
#ifndef NLPD_FASTTEXT_H
#define NLPD_FASTTEXT_H

#include <stddef.h>
#include <stdint.h>

#include "nlpd_error.h"

struct nlpd_ft_model;
struct nlpd_ft_scratch;

enum nlpd_ft_loss { NLPD_FT_LOSS_HS = 1, NLPD_FT_LOSS_NS = 2, NLPD_FT_LOSS_SOFTMAX = 3, NLPD_FT_LOSS_OVA = 4 };

struct nlpd_ft_info {
    int32_t version, dim, word_ngrams, minn, maxn, bucket, loss, model;
    int32_t nwords, nlabels;
    int quant_input, quant_output, pruned;
};

struct nlpd_ft_pred {
    int32_t label; /* 0..nlabels-1 */
    float prob;    /* as printed by predict-prob: exp(log(p + 1e-5)) */
};

/* Loads and validates a model file; every header field, count and size is checked.
 * Returns NULL with err filled (message names the file and the problem) on failure. */
struct nlpd_ft_model *nlpd_ft_load(const char *path, struct nlpd_error *err);
/* Same from a memory buffer (used by the fuzz target); data is copied as needed. */
struct nlpd_ft_model *nlpd_ft_load_mem(const void *data, size_t size, const char *name, struct nlpd_error *err);
void nlpd_ft_free(struct nlpd_ft_model *m);

void nlpd_ft_get_info(const struct nlpd_ft_model *m, struct nlpd_ft_info *info);
/* Full label string as stored, e.g. "__label__en". */
const char *nlpd_ft_label(const struct nlpd_ft_model *m, int32_t label);

/* Per-thread working memory (hidden/output vectors, id buffers). One scratch per thread. */
struct nlpd_ft_scratch *nlpd_ft_scratch_new(const struct nlpd_ft_model *m);
void nlpd_ft_scratch_free(struct nlpd_ft_scratch *s);

/* Predicts the k most likely labels of one text, best first, with probability >= threshold.
 * The text is split as fastText splits a line (space, \t, \n, \r, \v, \f, \0 separate tokens) and one
 * end-of-sentence token is appended, exactly as `predict-prob` does for a newline-terminated line.
 * Returns the number of predictions written to out (0..k), or a negative NLPD_E* code. */
int nlpd_ft_predict(const struct nlpd_ft_model *m, struct nlpd_ft_scratch *s, const char *text, size_t len, int k,
                    float threshold, struct nlpd_ft_pred *out);

/* Like predict-prob, a literal "</s>" token ends the text: nlpd_ft_predict ignores what follows it.
 * nlpd_ft_predict_ex sets *consumed (may be NULL) to the bytes used up to that token and one separator
 * after it, or to 0 when there was none, so a caller can replay fastText's line-by-line behaviour (the
 * rest becomes the next "line"); with NLPD_FT_NO_EOS no end-of-sentence token is appended (fastText's
 * last line when the input does not end with a newline). */
#define NLPD_FT_NO_EOS 1
int nlpd_ft_predict_ex(const struct nlpd_ft_model *m, struct nlpd_ft_scratch *s, const char *text, size_t len,
                       int flags, int k, float threshold, struct nlpd_ft_pred *out, size_t *consumed);

/* The probability behind a predict-prob value: fastText prints exp(log(p + 1e-5)), which exceeds 1 for a sure
 * prediction (1.0000099); this removes the 1e-5 and clamps the float rounding into [0, 1]. */
float nlpd_ft_probability(float tool_prob);

#endif
