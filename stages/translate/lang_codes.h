/* Language codes for multilingual translation models: lang.code as langid writes it (lid.176's labels: ISO 639-1
 * where there is one, else ISO 639-3 or Wikipedia codes) -> the codes M2M100 (ISO 639-1 style, "de") and NLLB-200
 * (FLORES-200, "deu_Latn") models use. The tables are built in; the translate stage adds a user map first. */
#ifndef NLPD_LANG_CODES_H
#define NLPD_LANG_CODES_H

#include <stddef.h>

/* The FLORES-200 code for an ISO 639-1 / 639-3 / lid.176 code, or NULL. A 639-3 code that is the prefix of a
 * FLORES-200 code maps to it ("deu" -> "deu_Latn"; macro-languages to their main member: "ara" -> "arb_Arab"). */
const char *nlpd_lang_flores200(const char *code);
/* The M2M100 spelling candidate for an ISO 639-1 / 639-3 / lid.176 code (aliases such as "nb" -> "no",
 * "fil" -> "tl", 639-3 -> 639-1 through the FLORES table); the code itself when nothing maps it. */
const char *nlpd_lang_m2m100(const char *code);
/* lid.176's labels (what langid can write), for saying which of them a model cannot take. */
size_t nlpd_lang_lid176_count(void);
const char *nlpd_lang_lid176(size_t i);

#endif
