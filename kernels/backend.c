/* Backend selection and the thin wrappers over the backend vtable (nlpd_kernels.h), plus the load-time
 * F16/BF16 -> F32 conversions. The CPU backend is built in; the CUDA backend is libnlpd_cuda.so, loaded here with
 * dlopen on first use (never unloaded), so that this code links no CUDA library and runs where there is none. */
#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cpu/cpu_ops.h"
#include "cuda/cuda_entry.h"
#include "nlpd_backend.h"

#ifndef NLPD_INSTALL_LIBDIR
#define NLPD_INSTALL_LIBDIR "/usr/local/lib/nlpd"
#endif

/* ---- process defaults and the selection log ---- */

static pthread_mutex_t defaults_mu = PTHREAD_MUTEX_INITIALIZER;
static char default_name[16] = "auto";
static int default_device;
static enum nlpd_dtype default_dtype = NLPD_DTYPE_AUTO; /* kernels.dtype: fp16 on CUDA, fp32 on the CPU */
static enum nlpd_cpu_gemm default_cpu_gemm = NLPD_CPU_GEMM_AUTO;
static void (*kernels_logger)(const char *line);
static nlpd_gpu_create_fn gpu_factory; /* tests: replaces libnlpd_cuda.so */

void nlpd_backend_set_gpu_factory(nlpd_gpu_create_fn fn)
{
    pthread_mutex_lock(&defaults_mu);
    gpu_factory = fn;
    pthread_mutex_unlock(&defaults_mu);
}

/* The backend whose graph region is open on this thread (nlpd_backend_graph_begin), or NULL. */
static __thread struct nlpd_backend *region_be;

/* ---- the op name table ---- */

static const char *const op_names[] = {"matmul", "bias_act",     "layer_norm",  "softmax",       "attention",
                                       "embed",  "attention_kv", "gather_rows", "attention_rel", "log_softmax_topk"};
_Static_assert(sizeof op_names / sizeof op_names[0] == NLPD_OP_COUNT, "one name per op kind");

const char *nlpd_op_kind_name(enum nlpd_op_kind kind)
{
    return (unsigned)kind < NLPD_OP_COUNT ? op_names[kind] : "unknown";
}

int nlpd_backend_supports(const struct nlpd_backend *be, enum nlpd_op_kind kind)
{
    return (unsigned)kind < NLPD_OP_COUNT && be->ops->supports(be, kind);
}

/* The first of o's ops that be cannot run, or -1. */
static int missing_op(const struct nlpd_backend *be, const struct nlpd_backend_opts *o)
{
    for (int i = 0; o->ops && i < o->n_ops; i++)
        if (!nlpd_backend_supports(be, o->ops[i]))
            return (int)o->ops[i];
    return -1;
}

/* ---- the backend name table ---- */

static const char *const kind_names[NLPD_BACKEND_KIND_COUNT] = {"auto", "cpu", "cuda"};

int nlpd_backend_kind_parse(const char *name)
{
    for (int i = 0; name && i < NLPD_BACKEND_KIND_COUNT; i++)
        if (!strcmp(name, kind_names[i]))
            return i;
    return -1;
}

const char *nlpd_backend_kind_name(enum nlpd_backend_kind kind)
{
    return (unsigned)kind < NLPD_BACKEND_KIND_COUNT ? kind_names[kind] : "unknown";
}

const char *nlpd_backend_kind_list(void)
{
    return "auto, cpu, cuda"; /* kind_names, in order */
}

void nlpd_kernels_set_defaults(const char *name, int device, enum nlpd_dtype dtype)
{
    pthread_mutex_lock(&defaults_mu);
    if (name)
        snprintf(default_name, sizeof default_name, "%s", name);
    default_device = device;
    default_dtype = dtype;
    pthread_mutex_unlock(&defaults_mu);
}

void nlpd_kernels_set_cpu_gemm(enum nlpd_cpu_gemm g)
{
    pthread_mutex_lock(&defaults_mu);
    default_cpu_gemm = g;
    pthread_mutex_unlock(&defaults_mu);
}

