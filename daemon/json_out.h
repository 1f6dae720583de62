/* JSON output lines of the model commands (`nlpd infer`, `nlpd tokenize`): a growable buffer with appenders for
 * strings, numbers and id arrays. Out of memory exits the command with a message (these are CLI tools). */
#ifndef NLPD_JSON_OUT_H
#define NLPD_JSON_OUT_H

#include <stddef.h>
#include <stdint.h>

struct nlpd_out {
    char *p;
    size_t n, cap;
};

void nlpd_out_grow(struct nlpd_out *o, size_t more);
void nlpd_out_str(struct nlpd_out *o, const char *s);
void nlpd_out_int(struct nlpd_out *o, long long v);
void nlpd_out_float(struct nlpd_out *o, float v); /* nan / inf become null */
/* A JSON string; invalid UTF-8 becomes U+FFFD so the line stays valid JSON. */
void nlpd_out_jstr(struct nlpd_out *o, const char *s, size_t len);
void nlpd_out_ints(struct nlpd_out *o, const int32_t *v, size_t n);
/* Prints {"error": msg, "line": line} to stdout. */
void nlpd_out_error(long long line, const char *msg);

#endif
