/* For backend authors (kernels/cpu, kernels/cuda, kernels/backend.c): the vtable a backend fills and the backend
 * struct behind the public header's opaque handle. Only kernels/ includes this (tests/check_includes.sh checks);
 * models and the daemon use nlpd_kernels.h. A backend may leave ops out by answering 0 from supports():
 * nlpd_backend_run refuses those with a clear error. The choice is per model, at load (ggml's supports_op idea
 * without per-op fallback, since op descriptors hold backend addresses the CPU cannot read): a model lists its
 * ops in nlpd_backend_opts.ops, and "auto" takes the CPU backend when the CUDA one lacks one of them. */
#ifndef NLPD_BACKEND_H
#define NLPD_BACKEND_H

#include "nlpd_kernels.h"

/* Bumped when nlpd_backend_ops or struct nlpd_backend change; a backend whose ops carry another version is
 * refused when it is created. */
#define NLPD_BACKEND_API_VERSION 4u

struct nlpd_backend_ops {
    unsigned version; /* NLPD_BACKEND_API_VERSION of the header the backend was built with */
    const char *name; /* its entry of the name table (nlpd_backend_kind_name) */
    int (*supports)(const struct nlpd_backend *be, enum nlpd_op_kind kind);
    int (*alloc)(struct nlpd_backend *be, size_t size, struct nlpd_buffer *out, struct nlpd_error *err);
    /* upload/download return when the host side may be reused (a device backend copies through staging); err says
     * what failed (the device's own words). A download waits for the queued work and reports the calling
     * thread's device-side errors (bad ids) like sync does, so they belong to the batch that caused them. */
    int (*upload)(struct nlpd_backend *be, struct nlpd_buffer *buf, size_t offset, const void *src, size_t n,
                  struct nlpd_error *err);
    int (*download)(struct nlpd_backend *be, const struct nlpd_buffer *buf, size_t offset, void *dst, size_t n,
                    struct nlpd_error *err);
    /* Queues or runs one op; errors (bad ids, unsupported op) come back here or from sync. */
    int (*run)(struct nlpd_backend *be, const struct nlpd_op *op, struct nlpd_error *err);
    int (*sync)(struct nlpd_backend *be, struct nlpd_error *err);
    void (*free)(struct nlpd_backend *be, struct nlpd_buffer *buf);
    void (*destroy)(struct nlpd_backend *be);
    /* Optional (NULL: alloc is used): a weight buffer, see the top of nlpd_kernels.h. */
    int (*alloc_weights)(struct nlpd_backend *be, size_t size, struct nlpd_buffer *out, struct nlpd_error *err);
    /* Optional (NULL: one upload per row): rows of width bytes, src rows spitch apart, to buf at offset, dpitch
     * apart. backend.c has checked the range and that width <= dpitch, spitch. */
    int (*upload_2d)(struct nlpd_backend *be, struct nlpd_buffer *buf, size_t offset, size_t dpitch, const void *src,
                     size_t spitch, size_t width, size_t rows, struct nlpd_error *err);
    /* Optional (NULL: ops run as they come): a replayable region of the calling thread's ops, see
     * nlpd_backend_graph_begin. backend.c enforces the region rules (no nesting, no download or sync inside);
     * graph_abort discards a region whose batch failed. */
    int (*graph_begin)(struct nlpd_backend *be, struct nlpd_error *err);
    int (*graph_end)(struct nlpd_backend *be, struct nlpd_error *err);
    void (*graph_abort)(struct nlpd_backend *be);
    /* Optional (NULL: zeros): counters since creation, see struct nlpd_backend_stats. */
    void (*stats)(const struct nlpd_backend *be, struct nlpd_backend_stats *out);
};

#define NLPD_BACKEND_REASON_MAX 256

/* Tests only: fn stands in for libnlpd_cuda.so's entry (a fake GPU backend on a machine without one); NULL
 * restores the library. */
typedef struct nlpd_backend *(*nlpd_gpu_create_fn)(const struct nlpd_backend_opts *o, unsigned long abi,
                                                   struct nlpd_error *err);
void nlpd_backend_set_gpu_factory(nlpd_gpu_create_fn fn);

struct nlpd_backend {
    const struct nlpd_backend_ops *ops;
    void *impl;
    /* Which backend was chosen and why ("kernels.backend = cpu"; "auto: no CUDA driver (...)"; the CUDA device),
     * filled by nlpd_backend_new / nlpd_backend_new_opts. */
    char reason[NLPD_BACKEND_REASON_MAX];
    enum nlpd_dtype dtype;     /* what weight products compute in (fp32 after a fallback); set by the constructors */
    enum nlpd_dtype act_dtype; /* activation operands accepted besides fp32 (nlpd_backend_act_dtype); 0 = fp32 only */
};

#endif
