/* The ner stage's decoding (stages/ner/ner_aggregate.c): the token logits, tokens and offsets of every
 * tests/fixtures/hf-tiny/ *-token-cls/pipeline_golden.json go through softmax + aggregation, with the words from the
 * folder's tokenizer decoder, and must give the transformers pipeline's entities for every strategy (for
 * DeBERTa-v3 the logits come from running the model on the tokenizer's ids); plus the decoder, the window plan and
 * the gazetteer. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "encoder.h"
#include "harness.h"
#include "ner/gazetteer.h"
#include "ner/ner_aggregate.h"
#include "tokenizer.h"

#define FIX "tests/fixtures/hf-tiny/"

static void test_parse(void)
{
    CHECK(nlpd_ner_agg_parse("none") == NLPD_NER_NONE);
    CHECK(nlpd_ner_agg_parse("simple") == NLPD_NER_SIMPLE);
    CHECK(nlpd_ner_agg_parse("first") == NLPD_NER_FIRST);
    CHECK(nlpd_ner_agg_parse("average") == NLPD_NER_AVERAGE);
    CHECK(nlpd_ner_agg_parse("max") == NLPD_NER_MAX);
    CHECK(nlpd_ner_agg_parse("Simple") == -1);
    CHECK(nlpd_ner_agg_parse(NULL) == -1);
}

static int decode_is(const char *const *toks, size_t n, const char *want)
{
    size_t lens[16];
    for (size_t i = 0; i < n; i++)
        lens[i] = strlen(toks[i]);
    char *buf = NULL;
    size_t len = 0, cap = 0;
    int ok =
        nlpd_ner_decode(toks, lens, n, &buf, &len, &cap) == 0 && buf && strcmp(buf, want) == 0 && len == strlen(want);
    if (!ok)
        fprintf(stderr, "decode: got \"%s\", want \"%s\"\n", buf ? buf : "(null)", want);
    free(buf);
    return ok;
}

static void test_decode(void)
{
    CHECK(decode_is((const char *[]){"new", "york", "."}, 3, "new york."));
    CHECK(decode_is((const char *[]){"##o"}, 1, "##o"));
    CHECK(decode_is((const char *[]){"j", "##o", "##hn"}, 3, "john"));
    CHECK(decode_is((const char *[]){"it", "'s", "ok", "!", "?", ","}, 6, "it's ok!?,"));
    CHECK(
        decode_is((const char *[]){"don", "n't", "i", "'m", "we", "'ve", "you", "'re"}, 8, "donn't i'm we've you're"));
    CHECK(decode_is((const char *[]){"muller", "-", "lu"}, 3, "muller - lu"));
    CHECK(decode_is((const char *[]){"a", "##"}, 2, "a"));
}

static void test_subword(void)
{
    CHECK(nlpd_ner_is_subword("##ur", 4, 1, 3));
    CHECK(!nlpd_ner_is_subword("z", 1, 0, 1));
    CHECK(!nlpd_ner_is_subword("\xc3\xbc", 2, 0, 1)); /* one code point */
    CHECK(nlpd_ner_is_subword("##s", 3, 5, 6));
}

static void test_windows(void)
{
    size_t st[64];
    CHECK(nlpd_ner_windows(10, 4, 1, st, 64) == 3);
    CHECK(st[0] == 0 && st[1] == 3 && st[2] == 6);
    CHECK(nlpd_ner_windows(3, 4, 1, st, 64) == 1 && st[0] == 0);
    CHECK(nlpd_ner_windows(0, 4, 1, st, 64) == 1);
    CHECK(nlpd_ner_windows(5, 0, 1, st, 64) == 0);
    /* Every plan covers every token, overlaps by >= min(stride, win/2), ends at n, and the count is exact. */
    for (size_t n = 1; n < 300; n += 7)
        for (size_t win = 1; win < 70; win += 5)
            for (size_t stride = 0; stride < 40; stride += 9) {
                size_t k = nlpd_ner_windows(n, win, stride, NULL, 0);
                if (k > 64)
                    continue;
                CHECK(nlpd_ner_windows(n, win, stride, st, 64) == k);
                size_t s2 = stride > win / 2 ? win / 2 : stride;
                size_t len_last = n < win ? n : win;
                CHECK(st[0] == 0 && st[k - 1] + len_last == n);
                for (size_t i = 1; i < k; i++)
                    CHECK(st[i] > st[i - 1] && st[i - 1] + win >= st[i] + s2);
            }
    CHECK(nlpd_ner_edge_dist(5, 3, 6) == 2);
    CHECK(nlpd_ner_edge_dist(3, 3, 6) == 0);
    CHECK(nlpd_ner_edge_dist(8, 3, 6) == 0);
}

