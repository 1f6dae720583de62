/* JSON input records, the output encoder, UTF-8 validation, `when` conditions, text normalisation. */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>

#include "buf.h"
#include "harness.h"
#include "record.h"
#include "text_norm.h"
#include "when.h"

static struct nlpd_input_conf in = {.format = "json", .text_field = "text", .id_field = "id", .max_text_bytes = 64};

/* Decodes s; returns the error reason ("" when it decoded) in a static buffer. */
static const char *decode(const char *s, struct nlpd_item *it)
{
    static char why[512];
    memset(it, 0, sizeof *it);
    int rc = nlpd_item_decode_json(it, &in, s, strlen(s));
    snprintf(why, sizeof why, "%s", it->rec.error ? it->rec.error : "");
    CHECK((rc == 0) == (it->rec.error == NULL));
    return why;
}

static void good_records(void)
{
    struct nlpd_item it;
    CHECK(strcmp(decode("{\"id\": \"a1\", \"text\": \"hello\"}", &it), "") == 0);
    CHECK(it.rec.text_len == 5 && strcmp(it.rec.text, "hello") == 0 && strcmp(it.id, "a1") == 0);
    nlpd_item_clear(&it);
    CHECK(strcmp(decode("{\"id\": 42, \"text\": \"caf\\u00e9 \\ud83d\\ude00\"}", &it), "") == 0);
    CHECK(strcmp(it.id, "42") == 0 && strcmp(it.rec.text, "caf\xc3\xa9 \xf0\x9f\x98\x80") == 0);
    nlpd_item_clear(&it);
    CHECK(strcmp(decode("{\"text\": \"x\"}", &it), "") == 0 && it.id == NULL);
    nlpd_item_clear(&it);
}

static void dotted_paths(void)
{
    struct nlpd_input_conf saved = in;
    in.text_field = "payload.body";
    in.id_field = "meta.id";
    struct nlpd_item it;
    CHECK(strcmp(decode("{\"meta\": {\"id\": 7}, \"payload\": {\"body\": \"deep\"}}", &it), "") == 0);
    CHECK(strcmp(it.rec.text, "deep") == 0 && strcmp(it.id, "7") == 0);
    nlpd_item_clear(&it);
    /* A key that itself contains the dot wins over the walk. */
    CHECK(strcmp(decode("{\"payload.body\": \"flat\", \"payload\": {\"body\": \"deep\"}}", &it), "") == 0);
    CHECK(strcmp(it.rec.text, "flat") == 0);
    nlpd_item_clear(&it);
    CHECK_STR_CONTAINS(decode("{\"payload\": \"notobj\"}", &it), "missing text field \"payload.body\"");
    nlpd_item_clear(&it);
    CHECK_STR_CONTAINS(decode("{\"payload\": {\"body\": [1]}}", &it), "is an array, not a string");
    nlpd_item_clear(&it);
    in = saved;
}

