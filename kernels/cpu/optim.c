/* Fused SGD and AdamW steps (kernels/cpu/optim.h): each element of a
 * parameter is read once, updated in float32 with torch.optim's operation
 * order (so the rounding matches its single-tensor path), and written once.
 * Elementwise, so any thread split gives the same bits. */
#include "optim.h"

#include <math.h>

#include "as_scalar.h"
#include "vector_variants.h"

#define PAR_MIN 32768 /* below this a thread team costs more than it saves */

void as_cpu_sgd_step(const as_sgd_params *h, int64_t n, void *param, as_dtype pdt, const void *grad,
                     as_dtype gdt, float *buf, float *master, bool first)
{
    const float lr = (float)h->lr, mom = (float)h->momentum, damp = (float)(1.0 - h->dampening);
    const float wd = (float)h->weight_decay;
    const bool use_mom = h->momentum != 0, wdecay = h->weight_decay != 0;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        float p = master ? master[i] : as_load_f32(param, pdt, i);
        float d = as_load_f32(grad, gdt, i);
        if (h->maximize) d = -d;
        if (wdecay) d = d + wd * p;
        if (use_mom) {
            float b = first ? d : buf[i] * mom + damp * d;
            buf[i] = b;
            d = h->nesterov ? d + mom * b : b;
        }
        p = p + -lr * d;
        if (master) master[i] = p;
        as_store_f32(param, pdt, i, p);
    }
}

/* The common case, float32 parameter and gradient without amsgrad, written
 * so that the compiler vectorises it (sqrt and division vectorise exactly,
 * so the bits are the general loop's), at the CPU's vector width
 * (vector_variants.h: SSE2's made the step 2x slower), a range at a time. */
AS_VECTOR_IMPL void adamw_f32_impl(const as_adamw_consts *cp, int maximize, int64_t i0, int64_t i1,
                                   float *restrict p, const float *restrict g, float *restrict m, float *restrict v)
{
    const as_adamw_consts c = *cp;
    const float sign = maximize ? -1.0f : 1.0f, w1c = 1.0f - c.w1;
    const bool near = c.w1 < 0.5f, l2 = c.l2 != 0.0f;
    /* GCC vectorises this only when asked (simd); clang does by itself, and
     * under -fsanitize=undefined warns that it could not */
#if !defined(__clang__)
#pragma omp simd
#endif
    for (int64_t i = i0; i < i1; i++) {
        float gi = sign * g[i];
        float pi = p[i] * c.decay;
        gi = l2 ? gi + c.l2 * pi : gi;
        float mi = m[i];
        mi = near ? mi + c.w1 * (gi - mi) : gi - (gi - mi) * w1c;
        float vi = v[i] * c.b2 + c.w2 * gi * gi;
        m[i] = mi, v[i] = vi;
        float denom = sqrtf(vi) / c.bc2_sqrt + c.eps;
        p[i] = pi + -c.step_size * (mi / denom);
    }
}
AS_VECTOR_VARIANTS(adamw_f32, (const as_adamw_consts *cp, int maximize, int64_t i0, int64_t i1, float *p,
                               const float *g, float *m, float *v), (cp, maximize, i0, i1, p, g, m, v))

#define RANGE 16384

static void adamw_f32(const as_adamw_consts *c, bool maximize, int64_t n, float *p, const float *g, float *m,
                      float *v)
{
    adamw_f32_fn f = adamw_f32_pick();
    const int64_t ranges = (n + RANGE - 1) / RANGE;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (int64_t r = 0; r < ranges; r++) f(c, maximize, r * RANGE, r + 1 < ranges ? (r + 1) * RANGE : n, p, g, m, v);
}

void as_cpu_adamw_step(const as_adamw_params *h, int64_t n, void *param, as_dtype pdt, const void *grad,
                       as_dtype gdt, float *m, float *v, float *vmax, float *master)
{
    const as_adamw_consts c = as_adamw_consts_of(h);
    const bool maximize = h->maximize, amsgrad = h->amsgrad && vmax;
    if (pdt == AS_F32 && gdt == AS_F32 && !master && !amsgrad) {
        adamw_f32(&c, maximize, n, param, grad, m, v);
        return;
    }
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        float p = master ? master[i] : as_load_f32(param, pdt, i);
        float g = as_load_f32(grad, gdt, i);
        if (maximize) g = -g;
        p = p * c.decay;
        if (c.l2 != 0.0f) g = g + c.l2 * p;
        /* torch.lerp's two forms, chosen by the weight */
        float mi = m[i];
        mi = c.w1 < 0.5f ? mi + c.w1 * (g - mi) : g - (g - mi) * (1.0f - c.w1);
        float vi = v[i] * c.b2 + c.w2 * g * g;
        m[i] = mi, v[i] = vi;
        if (amsgrad) {
            if (vmax[i] > vi || vmax[i] != vmax[i]) vi = vmax[i]; /* torch.maximum keeps NaN */
            vmax[i] = vi;
        }
        float denom = sqrtf(vi) / c.bc2_sqrt + c.eps;
        p = p + -c.step_size * (mi / denom);
        if (master) master[i] = p;
        as_store_f32(param, pdt, i, p);
    }
}

double as_cpu_sumsq_list(const as_list_item *it, int n)
{
    double total = 0;
    for (int t = 0; t < n; t++) {
        const int64_t m = it[t].n;
        double s = 0;
        if (it[t].dtype == AS_F64) {
            const double *p = it[t].data;
#pragma omp parallel for reduction(+ : s) if (m >= PAR_MIN)
            for (int64_t i = 0; i < m; i++) s += p[i] * p[i];
        } else {
#pragma omp parallel for reduction(+ : s) if (m >= PAR_MIN)
            for (int64_t i = 0; i < m; i++) {
                double x = as_load_f32(it[t].data, it[t].dtype, i);
                s += x * x;
            }
        }
        total += s;
    }
    return total;
}

void as_cpu_scale_list(const as_list_item *it, int n, double s)
{
    for (int t = 0; t < n; t++) {
        const int64_t m = it[t].n;
        if (it[t].dtype == AS_F64) {
            double *p = it[t].data;
#pragma omp parallel for if (m >= PAR_MIN)
            for (int64_t i = 0; i < m; i++) p[i] *= s;
        } else {
            const float f = (float)s;
#pragma omp parallel for if (m >= PAR_MIN)
            for (int64_t i = 0; i < m; i++) as_store_f32(it[t].data, it[t].dtype, i, as_load_f32(it[t].data, it[t].dtype, i) * f);
        }
    }
}
