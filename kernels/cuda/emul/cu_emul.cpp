/* The host emulator's runtime (see cu_emul.h): fibers for a block's threads, launches, memory, streams, events,
 * stream capture and graphs. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <ucontext.h>

#include <map>
#include <memory>
#include <set>
#include <vector>

#include "cuda_runtime.h"

/* ------------------------------------------------------------------ fibers ---- */

enum { F_READY, F_WAIT_BLOCK, F_WAIT_WARP, F_DONE };

#define STACK_BYTES ((size_t)256 << 10)
#define MAX_THREADS 1024

struct fiber {
    ucontext_t ctx;
    cu_emul_thread t;
    int state;
};

struct block_state {
    cu_emul_block_info info;
    int n;
    fiber *f;
    ucontext_t sched;
    const std::function<void()> *fn;
    unsigned char warp_slots[MAX_THREADS / 32][32][8];
    int block_slots[MAX_THREADS];
    unsigned char *dyn; /* the launch's dynamic shared memory, 128-byte aligned as on the device */
};

static thread_local block_state *tl_block;
static thread_local fiber *tl_fiber;
static thread_local std::vector<char *> tl_stacks;
static thread_local std::vector<fiber> tl_fibers;

cu_emul_thread *cu_emul_self(void)
{
    if (!tl_fiber) {
        fprintf(stderr, "cuda emulator: device code called outside a kernel\n");
        abort();
    }
    return &tl_fiber->t;
}

const cu_emul_block_info *cu_emul_block(void)
{
    return &tl_block->info;
}

void *cu_emul_warp_slot(int lane)
{
    return tl_block->warp_slots[tl_fiber->t.linear >> 5][lane];
}

int *cu_emul_block_slot(int linear)
{
    return &tl_block->block_slots[linear];
}

void *cu_emul_dyn_shared(void)
{
    return tl_block->dyn;
}

static void wait_as(int state)
{
    fiber *me = tl_fiber;
    me->state = state;
    swapcontext(&me->ctx, &tl_block->sched);
}

void cu_emul_sync_block(void)
{
    wait_as(F_WAIT_BLOCK);
}

void cu_emul_sync_warp(void)
{
    wait_as(F_WAIT_WARP);
}

static void fiber_entry(void)
{
    (*tl_block->fn)();
    tl_fiber->state = F_DONE; /* uc_link returns to the scheduler */
}

static char *stack_for(int i)
{
    while ((int)tl_stacks.size() <= i) {
        void *p = mmap(NULL, STACK_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) {
            fprintf(stderr, "cuda emulator: cannot map a fiber stack\n");
            abort();
        }
        tl_stacks.push_back((char *)p);
    }
    return tl_stacks[(size_t)i];
}

/* Releases the threads whose barrier is complete; 0 when none could be released (a deadlock). */
static int release(block_state *b)
{
    int released = 0, live = 0, at_block = 0;
    for (int w = 0; w * 32 < b->n; w++) {
        int lo = w * 32, hi = lo + 32 < b->n ? lo + 32 : b->n, waiting = 0, alive = 0;
        for (int i = lo; i < hi; i++) {
            alive += b->f[i].state != F_DONE;
            waiting += b->f[i].state == F_WAIT_WARP;
        }
        if (waiting && waiting == alive) {
            for (int i = lo; i < hi; i++)
                if (b->f[i].state == F_WAIT_WARP)
                    b->f[i].state = F_READY;
            released = 1;
        }
    }
    if (released)
        return 1;
    for (int i = 0; i < b->n; i++) {
        live += b->f[i].state != F_DONE;
        at_block += b->f[i].state == F_WAIT_BLOCK;
    }
    /* strict: a block barrier completes only when every thread of the block waits at it; a thread that returned
     * before it leaves it undefined on the device (it hangs or misbehaves), so that is a deadlock here too */
    if (live && at_block == live && live == b->n) {
        for (int i = 0; i < b->n; i++)
            if (b->f[i].state == F_WAIT_BLOCK)
                b->f[i].state = F_READY;
        return 1;
    }
    return 0;
}

