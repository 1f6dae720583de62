/* Model management signals (daemon/model_mgmt.c): the documented stable hash, fraction picks, the canary key,
 * the per-result-type comparators behind shadow agreement, and the drift counters with their exposition. */
#include <stdlib.h>

#include "harness.h"
#include "model_mgmt.h"
#include "record.h"

static void test_hash_is_the_documented_one(void)
{
    /* FNV-1a 64 over salt, NUL, data, then murmur3 fmix64: values from an independent Python implementation */
    CHECK(nlpd_mm_hash("sentiment", "abc", 3) == 0x7624191fb35c3182ULL);
    CHECK(nlpd_mm_hash("", "", 0) == 0xb9034ad37056f5fbULL);
    CHECK(nlpd_mm_hash("sentiment", "abc", 3) != nlpd_mm_hash("ner", "abc", 3)); /* stages split independently */
}

static void test_fraction(void)
{
    CHECK(!nlpd_mm_in_fraction(0, 0.0));
    CHECK(nlpd_mm_in_fraction(0, 1e-9));
    CHECK(nlpd_mm_in_fraction(UINT64_MAX, 1.0));
    CHECK(!nlpd_mm_in_fraction(UINT64_MAX, 0.999));
    CHECK(nlpd_mm_in_fraction(1ULL << 62, 0.26) && !nlpd_mm_in_fraction(1ULL << 62, 0.25)); /* 2^62 is 0.25 */
    int in = 0;
    char buf[16];
    for (int i = 0; i < 2000; i++) {
        int n = snprintf(buf, sizeof buf, "r%d", i);
        in += nlpd_mm_in_fraction(nlpd_mm_hash("sentiment", buf, (size_t)n), 0.25);
    }
    CHECK(in == 522); /* the same independent implementation's count */
}

static void test_key_of(void)
{
    struct nlpd_record r = {.text = "hello", .text_len = 5};
    size_t len = 0;
    CHECK(!strcmp(nlpd_mm_key_of(&r, NLPD_MM_KEY_ID, &len), "hello") && len == 5); /* no id: the text */
    r.id = "id-7";
    r.key = "k\0y";
    r.key_len = 3;
    CHECK(!strcmp(nlpd_mm_key_of(&r, NLPD_MM_KEY_ID, &len), "id-7") && len == 4);
    CHECK(nlpd_mm_key_of(&r, NLPD_MM_KEY_KEY, &len) == r.key && len == 3); /* binary keys keep their length */
    CHECK(!strcmp(nlpd_mm_key_of(&r, NLPD_MM_KEY_TEXT, &len), "hello"));
}

static int compare(unsigned bits, struct nlpd_record *a, struct nlpd_record *b)
{
    struct nlpd_mm_stage m;
    nlpd_mm_stage_init(&m, "s");
    int same = nlpd_mm_compare(&m, bits, a, b);
    CHECK(m.agree + m.disagree == 1 && m.agree == (uint64_t)same);
    nlpd_mm_stage_fini(&m);
    return same;
}

static void test_comparators(void)
{
    struct nlpd_record a = {.text = "x", .text_len = 1}, b = a;
    a.sentiment = (struct nlpd_label_result){.set = 1, .label = "positive", .score = 0.9f};
    b.sentiment = (struct nlpd_label_result){.set = 1, .label = "positive", .score = 0.6f};
    CHECK(compare(NLPD_RESULT_SENTIMENT, &a, &b)); /* the label decides, not the score */
    snprintf(b.sentiment.label, sizeof b.sentiment.label, "negative");
    CHECK(!compare(NLPD_RESULT_SENTIMENT, &a, &b));
    b.sentiment.set = 0;
    CHECK(!compare(NLPD_RESULT_SENTIMENT, &a, &b)); /* a result on one side only */

    a.lang = (struct nlpd_lang_result){.set = 1, .code = "de", .score = 0.9f};
    b.lang = (struct nlpd_lang_result){.set = 1, .code = "de", .score = 0.4f};
    CHECK(compare(NLPD_RESULT_LANG, &a, &b));
    snprintf(b.lang.code, sizeof b.lang.code, "nl");
    CHECK(!compare(NLPD_RESULT_LANG, &a, &b));

    /* NER: the same set of (group, start, end) in another order agrees; another span does not */
    struct nlpd_record c = {.text = "x", .text_len = 1}, d = c;
    CHECK(nlpd_record_add_entity(&c, "PER", 0.9f, "Ann", 3, 0, 3, -1, NULL) == 0);
    CHECK(nlpd_record_add_entity(&c, "LOC", 0.8f, "Rome", 4, 10, 14, -1, NULL) == 0);
    CHECK(nlpd_record_add_entity(&d, "LOC", 0.5f, "Rome", 4, 10, 14, -1, NULL) == 0);
    CHECK(nlpd_record_add_entity(&d, "PER", 0.5f, "Ann", 3, 0, 3, -1, NULL) == 0);
    CHECK(compare(NLPD_RESULT_ENTITIES, &c, &d));
    d.entities.items[0].end = 13;
    CHECK(!compare(NLPD_RESULT_ENTITIES, &c, &d));
    nlpd_record_free_results(&c);
    nlpd_record_free_results(&d);

    /* moderation: the verdict and the flagged categories; scores under the threshold do not matter */
    CHECK(nlpd_record_add_category(&c, "insult", "insult", 0.9f, 1) == 0);
    CHECK(nlpd_record_add_category(&c, "hate", "hate", 0.1f, 0) == 0);
    CHECK(nlpd_record_add_category(&d, "insult", "insult", 0.7f, 1) == 0);
    CHECK(compare(NLPD_RESULT_MODERATION, &c, &d));
    CHECK(nlpd_record_add_category(&d, "hate", "hate", 0.8f, 1) == 0);
    CHECK(!compare(NLPD_RESULT_MODERATION, &c, &d));
    nlpd_record_free_results(&c);
    nlpd_record_free_results(&d);

    /* translation: exact text */
    CHECK(nlpd_record_set_translation(&c, "Hello world", 11, "de", "en", 0) == 0);
    CHECK(nlpd_record_set_translation(&d, "Hello world", 11, "de", "en", 0) == 0);
    CHECK(compare(NLPD_RESULT_TRANSLATION, &c, &d));
    nlpd_record_free_results(&d);
    CHECK(nlpd_record_set_translation(&d, "Hello world!", 12, "de", "en", 0) == 0);
    CHECK(!compare(NLPD_RESULT_TRANSLATION, &c, &d));
    nlpd_record_free_results(&c);
    nlpd_record_free_results(&d);
}

