/* Fuzz target for DeBERTa's spm.model reader (tokenizer_deberta.c): any bytes must give a tokenizer or an error
 * naming the file, never crash; a tokenizer that loads encodes a pair and decodes its ids. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"
#include "tokenizer_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct nlpd_error err = {0};
    struct nlpd_tokenizer *t = nlpd_tok_deberta_spm_mem(data, size, "fuzz/spm.model", NULL, NULL, NULL, &err);
    if (!t) {
        if (!strstr(err.message, "fuzz/spm.model"))
            abort(); /* every error names the file */
        return 0;
    }
    static const char *const texts[] = {"Hello  world!", " \xe3\x80\x80 a\tb ", "\xff\xfe\xe2\x96", "[CLS] x [SEP]"};
    struct nlpd_encoding e = {0};
    for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
        if (nlpd_tokenizer_encode(t, texts[i], strlen(texts[i]), texts[(i + 1) % 4], strlen(texts[(i + 1) % 4]), 8, &e,
                                  &err) != 0)
            continue;
        char *txt = NULL;
        size_t len = 0;
        if (nlpd_tokenizer_decode(t, e.ids, e.n, 1, &txt, &len, &err) == 0)
            free(txt);
    }
    nlpd_encoding_free(&e);
    nlpd_tokenizer_free(t);
    return 0;
}
