/* The parameter blocks of the fused optimizer updates, shared by the CPU
 * (kernels/cpu/optim.c), CUDA (kernels/cuda/optim.cu) and the runtime
 * front-end (runtime/optim).  Scalars are doubles as torch.optim holds them;
 * the kernels compute in float32 with them cast once, as PyTorch's do. */
#ifndef AS_OPTIM_PARAMS_H
#define AS_OPTIM_PARAMS_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>

#include "as_types.h"

/* torch.optim.SGD: d = g (-g when maximize) (+ weight_decay * p);
 * momentum: buf = d on the first step, else momentum * buf + (1 - dampening) * d,
 * then d = d + momentum * buf (nesterov) or d = buf;  p -= lr * d. */
typedef struct {
    double lr, momentum, dampening, weight_decay;
    bool nesterov, maximize;
} as_sgd_params;

/* torch.optim.AdamW (decoupled) and Adam (!decoupled: weight decay as an L2
 * term added to the gradient), step t >= 1:
 *   AdamW: p *= 1 - lr * wd            Adam: g += wd * p
 *   m = lerp(m, g, 1 - b1);  v = b2 * v + (1 - b2) * g * g
 *   amsgrad: vmax = max(vmax, v), used for v below
 *   p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps) */
typedef struct {
    double lr, beta1, beta2, eps, weight_decay;
    int64_t step;
    bool decoupled, amsgrad, maximize;
} as_adamw_params;

/* The scalars every element of one AdamW step shares, computed once in double. */
typedef struct {
    float decay;    /* 1 - lr * wd (AdamW), 1 otherwise */
    float l2;       /* wd (Adam), 0 otherwise */
    float w1;       /* 1 - b1, the lerp weight */
    float b2, w2;   /* b2, 1 - b2 */
    float step_size; /* lr / (1 - b1^t) */
    float bc2_sqrt; /* sqrt(1 - b2^t) */
    float eps;
} as_adamw_consts;

static inline as_adamw_consts as_adamw_consts_of(const as_adamw_params *h)
{
    as_adamw_consts c;
    double t = (double)h->step;
    c.decay = h->decoupled ? (float)(1.0 - h->lr * h->weight_decay) : 1.0f;
    c.l2 = h->decoupled ? 0.0f : (float)h->weight_decay;
    c.w1 = (float)(1.0 - h->beta1);
    c.b2 = (float)h->beta2;
    c.w2 = (float)(1.0 - h->beta2);
    c.step_size = (float)(h->lr / (1.0 - pow(h->beta1, t)));
    c.bc2_sqrt = (float)sqrt(1.0 - pow(h->beta2, t));
    c.eps = (float)h->eps;
    return c;
}

/* One tensor of a multi-tensor sweep (clip_grad_norm_'s norm and scaling):
 * a contiguous buffer of n elements of a float dtype, all of one sweep on
 * one device.  One or a few launches for any number of tensors, where a
 * kernel (and a host round trip through the runtime) per tensor made the
 * clip the step's third-largest cost on a GPU. */
typedef struct {
    void *data;
    int64_t n;
    as_dtype dtype; /* F32, F16, BF16 (and F64 on the CPU) */
} as_list_item;

#endif
