/* Fuzz target for configuration parsing: any text must load or give FILE:LINE diagnostics, never crash.
 * Stage building is exercised too (models named in fuzzed configs do not exist, so no model loads). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "pipeline.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    if (strstr(text, "@include")) { /* keep the target hermetic: no file system reads */
        free(text);
        return 0;
    }
    struct nlpd_diag diag = {0};
    struct nlpd_config *cfg = nlpd_config_load_string(text, "fuzz", &diag);
    if (cfg && cfg->pipeline) {
        struct nlpd_pipeline *p = nlpd_pipeline_create(cfg, &diag);
        nlpd_pipeline_free(p);
    }
    if (!cfg && diag.n == 0)
        abort(); /* a rejected config always says why */
    nlpd_config_free(cfg);
    nlpd_diag_free(&diag);
    free(text);
    return 0;
}
