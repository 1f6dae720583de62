/* The result cache: the LRU's bounds and order, the result encoding (and that a corrupt value is a miss),
 * and the framework's use of it: hits skip the stage, duplicates in a batch are computed once, a changed
 * option misses. */
#include <stdlib.h>

#include "cache.h"
#include "config.h"
#include "harness.h"
#include "pipeline.h"
#include "result_codec.h"

static struct nlpd_cache_value val(const char *s)
{
    struct nlpd_cache_value v = {(unsigned char *)s, strlen(s)};
    return v;
}

static void lru_bounds_and_order(void)
{
    void *l = nlpd_memory_cache_new(3, 1 << 20);
    const char *k[] = {"a", "b", "c", "d"};
    struct nlpd_cache_value v[4] = {val("1"), val("2"), val("3"), val("4")}, got[4];
    CHECK(nlpd_memory_cache.mset(l, k, v, 3) == 0);
    CHECK(nlpd_memory_cache.mget(l, k, 1, got) == 0 && got[0].data && got[0].data[0] == '1'); /* a is now recent */
    free(got[0].data);
    CHECK(nlpd_memory_cache.mset(l, k + 3, v + 3, 1) == 0); /* evicts b, the least recently used */
    memset(got, 0, sizeof got);
    nlpd_memory_cache.mget(l, k, 4, got);
    CHECK(got[0].data && !got[1].data && got[2].data && got[3].data);
    for (int i = 0; i < 4; i++)
        free(got[i].data);
    struct nlpd_cache_stats st = {0};
    nlpd_memory_cache.stats(l, &st);
    CHECK(st.entries == 3 && st.evictions == 1);
    /* Overwrite replaces the value. */
    struct nlpd_cache_value nv = val("new");
    nlpd_memory_cache.mset(l, k, &nv, 1);
    memset(got, 0, sizeof got);
    nlpd_memory_cache.mget(l, k, 1, got);
    CHECK(got[0].len == 3 && memcmp(got[0].data, "new", 3) == 0);
    free(got[0].data);
    nlpd_memory_cache.free(l);

    /* The byte bound holds whatever the entry count. */
    l = nlpd_memory_cache_new(1000000, 4096);
    char key[32], big[300];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    for (int i = 0; i < 1000; i++) {
        snprintf(key, sizeof key, "k%d", i);
        const char *kp = key;
        struct nlpd_cache_value bv = val(big);
        nlpd_memory_cache.mset(l, &kp, &bv, 1);
    }
    nlpd_memory_cache.stats(l, &st);
    CHECK(st.bytes <= 4096 && st.entries > 0 && st.entries < 20);
    nlpd_memory_cache.free(l);
}

