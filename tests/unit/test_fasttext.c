/* Unit tests of the fastText runtime: models built byte by byte here (dense, hs, ova, PQ with qnorm, pruned
 * dictionary, quantised output), hand-computed predictions, every truncation and random byte flips, header
 * checks, and, when the `fasttext` tool is installed, parity with predict-prob on crafted and trained models. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fasttext.h"
#include "harness.h"

/* ---------------------------------------------------------------- model builder */

struct bb {
    uint8_t *p;
    size_t len, cap;
};

static void put(struct bb *b, const void *src, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        if (!b->p)
            abort();
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}
static void put_i32(struct bb *b, int32_t v)
{
    put(b, &v, 4);
}
static void put_i64(struct bb *b, int64_t v)
{
    put(b, &v, 8);
}
static void put_u8(struct bb *b, uint8_t v)
{
    put(b, &v, 1);
}
static void put_f32(struct bb *b, float v)
{
    put(b, &v, 4);
}

struct spec {
    int loss, dim, quant, qnorm, qout, pruned, minn, maxn, word_ngrams, bucket, dsub;
};

static const char *const tiny_words[] = {"</s>", "good", "bad", "h\xc3\xa9llo"};
static const char *const tiny_labels[] = {"__label__pos", "__label__neg", "__label__mid"};
enum { TINY_NW = 4, TINY_NL = 3, TINY_NPRUNE = 3 };

static float wval(int64_t r, int64_t c)
{
    return (float)sin((double)(r * 7 + c * 3 + 1)) * 0.8f;
}

static void put_pq(struct bb *b, int dim, int dsub, int seed)
{
    int nsubq = (dim + dsub - 1) / dsub;
    put_i32(b, dim);
    put_i32(b, nsubq);
    put_i32(b, dsub);
    put_i32(b, dim - (nsubq - 1) * dsub);
    for (int i = 0; i < dim * 256; i++)
        put_f32(b, (float)cos((double)(i + seed)) * (dim == 1 ? 1.5f : 0.7f));
}

static void put_matrix(struct bb *b, const struct spec *s, int quant, int64_t rows, int dsub, int seed)
{
    if (!quant) {
        put_i64(b, rows);
        put_i64(b, s->dim);
        for (int64_t r = 0; r < rows; r++)
            for (int c = 0; c < s->dim; c++)
                put_f32(b, wval(r + seed, c));
        return;
    }
    int nsubq = (s->dim + dsub - 1) / dsub;
    put_u8(b, (uint8_t)s->qnorm);
    put_i64(b, rows);
    put_i64(b, s->dim);
    put_i32(b, (int32_t)(rows * nsubq));
    for (int64_t i = 0; i < rows * nsubq; i++)
        put_u8(b, (uint8_t)((i * 37 + seed) & 255));
    put_pq(b, s->dim, dsub, seed);
    if (s->qnorm) {
        for (int64_t i = 0; i < rows; i++)
            put_u8(b, (uint8_t)((i * 11 + seed) & 255));
        put_pq(b, 1, 1, seed + 5);
    }
}

