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
    if (!grown)
        return;
    d->msgs = grown;
    d->msgs[d->n] = strdup(full);
    if (d->msgs[d->n])
        d->n++;
}

void nlpd_diag_print(const struct nlpd_diag *d, FILE *out)
{
    for (size_t i = 0; i < d->n; i++)
        fprintf(out, "%s\n", d->msgs[i]);
}

void nlpd_diag_free(struct nlpd_diag *d)
{
    for (size_t i = 0; i < d->n; i++)
        free(d->msgs[i]);
    free(d->msgs);
    d->msgs = NULL;
    d->n = 0;
}
