/* Fuzz target for the pytorch_model.bin reader (stages/models/torch_pickle.c): input starting with "PK" is a
 * whole torch.save zip, input starting with the legacy magic pickle a whole pre-1.6 file; anything else is taken as the
 * pickle itself, wrapped here in a stored zip as archive/data.pkl beside blobs archive/data/0..3 (64 bytes each), so
 * that mutations reach the unpickler. Any bytes must load or give an error naming the file, never crash, run code or
 * read outside the block; every tensor that loads is read back as F32 when it is a float type. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static size_t put(uint8_t *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = i < 8 ? (uint8_t)(v >> (8 * i)) : 0;
    return (size_t)n;
}

/* A stored zip of the given entries; returns its size (buf must be large enough). */
static size_t make_zip(uint8_t *buf, const char *const *names, const uint8_t *const *datas, const size_t *sizes,
                       size_t n)
{
    size_t o = 0, local[8], cd;
    for (size_t i = 0; i < n; i++) {
        size_t nl = strlen(names[i]);
        local[i] = o;
        o += put(buf + o, 0x04034b50, 4);
        o += put(buf + o, 0, 2 + 2 + 2 + 2 + 2 + 4); /* version, flags, method 0, time, date, crc */
        o += put(buf + o, sizes[i], 4);
        o += put(buf + o, sizes[i], 4);
        o += put(buf + o, nl, 2);
        o += put(buf + o, 0, 2);
        memcpy(buf + o, names[i], nl);
        o += nl;
        memcpy(buf + o, datas[i], sizes[i]);
        o += sizes[i];
    }
    cd = o;
    for (size_t i = 0; i < n; i++) {
        size_t nl = strlen(names[i]);
        o += put(buf + o, 0x02014b50, 4);
        o += put(buf + o, 0, 2 + 2 + 2 + 2 + 2 + 2 + 4);
        o += put(buf + o, sizes[i], 4);
        o += put(buf + o, sizes[i], 4);
        o += put(buf + o, nl, 2);
        o += put(buf + o, 0, 2 + 2 + 2 + 2 + 4);
        o += put(buf + o, local[i], 4);
        memcpy(buf + o, names[i], nl);
        o += nl;
    }
    o += put(buf + o, 0x06054b50, 4);
    o += put(buf + o, 0, 4);
    o += put(buf + o, n, 2);
    o += put(buf + o, n, 2);
    o += put(buf + o, o - cd - 12, 4);
    o += put(buf + o, cd, 4);
    o += put(buf + o, 0, 2);
    return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *copy;
    size_t n;
    if ((size >= 2 && data[0] == 'P' && data[1] == 'K') || (size >= 4 && !memcmp(data, "\x80\x02\x8a\x0a", 4))) {
        /* a private copy so ASan sees reads past the end of the block */
        copy = malloc(size ? size : 1);
        if (!copy)
            return 0;
        memcpy(copy, data, size);
        n = size;
    } else {
        static const uint8_t blob[64] = {1, 2, 3, 4, 5, 6, 7, 8};
        const char *names[] = {"archive/data.pkl", "archive/data/0", "archive/data/1", "archive/data/2",
                               "archive/data/3"};
        const uint8_t *datas[] = {data, blob, blob, blob, blob};
        size_t sizes[] = {size, 64, 64, 64, 64};
        copy = malloc(size + 1024);
        if (!copy)
            return 0;
        n = make_zip(copy, names, datas, sizes, 5);
        uint8_t *exact = malloc(n); /* trimmed so that ASan sees overreads */
        if (!exact) {
            free(copy);
            return 0;
        }
        memcpy(exact, copy, n);
        free(copy);
        copy = exact;
    }
    struct nlpd_error err = {0};
    struct nlpd_safetensors *st = nlpd_torch_open_mem(copy, n, "fuzz.bin", &err);
    if (!st) {
        if (!strstr(err.message, "fuzz.bin"))
            abort(); /* every error names the file */
        free(copy);
        return 0;
    }
    for (size_t i = 0; i < nlpd_safetensors_count(st); i++) {
        const struct nlpd_st_tensor *t = nlpd_safetensors_at(st, i);
        if (nlpd_safetensors_find(st, t->name) != t)
            abort();
        if (t->numel > (1u << 24))
            continue;
        float *out = malloc((size_t)t->numel * sizeof(float) + 1);
        if (out) {
            nlpd_safetensors_read_f32(st, t->name, t->ndim, t->shape, out, &err);
            free(out);
        }
    }
    nlpd_safetensors_close(st);
    free(copy);
    return 0;
}
