/* Avro encoding and decoding (see avro_codec.h). Union branches follow schemas/enriched.avsc: null
 * first; a replacement output schema must keep that shape (checked when it is loaded). */
#include "avro_codec.h"

#include <avro.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nlpd_util.h"
#include "results.h"
#include "schema_registry.h"

struct nlpd_avro_out {
    avro_schema_t schema;
    avro_value_iface_t *iface;
    int32_t confluent_id;
};

struct nlpd_avro_in {
    avro_schema_t schema; /* the reader schema; NULL with a registry and no input.schema */
    avro_value_iface_t *iface;
    const struct nlpd_input_conf *in;
    struct nlpd_sr_decoder *sr; /* input.schema_registry: writer schemas by id */
};

static char *read_file(const char *path, size_t *len, struct nlpd_error *err)
{
    char *buf;
    nlpd_util_read_file(path, (size_t)16 << 20, &buf, len, err);
    return buf;
}

static int load_schema(const char *path, avro_schema_t *schema, struct nlpd_error *err)
{
    size_t len;
    char *json = read_file(path, &len, err);
    if (!json)
        return err ? err->code : NLPD_EIO;
    int rc = avro_schema_from_json_length(json, len, schema);
    free(json);
    if (rc)
        return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: not a valid Avro schema: %s", path, avro_strerror());
    if (!is_avro_record(*schema)) {
        avro_schema_decref(*schema);
        return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: the schema must be a record", path);
    }
    return 0;
}

/* ---- encoding ---- */

#define TRY(x)                                                                                                         \
    do {                                                                                                               \
        if ((x) != 0)                                                                                                  \
            return NLPD_EFORMAT;                                                                                       \
    } while (0)

static int field(avro_value_t *rec, const char *name, avro_value_t *out)
{
    return avro_value_get_by_name(rec, name, out, NULL);
}

static int set_string(avro_value_t *rec, const char *name, const char *s)
{
    avro_value_t f;
    TRY(field(rec, name, &f));
    return avro_value_set_string(&f, s);
}

/* Sets a ["null", T] union field: to null when set is 0, else selects T into *branch. */
static int set_optional(avro_value_t *rec, const char *name, int set, avro_value_t *branch)
{
    avro_value_t u, b;
    TRY(field(rec, name, &u));
    if (!set) {
        TRY(avro_value_set_branch(&u, 0, &b));
        return avro_value_set_null(&b);
    }
    return avro_value_set_branch(&u, 1, branch);
}

static int fill(avro_value_t *v, const struct nlpd_item *item, const struct nlpd_model_ref *models, size_t nmodels,
                double now)
{
    const struct nlpd_record *r = &item->rec;
    avro_value_t f, b;
    TRY(field(v, "id", &f));
    TRY(avro_value_set_branch(&f, item->id ? 1 : 0, &b));
    TRY(item->id ? avro_value_set_string(&b, item->id) : avro_value_set_null(&b));
    size_t in_len;
    const char *in = nlpd_record_input_text(r, &in_len);
    TRY(field(v, "text", &f));
    TRY(avro_value_set_string_len(&f, in, in_len + 1));

    avro_value_t src;
    TRY(set_optional(v, "source", item->source.set, &src));
    if (item->source.set) {
        TRY(set_string(&src, "topic", item->source.topic));
        TRY(field(&src, "partition", &f));
        TRY(avro_value_set_int(&f, item->source.partition));
        TRY(field(&src, "offset", &f));
        TRY(avro_value_set_long(&f, item->source.offset));
        TRY(field(&src, "timestamp_ms", &f));
        TRY(avro_value_set_branch(&f, item->source.timestamp_ms >= 0, &b));
        TRY(item->source.timestamp_ms >= 0 ? avro_value_set_long(&b, item->source.timestamp_ms)
                                           : avro_value_set_null(&b));
    }
    for (size_t i = 0; i < nlpd_result_ntypes; i++) {
        const struct nlpd_result_type *t = &nlpd_result_types[i];
        avro_value_t branch;
        TRY(set_optional(v, t->name, t->is_set(r), &branch));
        if (t->is_set(r))
            TRY(t->avro(r, &branch));
    }

    avro_value_t meta, m;
    TRY(field(v, "meta", &meta));
    TRY(field(&meta, "latency_ms", &f));
    TRY(avro_value_set_double(&f, (now - item->t_in) * 1e3));
    TRY(field(&meta, "models", &m));
    for (size_t i = 0; i < nmodels; i++) {
        if (models[i].stage_index >= 32 || !(r->stages_run & (1u << models[i].stage_index)))
            continue;
        avro_value_t e;
        TRY(avro_value_add(&m, models[i].stage, &e, NULL, NULL));
        TRY(avro_value_set_string(&e, nlpd_model_ref_id(&models[i], r)));
    }
    return 0;
}

