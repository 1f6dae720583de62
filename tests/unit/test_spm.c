/* SentencePiece reader / Unigram encoder-decoder and Marian tokenizer: hand-built ModelProtos for the Viterbi and
 * normaliser rules, corrupt and truncated files (a clear error, never a crash), and the fixture models. The parity
 * with the real library is tests/models/test_spm_parity.sh. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "marian_tok.h"
#include "spm.h"

#define FIX "tests/fixtures/hf-tiny/marian-mt"

/* ------------------------------------------------------------------ a tiny protobuf writer */
struct w {
    uint8_t b[65536];
    size_t n;
};

static void w_varint(struct w *w, uint64_t v)
{
    do {
        uint8_t x = v & 0x7f;
        v >>= 7;
        w->b[w->n++] = x | (v ? 0x80 : 0);
    } while (v);
}

static void w_bytes(struct w *w, uint32_t field, const void *s, size_t n)
{
    w_varint(w, (uint64_t)field << 3 | 2);
    w_varint(w, n);
    memcpy(w->b + w->n, s, n);
    w->n += n;
}

static void w_int(struct w *w, uint32_t field, uint64_t v)
{
    w_varint(w, (uint64_t)field << 3);
    w_varint(w, v);
}

static void w_piece(struct w *w, const char *s, float score, int type)
{
    struct w p = {.n = 0};
    w_bytes(&p, 1, s, strlen(s));
    uint32_t u;
    memcpy(&u, &score, 4);
    w_varint(&p, 2 << 3 | 5);
    for (int i = 0; i < 4; i++)
        p.b[p.n++] = (uint8_t)(u >> (8 * i));
    if (type != 1)
        w_int(&p, 3, (uint64_t)type);
    w_bytes(w, 1, p.b, p.n);
}

#define SP "\xe2\x96\x81"

/* <unk> <s> </s> then normal pieces; `extra` adds pieces / specs. */
static void base_model(struct w *w)
{
    w->n = 0;
    w_piece(w, "<unk>", 0, 2);
    w_piece(w, "<s>", 0, 3);
    w_piece(w, "</s>", 0, 3);
    w_piece(w, SP, -2, 1);
    w_piece(w, "a", -3, 1);
    w_piece(w, "b", -3, 1);
    w_piece(w, "ab", -2.5f, 1);
    w_piece(w, SP "ab", -1, 1);
}

static struct nlpd_spm *load(struct w *w, struct nlpd_error *err)
{
    return nlpd_spm_load_mem(w->b, w->n, "test.model", err);
}

