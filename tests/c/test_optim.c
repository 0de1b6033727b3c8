/* The fused optimizer steps (kernels/cpu/optim.c through runtime/optim)
 * against a naive double-precision reference of torch.optim's formulas, on
 * odd sizes, several steps, every option; master weights for bfloat16 and
 * float16; non-contiguous gradients; thread-count independence; the errors. */
#include <string.h>

#include "as_test.h"
#include "attnswap/dtype.h"
#include "attnswap/optim.h"

typedef struct {
    double *p, *m, *v, *vmax, *buf;
} ref_state;

/* torch.optim.AdamW / Adam, one step, textbook form in double. */
static void ref_adamw(const as_adamw_params *h, int64_t n, ref_state *s, const double *grad)
{
    double bc1 = 1 - pow(h->beta1, (double)h->step), bc2 = 1 - pow(h->beta2, (double)h->step);
    for (int64_t i = 0; i < n; i++) {
        double g = h->maximize ? -grad[i] : grad[i];
        if (h->decoupled) s->p[i] *= 1 - h->lr * h->weight_decay;
        else g += h->weight_decay * s->p[i];
        s->m[i] = h->beta1 * s->m[i] + (1 - h->beta1) * g;
        s->v[i] = h->beta2 * s->v[i] + (1 - h->beta2) * g * g;
        double v = s->v[i];
        if (h->amsgrad) v = s->vmax[i] = fmax(s->vmax[i], v);
        s->p[i] -= h->lr / bc1 * s->m[i] / (sqrt(v) / sqrt(bc2) + h->eps);
    }
}

static void ref_sgd(const as_sgd_params *h, int64_t n, ref_state *s, const double *grad, bool first)
{
    for (int64_t i = 0; i < n; i++) {
        double d = h->maximize ? -grad[i] : grad[i];
        d += h->weight_decay * s->p[i];
        if (h->momentum != 0) {
            s->buf[i] = first ? d : h->momentum * s->buf[i] + (1 - h->dampening) * d;
            d = h->nesterov ? d + h->momentum * s->buf[i] : s->buf[i];
        }
        s->p[i] -= h->lr * d;
    }
}

static double *to_doubles(const as_tensor *t)
{
    int64_t n = as_numel(t);
    double *d = malloc((size_t)(n ? n : 1) * sizeof *d);
    for (int64_t i = 0; i < n; i++) d[i] = as_get_flat(t, i);
    return d;
}

/* max |a - ref| / (1 + |ref|) */
static double rel_err(const as_tensor *t, const double *ref)
{
    double e = 0;
    for (int64_t i = 0, n = as_numel(t); i < n; i++) {
        double d = fabs(as_get_flat(t, i) - ref[i]) / (1 + fabs(ref[i]));
        if (d > e || isnan(d)) e = isnan(d) ? INFINITY : d;
    }
    return e;
}

static as_tensor *zeros_f32(const as_tensor *like)
{
    return as_zeros(like->ndim, like->shape, AS_F32, AS_CPU);
}

static void test_adamw_vs_reference(void)
{
    const int64_t sizes[][2] = {{1, 1}, {3, 7}, {17, 33}, {1, 257}, {129, 129}};
    for (int si = 0; si < 5; si++)
        for (int variant = 0; variant < 6; variant++) {
            as_adamw_params h = {.lr = 1e-2, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.1,
                                 .decoupled = variant != 1, .amsgrad = variant == 2, .maximize = variant == 3};
            if (variant == 4) h.beta1 = 0.3, h.beta2 = 0.5, h.eps = 1e-3; /* lerp's other form */
            if (variant == 5) h.weight_decay = 0;
            as_tensor *p = as_test_random(2, sizes[si]);
            as_tensor *m = zeros_f32(p), *v = zeros_f32(p), *vmax = zeros_f32(p);
            int64_t n = as_numel(p);
            ref_state r = {to_doubles(p), calloc((size_t)n, 8), calloc((size_t)n, 8), calloc((size_t)n, 8), NULL};
            double err = 0;
            for (int step = 1; step <= 5; step++) {
                as_tensor *g = as_test_random(2, sizes[si]);
                double *gd = to_doubles(g);
                h.step = step;
                CHECK(as_adamw_step(p, g, m, v, h.amsgrad ? vmax : NULL, NULL, &h) == 0);
                ref_adamw(&h, n, &r, gd);
                free(gd), as_release(g);
            }
            err = fmax(rel_err(p, r.p), fmax(rel_err(m, r.m), rel_err(v, r.v)));
            if (h.amsgrad) err = fmax(err, rel_err(vmax, r.vmax));
            if (!(err < 2e-5)) fprintf(stderr, "adamw size %d variant %d: rel err %g\n", si, variant, err);
            CHECK(err < 2e-5);
            free(r.p), free(r.m), free(r.v), free(r.vmax);
            as_release(p), as_release(m), as_release(v), as_release(vmax);
        }
}

