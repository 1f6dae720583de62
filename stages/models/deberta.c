/* DeBERTa-v2/v3 (see deberta.h): tensor names as DebertaV2For*Classification saves them, weights laid out for the
 * kernels (Linear weights as [in, out], Q/K/V fused), the per-layer position projections of the (normalised)
 * relative embeddings precomputed at load, and the batched forward pass. */
#include "deberta.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grow.h"
#include "safetensors.h"
#include "weights.h"

#define NAME_MAX_LEN NLPD_WL_NAME_MAX

struct dlayer {
    size_t wqkv, bqkv, wpk, bpk, wpq, bpq; /* wpk/wpq: own position projections (share_att_key false) */
    size_t wo, bo, ln1_g, ln1_b, wi, bi, wo2, bo2, ln2_g, ln2_b;
};

struct nlpd_deberta {
    const struct nlpd_hf_config *cfg; /* the encoder's */
    enum nlpd_hf_task task;
    struct nlpd_backend *be;
    struct nlpd_buffer weights;
    struct nlpd_buffer pos_tab; /* per layer: [c2p: pos_k][p2c: pos_q], each [2 * span, H] */
    size_t word, pos, type, proj, emb_g, emb_b, rel, rel_g, rel_b;
    struct dlayer *layers;
    int H, E, P, D, span, num_labels, rel_on, n_pos_terms;
    float scale;
    size_t pool_w, pool_b, cls_w, cls_b;
};

struct nlpd_deberta_ws {
    struct nlpd_buffer buf;
    int max_batch, max_seq;
    float *x, *qkv, *ctx, *tmp, *ffn, *emb, *pool, *logits;
    int32_t *ids, *pos_ids, *type_ids, *mask, *ridx, *keep;
    int32_t *host; /* staging of positions, types, masks, relative indices */
    int zero_row;  /* row of tmp past every token row, all zeros: what padded rows gather after the embeddings */
    int padded;    /* the batch being run has padding (keep holds the gather) */
};

static float *wptr(const struct nlpd_deberta *m, size_t off)
{
    return (float *)m->weights.ptr + off;
}

/* ------------------------------------------------------------- relative positions ---- */

static int32_t log_bucket(int d, int buckets, int maxpos)
{
    const int mid = buckets / 2, ad = d < 0 ? -d : d;
    if (ad <= mid)
        return d;
    /* float32 throughout, as transformers computes it (abs_pos / mid, log, ceil) */
    float r = logf((float)ad / (float)mid) / logf((float)((double)(maxpos - 1) / mid)) * (float)(mid - 1);
    float lp = ceilf(r) + (float)mid;
    if (!(lp < 1e9f)) /* inf / NaN: past every row, the clamp takes it to the last */
        lp = 1e9f;
    return d > 0 ? (int32_t)lp : -(int32_t)lp;
}

int32_t nlpd_deberta_rel_index(const struct nlpd_hf_config *cfg, int d)
{
    const struct nlpd_hf_deberta *dc = &cfg->deberta;
    int span = dc->position_buckets > 0 ? dc->position_buckets : dc->max_relative_positions;
    int32_t r = dc->position_buckets > 0 ? log_bucket(d, dc->position_buckets, dc->max_relative_positions) : d;
    long long c = (long long)r + span;
    return c < 0 ? 0 : c > 2LL * span - 1 ? 2 * span - 1 : (int32_t)c;
}

/* ------------------------------------------------------------------ loading ---- */

struct loader {
    struct nlpd_wloader w;
    struct nlpd_deberta *m;
    const char *prefix;
};

static const char *pname(char *buf, const char *prefix, const char *suffix)
{
    snprintf(buf, NAME_MAX_LEN, "%s%s", prefix, suffix);
    return buf;
}

static const char *lname(char *buf, const char *prefix, int i, const char *suffix)
{
    snprintf(buf, NAME_MAX_LEN, "%sencoder.layer.%d.%s", prefix, i, suffix);
    return buf;
}

