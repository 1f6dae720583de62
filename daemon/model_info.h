/* Model provenance: what a loaded model is and where it came from (architecture, dtype, labels, hub id and
 * revision as config.json / README.md say), for `nlpd models` and the nlpd_model_info metric. */
#ifndef NLPD_MODEL_INFO_H
#define NLPD_MODEL_INFO_H

#include <stdio.h>

#include "buf.h"

struct nlpd_model_provenance {
    char arch[128];    /* config.json architectures[0] (else model_type), "fasttext" for .bin/.ftz, else "" */
    char dtype[32];    /* config.json torch_dtype, else "" */
    char labels[512];  /* config.json id2label values in id order, comma-separated, else "" */
    char source[256];  /* config.json _name_or_path, else README.md's base_model, else the path */
    char revision[64]; /* config.json _commit_hash, else "" */
};

/* Fills out from a model file or folder; unknown fields stay empty (never an error: provenance is best effort). */
void nlpd_model_provenance(const char *path, struct nlpd_model_provenance *out);
/* Appends one nlpd_model_info{stage,model,role,architecture,dtype,source,revision} 1 line. */
void nlpd_model_info_line(const char *stage, const char *role, const char *id, const char *path, struct nlpd_buf *out);
/* Prints one block of `nlpd models` for a model. */
void nlpd_model_info_print(FILE *f, const char *stage, const char *role, const char *id, const char *path);

#endif
