/* The encoder-decoder core (see seq2seq.h): config and generation config, weights laid out for the kernels (Linear
 * weights as [in, out]; encoder Q/K/V fused; decoder self-attention K/V fused so one product writes the cache;
 * cross-attention K/V fused), the encoder pass, and the decoder step / cache reorder that generate.c drives.
 * Post-norm layers run x = LN(x + f(x)) as one LAYER_NORM op with bias and residual; a pre-norm sub-layer is
 * x += f(LN(x)): LN into a scratch buffer, the output projection into another, then one BIAS_ACT op adds its bias
 * and the residual.
 *
 * Decoder self-attention cache: row r, layer l, position t holds [k | v] (2 * d_model floats) at
 *   cache + ((r * dec_layers + l) * cap + t) * 2 * d_model,
 * so a layer's keys for every row are one strided matrix and a row's whole history is one contiguous block. */
#include "seq2seq.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grow.h"
#include "hf_config.h"
#include "safetensors.h"
#include "weights.h"

#define NAME_LEN              NLPD_WL_NAME_MAX
#define LN_EPS                1e-5f /* nn.LayerNorm's default, which both models use */
#define HF_DEFAULT_MAX_LENGTH 20
#define BAD_WORDS_MAX         65536 /* ids over all bad_words_ids sequences */

struct enc_layer {
    size_t wqkv, bqkv, wo, bo, ln1_g, ln1_b, w1, b1, w2, b2, ln2_g, ln2_b; /* ln1: attention, ln2: FFN */
};

struct dec_layer {
    size_t wq, bq, wkv, bkv, wo, bo, ln1_g, ln1_b;       /* self-attention */
    size_t cwq, cbq, cwkv, cbkv, cwo, cbo, ln2_g, ln2_b; /* cross-attention */
    size_t w1, b1, w2, b2, ln3_g, ln3_b;                 /* feed-forward */
};

struct nlpd_s2s {
    struct nlpd_s2s_config cfg;
    const struct nlpd_s2s_arch *arch;
    int n_pos; /* rows of the position table */
    struct nlpd_backend *be;
    int own_be;
    struct nlpd_buffer weights;
    size_t enc_embed, dec_embed, lm_head, logits_bias, pos;
    size_t enc_ln_g, enc_ln_b, dec_ln_g, dec_ln_b; /* pre-norm: the final encoder.layer_norm / decoder.layer_norm */
    int has_logits_bias;
    struct enc_layer *enc;
    struct dec_layer *dec;
    /* generation defaults */
    struct nlpd_gen_params gen;
    int32_t *bad;
    size_t *bad_off;
};

struct nlpd_s2s_ws {
    const struct nlpd_s2s *m;
    /* encoder batch: B sequences of S tokens */
    struct nlpd_buffer enc_buf;
    size_t enc_cap, enc_sq; /* tokens; attention scratch floats */
    int B, S;
    float *x, *qkv, *ctx, *tmp, *ffn, *scores, *xn; /* xn: LN(x), pre-norm only */
    int32_t *ids, *pos_ids, *mask;
    struct nlpd_buffer cross_buf; /* per decoder layer [B * S, 2H] */
    size_t cross_cap;
    float *cross;
    /* decoder rows */
    struct nlpd_buffer dec_buf;
    int dec_rows_cap;
    float *y, *q, *dctx, *dtmp, *dffn, *logits, *yn;
    int32_t *tok, *dpos, *kv_map, *gidx, *ident; /* ident: 0, 1, 2, ... */
    /* self-attention caches (ping-pong for reordering) */
    struct nlpd_buffer cache;        /* rows x layers x cap x 2H */
    struct nlpd_buffer layer_tmp;    /* one layer's rows while they are reordered */
    int cache_rows, cache_cap, rows; /* rows: of the last step */
    int32_t *host;                   /* int staging */
    size_t host_cap;
};

/* ------------------------------------------------------------------------------ config ---- */

static int jint(json_t *root, const char *file, const char *key, long long def, long long lo, long long hi, int *out,
                struct nlpd_error *err)
{
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        *out = (int)def;
        return 0;
    }
    if (json_is_array(v) && json_array_size(v) > 0) /* eos_token_id may be a list: the first one ends a sequence */
        v = json_array_get(v, 0);
    if (!json_is_integer(v))
        return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: \"%s\" is not an integer", file, key);
    long long x = json_integer_value(v);
    if (x < lo || x > hi)
        return nlpd_error_set(err, NLPD_ERANGE, 0, "%s: \"%s\" = %lld out of range (%lld .. %lld)", file, key, x, lo,
                              hi);
    *out = (int)x;
    return 0;
}

static int jbool(json_t *root, const char *key, int def)
{
    json_t *v = json_object_get(root, key);
    return json_is_boolean(v) ? json_is_true(v) : def;
}

static json_t *load_json(const char *dir, const char *name, int required, struct nlpd_error *err, int *rc)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    json_error_t je;
    FILE *f = fopen(path, "rb");
    *rc = 0;
    if (!f) {
        if (required)
            *rc = nlpd_error_set(err, NLPD_ENOTFOUND, 0, "%s: cannot open", path);
        return NULL;
    }
    json_t *j = json_loadf(f, 0, &je);
    fclose(f);
    if (!j)
        *rc = nlpd_error_set(err, NLPD_EFORMAT, 0, "%s:%d: %s", path, je.line, je.text);
    else if (!json_is_object(j)) {
        *rc = nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: not a JSON object", path);
        json_decref(j);
        j = NULL;
    }
    return j;
}

