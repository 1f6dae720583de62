/* daemon/json_out: the model commands' JSON lines on struct nlpd_buf; a failed append is that line's error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "json_out.h"
#include "nlpd_error.h"

/* What nlpd_out_line wrote to a temporary file. */
static char *written(struct nlpd_buf *o, long long line, int *rc)
{
    FILE *f = tmpfile();
    *rc = nlpd_out_line(o, line, f);
    static char got[512];
    rewind(f);
    size_t n = fread(got, 1, sizeof got - 1, f);
    got[n] = 0;
    fclose(f);
    return got;
}

static void lines(void)
{
    struct nlpd_buf o = {0};
    int rc;
    nlpd_out_str(&o, "{\"ids\": ");
    int32_t ids[] = {5, -1};
    nlpd_out_ints(&o, ids, 2);
    nlpd_out_str(&o, ", \"t\": ");
    nlpd_out_jstr(&o, "a\"\xff\n", 4);
    nlpd_out_str(&o, ", \"f\": ");
    nlpd_out_float(&o, 0.5f);
    nlpd_out_str(&o, "}\n");
    CHECK(!strcmp(written(&o, 1, &rc), "{\"ids\": [5, -1], \"t\": \"a\\\"\xef\xbf\xbd\\n\", \"f\": 0.5}\n") && rc == 0);
    CHECK(o.len == 0); /* emptied for the next line */
    /* an append that failed: the line's error instead of a cut line (this used to exit the process) */
    nlpd_out_str(&o, "{\"ids\": [1");
    o.oom = 1;
    CHECK(!strcmp(written(&o, 7, &rc), "{\"error\": \"out of memory building the output line\", \"line\": 7}\n"));
    CHECK(rc == NLPD_ENOMEM && !o.oom && o.len == 0);
    nlpd_out_str(&o, "{}\n");
    CHECK(!strcmp(written(&o, 8, &rc), "{}\n") && rc == 0);
    nlpd_buf_free(&o);
}

int main(void)
{
    RUN(lines);
    return TEST_REPORT();
}
