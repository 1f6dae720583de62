/* Transformer encoders of Hugging Face folders (config.json + model.safetensors): BERT, RoBERTa / XLM-RoBERTa /
 * CamemBERT, DistilBERT and DeBERTa-v2/v3 (deberta.c, dispatched to from here), with their sequence- and
 * token-classification heads, run batched and padded through
 * the kernels backend. Weights are converted once at load (F16/BF16 -> F32, Linear weights pre-transposed, Q/K/V
 * fused); activations live in a caller-owned workspace sized from the largest batch shape. */
#ifndef NLPD_ENCODER_H
#define NLPD_ENCODER_H

#include <stddef.h>
#include <stdint.h>

#include "hf_config.h"
#include "nlpd_error.h"
#include "nlpd_kernels.h"

struct nlpd_encoder;
struct nlpd_encoder_ws;

struct nlpd_encoder_opts {
    const char *backend;     /* "auto" | "cpu" | "cuda"; NULL = the process default, see nlpd_kernels_set_defaults
                                (ignored when `be` is given) */
    int threads;             /* 0 = online CPUs */
    int device;              /* CUDA device, when backend is given */
    const char *dtype;       /* "fp32" | "fp16" | "bf16" | "int8": an error when the backend cannot run it;
                                NULL = the process default (kernels.dtype, which falls back to fp32 instead) */
    struct nlpd_backend *be; /* optional shared backend (borrowed); NULL = the encoder creates its own */
    int task;                /* -1 or 0 = from config.json's architectures; else an enum nlpd_hf_task */
};

/* Loads DIR/config.json and DIR/model.safetensors. opts may be NULL. NULL with err (naming the file and the
 * tensor or key) on failure. */
struct nlpd_encoder *nlpd_encoder_load(const char *dir, const struct nlpd_encoder_opts *opts, struct nlpd_error *err);
void nlpd_encoder_free(struct nlpd_encoder *enc);

const struct nlpd_hf_config *nlpd_encoder_config(const struct nlpd_encoder *enc);
enum nlpd_hf_task nlpd_encoder_task(const struct nlpd_encoder *enc);
int nlpd_encoder_num_labels(const struct nlpd_encoder *enc); /* 0 without a head */
int nlpd_encoder_hidden_size(const struct nlpd_encoder *enc);
/* Longest sequence the position table allows (RoBERTa loses padding_idx + 1 positions). */
int nlpd_encoder_max_seq(const struct nlpd_encoder *enc);

/* A workspace for batches of up to max_batch x max_seq tokens; one per worker thread (forward grows it when a
 * larger batch comes). */
struct nlpd_encoder_ws *nlpd_encoder_ws_new(const struct nlpd_encoder *enc, int max_batch, int max_seq,
                                            struct nlpd_error *err);
void nlpd_encoder_ws_free(struct nlpd_encoder_ws *ws);

struct nlpd_encoder_input {
    int batch, seq; /* row-major [batch, seq] arrays below */
    const int32_t *input_ids;
    const int32_t *attention_mask; /* NULL = all ones */
    const int32_t *token_type_ids; /* NULL = all zeros */
};

/* Each pointer may be NULL (that output is not produced). */
struct nlpd_encoder_output {
    float *logits;     /* seq-cls: [batch, num_labels]; token-cls: [batch, seq, num_labels] */
    float *hidden;     /* [batch, seq, hidden]: last layer */
    float *pooled;     /* [batch, hidden]: the head's pooled vector (BERT pooler, RoBERTa classifier.dense + tanh,
                          DistilBERT pre_classifier + ReLU, DeBERTa's ContextPooler); needs a sequence-classification
                          head or a BERT pooler */
    float *all_hidden; /* [layers + 1, batch, seq, hidden]: embeddings output, then each layer's output */
};

/* Runs one batch. Thread-safe for concurrent calls with different workspaces. */
int nlpd_encoder_forward(const struct nlpd_encoder *enc, struct nlpd_encoder_ws *ws,
                         const struct nlpd_encoder_input *in, struct nlpd_encoder_output *out, struct nlpd_error *err);

/* The dtype its matrix products run in (fp32 when a process default fell back). */
enum nlpd_dtype nlpd_encoder_dtype(const struct nlpd_encoder *enc);

/* The activation type of its layers: the backend's nlpd_backend_act_dtype when that is fp16/bf16 (the layers'
 * activations are then 2-byte elements on the device; pooled output, logits and downloaded hidden states stay
 * fp32), else fp32. DeBERTa (CPU only) is always fp32. */
enum nlpd_dtype nlpd_encoder_act_dtype(const struct nlpd_encoder *enc);
/* (for tests) the layers' activation type on a backend with this act_dtype, and the workspace a forward of B x S
 * needs, in floats, with the parts' offsets (12) as the encoder lays them out */
enum nlpd_dtype nlpd_encoder_act_type(enum nlpd_dtype backend_act);
size_t nlpd_encoder_ws_floats(const struct nlpd_hf_config *c, int num_labels, enum nlpd_dtype act, int B, int S,
                              size_t *offs);

/* FLOPs of one forward over batch x seq tokens (matrix products only), for benchmarks. */
double nlpd_encoder_flops(const struct nlpd_encoder *enc, int batch, int seq);

#endif
