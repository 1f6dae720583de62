/* BERT-family encoders (see encoder.h): tensor names as transformers saves them, weights laid out once for the
 * kernels (Linear weights as [in, out], Q/K/V fused into one [H, 3H] product), and the batched forward pass:
 * embeddings, post-LN layers, pooler / classification heads. On a backend that keeps activations in half
 * precision (nlpd_backend_act_dtype: the CUDA backend with fp16/bf16) the layers' activations (x, qkv, ctx, tmp,
 * ffn) are 2-byte elements from the embedding to the last layer norm; the heads' outputs (pooled, logits) are
 * fp32, and hidden states asked for are converted to fp32 on the host after their download. */
#include "encoder.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deberta.h"
#include "grow.h"
#include "safetensors.h"
#include "weights.h"

#define NAME_MAX_LEN NLPD_WL_NAME_MAX

struct layer {
    size_t wqkv, bqkv, wo, bo, ln1_g, ln1_b, wi, bi, wo2, bo2, ln2_g, ln2_b; /* float offsets into weights */
};

struct nlpd_encoder {
    struct nlpd_hf_config cfg;
    enum nlpd_hf_task task;
    struct nlpd_backend *be;
    int own_be;
    struct nlpd_buffer weights;
    size_t word, pos, type, emb_g, emb_b;
    struct layer *layers;
    int has_pool; /* a dense layer on the first token: BERT pooler / RoBERTa dense / pre_classifier */
    enum nlpd_act pool_act;
    size_t pool_w, pool_b, cls_w, cls_b;
    int num_labels;
    enum nlpd_dtype act;      /* the layers' activation type: fp32, or the backend's half act_dtype */
    struct nlpd_deberta *deb; /* model_type deberta-v2: everything above but cfg, task, be is unused */
};

struct nlpd_encoder_ws {
    struct nlpd_buffer buf;
    int max_batch, max_seq;
    float *x, *qkv, *ctx, *tmp, *ffn, *scores, *pool, *logits;
    int32_t *ids, *pos_ids, *type_ids, *mask;
    int32_t *host_pos; /* host staging of position ids */
    struct nlpd_deberta_ws *dws;
};

/* ------------------------------------------------------------------ loading ---- */

struct loader {
    struct nlpd_wloader w;
    struct nlpd_encoder *enc;
    const char *prefix;
};

static float *wptr(const struct nlpd_encoder *enc, size_t off)
{
    return (float *)enc->weights.ptr + off;
}

static const char *pname(char *buf, const char *prefix, const char *suffix)
{
    snprintf(buf, NAME_MAX_LEN, "%s%s", prefix, suffix);
    return buf;
}

/* Layer i's tensor: PREFIX + (encoder|transformer).layer.I. + suffix */
static const char *lname(char *buf, const char *prefix, int dist, int i, const char *suffix)
{
    snprintf(buf, NAME_MAX_LEN, "%s%s.layer.%d.%s", prefix, dist ? "transformer" : "encoder", i, suffix);
    return buf;
}

