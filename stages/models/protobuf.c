/* Protobuf wire-format reader: see protobuf.h. */
#include "protobuf.h"

int nlpd_pb_varint(struct nlpd_pb *b, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (b->p >= b->end)
            return -1;
        uint8_t x = *b->p++;
        *v |= (uint64_t)(x & 0x7f) << shift;
        if (!(x & 0x80))
            return 0;
    }
    return -1;
}

int nlpd_pb_field(struct nlpd_pb *b, uint32_t *field, uint32_t *wt, uint64_t *val, struct nlpd_pb *sub)
{
    uint64_t key;
    if (nlpd_pb_varint(b, &key) < 0)
        return -1;
    *field = (uint32_t)(key >> 3);
    *wt = (uint32_t)(key & 7);
    switch (*wt) {
    case 0: return nlpd_pb_varint(b, val);
    case 1:
        if (b->end - b->p < 8)
            return -1;
        *val = 0;
        for (int i = 0; i < 8; i++)
            *val |= (uint64_t)b->p[i] << (8 * i);
        b->p += 8;
        return 0;
    case 2: {
        uint64_t n;
        if (nlpd_pb_varint(b, &n) < 0 || n > (uint64_t)(b->end - b->p))
            return -1;
        sub->p = b->p;
        sub->end = b->p + n;
        b->p += n;
        return 0;
    }
    case 5:
        if (b->end - b->p < 4)
            return -1;
        *val = (uint64_t)b->p[0] | (uint64_t)b->p[1] << 8 | (uint64_t)b->p[2] << 16 | (uint64_t)b->p[3] << 24;
        b->p += 4;
        return 0;
    default: return -1;
    }
}
