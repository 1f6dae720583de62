/* safetensors reader (see safetensors.h). The file is untrusted: the header length, the JSON, each dtype, shape
 * and [begin, end) data offset are checked (overflow-safe) before a tensor is handed out. The same handle serves
 * what else the Hub has when model.safetensors is absent: sharded checkpoints (model.safetensors.index.json, also
 * pytorch_model.bin.index.json) and pytorch_model.bin (torch_pickle.c), so the model loaders need no change. */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nlpd_kernels.h"
#include "torch_pickle.h"

#define HEADER_MAX (100u << 20) /* the Rust reference refuses headers over 100 MB */

struct nlpd_safetensors {
    char *path;
    const unsigned char *base;
    size_t size;
    int mapped;
    json_t *root; /* owns the name / dtype strings */
    json_t *meta;
    struct nlpd_st_tensor *t;
    size_t n;
    int own_names;                   /* t[i].name malloc'ed (pytorch_model.bin) */
    struct nlpd_safetensors **parts; /* shards of an index, owned */
    size_t nparts;
};

static const struct {
    const char *name;
    enum nlpd_st_dtype dt;
    unsigned size;
} dtypes[] = {
    {"F64", NLPD_ST_F64, 8},   {"F32", NLPD_ST_F32, 4},         {"F16", NLPD_ST_F16, 2},
    {"BF16", NLPD_ST_BF16, 2}, {"I64", NLPD_ST_I64, 8},         {"I32", NLPD_ST_I32, 4},
    {"I16", NLPD_ST_I16, 2},   {"I8", NLPD_ST_I8, 1},           {"U8", NLPD_ST_U8, 1},
    {"BOOL", NLPD_ST_BOOL, 1}, {"F8_E4M3", NLPD_ST_F8_E4M3, 1}, {"F8_E5M2", NLPD_ST_F8_E5M2, 1},
};

const char *nlpd_safetensors_dtype_name(enum nlpd_st_dtype dt)
{
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
        if (dtypes[i].dt == dt)
            return dtypes[i].name;
    return "unknown";
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(((const struct nlpd_st_tensor *)a)->name, ((const struct nlpd_st_tensor *)b)->name);
}

static int get_u64(json_t *v, uint64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return -1;
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

/* Checks one header entry and fills t. */
static int parse_entry(struct nlpd_safetensors *st, const char *name, json_t *v, size_t data_size,
                       struct nlpd_st_tensor *t, struct nlpd_error *err)
{
    const char *f = st->path;
    if (!json_is_object(v))
        return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: tensor \"%s\": header entry is not an object", f, name);
    json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape"),
           *jo = json_object_get(v, "data_offsets");
    if (!json_is_string(jd))
        return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: tensor \"%s\": missing or non-string \"dtype\"", f, name);
    if (!json_is_array(js))
        return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: tensor \"%s\": missing or non-array \"shape\"", f, name);
    if (!json_is_array(jo) || json_array_size(jo) != 2)
        return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: tensor \"%s\": \"data_offsets\" is not [begin, end]", f, name);
    t->name = name;
    t->dtype_name = json_string_value(jd);
    t->dtype = NLPD_ST_UNKNOWN;
    unsigned esize = 0;
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
        if (!strcmp(dtypes[i].name, t->dtype_name)) {
            t->dtype = dtypes[i].dt;
            esize = dtypes[i].size;
        }
    size_t nd = json_array_size(js);
    if (nd > NLPD_ST_MAX_DIMS)
        return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: tensor \"%s\": %zu dimensions (at most %d)", f, name, nd,
                              NLPD_ST_MAX_DIMS);
    t->ndim = (int)nd;
    uint64_t numel = 1;
    int overflow = 0;
    for (size_t i = 0; i < nd; i++) {
        uint64_t d;
        if (get_u64(json_array_get(js, i), &d) || d > INT64_MAX)
            return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: tensor \"%s\": shape[%zu] is not a non-negative integer",
                                  f, name, i);
        t->shape[i] = (int64_t)d;
        if (d && numel > UINT64_MAX / d)
            overflow = 1;
        numel *= d;
    }
    uint64_t begin, end;
    if (get_u64(json_array_get(jo, 0), &begin) || get_u64(json_array_get(jo, 1), &end))
        return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: tensor \"%s\": data_offsets are not non-negative integers", f,
                              name);
    if (begin > end || end > data_size)
        return nlpd_error_set(err, NLPD_EFORMAT, 0,
                              "%s: tensor \"%s\": data_offsets [%llu, %llu] out of range (data section is %zu bytes)",
                              f, name, (unsigned long long)begin, (unsigned long long)end, data_size);
    if (esize && (overflow || numel > UINT64_MAX / esize || numel * esize != end - begin))
        return nlpd_error_set(
            err, NLPD_EFORMAT, 0, "%s: tensor \"%s\": %s shape needs %s%llu bytes but data_offsets give %llu", f, name,
            t->dtype_name, overflow ? "more than " : "", (unsigned long long)(overflow ? UINT64_MAX : numel * esize),
            (unsigned long long)(end - begin));
    t->numel = numel;
    t->nbytes = (size_t)(end - begin);
    return 0;
}

