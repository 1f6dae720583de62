/* Encoder parity with transformers on the hf-tiny goldens (batch, each example alone, batch vs single, per-layer
 * hidden states), and clear errors for bad model folders. Run from the repository root. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "deberta.h"
#include "encoder.h"
#include "harness.h"
#include "nlpd_backend.h" /* the fake GPU backend of test_backend_choice */
#include "safetensors.h"

#define FIX "tests/fixtures/hf-tiny/"

static const char *models[] = {"bert-seq-cls", "bert-token-cls", "distilbert-seq-cls", "xlm-roberta-seq-cls",
                               "deberta-v2-seq-cls", "deberta-v2-token-cls",
                               /* DeBERTa config branches the fixtures do not reach (tests/models/deberta_ref.py) */
                               "_deberta_variants/own-proj-buckets", "_deberta_variants/c2p-nobuckets",
                               "_deberta_variants/p2c-maxpos", "_deberta_variants/absolute-proj"};

static int close_enough(double got, double want, double atol, double rtol)
{
    return fabs(got - want) <= atol + rtol * fabs(want);
}

static int32_t *ints2d(json_t *a, int *rows, int *cols)
{
    *rows = (int)json_array_size(a);
    *cols = *rows ? (int)json_array_size(json_array_get(a, 0)) : 0;
    int32_t *v = calloc((size_t)(*rows) * (*cols) + 1, sizeof *v);
    for (int r = 0; r < *rows; r++)
        for (int c = 0; c < *cols; c++)
            v[(size_t)r * *cols + c] = (int32_t)json_integer_value(json_array_get(json_array_get(a, r), c));
    return v;
}

static struct nlpd_encoder *load(const char *name)
{
    char dir[256];
    snprintf(dir, sizeof dir, FIX "%s", name);
    struct nlpd_error err = {0};
    struct nlpd_encoder_opts opts = {.threads = 1};
    struct nlpd_encoder *enc = nlpd_encoder_load(dir, &opts, &err);
    if (!enc)
        fprintf(stderr, "load %s: %s\n", name, err.message);
    return enc;
}

static json_t *golden(const char *name)
{
    char p[256];
    snprintf(p, sizeof p, FIX "%s/golden.json", name);
    json_error_t je;
    json_t *g = json_load_file(p, 0, &je);
    if (!g)
        fprintf(stderr, "%s: %s\n", p, je.text);
    return g;
}

static void parity_one(const char *name)
{
    json_t *g = golden(name);
    struct nlpd_encoder *enc = load(name);
    CHECK(g && enc);
    if (!g || !enc) {
        json_decref(g);
        nlpd_encoder_free(enc);
        return;
    }
    int token = nlpd_encoder_task(enc) == NLPD_HF_TASK_TOKEN_CLS;
    int NL = nlpd_encoder_num_labels(enc), H = nlpd_encoder_hidden_size(enc);
    json_t *batch = json_object_get(g, "batch");
    int B, S, b2, s2;
    int32_t *ids = ints2d(json_object_get(batch, "input_ids"), &B, &S);
    int32_t *mask = ints2d(json_object_get(batch, "attention_mask"), &b2, &s2);
    int32_t *types = NULL;
    if (json_object_get(batch, "token_type_ids"))
        types = ints2d(json_object_get(batch, "token_type_ids"), &b2, &s2);
    struct nlpd_error err = {0};
    struct nlpd_encoder_ws *ws = nlpd_encoder_ws_new(enc, 2, 8, &err); /* grows on demand */
    CHECK(ws != NULL);
    size_t rows = token ? (size_t)B * S : (size_t)B;
    float *logits = calloc(rows * NL, sizeof(float));
    struct nlpd_encoder_input in = {B, S, ids, mask, types};
    struct nlpd_encoder_output out = {.logits = logits};
    int rc = nlpd_encoder_forward(enc, ws, &in, &out, &err);
    CHECK(rc == 0);
    if (rc)
        fprintf(stderr, "%s: %s\n", name, err.message);

    /* batch vs golden */
    double max_batch = 0;
    int bad = 0;
    json_t *bl = json_object_get(g, "batch_logits");
    for (int b = 0; b < B; b++)
        for (int s = 0; s < (token ? S : 1); s++) {
            if (token && !mask[(size_t)b * S + s])
                continue;
            json_t *row = token ? json_array_get(json_array_get(bl, b), s) : json_array_get(bl, b);
            for (int l = 0; l < NL; l++) {
                double want = json_number_value(json_array_get(row, l));
                double got = logits[((size_t)b * (token ? S : 1) + s) * NL + l];
                if (fabs(got - want) > max_batch)
                    max_batch = fabs(got - want);
                bad += !close_enough(got, want, 1e-4, 1e-4);
            }
        }
    CHECK(bad == 0);

    /* each example alone, unpadded; and batched vs one-by-one */
    double max_single = 0, max_bvs = 0;
    json_t *ex;
    size_t i;
    json_array_foreach(json_object_get(g, "examples"), i, ex)
    {
        json_t *eids = json_object_get(ex, "input_ids"), *etypes = json_object_get(ex, "token_type_ids");
        int n = (int)json_array_size(eids);
        int32_t *one = calloc((size_t)n, sizeof *one), *ot = calloc((size_t)n, sizeof *ot);
        for (int t = 0; t < n; t++) {
            one[t] = (int32_t)json_integer_value(json_array_get(eids, t));
            ot[t] = etypes ? (int32_t)json_integer_value(json_array_get(etypes, t)) : 0;
        }
        float *l1 = calloc((size_t)n * NL, sizeof(float));
        struct nlpd_encoder_input in1 = {1, n, one, NULL, types ? ot : NULL};
        struct nlpd_encoder_output o1 = {.logits = l1};
        CHECK(nlpd_encoder_forward(enc, ws, &in1, &o1, &err) == 0);
        json_t *el = json_object_get(ex, "logits");
        for (int t = 0; t < (token ? n : 1); t++)
            for (int l = 0; l < NL; l++) {
                double want =
                    json_number_value(token ? json_array_get(json_array_get(el, t), l) : json_array_get(el, l));
                double got = l1[(size_t)t * NL + l];
                double bat = logits[((size_t)i * (token ? S : 1) + t) * NL + l];
                max_single = fmax(max_single, fabs(got - want));
                max_bvs = fmax(max_bvs, fabs(got - bat));
                CHECK(close_enough(got, want, 1e-4, 1e-4));
                /* Batched and single runs differ only in float32 summation order (padding, BLAS blocking, CPU):
                 * each is bound to the golden within atol 1e-4 + rtol 1e-4, so that is their bound too; a
                 * padding leak moves logits by far more. */
                CHECK(close_enough(got, bat, 1e-4, 1e-4));
            }
        free(l1);
        free(one);
        free(ot);
    }

    /* hidden states of example 0, layer by layer */
    json_t *hs = json_object_get(json_object_get(g, "debug_example0"), "hidden_states");
    int NLay = nlpd_encoder_config(enc)->num_layers;
    CHECK((int)json_array_size(hs) == NLay + 1);
    float *all = calloc((size_t)(NLay + 1) * B * S * H, sizeof(float));
    struct nlpd_encoder_output oh = {.all_hidden = all};
    CHECK(nlpd_encoder_forward(enc, ws, &in, &oh, &err) == 0);
    double max_hidden = 0;
    int hidden_bad = 0; /* stop at the first difference (every loop, not just the innermost) */
    for (int l = 0; l <= NLay && l < (int)json_array_size(hs) && !hidden_bad; l++) {
        json_t *layer = json_array_get(hs, l);
        for (size_t t = 0; t < json_array_size(layer) && !hidden_bad; t++)
            for (int h = 0; h < H; h++) {
                double want = json_number_value(json_array_get(json_array_get(layer, t), h));
                double got = all[(size_t)l * B * S * H + t * H + h];
                max_hidden = fmax(max_hidden, fabs(got - want));
                if (!close_enough(got, want, 1e-4, 1e-4)) {
                    CHECK(!"hidden state differs");
                    fprintf(stderr, "  %s layer %d token %zu dim %d: %g vs %g\n", name, l, t, h, got, want);
                    hidden_bad = 1;
                    break;
                }
            }
    }
    /* DeBERTa's embedding output is LayerNorm(...) * attention_mask (DebertaV2Embeddings; the goldens' hidden
     * states say so): a padded row is exactly zero, a product by 0, whatever the arithmetic before it */
    int pad_rows = 0, pad_bad = 0;
    for (size_t t = 0; nlpd_encoder_config(enc)->arch == NLPD_HF_DEBERTA_V2 && t < (size_t)B * S; t++) {
        if (mask[t])
            continue;
        pad_rows++;
        for (int h = 0; h < H; h++)
            pad_bad += all[t * H + h] != 0.0f;
    }
    if (nlpd_encoder_config(enc)->arch == NLPD_HF_DEBERTA_V2) {
        CHECK(pad_rows > 0); /* the golden batch has padding, or this checks nothing */
        CHECK(pad_bad == 0);
        if (pad_bad)
            fprintf(stderr, "  %s: %d nonzero values in the embedding output's %d padded rows\n", name, pad_bad,
                    pad_rows);
    }
    printf("%-36s max |diff|: batch %.3g, single %.3g, batch-vs-single %.3g, hidden %.3g\n", name, max_batch,
           max_single, max_bvs, max_hidden);
    free(all);
    free(logits);
    free(ids);
    free(mask);
    free(types);
    nlpd_encoder_ws_free(ws);
    nlpd_encoder_free(enc);
    json_decref(g);
}