static int load_layers(struct loader *ld, struct nlpd_error *err)
{
    struct nlpd_deberta *m = ld->m;
    const struct nlpd_hf_config *c = m->cfg;
    const struct nlpd_hf_deberta *dc = &c->deberta;
    const int H = m->H, I = c->intermediate_size, own_pk = m->rel_on && !dc->share_att_key && dc->c2p,
              own_pq = m->rel_on && !dc->share_att_key && dc->p2c;
    const char *p = ld->prefix;
    char n[NAME_MAX_LEN];
    int rc;
    for (int i = 0; i < c->num_layers; i++) {
        struct dlayer *L = &m->layers[i];
        if (ld->w.planning) {
            L->wqkv = nlpd_wl_place(&ld->w, (size_t)H * 3 * H);
            L->bqkv = nlpd_wl_place(&ld->w, (size_t)3 * H);
            if (own_pk) {
                L->wpk = nlpd_wl_place(&ld->w, (size_t)H * H);
                L->bpk = nlpd_wl_place(&ld->w, (size_t)H);
            }
            if (own_pq) {
                L->wpq = nlpd_wl_place(&ld->w, (size_t)H * H);
                L->bpq = nlpd_wl_place(&ld->w, (size_t)H);
            }
            L->wo = nlpd_wl_place(&ld->w, (size_t)H * H);
            L->bo = nlpd_wl_place(&ld->w, (size_t)H);
            L->wi = nlpd_wl_place(&ld->w, (size_t)H * I);
            L->bi = nlpd_wl_place(&ld->w, (size_t)I);
            L->wo2 = nlpd_wl_place(&ld->w, (size_t)I * H);
            L->bo2 = nlpd_wl_place(&ld->w, (size_t)H);
        }
        static const char *qkv[3] = {"attention.self.query_proj", "attention.self.key_proj",
                                     "attention.self.value_proj"};
        for (int j = 0; j < 3; j++)
            if ((rc = nlpd_wl_put_linear(&ld->w, lname(n, p, i, qkv[j]), H, H, L->wqkv + (size_t)j * H,
                                         L->bqkv + (size_t)j * H, (size_t)3 * H, err)))
                return rc;
        if ((own_pk && (rc = nlpd_wl_put_linear(&ld->w, lname(n, p, i, "attention.self.pos_key_proj"), H, H, L->wpk,
                                                L->bpk, (size_t)H, err))) ||
            (own_pq && (rc = nlpd_wl_put_linear(&ld->w, lname(n, p, i, "attention.self.pos_query_proj"), H, H, L->wpq,
                                                L->bpq, (size_t)H, err))) ||
            (rc = nlpd_wl_put_linear(&ld->w, lname(n, p, i, "attention.output.dense"), H, H, L->wo, L->bo, (size_t)H,
                                     err)) ||
            (rc = nlpd_wl_put_ln(&ld->w, lname(n, p, i, "attention.output.LayerNorm"), H, &L->ln1_g, &L->ln1_b, err)) ||
            (rc = nlpd_wl_put_linear(&ld->w, lname(n, p, i, "intermediate.dense"), I, H, L->wi, L->bi, (size_t)I,
                                     err)) ||
            (rc = nlpd_wl_put_linear(&ld->w, lname(n, p, i, "output.dense"), H, I, L->wo2, L->bo2, (size_t)H, err)) ||
            (rc = nlpd_wl_put_ln(&ld->w, lname(n, p, i, "output.LayerNorm"), H, &L->ln2_g, &L->ln2_b, err)))
            return rc;
    }
    return 0;
}

static int load_all(struct loader *ld, struct nlpd_error *err)
{
    struct nlpd_deberta *m = ld->m;
    const struct nlpd_hf_config *c = m->cfg;
    const struct nlpd_hf_deberta *dc = &c->deberta;
    const int H = m->H, E = m->E, V = c->vocab_size, L = m->num_labels;
    const char *p = ld->prefix;
    char n[NAME_MAX_LEN];
    int rc;
    if (ld->w.planning) {
        m->word = nlpd_wl_place(&ld->w, (size_t)V * E);
        if (dc->position_biased_input)
            m->pos = nlpd_wl_place(&ld->w, (size_t)c->max_position_embeddings * E);
        if (c->type_vocab_size)
            m->type = nlpd_wl_place(&ld->w, (size_t)c->type_vocab_size * E);
        if (E != H)
            m->proj = nlpd_wl_place(&ld->w, (size_t)E * H);
        if (m->rel_on)
            m->rel = nlpd_wl_place(&ld->w, (size_t)2 * m->span * H);
    }
    if ((rc =
             nlpd_wl_put(&ld->w, pname(n, p, "embeddings.word_embeddings.weight"), V, E, 0, m->word, (size_t)E, err)) ||
        (dc->position_biased_input && (rc = nlpd_wl_put(&ld->w, pname(n, p, "embeddings.position_embeddings.weight"),
                                                        c->max_position_embeddings, E, 0, m->pos, (size_t)E, err))) ||
        (c->type_vocab_size && (rc = nlpd_wl_put(&ld->w, pname(n, p, "embeddings.token_type_embeddings.weight"),
                                                 c->type_vocab_size, E, 0, m->type, (size_t)E, err))) ||
        (E != H &&
         (rc = nlpd_wl_put(&ld->w, pname(n, p, "embeddings.embed_proj.weight"), H, E, 1, m->proj, (size_t)H, err))) ||
        (rc = nlpd_wl_put_ln(&ld->w, pname(n, p, "embeddings.LayerNorm"), H, &m->emb_g, &m->emb_b, err)) ||
        (m->rel_on && (rc = nlpd_wl_put(&ld->w, pname(n, p, "encoder.rel_embeddings.weight"), 2 * m->span, H, 0, m->rel,
                                        (size_t)H, err))) ||
        (m->rel_on && dc->norm_rel_ln &&
         (rc = nlpd_wl_put_ln(&ld->w, pname(n, p, "encoder.LayerNorm"), H, &m->rel_g, &m->rel_b, err))) ||
        (rc = load_layers(ld, err)))
        return rc;
    int in = H;
    if (m->task == NLPD_HF_TASK_SEQ_CLS) {
        if (ld->w.planning) {
            m->pool_w = nlpd_wl_place(&ld->w, (size_t)H * m->P);
            m->pool_b = nlpd_wl_place(&ld->w, (size_t)m->P);
        }
        if ((rc = nlpd_wl_put_linear(&ld->w, "pooler.dense", m->P, H, m->pool_w, m->pool_b, (size_t)m->P, err)))
            return rc;
        in = m->P;
    }
    if (m->task != NLPD_HF_TASK_NONE) {
        if (ld->w.planning) {
            m->cls_w = nlpd_wl_place(&ld->w, (size_t)in * L);
            m->cls_b = nlpd_wl_place(&ld->w, (size_t)L);
        }
        if ((rc = nlpd_wl_put_linear(&ld->w, "classifier", L, in, m->cls_w, m->cls_b, (size_t)L, err)))
            return rc;
    }
    return 0;
}

