/* Fused optimizer updates on the CPU: one pass over a parameter, in place.
 * Contracts (checked by runtime/optim): n elements, every buffer contiguous;
 * param and grad of dtype pdt / gdt (float32, float16 or bfloat16); the
 * state (buf, m, v, vmax, master) float32; vmax only with amsgrad.  master,
 * when given, is the float32 copy of a float16 / bfloat16 param: the update
 * runs on it and param receives its rounding.  Math in float32. */
#ifndef AS_CPU_OPTIM_H
#define AS_CPU_OPTIM_H

#include <stdint.h>

#include "as_optim.h"
#include "as_types.h"

/* first: the momentum buffer is set to d instead of updated (its first step). */
void as_cpu_sgd_step(const as_sgd_params *h, int64_t n, void *param, as_dtype pdt, const void *grad,
                     as_dtype gdt, float *buf, float *master, bool first);
/* sum of squares over every element of the n items, in double */
double as_cpu_sumsq_list(const as_list_item *it, int n);
/* every element of the n items multiplied by s, in place */
void as_cpu_scale_list(const as_list_item *it, int n, double s);
void as_cpu_adamw_step(const as_adamw_params *h, int64_t n, void *param, as_dtype pdt, const void *grad,
                       as_dtype gdt, float *m, float *v, float *vmax, float *master);

#endif
