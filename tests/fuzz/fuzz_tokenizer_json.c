/* Fuzz target for the tokenizer.json loader: any byte string must either load or be rejected with an error, never
 * crash; a tokenizer that loads must encode a few awkward texts and pairs, with and without truncation, and decode
 * the ids (with and without special tokens, plus ids outside the vocabulary) and some raw token strings. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const texts[] = {
        "Hello world!",
        "",
        "  lead  and  trail  ",
        "h\xc3\xa9llo w\xc3\xb6rld \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80",
        "<s> [CLS] <mask> [MASK] x</s>",
        "\x80\xff\t\x01 x",
        "a-b_c'd 'll 12345 ...",
        "\xef\xbc\xa6\xef\xbc\xb5 e\xcc\x81",
    };
    struct nlpd_error err = {0};
    struct nlpd_tokenizer *t = nlpd_tokenizer_load_json((const char *)data, size, "fuzz.json", &err);
    if (!t)
        return 0;
    struct nlpd_encoding e = {0};
    size_t n = sizeof texts / sizeof texts[0];
    for (size_t i = 0; i < n; i++) {
        const char *p = i % 2 ? texts[(i + 3) % n] : NULL;
        if (nlpd_tokenizer_encode(t, texts[i], strlen(texts[i]), p, p ? strlen(p) : 0, i % 3 ? 0 : 5 + i, &e, &err) ==
            0) {
            for (size_t k = 0; k < e.n; k++)
                (void)nlpd_tokenizer_id_to_token(t, e.ids[k]);
            char *s = NULL;
            if (nlpd_tokenizer_decode(t, e.ids, e.n, (int)(i % 2), &s, NULL, &err) == 0)
                free(s);
        }
    }
    const int32_t odd[] = {-1, 0, 1, 2, 3, 1 << 30, nlpd_tokenizer_vocab_size(t), 5, 5};
    char *s = NULL;
    if (nlpd_tokenizer_decode(t, odd, sizeof odd / sizeof odd[0], 0, &s, NULL, &err) == 0)
        free(s);
    size_t len = 0, cap = 0;
    s = NULL;
    size_t lens[sizeof texts / sizeof texts[0]];
    for (size_t i = 0; i < n; i++)
        lens[i] = strlen(texts[i]);
    if (nlpd_tokenizer_convert_tokens_to_string(t, texts, lens, n, &s, &len, &cap) == 0)
        free(s);
    (void)nlpd_tokenizer_vocab_size(t);
    (void)nlpd_tokenizer_pad_id(t);
    nlpd_encoding_free(&e);
    nlpd_tokenizer_free(t);
    return 0;
}