static void bad_records(void)
{
    struct nlpd_item it;
    CHECK_STR_CONTAINS(decode("not json", &it), "invalid JSON");
    nlpd_item_clear(&it);
    CHECK_STR_CONTAINS(decode("{\"text\": \"unterminated}", &it), "invalid JSON");
    nlpd_item_clear(&it);
    CHECK_STR_CONTAINS(decode("", &it), "empty record");
    nlpd_item_clear(&it);
    CHECK_STR_CONTAINS(decode(" \t", &it), "empty record");
    nlpd_item_clear(&it);
    CHECK_STR_CONTAINS(decode("[\"text\"]", &it), "record is an array, not a JSON object");
    nlpd_item_clear(&it);
    CHECK_STR_CONTAINS(decode("\"text\"", &it), "record is a string, not a JSON object");
    nlpd_item_clear(&it);
    CHECK_STR_CONTAINS(decode("12", &it), "record is a number, not a JSON object");
    nlpd_item_clear(&it);
    CHECK_STR_CONTAINS(decode("{\"txt\": \"x\"}", &it), "missing text field \"text\"");
    nlpd_item_clear(&it);
    CHECK_STR_CONTAINS(decode("{\"text\": null}", &it), "is null, not a string");
    nlpd_item_clear(&it);
    CHECK_STR_CONTAINS(decode("{\"text\": 3.5}", &it), "is a number, not a string");
    nlpd_item_clear(&it);
    CHECK_STR_CONTAINS(decode("{\"text\": \"\"}", &it), "empty text");
    nlpd_item_clear(&it);
    CHECK_STR_CONTAINS(decode("{\"text\": \" \\t\\n \"}", &it), "empty text (only whitespace)");
    nlpd_item_clear(&it);
    CHECK_STR_CONTAINS(decode("{\"text\": \"a\xff\"}", &it), "invalid UTF-8 at byte 11");
    nlpd_item_clear(&it);
    CHECK_STR_CONTAINS(decode("{\"text\": \"a\\u0000b\"}", &it), "text contains a NUL character");
    nlpd_item_clear(&it);
    CHECK_STR_CONTAINS(decode("{\"text\": \"\\ud800\"}", &it), "invalid JSON"); /* lone surrogate */
    nlpd_item_clear(&it);
    CHECK_STR_CONTAINS(decode("{\"text\": \"a\", \"text\": \"b\"}", &it), "duplicate");
    nlpd_item_clear(&it);
    char big[200];
    snprintf(big, sizeof big, "{\"text\": \"%065d\"}", 0);
    CHECK_STR_CONTAINS(decode(big, &it), "text is too long: 65 bytes, over input.max_text_bytes = 64");
    nlpd_item_clear(&it);
    snprintf(big, sizeof big, "{\"text\": \"%064d\"}", 0);
    CHECK(strcmp(decode(big, &it), "") == 0);
    nlpd_item_clear(&it);
    /* Deep nesting is bounded by jansson, not a stack overflow. */
    size_t depth = 100000;
    char *deep = malloc(2 * depth + 1);
    memset(deep, '[', depth);
    memset(deep + depth, ']', depth);
    deep[2 * depth] = '\0';
    CHECK_STR_CONTAINS(decode(deep, &it), "invalid JSON");
    nlpd_item_clear(&it);
    free(deep);
}

/* A Kafka payload is not NUL-terminated: the decoder reads only [data, data + len) (ASan checks the bound). */
static void unterminated_payload(void)
{
    static const char *const payloads[] = {"\r", " \t\r", "{\"text\": \"hi\"}", "{\"id\": 5, \"text\": \" \"}", "1"};
    for (size_t i = 0; i < sizeof payloads / sizeof payloads[0]; i++) {
        size_t n = strlen(payloads[i]);
        char *exact = malloc(n);
        memcpy(exact, payloads[i], n);
        struct nlpd_item it = {0};
        nlpd_item_decode_json(&it, &in, exact, n);
        CHECK(i == 2 ? it.rec.error == NULL : it.rec.error != NULL);
        nlpd_item_clear(&it);
        free(exact);
    }
}

/* A numeric id keeps the text it had in the record (jansson's double would print 0.1 as 0.10000000000000001). */
static void numeric_ids(void)
{
    static const char *const cases[][2] = {
        {"{\"id\": 0.1, \"text\": \"x\"}", "0.1"},
        {"{\"id\":1e2,\"text\":\"x\"}", "1e2"},
        {"{\"text\": \"x\", \"id\" :\t-0.50 }", "-0.50"},
        {"{\"id\": 9007199254740993, \"text\": \"x\"}", "9007199254740993"},
        {"{\"a\": {\"id\": 1}, \"i\\u0064\": 2.50, \"text\": \"x\"}", "2.50"}, /* escaped key */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct nlpd_item it;
        CHECK(strcmp(decode(cases[i][0], &it), "") == 0);
        CHECK(it.id && strcmp(it.id, cases[i][1]) == 0);
        if (it.id && strcmp(it.id, cases[i][1]) != 0)
            fprintf(stderr, "  id %s, expected %s\n", it.id, cases[i][1]);
        nlpd_item_clear(&it);
    }
    struct nlpd_input_conf saved = in;
    in.id_field = "meta.id";
    struct nlpd_item it;
    CHECK(strcmp(decode("{\"meta\": {\"x\": [{\"id\": 1}, \"}\"], \"id\": 0.30}, \"text\": \"x\"}", &it), "") == 0);
    CHECK(it.id && strcmp(it.id, "0.30") == 0);
    nlpd_item_clear(&it);
    in = saved;
    /* An id with a NUL character is refused, not cut at the NUL. */
    CHECK_STR_CONTAINS(decode("{\"id\": \"a\\u0000b\", \"text\": \"x\"}", &it), "id field \"id\" contains a NUL");
    nlpd_item_clear(&it);
}