void nlpd_backend_opts_default(struct nlpd_backend_opts *o)
{
    memset(o, 0, sizeof *o);
    pthread_mutex_lock(&defaults_mu);
    o->cpu_gemm = default_cpu_gemm;
    int kind = nlpd_backend_kind_parse(default_name);
    o->name = nlpd_backend_kind_name(kind < 0 ? NLPD_BACKEND_AUTO : (enum nlpd_backend_kind)kind);
    o->device = default_device;
    o->dtype = default_dtype;
    pthread_mutex_unlock(&defaults_mu);
}

/* The backend choices already logged (log_choice); a new logger starts with none said. */
static pthread_mutex_t said_mu = PTHREAD_MUTEX_INITIALIZER;
static char said[4][NLPD_BACKEND_REASON_MAX + 64];
static unsigned nsaid;

void nlpd_kernels_set_logger(void (*fn)(const char *line))
{
    pthread_mutex_lock(&said_mu);
    kernels_logger = fn;
    nsaid = 0;
    pthread_mutex_unlock(&said_mu);
}

int nlpd_dtype_parse(const char *name)
{
    if (!name)
        return -1;
    if (!strcmp(name, "fp32"))
        return NLPD_DTYPE_F32;
    if (!strcmp(name, "fp16"))
        return NLPD_DTYPE_F16;
    if (!strcmp(name, "bf16"))
        return NLPD_DTYPE_BF16;
    if (!strcmp(name, "int8"))
        return NLPD_DTYPE_INT8;
    if (!strcmp(name, "auto"))
        return NLPD_DTYPE_AUTO;
    return -1;
}

const char *nlpd_dtype_name(enum nlpd_dtype dtype)
{
    return dtype == NLPD_DTYPE_F16    ? "fp16"
           : dtype == NLPD_DTYPE_BF16 ? "bf16"
           : dtype == NLPD_DTYPE_INT8 ? "int8"
           : dtype == NLPD_DTYPE_AUTO ? "auto"
                                      : "fp32";
}

int nlpd_cpu_gemm_parse(const char *name)
{
    if (!name)
        return -1;
    if (!strcmp(name, "auto"))
        return NLPD_CPU_GEMM_AUTO;
    if (!strcmp(name, "openblas"))
        return NLPD_CPU_GEMM_OPENBLAS;
    if (!strcmp(name, "onednn"))
        return NLPD_CPU_GEMM_ONEDNN;
    return -1;
}

const char *nlpd_cpu_gemm_name(enum nlpd_cpu_gemm g)
{
    return g == NLPD_CPU_GEMM_OPENBLAS ? "openblas" : g == NLPD_CPU_GEMM_ONEDNN ? "onednn" : "auto";
}

/* ---- libnlpd_cuda.so ---- */

static pthread_mutex_t cuda_mu = PTHREAD_MUTEX_INITIALIZER;
static nlpd_cuda_create_fn cuda_create;
static char cuda_why[400]; /* why the library could not be used, once it failed */

/* Looks for the library in $NLPD_LIBDIR, next to the executable, in the install lib dir. */
static int find_cuda_lib(char *path, size_t n, char *tried, size_t tn)
{
    char dirs[3][PATH_MAX];
    int nd = 0;
    char exe[PATH_MAX];
    const char *env = getenv("NLPD_LIBDIR");
    if (env && *env)
        snprintf(dirs[nd++], PATH_MAX, "%s", env);
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len > 0) {
        exe[len] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = 0;
            snprintf(dirs[nd++], PATH_MAX, "%s", exe[0] ? exe : "/");
        }
    }
    snprintf(dirs[nd++], PATH_MAX, "%s", NLPD_INSTALL_LIBDIR);
    tried[0] = 0;
    for (int i = 0; i < nd; i++) {
        size_t dl = strnlen(dirs[i], PATH_MAX - 1);
        if (dl + sizeof NLPD_CUDA_LIB + 1 > n)
            continue;
        memcpy(path, dirs[i], dl);
        path[dl] = '/';
        memcpy(path + dl + 1, NLPD_CUDA_LIB, sizeof NLPD_CUDA_LIB);
        if (access(path, R_OK) == 0)
            return 0;
        size_t tl = strlen(tried);
        snprintf(tried + tl, tn - tl, "%s%s", tl ? ", " : "", dirs[i]);
    }
    return -1;
}

