/* The kernels built once per vector ISA (kernels/cpu/vector_variants.h), on
 * every path the CPU has (forced as the flash kernels are, and checked to be
 * the one that runs): the exp maps and their gradients, the row reductions,
 * softmax, the norms and their backward, the fused cross-entropy (float32,
 * bfloat16, float16), the AdamW step and clip_grad_norm_'s sweeps, each
 * against float64 written here or the float64 row kernels, at lengths around
 * the vector widths and the chunk sizes (1 to 4100), with +-inf and NaN where
 * they mean something; and the parallel row loops against one row alone. */
#include <float.h>
#include <string.h>

#include <omp.h>

#include "as_test.h"
#include "attention_flash.h"
#include "cpu_kernels.h"
#include "optim.h"
#include "vector_variants.h"

static const char *isas[3] = {"scalar", "avx2", "avx512"};
static const int64_t lens[] = {1, 7, 8, 15, 16, 17, 31, 33, 200, 2047, 2049, 4100};
#define NLENS (int64_t)(sizeof lens / sizeof lens[0])

static float *randv(int64_t n, float scale)
{
    float *p = malloc((size_t)(n + 1) * sizeof(float));
    for (int64_t i = 0; i < n; i++) p[i] = scale * as_test_randf();
    return p;
}

static double *widen(const float *x, int64_t n)
{
    double *d = malloc((size_t)(n + 1) * sizeof(double));
    for (int64_t i = 0; i < n; i++) d[i] = x[i];
    return d;
}

/* the largest |a - b| / (1 + |b|), NaN where only one side is NaN */
static double relerr(const float *a, const double *b, int64_t n)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++) {
        if (isnan(a[i]) && isnan(b[i])) continue;
        if (isinf(b[i]) && a[i] == b[i]) continue;
        double e = fabs(a[i] - b[i]) / (1 + fabs(b[i]));
        if (!(e <= m)) m = e;
    }
    return m;
}

/* exp, sigmoid, silu, tanh, gelu (erf and tanh) through the public op, and
 * the gelu-tanh and silu gradients */
static void test_maps(void)
{
    static const as_unop ops[] = {AS_EXP, AS_SIGMOID, AS_SILU, AS_TANH, AS_GELU, AS_GELU_TANH};
    for (int64_t li = 0; li < NLENS; li++) {
        int64_t n = lens[li];
        float *x = randv(n, 9.0f);
        x[0] = n > 2 ? -0.0f : x[0];
        if (n > 4) x[1] = -14.0f, x[2] = 14.0f, x[3] = NAN; /* past GELU's erfc cut (|x| > 12.7), and NaN */
        as_tensor *t = as_empty(1, &n, AS_F32, AS_CPU), *g = as_empty(1, &n, AS_F32, AS_CPU);
        memcpy(as_data(t), x, (size_t)n * sizeof(float));
        float *gv = as_data(g);
        for (int64_t i = 0; i < n; i++) gv[i] = as_test_randf();
        for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++) {
            as_tensor *y = as_unary(ops[k], t);
            CHECK_OK(y);
            if (!y) continue;
            double *ref = malloc((size_t)n * sizeof(double));
            for (int64_t i = 0; i < n; i++) {
                double v = x[i];
                switch (ops[k]) {
                case AS_EXP: ref[i] = exp(v); break;
                case AS_SIGMOID: ref[i] = 1 / (1 + exp(-v)); break;
                case AS_SILU: ref[i] = v / (1 + exp(-v)); break;
                case AS_TANH: ref[i] = tanh(v); break;
                case AS_GELU: ref[i] = 0.5 * v * erfc(-v / sqrt(2.0)); break;
                default: ref[i] = 0.5 * v * (1 + tanh(0.79788456080286536 * (v + 0.044715 * v * v * v))); break;
                }
            }
            double e = relerr(as_data(y), ref, n);
            if (!(e < 1e-6)) fprintf(stderr, "map %d n=%lld: error %.3g\n", (int)ops[k], (long long)n, e);
            CHECK(e < 1e-6);
            free(ref);
            as_release(y);
        }
        static const as_binop gops[] = {AS_GELU_GRAD, AS_GELU_TANH_GRAD, AS_SILU_GRAD};
        for (int k = 0; k < 3; k++) {
            as_tensor *y = as_binary(gops[k], t, g);
            CHECK_OK(y);
            if (!y) continue;
            double *ref = malloc((size_t)n * sizeof(double));
            for (int64_t i = 0; i < n; i++) {
                double v = x[i], d;
                if (gops[k] == AS_SILU_GRAD) {
                    double s = 1 / (1 + exp(-v));
                    d = s * (1 + v * (1 - s));
                } else if (gops[k] == AS_GELU_GRAD) {
                    d = 0.5 * erfc(-v / sqrt(2.0)) + v * exp(-0.5 * v * v) / 2.5066282746310002;
                } else {
                    double kk = 0.79788456080286536, c = 0.044715, th = tanh(kk * (v + c * v * v * v));
                    d = 0.5 * (1 + th) + 0.5 * v * (1 - th * th) * kk * (1 + 3 * c * v * v);
                }
                ref[i] = gv[i] * d;
            }
            double e = relerr(as_data(y), ref, n);
            if (!(e < 2e-6)) fprintf(stderr, "grad %d n=%lld: error %.3g\n", (int)gops[k], (long long)n, e);
            CHECK(e < 2e-6);
            free(ref);
            as_release(y);
        }
        as_release(t), as_release(g);
        free(x);
    }
}