static int parse_config(json_t *c, const char *f, const struct nlpd_s2s_arch *a, struct nlpd_s2s_config *cfg,
                        struct nlpd_error *err)
{
    json_t *mt = json_object_get(c, "model_type");
    if (json_is_string(mt) && strcmp(json_string_value(mt), a->model_type))
        return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: model_type \"%s\" is not %s", f, json_string_value(mt),
                              a->what);
    const long long BIG = 1 << 24;
    int rc;
    if ((rc = jint(c, f, "d_model", 1024, 1, 1 << 16, &cfg->d_model, err)) ||
        (rc = jint(c, f, "encoder_layers", 12, 0, 1024, &cfg->enc_layers, err)) ||
        (rc = jint(c, f, "decoder_layers", 12, 1, 1024, &cfg->dec_layers, err)) ||
        (rc = jint(c, f, "encoder_attention_heads", 16, 1, 1024, &cfg->enc_heads, err)) ||
        (rc = jint(c, f, "decoder_attention_heads", 16, 1, 1024, &cfg->dec_heads, err)) ||
        (rc = jint(c, f, "encoder_ffn_dim", 4096, 1, 1 << 20, &cfg->enc_ffn, err)) ||
        (rc = jint(c, f, "decoder_ffn_dim", 4096, 1, 1 << 20, &cfg->dec_ffn, err)) ||
        (rc = jint(c, f, "vocab_size", a->vocab, 2, BIG, &cfg->vocab, err)) ||
        (a->dec_vocab_key && (rc = jint(c, f, "decoder_vocab_size", cfg->vocab, 2, BIG, &cfg->dec_vocab, err))) ||
        (rc = jint(c, f, "max_position_embeddings", 1024, 2, 1 << 20, &cfg->max_pos, err)) ||
        (rc = jint(c, f, "pad_token_id", a->pad, 0, BIG, &cfg->pad, err)) ||
        (rc = jint(c, f, "eos_token_id", a->eos, 0, BIG, &cfg->eos, err)) ||
        (rc = jint(c, f, "decoder_start_token_id", a->decoder_start < 0 ? cfg->pad : a->decoder_start, 0, BIG,
                   &cfg->decoder_start, err)))
        return rc;
    if (!a->dec_vocab_key)
        cfg->dec_vocab = cfg->vocab;
    if (cfg->d_model % cfg->enc_heads || cfg->d_model % cfg->dec_heads)
        return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: d_model %d is not a multiple of the attention heads", f,
                              cfg->d_model);
    if (cfg->pad >= cfg->dec_vocab || cfg->eos >= cfg->dec_vocab || cfg->decoder_start >= cfg->dec_vocab)
        return nlpd_error_set(err, NLPD_ERANGE, 0, "%s: pad/eos/decoder_start id out of the decoder vocabulary (%d)", f,
                              cfg->dec_vocab);
    json_t *act = json_object_get(c, "activation_function");
    const char *an = json_is_string(act) ? json_string_value(act) : a->act;
    if (nlpd_hf_parse_act(an, &cfg->act) < 0)
        return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: activation_function \"%.40s\" is not supported", f, an);
    snprintf(cfg->act_name, sizeof cfg->act_name, "%s", an);
    cfg->scale_embedding = jbool(c, "scale_embedding", a->scale_embedding);
    if (a->static_pos_key && !jbool(c, "static_position_embeddings", 1))
        return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: learned position embeddings are not supported", f);
    if (cfg->max_pos > (1 << 20) - a->pos_extra)
        return nlpd_error_set(err, NLPD_ERANGE, 0, "%s: max_position_embeddings too large", f);
    return 0;
}

/* Generation defaults: generation_config.json, else the same keys in config.json; GenerationConfig's defaults. */
static int parse_generation(struct nlpd_s2s *m, json_t *g, const char *f, struct nlpd_error *err)
{
    struct nlpd_gen_params *p = &m->gen;
    const struct nlpd_s2s_config *c = &m->cfg;
    const long long BIG = 1 << 24;
    int max_length, max_new = -1, early = 0, rc;
    *p = (struct nlpd_gen_params){0};
    if ((rc = jint(g, f, "num_beams", 1, 1, 64, &p->num_beams, err)) ||
        (rc = jint(g, f, "max_length", HF_DEFAULT_MAX_LENGTH, 1, BIG, &max_length, err)) ||
        (rc = jint(g, f, "max_new_tokens", -1, -1, BIG, &max_new, err)) ||
        (rc = jint(g, f, "no_repeat_ngram_size", 0, 0, 1024, &p->no_repeat_ngram_size, err)) ||
        (rc = jint(g, f, "min_length", 0, 0, BIG, &p->min_length, err)) ||
        (rc = jint(g, f, "decoder_start_token_id", c->decoder_start, 0, c->dec_vocab - 1, &p->decoder_start, err)) ||
        (rc = jint(g, f, "eos_token_id", c->eos, 0, c->dec_vocab - 1, &p->eos, err)) ||
        (rc = jint(g, f, "pad_token_id", c->pad, 0, c->dec_vocab - 1, &p->pad, err)) ||
        (rc = jint(g, f, "forced_eos_token_id", -1, -1, c->dec_vocab - 1, &p->forced_eos, err)))
        return rc;
    /* transformers: a max_length equal to its default of 20 means "20 new tokens" unless passed to generate() */
    if (max_new > 0)
        p->max_length = max_new + 1;
    else
        p->max_length = max_length == HF_DEFAULT_MAX_LENGTH ? max_length + 1 : max_length;
    if (p->max_length > c->max_pos)
        p->max_length = c->max_pos;
    json_t *lp = json_object_get(g, "length_penalty");
    p->length_penalty = json_is_number(lp) ? (float)json_number_value(lp) : 1.0f;
    json_t *es = json_object_get(g, "early_stopping");
    if (json_is_boolean(es))
        early = json_is_true(es);
    else if (json_is_string(es) && !strcmp(json_string_value(es), "never"))
        early = 2;
    else if (es && !json_is_null(es))
        return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: early_stopping must be true, false or \"never\"", f);
    p->early_stopping = early == 2 ? NLPD_EARLY_STOP_NEVER : early ? NLPD_EARLY_STOP_TRUE : NLPD_EARLY_STOP_FALSE;
    p->renormalize_logits = jbool(g, "renormalize_logits", 0);

    json_t *bw = json_object_get(g, "bad_words_ids");
    if (bw && !json_is_null(bw)) {
        if (!json_is_array(bw))
            return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: bad_words_ids must be a list of lists of ids", f);
        size_t n = json_array_size(bw), total = 0, i;
        json_t *seq;
        json_array_foreach(bw, i, seq)
        {
            if (!json_is_array(seq) || json_array_size(seq) == 0)
                return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: bad_words_ids[%zu] must be a non-empty list", f, i);
            total += json_array_size(seq);
        }
        if (total > BAD_WORDS_MAX)
            return nlpd_error_set(err, NLPD_ERANGE, 0, "%s: bad_words_ids has over %d ids", f, BAD_WORDS_MAX);
        m->bad = malloc((total ? total : 1) * sizeof *m->bad);
        m->bad_off = malloc((n + 1) * sizeof *m->bad_off);
        if (!m->bad || !m->bad_off)
            return nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
        size_t k = 0;
        json_array_foreach(bw, i, seq)
        {
            m->bad_off[i] = k;
            size_t j;
            json_t *id;
            json_array_foreach(seq, j, id)
            {
                if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) >= c->dec_vocab)
                    return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: bad_words_ids[%zu][%zu] is not a token id", f, i,
                                          j);
                m->bad[k++] = (int32_t)json_integer_value(id);
            }
        }
        m->bad_off[n] = k;
        p->bad = m->bad;
        p->bad_off = m->bad_off;
        p->n_bad = n;
    }
    return 0;
}

/* ----------------------------------------------------------------------------- loading ---- */

static const char *lname(char *buf, const char *side, int i, const char *suffix)
{
    snprintf(buf, NAME_LEN, "model.%s.layers.%d.%s", side, i, suffix);
    return buf;
}

/* A fused product: `count` Linear layers [H, H] side by side in one [H, count * H] matrix. */
static int put_fused(struct nlpd_wloader *ld, const char *side, int i, const char *const *names, int count, int H,
                     size_t w, size_t b, struct nlpd_error *err)
{
    char n[NAME_LEN];
    for (int j = 0; j < count; j++) {
        int rc = nlpd_wl_put_linear(ld, lname(n, side, i, names[j]), H, H, w + (size_t)j * H, b + (size_t)j * H,
                                    (size_t)count * H, err);
        if (rc)
            return rc;
    }
    return 0;
}

