#include "parallel.h"

#include <cblas.h>
#ifdef _OPENMP
#include <omp.h>
#endif

void as_cpu_parallel_items(int64_t items, int nthreads, as_cpu_item_fn fn, void *ctx)
{
    if (items <= 0) return;
    if (nthreads < 1) nthreads = 1;
    if (items < nthreads) nthreads = (int)items;
    int blas_threads = openblas_get_num_threads();
    if (nthreads > 1 && blas_threads != 1) openblas_set_num_threads(1);
#pragma omp parallel num_threads(nthreads)
    {
#ifdef _OPENMP
        int t = omp_get_thread_num();
#else
        int t = 0;
#endif
#pragma omp for schedule(dynamic, 1)
        for (int64_t i = 0; i < items; i++) fn(ctx, i, t);
    }
    if (nthreads > 1 && blas_threads != 1) openblas_set_num_threads(blas_threads);
}
