/* Fused optimizer updates (torch.optim's SGD, Adam and AdamW), one pass over
 * a parameter, in place, on the parameter's device (CPU or CUDA).  The Lua
 * optimizers (lua/attnswap/optim) keep the state and call these per tensor.
 *
 * param: float32, float16 or bfloat16, contiguous (a non-contiguous
 * parameter is refused: its elements would not be the state's).  grad: the
 * shape of param, any float dtype, on its device.  State buffers: float32,
 * contiguous, param's element count and device.  master: NULL, or for a
 * float16 / bfloat16 param its float32 copy, which the update runs on (the
 * param then receives its rounding: "master weights").  The math is float32
 * (the scalars given as doubles, cast once), in torch.optim's order.
 * Each returns 0, or -1 with "sgd_step: ..." / "adamw_step: ..." set and
 * nothing written. */
#ifndef AS_OPTIM_H
#define AS_OPTIM_H

#include <stdbool.h>

#include "as_optim.h"
#include "attnswap/tensor.h"

/* momentum_buffer: needed when h->momentum != 0 (NULL otherwise); first: its
 * first step (the buffer is set to the update direction, as torch does). */
int as_sgd_step(as_tensor *param, const as_tensor *grad, as_tensor *momentum_buffer, as_tensor *master,
                const as_sgd_params *h, bool first);
/* h->step: the step count after this step (1 on the first); max_exp_avg_sq
 * needed with h->amsgrad, NULL otherwise. */
int as_adamw_step(as_tensor *param, const as_tensor *grad, as_tensor *exp_avg, as_tensor *exp_avg_sq,
                  as_tensor *max_exp_avg_sq, as_tensor *master, const as_adamw_params *h);

/* clip_grad_norm_'s two sweeps over many tensors at once (one device, float
 * dtypes, contiguous): the sum of squares of every element, as a 0-d
 * float32 tensor on their device (n = 0: a CPU zero), and each tensor
 * multiplied in place by s.  A few kernel launches for any n. */
as_tensor *as_sum_squares(int n, const as_tensor *const *ts);
int as_scale_all_(int n, as_tensor *const *ts, double s);

#endif
