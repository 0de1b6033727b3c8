/* The collectives: all_reduce, broadcast, all_gather, reduce_scatter,
 * barrier.  Each checks (its arguments, then that every rank passed the same
 * shape and dtype), then runs MPI's non-blocking form waited with the
 * deadline (dist.c), over host memory (stage.c) or, for CUDA tensors in a
 * build with NCCL, over NCCL. */
#include <limits.h>
#include <string.h>

#include "attnswap/error.h"
#include "dist_internal.h"

#ifdef ATTNSWAP_HAVE_NCCL
#include "nccl_comm.h"
#endif

static int check_tensor(const char *fn, const as_tensor *t)
{
    if (as_dist_check_init(fn)) return -1;
    if (!t) {
        as_error_set("%s: expected a tensor, got nothing", fn);
        return -1;
    }
    if (as_numel(t) > INT_MAX) {
        as_error_set("%s: tensors of more than 2^31 - 1 elements are not supported (got %lld)", fn,
                     (long long)as_numel(t));
        return -1;
    }
    return 0;
}

#ifdef ATTNSWAP_HAVE_NCCL
static bool use_nccl(const as_tensor *t)
{
    return as_dist_g.mpi && as_tensor_device(t).type == AS_DEV_CUDA;
}
#endif

#ifdef ATTNSWAP_HAVE_MPI
MPI_Datatype as_dist_mpi_type(as_dtype dt)
{
    switch (dt) {
    case AS_F32: return MPI_FLOAT;
    case AS_I64: return MPI_INT64_T;
    case AS_I32: return MPI_INT32_T;
    case AS_F16:
    case AS_BF16: return MPI_UINT16_T;
    case AS_BOOL: return MPI_UINT8_T;
    default: return strcmp(as_dtype_name(dt), "float64") ? MPI_BYTE : MPI_DOUBLE;
    }
}

MPI_Op as_dist_mpi_op(as_reduce_op op)
{
    switch (op) {
    case AS_REDUCE_MAX: return MPI_MAX;
    case AS_REDUCE_MIN: return MPI_MIN;
    case AS_REDUCE_PROD: return MPI_PROD;
    default: return MPI_SUM;
    }
}

int as_dist_check_same(const char *fn, const as_tensor *t)
{
    /* max of (d, -d) over the ranks: d's max and min; they differ iff some
     * rank's descriptor differs */
    enum { N = 2 + AS_MAX_DIMS };
    int64_t d[2 * N] = {0};
    d[0] = t->dtype, d[1] = t->ndim;
    for (int i = 0; i < t->ndim; i++) d[2 + i] = t->shape[i];
    for (int i = 0; i < N; i++) d[N + i] = -d[i];
    MPI_Request req;
    if (as_dist_mpi_check(fn, MPI_Iallreduce(MPI_IN_PLACE, d, 2 * N, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD, &req)) ||
        as_dist_wait(fn, &req, 1, -1))
        return -1;
    for (int i = 0; i < N; i++) {
        if (d[i] == -d[N + i]) continue;
        char mine[128];
        as_shape_str(mine, sizeof mine, t->ndim, t->shape);
        as_error_set("%s: mismatched shapes or dtypes across ranks: rank %d has %s %s, another rank differs "
                     "(every rank must pass the same shape and dtype)",
                     fn, as_dist_g.rank, as_dtype_name(t->dtype), mine);
        return -1;
    }
    return 0;
}
#endif