static void utf8_validation(void)
{
    CHECK(nlpd_utf8_invalid_at("abc", 3) == -1);
    CHECK(nlpd_utf8_invalid_at("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9) == -1);
    CHECK(nlpd_utf8_invalid_at("a\xc0\xaf", 3) == 1);        /* overlong */
    CHECK(nlpd_utf8_invalid_at("ab\xed\xa0\x80", 5) == 2);   /* surrogate */
    CHECK(nlpd_utf8_invalid_at("\xf4\x90\x80\x80", 4) == 0); /* above U+10FFFF */
    CHECK(nlpd_utf8_invalid_at("x\xe2\x82", 3) == 1);        /* truncated */
    CHECK(nlpd_utf8_invalid_at("\x80", 1) == 0);             /* lone continuation */
}

static void encoder_round_trip(void)
{
    const char *texts[] = {"plain", "quote \" backslash \\ slash /", "ctl \x01\x1f\x7f tab\tnl\ncr\r",
                           "\xe2\x80\xa8 sep, emoji \xf0\x9f\x98\x80, rtl \xd7\xa9\xd7\x9c\xd7\x95\xd7\x9d"};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        struct nlpd_item it = {0};
        it.rec.text = texts[i];
        it.rec.text_len = strlen(texts[i]);
        it.id = (char *)"id\"1";
        it.rec.lang.set = 1;
        strcpy(it.rec.lang.code, "en");
        it.rec.lang.score = 0.98288524f;
        it.rec.stages_run = 1u << 3;
        struct nlpd_model_ref m[2] = {{3, "langid", "lid.176.ftz@sha256:00", NULL},
                                      {4, "sentiment", "x@sha256:11", NULL}};
        struct nlpd_buf b = {0};
        nlpd_item_encode_json(&it, m, 2, 0.0, &b);
        json_error_t e;
        json_t *o = json_loads(b.data, 0, &e);
        CHECK(o != NULL);
        CHECK(o && strcmp(json_string_value(json_object_get(o, "text")), texts[i]) == 0);
        CHECK(o && strcmp(json_string_value(json_object_get(o, "id")), "id\"1") == 0);
        CHECK(o && (float)json_real_value(json_object_get(json_object_get(o, "lang"), "score")) == 0.98288524f);
        CHECK(o && json_is_null(json_object_get(o, "sentiment")));
        CHECK(o && json_object_get(json_object_get(o, "meta"), "latency_ms"));
        /* Only the stages that processed the record are named. */
        json_t *models = o ? json_object_get(json_object_get(o, "meta"), "models") : NULL;
        CHECK(json_object_size(models) == 1 && json_object_get(models, "langid"));
        json_decref(o);
        nlpd_buf_free(&b);
    }
}

static void results_encode(void)
{
    struct nlpd_item it = {0};
    it.rec.text = "Angela Merkel in Paris";
    it.rec.text_len = strlen(it.rec.text);
    it.rec.sentiment.set = 1;
    strcpy(it.rec.sentiment.label, "neutral");
    it.rec.sentiment.score = 0.5f;
    struct nlpd_label_score sc[2] = {{"neutral", 0.5f}, {"positive", 0.25f}};
    CHECK(nlpd_record_set_scores(&it.rec, sc, 2) == 0);
    CHECK(nlpd_record_add_entity(&it.rec, "PER", 0.99f, "Angela Merkel", 13, 0, 13, -1, NULL) == 0);
    CHECK(nlpd_record_add_entity(&it.rec, "LOC", 1.0f, "Paris", 5, 17, 22, -1, "gazetteer") == 0);
    CHECK(nlpd_record_add_category(&it.rec, "harassment", "insult", 0.2f, 0) == 0);
    CHECK(nlpd_record_add_category(&it.rec, "harassment", "threat", 0.7f, 1) == 0); /* max score, OR flag */
    CHECK(nlpd_record_add_category(&it.rec, "profanity", "lexicon", 1.0f, 0) == 0);
    struct nlpd_buf b = {0};
    nlpd_item_encode_json(&it, NULL, 0, 0.0, &b);
    json_t *o = json_loads(b.data, 0, NULL);
    CHECK(o != NULL);
    json_t *ents = json_object_get(o, "entities");
    CHECK(json_array_size(ents) == 2);
    CHECK(strcmp(json_string_value(json_object_get(json_array_get(ents, 0), "word")), "Angela Merkel") == 0);
    CHECK(json_integer_value(json_object_get(json_array_get(ents, 1), "start")) == 17);
    CHECK(strcmp(json_string_value(json_object_get(json_array_get(ents, 1), "source")), "gazetteer") == 0);
    json_t *mod = json_object_get(o, "moderation");
    CHECK(json_is_true(json_object_get(mod, "flagged")));
    CHECK(json_is_true(json_object_get(json_object_get(mod, "categories"), "harassment")));
    CHECK(json_is_false(json_object_get(json_object_get(mod, "categories"), "profanity")));
    CHECK((float)json_real_value(json_object_get(json_object_get(mod, "category_scores"), "harassment")) == 0.7f);
    CHECK(strcmp(json_string_value(json_object_get(json_object_get(mod, "category_labels"), "harassment")), "threat") ==
          0);
    CHECK(json_array_size(json_object_get(json_object_get(o, "sentiment"), "scores")) == 2);
    json_decref(o);
    nlpd_buf_free(&b);
    nlpd_item_clear(&it); /* frees the results: ASan checks it */
}

static void error_lines(void)
{
    struct nlpd_item it;
    decode("{\"id\": \"r9\", \"text\": 1}", &it);
    it.line = 12;
    struct nlpd_buf b = {0};
    nlpd_item_encode_error(&it, &b);
    json_t *o = json_loads(b.data, 0, NULL);
    CHECK(o && json_integer_value(json_object_get(o, "line")) == 12);
    CHECK(o && strcmp(json_string_value(json_object_get(o, "id")), "r9") == 0);
    CHECK(o && strcmp(json_string_value(json_object_get(o, "stage")), "input") == 0);
    CHECK(o && strstr(json_string_value(json_object_get(o, "error")), "not a string"));
    json_decref(o);
    nlpd_buf_free(&b);
    nlpd_item_clear(&it);
}

static void float_format(void)
{
    float vals[] = {0.0f, 1.0f, 1.00001f, 0.1f, 1e-7f, 0.99994624f, 3.4e38f};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        struct nlpd_buf b = {0};
        nlpd_buf_json_float(&b, vals[i]);
        CHECK(strtof(b.data, NULL) == vals[i]);
        nlpd_buf_free(&b);
    }
    struct nlpd_buf b = {0};
    nlpd_buf_json_float(&b, NAN);
    CHECK(strcmp(b.data, "null") == 0);
    nlpd_buf_free(&b);
}

