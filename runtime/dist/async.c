/* as_dist_isendrecv: the ring's step in flight while the caller computes
 * (ring_attention passes the next K/V block while it attends to the one in
 * hand).  Headers and data are posted at once; the wait checks the header
 * that came against recv's shape (a longer message than recv is MPI's
 * truncation error, turned into ours). */
#include <stdlib.h>

#include "attnswap/error.h"
#include "dist_internal.h"

enum { HDR = 2 + AS_MAX_DIMS, MAX_TAG = AS_DIST_MAX_TAG };

struct as_dist_request {
    as_tensor *send, *recv; /* retained while in flight */
    int src, state;         /* state: 1 pending, 0 done, -1 failed */
    bool inflight;          /* requests posted and not completed */
    bool reduce;            /* an iall_reduce of recv (op), not an exchange */
    as_reduce_op op;
#ifdef ATTNSWAP_HAVE_MPI
    int64_t hs[HDR], hr[HDR];
    MPI_Request req[4];
#endif
};

as_dist_request *as_dist_isendrecv(const as_tensor *send, int dst, as_tensor *recv, int src, int tag)
{
    const char *fn = "isendrecv";
    if (as_dist_check_rank(fn, "dst", dst) || as_dist_check_rank(fn, "src", src)) return NULL;
    if (!send || !recv) {
        as_error_set("%s: expected a tensor to send and one to receive into", fn);
        return NULL;
    }
    if (dst == as_dist_g.rank || src == as_dist_g.rank) {
        as_error_set("%s: a rank cannot message itself (rank %d)", fn, as_dist_g.rank);
        return NULL;
    }
    as_dist_request *r = calloc(1, sizeof *r);
    if (!r) {
        as_error_set("%s: out of memory", fn);
        return NULL;
    }
    r->src = src;
#ifdef ATTNSWAP_HAVE_MPI
    bool async = as_tensor_device(recv).type == AS_DEV_CPU && as_is_contiguous(recv) &&
                    as_tensor_device(send).type == AS_DEV_CPU && as_is_contiguous(send) &&
                    as_numel(send) <= 0x7fffffff && as_numel(recv) <= 0x7fffffff && tag >= 0 && tag < MAX_TAG;
    if (!async) { /* done now, through the checked blocking path */
        r->state = as_dist_sendrecv(send, dst, recv, src, tag) ? -1 : 0;
        if (r->state) {
            free(r);
            return NULL;
        }
        return r;
    }
    r->send = as_retain((as_tensor *)send);
    r->recv = as_retain(recv);
    for (int i = 0; i < HDR; i++) r->hs[i] = 0;
    r->hs[0] = send->dtype, r->hs[1] = send->ndim;
    for (int i = 0; i < send->ndim; i++) r->hs[2 + i] = send->shape[i];
    MPI_Datatype ts = as_dist_mpi_type(send->dtype), tr = as_dist_mpi_type(recv->dtype);
    if (as_dist_mpi_check(fn, MPI_Isend(r->hs, HDR, MPI_INT64_T, dst, 2 * tag, MPI_COMM_WORLD, &r->req[0])) ||
        as_dist_mpi_check(fn, MPI_Isend(as_data(send), (int)as_numel(send), ts, dst, 2 * tag + 1, MPI_COMM_WORLD,
                                        &r->req[1])) ||
        as_dist_mpi_check(fn, MPI_Irecv(r->hr, HDR, MPI_INT64_T, src, 2 * tag, MPI_COMM_WORLD, &r->req[2])) ||
        as_dist_mpi_check(fn, MPI_Irecv(as_data(recv), (int)as_numel(recv), tr, src, 2 * tag + 1, MPI_COMM_WORLD,
                                        &r->req[3]))) {
        /* requests may be in flight: the job cannot go on (mpi_check marked it) */
        r->state = -1, r->inflight = true;
        return r;
    }
    r->state = 1, r->inflight = true;
#else
    (void)dst, (void)tag;
    as_error_set("%s: this build has no MPI", fn);
    free(r);
    return NULL;
#endif
    return r;
}

as_dist_request *as_dist_iall_reduce(as_tensor *t, as_reduce_op op)
{
    const char *fn = "iall_reduce";
    if (!t) {
        as_error_set("%s: expected a tensor", fn);
        return NULL;
    }
    as_dist_request *r = calloc(1, sizeof *r);
    if (!r) {
        as_error_set("%s: out of memory", fn);
        return NULL;
    }
    r->reduce = true, r->op = op, r->src = -1;
#ifdef ATTNSWAP_HAVE_MPI
    as_dtype wire;
    bool async = as_dist_is_initialized() && as_dist_g.world > 1 && (int)op >= 0 && op <= AS_REDUCE_PROD &&
                 as_tensor_device(t).type == AS_DEV_CPU && as_is_contiguous(t) && as_numel(t) <= 0x7fffffff &&
                 (op != AS_REDUCE_AVG || as_dtype_is_float(t->dtype)) &&
                 !as_dist_reduce_dtype(fn, t->dtype, &wire) && wire == t->dtype;
    if (async) {
        r->recv = as_retain(t);
        r->inflight = true;
        if (as_dist_mpi_check(fn, MPI_Iallreduce(MPI_IN_PLACE, as_data(t), (int)as_numel(t), as_dist_mpi_type(wire),
                                                 as_dist_mpi_op(op), MPI_COMM_WORLD, &r->req[0]))) {
            r->state = -1; /* the job cannot go on (mpi_check marked it) */
            return r;
        }
        r->state = 1;
        return r;
    }
#endif
    if (as_dist_all_reduce(t, op)) { /* done now, checked; the wait only reports it */
        free(r);
        return NULL;
    }
    return r;
}

int as_dist_request_wait(as_dist_request *r)
{
    if (!r) return -1;
    if (r->state != 1) return r->state;
#ifdef ATTNSWAP_HAVE_MPI
    if (r->reduce) {
        if (as_dist_wait("iall_reduce", r->req, 1, -1)) {
            r->state = -1;
            return -1;
        }
        r->inflight = false;
        if (r->op == AS_REDUCE_AVG) as_dist_scale(r->recv, as_dist_g.world);
        r->state = 0;
        return 0;
    }
    const char *fn = "isendrecv";
    if (as_dist_wait(fn, r->req, 4, r->src)) {
        r->state = -1;
        return -1;
    }
    r->inflight = false;
    bool same = r->hr[0] == r->recv->dtype && r->hr[1] == r->recv->ndim;
    for (int i = 0; same && i < r->recv->ndim; i++) same = r->hr[2 + i] == r->recv->shape[i];
    if (!same) {
        char a[128], b[128];
        int nd = r->hr[1] >= 0 && r->hr[1] <= AS_MAX_DIMS ? (int)r->hr[1] : 0;
        as_shape_str(a, sizeof a, r->recv->ndim, r->recv->shape);
        as_shape_str(b, sizeof b, nd, r->hr + 2);
        as_error_set("%s: mismatched shapes: rank %d expects %s, rank %d sent %s", fn, as_dist_g.rank, a, r->src, b);
        r->state = -1;
        return -1;
    }
    r->state = 0;
    return 0;
#else
    return -1;
#endif
}

void as_dist_request_free(as_dist_request *r)
{
    if (!r) return;
    if (r->state == 1) as_dist_request_wait(r);
    /* a request still in flight after a failure keeps its buffers: MPI may
     * write them until the job ends (it is ending: the failure aborts it) */
    if (!r->inflight) {
        if (r->send) as_release(r->send);
        if (r->recv) as_release(r->recv);
        free(r);
    }
}
