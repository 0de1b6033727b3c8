/* Row-major sgemm on OpenBLAS, split across OpenMP threads by slabs of C
 * (OpenBLAS itself runs single-threaded: runtime/base/threads.c says why). */
#include <cblas.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu_kernels.h"

/* below this many multiply-adds one thread does the whole product */
#define SPLIT_MIN_FLOPS (64.0 * 64.0 * 64.0)

void as_cpu_sgemm(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                  const float *B, int64_t ldb, float beta, float *C, int64_t ldc)
{
    enum CBLAS_TRANSPOSE TA = ta ? CblasTrans : CblasNoTrans, TB = tb ? CblasTrans : CblasNoTrans;
    int nt = 1;
#ifdef _OPENMP
    if (!omp_in_parallel() && (double)M * (double)N * (double)K >= SPLIT_MIN_FLOPS) nt = omp_get_max_threads();
#endif
    /* split the longer side of C into one slab per thread, in multiples of 16 */
    int by_rows = M >= N;
    int64_t len = by_rows ? M : N;
    if (nt > 1 && len < 32) nt = 1;
    if (nt <= 1) {
        if (M > 0 && N > 0)
            cblas_sgemm(CblasRowMajor, TA, TB, (int)M, (int)N, (int)K, alpha, A, (int)lda, B, (int)ldb, beta, C,
                        (int)ldc);
        return;
    }
    int64_t slab = ((len + nt - 1) / nt + 15) / 16 * 16;
#pragma omp parallel for num_threads(nt) schedule(static, 1)
    for (int64_t s0 = 0; s0 < len; s0 += slab) {
        int64_t n = len - s0 < slab ? len - s0 : slab;
        if (by_rows) {
            const float *a = ta ? A + s0 : A + s0 * lda;
            cblas_sgemm(CblasRowMajor, TA, TB, (int)n, (int)N, (int)K, alpha, a, (int)lda, B, (int)ldb, beta,
                        C + s0 * ldc, (int)ldc);
        } else {
            const float *b = tb ? B + s0 * ldb : B + s0;
            cblas_sgemm(CblasRowMajor, TA, TB, (int)M, (int)n, (int)K, alpha, A, (int)lda, b, (int)ldb, beta,
                        C + s0, (int)ldc);
        }
    }
}
