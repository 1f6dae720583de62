/* Diagnostics collector (see diag.h). */
#include "diag.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

void nlpd_diag_add(struct nlpd_diag *d, const char *file, int line, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);

    char full[1400];
    if (line > 0)
        snprintf(full, sizeof full, "%s:%d: %s", file ? file : "(config)", line, msg);
    else
        snprintf(full, sizeof full, "%s: %s", file ? file : "(config)", msg);
    char **grown = realloc(d->msgs, (d->n + 1) * sizeof *grown);
    if (grown)
        d->msgs = grown;
    int *lines = realloc(d->lines, (d->n + 1) * sizeof *lines);
    if (lines)
        d->lines = lines;
    if (!grown || !lines)
        return;
    d->lines[d->n] = line;
    d->msgs[d->n] = strdup(full);
    if (d->msgs[d->n])
        d->n++;
}

/* The file part of "FILE:LINE: message" compares as the text before the line number. */
static int before(const struct nlpd_diag *d, size_t a, size_t b)
{
    const char *x = d->msgs[a], *y = d->msgs[b];
    size_t xl = strcspn(x, ":"), yl = strcspn(y, ":");
    int c = strncmp(x, y, xl < yl ? xl : yl);
    if (c == 0 && xl != yl)
        c = xl < yl ? -1 : 1;
    return c < 0 || (c == 0 && d->lines[a] < d->lines[b]);
}

void nlpd_diag_print(const struct nlpd_diag *d, FILE *out)
{
    size_t *order = malloc(d->n * sizeof *order + 1);
    for (size_t i = 0; order && i < d->n; i++) {
        size_t j = i; /* insertion sort: stable, and diagnostics are few */
        while (j > 0 && before(d, i, order[j - 1])) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = i;
    }
    for (size_t i = 0; i < d->n; i++)
        fprintf(out, "%s\n", d->msgs[order ? order[i] : i]);
    free(order);
}

void nlpd_diag_free(struct nlpd_diag *d)
{
    for (size_t i = 0; i < d->n; i++)
        free(d->msgs[i]);
    free(d->msgs);
    free(d->lines);
    d->msgs = NULL;
    d->lines = NULL;
    d->n = 0;
}