static void codec_round_trip(void)
{
    struct nlpd_record r = {0}, back = {0};
    r.lang.set = 1;
    strcpy(r.lang.code, "de");
    r.lang.score = 0.5f;
    r.sentiment.set = 1;
    strcpy(r.sentiment.label, "positive");
    r.sentiment.score = 0.75f;
    struct nlpd_label_score sc[2] = {{"negative", 0.25f}, {"positive", 0.75f}};
    nlpd_record_set_scores(&r, sc, 2);
    nlpd_record_add_entity(&r, "PER", 0.9f, "Jos\xc3\xa9", 5, 3, 7, -1, NULL);
    nlpd_record_add_entity(&r, "LOC", 1.0f, "Berlin", 6, 10, 16, -1, "gazetteer");
    nlpd_record_add_category(&r, "hate", "identity_hate", 0.8f, 1);
    r.text = "Guten Tag";
    r.text_len = 9;
    nlpd_record_set_translation(&r, "Good day", 8, "de", "en", 1);
    back.text = "Guten Tag";
    back.text_len = 9;
    unsigned all = NLPD_RESULT_LANG | NLPD_RESULT_SENTIMENT | NLPD_RESULT_ENTITIES | NLPD_RESULT_MODERATION |
                   NLPD_RESULT_TRANSLATION;
    struct nlpd_buf b = {0};
    nlpd_results_encode(&r, all, &b);
    CHECK(nlpd_results_decode(&back, all, (unsigned char *)b.data, b.len) == 0);
    CHECK(strcmp(back.lang.code, "de") == 0 && back.lang.score == 0.5f);
    CHECK(back.sentiment.nscores == 2 && back.sentiment.scores[1].score == 0.75f);
    CHECK(back.entities.n == 2 && strcmp(back.entities.items[0].word, "Jos\xc3\xa9") == 0);
    CHECK(back.entities.items[1].source && strcmp(back.entities.items[1].source, "gazetteer") == 0);
    CHECK(back.moderation.flagged && back.moderation.n == 1 && back.moderation.cats[0].score == 0.8f);
    /* a decoded translation that later stages read points the record's text at it, as the stage did */
    CHECK(back.translation.set && strcmp(back.translation.text, "Good day") == 0 && back.translation.feeds);
    CHECK(strcmp(back.translation.source_lang, "de") == 0 && strcmp(back.translation.target_lang, "en") == 0);
    CHECK(strcmp(back.text, "Good day") == 0 && strcmp(back.translation.input_text, "Guten Tag") == 0);
    /* Every truncation and a wrong version are invalid, and leave the record as it was. */
    struct nlpd_record keep = {0};
    keep.lang.set = 1;
    strcpy(keep.lang.code, "fr");
    for (size_t n = 0; n < b.len; n++)
        CHECK(nlpd_results_decode(&keep, all, (unsigned char *)b.data, n) < 0);
    b.data[0] = 9;
    CHECK(nlpd_results_decode(&keep, all, (unsigned char *)b.data, b.len) < 0);
    CHECK(strcmp(keep.lang.code, "fr") == 0 && keep.entities.n == 0 && !keep.translation.set);
    /* a cached translation that is not valid UTF-8 is not ours */
    b.data[0] = 1;
    struct nlpd_buf bad = {0};
    struct nlpd_record tr = {0};
    nlpd_record_set_translation(&tr, "ab\xff", 3, "de", "en", 0);
    nlpd_results_encode(&tr, NLPD_RESULT_TRANSLATION, &bad);
    CHECK(nlpd_results_decode(&keep, NLPD_RESULT_TRANSLATION, (unsigned char *)bad.data, bad.len) < 0);
    nlpd_buf_free(&bad);
    nlpd_record_free_results(&tr);
    nlpd_buf_free(&b);
    nlpd_record_free_results(&r);
    nlpd_record_free_results(&back);
}

/* The cached moderation value, byte for byte as before the result table. Its route byte (the stage's action
 * "route" once) is written 0 now that output.routes decides after the pipeline, and a 1 in a value cached before
 * still decodes, routing nothing by itself. */
static void codec_moderation_route_byte(void)
{
    struct nlpd_record r = {0}, back = {0};
    nlpd_record_add_category(&r, "hate", "identity_hate", 0.8f, 1);
    struct nlpd_buf b = {0};
    nlpd_results_encode(&r, NLPD_RESULT_MODERATION, &b);
    const unsigned char want[] = {1,   1,   1,   0,   1,   0,    0,    0,    4,    0,   'h', 'a',
                                  't', 'e', 13,  0,   'i', 'd',  'e',  'n',  't',  'i', 't', 'y',
                                  '_', 'h', 'a', 't', 'e', 0xcd, 0xcc, 0x4c, 0x3f, 1};
    CHECK(b.len == sizeof want && memcmp(b.data, want, sizeof want) == 0);
    b.data[3] = 1;
    CHECK(nlpd_results_decode(&back, NLPD_RESULT_MODERATION, (unsigned char *)b.data, b.len) == 0);
    CHECK(back.route == NULL && back.moderation.flagged && back.moderation.n == 1);
    nlpd_record_free_results(&back);
    nlpd_record_free_results(&r);
    nlpd_buf_free(&b);
}

/* Whoever can write the cache can hand us any bytes: every field the output relies on is checked, so a well-framed
 * value with invalid UTF-8, a non-finite score, a flag that is not 0/1 or impossible offsets is refused. */
