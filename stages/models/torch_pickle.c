/* Restricted reader of torch.save zip files (see torch_pickle.h). The zip directory and the pickle are untrusted:
 * every offset and length is checked before use, values live in an arena freed at the end, and the unpickler
 * only builds dicts, tuples, lists, scalars, strings and tensors. No pickle code is ever executed. */
#include "torch_pickle.h"
#include "grow.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ zip directory */

struct zentry {
    const char *name;
    size_t nlen;
    const unsigned char *data;
    size_t size;
};

struct zip {
    struct zentry *e;
    size_t n;
};

static uint64_t le(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static int zip_fail(struct nlpd_error *err, const char *name, const char *what)
{
    return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: not a readable torch.save zip: %s", name, what);
}

static int zip_open(const unsigned char *b, size_t size, const char *name, struct zip *z, struct nlpd_error *err)
{
    memset(z, 0, sizeof *z);
    if (size < 22)
        return zip_fail(err, name, "too short");
    size_t eocd = SIZE_MAX;
    for (size_t p = size - 22 + 1, stop = size - 22 > 65535 ? size - 22 - 65535 : 0; p-- > stop;)
        if (memcmp(b + p, "PK\x05\x06", 4) == 0) {
            eocd = p;
            break;
        }
    if (eocd == SIZE_MAX)
        return zip_fail(err, name, "no end of central directory");
    uint64_t total = le(b + eocd + 10, 2), cdsize = le(b + eocd + 12, 4), cdoff = le(b + eocd + 16, 4);
    if (total == 0xFFFF || cdsize == 0xFFFFFFFF || cdoff == 0xFFFFFFFF) { /* zip64 */
        if (eocd < 20 || memcmp(b + eocd - 20, "PK\x06\x07", 4) != 0)
            return zip_fail(err, name, "zip64 locator missing");
        uint64_t z64 = le(b + eocd - 20 + 8, 8);
        if (z64 > size || size - z64 < 56 || memcmp(b + z64, "PK\x06\x06", 4) != 0)
            return zip_fail(err, name, "zip64 end of central directory out of range");
        total = le(b + z64 + 32, 8);
        cdsize = le(b + z64 + 40, 8);
        cdoff = le(b + z64 + 48, 8);
    }
    if (cdoff > size || cdsize > size - cdoff || total > cdsize / 46)
        return zip_fail(err, name, "central directory out of range");
    z->e = calloc(total ? total : 1, sizeof *z->e);
    if (!z->e)
        return nlpd_error_set(err, NLPD_ENOMEM, 0, "%s: out of memory", name);
    size_t p = (size_t)cdoff, end = (size_t)(cdoff + cdsize);
    for (uint64_t i = 0; i < total; i++) {
        if (end - p < 46 || memcmp(b + p, "PK\x01\x02", 4) != 0)
            return zip_fail(err, name, "bad central directory entry");
        uint64_t method = le(b + p + 10, 2), comp = le(b + p + 20, 4), usize = le(b + p + 24, 4);
        size_t nlen = (size_t)le(b + p + 28, 2), elen = (size_t)le(b + p + 30, 2), clen = (size_t)le(b + p + 32, 2);
        uint64_t loff = le(b + p + 42, 4);
        if (end - p - 46 < nlen + elen + clen)
            return zip_fail(err, name, "central directory entry out of range");
        const unsigned char *ex = b + p + 46 + nlen;
        for (size_t k = 0; k + 4 <= elen;) { /* zip64 extended information */
            size_t id = (size_t)le(ex + k, 2), l = (size_t)le(ex + k + 2, 2), q = k + 4;
            if (l > elen - k - 4)
                break;
            if (id == 1) {
                if (usize == 0xFFFFFFFF && q + 8 <= k + 4 + l)
                    usize = le(ex + q, 8), q += 8;
                if (comp == 0xFFFFFFFF && q + 8 <= k + 4 + l)
                    comp = le(ex + q, 8), q += 8;
                if (loff == 0xFFFFFFFF && q + 8 <= k + 4 + l)
                    loff = le(ex + q, 8);
            }
            k += 4 + l;
        }
        struct zentry *e = &z->e[z->n++];
        e->name = (const char *)b + p + 46;
        e->nlen = nlen;
        if (loff > size || size - loff < 30 || memcmp(b + loff, "PK\x03\x04", 4) != 0)
            return zip_fail(err, name, "local header out of range");
        uint64_t dstart = loff + 30 + le(b + loff + 26, 2) + le(b + loff + 28, 2);
        if (method != 0 || comp != usize)
            return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: zip entry \"%.*s\" is compressed (torch.save stores)",
                                  name, (int)(nlen > 200 ? 200 : nlen), e->name);
        if (dstart > size || usize > size - dstart)
            return zip_fail(err, name, "entry data out of range");
        e->data = b + dstart;
        e->size = (size_t)usize;
        p += 46 + nlen + elen + clen;
    }
    return 0;
}

