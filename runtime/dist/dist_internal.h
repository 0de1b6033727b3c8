/* What the files of runtime/dist share: the process's place in the job, the
 * deadline-polled wait, the staging of tensors into contiguous host buffers. */
#ifndef AS_DIST_INTERNAL_H
#define AS_DIST_INTERNAL_H

#include <stdbool.h>

#include "attnswap/distributed.h"

#ifdef ATTNSWAP_HAVE_MPI
#include <mpi.h>
#endif

typedef struct {
    bool init, finalized;
    bool mpi;    /* MPI_Init was called (launched by mpirun) */
    bool failed; /* a collective failed or timed out: abort the job at exit */
    int rank, world, local;
    double timeout;
} as_dist_state;
extern as_dist_state as_dist_g;

/* -1 with "fn: not initialised ..." before init. */
int as_dist_check_init(const char *fn);
/* r in [0, world); what names the argument ("root", "dst"). */
int as_dist_check_rank(const char *fn, const char *what, int r);
/* Seconds on a monotonic clock. */
double as_dist_now(void);

/* A contiguous host tensor of dtype dt holding t's values: t itself
 * (retained) when it already is one. */
as_tensor *as_dist_stage(const char *fn, const as_tensor *t, as_dtype dt);
/* Writes buf back into t when it is a staging copy; releases buf. */
int as_dist_unstage(as_tensor *t, as_tensor *buf);
/* The dtype a reduction runs in: f16/bf16 in float32, bool refused. */
int as_dist_reduce_dtype(const char *fn, as_dtype dt, as_dtype *out);
/* Divides a float buffer by the world size (the avg of a sum). */
void as_dist_scale(as_tensor *buf, double by);

/* Point-to-point tags: user tags in [0, AS_DIST_MAX_TAG) become 2 tag
 * (header) and 2 tag + 1 (data); the ping after a timeout uses the one
 * above them all (MPI guarantees tags up to 32767). */
#define AS_DIST_MAX_TAG 16383
#define AS_DIST_PING_TAG 32767

#ifdef ATTNSWAP_HAVE_MPI
/* An MPI return code as an attnswap error; marks the job failed. */
int as_dist_mpi_check(const char *fn, int rc);
/* Waits for n requests until the deadline; on timeout the error names
 * who: "rank 1" (peer >= 0) or the other ranks of a collective (peer < 0). */
int as_dist_wait(const char *fn, MPI_Request *req, int n, int peer);
/* The MPI type of dt's elements for transfers (f16/bf16 as 16-bit words). */
MPI_Datatype as_dist_mpi_type(as_dtype dt);
MPI_Op as_dist_mpi_op(as_reduce_op op);
/* Checks that every rank passed the same dtype and shape (one small
 * all-reduce of the descriptor). */
int as_dist_check_same(const char *fn, const as_tensor *t);
/* The NCCL communicator, made on the first CUDA collective (the id
 * broadcast over MPI); 0 when ready, -1 with the error. */
int as_dist_nccl_ready(const char *fn, const as_tensor *t);
#endif

#endif