/* sum, mean, var; softmax and log-softmax; layer norm (each of w, b or
 * neither) and RMS norm, against the float64 row kernels */
static void test_rows(void)
{
    const int64_t rows = 3;
    for (int64_t li = 0; li < NLENS; li++) {
        int64_t n = lens[li], N = rows * n;
        float *x = randv(N, 4.0f), *w = randv(n, 1.5f), *b = randv(n, 1.0f), *y = malloc((size_t)N * sizeof(float));
        x[n + n / 2] = -INFINITY; /* row 1: a masked entry */
        double *xd = widen(x, N), *wd = widen(w, n), *bd = widen(b, n), *yd = malloc((size_t)N * sizeof(double));
        static const as_redop red[] = {AS_SUM, AS_MEAN, AS_VAR};
        for (int k = 0; k < 3; k++) {
            float o[3];
            double od[3];
            as_cpu_reduce_rows(red[k], x + n, 1, n, 1, o, NULL); /* row 1 has -inf: sum -inf, var NaN */
            as_cpu_reduce_rows_f64(red[k], xd + n, 1, n, 1, od, NULL);
            CHECK(relerr(o, od, 1) < 1e-6);
            as_cpu_reduce_rows(red[k], x, 1, n, 1, o, NULL);
            as_cpu_reduce_rows_f64(red[k], xd, 1, n, 1, od, NULL);
            CHECK(relerr(o, od, 1) < 1e-6);
        }
        for (int log = 0; log < 2; log++) {
            as_cpu_softmax_rows(x, y, rows, n, log);
            as_cpu_softmax_rows_f64(xd, yd, rows, n, log);
            double e = relerr(y, yd, N);
            if (!(e < 1e-6)) fprintf(stderr, "softmax log=%d n=%lld: error %.3g\n", log, (long long)n, e);
            CHECK(e < 1e-6);
        }
        for (int64_t i = 0; i < N; i++) x[i] = isinf(x[i]) ? 0.5f : x[i], xd[i] = x[i];
        for (int c = 0; c < 4; c++) {
            const float *wc = c & 1 ? w : NULL, *bc = c & 2 ? b : NULL;
            as_cpu_layer_norm_rows(x, y, rows, n, wc, bc, 1e-5);
            as_cpu_layer_norm_rows_f64(xd, yd, rows, n, c & 1 ? wd : NULL, c & 2 ? bd : NULL, 1e-5);
            double e = relerr(y, yd, N);
            if (!(e < 2e-5)) fprintf(stderr, "layer_norm case %d n=%lld: error %.3g\n", c, (long long)n, e);
            CHECK(e < 2e-5);
            if (c >= 2) continue;
            as_cpu_rms_norm_rows(x, y, rows, n, wc, 1e-6);
            as_cpu_rms_norm_rows_f64(xd, yd, rows, n, c & 1 ? wd : NULL, 1e-6);
            CHECK(relerr(y, yd, N) < 2e-5);
        }
        free(x), free(w), free(b), free(y), free(xd), free(wd), free(bd), free(yd);
    }
}

