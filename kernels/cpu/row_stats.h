/* A row's statistics in independent chains: a single chain waits on each
 * add or compare, and left the norms, the softmax and the cross-entropy
 * latency-bound (the layer norm at 2x PyTorch's time).  Always inlined, so
 * that each vector variant (vector_variants.h) compiles them at its width.
 * The chains' order is fixed: the same sums on every ISA. */
#ifndef AS_CPU_ROW_STATS_H
#define AS_CPU_ROW_STATS_H

#include <math.h>
#include <stdint.h>

#include "as_scalar.h"
#include "vector_variants.h"

/* A row's sum of x (of x y when y is given) in double, eight chains at once
 * (one chain waits on each add). */
AS_VECTOR_IMPL double sum_f32(const float *x, const float *y, int64_t n)
{
    double a[8] = {0};
    int64_t i = 0;
    if (y) {
        for (; i + 8 <= n; i += 8)
            for (int k = 0; k < 8; k++) a[k] += (double)x[i + k] * y[i + k];
        for (; i < n; i++) a[0] += (double)x[i] * y[i];
    } else {
        for (; i + 8 <= n; i += 8)
            for (int k = 0; k < 8; k++) a[k] += x[i + k];
        for (; i < n; i++) a[0] += x[i];
    }
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

/* A row's sum of (x - m)^2 in double, eight chains at once as sum_f32: the
 * reductions, the norms and their backward take their statistics here. */
AS_VECTOR_IMPL double sumsq_dev_f32(const float *x, double m, int64_t n)
{
    double a[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) {
            double d = x[i + k] - m;
            a[k] += d * d;
        }
    for (; i < n; i++) a[0] += (x[i] - m) * (x[i] - m);
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

/* A row's largest x, sixteen lanes at once (one waits on each compare);
 * a NaN is passed over, as a single `x > m ? x : m` chain does. */
AS_VECTOR_IMPL float max_f32(const float *x, int64_t n)
{
    float a[16];
    for (int k = 0; k < 16; k++) a[k] = -INFINITY;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int k = 0; k < 16; k++) a[k] = x[i + k] > a[k] ? x[i + k] : a[k];
    for (; i < n; i++) a[0] = x[i] > a[0] ? x[i] : a[0];
    for (int k = 1; k < 16; k++) a[0] = a[k] > a[0] ? a[k] : a[0];
    return a[0];
}

/* x[base + i], i < k, of a float32, float16 or bfloat16 array as float32 into
 * buf, for the sums above (the dtype's test outside the loops) */
AS_VECTOR_IMPL void load_f32_chunk(float *buf, const void *x, as_dtype dt, int64_t base, int64_t k)
{
    if (dt == AS_BF16)
        for (int64_t i = 0; i < k; i++) buf[i] = as_bf16_to_f32(((const uint16_t *)x)[base + i]);
    else if (dt == AS_F16)
        for (int64_t i = 0; i < k; i++) buf[i] = as_f16_to_f32(((const uint16_t *)x)[base + i]);
    else
        for (int64_t i = 0; i < k; i++) buf[i] = ((const float *)x)[base + i];
}

#endif
