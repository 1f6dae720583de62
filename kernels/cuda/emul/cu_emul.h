/* The CUDA host emulator: runs the CUDA backend's own sources (the .cu files of kernels/cuda, compiled by g++ with
 * -DNLPD_CU_EMUL and emul/include first on the include path) on the CPU, so CI without a GPU tests the kernels'
 * index arithmetic, masking rules, reductions and the backend's bookkeeping (contexts, error words, weight
 * shadows, stream capture) against the CPU backend. It is a test tool, not a backend: nothing here is fast.
 *
 * A launch runs its grid at once, on the calling thread, block after block. A block's threads are fibers
 * (ucontext) on that thread: a thread runs until it reaches a barrier (__syncthreads*, a warp shuffle or vote,
 * __syncwarp, a wmma *_sync call) or returns, so shared memory and the exchange of values between threads behave
 * as on the device. A barrier that can never complete (some threads wait at __syncthreads while others wait
 * at a warp barrier or a different one) aborts with "emulated kernel deadlock". Device memory is host memory;
 * streams run their work when it is queued, except while capturing, when it is recorded into a graph.
 *
 * What it cannot check: timing, the memory model between streams (everything runs in queue order), register or
 * shared-memory limits beyond the launch configuration, warp-synchronous code that relies on lockstep without
 * a *_sync call. Which API it offers: the list in /work/briefs or the README's "CUDA emulator" paragraph; the
 * headers under emul/include are the contract. */
#ifndef NLPD_CU_EMUL_H
#define NLPD_CU_EMUL_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

/* ---- device-code keywords ---- */
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__    __attribute__((noinline))
#define __align__(n)    __attribute__((aligned(n)))
#define __launch_bounds__(...)
/* shared memory: one instance per block in flight; blocks of one OS thread run one after another */
#define __shared__ static thread_local
#define __constant__

static const int warpSize = 32;

struct uint3 {
    unsigned int x, y, z;
};

struct dim3 {
    unsigned int x, y, z;
    dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz)
    {
    }
    dim3(uint3 v) : x(v.x), y(v.y), z(v.z)
    {
    }
};

/* The fiber running now (a block thread), or NULL on the host side. */
struct cu_emul_thread {
    uint3 tid;
    int linear; /* threadIdx as one number: x + y*bx + z*bx*by */
};
struct cu_emul_block_info {
    uint3 bid;
    dim3 bdim, gdim;
};
cu_emul_thread *cu_emul_self(void);
const cu_emul_block_info *cu_emul_block(void);

#define threadIdx (cu_emul_self()->tid)
#define blockIdx  (cu_emul_block()->bid)
#define blockDim  (cu_emul_block()->bdim)
#define gridDim   (cu_emul_block()->gdim)

/* barriers (emul/cu_emul.cpp) */
void cu_emul_sync_block(void);
void cu_emul_sync_warp(void);
/* the calling thread's lane exchange slot of 8 bytes, and its partner's after a warp barrier */
void *cu_emul_warp_slot(int lane);
int *cu_emul_block_slot(int linear);
void *cu_emul_dyn_shared(void);

static inline void __syncthreads(void)
{
    cu_emul_sync_block();
}
static inline void __syncwarp(unsigned mask = 0xffffffffu)
{
    (void)mask;
    cu_emul_sync_warp();
}

static inline int cu_emul_block_reduce(int pred, int op)
{
    const cu_emul_block_info *b = cu_emul_block();
    int n = (int)(b->bdim.x * b->bdim.y * b->bdim.z), me = cu_emul_self()->linear;
    *cu_emul_block_slot(me) = pred;
    cu_emul_sync_block();
    int r = op == 1 ? 1 : 0;
    for (int i = 0; i < n; i++) {
        int v = *cu_emul_block_slot(i) != 0;
        r = op == 0 ? (r | v) : op == 1 ? (r & v) : r + v;
    }
    cu_emul_sync_block();
    return r;
}
static inline int __syncthreads_or(int p)
{
    return cu_emul_block_reduce(p, 0);
}
static inline int __syncthreads_and(int p)
{
    return cu_emul_block_reduce(p, 1);
}
static inline int __syncthreads_count(int p)
{
    return cu_emul_block_reduce(p, 2);
}

/* warp shuffles: every lane publishes its value, a warp barrier, each reads its source lane, a barrier again */
template <typename T> static inline T cu_emul_shfl(T v, int src_of_lane_fn_kind, int arg, int width)
{
    static_assert(sizeof(T) <= 8, "shuffle of a type over 8 bytes");
    const int lane = cu_emul_self()->linear & 31;
    memcpy(cu_emul_warp_slot(lane), &v, sizeof v);
    cu_emul_sync_warp();
    int base = lane & ~(width - 1), src;
    switch (src_of_lane_fn_kind) {
    case 0: src = base + (arg & (width - 1)); break;                      /* __shfl_sync */
    case 1: src = lane ^ arg; break;                                      /* xor */
    case 2: src = (lane - base) + arg < width ? lane + arg : lane; break; /* down */
    default: src = (lane - base) - arg >= 0 ? lane - arg : lane; break;   /* up */
    }
    T r;
    memcpy(&r, cu_emul_warp_slot(src & 31), sizeof r);
    cu_emul_sync_warp();
    return r;
}
template <typename T> static inline T __shfl_sync(unsigned, T v, int src, int width = 32)
{
    return cu_emul_shfl(v, 0, src, width);
}
template <typename T> static inline T __shfl_xor_sync(unsigned, T v, int m, int width = 32)
{
    return cu_emul_shfl(v, 1, m, width);
}
template <typename T> static inline T __shfl_down_sync(unsigned, T v, unsigned d, int width = 32)
{
    return cu_emul_shfl(v, 2, (int)d, width);
}
template <typename T> static inline T __shfl_up_sync(unsigned, T v, unsigned d, int width = 32)
{
    return cu_emul_shfl(v, 3, (int)d, width);
}
static inline unsigned __ballot_sync(unsigned, int p)
{
    const int lane = cu_emul_self()->linear & 31;
    int v = p != 0;
    memcpy(cu_emul_warp_slot(lane), &v, sizeof v);
    cu_emul_sync_warp();
    unsigned r = 0;
    for (int i = 0; i < 32; i++) {
        int b;
        memcpy(&b, cu_emul_warp_slot(i), sizeof b);
        r |= (unsigned)(b != 0) << i;
    }
    cu_emul_sync_warp();
    return r;
}
static inline int __any_sync(unsigned m, int p)
{
    return __ballot_sync(m, p) != 0;
}
static inline int __all_sync(unsigned m, int p)
{
    return __ballot_sync(m, p) == 0xffffffffu;
}

