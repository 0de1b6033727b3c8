/* entmax_attention: alpha-entmax in place of softmax (Peters et al. 2019,
 * "Sparse Sequence-to-Sequence Models"; Correia et al. 2019, "Adaptively
 * Sparse Transformers").
 *
 *   entmax_a(z) = argmax_p  p.z + H_a(p)   =>   p_i = [(a - 1) z_i - tau]_+^(1 / (a - 1))
 *
 * with tau the threshold that makes p sum to 1.  a = 2 is sparsemax
 * (Martins & Astudillo 2016: sort, find the support, tau in closed form);
 * a = 1.5 has the exact sort-based threshold of Peters et al.; other a
 * bisect on tau (as Correia et al.'s entmax_bisect), then finish with
 * Newton steps.  Only entries above max - 1 / (a - 1) can be in the
 * support (p_max <= 1 bounds tau from below), so the sorts and the
 * bisection see those candidates alone. */
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "cpu_kernels.h"
#include "zoo_reweight.h"

/* Sorts a[0..n) in descending order: quicksort with a median-of-three pivot,
 * insertion sort below 24 (no comparator calls: the rows sort a few dozen
 * candidates each, thousands of times). */
static void sort_desc(double *a, int64_t n)
{
    while (n > 24) {
        double x = a[0], y = a[n / 2], z = a[n - 1];
        double pivot = x > y ? (y > z ? y : (x > z ? z : x)) : (x > z ? x : (y > z ? z : y));
        int64_t i = 0, j = n - 1;
        for (;;) {
            while (a[i] > pivot) i++;
            while (a[j] < pivot) j--;
            if (i >= j) break;
            double t = a[i];
            a[i] = a[j], a[j] = t;
            i++, j--;
        }
        /* [0, j] >= pivot >= [j + 1, n): recurse on the smaller side */
        if (j + 1 < n - j - 1) {
            sort_desc(a, j + 1);
            a += j + 1, n -= j + 1;
        } else {
            sort_desc(a + j + 1, n - j - 1);
            n = j + 1;
        }
    }
    for (int64_t i = 1; i < n; i++) {
        double t = a[i];
        int64_t j = i;
        for (; j > 0 && a[j - 1] < t; j--) a[j] = a[j - 1];
        a[j] = t;
    }
}

/* A row as the kernel reads it: float32 (the attention kernel's scores and
 * the halves' working copy) or float64 (as_entmax on float64): one of the two
 * set.  Every threshold is computed in double either way. */
typedef struct {
    const float *f;
    const double *d;
} row_in;

static inline double at(row_in r, int64_t j) { return r.f ? (double)r.f[j] : r.d[j]; }

/* Sparsemax threshold of z (shifted so max z = 0): tau = (sum of the top k - 1) / k,
 * k the largest with 1 + k z_(k) > sum of the top k.  cand: scratch. */
static double sparsemax_tau(row_in x, int64_t n, double mx, double *cand)
{
    int64_t K = 0;
    for (int64_t j = 0; j < n; j++) {
        double z = at(x, j) - mx;
        if (z > -1) cand[K++] = z;
    }
    sort_desc(cand, K);
    double cs = 0, tau = 0;
    for (int64_t t = 0; t < K; t++) {
        cs += cand[t];
        if (1 + (double)(t + 1) * cand[t] > cs) tau = (cs - 1) / (double)(t + 1);
        else break;
    }
    return tau;
}

/* 1.5-entmax threshold of X = (z - max) / 2 (Peters et al. 2019, sort-based):
 * over the sorted prefix of size t, tau_t = mean - sqrt((1 - t (meansq - mean^2)) / t);
 * the support is the number of t with tau_t <= X_(t). */
static double entmax15_tau(row_in x, int64_t n, double mx, double *cand)
{
    int64_t K = 0;
    for (int64_t j = 0; j < n; j++) {
        double X = (at(x, j) - mx) / 2;
        if (X > -1) cand[K++] = X;
    }
    sort_desc(cand, K);
    double cs = 0, css = 0, *taus = cand + n;
    int64_t support = 0;
    for (int64_t t = 0; t < K; t++) {
        cs += cand[t], css += cand[t] * cand[t];
        double k = (double)(t + 1), mean = cs / k, ss = k * (css / k - mean * mean);
        double delta = (1 - ss) / k;
        taus[t] = mean - sqrt(delta > 0 ? delta : 0);
        if (taus[t] <= cand[t]) support++;
    }
    return taus[support > 0 ? support - 1 : 0];
}

/* Threshold of X = (a - 1)(z - max) for any other a: bisection on tau in
 * [max X - 1, max X - (1 / n)^(a - 1)] over the candidates X > -1, then Newton. */