static int load_all(struct nlpd_s2s *m, struct nlpd_wloader *ld, float *pos_table, struct nlpd_error *err)
{
    const struct nlpd_s2s_config *c = &m->cfg;
    const int H = c->d_model;
    char n[NAME_LEN];
    int rc;
    const char *enc_emb = nlpd_safetensors_find(ld->st, "model.encoder.embed_tokens.weight")
                              ? "model.encoder.embed_tokens.weight"
                              : "model.shared.weight";
    const char *dec_emb = nlpd_safetensors_find(ld->st, "model.decoder.embed_tokens.weight")
                              ? "model.decoder.embed_tokens.weight"
                              : "model.shared.weight";
    if (ld->planning) {
        m->enc_embed = nlpd_wl_place(ld, (size_t)c->vocab * H);
        m->dec_embed = strcmp(enc_emb, dec_emb) ? nlpd_wl_place(ld, (size_t)c->dec_vocab * H) : m->enc_embed;
        m->lm_head = m->dec_embed;
        m->pos = nlpd_wl_place(ld, (size_t)m->n_pos * H);
        if (m->arch->logits_bias)
            m->logits_bias = nlpd_wl_place(ld, (size_t)c->dec_vocab);
    }
    if ((rc = nlpd_wl_put(ld, enc_emb, c->vocab, H, 0, m->enc_embed, (size_t)H, err)) ||
        (m->dec_embed != m->enc_embed &&
         (rc = nlpd_wl_put(ld, dec_emb, c->dec_vocab, H, 0, m->dec_embed, (size_t)H, err))) ||
        (rc = nlpd_wl_put_host(ld, pos_table, (size_t)m->n_pos * H, m->pos, err)))
        return rc;
    if (m->arch->pre_norm &&
        ((rc = nlpd_wl_put_ln(ld, "model.encoder.layer_norm", H, &m->enc_ln_g, &m->enc_ln_b, err)) ||
         (rc = nlpd_wl_put_ln(ld, "model.decoder.layer_norm", H, &m->dec_ln_g, &m->dec_ln_b, err))))
        return rc;
    if (m->lm_head != m->dec_embed && (rc = nlpd_wl_put(ld, "lm_head.weight", c->dec_vocab, H, 0, m->lm_head, H, err)))
        return rc;
    if (m->has_logits_bias) {
        int64_t shape[2] = {1, c->dec_vocab};
        if (ld->planning) {
            if ((rc = nlpd_safetensors_read_f32(ld->st, "final_logits_bias", 2, shape, NULL, err)))
                return rc;
        } else if ((rc = nlpd_wl_put(ld, "final_logits_bias", 1, c->dec_vocab, 0, m->logits_bias, 0, err))) {
            return rc;
        }
    }

    static const char *const qkv[3] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"};
    static const char *const kv[2] = {"self_attn.k_proj", "self_attn.v_proj"};
    static const char *const ckv[2] = {"encoder_attn.k_proj", "encoder_attn.v_proj"};
    for (int i = 0; i < c->enc_layers; i++) {
        struct enc_layer *L = &m->enc[i];
        const int F = c->enc_ffn;
        if (ld->planning) {
            L->wqkv = nlpd_wl_place(ld, (size_t)H * 3 * H);
            L->bqkv = nlpd_wl_place(ld, (size_t)3 * H);
            L->wo = nlpd_wl_place(ld, (size_t)H * H);
            L->bo = nlpd_wl_place(ld, (size_t)H);
            L->w1 = nlpd_wl_place(ld, (size_t)H * F);
            L->b1 = nlpd_wl_place(ld, (size_t)F);
            L->w2 = nlpd_wl_place(ld, (size_t)F * H);
            L->b2 = nlpd_wl_place(ld, (size_t)H);
        }
        if ((rc = put_fused(ld, "encoder", i, qkv, 3, H, L->wqkv, L->bqkv, err)) ||
            (rc = nlpd_wl_put_linear(ld, lname(n, "encoder", i, "self_attn.out_proj"), H, H, L->wo, L->bo, H, err)) ||
            (rc = nlpd_wl_put_ln(ld, lname(n, "encoder", i, "self_attn_layer_norm"), H, &L->ln1_g, &L->ln1_b, err)) ||
            (rc = nlpd_wl_put_linear(ld, lname(n, "encoder", i, "fc1"), F, H, L->w1, L->b1, (size_t)F, err)) ||
            (rc = nlpd_wl_put_linear(ld, lname(n, "encoder", i, "fc2"), H, F, L->w2, L->b2, (size_t)H, err)) ||
            (rc = nlpd_wl_put_ln(ld, lname(n, "encoder", i, "final_layer_norm"), H, &L->ln2_g, &L->ln2_b, err)))
            return rc;
    }
    for (int i = 0; i < c->dec_layers; i++) {
        struct dec_layer *L = &m->dec[i];
        const int F = c->dec_ffn;
        if (ld->planning) {
            L->wq = nlpd_wl_place(ld, (size_t)H * H);
            L->bq = nlpd_wl_place(ld, (size_t)H);
            L->wkv = nlpd_wl_place(ld, (size_t)H * 2 * H);
            L->bkv = nlpd_wl_place(ld, (size_t)2 * H);
            L->wo = nlpd_wl_place(ld, (size_t)H * H);
            L->bo = nlpd_wl_place(ld, (size_t)H);
            L->cwq = nlpd_wl_place(ld, (size_t)H * H);
            L->cbq = nlpd_wl_place(ld, (size_t)H);
            L->cwkv = nlpd_wl_place(ld, (size_t)H * 2 * H);
            L->cbkv = nlpd_wl_place(ld, (size_t)2 * H);
            L->cwo = nlpd_wl_place(ld, (size_t)H * H);
            L->cbo = nlpd_wl_place(ld, (size_t)H);
            L->w1 = nlpd_wl_place(ld, (size_t)H * F);
            L->b1 = nlpd_wl_place(ld, (size_t)F);
            L->w2 = nlpd_wl_place(ld, (size_t)F * H);
            L->b2 = nlpd_wl_place(ld, (size_t)H);
        }
        if ((rc = nlpd_wl_put_linear(ld, lname(n, "decoder", i, "self_attn.q_proj"), H, H, L->wq, L->bq, H, err)) ||
            (rc = put_fused(ld, "decoder", i, kv, 2, H, L->wkv, L->bkv, err)) ||
            (rc = nlpd_wl_put_linear(ld, lname(n, "decoder", i, "self_attn.out_proj"), H, H, L->wo, L->bo, H, err)) ||
            (rc = nlpd_wl_put_ln(ld, lname(n, "decoder", i, "self_attn_layer_norm"), H, &L->ln1_g, &L->ln1_b, err)) ||
            (rc =
                 nlpd_wl_put_linear(ld, lname(n, "decoder", i, "encoder_attn.q_proj"), H, H, L->cwq, L->cbq, H, err)) ||
            (rc = put_fused(ld, "decoder", i, ckv, 2, H, L->cwkv, L->cbkv, err)) ||
            (rc = nlpd_wl_put_linear(ld, lname(n, "decoder", i, "encoder_attn.out_proj"), H, H, L->cwo, L->cbo, H,
                                     err)) ||
            (rc =
                 nlpd_wl_put_ln(ld, lname(n, "decoder", i, "encoder_attn_layer_norm"), H, &L->ln2_g, &L->ln2_b, err)) ||
            (rc = nlpd_wl_put_linear(ld, lname(n, "decoder", i, "fc1"), F, H, L->w1, L->b1, (size_t)F, err)) ||
            (rc = nlpd_wl_put_linear(ld, lname(n, "decoder", i, "fc2"), H, F, L->w2, L->b2, (size_t)H, err)) ||
            (rc = nlpd_wl_put_ln(ld, lname(n, "decoder", i, "final_layer_norm"), H, &L->ln3_g, &L->ln3_b, err)))
            return rc;
    }
    return 0;
}