int nlpd_avro_out_encode(struct nlpd_avro_out *o, const struct nlpd_item *item, const struct nlpd_model_ref *models,
                         size_t nmodels, double now, struct nlpd_buf *out)
{
    avro_value_t v;
    if (avro_generic_value_new(o->iface, &v))
        return NLPD_ENOMEM;
    int rc = fill(&v, item, models, nmodels, now);
    size_t size = 0;
    if (rc == 0)
        rc = avro_value_sizeof(&v, &size) ? NLPD_EFORMAT : 0;
    if (rc == 0) {
        nlpd_buf_reserve(out, size + 5);
        if (out->oom)
            rc = NLPD_ENOMEM;
    }
    if (rc == 0) {
        if (o->confluent_id > 0) {
            unsigned char hdr[5] = {0, (unsigned char)(o->confluent_id >> 24), (unsigned char)(o->confluent_id >> 16),
                                    (unsigned char)(o->confluent_id >> 8), (unsigned char)o->confluent_id};
            nlpd_buf_append(out, hdr, sizeof hdr);
        }
        avro_writer_t w = avro_writer_memory(out->data + out->len, (int64_t)size);
        if (!w || avro_value_write(w, &v))
            rc = NLPD_EFORMAT;
        else
            out->len += size;
        if (w)
            avro_writer_free(w);
    }
    avro_value_decref(&v);
    return rc;
}

struct nlpd_avro_out *nlpd_avro_out_new(const char *schema_path, int32_t confluent_id, struct nlpd_error *err)
{
    struct nlpd_avro_out *o = calloc(1, sizeof *o);
    if (!o)
        return NULL;
    if (load_schema(schema_path, &o->schema, err) < 0) {
        free(o);
        return NULL;
    }
    o->confluent_id = confluent_id;
    o->iface = avro_generic_class_from_schema(o->schema);
    /* Encode a full sample once: a schema of another shape fails here, not on the first record. */
    struct nlpd_item sample = {0};
    sample.id = (char *)"x";
    sample.rec.text = "x";
    sample.rec.text_len = 1;
    sample.rec.lang.set = sample.rec.sentiment.set = 1;
    sample.source = (struct nlpd_source){1, "t", 0, 0, 0};
    struct nlpd_buf b = {0};
    int rc = o->iface ? nlpd_avro_out_encode(o, &sample, NULL, 0, 0.0, &b) : NLPD_EFORMAT;
    nlpd_buf_free(&b);
    if (rc < 0) {
        nlpd_error_set(err, NLPD_EFORMAT, 0,
                       "%s: this schema does not have the shape of the enriched record (schemas/enriched.avsc)",
                       schema_path);
        nlpd_avro_out_free(o);
        return NULL;
    }
    return o;
}

void nlpd_avro_out_free(struct nlpd_avro_out *o)
{
    if (!o)
        return;
    if (o->iface)
        avro_value_iface_decref(o->iface);
    avro_schema_decref(o->schema);
    free(o);
}

/* ---- decoding ---- */

