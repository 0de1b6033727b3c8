/* entmax_attention: alpha-entmax in place of softmax (Peters et al. 2019,
 * "Sparse Sequence-to-Sequence Models"; Correia et al. 2019, "Adaptively
 * Sparse Transformers").
 *
 *   entmax_a(z) = argmax_p  p.z + H_a(p)   =>   p_i = [(a - 1) z_i - tau]_+^(1 / (a - 1))
 *
 * with tau the threshold that makes p sum to 1.  a = 2 is sparsemax
 * (Martins & Astudillo 2016, Algorithm 1: sort, find the support, tau in
 * closed form); a = 1.5 has the exact sort-based threshold of Peters et al.
 * (Algorithm 2); other a bisect on tau (Algorithm 1 of Correia et al.'s
 * entmax_bisect).  Only entries above max - 1 / (a - 1) can be in the
 * support (p_max <= 1 bounds tau from below), so the sorts and the
 * bisection see those candidates alone. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "zoo_reweight.h"

static int desc(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x < y) - (x > y);
}

/* Sparsemax threshold of z (shifted so max z = 0): tau = (sum of the top k - 1) / k,
 * k the largest with 1 + k z_(k) > sum of the top k.  cand: scratch. */
static double sparsemax_tau(const float *x, int64_t n, double mx, double *cand)
{
    int64_t K = 0;
    for (int64_t j = 0; j < n; j++) {
        double z = (double)x[j] - mx;
        if (z > -1) cand[K++] = z;
    }
    qsort(cand, (size_t)K, sizeof *cand, desc);
    double cs = 0, tau = 0;
    for (int64_t t = 0; t < K; t++) {
        cs += cand[t];
        if (1 + (double)(t + 1) * cand[t] > cs) tau = (cs - 1) / (double)(t + 1);
        else break;
    }
    return tau;
}

/* 1.5-entmax threshold of X = (z - max) / 2 (Peters et al. 2019, Algorithm 2):
 * over the sorted prefix of size t, tau_t = mean - sqrt((1 - t (meansq - mean^2)) / t);
 * the support is the number of t with tau_t <= X_(t). */
static double entmax15_tau(const float *x, int64_t n, double mx, double *cand)
{
    int64_t K = 0;
    for (int64_t j = 0; j < n; j++) {
        double X = ((double)x[j] - mx) / 2;
        if (X > -1) cand[K++] = X;
    }
    qsort(cand, (size_t)K, sizeof *cand, desc);
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

static void normalise(float *x, const double *p, int64_t n)
{
    double sum = 0;
    for (int64_t j = 0; j < n; j++) sum += p[j];
    for (int64_t j = 0; j < n; j++) x[j] = (float)(p[j] / sum);
}

void as_cpu_entmax_row(float *x, int64_t n, double alpha, void *scratch)
{
    if (alpha == 1) {
        as_cpu_rw_softmax_row(x, n);
        return;
    }
    double mx = -INFINITY;
    int64_t finite = 0;
    for (int64_t j = 0; j < n; j++) {
        if (x[j] > -INFINITY) finite++;
        if (x[j] > mx) mx = x[j];
    }
    if (mx == -INFINITY) {
        memset(x, 0, (size_t)n * sizeof *x);
        return;
    }
    double *cand = scratch, *p = cand + n;
    if (alpha == 2) {
        double tau = sparsemax_tau(x, n, mx, cand);
        for (int64_t j = 0; j < n; j++) {
            double d = (double)x[j] - mx - tau;
            p[j] = d > 0 ? d : 0;
        }
    } else if (alpha == 1.5) {
        double tau = entmax15_tau(x, n, mx, cand);
        for (int64_t j = 0; j < n; j++) {
            double d = ((double)x[j] - mx) / 2 - tau;
            p[j] = d > 0 ? d * d : 0;
        }
    } else {
        /* bisection on tau in [max X - 1, max X - (1 / n)^(a - 1)], X = (a - 1)(z - max) */
        double am1 = alpha - 1, inv = 1 / am1;
        int64_t K = 0;
        for (int64_t j = 0; j < n; j++) {
            double X = am1 * ((double)x[j] - mx);
            if (X > -1) cand[K++] = X;
        }
        double lo = -1, dm = (-pow(1.0 / (double)finite, am1)) - lo;
        for (int it = 0; it < 60 && dm > 1e-11; it++) {
            dm /= 2;
            double mid = lo + dm, f = -1;
            for (int64_t t = 0; t < K; t++)
                if (cand[t] > mid) f += pow(cand[t] - mid, inv);
            if (f >= 0) lo = mid; /* f(lo) >= 0 throughout: sum at lo is >= 1 */
        }
        for (int64_t j = 0; j < n; j++) {
            double d = am1 * ((double)x[j] - mx) - lo;
            p[j] = d > 0 ? pow(d, inv) : 0;
        }
    }
    normalise(x, p, n);
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
    return 2 * (size_t)(p->Lk > 0 ? p->Lk : 1) * sizeof(double);
}

const as_cpu_rw_mech as_cpu_rw_entmax_mech = {.rows = entmax_rows, .scratch_bytes = entmax_scratch};