static void test_parity(void)
{
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++)
        parity_one(models[i]);
}

/* The same batch under the scalar kernels must agree with the SIMD kernels (run in a child: the path is chosen
 * once per process). */
static void test_pooled_and_hidden(void)
{
    struct nlpd_encoder *enc = load("bert-seq-cls");
    CHECK(enc != NULL);
    if (!enc)
        return;
    int32_t ids[6] = {2, 100, 200, 300, 3, 0};
    int32_t mask[6] = {1, 1, 1, 1, 1, 0};
    struct nlpd_error err = {0};
    struct nlpd_encoder_ws *ws = nlpd_encoder_ws_new(enc, 1, 6, &err);
    float pooled[32], hidden[6 * 32], logits[3];
    struct nlpd_encoder_input in = {1, 6, ids, mask, NULL};
    struct nlpd_encoder_output out = {.logits = logits, .pooled = pooled, .hidden = hidden};
    CHECK(nlpd_encoder_forward(enc, ws, &in, &out, &err) == 0);
    for (int i = 0; i < 32; i++)
        CHECK(pooled[i] >= -1.0f && pooled[i] <= 1.0f); /* tanh */
    /* out-of-range ids are errors, not reads out of bounds */
    ids[1] = 5000;
    CHECK(nlpd_encoder_forward(enc, ws, &in, &out, &err) == NLPD_EINVAL);
    CHECK_STR_CONTAINS(err.message, "out of range");
    ids[1] = 100;
    /* longer than max_position_embeddings */
    int32_t *lng = calloc(100, sizeof *lng);
    struct nlpd_encoder_input in2 = {1, 100, lng, NULL, NULL};
    struct nlpd_encoder_output o2 = {0};
    CHECK(nlpd_encoder_forward(enc, ws, &in2, &o2, &err) == NLPD_ERANGE);
    free(lng);
    nlpd_encoder_ws_free(ws);
    nlpd_encoder_free(enc);
}

/* ---- bad folders ---- */

static char tmpdir[256];

/* Removes the model folder a test wrote into tmpdir. */
static void remove_tmp_model(void)
{
    char p[512];
    snprintf(p, sizeof p, "%s/config.json", tmpdir);
    unlink(p);
    snprintf(p, sizeof p, "%s/model.safetensors", tmpdir);
    unlink(p);
    rmdir(tmpdir);
}

static void write_file(const char *name, const void *data, size_t n)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", tmpdir, name);
    FILE *f = fopen(p, "wb");
    if (f) {
        fwrite(data, 1, n, f);
        fclose(f);
    }
}

static char *read_all(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)sz + 1);
    *n = fread(b, 1, (size_t)sz, f);
    b[*n] = 0;
    fclose(f);
    return b;
}

/* Copies bert-seq-cls into tmpdir with config.json and model.safetensors replaced when given. */
static void make_folder(const char *config, const void *st, size_t st_len)
{
    size_t n;
    char *c = read_all(FIX "bert-seq-cls/config.json", &n);
    if (config)
        write_file("config.json", config, strlen(config));
    else
        write_file("config.json", c, n);
    free(c);
    char *s = read_all(FIX "bert-seq-cls/model.safetensors", &n);
    if (st)
        write_file("model.safetensors", st, st_len);
    else
        write_file("model.safetensors", s, n);
    free(s);
}