static int load_layers(struct loader *ld, struct nlpd_error *err)
{
    struct nlpd_encoder *enc = ld->enc;
    const struct nlpd_hf_config *c = &enc->cfg;
    const int H = c->hidden_size, I = c->intermediate_size, dist = c->arch == NLPD_HF_DISTILBERT;
    const char *p = ld->prefix;
    char n[NAME_MAX_LEN];
    int rc;
    for (int i = 0; i < c->num_layers; i++) {
        struct layer *L = &enc->layers[i];
        if (ld->w.planning) {
            L->wqkv = nlpd_wl_place(&ld->w, (size_t)H * 3 * H);
            L->bqkv = nlpd_wl_place(&ld->w, (size_t)3 * H);
            L->wo = nlpd_wl_place(&ld->w, (size_t)H * H);
            L->bo = nlpd_wl_place(&ld->w, (size_t)H);
            L->wi = nlpd_wl_place(&ld->w, (size_t)H * I);
            L->bi = nlpd_wl_place(&ld->w, (size_t)I);
            L->wo2 = nlpd_wl_place(&ld->w, (size_t)I * H);
            L->bo2 = nlpd_wl_place(&ld->w, (size_t)H);
        }
        static const char *bert_qkv[3] = {"attention.self.query", "attention.self.key", "attention.self.value"};
        static const char *dist_qkv[3] = {"attention.q_lin", "attention.k_lin", "attention.v_lin"};
        for (int j = 0; j < 3; j++)
            if ((rc = nlpd_wl_put_linear(&ld->w, lname(n, p, dist, i, dist ? dist_qkv[j] : bert_qkv[j]), H, H,
                                         L->wqkv + (size_t)j * H, L->bqkv + (size_t)j * H, (size_t)3 * H, err)))
                return rc;
        if ((rc =
                 nlpd_wl_put_linear(&ld->w, lname(n, p, dist, i, dist ? "attention.out_lin" : "attention.output.dense"),
                                    H, H, L->wo, L->bo, (size_t)H, err)) ||
            (rc = nlpd_wl_put_ln(&ld->w, lname(n, p, dist, i, dist ? "sa_layer_norm" : "attention.output.LayerNorm"), H,
                                 &L->ln1_g, &L->ln1_b, err)) ||
            (rc = nlpd_wl_put_linear(&ld->w, lname(n, p, dist, i, dist ? "ffn.lin1" : "intermediate.dense"), I, H,
                                     L->wi, L->bi, (size_t)I, err)) ||
            (rc = nlpd_wl_put_linear(&ld->w, lname(n, p, dist, i, dist ? "ffn.lin2" : "output.dense"), H, I, L->wo2,
                                     L->bo2, (size_t)H, err)) ||
            (rc = nlpd_wl_put_ln(&ld->w, lname(n, p, dist, i, dist ? "output_layer_norm" : "output.LayerNorm"), H,
                                 &L->ln2_g, &L->ln2_b, err)))
            return rc;
    }
    return 0;
}

static int load_all(struct loader *ld, struct nlpd_error *err)
{
    struct nlpd_encoder *enc = ld->enc;
    const struct nlpd_hf_config *c = &enc->cfg;
    const int H = c->hidden_size, V = c->vocab_size, L = enc->num_labels;
    const char *p = ld->prefix;
    char n[NAME_MAX_LEN];
    int rc;
    if (ld->w.planning) {
        enc->word = nlpd_wl_place(&ld->w, (size_t)V * H);
        enc->pos = nlpd_wl_place(&ld->w, (size_t)c->max_position_embeddings * H);
        if (c->type_vocab_size)
            enc->type = nlpd_wl_place(&ld->w, (size_t)c->type_vocab_size * H);
    }
    if ((rc = nlpd_wl_put(&ld->w, pname(n, p, "embeddings.word_embeddings.weight"), V, H, 0, enc->word, (size_t)H,
                          err)) ||
        (rc = nlpd_wl_put(&ld->w, pname(n, p, "embeddings.position_embeddings.weight"), c->max_position_embeddings, H,
                          0, enc->pos, (size_t)H, err)) ||
        (c->type_vocab_size && (rc = nlpd_wl_put(&ld->w, pname(n, p, "embeddings.token_type_embeddings.weight"),
                                                 c->type_vocab_size, H, 0, enc->type, (size_t)H, err))) ||
        (rc = nlpd_wl_put_ln(&ld->w, pname(n, p, "embeddings.LayerNorm"), H, &enc->emb_g, &enc->emb_b, err)) ||
        (rc = load_layers(ld, err)))
        return rc;

    if (enc->has_pool) {
        const char *pool = c->arch == NLPD_HF_BERT      ? pname(n, p, "pooler.dense")
                           : c->arch == NLPD_HF_ROBERTA ? "classifier.dense"
                                                        : "pre_classifier";
        if (ld->w.planning) {
            enc->pool_w = nlpd_wl_place(&ld->w, (size_t)H * H);
            enc->pool_b = nlpd_wl_place(&ld->w, (size_t)H);
        }
        if ((rc = nlpd_wl_put_linear(&ld->w, pool, H, H, enc->pool_w, enc->pool_b, (size_t)H, err)))
            return rc;
    }
    if (enc->task != NLPD_HF_TASK_NONE) {
        const char *cls =
            enc->task == NLPD_HF_TASK_SEQ_CLS && c->arch == NLPD_HF_ROBERTA ? "classifier.out_proj" : "classifier";
        if (ld->w.planning) {
            enc->cls_w = nlpd_wl_place(&ld->w, (size_t)H * L);
            enc->cls_b = nlpd_wl_place(&ld->w, (size_t)L);
        }
        if ((rc = nlpd_wl_put_linear(&ld->w, cls, L, H, enc->cls_w, enc->cls_b, (size_t)L, err)))
            return rc;
    }
    return 0;
}