static int run(const struct nlpd_deberta *m, struct nlpd_op *op, struct nlpd_error *err)
{
    return nlpd_backend_run(m->be, op, err);
}

/* c[m,n] = act(a . b + bias) with b = weights + w at row stride ldb (bias NULL when b is (size_t)-1). */
static int matmul_ld(const struct nlpd_deberta *m, float *c, const float *a, int lda, size_t w, int ldb, size_t b,
                     int rows, int n, int k, enum nlpd_act act, struct nlpd_error *err)
{
    struct nlpd_op op = {.kind = NLPD_OP_MATMUL};
    op.u.matmul = (struct nlpd_op_matmul){.c = c,
                                          .a = a,
                                          .b = wptr(m, w),
                                          .bias = b == (size_t)-1 ? NULL : wptr(m, b),
                                          .m = rows,
                                          .n = n,
                                          .k = k,
                                          .lda = lda,
                                          .ldb = ldb,
                                          .ldc = n,
                                          .act = act};
    return run(m, &op, err);
}

static int matmul(const struct nlpd_deberta *m, float *c, const float *a, int lda, size_t w, size_t b, int rows, int n,
                  int k, enum nlpd_act act, struct nlpd_error *err)
{
    return matmul_ld(m, c, a, lda, w, n, b, rows, n, k, act, err);
}

static int layer_norm(const struct nlpd_deberta *m, float *y, const float *x, const float *bias, const float *res,
                      size_t g, size_t b, int rows, struct nlpd_error *err)
{
    struct nlpd_op op = {.kind = NLPD_OP_LAYER_NORM};
    op.u.layer_norm = (struct nlpd_op_layer_norm){.y = y,
                                                  .x = x,
                                                  .bias = bias,
                                                  .residual = res,
                                                  .gamma = wptr(m, g),
                                                  .beta = wptr(m, b),
                                                  .rows = rows,
                                                  .cols = m->H,
                                                  .eps = m->cfg->layer_norm_eps};
    return run(m, &op, err);
}

/* pos_k = R Wk + bk (c2p) and pos_q = R Wq + bq (p2c) of every layer, R = LayerNorm(rel_embeddings) when
 * norm_rel_ebd says so: the same for every batch, so computed once (with the layer's own query/key projections
 * under share_att_key, biases included, as transformers does). The projection weights are copied into a plain
 * buffer first so that these products run in fp32 whatever the dtype: they are made once, and every score reads
 * them. */
