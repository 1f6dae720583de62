/* What results.c and results_cache.c share: each result type's cache encoder and decoder, which the types table
 * (results.c) points at. Not for the rest of nlpd: results.h is the interface. */
#ifndef NLPD_RESULTS_INTERNAL_H
#define NLPD_RESULTS_INTERNAL_H

#include "results.h"

void nlpd_lang_cache_put(const struct nlpd_record *r, struct nlpd_buf *out);
void nlpd_lang_cache_get(struct nlpd_cache_reader *rd, struct nlpd_record *t);
void nlpd_translation_cache_put(const struct nlpd_record *r, struct nlpd_buf *out);
void nlpd_translation_cache_get(struct nlpd_cache_reader *rd, struct nlpd_record *t);
void nlpd_sentiment_cache_put(const struct nlpd_record *r, struct nlpd_buf *out);
void nlpd_sentiment_cache_get(struct nlpd_cache_reader *rd, struct nlpd_record *t);
void nlpd_entities_cache_put(const struct nlpd_record *r, struct nlpd_buf *out);
void nlpd_entities_cache_get(struct nlpd_cache_reader *rd, struct nlpd_record *t);
void nlpd_moderation_cache_put(const struct nlpd_record *r, struct nlpd_buf *out);
void nlpd_moderation_cache_get(struct nlpd_cache_reader *rd, struct nlpd_record *t);

#endif
