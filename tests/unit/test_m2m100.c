/* M2M100 / NLLB parity with transformers 4.47 goldens (tests/fixtures/hf-tiny/m2m100-mt, nllb-mt): tokenizer ids
 * exact (M2M100Tokenizer; NllbTokenizer with the language token in front and, legacy_behaviour, after </s>, on
 * the source and target side), the decoded texts, and the model's greedy and beam ids exact one by one and in the
 * goldens' padded batches, with the encoder output, first/second-step logits within the fixtures' tolerance
 * (1e-3 + 1e-3 |golden|). */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "m2m100.h"
#include "m2m100_tok.h"
#include "translate/lang_codes.h"

#define M2M  "tests/fixtures/hf-tiny/m2m100-mt"
#define NLLB "tests/fixtures/hf-tiny/nllb-mt"

static json_t *golden(const char *dir)
{
    char p[256];
    snprintf(p, sizeof p, "%s/golden.json", dir);
    json_t *g = json_load_file(p, 0, NULL);
    CHECK(g != NULL);
    return g;
}

static int ids_equal(const int32_t *ids, size_t n, json_t *want)
{
    if (!json_is_array(want) || json_array_size(want) != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (json_integer_value(json_array_get(want, i)) != ids[i])
            return 0;
    return 1;
}

static void print_ids(const char *what, size_t ex, const int32_t *ids, size_t n)
{
    fprintf(stderr, "  %s example %zu:", what, ex);
    for (size_t i = 0; i < n; i++)
        fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, "\n");
}

static void tokenizer_ids(const char *dir)
{
    struct nlpd_error err = {0};
    struct nlpd_m2m_tok *t = nlpd_m2m_tok_load(dir, &err);
    CHECK(t != NULL);
    json_t *g = golden(dir);
    if (!t || !g) {
        fprintf(stderr, "  %s\n", err.message);
        return;
    }
    size_t i;
    json_t *e;
    int32_t *ids = NULL;
    size_t n = 0, cap = 0;
    json_array_foreach(json_object_get(g, "examples"), i, e)
    {
        const char *text = json_string_value(json_object_get(e, "text"));
        int32_t src = nlpd_m2m_tok_lang_id(t, json_string_value(json_object_get(e, "src_lang")));
        int32_t tgt = nlpd_m2m_tok_lang_id(t, json_string_value(json_object_get(e, "tgt_lang")));
        CHECK(tgt == json_integer_value(json_object_get(e, "forced_bos_token_id")));
        CHECK(nlpd_m2m_tok_encode(t, text, strlen(text), src, 0, &ids, &n, &cap, &err) == 0);
        if (!ids_equal(ids, n, json_object_get(e, "input_ids"))) {
            CHECK(!"input ids");
            print_ids("input_ids", i, ids, n);
        }
        json_t *lg = json_object_get(e, "legacy_behaviour_input_ids");
        if (lg) {
            CHECK(nlpd_m2m_tok_encode_placed(t, text, strlen(text), src, 1, 0, &ids, &n, &cap, &err) == 0);
            CHECK(ids_equal(ids, n, lg));
            CHECK(nlpd_m2m_tok_encode_placed(t, text, strlen(text), tgt, 0, 0, &ids, &n, &cap, &err) == 0);
            CHECK(ids_equal(ids, n, json_object_get(e, "target_side_input_ids")));
            CHECK(nlpd_m2m_tok_encode_placed(t, text, strlen(text), tgt, 1, 0, &ids, &n, &cap, &err) == 0);
            CHECK(ids_equal(ids, n, json_object_get(e, "legacy_behaviour_target_side_input_ids")));
        }
        /* the decoded generate output (skip_special_tokens=True) */
        json_t *out = json_object_get(e, "generate_output_ids");
        size_t k, m = json_array_size(out);
        int32_t *o = malloc((m ? m : 1) * sizeof *o);
        json_t *v;
        json_array_foreach(out, k, v) o[k] = (int32_t)json_integer_value(v);
        char *txt = NULL;
        CHECK(nlpd_m2m_tok_decode(t, o, m, 1, &txt, NULL, &err) == 0);
        const char *want = json_string_value(json_object_get(e, "generate_decoded_text"));
        if (!txt || strcmp(txt, want)) {
            CHECK(!"decoded text");
            fprintf(stderr, "  example %zu: \"%s\" != \"%s\"\n", i, txt ? txt : "(null)", want);
        }
        free(txt);
        free(o);
    }
    /* truncation keeps the language token and </s> */
    CHECK(nlpd_m2m_tok_encode(t, "Hello world, hello world", 24, 5, 4, &ids, &n, &cap, &err) == 0);
    CHECK(n == 4 && ids[0] == 5 && ids[3] == nlpd_m2m_tok_eos(t));
    free(ids);
    json_decref(g);
    nlpd_m2m_tok_free(t);
}