static const struct zentry *zip_find(const struct zip *z, const char *pfx, size_t pl, const char *mid, const char *key,
                                     size_t kl)
{
    size_t ml = strlen(mid);
    for (size_t i = 0; i < z->n; i++) {
        const struct zentry *e = &z->e[i];
        if (e->nlen == pl + ml + kl && memcmp(e->name, pfx, pl) == 0 && memcmp(e->name + pl, mid, ml) == 0 &&
            memcmp(e->name + pl + ml, key, kl) == 0)
            return e;
    }
    return NULL;
}

/* ------------------------------------------------------------------ values */

enum pk { PK_NONE, PK_BOOL, PK_INT, PK_FLOAT, PK_STR, PK_TUPLE, PK_LIST, PK_DICT, PK_GLOBAL, PK_STORAGE, PK_TENSOR };
enum { G_ODICT, G_REBUILD, G_STORAGE };

struct pv {
    enum pk k;
    int64_t i;     /* INT, BOOL; GLOBAL: G_*; STORAGE: numel */
    const char *s; /* STR (into the pickle); STORAGE: key */
    size_t sl;
    int dt;            /* GLOBAL G_STORAGE, STORAGE, TENSOR: index into dtypes[] */
    struct pv **items; /* TUPLE, LIST; DICT: key, value, key, value... */
    size_t n, cap;
    struct nlpd_st_tensor t;   /* TENSOR (name unset) */
    struct pv *stor;           /* TENSOR: its storage */
    int64_t off;               /* TENSOR: offset in elements */
    const unsigned char *data; /* STORAGE: its bytes, once known */
    size_t dsize;
};

static const struct {
    const char *storage;
    enum nlpd_st_dtype dt;
    unsigned size;
} dtypes[] = {
    {"FloatStorage", NLPD_ST_F32, 4},  {"HalfStorage", NLPD_ST_F16, 2}, {"BFloat16Storage", NLPD_ST_BF16, 2},
    {"DoubleStorage", NLPD_ST_F64, 8}, {"LongStorage", NLPD_ST_I64, 8}, {"IntStorage", NLPD_ST_I32, 4},
    {"ShortStorage", NLPD_ST_I16, 2},  {"CharStorage", NLPD_ST_I8, 1},  {"ByteStorage", NLPD_ST_U8, 1},
    {"BoolStorage", NLPD_ST_BOOL, 1},
};

struct up {
    const char *name;
    struct nlpd_error *err;
    const struct zip *z;
    const char *pfx; /* archive prefix, "archive/" */
    size_t pl;
    struct pv **arena;
    size_t na, arena_cap;
    struct pv **stack;
    size_t sp, stack_cap;
    size_t *marks;
    size_t nm, marks_cap;
    struct pv **memo;
    size_t memo_cap;
    int legacy; /* torch's pre-1.6 format: storages follow the pickles, bound at the end */
};

static int oom(struct up *u)
{
    return nlpd_error_set(u->err, NLPD_ENOMEM, 0, "%s: out of memory", u->name);
}

static struct pv *new_val(struct up *u, enum pk k)
{
    if (nlpd_grow((void **)&u->arena, &u->arena_cap, u->na + 1, sizeof *u->arena) < 0)
        return NULL;
    struct pv *v = calloc(1, sizeof *v);
    if (v) {
        v->k = k;
        u->arena[u->na++] = v;
    }
    return v;
}

static int push(struct up *u, struct pv *v)
{
    if (!v || nlpd_grow((void **)&u->stack, &u->stack_cap, u->sp + 1, sizeof *u->stack) < 0)
        return oom(u);
    u->stack[u->sp++] = v;
    return 0;
}