static struct bb build(const struct spec *s)
{
    struct bb b = {0};
    put_i32(&b, 793712314);
    put_i32(&b, 12);
    int32_t args[12] = {s->dim, 5, 5, 1, 5, s->word_ngrams, s->loss, 3, s->bucket, s->minn, s->maxn, 100};
    for (int i = 0; i < 12; i++)
        put_i32(&b, args[i]);
    double t = 1e-4;
    put(&b, &t, 8);
    put_i32(&b, TINY_NW + TINY_NL);
    put_i32(&b, TINY_NW);
    put_i32(&b, TINY_NL);
    put_i64(&b, 1000);
    put_i64(&b, s->pruned ? TINY_NPRUNE : -1);
    for (int i = 0; i < TINY_NW; i++) {
        put(&b, tiny_words[i], strlen(tiny_words[i]) + 1);
        put_i64(&b, 100 - i);
        put_u8(&b, 0);
    }
    for (int i = 0; i < TINY_NL; i++) {
        put(&b, tiny_labels[i], strlen(tiny_labels[i]) + 1);
        put_i64(&b, 30 - 10 * i);
        put_u8(&b, 1);
    }
    if (s->pruned) {
        int32_t pairs[TINY_NPRUNE][2] = {{1, 0}, {5, 2}, {7, 1}};
        for (int i = 0; i < TINY_NPRUNE; i++) {
            put_i32(&b, pairs[i][0]);
            put_i32(&b, pairs[i][1]);
        }
    }
    put_u8(&b, (uint8_t)s->quant);
    put_matrix(&b, s, s->quant, TINY_NW + (s->pruned ? TINY_NPRUNE : s->bucket), s->dsub ? s->dsub : 2, 0);
    put_u8(&b, (uint8_t)s->qout);
    put_matrix(&b, s, s->quant && s->qout, TINY_NL, 2, 3);
    return b;
}

static const struct spec specs[] = {
    {NLPD_FT_LOSS_SOFTMAX, 4, 0, 0, 0, 0, 2, 3, 2, 8, 2}, {NLPD_FT_LOSS_HS, 3, 0, 0, 0, 0, 0, 0, 1, 0, 2},
    {NLPD_FT_LOSS_OVA, 4, 0, 0, 0, 0, 1, 2, 3, 8, 2},     {NLPD_FT_LOSS_NS, 4, 0, 0, 0, 0, 2, 3, 2, 8, 2},
    {NLPD_FT_LOSS_SOFTMAX, 5, 1, 1, 1, 0, 2, 3, 2, 8, 2}, {NLPD_FT_LOSS_HS, 5, 1, 1, 0, 1, 2, 3, 2, 8, 3},
    {NLPD_FT_LOSS_OVA, 6, 1, 0, 1, 1, 2, 4, 2, 8, 4},
};
#define NSPECS ((int)(sizeof specs / sizeof specs[0]))

static const char *const texts[] = {
    "good",
    "bad bad",
    "h\xc3\xa9llo good world",
    "",
    "   ",
    "__label__pos good",
    "unknown w\xc3\xb6rds here",
    "a </s> b",
    "\t\xe6\x97\xa5\xe6\x9c\xac\t",
    "\x01\x7f\xff\xc3",
};
#define NTEXTS ((int)(sizeof texts / sizeof texts[0]))

static void predict_all(const struct nlpd_ft_model *m)
{
    struct nlpd_ft_scratch *s = nlpd_ft_scratch_new(m);
    CHECK(s != NULL);
    if (!s)
        return;
    struct nlpd_ft_pred out[8];
    for (int i = 0; i < NTEXTS; i++) {
        int n = nlpd_ft_predict(m, s, texts[i], strlen(texts[i]), 8, 0.0f, out);
        CHECK(n >= 0 && n <= 8);
        for (int j = 0; j < n; j++)
            CHECK(nlpd_ft_label(m, out[j].label) != NULL);
    }
    nlpd_ft_scratch_free(s);
}

/* ---------------------------------------------------------------- tests */

static void test_load_all_specs(void)
{
    for (int i = 0; i < NSPECS; i++) {
        struct bb b = build(&specs[i]);
        struct nlpd_error err = {0};
        struct nlpd_ft_model *m = nlpd_ft_load_mem(b.p, b.len, "tiny", &err);
        if (!m)
            fprintf(stderr, "spec %d: %s\n", i, err.message);
        CHECK(m != NULL);
        if (m) {
            struct nlpd_ft_info info;
            nlpd_ft_get_info(m, &info);
            CHECK(info.dim == specs[i].dim);
            CHECK(info.nwords == TINY_NW && info.nlabels == TINY_NL);
            CHECK(info.loss == specs[i].loss);
            CHECK(info.quant_input == specs[i].quant);
            CHECK(info.quant_output == (specs[i].quant && specs[i].qout));
            CHECK(info.pruned == specs[i].pruned);
            CHECK(!strcmp(nlpd_ft_label(m, 1), "__label__neg"));
            CHECK(nlpd_ft_label(m, 3) == NULL && nlpd_ft_label(m, -1) == NULL);
            predict_all(m);
            nlpd_ft_free(m);
        }
        free(b.p);
    }
}

