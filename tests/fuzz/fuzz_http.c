/* Fuzz target for the metrics server's request-head parser: any bytes parse or are refused, never a crash or a
 * read outside the head; a parsed path lies inside it. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > NLPD_HTTP_MAX_HEAD)
        return 0;
    char *head = malloc(size ? size : 1); /* exact size: ASan sees any read past the end */
    if (!head)
        return 0;
    memcpy(head, data, size);
    struct nlpd_http_request r;
    if (nlpd_http_parse_head(head, size, &r) == 0 &&
        (r.path < head || r.path + r.path_len > head + size || r.method < NLPD_HTTP_GET || r.method > NLPD_HTTP_OTHER))
        abort();
    free(head);
    return 0;
}