static void expect_error(const char *what, const char *needle1, const char *needle2)
{
    struct nlpd_error err = {0};
    struct nlpd_encoder_opts opts = {.threads = 1};
    struct nlpd_encoder *enc = nlpd_encoder_load(tmpdir, &opts, &err);
    CHECK(enc == NULL);
    if (enc) {
        fprintf(stderr, "  %s: loaded\n", what);
        nlpd_encoder_free(enc);
        return;
    }
    CHECK_STR_CONTAINS(err.message, needle1);
    if (needle2)
        CHECK_STR_CONTAINS(err.message, needle2);
    printf("  %-26s -> %s\n", what, err.message);
}

/* Rewrites the safetensors header of bert-seq-cls with a JSON text substitution. */
static char *patched(const char *from, const char *to, size_t *out_len)
{
    size_t n;
    char *s = read_all(FIX "bert-seq-cls/model.safetensors", &n);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--)
        hl = (hl << 8) | (unsigned char)s[i];
    char *hdr = strndup(s + 8, hl);
    char *at = strstr(hdr, from);
    size_t nh = hl - strlen(from) + strlen(to);
    char *out = malloc(8 + nh + (n - 8 - hl));
    if (at) {
        size_t pre = (size_t)(at - hdr);
        memcpy(out + 8, hdr, pre);
        memcpy(out + 8 + pre, to, strlen(to));
        memcpy(out + 8 + pre + strlen(to), at + strlen(from), hl - pre - strlen(from));
    } else {
        nh = hl;
        memcpy(out + 8, hdr, hl);
    }
    for (int i = 0; i < 8; i++)
        out[i] = (char)((uint64_t)nh >> (8 * i));
    memcpy(out + 8 + nh, s + 8 + hl, n - 8 - hl);
    *out_len = 8 + nh + (n - 8 - hl);
    free(hdr);
    free(s);
    return out;
}

/* Non-finite logits are an error, never a result (issue 20 item 3: fp16 overflow). bert-seq-cls with one
 * classifier bias set to NaN, then to +inf: the forward pass fails naming the row and label. */
static void test_non_finite_logits(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/nlpd-test-encoder-nf-%d", (int)getpid());
    mkdir(tmpdir, 0700);
    size_t n;
    char *s = read_all(FIX "bert-seq-cls/model.safetensors", &n);
    CHECK(s != NULL);
    if (!s)
        return;
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--)
        hl = (hl << 8) | (unsigned char)s[i];
    json_t *hdr = json_loadb(s + 8, hl, 0, NULL);
    json_t *t = json_object_get(hdr, "classifier.bias");
    CHECK(t && !strcmp(json_string_value(json_object_get(t, "dtype")), "F32"));
    size_t off = t ? (size_t)json_integer_value(json_array_get(json_object_get(t, "data_offsets"), 1)) : 0;
    static const uint32_t bad[2] = {0x7fc00000u, 0x7f800000u}; /* NaN, +inf */
    for (int k = 0; k < 2 && t; k++) {
        memcpy(s + 8 + hl + off - 4, &bad[k], 4); /* the last label's bias */
        make_folder(NULL, s, n);
        struct nlpd_error err = {0};
        struct nlpd_encoder_opts opts = {.threads = 1};
        struct nlpd_encoder *enc = nlpd_encoder_load(tmpdir, &opts, &err);
        CHECK(enc != NULL);
        struct nlpd_encoder_ws *ws = enc ? nlpd_encoder_ws_new(enc, 2, 6, &err) : NULL;
        int32_t ids[12] = {2, 100, 200, 300, 3, 0, 2, 7, 3, 0, 0, 0};
        int32_t mask[12] = {1, 1, 1, 1, 1, 0, 1, 1, 1, 0, 0, 0};
        float logits[2 * 3];
        struct nlpd_encoder_input in = {2, 6, ids, mask, NULL};
        struct nlpd_encoder_output out = {.logits = logits};
        CHECK(ws && nlpd_encoder_forward(enc, ws, &in, &out, &err) == NLPD_ERANGE);
        CHECK_STR_CONTAINS(err.message, "non-finite logit");
        CHECK_STR_CONTAINS(err.message, "row 0, label 2");
        printf("  %s bias -> %s\n", k ? "inf" : "NaN", err.message);
        nlpd_encoder_ws_free(ws);
        nlpd_encoder_free(enc);
    }
    json_decref(hdr);
    free(s);
    remove_tmp_model();
}

static void test_bad_folders(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/nlpd-test-encoder-%d", (int)getpid());
    mkdir(tmpdir, 0700);
    size_t n;
    char *cfg = read_all(FIX "bert-seq-cls/config.json", &n);

    /* missing config key */
    char *c2 = strdup(cfg);
    char *k = strstr(c2, "\"hidden_size\"");
    memcpy(k, "\"hidden_sizX\"", 13);
    make_folder(c2, NULL, 0);
    expect_error("missing config key", "config.json", "hidden_size");
    free(c2);

    /* unsupported model_type */
    c2 = strdup(cfg);
    k = strstr(c2, "\"bert\"");
    memcpy(k, "\"gpt2\"", 6);
    make_folder(c2, NULL, 0);
    expect_error("unsupported model_type", "config.json", "gpt2");
    free(c2);

    /* wrong shape: config says 3 layers of 64 ffn but intermediate 48 */
    c2 = strdup(cfg);
    k = strstr(c2, "\"intermediate_size\": 64");
    memcpy(k, "\"intermediate_size\": 48", 23);
    make_folder(c2, NULL, 0);
    expect_error("wrong shape", "model.safetensors", "intermediate.dense.weight");
    free(c2);

    /* sizes far beyond the file: a shape error before anything is allocated */
    {
        const char *at = strstr(cfg, "\"vocab_size\": 1000");
        size_t pre = (size_t)(at - cfg);
        char *big = malloc(n + 16);
        snprintf(big, n + 16, "%.*s\"vocab_size\": 9000000%s", (int)pre, cfg, at + strlen("\"vocab_size\": 1000"));
        make_folder(big, NULL, 0);
        expect_error("huge vocab_size", "model.safetensors", "word_embeddings.weight\": shape [1000, 32]");
        free(big);
    }

    /* tensor missing: rename one in the header */
    char *st = patched("bert.encoder.layer.1.output.dense.bias", "bert.encoder.layer.1.output.dense.bian", &n);
    make_folder(NULL, st, n);
    expect_error("tensor missing", "model.safetensors", "bert.encoder.layer.1.output.dense.bias");
    free(st);

    /* unsupported dtype: I32 with the same byte count */
    st = patched("\"bert.pooler.dense.bias\":{\"dtype\":\"F32\"", "\"bert.pooler.dense.bias\":{\"dtype\":\"I32\"", &n);
    make_folder(NULL, st, n);
    expect_error("unsupported dtype", "bert.pooler.dense.bias", "I32");
    free(st);

    /* truncated file */
    size_t full;
    char *s = read_all(FIX "bert-seq-cls/model.safetensors", &full);
    make_folder(NULL, s, full - 100);
    expect_error("truncated safetensors", "model.safetensors", "out of range");
    make_folder(NULL, s, 5);
    expect_error("truncated header length", "model.safetensors", "truncated");
    free(s);

    /* offsets out of range */
    st = patched("\"data_offsets\":[0,", "\"data_offsets\":[9999990,", &n);
    make_folder(NULL, st, n);
    expect_error("offsets out of range", "model.safetensors", "data_offsets");
    free(st);

    /* no config.json at all */
    char p[512];
    snprintf(p, sizeof p, "%s/config.json", tmpdir);
    unlink(p);
    expect_error("no config.json", "config.json", NULL);
    snprintf(p, sizeof p, "%s/model.safetensors", tmpdir);
    unlink(p);
    rmdir(tmpdir);
    free(cfg);
}

