/* The translate stage's multilingual models (M2M100 / NLLB-200, model_type m2m_100): one model for every source
 * language. lang.code is mapped to the model's own code by the stage's lang_map first, then the code itself when
 * the model has it, then the built-in tables (lang_codes.h); the target language likewise, once at load. */
#ifndef NLPD_TRANSLATE_M2M_H
#define NLPD_TRANSLATE_M2M_H

#include <stddef.h>
#include <stdint.h>

#include "generate.h"
#include "nlpd_stage.h"

struct nlpd_tml;
struct nlpd_tml_ws;

/* 1 when DIR/config.json says model_type "m2m_100". */
int nlpd_tml_is_multilingual(const char *dir);

/* Loads the model and tokenizer, resolves target_lang and checks every lang_map value is a language of the model
 * (an error naming it otherwise); logs which of lid.176's languages the model cannot take. gen gets the model's
 * generation defaults with the target language forced. */
struct nlpd_tml *nlpd_tml_load(const struct nlpd_stage_instance *inst, const char *dir, const char *dtype,
                               const struct nlpd_conf_map *lang_map, const char *target_lang,
                               struct nlpd_gen_params *gen, struct nlpd_error *err);
void nlpd_tml_free(struct nlpd_tml *m);

/* The source-language id for a record's lang.code (NULL: unknown), or -1 when the model cannot take it;
 * *model_code (optional) gets the code it resolved to. nlpd_tml_target: the target language's id. */
int32_t nlpd_tml_target(const struct nlpd_tml *m);
int32_t nlpd_tml_source(const struct nlpd_tml *m, const char *lang_code, const char **model_code);
/* Tokenises one sentence with the source language token; ids realloc'ed as nlpd_m2m_tok_encode. */
int nlpd_tml_encode(const struct nlpd_tml *m, int32_t src, const char *text, size_t len, int32_t **ids, size_t *n,
                    struct nlpd_error *err);

struct nlpd_tml_ws *nlpd_tml_ws_new(const struct nlpd_tml *m);
void nlpd_tml_ws_free(struct nlpd_tml_ws *ws);
/* Translates n tokenised sentences as one batch; texts[i] (malloc'ed) and lens[i] get the outputs. */
int nlpd_tml_translate(const struct nlpd_tml *m, struct nlpd_tml_ws *ws, const int32_t *const *ids, const size_t *lens,
                       int n, const struct nlpd_gen_params *p, char **texts, size_t *text_lens, struct nlpd_error *err);

int nlpd_tml_max_pos(const struct nlpd_tml *m);
const char *nlpd_tml_dtype_name(const struct nlpd_tml *m);
/* "M2M100" / "NLLB", d_model, layers, weights: for the stage's load log line. */
void nlpd_tml_describe(const struct nlpd_tml *m, char *buf, size_t len);

#endif