static int make_pos_tables(struct nlpd_deberta *m, struct nlpd_error *err)
{
    const struct nlpd_hf_config *c = m->cfg;
    const struct nlpd_hf_deberta *dc = &c->deberta;
    const int H = m->H, R = 2 * m->span;
    const size_t tab = (size_t)R * H, wn = (size_t)H * 3 * H;
    struct nlpd_buffer rn = {0}, wt = {0};
    float *host = malloc(wn * sizeof(float));
    int rc = host ? 0 : nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
    if (rc ||
        (rc = nlpd_backend_alloc(m->be, (size_t)c->num_layers * m->n_pos_terms * tab * sizeof(float), &m->pos_tab,
                                 err)) ||
        (rc = nlpd_backend_alloc(m->be, tab * sizeof(float), &rn, err)) ||
        (rc = nlpd_backend_alloc(m->be, wn * sizeof(float), &wt, err)))
        goto out;
    const float *r = wptr(m, m->rel);
    if (dc->norm_rel_ln) {
        if ((rc = layer_norm(m, rn.ptr, r, NULL, NULL, m->rel_g, m->rel_b, R, err)))
            goto out;
        r = rn.ptr;
    }
    for (int l = 0; l < c->num_layers && !rc; l++) {
        const struct dlayer *L = &m->layers[l];
        float *dst = (float *)m->pos_tab.ptr + (size_t)l * m->n_pos_terms * tab;
        for (int term = 0; term < 2 && !rc; term++) {
            int key = term == 0; /* c2p: key projection; p2c: query projection */
            if (key ? !dc->c2p : !dc->p2c)
                continue;
            /* W as [in, out] with its row stride, copied out of the weight buffer */
            size_t w = dc->share_att_key ? L->wqkv + (key ? (size_t)H : 0) : key ? L->wpk : L->wpq;
            size_t b = dc->share_att_key ? L->bqkv + (key ? (size_t)H : 0) : key ? L->bpk : L->bpq;
            int ldb = dc->share_att_key ? 3 * H : H;
            size_t n = (size_t)(H - 1) * ldb + H;
            if ((rc = nlpd_backend_download(&m->weights, w * sizeof(float), host, n * sizeof(float))) ||
                (rc = nlpd_backend_upload(&wt, 0, host, n * sizeof(float)))) {
                rc = nlpd_error_set(err, rc, 0, "copying position projections failed");
                break;
            }
            struct nlpd_op op = {.kind = NLPD_OP_MATMUL};
            op.u.matmul = (struct nlpd_op_matmul){.c = dst,
                                                  .a = r,
                                                  .b = wt.ptr,
                                                  .bias = wptr(m, b),
                                                  .m = R,
                                                  .n = H,
                                                  .k = H,
                                                  .lda = H,
                                                  .ldb = ldb,
                                                  .ldc = H,
                                                  .act = NLPD_ACT_NONE};
            if (!(rc = run(m, &op, err)))
                rc = nlpd_backend_sync(m->be, err); /* wt is reused by the next product */
            dst += tab;
        }
    }
out:
    free(host);
    nlpd_backend_buffer_free(&wt);
    nlpd_backend_buffer_free(&rn);
    return rc;
}

/* What this implementation cannot run, refused by name rather than computed wrongly. */
static int check_config(const struct nlpd_hf_config *c, const char *path, struct nlpd_error *err)
{
    const struct nlpd_hf_deberta *dc = &c->deberta;
    if (dc->conv_kernel_size > 0)
        return nlpd_error_set(err, NLPD_EFORMAT, 0,
                              "%s: conv_kernel_size %d (DeBERTa-v2's convolution layer) is not supported", path,
                              dc->conv_kernel_size);
    if (dc->attention_head_size * c->num_heads != c->hidden_size)
        return nlpd_error_set(err, NLPD_EFORMAT, 0,
                              "%s: attention_head_size %d x %d heads != hidden_size %d is not supported", path,
                              dc->attention_head_size, c->num_heads, c->hidden_size);
    if (dc->pooler_hidden_size != c->hidden_size) /* ContextPooler reads hidden_size wide tokens into it */
        return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: pooler_hidden_size %d != hidden_size %d is not supported",
                              path, dc->pooler_hidden_size, c->hidden_size);
    if (dc->relative_attention) {
        int span = dc->position_buckets > 0 ? dc->position_buckets : dc->max_relative_positions;
        if (dc->position_buckets == 1 ||
            (dc->position_buckets > 1 && dc->max_relative_positions - 1 == dc->position_buckets / 2))
            return nlpd_error_set(err, NLPD_EFORMAT, 0,
                                  "%s: position_buckets %d with max_relative_positions %d divides by zero in "
                                  "transformers' log buckets",
                                  path, dc->position_buckets, dc->max_relative_positions);
        if (span > (1 << 16))
            return nlpd_error_set(err, NLPD_ERANGE, 0, "%s: relative position span %d too large", path, span);
    }
    return 0;
}