static void when_conditions(void)
{
    char why[256];
    struct nlpd_record r = {0};
    r.lang.set = 1;
    strcpy(r.lang.code, "de");
    r.lang.score = 0.7f;
    struct nlpd_when *w = nlpd_when_parse("lang.code != 'en'", why, sizeof why);
    CHECK(w && nlpd_when_eval(w, &r));
    nlpd_when_free(w);
    w = nlpd_when_parse("lang.code in ['fr', \"de\"] && lang.score >= 0.5", why, sizeof why);
    CHECK(w && nlpd_when_eval(w, &r));
    r.lang.score = 0.4f;
    CHECK(w && !nlpd_when_eval(w, &r));
    nlpd_when_free(w);
    w = nlpd_when_parse("lang.code not in ['de']", why, sizeof why);
    CHECK(w && !nlpd_when_eval(w, &r));
    nlpd_when_free(w);
    w = nlpd_when_parse("moderation.flagged == true", why, sizeof why);
    CHECK(w && !nlpd_when_eval(w, &r)); /* moderation did not run */
    CHECK(nlpd_record_add_category(&r, "hate", "toxic", 0.9f, 1) == 0);
    CHECK(w && nlpd_when_eval(w, &r));
    nlpd_record_free_results(&r);
    nlpd_when_free(w);
    w = nlpd_when_parse("sentiment.label == 'negative'", why, sizeof why);
    CHECK(w && !nlpd_when_eval(w, &r)); /* unset field: false */
    nlpd_when_free(w);
    const char *bad[] = {"",
                         "lang.cod == 'en'",
                         "lang.code = 'en'",
                         "lang.code == en",
                         "lang.code < 'en'",
                         "lang.score in ['x']",
                         "lang.code == 'en' ||",
                         "lang.code in ['a'",
                         "lang.score > x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        w = nlpd_when_parse(bad[i], why, sizeof why);
        CHECK(w == NULL && why[0]);
        nlpd_when_free(w);
    }
}