static int add_item(struct pv *c, struct pv *v)
{
    if (nlpd_grow((void **)&c->items, &c->cap, c->n + 1, sizeof *c->items) < 0)
        return -1;
    c->items[c->n++] = v;
    return 0;
}

static int bad(struct up *u, size_t pos, const char *what)
{
    return nlpd_error_set(u->err, NLPD_EFORMAT, 0, "%s: data.pkl byte %zu: %s", u->name, pos, what);
}

/* The stack base of the topmost mark (items above it), or -1 with an error. */
static int pop_mark(struct up *u, size_t pos, size_t *base)
{
    if (!u->nm)
        return bad(u, pos, "no MARK on the stack");
    *base = u->marks[--u->nm];
    return 0;
}

static const char *kind_name(enum pk k)
{
    static const char *const n[] = {"None", "bool", "int",    "float",   "str",   "tuple",
                                    "list", "dict", "global", "storage", "tensor"};
    return n[k];
}

/* torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata]) */
static struct pv *rebuild_tensor(struct up *u, size_t pos, struct pv *args)
{
    char msg[160];
    if (args->k != PK_TUPLE || args->n < 6 || args->n > 7) {
        bad(u, pos, "_rebuild_tensor_v2: expected 6 or 7 arguments");
        return NULL;
    }
    struct pv *st = args->items[0], *off = args->items[1], *size = args->items[2], *stride = args->items[3];
    if (st->k != PK_STORAGE || off->k != PK_INT || off->i < 0 || size->k != PK_TUPLE || stride->k != PK_TUPLE ||
        size->n != stride->n) {
        bad(u, pos, "_rebuild_tensor_v2: expected (storage, offset, size, stride, ...)");
        return NULL;
    }
    if (size->n > NLPD_ST_MAX_DIMS) {
        snprintf(msg, sizeof msg, "tensor of %zu dimensions (at most %d)", size->n, NLPD_ST_MAX_DIMS);
        bad(u, pos, msg);
        return NULL;
    }
    struct pv *t = new_val(u, PK_TENSOR);
    if (!t) {
        oom(u);
        return NULL;
    }
    uint64_t numel = 1, expect = 1;
    int overflow = 0;
    for (size_t d = size->n; d-- > 0;) {
        struct pv *sz = size->items[d], *sd = stride->items[d];
        if (sz->k != PK_INT || sd->k != PK_INT || sz->i < 0 || sd->i < 0) {
            bad(u, pos, "_rebuild_tensor_v2: size and stride must be non-negative integers");
            return NULL;
        }
        if (sz->i != 1 && (uint64_t)sd->i != expect) {
            bad(u, pos, "tensor is not contiguous (a state dict's tensors are; save a .contiguous() copy)");
            return NULL;
        }
        t->t.shape[d] = sz->i;
        if (sz->i && (numel > UINT64_MAX / (uint64_t)sz->i || expect > UINT64_MAX / (uint64_t)sz->i))
            overflow = 1;
        numel *= (uint64_t)sz->i;
        expect *= (uint64_t)sz->i;
    }
    unsigned es = dtypes[st->dt].size;
    if (overflow || (uint64_t)off->i > (uint64_t)st->i || numel > (uint64_t)st->i - (uint64_t)off->i) {
        bad(u, pos, "tensor extends past its storage");
        return NULL;
    }
    if (!u->legacy && !st->data) {
        const struct zentry *e = zip_find(u->z, u->pfx, u->pl, "data/", st->s, st->sl);
        if (!e) {
            snprintf(msg, sizeof msg, "storage \"%.*s\" has no data/%.*s entry", (int)(st->sl > 40 ? 40 : st->sl),
                     st->s, (int)(st->sl > 40 ? 40 : st->sl), st->s);
            bad(u, pos, msg);
            return NULL;
        }
        if ((uint64_t)st->i > e->size / es) {
            snprintf(msg, sizeof msg, "storage \"%.*s\": %lld elements but its entry has %zu bytes",
                     (int)(st->sl > 40 ? 40 : st->sl), st->s, (long long)st->i, e->size);
            bad(u, pos, msg);
            return NULL;
        }
        st->data = e->data;
        st->dsize = e->size;
    }
    t->t.ndim = (int)size->n;
    t->t.dtype = dtypes[st->dt].dt;
    t->t.dtype_name = nlpd_safetensors_dtype_name(dtypes[st->dt].dt);
    t->t.numel = numel;
    t->t.nbytes = (size_t)numel * es;
    t->stor = st;
    t->off = off->i;
    if (st->data)
        t->t.data = st->data + (size_t)off->i * es;
    return t;
}

