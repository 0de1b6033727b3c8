/* Philox RNG: known answers, reproducibility, thread independence, moments. */
#include <omp.h>
#include <string.h>

#include "as_test.h"
#include "attnswap/cuda.h"
#include "attnswap/dtype.h"
#include "attnswap/ops.h"

void as_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

#define N_STAT 100000

/* Random123's kat_vectors: philox4x32 10 <ctr x4> <key x2> <expected x4>. */
static void test_kat(void)
{
    static const uint32_t v[3][10] = {
        {0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
        {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0x408f276d,
         0x41c83b0e, 0xa20bc7c6, 0x6d5451fd},
        {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0, 0xd16cfe09,
         0x94fdcceb, 0x5001e420, 0x24126ea1},
    };
    for (int k = 0; k < 3; k++) {
        uint32_t out[4];
        as_philox4x32_10(v[k], v[k] + 4, out);
        for (int i = 0; i < 4; i++) CHECK(out[i] == v[k][6 + i]);
    }
}

static bool same_bits(const as_tensor *a, const as_tensor *b)
{
    return a && b && a->dtype == b->dtype && as_numel(a) == as_numel(b) &&
           memcmp(as_data(a), as_data(b), (size_t)as_numel(a) * as_dtype_size(a->dtype)) == 0;
}

static void test_stream(void)
{
    CHECK(as_initial_seed() == 0); /* the documented default */
    as_manual_seed(0x123456789abcdefull);
    CHECK(as_initial_seed() == 0x123456789abcdefull);
    as_tensor *a = as_rand(1, (int64_t[]){5}, AS_F32, AS_CPU);
    as_tensor *b = as_rand(2, (int64_t[]){1, 3}, AS_F32, AS_CPU);
    /* element i of the first draw is word i of the stream */
    uint32_t key[2] = {0x89abcdefu, 0x01234567u}, x[4];
    for (int i = 0; i < 5; i++) {
        as_philox4x32_10((uint32_t[4]){(uint32_t)(i / 4), 0, 0, 0}, key, x);
        CHECK(((float *)as_data(a))[i] == (float)((x[i % 4] >> 8) * 0x1p-24));
    }
    /* the second draw starts at word 8 (5 rounded up to 4) */
    as_manual_seed(0x123456789abcdefull);
    as_tensor *c = as_rand(1, (int64_t[]){11}, AS_F32, AS_CPU);
    CHECK(c && memcmp(as_data(c), as_data(a), 5 * sizeof(float)) == 0);
    CHECK(c && memcmp((float *)as_data(c) + 8, as_data(b), 3 * sizeof(float)) == 0);
    /* reseeding reproduces the same sequence of draws, of any kind */
    as_manual_seed(7);
    as_tensor *r1 = as_randn(2, (int64_t[]){33, 31}, AS_F32, AS_CPU);
    as_tensor *u1 = as_rand(1, (int64_t[]){77}, AS_F32, AS_CPU);
    as_tensor *k1 = as_bernoulli_keep(1, (int64_t[]){50}, 0.5, AS_CPU);
    as_manual_seed(7);
    as_tensor *r2 = as_randn(2, (int64_t[]){33, 31}, AS_F32, AS_CPU);
    as_tensor *u2 = as_rand(1, (int64_t[]){77}, AS_F32, AS_CPU);
    as_tensor *k2 = as_bernoulli_keep(1, (int64_t[]){50}, 0.5, AS_CPU);
    CHECK(same_bits(r1, r2) && same_bits(u1, u2) && same_bits(k1, k2));
    as_manual_seed(8);
    as_tensor *r3 = as_randn(2, (int64_t[]){33, 31}, AS_F32, AS_CPU);
    CHECK(r3 && !same_bits(r1, r3));
    /* an empty draw does not move the stream */
    as_manual_seed(7);
    as_tensor *e = as_randn(2, (int64_t[]){0, 4}, AS_F32, AS_CPU);
    as_tensor *r4 = as_randn(2, (int64_t[]){33, 31}, AS_F32, AS_CPU);
    CHECK(e && as_numel(e) == 0 && same_bits(r1, r4));
    /* 0-d */
    as_tensor *s = as_randn(0, NULL, AS_F32, AS_CPU);
    CHECK(s && s->ndim == 0 && isfinite(as_get_flat(s, 0)));
    as_release(a), as_release(b), as_release(c), as_release(r1), as_release(u1), as_release(k1);
    as_release(r2), as_release(u2), as_release(k2), as_release(r3), as_release(e), as_release(r4);
    as_release(s);
}

static void test_threads(void)
{
    int64_t shape[2] = {401, 1001}; /* large enough to run in parallel */
    as_tensor *t[2][3];
    for (int k = 0; k < 2; k++) {
        omp_set_num_threads(k + 1);
        as_manual_seed(99);
        t[k][0] = as_randn(2, shape, AS_F32, AS_CPU);
        t[k][1] = as_rand(2, shape, AS_BF16, AS_CPU);
        t[k][2] = as_bernoulli_keep(2, shape, 0.3, AS_CPU);
    }
    for (int j = 0; j < 3; j++) {
        CHECK(same_bits(t[0][j], t[1][j]));
        as_release(t[0][j]), as_release(t[1][j]);
    }
    omp_set_num_threads(2);
}

static void moments(const as_tensor *t, double *mean, double *var)
{
    double s = 0, s2 = 0;
    int64_t n = as_numel(t);
    for (int64_t i = 0; i < n; i++) s += as_get_flat(t, i);
    *mean = s / (double)n;
    for (int64_t i = 0; i < n; i++) {
        double d = as_get_flat(t, i) - *mean;
        s2 += d * d;
    }
    *var = s2 / (double)(n - 1);
}

static void test_moments(void)
{
    double m, v;
    /* standard errors with n = 1e5: uniform mean 0.0009, var 0.0003;
     * normal mean 0.0032, var 0.0045; tolerances are about 5 of them. */
    as_manual_seed(1234);
    as_tensor *u = as_rand(1, (int64_t[]){N_STAT}, AS_F32, AS_CPU);
    moments(u, &m, &v);
    CHECK(fabs(m - 0.5) < 0.005 && fabs(v - 1.0 / 12) < 0.0015);
    double lo = 1, hi = 0;
    for (int64_t i = 0; i < N_STAT; i++) {
        double x = as_get_flat(u, i);
        lo = x < lo ? x : lo, hi = x > hi ? x : hi;
    }
    CHECK(lo >= 0 && lo < 0.001 && hi < 1 && hi > 0.999);

    as_tensor *n = as_randn(2, (int64_t[]){N_STAT / 10, 10}, AS_F32, AS_CPU);
    moments(n, &m, &v);
    CHECK(fabs(m) < 0.016 && fabs(v - 1) < 0.025);
    int64_t tail = 0; /* P(|z| > 2) = 0.0455 */
    for (int64_t i = 0; i < N_STAT; i++) tail += fabs(as_get_flat(n, i)) > 2;
    CHECK(fabs(tail / (double)N_STAT - 0.0455) < 0.004);

    /* in place, on a non-contiguous view: row-major element i of the view gets draw i */
    as_tensor *base = as_zeros(2, (int64_t[]){N_STAT / 100, 100}, AS_F32, AS_CPU);
    as_tensor *tv = as_transpose(base, 0, 1);
    CHECK(tv && as_normal_(tv, 3.0, 2.0) == 0);
    moments(tv, &m, &v);
    CHECK(fabs(m - 3) < 0.032 && fabs(v - 4) < 0.1);
    as_manual_seed(55);
    CHECK(as_uniform_(tv, -2.0, 5.0) == 0);
    as_manual_seed(55);
    as_tensor *ref = as_empty(2, tv->shape, AS_F32, AS_CPU);
    CHECK(as_uniform_(ref, -2.0, 5.0) == 0);
    CHECK(as_test_maxdiff(tv, ref) == 0);
    moments(ref, &m, &v);
    CHECK(fabs(m - 1.5) < 0.035 && fabs(v - 49.0 / 12) < 0.075);

    /* half types: rounded from the same draw, and rand stays below 1 */
    as_manual_seed(3);
    as_tensor *nf = as_randn(1, (int64_t[]){1000}, AS_F32, AS_CPU);
    as_manual_seed(3);
    as_tensor *nb = as_randn(1, (int64_t[]){1000}, AS_BF16, AS_CPU);
    CHECK(nb && nb->dtype == AS_BF16);
    bool same = true;
    for (int i = 0; i < 1000 && nb; i++)
        same = same && ((uint16_t *)as_data(nb))[i] == as_f32_to_bf16(((float *)as_data(nf))[i]);
    CHECK(same);
    as_tensor *hb = as_rand(1, (int64_t[]){N_STAT}, AS_BF16, AS_CPU);
    as_tensor *hh = as_rand(1, (int64_t[]){N_STAT}, AS_F16, AS_CPU);
    double mb = 0, mh = 0;
    for (int64_t i = 0; i < N_STAT; i++) mb = fmax(mb, as_get_flat(hb, i)), mh = fmax(mh, as_get_flat(hh, i));
    CHECK(mb < 1 && mh < 1 && mb > 0.99 && mh > 0.999);
    moments(hh, &m, &v);
    CHECK(fabs(m - 0.5) < 0.005);
    as_release(u), as_release(n), as_release(base), as_release(tv), as_release(ref);
    as_release(nf), as_release(nb), as_release(hb), as_release(hh);
}

static void test_bernoulli(void)
{
    as_manual_seed(77);
    as_tensor *k = as_bernoulli_keep(1, (int64_t[]){N_STAT}, 0.1, AS_CPU);
    CHECK(k && k->dtype == AS_BOOL);
    int64_t kept = 0;
    for (int64_t i = 0; i < N_STAT; i++) kept += ((uint8_t *)as_data(k))[i];
    CHECK(fabs(kept / (double)N_STAT - 0.9) < 0.005); /* s.e. 0.00095 */
    as_tensor *all = as_bernoulli_keep(1, (int64_t[]){1000}, 0.0, AS_CPU);
    as_tensor *none = as_bernoulli_keep(1, (int64_t[]){1000}, 1.0, AS_CPU);
    int64_t na = 0, nn = 0;
    for (int i = 0; i < 1000; i++) na += ((uint8_t *)as_data(all))[i], nn += ((uint8_t *)as_data(none))[i];
    CHECK(na == 1000 && nn == 0);
    as_release(k), as_release(all), as_release(none);
}

static void test_errors(void)
{
    /* device tensors get the host's draws: the same numbers for one seed, or
     * a clear error where there is no device */
    as_device cuda = {AS_DEV_CUDA, 0};
    as_manual_seed(7);
    as_tensor *g = as_randn(1, (int64_t[]){5}, AS_F32, cuda);
    if (as_cuda_device_count() == 0) {
        CHECK(g == NULL && strstr(as_error_get(), "cuda") != NULL);
    } else {
        as_manual_seed(7);
        as_tensor *c = as_randn(1, (int64_t[]){5}, AS_F32, AS_CPU), *back = g ? as_to_device(g, AS_CPU) : NULL;
        CHECK(back && as_test_maxdiff(back, c) == 0);
        as_release(c), as_release(back);
    }
    as_release(g);
    CHECK(as_rand(1, (int64_t[]){3}, AS_I64, AS_CPU) == NULL);
    CHECK(strcmp(as_error_get(), "rand: expected a floating point dtype, got int64") == 0);
    CHECK(as_bernoulli_keep(1, (int64_t[]){3}, 1.5, AS_CPU) == NULL);
    CHECK(strstr(as_error_get(), "bernoulli: drop probability must be in [0, 1]") != NULL);
    CHECK(as_bernoulli_keep(1, (int64_t[]){3}, NAN, AS_CPU) == NULL);
    CHECK(as_randn(1, (int64_t[]){-2}, AS_F32, AS_CPU) == NULL);
    as_tensor *i = as_zeros(1, (int64_t[]){4}, AS_I32, AS_CPU);
    CHECK(as_normal_(i, 0, 1) == -1);
    CHECK(strcmp(as_error_get(), "normal_: expected a floating point dtype, got int32") == 0);
    as_tensor *f = as_zeros(1, (int64_t[]){4}, AS_F32, AS_CPU);
    CHECK(as_normal_(f, 0, -1) == -1 && as_uniform_(f, 2, 1) == -1);
    CHECK(as_uniform_(f, 0, INFINITY) == -1);
    as_release(i), as_release(f);
}

int main(void)
{
    test_kat();
    test_stream();
    test_threads();
    test_moments();
    test_bernoulli();
    test_errors();
    return as_test_report("test_rng");
}