/* softmax and the norms backward, against their formulas in float64 */
static void test_row_grads(void)
{
    const int64_t rows = 2;
    for (int64_t li = 0; li < NLENS; li++) {
        int64_t n = lens[li], N = rows * n;
        float *x = randv(N, 3.0f), *g = randv(N, 1.0f), *w = randv(n, 1.5f), *y = malloc((size_t)N * sizeof(float));
        float *dx = malloc((size_t)N * sizeof(float)), *gxh = malloc((size_t)N * sizeof(float));
        double *ref = malloc((size_t)N * sizeof(double)), *ref2 = malloc((size_t)N * sizeof(double));
        for (int log = 0; log < 2; log++) {
            as_cpu_softmax_rows(x, y, rows, n, log);
            as_cpu_softmax_bwd_rows(y, g, dx, rows, n, log);
            for (int64_t r = 0; r < rows; r++) {
                double s = 0;
                for (int64_t i = 0; i < n; i++) s += log ? g[r * n + i] : (double)g[r * n + i] * y[r * n + i];
                for (int64_t i = 0; i < n; i++) {
                    int64_t j = r * n + i;
                    ref[j] = log ? g[j] - exp((double)y[j]) * s : y[j] * (g[j] - s);
                }
            }
            double e = relerr(dx, ref, N);
            if (!(e < 1e-5)) fprintf(stderr, "softmax bwd log=%d n=%lld: error %.3g\n", log, (long long)n, e);
            CHECK(e < 1e-5);
        }
        if (n < 2) goto next; /* a norm of one element has a zero gradient, no scale to compare */
        for (int c = 0; c < 4; c++) {
            int rms = c >= 2;
            const float *wc = c & 1 ? w : NULL;
            as_cpu_norm_bwd_rows(x, wc, g, dx, gxh, rows, n, 1e-5, rms);
            for (int64_t r = 0; r < rows; r++) {
                const float *p = x + r * n, *gp = g + r * n;
                double m = 0, v = 0, sdy = 0, sdyxh = 0;
                if (!rms)
                    for (int64_t i = 0; i < n; i++) m += p[i] / (double)n;
                for (int64_t i = 0; i < n; i++) v += (p[i] - m) * (p[i] - m) / (double)n;
                double rstd = 1 / sqrt(v + 1e-5);
                for (int64_t i = 0; i < n; i++) {
                    double dy = gp[i] * (wc ? wc[i] : 1.0);
                    sdy += dy, sdyxh += dy * (p[i] - m) * rstd;
                }
                for (int64_t i = 0; i < n; i++) {
                    double xh = (p[i] - m) * rstd, dy = gp[i] * (wc ? wc[i] : 1.0);
                    ref[r * n + i] = rstd * (dy - (rms ? 0 : sdy / n) - xh * sdyxh / n);
                    ref2[r * n + i] = gp[i] * xh;
                }
            }
            double e = relerr(dx, ref, N), e2 = relerr(gxh, ref2, N);
            if (!(e < 1e-4 && e2 < 1e-5))
                fprintf(stderr, "norm bwd case %d n=%lld: error %.3g, %.3g\n", c, (long long)n, e, e2);
            CHECK(e < 1e-4);
            CHECK(e2 < 1e-5);
        }
    next:
        free(x), free(g), free(w), free(y), free(dx), free(gxh), free(ref), free(ref2);
    }
}

/* the logits' element i in dtype dt, as the kernel reads it */
static double logit(const void *x, as_dtype dt, int64_t i) { return as_load_f32(x, dt, i); }

/* cross-entropy rows in float32, bfloat16 and float16: a -inf logit, an
 * ignored row, a row whose first chunk (2048 classes) is all -inf, one with a
 * NaN chunk, one with a +inf logit, one all -inf */
