/* Shared by the translation tokenizers (see tok_common.h). */
#include "tok_common.h"

#include <stdlib.h>
#include <string.h>

const char *nlpd_tok_content(json_t *v)
{
    if (json_is_string(v))
        return json_string_value(v);
    if (json_is_object(v) && json_is_string(json_object_get(v, "content")))
        return json_string_value(json_object_get(v, "content"));
    return NULL;
}

int nlpd_tok_vocab_max_id(json_t *v, const char *file, size_t *maxid, struct nlpd_error *err)
{
    const char *k;
    json_t *val;
    size_t count = 0;
    *maxid = 0;
    json_object_foreach(v, k, val)
    {
        if (!json_is_integer(val) || json_integer_value(val) < 0 || json_integer_value(val) >= (1 << 30))
            return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: the id of \"%.64s\" is not an integer in [0, 2^30)", file,
                                  k);
        if ((size_t)json_integer_value(val) > *maxid)
            *maxid = (size_t)json_integer_value(val);
        count++;
    }
    if (!count)
        return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: empty vocabulary", file);
    return 0;
}

int nlpd_tok_sb_add(struct nlpd_tok_sb *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q)
            return -1;
        b->p = q;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return 0;
}