/* Byte offset of code point cp in s. */
static size_t cp_byte(const char *s, size_t cp)
{
    size_t b = 0;
    while (cp && s[b]) {
        b++;
        while (((unsigned char)s[b] & 0xC0) == 0x80)
            b++;
        cp--;
    }
    return b;
}

static int golden_total, golden_failed, softmax_exact, softmax_total, subword_bad, model_bad;
static double softmax_maxdiff, logit_maxdiff;
/* Golden logits: scores must be the softmax's to 1e-6. Model logits are within atol + rtol * |z| (1e-4 each, the
 * encoder parity bound) of the golden ones, which moves each softmax output p_k by at most
 * p_k * (exp(2 * dmax) - 1) <= 2.001 * dmax for these small dmax; entity scores are one token's score or a mean of
 * them, so the same bound holds for them. */
static double score_tol = 1e-6, score_ratio_max;

/* The model run on the tokenizer's ids of one example (NULL: use the golden logits). */
struct model_run {
    struct nlpd_encoder *enc;
    struct nlpd_encoder_ws *ws;
    size_t max_len;
};

static int decode_words(const void *tok, const char *const *toks, const size_t *lens, size_t n, char **buf, size_t *len,
                        size_t *cap)
{
    return nlpd_tokenizer_convert_tokens_to_string(tok, toks, lens, n, buf, len, cap);
}

