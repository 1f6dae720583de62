/* The one symbol libnlpd_cuda.so exports (kernels/backend.c finds it with dlsym). Shared by backend.c (C) and
 * cuda_backend.cu (C++). */
#ifndef NLPD_CUDA_ENTRY_H
#define NLPD_CUDA_ENTRY_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif
#include "nlpd_backend.h"
#ifdef __cplusplus
}
#endif

#define NLPD_CUDA_LIB   "libnlpd_cuda.so"
#define NLPD_CUDA_ENTRY "nlpd_cuda_backend_create"

/* A fingerprint of the structures both sides share: a libnlpd_cuda.so built from another version of
 * nlpd_kernels.h is refused instead of misreading op descriptors. */
#define NLPD_CUDA_ABI                                                                                                  \
    ((unsigned long)sizeof(struct nlpd_op) * 1000003ul + (unsigned long)sizeof(struct nlpd_backend_ops) * 10007ul +    \
     (unsigned long)sizeof(struct nlpd_backend) * 101ul + (unsigned long)sizeof(struct nlpd_backend_opts) * 7ul +      \
     (unsigned long)NLPD_OP_COUNT)

/* Creates a CUDA backend on o->device with o->dtype and o->arena_bytes; NULL with err (no device, no driver,
 * unsupported GPU, out of memory). be->reason describes the device. abi must be NLPD_CUDA_ABI. */
typedef struct nlpd_backend *(*nlpd_cuda_create_fn)(const struct nlpd_backend_opts *o, unsigned long abi,
                                                    struct nlpd_error *err);

#endif