static void run_block(block_state *b)
{
    if ((int)tl_fibers.size() < b->n)
        tl_fibers.resize((size_t)b->n);
    b->f = tl_fibers.data();
    const dim3 &bd = b->info.bdim;
    for (int i = 0; i < b->n; i++) {
        fiber *f = &b->f[i];
        f->state = F_READY;
        f->t.linear = i;
        f->t.tid.x = (unsigned)i % bd.x;
        f->t.tid.y = ((unsigned)i / bd.x) % bd.y;
        f->t.tid.z = (unsigned)i / (bd.x * bd.y);
        getcontext(&f->ctx);
        f->ctx.uc_stack.ss_sp = stack_for(i);
        f->ctx.uc_stack.ss_size = STACK_BYTES;
        f->ctx.uc_link = &b->sched;
        makecontext(&f->ctx, fiber_entry, 0);
    }
    block_state *outer_b = tl_block;
    fiber *outer_f = tl_fiber;
    tl_block = b;
    for (;;) {
        int ran = 0, done = 0;
        for (int i = 0; i < b->n; i++) {
            if (b->f[i].state != F_READY)
                continue;
            tl_fiber = &b->f[i];
            swapcontext(&b->sched, &b->f[i].ctx);
            ran = 1;
        }
        for (int i = 0; i < b->n; i++)
            done += b->f[i].state == F_DONE;
        if (done == b->n)
            break;
        if (!release(b) && !ran) {
            fprintf(stderr,
                    "cuda emulator: emulated kernel deadlock in block (%u,%u,%u): threads wait at barriers that "
                    "cannot complete (a __syncthreads or *_sync call not reached by all threads)\n",
                    b->info.bid.x, b->info.bid.y, b->info.bid.z);
            abort();
        }
    }
    tl_block = outer_b;
    tl_fiber = outer_f;
}

/* --------------------------------------------------------- errors, devices ---- */

static thread_local cudaError_t tl_last = cudaSuccess;
static unsigned long long n_launches, n_graph_launches;

static cudaError_t fail(cudaError_t e)
{
    tl_last = e;
    return e;
}

const char *cudaGetErrorName(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInitializationError: return "cudaErrorInitializationError";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorStreamCaptureWrongThread: return "cudaErrorStreamCaptureWrongThread";
    case cudaErrorStreamCaptureImplicit: return "cudaErrorStreamCaptureImplicit";
    }
    return "cudaErrorUnknown";
}

const char *cudaGetErrorString(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    default: return cudaGetErrorName(e);
    }
}

cudaError_t cudaGetLastError(void)
{
    cudaError_t e = tl_last;
    tl_last = cudaSuccess;
    return e;
}

cudaError_t cudaPeekAtLastError(void)
{
    return tl_last;
}

static int n_devices(void)
{
    const char *v = getenv("NLPD_CU_EMUL_DEVICES");
    return v && *v ? atoi(v) : 1;
}

static thread_local int tl_device;

cudaError_t cudaGetDeviceCount(int *n)
{
    *n = n_devices();
    return *n > 0 ? cudaSuccess : fail(cudaErrorNoDevice);
}

cudaError_t cudaSetDevice(int d)
{
    if (d < 0 || d >= n_devices())
        return fail(cudaErrorInvalidDevice);
    tl_device = d;
    return cudaSuccess;
}

cudaError_t cudaGetDevice(int *d)
{
    *d = tl_device;
    return cudaSuccess;
}

#define EMUL_MEM ((size_t)16 << 30)

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int d)
{
    if (d < 0 || d >= n_devices())
        return fail(cudaErrorInvalidDevice);
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "nlpd CUDA host emulator");
    p->totalGlobalMem = EMUL_MEM;
    p->sharedMemPerBlock = 48 << 10;
    p->sharedMemPerBlockOptin = 227 << 10;
    p->regsPerBlock = 65536;
    p->warpSize = 32;
    p->maxThreadsPerBlock = 1024;
    p->maxThreadsDim[0] = p->maxThreadsDim[1] = 1024;
    p->maxThreadsDim[2] = 64;
    p->maxGridSize[0] = 0x7fffffff;
    p->maxGridSize[1] = p->maxGridSize[2] = 65535;
    p->major = 9; /* sm_90: what the build targets */
    p->minor = 0;
    p->multiProcessorCount = 4; /* small: grid-stride loops get exercised, emulation stays quick */
    p->l2CacheSize = 50 << 20;
    return cudaSuccess;
}