/* ops/n_ops: what the model runs (NULL: any), so that "auto" can pass over a backend lacking one. */
static int open_backend(struct nlpd_encoder *enc, const struct nlpd_encoder_opts *opts, const enum nlpd_op_kind *ops,
                        int n_ops, struct nlpd_error *err)
{
    if (opts && opts->be) {
        enc->be = opts->be;
        return 0;
    }
    struct nlpd_backend_opts bo;
    nlpd_backend_opts_default(&bo);
    if (opts && opts->backend) {
        bo.name = opts->backend;
        bo.device = opts->device;
    }
    if (opts && opts->dtype) { /* asked for by name: an error where it cannot run, not a fallback */
        int dt = nlpd_dtype_parse(opts->dtype);
        if (dt < 0)
            return nlpd_error_set(err, NLPD_EINVAL, 0, "unknown dtype \"%s\" (fp32, fp16, bf16, int8)", opts->dtype);
        bo.dtype = (enum nlpd_dtype)dt;
        bo.dtype_strict = 1;
    }
    bo.threads = opts ? opts->threads : 0;
    bo.ops = ops;
    bo.n_ops = n_ops;
    if (!(enc->be = nlpd_backend_new_opts(&bo, err)))
        return err ? err->code : NLPD_EINVAL;
    enc->own_be = 1;
    return 0;
}

struct nlpd_encoder *nlpd_encoder_load(const char *dir, const struct nlpd_encoder_opts *opts, struct nlpd_error *err)
{
    char path[4096];
    struct nlpd_encoder *enc = calloc(1, sizeof *enc);
    if (!enc) {
        nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
        return NULL;
    }
    struct loader ld = {.enc = enc};
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (nlpd_hf_config_load(path, &enc->cfg, err))
        goto fail;
    const struct nlpd_hf_config *c = &enc->cfg;
    enc->task = opts && opts->task > 0 ? (enum nlpd_hf_task)opts->task : c->task;
    if (c->arch == NLPD_HF_DEBERTA_V2) {
        enum nlpd_op_kind ops[NLPD_DEBERTA_MAX_OPS];
        int n_ops = nlpd_deberta_ops(c, ops);
        if (open_backend(enc, opts, ops, n_ops, err) ||
            !(enc->deb = nlpd_deberta_load(dir, c, enc->task, enc->be, err)))
            goto fail;
        enc->task = nlpd_deberta_task(enc->deb);
        enc->num_labels = nlpd_deberta_num_labels(enc->deb);
        return enc;
    }

    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (!(ld.w.st = nlpd_safetensors_open(path, err)))
        goto fail;
    ld.prefix = c->arch == NLPD_HF_BERT ? "bert." : c->arch == NLPD_HF_ROBERTA ? "roberta." : "distilbert.";
    char n[NAME_MAX_LEN];
    if (!nlpd_safetensors_find(ld.w.st, pname(n, ld.prefix, "embeddings.word_embeddings.weight")) &&
        nlpd_safetensors_find(ld.w.st, "embeddings.word_embeddings.weight"))
        ld.prefix = ""; /* a base model saved without its prefix */
    if (enc->task == NLPD_HF_TASK_NONE) {
        /* no head named by config.json: guess it from the tensors, as from_pretrained would use them */
        int pooler = nlpd_safetensors_find(ld.w.st, pname(n, ld.prefix, "pooler.dense.weight")) != NULL;
        if (nlpd_safetensors_find(ld.w.st, "classifier.out_proj.weight") ||
            nlpd_safetensors_find(ld.w.st, "pre_classifier.weight"))
            enc->task = NLPD_HF_TASK_SEQ_CLS;
        else if (nlpd_safetensors_find(ld.w.st, "classifier.weight"))
            enc->task = pooler ? NLPD_HF_TASK_SEQ_CLS : NLPD_HF_TASK_TOKEN_CLS;
    }
    enc->num_labels = enc->task == NLPD_HF_TASK_NONE ? 0 : c->num_labels;
    if (enc->task == NLPD_HF_TASK_SEQ_CLS) {
        enc->has_pool = 1;
        enc->pool_act = c->arch == NLPD_HF_DISTILBERT ? NLPD_ACT_RELU : NLPD_ACT_TANH;
    } else if (enc->task == NLPD_HF_TASK_NONE && c->arch == NLPD_HF_BERT &&
               nlpd_safetensors_find(ld.w.st, pname(n, ld.prefix, "pooler.dense.weight"))) {
        enc->has_pool = 1;
        enc->pool_act = NLPD_ACT_TANH;
    }
    if (!(enc->layers = calloc((size_t)c->num_layers, sizeof *enc->layers))) {
        nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
        goto fail;
    }

