/* The strided iterator every elementwise CPU kernel runs on (NumPy's and
 * TensorIterator's idea): operands of one shape (broadcast dims have stride
 * 0) are walked as runs along the innermost dim, after merging dims that are
 * contiguous for every operand.  A loop sees byte pointers and byte strides. */
#ifndef AS_CPU_STRIDED_H
#define AS_CPU_STRIDED_H

#include <stdint.h>

#include "attnswap/tensor.h"

#define AS_ITER_MAX_OPS 4

typedef void (*as_cpu_loop)(void *ctx, char **ptrs, const int64_t *strides, int64_t n);

typedef struct {
    int nops, ndim;
    int64_t numel;
    int64_t shape[AS_MAX_DIMS];
    int64_t stride[AS_ITER_MAX_OPS][AS_MAX_DIMS]; /* bytes */
    char *base[AS_ITER_MAX_OPS];
} as_cpu_iter;

/* ops[0] is usually the output; every operand must already have `ndim, shape`
 * (expand inputs first).  Runs follow row-major order of the shape. */
void as_cpu_iter_init(as_cpu_iter *it, int nops, const as_tensor *const *ops, int ndim,
                      const int64_t *shape);
/* Calls loop for every run covering flat indices [begin, end). */
void as_cpu_iter_range(const as_cpu_iter *it, int64_t begin, int64_t end, as_cpu_loop loop,
                       void *ctx);
/* Whole iteration, split over OpenMP threads when large enough. */
void as_cpu_iter_run(const as_cpu_iter *it, as_cpu_loop loop, void *ctx);

/* Elements per thread below which a loop stays single-threaded. */
#define AS_CPU_PARALLEL_GRAIN 32768

#endif
