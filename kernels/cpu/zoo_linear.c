#include "parallel.h"
#include "zoo_linear.h"

#include <cblas.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* n values of row `at` of a float32 (f64 false) or float64 array, as double
 * (exact: float -> double loses nothing, so the float32 scan computes what
 * it computed before float64 was added) */
static void load_row(const void *base, bool f64, int64_t at, int64_t n, double *dst)
{
    if (f64) {
        memcpy(dst, (const double *)base + at * n, sizeof(double) * (size_t)n);
    } else {
        const float *s = (const float *)base + at * n;
        for (int64_t i = 0; i < n; i++) dst[i] = s[i];
    }
}

static void store_row(void *base, bool f64, int64_t at, int64_t n, const double *src)
{
    if (f64) {
        memcpy((double *)base + at * n, src, sizeof(double) * (size_t)n);
    } else {
        float *d = (float *)base + at * n;
        for (int64_t i = 0; i < n; i++) d[i] = (float)src[i];
    }
}

/* key row kd (F), value row vd (Dv) into the state: S += kd vd^T, z += kd */
static void fold_key(double *S, double *z, const double *kd, const double *vd, int64_t F, int64_t Dv)
{
    for (int64_t f = 0; f < F; f++) {
        double kf = kd[f];
        z[f] += kf;
        double *row = S + f * Dv;
        for (int64_t d = 0; d < Dv; d++) row[d] += kf * vd[d];
    }
}

/* the denominator fq_i . z_i, summed in f's order as the forward always has */
static double row_den(const double *qd, const double *z, int64_t F)
{
    double den = 0;
    for (int64_t f = 0; f < F; f++) den += qd[f] * z[f];
    return den;
}

size_t as_cpu_linear_causal_workspace_size(int64_t F, int64_t Dv, int nthreads)
{
    /* S, z, a row of q, k, v and the numerator */
    return sizeof(double) * (size_t)(F * Dv + F + 2 * F + 2 * Dv) * (size_t)(nthreads > 0 ? nthreads : 1);
}

typedef struct {
    const void *fq, *fk, *v;
    void *out;
    bool f64;
    int64_t Lq, Lk, F, Dv;
    double *workspace;
    size_t stride; /* doubles per thread */
} causal_scan;

/* one (b, h) item, row by row: the state S (F x Dv) and z (F) in double, so
 * long sequences do not drift */
static void causal_scan_item(void *ctx, int64_t n, int t)
{
    const causal_scan *c = ctx;
    const int64_t Lq = c->Lq, Lk = c->Lk, F = c->F, Dv = c->Dv, off = Lk - Lq;
    double *S = c->workspace + (size_t)t * c->stride, *z = S + F * Dv;
    double *qd = z + F, *kd = qd + F, *vd = kd + F, *acc = vd + Dv;
    memset(S, 0, sizeof(double) * (size_t)(F * Dv + F));
    int64_t seen = 0; /* keys folded into the state so far */
    for (int64_t i = 0; i < Lq; i++) {
        int64_t upto = i + off + 1; /* keys 0 .. upto-1 are visible */
        if (upto > Lk) upto = Lk;
        for (; seen < upto; seen++) {
            load_row(c->fk, c->f64, n * Lk + seen, F, kd);
            load_row(c->v, c->f64, n * Lk + seen, Dv, vd);
            fold_key(S, z, kd, vd, F, Dv);
        }
        load_row(c->fq, c->f64, n * Lq + i, F, qd);
        double den = row_den(qd, z, F);
        memset(acc, 0, sizeof(double) * (size_t)Dv);
        if (seen > 0 && den != 0) {
            /* num = S^T qd, each d summed in f's order */
            for (int64_t f = 0; f < F; f++) {
                const double qf = qd[f], *row = S + f * Dv;
                for (int64_t d = 0; d < Dv; d++) acc[d] += qf * row[d];
            }
            for (int64_t d = 0; d < Dv; d++) acc[d] /= den;
        }
        store_row(c->out, c->f64, n * Lq + i, Dv, acc);
    }
}

void as_cpu_linear_causal(const void *fq, const void *fk, const void *v, void *out, bool f64, int64_t N, int64_t Lq,
                          int64_t Lk, int64_t F, int64_t Dv, void *workspace, int nthreads)
{
    causal_scan c = {fq, fk, v, out, f64, Lq, Lk, F, Dv, workspace,
                     as_cpu_linear_causal_workspace_size(F, Dv, 1) / sizeof(double)};
    as_cpu_parallel_items(N, nthreads, causal_scan_item, &c);
}