cudaError_t cudaDriverGetVersion(int *v)
{
    *v = 13000;
    return cudaSuccess;
}

cudaError_t cudaRuntimeGetVersion(int *v)
{
    *v = 13000;
    return cudaSuccess;
}

/* ------------------------------------------------------------------ streams ---- */

struct cu_emul_graph {
    std::vector<std::function<void()>> work;
};
struct cu_emul_graph_exec {
    std::vector<std::function<void()>> work;
};
struct cu_emul_stream {
    int capturing, invalidated;
    cudaStreamCaptureMode mode;
    pthread_t owner;
    cu_emul_graph *graph;
};
struct cu_emul_event {
    int recorded;
};

static cu_emul_stream legacy_stream;
static thread_local int tl_captures; /* captures this thread began in global or thread-local mode */

static cu_emul_stream *stream_of(cudaStream_t s)
{
    return s ? s : &legacy_stream;
}

/* Work queued on s: recorded while s captures, else run now (everything runs in queue order). */
static cudaError_t enqueue(cudaStream_t s, std::function<void()> fn)
{
    cu_emul_stream *st = stream_of(s);
    if (st->capturing) {
        if (!pthread_equal(st->owner, pthread_self()) && st->mode != cudaStreamCaptureModeRelaxed) {
            st->invalidated = 1;
            return fail(cudaErrorStreamCaptureWrongThread);
        }
        st->graph->work.push_back(std::move(fn));
        return cudaSuccess;
    }
    fn();
    return cudaSuccess;
}

/* An API that is not allowed while this thread captures (synchronisation, allocation): the capture is
 * invalidated, as the driver does. */
static int capture_forbids(void)
{
    return tl_captures > 0;
}

static std::set<cu_emul_stream *> capturing_streams;
static pthread_mutex_t cap_mu = PTHREAD_MUTEX_INITIALIZER;

static cudaError_t unsafe_during_capture(void)
{
    if (!capture_forbids())
        return cudaSuccess;
    pthread_mutex_lock(&cap_mu);
    for (cu_emul_stream *st : capturing_streams)
        if (pthread_equal(st->owner, pthread_self()))
            st->invalidated = 1;
    pthread_mutex_unlock(&cap_mu);
    return fail(cudaErrorStreamCaptureUnsupported);
}

cudaError_t cudaStreamCreate(cudaStream_t *s)
{
    return cudaStreamCreateWithFlags(s, 0);
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags)
{
    (void)flags;
    *s = new cu_emul_stream();
    return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t s)
{
    if (!s)
        return fail(cudaErrorInvalidResourceHandle);
    if (s->capturing)
        return fail(cudaErrorStreamCaptureUnsupported);
    delete s;
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t s)
{
    if (stream_of(s)->capturing) {
        stream_of(s)->invalidated = 1;
        return fail(cudaErrorStreamCaptureUnsupported);
    }
    return unsafe_during_capture();
}

cudaError_t cudaStreamQuery(cudaStream_t s)
{
    return cudaStreamSynchronize(s);
}

cudaError_t cudaDeviceSynchronize(void)
{
    return unsafe_during_capture();
}

cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags)
{
    (void)s;
    (void)flags;
    return e ? cudaSuccess : fail(cudaErrorInvalidResourceHandle);
}

cudaError_t cudaEventCreate(cudaEvent_t *e)
{
    return cudaEventCreateWithFlags(e, 0);
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags)
{
    (void)flags;
    *e = new cu_emul_event();
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s)
{
    if (!e)
        return fail(cudaErrorInvalidResourceHandle);
    (void)s;
    e->recorded = 1;
    return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t e)
{
    if (!e)
        return fail(cudaErrorInvalidResourceHandle);
    return unsafe_during_capture();
}

cudaError_t cudaEventQuery(cudaEvent_t e)
{
    return cudaEventSynchronize(e);
}

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b)
{
    if (!a || !b)
        return fail(cudaErrorInvalidResourceHandle);
    *ms = 0.0f;
    return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t e)
{
    delete e;
    return cudaSuccess;
}

/* ------------------------------------------------------------------ capture ---- */

cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode)
{
    if (!s) /* the legacy stream cannot capture */
        return fail(cudaErrorStreamCaptureUnsupported);
    if (s->capturing)
        return fail(cudaErrorStreamCaptureUnsupported);
    s->capturing = 1;
    s->invalidated = 0;
    s->mode = mode;
    s->owner = pthread_self();
    s->graph = new cu_emul_graph();
    if (mode != cudaStreamCaptureModeRelaxed)
        tl_captures++;
    pthread_mutex_lock(&cap_mu);
    capturing_streams.insert(s);
    pthread_mutex_unlock(&cap_mu);
    return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *g)
{
    *g = NULL;
    if (!s || !s->capturing)
        return fail(cudaErrorInvalidValue);
    if (!pthread_equal(s->owner, pthread_self()))
        return fail(cudaErrorStreamCaptureWrongThread);
    s->capturing = 0;
    if (s->mode != cudaStreamCaptureModeRelaxed)
        tl_captures--;
    pthread_mutex_lock(&cap_mu);
    capturing_streams.erase(s);
    pthread_mutex_unlock(&cap_mu);
    if (s->invalidated) {
        delete s->graph;
        s->graph = NULL;
        return fail(cudaErrorStreamCaptureInvalidated);
    }
    *g = s->graph;
    s->graph = NULL;
    return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t s, cudaStreamCaptureStatus *st)
{
    cu_emul_stream *x = stream_of(s);
    *st = !x->capturing    ? cudaStreamCaptureStatusNone
          : x->invalidated ? cudaStreamCaptureStatusInvalidated
                           : cudaStreamCaptureStatusActive;
    return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t *x, cudaGraph_t g, unsigned long long flags)
{
    (void)flags;
    if (!g)
        return fail(cudaErrorInvalidValue);
    *x = new cu_emul_graph_exec();
    (*x)->work = g->work;
    return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t x, cudaStream_t s)
{
    if (!x)
        return fail(cudaErrorInvalidValue);
    __atomic_add_fetch(&n_graph_launches, 1, __ATOMIC_RELAXED);
    std::vector<std::function<void()>> *w = &x->work;
    return enqueue(s, [w]() {
        for (auto &fn : *w)
            fn();
    });
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t x)
{
    delete x;
    return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t g)
{
    delete g;
    return cudaSuccess;
}

/* ------------------------------------------------------------------- memory ---- */

static pthread_mutex_t mem_mu = PTHREAD_MUTEX_INITIALIZER;
static std::map<uintptr_t, size_t> device_allocs; /* the sizes asked for: a copy into the rounding is caught */
static std::map<uintptr_t, size_t> device_rounded;
static std::map<uintptr_t, size_t> pinned_allocs;
static size_t device_used;

#define POISON_MAX ((size_t)64 << 20)

cudaError_t cudaMalloc(void **p, size_t n)
{
    *p = NULL;
    cudaError_t e = unsafe_during_capture();
    if (e != cudaSuccess)
        return e;
    size_t r = (n + 255) & ~(size_t)255;
    if (r < n || r == 0)
        r = 256;
    pthread_mutex_lock(&mem_mu);
    int room = device_used + r <= EMUL_MEM && r <= EMUL_MEM;
    if (room)
        device_used += r;
    pthread_mutex_unlock(&mem_mu);
    if (!room)
        return fail(cudaErrorMemoryAllocation);
    void *m = aligned_alloc(256, r);
    if (!m) {
        pthread_mutex_lock(&mem_mu);
        device_used -= r;
        pthread_mutex_unlock(&mem_mu);
        return fail(cudaErrorMemoryAllocation);
    }
    /* device memory starts undefined: NaN floats and -1 ints make a read before a write visible */
    memset(m, 0xff, r < POISON_MAX ? r : POISON_MAX);
    pthread_mutex_lock(&mem_mu);
    device_allocs[(uintptr_t)m] = n ? n : 1;
    device_rounded[(uintptr_t)m] = r;
    pthread_mutex_unlock(&mem_mu);
    *p = m;
    return cudaSuccess;
}