struct nlpd_avro_in *nlpd_avro_in_new(const struct nlpd_input_conf *in, struct nlpd_error *err)
{
    struct nlpd_avro_in *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    a->in = in;
    if (in->schema) {
        if (load_schema(in->schema, &a->schema, err) < 0) {
            free(a);
            return NULL;
        }
        a->iface = avro_generic_class_from_schema(a->schema);
        if (!a->iface) {
            nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: %s", in->schema, avro_strerror());
            nlpd_avro_in_free(a);
            return NULL;
        }
    }
    if (in->registry.set && !(a->sr = nlpd_sr_decoder_new(&in->registry, in->schema, err))) {
        nlpd_avro_in_free(a);
        return NULL;
    }
    return a;
}

void nlpd_avro_in_free(struct nlpd_avro_in *a)
{
    if (!a)
        return;
    if (a->iface)
        avro_value_iface_decref(a->iface);
    if (a->schema)
        avro_schema_decref(a->schema);
    nlpd_sr_decoder_free(a->sr);
    free(a);
}

/* ---- validation before decoding ----
 * Avro C allocates what a length prefix claims before reading it, so a hostile record could ask for
 * gigabytes. This walk checks every length, count, index and nesting depth against the bytes present
 * (and that the datum fills them exactly) before Avro C sees the record. */

#define MAX_DEPTH 64
#define MAX_ITEMS (1 << 22) /* array/map elements per record, against zero-size items */

struct walk {
    const unsigned char *p, *end;
    long items;
};

static int read_varint(struct walk *w, int64_t *out, int max_bytes)
{
    uint64_t v = 0;
    for (int shift = 0, i = 0; i < max_bytes; i++, shift += 7) {
        if (w->p >= w->end)
            return -1;
        unsigned char b = *w->p++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
            return 0;
        }
    }
    return -1;
}

static int skip(struct walk *w, int64_t n)
{
    if (n < 0 || n > w->end - w->p)
        return -1;
    w->p += n;
    return 0;
}

static int walk_datum(struct walk *w, avro_schema_t s, int depth)
{
    int64_t v;
    if (depth > MAX_DEPTH)
        return -1;
    if (is_avro_link(s))
        s = avro_schema_link_target(s);
    switch (avro_typeof(s)) {
    case AVRO_NULL: return 0;
    case AVRO_BOOLEAN: return w->p < w->end && *w->p <= 1 ? (w->p++, 0) : -1;
    case AVRO_INT32: return read_varint(w, &v, 5);
    case AVRO_INT64: return read_varint(w, &v, 10);
    case AVRO_FLOAT: return skip(w, 4);
    case AVRO_DOUBLE: return skip(w, 8);
    case AVRO_BYTES:
    case AVRO_STRING: return read_varint(w, &v, 10) || skip(w, v);
    case AVRO_FIXED: return skip(w, avro_schema_fixed_size(s));
    case AVRO_ENUM: return read_varint(w, &v, 5) || v < 0 || v >= avro_schema_enum_number_of_symbols(s) ? -1 : 0;
    case AVRO_UNION:
        if (read_varint(w, &v, 5) || v < 0 || (size_t)v >= avro_schema_union_size(s))
            return -1;
        return walk_datum(w, avro_schema_union_branch(s, (int)v), depth + 1);
    case AVRO_RECORD:
        for (size_t i = 0; i < avro_schema_record_size(s); i++)
            if (walk_datum(w, avro_schema_record_field_get_by_index(s, (int)i), depth + 1))
                return -1;
        return 0;
    case AVRO_ARRAY:
    case AVRO_MAP: {
        int map = avro_typeof(s) == AVRO_MAP;
        avro_schema_t item = map ? avro_schema_map_values(s) : avro_schema_array_items(s);
        for (;;) {
            int64_t count, size;
            if (read_varint(w, &count, 10))
                return -1;
            if (count == 0)
                return 0;
            if (count < 0) { /* a negative count is followed by the block's byte size */
                if (count == INT64_MIN || read_varint(w, &size, 10) || size < 0 || size > w->end - w->p)
                    return -1;
                count = -count;
            }
            if (count > MAX_ITEMS - w->items)
                return -1;
            w->items += (long)count;
            for (int64_t i = 0; i < count; i++) {
                if (map && (read_varint(w, &v, 10) || skip(w, v)))
                    return -1;
                if (walk_datum(w, item, depth + 1))
                    return -1;
            }
        }
    }
    default: return -1;
    }
}

