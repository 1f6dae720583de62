/* The compact, versioned binary encoding of a stage's result fields, for the result cache. */
#ifndef NLPD_RESULT_CODEC_H
#define NLPD_RESULT_CODEC_H

#include <stddef.h>

#include "buf.h"
#include "nlpd_stage.h"

/* Appends the fields of rec selected by results (NLPD_RESULT_* bits) to out. */
void nlpd_results_encode(const struct nlpd_record *rec, unsigned results, struct nlpd_buf *out);
/* Sets those fields of rec from data; returns 0, or -1 when data is not a valid encoding (rec unchanged). */
int nlpd_results_decode(struct nlpd_record *rec, unsigned results, const unsigned char *data, size_t len);

#endif