static int global_of(struct up *u, size_t pos, const char *mod, size_t ml, const char *nm, size_t nl, struct pv **out)
{
    struct pv *g = new_val(u, PK_GLOBAL);
    if (!g)
        return oom(u);
#define IS(s, l, lit) ((l) == sizeof(lit) - 1 && memcmp((s), (lit), (l)) == 0)
    if (IS(mod, ml, "collections") && IS(nm, nl, "OrderedDict")) {
        g->i = G_ODICT;
    } else if (IS(mod, ml, "torch._utils") && IS(nm, nl, "_rebuild_tensor_v2")) {
        g->i = G_REBUILD;
    } else {
        g->i = -1;
        if (IS(mod, ml, "torch"))
            for (size_t k = 0; k < sizeof dtypes / sizeof dtypes[0]; k++)
                if (nl == strlen(dtypes[k].storage) && memcmp(nm, dtypes[k].storage, nl) == 0) {
                    g->i = G_STORAGE;
                    g->dt = (int)k;
                }
        if (g->i < 0)
            return nlpd_error_set(u->err, NLPD_EFORMAT, 0,
                                  "%s: data.pkl byte %zu: global %.*s.%.*s is not allowed (only a state dict of "
                                  "tensors is read; no pickle code is run)",
                                  u->name, pos, (int)(ml > 80 ? 80 : ml), mod, (int)(nl > 80 ? 80 : nl), nm);
    }
#undef IS
    *out = g;
    return 0;
}

