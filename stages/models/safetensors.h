/* safetensors reader: mmap (or a caller's memory block), the JSON header parsed with jansson, and every tensor's
 * dtype, shape and data offsets checked against the header and the file size before anything is read. Errors
 * name the file and the tensor. Tensors are read out as F32 (F16/BF16 converted). */
#ifndef NLPD_SAFETENSORS_H
#define NLPD_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "nlpd_error.h"

enum nlpd_st_dtype {
    NLPD_ST_UNKNOWN = 0, /* a dtype name this reader does not know: listed, but cannot be read */
    NLPD_ST_F64,
    NLPD_ST_F32,
    NLPD_ST_F16,
    NLPD_ST_BF16,
    NLPD_ST_I64,
    NLPD_ST_I32,
    NLPD_ST_I16,
    NLPD_ST_I8,
    NLPD_ST_U8,
    NLPD_ST_BOOL,
    NLPD_ST_F8_E4M3,
    NLPD_ST_F8_E5M2,
};

#define NLPD_ST_MAX_DIMS 8

struct nlpd_st_tensor {
    const char *name;
    enum nlpd_st_dtype dtype;
    const char *dtype_name; /* as written in the header */
    int ndim;
    int64_t shape[NLPD_ST_MAX_DIMS];
    uint64_t numel;
    const unsigned char *data; /* inside the mapping; may be unaligned */
    size_t nbytes;
};

struct nlpd_safetensors;

/* Maps and checks a file. NULL with err on failure. When path is ".../model.safetensors" and does not exist, the
 * files transformers would load instead are opened, in its order: model.safetensors.index.json (shards),
 * pytorch_model.bin (torch.save zip, read without running pickle code), pytorch_model.bin.index.json. */
struct nlpd_safetensors *nlpd_safetensors_open(const char *path, struct nlpd_error *err);
/* A pytorch_model.bin image already in memory (borrowed), for tests and the fuzz target. */
struct nlpd_safetensors *nlpd_torch_open_mem(const void *data, size_t size, const char *name, struct nlpd_error *err);
/* Checks a block already in memory (borrowed: it must outlive the handle); name is used in messages. */
struct nlpd_safetensors *nlpd_safetensors_open_mem(const void *data, size_t size, const char *name,
                                                   struct nlpd_error *err);
void nlpd_safetensors_close(struct nlpd_safetensors *st);

const char *nlpd_safetensors_path(const struct nlpd_safetensors *st);
size_t nlpd_safetensors_count(const struct nlpd_safetensors *st);
const struct nlpd_st_tensor *nlpd_safetensors_at(const struct nlpd_safetensors *st, size_t i);
const struct nlpd_st_tensor *nlpd_safetensors_find(const struct nlpd_safetensors *st, const char *name);
const char *nlpd_safetensors_dtype_name(enum nlpd_st_dtype dt);
/* The value of a `__metadata__` key, or NULL. */
const char *nlpd_safetensors_metadata(const struct nlpd_safetensors *st, const char *key);

/* Reads tensor `name` as F32 into dst (numel floats). When ndim > 0 the tensor must have exactly that shape
 * (else NLPD_EFORMAT naming file, tensor, expected and actual shapes). F32, F16, BF16 are accepted; other dtypes
 * give NLPD_EFORMAT "unsupported dtype". A missing tensor gives NLPD_ENOTFOUND. dst NULL: only these checks. */
int nlpd_safetensors_read_f32(const struct nlpd_safetensors *st, const char *name, int ndim, const int64_t *shape,
                              float *dst, struct nlpd_error *err);

#endif