/* Loads libnlpd_cuda.so once; NULL with the reason in why. The driver is probed first (libcuda.so.1), so that on
 * a machine without one the CUDA runtime is never loaded; NLPD_CUDA_EMULATOR=1 says the library found is the
 * host emulator's build (build/emul, which needs no driver). */
static nlpd_cuda_create_fn load_cuda(char *why, size_t n)
{
    const char *em = getenv("NLPD_CUDA_EMULATOR");
    const int emulated = em && !strcmp(em, "1");
    pthread_mutex_lock(&cuda_mu);
    nlpd_cuda_create_fn fn = cuda_create;
    if (!fn && !cuda_why[0]) {
        char path[PATH_MAX + 32], tried[3 * PATH_MAX + 8];
        void *h;
        if (find_cuda_lib(path, sizeof path, tried, sizeof tried)) {
            snprintf(cuda_why, sizeof cuda_why,
                     "%s not found (looked in %.200s; it is built when nvcc is found, or set NLPD_LIBDIR)",
                     NLPD_CUDA_LIB, tried);
        } else if (!emulated && !dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL)) {
            const char *e = dlerror();
            snprintf(cuda_why, sizeof cuda_why, "no CUDA driver (%.300s)", e ? e : "libcuda.so.1 not found");
        } else if (!(h = dlopen(path, RTLD_NOW | RTLD_LOCAL))) {
            const char *e = dlerror(); /* e.g. libcudart.so.13 or libcublas.so.13 missing */
            snprintf(cuda_why, sizeof cuda_why, "cannot load %.300s", e ? e : path);
        } else if (!(fn = (nlpd_cuda_create_fn)dlsym(h, NLPD_CUDA_ENTRY))) {
            snprintf(cuda_why, sizeof cuda_why, "%.200s has no %s", path, NLPD_CUDA_ENTRY);
        } else {
            cuda_create = fn;
        }
    }
    if (!fn && n) {
        strncpy(why, cuda_why, n - 1);
        why[n - 1] = 0;
    }
    pthread_mutex_unlock(&cuda_mu);
    return fn;
}

/* Once per process for each distinct choice: every model creates a backend, and ten models on a machine without
 * CUDA would otherwise say "CUDA unavailable" ten times. */
static void log_choice(const struct nlpd_backend *be)
{
    void (*fn)(const char *) = kernels_logger;
    if (!fn)
        return;
    char line[NLPD_BACKEND_REASON_MAX + 64];
    snprintf(line, sizeof line, "kernels: backend %s (%s)", be->ops->name, be->reason);
    int seen = 0;
    pthread_mutex_lock(&said_mu);
    for (unsigned i = 0; i < nsaid && i < 4 && !seen; i++)
        seen = strcmp(said[i], line) == 0;
    if (!seen)
        snprintf(said[nsaid++ % 4], sizeof said[0], "%s", line);
    pthread_mutex_unlock(&said_mu);
    if (!seen)
        fn(line);
}