/* Runs p[0..n) up to its STOP: *result the object, *end the offset after STOP. */
static int unpickle(struct up *u, const unsigned char *p, size_t n, struct pv **result, size_t *end)
{
    size_t i = 0;
#define NEED(k)                                                                                                        \
    do {                                                                                                               \
        if (n - i < (size_t)(k))                                                                                       \
            return bad(u, i, "truncated");                                                                             \
    } while (0)
#define POP(v)                                                                                                         \
    do {                                                                                                               \
        if (u->sp == 0 || (u->nm && u->marks[u->nm - 1] == u->sp))                                                     \
            return bad(u, op_at, "stack underflow");                                                                   \
        (v) = u->stack[--u->sp];                                                                                       \
    } while (0)
    while (i < n) {
        size_t op_at = i;
        unsigned char op = p[i++];
        struct pv *v = NULL, *a = NULL, *b = NULL;
        size_t base = 0, len = 0;
        int rc = 0;
        switch (op) {
        case 0x80: /* PROTO */
            NEED(1);
            if (p[i] > 5)
                return bad(u, op_at, "unknown pickle protocol");
            i++;
            break;
        case 0x95: /* FRAME */
            NEED(8);
            i += 8;
            break;
        case '(': /* MARK */
            if (nlpd_grow((void **)&u->marks, &u->marks_cap, u->nm + 1, sizeof *u->marks) < 0)
                return oom(u);
            u->marks[u->nm++] = u->sp;
            break;
        case '.': /* STOP */
            POP(v);
            *result = v;
            *end = i;
            return 0;
        case 'N': rc = push(u, new_val(u, PK_NONE)); break;
        case 0x88: /* NEWTRUE */
        case 0x89: /* NEWFALSE */
            if ((v = new_val(u, PK_BOOL)))
                v->i = op == 0x88;
            rc = push(u, v);
            break;
        case 'J': /* BININT */
        case 'K': /* BININT1 */
        case 'M': /* BININT2 */
            len = op == 'J' ? 4 : op == 'K' ? 1 : 2;
            NEED(len);
            if ((v = new_val(u, PK_INT)))
                v->i = op == 'J' ? (int64_t)(int32_t)(uint32_t)le(p + i, 4) : (int64_t)le(p + i, (int)len);
            i += len;
            rc = push(u, v);
            break;
        case 0x8a: /* LONG1 */
            NEED(1);
            len = p[i++];
            NEED(len);
            if (len > 8)
                return bad(u, op_at, "integer wider than 64 bits");
            if ((v = new_val(u, PK_INT))) {
                uint64_t x = len ? le(p + i, (int)len) : 0;
                if (len && len < 8 && (p[i + len - 1] & 0x80))
                    x |= ~(uint64_t)0 << (8 * len); /* sign extension */
                v->i = (int64_t)x;
            }
            i += len;
            rc = push(u, v);
            break;
        case 'G': /* BINFLOAT: big-endian double, value unused */
            NEED(8);
            i += 8;
            rc = push(u, new_val(u, PK_FLOAT));
            break;
        case 'X':  /* BINUNICODE */
        case 'T':  /* BINSTRING */
        case 0x8c: /* SHORT_BINUNICODE */
        case 'U':  /* SHORT_BINSTRING */
            len = op == 'X' || op == 'T' ? 4 : 1;
            NEED(len);
            base = (size_t)le(p + i, (int)len);
            i += len;
            NEED(base);
            if ((v = new_val(u, PK_STR))) {
                v->s = (const char *)p + i;
                v->sl = base;
            }
            i += base;
            rc = push(u, v);
            break;
        case ')': /* EMPTY_TUPLE */ rc = push(u, new_val(u, PK_TUPLE)); break;
        case ']': /* EMPTY_LIST */ rc = push(u, new_val(u, PK_LIST)); break;
        case '}': /* EMPTY_DICT */ rc = push(u, new_val(u, PK_DICT)); break;
        case 't': /* TUPLE */
        case 'e': /* APPENDS */
        case 'u': /* SETITEMS */
            if ((rc = pop_mark(u, op_at, &base)) < 0)
                return rc;
            if (op == 't') {
                if (!(v = new_val(u, PK_TUPLE)))
                    return oom(u);
            } else {
                if (base == 0)
                    return bad(u, op_at, "APPENDS/SETITEMS without a target");
                v = u->stack[base - 1];
                if (v->k != (op == 'e' ? PK_LIST : PK_DICT))
                    return bad(u, op_at, op == 'e' ? "APPENDS to a non-list" : "SETITEMS on a non-dict");
                if (op == 'u' && (u->sp - base) % 2)
                    return bad(u, op_at, "SETITEMS with an odd number of items");
            }
            for (size_t k = base; k < u->sp; k++)
                if (add_item(v, u->stack[k]) < 0)
                    return oom(u);
            u->sp = base;
            if (op == 't')
                rc = push(u, v);
            break;
        case 0x85: /* TUPLE1 */
        case 0x86: /* TUPLE2 */
        case 0x87: /* TUPLE3 */
            len = (size_t)(op - 0x84);
            if (u->sp < len || (u->nm && u->marks[u->nm - 1] > u->sp - len))
                return bad(u, op_at, "stack underflow");
            if (!(v = new_val(u, PK_TUPLE)))
                return oom(u);
            for (size_t k = u->sp - len; k < u->sp; k++)
                if (add_item(v, u->stack[k]) < 0)
                    return oom(u);
            u->sp -= len;
            rc = push(u, v);
            break;
        case 'a': /* APPEND */
            POP(a);
            POP(v);
            if (v->k != PK_LIST)
                return bad(u, op_at, "APPEND to a non-list");
            if (add_item(v, a) < 0)
                return oom(u);
            rc = push(u, v);
            break;
        case 's': /* SETITEM */
            POP(b);
            POP(a);
            POP(v);
            if (v->k != PK_DICT)
                return bad(u, op_at, "SETITEM on a non-dict");
            if (add_item(v, a) < 0 || add_item(v, b) < 0)
                return oom(u);
            rc = push(u, v);
            break;
        case 'c': { /* GLOBAL "module\nname\n" */
            const unsigned char *m = p + i, *e1 = memchr(m, '\n', n - i);
            if (!e1)
                return bad(u, op_at, "truncated GLOBAL");
            const unsigned char *nm = e1 + 1, *e2 = memchr(nm, '\n', (size_t)(p + n - nm));
            if (!e2)
                return bad(u, op_at, "truncated GLOBAL");
            if ((rc = global_of(u, op_at, (const char *)m, (size_t)(e1 - m), (const char *)nm, (size_t)(e2 - nm), &v)) <
                0)
                return rc;
            i = (size_t)(e2 + 1 - p);
            rc = push(u, v);
            break;
        }
        case 0x93: /* STACK_GLOBAL */
            POP(b);
            POP(a);
            if (a->k != PK_STR || b->k != PK_STR)
                return bad(u, op_at, "STACK_GLOBAL needs two strings");
            if ((rc = global_of(u, op_at, a->s, a->sl, b->s, b->sl, &v)) < 0)
                return rc;
            rc = push(u, v);
            break;
        case 'R': /* REDUCE */
            POP(a);
            POP(b);
            if (b->k != PK_GLOBAL || a->k != PK_TUPLE)
                return bad(u, op_at, "REDUCE of something that is not an allowed global");
            if (b->i == G_ODICT) {
                if (a->n)
                    return bad(u, op_at, "OrderedDict with arguments");
                v = new_val(u, PK_DICT);
            } else if (b->i == G_REBUILD) {
                if (!(v = rebuild_tensor(u, op_at, a)))
                    return u->err && u->err->code ? u->err->code : NLPD_EFORMAT;
            } else {
                return bad(u, op_at, "a storage class cannot be called");
            }
            rc = push(u, v);
            break;
        case 'b': /* BUILD: only the OrderedDict's __dict__ (its _metadata), which is dropped */
            POP(a);
            POP(v);
            if (v->k != PK_DICT)
                return bad(u, op_at, "BUILD of something other than a dict");
            rc = push(u, v);
            break;
        case 'Q': { /* BINPERSID: ('storage', torch.XStorage, key, location, numel) */
            POP(a);
            if (a->k != PK_TUPLE || a->n != 5 + (size_t)u->legacy || a->items[0]->k != PK_STR || a->items[0]->sl != 7 ||
                memcmp(a->items[0]->s, "storage", 7) != 0 || a->items[1]->k != PK_GLOBAL ||
                a->items[1]->i != G_STORAGE || a->items[2]->k != PK_STR || a->items[4]->k != PK_INT ||
                a->items[4]->i < 0)
                return bad(u, op_at, "persistent id is not ('storage', torch.XStorage, key, location, numel)");
            if (u->legacy && a->items[5]->k != PK_NONE)
                return bad(u, op_at, "storage views of the legacy format are not supported");
            if (!(v = new_val(u, PK_STORAGE)))
                return oom(u);
            v->dt = a->items[1]->dt;
            v->s = a->items[2]->s;
            v->sl = a->items[2]->sl;
            v->i = a->items[4]->i;
            rc = push(u, v);
            break;
        }
        case 'q':  /* BINPUT */
        case 'r':  /* LONG_BINPUT */
        case 0x94: /* MEMOIZE */
        case 'h':  /* BINGET */
        case 'j':  /* LONG_BINGET */
            if (op == 0x94) {
                /* len(memo): the first free index when entries are set in order, as picklers do */
                for (base = 0; base < u->memo_cap && u->memo[base]; base++)
                    ;
            } else {
                len = op == 'q' || op == 'h' ? 1 : 4;
                NEED(len);
                base = (size_t)le(p + i, (int)len);
                i += len;
            }
            if (op == 'h' || op == 'j') {
                if (base >= u->memo_cap || !u->memo[base])
                    return bad(u, op_at, "BINGET of an unset memo entry");
                rc = push(u, u->memo[base]);
            } else {
                if (base > n)
                    return bad(u, op_at, "memo index out of range");
                if (u->sp == 0)
                    return bad(u, op_at, "stack underflow");
                size_t old = u->memo_cap;
                if (nlpd_grow((void **)&u->memo, &u->memo_cap, base + 1, sizeof *u->memo) < 0)
                    return oom(u);
                memset(u->memo + old, 0, (u->memo_cap - old) * sizeof *u->memo);
                u->memo[base] = u->stack[u->sp - 1];
            }
            break;
        default: {
            char msg[96];
            snprintf(msg, sizeof msg, "opcode 0x%02x%s%c%s is not allowed in a state dict", op,
                     op >= 0x20 && op < 0x7f ? " ('" : "", op >= 0x20 && op < 0x7f ? op : ' ',
                     op >= 0x20 && op < 0x7f ? "')" : "");
            return bad(u, op_at, msg);
        }
        }
        if (rc < 0)
            return rc;
    }
#undef NEED
#undef POP
    return bad(u, n, "no STOP opcode");
}