/* The backward.  Query i sees keys j <= e_i = i + off; a row that sees none,
 * or whose den_i is 0, is 0 in the forward whatever its inputs, so it is a
 * constant: no gradient from it to anything (its g_i is dropped).  For the
 * other rows, out_i = num_i / den_i with num_i = S_i^T q_i, den_i = q_i . z_i,
 * and for g_i = dL/dout_i:
 *   dL/dnum_i = g_i / den_i =: gt_i,   dL/dden_i = -(g_i . out_i) / den_i =: -ct_i.
 * q_i enters through num_i and den_i only:
 *   dq_i = S_i gt_i - ct_i z_i,
 * so a forward scan rebuilding S_i, z_i gives it.  Key j enters S_i and z_i
 * of every row i with e_i >= j (k_j v_j^T and k_j):
 *   dk_j = sum_{i: e_i >= j} q_i (v_j . gt_i - ct_i) = R_j v_j - r_j,
 *   dv_j = sum_{i: e_i >= j} gt_i (q_i . k_j)         = R_j^T k_j,
 * with R_j = sum_{i: e_i >= j} q_i gt_i^T (F x Dv), r_j = sum_{i: e_i >= j} q_i ct_i:
 * suffix sums over the rows, which a reverse scan keeps, walking j down.
 *
 * Both scans go a chunk of LC_ROWS rows at a time, so that their products
 * are matrix products (BLAS), as the forward's fused kernel does: a chunk of
 * rows [i0, i1) sees the keys before a = i0 + off + 1 in full (the state) and
 * its diagonal keys [a, b), b = i1 + off, through the mask a + c <= i + off.
 * Splitting S_i, z_i into the state and the diagonal keys:
 *   dq_i = S_a gt_i - ct_i z_a + sum_{diag j visible} k_j (v_j . gt_i - ct_i)
 * i.e. dQ = Gt S_a^T - ct z_a^T + dA K_d with dA = (Gt V_d^T - ct 1^T) o M, and
 * the same dA gives the diagonal rows' share of dK_d (dA^T Q), A = (Q K_d^T) o M
 * their share of dV_d (A^T Gt).  The keys [a, a_next) a chunk starts (its
 * diagonal and the key b) are seen in full by every later chunk's rows: the
 * reverse scan adds V R^T - 1 r^T and K R for them, R and r over the later
 * chunks, then folds in the chunk's own rows (R += Q^T Gt, r += Q^T ct).
 * Time O(L F Dv + L LC_ROWS (F + Dv)); kept between the scans: 1 / den_i and
 * ct_i of each row, O(Lq) a thread, and no state per step or per chunk.
 * den_i is summed in double key by key as the forward sums it, so the rows
 * the forward gave 0 are exactly those given no gradient; the products run
 * in the inputs' dtype (sgemm, dgemm), as the composite's did. */

#define LC_ROWS 64 /* rows a chunk in the backward */

static double ld(const void *p, bool f64, int64_t i) { return f64 ? ((const double *)p)[i] : ((const float *)p)[i]; }

static void st(void *p, bool f64, int64_t i, double x)
{
    if (f64) ((double *)p)[i] = x;
    else ((float *)p)[i] = (float)x;
}

/* C (M x N, row-major) = alpha op(A) op(B) + beta C in float32 or float64 */
static void gemm(bool f64, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const void *A, int64_t lda,
                 const void *B, int64_t ldb, double beta, void *C, int64_t ldc)
{
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        if (beta == 0)
            for (int64_t m = 0; m < M; m++)
                for (int64_t n = 0; n < N; n++) st(C, f64, m * ldc + n, 0);
        return;
    }
    enum CBLAS_TRANSPOSE a = ta ? CblasTrans : CblasNoTrans, b = tb ? CblasTrans : CblasNoTrans;
    if (f64)
        cblas_dgemm(CblasRowMajor, a, b, (int)M, (int)N, (int)K, 1.0, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
    else
        cblas_sgemm(CblasRowMajor, a, b, (int)M, (int)N, (int)K, 1.0f, A, (int)lda, B, (int)ldb, (float)beta, C,
                    (int)ldc);
}

size_t as_cpu_linear_causal_bwd_workspace_size(int64_t F, int64_t Dv, int64_t Lq, bool f64, int nthreads)
{
    /* doubles: z, 1 / den and ct of each row; in the dtype: S, R, z_a, r, a
     * chunk's Gt, ct and its two diagonal blocks */
    size_t es = f64 ? sizeof(double) : sizeof(float);
    size_t per = sizeof(double) * (size_t)(F + 2 * Lq) +
                 es * (size_t)(2 * F * Dv + 2 * F + LC_ROWS * Dv + LC_ROWS + 2 * LC_ROWS * LC_ROWS);
    per = (per + 63) / 64 * 64;
    return per * (size_t)(nthreads > 0 ? nthreads : 1);
}

