/* The NCCL communicator for CUDA tensors, made on the first CUDA collective:
 * rank 0's unique id broadcast over MPI, one GPU per local rank. */
#ifdef ATTNSWAP_HAVE_NCCL

#include "attnswap/cuda.h"
#include "attnswap/error.h"
#include "dist_internal.h"
#include "nccl_comm.h"

int as_dist_nccl_ready(const char *fn, const as_tensor *t)
{
    int want = as_tensor_device(t).index;
    int have = as_nccl_device();
    if (have >= 0) {
        if (have == want) return 0;
        as_error_set("%s: rank %d's NCCL communicator is on cuda:%d (one GPU per rank), the tensor on cuda:%d", fn,
                     as_dist_g.rank, have, want);
        return -1;
    }
    int ndev = as_cuda_device_count();
    int mine = ndev > 0 ? as_dist_g.local % ndev : 0;
    if (want != mine) {
        as_error_set("%s: rank %d (local rank %d) uses cuda:%d, the tensor is on cuda:%d (move it with "
                     ":to('cuda:%d'))",
                     fn, as_dist_g.rank, as_dist_g.local, mine, want, mine);
        return -1;
    }
    unsigned char id[AS_NCCL_ID_BYTES];
    if (as_dist_g.rank == 0 && as_nccl_get_id(fn, id)) return -1;
    MPI_Request req;
    if (as_dist_mpi_check(fn, MPI_Ibcast(id, AS_NCCL_ID_BYTES, MPI_BYTE, 0, MPI_COMM_WORLD, &req)) ||
        as_dist_wait(fn, &req, 1, -1))
        return -1;
    return as_nccl_init(fn, id, as_dist_g.rank, as_dist_g.world, mine);
}

#else
typedef int as_dist_nccl_unused; /* ISO C: a translation unit is not empty */
#endif
