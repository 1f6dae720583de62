/* Records as they travel through nlpd: decoding a JSON input record (text and id fields by dotted
 * path, with a reason for every rejected record) and encoding the enriched record of DESIGN.md §11. */
#ifndef NLPD_RECORD_H
#define NLPD_RECORD_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "config.h"
#include "nlpd_stage.h"

/* Marks one record as failed with a reason, tagged `stage` ("input", "output", a stage instance's name: stages
 * themselves call nlpd_stage_fail); the first reason stays. */
void nlpd_record_fail(struct nlpd_record *rec, const char *stage, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Where a Kafka record came from (DESIGN.md §11 "source"). */
struct nlpd_source {
    int set;
    const char *topic;
    int32_t partition;
    int64_t offset;
    int64_t timestamp_ms; /* -1 when the record has none */
};

struct nlpd_item {
    struct nlpd_record rec; /* text and results; rec.error set when the record failed */
    void *json;             /* the decoded input document (json_t *), owned */
    char *text_copy;        /* owned copy of the text when the decoder could not point into its input */
    char *id;               /* the record id as text, NULL when absent */
    int64_t line;           /* input line number (pipe mode), 1-based */
    struct nlpd_source source;
    double t_in; /* monotonic seconds when the record arrived */
};

/* Decodes one JSON record into item (which must be zeroed). On bad input the item gets
 * rec.error with the reason and error_stage "input"; the return value is then NLPD_EFORMAT. */
int nlpd_item_decode_json(struct nlpd_item *item, const struct nlpd_input_conf *in, const char *data, size_t len);
void nlpd_item_clear(struct nlpd_item *item);
/* Frees the decoded input (document, text copy, id) once the output is encoded, on the thread that decoded it: the
 * record's text is gone; its results and error stay. */
void nlpd_item_drop_input(struct nlpd_item *item);
/* Checks a decoded text (UTF-8, NUL, empty, max_text_bytes) and points the record at it; on a problem
 * the record fails with the reason. Shared by every input format. Returns 0 or NLPD_EFORMAT. */
int nlpd_item_set_text(struct nlpd_item *item, const struct nlpd_input_conf *in, const char *text, size_t len);

/* Names of the model behind each stage, for the output's meta.models. */
struct nlpd_model_ref {
    unsigned stage_index; /* position in the pipeline: matches nlpd_record.stages_run bits */
    const char *stage;
    const char *id;        /* e.g. "lid.176.ftz@sha256:8f34..." */
    const char *canary_id; /* the stage's canary model (records with their canary_run bit), NULL without one */
};

/* The model that wrote stage m's result of r: its canary's or its primary's. */
static inline const char *nlpd_model_ref_id(const struct nlpd_model_ref *m, const struct nlpd_record *r)
{
    return m->canary_id && m->stage_index < 32 && (r->canary_run & (1u << m->stage_index)) ? m->canary_id : m->id;
}

/* Appends the enriched record (one JSON object, no newline); meta.models names the models of the
 * stages that processed this record. */
void nlpd_item_encode_json(const struct nlpd_item *item, const struct nlpd_model_ref *models, size_t nmodels,
                           double now, struct nlpd_buf *out);
/* Appends the error line of pipe mode: {"error": ..., "line": N, "id": ..., "stage": ...}. */
void nlpd_item_encode_error(const struct nlpd_item *item, struct nlpd_buf *out);

/* Returns the byte offset of the first invalid UTF-8 sequence, or -1 when s is valid UTF-8
 * (shortest forms only, no surrogates, nothing above U+10FFFF). */
long nlpd_utf8_invalid_at(const char *s, size_t len);

double nlpd_now(void);

#endif