static double bisect_tau(row_in x, int64_t n, int64_t finite, double mx, double alpha, double *cand)
{
    double am1 = alpha - 1, inv = 1 / am1;
    int64_t K = 0;
    for (int64_t j = 0; j < n; j++) {
        double X = am1 * (at(x, j) - mx);
        if (X > -1) cand[K++] = X;
    }
    double lo = -1, dm = (-pow(1.0 / (double)finite, am1)) - lo;
    /* bisection until the bracket is narrow on the scale of the power,
     * then Newton from the left: f(tau) = sum (X - tau)_+^inv - 1 is convex
     * and decreasing, so from f(lo) >= 0 the steps rise monotonically to
     * the root without passing it */
    double narrow = 0.05 / inv;
    for (int it = 0; it < 60 && dm > narrow; it++) {
        dm /= 2;
        double mid = lo + dm, f = -1;
        for (int64_t t = 0; t < K; t++)
            if (cand[t] > mid) f += pow(cand[t] - mid, inv);
        if (f >= 0) lo = mid; /* f(lo) >= 0 throughout: sum at lo is >= 1 */
    }
    for (int it = 0; it < 30; it++) {
        double f = -1, df = 0;
        for (int64_t t = 0; t < K; t++) {
            if (cand[t] > lo) {
                double d = cand[t] - lo, pm1 = pow(d, inv - 1);
                f += pm1 * d, df += pm1;
            }
        }
        double step = df > 0 ? f / (inv * df) : 0;
        if (!(step > 0) || !isfinite(step)) break;
        lo += step;
        if (step <= 1e-13 * (1 + fabs(lo))) break;
    }
    return lo;
}

/* p[j] = the unnormalised weights of row x (alpha != 1), false for a row
 * with nothing visible (every entry -inf). */
static bool entmax_p(row_in x, int64_t n, double alpha, double *cand, double *p)
{
    double mx = -INFINITY;
    int64_t finite = 0;
    for (int64_t j = 0; j < n; j++) {
        double v = at(x, j);
        if (v > -INFINITY) finite++;
        if (v > mx) mx = v;
    }
    if (mx == -INFINITY) return false;
    if (alpha == 2) {
        double tau = sparsemax_tau(x, n, mx, cand);
        for (int64_t j = 0; j < n; j++) {
            double d = at(x, j) - mx - tau;
            p[j] = d > 0 ? d : 0;
        }
    } else if (alpha == 1.5) {
        double tau = entmax15_tau(x, n, mx, cand);
        for (int64_t j = 0; j < n; j++) {
            double d = (at(x, j) - mx) / 2 - tau;
            p[j] = d > 0 ? d * d : 0;
        }
    } else {
        double am1 = alpha - 1, inv = 1 / am1, tau = bisect_tau(x, n, finite, mx, alpha, cand);
        for (int64_t j = 0; j < n; j++) {
            double d = am1 * (at(x, j) - mx) - tau;
            p[j] = d > 0 ? pow(d, inv) : 0;
        }
    }
    return true;
}

static double row_sum(const double *p, int64_t n)
{
    double sum = 0;
    for (int64_t j = 0; j < n; j++) sum += p[j];
    return sum;
}

void as_cpu_entmax_row(float *x, int64_t n, double alpha, void *scratch)
{
    if (alpha == 1) {
        as_cpu_rw_softmax_row(x, n);
        return;
    }
    double *cand = scratch, *p = cand + n;
    if (!entmax_p((row_in){.f = x}, n, alpha, cand, p)) {
        memset(x, 0, (size_t)n * sizeof *x);
        return;
    }
    double sum = row_sum(p, n);
    for (int64_t j = 0; j < n; j++) x[j] = (float)(p[j] / sum);
}

void as_cpu_entmax_row_f64(double *x, int64_t n, double alpha, void *scratch)
{
    if (alpha == 1) {
        as_cpu_softmax_rows_f64(x, x, 1, n, 0);
        return;
    }
    double *cand = scratch, *p = cand + n;
    if (!entmax_p((row_in){.d = x}, n, alpha, cand, p)) {
        memset(x, 0, (size_t)n * sizeof *x);
        return;
    }
    double sum = row_sum(p, n);
    for (int64_t j = 0; j < n; j++) x[j] = p[j] / sum;
}

static void entmax_rows(const as_cpu_rw_params *p, int64_t h, int64_t i0, int64_t m, int64_t j0,
                        int64_t n, float *s, int64_t lds, void *scratch)
{
    const as_cpu_rw_entmax_ctx *c = p->mech.ctx;
    double alpha = c->alpha[h];
    for (int64_t r = 0; r < m; r++) as_cpu_entmax_row(s + r * lds, n, alpha, scratch);
}

static size_t entmax_scratch(const as_cpu_rw_params *p)
{
    return 2 * (size_t)(p->a.Lk > 0 ? p->a.Lk : 1) * sizeof(double);
}

const as_cpu_rw_mech as_cpu_rw_entmax_mech = {.rows = entmax_rows, .scratch_bytes = entmax_scratch};