static int parse(struct nlpd_safetensors *st, struct nlpd_error *err)
{
    const char *f = st->path;
    if (st->size < 8)
        return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: truncated: %zu bytes, no header length", f, st->size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | st->base[i];
    if (hlen > HEADER_MAX)
        return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: header length %llu over the limit of %u bytes", f,
                              (unsigned long long)hlen, HEADER_MAX);
    if (hlen > st->size - 8)
        return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: truncated: header length %llu but only %zu bytes follow", f,
                              (unsigned long long)hlen, st->size - 8);
    json_error_t jerr;
    st->root = json_loadb((const char *)st->base + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!st->root)
        return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: header is not valid JSON: %s (byte %d)", f, jerr.text,
                              jerr.position);
    if (!json_is_object(st->root))
        return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: header is not a JSON object", f);
    const unsigned char *data = st->base + 8 + hlen;
    size_t data_size = st->size - 8 - (size_t)hlen;
    size_t cap = json_object_size(st->root);
    st->t = calloc(cap ? cap : 1, sizeof *st->t);
    if (!st->t)
        return nlpd_error_set(err, NLPD_ENOMEM, 0, "%s: out of memory", f);
    const char *key;
    json_t *v;
    json_object_foreach(st->root, key, v)
    {
        if (!strcmp(key, "__metadata__")) {
            if (!json_is_object(v))
                return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: __metadata__ is not an object", f);
            st->meta = v;
            continue;
        }
        struct nlpd_st_tensor *t = &st->t[st->n];
        int rc = parse_entry(st, key, v, data_size, t, err);
        if (rc)
            return rc;
        t->data = data + (json_integer_value(json_array_get(json_object_get(v, "data_offsets"), 0)));
        st->n++;
    }
    qsort(st->t, st->n, sizeof *st->t, cmp_name);
    return 0;
}

static struct nlpd_safetensors *open_common(struct nlpd_safetensors *st, struct nlpd_error *err)
{
    if (parse(st, err)) {
        nlpd_safetensors_close(st);
        return NULL;
    }
    return st;
}

struct nlpd_safetensors *nlpd_safetensors_open_mem(const void *data, size_t size, const char *name,
                                                   struct nlpd_error *err)
{
    struct nlpd_safetensors *st = calloc(1, sizeof *st);
    if (!st || !(st->path = strdup(name ? name : "(memory)"))) {
        free(st);
        nlpd_error_set(err, NLPD_ENOMEM, 0, "safetensors: out of memory");
        return NULL;
    }
    st->base = data;
    st->size = size;
    return open_common(st, err);
}

