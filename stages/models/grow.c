/* Array growth (see grow.h). */
#include "grow.h"

#include <stdint.h>
#include <stdlib.h>

#include "nlpd_error.h"

int nlpd_grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    if (elem == 0 || need > SIZE_MAX / elem)
        return NLPD_ENOMEM;
    size_t c = *cap ? *cap : 16;
    while (c < need)
        c = c > SIZE_MAX / 2 ? need : c * 2;
    if (c > SIZE_MAX / elem)
        c = need;
    void *q = realloc(*p, c * elem);
    if (!q)
        return NLPD_ENOMEM;
    *p = q;
    *cap = c;
    return 0;
}

size_t nlpd_ws_layout(const size_t *sizes, size_t n, size_t *offs)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        offs[i] = o;
        o += (sizes[i] + 15) & ~(size_t)15;
    }
    return o;
}
