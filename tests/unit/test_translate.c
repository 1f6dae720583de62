/* The translate stage through the pipeline on the Marian fixture: sentence splitting and joining, records left
 * alone, a retried batch that finds a record already reading its translation (it is translated from the input
 * text again, not from the translation), and the result helpers' swap of the text later stages read. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "diag.h"
#include "harness.h"
#include "nlpd_kernels.h"
#include "pipeline.h"
#include "record.h"
#include "translate/sentences.h"

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

/* Splits text at nlpd_sentence_end into "|"-joined sentences (as the stage does, trimmed) in out. */
static void split(const char *text, char *out, size_t cap)
{
    size_t len = strlen(text), start = 0, o = 0;
    for (size_t i = 0; i < len;) {
        size_t e = nlpd_sentence_end(text, len, i);
        i += e ? e : 1;
        if (e || i == len) {
            size_t a = start, b = i;
            while (a < b && nlpd_sentence_space((unsigned char)text[a]))
                a++;
            while (b > a && nlpd_sentence_space((unsigned char)text[b - 1]))
                b--;
            if (b > a && o + (b - a) + 2 < cap) {
                if (o)
                    out[o++] = '|';
                memcpy(out + o, text + a, b - a);
                o += b - a;
            }
            start = i;
        }
    }
    out[o] = 0;
}

static void sentence_boundaries(void)
{
    static const char *const cases[][2] = {
        {"Dr. Weber kam um 3 Uhr. Er sah z.B. J. Smith. Dann ging er.",
         "Dr. Weber kam um 3 Uhr.|Er sah z.B. J. Smith.|Dann ging er."},
        {"Es war am 2. Mai. Version 1.2 kam.", "Es war am 2. Mai.|Version 1.2 kam."},
        {"He left, i.e. early. Really? Yes! ok.", "He left, i.e. early.|Really?|Yes!|ok."},
        {"Born in 1990. Then he left.", "Born in 1990.|Then he left."},
        {"Mr. and Mrs. Smith met Prof. Jones etc. and left.", "Mr. and Mrs. Smith met Prof. Jones etc. and left."},
        {"No dot at the end\nNext line", "No dot at the end|Next line"},
        {"\xe4\xbd\xa0\xe5\xa5\xbd\xe3\x80\x82\xe8\xb0\xa2\xe8\xb0\xa2\xef\xbc\x81\xe5\x86\x8d\xe8\xa7\x81",
         "\xe4\xbd\xa0\xe5\xa5\xbd\xe3\x80\x82|\xe8\xb0\xa2\xe8\xb0\xa2\xef\xbc\x81|\xe5\x86\x8d\xe8\xa7\x81"},
        {"Ends with a dot.", "Ends with a dot."},
        {"  . ", "."},
    };
    char got[512];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        split(cases[i][0], got, sizeof got);
        if (strcmp(got, cases[i][1]))
            fprintf(stderr, "split(\"%s\") = \"%s\"\n", cases[i][0], got);
        CHECK(strcmp(got, cases[i][1]) == 0);
    }
    /* through the stage: a record's sentences translate as they do alone, joined by a space */
    struct nlpd_pipeline *p = make("");
    if (!p)
        return;
    struct nlpd_record r[3];
    set_text(&r[0], "Dr. Weber kam um 3 Uhr. Er sah z.B. J. Smith.", "de");
    set_text(&r[1], "Dr. Weber kam um 3 Uhr.", "de");
    set_text(&r[2], "Er sah z.B. J. Smith.", "de");
    run(p, r, 3);
    char want[1024];
    snprintf(want, sizeof want, "%s %s", r[1].translation.text, r[2].translation.text);
    CHECK(r[0].translation.set && strcmp(r[0].translation.text, want) == 0);
    clear(r, 3);
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
    /* fp32 goldens: the process default dtype (auto) would take fp16 on a CUDA device, emulated ones included */
    nlpd_kernels_set_defaults(NULL, 0, NLPD_DTYPE_F32);
    RUN(sentences_and_retry);
    RUN(sentence_boundaries);
    RUN(downstream_original);
    return TEST_REPORT();
}
