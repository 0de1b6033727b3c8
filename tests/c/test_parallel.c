/* as_cpu_parallel_items (kernels/cpu/parallel.c): every item runs once, on a
 * thread index below the thread count, and OpenBLAS's own thread count is
 * back where it was afterwards. */
#include <cblas.h>
#include <omp.h>

#include "as_test.h"
#include "parallel.h"

typedef struct {
    int runs[1000];
    int bad_thread;
    int nthreads;
} seen;

static void count(void *ctx, int64_t i, int t)
{
    seen *s = ctx;
#pragma omp atomic
    s->runs[i]++;
    if (t < 0 || t >= s->nthreads) {
#pragma omp atomic write
        s->bad_thread = 1;
    }
}

int main(void)
{
    int before = openblas_get_num_threads();
    const int64_t sizes[] = {0, 1, 2, 3, 17, 1000};
    for (int nt = 0; nt <= 4; nt++)
        for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
            static seen s;
            for (int i = 0; i < 1000; i++) s.runs[i] = 0;
            s.bad_thread = 0, s.nthreads = nt < 1 ? 1 : nt;
            as_cpu_parallel_items(sizes[k], nt, count, &s);
            int once = 1;
            for (int64_t i = 0; i < 1000; i++) once &= s.runs[i] == (i < sizes[k] ? 1 : 0);
            CHECK(once);
            CHECK(!s.bad_thread);
            CHECK(openblas_get_num_threads() == before);
        }
    return as_test_report("parallel");
}