/* Maps path into a new handle (nothing parsed yet). */
static struct nlpd_safetensors *map_file(const char *path, struct nlpd_error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        nlpd_error_set(err, errno == ENOENT ? NLPD_ENOTFOUND : NLPD_EIO, 0, "%s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat sb;
    if (fstat(fd, &sb) || !S_ISREG(sb.st_mode)) {
        nlpd_error_set(err, NLPD_EIO, 0, "%s: not a regular file", path);
        close(fd);
        return NULL;
    }
    struct nlpd_safetensors *st = calloc(1, sizeof *st);
    if (!st || !(st->path = strdup(path))) {
        free(st);
        close(fd);
        nlpd_error_set(err, NLPD_ENOMEM, 0, "%s: out of memory", path);
        return NULL;
    }
    st->size = (size_t)sb.st_size;
    if (st->size) {
        void *m = mmap(NULL, st->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            nlpd_error_set(err, NLPD_EIO, 0, "%s: mmap: %s", path, strerror(errno));
            close(fd);
            free(st->path);
            free(st);
            return NULL;
        }
        st->base = m;
        st->mapped = 1;
    }
    close(fd);
    return st;
}

/* Sorts the table and refuses a name given twice. */
static int finish_table(struct nlpd_safetensors *st, struct nlpd_error *err)
{
    qsort(st->t, st->n, sizeof *st->t, cmp_name);
    for (size_t i = 1; i < st->n; i++)
        if (!strcmp(st->t[i - 1].name, st->t[i].name))
            return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: tensor \"%s\" appears twice", st->path, st->t[i].name);
    return 0;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

static struct nlpd_safetensors *torch_common(struct nlpd_safetensors *st, struct nlpd_error *err)
{
    st->own_names = 1;
    if (nlpd_torch_load(st->base, st->size, st->path, &st->t, &st->n, err) < 0 || finish_table(st, err) < 0) {
        nlpd_safetensors_close(st);
        return NULL;
    }
    return st;
}

struct nlpd_safetensors *nlpd_torch_open_mem(const void *data, size_t size, const char *name, struct nlpd_error *err)
{
    struct nlpd_safetensors *st = calloc(1, sizeof *st);
    if (!st || !(st->path = strdup(name ? name : "(memory)"))) {
        free(st);
        nlpd_error_set(err, NLPD_ENOMEM, 0, "pytorch_model.bin: out of memory");
        return NULL;
    }
    st->base = data;
    st->size = size;
    return torch_common(st, err);
}

/* One file: safetensors, or torch.save's format for a name ending in ".bin". */
static struct nlpd_safetensors *open_one(const char *path, struct nlpd_error *err)
{
    struct nlpd_safetensors *st = map_file(path, err);
    if (!st)
        return NULL;
    return ends_with(path, ".bin") ? torch_common(st, err) : open_common(st, err);
}

/* A sharded checkpoint: {"weight_map": {"tensor": "shard file in the same folder"}}; every shard is opened and
 * every listed tensor must be in its shard. */
static struct nlpd_safetensors *open_index(const char *path, struct nlpd_error *err)
{
    json_error_t je;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    json_t *wm = root ? json_object_get(root, "weight_map") : NULL;
    if (!root || !json_is_object(wm) || !json_object_size(wm)) {
        if (!root)
            nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: invalid JSON: %s (line %d)", path, je.text, je.line);
        else
            nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: no \"weight_map\" object", path);
        json_decref(root);
        return NULL;
    }
    struct nlpd_safetensors *st = calloc(1, sizeof *st);
    size_t cap = json_object_size(wm);
    if (!st || !(st->path = strdup(path)) || !(st->parts = calloc(cap, sizeof *st->parts))) {
        nlpd_error_set(err, NLPD_ENOMEM, 0, "%s: out of memory", path);
        goto fail;
    }
    const char *slash = strrchr(path, '/');
    size_t dl = slash ? (size_t)(slash - path) + 1 : 0;
    const char *key;
    json_t *v;
    size_t total = 0;
    json_object_foreach(wm, key, v)
    {
        const char *file = json_string_value(v);
        if (!file || !*file || strchr(file, '/') || !strcmp(file, ".") || !strcmp(file, "..")) {
            nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: weight_map[\"%.100s\"] is not a file name in the same folder",
                           path, key);
            goto fail;
        }
        size_t k = 0;
        while (
            k < st->nparts &&
            strcmp(strrchr(st->parts[k]->path, '/') ? strrchr(st->parts[k]->path, '/') + 1 : st->parts[k]->path, file))
            k++;
        if (k == st->nparts) {
            char *fp = malloc(dl + strlen(file) + 1);
            if (!fp) {
                nlpd_error_set(err, NLPD_ENOMEM, 0, "%s: out of memory", path);
                goto fail;
            }
            memcpy(fp, path, dl);
            strcpy(fp + dl, file);
            st->parts[k] = open_one(fp, err);
            free(fp);
            if (!st->parts[k])
                goto fail;
            st->nparts++;
            total += st->parts[k]->n;
        }
        if (!nlpd_safetensors_find(st->parts[k], key)) {
            nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: tensor \"%.100s\" is not in %s as weight_map says", path, key,
                           st->parts[k]->path);
            goto fail;
        }
    }
    if (!(st->t = calloc(total ? total : 1, sizeof *st->t))) {
        nlpd_error_set(err, NLPD_ENOMEM, 0, "%s: out of memory", path);
        goto fail;
    }
    for (size_t k = 0; k < st->nparts; k++)
        for (size_t i = 0; i < st->parts[k]->n; i++)
            st->t[st->n++] = st->parts[k]->t[i];
    if (finish_table(st, err) < 0)
        goto fail;
    json_decref(root);
    return st;
fail:
    json_decref(root);
    nlpd_safetensors_close(st);
    return NULL;
}

