/* CUDA devices, streams, cuBLAS handles, the caching allocator and copies
 * across devices.  Built in every configuration; without the toolkit it
 * says there are no devices.
 *
 * Allocator: cudaMalloc and cudaFree synchronise the device and cost tens of
 * microseconds, so freed blocks are kept per device and handed out again
 * (PyTorch's caching allocator, much simplified).  Sizes are rounded (512 B
 * below 1 MiB, 2 MiB above) and a request takes the smallest free block that
 * fits without wasting more than a quarter of it, found by a binary search
 * over bins of one size (block_cache.c: a list scanned per call cost more
 * than the kernels of a decode step).  Every kernel of a device
 * runs on that device's one stream, so a block freed after its last kernel
 * was queued is safe to reuse by the next kernel queued.  When cudaMalloc
 * fails the cache is emptied and the call retried once. */
#include "attnswap/cuda.h"

#include <stdio.h>
#include <string.h>

#include "attnswap/error.h"

#ifndef ATTNSWAP_HAVE_CUDA

int as_cuda_built(void) { return 0; }
int as_cuda_device_count(void) { return 0; }
int as_cuda_synchronize(int index)
{
    (void)index;
    return 0;
}
int as_cuda_memory_stats(int index, as_cuda_memory *m)
{
    (void)index;
    memset(m, 0, sizeof *m);
    return 0;
}
int as_cuda_empty_cache(void) { return 0; }
void as_cuda_usage(size_t *allocated, size_t *mallocs) { *allocated = *mallocs = 0; }
void as_cuda_reset_peak(int index) { (void)index; }
int as_cuda_profiler(int on)
{
    as_error_set("%s: CUDA is not available in this build", on ? "profiler_start" : "profiler_stop");
    return -1;
}
int as_cuda_use(const char *fn, int index)
{
    as_error_set("%s: device cuda:%d is not available: attnswap was built without CUDA", fn, index);
    return -1;
}
int as_cuda_check(const char *fn, int err)
{
    if (!err) return 0;
    as_error_set("%s: CUDA is not available in this build", fn);
    return -1;
}
int as_cublas_check(const char *fn, int status) { return as_cuda_check(fn, status); }
void *as_cuda_blas_handle(void) { return NULL; }
void *as_cuda_blaslt_handle(void) { return NULL; }
void *as_cuda_blaslt_workspace(size_t *bytes)
{
    *bytes = 0;
    return NULL;
}
void *as_cuda_current_stream(void) { return NULL; }
int as_cuda_capturing(int index)
{
    (void)index;
    return 0;
}
int64_t *as_cuda_bad_index_flag(int index)
{
    as_cuda_use("index_select", index);
    return NULL;
}

#else

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_profiler_api.h>
#include <cuda_runtime.h>
#include <pthread.h>
#include <stdlib.h>

#include "cuda_backend.h"
#include "block_cache.h"
#include "cuda_kernels.h"
#include "attnswap/storage.h"

#define MAX_DEVICES 16

/* A CUDA graph's memory (as_cuda_graph_begin): every block its capture
 * takes comes from here and goes back here, never to the device's cache, so
 * no tensor made outside the graph lands in memory that a replay writes. */
typedef struct {
    as_block_cache free_blocks;
    int device;
} graph_pool;

typedef struct {
    int ready;
    cudaStream_t stream;
    cublasHandle_t blas;
    cublasLtHandle_t blaslt; /* NULL until a product with an epilogue asks */
    void *lt_workspace;
    as_block_cache free_blocks;
    graph_pool *capture; /* the pool of the graph being captured on this device, or NULL */
    int64_t *bad_index;  /* as_cuda_bad_index_flag's record (mapped host memory), or NULL */
    as_cuda_memory mem;
} device_state;

static device_state devices[MAX_DEVICES];
static int captures; /* graphs being captured, all devices: no cudaFree, and cudaMalloc in relaxed mode */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int device_count = -1;
static int current = -1;

int as_cuda_built(void) { return 1; }

int as_cuda_device_count(void)
{
    if (device_count < 0) {
        int n = 0;
        if (cudaGetDeviceCount(&n) != cudaSuccess) {
            n = 0;
            cudaGetLastError(); /* no driver, no GPU: not an error to keep */
        }
        device_count = n > MAX_DEVICES ? MAX_DEVICES : n;
    }
    return device_count;
}

