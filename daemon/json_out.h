/* JSON output lines of the model commands (`nlpd infer`, `nlpd tokenize`): appenders for strings, numbers and
 * id arrays on the daemon's one output buffer (struct nlpd_buf, buf.h). An allocation failure sets the buffer's
 * oom flag like every nlpd_buf append; nlpd_out_line reports it as that input line's error instead of exiting. */
#ifndef NLPD_JSON_OUT_H
#define NLPD_JSON_OUT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "buf.h"

void nlpd_out_str(struct nlpd_buf *o, const char *s);
void nlpd_out_int(struct nlpd_buf *o, long long v);
void nlpd_out_float(struct nlpd_buf *o, float v); /* nan / inf become null */
/* A JSON string; invalid UTF-8 becomes U+FFFD so the line stays valid JSON. */
void nlpd_out_jstr(struct nlpd_buf *o, const char *s, size_t len);
void nlpd_out_ints(struct nlpd_buf *o, const int32_t *v, size_t n);
/* Prints {"error": msg, "line": line} to stdout. */
void nlpd_out_error(long long line, const char *msg);
/* Writes o's contents to f and flushes, or, when an append to o failed, the error line of input line `line`
 * instead; then empties o for the next line. Returns 0, NLPD_ENOMEM (the error line was written) or NLPD_EIO. */
int nlpd_out_line(struct nlpd_buf *o, long long line, FILE *f);

#endif
