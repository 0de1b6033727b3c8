/* A minimal C test harness: CHECK keeps going and counts failures; every test
 * file's main returns as_test_report(). Random helpers draw from a fixed-seed
 * xorshift so failures reproduce. */
#ifndef AS_TEST_H
#define AS_TEST_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "attnswap/error.h"
#include "attnswap/ops.h"
#include "attnswap/tensor.h"

/* The one thread pool, as luaopen_attnswap_core sets it up (OpenBLAS single-
 * threaded, products split over OpenMP): the C tests run the library as Lua does. */
__attribute__((constructor)) static void as_test_init(void) { as_init(); }

static int as_test_failures, as_test_checks;

#define CHECK(cond)                                                                           \
    do {                                                                                      \
        as_test_checks++;                                                                     \
        if (!(cond)) {                                                                        \
            as_test_failures++;                                                               \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);          \
        }                                                                                     \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                                 \
    do {                                                                                      \
        double a_ = (a), b_ = (b);                                                            \
        as_test_checks++;                                                                     \
        if (!(fabs(a_ - b_) <= (tol) * (1 + fabs(b_))) && !(isnan(a_) && isnan(b_))) {         \
            as_test_failures++;                                                               \
            fprintf(stderr, "%s:%d: %s = %.9g, expected %.9g\n", __FILE__, __LINE__, #a, a_, b_); \
        }                                                                                     \
    } while (0)

/* Fails the test when a runtime call returned NULL, printing its error. */
#define CHECK_OK(t)                                                                           \
    do {                                                                                      \
        as_test_checks++;                                                                     \
        if (!(t)) {                                                                           \
            as_test_failures++;                                                               \
            fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #t, as_error_get()); \
        }                                                                                     \
    } while (0)

static uint64_t as_test_rng_state = 0x9e3779b97f4a7c15ull;
static inline uint64_t as_test_rand_u64(void)
{
    uint64_t x = as_test_rng_state;
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    return as_test_rng_state = x;
}
/* Uniform in [lo, hi] (integers). */
static inline int64_t as_test_randint(int64_t lo, int64_t hi)
{
    return lo + (int64_t)(as_test_rand_u64() % (uint64_t)(hi - lo + 1));
}
static inline float as_test_randf(void) { return (float)((as_test_rand_u64() >> 11) * 0x1p-53 * 2 - 1); }

/* A float32 tensor of the given shape with random values in [-1, 1]. */
static inline as_tensor *as_test_random(int ndim, const int64_t *shape)
{
    as_tensor *t = as_empty(ndim, shape, AS_F32, AS_CPU);
    float *p = as_data(t);
    for (int64_t i = 0, n = as_numel(t); i < n; i++) p[i] = as_test_randf();
    return t;
}

/* max |a - b| over all elements (shapes must match). */
static inline double as_test_maxdiff(const as_tensor *a, const as_tensor *b)
{
    double m = 0;
    for (int64_t i = 0, n = as_numel(a); i < n; i++) {
        double d = fabs(as_get_flat(a, i) - as_get_flat(b, i));
        if (d > m || isnan(d)) m = isnan(d) ? INFINITY : d;
    }
    return m;
}

static inline int as_test_report(const char *name)
{
    printf("%s: %d checks, %d failures\n", name, as_test_checks, as_test_failures);
    return as_test_failures ? 1 : 0;
}

#endif