static void test_xent(void)
{
    enum { ROWS = 7 };
    static const as_dtype dts[3] = {AS_F32, AS_BF16, AS_F16};
    for (int64_t li = 0; li < NLENS; li++) {
        int64_t n = lens[li], N = ROWS * n, target[ROWS], ignore = -100;
        float *x = randv(N, 6.0f), loss[ROWS], lse[ROWS], g[ROWS];
        for (int64_t r = 0; r < ROWS; r++) target[r] = as_test_randint(0, n - 1), g[r] = as_test_randf();
        target[1] = ignore;
        x[n / 2] = -INFINITY;
        if (n > 2048) {
            for (int64_t i = 0; i < 2048; i++) x[2 * n + i] = -INFINITY, x[3 * n + i] = NAN;
            target[2] = n - 1;
        }
        x[5 * n + n / 3] = INFINITY;
        for (int64_t i = 0; i < n; i++) x[6 * n + i] = -INFINITY;
        for (int k = 0; k < 3; k++) {
            as_dtype dt = dts[k];
            size_t es = dt == AS_F32 ? 4 : 2;
            void *xin = malloc((size_t)N * es), *dx = malloc((size_t)N * es);
            for (int64_t i = 0; i < N; i++) as_store_f32(xin, dt, i, x[i]);
            CHECK(as_cpu_xent_rows(xin, dt, target, ignore, loss, lse, ROWS, n) == 0);
            as_cpu_xent_bwd_rows(xin, dt, target, ignore, lse, g, dx, ROWS, n);
            CHECK(isinf(lse[5]) && lse[5] > 0);
            CHECK(isinf(lse[6]) && lse[6] < 0 && isnan(loss[6]));
            for (int64_t r = 0; r < 5; r++) {
                double m = -INFINITY, s = 0;
                for (int64_t i = 0; i < n; i++) m = logit(xin, dt, r * n + i) > m ? logit(xin, dt, r * n + i) : m;
                for (int64_t i = 0; i < n; i++) s += exp(logit(xin, dt, r * n + i) - m);
                double l = m + log(s), xt = target[r] == ignore ? 0 : logit(xin, dt, r * n + target[r]);
                double wantl = target[r] == ignore ? 0 : l - xt;
                float gotl = loss[r];
                CHECK(relerr(&gotl, &wantl, 1) < 1e-5);
                if (isnan(l)) continue; /* the NaN row: its gradient is NaN too */
                double e = 0;
                for (int64_t i = 0; i < n; i++) {
                    double v = logit(xin, dt, r * n + i);
                    double want = target[r] == ignore ? 0 : g[r] * (exp(v - l) - (i == target[r]));
                    double d = fabs(logit(dx, dt, r * n + i) - want) / (1 + fabs(want));
                    e = d > e ? d : e;
                }
                double tol = dt == AS_F32 ? 1e-5 : dt == AS_F16 ? 2e-3 : 1e-2;
                if (!(e < tol))
                    fprintf(stderr, "xent bwd dtype %d row %lld n=%lld: error %.3g\n", (int)dt, (long long)r,
                            (long long)n, e);
                CHECK(e < tol);
            }
            free(xin), free(dx);
        }
        free(x);
    }
}

/* the float32 AdamW step against the general loop (through a float32
 * master copy): the same bits, for Adam and AdamW, both of torch.lerp's
 * forms, and maximize */
static void test_adamw(void)
{
    for (int64_t li = 0; li < NLENS; li++) {
        int64_t n = lens[li] * 9; /* past the thread team's threshold at the largest */
        for (int c = 0; c < 8; c++) { /* Adam / AdamW, both lerp forms (beta1 0.9 and 0.3), maximize */
            as_adamw_params h = {.lr = 1e-2, .beta1 = c & 2 ? 0.3 : 0.9, .beta2 = 0.999, .eps = 1e-8,
                                 .weight_decay = 0.1, .step = 3, .decoupled = c & 1, .maximize = (c & 4) != 0};
            float *p = randv(n, 1), *g = randv(n, 1), *m = randv(n, 0.1f), *v = randv(n, 0.01f);
            for (int64_t i = 0; i < n; i++) v[i] = fabsf(v[i]);
            float *p2 = malloc((size_t)n * 4), *m2 = malloc((size_t)n * 4), *v2 = malloc((size_t)n * 4);
            float *master = malloc((size_t)n * 4);
            memcpy(p2, p, (size_t)n * 4), memcpy(m2, m, (size_t)n * 4), memcpy(v2, v, (size_t)n * 4);
            memcpy(master, p, (size_t)n * 4);
            as_cpu_adamw_step(&h, n, p, AS_F32, g, AS_F32, m, v, NULL, NULL);
            as_cpu_adamw_step(&h, n, p2, AS_F32, g, AS_F32, m2, v2, NULL, master);
            CHECK(memcmp(p, p2, (size_t)n * 4) == 0);
            CHECK(memcmp(m, m2, (size_t)n * 4) == 0);
            CHECK(memcmp(v, v2, (size_t)n * 4) == 0);
            free(p), free(g), free(m), free(v), free(p2), free(m2), free(v2), free(master);
        }
    }
}

/* clip_grad_norm_'s sum of squares and scaling over float32, bfloat16 and
 * float64 items, against float64; the sum the same for 1 and 2 threads */