int as_dist_all_reduce(as_tensor *t, as_reduce_op op)
{
    const char *fn = "all_reduce";
    if (check_tensor(fn, t)) return -1;
    if ((int)op < 0 || op > AS_REDUCE_PROD) {
        as_error_set("%s: unknown op %d (sum, avg, max, min or prod)", fn, (int)op);
        return -1;
    }
    as_dtype wire;
    if (as_dist_reduce_dtype(fn, t->dtype, &wire)) return -1;
    if (op == AS_REDUCE_AVG && !as_dtype_is_float(t->dtype)) {
        as_error_set("%s: avg needs a floating-point tensor, got %s", fn, as_dtype_name(t->dtype));
        return -1;
    }
    if (as_dist_g.world == 1) return 0;
#ifdef ATTNSWAP_HAVE_MPI
    if (as_dist_check_same(fn, t)) return -1;
#ifdef ATTNSWAP_HAVE_NCCL
    if (use_nccl(t) && as_is_contiguous(t)) {
        if (as_dist_nccl_ready(fn, t)) return -1;
        if (!as_nccl_all_reduce(fn, as_data(t), as_numel(t), t->dtype, op, as_dist_g.timeout)) return 0;
        as_dist_g.failed = true;
        return -1;
    }
#endif
    as_tensor *buf = as_dist_stage(fn, t, wire);
    if (!buf) return -1;
    MPI_Request req;
    if (as_dist_mpi_check(fn, MPI_Iallreduce(MPI_IN_PLACE, as_data(buf), (int)as_numel(buf),
                                             as_dist_mpi_type(wire), as_dist_mpi_op(op), MPI_COMM_WORLD, &req)) ||
        as_dist_wait(fn, &req, 1, -1)) {
        as_release(buf);
        return -1;
    }
    if (op == AS_REDUCE_AVG) as_dist_scale(buf, as_dist_g.world);
    return as_dist_unstage(t, buf);
#else
    return 0;
#endif
}

int as_dist_broadcast(as_tensor *t, int root)
{
    const char *fn = "broadcast";
    if (check_tensor(fn, t) || as_dist_check_rank(fn, "root", root)) return -1;
    if (as_dist_g.world == 1) return 0;
#ifdef ATTNSWAP_HAVE_MPI
    if (as_dist_check_same(fn, t)) return -1;
#ifdef ATTNSWAP_HAVE_NCCL
    if (use_nccl(t) && as_is_contiguous(t)) {
        if (as_dist_nccl_ready(fn, t)) return -1;
        if (!as_nccl_broadcast(fn, as_data(t), as_numel(t), t->dtype, root, as_dist_g.timeout)) return 0;
        as_dist_g.failed = true;
        return -1;
    }
#endif
    as_tensor *buf = as_dist_stage(fn, t, t->dtype);
    if (!buf) return -1;
    MPI_Request req;
    if (as_dist_mpi_check(fn, MPI_Ibcast(as_data(buf), (int)as_numel(buf), as_dist_mpi_type(t->dtype), root,
                                         MPI_COMM_WORLD, &req)) ||
        as_dist_wait(fn, &req, 1, as_dist_g.rank == root ? -1 : root)) {
        as_release(buf);
        return -1;
    }
    return as_dist_unstage(t, buf);
#else
    return 0;
#endif
}

#ifdef ATTNSWAP_HAVE_MPI
/* out (lead, ...t's shape), or t's shape with the first dim divided by lead
 * (drop), on dev. */
static as_tensor *gather_out(const as_tensor *t, int64_t lead, int drop, as_device dev)
{
    int64_t shape[AS_MAX_DIMS];
    int nd = 0;
    if (!drop) shape[nd++] = lead;
    for (int i = 0; i < t->ndim; i++) shape[nd++] = (drop && i == 0) ? t->shape[0] / lead : t->shape[i];
    return as_empty(nd, shape, t->dtype, dev);
}
#endif

as_tensor *as_dist_all_gather(const as_tensor *t)
{
    const char *fn = "all_gather";
    if (check_tensor(fn, t)) return NULL;
    if (t->ndim >= AS_MAX_DIMS) {
        as_error_set("%s: a %d-d tensor gathers into %d dims, more than %d", fn, t->ndim, t->ndim + 1,
                     AS_MAX_DIMS);
        return NULL;
    }
    if (as_dist_g.world == 1) return as_unsqueeze(t, 0);
#ifdef ATTNSWAP_HAVE_MPI
    if (as_dist_check_same(fn, t)) return NULL;
    if ((int64_t)as_dist_g.world * as_numel(t) > INT_MAX) {
        as_error_set("%s: the gathered tensor has more than 2^31 - 1 elements", fn);
        return NULL;
    }
#ifdef ATTNSWAP_HAVE_NCCL
    if (use_nccl(t) && as_is_contiguous(t)) {
        if (as_dist_nccl_ready(fn, t)) return NULL;
        as_tensor *out = gather_out(t, as_dist_g.world, 0, as_tensor_device(t));
        if (!out) return NULL;
        if (as_nccl_all_gather(fn, as_data(t), as_data(out), as_numel(t), t->dtype, as_dist_g.timeout)) {
            as_dist_g.failed = true;
            as_release(out);
            return NULL;
        }
        return out;
    }
#endif
    as_tensor *buf = as_dist_stage(fn, t, t->dtype);
    if (!buf) return NULL;
    as_tensor *out = gather_out(t, as_dist_g.world, 0, AS_CPU);
    MPI_Request req;
    MPI_Datatype ty = as_dist_mpi_type(t->dtype);
    int n = (int)as_numel(t);
    int rc = !out || as_dist_mpi_check(fn, MPI_Iallgather(as_data(buf), n, ty, as_data(out), n, ty,
                                                          MPI_COMM_WORLD, &req)) ||
             as_dist_wait(fn, &req, 1, -1);
    as_release(buf);
    if (rc) {
        if (out) as_release(out);
        return NULL;
    }
    if (as_tensor_device(t).type != AS_DEV_CPU) {
        as_tensor *dev = as_to_device(out, as_tensor_device(t));
        as_release(out);
        return dev;
    }
    return out;
#else
    return NULL;
#endif
}