struct nlpd_deberta *nlpd_deberta_load(const char *dir, const struct nlpd_hf_config *cfg, enum nlpd_hf_task task,
                                       struct nlpd_backend *be, struct nlpd_error *err)
{
    char path[4096], n[NAME_MAX_LEN];
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (check_config(cfg, path, err))
        return NULL;
    struct nlpd_deberta *m = calloc(1, sizeof *m);
    if (!m) {
        nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
        return NULL;
    }
    const struct nlpd_hf_deberta *dc = &cfg->deberta;
    m->cfg = cfg;
    m->be = be;
    m->H = cfg->hidden_size;
    m->E = dc->embedding_size;
    m->P = dc->pooler_hidden_size;
    m->D = cfg->hidden_size / cfg->num_heads;
    m->rel_on = dc->relative_attention;
    m->span = dc->position_buckets > 0 ? dc->position_buckets : dc->max_relative_positions;
    m->n_pos_terms = m->rel_on ? dc->c2p + dc->p2c : 0;
    /* 1 / sqrt(head_dim * (1 + c2p + p2c)), the factor counting the terms even without relative_attention */
    m->scale = 1.0f / sqrtf((float)m->D * (float)(1 + dc->c2p + dc->p2c));
    if (m->n_pos_terms && !nlpd_backend_supports(be, NLPD_OP_ATTENTION_REL)) { /* a borrowed backend */
        nlpd_error_set(err, NLPD_EINVAL, 0,
                       "%s: DeBERTa's disentangled attention (op attention_rel) runs on the CPU backend only "
                       "(kernels.backend = cpu or auto), not on %s",
                       dir, nlpd_backend_name(be));
        goto fail;
    }
    struct loader ld = {.m = m, .prefix = "deberta."};
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (!(ld.w.st = nlpd_safetensors_open(path, err)))
        goto fail;
    if (!nlpd_safetensors_find(ld.w.st, pname(n, ld.prefix, "embeddings.word_embeddings.weight")) &&
        nlpd_safetensors_find(ld.w.st, "embeddings.word_embeddings.weight"))
        ld.prefix = "";              /* a base model saved without its prefix */
    if (task == NLPD_HF_TASK_NONE) { /* no head named by config.json: the tensors tell */
        if (nlpd_safetensors_find(ld.w.st, "pooler.dense.weight") &&
            nlpd_safetensors_find(ld.w.st, "classifier.weight"))
            task = NLPD_HF_TASK_SEQ_CLS;
        else if (nlpd_safetensors_find(ld.w.st, "classifier.weight"))
            task = NLPD_HF_TASK_TOKEN_CLS;
    }
    m->task = task;
    m->num_labels = task == NLPD_HF_TASK_NONE ? 0 : cfg->num_labels;
    if (!(m->layers = calloc((size_t)cfg->num_layers, sizeof *m->layers))) {
        nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
        goto fail_st;
    }
    ld.w.planning = 1;
    if (load_all(&ld, err) || nlpd_backend_alloc_weights(be, ld.w.next * sizeof(float), &m->weights, err))
        goto fail_st;
    ld.w.dst = &m->weights;
    ld.w.planning = 0;
    if (load_all(&ld, err))
        goto fail_st;
    nlpd_wl_release(&ld.w);
    nlpd_safetensors_close(ld.w.st);
    if (m->n_pos_terms && make_pos_tables(m, err))
        goto fail;
    return m;
fail_st:
    nlpd_wl_release(&ld.w);
    nlpd_safetensors_close(ld.w.st);
fail:
    nlpd_deberta_free(m);
    return NULL;
}

int nlpd_deberta_ops(const struct nlpd_hf_config *cfg, enum nlpd_op_kind ops[NLPD_DEBERTA_MAX_OPS])
{
    const struct nlpd_hf_deberta *dc = &cfg->deberta;
    int n = 0;
    ops[n++] = NLPD_OP_EMBED;
    ops[n++] = NLPD_OP_MATMUL;
    ops[n++] = NLPD_OP_LAYER_NORM;
    ops[n++] = NLPD_OP_GATHER_ROWS; /* the padded rows of the embeddings */
    ops[n++] = dc->relative_attention && (dc->c2p || dc->p2c) ? NLPD_OP_ATTENTION_REL : NLPD_OP_ATTENTION;
    return n;
}

void nlpd_deberta_free(struct nlpd_deberta *m)
{
    if (!m)
        return;
    nlpd_backend_buffer_free(&m->pos_tab);
    nlpd_backend_buffer_free(&m->weights);
    free(m->layers);
    free(m);
}

enum nlpd_hf_task nlpd_deberta_task(const struct nlpd_deberta *m)
{
    return m->task;
}

int nlpd_deberta_num_labels(const struct nlpd_deberta *m)
{
    return m->num_labels;
}

int nlpd_deberta_pooled_size(const struct nlpd_deberta *m)
{
    return m->P;
}

double nlpd_deberta_flops(const struct nlpd_deberta *m, int batch, int seq)
{
    double T = (double)batch * seq, H = m->H, I = m->cfg->intermediate_size;
    double per_layer = 2.0 * T * (4.0 * H * H + 2.0 * H * I) + 2.0 * 2.0 * batch * (double)seq * seq * H;
    /* c2p / p2c: one more S x band x H product each (band <= 2S - 1) */
    per_layer += m->n_pos_terms * 2.0 * T * fmin(2.0 * seq - 1, 2.0 * m->span) * H;
    return per_layer * m->cfg->num_layers;
}

/* --------------------------------------------------------------- workspace ---- */