struct nlpd_s2s *nlpd_s2s_load(const char *dir, const struct nlpd_s2s_arch *arch, const struct nlpd_s2s_opts *opts,
                               struct nlpd_error *err)
{
    struct nlpd_s2s *m = calloc(1, sizeof *m);
    struct nlpd_wloader ld = {0};
    float *pos_table = NULL;
    json_t *cj = NULL, *gj = NULL;
    int rc;
    if (!m) {
        nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
        return NULL;
    }
    m->arch = arch;
    char cpath[4096], gpath[4096];
    snprintf(cpath, sizeof cpath, "%s/config.json", dir);
    snprintf(gpath, sizeof gpath, "%s/generation_config.json", dir);
    if (!(cj = load_json(dir, "config.json", 1, err, &rc)) || parse_config(cj, cpath, arch, &m->cfg, err))
        goto fail;
    gj = load_json(dir, "generation_config.json", 0, err, &rc);
    if (rc || parse_generation(m, gj ? gj : cj, gj ? gpath : cpath, err))
        goto fail;
    const struct nlpd_s2s_config *c = &m->cfg;
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (!(ld.st = nlpd_safetensors_open(path, err)))
        goto fail;
    m->has_logits_bias = arch->logits_bias && nlpd_safetensors_find(ld.st, "final_logits_bias");
    m->n_pos = c->max_pos + arch->pos_extra;
    m->enc = calloc((size_t)(c->enc_layers ? c->enc_layers : 1), sizeof *m->enc);
    m->dec = calloc((size_t)c->dec_layers, sizeof *m->dec);
    pos_table = malloc((size_t)m->n_pos * c->d_model * sizeof *pos_table);
    if (!m->enc || !m->dec || !pos_table) {
        nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
        goto fail;
    }
    arch->pos_table(pos_table, m->n_pos, c->d_model, c->pad);
    if (opts && opts->be) {
        m->be = opts->be;
    } else {
        struct nlpd_backend_opts bo;
        nlpd_backend_opts_default(&bo);
        if (opts && opts->backend)
            bo.name = opts->backend;
        bo.threads = opts ? opts->threads : 0;
        if (opts && opts->dtype && strcmp(opts->dtype, "default")) { /* asked for by name: no fallback */
            int dt = nlpd_dtype_parse(opts->dtype);
            if (dt < 0) {
                nlpd_error_set(err, NLPD_EINVAL, 0, "unknown dtype \"%s\" (fp32, fp16, bf16, int8)", opts->dtype);
                goto fail;
            }
            bo.dtype = (enum nlpd_dtype)dt;
            bo.dtype_strict = 1;
        }
        if (!(m->be = nlpd_backend_new_opts(&bo, err)))
            goto fail;
        m->own_be = 1;
    }
    ld.planning = 1;
    if (load_all(m, &ld, pos_table, err))
        goto fail;
    /* a separate output projection only when the checkpoint has one and the config unties it */
    if (nlpd_safetensors_find(ld.st, "lm_head.weight") && !jbool(cj, "tie_word_embeddings", 1)) {
        m->lm_head = nlpd_wl_place(&ld, (size_t)c->dec_vocab * c->d_model);
        if (nlpd_wl_put(&ld, "lm_head.weight", c->dec_vocab, c->d_model, 0, m->lm_head, (size_t)c->d_model, err))
            goto fail;
    }
    if (nlpd_backend_alloc_weights(m->be, ld.next * sizeof(float), &m->weights, err))
        goto fail;
    ld.dst = &m->weights;
    ld.planning = 0;
    if (arch->logits_bias && !m->has_logits_bias) {
        float *zero = calloc((size_t)c->dec_vocab, sizeof *zero);
        if (!zero || nlpd_wl_put_host(&ld, zero, (size_t)c->dec_vocab, m->logits_bias, err)) {
            free(zero);
            nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
            goto fail;
        }
        free(zero);
    }
    if (load_all(m, &ld, pos_table, err))
        goto fail;
    nlpd_wl_release(&ld);
    nlpd_safetensors_close(ld.st);
    free(pos_table);
    json_decref(cj);
    json_decref(gj);
    return m;
fail:
    nlpd_wl_release(&ld);
    nlpd_safetensors_close(ld.st);
    free(pos_table);
    json_decref(cj);
    json_decref(gj);
    nlpd_s2s_free(m);
    return NULL;
}

void nlpd_s2s_free(struct nlpd_s2s *m)
{
    if (!m)
        return;
    nlpd_backend_buffer_free(&m->weights);
    if (m->own_be)
        nlpd_backend_free(m->be);
    free(m->enc);
    free(m->dec);
    free(m->bad);
    free(m->bad_off);
    free(m);
}

enum nlpd_dtype nlpd_s2s_dtype(const struct nlpd_s2s *m)
{
    return nlpd_backend_dtype(m->be);
}

const struct nlpd_s2s_config *nlpd_s2s_config(const struct nlpd_s2s *m)
{
    return &m->cfg;
}

void nlpd_s2s_gen_defaults(const struct nlpd_s2s *m, struct nlpd_gen_params *p)
{
    *p = m->gen;
}

size_t nlpd_s2s_weight_bytes(const struct nlpd_s2s *m)
{
    return m->weights.size;
}

/* --------------------------------------------------------------------------- workspace ---- */

struct nlpd_s2s_ws *nlpd_s2s_ws_new(const struct nlpd_s2s *m, struct nlpd_error *err)
{
    struct nlpd_s2s_ws *ws = calloc(1, sizeof *ws);
    if (!ws)
        nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
    else
        ws->m = m;
    return ws;
}

void nlpd_s2s_ws_free(struct nlpd_s2s_ws *ws)
{
    if (!ws)
        return;
    nlpd_backend_buffer_free(&ws->enc_buf);
    nlpd_backend_buffer_free(&ws->cross_buf);
    nlpd_backend_buffer_free(&ws->dec_buf);
    nlpd_backend_buffer_free(&ws->cache);
    nlpd_backend_buffer_free(&ws->layer_tmp);
    free(ws->host);
    free(ws);
}

static size_t al16(size_t n)
{
    return (n + 15) & ~(size_t)15;
}

