/* Avro for Kafka records (Apache Avro C): encoding the enriched record with schemas/enriched.avsc
 * (optionally in the Confluent wire format) and decoding Avro input records with a configured writer
 * schema. Encoders and decoders are shared between worker threads; each call works on its own value. */
#ifndef NLPD_AVRO_CODEC_H
#define NLPD_AVRO_CODEC_H

#include <stdint.h>

#include "buf.h"
#include "config.h"
#include "record.h"

struct nlpd_avro_out;
struct nlpd_avro_in;

/* Loads the enriched-record schema; confluent_id > 0 adds the Confluent framing (0, id, datum). */
struct nlpd_avro_out *nlpd_avro_out_new(const char *schema_path, int32_t confluent_id, struct nlpd_error *err);
/* Appends the Avro encoding of item to out. Returns 0 or a negative NLPD_E* code. */
int nlpd_avro_out_encode(struct nlpd_avro_out *o, const struct nlpd_item *item, const struct nlpd_model_ref *models,
                         size_t nmodels, double now, struct nlpd_buf *out);
void nlpd_avro_out_free(struct nlpd_avro_out *o);

/* Loads the input writer schema (in->schema); text_field / id_field are dotted paths into the record. */
struct nlpd_avro_in *nlpd_avro_in_new(const struct nlpd_input_conf *in, struct nlpd_error *err);
/* Decodes one datum (plain, or Confluent-framed: magic 0 + 4-byte schema id) into item; on bad input the
 * record fails with the reason (error_stage "input"). Returns 0 or NLPD_EFORMAT. */
int nlpd_avro_in_decode(struct nlpd_avro_in *a, struct nlpd_item *item, const char *data, size_t len);
void nlpd_avro_in_free(struct nlpd_avro_in *a);

#endif