#define WS_PARTS 14

static size_t ws_floats(const struct nlpd_deberta *m, int B, int S, size_t *offs)
{
    size_t T = (size_t)B * S, H = (size_t)m->H, I = (size_t)m->cfg->intermediate_size;
    size_t L = m->num_labels ? (size_t)m->num_labels : 1;
    /* x, qkv, ctx, tmp (+ the zero row), ffn, emb, pool, logits, ids, pos_ids, type_ids, mask, ridx, keep */
    size_t sizes[WS_PARTS] = {
        T * H, T * 3 * H, T * H, T * H + H,     T * I, m->E != m->H ? T * (size_t)m->E : 1, (size_t)B * m->P, T * L, T,
        T,     T,         T,     2 * (size_t)S, T};
    return nlpd_ws_layout(sizes, WS_PARTS, offs);
}

static int ws_reserve(const struct nlpd_deberta *m, struct nlpd_deberta_ws *ws, int B, int S, struct nlpd_error *err)
{
    if (ws->buf.ptr && B <= ws->max_batch && S <= ws->max_seq)
        return 0;
    if (B < ws->max_batch)
        B = ws->max_batch;
    if (S < ws->max_seq)
        S = ws->max_seq;
    size_t offs[WS_PARTS], n = ws_floats(m, B, S, offs);
    struct nlpd_buffer nb;
    int32_t *hp = malloc(((size_t)B * S + 2 * (size_t)S) * sizeof(int32_t));
    if (!hp)
        return nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory for a %d x %d workspace", B, S);
    if (nlpd_backend_alloc(m->be, n * sizeof(float), &nb, err)) {
        free(hp);
        return err ? err->code : NLPD_ENOMEM;
    }
    float *zero = calloc((size_t)m->H, sizeof(float));
    int rc = zero ? nlpd_backend_upload(&nb, (offs[3] + (size_t)B * S * m->H) * sizeof(float), zero,
                                        (size_t)m->H * sizeof(float))
                  : NLPD_ENOMEM;
    free(zero);
    if (rc) {
        nlpd_backend_buffer_free(&nb);
        free(hp);
        return nlpd_error_set(err, rc, 0, "setting up a %d x %d workspace failed", B, S);
    }
    nlpd_backend_buffer_free(&ws->buf);
    free(ws->host);
    ws->buf = nb;
    ws->host = hp;
    ws->max_batch = B;
    ws->max_seq = S;
    float *base = nb.ptr;
    float **f[8] = {&ws->x, &ws->qkv, &ws->ctx, &ws->tmp, &ws->ffn, &ws->emb, &ws->pool, &ws->logits};
    for (int i = 0; i < 8; i++)
        *f[i] = base + offs[i];
    ws->ids = (int32_t *)(base + offs[8]);
    ws->pos_ids = (int32_t *)(base + offs[9]);
    ws->type_ids = (int32_t *)(base + offs[10]);
    ws->mask = (int32_t *)(base + offs[11]);
    ws->ridx = (int32_t *)(base + offs[12]);
    ws->keep = (int32_t *)(base + offs[13]);
    ws->zero_row = B * S;
    return 0;
}

struct nlpd_deberta_ws *nlpd_deberta_ws_new(const struct nlpd_deberta *m, int max_batch, int max_seq,
                                            struct nlpd_error *err)
{
    struct nlpd_deberta_ws *ws = calloc(1, sizeof *ws);
    if (!ws) {
        nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
        return NULL;
    }
    if (ws_reserve(m, ws, max_batch, max_seq, err)) {
        free(ws);
        return NULL;
    }
    return ws;
}

void nlpd_deberta_ws_free(struct nlpd_deberta_ws *ws)
{
    if (!ws)
        return;
    nlpd_backend_buffer_free(&ws->buf);
    free(ws->host);
    free(ws);
}

/* ----------------------------------------------------------------- forward ---- */

static size_t byte_off(const struct nlpd_deberta_ws *ws, const void *p)
{
    return (size_t)((const char *)p - (const char *)ws->buf.ptr);
}

/* err carries the backend's words: a bad id found on the device is reported by the download that waits for it */
static int save_hidden(const struct nlpd_deberta_ws *ws, float *dst, size_t n, struct nlpd_error *err)
{
    return dst ? nlpd_backend_download_err(&ws->buf, byte_off(ws, ws->x), dst, n * sizeof(float), err) : 0;
}

