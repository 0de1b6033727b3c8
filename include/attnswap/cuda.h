/* The CUDA backend's runtime side: devices, one stream and one cuBLAS
 * handle per device, the caching allocator and copies across devices.
 * Present in every build; without CUDA it reports no devices. */
#ifndef AS_CUDA_DEVICE_H
#define AS_CUDA_DEVICE_H

#include <stddef.h>
#include <stdint.h>

#include "attnswap/tensor.h"

/* Number of CUDA devices visible; 0 in a build without CUDA or with no GPU. */
int as_cuda_device_count(void);
/* 1 when this build has the CUDA backend. */
int as_cuda_built(void);
/* Waits for every queued kernel on device index (-1: all); 0 or -1 with the error set. */
int as_cuda_synchronize(int index);

typedef struct {
    size_t allocated;      /* bytes in tensors now */
    size_t reserved;       /* bytes held from cudaMalloc (allocated + cached) */
    size_t peak_allocated; /* since the last reset */
    size_t num_mallocs;    /* cudaMalloc calls so far */
} as_cuda_memory;
int as_cuda_memory_stats(int index, as_cuda_memory *m);
/* All devices together (0 without CUDA): bytes in CUDA tensors now, and the
 * cudaMalloc calls made so far (each a miss of the block cache). */
void as_cuda_usage(size_t *allocated, size_t *mallocs);
/* Gives the cached blocks back to the driver (as torch.cuda.empty_cache);
 * -1 with the error set while a graph is being captured. */
int as_cuda_empty_cache(void);
void as_cuda_reset_peak(int index);
/* cudaProfilerStart (on != 0) or cudaProfilerStop: the capture range of nsys,
 * ncu and bench/cuda_trace.c; 0, or -1 with the error set. */
int as_cuda_profiler(int on);

/* ---- CUDA graphs: a sequence of kernels captured once, replayed whole ----
 * begin: the device's stream records instead of running (a capture), and
 * every allocation until end comes from the graph's own pool, which
 * outside tensors never share; random draws fail while it lasts (a draw
 * made once would repeat on every replay).  end: the capture becomes a
 * graph that replay launches with one call.  A capture that met an
 * operation a graph cannot hold (a copy to or from the host, a wait for the
 * card) fails at end with that error; free the graph then.  free waits for
 * nothing: a replay already queued finishes first, on the same stream. */
typedef struct as_cuda_graph as_cuda_graph;
as_cuda_graph *as_cuda_graph_begin(int index); /* NULL with the error set */
int as_cuda_graph_end(as_cuda_graph *g);       /* 0, or -1 with the error set */
int as_cuda_graph_replay(as_cuda_graph *g);    /* 0, or -1 with the error set */
void as_cuda_graph_free(as_cuda_graph *g);     /* NULL: nothing */
/* 1 while a capture is open on device index (-1: on any device). */
int as_cuda_capturing(int index);

/* Makes device index current and registers the backend (allocator, copies)
 * on first use; 0, or -1 with "fn: ..." set when the device does not exist. */
int as_cuda_use(const char *fn, int index);

/* 0 when err (a cudaError_t or cublasStatus_t, as int) is success, else
 * sets "fn: CUDA error: <text>" and returns -1. */
int as_cuda_check(const char *fn, int err);
int as_cublas_check(const char *fn, int status);

/* The current device's cuBLAS handle (a cublasHandle_t), bound to its stream. */
void *as_cuda_blas_handle(void);
/* The current device's cuBLASLt handle (made on first use) and its GEMM
 * workspace (*bytes of it); NULL where they could not be made. */
void *as_cuda_blaslt_handle(void);
void *as_cuda_blaslt_workspace(size_t *bytes);

#endif
