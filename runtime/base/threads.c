/* Threads: OpenMP is the only pool.  OpenBLAS (Debian's pthread build) runs
 * single-threaded, and as_cpu_sgemm (kernels/cpu/gemm.c) splits a product
 * across OpenMP threads.
 *
 * Why: with two pools on the same cores, OpenBLAS's workers keep spinning
 * (up to ~0.1 s) after each sgemm while the next OpenMP region needs those
 * cores, and libgomp's workers spin for OpenBLAS in turn.  On a 2-core
 * machine that made whole model forwards 5-20x slower at random (tiny ViT:
 * 6 ms or 116 ms for the same call).  One pool has nothing to fight. */
#include <cblas.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "attnswap/ops.h"

void as_threads_init(void)
{
    openblas_set_num_threads(1);
}

void as_set_num_threads(int n)
{
    if (n < 1) n = 1;
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
    openblas_set_num_threads(1);
}

int as_get_num_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}
