/* Fuzz target for the SentencePiece model reader: any bytes must load or give an error naming the file, never
 * crash; a model that loads encodes, decodes its pieces and decodes ids. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "spm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct nlpd_error err = {0};
    struct nlpd_spm *m = nlpd_spm_load_mem(data, size, "fuzz.spm", &err);
    if (!m) {
        if (!strstr(err.message, "fuzz.spm"))
            abort(); /* every error names the file */
        return 0;
    }
    static const char *const texts[] = {"Hello  world", " \xe3\x80\x80 a\tb ", "\xff\xfe\xe2\x96", "<unk></s>", ""};
    struct nlpd_spm_pieces p = {0};
    for (size_t i = 0; i < sizeof texts / sizeof *texts + 1; i++) {
        const char *t = i < sizeof texts / sizeof *texts ? texts[i] : (const char *)data;
        size_t n = i < sizeof texts / sizeof *texts ? strlen(t) : (size > 256 ? 256 : size);
        if (nlpd_spm_encode(m, t, n, &p, &err) < 0)
            continue;
        const char **pp = malloc((p.n + 1) * sizeof *pp);
        for (size_t k = 0; pp && k < p.n; k++)
            pp[k] = p.buf + p.off[k];
        char *txt;
        if (pp && nlpd_spm_decode_pieces(m, pp, p.len, p.n, &txt, NULL, &err) == 0)
            free(txt);
        if (pp && nlpd_spm_decode_ids(m, p.id, p.n, &txt, NULL, &err) == 0)
            free(txt);
        free(pp);
    }
    int32_t ids[64];
    size_t n = nlpd_spm_size(m) < 64 ? nlpd_spm_size(m) : 64;
    for (size_t i = 0; i < n; i++)
        ids[i] = (int32_t)i;
    char *txt;
    if (nlpd_spm_decode_ids(m, ids, n, &txt, NULL, &err) == 0)
        free(txt);
    nlpd_spm_pieces_free(&p);
    nlpd_spm_free(m);
    return 0;
}
