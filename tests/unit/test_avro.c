/* Avro codec: enriched records encode with schemas/enriched.avsc (plain and Confluent-framed) and read
 * back with Avro C's own reader; Avro input decodes by dotted path, framed or not; bad data is a reason. */
#include <avro.h>
#include <stdlib.h>

#include "avro_codec.h"
#include "harness.h"

static const char *in_schema =
    "{\"type\":\"record\",\"name\":\"In\",\"fields\":["
    "{\"name\":\"id\",\"type\":\"long\"},"
    "{\"name\":\"body\",\"type\":[\"null\",{\"type\":\"record\",\"name\":\"Body\",\"fields\":["
    "{\"name\":\"text\",\"type\":\"string\"},{\"name\":\"n\",\"type\":\"int\"}]}]}]}";

static avro_value_t read_back(const char *data, size_t len, avro_schema_t *schema, avro_value_iface_t **iface)
{
    avro_value_t v;
    *iface = avro_generic_class_from_schema(*schema);
    avro_generic_value_new(*iface, &v);
    avro_reader_t r = avro_reader_memory(data, (int64_t)len);
    CHECK(avro_value_read(r, &v) == 0);
    avro_reader_free(r);
    return v;
}

static void encode_enriched(void)
{
    struct nlpd_error err = {0};
    for (int framed = 0; framed < 2; framed++) {
        struct nlpd_avro_out *o = nlpd_avro_out_new("schemas/enriched.avsc", framed ? 7 : 0, &err);
        CHECK(o != NULL);
        if (!o)
            return;
        struct nlpd_item it = {0};
        it.id = (char *)"r1";
        it.rec.text = "Guten Tag \xe2\x82\xac";
        it.rec.text_len = strlen(it.rec.text);
        it.rec.lang.set = 1;
        strcpy(it.rec.lang.code, "de");
        it.rec.lang.score = 0.75f;
        it.rec.stages_run = 1;
        it.source = (struct nlpd_source){1, "events", 3, 42, -1};
        /* framed: with a translation that later stages read; "text" must stay the input text */
        if (framed)
            CHECK(nlpd_record_set_translation(&it.rec, "Good day \xe2\x82\xac", 12, "de", "en", 1) == 0);
        struct nlpd_model_ref m = {0, "langid", "lid.176.ftz@sha256:ab", NULL};
        struct nlpd_buf b = {0};
        CHECK(nlpd_avro_out_encode(o, &it, &m, 1, 0.0, &b) == 0);
        const char *datum = b.data;
        size_t len = b.len;
        if (framed) {
            CHECK(len > 5 && b.data[0] == 0 && b.data[1] == 0 && b.data[2] == 0 && b.data[3] == 0 && b.data[4] == 7);
            datum += 5, len -= 5;
        }
        avro_schema_t schema;
        FILE *f = fopen("schemas/enriched.avsc", "r");
        char json[16384];
        size_t n = fread(json, 1, sizeof json - 1, f);
        fclose(f);
        json[n] = '\0';
        CHECK(avro_schema_from_json_length(json, n, &schema) == 0);
        avro_value_iface_t *iface;
        avro_value_t v = read_back(datum, len, &schema, &iface);
        avro_value_t fld, br, x;
        const char *s;
        size_t sl;
        avro_value_get_by_name(&v, "text", &fld, NULL);
        avro_value_get_string(&fld, &s, &sl);
        CHECK(strcmp(s, "Guten Tag \xe2\x82\xac") == 0);
        avro_value_get_by_name(&v, "translation", &fld, NULL);
        int tdisc = -1;
        avro_value_get_discriminant(&fld, &tdisc);
        CHECK(tdisc == framed);
        if (framed) {
            avro_value_get_current_branch(&fld, &br);
            avro_value_get_by_name(&br, "text", &x, NULL);
            avro_value_get_string(&x, &s, &sl);
            CHECK(strcmp(s, "Good day \xe2\x82\xac") == 0);
            avro_value_get_by_name(&br, "source_lang", &x, NULL);
            avro_value_get_string(&x, &s, &sl);
            CHECK(strcmp(s, "de") == 0);
            avro_value_get_by_name(&br, "target_lang", &x, NULL);
            avro_value_get_string(&x, &s, &sl);
            CHECK(strcmp(s, "en") == 0);
        }
        avro_value_get_by_name(&v, "lang", &fld, NULL);
        avro_value_get_current_branch(&fld, &br);
        avro_value_get_by_name(&br, "code", &x, NULL);
        avro_value_get_string(&x, &s, &sl);
        CHECK(strcmp(s, "de") == 0);
        avro_value_get_by_name(&v, "sentiment", &fld, NULL);
        int disc = -1;
        avro_value_get_discriminant(&fld, &disc);
        CHECK(disc == 0); /* null: the stage did not run */
        avro_value_get_by_name(&v, "source", &fld, NULL);
        avro_value_get_current_branch(&fld, &br);
        int64_t off = 0;
        avro_value_get_by_name(&br, "offset", &x, NULL);
        avro_value_get_long(&x, &off);
        CHECK(off == 42);
        avro_value_get_by_name(&v, "meta", &fld, NULL);
        avro_value_get_by_name(&fld, "models", &x, NULL);
        size_t nm = 0;
        avro_value_get_size(&x, &nm);
        CHECK(nm == 1);
        avro_value_decref(&v);
        avro_value_iface_decref(iface);
        avro_schema_decref(schema);
        nlpd_buf_free(&b);
        nlpd_avro_out_free(o);
        nlpd_record_free_results(&it.rec);
        CHECK(strcmp(it.rec.text, "Guten Tag \xe2\x82\xac") == 0); /* freeing restores the input text */
    }
}

