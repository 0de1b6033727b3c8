/* The AVX-512 float32 product (kernels/cpu/sgemm_avx512.c) against float64:
 * C = A B, A B^T, A^T B and A^T B^T with padded leading dimensions, a bias, a residual, or
 * C added (beta 1), at sizes around its blocks (12-row and 32-column tiles,
 * K blocks of 256, 960-row A blocks, 8192-column B blocks), split by rows
 * and by columns, on one to three threads (tests/CMakeLists.txt runs it again
 * under OMP_THREAD_LIMIT=1, where the team is smaller than asked), and two
 * products at once from the
 * workers of a parallel region (each with its own packing buffers); small
 * products through as_cpu_sgemm_own_any_size.  The
 * columns between N and ldc must come back untouched.  Off the AVX-512 path
 * it must decline, as it must for a small product. */
#include <float.h>
#include <string.h>

#include <omp.h>

#include "as_test.h"
#include "attention_flash.h"
#include "cpu_kernels.h"
#include "vector_variants.h"

#define SENTINEL 12345.0f

typedef struct {
    int64_t M, N, K;
    int tb, bias, resid, beta, ta;
} gcase;

typedef struct {
    gcase c;
    int64_t lda, ldb, ldc, ldr;
    float *A, *B, *bias, *resid, *C;
    double *ref, *bound;
} gprob;

static float *randv(int64_t n)
{
    float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    for (int64_t i = 0; i < n; i++) p[i] = as_test_randf();
    return p;
}

static void make(gprob *p, gcase c)
{
    p->c = c;
    p->lda = (c.ta ? c.M : c.K) + 3, p->ldb = (c.tb ? c.K : c.N) + 5, p->ldc = c.N + 7, p->ldr = c.N + 2;
    p->A = randv((c.ta ? c.K : c.M) * p->lda);
    p->B = randv((c.tb ? c.N : c.K) * p->ldb);
    p->bias = c.bias ? randv(c.N) : NULL;
    p->resid = c.resid ? randv(c.M * p->ldr) : NULL;
    p->C = randv(c.M * p->ldc);
    for (int64_t i = 0; i < c.M; i++)
        for (int64_t j = c.N; j < p->ldc; j++) p->C[i * p->ldc + j] = SENTINEL;
    p->ref = malloc((size_t)(c.M * c.N + 1) * sizeof(double));
    p->bound = malloc((size_t)(c.M * c.N + 1) * sizeof(double));
    for (int64_t i = 0; i < c.M; i++)
        for (int64_t j = 0; j < c.N; j++) {
            double s = 0, a = 0;
            for (int64_t k = 0; k < c.K; k++) {
                double b = c.tb ? p->B[j * p->ldb + k] : p->B[k * p->ldb + j];
                double x = c.ta ? p->A[k * p->lda + i] : p->A[i * p->lda + k];
                s += x * b, a += fabs(x * b);
            }
            if (p->bias) s += p->bias[j], a += fabs(p->bias[j]);
            if (p->resid) s += p->resid[i * p->ldr + j], a += fabs(p->resid[i * p->ldr + j]);
            if (c.beta) s += p->C[i * p->ldc + j], a += fabs(p->C[i * p->ldc + j]);
            /* float32 sums of K + 3 terms, in any order */
            p->ref[i * c.N + j] = s, p->bound[i * c.N + j] = (double)(c.K + 4) * FLT_EPSILON * a + 1e-30;
        }
}

static void release(gprob *p)
{
    free(p->A), free(p->B), free(p->bias), free(p->resid), free(p->C), free(p->ref), free(p->bound);
}

static bool run(gprob *p)
{
    const gcase c = p->c;
    return as_cpu_sgemm_own(c.ta, c.tb, c.M, c.N, c.K, p->A, p->lda, p->B, p->ldb, p->bias, p->resid, p->ldr,
                            c.beta ? 1.0f : 0.0f, p->C, p->ldc);
}

/* the worst error as a multiple of its bound (<= 1 passes), and the padding kept */
static double check(const gprob *p, int *padding_ok)
{
    const gcase c = p->c;
    double worst = 0;
    *padding_ok = 1;
    for (int64_t i = 0; i < c.M; i++) {
        for (int64_t j = 0; j < c.N; j++) {
            double e = fabs(p->C[i * p->ldc + j] - p->ref[i * c.N + j]) / p->bound[i * c.N + j];
            if (!(e <= worst)) worst = e;
        }
        for (int64_t j = c.N; j < p->ldc; j++)
            if (p->C[i * p->ldc + j] != SENTINEL) *padding_ok = 0;
    }
    return worst;
}