static int32_t *host_ints(struct nlpd_s2s_ws *ws, size_t n, struct nlpd_error *err)
{
    if (nlpd_grow((void **)&ws->host, &ws->host_cap, n, sizeof *ws->host)) {
        nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
        return NULL;
    }
    return ws->host;
}

static size_t byte_off(const struct nlpd_buffer *buf, const void *p)
{
    return (size_t)((const char *)p - (const char *)buf->ptr);
}

/* Replaces *buf with a new buffer of n 64-byte aligned parts of sizes[i] floats; parts[i] gets each one. */
static int carve(const struct nlpd_s2s *m, struct nlpd_buffer *buf, const size_t *sizes, float **parts, int n,
                 struct nlpd_error *err)
{
    size_t off[16], o = 0;
    for (int i = 0; i < n; i++) {
        off[i] = o;
        o += al16(sizes[i]);
    }
    struct nlpd_buffer nb;
    if (nlpd_backend_alloc(m->be, o * sizeof(float), &nb, err))
        return err && err->code ? err->code : NLPD_ENOMEM;
    nlpd_backend_buffer_free(buf);
    *buf = nb;
    for (int i = 0; i < n; i++)
        parts[i] = (float *)nb.ptr + off[i];
    return 0;
}

static int enc_reserve(struct nlpd_s2s_ws *ws, int B, int S, struct nlpd_error *err)
{
    const struct nlpd_s2s_config *c = &ws->m->cfg;
    size_t T = (size_t)B * S, H = (size_t)c->d_model, F = (size_t)c->enc_ffn;
    if (T > ws->enc_cap || (size_t)S * S > ws->enc_sq) {
        if (T < ws->enc_cap)
            T = ws->enc_cap;
        size_t sq = (size_t)S * S > ws->enc_sq ? (size_t)S * S : ws->enc_sq;
        const size_t xn = ws->m->arch->pre_norm ? T * H : 0;
        const size_t sizes[10] = {T * H, T * 3 * H, T * H, T * H, T * F, sq, T, T, T, xn};
        float *b[10];
        int rc = carve(ws->m, &ws->enc_buf, sizes, b, 10, err);
        if (rc)
            return rc;
        ws->enc_cap = T;
        ws->enc_sq = sq;
        ws->x = b[0];
        ws->qkv = b[1];
        ws->ctx = b[2];
        ws->tmp = b[3];
        ws->ffn = b[4];
        ws->scores = b[5];
        ws->ids = (int32_t *)b[6];
        ws->pos_ids = (int32_t *)b[7];
        ws->mask = (int32_t *)b[8];
        ws->xn = b[9];
    }
    size_t cross = (size_t)c->dec_layers * B * S * 2 * H;
    if (cross > ws->cross_cap) {
        int rc = carve(ws->m, &ws->cross_buf, &cross, &ws->cross, 1, err);
        if (rc)
            return rc;
        ws->cross_cap = cross;
    }
    return 0;
}

static int dec_reserve(struct nlpd_s2s_ws *ws, int R, struct nlpd_error *err)
{
    if (R <= ws->dec_rows_cap)
        return 0;
    const struct nlpd_s2s_config *c = &ws->m->cfg;
    size_t H = (size_t)c->d_model, F = (size_t)c->dec_ffn, V = (size_t)c->dec_vocab, r = (size_t)R;
    const size_t yn = ws->m->arch->pre_norm ? r * H : 0;
    const size_t sizes[12] = {r * H, r * H, r * H, r * H, r * F, r * V, r, r, r, r, r, yn};
    float *b[12];
    int32_t *h = host_ints(ws, r, err);
    if (!h)
        return NLPD_ENOMEM;
    int rc = carve(ws->m, &ws->dec_buf, sizes, b, 12, err);
    if (rc)
        return rc;
    ws->dec_rows_cap = R;
    ws->y = b[0];
    ws->q = b[1];
    ws->dctx = b[2];
    ws->dtmp = b[3];
    ws->dffn = b[4];
    ws->logits = b[5];
    ws->tok = (int32_t *)b[6];
    ws->dpos = (int32_t *)b[7];
    ws->kv_map = (int32_t *)b[8];
    ws->gidx = (int32_t *)b[9];
    ws->ident = (int32_t *)b[10];
    ws->yn = b[11];
    for (int i = 0; i < R; i++)
        h[i] = i;
    if ((rc = nlpd_backend_upload(&ws->dec_buf, byte_off(&ws->dec_buf, ws->ident), h, r * sizeof *h))) {
        ws->dec_rows_cap = 0; /* retried next time */
        return nlpd_error_set(err, rc, 0, "uploading the decoder workspace failed");
    }
    return 0;
}

static size_t row_floats(const struct nlpd_s2s_ws *ws, int cap)
{
    return (size_t)ws->m->cfg.dec_layers * (size_t)cap * 2 * (size_t)ws->m->cfg.d_model;
}

static float *cache_layer(const struct nlpd_s2s_ws *ws, int l)
{
    return (float *)ws->cache.ptr + (size_t)l * ws->cache_cap * 2 * ws->m->cfg.d_model;
}

static int run(const struct nlpd_s2s *m, const struct nlpd_op *op, struct nlpd_error *err)
{
    return nlpd_backend_run(m->be, op, err);
}

/* dst row i = src row idx[i] (cols floats; row strides in floats). */
static int gather(const struct nlpd_s2s *m, float *dst, size_t ld_dst, const float *src, size_t ld_src,
                  const int32_t *idx, int rows, int src_rows, size_t cols, struct nlpd_error *err)
{
    struct nlpd_op op = {.kind = NLPD_OP_GATHER_ROWS};
    op.u.gather_rows = (struct nlpd_op_gather_rows){.dst = dst,
                                                    .src = src,
                                                    .idx = idx,
                                                    .rows = rows,
                                                    .cols = (int)cols,
                                                    .src_rows = src_rows,
                                                    .ld_dst = ld_dst,
                                                    .ld_src = ld_src};
    return run(m, &op, err);
}

/* Room for R rows and positions 0 .. need-1, keeping the first `keep` positions of the live rows. */
static int cache_reserve(struct nlpd_s2s_ws *ws, int R, int need, int keep, struct nlpd_error *err)
{
    if (R <= ws->cache_rows && need <= ws->cache_cap)
        return 0;
    const struct nlpd_s2s *m = ws->m;
    const size_t H2 = 2 * (size_t)m->cfg.d_model;
    int cap = ws->cache_cap, rows = R > ws->cache_rows ? R : ws->cache_rows;
    while (cap < need)
        cap = cap ? cap * 2 : 32;
    struct nlpd_buffer nb = {0}, nt = {0};
    int rc = nlpd_backend_alloc(m->be, (size_t)rows * row_floats(ws, cap) * sizeof(float), &nb, err);
    if (!rc)
        rc = nlpd_backend_alloc(m->be, (size_t)rows * cap * H2 * sizeof(float), &nt, err);
    if (!rc && keep > 0 && ws->rows > 0 && !(rc = dec_reserve(ws, ws->rows > R ? ws->rows : R, err)))
        for (int l = 0; l < m->cfg.dec_layers && !rc; l++) /* the live history moves over */
            rc = gather(m, (float *)nb.ptr + (size_t)l * cap * H2, row_floats(ws, cap), cache_layer(ws, l),
                        row_floats(ws, ws->cache_cap), ws->ident, ws->rows, ws->rows, (size_t)keep * H2, err);
    if (rc) {
        nlpd_backend_buffer_free(&nb);
        nlpd_backend_buffer_free(&nt);
        return rc;
    }
    nlpd_backend_buffer_free(&ws->cache);
    nlpd_backend_buffer_free(&ws->layer_tmp);
    ws->cache = nb;
    ws->layer_tmp = nt;
    ws->cache_rows = rows;
    ws->cache_cap = cap;
    return 0;
}