static void m2m100_tokenizer(void)
{
    tokenizer_ids(M2M);
}

static void nllb_tokenizer(void)
{
    tokenizer_ids(NLLB);
}

/* An NLLB folder with tokenizer.json and no sentencepiece.bpe.model: the same ids and texts */
static void nllb_fast_tokenizer(void)
{
    char dir[64], cmd[512];
    snprintf(dir, sizeof dir, "/tmp/nlpd-test-m2m-%d", (int)getpid());
    snprintf(cmd, sizeof cmd,
             "mkdir -p %s && cd " NLLB " && cp tokenizer.json tokenizer_config.json "
             "special_tokens_map.json added_tokens.json golden.json %s/",
             dir, dir);
    CHECK(system(cmd) == 0);
    tokenizer_ids(dir);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
}

static int32_t *json_ids(json_t *a, size_t *n)
{
    *n = json_array_size(a);
    int32_t *o = malloc((*n ? *n : 1) * sizeof *o);
    for (size_t i = 0; i < *n; i++)
        o[i] = (int32_t)json_integer_value(json_array_get(a, i));
    return o;
}

/* |a - b| <= 1e-3 + 1e-3 |b|: the fixtures' tolerance (measured float32 effect at most 0.03 of it) */
static int close_to(float a, double b)
{
    return fabs((double)a - b) <= 1e-3 + 1e-3 * fabs(b);
}

/* Every generation group of golden.json as one batch (greedy and beam), then example 0 alone. */
static void model_ids(const char *dir)
{
    struct nlpd_error err = {0};
    struct nlpd_m2m *m = nlpd_m2m_load(dir, NULL, &err);
    CHECK(m != NULL);
    json_t *g = golden(dir);
    if (!m || !g) {
        fprintf(stderr, "  %s\n", err.message);
        return;
    }
    struct nlpd_m2m_ws *ws = nlpd_m2m_ws_new(m, &err);
    json_t *ex = json_object_get(g, "examples");
    const int H = nlpd_m2m_config(m)->d_model;
    size_t gi;
    json_t *grp;
    int groups = 0, rows = 0;
    json_array_foreach(json_object_get(g, "generation_groups"), gi, grp)
    {
        json_t *idx = json_object_get(grp, "example_indices");
        int n = (int)json_array_size(idx);
        const int32_t **ids = calloc((size_t)n, sizeof *ids);
        size_t *lens = calloc((size_t)n, sizeof *lens), S = 0;
        for (int i = 0; i < n; i++) {
            json_t *e = json_array_get(ex, (size_t)json_integer_value(json_array_get(idx, (size_t)i)));
            ids[i] = json_ids(json_object_get(e, "input_ids"), &lens[i]);
            S = lens[i] > S ? lens[i] : S;
        }
        float *hidden = malloc((size_t)n * S * H * sizeof *hidden);
        for (int beam = 0; beam < 2; beam++) {
            CHECK(nlpd_m2m_encode(m, ws, ids, lens, n, hidden, &err) == 0);
            json_t *kw = json_object_get(grp, beam ? "beam_generate_kwargs" : "generate_kwargs");
            struct nlpd_gen_params p;
            nlpd_m2m_gen_defaults(m, &p);
            p.max_length = (int)json_integer_value(json_object_get(kw, "max_length"));
            p.num_beams = (int)json_integer_value(json_object_get(kw, "num_beams"));
            p.has_forced_bos = 1;
            p.forced_bos = (int32_t)json_integer_value(json_object_get(kw, "forced_bos_token_id"));
            struct nlpd_gen_output *out = calloc((size_t)n, sizeof *out);
            CHECK(nlpd_m2m_generate(m, ws, &p, out, &err) == 0);
            for (int i = 0; i < n; i++) {
                json_t *e = json_array_get(ex, (size_t)json_integer_value(json_array_get(idx, (size_t)i)));
                if (!ids_equal(out[i].ids, out[i].n,
                               json_object_get(e, beam ? "beam_output_ids" : "generate_output_ids"))) {
                    CHECK(!"generated ids");
                    print_ids(beam ? "beam" : "greedy", (size_t)i, out[i].ids, out[i].n);
                }
                if (beam)
                    CHECK(close_to(out[i].score, json_real_value(json_object_get(e, "beam_sequence_score"))));
                json_t *want = json_object_get(e, "encoder_last_hidden_state");
                int bad = 0;
                for (size_t s = 0; s < lens[i]; s++)
                    for (int d = 0; d < H; d++)
                        bad += !close_to(hidden[((size_t)i * S + s) * H + d],
                                         json_real_value(json_array_get(json_array_get(want, s), (size_t)d)));
                CHECK(bad == 0);
                rows++;
            }
            nlpd_gen_output_free(out, n);
            free(out);
        }
        for (int i = 0; i < n; i++)
            free((void *)ids[i]);
        free(ids);
        free(lens);
        free(hidden);
        groups++;
    }
    CHECK(groups >= 2 && rows == 2 * (int)json_array_size(ex));
    nlpd_m2m_ws_free(ws);
    nlpd_m2m_free(m);
    json_decref(g);
}

