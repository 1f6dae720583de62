/* Growable byte buffer with JSON string escaping, for building output records. */
#ifndef NLPD_BUF_H
#define NLPD_BUF_H

#include <stddef.h>

struct nlpd_buf {
    char *data;
    size_t len, cap;
    int oom; /* set when an allocation failed; later appends are dropped */
};

void nlpd_buf_reserve(struct nlpd_buf *b, size_t extra);
void nlpd_buf_append(struct nlpd_buf *b, const void *data, size_t len);
void nlpd_buf_puts(struct nlpd_buf *b, const char *s);
void nlpd_buf_printf(struct nlpd_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s as a JSON string literal (quotes included); s must be valid UTF-8. */
void nlpd_buf_json_string(struct nlpd_buf *b, const char *s, size_t len);
/* Appends a float as the shortest JSON number that reads back to the same float. */
void nlpd_buf_json_float(struct nlpd_buf *b, float v);
void nlpd_buf_reset(struct nlpd_buf *b);
void nlpd_buf_free(struct nlpd_buf *b);

#endif
