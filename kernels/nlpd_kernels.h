/* The kernels' public header (DESIGN.md §5), what models and the daemon use: op descriptors for the transformer
 * encoder and decoder, backends behind opaque handles with thin wrappers over their vtable {name, supports, alloc,
 * upload, download, run, sync, free} (the vtable itself is in nlpd_backend.h, for backend authors), plus load-time
 * dtype conversion. The CPU backend
 * (OpenBLAS sgemm + vectorised C) is always present and is the reference; a CUDA backend slots in behind the same
 * vtable. Pointers inside op descriptors are backend addresses: buffer base (`nlpd_buffer.ptr`) plus offsets.
 *
 * The CUDA backend (kernels/cuda/, README "CUDA") is a separate shared object, libnlpd_cuda.so, that
 * nlpd_backend_new_opts() loads with dlopen: the nlpd binary itself links no CUDA library and runs without one.
 * Its buffers are device memory (cudaMalloc), its ops are queued on a CUDA stream of the calling thread (each
 * thread gets its own stream, cuBLAS handle, scratch arena and pinned staging on its first call, so pipeline
 * workers overlap instead of taking turns) and run asynchronously: upload returns once the source was copied into
 * pinned staging, download and sync wait for the work the calling thread queued before, and errors found on the
 * device (ids out of range) are reported by the thread's next sync. Weight buffers may be uploaded by one thread
 * (a loader) and read by others without a sync; any other buffer written on one thread is read on another only
 * after a download or sync on the writing thread.
 *
 * Half precision (kernels.dtype = "fp16" | "bf16"; the CUDA backend only, the CPU backend always computes in
 * fp32). Op descriptors keep their float pointers; what changes is how weights are held:
 *   - a buffer allocated with nlpd_backend_alloc_weights() (vtable entry alloc_weights, optional) is a weight
 *     buffer: written by upload, then only read by ops. A backend whose dtype is fp16/bf16 keeps, next to the
 *     fp32 contents, a shadow copy of the whole buffer converted to that type (same element offsets, 2 bytes per
 *     float), refreshed for the ranges uploads changed before the next op that reads it;
 *   - a MATMUL whose b lies inside a weight buffer multiplies with the shadow copy: a is taken in that type (an
 *     fp32 a is converted on the fly), the product runs on tensor cores accumulating in fp32, bias and activation
 *     in the product's cuBLASLt epilogue where Lt has one (else one fused pass), c in its activation type;
 *   - attention runs as one fused kernel (kernels/cuda/fattn.cu): q, k, v and the probabilities rounded to the
 *     type, fp32 accumulation and softmax (head_dim > 128: cuBLAS in a fp16/bf16 fast compute mode);
 *   - activations: the backend's act_dtype is its dtype (NLPD_CUDA_ACT=fp32: fp32), so ops may take their
 *     activation operands in 2-byte elements (see "Activation element types" below; fp16 stores saturate at
 *     +-65504); ops whose operands are fp32 (the default) compute in fp32 as before.
 * A matmul whose b is not in a weight buffer computes in fp32 (and refuses half operands), as does every op of a
 * fp32 backend. Backends without alloc_weights get a plain alloc, so callers may always use
 * nlpd_backend_alloc_weights.
 *
 * The CPU backend (kernels.dtype = "bf16" | "int8"; kernels/cpu/, oneDNN): a MATMUL whose b lies inside a weight
 * buffer (and has n, k >= 32: classifier heads stay fp32) runs on a copy of b prepared on first use and kept
 * until the buffer is freed or uploaded to again:
 *   - bf16: b rounded to bf16, a converted per call, fp32 accumulation, bias and activation fused;
 *   - int8: b as s8 per output channel (symmetric, scale max|w| / 127), a quantised per row to u8 (asymmetric,
 *     range widened to include 0) on each call, s32 accumulation, then one pass that dequantises, adds the bias
 *     and applies the activation.
 * bf16 needs AVX512-BF16 and int8 needs AVX512-VNNI or AVX-VNNI (without VNNI oneDNN's u8 x s8 products saturate);
 * elsewhere the backend computes in fp32 and says so in be->reason, or, with dtype_strict, is not created.
 * fp32 products go to OpenBLAS or oneDNN by kernels.cpu_gemm (see nlpd_cpu_gemm). */
