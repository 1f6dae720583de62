/* Exposition helpers: label values escaped, bounded label counters with "other". */
#include <stdio.h>
#include <stdlib.h>

#include "harness.h"
#include "metrics.h"

static void label_escape(void)
{
    char b[64];
    CHECK(strcmp(nlpd_metric_label(b, sizeof b, "plain"), "plain") == 0);
    CHECK(strcmp(nlpd_metric_label(b, sizeof b, "a\"b\\c\nd"), "a\\\"b\\\\c\\nd") == 0);
    CHECK(strcmp(nlpd_metric_label(b, sizeof b, NULL), "") == 0);
    /* Cut to fit: never half an escape, never half a UTF-8 character. */
    CHECK(strcmp(nlpd_metric_label(b, 5, "abc\"d"), "abc") == 0);
    CHECK(strcmp(nlpd_metric_label(b, 5, "ab\xc3\xa9\xc3\xa9"), "ab\xc3\xa9") == 0);
    CHECK(strcmp(nlpd_metric_label(b, 4, "ab\xe2\x82\xac"), "ab") == 0);
}

/* 20 distinct labels: the first 15 keep their series, the other 5 count under "other" (the 16th series). */
static void label_counts_other(void)
{
    struct nlpd_label_counts c = {0};
    char name[32];
    for (int i = 0; i < 20; i++) {
        snprintf(name, sizeof name, "stage%d", i);
        nlpd_label_counts_add(&c, name);
        nlpd_label_counts_add(&c, name);
    }
    nlpd_label_counts_add(&c, "stage3");
    nlpd_label_counts_add(&c, "a\"b");
    struct nlpd_buf out = {0};
    nlpd_label_counts_write(&c, "x_total", "reason", &out);
    CHECK(c.n == 16);
    CHECK_STR_CONTAINS(out.data, "x_total{reason=\"stage0\"} 2\n");
    CHECK_STR_CONTAINS(out.data, "x_total{reason=\"stage3\"} 3\n");
    CHECK_STR_CONTAINS(out.data, "x_total{reason=\"stage14\"} 2\n");
    CHECK_STR_CONTAINS(out.data, "x_total{reason=\"other\"} 11\n");
    CHECK(out.data && !strstr(out.data, "stage15"));
    nlpd_buf_free(&out);
    /* A long label is cut on a character boundary. */
    struct nlpd_label_counts l = {0};
    char longname[100];
    memset(longname, 'a', 62);
    strcpy(longname + 62, "\xc3\xa9\xc3\xa9");
    nlpd_label_counts_add(&l, longname);
    CHECK(strlen(l.c[0].label) == 62);
}

int main(void)
{
    RUN(label_escape);
    RUN(label_counts_other);
    return TEST_REPORT();
}
