/* Error detail helpers (see nlpd_error.h). */
#include "nlpd_error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int nlpd_error_vset(struct nlpd_error *err, int code, int retriable, const char *fmt, va_list ap)
{
    if (err) {
        err->code = code;
        err->retriable = retriable;
        vsnprintf(err->message, sizeof err->message, fmt, ap);
    }
    return code;
}

int nlpd_error_set(struct nlpd_error *err, int code, int retriable, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    nlpd_error_vset(err, code, retriable, fmt, ap);
    va_end(ap);
    return code;
}

void nlpd_error_clear(struct nlpd_error *err)
{
    if (err) {
        err->code = 0;
        err->retriable = 0;
        err->message[0] = '\0';
    }
}

const char *nlpd_strerror(int code)
{
    switch (code) {
    case NLPD_OK: return "ok";
    case NLPD_EINVAL: return "invalid argument";
    case NLPD_ENOMEM: return "out of memory";
    case NLPD_EIO: return "i/o error";
    case NLPD_EFORMAT: return "malformed data";
    case NLPD_ENOTFOUND: return "not found";
    case NLPD_ERANGE: return "out of range";
    case NLPD_EAGAIN: return "temporarily unavailable";
    case NLPD_EFATAL: return "fatal error";
    default: return "unknown error";
    }
}

void nlpd_assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr, "<2>nlpd: assertion failed: %s (%s:%d)\n", expr, file, line);
    abort();
}
