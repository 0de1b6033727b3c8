/* One thread count for OpenMP and OpenBLAS. */
#include <cblas.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "ops.h"

void as_set_num_threads(int n)
{
    if (n < 1) n = 1;
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
    openblas_set_num_threads(n);
}

int as_get_num_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}