    if (open_backend(enc, opts, NULL, 0, err))
        goto fail;
    enc->act = nlpd_encoder_act_type(nlpd_backend_act_dtype(enc->be));
    ld.w.planning = 1;
    if (load_all(&ld, err))
        goto fail;
    if (nlpd_backend_alloc_weights(enc->be, ld.w.next * sizeof(float), &enc->weights, err))
        goto fail;
    ld.w.dst = &enc->weights;
    ld.w.planning = 0;
    if (load_all(&ld, err))
        goto fail;
    nlpd_wl_release(&ld.w);
    nlpd_safetensors_close(ld.w.st);
    return enc;
fail:
    nlpd_wl_release(&ld.w);
    nlpd_safetensors_close(ld.w.st);
    nlpd_encoder_free(enc);
    return NULL;
}

void nlpd_encoder_free(struct nlpd_encoder *enc)
{
    if (!enc)
        return;
    nlpd_deberta_free(enc->deb);
    nlpd_backend_buffer_free(&enc->weights);
    if (enc->own_be)
        nlpd_backend_free(enc->be);
    free(enc->layers);
    nlpd_hf_config_free(&enc->cfg);
    free(enc);
}

const struct nlpd_hf_config *nlpd_encoder_config(const struct nlpd_encoder *enc)
{
    return &enc->cfg;
}

enum nlpd_hf_task nlpd_encoder_task(const struct nlpd_encoder *enc)
{
    return enc->task;
}

int nlpd_encoder_num_labels(const struct nlpd_encoder *enc)
{
    return enc->num_labels;
}

int nlpd_encoder_hidden_size(const struct nlpd_encoder *enc)
{
    return enc->cfg.hidden_size;
}

int nlpd_encoder_max_seq(const struct nlpd_encoder *enc)
{
    const struct nlpd_hf_config *c = &enc->cfg;
    if (c->arch == NLPD_HF_ROBERTA)
        return c->max_position_embeddings - c->pad_token_id - 1 > 0 ? c->max_position_embeddings - c->pad_token_id - 1
                                                                    : 0;
    return c->max_position_embeddings;
}

enum nlpd_dtype nlpd_encoder_dtype(const struct nlpd_encoder *enc)
{
    return nlpd_backend_dtype(enc->be);
}

enum nlpd_dtype nlpd_encoder_act_dtype(const struct nlpd_encoder *enc)
{
    return enc->act;
}

double nlpd_encoder_flops(const struct nlpd_encoder *enc, int batch, int seq)
{
    if (enc->deb)
        return nlpd_deberta_flops(enc->deb, batch, seq);
    const struct nlpd_hf_config *c = &enc->cfg;
    double T = (double)batch * seq, H = c->hidden_size, I = c->intermediate_size;
    double per_layer = 2.0 * T * (4.0 * H * H + 2.0 * H * I) + 2.0 * 2.0 * batch * (double)seq * seq * H;
    return per_layer * c->num_layers;
}

/* NaN or inf logits (fp16 overflow on the GPU, or such weights) are an error, never a result: a scan of the
 * downloaded rows, a few floats per sequence. */