static void set_reason(struct nlpd_backend *be, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_reason(struct nlpd_backend *be, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(be->reason, sizeof be->reason, fmt, ap);
    va_end(ap);
}

struct nlpd_backend *nlpd_backend_new_opts(const struct nlpd_backend_opts *opts, struct nlpd_error *err)
{
    struct nlpd_backend_opts o;
    if (opts) {
        o = *opts;
        if (!o.name) {
            struct nlpd_backend_opts d;
            nlpd_backend_opts_default(&d);
            o.name = d.name;
        }
    } else {
        nlpd_backend_opts_default(&o);
    }
    int kind = nlpd_backend_kind_parse(o.name), is_auto = kind == NLPD_BACKEND_AUTO;
    if (kind < 0) {
        nlpd_error_set(err, NLPD_EINVAL, 0, "unknown kernels backend \"%s\" (%s)", o.name, nlpd_backend_kind_list());
        return NULL;
    }
    if ((int)o.dtype < NLPD_DTYPE_F32 || (int)o.dtype > NLPD_DTYPE_AUTO || o.device < 0 ||
        (int)o.cpu_gemm < NLPD_CPU_GEMM_AUTO || (int)o.cpu_gemm > NLPD_CPU_GEMM_ONEDNN) {
        nlpd_error_set(err, NLPD_EINVAL, 0, "kernels: dtype %d or device %d out of range", (int)o.dtype, o.device);
        return NULL;
    }
    char why[NLPD_BACKEND_REASON_MAX] = "";
    int lacks_op = 0;                 /* set: CUDA works, but lacks an op of the model (why says which) */
    if (o.dtype == NLPD_DTYPE_INT8) { /* int8 products are the CPU backend's only */
        if (kind == NLPD_BACKEND_CUDA) {
            nlpd_error_set(err, NLPD_EINVAL, 0,
                           "kernels backend \"cuda\": dtype int8 runs on the CPU backend only "
                           "(use fp16 or bf16 on CUDA)");
            return NULL;
        }
        snprintf(why, sizeof why, "dtype int8 runs on the CPU only");
    } else if (kind != NLPD_BACKEND_CPU) {
        pthread_mutex_lock(&defaults_mu);
        nlpd_cuda_create_fn fn = gpu_factory;
        pthread_mutex_unlock(&defaults_mu);
        if (!fn)
            fn = load_cuda(why, sizeof why);
        if (fn) {
            struct nlpd_error cerr = {0};
            struct nlpd_backend_opts co = o;
            if (co.dtype == NLPD_DTYPE_AUTO) /* tensor cores: half weights and activations, fp32 accumulation */
                co.dtype = NLPD_DTYPE_F16;
            struct nlpd_backend *be = fn(&co, NLPD_CUDA_ABI, &cerr);
            if (be && be->ops->version != NLPD_BACKEND_API_VERSION) {
                nlpd_error_set(&cerr, NLPD_EINVAL, 0, "%s: backend API version %u, nlpd needs %u (rebuild it)",
                               NLPD_CUDA_LIB, be->ops->version, NLPD_BACKEND_API_VERSION);
                be->ops->destroy(be);
                be = NULL;
            }
            int op = be ? missing_op(be, &o) : -1;
            if (op >= 0) { /* the model needs an op this backend lacks: the CPU runs all of them */
                nlpd_error_set(&cerr, NLPD_EINVAL, 0,
                               "kernels backend \"%s\" cannot run op %s, which this model needs (kernels.backend = "
                               "cpu, or auto, runs it on the CPU backend)",
                               be->ops->name, nlpd_op_kind_name((enum nlpd_op_kind)op));
                snprintf(why, sizeof why, "%s cannot run op %s, which the model needs", be->ops->name,
                         nlpd_op_kind_name((enum nlpd_op_kind)op));
                be->ops->destroy(be);
                be = NULL;
                lacks_op = 1;
                if (!is_auto) {
                    if (err)
                        *err = cerr;
                    return NULL;
                }
            }
            if (be) {
                be->dtype = co.dtype;
                char dev[NLPD_BACKEND_REASON_MAX];
                snprintf(dev, sizeof dev, "%s", be->reason);
                set_reason(be, "%s%.200s", is_auto ? "auto: " : "", dev);
                log_choice(be);
                return be;
            }
            if (op < 0)
                snprintf(why, sizeof why, "%.200s", cerr.message);
            if (!is_auto) {
                if (err)
                    *err = cerr;
                return NULL;
            }
        } else if (!is_auto) {
            nlpd_error_set(err, NLPD_ENOTFOUND, 0, "kernels backend \"cuda\": %s", why);
            return NULL;
        }
    }
    char dt[200] = "";
    if (o.dtype == NLPD_DTYPE_AUTO) {
        o.dtype = NLPD_DTYPE_F32;
    } else if (o.dtype == NLPD_DTYPE_F16) {
        snprintf(dt, sizeof dt, " (the CPU computes in fp32)");
        o.dtype = NLPD_DTYPE_F32;
    } else if (o.dtype != NLPD_DTYPE_F32) {
        char isa[160];
        if (!nlpd_kernels_cpu_supports(o.dtype, isa, sizeof isa)) {
            if (o.dtype_strict) {
                nlpd_error_set(err, NLPD_EINVAL, 0, "dtype %s: %s", nlpd_dtype_name(o.dtype), isa);
                return NULL;
            }
            snprintf(dt, sizeof dt, " (dtype %s falls back to fp32: %.150s)", nlpd_dtype_name(o.dtype), isa);
            o.dtype = NLPD_DTYPE_F32;
        } else {
            snprintf(dt, sizeof dt, " (dtype %s, oneDNN %s)", nlpd_dtype_name(o.dtype), nlpd_kernels_onednn_isa());
        }
    }
    struct nlpd_backend *be = nlpd_backend_cpu_new_opts(&o, err);
    if (!be)
        return NULL;
    if (is_auto && lacks_op)
        set_reason(be, "auto: %.200s%s", why, dt);
    else if (is_auto)
        set_reason(be, "auto: CUDA unavailable: %.200s%s", why, dt);
    else
        set_reason(be, "kernels.backend = cpu%s", dt);
    log_choice(be);
    return be;
}

struct nlpd_backend *nlpd_backend_new(const char *name, int threads, struct nlpd_error *err)
{
    struct nlpd_backend_opts o;
    nlpd_backend_opts_default(&o);
    if (name)
        o.name = name;
    o.threads = threads;
    return nlpd_backend_new_opts(&o, err);
}

const char *nlpd_backend_reason(const struct nlpd_backend *be)
{
    return be->reason;
}

void nlpd_backend_free(struct nlpd_backend *be)
{
    if (region_be == be) /* this thread's; another thread's open region on be is that thread's bug */
        region_be = NULL;
    if (be)
        be->ops->destroy(be);
}

int nlpd_backend_alloc(struct nlpd_backend *be, size_t size, struct nlpd_buffer *out, struct nlpd_error *err)
{
    memset(out, 0, sizeof *out);
    return be->ops->alloc(be, size, out, err);
}

int nlpd_backend_alloc_weights(struct nlpd_backend *be, size_t size, struct nlpd_buffer *out, struct nlpd_error *err)
{
    memset(out, 0, sizeof *out);
    if (be->ops->alloc_weights)
        return be->ops->alloc_weights(be, size, out, err);
    return be->ops->alloc(be, size, out, err);
}

/* A failure inside an open region of be discards the region (the caller abandons the batch). Returns rc. */
static int region_failed(struct nlpd_backend *be, int rc)
{
    if (rc && region_be == be) {
        region_be = NULL;
        if (be->ops->graph_abort)
            be->ops->graph_abort(be);
    }
    return rc;
}

static int refuse_in_region(struct nlpd_backend *be, const char *what, struct nlpd_error *err)
{
    if (region_be != be)
        return 0;
    int rc = nlpd_error_set(err, NLPD_EINVAL, 0, "backend %s: %s inside a graph region (end the region first)",
                            be->ops->name, what);
    return region_failed(be, rc);
}

int nlpd_backend_graph_begin(struct nlpd_backend *be, struct nlpd_error *err)
{
    if (region_be)
        return nlpd_error_set(err, NLPD_EINVAL, 0, "backend %s: a graph region is already open on this thread",
                              be->ops->name);
    int rc = be->ops->graph_begin ? be->ops->graph_begin(be, err) : 0;
    if (!rc)
        region_be = be;
    return rc;
}

int nlpd_backend_graph_end(struct nlpd_backend *be, struct nlpd_error *err)
{
    if (region_be != be)
        return nlpd_error_set(err, NLPD_EINVAL, 0, "backend %s: no graph region open on this thread", be->ops->name);
    region_be = NULL;
    return be->ops->graph_end ? be->ops->graph_end(be, err) : 0;
}

void nlpd_backend_stats(const struct nlpd_backend *be, struct nlpd_backend_stats *out)
{
    memset(out, 0, sizeof *out);
    if (be->ops->stats)
        be->ops->stats(be, out);
}

int nlpd_backend_upload_err(struct nlpd_buffer *buf, size_t offset, const void *src, size_t n, struct nlpd_error *err)
{
    return region_failed(buf->backend, buf->backend->ops->upload(buf->backend, buf, offset, src, n, err));
}

int nlpd_backend_upload_2d(struct nlpd_buffer *buf, size_t offset, size_t dpitch, const void *src, size_t spitch,
                           size_t width, size_t rows, struct nlpd_error *err)
{
    struct nlpd_backend *be = buf->backend;
    if (!rows || !width)
        return 0;
    if (rows == 1)
        return nlpd_backend_upload_err(buf, offset, src, width, err);
    /* the last row ends at offset + (rows - 1) * dpitch + width, all inside the buffer */
    if (width > dpitch || width > spitch || offset > buf->size || (rows - 1) > (buf->size - offset) / dpitch ||
        (rows - 1) * dpitch + width > buf->size - offset)
        return region_failed(be, nlpd_error_set(err, NLPD_ERANGE, 0,
                                                "backend %s: upload of %zu rows of %zu bytes (pitch %zu, source pitch "
                                                "%zu) at offset %zu: outside the buffer of %zu bytes or rows overlap",
                                                be->ops->name, rows, width, dpitch, spitch, offset, buf->size));
    if (width == dpitch && width == spitch)
        return nlpd_backend_upload_err(buf, offset, src, rows * width, err);
    if (be->ops->upload_2d)
        return region_failed(be, be->ops->upload_2d(be, buf, offset, dpitch, src, spitch, width, rows, err));
    const unsigned char *s = src;
    for (size_t r = 0; r < rows; r++) {
        int rc = be->ops->upload(be, buf, offset + r * dpitch, s + r * spitch, width, err);
        if (rc)
            return region_failed(be, rc);
    }
    return 0;
}

int nlpd_backend_download_err(const struct nlpd_buffer *buf, size_t offset, void *dst, size_t n, struct nlpd_error *err)
{
    int rc = refuse_in_region(buf->backend, "download", err);
    return rc ? rc : region_failed(buf->backend, buf->backend->ops->download(buf->backend, buf, offset, dst, n, err));
}

/* the callers of the forms without err see only a code: the message goes to the log */
static int log_failure(int rc, const struct nlpd_error *e)
{
    void (*fn)(const char *) = kernels_logger;
    if (rc && fn) {
        char line[sizeof e->message + 32];
        snprintf(line, sizeof line, "kernels: %s", e->message);
        fn(line);
    }
    return rc;
}

int nlpd_backend_upload(struct nlpd_buffer *buf, size_t offset, const void *src, size_t n)
{
    struct nlpd_error e = {0};
    return log_failure(nlpd_backend_upload_err(buf, offset, src, n, &e), &e);
}

int nlpd_backend_download(const struct nlpd_buffer *buf, size_t offset, void *dst, size_t n)
{
    struct nlpd_error e = {0};
    return log_failure(nlpd_backend_download_err(buf, offset, dst, n, &e), &e);
}

/* The op's activation types that are not fp32 (see struct nlpd_op_matmul): each must be the backend's act_dtype. */
static int act_types_ok(const struct nlpd_backend *be, const struct nlpd_op *op, enum nlpd_dtype *bad)
{
    enum nlpd_dtype t[2] = {NLPD_DTYPE_F32, NLPD_DTYPE_F32};
    switch (op->kind) {
    case NLPD_OP_MATMUL:
        t[0] = op->u.matmul.a_type;
        t[1] = op->u.matmul.c_type;
        break;
    case NLPD_OP_BIAS_ACT: t[0] = op->u.bias_act.x_type; break;
    case NLPD_OP_LAYER_NORM: t[0] = op->u.layer_norm.io_type; break;
    case NLPD_OP_ATTENTION: t[0] = op->u.attention.io_type; break;
    case NLPD_OP_EMBED: t[0] = op->u.embed.out_type; break;
    default: break;
    }
    for (int i = 0; i < 2; i++)
        if (t[i] != NLPD_DTYPE_F32 && (t[i] != be->act_dtype || t[i] == NLPD_DTYPE_INT8)) {
            *bad = t[i];
            return 0;
        }
    return 1;
}

int nlpd_backend_run(struct nlpd_backend *be, const struct nlpd_op *op, struct nlpd_error *err)
{
    if (!nlpd_backend_supports(be, op->kind))
        return region_failed(be, nlpd_error_set(err, NLPD_EINVAL, 0, "backend %s does not support op %s (%d)",
                                                be->ops->name, nlpd_op_kind_name(op->kind), (int)op->kind));
    enum nlpd_dtype bad;
    if (!act_types_ok(be, op, &bad))
        return region_failed(
            be, nlpd_error_set(err, NLPD_EINVAL, 0, "backend %s: op %s with %s activations (this backend takes %s)",
                               be->ops->name, nlpd_op_kind_name(op->kind), nlpd_dtype_name(bad),
                               be->act_dtype == NLPD_DTYPE_F32
                                   ? "fp32 only"
                                   : (be->act_dtype == NLPD_DTYPE_F16 ? "fp32 or fp16" : "fp32 or bf16")));
    return region_failed(be, be->ops->run(be, op, err));
}

int nlpd_backend_sync(struct nlpd_backend *be, struct nlpd_error *err)
{
    int rc = refuse_in_region(be, "sync", err);
    return rc ? rc : be->ops->sync(be, err);
}

void nlpd_backend_buffer_free(struct nlpd_buffer *buf)
{
    if (buf && buf->backend && buf->ptr)
        buf->backend->ops->free(buf->backend, buf);
}

const char *nlpd_backend_name(const struct nlpd_backend *be)
{
    return be->ops->name;
}

enum nlpd_dtype nlpd_backend_act_dtype(const struct nlpd_backend *be)
{
    return be->act_dtype;
}

enum nlpd_dtype nlpd_backend_dtype(const struct nlpd_backend *be)
{
    return be->dtype;
}

int nlpd_backend_threads(const struct nlpd_backend *be)
{
    if (nlpd_backend_kind_parse(be->ops->name) == NLPD_BACKEND_CPU)
        return nlpd_backend_cpu_threads(be);
    return 1;
}

/* ---- dtype conversion ---- */

float nlpd_kernels_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13); /* inf / nan */
    } else if (exp) {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    } else if (man) {
        /* subnormal: normalise */
        int e = -1;
        do {
            e++;
            man <<= 1;
        } while (!(man & 0x400));
        bits = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ff) << 13);
    } else {
        bits = sign;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

float nlpd_kernels_bf16_to_f32(uint16_t b)
{
    uint32_t bits = (uint32_t)b << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t nlpd_kernels_f32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x40); /* quiet nan */
    x += 0x7fffu + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

uint16_t nlpd_kernels_f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u)
        return sign | 0x7e00;
    if (ax >= 0x477ff000u) /* rounds to >= 65520: inf */
        return sign | 0x7c00;
    if (ax < 0x38800000u) { /* below the smallest normal half: subnormal or zero */
        if (ax < 0x33000000u)
            return sign;
        uint32_t e = ax >> 23, m = (ax & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - e; /* 14 .. 24 */
        uint32_t half = m >> shift, rem = m & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1)))
            half++;
        return sign | (uint16_t)half;
    }
    uint32_t r = ax + 0xfffu + ((ax >> 13) & 1);
    return sign | (uint16_t)((r - 0x38000000u) >> 13);
}

