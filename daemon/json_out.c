/* Building JSON output lines for the model commands (see json_out.h). */
#include "json_out.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

void nlpd_out_grow(struct nlpd_out *o, size_t more)
{
    if (o->n + more + 1 <= o->cap)
        return;
    size_t cap = o->cap ? o->cap : 4096;
    while (cap < o->n + more + 1)
        cap *= 2;
    char *p = realloc(o->p, cap);
    if (!p) {
        fprintf(stderr, "nlpd: out of memory\n");
        exit(1);
    }
    o->p = p;
    o->cap = cap;
}

void nlpd_out_str(struct nlpd_out *o, const char *s)
{
    size_t n = strlen(s);
    nlpd_out_grow(o, n);
    memcpy(o->p + o->n, s, n + 1);
    o->n += n;
}

void nlpd_out_int(struct nlpd_out *o, long long v)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", v);
    nlpd_out_str(o, buf);
}

void nlpd_out_float(struct nlpd_out *o, float v)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%.9g", (double)v);
    nlpd_out_str(o, strchr(buf, 'n') && !strchr(buf, 'e') ? "null" : buf); /* nan / inf are not JSON */
}

/* A JSON string; invalid UTF-8 becomes U+FFFD so the line stays valid JSON. */
void nlpd_out_jstr(struct nlpd_out *o, const char *s, size_t len)
{
    nlpd_out_grow(o, len * 6 + 2);
    char *d = o->p + o->n;
    *d++ = '"';
    size_t i = 0;
    while (i < len) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x80) {
            if (c == '"' || c == '\\') {
                *d++ = '\\';
                *d++ = (char)c;
            } else if (c < 0x20) {
                const char hex[] = "0123456789abcdef";
                const char *esc = c == '\n' ? "\\n" : c == '\t' ? "\\t" : c == '\r' ? "\\r" : NULL;
                if (esc) {
                    memcpy(d, esc, 2);
                    d += 2;
                } else {
                    memcpy(d, "\\u00", 4);
                    d[4] = hex[c >> 4];
                    d[5] = hex[c & 15];
                    d += 6;
                }
            } else {
                *d++ = (char)c;
            }
            i++;
            continue;
        }
        utf8proc_int32_t cp;
        utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(len - i), &cp);
        if (k <= 0) {
            memcpy(d, "\xef\xbf\xbd", 3);
            d += 3;
            i++;
        } else {
            memcpy(d, s + i, (size_t)k);
            d += k;
            i += (size_t)k;
        }
    }
    *d++ = '"';
    *d = 0;
    o->n = (size_t)(d - o->p);
}

void nlpd_out_error(long long line, const char *msg)
{
    struct nlpd_out o = {0};
    nlpd_out_str(&o, "{\"error\": ");
    nlpd_out_jstr(&o, msg, strlen(msg));
    nlpd_out_str(&o, ", \"line\": ");
    nlpd_out_int(&o, line);
    nlpd_out_str(&o, "}\n");
    fputs(o.p, stdout);
    free(o.p);
}

void nlpd_out_ints(struct nlpd_out *o, const int32_t *v, size_t n)
{
    nlpd_out_str(o, "[");
    for (size_t i = 0; i < n; i++) {
        if (i)
            nlpd_out_str(o, ", ");
        nlpd_out_int(o, v[i]);
    }
    nlpd_out_str(o, "]");
}

