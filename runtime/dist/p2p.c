/* Point to point: send, recv, sendrecv (the ring's step).  Each message is a
 * small header (dtype, ndim, shape) then the data, so recv can say that the
 * shapes differ instead of truncating; tags: 2 * tag (header), 2 * tag + 1
 * (data).  The data goes over NCCL for CUDA tensors in a build with it. */
#include <limits.h>
#include <stdlib.h>

#include "attnswap/error.h"
#include "dist_internal.h"

#ifdef ATTNSWAP_HAVE_NCCL
#include "nccl_comm.h"
#endif

enum { HDR = 2 + AS_MAX_DIMS, MAX_TAG = AS_DIST_MAX_TAG };

static int check(const char *fn, const as_tensor *t, const char *what, int peer, int tag)
{
    if (as_dist_check_rank(fn, what, peer)) return -1;
    if (!t) {
        as_error_set("%s: expected a tensor, got nothing", fn);
        return -1;
    }
    if (tag < 0 || tag >= MAX_TAG) {
        as_error_set("%s: tag must be in [0, %d), got %d", fn, MAX_TAG, tag);
        return -1;
    }
    if (peer == as_dist_g.rank) {
        as_error_set("%s: %s rank %d is this rank (a rank cannot message itself)", fn, what, peer);
        return -1;
    }
    if (as_numel(t) > INT_MAX) {
        as_error_set("%s: tensors of more than 2^31 - 1 elements are not supported", fn);
        return -1;
    }
    return 0;
}

#ifdef ATTNSWAP_HAVE_MPI
static void header(const as_tensor *t, int64_t *h)
{
    for (int i = 0; i < HDR; i++) h[i] = 0;
    h[0] = t->dtype, h[1] = t->ndim;
    for (int i = 0; i < t->ndim; i++) h[2 + i] = t->shape[i];
}

static bool nccl_path(const as_tensor *t)
{
#ifdef ATTNSWAP_HAVE_NCCL
    return as_tensor_device(t).type == AS_DEV_CUDA && as_is_contiguous(t);
#else
    (void)t;
    return false;
#endif
}

/* The sent header h against t: on a mismatch the data is still taken off
 * the wire (so the peer's send completes) and the error names both shapes. */
static int check_header(const char *fn, const as_tensor *t, const int64_t *h, int src, int tag, bool nccl)
{
    int64_t mine[HDR];
    header(t, mine);
    bool same = true;
    for (int i = 0; i < HDR; i++) same = same && mine[i] == h[i];
    if (same) return 0;
    int nd = (int)h[1];
    if (nd < 0 || nd > AS_MAX_DIMS || h[0] < 0 || h[0] >= AS_NDTYPES) {
        as_error_set("%s: a malformed header came from rank %d", fn, src);
        return -1;
    }
    int64_t n = 1;
    for (int i = 0; i < nd; i++) n *= h[2 + i];
    if (!nccl) {
        size_t bytes = (size_t)n * as_dtype_size((as_dtype)h[0]);
        void *scratch = malloc(bytes ? bytes : 1);
        MPI_Request r;
        if (scratch && !MPI_Irecv(scratch, (int)bytes, MPI_BYTE, src, 2 * tag + 1, MPI_COMM_WORLD, &r))
            as_dist_wait(fn, &r, 1, src);
        free(scratch);
    }
    char a[128], b[128];
    as_shape_str(a, sizeof a, t->ndim, t->shape);
    as_shape_str(b, sizeof b, nd, h + 2);
    as_error_set("%s: mismatched shapes: rank %d expects %s %s, rank %d sent %s %s", fn, as_dist_g.rank,
                 as_dtype_name(t->dtype), a, src, as_dtype_name((as_dtype)h[0]), b);
    return -1;
}