/* Rewrites a fixture's model.safetensors with every tensor in F16 or BF16 (dtype 16 / 17 below) into tmpdir. */
static int write_converted(const char *model, int bf16)
{
    char src[256], dst[512];
    snprintf(src, sizeof src, FIX "%s/model.safetensors", model);
    struct nlpd_error err = {0};
    struct nlpd_safetensors *st = nlpd_safetensors_open(src, &err);
    if (!st)
        return -1;
    json_t *hdr = json_object();
    size_t off = 0, n = nlpd_safetensors_count(st);
    for (size_t i = 0; i < n; i++) {
        const struct nlpd_st_tensor *t = nlpd_safetensors_at(st, i);
        json_t *shape = json_array();
        for (int d = 0; d < t->ndim; d++)
            json_array_append_new(shape, json_integer(t->shape[d]));
        json_object_set_new(hdr, t->name,
                            json_pack("{s:s, s:o, s:[I, I]}", "dtype", bf16 ? "BF16" : "F16", "shape", shape,
                                      "data_offsets", (json_int_t)off, (json_int_t)(off + t->numel * 2)));
        off += t->numel * 2;
    }
    char *text = json_dumps(hdr, JSON_COMPACT);
    size_t hl = strlen(text);
    snprintf(dst, sizeof dst, "%s/model.safetensors", tmpdir);
    FILE *f = fopen(dst, "wb");
    unsigned char len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    fwrite(len8, 1, 8, f);
    fwrite(text, 1, hl, f);
    for (size_t i = 0; i < n; i++) {
        const struct nlpd_st_tensor *t = nlpd_safetensors_at(st, i);
        float *v = malloc(t->numel * sizeof *v);
        nlpd_safetensors_read_f32(st, t->name, 0, NULL, v, &err);
        for (size_t k = 0; k < t->numel; k++) {
            uint16_t h = bf16 ? nlpd_kernels_f32_to_bf16(v[k]) : nlpd_kernels_f32_to_f16(v[k]);
            unsigned char b[2] = {(unsigned char)h, (unsigned char)(h >> 8)};
            fwrite(b, 1, 2, f);
        }
        free(v);
    }
    fclose(f);
    free(text);
    json_decref(hdr);
    nlpd_safetensors_close(st);
    snprintf(src, sizeof src, FIX "%s/config.json", model);
    size_t cl;
    char *cfg = read_all(src, &cl);
    write_file("config.json", cfg, cl);
    free(cfg);
    return 0;
}

/* Half-precision checkpoints load (converted to F32 once) and give logits close to the F32 ones. */
static void test_half_precision(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/nlpd-test-encoder-half-%d", (int)getpid());
    mkdir(tmpdir, 0700);
    struct nlpd_encoder *ref = load("xlm-roberta-seq-cls");
    int32_t ids[8] = {0, 5, 995, 12, 34, 346, 717, 2};
    float want[3], got[3];
    struct nlpd_error err = {0};
    struct nlpd_encoder_ws *ws = ref ? nlpd_encoder_ws_new(ref, 1, 8, &err) : NULL;
    struct nlpd_encoder_input in = {1, 8, ids, NULL, NULL};
    struct nlpd_encoder_output out = {.logits = want};
    CHECK(ws && nlpd_encoder_forward(ref, ws, &in, &out, &err) == 0);
    for (int bf16 = 0; bf16 < 2; bf16++) {
        CHECK(write_converted("xlm-roberta-seq-cls", bf16) == 0);
        struct nlpd_encoder_opts opts = {.threads = 1};
        struct nlpd_encoder *enc = nlpd_encoder_load(tmpdir, &opts, &err);
        CHECK(enc != NULL);
        if (!enc) {
            fprintf(stderr, "  %s\n", err.message);
            continue;
        }
        struct nlpd_encoder_ws *w2 = nlpd_encoder_ws_new(enc, 1, 8, &err);
        out.logits = got;
        CHECK(nlpd_encoder_forward(enc, w2, &in, &out, &err) == 0);
        double mx = 0;
        for (int i = 0; i < 3; i++)
            mx = fmax(mx, fabs(got[i] - want[i]));
        printf("  %s weights: max |logit diff| vs F32 %.3g\n", bf16 ? "BF16" : "F16", mx);
        CHECK(mx < (bf16 ? 0.5 : 0.05));
        CHECK(mx > 0); /* the weights really went through the conversion */
        nlpd_encoder_ws_free(w2);
        nlpd_encoder_free(enc);
    }
    nlpd_encoder_ws_free(ws);
    nlpd_encoder_free(ref);
    remove_tmp_model();
}

/* ---- DeBERTa-v2 specifics ---- */

/* The relative-position rows of every d the goldens list, and the long example (truncated to 160 tokens, past
 * position_buckets / 2 = 128: log buckets) layer by layer. */