static int64_t clip(int64_t x, int64_t hi) { return x < 0 ? 0 : x > hi ? hi : x; }

/* Gt (nr, Dv) = g_i / den_i of rows [i0, i0 + nr) (inv: 1 / den_i, 0 for the
 * rows that are constants, whose g_i is dropped, Inf or NaN included) */
static void scaled_rows(void *Gt, const void *g, const double *inv, int64_t i0, int64_t nr, int64_t Dv, bool f64)
{
    for (int64_t rr = 0; rr < nr; rr++) {
        const int64_t i = i0 + rr;
        for (int64_t d = 0; d < Dv; d++)
            st(Gt, f64, rr * Dv + d, inv[i] != 0 ? ld(g, f64, i * Dv + d) * inv[i] : 0);
    }
}

static void linear_causal_bwd_item(const as_cpu_linear_causal_bwd_args *a, int64_t n, char *ws)
{
    const int64_t Lq = a->Lq, Lk = a->Lk, F = a->F, Dv = a->Dv, off = Lk - Lq;
    const bool f64 = a->f64;
    const size_t es = f64 ? sizeof(double) : sizeof(float);
    double *z = (double *)ws, *inv = z + F, *ctall = inv + Lq;
    char *p = (char *)(ctall + Lq);
    void *S = p, *R = p + es * (size_t)(F * Dv), *za = p + es * (size_t)(2 * F * Dv), *r = (char *)za + es * (size_t)F;
    void *Gt = (char *)r + es * (size_t)F, *ct = (char *)Gt + es * (size_t)(LC_ROWS * Dv);
    void *A = (char *)ct + es * (size_t)LC_ROWS, *dA = (char *)A + es * (size_t)(LC_ROWS * LC_ROWS);
#define AT(base, i) ((const char *)(base) + es * (size_t)(i))
#define ATW(base, i) ((char *)(base) + es * (size_t)(i))
    const void *q = AT(a->fq, n * Lq * F), *k = AT(a->fk, n * Lk * F), *v = AT(a->v, n * Lk * Dv);
    const void *g = AT(a->g, n * Lq * Dv), *o = AT(a->out, n * Lq * Dv);
    void *dq = a->dq ? ATW(a->dq, n * Lq * F) : NULL, *dk = a->dk ? ATW(a->dk, n * Lk * F) : NULL;
    void *dv = a->dv ? ATW(a->dv, n * Lk * Dv) : NULL;
    const bool keys = dk || dv;

    memset(z, 0, sizeof(double) * (size_t)F);
    memset(S, 0, es * (size_t)(F * Dv));
    if (dk) memset(dk, 0, es * (size_t)(Lk * F));
    if (dv) memset(dv, 0, es * (size_t)(Lk * Dv));

    /* pass 1, forward: dQ, the diagonal blocks' share of dK, dV; 1 / den, ct */
    int64_t zs = 0, seen = 0; /* keys in z; keys in S */
    for (int64_t i0 = 0; i0 < Lq; i0 += LC_ROWS) {
        const int64_t nr = Lq - i0 < LC_ROWS ? Lq - i0 : LC_ROWS;
        const int64_t lo = clip(i0 + off + 1, Lk), hi = clip(i0 + nr + off, Lk), np = hi - lo;
        for (; zs < lo; zs++)
            for (int64_t f = 0; f < F; f++) z[f] += ld(k, f64, zs * F + f);
        for (int64_t f = 0; f < F; f++) st(za, f64, f, z[f]);
        for (int64_t rr = 0; rr < nr; rr++) { /* den_i as the forward sums it; gt_i, ct_i */
            const int64_t i = i0 + rr, upto = clip(i + off + 1, Lk);
            for (; zs < upto; zs++)
                for (int64_t f = 0; f < F; f++) z[f] += ld(k, f64, zs * F + f);
            double den = 0;
            for (int64_t f = 0; f < F; f++) den += ld(q, f64, i * F + f) * z[f];
            inv[i] = ctall[i] = 0;
            if (upto > 0 && den != 0) {
                double c = 0;
                for (int64_t d = 0; d < Dv; d++) c += ld(g, f64, i * Dv + d) * ld(o, f64, i * Dv + d);
                inv[i] = 1.0 / den;
                ctall[i] = c / den;
            }
            st(ct, f64, rr, ctall[i]);
        }
        scaled_rows(Gt, g, inv, i0, nr, Dv, f64);
        if (seen < lo) { /* keys [seen, lo) into the state */
            gemm(f64, true, false, F, Dv, lo - seen, AT(k, seen * F), F, AT(v, seen * Dv), Dv, 1, S, Dv);
            seen = lo;
        }
        void *dqc = dq ? ATW(dq, i0 * F) : NULL;
        if (dqc) { /* Gt S_a^T - ct z_a^T */
            gemm(f64, false, true, nr, F, Dv, Gt, Dv, S, Dv, 0, dqc, F);
            for (int64_t rr = 0; rr < nr; rr++)
                for (int64_t f = 0; f < F; f++)
                    st(dqc, f64, rr * F + f, ld(dqc, f64, rr * F + f) - ld(ct, f64, rr) * ld(za, f64, f));
        }
        if (np > 0) {
            const void *kd = AT(k, lo * F), *vd = AT(v, lo * Dv), *qc = AT(q, i0 * F);
            gemm(f64, false, true, nr, np, F, qc, F, kd, F, 0, A, np);    /* A = Q K_d^T */
            gemm(f64, false, true, nr, np, Dv, Gt, Dv, vd, Dv, 0, dA, np); /* Gt V_d^T */
            for (int64_t rr = 0; rr < nr; rr++)
                for (int64_t c = 0; c < np; c++) {
                    bool vis = lo + c <= i0 + rr + off;
                    if (!vis) st(A, f64, rr * np + c, 0);
                    st(dA, f64, rr * np + c, vis ? ld(dA, f64, rr * np + c) - ld(ct, f64, rr) : 0);
                }
            if (dqc) gemm(f64, false, false, nr, F, np, dA, np, kd, F, 1, dqc, F);             /* += dA K_d */
            if (dk) gemm(f64, true, false, np, F, nr, dA, np, qc, F, 1, ATW(dk, lo * F), F);    /* dA^T Q */
            if (dv) gemm(f64, true, false, np, Dv, nr, A, np, Gt, Dv, 1, ATW(dv, lo * Dv), Dv); /* A^T Gt */
            gemm(f64, true, false, F, Dv, np, kd, F, vd, Dv, 1, S, Dv);
            seen = hi;
        }
    }
    if (!keys) return;

    /* pass 2, reverse: the keys each chunk starts, from the rows of the later chunks */
    memset(R, 0, es * (size_t)(F * Dv));
    for (int64_t f = 0; f < F; f++) st(r, f64, f, 0);
    int64_t i0 = (Lq - 1) / LC_ROWS * LC_ROWS;
    for (int64_t end = Lk; i0 >= -LC_ROWS; i0 -= LC_ROWS) {
        /* i0 < 0: the keys before the first chunk's, seen by every row */
        const int64_t lo = i0 < 0 ? 0 : clip(i0 + off + 1, Lk), m = end - lo;
        if (m > 0) {
            if (dk) {
                gemm(f64, false, true, m, F, Dv, AT(v, lo * Dv), Dv, R, Dv, 1, ATW(dk, lo * F), F);
                for (int64_t j = 0; j < m; j++)
                    for (int64_t f = 0; f < F; f++)
                        st(dk, f64, (lo + j) * F + f, ld(dk, f64, (lo + j) * F + f) - ld(r, f64, f));
            }
            if (dv) gemm(f64, false, false, m, Dv, F, AT(k, lo * F), F, R, Dv, 1, ATW(dv, lo * Dv), Dv);
        }
        end = lo;
        if (i0 < 0) break;
        const int64_t nr = Lq - i0 < LC_ROWS ? Lq - i0 : LC_ROWS;
        const void *qc = AT(q, i0 * F);
        scaled_rows(Gt, g, inv, i0, nr, Dv, f64);
        gemm(f64, true, false, F, Dv, nr, qc, F, Gt, Dv, 1, R, Dv); /* R += Q^T Gt */
        for (int64_t f = 0; f < F; f++) {
            double s = ld(r, f64, f);
            for (int64_t rr = 0; rr < nr; rr++) s += ld(qc, f64, rr * F + f) * ctall[i0 + rr];
            st(r, f64, f, s);
        }
    }
#undef AT
#undef ATW
}