/* atomics (other OS threads may run other streams' kernels at the same time) */
template <typename T> static inline T atomicAdd(T *p, T v)
{
    if constexpr (std::is_floating_point<T>::value) {
        T old = *p, next;
        do
            next = old + v;
        while (!__atomic_compare_exchange(p, &old, &next, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
        return old;
    } else {
        return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
    }
}
template <typename T> static inline T atomicMin(T *p, T v)
{
    T old = __atomic_load_n(p, __ATOMIC_SEQ_CST);
    while (v < old && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
    }
    return old;
}
template <typename T> static inline T atomicMax(T *p, T v)
{
    T old = __atomic_load_n(p, __ATOMIC_SEQ_CST);
    while (v > old && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
    }
    return old;
}
template <typename T> static inline T atomicCAS(T *p, T cmp, T v)
{
    __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return cmp;
}
template <typename T> static inline T atomicExch(T *p, T v)
{
    return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST);
}

/* device math that has no host name */
#define __expf(x) expf(x)
#define __logf(x) logf(x)
static inline float __fdividef(float a, float b)
{
    return a / b;
}
/* the _rn intrinsics keep the compiler from contracting into an fma; on the host -ffp-contract=off does */
static inline float __fadd_rn(float a, float b)
{
    return a + b;
}
static inline float __fmul_rn(float a, float b)
{
    return a * b;
}
static inline float __fmaf_rn(float a, float b, float c)
{
    return fmaf(a, b, c);
}
static inline float rsqrtf(float x)
{
    return 1.0f / sqrtf(x);
}
static inline float __saturatef(float x)
{
    return x < 0.0f ? 0.0f : x > 1.0f ? 1.0f : x;
}
static inline int __float_as_int(float f)
{
    int i;
    memcpy(&i, &f, sizeof i);
    return i;
}
static inline float __int_as_float(int i)
{
    float f;
    memcpy(&f, &i, sizeof f);
    return f;
}
static inline unsigned __float_as_uint(float f)
{
    unsigned i;
    memcpy(&i, &f, sizeof i);
    return i;
}
static inline float __uint_as_float(unsigned i)
{
    float f;
    memcpy(&f, &i, sizeof f);
    return f;
}
template <typename T> static inline T __ldg(const T *p)
{
    return *p;
}
static inline int min(int a, int b)
{
    return a < b ? a : b;
}
static inline int max(int a, int b)
{
    return a > b ? a : b;
}
static inline unsigned min(unsigned a, unsigned b)
{
    return a < b ? a : b;
}
static inline unsigned max(unsigned a, unsigned b)
{
    return a > b ? a : b;
}
static inline long long min(long long a, long long b)
{
    return a < b ? a : b;
}
static inline long long max(long long a, long long b)
{
    return a > b ? a : b;
}
static inline size_t min(size_t a, size_t b)
{
    return a < b ? a : b;
}
static inline size_t max(size_t a, size_t b)
{
    return a > b ? a : b;
}
static inline float min(float a, float b)
{
    return fminf(a, b);
}
static inline float max(float a, float b)
{
    return fmaxf(a, b);
}

/* ---- launches ---- */
typedef struct cu_emul_stream *cudaStream_t;
enum cudaError : int;

/* Checks the configuration (the sticky launch error when it is bad) and runs or records (stream capture) the
 * grid; fn runs one thread of one block. */
enum cudaError cu_emul_submit(const void *kernel, dim3 grid, dim3 block, size_t shmem, cudaStream_t stream,
                              std::function<void()> fn);

template <typename... P> struct cu_emul_launcher {
    void (*kernel)(P...);
    dim3 grid, block;
    size_t shmem;
    cudaStream_t stream;
    template <typename... A> void operator()(A &&...args) const
    {
        static_assert(sizeof...(A) == sizeof...(P), "kernel launched with the wrong number of arguments");
        auto k = kernel;
        /* arguments are copied at launch, converted to the parameter types, as the driver does */
        std::function<void()> fn = [k, tup = std::tuple<typename std::decay<P>::type...>(
                                           static_cast<typename std::decay<P>::type>(args)...)]() {
            std::apply(k, tup);
        };
        cu_emul_submit((const void *)kernel, grid, block, shmem, stream, std::move(fn));
    }
};

template <typename... P>
static inline cu_emul_launcher<P...> cu_emul_launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t shmem,
                                                    cudaStream_t stream)
{
    return cu_emul_launcher<P...>{kernel, grid, block, shmem, stream};
}

#endif