static void deberta_buckets_and_long(const char *name, int expect_log)
{
    json_t *g = golden(name);
    struct nlpd_encoder *enc = load(name);
    CHECK(g && enc);
    if (!g || !enc) {
        json_decref(g);
        nlpd_encoder_free(enc);
        return;
    }
    const struct nlpd_hf_config *c = nlpd_encoder_config(enc);
    json_t *rb = json_object_get(g, "relative_position_buckets"), *ds = json_object_get(rb, "d"),
           *bs = json_object_get(rb, "bucket");
    int span = c->deberta.position_buckets, bad = 0, logs = 0;
    CHECK(json_array_size(ds) >= 255 && json_array_size(ds) == json_array_size(bs)); /* |d| < 128 or 160 */
    for (size_t i = 0; i < json_array_size(ds); i++) {
        int d = (int)json_integer_value(json_array_get(ds, i)), b = (int)json_integer_value(json_array_get(bs, i));
        int want = b + span < 0 ? 0 : b + span > 2 * span - 1 ? 2 * span - 1 : b + span;
        bad += nlpd_deberta_rel_index(c, d) != want;
        logs += b != d;
    }
    CHECK(bad == 0);
    CHECK(!expect_log || logs > 0); /* seq-cls's list reaches the log range (160 > 128 tokens) */
    json_t *dl = json_object_get(g, "debug_long_example"), *hs = json_object_get(dl, "hidden_states");
    json_t *xi = json_object_get(dl, "example_index");
    json_t *ex = json_array_get(json_object_get(g, "examples"), (size_t)json_integer_value(xi));
    CHECK(json_is_integer(xi) && ex != NULL);
    json_t *eids = json_object_get(ex, "input_ids");
    int n = (int)json_array_size(eids), H = c->hidden_size, NLay = c->num_layers;
    int32_t *ids = calloc((size_t)n + 1, sizeof *ids);
    for (int t = 0; t < n; t++)
        ids[t] = (int32_t)json_integer_value(json_array_get(eids, t));
    float *all = calloc((size_t)(NLay + 1) * n * H, sizeof *all);
    struct nlpd_error err = {0};
    struct nlpd_encoder_ws *ws = nlpd_encoder_ws_new(enc, 1, n, &err);
    struct nlpd_encoder_input in = {1, n, ids, NULL, NULL};
    struct nlpd_encoder_output out = {.all_hidden = all};
    CHECK(n >= 128); /* the fixtures' longest: 160 and 128 tokens */
    CHECK(ws && nlpd_encoder_forward(enc, ws, &in, &out, &err) == 0);
    CHECK((int)json_array_size(hs) == NLay + 1);
    double maxd = 0;
    int hbad = 0;
    for (int l = 0; l <= NLay && l < (int)json_array_size(hs); l++) {
        json_t *layer = json_array_get(hs, l);
        if (json_array_size(layer) == 1 && json_array_size(json_array_get(layer, 0)) == (size_t)n)
            layer = json_array_get(layer, 0); /* [1, seq, hidden] */
        for (int t = 0; t < n && t < (int)json_array_size(layer); t++)
            for (int h = 0; h < H; h++) {
                double want = json_number_value(json_array_get(json_array_get(layer, t), h));
                double got = all[((size_t)l * n + t) * H + h];
                maxd = fmax(maxd, fabs(got - want));
                if (!close_enough(got, want, 1e-4, 1e-4) && !hbad++)
                    fprintf(stderr, "  %s layer %d token %d dim %d: %g vs %g\n", name, l, t, h, got, want);
            }
    }
    printf("%-20s %zu relative positions, %d log-bucketed; long example (%d tokens) hidden max |diff| %.3g\n", name,
           json_array_size(ds), logs, n, maxd);
    CHECK(hbad == 0);
    free(ids);
    free(all);
    nlpd_encoder_ws_free(ws);
    nlpd_encoder_free(enc);
    json_decref(g);
}