/* The forward the backward's way, for a call that records its node: a chunk
 * of rows at a time, num = Q S_a + ((Q K_d^T) o M) V_d in the dtype's gemm,
 * den_i summed in double key by key as as_cpu_linear_causal sums it (so the
 * same rows are 0); out agrees with the per-row scan to the dtype's rounding
 * of num.  Same scratch as the backward. */
static void linear_causal_fwd_item(const as_cpu_linear_causal_bwd_args *a, int64_t n, char *ws)
{
    const int64_t Lq = a->Lq, Lk = a->Lk, F = a->F, Dv = a->Dv, off = Lk - Lq;
    const bool f64 = a->f64;
    const size_t es = f64 ? sizeof(double) : sizeof(float);
    double *z = (double *)ws, *dn = z + F; /* the chunk's denominators, 0: the row is 0 */
    void *S = (char *)(dn + 2 * Lq), *A = (char *)S + es * (size_t)(F * Dv);
    const char *q = (const char *)a->fq + es * (size_t)(n * Lq * F);
    const char *k = (const char *)a->fk + es * (size_t)(n * Lk * F);
    const char *v = (const char *)a->v + es * (size_t)(n * Lk * Dv);
    char *o = (char *)a->out + es * (size_t)(n * Lq * Dv);
    memset(z, 0, sizeof(double) * (size_t)F);
    memset(S, 0, es * (size_t)(F * Dv));
    int64_t zs = 0, seen = 0;
    for (int64_t i0 = 0; i0 < Lq; i0 += LC_ROWS) {
        const int64_t nr = Lq - i0 < LC_ROWS ? Lq - i0 : LC_ROWS;
        const int64_t lo = clip(i0 + off + 1, Lk), hi = clip(i0 + nr + off, Lk), np = hi - lo;
        for (int64_t rr = 0; rr < nr; rr++) {
            const int64_t i = i0 + rr, upto = clip(i + off + 1, Lk);
            for (; zs < upto; zs++)
                for (int64_t f = 0; f < F; f++) z[f] += ld(k, f64, zs * F + f);
            double den = 0;
            for (int64_t f = 0; f < F; f++) den += ld(q, f64, i * F + f) * z[f];
            dn[rr] = upto > 0 ? den : 0;
        }
        if (seen < lo) {
            gemm(f64, true, false, F, Dv, lo - seen, k + es * (size_t)(seen * F), F, v + es * (size_t)(seen * Dv), Dv,
                 1, S, Dv);
            seen = lo;
        }
        const char *qc = q + es * (size_t)(i0 * F);
        char *oc = o + es * (size_t)(i0 * Dv);
        gemm(f64, false, false, nr, Dv, F, qc, F, S, Dv, 0, oc, Dv); /* Q S_a */
        if (np > 0) {
            const char *kd = k + es * (size_t)(lo * F), *vd = v + es * (size_t)(lo * Dv);
            gemm(f64, false, true, nr, np, F, qc, F, kd, F, 0, A, np);
            for (int64_t rr = 0; rr < nr; rr++)
                for (int64_t c = 0; c < np; c++)
                    if (lo + c > i0 + rr + off) st(A, f64, rr * np + c, 0);
            gemm(f64, false, false, nr, Dv, np, A, np, vd, Dv, 1, oc, Dv);
            gemm(f64, true, false, F, Dv, np, kd, F, vd, Dv, 1, S, Dv);
            seen = hi;
        }
        for (int64_t rr = 0; rr < nr; rr++)
            for (int64_t d = 0; d < Dv; d++)
                st(oc, f64, rr * Dv + d, dn[rr] != 0 ? ld(oc, f64, rr * Dv + d) / dn[rr] : 0);
    }
}