/* dim 2 softmax by hand: "good" -> row (1,0), EOS -> (0,0); labels pos=(1,0), neg=(0,1), mid=(0,0). */
static void test_softmax_by_hand(void)
{
    struct bb b = {0};
    put_i32(&b, 793712314);
    put_i32(&b, 12);
    int32_t args[12] = {2, 5, 5, 1, 5, 1, NLPD_FT_LOSS_SOFTMAX, 3, 0, 0, 0, 100};
    for (int i = 0; i < 12; i++)
        put_i32(&b, args[i]);
    double t = 1e-4;
    put(&b, &t, 8);
    put_i32(&b, 5);
    put_i32(&b, 2);
    put_i32(&b, 3);
    put_i64(&b, 10);
    put_i64(&b, -1);
    const char *ent[5] = {"</s>", "good", "__label__pos", "__label__neg", "__label__mid"};
    for (int i = 0; i < 5; i++) {
        put(&b, ent[i], strlen(ent[i]) + 1);
        put_i64(&b, 5);
        put_u8(&b, i >= 2);
    }
    put_u8(&b, 0);
    put_i64(&b, 2);
    put_i64(&b, 2);
    float in[4] = {0, 0, 1, 0};
    put(&b, in, sizeof in);
    put_u8(&b, 0);
    put_i64(&b, 3);
    put_i64(&b, 2);
    float out[6] = {1, 0, 0, 1, 0, 0};
    put(&b, out, sizeof out);

    struct nlpd_error err = {0};
    struct nlpd_ft_model *m = nlpd_ft_load_mem(b.p, b.len, "hand", &err);
    CHECK(m != NULL);
    if (!m) {
        fprintf(stderr, "%s\n", err.message);
        free(b.p);
        return;
    }
    struct nlpd_ft_scratch *s = nlpd_ft_scratch_new(m);
    struct nlpd_ft_pred p[3];
    int n = nlpd_ft_predict(m, s, "good", 4, 3, 0.0f, p);
    CHECK(n == 3);
    double e = exp(0.5), z = e + 2.0;
    CHECK(p[0].label == 0 && fabs(p[0].prob - (e / z + 1e-5)) < 1e-6);
    /* neg and mid tie (logit 0): the heap order puts the higher label id first, as fastText does */
    CHECK(p[1].label == 2 && p[2].label == 1);
    CHECK(fabs(p[1].prob - (1.0 / z + 1e-5)) < 1e-6);
    /* "__label__x" tokens are labels, not words: only EOS remains, all logits 0 */
    n = nlpd_ft_predict(m, s, "__label__x", 10, 1, 0.0f, p);
    CHECK(n == 1 && fabs(p[0].prob - (1.0 / 3 + 1e-5)) < 1e-6);
    /* threshold drops labels below it; k larger than the label count is capped */
    n = nlpd_ft_predict(m, s, "good good", 9, 10, 0.4f, p);
    CHECK(n == 1 && p[0].label == 0);
    /* a literal </s> ends the text like a newline in fastText; _ex reports where */
    size_t used = 99;
    n = nlpd_ft_predict_ex(m, s, "x </s> good", 11, 0, 1, 0.0f, p, &used);
    CHECK(n == 1 && used == 7 && fabs(p[0].prob - (1.0 / 3 + 1e-5)) < 1e-6);
    n = nlpd_ft_predict_ex(m, s, "good", 4, 0, 1, 0.0f, p, &used);
    CHECK(n == 1 && used == 0);
    /* without EOS and without known words there is no input: no prediction */
    n = nlpd_ft_predict_ex(m, s, "zzz", 3, NLPD_FT_NO_EOS, 1, 0.0f, p, NULL);
    CHECK(n == 0);
    CHECK(nlpd_ft_predict(m, s, "good", 4, 0, 0.0f, p) == NLPD_EINVAL);
    /* growth of the scratch buffers: a long text, then a short one */
    size_t big = 200000;
    char *txt = malloc(big);
    for (size_t i = 0; i < big; i++)
        txt[i] = i % 5 == 4 ? ' ' : "good"[i % 5];
    n = nlpd_ft_predict(m, s, txt, big, 1, 0.0f, p);
    CHECK(n == 1 && p[0].label == 0);
    n = nlpd_ft_predict(m, s, "good", 4, 1, 0.0f, p);
    CHECK(n == 1 && fabs(p[0].prob - (e / z + 1e-5)) < 1e-6);
    free(txt);
    nlpd_ft_scratch_free(s);
    nlpd_ft_free(m);
    free(b.p);
}

