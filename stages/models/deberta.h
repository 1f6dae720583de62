/* DeBERTa-v2/v3 encoders (model_type "deberta-v2"): embeddings without absolute positions or token types when the
 * config says so, disentangled attention (c2p / p2c over log-bucketed relative positions, shared or own position
 * projections), the ContextPooler and the classification heads. Reached through the encoder API (encoder.h),
 * which dispatches here; the relative position projections are computed once at load. */
#ifndef NLPD_DEBERTA_H
#define NLPD_DEBERTA_H

#include "encoder.h"

struct nlpd_deberta;
struct nlpd_deberta_ws;

/* Loads DIR/model.safetensors for cfg (arch NLPD_HF_DEBERTA_V2) on be (borrowed). task NONE: guessed from the
 * tensors. NULL with err on failure, a configuration it cannot run included. */
struct nlpd_deberta *nlpd_deberta_load(const char *dir, const struct nlpd_hf_config *cfg, enum nlpd_hf_task task,
                                       struct nlpd_backend *be, struct nlpd_error *err);
void nlpd_deberta_free(struct nlpd_deberta *m);
/* The kernel ops a model of this config runs (for the backend choice, nlpd_backend_opts.ops); returns their
 * count. */
#define NLPD_DEBERTA_MAX_OPS 8
int nlpd_deberta_ops(const struct nlpd_hf_config *cfg, enum nlpd_op_kind ops[NLPD_DEBERTA_MAX_OPS]);
enum nlpd_hf_task nlpd_deberta_task(const struct nlpd_deberta *m);
int nlpd_deberta_num_labels(const struct nlpd_deberta *m);

/* Pooled vectors are pooler_hidden_size wide. */
int nlpd_deberta_pooled_size(const struct nlpd_deberta *m);

struct nlpd_deberta_ws *nlpd_deberta_ws_new(const struct nlpd_deberta *m, int max_batch, int max_seq,
                                            struct nlpd_error *err);
void nlpd_deberta_ws_free(struct nlpd_deberta_ws *ws);

/* As nlpd_encoder_forward. Padded positions (mask 0) are not multiplied by the mask after the embedding
 * LayerNorm: no valid position ever reads them (their keys are masked), so only their own rows differ. */
int nlpd_deberta_forward(const struct nlpd_deberta *m, struct nlpd_deberta_ws *ws, const struct nlpd_encoder_input *in,
                         struct nlpd_encoder_output *out, struct nlpd_error *err);

double nlpd_deberta_flops(const struct nlpd_deberta *m, int batch, int seq);

/* make_log_bucket_position + build_relative_position of transformers (float32 as there) for d = i - j, then
 * the clamp into the position table: the row of d in [0, 2 * span). Exposed for tests. */
int32_t nlpd_deberta_rel_index(const struct nlpd_hf_config *cfg, int d);

#endif