typedef struct {
    const as_cpu_linear_causal_bwd_args *a;
    char *workspace;
    size_t stride;
    void (*item)(const as_cpu_linear_causal_bwd_args *, int64_t, char *);
} scan_items;

static void scan_item(void *ctx, int64_t n, int t)
{
    const scan_items *c = ctx;
    c->item(c->a, n, c->workspace + (size_t)t * c->stride);
}

/* item(a, n, its thread's slice of workspace) for every (b, h) item n */
static void for_each_item(const as_cpu_linear_causal_bwd_args *a, void *workspace, int nthreads,
                          void (*item)(const as_cpu_linear_causal_bwd_args *, int64_t, char *))
{
    scan_items c = {a, workspace, as_cpu_linear_causal_bwd_workspace_size(a->F, a->Dv, a->Lq, a->f64, 1), item};
    as_cpu_parallel_items(a->N, nthreads, scan_item, &c);
}

void as_cpu_linear_causal_blocked(const as_cpu_linear_causal_bwd_args *a, void *workspace, int nthreads)
{
    for_each_item(a, workspace, nthreads, linear_causal_fwd_item);
}

void as_cpu_linear_causal_bwd(const as_cpu_linear_causal_bwd_args *a, void *workspace, int nthreads)
{
    for_each_item(a, workspace, nthreads, linear_causal_bwd_item);
}

/* ---- non-causal, fused feature maps ---- */

#define KZ_ROWS 128 /* rows of features made at a time */

static int64_t features_of(const as_cpu_kernelized_params *p)
{
    return p->feature == AS_FEATURE_FAVOR ? p->m : p->D;
}