static void test_sgd_vs_reference(void)
{
    const int64_t sizes[][2] = {{1, 1}, {5, 3}, {31, 17}, {2, 1000}};
    for (int si = 0; si < 4; si++)
        for (int variant = 0; variant < 5; variant++) {
            as_sgd_params h = {.lr = 0.05, .momentum = variant ? 0.9 : 0, .dampening = variant == 2 ? 0.3 : 0,
                               .weight_decay = variant == 4 ? 0 : 0.01, .nesterov = variant == 3,
                               .maximize = variant == 4};
            as_tensor *p = as_test_random(2, sizes[si]);
            as_tensor *buf = zeros_f32(p);
            int64_t n = as_numel(p);
            ref_state r = {to_doubles(p), NULL, NULL, NULL, calloc((size_t)n, 8)};
            for (int step = 1; step <= 4; step++) {
                as_tensor *g = as_test_random(2, sizes[si]);
                double *gd = to_doubles(g);
                CHECK(as_sgd_step(p, g, h.momentum != 0 ? buf : NULL, NULL, &h, step == 1) == 0);
                ref_sgd(&h, n, &r, gd, step == 1);
                free(gd), as_release(g);
            }
            double err = rel_err(p, r.p);
            if (h.momentum != 0) err = fmax(err, rel_err(buf, r.buf));
            if (!(err < 1e-5)) fprintf(stderr, "sgd size %d variant %d: rel err %g\n", si, variant, err);
            CHECK(err < 1e-5);
            free(r.p), free(r.buf);
            as_release(p), as_release(buf);
        }
}

/* A bfloat16 / float16 param with a float32 master follows the float32 run
 * bit for bit in the master, and holds its rounding; without a master the
 * small updates are lost to rounding (why master weights exist). */
static void test_master_weights(void)
{
    const as_dtype dts[2] = {AS_BF16, AS_F16};
    for (int k = 0; k < 2; k++) {
        int64_t shape[1] = {301};
        as_tensor *p32 = as_test_random(1, shape);
        as_tensor *low = as_to_dtype(p32, dts[k]);
        as_tensor *master = as_to_dtype(low, AS_F32);
        as_tensor *ref = as_clone(master); /* the float32 run starts at the rounded values */
        as_tensor *low_nomaster = as_clone(low);
        as_tensor *m1 = zeros_f32(p32), *v1 = zeros_f32(p32), *m2 = zeros_f32(p32), *v2 = zeros_f32(p32);
        as_tensor *m3 = zeros_f32(p32), *v3 = zeros_f32(p32);
        as_adamw_params h = {.lr = 1e-4, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0,
                             .decoupled = true};
        for (int step = 1; step <= 6; step++) {
            as_tensor *g32 = as_test_random(1, shape);
            as_tensor *g = as_to_dtype(g32, dts[k]);
            as_tensor *gr = as_to_dtype(g, AS_F32); /* the same gradient values for the float32 run */
            h.step = step;
            CHECK(as_adamw_step(low, g, m1, v1, NULL, master, &h) == 0);
            CHECK(as_adamw_step(ref, gr, m2, v2, NULL, NULL, &h) == 0);
            CHECK(as_adamw_step(low_nomaster, g, m3, v3, NULL, NULL, &h) == 0);
            as_release(g32), as_release(g), as_release(gr);
        }
        CHECK(memcmp(as_data(master), as_data(ref), 301 * 4) == 0);
        as_tensor *rounded = as_to_dtype(master, dts[k]);
        CHECK(memcmp(as_data(rounded), as_data(low), 301 * 2) == 0);
        /* lr 1e-4 per step is below half a bfloat16 ulp of most values: without a master they stay put */
        if (dts[k] == AS_BF16) CHECK(as_test_maxdiff(rounded, low_nomaster) > 0);
        as_release(rounded);
        as_release(p32), as_release(low), as_release(master), as_release(ref), as_release(low_nomaster);
        as_release(m1), as_release(v1), as_release(m2), as_release(v2), as_release(m3), as_release(v3);
    }
}