/* Sends (send != NULL) and receives (recv != NULL) at once. */
static int exchange(const char *fn, const as_tensor *send, int dst, as_tensor *recv, int src, int tag)
{
    int64_t hs[HDR], hr[HDR];
    MPI_Request req[4];
    int n = 0;
    as_tensor *sbuf = NULL, *rbuf = NULL;
    bool snccl = send && nccl_path(send), rnccl = recv && nccl_path(recv);
    int rc = -1;
    if (send) {
        header(send, hs);
        if (as_dist_mpi_check(fn, MPI_Isend(hs, HDR, MPI_INT64_T, dst, 2 * tag, MPI_COMM_WORLD, &req[n++])))
            goto done;
    }
    if (recv) {
        MPI_Request r;
        if (as_dist_mpi_check(fn, MPI_Irecv(hr, HDR, MPI_INT64_T, src, 2 * tag, MPI_COMM_WORLD, &r)) ||
            as_dist_wait(fn, &r, 1, src))
            goto done;
        if (check_header(fn, recv, hr, src, tag, rnccl)) goto done;
    }
#ifdef ATTNSWAP_HAVE_NCCL
    if (snccl || rnccl) {
        if (as_dist_nccl_ready(fn, snccl ? send : recv)) goto done;
        /* the host legs (a CPU side of a mixed pair) are not supported: both sides on CUDA */
        if ((send && !snccl) || (recv && !rnccl)) {
            as_error_set("%s: send and recv tensors must both be contiguous CUDA tensors for NCCL", fn);
            goto done;
        }
        if (as_dist_wait(fn, req, n, send ? dst : src)) goto done;
        n = 0;
        if (as_nccl_sendrecv(fn, send ? as_data(send) : NULL, send ? as_numel(send) : 0, dst,
                             recv ? as_data(recv) : NULL, recv ? as_numel(recv) : 0, src,
                             (send ? send : recv)->dtype, as_dist_g.timeout)) {
            as_dist_g.failed = true;
            goto done;
        }
        rc = 0;
        goto done;
    }
#else
    (void)snccl, (void)rnccl;
#endif
    if (send) {
        if (!(sbuf = as_dist_stage(fn, send, send->dtype))) goto done;
        if (as_dist_mpi_check(fn, MPI_Isend(as_data(sbuf), (int)as_numel(sbuf), as_dist_mpi_type(send->dtype), dst,
                                            2 * tag + 1, MPI_COMM_WORLD, &req[n++])))
            goto done;
    }
    if (recv) {
        if (!(rbuf = as_dist_stage(fn, recv, recv->dtype))) goto done;
        if (as_dist_mpi_check(fn, MPI_Irecv(as_data(rbuf), (int)as_numel(rbuf), as_dist_mpi_type(recv->dtype), src,
                                            2 * tag + 1, MPI_COMM_WORLD, &req[n++])))
            goto done;
    }
    if (as_dist_wait(fn, req, n, recv ? src : dst)) goto done;
    n = 0;
    rc = 0;
    if (rbuf) {
        rc = as_dist_unstage(recv, rbuf);
        rbuf = NULL;
    }
done:
    if (rc && n) as_dist_g.failed = true; /* requests left in flight: the job cannot go on */
    if (sbuf) as_release(sbuf);
    if (rbuf) as_release(rbuf);
    return rc;
}
#endif

int as_dist_send(const as_tensor *t, int dst, int tag)
{
    if (check("send", t, "dst", dst, tag)) return -1;
#ifdef ATTNSWAP_HAVE_MPI
    return exchange("send", t, dst, NULL, 0, tag);
#else
    return -1;
#endif
}

int as_dist_recv(as_tensor *t, int src, int tag)
{
    if (check("recv", t, "src", src, tag)) return -1;
#ifdef ATTNSWAP_HAVE_MPI
    return exchange("recv", NULL, 0, t, src, tag);
#else
    return -1;
#endif
}

int as_dist_sendrecv(const as_tensor *send, int dst, as_tensor *recv, int src, int tag)
{
    if (check("sendrecv", send, "dst", dst, tag) || check("sendrecv", recv, "src", src, tag)) return -1;
#ifdef ATTNSWAP_HAVE_MPI
    return exchange("sendrecv", send, dst, recv, src, tag);
#else
    return -1;
#endif
}
