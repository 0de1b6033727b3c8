/* What the runtime needs from a device, behind one table: memory, copies
 * and the kernels the op front-ends call.  The CPU's table is built in
 * (runtime/ops/dispatch.c); CUDA's registers itself at start
 * (runtime/cuda/backend.c, through as_init).  Nothing in base/ names a
 * device's code: storage and copies go through the table too. */
#ifndef AS_BACKEND_H
#define AS_BACKEND_H

#include "as_types.h"
#include "attnswap/tensor.h"

/* A tensor as a kernel reads it (kernels/common/as_types.h). */
static inline as_kview as_kview_of(const as_tensor *t)
{
    as_kview v = {.data = as_data(t), .dtype = t->dtype, .ndim = t->ndim};
    for (int d = 0; d < t->ndim; d++) v.shape[d] = t->shape[d], v.stride[d] = t->stride[d];
    return v;
}

#endif