/* A transposed (non-contiguous) gradient gives what its contiguous copy gives. */
static void test_noncontiguous_grad(void)
{
    int64_t shape[2] = {7, 5};
    as_tensor *p1 = as_test_random(2, shape), *p2 = as_clone(p1);
    int64_t tshape[2] = {5, 7};
    as_tensor *gt = as_test_random(2, tshape);
    as_tensor *g = as_transpose(gt, 0, 1), *gc = as_contiguous(g);
    as_tensor *m1 = zeros_f32(p1), *v1 = zeros_f32(p1), *m2 = zeros_f32(p1), *v2 = zeros_f32(p1);
    as_adamw_params h = {.lr = 1e-2, .beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8, .weight_decay = 0.01, .step = 1,
                         .decoupled = true};
    CHECK(!as_is_contiguous(g));
    CHECK(as_adamw_step(p1, g, m1, v1, NULL, NULL, &h) == 0);
    CHECK(as_adamw_step(p2, gc, m2, v2, NULL, NULL, &h) == 0);
    CHECK(memcmp(as_data(p1), as_data(p2), 35 * 4) == 0);
    as_release(p1), as_release(p2), as_release(gt), as_release(g), as_release(gc);
    as_release(m1), as_release(v1), as_release(m2), as_release(v2);
}

/* The vectorised float32 loop and the general one (taken here for a
 * bfloat16 gradient holding the same values) give the same bits. */
static void test_fast_path(void)
{
    for (int variant = 0; variant < 3; variant++) {
        int64_t shape[1] = {1031};
        as_tensor *p1 = as_test_random(1, shape), *p2 = as_clone(p1);
        as_tensor *m1 = zeros_f32(p1), *v1 = zeros_f32(p1), *m2 = zeros_f32(p1), *v2 = zeros_f32(p1);
        as_adamw_params h = {.lr = 1e-2, .beta1 = variant == 2 ? 0.3 : 0.9, .beta2 = 0.99, .eps = 1e-8,
                             .weight_decay = 0.05, .decoupled = variant != 1, .maximize = variant == 2};
        for (int step = 1; step <= 3; step++) {
            as_tensor *graw = as_test_random(1, shape);
            as_tensor *gb = as_to_dtype(graw, AS_BF16), *gf = as_to_dtype(gb, AS_F32);
            h.step = step;
            CHECK(as_adamw_step(p1, gf, m1, v1, NULL, NULL, &h) == 0);
            CHECK(as_adamw_step(p2, gb, m2, v2, NULL, NULL, &h) == 0);
            as_release(graw), as_release(gb), as_release(gf);
        }
        CHECK(memcmp(as_data(p1), as_data(p2), 1031 * 4) == 0);
        CHECK(memcmp(as_data(m1), as_data(m2), 1031 * 4) == 0 && memcmp(as_data(v1), as_data(v2), 1031 * 4) == 0);
        as_release(p1), as_release(p2), as_release(m1), as_release(v1), as_release(m2), as_release(v2);
    }
}

/* Elementwise, so 1 and 2 threads give the same bits (a size that splits). */
static void test_threads(void)
{
    int64_t shape[1] = {100003};
    as_tensor *p1 = as_test_random(1, shape), *g = as_test_random(1, shape), *p2 = as_clone(p1);
    as_tensor *m1 = zeros_f32(p1), *v1 = zeros_f32(p1), *m2 = zeros_f32(p1), *v2 = zeros_f32(p1);
    as_adamw_params h = {.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.01, .step = 3,
                         .decoupled = true};
    int prev = as_get_num_threads();
    as_set_num_threads(1);
    CHECK(as_adamw_step(p1, g, m1, v1, NULL, NULL, &h) == 0);
    as_set_num_threads(2);
    CHECK(as_adamw_step(p2, g, m2, v2, NULL, NULL, &h) == 0);
    as_set_num_threads(prev);
    CHECK(memcmp(as_data(p1), as_data(p2), 100003 * 4) == 0);
    as_release(p1), as_release(p2), as_release(g), as_release(m1), as_release(v1), as_release(m2), as_release(v2);
}

