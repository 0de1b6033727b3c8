/* The strided iterator every elementwise kernel runs on, CPU and CUDA
 * (NumPy's and TensorIterator's idea): operands of one shape (broadcast dims
 * have stride 0) are walked as runs along the innermost dim, after merging
 * dims that are contiguous for every operand.  Computed on the host without
 * touching memory; a CUDA kernel takes it by value and walks it the same way. */
#ifndef AS_ITER_H
#define AS_ITER_H

#include <stdint.h>

#include "as_types.h"

#define AS_ITER_MAX_OPS 4

typedef struct {
    int nops, ndim;
    int64_t numel;
    int64_t shape[AS_MAX_DIMS];
    int64_t stride[AS_ITER_MAX_OPS][AS_MAX_DIMS]; /* bytes */
    char *base[AS_ITER_MAX_OPS];
} as_iter;

/* ops[0] is usually the output; every operand must already have `ndim, shape`
 * (expand inputs first).  Runs follow row-major order of the shape. */
void as_iter_init(as_iter *it, int nops, const as_kview *const *ops, int ndim, const int64_t *shape);

#endif
