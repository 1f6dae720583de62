/* Result encoding for the cache (see result_codec.h). Layout: version byte, then per selected result type, in the
 * order of the result table (results.c), a presence byte and the type's data. A cached value comes from outside
 * the process (whoever can write Redis): the types' decoders check everything the output relies on, not only the
 * framing. */
#include "result_codec.h"

#include <string.h>

#include "results.h"

#define VERSION 1

void nlpd_results_encode(const struct nlpd_record *r, unsigned results, struct nlpd_buf *out)
{
    nlpd_cache_put_u8(out, VERSION);
    for (size_t i = 0; i < nlpd_result_ntypes; i++) {
        const struct nlpd_result_type *t = &nlpd_result_types[i];
        if (!(results & t->bit))
            continue;
        int set = t->is_set(r);
        nlpd_cache_put_u8(out, (unsigned)set);
        if (set)
            t->cache_put(r, out);
    }
}

/* Decodes into a scratch record first so that a bad value leaves the real one untouched. */
int nlpd_results_decode(struct nlpd_record *rec, unsigned results, const unsigned char *data, size_t len)
{
    struct nlpd_cache_reader r = {data, data + len, 0};
    struct nlpd_record t = {0};
    if (nlpd_cache_get_u8(&r) != VERSION)
        return -1;
    for (size_t i = 0; i < nlpd_result_ntypes && !r.bad; i++) {
        const struct nlpd_result_type *type = &nlpd_result_types[i];
        if ((results & type->bit) && nlpd_cache_get_bool(&r) && !r.bad)
            type->cache_get(&r, &t);
    }
    if (r.bad || r.p != r.end) {
        nlpd_record_free_results(&t);
        return -1;
    }
    for (size_t i = 0; i < nlpd_result_ntypes; i++)
        if (results & nlpd_result_types[i].bit)
            nlpd_result_types[i].move(rec, &t);
    return 0;
}
