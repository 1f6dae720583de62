/* Text normalisation (see text_norm.h). split_punctuation reproduces the preprocessing of fastText's
 * published classification scripts, which the Amazon review models were trained on:
 *   ' . , ( ) ! ?  -> surrounded by spaces;   "  -> removed;   ; :  -> space;   <br /> -> space. */
#include "text_norm.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

static int grow(char **out, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t c = *cap ? *cap : 256;
    while (c < need)
        c *= 2;
    char *p = realloc(*out, c);
    if (!p)
        return -1;
    *out = p;
    *cap = c;
    return 0;
}

long nlpd_text_normalize(const struct nlpd_text_norm *norm, const char *in, size_t len, char **out, size_t *cap)
{
    /* Worst case: every byte becomes " x " (3x), and lowercasing never grows a code point past 4 bytes. */
    if (grow(out, cap, 3 * len + 8) < 0)
        return -1;
    char *o = *out;
    size_t n = 0;
    const utf8proc_uint8_t *s = (const utf8proc_uint8_t *)in;
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        if (norm->split_punctuation) {
            if (c == '<' && len - i >= 6 && memcmp(in + i, "<br />", 6) == 0) {
                o[n++] = ' ';
                i += 6;
                continue;
            }
            if (c == '\'' || c == '.' || c == ',' || c == '(' || c == ')' || c == '!' || c == '?') {
                o[n++] = ' ';
                o[n++] = (char)c;
                o[n++] = ' ';
                i++;
                continue;
            }
            if (c == '"') {
                i++;
                continue;
            }
            if (c == ';' || c == ':') {
                o[n++] = ' ';
                i++;
                continue;
            }
        }
        if (c < 0x80) {
            o[n++] = (char)(norm->lowercase && c >= 'A' && c <= 'Z' ? c + 32 : c);
            i++;
            continue;
        }
        utf8proc_int32_t cp;
        utf8proc_ssize_t k = utf8proc_iterate(s + i, (utf8proc_ssize_t)(len - i), &cp);
        if (k <= 0) { /* not expected: input is validated UTF-8; copy the byte through */
            o[n++] = (char)c;
            i++;
            continue;
        }
        if (norm->lowercase) {
            utf8proc_int32_t lc = utf8proc_tolower(cp);
            n += (size_t)utf8proc_encode_char(lc, (utf8proc_uint8_t *)o + n);
        } else {
            memcpy(o + n, in + i, (size_t)k);
            n += (size_t)k;
        }
        i += (size_t)k;
    }
    o[n] = '\0';
    return (long)n;
}
