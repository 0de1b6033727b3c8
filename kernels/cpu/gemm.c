/* Row-major sgemm / dgemm on OpenBLAS, split across OpenMP threads by slabs
 * of C (OpenBLAS itself runs single-threaded: runtime/base/threads.c says why). */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu_kernels.h"

/* below this many multiply-adds one thread does the whole product */
#define SPLIT_MIN_FLOPS (64.0 * 64.0 * 64.0)

/* The one place BLAS is called: float32 (f64 = 0) or float64 operands, C = A B
 * (alpha 1, beta 0 for float64; float32 keeps its alpha and beta). */
static void blas_call(int f64, enum CBLAS_TRANSPOSE TA, enum CBLAS_TRANSPOSE TB, int64_t M, int64_t N, int64_t K,
                      float alpha, const void *A, int64_t lda, const void *B, int64_t ldb, float beta, void *C,
                      int64_t ldc)
{
    if (f64)
        cblas_dgemm(CblasRowMajor, TA, TB, (int)M, (int)N, (int)K, (double)alpha, A, (int)lda, B, (int)ldb,
                    (double)beta, C, (int)ldc);
    else
        cblas_sgemm(CblasRowMajor, TA, TB, (int)M, (int)N, (int)K, alpha, A, (int)lda, B, (int)ldb, beta, C,
                    (int)ldc);
}

/* ATTNSWAP_GEMM_SPLIT (for measuring the split; unset: auto): "rows" or
 * "cols" forces the slab direction, "blas" gives the whole product to
 * OpenBLAS's own threads instead of slabs. */
static int split_mode(void)
{
    static int mode = -1; /* 0 auto, 1 rows, 2 cols, 3 blas */
    if (mode < 0) {
        const char *e = getenv("ATTNSWAP_GEMM_SPLIT");
        mode = !e ? 0 : !strcmp(e, "rows") ? 1 : !strcmp(e, "cols") ? 2 : !strcmp(e, "blas") ? 3 : 0;
    }
    return mode;
}

static void gemm_split(int f64, int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const void *A,
                       int64_t lda, const void *B, int64_t ldb, float beta, void *C, int64_t ldc)
{
    enum CBLAS_TRANSPOSE TA = ta ? CblasTrans : CblasNoTrans, TB = tb ? CblasTrans : CblasNoTrans;
    const int64_t es = f64 ? 8 : 4;
    const char *a0 = A, *b0 = B;
    char *c0 = C;
    int nt = 1;
#ifdef _OPENMP
    if (!omp_in_parallel() && (double)M * (double)N * (double)K >= SPLIT_MIN_FLOPS) nt = omp_get_max_threads();
#endif
    if (nt > 1 && split_mode() == 3) {
        openblas_set_num_threads(nt);
        blas_call(f64, TA, TB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        openblas_set_num_threads(1);
        return;
    }
    /* split the longer side of C into one slab per thread, in multiples of 16 */
    int by_rows = split_mode() == 1 ? 1 : split_mode() == 2 ? 0 : M >= N;
    int64_t len = by_rows ? M : N;
    if (nt > 1 && len < 32) nt = 1;
    if (nt <= 1) {
        if (M > 0 && N > 0) blas_call(f64, TA, TB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    int64_t slab = ((len + nt - 1) / nt + 15) / 16 * 16;
#pragma omp parallel for num_threads(nt) schedule(static, 1)
    for (int64_t s0 = 0; s0 < len; s0 += slab) {
        int64_t n = len - s0 < slab ? len - s0 : slab;
        if (by_rows) {
            const char *a = a0 + (ta ? s0 : s0 * lda) * es;
            blas_call(f64, TA, TB, n, N, K, alpha, a, lda, B, ldb, beta, c0 + s0 * ldc * es, ldc);
        } else {
            const char *b = b0 + (tb ? s0 * ldb : s0) * es;
            blas_call(f64, TA, TB, M, n, K, alpha, A, lda, b, ldb, beta, c0 + s0 * es, ldc);
        }
    }
}

void as_cpu_sgemm(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                  const float *B, int64_t ldb, float beta, float *C, int64_t ldc)
{
    gemm_split(0, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void as_cpu_dgemm(int ta, int tb, int64_t M, int64_t N, int64_t K, const double *A, int64_t lda, const double *B,
                  int64_t ldb, double *C, int64_t ldc)
{
    gemm_split(1, ta, tb, M, N, K, 1.0f, A, lda, B, ldb, 0.0f, C, ldc);
}