static uint16_t load_u16le(const unsigned char *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

void nlpd_kernels_convert_f16(float *dst, const void *src, size_t n)
{
    const unsigned char *p = src;
    for (size_t i = 0; i < n; i++)
        dst[i] = nlpd_kernels_f16_to_f32(load_u16le(p + 2 * i));
}

void nlpd_kernels_convert_bf16(float *dst, const void *src, size_t n)
{
    const unsigned char *p = src;
    for (size_t i = 0; i < n; i++)
        dst[i] = nlpd_kernels_bf16_to_f32(load_u16le(p + 2 * i));
}

void nlpd_kernels_convert_f32(float *dst, const void *src, size_t n)
{
    memcpy(dst, src, n * sizeof(float)); /* little-endian hosts only (x86-64, aarch64) */
}

void nlpd_kernels_omp_env(char **argv)
{
    if (getenv("OMP_WAIT_POLICY") || !argv || !argv[0])
        return;
    if (setenv("OMP_WAIT_POLICY", "passive", 1))
        return;
    /* The resolved path, not /proc/self/exe, which would rename the process "exe" (ps, pgrep, journald). */
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0 || n >= (ssize_t)sizeof self - 1)
        return;
    self[n] = '\0';
    execv(self, argv); /* returns only on failure: run on with spinning waiters */
}
