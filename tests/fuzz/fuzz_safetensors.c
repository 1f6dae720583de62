/* Fuzz target for the safetensors reader: any bytes must open or give an error naming the file, never crash or
 * read outside the block; every tensor that opens is read back as F32. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* a private copy so ASan sees reads past the end of the block */
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy)
        return 0;
    memcpy(copy, data, size);
    struct nlpd_error err = {0};
    struct nlpd_safetensors *st = nlpd_safetensors_open_mem(copy, size, "fuzz.safetensors", &err);
    if (!st) {
        if (!strstr(err.message, "fuzz.safetensors"))
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