static int check_finite(const struct nlpd_encoder *enc, const float *logits, size_t rows, int NL,
                        struct nlpd_error *err)
{
    for (size_t i = 0; i < rows * (size_t)NL; i++)
        if (!isfinite(logits[i]))
            return nlpd_error_set(err, NLPD_ERANGE, 0,
                                  "non-finite logit %g (row %zu, label %d) from the %s backend in %s: an overflow in "
                                  "the forward pass or such weights (try kernels.dtype = \"bf16\" or \"fp32\")",
                                  (double)logits[i], i / (size_t)NL, (int)(i % (size_t)NL), nlpd_backend_name(enc->be),
                                  nlpd_dtype_name(nlpd_encoder_dtype(enc)));
    return 0;
}

/* --------------------------------------------------------------- workspace ---- */

enum nlpd_dtype nlpd_encoder_act_type(enum nlpd_dtype backend_act)
{
    return backend_act == NLPD_DTYPE_F16 || backend_act == NLPD_DTYPE_BF16 ? backend_act : NLPD_DTYPE_F32;
}

size_t nlpd_encoder_ws_floats(const struct nlpd_hf_config *c, int num_labels, enum nlpd_dtype act, int B, int S,
                              size_t *offs)
{
    size_t T = (size_t)B * S, H = (size_t)c->hidden_size, I = (size_t)c->intermediate_size;
    size_t L = num_labels ? (size_t)num_labels : 1;
    /* the layers' parts in floats: half elements take half the room (rounded up) */
    size_t e = act == NLPD_DTYPE_F32 ? 2 : 1, h[5] = {T * H, T * 3 * H, T * H, T * H, T * I};
    for (int i = 0; i < 5; i++)
        h[i] = (h[i] * e + 1) / 2;
    size_t sizes[12] = {h[0], h[1], h[2], h[3], h[4], (size_t)S * S, (size_t)B * H, T * L, T, T, T, T};
    return nlpd_ws_layout(sizes, 12, offs);
}

static size_t ws_floats(const struct nlpd_encoder *enc, int B, int S, size_t *offs)
{
    return nlpd_encoder_ws_floats(&enc->cfg, enc->num_labels, enc->act, B, S, offs);
}

static int ws_reserve(const struct nlpd_encoder *enc, struct nlpd_encoder_ws *ws, int B, int S, struct nlpd_error *err)
{
    if (ws->buf.ptr && B <= ws->max_batch && S <= ws->max_seq)
        return 0;
    if (B < ws->max_batch)
        B = ws->max_batch;
    if (S < ws->max_seq)
        S = ws->max_seq;
    size_t offs[12], n = ws_floats(enc, B, S, offs);
    struct nlpd_buffer nb;
    int32_t *hp = malloc((size_t)B * S * sizeof(int32_t));
    if (!hp)
        return nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory for a %d x %d workspace", B, S);
    if (nlpd_backend_alloc(enc->be, n * sizeof(float), &nb, err)) {
        free(hp);
        return err ? err->code : NLPD_ENOMEM;
    }
    nlpd_backend_buffer_free(&ws->buf);
    free(ws->host_pos);
    ws->buf = nb;
    ws->host_pos = hp;
    ws->max_batch = B;
    ws->max_seq = S;
    float *base = nb.ptr;
    ws->x = base + offs[0];
    ws->qkv = base + offs[1];
    ws->ctx = base + offs[2];
    ws->tmp = base + offs[3];
    ws->ffn = base + offs[4];
    ws->scores = base + offs[5];
    ws->pool = base + offs[6];
    ws->logits = base + offs[7];
    ws->ids = (int32_t *)(base + offs[8]);
    ws->pos_ids = (int32_t *)(base + offs[9]);
    ws->type_ids = (int32_t *)(base + offs[10]);
    ws->mask = (int32_t *)(base + offs[11]);
    return 0;
}

struct nlpd_encoder_ws *nlpd_encoder_ws_new(const struct nlpd_encoder *enc, int max_batch, int max_seq,
                                            struct nlpd_error *err)
{
    if (max_batch <= 0 || max_seq <= 0 || (long long)max_batch * max_seq > (1LL << 28)) {
        nlpd_error_set(err, NLPD_ERANGE, 0, "workspace shape %d x %d out of range", max_batch, max_seq);
        return NULL;
    }
    struct nlpd_encoder_ws *ws = calloc(1, sizeof *ws);
    if (!ws) {
        nlpd_error_set(err, NLPD_ENOMEM, 0, "out of memory");
        return NULL;
    }
    if (enc->deb ? !(ws->dws = nlpd_deberta_ws_new(enc->deb, max_batch, max_seq, err))
                 : ws_reserve(enc, ws, max_batch, max_seq, err) != 0) {
        free(ws);
        return NULL;
    }
    return ws;
}