/* torch's pre-1.6 format: pickles of the magic number, the protocol version (1001), sys_info and the object, a
 * pickled list of storage keys, then each storage in that order as an int64 element count and its bytes. */
#define LEGACY_MAGIC "\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19\x2e"

static void reset_stack(struct up *u)
{
    u->sp = u->nm = 0;
    if (u->memo_cap)
        memset(u->memo, 0, u->memo_cap * sizeof *u->memo); /* each pickle has its own memo */
}

/* The storages after the key list, in its order: each key's bytes go to every reference to it. */
static int bind_legacy(struct up *u, const unsigned char *b, size_t size, size_t pos, const struct pv *v,
                       struct pv **stors, size_t ns)
{
    for (size_t k = 0; k < v->n; k++) {
        const struct pv *key = v->items[k];
        struct pv *st = NULL;
        for (size_t i = 0; key->k == PK_STR && i < ns && !st; i++)
            if (stors[i]->sl == key->sl && !memcmp(stors[i]->s, key->s, key->sl))
                st = stors[i];
        if (!st)
            return nlpd_error_set(u->err, NLPD_EFORMAT, 0, "%s: legacy format: storage key %zu is not used", u->name,
                                  k);
        unsigned es = dtypes[st->dt].size;
        if (size - pos < 8)
            return nlpd_error_set(u->err, NLPD_EFORMAT, 0, "%s: legacy format: truncated storage data", u->name);
        uint64_t cnt = le(b + pos, 8);
        pos += 8;
        if (cnt > (size - pos) / es)
            return nlpd_error_set(u->err, NLPD_EFORMAT, 0, "%s: legacy format: truncated storage data", u->name);
        for (size_t i = 0; i < ns; i++) {
            struct pv *s2 = stors[i];
            if (s2->sl == key->sl && !memcmp(s2->s, key->s, key->sl)) {
                if (s2->dt != st->dt || (uint64_t)s2->i > cnt)
                    return nlpd_error_set(u->err, NLPD_EFORMAT, 0,
                                          "%s: legacy format: storage %zu does not match its "
                                          "uses",
                                          u->name, k);
                s2->data = b + pos;
                s2->dsize = (size_t)cnt * es;
            }
        }
        pos += (size_t)cnt * es;
    }
    return 0;
}