/* Reads one datum that must use exactly len bytes. */
static int read_exact(avro_schema_t schema, const char *data, size_t len, avro_value_t *v)
{
    struct walk w = {(const unsigned char *)data, (const unsigned char *)data + len, 0};
    if (walk_datum(&w, schema, 0) || w.p != w.end)
        return -3;
    avro_reader_t r = avro_reader_memory(data, (int64_t)len);
    if (!r)
        return -1;
    avro_value_reset(v);
    int rc = avro_value_read(r, v);
    if (rc == 0 && !avro_reader_is_eof(r)) {
        char probe;
        rc = avro_read(r, &probe, 1) == 0 ? -2 : 0; /* a byte left over: not this datum */
    }
    avro_reader_free(r);
    return rc;
}

/* Walks a dotted path through records (and the current branch of unions). */
static int lookup(avro_value_t *root, const char *path, avro_value_t *out)
{
    avro_value_t cur = *root;
    const char *p = path;
    char seg[256];
    for (;;) {
        while (avro_value_get_type(&cur) == AVRO_UNION)
            if (avro_value_get_current_branch(&cur, &cur))
                return -1;
        if (!*p)
            break;
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        if (n >= sizeof seg || avro_value_get_type(&cur) != AVRO_RECORD)
            return -1;
        memcpy(seg, p, n);
        seg[n] = '\0';
        if (avro_value_get_by_name(&cur, seg, &cur, NULL))
            return -1;
        p += n + (dot ? 1 : 0);
    }
    *out = cur;
    return 0;
}

static const char *type_name(avro_type_t t)
{
    switch (t) {
    case AVRO_STRING: return "a string";
    case AVRO_BYTES: return "bytes";
    case AVRO_INT32:
    case AVRO_INT64: return "an integer";
    case AVRO_FLOAT:
    case AVRO_DOUBLE: return "a number";
    case AVRO_BOOLEAN: return "a boolean";
    case AVRO_NULL: return "null";
    case AVRO_RECORD: return "a record";
    case AVRO_ARRAY: return "an array";
    case AVRO_MAP: return "a map";
    default: return "another type";
    }
}

#define FAIL(...)                                                                                                      \
    do {                                                                                                               \
        nlpd_record_fail(&item->rec, "input", __VA_ARGS__);                                                            \
        rc = NLPD_EFORMAT;                                                                                             \
        goto done;                                                                                                     \
    } while (0)

/* With input.schema_registry: a Confluent-framed datum read with its writer schema (by id), resolved into the
 * reader schema when there is one. A registry that cannot be reached fails the record (dead letter) with a
 * reason that says so: nlpd replay brings it back once the registry answers. */
static int decode_registry(struct nlpd_avro_in *a, struct nlpd_item *item, const char *data, size_t len,
                           avro_value_t *v)
{
    const unsigned char *u = (const unsigned char *)data;
    int32_t id = (int32_t)((uint32_t)u[1] << 24 | (uint32_t)u[2] << 16 | (uint32_t)u[3] << 8 | u[4]);
    const struct nlpd_sr_writer *w;
    int rc;
    struct nlpd_error e = {0};
    if ((rc = nlpd_sr_decoder_get(a->sr, id, &w, &e)) < 0) {
        nlpd_record_fail(&item->rec, "input", "schema id %d: %s%s", (int)id, e.message,
                         rc == NLPD_EAGAIN ? " (registry unreachable: replay this record when it is back)" : "");
        return rc;
    }
    if (avro_generic_value_new(w->value_iface, v))
        return NLPD_ENOMEM;
    if (!w->resolver) {
        rc = read_exact(w->schema, data + 5, len - 5, v);
    } else {
        avro_value_t rv;
        if (avro_resolved_writer_new_value(w->resolver, &rv)) {
            avro_value_decref(v);
            return NLPD_ENOMEM;
        }
        avro_resolved_writer_set_dest(&rv, v);
        rc = read_exact(w->schema, data + 5, len - 5, &rv);
        avro_value_decref(&rv);
    }
    if (rc == 0)
        return 0;
    avro_value_decref(v);
    nlpd_record_fail(&item->rec, "input",
                     "undecodable Avro record (%zu bytes): not a datum of its writer schema (id %d)", len, (int)id);
    return NLPD_EFORMAT;
}

