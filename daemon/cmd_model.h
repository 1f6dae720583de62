/* Model debugging commands (DESIGN.md §9): `nlpd infer --model DIR` and `nlpd tokenize --model DIR`,
 * JSON lines in, JSON lines out, for checking a model folder against transformers. */
#ifndef NLPD_CMD_MODEL_H
#define NLPD_CMD_MODEL_H

#include <stddef.h>

/* argv[0] is the command name ("infer" / "tokenize"); returns the process exit status. */
int nlpd_cmd_infer(int argc, char **argv);
int nlpd_cmd_tokenize(int argc, char **argv);

/* Shared by the model commands: a numeric option in [lo, hi] (a message on stderr and -1 otherwise), and the
 * kernels logger that says which backend ran a model. */
int nlpd_cmd_number(const char *cmd, const char *opt, const char *v, long lo, long hi, long *out);
void nlpd_cmd_log_backend(const char *line);

/* Translation models: `nlpd infer --model DIR` generates instead of classifying: Marian (cmd_translate.c),
 * M2M100 / NLLB (cmd_m2m.c). nlpd_cmd_is_seq2seq: 1 Marian, 2 M2M100 / NLLB, 0 neither. */
int nlpd_cmd_is_seq2seq(const char *model_dir);
int nlpd_cmd_infer_seq2seq(int argc, char **argv);
int nlpd_cmd_infer_m2m(int argc, char **argv);
/* `nlpd tokenize` of an M2M100 / NLLB folder: without tokenizer.json (transformers' AutoTokenizer then takes the
 * slow tokenizer), or with --src-lang (the language token placed per line, not by the saved template) */
int nlpd_cmd_tokenize_is_m2m(int argc, char **argv);
int nlpd_cmd_tokenize_m2m(int argc, char **argv);
/* `nlpd tokenize` on a Marian folder (cmd_tokenize_marian.c): {"ids"} per line, or {"text"} with decode. */
int nlpd_cmd_tokenize_marian(const char *model, int decode, size_t max_length);

#endif