/* ----------------------------------------------------------------------------- forward ---- */

static int matmul(const struct nlpd_s2s *m, float *c, int ldc, const float *a, int lda, size_t w, size_t b, int rows,
                  int n, int k, enum nlpd_act act, struct nlpd_error *err)
{
    const float *base = m->weights.ptr;
    struct nlpd_op op = {.kind = NLPD_OP_MATMUL};
    op.u.matmul = (struct nlpd_op_matmul){.c = c,
                                          .a = a,
                                          .b = base + w,
                                          .bias = b == (size_t)-1 ? NULL : base + b,
                                          .m = rows,
                                          .n = n,
                                          .k = k,
                                          .lda = lda,
                                          .ldb = n,
                                          .ldc = ldc,
                                          .act = act};
    return run(m, &op, err);
}

/* y = LN(x + bias + residual) with the model's gamma/beta at weight offsets g, b; bias (size_t)-1 = none */
static int layer_norm(const struct nlpd_s2s *m, float *y, const float *x, size_t bias, const float *res, size_t g,
                      size_t b, int rows, struct nlpd_error *err)
{
    const float *base = m->weights.ptr;
    struct nlpd_op op = {.kind = NLPD_OP_LAYER_NORM};
    op.u.layer_norm = (struct nlpd_op_layer_norm){.y = y,
                                                  .x = x,
                                                  .bias = bias == (size_t)-1 ? NULL : base + bias,
                                                  .residual = res,
                                                  .gamma = base + g,
                                                  .beta = base + b,
                                                  .rows = rows,
                                                  .cols = m->cfg.d_model,
                                                  .eps = LN_EPS};
    return run(m, &op, err);
}

/* Pre-norm: xn = LN(x), the sub-layer's input. Post-norm: nothing (the sub-layer reads x). */
static int norm_in(const struct nlpd_s2s *m, float *xn, const float *x, size_t g, size_t b, int rows,
                   struct nlpd_error *err)
{
    return m->arch->pre_norm ? layer_norm(m, xn, x, (size_t)-1, NULL, g, b, rows, err) : 0;
}

/* After a sub-layer whose output projection wrote out: pre-norm x += out + bias; post-norm x = LN(x + out + bias). */
static int norm_out(const struct nlpd_s2s *m, float *x, const float *out, size_t bias, size_t g, size_t b, int rows,
                    struct nlpd_error *err)
{
    if (!m->arch->pre_norm)
        return layer_norm(m, x, out, bias, x, g, b, rows, err);
    const float *base = m->weights.ptr;
    struct nlpd_op op = {.kind = NLPD_OP_BIAS_ACT};
    op.u.bias_act = (struct nlpd_op_bias_act){
        .x = x, .bias = base + bias, .rows = rows, .cols = m->cfg.d_model, .ld = m->cfg.d_model, .residual = out};
    return run(m, &op, err);
}

static int embed(const struct nlpd_s2s *m, float *out, size_t table, int n_word, const int32_t *ids,
                 const int32_t *pos_ids, int tokens, struct nlpd_error *err)
{
    const float *base = m->weights.ptr;
    const struct nlpd_s2s_config *c = &m->cfg;
    struct nlpd_op op = {.kind = NLPD_OP_EMBED};
    op.u.embed = (struct nlpd_op_embed){.out = out,
                                        .word = base + table,
                                        .pos = base + m->pos,
                                        .ids = ids,
                                        .pos_ids = pos_ids,
                                        .tokens = tokens,
                                        .dim = c->d_model,
                                        .n_word = n_word,
                                        .n_pos = m->n_pos,
                                        .word_scale = c->scale_embedding ? (float)sqrt((double)c->d_model) : 1.0f};
    return run(m, &op, err);
}

int nlpd_s2s_encode(const struct nlpd_s2s *m, struct nlpd_s2s_ws *ws, const int32_t *const *ids, const size_t *lens,
                    int n, float *hidden, struct nlpd_error *err)
{
    const struct nlpd_s2s_config *c = &m->cfg;
    const int H = c->d_model, F = c->enc_ffn;
    size_t S = 0;
    for (int i = 0; i < n; i++) {
        if (lens[i] == 0)
            return nlpd_error_set(err, NLPD_EINVAL, 0, "sequence %d is empty", i);
        S = lens[i] > S ? lens[i] : S;
    }
    if (n <= 0 || S > (size_t)c->max_pos)
        return nlpd_error_set(err, NLPD_ERANGE, 0, "%d sequences of up to %zu tokens: over the model's %d positions", n,
                              S, c->max_pos);
    const int B = n, T = (int)((size_t)B * S);
    int rc = enc_reserve(ws, B, (int)S, err);
    if (rc)
        return rc;
    ws->B = B;
    ws->S = (int)S;
    int32_t *h = host_ints(ws, (size_t)T * 3, err);
    if (!h)
        return NLPD_ENOMEM;
    for (int b = 0; b < B; b++)
        for (size_t s = 0; s < S; s++) {
            size_t t = (size_t)b * S + s;
            int real = s < lens[b];
            h[t] = real ? ids[b][s] : c->pad;
            h[T + t] = !m->arch->pos_after_pad ? (int32_t)s : real ? (int32_t)s + c->pad + 1 : c->pad;
            h[2 * (size_t)T + t] = real;
        }
    struct nlpd_buffer *eb = &ws->enc_buf;
    if ((rc = nlpd_backend_upload(eb, byte_off(eb, ws->ids), h, (size_t)T * 4)) ||
        (rc = nlpd_backend_upload(eb, byte_off(eb, ws->pos_ids), h + T, (size_t)T * 4)) ||
        (rc = nlpd_backend_upload(eb, byte_off(eb, ws->mask), h + 2 * (size_t)T, (size_t)T * 4)))
        return nlpd_error_set(err, rc, 0, "uploading the source batch failed");
    if ((rc = embed(m, ws->x, m->enc_embed, c->vocab, ws->ids, ws->pos_ids, T, err)))
        return rc;
    const float *in = m->arch->pre_norm ? ws->xn : ws->x; /* the sub-layers' input */
    for (int l = 0; l < c->enc_layers; l++) {
        const struct enc_layer *L = &m->enc[l];
        struct nlpd_op op = {.kind = NLPD_OP_ATTENTION};
        op.u.attention = (struct nlpd_op_attention){.out = ws->ctx,
                                                    .qkv = ws->qkv,
                                                    .mask = ws->mask,
                                                    .batch = B,
                                                    .seq = (int)S,
                                                    .heads = c->enc_heads,
                                                    .head_dim = H / c->enc_heads,
                                                    .ld_qkv = 3 * H,
                                                    .ld_out = H,
                                                    .scale = (float)(1.0 / sqrt((double)(H / c->enc_heads))),
                                                    .scratch = ws->scores,
                                                    .scratch_floats = S * S};
        if ((rc = norm_in(m, ws->xn, ws->x, L->ln1_g, L->ln1_b, T, err)) ||
            (rc = matmul(m, ws->qkv, 3 * H, in, H, L->wqkv, L->bqkv, T, 3 * H, H, NLPD_ACT_NONE, err)) ||
            (rc = run(m, &op, err)) ||
            (rc = matmul(m, ws->tmp, H, ws->ctx, H, L->wo, (size_t)-1, T, H, H, NLPD_ACT_NONE, err)) ||
            (rc = norm_out(m, ws->x, ws->tmp, L->bo, L->ln1_g, L->ln1_b, T, err)) ||
            (rc = norm_in(m, ws->xn, ws->x, L->ln2_g, L->ln2_b, T, err)) ||
            (rc = matmul(m, ws->ffn, F, in, H, L->w1, L->b1, T, F, H, c->act, err)) ||
            (rc = matmul(m, ws->tmp, H, ws->ffn, F, L->w2, (size_t)-1, T, H, F, NLPD_ACT_NONE, err)) ||
            (rc = norm_out(m, ws->x, ws->tmp, L->b2, L->ln2_g, L->ln2_b, T, err)))
            return rc;
    }
    if (m->arch->pre_norm && (rc = layer_norm(m, ws->x, ws->x, (size_t)-1, NULL, m->enc_ln_g, m->enc_ln_b, T, err)))
        return rc;
    /* the cross-attention keys/values of every decoder layer, once per batch */
    for (int l = 0; l < c->dec_layers; l++) {
        float *kv = ws->cross + (size_t)l * T * 2 * H;
        if ((rc = matmul(m, kv, 2 * H, ws->x, H, m->dec[l].cwkv, m->dec[l].cbkv, T, 2 * H, H, NLPD_ACT_NONE, err)))
            return rc;
    }
    if ((rc = nlpd_backend_sync(m->be, err)))
        return rc;
    if (hidden && (rc = nlpd_backend_download_err(eb, byte_off(eb, ws->x), hidden, (size_t)T * H * sizeof(float), err)))
        return rc;
    ws->rows = 0;
    return 0;
}

