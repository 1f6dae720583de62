/* Growth of a caller-owned array by doubling: the one helper behind the scratch buffers of the model, tokenizer
 * and stage code (each used to carry its own copy). */
#ifndef NLPD_GROW_H
#define NLPD_GROW_H

#include <stddef.h>

/* Makes *p hold at least need elements of elem bytes (capacity *cap, doubled from 16); on failure *p and *cap are
 * unchanged. Returns 0 or NLPD_ENOMEM (also when need * elem would overflow). */
int nlpd_grow(void **p, size_t *cap, size_t need, size_t elem);

#endif
