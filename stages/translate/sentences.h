/* Sentence boundaries for the translate stage: rule-based, for splitting a text into the units a sentence-level
 * translation model was trained on. A full stop, ! or ? followed by whitespace ends a sentence, except a full stop
 * after an abbreviation (Dr., etc., months, dotted letters like e.g. or z.B.), an initial or an ordinal
 * ("2. Mai"), or before a lowercase word or a digit; the CJK full stop and marks end one anywhere; a line break
 * always does. */
#ifndef NLPD_SENTENCES_H
#define NLPD_SENTENCES_H

#include <stddef.h>

/* Bytes of the sentence end at s[i] (0 when s[i] ends none). */
size_t nlpd_sentence_end(const char *s, size_t len, size_t i);
int nlpd_sentence_space(unsigned char c);

#endif
