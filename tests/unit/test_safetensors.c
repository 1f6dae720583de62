/* safetensors reader: F32/F16/BF16 tensors written here, shape checks, and every malformed-header case named in
 * DESIGN.md §6 (truncation, offsets out of range, size mismatches, bad JSON, unknown dtypes); the pytorch_model.bin
 * reader on the small torch.save files of the fuzz corpus (written by Debian's torch 1.13), good and refused. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "nlpd_kernels.h"
#include "safetensors.h"

/* header JSON + data -> a safetensors blob (header padded with spaces to a multiple of 8) */
static unsigned char *blob(const char *header, const void *data, size_t dlen, size_t *out_len)
{
    size_t hl = strlen(header), pad = (8 - hl % 8) % 8;
    unsigned char *b = malloc(8 + hl + pad + dlen + 1);
    uint64_t n = hl + pad;
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(n >> (8 * i));
    memcpy(b + 8, header, hl);
    memset(b + 8 + hl, ' ', pad);
    if (dlen)
        memcpy(b + 8 + n, data, dlen);
    *out_len = 8 + n + dlen;
    return b;
}

static void put16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}

static void test_dtypes(void)
{
    /* a: F32 [2,3]; h: F16 [4]; b: BF16 [2,2]; i: I64 [1] (listed, not readable as float) */
    const float a[6] = {1.5f, -2.25f, 3.0f, 0.0f, 1e-3f, -7.0f};
    const float hv[4] = {0.5f, -1.0f, 65504.0f, 0.000061035156f};
    const float bv[4] = {1.0f, -3.140625f, 256.0f, 1e-20f};
    unsigned char data[24 + 8 + 8 + 8];
    memcpy(data, a, 24);
    for (int i = 0; i < 4; i++)
        put16(data + 24 + 2 * i, nlpd_kernels_f32_to_f16(hv[i]));
    for (int i = 0; i < 4; i++)
        put16(data + 32 + 2 * i, nlpd_kernels_f32_to_bf16(bv[i]));
    memset(data + 40, 0, 8);
    const char *hdr = "{\"__metadata__\":{\"format\":\"pt\"},"
                      "\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
                      "\"h\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[24,32]},"
                      "\"b\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[32,40]},"
                      "\"i\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[40,48]}}";
    size_t n;
    unsigned char *f = blob(hdr, data, sizeof data, &n);
    char path[64];
    snprintf(path, sizeof path, "/tmp/nlpd-test-st-%d.safetensors", (int)getpid());
    FILE *fp = fopen(path, "wb");
    fwrite(f, 1, n, fp);
    fclose(fp);

    struct nlpd_error err = {0};
    struct nlpd_safetensors *st = nlpd_safetensors_open(path, &err);
    CHECK(st != NULL);
    if (!st) {
        fprintf(stderr, "%s\n", err.message);
        return;
    }
    CHECK(nlpd_safetensors_count(st) == 4);
    CHECK(!strcmp(nlpd_safetensors_metadata(st, "format"), "pt"));
    const struct nlpd_st_tensor *t = nlpd_safetensors_find(st, "b");
    CHECK(t && t->dtype == NLPD_ST_BF16 && t->ndim == 2 && t->shape[0] == 2 && t->numel == 4 && t->nbytes == 8);
    CHECK(!strcmp(nlpd_safetensors_at(st, 0)->name, "a")); /* sorted by name */
    float out[6];
    int64_t s23[2] = {2, 3}, s4[1] = {4}, s22[2] = {2, 2}, s32[2] = {3, 2};
    CHECK(nlpd_safetensors_read_f32(st, "a", 2, s23, out, &err) == 0);
    CHECK(!memcmp(out, a, sizeof a));
    CHECK(nlpd_safetensors_read_f32(st, "h", 1, s4, out, &err) == 0);
    for (int i = 0; i < 4; i++)
        CHECK(out[i] == hv[i]); /* all exactly representable in half */
    CHECK(nlpd_safetensors_read_f32(st, "b", 2, s22, out, &err) == 0);
    CHECK(out[0] == 1.0f && out[1] == -3.140625f && out[2] == 256.0f);
    CHECK(fabsf(out[3] - 1e-20f) < 1e-22f);
    CHECK(nlpd_safetensors_read_f32(st, "b", 0, NULL, out, &err) == 0); /* any shape */
    CHECK(nlpd_safetensors_read_f32(st, "a", 2, s32, out, &err) == NLPD_EFORMAT);
    CHECK_STR_CONTAINS(err.message, "tensor \"a\": shape [2, 3], expected [3, 2]");
    CHECK_STR_CONTAINS(err.message, path);
    CHECK(nlpd_safetensors_read_f32(st, "i", 0, NULL, out, &err) == NLPD_EFORMAT);
    CHECK_STR_CONTAINS(err.message, "unsupported dtype I64");
    CHECK(nlpd_safetensors_read_f32(st, "nope", 0, NULL, out, &err) == NLPD_ENOTFOUND);
    CHECK_STR_CONTAINS(err.message, "\"nope\" missing");
    nlpd_safetensors_close(st);
    unlink(path);
    CHECK(nlpd_safetensors_open(path, &err) == NULL);
    CHECK(err.code == NLPD_ENOTFOUND);
    CHECK_STR_CONTAINS(err.message, path);
    free(f);
}

