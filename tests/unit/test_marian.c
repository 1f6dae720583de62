/* Marian model loading errors and API misuse: every bad config.json / generation_config.json value and a
 * truncated or incomplete model.safetensors is an error naming the file and the key or tensor, never a crash;
 * plus the generation defaults transformers derives from the folder (the max_length 20 quirk, renormalize). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "marian.h"

#define FIXTURE "tests/fixtures/hf-tiny/marian-mt"

static char dir[64];

static void copy_file(const char *name, size_t limit)
{
    char src[256], dst[256];
    snprintf(src, sizeof src, "%s/%s", FIXTURE, name);
    snprintf(dst, sizeof dst, "%s/%s", dir, name);
    FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
    CHECK(in && out);
    char buf[65536];
    size_t n, total = 0;
    while (in && out && (n = fread(buf, 1, sizeof buf, in)) > 0 && total < limit) {
        if (n > limit - total)
            n = limit - total;
        fwrite(buf, 1, n, out);
        total += n;
    }
    if (in)
        fclose(in);
    if (out)
        fclose(out);
}

/* A fresh copy of the fixture; then `key` of `file` set to the JSON value `json` (NULL: key removed). */
static void fixture_with(const char *file, const char *key, const char *json)
{
    copy_file("config.json", (size_t)-1);
    copy_file("generation_config.json", (size_t)-1);
    copy_file("model.safetensors", (size_t)-1);
    if (!file)
        return;
    char path[256];
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

static void expect_error(const char *what, const char *needle)
{
    struct nlpd_error err = {0};
    struct nlpd_marian_opts o = {.threads = 1};
    struct nlpd_marian *m = nlpd_marian_load(dir, &o, &err);
    if (m) {
        fprintf(stderr, "FAIL %s: loaded\n", what);
        nlpd_marian_free(m);
    }
    CHECK(m == NULL);
    CHECK_STR_CONTAINS(err.message, needle);
}

static void bad_configs(void)
{
    fixture_with("config.json", "model_type", "\"bert\"");
    expect_error("model_type", "is not a Marian model");
    fixture_with("config.json", "d_model", "30");
    expect_error("heads", "not a multiple of the attention heads");
    fixture_with("config.json", "d_model", "\"32\"");
    expect_error("type", "\"d_model\" is not an integer");
    fixture_with("config.json", "pad_token_id", "5000");
    expect_error("pad", "out of the decoder vocabulary");
    fixture_with("config.json", "activation_function", "\"mish\"");
    expect_error("activation", "activation_function \"mish\"");
    fixture_with("config.json", "static_position_embeddings", "false");
    expect_error("learned positions", "learned position embeddings");
    fixture_with("config.json", "vocab_size", "1001");
    expect_error("vocab vs tensors", "model.shared.weight");
    fixture_with("generation_config.json", "early_stopping", "\"sometimes\"");
    expect_error("early_stopping", "early_stopping must be");
    fixture_with("generation_config.json", "bad_words_ids", "[[1], []]");
    expect_error("bad_words_ids", "bad_words_ids[1] must be a non-empty list");
    fixture_with("generation_config.json", "bad_words_ids", "[[1, 9999]]");
    expect_error("bad_words_ids id", "bad_words_ids[0][1] is not a token id");
    fixture_with("generation_config.json", "num_beams", "0");
    expect_error("num_beams", "\"num_beams\" = 0 out of range");
    /* a truncated weights file, and a missing layer */
    fixture_with(NULL, NULL, NULL);
    copy_file("model.safetensors", 4000);
    expect_error("truncated", "model.safetensors");
    fixture_with("config.json", "decoder_layers", "3");
    expect_error("missing layer", "model.decoder.layers.2.");
    /* not JSON at all */
    fixture_with(NULL, NULL, NULL);
    char path[256];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    fputs("{\"d_model\": ", f);
    fclose(f);
    expect_error("syntax", "config.json:1:");
}

static void defaults_and_misuse(void)
{
    fixture_with("generation_config.json", "renormalize_logits", "true");
    struct nlpd_error err = {0};
    struct nlpd_marian_opts o = {.threads = 1};
    struct nlpd_marian *m = nlpd_marian_load(dir, &o, &err);
    CHECK(m != NULL);
    if (!m)
        return;
    struct nlpd_gen_params p;
    nlpd_marian_gen_defaults(m, &p);
    /* no max_length in the folder: transformers' default of 20 from the config means 20 new tokens */
    CHECK(p.max_length == 21 && p.num_beams == 1 && p.forced_eos == 0 && p.eos == 0 && p.pad == 999);
    CHECK(p.decoder_start == 999 && p.n_bad == 1 && p.bad[0] == 999 && p.renormalize_logits);
    struct nlpd_marian_ws *ws = nlpd_marian_ws_new(m, &err);
    struct nlpd_gen_output out[1];
    CHECK(nlpd_marian_generate(m, ws, &p, out, &err) == NLPD_EINVAL); /* nothing encoded */
    int32_t ids[70], bad[2] = {5, 1000};
    for (int i = 0; i < 70; i++)
        ids[i] = 5;
    const int32_t *one[1] = {ids};
    size_t len = 70;
    CHECK(nlpd_marian_encode(m, ws, one, &len, 1, NULL, &err) == NLPD_ERANGE); /* over 64 positions */
    len = 0;
    CHECK(nlpd_marian_encode(m, ws, one, &len, 1, NULL, &err) == NLPD_EINVAL);
    one[0] = bad;
    len = 2;
    CHECK(nlpd_marian_encode(m, ws, one, &len, 1, NULL, &err) == NLPD_EINVAL); /* id out of the vocabulary */
    CHECK_STR_CONTAINS(err.message, "out of range");
    /* a good batch after the bad ones */
    one[0] = ids;
    len = 3;
    CHECK(nlpd_marian_encode(m, ws, one, &len, 1, NULL, &err) == 0);
    p.max_length = 6;
    p.num_beams = 65;
    CHECK(nlpd_marian_generate(m, ws, &p, out, &err) == NLPD_ERANGE);
    p.num_beams = 3;
    CHECK(nlpd_marian_generate(m, ws, &p, out, &err) == 0);
    CHECK(out[0].n >= 2 && out[0].n <= 6 && out[0].ids[0] == 999);
    nlpd_gen_output_free(out, 1);
    nlpd_marian_ws_free(ws);
    nlpd_marian_free(m);
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/nlpd-test-marian-%d", (int)getpid());
    char cmd[128];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", dir);
    if (system(cmd) != 0)
        return 1;
    RUN(bad_configs);
    RUN(defaults_and_misuse);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        return 1;
    return TEST_REPORT();
}