int as_cuda_check(const char *fn, int err)
{
    if (err == cudaSuccess) return 0;
    as_error_set("%s: CUDA error: %s", fn, cudaGetErrorString((cudaError_t)err));
    return -1;
}

int as_cublas_check(const char *fn, int status)
{
    if (status == CUBLAS_STATUS_SUCCESS) return 0;
    as_error_set("%s: cuBLAS error: %s", fn, cublasGetStatusString((cublasStatus_t)status));
    return -1;
}

static size_t round_size(size_t n)
{
    if (n < ((size_t)1 << 20)) return n ? (n + 511) & ~(size_t)511 : 512;
    return (n + ((size_t)2 << 20) - 1) & ~(((size_t)2 << 20) - 1);
}

static void release_block(void *p, size_t size, void *ctx)
{
    device_state *d = ctx;
    cudaFree(p);
    d->mem.reserved -= size;
}

static void release_cache(device_state *d) { as_block_cache_clear(&d->free_blocks, release_block, d); }

/* The backend's free (runtime/base/backend.h) is given no size: the real size
 * of each block handed out is kept here, by address (all devices: addresses
 * are unique across them). */
static as_live_map live;

/* cudaMalloc, also while a graph is being captured: a capture in the
 * thread-local mode refuses it as unsafe (it is not a stream operation, so
 * a replay would not repeat it), which is what the graph's pool wants: the
 * block is made once and the graph keeps it (PyTorch's allocator does the
 * same). */
static void *device_malloc(size_t size, int capturing)
{
    void *p = NULL;
    enum cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
    if (capturing) cudaThreadExchangeStreamCaptureMode(&mode);
    if (cudaMalloc(&p, size) != cudaSuccess) {
        cudaGetLastError();
        p = NULL;
    }
    if (capturing) cudaThreadExchangeStreamCaptureMode(&mode);
    return p;
}

void *as_cuda_alloc(size_t nbytes, int index)
{
    device_state *d = &devices[index];
    size_t size = round_size(nbytes), got;
    pthread_mutex_lock(&lock);
    graph_pool *pool = d->capture;
    /* in a capture: the pool's free blocks, then the device's (free, and every
     * kernel runs on the one stream, so the graph may keep one for good) */
    void *p = pool ? as_block_cache_take(&pool->free_blocks, size, &got) : NULL;
    if (!p) p = as_block_cache_take(&d->free_blocks, size, &got);
    if (p) {
        size = got;
    } else { /* the caller (as_storage_new) made index the current device */
        p = device_malloc(size, captures > 0);
        if (!p && !captures) { /* no cudaFree while a capture is open */
            release_cache(d);
            p = device_malloc(size, 0);
        }
        if (p) d->mem.reserved += size, d->mem.num_mallocs++;
    }
    if (p && as_live_map_add(&live, p, size, pool)) {
        /* out of host memory: kept as free where it would have gone (lost, if even that fails) */
        as_block_cache_put(pool ? &pool->free_blocks : &d->free_blocks, p, size);
        p = NULL;
    }
    if (p) {
        d->mem.allocated += size;
        if (d->mem.allocated > d->mem.peak_allocated) d->mem.peak_allocated = d->mem.allocated;
    }
    pthread_mutex_unlock(&lock);
    return p;
}

void as_cuda_free(void *p, int index)
{
    device_state *d = &devices[index];
    pthread_mutex_lock(&lock);
    void *owner;
    size_t size = as_live_map_remove(&live, p, &owner);
    /* a block freed while a graph is captured may be one its kernels use: it
     * stays the graph's until the graph goes (as_cuda_pool_drop) */
    graph_pool *pool = owner ? owner : d->capture;
    d->mem.allocated -= size;
    if (as_block_cache_put(pool ? &pool->free_blocks : &d->free_blocks, p, size) && !pool && !captures) {
        cudaFree(p); /* out of host memory; a graph's block (or any during a capture) is left instead */
        d->mem.reserved -= size;
    }
    pthread_mutex_unlock(&lock);
}

/* ---- graph pools (runtime/cuda/graph.c captures and replays) ---- */

