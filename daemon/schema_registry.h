/* A Confluent Schema Registry client (HTTP through libcurl): input.schema_registry resolves the writer schema of
 * each Confluent-framed Avro record by its id, output.schema_registry registers (or looks up) the output schema
 * under a subject at start. Schemas and ids are cached for the life of the process, so a registry outage after
 * start costs only the ids never seen before (their records are dead-lettered, see README). */
#ifndef NLPD_SCHEMA_REGISTRY_H
#define NLPD_SCHEMA_REGISTRY_H

#include <avro.h>
#include <libconfig.h>
#include <stdint.h>
#include <stdio.h>

#include "diag.h"
#include "nlpd_error.h"

struct nlpd_sr_conf {
    int set; /* the schema_registry group is in the file */
    char *url;
    char *subject;
    char *basic_auth;      /* "user:password" */
    char *basic_auth_file; /* a file holding it instead */
    long long timeout_ms;
    int auto_register; /* output: register the schema (else only look it up) */
};

/* Reads the optional `schema_registry` group of parent (input or output; may be NULL) into c. Returns the number of
 * errors added to diag. section names the parent ("input"). */
int nlpd_sr_conf_apply(const config_setting_t *parent, struct nlpd_sr_conf *c, const char *section, const char *file,
                       struct nlpd_diag *diag);
void nlpd_sr_conf_release(struct nlpd_sr_conf *c);
int nlpd_sr_conf_equal(const struct nlpd_sr_conf *a, const struct nlpd_sr_conf *b);
void nlpd_sr_conf_doc(const char *section, FILE *out);

/* The id of schema_json under subject: registered (POST /subjects/S/versions) or looked up (POST /subjects/S).
 * When the registry cannot be reached and this process got the id before, that id (logged as such). */
int nlpd_sr_subject_id(const struct nlpd_sr_conf *c, const char *subject, const char *schema_json, int32_t *id,
                       struct nlpd_error *err);

/* The schema id output records are framed with: fixed_id (output.confluent_schema_id) without a registry, else the
 * id of the schema file under c->subject or "<topic>-value" (TopicNameStrategy). */
int nlpd_sr_output_id(const struct nlpd_sr_conf *c, const char *schema_path, const char *topic, int32_t fixed_id,
                      int32_t *id, struct nlpd_error *err);

/* Decoding side: writer schemas by id, each resolved against an optional reader schema. Thread-safe. */
struct nlpd_sr_decoder;
#define NLPD_SR_MAX_WRITERS 4096 /* writer schemas one input resolves (ids past it fail their records) */

struct nlpd_sr_writer {
    int32_t id;
    avro_schema_t schema;            /* the writer's: what the datum is walked and read with */
    avro_schema_t dest;              /* the reader schema cut to the writer's fields; NULL without a reader */
    avro_value_iface_t *resolver;    /* resolved writer (schema -> dest); NULL: read into value_iface directly */
    avro_value_iface_t *value_iface; /* class of the decoded value */
};

/* Checks that the registry answers (once per process and URL, so that a reload during an outage still works).
 * reader_path: the reader schema (.avsc), or NULL (records are read with their writer schema). */
struct nlpd_sr_decoder *nlpd_sr_decoder_new(const struct nlpd_sr_conf *c, const char *reader_path,
                                            struct nlpd_error *err);
/* The writer of id, owned by d (valid until nlpd_sr_decoder_free). NLPD_EAGAIN (retriable) when the registry cannot
 * be reached, NLPD_ENOTFOUND when it has no such id, NLPD_EFORMAT when the schema cannot be read with the reader. */
int nlpd_sr_decoder_get(struct nlpd_sr_decoder *d, int32_t id, const struct nlpd_sr_writer **w, struct nlpd_error *err);
/* The reader schema's default of the field at a dotted path, as text in buf: 1 for a string, 0 for a number, -1 when
 * there is none (a field the writer lacks reads as its default). */
int nlpd_sr_decoder_default(const struct nlpd_sr_decoder *d, const char *path, char *buf, size_t cap);
void nlpd_sr_decoder_free(struct nlpd_sr_decoder *d);

#endif