as_tensor *as_dist_reduce_scatter(const as_tensor *t, as_reduce_op op)
{
    const char *fn = "reduce_scatter";
    if (check_tensor(fn, t)) return NULL;
    if ((int)op < 0 || op > AS_REDUCE_PROD) {
        as_error_set("%s: unknown op %d (sum, avg, max, min or prod)", fn, (int)op);
        return NULL;
    }
    as_dtype wire;
    if (as_dist_reduce_dtype(fn, t->dtype, &wire)) return NULL;
    if (op == AS_REDUCE_AVG && !as_dtype_is_float(t->dtype)) {
        as_error_set("%s: avg needs a floating-point tensor, got %s", fn, as_dtype_name(t->dtype));
        return NULL;
    }
    int W = as_dist_g.world;
    if (t->ndim < 1 || t->shape[0] % W) {
        char s[128];
        as_shape_str(s, sizeof s, t->ndim, t->shape);
        as_error_set("%s: expected a first dim that is a multiple of the world size %d, got shape %s", fn, W, s);
        return NULL;
    }
    if (W == 1) return as_clone(t);
#ifdef ATTNSWAP_HAVE_MPI
    if (as_dist_check_same(fn, t)) return NULL;
#ifdef ATTNSWAP_HAVE_NCCL
    if (use_nccl(t) && as_is_contiguous(t)) {
        if (as_dist_nccl_ready(fn, t)) return NULL;
        as_tensor *out = gather_out(t, W, 1, as_tensor_device(t));
        if (!out) return NULL;
        if (as_nccl_reduce_scatter(fn, as_data(t), as_data(out), as_numel(out), t->dtype, op, as_dist_g.timeout)) {
            as_dist_g.failed = true;
            as_release(out);
            return NULL;
        }
        return out;
    }
#endif
    as_tensor *buf = as_dist_stage(fn, t, wire);
    if (!buf) return NULL;
    as_tensor *out = gather_out(buf, W, 1, AS_CPU);
    MPI_Request req;
    int rc = !out || as_dist_mpi_check(fn, MPI_Ireduce_scatter_block(as_data(buf), as_data(out),
                                                                     (int)as_numel(out), as_dist_mpi_type(wire),
                                                                     as_dist_mpi_op(op), MPI_COMM_WORLD, &req)) ||
             as_dist_wait(fn, &req, 1, -1);
    as_release(buf);
    if (rc) {
        if (out) as_release(out);
        return NULL;
    }
    if (op == AS_REDUCE_AVG) as_dist_scale(out, W);
    if (out->dtype != t->dtype || as_tensor_device(t).type != AS_DEV_CPU) {
        as_tensor *res = as_empty(out->ndim, out->shape, t->dtype, as_tensor_device(t));
        if (res && as_copy_(res, out)) {
            as_release(res);
            res = NULL;
        }
        as_release(out);
        return res;
    }
    return out;
#else
    return NULL;
#endif
}

int as_dist_barrier(void)
{
    const char *fn = "barrier";
    if (as_dist_check_init(fn)) return -1;
    if (as_dist_g.world == 1) return 0;
#ifdef ATTNSWAP_HAVE_MPI
    MPI_Request req;
    return as_dist_mpi_check(fn, MPI_Ibarrier(MPI_COMM_WORLD, &req)) || as_dist_wait(fn, &req, 1, -1) ? -1 : 0;
#else
    return 0;
#endif
}
