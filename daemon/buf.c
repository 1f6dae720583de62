/* Growable buffer (see buf.h). */
#include "buf.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void nlpd_buf_reserve(struct nlpd_buf *b, size_t extra)
{
    if (b->oom || b->len + extra + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d) {
        b->oom = 1;
        return;
    }
    b->data = d;
    b->cap = cap;
}

void nlpd_buf_append(struct nlpd_buf *b, const void *data, size_t len)
{
    nlpd_buf_reserve(b, len);
    if (b->oom)
        return;
    memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
}

void nlpd_buf_puts(struct nlpd_buf *b, const char *s)
{
    nlpd_buf_append(b, s, strlen(s));
}

void nlpd_buf_printf(struct nlpd_buf *b, const char *fmt, ...)
{
    if (b->oom)
        return;
    /* Formats once into the room there is; only a longer text is formatted again, after growing. */
    size_t room = b->cap - b->len;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->data ? b->data + b->len : NULL, b->data ? room : 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if (!b->data || (size_t)n >= room) {
        nlpd_buf_reserve(b, (size_t)n);
        if (b->oom)
            return;
        va_start(ap, fmt);
        vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    b->len += (size_t)n;
}

void nlpd_buf_json_string(struct nlpd_buf *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    nlpd_buf_reserve(b, len + 2);
    nlpd_buf_append(b, "\"", 1);
    size_t run = 0; /* bytes copied as they are, flushed in one append */
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char u[6];
        if (c == '"')
            esc = "\\\"";
        else if (c == '\\')
            esc = "\\\\";
        else if (c == '\n')
            esc = "\\n";
        else if (c == '\r')
            esc = "\\r";
        else if (c == '\t')
            esc = "\\t";
        else if (c < 0x20 || c == 0x7f) {
            memcpy(u, "\\u00", 4);
            u[4] = hex[c >> 4];
            u[5] = hex[c & 15];
        } else {
            run++;
            continue;
        }
        nlpd_buf_append(b, s + i - run, run);
        run = 0;
        if (esc)
            nlpd_buf_puts(b, esc);
        else
            nlpd_buf_append(b, u, 6);
    }
    nlpd_buf_append(b, s + len - run, run);
    nlpd_buf_append(b, "\"", 1);
}

void nlpd_buf_json_float(struct nlpd_buf *b, float v)
{
    if (!isfinite(v)) {
        nlpd_buf_puts(b, "null");
        return;
    }
    char tmp[32];
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, (double)v);
        if (strtof(tmp, NULL) == v)
            break;
    }
    nlpd_buf_puts(b, tmp);
}

void nlpd_buf_reset(struct nlpd_buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

void nlpd_buf_free(struct nlpd_buf *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}
