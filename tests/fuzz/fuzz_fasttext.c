/* Fuzz target for the fastText loader: any byte string must either load or be rejected with an error,
 * never crash; a model that loads must predict on a few awkward texts. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fasttext.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const texts[] = {
        "good bad",
        "",
        "h\xc3\xa9llo w\xc3\xb6rld \xe6\x97\xa5\xe6\x9c\xac",
        "__label__x a </s> b",
        "\x80\xff\t\x01 x",
        "a b c d e f g h i j k l m n o p",
    };
    struct nlpd_error err = {0};
    struct nlpd_ft_model *m = nlpd_ft_load_mem(data, size, "fuzz", &err);
    if (!m)
        return 0;
    struct nlpd_ft_info info;
    nlpd_ft_get_info(m, &info);
    struct nlpd_ft_scratch *s = nlpd_ft_scratch_new(m);
    if (s) {
        struct nlpd_ft_pred out[4];
        for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
            int n = nlpd_ft_predict(m, s, texts[i], strlen(texts[i]), 4, 0.0f, out);
            for (int j = 0; j < n; j++)
                (void)nlpd_ft_label(m, out[j].label);
        }
        nlpd_ft_scratch_free(s);
    }
    nlpd_ft_free(m);
    return 0;
}
