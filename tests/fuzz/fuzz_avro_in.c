/* Fuzz target for Avro input decoding: any bytes decode against the writer schema or give a reason. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "avro_codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char schema[] =
    "{\"type\":\"record\",\"name\":\"In\",\"fields\":[{\"name\":\"id\",\"type\":[\"null\",\"string\",\"long\"]},"
    "{\"name\":\"tags\",\"type\":{\"type\":\"array\",\"items\":\"string\"}},"
    "{\"name\":\"body\",\"type\":[\"null\",{\"type\":\"record\",\"name\":\"B\",\"fields\":["
    "{\"name\":\"text\",\"type\":\"string\"},{\"name\":\"m\",\"type\":{\"type\":\"map\",\"values\":\"double\"}}]}]}]}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct nlpd_avro_in *a;
    static struct nlpd_input_conf in = {
        .format = "avro", .text_field = "body.text", .id_field = "id", .max_text_bytes = 1 << 16};
    if (!a) {
        static char path[] = "/tmp/nlpd-fuzz-avro-XXXXXX";
        int fd = mkstemp(path);
        if (fd < 0 || write(fd, schema, sizeof schema - 1) != (ssize_t)(sizeof schema - 1))
            abort();
        close(fd);
        in.schema = path;
        struct nlpd_error err = {0};
        a = nlpd_avro_in_new(&in, &err);
        unlink(path);
        if (!a)
            abort();
    }
    struct nlpd_item it = {0};
    int rc = nlpd_avro_in_decode(a, &it, (const char *)data, size);
    if ((rc == 0) != (it.rec.error == NULL))
        abort(); /* a failure always has a reason, a success never has one */
    nlpd_item_clear(&it);
    return 0;
}