static void test_every_prefix(void)
{
    for (int i = 0; i < NSPECS; i++) {
        struct bb b = build(&specs[i]);
        int bad_msg = 0;
        for (size_t len = 0; len < b.len; len++) {
            /* a fresh copy of exactly len bytes so ASan catches any over-read */
            uint8_t *cp = malloc(len ? len : 1);
            memcpy(cp, b.p, len);
            struct nlpd_error err = {0};
            struct nlpd_ft_model *m = nlpd_ft_load_mem(cp, len, "tiny.bin", &err);
            CHECK(m == NULL);
            if (m)
                nlpd_ft_free(m);
            if (err.code != NLPD_EFORMAT || !strstr(err.message, "tiny.bin: truncated in ")) {
                if (!bad_msg++)
                    fprintf(stderr, "spec %d prefix %zu: code %d '%s'\n", i, len, err.code, err.message);
            }
            free(cp);
        }
        CHECK(bad_msg == 0);
        /* trailing garbage */
        uint8_t *cp = malloc(b.len + 1);
        memcpy(cp, b.p, b.len);
        cp[b.len] = 0;
        struct nlpd_error err = {0};
        CHECK(nlpd_ft_load_mem(cp, b.len + 1, "tiny.bin", &err) == NULL);
        CHECK_STR_CONTAINS(err.message, "trailing garbage");
        free(cp);
        free(b.p);
    }
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void test_byte_flips(void)
{
    int loaded = 0, rejected = 0;
    for (int i = 0; i < NSPECS; i++) {
        struct bb b = build(&specs[i]);
        uint8_t *cp = malloc(b.len);
        for (int iter = 0; iter < 3000; iter++) {
            memcpy(cp, b.p, b.len);
            int flips = 1 + (int)(rng() % 4);
            for (int f = 0; f < flips; f++) {
                /* bias towards the header and dictionary, where the interesting fields are */
                size_t pos = rng() % 2 ? rng() % (b.len < 200 ? b.len : 200) : rng() % b.len;
                cp[pos] = rng() % 3 ? (uint8_t)(cp[pos] ^ (1u << (rng() % 8))) : (uint8_t)rng();
            }
            struct nlpd_error err = {0};
            struct nlpd_ft_model *m = nlpd_ft_load_mem(cp, b.len, "flip", &err);
            if (m) {
                loaded++;
                predict_all(m);
                nlpd_ft_free(m);
            } else {
                rejected++;
                CHECK(err.code != 0 && err.message[0]);
            }
        }
        free(cp);
        free(b.p);
    }
    CHECK(loaded > 0 && rejected > 0);
}

/* Patches an int32 at offset off of a fresh tiny model and expects load to fail with msg. */
static void expect_reject_i32(const struct spec *sp, size_t off, int32_t v, const char *msg)
{
    struct bb b = build(sp);
    memcpy(b.p + off, &v, 4);
    struct nlpd_error err = {0};
    struct nlpd_ft_model *m = nlpd_ft_load_mem(b.p, b.len, "hdr.bin", &err);
    CHECK(m == NULL);
    nlpd_ft_free(m);
    CHECK_STR_CONTAINS(err.message, msg);
    CHECK(!strncmp(err.message, "hdr.bin: ", 9));
    free(b.p);
}

static void test_header_checks(void)
{
    const struct spec *sp = &specs[0];
    /* offsets: magic 0, version 4, args 8.. (dim 8, wordNgrams 28, loss 32, model 36, bucket 40, minn 44,
     * maxn 48), t 56, size 64, nwords 68, nlabels 72, ntokens 76, pruneidx 84, entries 92 */
    expect_reject_i32(sp, 0, 12345, "magic");
    expect_reject_i32(sp, 4, 13, "version");
    expect_reject_i32(sp, 8, 0, "dim");
    expect_reject_i32(sp, 8, 100000, "dim");
    expect_reject_i32(sp, 32, 7, "loss");
    expect_reject_i32(sp, 36, 1, "supervised");
    expect_reject_i32(sp, 40, -1, "bucket");
    expect_reject_i32(sp, 40, 0, "bucket is 0");
    expect_reject_i32(sp, 44, 5, "minn");
    expect_reject_i32(sp, 64, 8, "dictionary counts");
    expect_reject_i32(sp, 72, 0, "label");
    expect_reject_i32(sp, 68, 5, "dictionary counts");
    expect_reject_i32(sp, 64, 0x7fffffff, "dictionary counts");
    /* nwords 5 and size 8 with the same 7 entries: entry 4 is a label where a word is expected */
    {
        struct bb b = build(sp);
        int32_t v = 8;
        memcpy(b.p + 64, &v, 4);
        v = 5;
        memcpy(b.p + 68, &v, 4);
        struct nlpd_error err = {0};
        CHECK(nlpd_ft_load_mem(b.p, b.len, "hdr.bin", &err) == NULL);
        CHECK_STR_CONTAINS(err.message, "type 1");
        free(b.p);
    }
    /* a lying matrix header: rows huge, must be rejected without allocating */
    {
        struct bb b = build(sp);
        size_t off = b.len;
        /* find the output matrix header: 8+8 bytes before its 3*dim floats */
        off = b.len - (size_t)TINY_NL * sp->dim * 4 - 16;
        int64_t rows = INT64_C(1) << 40;
        memcpy(b.p + off, &rows, 8);
        struct nlpd_error err = {0};
        CHECK(nlpd_ft_load_mem(b.p, b.len, "hdr.bin", &err) == NULL);
        CHECK_STR_CONTAINS(err.message, "rows");
        rows = 2;
        memcpy(b.p + off, &rows, 8);
        CHECK(nlpd_ft_load_mem(b.p, b.len, "hdr.bin", &err) == NULL);
        free(b.p);
    }
    /* pruned dictionary with a dense matrix is refused like fastText does */
    {
        struct spec s = *sp;
        s.pruned = 1;
        struct bb b = build(&s);
        struct nlpd_error err = {0};
        CHECK(nlpd_ft_load_mem(b.p, b.len, "hdr.bin", &err) == NULL);
        CHECK_STR_CONTAINS(err.message, "pruned");
        free(b.p);
    }
    /* PQ geometry mismatch: dsub field changed in the input quantiser */
    {
        struct spec s = specs[4];
        struct bb b = build(&s);
        /* input matrix starts after the dictionary; find the PQ header by its known values */
        int32_t hdr[4] = {5, 3, 2, 1};
        uint8_t *pos = memmem(b.p, b.len, hdr, sizeof hdr);
        CHECK(pos != NULL);
        if (pos) {
            int32_t v = 4;
            memcpy(pos + 4, &v, 4);
            struct nlpd_error err = {0};
            CHECK(nlpd_ft_load_mem(b.p, b.len, "hdr.bin", &err) == NULL);
            CHECK_STR_CONTAINS(err.message, "geometry");
        }
        free(b.p);
    }
    struct nlpd_error err = {0};
    CHECK(nlpd_ft_load("/nonexistent/model.bin", &err) == NULL);
    CHECK(err.code == NLPD_ENOTFOUND);
    CHECK_STR_CONTAINS(err.message, "/nonexistent/model.bin");
}

/* ---------------------------------------------------------------- parity with the fasttext tool */

static int have_fasttext(void)
{
    return system("command -v fasttext >/dev/null 2>&1") == 0;
}

/* Runs predict-prob on lines and compares with nlpd_ft_predict line by line (k labels). */
static int compare_with_tool(const char *model, const char *linesf, const char *const *lines, int nlines, int k)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "fasttext predict-prob '%s' '%s' %d 2>/dev/null", model, linesf, k);
    FILE *f = popen(cmd, "r");
    if (!f)
        return -1;
    struct nlpd_error err = {0};
    struct nlpd_ft_model *m = nlpd_ft_load(model, &err);
    if (!m) {
        fprintf(stderr, "%s\n", err.message);
        pclose(f);
        return -1;
    }
    struct nlpd_ft_scratch *s = nlpd_ft_scratch_new(m);
    struct nlpd_ft_pred *p = malloc(sizeof *p * (size_t)k);
    char buf[65536];
    int bad = 0;
    for (int i = 0; i < nlines; i++) {
        if (!fgets(buf, sizeof buf, f)) {
            bad++;
            break;
        }
        int n = nlpd_ft_predict(m, s, lines[i], strlen(lines[i]), k, 0.0f, p);
        char *save = NULL, *tok = strtok_r(buf, " \n", &save);
        int j = 0;
        for (; tok; j++) {
            char *prob = strtok_r(NULL, " \n", &save);
            if (j >= n || !prob || strcmp(tok, nlpd_ft_label(m, p[j].label)) || fabs(atof(prob) - p[j].prob) > 1e-5) {
                bad++;
                fprintf(stderr, "line %d pred %d differs: fasttext %s %s\n", i, j, tok, prob ? prob : "?");
                break;
            }
            tok = strtok_r(NULL, " \n", &save);
        }
        if (j != n && !bad) {
            bad++;
            fprintf(stderr, "line %d: fasttext gives %d predictions, nlpd %d\n", i, j, n);
        }
    }
    free(p);
    nlpd_ft_scratch_free(s);
    nlpd_ft_free(m);
    pclose(f);
    return bad;
}

