/* NCCL for as.distributed's CUDA tensors (runtime/dist calls these; only
 * runtime/cuda sees CUDA and NCCL headers).  One communicator per process,
 * on one device; every call enqueues on that device's stream and then waits
 * for it with a deadline (timeout seconds, <= 0: forever), aborting the
 * communicator when it passes so the call fails instead of hanging.
 * 0 or -1 with "fn: ..." set.  Built only with ATTNSWAP_HAVE_NCCL. */
#ifndef AS_NCCL_COMM_H
#define AS_NCCL_COMM_H

#include <stdbool.h>
#include <stdint.h>

#include "attnswap/distributed.h"

#define AS_NCCL_ID_BYTES 128

int as_nccl_get_id(const char *fn, void *id);
int as_nccl_init(const char *fn, const void *id, int rank, int world, int device);
/* The communicator's device, -1 before as_nccl_init. */
int as_nccl_device(void);
void as_nccl_finalize(void);

int as_nccl_all_reduce(const char *fn, void *buf, int64_t n, as_dtype dt, as_reduce_op op, double timeout);
int as_nccl_broadcast(const char *fn, void *buf, int64_t n, as_dtype dt, int root, double timeout);
int as_nccl_all_gather(const char *fn, const void *src, void *dst, int64_t n, as_dtype dt, double timeout);
/* n: elements of dst (this rank's share) */
int as_nccl_reduce_scatter(const char *fn, const void *src, void *dst, int64_t n, as_dtype dt, as_reduce_op op,
                           double timeout);
/* send / recv may be NULL (one direction only) */
int as_nccl_sendrecv(const char *fn, const void *send, int64_t ns, int dst, void *recv, int64_t nr, int src,
                     as_dtype dt, double timeout);

#endif