void nlpd_encoder_ws_free(struct nlpd_encoder_ws *ws)
{
    if (!ws)
        return;
    nlpd_deberta_ws_free(ws->dws);
    nlpd_backend_buffer_free(&ws->buf);
    free(ws->host_pos);
    free(ws);
}

/* ----------------------------------------------------------------- forward ---- */

static size_t byte_off(const struct nlpd_encoder_ws *ws, const void *p)
{
    return (size_t)((const char *)p - (const char *)ws->buf.ptr);
}

static int run(const struct nlpd_encoder *enc, struct nlpd_op *op, struct nlpd_error *err)
{
    return nlpd_backend_run(enc->be, op, err);
}

/* c = act(a . w + b); a_type / c_type: the activation types (enc->act for the layers' parts, fp32 for the heads'
 * outputs) */
static int matmul_t(const struct nlpd_encoder *enc, float *c, enum nlpd_dtype c_type, const float *a,
                    enum nlpd_dtype a_type, int lda, size_t w, size_t b, int m, int n, int k, enum nlpd_act act,
                    struct nlpd_error *err)
{
    struct nlpd_op op = {.kind = NLPD_OP_MATMUL};
    op.u.matmul = (struct nlpd_op_matmul){.c = c,
                                          .a = a,
                                          .b = wptr(enc, w),
                                          .bias = b == (size_t)-1 ? NULL : wptr(enc, b),
                                          .m = m,
                                          .n = n,
                                          .k = k,
                                          .lda = lda,
                                          .ldb = n,
                                          .ldc = n,
                                          .act = act,
                                          .a_type = a_type,
                                          .c_type = c_type};
    return run(enc, &op, err);
}

/* a layer's product: a and c both in the layers' activation type */
static int matmul(const struct nlpd_encoder *enc, float *c, const float *a, int lda, size_t w, size_t b, int m, int n,
                  int k, enum nlpd_act act, struct nlpd_error *err)
{
    return matmul_t(enc, c, enc->act, a, enc->act, lda, w, b, m, n, k, act, err);
}

static int layer_norm(const struct nlpd_encoder *enc, float *y, const float *x, const float *bias, const float *res,
                      size_t g, size_t b, int rows, struct nlpd_error *err)
{
    struct nlpd_op op = {.kind = NLPD_OP_LAYER_NORM};
    op.u.layer_norm = (struct nlpd_op_layer_norm){.y = y,
                                                  .x = x,
                                                  .bias = bias,
                                                  .residual = res,
                                                  .gamma = wptr(enc, g),
                                                  .beta = wptr(enc, b),
                                                  .rows = rows,
                                                  .cols = enc->cfg.hidden_size,
                                                  .eps = enc->cfg.layer_norm_eps,
                                                  .io_type = enc->act};
    return run(enc, &op, err);
}

/* n half elements at the top half of dst (n floats) -> fp32 from the start of dst, in place: chunks front to back;
 * a chunk's floats only overwrite halves already copied out (float i ends at byte 4i + 4 <= 2n + 2i for i < n). */
static void widen_in_place(float *dst, size_t n, enum nlpd_dtype t)
{
    const unsigned char *src = (const unsigned char *)dst + n * 2;
    uint16_t tmp[1024];
    for (size_t i = 0; i < n; i += 1024) {
        size_t m = n - i < 1024 ? n - i : 1024;
        memcpy(tmp, src + i * 2, m * 2);
        if (t == NLPD_DTYPE_BF16)
            nlpd_kernels_convert_bf16(dst + i, tmp, m);
        else
            nlpd_kernels_convert_f16(dst + i, tmp, m);
    }
}

/* err carries the backend's words: a bad id found on the device is reported by the download that waits for it.
 * Half activations come down as 2-byte elements and are widened here. */