static const char *const parity_lines[] = {
    "good",
    "bad bad good",
    "h\xc3\xa9llo good world",
    "",
    "   ",
    "__label__pos good",
    "unknown w\xc3\xb6rds",
    "\t\xe6\x97\xa5\xe6\x9c\xac\t",
    "good bad h\xc3\xa9llo bad good bad",
    "hello helo hllo",
};
#define NPARITY ((int)(sizeof parity_lines / sizeof parity_lines[0]))

static int write_lines(const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    for (int i = 0; i < NPARITY; i++)
        fprintf(f, "%s\n", parity_lines[i]);
    return fclose(f);
}

static void test_parity_crafted(void)
{
    if (!have_fasttext()) {
        fprintf(stderr, "SKIP test_parity_crafted: fasttext not installed\n");
        return;
    }
    char dir[] = "/tmp/nlpd_ft_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char lf[256], mf[256];
    snprintf(lf, sizeof lf, "%s/lines.txt", dir);
    CHECK(write_lines(lf) == 0);
    for (int i = 0; i < NSPECS; i++) {
        if (specs[i].loss == NLPD_FT_LOSS_NS)
            continue; /* fastText builds a 10M-entry negatives table for ns: slow, same output as ova */
        struct bb b = build(&specs[i]);
        snprintf(mf, sizeof mf, "%s/m%d.bin", dir, i);
        FILE *f = fopen(mf, "wb");
        CHECK(f && fwrite(b.p, 1, b.len, f) == b.len);
        if (f)
            fclose(f);
        for (int k = 1; k <= 3; k++) {
            int bad = compare_with_tool(mf, lf, parity_lines, NPARITY, k);
            if (bad)
                fprintf(stderr, "spec %d k=%d: %d mismatches\n", i, k, bad);
            CHECK(bad == 0);
        }
        unlink(mf);
        free(b.p);
    }
    unlink(lf);
    rmdir(dir);
}