static void check_example(json_t *ex, const char *const *labels, int nl, json_t *root, const struct nlpd_tokenizer *tok,
                          struct model_run *mr)
{
    const char *text = json_string_value(json_object_get(ex, "text"));
    json_t *ids = json_object_get(ex, "input_ids"), *toks = json_object_get(ex, "tokens"),
           *offs = json_object_get(ex, "offsets"), *spec = json_object_get(ex, "special_tokens_mask"),
           *logits = json_object_get(ex, "logits"), *scores = json_object_get(ex, "scores"),
           *isw = json_object_get(ex, "is_subword");
    size_t n = json_array_size(ids);
    long unk = (long)json_integer_value(json_object_get(root, "unk_token_id"));
    struct nlpd_ner_pre *pre = calloc(n, sizeof *pre);
    float *sc = calloc(n * (size_t)nl, sizeof *sc);
    float *lg = calloc((size_t)nl, sizeof *lg);
    size_t np = 0;
    float *model_lg = NULL;
    score_tol = 1e-6;
    if (mr) {
        struct nlpd_encoding e = {0};
        struct nlpd_error err = {0};
        int ok = nlpd_tokenizer_encode(tok, text, strlen(text), NULL, 0, mr->max_len, &e, &err) == 0 && e.n == n;
        for (size_t i = 0; ok && i < n; i++)
            ok = e.ids[i] == (int32_t)json_integer_value(json_array_get(ids, i));
        model_lg = calloc(n * (size_t)nl + 1, sizeof *model_lg);
        struct nlpd_encoder_input in = {1, (int)n, e.ids, NULL, e.type_ids};
        struct nlpd_encoder_output out = {.logits = model_lg};
        if (!ok || nlpd_encoder_forward(mr->enc, mr->ws, &in, &out, &err)) {
            fprintf(stderr, "model run on \"%.30s\": ids differ or %s\n", text, err.message);
            model_bad++;
        }
        nlpd_encoding_free(&e);
        double dmax = 0;
        for (size_t i = 0; i < n; i++)
            for (int k = 0; k < nl; k++) {
                double g = json_number_value(json_array_get(json_array_get(logits, i), (size_t)k));
                double got = model_lg[i * (size_t)nl + k], d = fabs(got - g);
                logit_maxdiff = fmax(logit_maxdiff, d);
                if (d > 1e-4 + 1e-4 * fabs(g))
                    model_bad++;
                dmax = fmax(dmax, 1e-4 + 1e-4 * fabs(g));
            }
        score_tol = 2.001 * dmax;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *row = json_array_get(logits, i), *srow = json_array_get(scores, i);
        for (int k = 0; k < nl; k++)
            lg[k] = model_lg ? model_lg[i * (size_t)nl + k] : (float)json_number_value(json_array_get(row, (size_t)k));
        float *s = sc + i * (size_t)nl;
        nlpd_ner_softmax(lg, nl, s);
        for (int k = 0; k < nl; k++) {
            double g = json_number_value(json_array_get(srow, (size_t)k)), d = fabs(g - (double)s[k]);
            softmax_total++;
            softmax_exact += d == 0.0;
            if (d > softmax_maxdiff)
                softmax_maxdiff = d;
            score_ratio_max = fmax(score_ratio_max, d / score_tol);
        }
        if (json_integer_value(json_array_get(spec, i)))
            continue;
        struct nlpd_ner_pre *p = &pre[np++];
        json_t *off = json_array_get(offs, i);
        p->start = (int32_t)json_integer_value(json_array_get(off, 0));
        p->end = (int32_t)json_integer_value(json_array_get(off, 1));
        p->index = (int32_t)i;
        p->scores = s;
        if (json_integer_value(json_array_get(ids, i)) == unk) {
            size_t b0 = cp_byte(text, (size_t)p->start), b1 = cp_byte(text, (size_t)p->end);
            p->word = text + b0;
            p->word_len = b1 - b0;
            p->is_subword = 0;
        } else {
            p->word = json_string_value(json_array_get(toks, i));
            p->word_len = strlen(p->word);
            if (json_is_string(json_object_get(root, "continuing_subword_prefix"))) {
                p->is_subword = nlpd_ner_is_subword(p->word, p->word_len, p->start, p->end);
            } else { /* the fallback: start > 0 and no space in text[start-1:start+1] */
                size_t b0 = p->start > 0 ? cp_byte(text, (size_t)p->start - 1) : 0,
                       b1 = cp_byte(text, (size_t)p->start);
                p->is_subword = p->start > 0 && text[b0] != ' ' && text[b1] != ' ';
            }
        }
        if (p->is_subword != json_is_true(json_array_get(isw, i))) {
            subword_bad++;
            fprintf(stderr, "is_subword differs at token %zu of \"%s\"\n", i, text);
        }
    }
    static const char *const strat[] = {"none", "simple", "first", "average", "max"};
    const char *ignore[] = {"O"};
    struct nlpd_ner_out out = {0};
    for (int a = 0; a < 5; a++) {
        out.decode = decode_words;
        out.decode_ctx = tok;
        json_t *gold = json_object_get(json_object_get(ex, "entities"), strat[a]);
        golden_total++;
        int bad = nlpd_ner_aggregate(pre, np, labels, nl, (enum nlpd_ner_agg)a, ignore, 1, &out) != 0;
        if (!bad && out.n != json_array_size(gold)) {
            fprintf(stderr, "%s \"%.30s\": %zu entities, golden %zu\n", strat[a], text, out.n, json_array_size(gold));
            bad = 1;
        }
        for (size_t i = 0; !bad && i < out.n; i++) {
            json_t *g = json_array_get(gold, i);
            const struct nlpd_ner_ent *e = &out.ents[i];
            const char *gg = json_string_value(json_object_get(g, a == 0 ? "entity" : "entity_group"));
            const char *gw = json_string_value(json_object_get(g, "word"));
            double gs = json_number_value(json_object_get(g, "score"));
            int32_t gst = (int32_t)json_integer_value(json_object_get(g, "start"));
            int32_t gen = (int32_t)json_integer_value(json_object_get(g, "end"));
            int32_t gix = a == 0 ? (int32_t)json_integer_value(json_object_get(g, "index")) : -1;
            if (strcmp(gg, e->group) || strlen(gw) != e->word_len || memcmp(gw, out.words + e->word_off, e->word_len) ||
                fabs(gs - e->score) > score_tol || gst != e->start || gen != e->end || gix != e->index) {
                fprintf(stderr,
                        "%s \"%.30s\" entity %zu: got %s %.9g \"%.*s\" %d-%d #%d, golden %s %.9g \"%s\" %d-%d #%d\n",
                        strat[a], text, i, e->group, e->score, (int)e->word_len, out.words + e->word_off, e->start,
                        e->end, e->index, gg, gs, gw, gst, gen, gix);
                bad = 1;
            }
        }
        golden_failed += bad;
    }
    nlpd_ner_out_free(&out);
    free(pre);
    free(sc);
    free(lg);
    free(model_lg);
}