void *as_cuda_pool_open(int index)
{
    graph_pool *pool = calloc(1, sizeof *pool);
    if (!pool) {
        as_error_set("graph: out of host memory");
        return NULL;
    }
    pool->device = index;
    pthread_mutex_lock(&lock);
    devices[index].capture = pool;
    captures++;
    pthread_mutex_unlock(&lock);
    return pool;
}

static void close_locked(device_state *d)
{
    if (d->capture) d->capture = NULL, captures--;
}

void as_cuda_pool_close(int index)
{
    pthread_mutex_lock(&lock);
    close_locked(&devices[index]);
    pthread_mutex_unlock(&lock);
}

static void to_device_cache(void *p, size_t size, void *ctx)
{
    device_state *d = ctx;
    if (as_block_cache_put(&d->free_blocks, p, size)) {
        cudaFree(p);
        d->mem.reserved -= size;
    }
}

/* The graph is gone: its free blocks join the device's cache, and blocks
 * still in tensors (its outputs, kept by the caller) go there when freed.
 * Every use of them is ordered on the device's one stream. */
void as_cuda_pool_drop(void *pool_)
{
    graph_pool *pool = pool_;
    if (!pool) return;
    pthread_mutex_lock(&lock);
    device_state *d = &devices[pool->device];
    if (d->capture == pool) close_locked(d);
    as_block_cache_clear(&pool->free_blocks, to_device_cache, d);
    as_live_map_disown(&live, pool);
    pthread_mutex_unlock(&lock);
    free(pool);
}

int64_t *as_cuda_bad_index_flag(int index)
{
    if (as_cuda_use("index_select", index)) return NULL;
    device_state *d = &devices[index];
    if (!d->bad_index) {
        void *h = NULL;
        if (as_cuda_check("index_select", cudaHostAlloc(&h, 2 * sizeof(int64_t), cudaHostAllocMapped))) return NULL;
        volatile int64_t *v = h;
        v[0] = -1, v[1] = 0;
        d->bad_index = h;
    }
    void *dp = NULL;
    if (as_cuda_check("index_select", cudaHostGetDevicePointer(&dp, d->bad_index, 0))) return NULL;
    return dp;
}

int as_cuda_bad_index_report(int index)
{
    volatile int64_t *v = devices[index].bad_index;
    if (!v || v[0] == -1) return 0;
    as_error_set("index_select: a CUDA graph's replay met index %lld, out of range for a dimension of size %lld "
                 "(those rows came out zero)",
                 (long long)v[0], (long long)v[1]);
    v[0] = -1;
    return -1;
}

int as_cuda_capturing(int index)
{
    pthread_mutex_lock(&lock);
    int on = index < 0 ? captures > 0 : index < MAX_DEVICES && devices[index].capture != NULL;
    pthread_mutex_unlock(&lock);
    return on;
}

/* At exit, before the CUDA runtime's own teardown (atexit runs in reverse,
 * and this is registered after the runtime started): the cache's free
 * blocks, the cuBLAS handles and the streams go back, so a leak checker
 * (compute-sanitizer --leak-check full) reports only blocks still held by
 * live tensors, which are real leaks or tensors alive at exit. */
static void shutdown_devices(void)
{
    for (int i = 0; i < MAX_DEVICES; i++) {
        device_state *d = &devices[i];
        if (!d->ready || cudaSetDevice(i) != cudaSuccess) continue;
        cudaStreamSynchronize(d->stream);
        pthread_mutex_lock(&lock);
        release_cache(d);
        pthread_mutex_unlock(&lock);
        cublasDestroy(d->blas);
        if (d->blaslt) cublasLtDestroy(d->blaslt), d->blaslt = NULL;
        if (d->lt_workspace) cudaFree(d->lt_workspace), d->lt_workspace = NULL;
        if (d->bad_index) cudaFreeHost(d->bad_index), d->bad_index = NULL;
        cudaStreamDestroy(d->stream);
        d->ready = 0;
    }
    current = -1;
}

