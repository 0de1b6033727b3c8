#include "as_iter.h"

#include "as_scalar.h"

void as_iter_init(as_iter *it, int nops, const as_kview *const *ops, int ndim, const int64_t *shape)
{
    it->nops = nops;
    it->numel = 1;
    int nd = 0;
    int64_t sh[AS_MAX_DIMS], st[AS_ITER_MAX_OPS][AS_MAX_DIMS];
    /* Drop size-1 dims: they never move a pointer. */
    for (int d = 0; d < ndim; d++) {
        it->numel *= shape[d];
        if (shape[d] == 1) continue;
        sh[nd] = shape[d];
        for (int k = 0; k < nops; k++)
            st[k][nd] = ops[k]->stride[d] * (int64_t)as_dtype_size(ops[k]->dtype);
        nd++;
    }
    for (int k = 0; k < nops; k++) it->base[k] = ops[k]->data;
    if (nd == 0) {
        sh[0] = 1;
        for (int k = 0; k < nops; k++) st[k][0] = 0;
        nd = 1;
    }
    /* Merge dim d-1 into d when every operand steps through them as one. */
    int out = 0;
    it->shape[0] = sh[0];
    for (int k = 0; k < nops; k++) it->stride[k][0] = st[k][0];
    for (int d = 1; d < nd; d++) {
        int mergeable = 1;
        for (int k = 0; k < nops; k++)
            if (it->stride[k][out] != st[k][d] * sh[d]) mergeable = 0;
        if (mergeable) {
            it->shape[out] *= sh[d];
            for (int k = 0; k < nops; k++) it->stride[k][out] = st[k][d];
        } else {
            out++;
            it->shape[out] = sh[d];
            for (int k = 0; k < nops; k++) it->stride[k][out] = st[k][d];
        }
    }
    it->ndim = out + 1;
}
