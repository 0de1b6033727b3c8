/* Row kernels: reductions, softmax and norms over contiguous float32 rows,
 * parallel over rows.  Sums accumulate in double. */
#include <math.h>

#include "attention_flash.h"
#include "cpu_kernels.h"
#include "row_stats.h"
#include "vector_variants.h"

#define PARALLEL_ROWS(rows, n) if ((rows) * (n) >= 65536 && (rows) > 1)

/* sum, mean, var (op), the row statistics that vectorise */
AS_VECTOR_IMPL void moment_row_impl(as_redop op, const float *p, int64_t n, int correction, float *out)
{
    if (op == AS_VAR) {
        double m = n > 0 ? sum_f32(p, NULL, n) / (double)n : 0, d = (double)(n - correction);
        *out = (float)(d > 0 ? sumsq_dev_f32(p, m, n) / d : NAN);
    } else {
        double s = sum_f32(p, NULL, n);
        *out = (float)(op == AS_MEAN ? s / (double)n : s);
    }
}
AS_VECTOR_VARIANTS(moment_row, (as_redop op, const float *p, int64_t n, int correction, float *out),
                   (op, p, n, correction, out))

void as_cpu_reduce_rows(as_redop op, const float *x, int64_t rows, int64_t n, int correction, float *out,
                        int64_t *idx)
{
    if (op == AS_SUM || op == AS_MEAN || op == AS_VAR) {
        moment_row_fn f = moment_row_pick();
#pragma omp parallel for PARALLEL_ROWS(rows, n)
        for (int64_t r = 0; r < rows; r++) f(op, x + r * n, n, correction, out + r);
        return;
    }
#pragma omp parallel for PARALLEL_ROWS(rows, n)
    for (int64_t r = 0; r < rows; r++) {
        const float *p = x + r * n;
        if (op == AS_PROD) {
            double s = 1;
            for (int64_t i = 0; i < n; i++) s *= p[i];
            out[r] = (float)s;
            continue;
        }
        /* max, min, argmax, argmin: NaN wins, first index on ties */
        int is_max = op == AS_MAX || op == AS_ARGMAX;
        int64_t best = 0;
        float v = p[0];
        for (int64_t i = 1; i < n && v == v; i++) {
            float y = p[i];
            if (y != y || (is_max ? y > v : y < v)) v = y, best = i;
        }
        if (out) out[r] = v;
        if (idx) idx[r] = best;
    }
}

void as_cpu_reduce_rows_i64(as_redop op, const int64_t *x, int64_t rows, int64_t n, int64_t *out)
{
#pragma omp parallel for PARALLEL_ROWS(rows, n)
    for (int64_t r = 0; r < rows; r++) {
        const int64_t *p = x + r * n;
        int64_t acc = op == AS_PROD ? 1 : 0, best = 0;
        for (int64_t i = 0; i < n; i++) {
            switch (op) {
            case AS_SUM: acc = (int64_t)((uint64_t)acc + (uint64_t)p[i]); break;
            case AS_PROD: acc = (int64_t)((uint64_t)acc * (uint64_t)p[i]); break;
            case AS_MAX: if (i == 0 || p[i] > acc) acc = p[i]; break;
            case AS_MIN: if (i == 0 || p[i] < acc) acc = p[i]; break;
            case AS_ARGMAX: if (p[i] > p[best]) best = i; break;
            case AS_ARGMIN: if (p[i] < p[best]) best = i; break;
            default: break;
            }
        }
        out[r] = (op == AS_ARGMAX || op == AS_ARGMIN) ? best : acc;
    }
}

/* One row of softmax (log: log-softmax) */
AS_VECTOR_IMPL void softmax_row_impl(const float *p, float *o, int64_t n, int log)
{
    float m = max_f32(p, n);
    if (m == -INFINITY) { /* nothing to attend to: zeros (log: -inf) */
        for (int64_t i = 0; i < n; i++) o[i] = log ? -INFINITY : 0.0f;
        return;
    }
    /* e^(x - m) through the flash kernels' vector exp (libm's expf is
     * scalar); for log-softmax o is scratch until the last pass */
    for (int64_t i = 0; i < n; i++) o[i] = p[i] - m;
    as_cpu_flash_exp(o, o, n);
    double s = sum_f32(o, NULL, n);
    if (log) {
        float ls = (float)(m + logf((float)s));
        for (int64_t i = 0; i < n; i++) o[i] = p[i] - ls;
    } else {
        float inv = (float)(1.0 / s);
        for (int64_t i = 0; i < n; i++) o[i] *= inv;
    }
}
AS_VECTOR_VARIANTS(softmax_row, (const float *p, float *o, int64_t n, int log), (p, o, n, log))

void as_cpu_softmax_rows(const float *x, float *y, int64_t rows, int64_t n, int log)
{
    softmax_row_fn f = softmax_row_pick();
#pragma omp parallel for PARALLEL_ROWS(rows, n)
    for (int64_t r = 0; r < rows; r++) f(x + r * n, y + r * n, n, log);
}

AS_VECTOR_IMPL void softmax_bwd_row_impl(const float *yp, const float *gp, float *o, int64_t n, int log)
{
    if (log) {
        float s = (float)sum_f32(gp, NULL, n);
        as_cpu_flash_exp(yp, o, n); /* y <= 0: e^y in (0, 1]; -inf gives 0 */
        for (int64_t i = 0; i < n; i++) o[i] = gp[i] - o[i] * s;
    } else {
        float s = (float)sum_f32(gp, yp, n);
        for (int64_t i = 0; i < n; i++) o[i] = yp[i] * (gp[i] - s);
    }
}
AS_VECTOR_VARIANTS(softmax_bwd_row, (const float *yp, const float *gp, float *o, int64_t n, int log),
                   (yp, gp, o, n, log))

