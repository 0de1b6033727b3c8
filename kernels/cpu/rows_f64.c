/* float64 row kernels (CPU only): the float32 ones of rows.c in double, with
 * no float round trip anywhere, for gradcheck and reference computations.
 * Plain loops: float64 is for checking, not for speed. */
#include <math.h>

#include "cpu_kernels.h"

#define PARALLEL_ROWS(rows, n) if ((rows) * (n) >= 65536 && (rows) > 1)

void as_cpu_reduce_rows_f64(as_redop op, const double *x, int64_t rows, int64_t n, int correction, double *out,
                            int64_t *idx)
{
#pragma omp parallel for PARALLEL_ROWS(rows, n)
    for (int64_t r = 0; r < rows; r++) {
        const double *p = x + r * n;
        switch (op) {
        case AS_SUM:
        case AS_MEAN: {
            double s = 0;
            for (int64_t i = 0; i < n; i++) s += p[i];
            out[r] = op == AS_MEAN ? s / (double)n : s;
            break;
        }
        case AS_PROD: {
            double s = 1;
            for (int64_t i = 0; i < n; i++) s *= p[i];
            out[r] = s;
            break;
        }
        case AS_VAR: {
            double m = 0, ss = 0;
            for (int64_t i = 0; i < n; i++) m += p[i];
            m /= (double)n;
            for (int64_t i = 0; i < n; i++) ss += (p[i] - m) * (p[i] - m);
            double d = (double)(n - correction);
            out[r] = d > 0 ? ss / d : NAN;
            break;
        }
        default: { /* max, min, argmax, argmin: NaN wins, first index on ties */
            int is_max = op == AS_MAX || op == AS_ARGMAX;
            int64_t best = 0;
            double v = p[0];
            for (int64_t i = 1; i < n && v == v; i++) {
                double y = p[i];
                if (y != y || (is_max ? y > v : y < v)) v = y, best = i;
            }
            if (out) out[r] = v;
            if (idx) idx[r] = best;
        }
        }
    }
}

void as_cpu_softmax_rows_f64(const double *x, double *y, int64_t rows, int64_t n, int log_)
{
#pragma omp parallel for PARALLEL_ROWS(rows, n)
    for (int64_t r = 0; r < rows; r++) {
        const double *p = x + r * n;
        double *o = y + r * n;
        double m = -INFINITY;
        for (int64_t i = 0; i < n; i++) m = p[i] > m ? p[i] : m;
        if (m == -INFINITY) { /* nothing to attend to: zeros (log: -inf) */
            for (int64_t i = 0; i < n; i++) o[i] = log_ ? -INFINITY : 0.0;
            continue;
        }
        double s = 0;
        for (int64_t i = 0; i < n; i++) {
            double e = exp(p[i] - m);
            if (!log_) o[i] = e;
            s += e;
        }
        if (log_) {
            double ls = m + log(s);
            for (int64_t i = 0; i < n; i++) o[i] = p[i] - ls;
        } else {
            for (int64_t i = 0; i < n; i++) o[i] /= s;
        }
    }
}

void as_cpu_layer_norm_rows_f64(const double *x, double *y, int64_t rows, int64_t n, const double *w,
                                const double *b, double eps)
{
#pragma omp parallel for PARALLEL_ROWS(rows, n)
    for (int64_t r = 0; r < rows; r++) {
        const double *p = x + r * n;
        double *o = y + r * n;
        double m = 0, v = 0;
        for (int64_t i = 0; i < n; i++) m += p[i];
        m /= (double)n;
        for (int64_t i = 0; i < n; i++) v += (p[i] - m) * (p[i] - m);
        double rstd = 1.0 / sqrt(v / (double)n + eps);
        for (int64_t i = 0; i < n; i++) {
            double t = (p[i] - m) * rstd;
            if (w) t *= w[i];
            if (b) t += b[i];
            o[i] = t;
        }
    }
}

void as_cpu_rms_norm_rows_f64(const double *x, double *y, int64_t rows, int64_t n, const double *w, double eps)
{
#pragma omp parallel for PARALLEL_ROWS(rows, n)
    for (int64_t r = 0; r < rows; r++) {
        const double *p = x + r * n;
        double *o = y + r * n;
        double ss = 0;
        for (int64_t i = 0; i < n; i++) ss += p[i] * p[i];
        double rr = 1.0 / sqrt(ss / (double)n + eps);
        for (int64_t i = 0; i < n; i++) o[i] = p[i] * rr * (w ? w[i] : 1.0);
    }
}

void as_cpu_scatter_add_rows_f64(double *dst, const double *src, const int64_t *idx, int64_t outer, int64_t n,
                                 int64_t size, int64_t row)
{
    /* serial and in index order: deterministic, and float64 is not a speed path */
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < n; i++) {
            double *d = dst + (o * size + idx[i]) * row;
            const double *s = src + (o * n + i) * row;
            for (int64_t j = 0; j < row; j++) d[j] += s[j];
        }
}
