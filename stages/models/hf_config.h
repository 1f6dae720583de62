/* Hugging Face config.json for encoder models: model type, sizes, labels, activation, layer-norm epsilon,
 * special ids. DistilBERT's own key names (dim, n_layers, n_heads, hidden_dim, activation) are mapped onto the
 * BERT ones. Values are range-checked; a missing required key is an error naming the file and the key. */
#ifndef NLPD_HF_CONFIG_H
#define NLPD_HF_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "nlpd_error.h"
#include "nlpd_kernels.h"

enum nlpd_hf_arch {
    NLPD_HF_BERT = 1,
    NLPD_HF_ROBERTA, /* roberta, xlm-roberta, camembert: position ids from padding_idx + cumsum */
    NLPD_HF_DISTILBERT,
    NLPD_HF_DEBERTA_V2, /* deberta-v2 (DeBERTa-v2/v3): disentangled attention, see deberta.h */
};

enum nlpd_hf_task {
    NLPD_HF_TASK_NONE = 0, /* base model: hidden states only */
    NLPD_HF_TASK_SEQ_CLS,
    NLPD_HF_TASK_TOKEN_CLS,
};

#define NLPD_HF_NAME_MAX 64

/* DebertaV2Config's extra keys, with its defaults (getattr fallbacks included). */
struct nlpd_hf_deberta {
    int relative_attention;     /* false */
    int position_buckets;       /* -1: no log buckets */
    int max_relative_positions; /* < 1 in the file: max_position_embeddings */
    int c2p, p2c;               /* pos_att_type entries (a list or "p2c|c2p") */
    int share_att_key;          /* false */
    int norm_rel_ln;            /* norm_rel_ebd has "layer_norm" */
    int position_biased_input;  /* true */
    int embedding_size;         /* hidden_size */
    int pooler_hidden_size;     /* hidden_size */
    enum nlpd_act pooler_act;   /* pooler_hidden_act, gelu */
    int conv_kernel_size;       /* 0; > 0 (DeBERTa-v2 xlarge's ConvLayer) is refused at load */
    int attention_head_size;    /* hidden / heads */
};

struct nlpd_hf_config {
    char model_type[NLPD_HF_NAME_MAX];   /* as written: "bert", "xlm-roberta", ... */
    char architecture[NLPD_HF_NAME_MAX]; /* architectures[0] or "" */
    char problem_type[NLPD_HF_NAME_MAX]; /* "" when absent */
    char hidden_act_name[NLPD_HF_NAME_MAX];
    char position_embedding_type[NLPD_HF_NAME_MAX];
    enum nlpd_hf_arch arch;
    enum nlpd_hf_task task; /* from the architecture name; NONE when it names neither head */
    int vocab_size, hidden_size, num_layers, num_heads, intermediate_size;
    int max_position_embeddings, type_vocab_size; /* type_vocab_size 0 for DistilBERT (no token types) */
    float layer_norm_eps;
    enum nlpd_act hidden_act;
    int pad_token_id, bos_token_id, eos_token_id; /* -1 when absent */
    int num_labels;
    char **id2label;                /* num_labels strings ("LABEL_i" when the config has none) */
    struct nlpd_hf_deberta deberta; /* arch NLPD_HF_DEBERTA_V2 only */
};

/* Reads DIR/config.json (or any path ending in .json). */
int nlpd_hf_config_load(const char *path, struct nlpd_hf_config *cfg, struct nlpd_error *err);
/* Parses config text already in memory; name is used in messages. */
int nlpd_hf_config_parse(const char *json, size_t len, const char *name, struct nlpd_hf_config *cfg,
                         struct nlpd_error *err);
void nlpd_hf_config_free(struct nlpd_hf_config *cfg);
/* A config's activation name ("gelu", "gelu_new", "relu", "silu", "swish", "tanh", ...) -> enum; -1 if unknown. */
int nlpd_hf_parse_act(const char *name, enum nlpd_act *out);
/* label2id lookup; -1 when unknown. */
int nlpd_hf_config_label_id(const struct nlpd_hf_config *cfg, const char *label);

#endif
