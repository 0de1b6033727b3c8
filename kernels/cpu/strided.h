/* Running the strided iterator (kernels/common/as_iter.h) on the CPU: a
 * loop sees byte pointers and byte strides of one run at a time. */
#ifndef AS_CPU_STRIDED_H
#define AS_CPU_STRIDED_H

#include <stdint.h>

#include "as_iter.h"

typedef void (*as_cpu_loop)(void *ctx, char **ptrs, const int64_t *strides, int64_t n);

/* Calls loop for every run covering flat indices [begin, end). */
void as_cpu_iter_range(const as_iter *it, int64_t begin, int64_t end, as_cpu_loop loop, void *ctx);
/* Whole iteration, split over OpenMP threads when large enough. */
void as_cpu_iter_run(const as_iter *it, as_cpu_loop loop, void *ctx);

/* Elements per thread below which a loop stays single-threaded. */
#define AS_CPU_PARALLEL_GRAIN 32768

#endif