static void test_golden_dir(const char *dir, int run_model)
{
    char path[512];
    snprintf(path, sizeof path, FIX "%s/pipeline_golden.json", dir);
    golden_total = golden_failed = softmax_exact = softmax_total = subword_bad = model_bad = 0;
    softmax_maxdiff = logit_maxdiff = score_ratio_max = 0;
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    snprintf(path, sizeof path, FIX "%s", dir);
    struct nlpd_error err = {0};
    struct nlpd_tokenizer *tok = nlpd_tokenizer_load(path, &err);
    CHECK(root != NULL && tok != NULL);
    if (!root || !tok) {
        json_decref(root);
        nlpd_tokenizer_free(tok);
        return;
    }
    json_t *id2 = json_object_get(root, "id2label");
    int nl = (int)json_object_size(id2);
    const char *labels[64];
    for (int i = 0; i < nl && i < 64; i++) {
        char k[16];
        snprintf(k, sizeof k, "%d", i);
        labels[i] = json_string_value(json_object_get(id2, k));
    }
    struct model_run mr = {0};
    if (run_model) {
        struct nlpd_encoder_opts opts = {.threads = 1};
        mr.enc = nlpd_encoder_load(path, &opts, &err);
        mr.ws = mr.enc ? nlpd_encoder_ws_new(mr.enc, 1, 16, &err) : NULL;
        mr.max_len = (size_t)json_integer_value(json_object_get(root, "model_max_length"));
        CHECK(mr.enc && mr.ws && mr.max_len > 0);
        if (!mr.ws)
            fprintf(stderr, "%s: %s\n", path, err.message);
    }
    json_t *exs = json_object_get(root, "examples");
    for (size_t i = 0; i < json_array_size(exs) && (!run_model || mr.ws); i++)
        check_example(json_array_get(exs, i), labels, nl, root, tok, run_model ? &mr : NULL);
    printf("%s golden%s: %d example x strategy cases, %d failed; softmax %d/%d values bit-exact, max |diff| %.3g "
           "(%.3g of its bound)\n",
           dir, run_model ? " (model run)" : "", golden_total, golden_failed, softmax_exact, softmax_total,
           softmax_maxdiff, score_ratio_max);
    if (run_model)
        printf("%s: logits of the model vs golden max |diff| %.3g, %d out of bound\n", dir, logit_maxdiff, model_bad);
    CHECK(golden_total == 5 * (int)json_array_size(exs) && golden_total >= 60);
    CHECK(golden_failed == 0);
    CHECK(subword_bad == 0);
    CHECK(model_bad == 0);
    CHECK(score_ratio_max <= 1.0);
    nlpd_encoder_ws_free(mr.ws);
    nlpd_encoder_free(mr.enc);
    json_decref(root);
    nlpd_tokenizer_free(tok);
}

/* Every token-classification fixture with pipeline goldens: WordPiece (BERT) and SentencePiece Unigram with the
 * Metaspace decoder (DeBERTa-v3), whose words the pipeline joins without spaces under its fallback sub-word rule;
 * DeBERTa's from the model itself, on the tokenizer's ids. */
static void test_golden(void)
{
    test_golden_dir("bert-token-cls", 0);
    test_golden_dir("deberta-v2-token-cls", 1);
}

/* A few pre-entities by hand: ignore lists, labels without B-/I-, empty input. */
static void test_handmade(void)
{
    const char *labels[] = {"O", "B-PER", "I-PER", "LOC"};
    float s[5][4] = {{0.1f, 0.7f, 0.1f, 0.1f},
                     {0.1f, 0.1f, 0.8f, 0.0f},
                     {0.1f, 0.0f, 0.0f, 0.9f},
                     {0.0f, 0.0f, 0.0f, 1.0f},
                     {0.9f, 0.1f, 0.0f, 0.0f}};
    struct nlpd_ner_pre pre[5] = {
        {"ann", 3, 0, 3, 1, 0, s[0]},   {"##a", 3, 3, 4, 2, 1, s[1]}, {"in", 2, 5, 7, 3, 0, s[2]},
        {"rome", 4, 8, 12, 4, 0, s[3]}, {".", 1, 12, 13, 5, 0, s[4]},
    };
    struct nlpd_ner_out out = {0};
    CHECK(nlpd_ner_aggregate(pre, 5, labels, 4, NLPD_NER_SIMPLE, (const char *[]){"O"}, 1, &out) == 0);
    CHECK(out.n == 2);
    if (out.n == 2) {
        CHECK(strcmp(out.ents[0].group, "PER") == 0 && out.ents[0].start == 0 && out.ents[0].end == 4);
        CHECK(fabsf(out.ents[0].score - 0.75f) < 1e-6f);
        CHECK(out.ents[0].word_len == 4 && memcmp(out.words + out.ents[0].word_off, "anna", 4) == 0);
        CHECK(strcmp(out.ents[1].group, "LOC") == 0 && out.ents[1].start == 5 && out.ents[1].end == 12);
        CHECK(memcmp(out.words + out.ents[1].word_off, "in rome", 7) == 0);
    }
    CHECK(nlpd_ner_aggregate(pre, 5, labels, 4, NLPD_NER_FIRST, (const char *[]){"O", "LOC"}, 2, &out) == 0);
    CHECK(out.n == 1 && strcmp(out.ents[0].group, "PER") == 0 && fabsf(out.ents[0].score - 0.7f) < 1e-6f);
    CHECK(nlpd_ner_aggregate(pre, 5, labels, 4, NLPD_NER_MAX, NULL, 0, &out) == 0);
    CHECK(out.n == 3 && strcmp(out.ents[0].group, "I-PER" + 2) == 0 && fabsf(out.ents[0].score - 0.8f) < 1e-6f);
    CHECK(out.n == 3 && strcmp(out.ents[2].group, "O") == 0);
    CHECK(nlpd_ner_aggregate(pre, 5, labels, 4, NLPD_NER_NONE, (const char *[]){"O"}, 1, &out) == 0);
    CHECK(out.n == 4 && out.ents[1].index == 2 && strcmp(out.ents[1].group, "I-PER") == 0);
    CHECK(out.n == 4 && out.ents[1].word_len == 3 && memcmp(out.words + out.ents[1].word_off, "##a", 3) == 0);
    CHECK(nlpd_ner_aggregate(pre, 0, labels, 4, NLPD_NER_AVERAGE, NULL, 0, &out) == 0 && out.n == 0);
    nlpd_ner_out_free(&out);
}