static const gcase cases[] = {
    /* M, N, K, tb, bias, resid, beta, ta */
    {48, 32, 16, 1, 0, 0, 0, 0},      {49, 33, 17, 1, 1, 0, 0, 0},   {61, 100, 255, 0, 0, 1, 0, 0},
    {130, 385, 256, 1, 1, 1, 0, 0},   {397, 70, 257, 0, 0, 0, 1, 0}, {100, 47, 800, 1, 1, 0, 1, 0},
    {60, 8200, 20, 1, 1, 0, 0, 0},    {2000, 40, 60, 0, 0, 1, 0, 0}, {50, 1000, 64, 1, 0, 0, 1, 0},
    {1025, 95, 513, 1, 1, 1, 0, 0},   {95, 9000, 17, 0, 1, 0, 0, 0}, {300, 769, 1030, 1, 0, 0, 0, 0},
    /* A transposed (a weight gradient, dY^T x) */
    {48, 32, 16, 0, 0, 0, 0, 1},   {49, 33, 17, 1, 0, 0, 1, 1}, {397, 70, 257, 0, 1, 0, 0, 1},
    {1025, 95, 513, 0, 0, 1, 0, 1}, {61, 1000, 300, 1, 0, 0, 0, 1},
    /* two column blocks of B and three K blocks, split by rows */
    {200, 8300, 300, 1, 1, 1, 0, 0},
};
#define NCASES (int)(sizeof cases / sizeof cases[0])

static void test_cases(int threads)
{
    omp_set_num_threads(threads);
    for (int k = 0; k < NCASES; k++) {
        gprob p;
        make(&p, cases[k]);
        int took = run(&p), pad_ok;
        double worst = check(&p, &pad_ok);
        CHECK(took);
        CHECK(worst <= 1.0);
        CHECK(pad_ok);
        if (!took || !(worst <= 1.0) || !pad_ok)
            fprintf(stderr, "  %d threads, M %lld N %lld K %lld ta %d tb %d bias %d resid %d beta %d: took %d, "
                            "error %.3g of its bound, padding %s\n",
                    threads, (long long)p.c.M, (long long)p.c.N, (long long)p.c.K, p.c.ta, p.c.tb, p.c.bias, p.c.resid,
                    p.c.beta, took, worst, pad_ok ? "kept" : "WRITTEN");
        release(&p);
    }
}

/* two products at once, one on each worker of a parallel region: each runs
 * on its caller's thread alone, with its own packing buffers */
static void test_nested(void)
{
    gprob p[2];
    make(&p[0], (gcase){397, 300, 300, 1, 1, 0, 0, 0});
    make(&p[1], (gcase){250, 520, 700, 0, 0, 1, 0, 1});
    int took[2] = {0, 0};
#pragma omp parallel for num_threads(2)
    for (int i = 0; i < 2; i++) took[i] = run(&p[i]);
    for (int i = 0; i < 2; i++) {
        int pad_ok;
        CHECK(took[i]);
        CHECK(check(&p[i], &pad_ok) <= 1.0);
        CHECK(pad_ok);
        release(&p[i]);
    }
}

/* what it must leave to OpenBLAS */
static void test_declines(void)
{
    static float a[64 * 64], b[64 * 64], c[64 * 64];
    CHECK(!as_cpu_sgemm_own(0, 0, 16, 64, 64, a, 64, b, 64, NULL, NULL, 0, 0.0f, c, 64)); /* too few rows */
    CHECK(!as_cpu_sgemm_own(0, 0, 64, 64, 64, a, 64, b, 64, NULL, NULL, 0, 0.0f, c, 64)); /* too small */
}

int main(void)
{
    if (as_cpu_flash_force_isa("avx512") != 0) {
        printf("avx512: not on this CPU; checking that the kernel declines\n");
    } else {
        CHECK(as_cpu_vector_level() == 2);
        as_cpu_sgemm_own_any_size(true); /* the small cases are the edges */
        test_cases(1);
        test_cases(2);
        test_cases(3);
        test_nested();
        as_cpu_sgemm_own_any_size(false);
        test_declines();
    }
    /* off the AVX-512 path the product is OpenBLAS's */
    const char *others[2] = {"avx2", "scalar"};
    for (int k = 0; k < 2; k++) {
        if (as_cpu_flash_force_isa(others[k]) != 0) continue;
        gprob p;
        make(&p, cases[3]);
        CHECK(!run(&p));
        release(&p);
    }
    as_cpu_flash_force_isa(NULL);
    return as_test_report("test_sgemm_own");
}
