/* CPU kernels.  A kernel trusts its caller (runtime/ops*.c) to have checked
 * shapes, dtypes and devices; it never allocates a result and never fails. */
#ifndef AS_CPU_KERNELS_H
#define AS_CPU_KERNELS_H

#include "tensor.h"

/* dst and src have the same shape (src expanded); dtypes may differ. */
void as_cpu_copy(as_tensor *dst, const as_tensor *src);
void as_cpu_fill(as_tensor *dst, double value);

#endif