static void test_trained_model(void)
{
    if (!have_fasttext()) {
        fprintf(stderr, "SKIP test_trained_model: fasttext not installed\n");
        return;
    }
    char dir[] = "/tmp/nlpd_ft_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[256], cmd[1024];
    snprintf(path, sizeof path, "%s/train.txt", dir);
    FILE *f = fopen(path, "w");
    for (int i = 0; i < 600; i++)
        fprintf(f, "__label__%s %s %s h\xc3\xa9llo w%d\n",
                i % 3 == 0   ? "a"
                : i % 3 == 1 ? "b"
                             : "c",
                i % 3 == 0 ? "good" : "bad", i % 2 ? "world" : "x", i % 17);
    fclose(f);
    snprintf(cmd, sizeof cmd,
             "cd %s && fasttext supervised -input train.txt -output m -thread 1 -dim 8 -epoch 3 -minCount 1 "
             "-bucket 2000 -minn 2 -maxn 4 -wordNgrams 2 -loss hs -verbose 0 >/dev/null 2>&1 && "
             "fasttext quantize -input train.txt -output m -qnorm -cutoff 300 -verbose 0 >/dev/null 2>&1",
             dir);
    CHECK(system(cmd) == 0);
    char lf[256];
    snprintf(lf, sizeof lf, "%s/lines.txt", dir);
    CHECK(write_lines(lf) == 0);
    const char *names[2] = {"m.bin", "m.ftz"};
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        for (int k = 1; k <= 3; k++)
            CHECK(compare_with_tool(path, lf, parity_lines, NPARITY, k) == 0);
    }
    /* the quantised, pruned file: truncations at a stride and the first KB fully */
    struct nlpd_error err = {0};
    struct nlpd_ft_model *m = nlpd_ft_load(path, &err);
    CHECK(m != NULL);
    if (m) {
        struct nlpd_ft_info info;
        nlpd_ft_get_info(m, &info);
        CHECK(info.quant_input && info.pruned && info.loss == NLPD_FT_LOSS_HS && info.maxn == 4);
        nlpd_ft_free(m);
    }
    f = fopen(path, "rb");
    uint8_t *data = NULL;
    size_t len = 0;
    if (f) {
        fseek(f, 0, SEEK_END);
        len = (size_t)ftell(f);
        fseek(f, 0, SEEK_SET);
        data = malloc(len);
        CHECK(fread(data, 1, len, f) == len);
        fclose(f);
    }
    for (size_t l = 0; data && l < len; l += l < 1024 ? 1 : 97) {
        uint8_t *cp = malloc(l ? l : 1);
        memcpy(cp, data, l);
        struct nlpd_ft_model *mm = nlpd_ft_load_mem(cp, l, "m.ftz", &err);
        CHECK(mm == NULL);
        nlpd_ft_free(mm);
        free(cp);
    }
    free(data);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
}

/* `test_fasttext --write-corpus DIR` writes the crafted models as the fuzz seed corpus. */
static int write_corpus(const char *dir)
{
    for (int i = 0; i < NSPECS; i++) {
        struct bb b = build(&specs[i]);
        char path[512];
        snprintf(path, sizeof path, "%s/tiny%d.bin", dir, i);
        FILE *f = fopen(path, "wb");
        if (!f || fwrite(b.p, 1, b.len, f) != b.len || fclose(f)) {
            perror(path);
            return 1;
        }
        free(b.p);
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "--write-corpus"))
        return write_corpus(argv[2]);
    RUN(test_load_all_specs);
    RUN(test_softmax_by_hand);
    RUN(test_every_prefix);
    RUN(test_byte_flips);
    RUN(test_header_checks);
    RUN(test_parity_crafted);
    RUN(test_trained_model);
    return TEST_REPORT();
}
