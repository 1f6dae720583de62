/* Growth of a caller-owned array by doubling: the one helper behind the scratch buffers of the model, tokenizer
 * and stage code (each used to carry its own copy). */
#ifndef NLPD_GROW_H
#define NLPD_GROW_H

#include <stddef.h>

/* Makes *p hold at least need elements of elem bytes (capacity *cap, doubled from 16); on failure *p and *cap are
 * unchanged. Returns 0 or NLPD_ENOMEM (also when need * elem would overflow). */
int nlpd_grow(void **p, size_t *cap, size_t need, size_t elem);

/* Lays n workspace parts of sizes[i] floats out in one buffer, each starting on a 64-byte boundary: fills offs[i]
 * (in floats) and returns the total floats. The encoders' and decoders' scratch buffers are laid out this way. */
size_t nlpd_ws_layout(const size_t *sizes, size_t n, size_t *offs);

#endif