static void codec_validates_values(void)
{
    struct nlpd_record r = {0};
    r.lang.set = 1;
    strcpy(r.lang.code, "de");
    r.lang.score = 0.5f;
    r.sentiment.set = 1;
    strcpy(r.sentiment.label, "positive");
    r.sentiment.score = 0.75f;
    nlpd_record_add_entity(&r, "PER", 0.9f, "Jo", 2, 3, 5, -1, NULL);
    nlpd_record_add_category(&r, "hate", "identity_hate", 0.8f, 1);
    unsigned all = NLPD_RESULT_LANG | NLPD_RESULT_SENTIMENT | NLPD_RESULT_ENTITIES | NLPD_RESULT_MODERATION;
    struct nlpd_buf b = {0};
    nlpd_results_encode(&r, all, &b);
    struct nlpd_record back = {0};
    CHECK(nlpd_results_decode(&back, all, (unsigned char *)b.data, b.len) == 0);
    nlpd_record_free_results(&back);
    /* Offsets in the encoding: version, lang (set, u16 len, "de", f32), sentiment (set, u16, "positive", f32,
     * u32 n), entities (set, u32 n, u16 + "PER", f32, u16 + "Jo", start, end, index, u16 + ""), moderation
     * (set, flagged, route, u32 n, ...). */
    size_t lang_code = 4, lang_score = 6, sent_set = 10, label = 13, ent_start = 47, mod_flagged = 62;
    struct {
        size_t at;
        unsigned char v[4];
        size_t n;
        const char *what;
    } bad[] = {
        {lang_code, {0xff}, 1, "invalid UTF-8 in a string"},
        {label + 2, {0xc3, 0x28}, 2, "invalid UTF-8 in a label"},
        {lang_score, {0x00, 0x00, 0xc0, 0x7f}, 4, "NaN score"},
        {lang_score, {0x00, 0x00, 0x80, 0x7f}, 4, "infinite score"},
        {sent_set, {2}, 1, "presence byte 2"},
        {ent_start, {0xff, 0xff, 0xff, 0xff}, 4, "negative start"},
        {ent_start, {9, 0, 0, 0}, 4, "start after end"},
        {mod_flagged, {7}, 1, "flag byte 7"},
    };
    CHECK(b.len > mod_flagged && (unsigned char)b.data[ent_start] == 3 && (unsigned char)b.data[mod_flagged] == 1);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *copy = malloc(b.len);
        memcpy(copy, b.data, b.len);
        memcpy(copy + bad[i].at, bad[i].v, bad[i].n);
        struct nlpd_record t = {0};
        if (nlpd_results_decode(&t, all, (unsigned char *)copy, b.len) == 0) {
            fprintf(stderr, "  accepted: %s\n", bad[i].what);
            CHECK(!"a bad cached value was accepted");
        }
        CHECK(!t.lang.set && !t.sentiment.set && t.entities.n == 0);
        nlpd_record_free_results(&t);
        free(copy);
    }
    nlpd_buf_free(&b);
    nlpd_record_free_results(&r);
}

/* "count": cacheable; writes sentiment.label = text reversed-ish marker and counts records it computed. */
static int computed;

struct count_ctx {
    char *suffix;
};

static const struct nlpd_conf_entry count_conf[] = {
    {"suffix", NLPD_CONF_STRING, "", offsetof(struct count_ctx, suffix), NLPD_CONF_CACHE_KEY, NULL, 0, 0, "x"},
    {0},
};

static int count_init(const struct nlpd_stage_instance *inst, void *ctx, struct nlpd_error *err)
{
    (void)inst, (void)ctx, (void)err;
    return 0;
}

static enum nlpd_stage_status count_process(const struct nlpd_stage_instance *inst, void *ctx, void *ts,
                                            struct nlpd_batch *b, struct nlpd_error *err)
{
    struct count_ctx *c = ctx;
    (void)ts, (void)err;
    for (size_t i = 0; i < b->n; i++) {
        __atomic_add_fetch(&computed, 1, __ATOMIC_RELAXED);
        if (strstr(b->recs[i]->text, "bad")) {
            nlpd_stage_fail(inst, b->recs[i], "bad text");
            continue;
        }
        snprintf(b->recs[i]->sentiment.label, NLPD_LABEL_MAX, "%.8s%s", b->recs[i]->text, c->suffix);
        b->recs[i]->sentiment.score = (float)b->recs[i]->text_len;
        b->recs[i]->sentiment.set = 1;
    }
    return NLPD_STAGE_OK;
}

