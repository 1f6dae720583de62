/* A tiny test harness: CHECK records failures without stopping, TEST_MAIN prints `N passed, N failed`. */
#ifndef NLPD_TEST_HARNESS_H
#define NLPD_TEST_HARNESS_H

#include <stdio.h>
#include <string.h>

static int harness_passed, harness_failed, harness_case_failed;
static const char *harness_case;

#define CHECK(cond)                                                                                                    \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            fprintf(stderr, "FAIL %s: %s:%d: %s\n", harness_case, __FILE__, __LINE__, #cond);                          \
            harness_case_failed = 1;                                                                                   \
        }                                                                                                              \
    } while (0)

#define CHECK_STR_CONTAINS(hay, needle)                                                                                \
    do {                                                                                                               \
        const char *h_ = (hay);                                                                                        \
        if (!h_ || !strstr(h_, (needle))) {                                                                            \
            fprintf(stderr, "FAIL %s: %s:%d: \"%s\" does not contain \"%s\"\n", harness_case, __FILE__, __LINE__,      \
                    h_ ? h_ : "(null)", (needle));                                                                     \
            harness_case_failed = 1;                                                                                   \
        }                                                                                                              \
    } while (0)

#define RUN(fn)                                                                                                        \
    do {                                                                                                               \
        harness_case = #fn;                                                                                            \
        harness_case_failed = 0;                                                                                       \
        fn();                                                                                                          \
        if (harness_case_failed)                                                                                       \
            harness_failed++;                                                                                          \
        else                                                                                                           \
            harness_passed++;                                                                                          \
    } while (0)

#define TEST_REPORT() (printf("%d passed, %d failed\n", harness_passed, harness_failed), harness_failed ? 1 : 0)

#endif