static int pieces_eq(const struct nlpd_spm_pieces *p, const char *const *want, size_t n)
{
    if (p->n != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (p->len[i] != strlen(want[i]) || memcmp(p->buf + p->off[i], want[i], p->len[i]))
            return 0;
    return 1;
}

static void test_basic_viterbi(void)
{
    struct w w;
    base_model(&w);
    struct nlpd_error err = {0};
    struct nlpd_spm *m = load(&w, &err);
    CHECK(m != NULL);
    if (!m)
        return;
    struct nlpd_spm_pieces p = {0};
    CHECK(nlpd_spm_encode(m, "ab  ab ", 7, &p, &err) == 0);
    const char *w1[] = {SP "ab", SP "ab"};
    CHECK(pieces_eq(&p, w1, 2));
    CHECK(p.id[0] == 7 && p.id[1] == 7);
    /* unknown chars merge into one piece with the unk id */
    CHECK(nlpd_spm_encode(m, "abxyz", 5, &p, &err) == 0);
    const char *w2[] = {SP "ab", "xyz"};
    CHECK(pieces_eq(&p, w2, 2));
    CHECK(p.n == 2 && p.id[1] == 0);
    /* all-space input gives nothing */
    CHECK(nlpd_spm_encode(m, "   ", 3, &p, &err) == 0 && p.n == 0);
    CHECK(nlpd_spm_encode(m, "", 0, &p, &err) == 0 && p.n == 0);
    CHECK(nlpd_spm_piece_id(m, "ab", 2) == 6);
    CHECK(nlpd_spm_piece_id(m, "zz", 2) == 0 && !nlpd_spm_has_piece(m, "zz", 2));
    CHECK(nlpd_spm_piece_id(m, "</s>", 4) == 2);
    nlpd_spm_pieces_free(&p);
    nlpd_spm_free(m);
}

static void test_unused_and_user_defined(void)
{
    struct w w;
    w.n = 0;
    w_piece(&w, "<unk>", 0, 2);
    w_piece(&w, SP, -2, 1);
    w_piece(&w, "a", -3, 1);
    w_piece(&w, "b", -3, 1);
    w_piece(&w, "ab", -2.5f, 1);
    w_piece(&w, SP "ab", -1, 5); /* UNUSED: never chosen */
    w_piece(&w, "<sep>", 0, 4);  /* USER_DEFINED */
    struct nlpd_error err = {0};
    struct nlpd_spm *m = load(&w, &err);
    CHECK(m != NULL);
    if (!m)
        return;
    struct nlpd_spm_pieces p = {0};
    CHECK(nlpd_spm_encode(m, "ab<sep>b", 8, &p, &err) == 0);
    const char *w1[] = {SP, "ab", "<sep>", "b"};
    CHECK(pieces_eq(&p, w1, 4));
    /* a user-defined symbol is matched before the normaliser, also right after a space */
    CHECK(nlpd_spm_encode(m, " <sep> ", 7, &p, &err) == 0);
    const char *w2[] = {SP, "<sep>"};
    CHECK(pieces_eq(&p, w2, 2));
    nlpd_spm_pieces_free(&p);
    nlpd_spm_free(m);
}

static void test_byte_fallback(void)
{
    struct w w;
    base_model(&w);
    for (int i = 0; i < 256; i++) {
        char b[8];
        snprintf(b, sizeof b, "<0x%02X>", i);
        w_piece(&w, b, 0, 6);
    }
    struct w t = {.n = 0};
    w_int(&t, 35, 1);
    w_bytes(&w, 2, t.b, t.n);
    struct nlpd_error err = {0};
    struct nlpd_spm *m = load(&w, &err);
    CHECK(m != NULL);
    if (!m)
        return;
    struct nlpd_spm_pieces p = {0};
    CHECK(nlpd_spm_encode(m, "a\xc3\xa9", 3, &p, &err) == 0);
    const char *w1[] = {SP, "a", "<0xC3>", "<0xA9>"};
    CHECK(pieces_eq(&p, w1, 4));
    CHECK(p.n == 4 && p.id[2] == 8 + 0xc3);
    const char *pc[] = {SP "ab", "<0xC3>", "<0xA9>", "<0xFF>", "b"};
    char *txt;
    size_t tl;
    CHECK(nlpd_spm_decode_pieces(m, pc, NULL, 5, &txt, &tl, &err) == 0);
    CHECK(tl == 8 && !memcmp(txt,
                             "ab\xc3\xa9\xef\xbf\xbd"
                             "b",
                             8));
    free(txt);
    nlpd_spm_pieces_free(&p);
    nlpd_spm_free(m);
}

static void test_decode(void)
{
    struct w w;
    base_model(&w);
    struct nlpd_error err = {0};
    struct nlpd_spm *m = load(&w, &err);
    CHECK(m != NULL);
    if (!m)
        return;
    const char *pc[] = {"<s>", SP SP "ab", "xyz", "<unk>", SP "a", "</s>"};
    char *txt;
    size_t tl;
    CHECK(nlpd_spm_decode_pieces(m, pc, NULL, 6, &txt, &tl, &err) == 0);
    /* "<s>" is empty; "__ab" and "_a" are not pieces of the model: copied as is, as the library does */
    CHECK(!strcmp(txt, SP SP "abxyz \xe2\x81\x87 " SP "a"));
    free(txt);
    int32_t ids[] = {7, 0, 4};
    CHECK(nlpd_spm_decode_ids(m, ids, 3, &txt, &tl, &err) == 0);
    CHECK(!strcmp(txt, "ab \xe2\x81\x87 a"));
    free(txt);
    int32_t bad[] = {1, 99};
    CHECK(nlpd_spm_decode_ids(m, bad, 2, &txt, &tl, &err) == NLPD_ERANGE);
    CHECK_STR_CONTAINS(err.message, "invalid id 99");
    nlpd_spm_free(m);
}

static void test_errors(void)
{
    struct nlpd_error err = {0};
    struct w w, t;
    /* WORD (Unigram and BPE are supported) */
    base_model(&w);
    t.n = 0;
    w_int(&t, 3, 3);
    w_bytes(&w, 2, t.b, t.n);
    CHECK(load(&w, &err) == NULL);
    CHECK_STR_CONTAINS(err.message, "test.model");
    CHECK_STR_CONTAINS(err.message, "WORD is not supported");
    /* no unk */
    w.n = 0;
    w_piece(&w, "a", -1, 1);
    CHECK(load(&w, &err) == NULL);
    CHECK_STR_CONTAINS(err.message, "unk is not defined");
    /* duplicate */
    base_model(&w);
    w_piece(&w, "ab", -1, 1);
    CHECK(load(&w, &err) == NULL);
    CHECK_STR_CONTAINS(err.message, "already defined");
    /* byte piece without byte_fallback */
    base_model(&w);
    w_piece(&w, "<0x41>", 0, 6);
    CHECK(load(&w, &err) == NULL);
    CHECK_STR_CONTAINS(err.message, "byte_fallback");
    /* broken charsmap */
    base_model(&w);
    t.n = 0;
    uint8_t cm[8] = {100, 0, 0, 0, 1, 2, 3, 4};
    w_bytes(&t, 2, cm, sizeof cm);
    w_bytes(&w, 3, t.b, t.n);
    CHECK(load(&w, &err) == NULL);
    CHECK_STR_CONTAINS(err.message, "precompiled_charsmap");
    /* garbage, empty, missing file */
    CHECK(nlpd_spm_load_mem("\xff\xff\xff", 3, "g.model", &err) == NULL);
    CHECK_STR_CONTAINS(err.message, "g.model");
    CHECK(nlpd_spm_load_mem("", 0, "e.model", &err) == NULL);
    CHECK_STR_CONTAINS(err.message, "e.model");
    CHECK(nlpd_spm_load("/nonexistent/x.spm", &err) == NULL);
    CHECK(err.code == NLPD_ENOTFOUND);
    CHECK_STR_CONTAINS(err.message, "/nonexistent/x.spm");
    char tmp[] = "/tmp/nlpd-spm-XXXXXX";
    int fd = mkstemp(tmp);
    if (fd >= 0) {
        close(fd);
        CHECK(nlpd_spm_load(tmp, &err) == NULL);
        CHECK_STR_CONTAINS(err.message, "empty file");
        unlink(tmp);
    }
}

static uint8_t *read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long l = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(l > 0 ? (size_t)l : 1);
    *n = b ? fread(b, 1, (size_t)l, f) : 0;
    fclose(f);
    return b;
}

