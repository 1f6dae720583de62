/* config.json parsing for BERT-family encoders (see hf_config.h). Defaults are transformers' own (BertConfig,
 * DistilBertConfig, XLMRobertaConfig) for keys a config may leave out. */
#include "hf_config.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "nlpd_util.h"

#define LABELS_MAX 100000

static int copy_name(char *dst, json_t *v)
{
    if (!json_is_string(v) || json_string_length(v) >= NLPD_HF_NAME_MAX)
        return -1;
    memcpy(dst, json_string_value(v), json_string_length(v) + 1);
    return 0;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

/* An integer key in [lo, hi]; absent -> def (when required == 0). */
static int get_int(json_t *root, const char *name, const char *key, int required, long long def, long long lo,
                   long long hi, int *out, struct nlpd_error *err)
{
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        if (required)
            return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: missing key \"%s\"", name, key);
        *out = (int)def;
        return 0;
    }
    if (!json_is_integer(v))
        return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: \"%s\" is not an integer", name, key);
    long long x = json_integer_value(v);
    if (x < lo || x > hi)
        return nlpd_error_set(err, NLPD_ERANGE, 0, "%s: \"%s\" = %lld out of range (%lld .. %lld)", name, key, x, lo,
                              hi);
    *out = (int)x;
    return 0;
}

static int parse_act(const char *s, enum nlpd_act *out)
{
    static const struct {
        const char *name;
        enum nlpd_act act;
    } map[] = {
        {"gelu", NLPD_ACT_GELU},           {"gelu_new", NLPD_ACT_GELU_TANH}, {"gelu_pytorch_tanh", NLPD_ACT_GELU_TANH},
        {"gelu_fast", NLPD_ACT_GELU_TANH}, {"relu", NLPD_ACT_RELU},          {"silu", NLPD_ACT_SILU},
        {"swish", NLPD_ACT_SILU},          {"tanh", NLPD_ACT_TANH},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (!strcmp(s, map[i].name)) {
            *out = map[i].act;
            return 0;
        }
    return -1;
}

int nlpd_hf_parse_act(const char *name, enum nlpd_act *out)
{
    return parse_act(name, out);
}

static int parse_labels(json_t *root, const char *name, struct nlpd_hf_config *c, struct nlpd_error *err)
{
    json_t *id2label = json_object_get(root, "id2label");
    int n = 0;
    if (id2label && !json_is_null(id2label)) {
        if (!json_is_object(id2label))
            return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: \"id2label\" is not an object", name);
        if (json_object_size(id2label) > LABELS_MAX)
            return nlpd_error_set(err, NLPD_ERANGE, 0, "%s: \"id2label\" has over %d labels", name, LABELS_MAX);
        n = (int)json_object_size(id2label);
    } else {
        int rc = get_int(root, name, "num_labels", 0, 2, 1, LABELS_MAX, &n, err);
        if (rc)
            return rc;
        id2label = NULL;
    }
    c->num_labels = n;
    c->id2label = calloc(n ? (size_t)n : 1, sizeof *c->id2label);
    if (!c->id2label)
        return nlpd_error_set(err, NLPD_ENOMEM, 0, "%s: out of memory", name);
    if (id2label) {
        const char *key;
        json_t *v;
        json_object_foreach(id2label, key, v)
        {
            char *end;
            errno = 0;
            long i = strtol(key, &end, 10);
            if (!*key || *end || errno || i < 0 || i >= n)
                return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: id2label key \"%s\" is not an id in 0 .. %d", name,
                                      key, n - 1);
            if (!json_is_string(v))
                return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: id2label[\"%s\"] is not a string", name, key);
            if (c->id2label[i])
                return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: id2label id %ld given twice", name, i);
            if (!(c->id2label[i] = strdup(json_string_value(v))))
                return nlpd_error_set(err, NLPD_ENOMEM, 0, "%s: out of memory", name);
        }
    } else {
        for (int i = 0; i < n; i++) {
            char buf[32];
            snprintf(buf, sizeof buf, "LABEL_%d", i);
            if (!(c->id2label[i] = strdup(buf)))
                return nlpd_error_set(err, NLPD_ENOMEM, 0, "%s: out of memory", name);
        }
    }
    return 0;
}

static int get_bool(json_t *root, const char *name, const char *key, int def, int *out, struct nlpd_error *err)
{
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return 0;
    }
    if (!json_is_boolean(v))
        return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: \"%s\" is not a boolean", name, key);
    *out = json_is_true(v);
    return 0;
}

/* Does the '|'-separated list s (case-insensitive, spaces around entries ignored) name word? */
static int list_has(const char *s, const char *word)
{
    size_t wl = strlen(word);
    while (*s) {
        while (*s == ' ' || *s == '|')
            s++;
        const char *e = s;
        while (*e && *e != '|')
            e++;
        const char *t = e;
        while (t > s && t[-1] == ' ')
            t--;
        if ((size_t)(t - s) == wl && !strncasecmp(s, word, wl))
            return 1;
        s = e;
    }
    return 0;
}

