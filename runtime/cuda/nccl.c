#define _POSIX_C_SOURCE 200809L /* clock_gettime, nanosleep */
/* NCCL collectives for as.distributed (nccl_comm.h).  Compiled into the
 * CUDA layer only when the build found NCCL (ATTNSWAP_HAVE_NCCL). */
#ifdef ATTNSWAP_HAVE_NCCL

#include <cuda_runtime.h>
#include <math.h>
#include <nccl.h>
#include <string.h>
#include <time.h>

#include "attnswap/cuda.h"
#include "attnswap/error.h"
#include "cuda_kernels.h"
#include "nccl_comm.h"

static ncclComm_t comm;
static int comm_device = -1;

static int nccl_check(const char *fn, ncclResult_t r)
{
    if (r == ncclSuccess || r == ncclInProgress) return 0;
    as_error_set("%s: NCCL error: %s", fn, ncclGetErrorString(r));
    return -1;
}

static int dtype_of(const char *fn, as_dtype dt, ncclDataType_t *out)
{
    switch (dt) {
    case AS_F32: *out = ncclFloat32; return 0;
    case AS_F16: *out = ncclFloat16; return 0;
    case AS_BF16: *out = ncclBfloat16; return 0;
    case AS_I64: *out = ncclInt64; return 0;
    case AS_I32: *out = ncclInt32; return 0;
    case AS_BOOL: *out = ncclUint8; return 0;
    default:
        if (!strcmp(as_dtype_name(dt), "float64")) {
            *out = ncclFloat64;
            return 0;
        }
    }
    as_error_set("%s: NCCL does not carry %s tensors", fn, as_dtype_name(dt));
    return -1;
}

static ncclRedOp_t op_of(as_reduce_op op)
{
    switch (op) {
    case AS_REDUCE_AVG: return ncclAvg;
    case AS_REDUCE_MAX: return ncclMax;
    case AS_REDUCE_MIN: return ncclMin;
    case AS_REDUCE_PROD: return ncclProd;
    default: return ncclSum;
    }
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Polls the stream and the communicator's asynchronous error until the
 * work is done or the deadline passes (then the communicator is aborted:
 * a peer that died would otherwise leave the kernel spinning forever). */
static int wait_stream(const char *fn, double timeout)
{
    cudaStream_t s = (cudaStream_t)as_cuda_current_stream();
    double deadline = timeout > 0 ? now() + timeout : INFINITY;
    for (;;) {
        cudaError_t e = cudaStreamQuery(s);
        if (e == cudaSuccess) return 0;
        if (e != cudaErrorNotReady) return as_cuda_check(fn, e);
        ncclResult_t async;
        if (ncclCommGetAsyncError(comm, &async) == ncclSuccess && async != ncclSuccess &&
            async != ncclInProgress) {
            ncclCommAbort(comm);
            comm = NULL, comm_device = -1;
            return nccl_check(fn, async);
        }
        if (now() > deadline) {
            ncclCommAbort(comm);
            comm = NULL, comm_device = -1;
            as_error_set("%s: timed out after %g s waiting for NCCL (a rank died or stopped answering)", fn,
                         timeout);
            return -1;
        }
        nanosleep(&(struct timespec){0, 100000}, NULL);
    }
}

int as_nccl_get_id(const char *fn, void *id)
{
    ncclUniqueId u;
    if (nccl_check(fn, ncclGetUniqueId(&u))) return -1;
    memcpy(id, &u, sizeof u);
    return 0;
}

int as_nccl_init(const char *fn, const void *id, int rank, int world, int device)
{
    if (as_cuda_use(fn, device)) return -1;
    ncclUniqueId u;
    memcpy(&u, id, sizeof u);
    if (nccl_check(fn, ncclCommInitRank(&comm, world, u, rank))) return -1;
    comm_device = device;
    return 0;
}

int as_nccl_device(void) { return comm ? comm_device : -1; }

void as_nccl_finalize(void)
{
    if (!comm) return;
    ncclCommDestroy(comm);
    comm = NULL, comm_device = -1;
}

#define ENQUEUE(call)                                                                                   \
    do {                                                                                                \
        if (as_cuda_use(fn, comm_device)) return -1;                                                    \
        if (nccl_check(fn, call)) return -1;                                                            \
        return wait_stream(fn, timeout);                                                                \
    } while (0)

int as_nccl_all_reduce(const char *fn, void *buf, int64_t n, as_dtype dt, as_reduce_op op, double timeout)
{
    ncclDataType_t t;
    if (dtype_of(fn, dt, &t)) return -1;
    ENQUEUE(ncclAllReduce(buf, buf, (size_t)n, t, op_of(op), comm, (cudaStream_t)as_cuda_current_stream()));
}

int as_nccl_broadcast(const char *fn, void *buf, int64_t n, as_dtype dt, int root, double timeout)
{
    ncclDataType_t t;
    if (dtype_of(fn, dt, &t)) return -1;
    ENQUEUE(ncclBroadcast(buf, buf, (size_t)n, t, root, comm, (cudaStream_t)as_cuda_current_stream()));
}

int as_nccl_all_gather(const char *fn, const void *src, void *dst, int64_t n, as_dtype dt, double timeout)
{
    ncclDataType_t t;
    if (dtype_of(fn, dt, &t)) return -1;
    ENQUEUE(ncclAllGather(src, dst, (size_t)n, t, comm, (cudaStream_t)as_cuda_current_stream()));
}

int as_nccl_reduce_scatter(const char *fn, const void *src, void *dst, int64_t n, as_dtype dt, as_reduce_op op,
                           double timeout)
{
    ncclDataType_t t;
    if (dtype_of(fn, dt, &t)) return -1;
    ENQUEUE(ncclReduceScatter(src, dst, (size_t)n, t, op_of(op), comm, (cudaStream_t)as_cuda_current_stream()));
}

static ncclResult_t pair(const void *send, int64_t ns, int dst, void *recv, int64_t nr, int src, ncclDataType_t t)
{
    cudaStream_t s = (cudaStream_t)as_cuda_current_stream();
    ncclResult_t r = ncclGroupStart();
    if (r == ncclSuccess && send) r = ncclSend(send, (size_t)ns, t, dst, comm, s);
    if (r == ncclSuccess && recv) r = ncclRecv(recv, (size_t)nr, t, src, comm, s);
    ncclResult_t e = ncclGroupEnd();
    return r != ncclSuccess ? r : e;
}

int as_nccl_sendrecv(const char *fn, const void *send, int64_t ns, int dst, void *recv, int64_t nr, int src,
                     as_dtype dt, double timeout)
{
    ncclDataType_t t;
    if (dtype_of(fn, dt, &t)) return -1;
    ENQUEUE(pair(send, ns, dst, recv, nr, src, t));
}

#else
typedef int as_nccl_unused; /* ISO C: a translation unit is not empty */
#endif