void as_cpu_softmax_bwd_rows(const float *y, const float *g, float *out, int64_t rows, int64_t n, int log)
{
    softmax_bwd_row_fn f = softmax_bwd_row_pick();
#pragma omp parallel for PARALLEL_ROWS(rows, n)
    for (int64_t r = 0; r < rows; r++) f(y + r * n, g + r * n, out + r * n, n, log);
}

/* The norms' backward sum of dy xh, dy = g w and xh = (x - m) rstd, eight
 * chains as sum_f32 (with sum dy in the same loop gcc left both scalar) */
AS_VECTOR_IMPL double sum_dy_xh(const float *p, const float *w, const float *gp, float mf, float rstd, int64_t n)
{
    double a[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) {
            float xh = (p[i + k] - mf) * rstd, dy = w ? gp[i + k] * w[i + k] : gp[i + k];
            a[k] += (double)dy * xh;
        }
    for (; i < n; i++) {
        float xh = (p[i] - mf) * rstd, dy = w ? gp[i] * w[i] : gp[i];
        a[0] += (double)dy * xh;
    }
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

AS_VECTOR_IMPL void norm_bwd_row_impl(const float *p, const float *w, const float *gp, float *dx, float *gxh,
                                      int64_t n, double eps, int rms)
{
    double m = rms ? 0 : sum_f32(p, NULL, n) / (double)n;
    float rstd = (float)(1.0 / sqrt(sumsq_dev_f32(p, m, n) / (double)n + eps)), mf = (float)m;
    /* w NULL or not in two places, so that each copy vectorises with no test inside */
    double sdy = rms ? 0 : sum_f32(gp, w, n), sdyxh = w ? sum_dy_xh(p, w, gp, mf, rstd, n)
                                                        : sum_dy_xh(p, NULL, gp, mf, rstd, n);
    float mdy = rms ? 0.0f : (float)(sdy / (double)n), mdyxh = (float)(sdyxh / (double)n);
    for (int64_t i = 0; i < n; i++) {
        float xh = (p[i] - mf) * rstd, dy = w ? gp[i] * w[i] : gp[i];
        if (dx) dx[i] = rstd * (dy - mdy - xh * mdyxh);
        if (gxh) gxh[i] = gp[i] * xh;
    }
}
AS_VECTOR_VARIANTS(norm_bwd_row, (const float *p, const float *w, const float *gp, float *dx, float *gxh, int64_t n,
                                  double eps, int rms), (p, w, gp, dx, gxh, n, eps, rms))

void as_cpu_norm_bwd_rows(const float *x, const float *w, const float *g, float *dx, float *gxh, int64_t rows,
                          int64_t n, double eps, int rms)
{
    norm_bwd_row_fn f = norm_bwd_row_pick();
#pragma omp parallel for PARALLEL_ROWS(rows, n)
    for (int64_t r = 0; r < rows; r++)
        f(x + r * n, w, g + r * n, dx ? dx + r * n : NULL, gxh ? gxh + r * n : NULL, n, eps, rms);
}

AS_VECTOR_IMPL void layer_norm_row_impl(const float *p, float *o, int64_t n, const float *w, const float *b,
                                        double eps)
{
    double m = sum_f32(p, NULL, n) / (double)n;
    float rstd = (float)(1.0 / sqrt(sumsq_dev_f32(p, m, n) / (double)n + eps)), mf = (float)m;
    /* one loop per case, so that each vectorises without a test inside */
    if (w && b)
        for (int64_t i = 0; i < n; i++) o[i] = (p[i] - mf) * rstd * w[i] + b[i];
    else if (w)
        for (int64_t i = 0; i < n; i++) o[i] = (p[i] - mf) * rstd * w[i];
    else if (b)
        for (int64_t i = 0; i < n; i++) o[i] = (p[i] - mf) * rstd + b[i];
    else
        for (int64_t i = 0; i < n; i++) o[i] = (p[i] - mf) * rstd;
}
AS_VECTOR_VARIANTS(layer_norm_row, (const float *p, float *o, int64_t n, const float *w, const float *b, double eps),
                   (p, o, n, w, b, eps))

void as_cpu_layer_norm_rows(const float *x, float *y, int64_t rows, int64_t n, const float *w,
                            const float *b, double eps)
{
    layer_norm_row_fn f = layer_norm_row_pick();
#pragma omp parallel for PARALLEL_ROWS(rows, n)
    for (int64_t r = 0; r < rows; r++) f(x + r * n, y + r * n, n, w, b, eps);
}

AS_VECTOR_IMPL void rms_norm_row_impl(const float *p, float *o, int64_t n, const float *w, double eps)
{
    float rr = (float)(1.0 / sqrt(sum_f32(p, p, n) / (double)n + eps));
    if (w)
        for (int64_t i = 0; i < n; i++) o[i] = p[i] * rr * w[i];
    else
        for (int64_t i = 0; i < n; i++) o[i] = p[i] * rr;
}
AS_VECTOR_VARIANTS(rms_norm_row, (const float *p, float *o, int64_t n, const float *w, double eps), (p, o, n, w, eps))

void as_cpu_rms_norm_rows(const float *x, float *y, int64_t rows, int64_t n, const float *w, double eps)
{
    rms_norm_row_fn f = rms_norm_row_pick();
#pragma omp parallel for PARALLEL_ROWS(rows, n)
    for (int64_t r = 0; r < rows; r++) f(x + r * n, y + r * n, n, w, eps);
}