int as_cuda_use(const char *fn, int index)
{
    int n = as_cuda_device_count();
    if (index < 0 || index >= n) {
        if (n == 0) as_error_set("%s: no CUDA device is available", fn);
        else as_error_set("%s: device cuda:%d does not exist (%d device%s)", fn, index, n, n == 1 ? "" : "s");
        return -1;
    }
    if (current != index) {
        if (as_cuda_check(fn, cudaSetDevice(index))) return -1;
        current = index;
    }
    device_state *d = &devices[index];
    if (!d->ready) {
        if (as_cuda_check(fn, cudaStreamCreateWithFlags(&d->stream, cudaStreamNonBlocking))) return -1;
        if (as_cublas_check(fn, cublasCreate(&d->blas))) {
            cudaStreamDestroy(d->stream);
            return -1;
        }
        cublasSetStream(d->blas, d->stream);
        static int registered;
        if (!registered) registered = atexit(shutdown_devices) == 0;
        d->ready = 1;
    }
    return 0;
}

void *as_cuda_current_stream(void) { return current >= 0 ? devices[current].stream : NULL; }
void *as_cuda_blas_handle(void) { return current >= 0 ? devices[current].blas : NULL; }

#define LT_WORKSPACE ((size_t)32 << 20) /* cuBLASLt's own advice for Hopper */

void *as_cuda_blaslt_handle(void)
{
    if (current < 0) return NULL;
    device_state *d = &devices[current];
    if (!d->blaslt && cublasLtCreate(&d->blaslt) != CUBLAS_STATUS_SUCCESS) d->blaslt = NULL;
    return d->blaslt;
}

void *as_cuda_blaslt_workspace(size_t *bytes)
{
    *bytes = 0;
    if (current < 0) return NULL;
    device_state *d = &devices[current];
    if (!d->lt_workspace && cudaMalloc(&d->lt_workspace, LT_WORKSPACE) != cudaSuccess) {
        cudaGetLastError();
        d->lt_workspace = NULL;
    }
    if (d->lt_workspace) *bytes = LT_WORKSPACE;
    return d->lt_workspace;
}

int as_cuda_synchronize(int index)
{
    int n = as_cuda_device_count();
    for (int i = 0; i < n; i++) {
        if ((index >= 0 && i != index) || !devices[i].ready) continue;
        if (as_cuda_use("synchronize", i) || as_cuda_check("synchronize", cudaStreamSynchronize(devices[i].stream)) ||
            as_cuda_bad_index_report(i))
            return -1;
    }
    return 0;
}

int as_cuda_memory_stats(int index, as_cuda_memory *m)
{
    if (index < 0 || index >= as_cuda_device_count()) {
        memset(m, 0, sizeof *m);
        return -1;
    }
    pthread_mutex_lock(&lock);
    *m = devices[index].mem;
    pthread_mutex_unlock(&lock);
    return 0;
}

void as_cuda_usage(size_t *allocated, size_t *mallocs)
{
    size_t a = 0, m = 0;
    pthread_mutex_lock(&lock);
    for (int i = 0; i < MAX_DEVICES; i++) a += devices[i].mem.allocated, m += devices[i].mem.num_mallocs;
    pthread_mutex_unlock(&lock);
    *allocated = a, *mallocs = m;
}

void as_cuda_reset_peak(int index)
{
    if (index < 0 || index >= as_cuda_device_count()) return;
    pthread_mutex_lock(&lock);
    devices[index].mem.peak_allocated = devices[index].mem.allocated;
    pthread_mutex_unlock(&lock);
}

int as_cuda_profiler(int on)
{
    const char *fn = on ? "profiler_start" : "profiler_stop";
    if (as_cuda_device_count() == 0) {
        as_error_set("%s: no CUDA device is available", fn);
        return -1;
    }
    return as_cuda_check(fn, on ? cudaProfilerStart() : cudaProfilerStop());
}

int as_cuda_empty_cache(void)
{
    if (as_cuda_capturing(-1)) {
        as_error_set("empty_cache: a CUDA graph is being captured (the capture cannot wait for the card)");
        return -1;
    }
    /* every device's queued work done, before its blocks go back (errors are the next call's) */
    for (int i = 0; i < MAX_DEVICES; i++)
        if (devices[i].ready && !as_cuda_use("empty_cache", i)) cudaStreamSynchronize(devices[i].stream);
    cudaGetLastError();
    pthread_mutex_lock(&lock);
    for (int i = 0; i < MAX_DEVICES; i++)
        if (devices[i].ready) release_cache(&devices[i]);
    pthread_mutex_unlock(&lock);
    return 0;
}

