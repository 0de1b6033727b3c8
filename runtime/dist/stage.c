/* Staging: MPI reads and writes contiguous host memory, so a tensor that is
 * not contiguous, lives on a GPU without NCCL, or is a 16-bit float being
 * reduced (no MPI type adds bf16) goes through a contiguous host copy. */
#include <stdio.h>
#include <string.h>

#include "attnswap/error.h"
#include "dist_internal.h"

as_tensor *as_dist_stage(const char *fn, const as_tensor *t, as_dtype dt)
{
    if (as_tensor_device(t).type == AS_DEV_CPU && t->dtype == dt && as_is_contiguous(t))
        return as_retain((as_tensor *)t);
#ifndef ATTNSWAP_HAVE_NCCL
    static bool noted;
    if (as_tensor_device(t).type == AS_DEV_CUDA && !noted && as_dist_g.world > 1) {
        noted = true; /* once per process: correct but slow, worth knowing */
        fprintf(stderr, "attnswap: %s: CUDA tensors go through host memory over MPI (this build has no NCCL)\n",
                fn);
    }
#endif
    as_tensor *buf = as_empty(t->ndim, t->shape, dt, AS_CPU);
    if (!buf) return NULL;
    if (as_copy_(buf, t)) {
        as_release(buf);
        return NULL;
    }
    return buf;
}

int as_dist_unstage(as_tensor *t, as_tensor *buf)
{
    int rc = 0;
    if (buf != t) rc = as_copy_(t, buf);
    as_release(buf);
    return rc;
}

int as_dist_reduce_dtype(const char *fn, as_dtype dt, as_dtype *out)
{
    if (dt == AS_F16 || dt == AS_BF16) {
        *out = AS_F32;
        return 0;
    }
    if (dt == AS_BOOL) {
        as_error_set("%s: expected a float32, float64, bfloat16, float16, int64 or int32 tensor, got bool", fn);
        return -1;
    }
    *out = dt;
    return 0;
}

void as_dist_scale(as_tensor *buf, double by)
{
    int64_t n = as_numel(buf);
    void *p = as_data(buf);
    if (buf->dtype == AS_F32) {
        float *f = p;
        for (int64_t i = 0; i < n; i++) f[i] = (float)(f[i] / by);
    } else if (!strcmp(as_dtype_name(buf->dtype), "float64")) {
        double *d = p;
        for (int64_t i = 0; i < n; i++) d[i] /= by;
    }
}