/* generate.c's step: one token per row at position pos, logits [R, V] to the host */
static int dec_step(void *ctx, const int32_t *tokens, const int32_t *sent, int R, int pos, float *logits,
                    struct nlpd_error *err)
{
    struct nlpd_s2s_ws *ws = ctx;
    const struct nlpd_s2s *m = ws->m;
    const struct nlpd_s2s_config *c = &m->cfg;
    const int H = c->d_model, F = c->dec_ffn, V = c->dec_vocab, NL = c->dec_layers;
    if (pos >= c->max_pos) /* pos_after_pad: the table has max_pos rows past the padding offset */
        return nlpd_error_set(err, NLPD_ERANGE, 0, "decoder position %d over the model's %d", pos, c->max_pos);
    int rc;
    if ((rc = dec_reserve(ws, R, err)) || (rc = cache_reserve(ws, R, pos + 1, pos, err)))
        return rc;
    int32_t *h = host_ints(ws, (size_t)R, err);
    if (!h)
        return NLPD_ENOMEM;
    for (int r = 0; r < R; r++)
        if (sent[r] < 0 || sent[r] >= ws->B)
            return nlpd_error_set(err, NLPD_EINVAL, 0, "decoder row %d names sentence %d of %d", r, sent[r], ws->B);
    struct nlpd_buffer *db = &ws->dec_buf;
    for (int r = 0; r < R; r++)
        h[r] = m->arch->pos_after_pad ? pos + c->pad + 1 : pos;
    if ((rc = nlpd_backend_upload(db, byte_off(db, ws->dpos), h, (size_t)R * 4)) ||
        (rc = nlpd_backend_upload(db, byte_off(db, ws->tok), tokens, (size_t)R * 4)) ||
        (rc = nlpd_backend_upload(db, byte_off(db, ws->kv_map), sent, (size_t)R * 4)))
        return nlpd_error_set(err, rc, 0, "uploading decoder inputs failed");
    if ((rc = embed(m, ws->y, m->dec_embed, V, ws->tok, ws->dpos, R, err)))
        return rc;
    const int ld_row = (int)(row_floats(ws, ws->cache_cap) / (2 * (size_t)H)); /* cache rows of 2H per decoder row */
    const float scale_self = (float)(1.0 / sqrt((double)(H / c->dec_heads)));
    const float *in = m->arch->pre_norm ? ws->yn : ws->y; /* the sub-layers' input */
    for (int l = 0; l < NL; l++) {
        const struct dec_layer *L = &m->dec[l];
        float *kv = cache_layer(ws, l);
        struct nlpd_op att = {.kind = NLPD_OP_ATTENTION_KV};
        att.u.attention_kv = (struct nlpd_op_attention_kv){.out = ws->dctx,
                                                           .q = ws->q,
                                                           .k = kv,
                                                           .v = kv + H,
                                                           .batch = R,
                                                           .q_len = 1,
                                                           .kv_len = pos + 1,
                                                           .heads = c->dec_heads,
                                                           .head_dim = H / c->dec_heads,
                                                           .ld_q = H,
                                                           .ld_kv = 2 * H,
                                                           .ld_out = H,
                                                           .kv_batch_stride = (size_t)ld_row,
                                                           .scale = scale_self};
        /* self-attention: this position's k|v go straight into the cache */
        if ((rc = norm_in(m, ws->yn, ws->y, L->ln1_g, L->ln1_b, R, err)) ||
            (rc = matmul(m, ws->q, H, in, H, L->wq, L->bq, R, H, H, NLPD_ACT_NONE, err)) ||
            (rc = matmul(m, kv + (size_t)pos * 2 * H, (int)row_floats(ws, ws->cache_cap), in, H, L->wkv, L->bkv, R,
                         2 * H, H, NLPD_ACT_NONE, err)) ||
            (rc = run(m, &att, err)) ||
            (rc = matmul(m, ws->dtmp, H, ws->dctx, H, L->wo, (size_t)-1, R, H, H, NLPD_ACT_NONE, err)) ||
            (rc = norm_out(m, ws->y, ws->dtmp, L->bo, L->ln1_g, L->ln1_b, R, err)))
            return rc;
        /* cross-attention over the encoder states of each row's sentence */
        float *ckv = ws->cross + (size_t)l * ws->B * ws->S * 2 * H;
        att.u.attention_kv.k = ckv;
        att.u.attention_kv.v = ckv + H;
        att.u.attention_kv.kv_map = ws->kv_map;
        att.u.attention_kv.mask = ws->mask;
        att.u.attention_kv.mask_ld = ws->S;
        att.u.attention_kv.kv_len = ws->S;
        att.u.attention_kv.kv_batch_stride = (size_t)ws->S;
        if ((rc = norm_in(m, ws->yn, ws->y, L->ln2_g, L->ln2_b, R, err)) ||
            (rc = matmul(m, ws->q, H, in, H, L->cwq, L->cbq, R, H, H, NLPD_ACT_NONE, err)) ||
            (rc = run(m, &att, err)) ||
            (rc = matmul(m, ws->dtmp, H, ws->dctx, H, L->cwo, (size_t)-1, R, H, H, NLPD_ACT_NONE, err)) ||
            (rc = norm_out(m, ws->y, ws->dtmp, L->cbo, L->ln2_g, L->ln2_b, R, err)) ||
            (rc = norm_in(m, ws->yn, ws->y, L->ln3_g, L->ln3_b, R, err)) ||
            (rc = matmul(m, ws->dffn, F, in, H, L->w1, L->b1, R, F, H, c->act, err)) ||
            (rc = matmul(m, ws->dtmp, H, ws->dffn, F, L->w2, (size_t)-1, R, H, F, NLPD_ACT_NONE, err)) ||
            (rc = norm_out(m, ws->y, ws->dtmp, L->b2, L->ln3_g, L->ln3_b, R, err)))
            return rc;
    }
    if (m->arch->pre_norm && (rc = layer_norm(m, ws->yn, ws->y, (size_t)-1, NULL, m->dec_ln_g, m->dec_ln_b, R, err)))
        return rc;
    /* logits = in . lm_head^T (+ final_logits_bias) */
    const float *base = m->weights.ptr;
    struct nlpd_op op = {.kind = NLPD_OP_MATMUL};
    op.u.matmul = (struct nlpd_op_matmul){.c = ws->logits,
                                          .a = in,
                                          .b = base + m->lm_head,
                                          .bias = m->arch->logits_bias ? base + m->logits_bias : NULL,
                                          .m = R,
                                          .n = V,
                                          .k = H,
                                          .lda = H,
                                          .ldb = H,
                                          .ldc = V,
                                          .trans_b = 1};
    /* dec_step_topk (logits NULL): the logits stay on the device, its download syncs */
    if ((rc = run(m, &op, err)) || (logits && (rc = nlpd_backend_sync(m->be, err))))
        return rc;
    ws->rows = R;
    if (!logits)
        return 0;
    if ((rc = nlpd_backend_download_err(db, byte_off(db, ws->logits), logits, (size_t)R * V * sizeof(float), err)))
        return rc;
    return 0;
}