/* Every truncation of a real model and random corruptions: loads or fails with the name, never crashes; what
 * loads encodes and decodes. */
static void test_corrupt(void)
{
    size_t n;
    uint8_t *b = read_file(FIX "/source.spm", &n);
    CHECK(b != NULL);
    if (!b)
        return;
    struct nlpd_error err = {0};
    struct nlpd_spm_pieces p = {0};
    int loaded = 0, failed = 0;
    for (size_t cut = 0; cut < n; cut += (cut < 4096 ? 1 : 97)) {
        uint8_t *c = malloc(cut ? cut : 1);
        memcpy(c, b, cut);
        struct nlpd_spm *m = nlpd_spm_load_mem(c, cut, "cut.spm", &err);
        if (m) {
            loaded++;
            CHECK(nlpd_spm_encode(m, "Hello world", 11, &p, &err) == 0);
            nlpd_spm_free(m);
        } else {
            failed++;
            if (!strstr(err.message, "cut.spm"))
                CHECK_STR_CONTAINS(err.message, "cut.spm");
        }
        free(c);
    }
    CHECK(failed > 0);
    unsigned seed = 12345;
    uint8_t *c = malloc(n);
    for (int it = 0; it < 300; it++) {
        memcpy(c, b, n);
        for (int k = 0; k < 1 + it % 8; k++) {
            seed = seed * 1103515245u + 12345u;
            c[(seed >> 8) % n] = (uint8_t)(seed >> 3);
        }
        struct nlpd_spm *m = nlpd_spm_load_mem(c, n, "flip.spm", &err);
        if (m) {
            loaded++;
            CHECK(nlpd_spm_encode(m, "Hello w\xc3\xb6rld \xff!", 15, &p, &err) == 0);
            const char *pp[] = {"<unk>", SP "x", "<0x41>"};
            char *txt;
            if (nlpd_spm_decode_pieces(m, pp, NULL, 3, &txt, NULL, &err) == 0)
                free(txt);
            nlpd_spm_free(m);
        } else if (!strstr(err.message, "flip.spm")) {
            CHECK_STR_CONTAINS(err.message, "flip.spm");
        }
    }
    free(c);
    nlpd_spm_pieces_free(&p);
    free(b);
}