static int save_hidden(const struct nlpd_encoder *enc, const struct nlpd_encoder_ws *ws, float *dst, size_t n,
                       struct nlpd_error *err)
{
    if (!dst)
        return 0;
    if (enc->act == NLPD_DTYPE_F32)
        return nlpd_backend_download_err(&ws->buf, byte_off(ws, ws->x), dst, n * sizeof(float), err);
    int rc = nlpd_backend_download_err(&ws->buf, byte_off(ws, ws->x), (unsigned char *)dst + n * 2, n * 2, err);
    if (!rc)
        widen_in_place(dst, n, enc->act);
    return rc;
}

int nlpd_encoder_forward(const struct nlpd_encoder *enc, struct nlpd_encoder_ws *ws,
                         const struct nlpd_encoder_input *in, struct nlpd_encoder_output *out, struct nlpd_error *err)
{
    if (enc->deb)
        return ws->dws ? nlpd_deberta_forward(enc->deb, ws->dws, in, out, err)
                       : nlpd_error_set(err, NLPD_EINVAL, 0, "workspace not made for this model");
    const struct nlpd_hf_config *c = &enc->cfg;
    const int B = in->batch, S = in->seq, H = c->hidden_size, I = c->intermediate_size, NL = enc->num_labels;
    if (B <= 0 || S <= 0 || (long long)B * S > (1LL << 28))
        return nlpd_error_set(err, NLPD_EINVAL, 0, "batch shape %d x %d out of range", B, S);
    if (S > nlpd_encoder_max_seq(enc))
        return nlpd_error_set(err, NLPD_ERANGE, 0, "sequence of %d tokens is longer than the model's %d", S,
                              nlpd_encoder_max_seq(enc));
    int rc = ws_reserve(enc, ws, B, S, err);
    if (rc)
        return rc;
    const int T = B * S;
    const size_t tb = (size_t)T * sizeof(int32_t);

    /* inputs: ids, mask, types, positions */
    if ((rc = nlpd_backend_upload(&ws->buf, byte_off(ws, ws->ids), in->input_ids, tb)))
        return nlpd_error_set(err, rc, 0, "uploading input ids failed");
    int32_t *hp = ws->host_pos;
    if (in->attention_mask) {
        rc = nlpd_backend_upload(&ws->buf, byte_off(ws, ws->mask), in->attention_mask, tb);
    } else {
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
    for (int b = 0; b < B; b++) {
        int32_t run_pos = 0;
        for (int s = 0; s < S; s++) {
            int32_t *dst = hp + (size_t)b * S + s;
            if (c->arch == NLPD_HF_ROBERTA) {
                /* transformers: padding_idx + cumsum(id != pad) * (id != pad) */
                int real = in->input_ids[(size_t)b * S + s] != c->pad_token_id;
                run_pos += real;
                *dst = real ? c->pad_token_id + run_pos : c->pad_token_id;
            } else {
                *dst = s;
            }
        }
    }
    if (rc || (rc = nlpd_backend_upload(&ws->buf, byte_off(ws, ws->pos_ids), hp, tb)))
        return nlpd_error_set(err, rc, 0, "uploading the batch failed");
    /* the ops replay as one CUDA graph per batch shape (a failing op ends the region); hidden states and the
     * pooled vector are downloaded mid-forward, so those calls run op by op */
    int graph = !out->all_hidden && !out->hidden && !out->pooled;
    if (graph && (rc = nlpd_backend_graph_begin(enc->be, err)))
        return rc;

    struct nlpd_op op = {.kind = NLPD_OP_EMBED};
    op.u.embed = (struct nlpd_op_embed){.out = ws->x,
                                        .word = wptr(enc, enc->word),
                                        .pos = wptr(enc, enc->pos),
                                        .type = c->type_vocab_size ? wptr(enc, enc->type) : NULL,
                                        .ids = ws->ids,
                                        .pos_ids = ws->pos_ids,
                                        .type_ids = ws->type_ids,
                                        .tokens = T,
                                        .dim = H,
                                        .n_word = c->vocab_size,
                                        .n_pos = c->max_position_embeddings,
                                        .n_type = c->type_vocab_size,
                                        .out_type = enc->act};
    if ((rc = run(enc, &op, err)) || (rc = layer_norm(enc, ws->x, ws->x, NULL, NULL, enc->emb_g, enc->emb_b, T, err)))
        return rc;
    size_t hsz = (size_t)T * H;
    if ((rc = save_hidden(enc, ws, out->all_hidden, hsz, err)))
        return rc;

    for (int l = 0; l < c->num_layers; l++) {
        const struct layer *L = &enc->layers[l];
        if ((rc = matmul(enc, ws->qkv, ws->x, H, L->wqkv, L->bqkv, T, 3 * H, H, NLPD_ACT_NONE, err)))
            return rc;
        op.kind = NLPD_OP_ATTENTION;
        op.u.attention = (struct nlpd_op_attention){.out = ws->ctx,
                                                    .qkv = ws->qkv,
                                                    .mask = ws->mask,
                                                    .batch = B,
                                                    .seq = S,
                                                    .heads = c->num_heads,
                                                    .head_dim = H / c->num_heads,
                                                    .ld_qkv = 3 * H,
                                                    .ld_out = H,
                                                    .scale = (float)(1.0 / sqrt((double)(H / c->num_heads))),
                                                    .scratch = ws->scores,
                                                    .scratch_floats = (size_t)S * S,
                                                    .io_type = enc->act};
        if ((rc = run(enc, &op, err)) ||
            (rc = matmul(enc, ws->tmp, ws->ctx, H, L->wo, (size_t)-1, T, H, H, NLPD_ACT_NONE, err)) ||
            (rc = layer_norm(enc, ws->x, ws->tmp, wptr(enc, L->bo), ws->x, L->ln1_g, L->ln1_b, T, err)) ||
            (rc = matmul(enc, ws->ffn, ws->x, H, L->wi, L->bi, T, I, H, c->hidden_act, err)) ||
            (rc = matmul(enc, ws->tmp, ws->ffn, I, L->wo2, (size_t)-1, T, H, I, NLPD_ACT_NONE, err)) ||
            (rc = layer_norm(enc, ws->x, ws->tmp, wptr(enc, L->bo2), ws->x, L->ln2_g, L->ln2_b, T, err)))
            return rc;
        if (out->all_hidden && (rc = save_hidden(enc, ws, out->all_hidden + (size_t)(l + 1) * hsz, hsz, err)))
            return rc;
    }
    if ((rc = save_hidden(enc, ws, out->hidden, hsz, err)))
        return rc;

    /* heads: the first token of each sequence is row b*S, so a row stride of S*H gathers them for free */
    if (enc->has_pool) {
        if ((rc = matmul_t(enc, ws->pool, NLPD_DTYPE_F32, ws->x, enc->act, S * H, enc->pool_w, enc->pool_b, B, H, H,
                           enc->pool_act, err)))
            return rc;
        if (out->pooled && (rc = nlpd_backend_download_err(&ws->buf, byte_off(ws, ws->pool), out->pooled,
                                                           (size_t)B * H * sizeof(float), err)))
            return rc;
    }
    if (enc->task == NLPD_HF_TASK_SEQ_CLS) {
        rc = matmul_t(enc, ws->logits, NLPD_DTYPE_F32, ws->pool, NLPD_DTYPE_F32, H, enc->cls_w, enc->cls_b, B, NL, H,
                      NLPD_ACT_NONE, err);
    } else if (enc->task == NLPD_HF_TASK_TOKEN_CLS) {
        rc = matmul_t(enc, ws->logits, NLPD_DTYPE_F32, ws->x, enc->act, H, enc->cls_w, enc->cls_b, T, NL, H,
                      NLPD_ACT_NONE, err);
    }
    if (rc)
        return rc;
    if (graph && (rc = nlpd_backend_graph_end(enc->be, err)))
        return rc;
    if ((rc = nlpd_backend_sync(enc->be, err)))
        return rc;
    if (out->logits && NL) {
        size_t rows = enc->task == NLPD_HF_TASK_SEQ_CLS ? (size_t)B : (size_t)T;
        if ((rc = nlpd_backend_download_err(&ws->buf, byte_off(ws, ws->logits), out->logits, rows * NL * sizeof(float),
                                            err)))
            return rc;
        if ((rc = check_finite(enc, out->logits, rows, NL, err)))
            return rc;
    }
    return 0;
}
