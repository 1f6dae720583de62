/* Error codes and the caller-owned error detail struct shared by every layer.
 * Lives in common/, the lowest layer: everything may include it. */
#ifndef NLPD_ERROR_H
#define NLPD_ERROR_H

#include <stdarg.h>

enum {
    NLPD_OK = 0,
    NLPD_EINVAL = -1,  /* bad argument or bad input data */
    NLPD_ENOMEM = -2,  /* allocation failed */
    NLPD_EIO = -3,     /* read/write/open failed */
    NLPD_EFORMAT = -4, /* a file or record is malformed */
    NLPD_ENOTFOUND = -5,
    NLPD_ERANGE = -6, /* a size or count is out of the accepted range */
    NLPD_EAGAIN = -7, /* transient: retry later */
    NLPD_EFATAL = -8,
};

#define NLPD_ERROR_MSG_MAX 512

struct nlpd_error {
    int code;
    int retriable;
    char message[NLPD_ERROR_MSG_MAX];
};

/* Fills err (which may be NULL) and returns code, so callers can `return nlpd_error_set(...)`. */
int nlpd_error_set(struct nlpd_error *err, int code, int retriable, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
int nlpd_error_vset(struct nlpd_error *err, int code, int retriable, const char *fmt, va_list ap);
void nlpd_error_clear(struct nlpd_error *err);
const char *nlpd_strerror(int code);

/* Programmer errors abort with file and line; never used for bad input. */
#define NLPD_ASSERT(cond)                                                                                              \
    do {                                                                                                               \
        if (!(cond))                                                                                                   \
            nlpd_assert_fail(#cond, __FILE__, __LINE__);                                                               \
    } while (0)
void nlpd_assert_fail(const char *expr, const char *file, int line) __attribute__((noreturn));

#endif