#ifndef NLPD_KERNELS_H
#define NLPD_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "nlpd_error.h"

/* ---- dtype conversion (done once at load, always on the host) ---- */
float nlpd_kernels_f16_to_f32(uint16_t h);
float nlpd_kernels_bf16_to_f32(uint16_t b);
uint16_t nlpd_kernels_f32_to_f16(float f);  /* round to nearest even; used by tests and writers */
uint16_t nlpd_kernels_f32_to_bf16(float f); /* round to nearest even */
/* src may be unaligned (mmapped file data); elements are little-endian. */
void nlpd_kernels_convert_f16(float *dst, const void *src, size_t n);
void nlpd_kernels_convert_bf16(float *dst, const void *src, size_t n);
void nlpd_kernels_convert_f32(float *dst, const void *src, size_t n);

/* ---- compute precision of matrix products (see the top of this file) ---- */
enum nlpd_dtype {
    NLPD_DTYPE_F32 = 0,
    NLPD_DTYPE_F16,
    NLPD_DTYPE_BF16,
    NLPD_DTYPE_INT8, /* CPU only: dynamic quantisation of weight-buffer products, see below */
    NLPD_DTYPE_AUTO, /* a request only (kernels.dtype's default): fp16 on the CUDA backend, fp32 on the CPU */
};
/* "fp32" | "fp16" | "bf16" | "int8" | "auto" -> enum nlpd_dtype; -1 when unknown. */
int nlpd_dtype_parse(const char *name);
const char *nlpd_dtype_name(enum nlpd_dtype dtype);

/* ---- ops ---- */
enum nlpd_act {
    NLPD_ACT_NONE = 0,
    NLPD_ACT_GELU,      /* exact: 0.5 x (1 + erf(x / sqrt 2)) (HF "gelu") */
    NLPD_ACT_GELU_TANH, /* tanh approximation (HF "gelu_new", "gelu_pytorch_tanh") */
    NLPD_ACT_RELU,
    NLPD_ACT_SILU, /* x * sigmoid(x) (HF "silu", "swish") */
    NLPD_ACT_TANH,
};

enum nlpd_op_kind {
    NLPD_OP_MATMUL = 0, /* c[m,n] = act(a[m,k] . b[k,n] + bias[n]) (b transposed when trans_b: b[n,k]) */
    NLPD_OP_BIAS_ACT,   /* x[r,c] = act(x + bias[c]) + residual[r,c] in place (residual optional) */
    NLPD_OP_LAYER_NORM, /* y = LN(x + bias + residual) * gamma + beta, row-wise; bias/residual optional */
    NLPD_OP_SOFTMAX,    /* row-wise, in place */
    NLPD_OP_ATTENTION,  /* masked multi-head self-attention from a fused [q|k|v] projection */
    NLPD_OP_EMBED, /* out[t] = word[ids[t]] * word_scale + pos[pos_ids[t]] + type[type_ids[t]] (pos/type optional) */
    NLPD_OP_ATTENTION_KV,     /* queries against separate key/value rows: decoder self-attention over a KV cache,
                                 cross-attention over encoder states */
    NLPD_OP_GATHER_ROWS,      /* dst[i] = src[idx[i]]: beam reordering and batch compaction of caches */
    NLPD_OP_ATTENTION_REL,    /* DeBERTa-v2 disentangled self-attention */
    NLPD_OP_LOG_SOFTMAX_TOPK, /* per row: the k best log-probabilities and their columns (decoding on the device) */
    NLPD_OP_COUNT
};

/* Activation element types. An op's *_type fields name how its activation operands (never weights, biases, ids or
 * masks) are stored: NLPD_DTYPE_F32 (0, the default of a zeroed descriptor) is fp32; NLPD_DTYPE_F16/BF16 are
 * 2-byte elements at the same address (the pointer keeps its float * type; strides stay in elements), accepted
 * only by a backend whose nlpd_backend_act_dtype() is that type, so a model keeps activations in half precision
 * between ops instead of converting around each product. nlpd_backend_run refuses any other combination. Compute
 * stays fp32 inside every op (accumulation, layer-norm statistics, softmax). */
struct nlpd_op_matmul {
    float *c;
    const float *a, *b, *bias; /* bias may be NULL */
    int m, n, k;
    int lda, ldb, ldc; /* row strides in elements */
    int trans_b;
    enum nlpd_act act;
    enum nlpd_dtype a_type, c_type; /* activation types of a and c */
};