static int upload_inputs(const struct nlpd_deberta *m, struct nlpd_deberta_ws *ws, const struct nlpd_encoder_input *in)
{
    const struct nlpd_hf_config *c = m->cfg;
    const int B = in->batch, S = in->seq, T = B * S;
    const size_t tb = (size_t)T * sizeof(int32_t);
    int32_t *hp = ws->host;
    int rc = nlpd_backend_upload(&ws->buf, byte_off(ws, ws->ids), in->input_ids, tb);
    ws->padded = 0;
    for (int t = 0; in->attention_mask && t < T; t++) {
        hp[t] = in->attention_mask[t] ? t : ws->zero_row;
        ws->padded |= !in->attention_mask[t];
    }
    if (!rc && ws->padded)
        rc = nlpd_backend_upload(&ws->buf, byte_off(ws, ws->keep), hp, tb);
    if (!rc && in->attention_mask) {
        rc = nlpd_backend_upload(&ws->buf, byte_off(ws, ws->mask), in->attention_mask, tb);
    } else if (!rc) {
        for (int t = 0; t < T; t++)
            hp[t] = 1;
        rc = nlpd_backend_upload(&ws->buf, byte_off(ws, ws->mask), hp, tb);
    }
    if (!rc && c->type_vocab_size) {
        if (in->token_type_ids) {
            rc = nlpd_backend_upload(&ws->buf, byte_off(ws, ws->type_ids), in->token_type_ids, tb);
        } else {
            memset(hp, 0, tb);
            rc = nlpd_backend_upload(&ws->buf, byte_off(ws, ws->type_ids), hp, tb);
        }
    }
    if (!rc && c->deberta.position_biased_input) {
        for (int t = 0; t < T; t++)
            hp[t] = t % S;
        rc = nlpd_backend_upload(&ws->buf, byte_off(ws, ws->pos_ids), hp, tb);
    }
    if (!rc && m->n_pos_terms) {
        for (int d = -(S - 1); d <= S - 1; d++)
            hp[d + S - 1] = nlpd_deberta_rel_index(c, d);
        rc = nlpd_backend_upload(&ws->buf, byte_off(ws, ws->ridx), hp, (size_t)(2 * S - 1) * sizeof(int32_t));
    }
    return rc;
}

static int attention(const struct nlpd_deberta *m, struct nlpd_deberta_ws *ws, int l, int B, int S,
                     struct nlpd_error *err)
{
    const struct nlpd_hf_deberta *dc = &m->cfg->deberta;
    const int H = m->H, heads = m->cfg->num_heads;
    struct nlpd_op op;
    if (!m->n_pos_terms) { /* content only: the encoders' attention with DeBERTa's scale */
        op.kind = NLPD_OP_ATTENTION;
        op.u.attention = (struct nlpd_op_attention){.out = ws->ctx,
                                                    .qkv = ws->qkv,
                                                    .mask = ws->mask,
                                                    .batch = B,
                                                    .seq = S,
                                                    .heads = heads,
                                                    .head_dim = m->D,
                                                    .ld_qkv = 3 * H,
                                                    .ld_out = H,
                                                    .scale = m->scale};
        return run(m, &op, err);
    }
    const size_t tab = (size_t)2 * m->span * H;
    const float *pos = (const float *)m->pos_tab.ptr + (size_t)l * m->n_pos_terms * tab;
    op.kind = NLPD_OP_ATTENTION_REL;
    op.u.attention_rel = (struct nlpd_op_attention_rel){.out = ws->ctx,
                                                        .qkv = ws->qkv,
                                                        .mask = ws->mask,
                                                        .pos_k = dc->c2p ? pos : NULL,
                                                        .pos_q = dc->p2c ? pos + (dc->c2p ? tab : 0) : NULL,
                                                        .rel_idx = ws->ridx,
                                                        .batch = B,
                                                        .seq = S,
                                                        .heads = heads,
                                                        .head_dim = m->D,
                                                        .n_rel = 2 * m->span,
                                                        .ld_qkv = 3 * H,
                                                        .ld_out = H,
                                                        .ld_pos = H,
                                                        .scale = m->scale};
    return run(m, &op, err);
}

int nlpd_deberta_forward(const struct nlpd_deberta *m, struct nlpd_deberta_ws *ws, const struct nlpd_encoder_input *in,
                         struct nlpd_encoder_output *out, struct nlpd_error *err)
{
    const struct nlpd_hf_config *c = m->cfg;
    const int B = in->batch, S = in->seq, H = m->H, E = m->E, I = c->intermediate_size, NL = m->num_labels;
    if (B <= 0 || S <= 0 || (long long)B * S > (1LL << 28))
        return nlpd_error_set(err, NLPD_EINVAL, 0, "batch shape %d x %d out of range", B, S);
    if (S > c->max_position_embeddings)
        return nlpd_error_set(err, NLPD_ERANGE, 0, "sequence of %d tokens is longer than the model's %d", S,
                              c->max_position_embeddings);
    int rc = ws_reserve(m, ws, B, S, err);
    if (rc)
        return rc;
    const int T = B * S;
    if ((rc = upload_inputs(m, ws, in)))
        return nlpd_error_set(err, rc, 0, "uploading the batch failed");