/* ---- copies: dst and src have broadcast-compatible shapes (checked by as_copy_) ---- */

static int is_cuda(const as_tensor *t) { return as_tensor_device(t).type == AS_DEV_CUDA; }

/* The copy kernel on the current device: dst's shape, src expanded to it. */
static int kernel_copy(const as_tensor *dst, const as_tensor *src)
{
    as_kview d = as_kview_of(dst), s = as_kview_of(src);
    return as_cuda_check("copy_", as_cuda_copy(&d, &s));
}

/* Contiguous, same dtype, same size: one cudaMemcpyAsync. */
static int memcpy_whole(as_tensor *dst, const as_tensor *src, enum cudaMemcpyKind kind)
{
    size_t bytes = (size_t)as_numel(dst) * as_dtype_size(dst->dtype);
    if (bytes == 0) return 0;
    cudaStream_t s = as_cuda_current_stream();
    if (as_cuda_check("copy_", cudaMemcpyAsync(as_data(dst), as_data(src), bytes, kind, s))) return -1;
    /* the host side may read (or free) its buffer right after */
    return kind == cudaMemcpyDeviceToDevice ? 0 : as_cuda_check("copy_", cudaStreamSynchronize(s));
}

static int plain_pair(const as_tensor *dst, const as_tensor *src)
{
    return dst->dtype == src->dtype && as_is_contiguous(dst) && as_is_contiguous(src) &&
           as_same_shape(dst, src);
}

int as_cuda_device_copy(as_tensor *dst, const as_tensor *src)
{
    as_device dd = as_tensor_device(dst), sd = as_tensor_device(src);
    as_tensor *s = as_expand(src, dst->ndim, dst->shape);
    if (!s) return -1;
    int rc = -1;
    if (is_cuda(dst) && is_cuda(src) && dd.index == sd.index) {
        /* on one device: a kernel walks the strides and converts */
        if (!as_cuda_use("copy_", dd.index))
            rc = plain_pair(dst, s) ? memcpy_whole(dst, s, cudaMemcpyDeviceToDevice)
                                     : kernel_copy(dst, s);
    } else if (is_cuda(dst) && !is_cuda(src)) {
        /* upload src as it is laid out contiguously, then convert/scatter on the GPU */
        as_tensor *cs = as_contiguous(s), *stage = NULL;
        if (cs && !plain_pair(dst, cs)) stage = as_empty(dst->ndim, dst->shape, cs->dtype, dd);
        if (cs && (stage || plain_pair(dst, cs)) && !as_cuda_use("copy_", dd.index)) {
            if (!stage) rc = memcpy_whole(dst, cs, cudaMemcpyHostToDevice);
            else if (!memcpy_whole(stage, cs, cudaMemcpyHostToDevice))
                rc = kernel_copy(dst, stage);
        }
        as_release(cs), as_release(stage);
    } else if (!is_cuda(dst) && is_cuda(src)) {
        /* gather/convert on the GPU into dst's dtype, download, then place on the CPU */
        as_tensor *stage = NULL, *host = NULL;
        if (!as_cuda_use("copy_", sd.index)) {
            stage = plain_pair(dst, s) ? as_retain(s) : as_empty(dst->ndim, dst->shape, dst->dtype, sd);
            if (stage && (stage == s || !kernel_copy(stage, s))) {
                host = as_is_contiguous(dst) ? as_retain(dst) : as_empty(dst->ndim, dst->shape, dst->dtype, AS_CPU);
                /* the card is done (the copy waited): an index a graph's replay met out of range says so */
                if (host && !memcpy_whole(host, stage, cudaMemcpyDeviceToHost) && !as_cuda_bad_index_report(sd.index))
                    rc = host == dst ? 0 : as_copy_(dst, host);
            }
        }
        as_release(stage), as_release(host);
    } else {
        /* between two GPUs: through the host, simple and rare */
        as_tensor *host = as_empty(dst->ndim, dst->shape, src->dtype, AS_CPU);
        if (host && !as_copy_(host, s)) rc = as_copy_(dst, host);
        as_release(host);
    }
    as_release(s);
    return rc;
}

#endif