/* DebertaV2Config / DisentangledSelfAttention's keys, with their defaults. */
static int parse_deberta(json_t *root, const char *name, struct nlpd_hf_config *c, struct nlpd_error *err)
{
    struct nlpd_hf_deberta *d = &c->deberta;
    int rc;
    if ((rc = get_bool(root, name, "relative_attention", 0, &d->relative_attention, err)) ||
        (rc = get_bool(root, name, "share_att_key", 0, &d->share_att_key, err)) ||
        (rc = get_bool(root, name, "position_biased_input", 1, &d->position_biased_input, err)) ||
        (rc = get_int(root, name, "position_buckets", 0, -1, -1000000, 1 << 20, &d->position_buckets, err)) ||
        (rc = get_int(root, name, "max_relative_positions", 0, -1, -1000000, 1 << 20, &d->max_relative_positions,
                      err)) ||
        (rc = get_int(root, name, "embedding_size", 0, c->hidden_size, 1, 65536, &d->embedding_size, err)) ||
        (rc = get_int(root, name, "pooler_hidden_size", 0, c->hidden_size, 1, 65536, &d->pooler_hidden_size, err)) ||
        (rc = get_int(root, name, "conv_kernel_size", 0, 0, 0, 1024, &d->conv_kernel_size, err)) ||
        (rc = get_int(root, name, "attention_head_size", 0, c->hidden_size / c->num_heads, 1, 65536,
                      &d->attention_head_size, err)))
        return rc;
    if (d->max_relative_positions < 1)
        d->max_relative_positions = c->max_position_embeddings;
    /* pos_att_type: a list, or a "p2c|c2p" string as DebertaV2Config splits it; other entries are unused there */
    json_t *pat = json_object_get(root, "pos_att_type");
    if (json_is_string(pat)) {
        d->c2p = list_has(json_string_value(pat), "c2p");
        d->p2c = list_has(json_string_value(pat), "p2c");
    } else if (json_is_array(pat)) {
        size_t i;
        json_t *v;
        json_array_foreach(pat, i, v)
        {
            if (!json_is_string(v))
                return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: \"pos_att_type\"[%zu] is not a string", name, i);
            d->c2p |= list_has(json_string_value(v), "c2p");
            d->p2c |= list_has(json_string_value(v), "p2c");
        }
    } else if (pat && !json_is_null(pat)) {
        return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: \"pos_att_type\" is not a list or a string", name);
    }
    json_t *nre = json_object_get(root, "norm_rel_ebd");
    if (nre && !json_is_null(nre) && !json_is_string(nre))
        return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: \"norm_rel_ebd\" is not a string", name);
    d->norm_rel_ln = json_is_string(nre) && list_has(json_string_value(nre), "layer_norm");
    char act[NLPD_HF_NAME_MAX] = "gelu";
    json_t *pa = json_object_get(root, "pooler_hidden_act");
    if (pa && !json_is_null(pa) && copy_name(act, pa))
        return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: \"pooler_hidden_act\" is not a short string", name);
    if (parse_act(act, &d->pooler_act))
        return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: unsupported pooler_hidden_act \"%s\"", name, act);
    return 0;
}