    struct nlpd_op op = {.kind = NLPD_OP_EMBED};
    op.u.embed = (struct nlpd_op_embed){.out = E != H ? ws->emb : ws->x,
                                        .word = wptr(m, m->word),
                                        .pos = c->deberta.position_biased_input ? wptr(m, m->pos) : NULL,
                                        .type = c->type_vocab_size ? wptr(m, m->type) : NULL,
                                        .ids = ws->ids,
                                        .pos_ids = ws->pos_ids,
                                        .type_ids = ws->type_ids,
                                        .tokens = T,
                                        .dim = E,
                                        .n_word = c->vocab_size,
                                        .n_pos = c->max_position_embeddings,
                                        .n_type = c->type_vocab_size};
    /* DebertaV2Embeddings multiplies the LayerNorm output by the mask: padded rows gather the zero row */
    struct nlpd_op zero_pad = {.kind = NLPD_OP_GATHER_ROWS};
    zero_pad.u.gather_rows = (struct nlpd_op_gather_rows){.dst = ws->x,
                                                          .src = ws->tmp,
                                                          .idx = ws->keep,
                                                          .rows = T,
                                                          .cols = H,
                                                          .src_rows = ws->zero_row + 1,
                                                          .ld_dst = (size_t)H,
                                                          .ld_src = (size_t)H};
    if ((rc = run(m, &op, err)) ||
        (E != H && (rc = matmul(m, ws->x, ws->emb, E, m->proj, (size_t)-1, T, H, E, NLPD_ACT_NONE, err))) ||
        (rc = layer_norm(m, ws->padded ? ws->tmp : ws->x, ws->x, NULL, NULL, m->emb_g, m->emb_b, T, err)) ||
        (ws->padded && (rc = run(m, &zero_pad, err))))
        return rc;
    size_t hsz = (size_t)T * H;
    if ((rc = save_hidden(ws, out->all_hidden, hsz, err)))
        return rc;

    for (int l = 0; l < c->num_layers; l++) {
        const struct dlayer *L = &m->layers[l];
        if ((rc = matmul(m, ws->qkv, ws->x, H, L->wqkv, L->bqkv, T, 3 * H, H, NLPD_ACT_NONE, err)) ||
            (rc = attention(m, ws, l, B, S, err)) ||
            (rc = matmul(m, ws->tmp, ws->ctx, H, L->wo, (size_t)-1, T, H, H, NLPD_ACT_NONE, err)) ||
            (rc = layer_norm(m, ws->x, ws->tmp, wptr(m, L->bo), ws->x, L->ln1_g, L->ln1_b, T, err)) ||
            (rc = matmul(m, ws->ffn, ws->x, H, L->wi, L->bi, T, I, H, c->hidden_act, err)) ||
            (rc = matmul(m, ws->tmp, ws->ffn, I, L->wo2, (size_t)-1, T, H, I, NLPD_ACT_NONE, err)) ||
            (rc = layer_norm(m, ws->x, ws->tmp, wptr(m, L->bo2), ws->x, L->ln2_g, L->ln2_b, T, err)))
            return rc;
        if (out->all_hidden && (rc = save_hidden(ws, out->all_hidden + (size_t)(l + 1) * hsz, hsz, err)))
            return rc;
    }
    if ((rc = save_hidden(ws, out->hidden, hsz, err)))
        return rc;

    if (m->task == NLPD_HF_TASK_SEQ_CLS) {
        /* ContextPooler on each sequence's first token (row b*S: a row stride of S*H gathers them) */
        if ((rc = matmul(m, ws->pool, ws->x, S * H, m->pool_w, m->pool_b, B, m->P, H, c->deberta.pooler_act, err)) ||
            (rc = matmul(m, ws->logits, ws->pool, m->P, m->cls_w, m->cls_b, B, NL, m->P, NLPD_ACT_NONE, err)))
            return rc;
        if (out->pooled && (rc = nlpd_backend_download_err(&ws->buf, byte_off(ws, ws->pool), out->pooled,
                                                           (size_t)B * m->P * sizeof(float), err)))
            return rc;
    } else if (m->task == NLPD_HF_TASK_TOKEN_CLS &&
               (rc = matmul(m, ws->logits, ws->x, H, m->cls_w, m->cls_b, T, NL, H, NLPD_ACT_NONE, err))) {
        return rc;
    }
    if ((rc = nlpd_backend_sync(m->be, err)))
        return rc;
    if (out->logits && NL) {
        size_t rows = m->task == NLPD_HF_TASK_SEQ_CLS ? (size_t)B : (size_t)T;
        if ((rc = nlpd_backend_download_err(&ws->buf, byte_off(ws, ws->logits), out->logits, rows * NL * sizeof(float),
                                            err)))
            return rc;
    }
    return 0;
}