static void wrong_output_schema(void)
{
    FILE *f = fopen("/tmp/nlpd-test-wrong.avsc", "w");
    fputs("{\"type\":\"record\",\"name\":\"X\",\"fields\":[{\"name\":\"text\",\"type\":\"string\"}]}", f);
    fclose(f);
    struct nlpd_error err = {0};
    CHECK(nlpd_avro_out_new("/tmp/nlpd-test-wrong.avsc", 0, &err) == NULL);
    CHECK_STR_CONTAINS(err.message, "does not have the shape of the enriched record");
    CHECK(nlpd_avro_out_new("/nonexistent.avsc", 0, &err) == NULL);
    CHECK_STR_CONTAINS(err.message, "cannot open");
    /* a directory opens but does not read: said as such, not passed on as an empty schema */
    CHECK(nlpd_avro_out_new("/tmp", 0, &err) == NULL);
    CHECK_STR_CONTAINS(err.message, "/tmp: read error");
    f = fopen("/tmp/nlpd-test-wrong.avsc", "w");
    fputs("{\"type\":\"recrd\"}", f);
    fclose(f);
    CHECK(nlpd_avro_out_new("/tmp/nlpd-test-wrong.avsc", 0, &err) == NULL);
    CHECK_STR_CONTAINS(err.message, "not a valid Avro schema");
    remove("/tmp/nlpd-test-wrong.avsc");
}

/* Writes an In datum with avro-c; returns its length in buf. */
static size_t write_in(avro_value_iface_t *iface, int64_t id, const char *text, char *buf, size_t cap)
{
    avro_value_t v, f, br, x;
    avro_generic_value_new(iface, &v);
    avro_value_get_by_name(&v, "id", &f, NULL);
    avro_value_set_long(&f, id);
    avro_value_get_by_name(&v, "body", &f, NULL);
    if (text) {
        avro_value_set_branch(&f, 1, &br);
        avro_value_get_by_name(&br, "text", &x, NULL);
        avro_value_set_string(&x, text);
        avro_value_get_by_name(&br, "n", &x, NULL);
        avro_value_set_int(&x, 5);
    } else {
        avro_value_set_branch(&f, 0, &br);
        avro_value_set_null(&br);
    }
    avro_writer_t w = avro_writer_memory(buf, (int64_t)cap);
    avro_value_write(w, &v);
    size_t n = (size_t)avro_writer_tell(w);
    avro_writer_free(w);
    avro_value_decref(&v);
    return n;
}