/* 1 when text parses and evaluates to want on r; prints the reason of a parse error. */
static int holds(const char *text, const struct nlpd_record *r, int want)
{
    char why[512];
    struct nlpd_when *w = nlpd_when_parse(text, why, sizeof why);
    if (!w) {
        fprintf(stderr, "  %s: %s\n", text, why);
        return 0;
    }
    int got = nlpd_when_eval(w, r);
    nlpd_when_free(w);
    if (got != want)
        fprintf(stderr, "  %s: %d, expected %d\n", text, got, want);
    return got == want;
}

/* The language routing needs: every result field, the input topic, and/or/not, parentheses, in (...). */
static void when_language(void)
{
    struct nlpd_record r = {0};
    CHECK(holds("not lang.code == 'en'", &r, 1)); /* unset: the comparison is false, its negation true */
    CHECK(holds("translation", &r, 0));
    CHECK(holds("not translation", &r, 1));
    CHECK(holds("source.topic == 'in'", &r, 0));
    r.topic = "reviews";
    r.lang.set = 1;
    strcpy(r.lang.code, "fr");
    r.lang.score = 0.9f;
    CHECK(holds("source.topic in ('reviews', 'tweets') and lang.code == 'fr'", &r, 1));
    CHECK(holds("lang.code == 'de' or lang.code == 'fr'", &r, 1));
    CHECK(holds("lang.code == 'de' or lang.code == 'en' and lang.score > 0.5", &r, 0)); /* and binds tighter */
    CHECK(holds("(lang.code == 'de' or lang.code == 'fr') and lang.score > 0.95", &r, 0));
    CHECK(holds("!(lang.code != 'fr') && (lang.score >= 0.85 || lang.score < 0.1)", &r, 1));
    CHECK(holds("lang.code not in ('de', 'en')", &r, 1));
    CHECK(holds("entities.count > 0", &r, 0)); /* ner did not run */
    CHECK(holds("'ORG' not in entities.groups", &r, 0));
    r.entities.set = 1; /* ner ran and found nothing */
    CHECK(holds("'ORG' not in entities.groups", &r, 1));
    CHECK(holds("'ORG' in entities.groups or entities.groups == 'PER'", &r, 0));
    CHECK(holds("entities.count == 0", &r, 1));
    CHECK(nlpd_record_add_entity(&r, "PER", 0.9f, "Ada", 3, 0, 3, -1, NULL) == 0);
    CHECK(nlpd_record_add_entity(&r, "LOC", 0.8f, "Paris", 5, 10, 15, -1, NULL) == 0);
    CHECK(holds("entities.count == 2", &r, 1));
    CHECK(holds("'LOC' in entities.groups", &r, 1));
    CHECK(holds("'ORG' in entities.groups", &r, 0));
    CHECK(holds("'ORG' not in entities.groups", &r, 1));
    CHECK(holds("entities.groups in ('ORG', 'PER')", &r, 1));
    CHECK(holds("moderation.categories.hate", &r, 0)); /* moderation did not run */
    CHECK(nlpd_record_add_category(&r, "hate", "identity_hate", 0.8f, 1) == 0);
    CHECK(nlpd_record_add_category(&r, "self-harm", "self_harm", 0.2f, 0) == 0);
    CHECK(holds("moderation.flagged and moderation.categories.hate", &r, 1));
    CHECK(holds("moderation.categories.self-harm or moderation.categories.sexual", &r, 0));
    CHECK(holds("moderation.category_scores.hate >= 0.8 and moderation.category_scores.violence == 0", &r, 1));
    CHECK(nlpd_record_set_translation(&r, "hello", 5, "fr", "en", 0) == 0);
    CHECK(holds("translation and translation.target_lang == 'en'", &r, 1));
    r.sentiment.set = 1;
    strcpy(r.sentiment.label, "negative");
    r.sentiment.score = 0.75f;
    CHECK(holds("sentiment.label == 'negative' and sentiment.score > 0.7", &r, 1));
    nlpd_record_free_results(&r);

    char why[512];
    struct {
        const char *text, *why;
    } bad[] = {
        {"lang.code == 'en' and", "expected a condition (column 22)"},
        {"(lang.code == 'en'", "expected )"},
        {"lang.code == 'en' lang.score > 1", "expected and, or, && or || or the end (column 19)"},
        {"moderation.categories.", "unknown field"},
        {"sentiment.label", "expected ==, !=, <, <=, >, >=, in or not in"},
        {"'PER' in lang.score", "'in' needs a text field"},
        {"entities.count in ('1')", "'in' needs a text field"},
        {"lang.code in ()", "expected a quoted value"},
        {"not", "expected a condition"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct nlpd_when *w = nlpd_when_parse(bad[i].text, why, sizeof why);
        CHECK(w == NULL);
        CHECK_STR_CONTAINS(why, bad[i].why);
        nlpd_when_free(w);
    }
    /* Nesting is bounded (a recursive parser must not overflow its stack). */
    char deep[400];
    memset(deep, '(', 200);
    strcpy(deep + 200, "translation");
    CHECK(nlpd_when_parse(deep, why, sizeof why) == NULL);
    CHECK_STR_CONTAINS(why, "nested too deeply");
}

static void normalisation(void)
{
    struct nlpd_text_norm both = {1, 1}, lower = {1, 0}, none = {0, 0};
    char *out = NULL;
    size_t cap = 0;
    const char *s = "Great phone!Works \"fine\"; I'd buy (again).<br />\xc3\x89T\xc3\x89";
    long n = nlpd_text_normalize(&both, s, strlen(s), &out, &cap);
    CHECK(n == (long)strlen(out));
    CHECK(strcmp(out, "great phone ! works fine  i ' d buy  ( again )  .  \xc3\xa9t\xc3\xa9") == 0);
    nlpd_text_normalize(&lower, s, strlen(s), &out, &cap);
    CHECK(strcmp(out, "great phone!works \"fine\"; i'd buy (again).<br />\xc3\xa9t\xc3\xa9") == 0);
    nlpd_text_normalize(&none, s, strlen(s), &out, &cap);
    CHECK(strcmp(out, s) == 0);
    /* Worst-case growth: every byte punctuation. */
    n = nlpd_text_normalize(&both, "!!!!", 4, &out, &cap);
    CHECK(n == 12 && strcmp(out, " !  !  !  ! ") == 0);
    free(out);
}

int main(void)
{
    RUN(good_records);
    RUN(dotted_paths);
    RUN(bad_records);
    RUN(unterminated_payload);
    RUN(numeric_ids);
    RUN(utf8_validation);
    RUN(encoder_round_trip);
    RUN(results_encode);
    RUN(error_lines);
    RUN(float_format);
    RUN(when_conditions);
    RUN(when_language);
    RUN(normalisation);
    return TEST_REPORT();
}