static size_t kz_floats_per_thread(const as_cpu_kernelized_params *p)
{
    int64_t F = features_of(p);
    /* a chunk of features, the state S and z, one denominator per row, the
     * keys' column max and sum (AS_FEATURE_SOFTMAX); causal: a chunk of key
     * features and the chunk's diagonal block */
    size_t causal = p->causal ? (size_t)(KZ_ROWS * F + KZ_ROWS * KZ_ROWS) : 0;
    return (size_t)(KZ_ROWS * F + F * p->Dv + F + KZ_ROWS + 2 * F + 16) + causal;
}

size_t as_cpu_kernelized_workspace_size(const as_cpu_kernelized_params *p, int nthreads)
{
    return kz_floats_per_thread(p) * sizeof(float) * (size_t)(nthreads > 0 ? nthreads : 1);
}

/* FAVOR exponents of rows x (n, D): e = w x' - |x'|^2 / 2, into f (n, m). */
static void favor_exponents(const as_cpu_kernelized_params *p, const float *x, int64_t n, float *f)
{
    int64_t D = p->D, m = p->m;
    float s = powf((float)D, -0.25f);
    if (D > 0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)m, (int)D, s, x, (int)D, p->w, (int)D,
                    0.0f, f, (int)m);
    else
        memset(f, 0, sizeof(float) * (size_t)(n * m));
    for (int64_t r = 0; r < n; r++) {
        const float *xr = x + r * D;
        float sq = 0;
        for (int64_t d = 0; d < D; d++) sq += xr[d] * xr[d];
        sq *= 0.5f * s * s;
        float *fr = f + r * m;
        for (int64_t i = 0; i < m; i++) fr[i] -= sq;
    }
}

/* A softmax over each of the n rows of x (n, D), into f. */
static void softmax_rows(const float *x, int64_t n, int64_t D, float *f)
{
    for (int64_t r = 0; r < n; r++) {
        const float *xr = x + r * D;
        float *fr = f + r * D, mx = -INFINITY, sum = 0;
        for (int64_t d = 0; d < D; d++) mx = xr[d] > mx ? xr[d] : mx;
        for (int64_t d = 0; d < D; d++) sum += fr[d] = expf(xr[d] - mx);
        for (int64_t d = 0; d < D; d++) fr[d] /= sum;
    }
}

/* For the softmax over the keys: each feature's max over the kept keys of k
 * (Lk, D) into cmax, and its sum of exp(k - cmax) into csum. */
static void key_columns(const as_cpu_kernelized_params *p, const float *k, const float *keep, float *cmax,
                        float *csum)
{
    int64_t D = p->D;
    for (int64_t d = 0; d < D; d++) cmax[d] = -INFINITY, csum[d] = 0;
    for (int64_t j = 0; j < p->Lk; j++) {
        if (keep && keep[j] == 0) continue;
        for (int64_t d = 0; d < D; d++) cmax[d] = k[j * D + d] > cmax[d] ? k[j * D + d] : cmax[d];
    }
    for (int64_t j = 0; j < p->Lk; j++) {
        if (keep && keep[j] == 0) continue;
        for (int64_t d = 0; d < D; d++) csum[d] += expf(k[j * D + d] - cmax[d]);
    }
}

/* phi of rows x (n, D) into f (n, F).  stab: the keys' max (FAVOR keys), or
 * NAN for queries (each row its own max). */
static void make_features(const as_cpu_kernelized_params *p, const float *x, int64_t n, float stab, float *f)
{
    if (p->feature == AS_FEATURE_ELU1) {
        for (int64_t i = 0; i < n * p->D; i++) f[i] = x[i] > 0 ? x[i] + 1.0f : expf(x[i]);
        return;
    }
    if (p->feature == AS_FEATURE_SOFTMAX) { /* queries; the keys' are made in kernelized_item */
        softmax_rows(x, n, p->D, f);
        return;
    }
    int64_t m = p->m;
    float norm = 1.0f / sqrtf((float)m);
    favor_exponents(p, x, n, f);
    for (int64_t r = 0; r < n; r++) {
        float *fr = f + r * m, st = stab;
        if (isnan(st)) {
            st = -INFINITY;
            for (int64_t i = 0; i < m; i++) st = fr[i] > st ? fr[i] : st;
        }
        for (int64_t i = 0; i < m; i++) fr[i] = expf(fr[i] - st) * norm + 1e-6f;
    }
}

/* The max FAVOR exponent over the keys of one KV head. */
static float favor_key_max(const as_cpu_kernelized_params *p, const float *k, float *f)
{
    float mx = -INFINITY;
    for (int64_t j0 = 0; j0 < p->Lk; j0 += KZ_ROWS) {
        int64_t n = p->Lk - j0 < KZ_ROWS ? p->Lk - j0 : KZ_ROWS;
        favor_exponents(p, k + j0 * p->D, n, f);
        for (int64_t i = 0; i < n * p->m; i++) mx = f[i] > mx ? f[i] : mx;
    }
    return mx;
}