static void decode_input(void)
{
    FILE *f = fopen("/tmp/nlpd-test-in.avsc", "w");
    fputs(in_schema, f);
    fclose(f);
    struct nlpd_input_conf in = {.format = "avro",
                                 .schema = "/tmp/nlpd-test-in.avsc",
                                 .text_field = "body.text",
                                 .id_field = "id",
                                 .max_text_bytes = 100};
    struct nlpd_error err = {0};
    struct nlpd_avro_in *a = nlpd_avro_in_new(&in, &err);
    CHECK(a != NULL);
    avro_schema_t schema;
    avro_schema_from_json_length(in_schema, strlen(in_schema), &schema);
    avro_value_iface_t *iface = avro_generic_class_from_schema(schema);
    char buf[512];
    size_t n = write_in(iface, 1234567890123LL, "hello there", buf + 5, sizeof buf - 5);

    struct nlpd_item it = {0};
    CHECK(nlpd_avro_in_decode(a, &it, buf + 5, n) == 0);
    CHECK(it.rec.text && strcmp(it.rec.text, "hello there") == 0 && strcmp(it.id, "1234567890123") == 0);
    nlpd_item_clear(&it);

    memcpy(buf, "\0\0\0\0\x2a", 5); /* Confluent framing, schema id 42 */
    CHECK(nlpd_avro_in_decode(a, &it, buf, n + 5) == 0);
    CHECK(it.rec.text && strcmp(it.rec.text, "hello there") == 0);
    nlpd_item_clear(&it);

    n = write_in(iface, 1, NULL, buf, sizeof buf); /* body null: no text */
    CHECK(nlpd_avro_in_decode(a, &it, buf, n) < 0);
    CHECK_STR_CONTAINS(it.rec.error, "text field \"body.text\"");
    nlpd_item_clear(&it);

    n = write_in(iface, 1, "", buf, sizeof buf);
    CHECK(nlpd_avro_in_decode(a, &it, buf, n) < 0);
    CHECK_STR_CONTAINS(it.rec.error, "empty text");
    nlpd_item_clear(&it);

    n = write_in(iface, 1, "bad \xff utf8", buf, sizeof buf);
    CHECK(nlpd_avro_in_decode(a, &it, buf, n) < 0);
    CHECK_STR_CONTAINS(it.rec.error, "not valid UTF-8");
    nlpd_item_clear(&it);

    CHECK(nlpd_avro_in_decode(a, &it, "\x02\x09garbage", 9) < 0);
    CHECK_STR_CONTAINS(it.rec.error, "undecodable Avro record");
    nlpd_item_clear(&it);

    n = write_in(iface, 1, "trailing", buf, sizeof buf);
    buf[n] = 'x'; /* one byte too many: not a datum of this schema */
    CHECK(nlpd_avro_in_decode(a, &it, buf, n + 1) < 0);
    nlpd_item_clear(&it);

    avro_value_iface_decref(iface);
    avro_schema_decref(schema);
    nlpd_avro_in_free(a);
    remove("/tmp/nlpd-test-in.avsc");
}

/* A string id with a NUL character is refused (it used to be cut at the NUL), as in JSON input. */
static void string_id_with_nul(void)
{
    FILE *f = fopen("/tmp/nlpd-test-in2.avsc", "w");
    fputs("{\"type\":\"record\",\"name\":\"In2\",\"fields\":[{\"name\":\"id\",\"type\":\"string\"},"
          "{\"name\":\"text\",\"type\":\"string\"}]}",
          f);
    fclose(f);
    struct nlpd_input_conf in = {.format = "avro",
                                 .schema = "/tmp/nlpd-test-in2.avsc",
                                 .text_field = "text",
                                 .id_field = "id",
                                 .max_text_bytes = 100};
    struct nlpd_error err = {0};
    struct nlpd_avro_in *a = nlpd_avro_in_new(&in, &err);
    CHECK(a != NULL);
    if (a) {
        /* strings: zigzag varint length, bytes */
        static const char good[] = {6, 'a', 'x', 'b', 4, 'h', 'i'}, bad[] = {6, 'a', 0, 'b', 4, 'h', 'i'};
        struct nlpd_item it = {0};
        CHECK(nlpd_avro_in_decode(a, &it, good, sizeof good) == 0 && it.id && strcmp(it.id, "axb") == 0);
        nlpd_item_clear(&it);
        CHECK(nlpd_avro_in_decode(a, &it, bad, sizeof bad) < 0);
        CHECK_STR_CONTAINS(it.rec.error, "id field \"id\" contains a NUL character");
        nlpd_item_clear(&it);
        nlpd_avro_in_free(a);
    }
    remove("/tmp/nlpd-test-in2.avsc");
}

int main(void)
{
    RUN(encode_enriched);
    RUN(wrong_output_schema);
    RUN(decode_input);
    RUN(string_id_with_nul);
    return TEST_REPORT();
}
