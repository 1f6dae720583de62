/* Fuzz target for config.json parsing: any text must parse or give an error naming the file, never crash; a
 * parsed config is self-consistent (sizes positive, heads divide the hidden size, every label present). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hf_config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct nlpd_hf_config cfg;
    struct nlpd_error err = {0};
    if (nlpd_hf_config_parse((const char *)data, size, "fuzz/config.json", &cfg, &err)) {
        if (!strstr(err.message, "fuzz/config.json"))
            abort();
        return 0;
    }
    if (cfg.hidden_size <= 0 || cfg.num_heads <= 0 || cfg.hidden_size % cfg.num_heads || cfg.num_layers <= 0)
        abort();
    for (int i = 0; i < cfg.num_labels; i++)
        if (!cfg.id2label[i] || nlpd_hf_config_label_id(&cfg, cfg.id2label[i]) < 0)
            abort();
    nlpd_hf_config_free(&cfg);
    return 0;
}