int nlpd_avro_in_decode(struct nlpd_avro_in *a, struct nlpd_item *item, const char *data, size_t len)
{
    avro_value_t v, f;
    int rc = 0;
    if (a->sr && len >= 5 && data[0] == 0) {
        if ((rc = decode_registry(a, item, data, len, &v)) < 0)
            return rc == NLPD_ENOMEM ? (nlpd_record_fail(&item->rec, "input", "out of memory"), rc) : NLPD_EFORMAT;
    } else {
        if (!a->iface) {
            nlpd_record_fail(&item->rec, "input",
                             "Avro record (%zu bytes) without the Confluent framing (byte 0, schema id): set "
                             "input.schema to read such records",
                             len);
            return NLPD_EFORMAT;
        }
        if (avro_generic_value_new(a->iface, &v)) {
            nlpd_record_fail(&item->rec, "input", "out of memory");
            return NLPD_ENOMEM;
        }
        /* Confluent framing is tried first when its magic byte is there; the datum must fill the rest. */
        int ok = len >= 5 && data[0] == 0 && read_exact(a->schema, data + 5, len - 5, &v) == 0;
        if (!ok && read_exact(a->schema, data, len, &v) != 0)
            FAIL("undecodable Avro record (%zu bytes): not a datum of the writer schema %s (a length, count or union "
                 "index runs past the record, or bytes are left over)",
                 len, a->in->schema);
    }

    if (lookup(&v, a->in->id_field, &f) == 0) {
        char tmp[40];
        const char *s = NULL;
        size_t n = 0;
        int32_t i32;
        int64_t i64;
        if (avro_value_get_type(&f) == AVRO_STRING && avro_value_get_string(&f, &s, &n) == 0 && s) {
            if (n > 1 && memchr(s, '\0', n - 1)) /* avro counts the NUL */
                FAIL("id field \"%s\" contains a NUL character", a->in->id_field);
            item->id = strndup(s, n ? n - 1 : 0);
        } else if (avro_value_get_type(&f) == AVRO_INT32 && avro_value_get_int(&f, &i32) == 0) {
            snprintf(tmp, sizeof tmp, "%d", (int)i32);
            item->id = strdup(tmp);
        } else if (avro_value_get_type(&f) == AVRO_INT64 && avro_value_get_long(&f, &i64) == 0) {
            snprintf(tmp, sizeof tmp, "%lld", (long long)i64);
            item->id = strdup(tmp);
        }
    } else if (a->sr) { /* a field this writer lacks: the reader schema's default */
        char def[256];
        if (nlpd_sr_decoder_default(a->sr, a->in->id_field, def, sizeof def) >= 0)
            item->id = strdup(def);
    }
    const char *s = NULL;
    size_t n = 0;
    char def[4096];
    if (lookup(&v, a->in->text_field, &f) != 0) {
        if (!a->sr || nlpd_sr_decoder_default(a->sr, a->in->text_field, def, sizeof def) != 1)
            FAIL("missing text field \"%s\"", a->in->text_field);
        s = def;
        n = strlen(def) + 1;
    } else {
        if (avro_value_get_type(&f) != AVRO_STRING)
            FAIL("text field \"%s\" is %s, not a string", a->in->text_field, type_name(avro_value_get_type(&f)));
        if (avro_value_get_string(&f, &s, &n) || !s)
            FAIL("cannot read text field \"%s\"", a->in->text_field);
    }
    n = n ? n - 1 : 0; /* avro counts the NUL */
    item->text_copy = malloc(n + 1);
    if (!item->text_copy)
        FAIL("out of memory");
    memcpy(item->text_copy, s, n);
    item->text_copy[n] = '\0';
    rc = nlpd_item_set_text(item, a->in, item->text_copy, n);
done:
    avro_value_decref(&v);
    return rc;
}
