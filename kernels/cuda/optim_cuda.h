/* Fused optimizer updates on CUDA: the twins of kernels/cpu/optim.h, same
 * contracts (device pointers, contiguous; state float32), same float32 math
 * in the same order.  Queued on the current stream; 0 or the cudaError_t of
 * the launch. */
#ifndef AS_CUDA_OPTIM_H
#define AS_CUDA_OPTIM_H

#include <stdint.h>

#include "as_optim.h"
#include "as_types.h"

#ifdef __cplusplus
extern "C" {
#endif

int as_cuda_sgd_step(const as_sgd_params *h, int64_t n, void *param, as_dtype pdt, const void *grad, as_dtype gdt,
                     float *buf, float *master, bool first);
/* the sum of squares of every element of the n items into *out (one float
 * on the device, overwritten), in float32 partials; and the in-place scaling */
int as_cuda_sumsq_list(const as_list_item *it, int n, float *out);
int as_cuda_scale_list(const as_list_item *it, int n, float s);
int as_cuda_adamw_step(const as_adamw_params *h, int64_t n, void *param, as_dtype pdt, const void *grad,
                       as_dtype gdt, float *m, float *v, float *vmax, float *master);

#ifdef __cplusplus
}
#endif

#endif
