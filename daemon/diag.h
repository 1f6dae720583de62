/* Diagnostics collector: configuration problems as "FILE:LINE: message", all reported at once. */
#ifndef NLPD_DIAG_H
#define NLPD_DIAG_H

#include <stddef.h>
#include <stdio.h>

struct nlpd_diag {
    size_t n;
    char **msgs; /* "FILE:LINE: message" */
    int *lines;  /* LINE of each message, for ordering */
};

void nlpd_diag_add(struct nlpd_diag *d, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Prints the messages ordered by file, then line (stable), one per line. */
void nlpd_diag_print(const struct nlpd_diag *d, FILE *out);
void nlpd_diag_free(struct nlpd_diag *d);

#endif
