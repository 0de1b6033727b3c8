/* The CUDA backend's runtime side, internal to runtime/: its table
 * (runtime/cuda/backend.c, registered by as_init) and the pieces of
 * device.c and gemm.c the table holds. */
#ifndef AS_CUDA_BACKEND_H
#define AS_CUDA_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "attnswap/tensor.h"
#include "backend.h"

/* Installs CUDA's table for AS_DEV_CUDA.  Without CUDA in the build the
 * table only says so, for every use of a CUDA device. */
void as_cuda_backend_register(void);

/* device.c: the caching allocator of device index, and copies between a
 * CUDA tensor and a CPU or CUDA one (as_backend.copy's contract). */
void *as_cuda_alloc(size_t nbytes, int index);
void as_cuda_free(void *p, int index);
int as_cuda_device_copy(as_tensor *dst, const as_tensor *src);

/* device.c: a CUDA graph's memory pool.  open: from now on device index's
 * allocations come from a new pool (returned; NULL with the error set), and
 * its blocks go back to it when freed; close: allocations come from the
 * device's cache again; drop: the graph is gone, its blocks join the
 * device's cache (NULL: nothing). */
void *as_cuda_pool_open(int index);
void as_cuda_pool_close(int index);
void as_cuda_pool_drop(void *pool);

/* device.c: where a kernel that checks its indices on the card (inside a
 * graph's capture, as_cuda_gather_rows' bad) records one out of range:
 * {index, size}, host memory the card writes; NULL with the error set when
 * it cannot be made.  Made by as_cuda_graph_begin, before the capture.
 * as_cuda_bad_index_report: -1 with the error set, and the record cleared,
 * when a replay recorded one. */
int64_t *as_cuda_bad_index_flag(int index);
int as_cuda_bad_index_report(int index);

/* gemm.c: matmul's products on cuBLAS (as_backend.gemm's contract):
 * float32 / float16 / bfloat16 operands of one dtype, float32 accumulation
 * (CUBLAS_COMPUTE_32F: no TF32, so float32 results match the CPU's to
 * rounding).  0, or -1 with the error set. */
int as_cuda_gemm(as_gemm_args *g);

#endif
