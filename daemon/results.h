/* The result types of the enriched record (DESIGN.md §11), described once: how each is freed, written to JSON
 * and Avro, encoded for the result cache, and which fields `when` conditions may read. record.c, avro_codec.c,
 * result_codec.c, when.c and pipeline.c loop over this table; a stage with a new output adds its slot to
 * nlpd_stage.h and one entry here (and its field to schemas/enriched.avsc). */
#ifndef NLPD_RESULTS_H
#define NLPD_RESULTS_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "nlpd_stage.h"

/* ---- cache encoding helpers (little-endian; strings are u16 length + bytes) ---- */

struct nlpd_cache_reader {
    const unsigned char *p, *end;
    int bad; /* set by any check that failed: the whole value is refused */
};

void nlpd_cache_put_u8(struct nlpd_buf *b, unsigned v);
void nlpd_cache_put_u32(struct nlpd_buf *b, uint32_t v);
void nlpd_cache_put_f32(struct nlpd_buf *b, float f);
void nlpd_cache_put_str(struct nlpd_buf *b, const char *s);
unsigned nlpd_cache_get_u8(struct nlpd_cache_reader *r);
uint32_t nlpd_cache_get_u32(struct nlpd_cache_reader *r);
float nlpd_cache_get_f32(struct nlpd_cache_reader *r);     /* finite only */
unsigned nlpd_cache_get_bool(struct nlpd_cache_reader *r); /* 0 or 1 only */
/* Copies a string into dst (cap bytes, NUL-terminated); too long for dst, NUL or invalid UTF-8 is bad. */
void nlpd_cache_get_str(struct nlpd_cache_reader *r, char *dst, size_t cap);

/* ---- `when` fields ---- */

enum nlpd_field_type { NLPD_FIELD_STRING, NLPD_FIELD_NUMBER, NLPD_FIELD_BOOL };

struct nlpd_field_value {
    const char *s; /* NLPD_FIELD_STRING */
    double x;      /* NLPD_FIELD_NUMBER, NLPD_FIELD_BOOL (0/1) */
};

struct nlpd_result_field {
    const char *name; /* "lang.code"; ending in '.', the rest of the name is an argument ("moderation.categories.") */
    enum nlpd_field_type type;
    int list; /* several values (entities.groups): a comparison holds when it holds for any of them */
    /* Value i of the field (i > 0 only for a list); 0 when there is none (the result is not set). An empty list
     * gives one NULL string, so that its result counts as set. */
    int (*get)(const struct nlpd_record *r, const char *arg, size_t i, struct nlpd_field_value *out);
    const char *doc;
};

/* ---- result types ---- */

struct nlpd_result_type {
    unsigned bit;     /* NLPD_RESULT_* */
    const char *name; /* its field in the enriched record (JSON and Avro) */
    int (*is_set)(const struct nlpd_record *r);
    /* Frees what the record owns for this result and clears it. */
    void (*clear)(struct nlpd_record *r);
    /* Appends the JSON value of a set result. */
    void (*json)(const struct nlpd_record *r, struct nlpd_buf *out);
    /* Fills the non-null branch (an avro_value_t *) of the result's ["null", T] union; 0 or -1. */
    int (*avro)(const struct nlpd_record *r, void *branch);
    /* Cache: the data of a set result (after its presence byte), and reading it back into a scratch record. */
    void (*cache_put)(const struct nlpd_record *r, struct nlpd_buf *out);
    void (*cache_get)(struct nlpd_cache_reader *rd, struct nlpd_record *scratch);
    /* Replaces dst's result by src's (which is left cleared). */
    void (*move)(struct nlpd_record *dst, struct nlpd_record *src);
    const struct nlpd_result_field *fields; /* terminated by a NULL name */
    /* Shadow agreement: whether two set results say the same (label equality for classifiers, the same entity
     * set for NER, the same text for translation, the same language for langid). */
    int (*same)(const struct nlpd_record *a, const struct nlpd_record *b);
    /* Drift: the labels of a set result (up to cap into out; returns how many there are), and its confidence
     * (0: it has none). */
    size_t (*labels)(const struct nlpd_record *r, const char **out, size_t cap);
    int (*confidence)(const struct nlpd_record *r, float *score);
};

/* In the order of the enriched record's fields (also the order of the cache encoding). */
extern const struct nlpd_result_type nlpd_result_types[];
extern const size_t nlpd_result_ntypes;

/* The field named name[0..len) or NULL; for an argument field, *arg_at is where the argument starts in name. */
const struct nlpd_result_field *nlpd_result_field_find(const char *name, size_t len, size_t *arg_at);
/* "lang.code, lang.score, ...": every field name, for error messages and docs. */
const char *nlpd_result_field_names(void);
/* Whether one of the results selected by bits is set in r. */
int nlpd_results_any_set(unsigned bits, const struct nlpd_record *r);

#endif