static void m2m100_model(void)
{
    model_ids(M2M);
}

static void nllb_model(void)
{
    model_ids(NLLB);
}

/* A copy of FIXTURE in dir with `key` of `file` set to the JSON value `json` (NULL: key removed). */
static void copy_with(const char *dir, const char *fixture, const char *file, const char *key, const char *json)
{
    char cmd[512], path[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s && mkdir -p %s && cp %s/* %s/", dir, dir, fixture, dir);
    CHECK(system(cmd) == 0);
    if (!file)
        return;
    snprintf(path, sizeof path, "%s/%s", dir, file);
    json_t *root = json_load_file(path, 0, NULL);
    CHECK(root != NULL);
    if (json)
        json_object_set_new(root, key, json_loads(json, JSON_DECODE_ANY, NULL));
    else
        json_object_del(root, key);
    json_dump_file(root, path, 0);
    json_decref(root);
}

/* Bad folders and misuse: an error naming the file and the problem, never a crash. */
static void bad_inputs(void)
{
    char dir[64], cmd[256];
    struct nlpd_error err = {0};
    snprintf(dir, sizeof dir, "/tmp/nlpd-test-m2m-bad-%d", (int)getpid());
    copy_with(dir, M2M, "config.json", "model_type", "\"marian\"");
    CHECK(nlpd_m2m_load(dir, NULL, &err) == NULL);
    CHECK_STR_CONTAINS(err.message, "is not an M2M100 / NLLB model");
    copy_with(dir, M2M, "config.json", "encoder_attention_heads", "5");
    CHECK(nlpd_m2m_load(dir, NULL, &err) == NULL);
    CHECK_STR_CONTAINS(err.message, "not a multiple of the attention heads");
    copy_with(dir, M2M, "config.json", "activation_function", "\"mish\"");
    CHECK(nlpd_m2m_load(dir, NULL, &err) == NULL);
    CHECK_STR_CONTAINS(err.message, "activation_function \"mish\" is not supported");
    copy_with(dir, M2M, "config.json", "decoder_layers", "3"); /* a layer the checkpoint does not have */
    CHECK(nlpd_m2m_load(dir, NULL, &err) == NULL);
    CHECK_STR_CONTAINS(err.message, "model.decoder.layers.2");
    copy_with(dir, M2M, "generation_config.json", "early_stopping", "\"sometimes\"");
    CHECK(nlpd_m2m_load(dir, NULL, &err) == NULL);
    CHECK_STR_CONTAINS(err.message, "early_stopping");
    /* tie_word_embeddings false without lm_head.weight: loads with the shared embeddings as the head, as
     * marian.c does (transformers would leave that head randomly initialised) */
    copy_with(dir, M2M, "config.json", "tie_word_embeddings", "false");
    struct nlpd_m2m *m = nlpd_m2m_load(dir, NULL, &err);
    CHECK(m != NULL);
    nlpd_m2m_free(m);
    /* tokenizer: no vocab.json for an M2M100Tokenizer, no sentencepiece model, an unknown language_codes */
    copy_with(dir, M2M, NULL, NULL, NULL);
    snprintf(cmd, sizeof cmd, "rm %s/vocab.json", dir);
    CHECK(system(cmd) == 0);
    CHECK(nlpd_m2m_tok_load(dir, &err) == NULL);
    CHECK_STR_CONTAINS(err.message, "vocab.json");
    copy_with(dir, NLLB, NULL, NULL, NULL);
    snprintf(cmd, sizeof cmd, "rm %s/sentencepiece.bpe.model %s/tokenizer.json", dir, dir);
    CHECK(system(cmd) == 0);
    CHECK(nlpd_m2m_tok_load(dir, &err) == NULL);
    CHECK_STR_CONTAINS(err.message, "sentencepiece.bpe.model");
    copy_with(dir, M2M, "tokenizer_config.json", "language_codes", "\"m2m200\"");
    CHECK(nlpd_m2m_tok_load(dir, &err) == NULL);
    CHECK_STR_CONTAINS(err.message, "language_codes \"m2m200\"");
    /* misuse: ids outside the vocabulary, generate before encode, an empty sequence, too long a sequence */
    struct nlpd_m2m_tok *t = nlpd_m2m_tok_load(M2M, &err);
    m = nlpd_m2m_load(M2M, NULL, &err);
    CHECK(t && m);
    if (t && m) {
        int32_t bad_ids[2] = {5, 999999};
        char *txt = NULL;
        CHECK(nlpd_m2m_tok_decode(t, bad_ids, 2, 1, &txt, NULL, &err) == NLPD_ERANGE);
        CHECK(nlpd_m2m_tok_lang_id(t, "xx") < 0 && nlpd_m2m_tok_lang_id(t, "__de__") == 1017);
        int32_t *ids = NULL;
        size_t n = 0, cap = 0;
        CHECK(nlpd_m2m_tok_encode(t, "", 0, 1017, 0, &ids, &n, &cap, &err) == 0 && n == 2 && ids[1] == 2);
        free(ids);
        struct nlpd_m2m_ws *ws = nlpd_m2m_ws_new(m, &err);
        struct nlpd_gen_params p;
        struct nlpd_gen_output out[1];
        nlpd_m2m_gen_defaults(m, &p);
        CHECK(nlpd_m2m_generate(m, ws, &p, out, &err) == NLPD_EINVAL);
        const int32_t one[1] = {2}, *seqs[1] = {one};
        size_t lens[1] = {0};
        CHECK(nlpd_m2m_encode(m, ws, seqs, lens, 1, NULL, &err) == NLPD_EINVAL);
        int32_t *longer = calloc(200, sizeof *longer);
        const int32_t *lseq[1] = {longer};
        lens[0] = 200; /* over max_position_embeddings 128 */
        CHECK(nlpd_m2m_encode(m, ws, lseq, lens, 1, NULL, &err) == NLPD_ERANGE);
        free(longer);
        nlpd_m2m_ws_free(ws);
    }
    nlpd_m2m_tok_free(t);
    nlpd_m2m_free(m);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
}

/* The built-in language tables: every FLORES-200 code they give is a language of the NLLB tokenizer, ISO 639-1 /
 * 639-3 / lid.176 codes map as documented, and every M2M100 code maps to itself. */
static void language_tables(void)
{
    struct nlpd_error err = {0};
    struct nlpd_m2m_tok *nllb = nlpd_m2m_tok_load(NLLB, &err), *m2m = nlpd_m2m_tok_load(M2M, &err);
    CHECK(nllb && m2m);
    if (!nllb || !m2m)
        return;
    size_t nllb_ok = 0, m2m_ok = 0;
    for (size_t i = 0; i < nlpd_lang_lid176_count(); i++) {
        const char *c = nlpd_lang_lid176(i), *f = nlpd_lang_flores200(c);
        if (f) {
            CHECK(nlpd_m2m_tok_lang_id(nllb, f) >= 0);
            nllb_ok++;
        }
        m2m_ok += nlpd_m2m_tok_lang_id(m2m, nlpd_lang_m2m100(c)) >= 0;
    }
    CHECK(nllb_ok == 116 && m2m_ok == 92); /* of lid.176's 176 (NLLB-200, M2M100); the rest are logged at load */
    CHECK(!strcmp(nlpd_lang_flores200("de"), "deu_Latn") && !strcmp(nlpd_lang_flores200("deu"), "deu_Latn"));
    CHECK(!strcmp(nlpd_lang_flores200("zh"), "zho_Hans") && !strcmp(nlpd_lang_flores200("ara"), "arb_Arab"));
    CHECK(!strcmp(nlpd_lang_flores200("fa"), "pes_Arab") && !strcmp(nlpd_lang_flores200("ger"), "deu_Latn"));
    CHECK(nlpd_lang_flores200("la") == NULL && nlpd_lang_flores200("xyz") == NULL);
    CHECK(!strcmp(nlpd_lang_m2m100("nb"), "no") && !strcmp(nlpd_lang_m2m100("fil"), "tl"));
    CHECK(!strcmp(nlpd_lang_m2m100("deu"), "de") && !strcmp(nlpd_lang_m2m100("xx"), "xx"));
    for (size_t i = 0; i < nlpd_m2m_tok_lang_count(m2m); i++) {
        const char *c = nlpd_m2m_tok_lang_code(m2m, i);
        CHECK(!strcmp(nlpd_lang_m2m100(c), c) || nlpd_m2m_tok_lang_id(m2m, nlpd_lang_m2m100(c)) >= 0);
    }
    nlpd_m2m_tok_free(nllb);
    nlpd_m2m_tok_free(m2m);
}

int main(void)
{
    RUN(m2m100_tokenizer);
    RUN(nllb_tokenizer);
    RUN(nllb_fast_tokenizer);
    RUN(m2m100_model);
    RUN(nllb_model);
    RUN(bad_inputs);
    RUN(language_tables);
    return TEST_REPORT();
}
