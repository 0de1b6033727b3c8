/* as.distributed: collectives between processes (docs/distributed.md).
 * CPU tensors travel over MPI (Open MPI from Debian), CUDA tensors over NCCL
 * when the build has it (one GPU per local rank, the NCCL id shared through
 * MPI), else staged through the host.  A process not started by a launcher
 * (or a build without MPI) is a world of one: every collective is then the
 * identity, so a script runs unchanged in one process.
 *
 * Every blocking call waits with a deadline (as_dist_set_timeout): MPI's
 * non-blocking form polled with MPI_Test, so a rank that died or stopped
 * answering ends the others with "fn: timed out ..." instead of a hang.
 * Functions return 0 / a new tensor, or -1 / NULL with the error set, the
 * message starting with the public name ("all_reduce: ..."). */
#ifndef AS_DISTRIBUTED_H
#define AS_DISTRIBUTED_H

#include <stdbool.h>

#include "attnswap/tensor.h"

typedef enum { AS_REDUCE_SUM, AS_REDUCE_AVG, AS_REDUCE_MAX, AS_REDUCE_MIN, AS_REDUCE_PROD } as_reduce_op;
/* "sum", "avg", "max", "min", "prod" -> the op; -1 when unknown. */
int as_reduce_op_from_name(const char *name);

/* "mpi" or "none" (built without MPI); whether CUDA tensors go over NCCL. */
const char *as_dist_backend(void);
bool as_dist_has_nccl(void);

/* Joins the job the launcher started (Open MPI's OMPI_COMM_WORLD_*; a
 * world of one without a launcher).  Idempotent.  0 or -1. */
int as_dist_init(void);
bool as_dist_is_initialized(void);
/* -1 with "fn: not initialised (call init() first)" before init. */
int as_dist_rank(void);
int as_dist_world_size(void);
int as_dist_local_rank(void);
/* Seconds every blocking call waits before failing (default 300; <= 0: forever). */
void as_dist_set_timeout(double seconds);
double as_dist_timeout(void);
/* Leaves the job (MPI_Finalize).  A process that failed a collective aborts
 * the job at exit instead, so the ranks it left waiting end too. */
int as_dist_finalize(void);

/* In place on every rank: t = op over the ranks' t (same shape and dtype on
 * every rank, checked).  avg: floating point only. */
int as_dist_all_reduce(as_tensor *t, as_reduce_op op);
/* In place: every rank's t becomes root's. */
int as_dist_broadcast(as_tensor *t, int root);
/* (world, ...t's shape): every rank's t stacked in rank order. */
as_tensor *as_dist_all_gather(const as_tensor *t);
/* t (world * n, ...) on every rank: this rank's n rows of op over the ranks. */
as_tensor *as_dist_reduce_scatter(const as_tensor *t, as_reduce_op op);
/* Point to point: recv checks that the shape and dtype sent match t's. */
int as_dist_send(const as_tensor *t, int dst, int tag);
int as_dist_recv(as_tensor *t, int src, int tag);
/* Sends send to dst while receiving recv from src (the ring's step). */
int as_dist_sendrecv(const as_tensor *send, int dst, as_tensor *recv, int src, int tag);
int as_dist_barrier(void);

/* The ring's step started now and finished later, so the transfer runs
 * while the caller computes: send is sent to dst while recv fills from src
 * (both retained until the wait).  recv must be a contiguous CPU tensor for
 * the transfer to be in flight; otherwise (CUDA, strided) the exchange is
 * done at once and the wait only reports it.  NULL with the error set. */
typedef struct as_dist_request as_dist_request;
as_dist_request *as_dist_isendrecv(const as_tensor *send, int dst, as_tensor *recv, int src, int tag);
/* all_reduce in flight (DDP starts a bucket's during the backward): t is
 * reduced in place by the wait.  A contiguous CPU tensor whose dtype goes on
 * the wire as it is (float32, float64, int32, int64) is in flight; any other
 * is reduced at once through as_dist_all_reduce.  Every rank must start its
 * collectives in the same order (MPI's rule); shapes are not checked across
 * ranks on the in-flight path.  NULL with the error set. */
as_dist_request *as_dist_iall_reduce(as_tensor *t, as_reduce_op op);
/* Waits (with the deadline) and checks the sent shape against recv's; 0 or
 * -1.  A second wait returns the first's result. */
int as_dist_request_wait(as_dist_request *r);
/* Waits when still pending, then frees. */
void as_dist_request_free(as_dist_request *r);

#endif