struct hits {
    int n;
    size_t b0[8], b1[8];
    int32_t c0[8], c1[8];
};

static int on_hit(void *ctx, size_t b0, size_t b1, int32_t c0, int32_t c1)
{
    struct hits *h = ctx;
    if (h->n < 8) {
        h->b0[h->n] = b0;
        h->b1[h->n] = b1;
        h->c0[h->n] = c0;
        h->c1[h->n] = c1;
    }
    h->n++;
    return 0;
}

static void test_gazetteer(void)
{
    const char tsv[] = "name\tcountry\tadmin1\nNew York\tUS\tNY\nYork\tGB\t\nS\xc3\xa3o Paulo\tBR\t27\n"
                       "Paris\tFR\t11\nWinston-Salem\tUS\tNC\n\nYork\tUS\t\n";
    struct nlpd_error err = {0};
    struct nlpd_gazetteer *g = nlpd_gazetteer_load_mem(tsv, sizeof tsv - 1, "test", &err);
    CHECK(g != NULL);
    if (!g)
        return;
    CHECK(nlpd_gazetteer_size(g) == 5);
    CHECK(nlpd_gazetteer_contains(g, "York", 4) && !nlpd_gazetteer_contains(g, "york", 4));
    CHECK(!nlpd_gazetteer_contains(g, "name", 4));
    struct hits h = {0};
    const char *t = "From S\xc3\xa3o Paulo to New York, Parisian Yorkshire Paris. Winston-Salem!";
    CHECK(nlpd_gazetteer_scan(g, t, strlen(t), on_hit, &h) == 0);
    CHECK(h.n == 4);
    if (h.n == 4) {
        CHECK(h.c0[0] == 5 && h.c1[0] == 14 && h.b1[0] - h.b0[0] == 10); /* São Paulo */
        CHECK(h.c0[1] == 18 && h.c1[1] == 26);                           /* New York, not York */
        CHECK(h.c0[2] == 47 && h.c1[2] == 52);                           /* Paris, not Parisian */
        CHECK(h.c0[3] == 54 && h.c1[3] == 67);
    }
    nlpd_gazetteer_free(g);
    /* Column "name" when it is not the first (admin1.tsv), and a file that does not exist. */
    const char adm[] = "code\tname\nAD.06\tSant Juli\xc3\xa0 de Loria\n";
    g = nlpd_gazetteer_load_mem(adm, sizeof adm - 1, "adm", &err);
    CHECK(g && nlpd_gazetteer_size(g) == 1 && nlpd_gazetteer_contains(g, "Sant Juli\xc3\xa0 de Loria", 20));
    nlpd_gazetteer_free(g);
    CHECK(nlpd_gazetteer_load("/nonexistent/x.tsv", &err) == NULL && err.code == NLPD_ENOTFOUND);
}

int main(void)
{
    RUN(test_parse);
    RUN(test_decode);
    RUN(test_subword);
    RUN(test_windows);
    RUN(test_golden);
    RUN(test_handmade);
    RUN(test_gazetteer);
    return TEST_REPORT();
}
