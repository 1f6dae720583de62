/* A minimal protobuf wire-format reader (varints, 64/32-bit fixed, length-delimited fields), bounds-checked, for
 * the sentencepiece ModelProto readers (spm.c, tokenizer_legacy.c). Groups (wire types 3 and 4) are rejected. */
#ifndef NLPD_PROTOBUF_H
#define NLPD_PROTOBUF_H

#include <stdint.h>

/* A view of [p, end); reading advances p. */
struct nlpd_pb {
    const uint8_t *p, *end;
};

/* Reads a varint (at most 10 bytes). 0, or -1 when truncated or over-long. */
int nlpd_pb_varint(struct nlpd_pb *b, uint64_t *v);

/* Reads one field: its number and wire type, and either the value (varint / fixed64 / fixed32 in *val) or, for a
 * length-delimited field (wire type 2), the payload as *sub. 0, or -1 on truncated or malformed input. */
int nlpd_pb_field(struct nlpd_pb *b, uint32_t *field, uint32_t *wt, uint64_t *val, struct nlpd_pb *sub);

#endif