struct nlpd_safetensors *nlpd_safetensors_open(const char *path, struct nlpd_error *err)
{
    struct nlpd_safetensors *st = open_one(path, err);
    if (st || !err || err->code != NLPD_ENOTFOUND || !ends_with(path, "model.safetensors"))
        return st;
    /* model.safetensors is absent: what transformers' from_pretrained would load next, in its order */
    static const char *const alt[] = {"model.safetensors.index.json", "pytorch_model.bin",
                                      "pytorch_model.bin.index.json"};
    size_t dl = strlen(path) - strlen("model.safetensors");
    for (size_t i = 0; i < sizeof alt / sizeof alt[0]; i++) {
        char *p = malloc(dl + strlen(alt[i]) + 1);
        if (!p) {
            nlpd_error_set(err, NLPD_ENOMEM, 0, "%s: out of memory", path);
            return NULL;
        }
        memcpy(p, path, dl);
        strcpy(p + dl, alt[i]);
        struct stat sb;
        if (stat(p, &sb) == 0) {
            st = ends_with(p, ".json") ? open_index(p, err) : open_one(p, err);
            free(p);
            return st;
        }
        free(p);
    }
    nlpd_error_set(err, NLPD_ENOTFOUND, 0,
                   "%s: no such file, nor model.safetensors.index.json, pytorch_model.bin or "
                   "pytorch_model.bin.index.json beside it",
                   path);
    return NULL;
}

void nlpd_safetensors_close(struct nlpd_safetensors *st)
{
    if (!st)
        return;
    if (st->mapped)
        munmap((void *)st->base, st->size);
    json_decref(st->root);
    if (st->own_names)
        for (size_t i = 0; i < st->n; i++)
            free((char *)st->t[i].name);
    for (size_t i = 0; i < st->nparts; i++)
        nlpd_safetensors_close(st->parts[i]);
    free(st->parts);
    free(st->t);
    free(st->path);
    free(st);
}

const char *nlpd_safetensors_path(const struct nlpd_safetensors *st)
{
    return st->path;
}

size_t nlpd_safetensors_count(const struct nlpd_safetensors *st)
{
    return st->n;
}

const struct nlpd_st_tensor *nlpd_safetensors_at(const struct nlpd_safetensors *st, size_t i)
{
    return i < st->n ? &st->t[i] : NULL;
}

const struct nlpd_st_tensor *nlpd_safetensors_find(const struct nlpd_safetensors *st, const char *name)
{
    struct nlpd_st_tensor key = {.name = name};
    return st->n ? bsearch(&key, st->t, st->n, sizeof *st->t, cmp_name) : NULL;
}

const char *nlpd_safetensors_metadata(const struct nlpd_safetensors *st, const char *key)
{
    return st->meta ? json_string_value(json_object_get(st->meta, key)) : NULL;
}

static void shape_str(char *buf, size_t cap, int ndim, const int64_t *shape)
{
    size_t o = 0;
    o += (size_t)snprintf(buf + o, cap - o, "[");
    for (int i = 0; i < ndim && o < cap; i++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (o < cap)
        snprintf(buf + o, cap - o, "]");
}

int nlpd_safetensors_read_f32(const struct nlpd_safetensors *st, const char *name, int ndim, const int64_t *shape,
                              float *dst, struct nlpd_error *err)
{
    const struct nlpd_st_tensor *t = nlpd_safetensors_find(st, name);
    if (!t)
        return nlpd_error_set(err, NLPD_ENOTFOUND, 0, "%s: tensor \"%s\" missing", st->path, name);
    if (ndim > 0) {
        int same = t->ndim == ndim;
        for (int i = 0; same && i < ndim; i++)
            same = t->shape[i] == shape[i];
        if (!same) {
            char want[128], got[128];
            shape_str(want, sizeof want, ndim, shape);
            shape_str(got, sizeof got, t->ndim, t->shape);
            return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: tensor \"%s\": shape %s, expected %s", st->path, name, got,
                                  want);
        }
    }
    if (!dst && (t->dtype == NLPD_ST_F32 || t->dtype == NLPD_ST_F16 || t->dtype == NLPD_ST_BF16))
        return 0;
    switch (t->dtype) {
    case NLPD_ST_F32: nlpd_kernels_convert_f32(dst, t->data, (size_t)t->numel); return 0;
    case NLPD_ST_F16: nlpd_kernels_convert_f16(dst, t->data, (size_t)t->numel); return 0;
    case NLPD_ST_BF16: nlpd_kernels_convert_bf16(dst, t->data, (size_t)t->numel); return 0;
    default: break;
    }
    return nlpd_error_set(err, NLPD_EFORMAT, 0, "%s: tensor \"%s\": unsupported dtype %s (F32, F16, BF16 are)",
                          st->path, name, t->dtype_name);
}