static int legacy_load(struct up *u, const unsigned char *b, size_t size, struct pv **root)
{
    size_t pos = sizeof LEGACY_MAGIC - 1, end;
    struct pv *v;
    int rc;
    if ((rc = unpickle(u, b + pos, size - pos, &v, &end)) < 0)
        return rc;
    if (v->k != PK_INT || v->i != 1001)
        return nlpd_error_set(u->err, NLPD_EFORMAT, 0, "%s: legacy format: unknown protocol version", u->name);
    pos += end;
    reset_stack(u);
    if ((rc = unpickle(u, b + pos, size - pos, &v, &end)) < 0)
        return rc;
    int little = 0;
    for (size_t i = 0; v->k == PK_DICT && i + 1 < v->n; i += 2)
        if (v->items[i]->k == PK_STR && v->items[i]->sl == 13 && !memcmp(v->items[i]->s, "little_endian", 13))
            little = v->items[i + 1]->k == PK_BOOL && v->items[i + 1]->i;
    if (!little)
        return nlpd_error_set(u->err, NLPD_EFORMAT, 0, "%s: legacy format: not a little-endian file", u->name);
    pos += end;
    reset_stack(u);
    if ((rc = unpickle(u, b + pos, size - pos, root, &end)) < 0)
        return rc;
    pos += end;
    size_t first_tail = u->na; /* values of the key list come after the object's */
    reset_stack(u);
    if ((rc = unpickle(u, b + pos, size - pos, &v, &end)) < 0)
        return rc;
    pos += end;
    if (v->k != PK_LIST)
        return nlpd_error_set(u->err, NLPD_EFORMAT, 0, "%s: legacy format: no storage key list", u->name);
    /* the object's storage references, scanned once per key */
    struct pv **stors = malloc((first_tail ? first_tail : 1) * sizeof *stors);
    size_t ns = 0;
    if (!stors)
        return oom(u);
    for (size_t i = 0; i < first_tail; i++)
        if (u->arena[i]->k == PK_STORAGE)
            stors[ns++] = u->arena[i];
    rc = bind_legacy(u, b, size, pos, v, stors, ns);
    free(stors);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < first_tail; i++) {
        struct pv *t = u->arena[i];
        if (t->k != PK_TENSOR)
            continue;
        if (!t->stor->data)
            return nlpd_error_set(u->err, NLPD_EFORMAT, 0, "%s: legacy format: a tensor's storage is missing", u->name);
        t->t.data = t->stor->data + (size_t)t->off * dtypes[t->stor->dt].size;
    }
    return 0;
}