/* generate.c's step_topk: the step, then each row's k best candidates picked on the device (R x k floats and ids
 * cross instead of R x V logits). They go to the feed-forward buffer, which is free between steps (>= 2k floats a
 * row: nlpd_s2s_generate offers this only when dec_ffn >= 2 k for every k generate.c may ask). */
static int dec_step_topk(void *ctx, const int32_t *tokens, const int32_t *sent, int R, int pos, int k, float *logp,
                         int32_t *ids, struct nlpd_error *err)
{
    struct nlpd_s2s_ws *ws = ctx;
    const struct nlpd_s2s *m = ws->m;
    if (2 * (size_t)k > (size_t)m->cfg.dec_ffn)
        return nlpd_error_set(err, NLPD_EINVAL, 0, "decoder: %d candidates do not fit the step's buffer", k);
    int rc = dec_step(ctx, tokens, sent, R, pos, NULL, err);
    if (rc)
        return rc;
    struct nlpd_buffer *db = &ws->dec_buf;
    float *vals = ws->dffn;
    int32_t *idx = (int32_t *)(ws->dffn + (size_t)R * k);
    struct nlpd_op op = {.kind = NLPD_OP_LOG_SOFTMAX_TOPK};
    op.u.topk =
        (struct nlpd_op_log_softmax_topk){ws->logits, vals, idx, R, m->cfg.dec_vocab, k, (size_t)m->cfg.dec_vocab};
    if ((rc = run(m, &op, err)))
        return rc;
    if ((rc = nlpd_backend_download_err(db, byte_off(db, vals), logp, (size_t)R * k * sizeof(float), err)) ||
        (rc = nlpd_backend_download_err(db, byte_off(db, idx), ids, (size_t)R * k * sizeof(int32_t), err)))
        return rc;
    return 0;
}

/* generate.c's reorder: new row i continues old row idx[i], positions 0 .. pos */
static int dec_reorder(void *ctx, const int32_t *idx, int rows, int pos, struct nlpd_error *err)
{
    struct nlpd_s2s_ws *ws = ctx;
    for (int i = 0; i < rows; i++)
        if (idx[i] < 0 || idx[i] >= ws->rows)
            return nlpd_error_set(err, NLPD_EINVAL, 0, "reorder: row %d out of %d", idx[i], ws->rows);
    int rc = nlpd_backend_upload(&ws->dec_buf, byte_off(&ws->dec_buf, ws->gidx), idx, (size_t)rows * sizeof *idx);
    if (rc)
        return nlpd_error_set(err, rc, 0, "uploading the beam order failed");
    /* layer by layer through one layer's worth of scratch, so the cache is not held twice */
    const struct nlpd_s2s *m = ws->m;
    const size_t H2 = 2 * (size_t)m->cfg.d_model, cols = (size_t)(pos + 1) * H2, ld = row_floats(ws, ws->cache_cap);
    float *tmp = ws->layer_tmp.ptr;
    for (int l = 0; l < m->cfg.dec_layers; l++) {
        float *layer = cache_layer(ws, l);
        if ((rc = gather(m, tmp, (size_t)ws->cache_cap * H2, layer, ld, ws->gidx, rows, ws->rows, cols, err)) ||
            (rc = gather(m, layer, ld, tmp, (size_t)ws->cache_cap * H2, ws->ident, rows, rows, cols, err)))
            return rc;
    }
    ws->rows = rows;
    return 0;
}

int nlpd_s2s_generate(const struct nlpd_s2s *m, struct nlpd_s2s_ws *ws, const struct nlpd_gen_params *p,
                      struct nlpd_gen_output *out, struct nlpd_error *err)
{
    if (ws->B <= 0)
        return nlpd_error_set(err, NLPD_EINVAL, 0, "generate: nothing encoded");
    struct nlpd_gen_params q = *p;
    if (q.max_length > m->cfg.max_pos) /* positions past the table do not exist */
        q.max_length = m->cfg.max_pos;
    struct nlpd_gen_model gm = {.ctx = ws, .vocab = m->cfg.dec_vocab, .step = dec_step, .reorder = dec_reorder};
    /* the most candidates generate.c asks for: 2 x beams (1 greedy), one per one-token bad word, eos */
    size_t kmax = (q.num_beams > 1 ? 2 * (size_t)q.num_beams : 1) + q.n_bad + 1;
    if (2 * kmax <= (size_t)m->cfg.dec_ffn)
        gm.step_topk = dec_step_topk;
    ws->rows = 0;
    return nlpd_generate(&gm, ws->B, &q, out, err);
}
