/* Fused SGD and AdamW steps (kernels/cpu/optim.h): each element of a
 * parameter is read once, updated in float32 with torch.optim's operation
 * order (so the rounding matches its single-tensor path), and written once.
 * Elementwise, so any thread split gives the same bits. */
#include "optim.h"

#include <math.h>

#include "as_scalar.h"
#include "row_stats.h"
#include "vector_variants.h"

#define PAR_MIN 32768 /* below this a thread team costs more than it saves */
#define MAX_PARTS 256

/* The sweeps below cut n elements into parts that depend on n alone: about
 * PAR_MIN each, at most MAX_PARTS; part q is [*i0, *i1). */
static int64_t parts_of(int64_t n)
{
    int64_t parts = n / PAR_MIN;
    return parts < 1 ? 1 : parts > MAX_PARTS ? MAX_PARTS : parts;
}

static void part_bounds(int64_t n, int64_t parts, int64_t q, int64_t *i0, int64_t *i1)
{
    const int64_t len = (n + parts - 1) / parts;
    *i0 = q * len < n ? q * len : n;
    *i1 = *i0 + len < n ? *i0 + len : n;
}

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

static void adamw_f32(const as_adamw_consts *c, bool maximize, int64_t n, float *p, const float *g, float *m,
                      float *v)
{
    adamw_f32_fn f = adamw_f32_pick();
    const int64_t parts = parts_of(n);
#pragma omp parallel for schedule(static) if (parts > 1)
    for (int64_t q = 0; q < parts; q++) {
        int64_t i0, i1;
        part_bounds(n, parts, q, &i0, &i1);
        f(c, maximize, i0, i1, p, g, m, v);
    }
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

/* clip_grad_norm_'s sweeps.  Each part of an item is summed in chains
 * (row_stats.h) at the CPU's vector width, the parts added in order: the same
 * norm for any thread count.  (One double chain per thread made the sum 7 %
 * of GPT-2's CPU step.) */

AS_VECTOR_IMPL void sumsq_range_impl(const void *data, as_dtype dt, int64_t i0, int64_t i1, double *out)
{
    if (dt == AS_F64) {
        const double *p = data;
        double a[8] = {0};
        int64_t i = i0;
        for (; i + 8 <= i1; i += 8)
            for (int k = 0; k < 8; k++) a[k] += p[i + k] * p[i + k];
        for (; i < i1; i++) a[0] += p[i] * p[i];
        *out = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
    } else if (dt == AS_F32) {
        const float *p = (const float *)data + i0;
        *out = sum_f32(p, p, i1 - i0);
    } else {
        float buf[2048];
        double s = 0;
        for (int64_t j0 = i0; j0 < i1; j0 += 2048) {
            int64_t k = i1 - j0 < 2048 ? i1 - j0 : 2048;
            load_f32_chunk(buf, data, dt, j0, k);
            s += sum_f32(buf, buf, k);
        }
        *out = s;
    }
}
AS_VECTOR_VARIANTS(sumsq_range, (const void *data, as_dtype dt, int64_t i0, int64_t i1, double *out),
                   (data, dt, i0, i1, out))

AS_VECTOR_IMPL void scale_range_impl(void *data, as_dtype dt, int64_t i0, int64_t i1, double s)
{
    if (dt == AS_F64) {
        double *p = data;
        for (int64_t i = i0; i < i1; i++) p[i] *= s;
    } else if (dt == AS_F32) {
        float *p = data;
        const float f = (float)s;
        for (int64_t i = i0; i < i1; i++) p[i] *= f;
    } else {
        const float f = (float)s;
        for (int64_t i = i0; i < i1; i++) as_store_f32(data, dt, i, as_load_f32(data, dt, i) * f);
    }
}
AS_VECTOR_VARIANTS(scale_range, (void *data, as_dtype dt, int64_t i0, int64_t i1, double s), (data, dt, i0, i1, s))


double as_cpu_sumsq_list(const as_list_item *it, int n)
{
    sumsq_range_fn f = sumsq_range_pick();
    double total = 0, part[MAX_PARTS];
    for (int t = 0; t < n; t++) {
        const int64_t m = it[t].n, parts = parts_of(m);
#pragma omp parallel for if (parts > 1)
        for (int64_t q = 0; q < parts; q++) {
            int64_t i0, i1;
            part_bounds(m, parts, q, &i0, &i1);
            f(it[t].data, it[t].dtype, i0, i1, &part[q]);
        }
        for (int64_t q = 0; q < parts; q++) total += part[q];
    }
    return total;
}

void as_cpu_scale_list(const as_list_item *it, int n, double s)
{
    scale_range_fn f = scale_range_pick();
    for (int t = 0; t < n; t++) {
        const int64_t m = it[t].n, parts = parts_of(m);
#pragma omp parallel for if (parts > 1)
        for (int64_t q = 0; q < parts; q++) {
            int64_t i0, i1;
            part_bounds(m, parts, q, &i0, &i1);
            f(it[t].data, it[t].dtype, i0, i1, s);
        }
    }
}
