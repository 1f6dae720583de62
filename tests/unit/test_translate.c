/* The translate stage through the pipeline on the Marian fixture: sentence splitting and joining, records left
 * alone, a retried batch that finds a record already reading its translation (it is translated from the input
 * text again, not from the translation), and the result helpers' swap of the text later stages read. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "diag.h"
#include "harness.h"
#include "pipeline.h"
#include "record.h"

static struct nlpd_config *cfg;

static struct nlpd_pipeline *make(const char *extra)
{
    char conf[1024];
    snprintf(conf, sizeof conf,
             "cache: { backend = \"none\"; };\nkernels: { threads = 1; };\n"
             "pipeline = ( { stage = \"translate\"; model = \"tests/fixtures/hf-tiny/marian-mt\"; num_beams = 2; "
             "max_length = 8; %s } );",
             extra);
    struct nlpd_diag d = {0};
    cfg = nlpd_config_load_string(conf, "(test)", &d);
    struct nlpd_pipeline *p = cfg ? nlpd_pipeline_create(cfg, &d) : NULL;
    nlpd_diag_print(&d, stderr);
    CHECK(p != NULL);
    return p;
}

static void run(struct nlpd_pipeline *p, struct nlpd_record *r, size_t n)
{
    struct nlpd_record *ptrs[8];
    for (size_t i = 0; i < n; i++)
        ptrs[i] = &r[i];
    struct nlpd_batch b = {.n = n, .recs = ptrs};
    nlpd_pipeline_run_inline(p, &b);
}

static void set_text(struct nlpd_record *r, const char *text, const char *lang)
{
    memset(r, 0, sizeof *r);
    r->text = text;
    r->text_len = strlen(text);
    if (lang) {
        r->lang.set = 1;
        strcpy(r->lang.code, lang);
    }
}

static void clear(struct nlpd_record *r, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(r[i].error);
        nlpd_record_free_results(&r[i]);
    }
}

static void sentences_and_retry(void)
{
    struct nlpd_pipeline *p = make("");
    if (!p)
        return;
    struct nlpd_record r[5];
    set_text(&r[0], "Erster Satz. Zweiter Satz!", "de");
    set_text(&r[1], "Erster Satz.", "de");
    set_text(&r[2], "Zweiter Satz!", "de");
    set_text(&r[3], "Already English.", "en");
    set_text(&r[4], "  \n ", "de"); /* nothing to translate: left alone, not failed */
    run(p, r, 5);
    for (int i = 0; i < 3; i++)
        CHECK(r[i].translation.set && !r[i].error);
    CHECK(!r[3].translation.set && !r[4].translation.set && !r[4].error);
    /* the two sentences translate as they do alone, joined by a space */
    char want[512];
    snprintf(want, sizeof want, "%s %s", r[1].translation.text, r[2].translation.text);
    CHECK(strcmp(r[0].translation.text, want) == 0);
    /* later stages read the translation; the input stays reachable */
    size_t in_len;
    CHECK(r[0].text == r[0].translation.text);
    CHECK(strcmp(nlpd_record_input_text(&r[0], &in_len), "Erster Satz. Zweiter Satz!") == 0);
    /* a retry of the same batch: the record already reads its translation, and gets the same one again */
    char *first = strdup(r[0].translation.text);
    run(p, r, 1);
    CHECK(r[0].translation.set && strcmp(r[0].translation.text, first) == 0);
    CHECK(strcmp(nlpd_record_input_text(&r[0], &in_len), "Erster Satz. Zweiter Satz!") == 0);
    free(first);
    clear(r, 5);
    CHECK(strcmp(r[0].text, "Erster Satz. Zweiter Satz!") == 0); /* freeing restores the input text */
    nlpd_pipeline_free(p);
    nlpd_config_free(cfg);
}

static void downstream_original(void)
{
    struct nlpd_pipeline *p = make("downstream = \"original\"; split_sentences = false;");
    if (!p)
        return;
    struct nlpd_record r[1];
    set_text(&r[0], "Ein Satz. Noch einer.", "de");
    run(p, r, 1);
    CHECK(r[0].translation.set && r[0].translation.input_text == NULL);
    CHECK(strcmp(r[0].text, "Ein Satz. Noch einer.") == 0);
    CHECK(strcmp(r[0].translation.source_lang, "de") == 0 && strcmp(r[0].translation.target_lang, "en") == 0);
    clear(r, 1);
    nlpd_pipeline_free(p);
    nlpd_config_free(cfg);
}

int main(void)
{
    RUN(sentences_and_retry);
    RUN(downstream_original);
    return TEST_REPORT();
}