cudaError_t cudaFree(void *p)
{
    if (!p)
        return cudaSuccess;
    cudaError_t e = unsafe_during_capture();
    if (e != cudaSuccess)
        return e;
    pthread_mutex_lock(&mem_mu);
    auto it = device_allocs.find((uintptr_t)p);
    int ok = it != device_allocs.end();
    if (ok) {
        device_used -= device_rounded[(uintptr_t)p];
        device_rounded.erase((uintptr_t)p);
        device_allocs.erase(it);
    }
    pthread_mutex_unlock(&mem_mu);
    if (!ok)
        return fail(cudaErrorInvalidValue);
    free(p);
    return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t *free_b, size_t *total_b)
{
    pthread_mutex_lock(&mem_mu);
    *free_b = EMUL_MEM - device_used;
    pthread_mutex_unlock(&mem_mu);
    *total_b = EMUL_MEM;
    return cudaSuccess;
}

cudaError_t cudaHostAlloc(void **p, size_t n, unsigned flags)
{
    (void)flags;
    *p = malloc(n ? n : 1);
    if (!*p)
        return fail(cudaErrorMemoryAllocation);
    pthread_mutex_lock(&mem_mu);
    pinned_allocs[(uintptr_t)*p] = n;
    pthread_mutex_unlock(&mem_mu);
    return cudaSuccess;
}

cudaError_t cudaMallocHost(void **p, size_t n)
{
    return cudaHostAlloc(p, n, 0);
}

cudaError_t cudaFreeHost(void *p)
{
    if (!p)
        return cudaSuccess;
    pthread_mutex_lock(&mem_mu);
    size_t erased = pinned_allocs.erase((uintptr_t)p);
    pthread_mutex_unlock(&mem_mu);
    if (!erased)
        return fail(cudaErrorInvalidValue);
    free(p);
    return cudaSuccess;
}

static int in_map(const std::map<uintptr_t, size_t> &m, const void *p, size_t n)
{
    uintptr_t a = (uintptr_t)p;
    pthread_mutex_lock(&mem_mu);
    auto it = m.upper_bound(a);
    int ok = it != m.begin() && (--it, a >= it->first && a + n <= it->first + it->second);
    pthread_mutex_unlock(&mem_mu);
    return ok;
}

/* A device range of n bytes at p lies inside one allocation (a copy past its end is cudaErrorInvalidValue). */
static int device_range(const void *p, size_t n)
{
    return in_map(device_allocs, p, n);
}

static cudaError_t check_copy(void *dst, const void *src, size_t n, cudaMemcpyKind kind, int async_capture)
{
    int d_dev = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
    int s_dev = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
    if (kind == cudaMemcpyDefault) {
        d_dev = device_range(dst, n);
        s_dev = device_range(src, n);
    }
    if ((d_dev && !device_range(dst, n)) || (s_dev && !device_range(src, n)))
        return fail(cudaErrorInvalidValue);
    /* a captured copy replays from the same host address: only pinned memory may be captured */
    if (async_capture && ((!d_dev && !in_map(pinned_allocs, dst, n)) || (!s_dev && !in_map(pinned_allocs, src, n))))
        return fail(cudaErrorStreamCaptureUnsupported);
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind kind)
{
    cudaError_t e = unsafe_during_capture();
    if (e == cudaSuccess && n)
        e = check_copy(dst, src, n, kind, 0);
    if (e == cudaSuccess && n)
        memmove(dst, src, n);
    return e;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind kind, cudaStream_t s)
{
    if (!n)
        return cudaSuccess;
    cudaError_t e = check_copy(dst, src, n, kind, stream_of(s)->capturing);
    if (e != cudaSuccess) {
        if (stream_of(s)->capturing)
            stream_of(s)->invalidated = 1;
        return e;
    }
    return enqueue(s, [dst, src, n]() { memmove(dst, src, n); });
}

cudaError_t cudaMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width, size_t height,
                              cudaMemcpyKind kind, cudaStream_t s)
{
    if (!width || !height)
        return cudaSuccess;
    if (width > dpitch || width > spitch)
        return fail(cudaErrorInvalidValue);
    size_t dspan = dpitch * (height - 1) + width, sspan = spitch * (height - 1) + width;
    int cap = stream_of(s)->capturing;
    cudaError_t e = check_copy(dst, src, dspan < sspan ? dspan : sspan, kind, cap);
    if (e == cudaSuccess) {
        int d_dev = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
        int s_dev = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
        if ((d_dev && !device_range(dst, dspan)) || (s_dev && !device_range(src, sspan)))
            e = fail(cudaErrorInvalidValue);
    }
    if (e != cudaSuccess)
        return e;
    return enqueue(s, [=]() {
        for (size_t r = 0; r < height; r++)
            memmove((char *)dst + r * dpitch, (const char *)src + r * spitch, width);
    });
}