struct nlpd_op_bias_act {
    float *x;
    const float *bias; /* may be NULL */
    int rows, cols, ld;
    enum nlpd_act act;
    const float *residual;  /* [rows, cols] at row stride ld, added last; may be NULL (pre-norm residual adds) */
    enum nlpd_dtype x_type; /* x and residual */
};

struct nlpd_op_layer_norm {
    float *y;                  /* may equal x or residual */
    const float *x;            /* [rows, cols] */
    const float *bias;         /* [cols] added first, may be NULL (fuses a matmul's bias) */
    const float *residual;     /* [rows, cols], may be NULL */
    const float *gamma, *beta; /* [cols] */
    int rows, cols;
    float eps;
    enum nlpd_dtype io_type; /* x, residual and y */
};

struct nlpd_op_softmax {
    float *x;
    int rows, cols, ld;
};

/* qkv rows are tokens (batch-major, seq tokens per sequence), each [q(heads*head_dim) | k | v] at row stride
 * ld_qkv. Keys whose mask is 0 get -FLT_MAX added before the softmax, as transformers does (a row with every key
 * masked therefore attends uniformly). out[token, heads*head_dim] at row stride ld_out. */
struct nlpd_op_attention {
    float *out;
    const float *qkv;
    const int32_t *mask; /* [batch, seq], 1 = attend; NULL = all */
    int batch, seq, heads, head_dim;
    int ld_qkv, ld_out;
    float scale;    /* usually 1/sqrt(head_dim) */
    float *scratch; /* CPU backend: seq*seq floats from the caller's workspace; NULL = allocated per call */
    size_t scratch_floats;
    enum nlpd_dtype io_type; /* qkv and out */
};

struct nlpd_op_embed {
    float *out; /* [tokens, dim] */
    const float *word, *pos, *type;
    const int32_t *ids, *pos_ids, *type_ids; /* pos/type NULL: that table is skipped; ids are range-checked */
    int tokens, dim, n_word, n_pos, n_type;
    float word_scale; /* multiplies the word vector (Marian's sqrt(d_model)); 0 means 1 */
    enum nlpd_dtype out_type;
};

/* Query row (b, i) is row b*q_len + i of q, for b < batch, i < q_len; it reads kv batch j = kv_map[b] (b when
 * kv_map is NULL): keys/values are rows j*kv_batch_stride + t, t < kv_len, of k and v (row strides ld_kv).
 * mask (optional) is [kv batch, kv_len] at row stride mask_ld, 1 = attend; masked keys get -FLT_MAX added
 * before the softmax, as transformers does. causal: query i sits at position q_pos0 + i and sees keys
 * t <= q_pos0 + i only. out rows as q's, at row stride ld_out. kv_map and mask are backend addresses. */
struct nlpd_op_attention_kv {
    float *out;
    const float *q, *k, *v;
    const int32_t *kv_map;
    const int32_t *mask;
    int mask_ld;
    int batch, q_len, kv_len, heads, head_dim;
    int ld_q, ld_kv, ld_out;
    size_t kv_batch_stride; /* rows */
    int causal, q_pos0;
    float scale; /* usually 1/sqrt(head_dim) */
};

/* dst row i (cols floats at dst + i*ld_dst) = src row idx[i] (at src + idx[i]*ld_src), i < rows. idx is a backend
 * address with values in [0, src_rows); dst and src must not overlap. */
struct nlpd_op_gather_rows {
    float *dst;
    const float *src;
    const int32_t *idx;
    int rows, cols, src_rows;
    size_t ld_dst, ld_src;
};

/* DeBERTa-v2's disentangled attention: as NLPD_OP_ATTENTION (qkv, mask, out), with
 *   score(i,j) = scale * (q_i.k_j + q_i.pos_k[c] + k_j.pos_q[c]),  c = rel_idx[i - j + seq - 1]
 * per head (head h uses columns h*head_dim.. of the pos rows). pos_k (c2p) / pos_q (p2c) are [n_rel, heads *
 * head_dim] at row stride ld_pos, NULL when that term is absent; rel_idx[2*seq-1] holds values in [0, n_rel) and
 * never decreases (log buckets are monotonic in i - j), so a head only reads a contiguous band of pos rows. */