static void test_drift_counts(void)
{
    struct nlpd_mm_stage m;
    nlpd_mm_stage_init(&m, "sentiment");
    m.low_confidence = 0.5;
    struct nlpd_record r = {.text = "four", .text_len = 4};
    r.sentiment = (struct nlpd_label_result){.set = 1, .label = "positive", .score = 0.9f};
    nlpd_mm_observe(&m, NLPD_RESULT_SENTIMENT, &r);
    r.sentiment.score = 0.3f;
    nlpd_mm_observe(&m, NLPD_RESULT_SENTIMENT, &r);
    snprintf(r.sentiment.label, sizeof r.sentiment.label, "negative");
    nlpd_mm_observe(&m, NLPD_RESULT_SENTIMENT, &r);
    nlpd_mm_observe(&m, NLPD_RESULT_LANG, &r); /* a result the record does not have: nothing */
    CHECK(m.results == 3 && m.low_conf == 2 && m.score.count == 3 && m.input_len.count == 3);
    CHECK(m.input_len.sum == 12);
    /* label series are bounded: past NLPD_MM_MAX_LABELS they count as "other" */
    for (int i = 0; i < NLPD_MM_MAX_LABELS + 5; i++) {
        snprintf(r.sentiment.label, sizeof r.sentiment.label, "l%d", i);
        nlpd_mm_observe(&m, NLPD_RESULT_SENTIMENT, &r);
    }
    CHECK(m.nlabels == NLPD_MM_MAX_LABELS && m.other == 7);
    struct nlpd_mm_stage *ms[] = {&m};
    struct nlpd_buf out = {0};
    nlpd_mm_metrics(ms, 1, &out);
    CHECK_STR_CONTAINS(out.data, "nlpd_stage_results_total{stage=\"sentiment\",label=\"positive\"} 2\n");
    CHECK_STR_CONTAINS(out.data, "nlpd_stage_results_total{stage=\"sentiment\",label=\"negative\"} 1\n");
    CHECK_STR_CONTAINS(out.data, "nlpd_stage_results_total{stage=\"sentiment\",label=\"other\"} 7\n");
    CHECK_STR_CONTAINS(out.data, "nlpd_stage_low_confidence_total{stage=\"sentiment\"} ");
    CHECK_STR_CONTAINS(out.data, "nlpd_stage_score_bucket{stage=\"sentiment\",le=\"0.5\"} ");
    CHECK(!strstr(out.data, "nlpd_shadow_")); /* no shadow: no shadow families */
    nlpd_buf_free(&out);
    nlpd_mm_stage_fini(&m);
}

/* meta.models names the model that wrote each result: a stage's canary for records with its canary_run bit. */
static void test_meta_models_canary(void)
{
    struct nlpd_item it = {0};
    it.rec.text = "t";
    it.rec.text_len = 1;
    it.rec.stages_run = 1u << 0 | 1u << 1;
    it.rec.canary_run = 1u << 1;
    struct nlpd_model_ref m[2] = {{0, "langid", "lid@sha256:00", "lid217@sha256:99"},
                                  {1, "sentiment", "pol@sha256:11", "full@sha256:22"}};
    struct nlpd_buf b = {0};
    nlpd_item_encode_json(&it, m, 2, 0.0, &b);
    CHECK_STR_CONTAINS(b.data, "\"models\":{\"langid\":\"lid@sha256:00\",\"sentiment\":\"full@sha256:22\"}");
    CHECK(!strcmp(nlpd_model_ref_id(&m[1], &it.rec), "full@sha256:22"));
    it.rec.canary_run = 0;
    CHECK(!strcmp(nlpd_model_ref_id(&m[1], &it.rec), "pol@sha256:11"));
    nlpd_buf_free(&b);
}

int main(void)
{
    RUN(test_hash_is_the_documented_one);
    RUN(test_fraction);
    RUN(test_key_of);
    RUN(test_comparators);
    RUN(test_drift_counts);
    RUN(test_meta_models_canary);
    return TEST_REPORT();
}
