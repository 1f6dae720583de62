/* Building JSON output lines for the model commands (see json_out.h). */
#include "json_out.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "nlpd_error.h"

void nlpd_out_str(struct nlpd_buf *o, const char *s)
{
    nlpd_buf_puts(o, s);
}

void nlpd_out_int(struct nlpd_buf *o, long long v)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", v);
    nlpd_out_str(o, buf);
}

void nlpd_out_float(struct nlpd_buf *o, float v)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%.9g", (double)v);
    nlpd_out_str(o, strchr(buf, 'n') && !strchr(buf, 'e') ? "null" : buf); /* nan / inf are not JSON */
}

/* A JSON string; invalid UTF-8 becomes U+FFFD so the line stays valid JSON. */
void nlpd_out_jstr(struct nlpd_buf *o, const char *s, size_t len)
{
    nlpd_buf_reserve(o, len * 6 + 2);
    if (o->oom)
        return;
    char *d = o->data + o->len;
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
    o->len = (size_t)(d - o->data);
}

static void write_error(FILE *f, long long line, const char *msg)
{
    struct nlpd_buf o = {0};
    nlpd_out_str(&o, "{\"error\": ");
    nlpd_out_jstr(&o, msg, strlen(msg));
    nlpd_out_str(&o, ", \"line\": ");
    nlpd_out_int(&o, line);
    nlpd_out_str(&o, "}\n");
    if (o.oom)
        fprintf(f, "{\"error\": \"out of memory\", \"line\": %lld}\n", line);
    else
        fputs(o.data, f);
    nlpd_buf_free(&o);
}

void nlpd_out_error(long long line, const char *msg)
{
    write_error(stdout, line, msg);
}

int nlpd_out_line(struct nlpd_buf *o, long long line, FILE *f)
{
    int rc = 0;
    if (o->oom) {
        write_error(f, line, "out of memory building the output line");
        rc = NLPD_ENOMEM;
    } else if (o->len) {
        fwrite(o->data, 1, o->len, f);
    }
    if (fflush(f) != 0 && !rc)
        rc = NLPD_EIO;
    nlpd_buf_reset(o);
    o->oom = 0; /* the next line starts afresh */
    return rc;
}

void nlpd_out_ints(struct nlpd_buf *o, const int32_t *v, size_t n)
{
    nlpd_out_str(o, "[");
    for (size_t i = 0; i < n; i++) {
        if (i)
            nlpd_out_str(o, ", ");
        nlpd_out_int(o, v[i]);
    }
    nlpd_out_str(o, "]");
}
