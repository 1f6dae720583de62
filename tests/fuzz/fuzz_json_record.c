/* Fuzz target for JSON record decoding and re-encoding: any line must decode or give a reason,
 * and what decodes must encode into valid JSON. */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "record.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct nlpd_input_conf confs[] = {
        {.format = "json", .text_field = "text", .id_field = "id", .max_text_bytes = 1 << 20},
        {.format = "json", .text_field = "payload.body", .id_field = "meta.id", .max_text_bytes = 32},
    };
    for (size_t c = 0; c < sizeof confs / sizeof confs[0]; c++) {
        struct nlpd_item it = {0};
        nlpd_item_decode_json(&it, &confs[c], (const char *)data, size);
        struct nlpd_buf out = {0};
        if (it.rec.error) {
            nlpd_item_encode_error(&it, &out);
        } else {
            if (nlpd_utf8_invalid_at(it.rec.text, it.rec.text_len) >= 0)
                abort(); /* decoded text must be valid UTF-8 */
            nlpd_item_encode_json(&it, NULL, 0, 0.0, &out);
        }
        json_t *back = json_loads(out.data, 0, NULL);
        if (!back)
            abort(); /* our output must always be valid JSON */
        json_decref(back);
        nlpd_buf_free(&out);
        nlpd_item_clear(&it);
    }
    return 0;
}