static const struct nlpd_stage_plugin count_stage = {
    .abi = NLPD_STAGE_ABI,
    .name = "count",
    .description = "test",
    .conf_map = count_conf,
    .ctx_size = sizeof(struct count_ctx),
    .init = count_init,
    .process = count_process,
    .results = NLPD_RESULT_SENTIMENT,
};

static void run_texts(struct nlpd_pipeline *p, const char *const *texts, size_t n, struct nlpd_record *r)
{
    struct nlpd_record *ptrs[16];
    for (size_t i = 0; i < n; i++) {
        memset(&r[i], 0, sizeof r[i]);
        r[i].text = texts[i];
        r[i].text_len = strlen(texts[i]);
        ptrs[i] = &r[i];
    }
    struct nlpd_batch b = {.n = n, .recs = ptrs};
    nlpd_pipeline_run_inline(p, &b);
}

static void clear(struct nlpd_record *r, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(r[i].error);
        nlpd_record_free_results(&r[i]);
    }
}

static void framework_uses_cache(void)
{
    struct nlpd_diag d = {0};
    struct nlpd_config *cfg = nlpd_config_load_string(
        "cache: { backend = \"memory\"; };\npipeline = ( { stage = \"count\"; } );", "(test)", &d);
    struct nlpd_pipeline *p = cfg ? nlpd_pipeline_create(cfg, &d) : NULL;
    CHECK(p != NULL);
    nlpd_diag_print(&d, stderr);
    if (!p)
        return;
    const char *texts[] = {"alpha", "beta", "alpha", "bad one", "alpha", "bad one"};
    struct nlpd_record r[6];
    computed = 0;
    run_texts(p, texts, 6, r);
    CHECK(computed == 3); /* alpha, beta, bad one: duplicates inside the batch computed once */
    CHECK(strcmp(r[4].sentiment.label, "alpha") == 0 && r[4].sentiment.score == 5.0f);
    CHECK(r[5].error && strcmp(r[5].error, "bad text") == 0); /* a failed leader fails its duplicates */
    clear(r, 6);
    computed = 0;
    run_texts(p, texts, 6, r); /* second pass: served from the cache, except the failed text */
    CHECK(computed == 1);
    CHECK(strcmp(r[0].sentiment.label, "alpha") == 0 && strcmp(r[1].sentiment.label, "beta") == 0);
    CHECK(r[0].stages_run == 1); /* meta.models still names the stage */
    struct nlpd_stage_cache_stats cs[4];
    struct nlpd_cache_stats total;
    CHECK(nlpd_pipeline_cache_stats(p, cs, 4, &total) == 1);
    CHECK(cs[0].hits == 4 && cs[0].misses == 8);
    clear(r, 6);
    nlpd_pipeline_free(p);
    nlpd_config_free(cfg);

    /* A changed output-relevant option is another key; backend "none" never caches. */
    cfg = nlpd_config_load_string(
        "cache: { backend = \"none\"; };\npipeline = ( { stage = \"count\"; suffix = \"!\"; } );", "(test)", &d);
    p = nlpd_pipeline_create(cfg, &d);
    computed = 0;
    run_texts(p, texts, 2, r);
    run_texts(p, texts, 2, r + 2);
    CHECK(computed == 4 && strcmp(r[0].sentiment.label, "alpha!") == 0);
    CHECK(nlpd_pipeline_cache_stats(p, cs, 4, &total) == 0);
    clear(r, 4);
    nlpd_pipeline_free(p);
    nlpd_config_free(cfg);
    nlpd_diag_free(&d);
}

int main(void)
{
    CHECK(nlpd_stage_register(&count_stage) == 0);
    RUN(lru_bounds_and_order);
    RUN(codec_round_trip);
    RUN(codec_validates_values);
    RUN(codec_moderation_route_byte);
    RUN(framework_uses_cache);
    return TEST_REPORT();
}