int nlpd_torch_load(const unsigned char *buf, size_t size, const char *name, struct nlpd_st_tensor **out, size_t *n,
                    struct nlpd_error *err)
{
    *out = NULL;
    *n = 0;
    struct zip z = {0};
    struct up u = {.name = name, .err = err, .z = &z};
    struct pv *root = NULL;
    int rc;
    if (size >= sizeof LEGACY_MAGIC - 1 && memcmp(buf, LEGACY_MAGIC, sizeof LEGACY_MAGIC - 1) == 0) {
        u.legacy = 1;
        rc = legacy_load(&u, buf, size, &root);
    } else {
        rc = zip_open(buf, size, name, &z, err);
        const struct zentry *pkl = NULL;
        for (size_t i = 0; rc == 0 && i < z.n; i++) {
            const struct zentry *e = &z.e[i];
            if (e->nlen >= 8 && memcmp(e->name + e->nlen - 8, "data.pkl", 8) == 0 &&
                (e->nlen == 8 || e->name[e->nlen - 9] == '/') && (!pkl || e->nlen < pkl->nlen))
                pkl = e;
        }
        if (rc == 0 && !pkl)
            rc = nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: no data.pkl in the zip (not a torch.save file)", name);
        if (rc == 0) {
            u.pfx = pkl->name;
            u.pl = pkl->nlen - 8;
            const struct zentry *bo = zip_find(&z, u.pfx, u.pl, "byteorder", "", 0);
            if (bo && !(bo->size == 6 && memcmp(bo->data, "little", 6) == 0))
                rc = nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: big-endian tensors are not supported", name);
        }
        size_t end;
        if (rc == 0)
            rc = unpickle(&u, pkl->data, pkl->size, &root, &end);
    }
    if (rc == 0 && root->k != PK_DICT)
        rc = nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: the pickled object is a %s, not a state dict", name,
                            kind_name(root->k));
    size_t cnt = rc == 0 ? root->n / 2 : 0;
    struct nlpd_st_tensor *t = rc == 0 ? calloc(cnt ? cnt : 1, sizeof *t) : NULL;
    if (rc == 0 && !t)
        rc = oom(&u);
    for (size_t i = 0; rc == 0 && i < cnt; i++) {
        struct pv *k = root->items[2 * i], *v = root->items[2 * i + 1];
        if (k->k != PK_STR || memchr(k->s, 0, k->sl))
            rc = nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: state dict key %zu is not a string", name, i);
        else if (v->k != PK_TENSOR)
            rc = nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: state dict entry \"%.*s\" is a %s, not a tensor", name,
                                (int)(k->sl > 100 ? 100 : k->sl), k->s, kind_name(v->k));
        char *nm = rc == 0 ? malloc(k->sl + 1) : NULL;
        if (rc == 0 && !nm)
            rc = oom(&u);
        if (rc == 0) {
            memcpy(nm, k->s, k->sl);
            nm[k->sl] = 0;
            t[i] = v->t;
            t[i].name = nm;
            *n = i + 1;
        }
    }
    if (rc == 0) {
        *out = t;
    } else if (t) {
        for (size_t i = 0; i < *n; i++)
            free((char *)t[i].name);
        free(t);
        *n = 0;
    }
    for (size_t i = 0; i < u.na; i++) {
        free(u.arena[i]->items);
        free(u.arena[i]);
    }
    free(u.arena);
    free(u.stack);
    free(u.marks);
    free(u.memo);
    free(z.e);
    return rc;
}