struct nlpd_op_attention_rel {
    float *out;
    const float *qkv;
    const int32_t *mask;
    const float *pos_k, *pos_q;
    const int32_t *rel_idx;
    int batch, seq, heads, head_dim, n_rel;
    int ld_qkv, ld_out, ld_pos;
    float scale;
};

/* Row r < rows of x (cols floats at x + r*ld): the k largest entries, best first (equal values: lower column
 * first; NaN ranks as -inf), as idx[r*k + j] and their log-softmax vals[r*k + j] = x - log(sum exp(x)) over the
 * whole row. 1 <= k <= min(cols, NLPD_TOPK_MAX). A decoder step downloads rows * k candidates instead of rows *
 * cols logits; a NaN or inf logit anywhere in the row makes all its vals NaN, which the caller checks. */
#define NLPD_TOPK_MAX 64
struct nlpd_op_log_softmax_topk {
    const float *x;
    float *vals;
    int32_t *idx;
    int rows, cols, k;
    size_t ld;
};

struct nlpd_op {
    enum nlpd_op_kind kind;
    union {
        struct nlpd_op_matmul matmul;
        struct nlpd_op_bias_act bias_act;
        struct nlpd_op_layer_norm layer_norm;
        struct nlpd_op_softmax softmax;
        struct nlpd_op_attention attention;
        struct nlpd_op_embed embed;
        struct nlpd_op_attention_kv attention_kv;
        struct nlpd_op_gather_rows gather_rows;
        struct nlpd_op_attention_rel attention_rel;
        struct nlpd_op_log_softmax_topk topk;
    } u;
};

/* ---- backends ---- */
/* Opaque here: backends themselves are written against nlpd_backend.h (the vtable), which only kernels/ includes. */
struct nlpd_backend;

/* A block of backend memory; ptr is a backend address (host memory for the CPU backend). */
struct nlpd_buffer {
    struct nlpd_backend *backend;
    void *ptr;
    size_t size;
};

/* Backend names: the one table behind kernels.backend, --backend and the backend constructors. */
enum nlpd_backend_kind {
    NLPD_BACKEND_AUTO = 0, /* CUDA when it works, else the CPU */
    NLPD_BACKEND_CPU,
    NLPD_BACKEND_CUDA,
    NLPD_BACKEND_KIND_COUNT
};
/* "auto" | "cpu" | "cuda" -> enum nlpd_backend_kind; -1 when unknown (NULL included). */
int nlpd_backend_kind_parse(const char *name);
const char *nlpd_backend_kind_name(enum nlpd_backend_kind kind);
/* "auto, cpu, cuda", for messages. */
const char *nlpd_backend_kind_list(void);

/* Which library runs the CPU backend's fp32 matrix products (bf16 and int8 always run on oneDNN). */
enum nlpd_cpu_gemm {
    NLPD_CPU_GEMM_AUTO = 0, /* per shape, by what was measured faster (README "Performance") */
    NLPD_CPU_GEMM_OPENBLAS,
    NLPD_CPU_GEMM_ONEDNN,
};
/* "auto" | "openblas" | "onednn" -> enum nlpd_cpu_gemm; -1 when unknown. */
int nlpd_cpu_gemm_parse(const char *name);
const char *nlpd_cpu_gemm_name(enum nlpd_cpu_gemm g);

struct nlpd_backend_opts {
    const char *name;      /* "auto" | "cpu" | "cuda"; NULL = the process default (nlpd_kernels_set_defaults) */
    int threads;           /* CPU: 0 = online CPUs */
    int device;            /* CUDA device ordinal */
    enum nlpd_dtype dtype; /* precision of matrix products: fp16/bf16 on CUDA, bf16/int8 on the CPU */
    int dtype_strict;      /* 1: a dtype this machine cannot run is an error; 0: fp32 instead, said in be->reason */
    enum nlpd_cpu_gemm cpu_gemm; /* CPU fp32 products */
    size_t arena_bytes;          /* CUDA scratch arena; 0 = $NLPD_CUDA_ARENA_MB or 256 MiB */
    /* The ops the caller's model runs (NULL = any): "auto" takes the CPU backend when CUDA lacks one of them (the
     * logged reason says which), a backend named for one that lacks one is an error. */
    const enum nlpd_op_kind *ops;
    int n_ops;
};