struct bad_case {
    const char *header;
    size_t data_len;
    const char *needle;
};

static void test_bad_headers(void)
{
    static const struct bad_case cases[] = {
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,12]}}", 16, "needs 8 bytes"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8, "out of range"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8, "out of range"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 8, "data_offsets"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 8, "data_offsets"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 8, "shape[0]"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,4]}}", 8, "more than"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 8, "dimensions"},
        {"{\"t\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}", 8, "dtype"},
        {"{\"t\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 8, "dtype"},
        {"{\"t\":[1,2]}", 8, "not an object"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"t\":{}}", 8, "valid JSON"},
        {"[1,2,3]", 8, "not a JSON object"},
        {"{\"t\":", 8, "valid JSON"},
        {"{\"__metadata__\":[1]}", 0, "__metadata__"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        unsigned char data[16] = {0};
        size_t n;
        unsigned char *b = blob(cases[i].header, data, cases[i].data_len, &n);
        struct nlpd_error err = {0};
        struct nlpd_safetensors *st = nlpd_safetensors_open_mem(b, n, "bad.safetensors", &err);
        CHECK(st == NULL);
        if (st) {
            fprintf(stderr, "  case %zu accepted\n", i);
            nlpd_safetensors_close(st);
        } else {
            CHECK_STR_CONTAINS(err.message, "bad.safetensors");
            CHECK_STR_CONTAINS(err.message, cases[i].needle);
        }
        free(b);
    }
    /* header length larger than the file, huge, and a file shorter than 8 bytes */
    unsigned char small[16] = {200, 0, 0, 0, 0, 0, 0, 0, '{', '}'};
    struct nlpd_error err = {0};
    CHECK(nlpd_safetensors_open_mem(small, 10, "x.safetensors", &err) == NULL);
    CHECK_STR_CONTAINS(err.message, "truncated");
    small[7] = 0x80;
    CHECK(nlpd_safetensors_open_mem(small, 10, "x.safetensors", &err) == NULL);
    CHECK_STR_CONTAINS(err.message, "over the limit");
    CHECK(nlpd_safetensors_open_mem(small, 3, "x.safetensors", &err) == NULL);
    CHECK_STR_CONTAINS(err.message, "truncated");
}

static void test_edge_ok(void)
{
    /* unknown dtype names are listed (not readable); zero-sized tensors and an empty header are fine */
    const char *hdr = "{\"z\":{\"dtype\":\"F32\",\"shape\":[0,4],\"data_offsets\":[0,0]},"
                      "\"q\":{\"dtype\":\"F4_NEW\",\"shape\":[3],\"data_offsets\":[0,2]}}";
    unsigned char data[2] = {1, 2};
    size_t n;
    unsigned char *b = blob(hdr, data, 2, &n);
    struct nlpd_error err = {0};
    struct nlpd_safetensors *st = nlpd_safetensors_open_mem(b, n, "ok.safetensors", &err);
    CHECK(st != NULL);
    if (st) {
        float f[1];
        CHECK(nlpd_safetensors_read_f32(st, "z", 0, NULL, f, &err) == 0);
        CHECK(nlpd_safetensors_read_f32(st, "q", 0, NULL, f, &err) == NLPD_EFORMAT);
        CHECK_STR_CONTAINS(err.message, "F4_NEW");
        CHECK(nlpd_safetensors_find(st, "q")->dtype == NLPD_ST_UNKNOWN);
        nlpd_safetensors_close(st);
    }
    free(b);
    b = blob("{}", NULL, 0, &n);
    st = nlpd_safetensors_open_mem(b, n, "empty.safetensors", &err);
    CHECK(st && nlpd_safetensors_count(st) == 0 && !nlpd_safetensors_find(st, "a"));
    nlpd_safetensors_close(st);
    free(b);
}