static void expect_error(int rc, const char *needle)
{
    CHECK(rc == -1);
    if (rc == -1 && !strstr(as_error_get(), needle)) {
        fprintf(stderr, "expected an error with '%s', got '%s'\n", needle, as_error_get());
        CHECK(0);
    }
}

static void test_errors(void)
{
    int64_t s23[2] = {2, 3}, s32[2] = {3, 2}, s6[1] = {6};
    as_tensor *p = as_test_random(2, s23), *g = as_test_random(2, s23), *gbad = as_test_random(2, s32);
    as_tensor *m = zeros_f32(p), *v = zeros_f32(p), *m6 = as_zeros(1, s6, AS_F32, AS_CPU);
    as_tensor *pt = as_transpose(p, 0, 1), *gt = as_transpose(g, 0, 1);
    as_tensor *ip = as_zeros(2, s23, AS_I64, AS_CPU), *mh = as_zeros(2, s23, AS_F16, AS_CPU);
    as_tensor *before = as_clone(p);
    as_adamw_params h = {.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .step = 1, .decoupled = true};
    expect_error(as_adamw_step(p, gbad, m, v, NULL, NULL, &h), "adamw_step: the gradient has shape (3, 2), the parameter (2, 3)");
    expect_error(as_adamw_step(pt, gt, m, v, NULL, NULL, &h), "is not contiguous");
    expect_error(as_adamw_step(ip, g, m, v, NULL, NULL, &h), "the parameter is int64");
    expect_error(as_adamw_step(p, g, mh, v, NULL, NULL, &h), "exp_avg buffer must be a contiguous float32");
    expect_error(as_adamw_step(p, g, m, NULL, NULL, NULL, &h), "exp_avg_sq buffer is missing");
    expect_error(as_adamw_step(p, g, m, m, NULL, NULL, &h), "share a storage");
    expect_error(as_adamw_step(p, g, m, v, NULL, m6, &h), "a float32 parameter takes no master copy");
    h.amsgrad = true;
    expect_error(as_adamw_step(p, g, m, v, NULL, NULL, &h), "max_exp_avg_sq buffer is missing");
    h.amsgrad = false, h.step = 0;
    expect_error(as_adamw_step(p, g, m, v, NULL, NULL, &h), "step must be >= 1");
    h.step = 1, h.beta2 = 1.0;
    expect_error(as_adamw_step(p, g, m, v, NULL, NULL, &h), "betas in [0, 1)");
    as_sgd_params s = {.lr = -1};
    expect_error(as_sgd_step(p, g, NULL, NULL, &s, true), "sgd_step: lr, momentum");
    s.lr = 0.1, s.momentum = 0.9;
    expect_error(as_sgd_step(p, g, NULL, NULL, &s, true), "sgd_step: the momentum buffer is missing");
    CHECK(as_test_maxdiff(p, before) == 0); /* nothing was written */
    h.beta2 = 0.999; /* an empty parameter is a no-op, not an error */
    int64_t s0[1] = {0};
    as_tensor *e = as_zeros(1, s0, AS_F32, AS_CPU), *eg = as_zeros(1, s0, AS_F32, AS_CPU);
    as_tensor *em = as_zeros(1, s0, AS_F32, AS_CPU), *ev = as_zeros(1, s0, AS_F32, AS_CPU);
    CHECK(as_adamw_step(e, eg, em, ev, NULL, NULL, &h) == 0);
    as_release(e), as_release(eg), as_release(em), as_release(ev);
    as_release(p), as_release(g), as_release(gbad), as_release(m), as_release(v), as_release(m6), as_release(pt);
    as_release(gt), as_release(ip), as_release(mh), as_release(before);
}

int main(void)
{
    test_adamw_vs_reference();
    test_sgd_vs_reference();
    test_master_weights();
    test_noncontiguous_grad();
    test_fast_path();
    test_threads();
    test_errors();
    return as_test_report("test_optim");
}