/* phi(k) of keys [j0, j0 + n) (n <= KZ_ROWS) into fk, weighted by keep
 * (cmax, csum: the softmax map's column max and sum) */
static void key_features(const as_cpu_kernelized_params *p, const float *k, const float *keep, int64_t j0, int64_t n,
                         float stab, const float *cmax, const float *csum, float *fk)
{
    int64_t F = features_of(p), D = p->D;
    if (p->feature == AS_FEATURE_SOFTMAX) { /* a column of no kept keys stays 0 (keep is 0 there) */
        for (int64_t r = 0; r < n; r++)
            for (int64_t d = 0; d < D; d++) {
                float x = k[(j0 + r) * D + d];
                fk[r * D + d] = csum[d] > 0 ? expf(x - cmax[d]) / csum[d] : 0.0f;
            }
    } else {
        make_features(p, k + j0 * D, n, stab, fk);
    }
    if (keep)
        for (int64_t r = 0; r < n; r++)
            for (int64_t i = 0; i < F; i++) fk[r * F + i] *= keep[j0 + r];
}

/* n keys (features fk, values v) into the state: S += fk^T v, z += sum fk */
static void add_keys(const as_cpu_kernelized_params *p, const float *fk, const float *v, int64_t n, float *S, float *z)
{
    int64_t F = features_of(p), Dv = p->Dv;
    if (Dv > 0 && n > 0)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)F, (int)Dv, (int)n, 1.0f, fk, (int)F, v, (int)Dv,
                    1.0f, S, (int)Dv);
    for (int64_t r = 0; r < n; r++)
        for (int64_t i = 0; i < F; i++) z[i] += fk[r * F + i];
}

/* keys [j0, j1) of the item into the state, KZ_ROWS at a time */
static void fold_keys(const as_cpu_kernelized_params *p, const float *k, const float *v, const float *keep,
                      int64_t j0, int64_t j1, float stab, const float *cmax, const float *csum, float *fk, float *S,
                      float *z)
{
    for (int64_t n; j0 < j1; j0 += n) {
        n = j1 - j0 < KZ_ROWS ? j1 - j0 : KZ_ROWS;
        key_features(p, k, keep, j0, n, stab, cmax, csum, fk);
        add_keys(p, fk, v + j0 * p->Dv, n, S, z);
    }
}

/* n query rows (features fq) against the state: o = fq S, den = fq . z */
static void query_rows(const as_cpu_kernelized_params *p, const float *fq, int64_t n, const float *S, const float *z,
                       float *o, float *den)
{
    int64_t F = features_of(p), Dv = p->Dv;
    if (Dv > 0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)Dv, (int)F, 1.0f, fq, (int)F, S, (int)Dv,
                    0.0f, o, (int)Dv);
    for (int64_t r = 0; r < n; r++) {
        double d = 0;
        for (int64_t i = 0; i < F; i++) d += (double)fq[r * F + i] * z[i];
        den[r] = (float)d;
    }
}

/* o /= den by row; zeros where the denominator is 0 */
static void divide_rows(float *o, const float *den, int64_t n, int64_t Dv)
{
    for (int64_t r = 0; r < n; r++) {
        float inv = den[r] != 0 ? 1.0f / den[r] : 0.0f;
        for (int64_t d = 0; d < Dv; d++) o[r * Dv + d] *= inv;
    }
}

static void kernelized_item(const as_cpu_kernelized_params *p, int64_t bh, float *ws)
{
    int64_t F = features_of(p), D = p->D, Dv = p->Dv;
    int64_t b = bh / p->H, h = bh % p->H, hk = h / (p->H / p->Hkv);
    float *f = ws, *S = f + KZ_ROWS * F, *z = S + F * Dv, *den = z + F, *cmax = den + KZ_ROWS, *csum = cmax + F;
    const float *k = p->k + (b * p->Hkv + hk) * p->Lk * D, *v = p->v + (b * p->Hkv + hk) * p->Lk * Dv;
    const float *keep = p->keep ? p->keep + (p->keep_B == 1 ? 0 : b) * p->Lk : NULL;
    memset(S, 0, sizeof(float) * (size_t)(F * Dv + F));

    float stab = p->feature == AS_FEATURE_FAVOR && p->Lk > 0 ? favor_key_max(p, k, f) : NAN;
    if (p->feature == AS_FEATURE_SOFTMAX) key_columns(p, k, keep, cmax, csum);
    fold_keys(p, k, v, keep, 0, p->Lk, stab, cmax, csum, f, S, z);

    const float *q = p->q + bh * p->Lq * D;
    float *out = p->out + bh * p->Lq * Dv;
    for (int64_t i0 = 0; i0 < p->Lq; i0 += KZ_ROWS) {
        int64_t n = p->Lq - i0 < KZ_ROWS ? p->Lq - i0 : KZ_ROWS;
        make_features(p, q + i0 * D, n, NAN, f);
        query_rows(p, f, n, S, z, out + i0 * Dv, den);
        divide_rows(out + i0 * Dv, den, n, Dv);
    }
}