static void test_fixture(void)
{
    struct nlpd_error err = {0};
    struct nlpd_safetensors *st = nlpd_safetensors_open("tests/fixtures/hf-tiny/bert-seq-cls/model.safetensors", &err);
    CHECK(st != NULL);
    if (!st)
        return;
    const struct nlpd_st_tensor *t = nlpd_safetensors_find(st, "bert.embeddings.word_embeddings.weight");
    CHECK(t && t->dtype == NLPD_ST_F32 && t->shape[0] == 1000 && t->shape[1] == 32);
    CHECK(nlpd_safetensors_count(st) == 41);
    nlpd_safetensors_close(st);
}

#define PK "tests/fuzz/corpus/pickle/"

/* small.bin and legacy.bin (the same state dict in torch's zip and pre-1.6 formats) */
static void check_small(const char *path)
{
    struct nlpd_error err = {0};
    struct nlpd_safetensors *st = nlpd_safetensors_open(path, &err);
    CHECK(st != NULL);
    if (!st) {
        fprintf(stderr, "%s\n", err.message);
        return;
    }
    /* a = arange(6).reshape(2, 3), b = a[1] (a view at offset 3), c = a.half(), d = int64 [1, 2], e = a.bfloat16(),
     * tied = a (the same object) */
    CHECK(nlpd_safetensors_count(st) == 6);
    const struct nlpd_st_tensor *a = nlpd_safetensors_find(st, "a"), *b = nlpd_safetensors_find(st, "b"),
                                *d = nlpd_safetensors_find(st, "d"), *tied = nlpd_safetensors_find(st, "tied");
    CHECK(a && a->dtype == NLPD_ST_F32 && a->ndim == 2 && a->shape[0] == 2 && a->shape[1] == 3 && a->numel == 6);
    CHECK(b && b->ndim == 1 && b->shape[0] == 3 && a && b->data == a->data + 12);
    CHECK(tied && a && tied->data == a->data && tied->numel == 6);
    CHECK(d && d->dtype == NLPD_ST_I64 && d->numel == 2);
    const char *names[] = {"a", "c", "e"};
    for (int k = 0; k < 3; k++) {
        float v[6] = {0};
        CHECK(nlpd_safetensors_read_f32(st, names[k], 2, (int64_t[]){2, 3}, v, &err) == 0);
        for (int i = 0; i < 6; i++)
            CHECK(v[i] == (float)i);
    }
    float w[3] = {0};
    CHECK(nlpd_safetensors_read_f32(st, "b", 1, (int64_t[]){3}, w, &err) == 0 && w[0] == 3 && w[2] == 5);
    nlpd_safetensors_close(st);
}

static void test_torch_bin(void)
{
    check_small(PK "small.bin");
    check_small(PK "legacy.bin");
    struct nlpd_error err = {0};
    struct nlpd_safetensors *st;
    st = nlpd_safetensors_open(PK "empty-and-scalar.bin", &err);
    CHECK(st && nlpd_safetensors_count(st) == 2);
    if (st) {
        const struct nlpd_st_tensor *x = nlpd_safetensors_find(st, "x"), *y = nlpd_safetensors_find(st, "y");
        CHECK(x && x->numel == 0 && x->ndim == 2 && y && y->ndim == 0 && y->numel == 1);
    }
    nlpd_safetensors_close(st);

    static const struct {
        const char *file, *msg;
    } refused[] = {
        {"global-os-system.bin", "global posix.system is not allowed"},
        {"nested.bin", "state dict entry \"nested\" is a dict, not a tensor"},
        {"strided.bin", "tensor is not contiguous"},
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        char path[256];
        snprintf(path, sizeof path, PK "%s", refused[i].file);
        err = (struct nlpd_error){0};
        st = nlpd_safetensors_open(path, &err);
        CHECK(st == NULL && strstr(err.message, refused[i].file) && strstr(err.message, refused[i].msg));
        if (st || !strstr(err.message, refused[i].msg))
            fprintf(stderr, "%s: %s\n", refused[i].file, err.message);
        nlpd_safetensors_close(st);
    }
}

int main(void)
{
    RUN(test_dtypes);
    RUN(test_bad_headers);
    RUN(test_edge_ok);
    RUN(test_fixture);
    RUN(test_torch_bin);
    return TEST_REPORT();
}