/* Configs it cannot run are refused by name (a CUDA backend too: tests/unit/test_cuda_ops.c). */
static void deberta_refusals(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/nlpd-test-encoder-deb-%d", (int)getpid());
    mkdir(tmpdir, 0700);
    size_t n;
    char *cfg = read_all(FIX "deberta-v2-seq-cls/config.json", &n),
         *st = read_all(FIX "deberta-v2-seq-cls/model.safetensors", &n);
    write_file("model.safetensors", st, n);
    static const struct {
        const char *from, *to, *needle;
    } bad[] = {
        {"\"pad_token_id\": 0,", "\"pad_token_id\": 0, \"conv_kernel_size\": 3,", "conv_kernel_size 3"},
        {"\"pooler_hidden_size\": 32", "\"pooler_hidden_size\": 16", "pooler_hidden_size 16"},
        {"\"pad_token_id\": 0,", "\"pad_token_id\": 0, \"attention_head_size\": 4,", "attention_head_size 4"},
        {"\"position_buckets\": 256", "\"position_buckets\": 1", "position_buckets 1"},
        {"\"pos_att_type\": [", "\"pos_att_type\": [3, ", "pos_att_type"},
        {"\"share_att_key\": true", "\"share_att_key\": 1", "share_att_key"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *at = strstr(cfg, bad[i].from);
        CHECK(at != NULL);
        if (!at)
            continue;
        char *c2 = malloc(strlen(cfg) + strlen(bad[i].to) + 1);
        memcpy(c2, cfg, (size_t)(at - cfg));
        strcpy(c2 + (at - cfg), bad[i].to);
        strcat(c2, at + strlen(bad[i].from));
        write_file("config.json", c2, strlen(c2));
        expect_error(bad[i].needle, "config.json", bad[i].needle);
        free(c2);
    }
    remove_tmp_model();
    free(cfg);
    free(st);
}

/* DebertaV2Config's defaults and the "p2c|c2p" string form. */
static void deberta_config(void)
{
    struct nlpd_hf_config c;
    struct nlpd_error err = {0};
    const char *j = "{\"model_type\":\"deberta-v2\",\"vocab_size\":10,\"hidden_size\":8,\"num_hidden_layers\":1,"
                    "\"num_attention_heads\":2,\"intermediate_size\":4,\"relative_attention\":true,"
                    "\"pos_att_type\":\"P2C | c2p\",\"norm_rel_ebd\":\"layer_norm\"}";
    CHECK(nlpd_hf_config_parse(j, strlen(j), "d.json", &c, &err) == 0);
    const struct nlpd_hf_deberta *d = &c.deberta;
    CHECK(c.arch == NLPD_HF_DEBERTA_V2 && c.type_vocab_size == 0 && c.pad_token_id == 0);
    CHECK(c.layer_norm_eps == 1e-7f && d->c2p && d->p2c && d->norm_rel_ln && d->relative_attention);
    CHECK(d->position_buckets == -1 && d->max_relative_positions == 512 && d->position_biased_input);
    CHECK(!d->share_att_key && d->embedding_size == 8 && d->pooler_hidden_size == 8);
    CHECK(d->pooler_act == NLPD_ACT_GELU && d->attention_head_size == 4 && d->conv_kernel_size == 0);
    /* no buckets: raw i - j, clamped to the span of max_relative_positions */
    CHECK(nlpd_deberta_rel_index(&c, 0) == 512 && nlpd_deberta_rel_index(&c, -600) == 0);
    CHECK(nlpd_deberta_rel_index(&c, 700) == 1023 && nlpd_deberta_rel_index(&c, 5) == 517);
    nlpd_hf_config_free(&c);
}

static void test_deberta(void)
{
    deberta_buckets_and_long("deberta-v2-seq-cls", 1);
    deberta_buckets_and_long("deberta-v2-token-cls", 0);
    deberta_refusals();
    deberta_config();
}

/* config.json: DistilBERT key names, defaults, labels, and bad values. */
static void test_config(void)
{
    struct nlpd_hf_config c;
    struct nlpd_error err = {0};
    const char *d =
        "{\"model_type\":\"distilbert\",\"vocab_size\":10,\"dim\":8,\"n_layers\":3,\"n_heads\":2,"
        "\"hidden_dim\":16,\"activation\":\"gelu_new\",\"architectures\":[\"DistilBertForTokenClassification\"]}";
    CHECK(nlpd_hf_config_parse(d, strlen(d), "d.json", &c, &err) == 0);
    CHECK(c.arch == NLPD_HF_DISTILBERT && c.hidden_size == 8 && c.num_layers == 3 && c.num_heads == 2);
    CHECK(c.intermediate_size == 16 && c.hidden_act == NLPD_ACT_GELU_TANH && c.type_vocab_size == 0);
    CHECK(c.task == NLPD_HF_TASK_TOKEN_CLS && c.num_labels == 2 && !strcmp(c.id2label[1], "LABEL_1"));
    CHECK(c.max_position_embeddings == 512 && c.layer_norm_eps == 1e-12f && c.pad_token_id == 0);
    nlpd_hf_config_free(&c);
    CHECK(nlpd_hf_config_load(FIX "xlm-roberta-seq-cls/config.json", &c, &err) == 0);
    CHECK(c.arch == NLPD_HF_ROBERTA && c.pad_token_id == 1 && c.bos_token_id == 0 && c.eos_token_id == 2);
    CHECK(c.layer_norm_eps == 1e-5f && c.num_labels == 3 && nlpd_hf_config_label_id(&c, "entailment") == 2);
    CHECK(!strcmp(c.problem_type, "") && !strcmp(c.position_embedding_type, "absolute"));
    nlpd_hf_config_free(&c);
    CHECK(nlpd_hf_config_load(FIX "bert-seq-cls/config.json", &c, &err) == 0);
    CHECK(!strcmp(c.problem_type, "single_label_classification") && c.task == NLPD_HF_TASK_SEQ_CLS);
    nlpd_hf_config_free(&c);
    static const struct {
        const char *json, *needle;
    } bad[] = {
        {"{\"model_type\":\"bert\",\"vocab_size\":10,\"hidden_size\":8,\"num_hidden_layers\":1,"
         "\"num_attention_heads\":3,\"intermediate_size\":4}",
         "not a multiple"},
        {"{\"model_type\":\"bert\",\"vocab_size\":10,\"hidden_size\":8,\"num_hidden_layers\":1,"
         "\"num_attention_heads\":2,\"intermediate_size\":4,\"id2label\":{\"0\":\"a\",\"2\":\"b\"}}",
         "id2label key \"2\""},
        {"{\"model_type\":\"bert\",\"vocab_size\":-1}", "\"vocab_size\" = -1 out of range"},
        {"{\"model_type\":\"bert\",\"vocab_size\":10,\"hidden_size\":8,\"num_hidden_layers\":1,"
         "\"num_attention_heads\":2,\"intermediate_size\":4,\"hidden_act\":\"mish\"}",
         "unsupported hidden_act \"mish\""},
        {"{\"model_type\":\"bert\",\"vocab_size\":10,\"hidden_size\":8,\"num_hidden_layers\":1,"
         "\"num_attention_heads\":2,\"intermediate_size\":4,\"position_embedding_type\":\"relative_key\"}",
         "relative_key"},
        {"{\"vocab_size\":10}", "missing key \"model_type\""},
        {"[]", "not a JSON object"},
        {"{", "invalid JSON"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK(nlpd_hf_config_parse(bad[i].json, strlen(bad[i].json), "x/config.json", &c, &err) != 0);
        CHECK_STR_CONTAINS(err.message, "x/config.json");
        CHECK_STR_CONTAINS(err.message, bad[i].needle);
    }
}

/* ---- backend choice per model: a fake GPU backend (a CPU backend named "cuda" that lacks one op, attention_rel)
 * stands in for a GPU backend missing an op a model needs, so the fallback and the refusals are tested without a
 * GPU. (The real CUDA backend runs attention_rel: test_cuda_ops, tests/integration/test_cuda_deberta.sh.) ---- */

static struct nlpd_backend_ops fake_ops;

static int fake_supports(const struct nlpd_backend *be, enum nlpd_op_kind kind)
{
    (void)be;
    return kind >= 0 && kind < NLPD_OP_COUNT && kind != NLPD_OP_ATTENTION_REL;
}

static struct nlpd_backend *fake_gpu(const struct nlpd_backend_opts *o, unsigned long abi, struct nlpd_error *err)
{
    (void)abi;
    struct nlpd_backend_opts c = *o;
    c.dtype = NLPD_DTYPE_F32; /* a GPU gets fp16 for dtype auto; the CPU under the fake computes in fp32 */
    struct nlpd_backend *be = nlpd_backend_cpu_new_opts(&c, err);
    if (!be)
        return NULL;
    fake_ops = *be->ops;
    fake_ops.name = "cuda";
    fake_ops.supports = fake_supports;
    be->ops = &fake_ops;
    snprintf(be->reason, sizeof be->reason, "fake GPU of test_encoder");
    return be;
}

static char log_line[4][512];
static int n_log;

static void capture(const char *line)
{
    if (n_log < 4)
        snprintf(log_line[n_log], sizeof log_line[0], "%s", line);
    n_log++;
}

/* Loads FIX name with kernels backend `backend`; returns 1 loaded, 0 refused (message in err). */
static int load_on(const char *name, const char *backend, struct nlpd_error *err)
{
    struct nlpd_encoder_opts opts = {.backend = backend, .threads = 1};
    char dir[256];
    snprintf(dir, sizeof dir, FIX "%s", name);
    n_log = 0;
    nlpd_kernels_set_logger(capture); /* afresh: a line already said is not repeated to the same logger */
    memset(err, 0, sizeof *err);
    struct nlpd_encoder *enc = nlpd_encoder_load(dir, &opts, err);
    int ok = enc != NULL;
    if (enc) { /* and it runs there */
        int32_t ids[3] = {1, 5, 2}, mask[3] = {1, 1, 1};
        float logits[3 * 16];
        struct nlpd_encoder_ws *ws = nlpd_encoder_ws_new(enc, 1, 3, err);
        struct nlpd_encoder_input in = {1, 3, ids, mask, NULL};
        struct nlpd_encoder_output out = {.logits = nlpd_encoder_num_labels(enc) <= 16 ? logits : NULL};
        CHECK(ws && nlpd_encoder_forward(enc, ws, &in, &out, err) == 0);
        nlpd_encoder_ws_free(ws);
    }
    nlpd_encoder_free(enc);
    return ok;
}

static void test_backend_choice(void)
{
    struct nlpd_error err;
    nlpd_backend_set_gpu_factory(fake_gpu);
    nlpd_kernels_set_logger(capture);
    /* auto: the fake cannot run DeBERTa's relative attention: the CPU backend, and one line saying why */
    CHECK(load_on("deberta-v2-seq-cls", "auto", &err) == 1);
    CHECK(n_log == 1);
    CHECK_STR_CONTAINS(log_line[0], "kernels: backend cpu (auto: cuda cannot run op attention_rel");
    printf("  auto, deberta-v2-seq-cls: %s\n", log_line[0]);
    /* the choice is per model: BERT and a DeBERTa without relative attention stay on the "GPU" */
    CHECK(load_on("bert-seq-cls", "auto", &err) == 1);
    CHECK(n_log == 1);
    CHECK_STR_CONTAINS(log_line[0], "kernels: backend cuda (auto: fake GPU");
    CHECK(load_on("_deberta_variants/absolute-proj", "auto", &err) == 1);
    CHECK(n_log == 1);
    CHECK_STR_CONTAINS(log_line[0], "kernels: backend cuda (auto: fake GPU");
    /* named: a clear refusal, no fallback */
    CHECK(load_on("deberta-v2-token-cls", "cuda", &err) == 0);
    CHECK(n_log == 0);
    CHECK_STR_CONTAINS(err.message, "kernels backend \"cuda\" cannot run op attention_rel");
    printf("  cuda, deberta-v2-token-cls: %s\n", err.message);
    CHECK(load_on("deberta-v2-token-cls", "cpu", &err) == 1);
    /* a borrowed backend is checked by the model itself */
    struct nlpd_backend_opts bo = {.name = "cuda", .threads = 1};
    struct nlpd_backend *be = nlpd_backend_new_opts(&bo, &err);
    CHECK(be != NULL && nlpd_backend_supports(be, NLPD_OP_MATMUL) && !nlpd_backend_supports(be, NLPD_OP_ATTENTION_REL));
    struct nlpd_encoder_opts eo = {.be = be};
    struct nlpd_encoder *enc = nlpd_encoder_load(FIX "deberta-v2-seq-cls", &eo, &err);
    CHECK(enc == NULL);
    CHECK_STR_CONTAINS(err.message, "op attention_rel");
    nlpd_encoder_free(enc);
    nlpd_backend_free(be);
    CHECK(!strcmp(nlpd_op_kind_name(NLPD_OP_ATTENTION_REL), "attention_rel"));
    CHECK(!strcmp(nlpd_op_kind_name(NLPD_OP_COUNT), "unknown"));
    nlpd_kernels_set_logger(NULL);
    nlpd_backend_set_gpu_factory(NULL);
}

/* ---- kernels.dtype "auto" (fp16 on CUDA, fp32 on the CPU), and the encoder's wiring on a backend that keeps
 * activations in half precision: a fake GPU records each op's activation types instead of running it ---- */

static enum nlpd_dtype seen_dtype;
static int fake_calls, fake_fail, fake_half;
struct op_rec {
    enum nlpd_op_kind kind;
    enum nlpd_dtype t0, t1;
};
static struct op_rec recs[256];
static int n_recs;

static int recording_run(struct nlpd_backend *be, const struct nlpd_op *op, struct nlpd_error *err)
{
    (void)be;
    (void)err;
    struct op_rec r = {op->kind, NLPD_DTYPE_F32, NLPD_DTYPE_F32};
    switch (op->kind) {
    case NLPD_OP_MATMUL:
        r.t0 = op->u.matmul.a_type;
        r.t1 = op->u.matmul.c_type;
        break;
    case NLPD_OP_LAYER_NORM: r.t0 = op->u.layer_norm.io_type; break;
    case NLPD_OP_ATTENTION: r.t0 = op->u.attention.io_type; break;
    case NLPD_OP_EMBED: r.t0 = op->u.embed.out_type; break;
    case NLPD_OP_BIAS_ACT: r.t0 = op->u.bias_act.x_type; break;
    default: break;
    }
    if (n_recs < 256)
        recs[n_recs++] = r;
    return 0;
}

static struct nlpd_backend_ops rec_ops;

static struct nlpd_backend *fake_gpu_dtype(const struct nlpd_backend_opts *o, unsigned long abi, struct nlpd_error *err)
{
    fake_calls++;
    seen_dtype = o->dtype;
    if (fake_fail) {
        nlpd_error_set(err, NLPD_ENOTFOUND, 0, "no CUDA device (fake)");
        return NULL;
    }
    struct nlpd_backend_opts c = *o;
    c.dtype = NLPD_DTYPE_F32; /* (the CPU backend under it has no fp16) */
    struct nlpd_backend *be = fake_gpu(&c, abi, err);
    if (be && fake_half) {
        be->act_dtype = o->dtype;
        rec_ops = fake_ops;
        rec_ops.run = recording_run;
        be->ops = &rec_ops;
    }
    return be;
}

static void test_dtype_auto(void)
{
    CHECK(nlpd_dtype_parse("auto") == NLPD_DTYPE_AUTO && !strcmp(nlpd_dtype_name(NLPD_DTYPE_AUTO), "auto"));
    nlpd_backend_set_gpu_factory(fake_gpu_dtype);
    struct nlpd_error err = {0};
    static const struct {
        const char *name;
        enum nlpd_dtype ask, gpu_sees, got;
        int fail, calls;
    } cases[] = {
        {"cuda", NLPD_DTYPE_AUTO, NLPD_DTYPE_F16, NLPD_DTYPE_F16, 0, 1}, /* auto on CUDA: fp16 */
        {"auto", NLPD_DTYPE_AUTO, NLPD_DTYPE_F16, NLPD_DTYPE_F16, 0, 1},
        {"cuda", NLPD_DTYPE_F32, NLPD_DTYPE_F32, NLPD_DTYPE_F32, 0, 1}, /* explicit fp32 on CUDA still works */
        {"cuda", NLPD_DTYPE_BF16, NLPD_DTYPE_BF16, NLPD_DTYPE_BF16, 0, 1},
        {"cpu", NLPD_DTYPE_AUTO, NLPD_DTYPE_F32, NLPD_DTYPE_F32, 0, 0},  /* auto on the CPU: fp32 */
        {"auto", NLPD_DTYPE_AUTO, NLPD_DTYPE_F16, NLPD_DTYPE_F32, 1, 1}, /* no GPU: the CPU in fp32 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fake_calls = 0;
        fake_fail = cases[i].fail;
        seen_dtype = NLPD_DTYPE_INT8;
        struct nlpd_backend_opts o = {.name = cases[i].name, .threads = 1, .dtype = cases[i].ask};
        struct nlpd_backend *be = nlpd_backend_new_opts(&o, &err);
        CHECK(be != NULL);
        CHECK(fake_calls == cases[i].calls);
        if (cases[i].calls)
            CHECK(seen_dtype == cases[i].gpu_sees);
        if (be) {
            CHECK(nlpd_backend_dtype(be) == cases[i].got);
            CHECK(!strstr(nlpd_backend_reason(be), "falls back"));
        }
        nlpd_backend_free(be);
    }
    fake_fail = 0;
    nlpd_backend_set_gpu_factory(NULL);
}

static void test_half_act_wiring(void)
{
    /* workspace: the layers' five parts take half the room in 2-byte elements, the heads' parts do not change */
    struct nlpd_hf_config c = {.hidden_size = 768, .intermediate_size = 3072};
    size_t o32[12], o16[12];
    size_t f32 = nlpd_encoder_ws_floats(&c, 2, NLPD_DTYPE_F32, 4, 128, o32);
    size_t f16 = nlpd_encoder_ws_floats(&c, 2, NLPD_DTYPE_F16, 4, 128, o16);
    size_t T = 4 * 128, layers32 = T * 768 * 6 + T * 3072; /* x, qkv (3), ctx, tmp, ffn */
    CHECK(o32[5] == layers32 && o16[5] == layers32 / 2);
    CHECK(f32 - f16 == layers32 / 2);
    CHECK(o16[1] - o16[0] >= T * 768 / 2 && o16[4] - o16[3] >= T * 768 / 2);
    CHECK(nlpd_encoder_act_type(NLPD_DTYPE_BF16) == NLPD_DTYPE_BF16 &&
          nlpd_encoder_act_type(NLPD_DTYPE_F32) == NLPD_DTYPE_F32 &&
          nlpd_encoder_act_type(NLPD_DTYPE_INT8) == NLPD_DTYPE_F32);

    nlpd_backend_set_gpu_factory(fake_gpu_dtype);
    fake_half = 1;
    static const char *names[] = {"bert-seq-cls", "bert-token-cls", "distilbert-seq-cls"};
    for (int m = 0; m < 3; m++) {
        for (int bf = 0; bf < 2; bf++) {
            const enum nlpd_dtype h = bf ? NLPD_DTYPE_BF16 : NLPD_DTYPE_F16;
            struct nlpd_encoder_opts opts = {.backend = "cuda", .threads = 1, .dtype = bf ? "bf16" : "fp16"};
            char dir[256];
            snprintf(dir, sizeof dir, FIX "%s", names[m]);
            struct nlpd_error err = {0};
            struct nlpd_encoder *enc = nlpd_encoder_load(dir, &opts, &err);
            CHECK(enc != NULL);
            if (!enc)
                continue;
            CHECK(nlpd_encoder_act_dtype(enc) == h);
            struct nlpd_encoder_ws *ws = nlpd_encoder_ws_new(enc, 2, 3, &err);
            int32_t ids[6] = {1, 5, 2, 1, 7, 2};
            struct nlpd_encoder_input in = {2, 3, ids, NULL, NULL};
            struct nlpd_encoder_output out = {0};
            n_recs = 0;
            CHECK(ws && nlpd_encoder_forward(enc, ws, &in, &out, &err) == 0);
            const int L = nlpd_encoder_config(enc)->num_layers, seq = nlpd_encoder_task(enc) == NLPD_HF_TASK_SEQ_CLS;
            /* embed, LN, then per layer 4 products, attention, 2 LNs; then pool + classifier or the classifier */
            CHECK(n_recs == 2 + 7 * L + (seq ? 2 : 1));
            int heads = 0;
            for (int i = 0; i < n_recs; i++) {
                const struct op_rec *r = &recs[i];
                if (i < 2 + 7 * L) { /* the layers: everything in half */
                    CHECK(r->t0 == h);
                    if (r->kind == NLPD_OP_MATMUL)
                        CHECK(r->t1 == h);
                } else { /* heads: a from x in half (pool, token classifier) or the pooled fp32; c fp32 */
                    heads++;
                    CHECK(r->kind == NLPD_OP_MATMUL && r->t1 == NLPD_DTYPE_F32);
                    CHECK(r->t0 == (seq && heads == 2 ? NLPD_DTYPE_F32 : h));
                }
            }
            nlpd_encoder_ws_free(ws);
            nlpd_encoder_free(enc);
        }
    }
    fake_half = 0;
    /* a backend without half activations gets fp32 everywhere */
    struct nlpd_encoder_opts opts = {.backend = "cpu", .threads = 1};
    struct nlpd_error err = {0};
    struct nlpd_encoder *enc = nlpd_encoder_load(FIX "bert-seq-cls", &opts, &err);
    CHECK(enc && nlpd_encoder_act_dtype(enc) == NLPD_DTYPE_F32);
    nlpd_encoder_free(enc);
    nlpd_backend_set_gpu_factory(NULL);
}

int main(void)
{
    /* fp32 goldens: the process default dtype (auto) would take fp16 on a CUDA device, emulated ones included */
    nlpd_kernels_set_defaults(NULL, 0, NLPD_DTYPE_F32);
    RUN(test_parity);
    RUN(test_pooled_and_hidden);
    RUN(test_bad_folders);
    RUN(test_non_finite_logits);
    RUN(test_half_precision);
    RUN(test_config);
    RUN(test_deberta);
    RUN(test_backend_choice);
    RUN(test_dtype_auto);
    RUN(test_half_act_wiring);
    return TEST_REPORT();
}
