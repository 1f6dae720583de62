/* Hugging Face classifiers for stages: a model folder's tokenizer + encoder + labels, run on a stage's
 * batch with length grouping under a padded-token budget. One workspace per worker thread. */
#ifndef NLPD_HF_CLASSIFY_H
#define NLPD_HF_CLASSIFY_H

#include <stddef.h>
#include <stdint.h>

#include "encoder.h"
#include "nlpd_error.h"
#include "tokenizer.h"

struct nlpd_hf_model;
struct nlpd_hf_ws;

/* Loads DIR (config.json, model.safetensors, tokenizer files). threads: BLAS threads per call (stages use 1:
 * the pipeline's workers are the parallelism). dtype: "fp32" | "bf16" | "int8" | "fp16" (an error where the
 * backend cannot run it), or NULL / "default" for kernels.dtype (fp32 with a log line where it cannot run).
 * NULL with err naming the file on failure. */
struct nlpd_hf_model *nlpd_hf_model_load(const char *dir, int threads, const char *dtype, struct nlpd_error *err);
/* The dtype its matrix products run in, after any fallback. */
enum nlpd_dtype nlpd_hf_model_dtype(const struct nlpd_hf_model *m);
void nlpd_hf_model_free(struct nlpd_hf_model *m);

enum nlpd_hf_task nlpd_hf_model_task(const struct nlpd_hf_model *m);
int nlpd_hf_model_num_labels(const struct nlpd_hf_model *m);
/* id2label of config.json ("LABEL_i" when absent). */
const char *nlpd_hf_model_label(const struct nlpd_hf_model *m, int i);
/* 1 when config.json says problem_type = "multi_label_classification" (sigmoid, not softmax). */
int nlpd_hf_model_multi_label(const struct nlpd_hf_model *m);
const struct nlpd_tokenizer *nlpd_hf_model_tokenizer(const struct nlpd_hf_model *m);
/* Longest token sequence (specials included) the model accepts. */
int nlpd_hf_model_max_seq(const struct nlpd_hf_model *m);

struct nlpd_hf_ws *nlpd_hf_ws_new(const struct nlpd_hf_model *m);
void nlpd_hf_ws_free(struct nlpd_hf_ws *ws);
/* Padded tokens (sub-batch sequences x padded length) the encoder ran on with ws since the last call, which
 * resets the count: a stage adds it to its nlpd_batch.padded_tokens after running a batch. */
size_t nlpd_hf_ws_take_padded_tokens(struct nlpd_hf_ws *ws);

/* Runs n token sequences (ids with specials, as the tokenizer gives them; type_ids may be NULL) through the
 * model, grouped by length into batches of at most max_tokens padded tokens. On return logits[i] points into
 * ws (valid until the next call): num_labels floats for sequence classification, lens[i] * num_labels for
 * token classification. Returns 0 or a negative NLPD_E* (NLPD_ENOMEM: retry with a smaller batch). */
int nlpd_hf_forward(const struct nlpd_hf_model *m, struct nlpd_hf_ws *ws, const int32_t *const *ids,
                    const int32_t *const *type_ids, const size_t *lens, size_t n, size_t max_tokens,
                    const float **logits, struct nlpd_error *err);

/* Tokenizes n texts (truncated to the model's maximum) and runs them: enc[i] (in ws) and logits[i] as above. */
int nlpd_hf_classify(const struct nlpd_hf_model *m, struct nlpd_hf_ws *ws, const char *const *texts, const size_t *lens,
                     size_t n, size_t max_tokens, const struct nlpd_encoding **enc, const float **logits,
                     struct nlpd_error *err);

/* Softmax / sigmoid over one row of n logits into out (double accumulation, as torch does in float32). */
void nlpd_hf_softmax(const float *logits, int n, float *out);
void nlpd_hf_sigmoid(const float *logits, int n, float *out);

#endif