/* The process defaults used when a backend is created without a name (stages, `nlpd infer`): the daemon sets
 * them from the kernels section of its config. Initially "auto", device 0, dtype auto. name NULL keeps the name. */
void nlpd_kernels_set_defaults(const char *name, int device, enum nlpd_dtype dtype);
/* kernels.cpu_gemm, the process default of nlpd_backend_opts.cpu_gemm (initially auto). */
void nlpd_kernels_set_cpu_gemm(enum nlpd_cpu_gemm g);
/* Fills o with the process defaults (name, device, dtype, cpu_gemm; threads 0, dtype_strict 0). */
void nlpd_backend_opts_default(struct nlpd_backend_opts *o);
/* Called with one line ("kernels: backend cuda (...)") for each distinct backend choice (a choice already said is
 * not repeated; setting a logger starts afresh); NULL = silent. */
void nlpd_kernels_set_logger(void (*fn)(const char *line));

/* "cpu": the CPU backend. "cuda": loads libnlpd_cuda.so (next to the executable, then $NLPD_LIBDIR, then the
 * install lib dir) and opens o->device; a clear error when the .so, the CUDA libraries, the driver or the device
 * is missing. "auto": CUDA when that works, else the CPU backend (the reason is in be->reason, and logged). */
struct nlpd_backend *nlpd_backend_new_opts(const struct nlpd_backend_opts *o, struct nlpd_error *err);
/* name: "auto" | "cpu" | "cuda" | NULL (the process default), with the default device and dtype. threads:
 * 0 = online CPUs. OpenBLAS's thread count is process-wide, so the last CPU backend created sets it. */
struct nlpd_backend *nlpd_backend_new(const char *name, int threads, struct nlpd_error *err);
struct nlpd_backend *nlpd_backend_cpu_new(int threads, struct nlpd_error *err);
/* The CPU backend with o->threads, o->dtype (see the top of this file) and o->cpu_gemm. */
struct nlpd_backend *nlpd_backend_cpu_new_opts(const struct nlpd_backend_opts *o, struct nlpd_error *err);
/* The dtype a backend computes weight products in (fp32 after a fallback). */
enum nlpd_dtype nlpd_backend_dtype(const struct nlpd_backend *be);
/* The activation type the backend's ops accept besides fp32 (see struct nlpd_op_matmul): fp32 for the CPU
 * backend; the CUDA backend's fp16/bf16 when it keeps activations in half precision. */
enum nlpd_dtype nlpd_backend_act_dtype(const struct nlpd_backend *be);
void nlpd_backend_free(struct nlpd_backend *be);
/* be->reason. */
const char *nlpd_backend_reason(const struct nlpd_backend *be);
/* 1 when the backend runs ops of this kind (nlpd_backend_run refuses the others). */
int nlpd_backend_supports(const struct nlpd_backend *be, enum nlpd_op_kind kind);
/* "matmul", "attention_rel", ...; "unknown" out of range. */
const char *nlpd_op_kind_name(enum nlpd_op_kind kind);

/* Thin wrappers over the vtable. */
int nlpd_backend_alloc(struct nlpd_backend *be, size_t size, struct nlpd_buffer *out, struct nlpd_error *err);
/* A weight buffer (alloc_weights, or alloc when the backend has none). */
int nlpd_backend_alloc_weights(struct nlpd_backend *be, size_t size, struct nlpd_buffer *out, struct nlpd_error *err);
/* upload/download with err: what failed, in the backend's words (a download also reports the calling thread's
 * device-side errors, see nlpd_backend.h). The forms without err log that message through the kernels logger. */
int nlpd_backend_upload_err(struct nlpd_buffer *buf, size_t offset, const void *src, size_t n, struct nlpd_error *err);
int nlpd_backend_download_err(const struct nlpd_buffer *buf, size_t offset, void *dst, size_t n,
                              struct nlpd_error *err);
int nlpd_backend_upload(struct nlpd_buffer *buf, size_t offset, const void *src, size_t n);
int nlpd_backend_download(const struct nlpd_buffer *buf, size_t offset, void *dst, size_t n);
/* rows of width bytes from src (rows spitch bytes apart) to buf at offset (rows dpitch bytes apart), in one copy
 * where the backend can (CUDA: cudaMemcpy2DAsync through staging); width <= dpitch and width <= spitch. A weight
 * loader's strided tensors (a fused [q|k|v] projection) then cost a copy per tensor, not per row. */