static void test_grad_lists(void)
{
    for (int64_t li = 0; li < NLENS; li++) {
        int64_t n = lens[li] * 97; /* up to 400k: several parts, split over threads */
        float *f = randv(n, 2.0f);
        uint16_t *h = malloc((size_t)n * 2);
        double *d = malloc((size_t)n * sizeof(double)), want = 0;
        for (int64_t i = 0; i < n; i++) {
            h[i] = as_f32_to_bf16(f[i]), d[i] = f[i];
            double b = as_bf16_to_f32(h[i]);
            want += 2.0 * (double)f[i] * f[i] + b * b;
        }
        as_list_item it[3] = {{f, n, AS_F32}, {h, n, AS_BF16}, {d, n, AS_F64}};
        double got = as_cpu_sumsq_list(it, 3);
        CHECK_NEAR(got, want, 1e-12);
        omp_set_num_threads(1);
        CHECK(as_cpu_sumsq_list(it, 3) == got);
        omp_set_num_threads(2);
        float *f0 = malloc((size_t)n * sizeof(float));
        uint16_t *h0 = malloc((size_t)n * 2);
        memcpy(f0, f, (size_t)n * sizeof(float)), memcpy(h0, h, (size_t)n * 2);
        as_cpu_scale_list(it, 3, 0.375);
        int ok = 1;
        for (int64_t i = 0; i < n; i++)
            ok &= f[i] == f0[i] * 0.375f && d[i] == (double)f0[i] * 0.375 &&
                  h[i] == as_f32_to_bf16(as_bf16_to_f32(h0[i]) * 0.375f);
        CHECK(ok);
        free(f0), free(h0);
        free(f), free(h), free(d);
    }
}

/* the parallel loops (65536 elements and up) give each row the bits that
 * row gets alone */
static void test_parallel_rows(void)
{
    const int64_t rows = 40, n = 2049, N = rows * n;
    float *x = randv(N, 4.0f), *w = randv(n, 1.0f), *b = randv(n, 1.0f), *g = randv(N, 1.0f);
    float *y = malloc((size_t)N * sizeof(float)), *y1 = malloc((size_t)n * sizeof(float));
    float *d = malloc((size_t)N * sizeof(float)), *d1 = malloc((size_t)n * sizeof(float));
    float loss[40], lse[40], l1, s1, gr[40];
    int64_t target[40];
    for (int64_t r = 0; r < rows; r++) target[r] = as_test_randint(0, n - 1), gr[r] = as_test_randf();
    int same = 1;
    as_cpu_softmax_rows(x, y, rows, n, 1);
    for (int64_t r = 0; r < rows; r++) {
        as_cpu_softmax_rows(x + r * n, y1, 1, n, 1);
        same &= memcmp(y + r * n, y1, (size_t)n * sizeof(float)) == 0;
    }
    as_cpu_layer_norm_rows(x, y, rows, n, w, b, 1e-5);
    as_cpu_norm_bwd_rows(x, w, g, d, NULL, rows, n, 1e-5, 0);
    for (int64_t r = 0; r < rows; r++) {
        as_cpu_layer_norm_rows(x + r * n, y1, 1, n, w, b, 1e-5);
        as_cpu_norm_bwd_rows(x + r * n, w, g + r * n, d1, NULL, 1, n, 1e-5, 0);
        same &= memcmp(y + r * n, y1, (size_t)n * sizeof(float)) == 0;
        same &= memcmp(d + r * n, d1, (size_t)n * sizeof(float)) == 0;
    }
    CHECK(as_cpu_xent_rows(x, AS_F32, target, -100, loss, lse, rows, n) == 0);
    as_cpu_xent_bwd_rows(x, AS_F32, target, -100, lse, gr, d, rows, n);
    for (int64_t r = 0; r < rows; r++) {
        as_cpu_xent_rows(x + r * n, AS_F32, &target[r], -100, &l1, &s1, 1, n);
        as_cpu_xent_bwd_rows(x + r * n, AS_F32, &target[r], -100, &s1, &gr[r], d1, 1, n);
        same &= l1 == loss[r] && s1 == lse[r] && memcmp(d + r * n, d1, (size_t)n * sizeof(float)) == 0;
    }
    CHECK(same);
    free(x), free(w), free(b), free(g), free(y), free(y1), free(d), free(d1);
}

int main(void)
{
    int ran = 0;
    for (int k = 0; k < 3; k++) {
        if (as_cpu_flash_force_isa(isas[k]) != 0) {
            printf("%s: not on this CPU, skipped\n", isas[k]);
            continue;
        }
        int before = as_test_failures;
        CHECK(as_cpu_vector_level() == k); /* the variants follow the forced path */
        test_maps();
        test_rows();
        test_row_grads();
        test_xent();
        test_adamw();
        test_grad_lists();
        test_parallel_rows();
        printf("%s: %s\n", isas[k], as_test_failures == before ? "ok" : "FAILED");
        ran++;
    }
    as_cpu_flash_force_isa(NULL);
    CHECK(ran >= 1);
    return as_test_report("test_vector_variants");
}