static int parse_root(json_t *root, const char *name, struct nlpd_hf_config *c, struct nlpd_error *err)
{
    if (!json_is_object(root))
        return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: not a JSON object", name);
    json_t *mt = json_object_get(root, "model_type");
    if (!mt)
        return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: missing key \"model_type\"", name);
    if (copy_name(c->model_type, mt))
        return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: \"model_type\" is not a short string", name);
    const char *t = c->model_type;
    if (!strcmp(t, "bert"))
        c->arch = NLPD_HF_BERT;
    else if (!strcmp(t, "roberta") || !strcmp(t, "xlm-roberta") || !strcmp(t, "camembert"))
        c->arch = NLPD_HF_ROBERTA;
    else if (!strcmp(t, "distilbert"))
        c->arch = NLPD_HF_DISTILBERT;
    else if (!strcmp(t, "deberta-v2"))
        c->arch = NLPD_HF_DEBERTA_V2;
    else
        return nlpd_error_set(
            err, NLPD_EFORMAT, 0,
            "%s: unsupported model_type \"%s\" (bert, roberta, xlm-roberta, camembert, distilbert, deberta-v2)", name,
            t);
    int dist = c->arch == NLPD_HF_DISTILBERT, deb = c->arch == NLPD_HF_DEBERTA_V2, rc;
    json_t *arr = json_object_get(root, "architectures");
    if (json_is_array(arr) && json_array_size(arr) > 0 && copy_name(c->architecture, json_array_get(arr, 0)))
        return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: \"architectures\"[0] is not a short string", name);
    if (ends_with(c->architecture, "ForSequenceClassification"))
        c->task = NLPD_HF_TASK_SEQ_CLS;
    else if (ends_with(c->architecture, "ForTokenClassification"))
        c->task = NLPD_HF_TASK_TOKEN_CLS;

    if ((rc = get_int(root, name, "vocab_size", 1, 0, 1, 10000000, &c->vocab_size, err)) ||
        (rc = get_int(root, name, dist ? "dim" : "hidden_size", 1, 0, 1, 65536, &c->hidden_size, err)) ||
        (rc = get_int(root, name, dist ? "n_layers" : "num_hidden_layers", 1, 0, 1, 1024, &c->num_layers, err)) ||
        (rc = get_int(root, name, dist ? "n_heads" : "num_attention_heads", 1, 0, 1, 4096, &c->num_heads, err)) ||
        (rc = get_int(root, name, dist ? "hidden_dim" : "intermediate_size", 1, 0, 1, 1 << 20, &c->intermediate_size,
                      err)) ||
        (rc = get_int(root, name, "max_position_embeddings", 0, 512, 1, 1 << 20, &c->max_position_embeddings, err)))
        return rc;
    if (dist)
        c->type_vocab_size = 0;
    else if ((rc = get_int(root, name, "type_vocab_size", 0, deb ? 0 : 2, deb ? 0 : 1, 1 << 16, &c->type_vocab_size,
                           err)))
        return rc;
    if (c->hidden_size % c->num_heads)
        return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: hidden size %d is not a multiple of the %d heads", name,
                              c->hidden_size, c->num_heads);
    if ((rc = get_int(root, name, "pad_token_id", 0, dist || deb || c->arch == NLPD_HF_BERT ? 0 : 1, -1, 10000000,
                      &c->pad_token_id, err)) ||
        (rc = get_int(root, name, "bos_token_id", 0, -1, -1, 10000000, &c->bos_token_id, err)) ||
        (rc = get_int(root, name, "eos_token_id", 0, -1, -1, 10000000, &c->eos_token_id, err)))
        return rc;

    c->layer_norm_eps = deb ? 1e-7f : 1e-12f; /* DistilBERT hard-codes 1e-12 */
    if (!dist) {
        json_t *eps = json_object_get(root, "layer_norm_eps");
        if (eps && !json_is_null(eps)) {
            if (!json_is_number(eps) || json_number_value(eps) <= 0 || json_number_value(eps) > 1)
                return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: \"layer_norm_eps\" is not a number in (0, 1]", name);
            c->layer_norm_eps = (float)json_number_value(eps);
        }
    }
    const char *act_key = dist ? "activation" : "hidden_act";
    json_t *act = json_object_get(root, act_key);
    strcpy(c->hidden_act_name, "gelu");
    if (act && copy_name(c->hidden_act_name, act))
        return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: \"%s\" is not a short string", name, act_key);
    if (parse_act(c->hidden_act_name, &c->hidden_act))
        return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: unsupported %s \"%s\"", name, act_key, c->hidden_act_name);

    strcpy(c->position_embedding_type, "absolute");
    json_t *pet = json_object_get(root, "position_embedding_type");
    if (pet && !json_is_null(pet) && copy_name(c->position_embedding_type, pet))
        return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: \"position_embedding_type\" is not a short string", name);
    if (strcmp(c->position_embedding_type, "absolute") && !deb) /* DeBERTa has no such key: relative_attention */
        return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: unsupported position_embedding_type \"%s\" (absolute)", name,
                              c->position_embedding_type);
    /* DistilBERT's sinusoidal_pos_embds only initialises position_embeddings.weight: the checkpoint stores the
     * table and from_pretrained uses the stored values, as the encoder does. */
    json_t *pt = json_object_get(root, "problem_type");
    if (pt && !json_is_null(pt) && copy_name(c->problem_type, pt))
        return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: \"problem_type\" is not a short string", name);
    if (deb && (rc = parse_deberta(root, name, c, err)))
        return rc;
    return parse_labels(root, name, c, err);
}

int nlpd_hf_config_parse(const char *json, size_t len, const char *name, struct nlpd_hf_config *cfg,
                         struct nlpd_error *err)
{
    memset(cfg, 0, sizeof *cfg);
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: invalid JSON: %s (line %d)", name, jerr.text, jerr.line);
    int rc = parse_root(root, name, cfg, err);
    json_decref(root);
    if (rc)
        nlpd_hf_config_free(cfg);
    return rc;
}

int nlpd_hf_config_load(const char *path, struct nlpd_hf_config *cfg, struct nlpd_error *err)
{
    memset(cfg, 0, sizeof *cfg);
    char *buf;
    size_t len;
    int rc = nlpd_util_read_file(path, (size_t)16 << 20, &buf, &len, err);
    if (rc)
        return rc;
    rc = nlpd_hf_config_parse(buf, len, path, cfg, err);
    free(buf);
    return rc;
}

void nlpd_hf_config_free(struct nlpd_hf_config *cfg)
{
    if (cfg->id2label)
        for (int i = 0; i < cfg->num_labels; i++)
            free(cfg->id2label[i]);
    free(cfg->id2label);
    cfg->id2label = NULL;
    cfg->num_labels = 0;
}

int nlpd_hf_config_label_id(const struct nlpd_hf_config *cfg, const char *label)
{
    for (int i = 0; i < cfg->num_labels; i++)
        if (cfg->id2label[i] && !strcmp(cfg->id2label[i], label))
            return i;
    return -1;
}