int nlpd_backend_upload_2d(struct nlpd_buffer *buf, size_t offset, size_t dpitch, const void *src, size_t spitch,
                           size_t width, size_t rows, struct nlpd_error *err);
int nlpd_backend_run(struct nlpd_backend *be, const struct nlpd_op *op, struct nlpd_error *err);
int nlpd_backend_sync(struct nlpd_backend *be, struct nlpd_error *err);

/* Graph regions: the ops the calling thread runs on be between graph_begin and graph_end form one replayable
 * unit. The CUDA backend records them and, at graph_end, launches a CUDA graph captured from the same op list
 * earlier (descriptors compared byte for byte, addresses included; a small per-thread cache), or captures one,
 * so a forward pass costs one launch instead of one per op; NLPD_CUDA_GRAPHS=0 runs the ops one by one. The CPU
 * backend runs ops as they come. Rules, the same on every backend:
 *   - regions do not nest, and a thread has at most one open;
 *   - no download or sync inside a region (refused with NLPD_EINVAL): results exist only after graph_end;
 *   - an upload inside a region is allowed only before the first op of the region that reads its destination
 *     (recorded ops run at graph_end, after every upload of the region);
 *   - any error inside the region (a refused call, a failing run) discards it: the batch is abandoned, and the
 *     next graph_begin starts afresh. graph_end reports what the recorded ops found, as run would have;
 *     device-side errors (bad ids) still come from the next download or sync, in the eager run's words. */
int nlpd_backend_graph_begin(struct nlpd_backend *be, struct nlpd_error *err);
int nlpd_backend_graph_end(struct nlpd_backend *be, struct nlpd_error *err);

/* Counters since the backend was created (all threads), for tests and benchmarks. */
struct nlpd_backend_stats {
    unsigned long long upload_copies;       /* host-to-device copy commands queued by uploads (CUDA) */
    unsigned long long graph_launches;      /* regions replayed from a cached graph */
    unsigned long long graph_captures;      /* regions captured into a new graph (then launched) */
    unsigned long long graph_eager;         /* regions run op by op: graphs off, or nothing capturable */
    unsigned long long graph_evictions;     /* cached graphs dropped for a newer one (LRU) */
    unsigned long long graph_invalidations; /* cached graphs dropped because a buffer was freed */
};
/* Zeros for a backend without counters (the CPU backend). */
void nlpd_backend_stats(const struct nlpd_backend *be, struct nlpd_backend_stats *out);
void nlpd_backend_buffer_free(struct nlpd_buffer *buf);
const char *nlpd_backend_name(const struct nlpd_backend *be);
int nlpd_backend_threads(const struct nlpd_backend *be);

/* Which SIMD path the CPU kernels picked at run time ("avx2+fma" or "scalar"); NLPD_KERNELS_SIMD=scalar
 * in the environment forces the scalar path (for tests). */
const char *nlpd_kernels_cpu_simd(void);
/* The ISA oneDNN dispatches to here ("avx512_core_bf16", ...; DNNL_MAX_CPU_ISA lowers it), and whether dtype's
 * CPU products run on this machine (0 with the reason in why). */
const char *nlpd_kernels_onednn_isa(void);
int nlpd_kernels_cpu_supports(enum nlpd_dtype dtype, char *why, size_t n);

/* The CPU backend's OpenMP threads (oneDNN, element-wise kernels) wait passively between parallel regions: on a
 * machine with other work, spinning waiters took a 2-thread BERT forward from 0.1 s to 2 s (README "Performance").
 * libgomp reads OMP_WAIT_POLICY only when it loads, so a program calls this first thing in main(): when
 * OMP_WAIT_POLICY is unset it sets "passive" and re-executes itself (/proc/self/exe) with the same argv; it
 * returns when nothing needed doing or the re-exec failed. OMP_WAIT_POLICY=active keeps spinning. */
void nlpd_kernels_omp_env(char **argv);

/* Host helper for decoding: log(sum(exp(x))) over n floats (max-shifted; -inf when every x is -inf; NaN entries
 * are ignored by the max and make the sum NaN). Vectorised with the CPU kernels' exp. */
float nlpd_kernels_logsumexp(const float *x, int n);

#endif