static void test_fixture_spm(void)
{
    struct nlpd_error err = {0};
    struct nlpd_spm *m = nlpd_spm_load(FIX "/source.spm", &err);
    CHECK(m != NULL);
    if (!m)
        return;
    struct nlpd_spm_pieces p = {0};
    CHECK(nlpd_spm_encode(m, "Hello  world!", 13, &p, &err) == 0);
    int32_t want[] = {4, 996, 11, 33, 344, 717, 980};
    CHECK(p.n == 7 && !memcmp(p.id, want, sizeof want));
    /* the nmt_nfkc charsmap: full-width letters fold, 𝔘 -> U */
    CHECK(nlpd_spm_encode(m, "\xef\xbc\xa8", 3, &p, &err) == 0);
    CHECK(p.n == 2 && p.len[1] == 1 && p.buf[p.off[1]] == 'H');
    char *norm;
    size_t nl;
    CHECK(nlpd_spm_normalize(m, "  a \xe3\x80\x80 b ", 10, &norm, &nl, &err) == 0);
    CHECK(!strcmp(norm, SP "a" SP "b"));
    free(norm);
    nlpd_spm_pieces_free(&p);
    nlpd_spm_free(m);
}

static void test_marian(void)
{
    struct nlpd_error err = {0};
    struct nlpd_marian_tok *t = nlpd_marian_tok_load(FIX, &err);
    CHECK(t != NULL);
    if (!t) {
        fprintf(stderr, "%s\n", err.message);
        return;
    }
    CHECK(nlpd_marian_tok_eos(t) == 0 && nlpd_marian_tok_unk(t) == 1 && nlpd_marian_tok_pad(t) == 999);
    CHECK(nlpd_marian_tok_model_max_length(t) == 64);
    CHECK(nlpd_marian_tok_lang_count(t) == 0 && nlpd_marian_tok_lang_token(t, "fr") == -1);
    int32_t *ids = NULL;
    size_t n = 0, cap = 0;
    CHECK(nlpd_marian_tok_encode(t, "Hello world!", 12, 0, &ids, &n, &cap, &err) == 0);
    int32_t want[] = {3, 995, 10, 32, 343, 716, 979, 0};
    CHECK(n == 8 && !memcmp(ids, want, sizeof want));
    /* truncation keeps room for </s> */
    CHECK(nlpd_marian_tok_encode(t, "Hello world!", 12, 4, &ids, &n, &cap, &err) == 0);
    CHECK(n == 4 && ids[0] == 3 && ids[3] == 0);
    /* a special token in the text is its own id */
    CHECK(nlpd_marian_tok_encode(t, "a</s>b", 6, 0, &ids, &n, &cap, &err) == 0);
    CHECK(n >= 4 && ids[n - 1] == 0 && ids[n - 2] != 0);
    char *txt;
    size_t tl;
    CHECK(nlpd_marian_tok_decode(t, want, 8, 1, &txt, &tl, &err) == 0);
    CHECK(!strcmp(txt, "Hello world!"));
    free(txt);
    CHECK(nlpd_marian_tok_decode(t, want, 8, 0, &txt, &tl, &err) == 0);
    CHECK(!strcmp(txt, "Hello world!</s>"));
    free(txt);
    int32_t bad[] = {5, 100000};
    CHECK(nlpd_marian_tok_decode(t, bad, 2, 1, &txt, &tl, &err) == NLPD_ERANGE);
    free(ids);
    nlpd_marian_tok_free(t);
    CHECK(nlpd_marian_tok_load("/nonexistent-dir", &err) == NULL);
    CHECK_STR_CONTAINS(err.message, "/nonexistent-dir/vocab.json");
}

int main(void)
{
    RUN(test_basic_viterbi);
    RUN(test_unused_and_user_defined);
    RUN(test_byte_fallback);
    RUN(test_decode);
    RUN(test_errors);
    RUN(test_corrupt);
    RUN(test_fixture_spm);
    RUN(test_marian);
    return TEST_REPORT();
}