cudaError_t cudaMemcpy2D(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width, size_t height,
                         cudaMemcpyKind kind)
{
    cudaError_t e = unsafe_during_capture();
    return e != cudaSuccess ? e : cudaMemcpy2DAsync(dst, dpitch, src, spitch, width, height, kind, 0);
}

cudaError_t cudaMemset(void *p, int v, size_t n)
{
    cudaError_t e = unsafe_during_capture();
    return e != cudaSuccess ? e : cudaMemsetAsync(p, v, n, 0);
}

cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t s)
{
    if (!n)
        return cudaSuccess;
    if (!device_range(p, n))
        return fail(cudaErrorInvalidValue);
    return enqueue(s, [p, v, n]() { memset(p, v, n); });
}

cudaError_t cudaMemset2DAsync(void *p, size_t pitch, int v, size_t width, size_t height, cudaStream_t s)
{
    if (!width || !height)
        return cudaSuccess;
    if (width > pitch || !device_range(p, pitch * (height - 1) + width))
        return fail(cudaErrorInvalidValue);
    return enqueue(s, [=]() {
        for (size_t r = 0; r < height; r++)
            memset((char *)p + r * pitch, v, width);
    });
}

/* ------------------------------------------------------------------ launches ---- */

static pthread_mutex_t attr_mu = PTHREAD_MUTEX_INITIALIZER;
static std::map<const void *, int> max_dyn_shared;

cudaError_t cu_emul_func_set_attribute(const void *kernel, cudaFuncAttribute a, int v)
{
    if (a == cudaFuncAttributeMaxDynamicSharedMemorySize) {
        if (v < 0 || v > (227 << 10))
            return fail(cudaErrorInvalidValue);
        pthread_mutex_lock(&attr_mu);
        max_dyn_shared[kernel] = v;
        pthread_mutex_unlock(&attr_mu);
    }
    return cudaSuccess;
}

static void run_grid(dim3 grid, dim3 block, size_t shmem, const std::function<void()> &fn)
{
    block_state *b = new block_state();
    b->n = (int)(block.x * block.y * block.z);
    b->fn = &fn;
    b->info.bdim = block;
    b->info.gdim = grid;
    b->dyn = shmem ? (unsigned char *)aligned_alloc(128, (shmem + 127) & ~(size_t)127) : NULL;
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                b->info.bid = uint3{x, y, z};
                if (shmem)
                    memset(b->dyn, 0xff, shmem); /* shared memory starts undefined */
                run_block(b);
            }
    free(b->dyn);
    delete b;
}

cudaError_t cu_emul_submit(const void *kernel, dim3 grid, dim3 block, size_t shmem, cudaStream_t stream,
                           std::function<void()> fn)
{
    unsigned long long threads = (unsigned long long)block.x * block.y * block.z;
    if (!threads || threads > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64 || !grid.x || !grid.y ||
        !grid.z || grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535) {
        return fail(cudaErrorInvalidConfiguration);
    }
    size_t limit = 48 << 10;
    pthread_mutex_lock(&attr_mu);
    auto it = max_dyn_shared.find(kernel);
    if (it != max_dyn_shared.end() && (size_t)it->second > limit)
        limit = (size_t)it->second;
    pthread_mutex_unlock(&attr_mu);
    if (shmem > limit)
        return fail(cudaErrorInvalidValue);
    __atomic_add_fetch(&n_launches, 1, __ATOMIC_RELAXED);
    std::function<void()> *held = new std::function<void()>(std::move(fn));
    std::shared_ptr<std::function<void()>> body(held);
    return enqueue(stream, [grid, block, shmem, body]() { run_grid(grid, block, shmem, *body); });
}

unsigned long long cu_emul_launch_count(void)
{
    return __atomic_load_n(&n_launches, __ATOMIC_RELAXED);
}

unsigned long long cu_emul_graph_launch_count(void)
{
    return __atomic_load_n(&n_graph_launches, __ATOMIC_RELAXED);
}