/* Causal: query chunk [i0, i0 + n) sees the keys before lo = i0 + off + 1 in
 * full (the state) and keys [lo, hi) through the masked diagonal block; those
 * are folded into the state after the chunk, so each key's features are made
 * once. */
static void kernelized_item_causal(const as_cpu_kernelized_params *p, int64_t bh, float *ws)
{
    int64_t F = features_of(p), D = p->D, Dv = p->Dv, off = p->Lk - p->Lq;
    int64_t b = bh / p->H, h = bh % p->H, hk = h / (p->H / p->Hkv);
    float *fq = ws, *S = fq + KZ_ROWS * F, *z = S + F * Dv, *den = z + F;
    float *fk = den + KZ_ROWS + 2 * F + 16, *A = fk + KZ_ROWS * F;
    const float *k = p->k + (b * p->Hkv + hk) * p->Lk * D, *v = p->v + (b * p->Hkv + hk) * p->Lk * Dv;
    const float *keep = p->keep ? p->keep + (p->keep_B == 1 ? 0 : b) * p->Lk : NULL;
    const float *q = p->q + bh * p->Lq * D;
    float *out = p->out + bh * p->Lq * Dv;
    memset(S, 0, sizeof(float) * (size_t)(F * Dv + F));
    float stab = p->feature == AS_FEATURE_FAVOR && p->Lk > 0 ? favor_key_max(p, k, fk) : NAN;

    int64_t seen = 0; /* keys in the state */
    for (int64_t i0 = 0; i0 < p->Lq; i0 += KZ_ROWS) {
        int64_t n = p->Lq - i0 < KZ_ROWS ? p->Lq - i0 : KZ_ROWS;
        int64_t lo = i0 + off + 1, hi = i0 + n + off;
        lo = lo < 0 ? 0 : lo > p->Lk ? p->Lk : lo;
        hi = hi < 0 ? 0 : hi > p->Lk ? p->Lk : hi;
        if (seen < lo) fold_keys(p, k, v, keep, seen, lo, stab, NULL, NULL, fk, S, z), seen = lo;
        float *o = out + i0 * Dv;
        make_features(p, q + i0 * D, n, NAN, fq);
        query_rows(p, fq, n, S, z, o, den);
        int64_t np = hi - seen; /* the diagonal block's keys (at most n) */
        if (np > 0) {
            key_features(p, k, keep, seen, np, stab, NULL, NULL, fk);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)np, (int)F, 1.0f, fq, (int)F, fk,
                        (int)F, 0.0f, A, (int)np);
            for (int64_t r = 0; r < n; r++) { /* row i0 + r sees keys j <= i0 + r + off */
                float *ar = A + r * np, sum = 0;
                for (int64_t c = 0; c < np; c++) {
                    if (seen + c > i0 + r + off) ar[c] = 0.0f;
                    sum += ar[c];
                }
                den[r] += sum;
            }
            if (Dv > 0)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)Dv, (int)np, 1.0f, A, (int)np,
                            v + seen * Dv, (int)Dv, 1.0f, o, (int)Dv);
            add_keys(p, fk, v + seen * Dv, np, S, z); /* for the next chunks, features already made */
            seen = hi;
        }
        divide_rows(o, den, n, Dv);
    }
}

typedef struct {
    const as_cpu_kernelized_params *p;
    float *workspace;
    size_t stride;
} kz_items;

static void kz_item(void *ctx, int64_t it, int t)
{
    const kz_items *c = ctx;
    float *mine = c->workspace + (size_t)t * c->stride;
    if (c->p->causal) kernelized_item_causal(c->p, it, mine);
    else kernelized_item(c->p, it, mine);
}

void as_cpu_kernelized_attention(const as_cpu_kernelized_params *p, void *workspace, int nthreads)
{
    if (p->B * p->H == 0 || p->Lq == 0) return;
    kz_items c = {p, workspace, kz_floats_per_thread(p)};
    as_cpu_parallel_items(p->B * p->H, nthreads, kz_item, &c);
}
