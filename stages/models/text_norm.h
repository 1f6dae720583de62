/* Text normalisations that make input look like a model's training data. */
#ifndef NLPD_TEXT_NORM_H
#define NLPD_TEXT_NORM_H

#include <stddef.h>

struct nlpd_text_norm {
    int lowercase;         /* Unicode simple lowercase mapping (utf8proc) */
    int split_punctuation; /* fastText's example preprocessing: see text_norm.c */
};

/* Writes the normalised text of in[0..len) into *out (grown as needed, NUL-terminated);
 * returns its length, or -1 when out of memory. in must be valid UTF-8. */
long nlpd_text_normalize(const struct nlpd_text_norm *norm, const char *in, size_t len, char **out, size_t *cap);

#endif
