/* Row kernels: reductions, softmax and norms over contiguous float32 rows,
 * parallel over rows.  Sums accumulate in double. */
#include <math.h>

#include "attention_flash.h"
#include "cpu_kernels.h"

#define PARALLEL_ROWS(rows, n) if ((rows) * (n) >= 65536 && (rows) > 1)

/* A row's sum of x (of x y when y is given) in double, eight chains at once
 * (one chain waits on each add). */
static double sum_f32(const float *x, const float *y, int64_t n)
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

/* A row's sum of (x - m)^2 in double, eight chains at once as sum_f32: a
 * single chain left the layer norm latency-bound, 2x PyTorch's time.  The
 * reductions, the norms and their backward all take their statistics here. */
static double sumsq_dev_f32(const float *x, double m, int64_t n)
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

void as_cpu_reduce_rows(as_redop op, const float *x, int64_t rows, int64_t n, int correction, float *out,
                        int64_t *idx)
{
#pragma omp parallel for PARALLEL_ROWS(rows, n)
    for (int64_t r = 0; r < rows; r++) {
        const float *p = x + r * n;
        switch (op) {
        case AS_SUM:
        case AS_MEAN: {
            double s = sum_f32(p, NULL, n);
            out[r] = (float)(op == AS_MEAN ? s / (double)n : s);
            break;
        }
        case AS_PROD: {
            double s = 1;
            for (int64_t i = 0; i < n; i++) s *= p[i];
            out[r] = (float)s;
            break;
        }
        case AS_VAR: {
            double m = n > 0 ? sum_f32(p, NULL, n) / (double)n : 0, d = (double)(n - correction);
            out[r] = (float)(d > 0 ? sumsq_dev_f32(p, m, n) / d : NAN);
            break;
        }
        default: { /* max, min, argmax, argmin: NaN wins, first index on ties */
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

void as_cpu_softmax_rows(const float *x, float *y, int64_t rows, int64_t n, int log)
{
#pragma omp parallel for PARALLEL_ROWS(rows, n)
    for (int64_t r = 0; r < rows; r++) {
        const float *p = x + r * n;
        float *o = y + r * n;
        float m = -INFINITY;
        for (int64_t i = 0; i < n; i++) m = p[i] > m ? p[i] : m;
        if (m == -INFINITY) { /* nothing to attend to: zeros (log: -inf) */
            for (int64_t i = 0; i < n; i++) o[i] = log ? -INFINITY : 0.0f;
            continue;
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
}

void as_cpu_softmax_bwd_rows(const float *y, const float *g, float *out, int64_t rows, int64_t n, int log)
{
#pragma omp parallel for PARALLEL_ROWS(rows, n)
    for (int64_t r = 0; r < rows; r++) {
        const float *yp = y + r * n, *gp = g + r * n;
        float *o = out + r * n;
        if (log) {
            float s = (float)sum_f32(gp, NULL, n);
            as_cpu_flash_exp(yp, o, n); /* y <= 0: e^y in (0, 1]; -inf gives 0 */
            for (int64_t i = 0; i < n; i++) o[i] = gp[i] - o[i] * s;
        } else {
            float s = (float)sum_f32(gp, yp, n);
            for (int64_t i = 0; i < n; i++) o[i] = yp[i] * (gp[i] - s);
        }
    }
}

void as_cpu_norm_bwd_rows(const float *x, const float *w, const float *g, float *dx, float *gxh, int64_t rows,
                          int64_t n, double eps, int rms)
{
#pragma omp parallel for PARALLEL_ROWS(rows, n)
    for (int64_t r = 0; r < rows; r++) {
        const float *p = x + r * n, *gp = g + r * n;
        double m = rms ? 0 : sum_f32(p, NULL, n) / (double)n;
        float rstd = (float)(1.0 / sqrt(sumsq_dev_f32(p, m, n) / (double)n + eps)), mf = (float)m;
        double sdy = 0, sdyxh = 0;
        for (int64_t i = 0; i < n; i++) {
            float xh = (p[i] - mf) * rstd, dy = w ? gp[i] * w[i] : gp[i];
            sdy += dy, sdyxh += (double)dy * xh;
        }
        float mdy = rms ? 0.0f : (float)(sdy / (double)n), mdyxh = (float)(sdyxh / (double)n);
        for (int64_t i = 0; i < n; i++) {
            float xh = (p[i] - mf) * rstd, dy = w ? gp[i] * w[i] : gp[i];
            if (dx) dx[r * n + i] = rstd * (dy - mdy - xh * mdyxh);
            if (gxh) gxh[r * n + i] = gp[i] * xh;
        }
    }
}

void as_cpu_layer_norm_rows(const float *x, float *y, int64_t rows, int64_t n, const float *w,
                            const float *b, double eps)
{
#pragma omp parallel for PARALLEL_ROWS(rows, n)
    for (int64_t r = 0; r < rows; r++) {
        const float *p = x + r * n;
        float *o = y + r * n;
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
}

void as_cpu_rms_norm_rows(const float *x, float *y, int64_t rows, int64_t n, const float *w, double eps)
{
#pragma omp parallel for PARALLEL_ROWS(rows, n)
    for (int64_t r = 0; r < rows; r++) {
        const float *p = x + r * n;
        float *o = y + r * n;
        float rr = (float)(1.0 / sqrt(sum_f32(p, p, n) / (double)n + eps));
        if (w)
            for (int64_t i = 0; i < n; i++) o[i] = p[i] * rr * w[i];
        else
            for (int64_t i = 0; i < n; i++) o[i] = p[i] * rr;
    }
}
