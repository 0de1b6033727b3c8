#include "strided.h"

#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

void as_cpu_iter_range(const as_iter *it, int64_t begin, int64_t end, as_cpu_loop loop,
                       void *ctx)
{
    if (begin >= end) return;
    int nd = it->ndim, nops = it->nops;
    int64_t idx[AS_MAX_DIMS];
    int64_t rem = begin;
    for (int d = nd - 1; d >= 0; d--) {
        idx[d] = rem % it->shape[d];
        rem /= it->shape[d];
    }
    char *ptrs[AS_ITER_MAX_OPS];
    int64_t inner[AS_ITER_MAX_OPS];
    for (int k = 0; k < nops; k++) {
        inner[k] = it->stride[k][nd - 1];
        ptrs[k] = it->base[k];
        for (int d = 0; d < nd; d++) ptrs[k] += idx[d] * it->stride[k][d];
    }
    int64_t pos = begin;
    while (pos < end) {
        int64_t n = it->shape[nd - 1] - idx[nd - 1];
        if (n > end - pos) n = end - pos;
        loop(ctx, ptrs, inner, n);
        pos += n;
        if (pos >= end) break;
        /* Advance the counter: the innermost dim wrapped. */
        for (int k = 0; k < nops; k++) ptrs[k] += (it->shape[nd - 1] - idx[nd - 1]) * inner[k];
        idx[nd - 1] = 0;
        for (int k = 0; k < nops; k++) ptrs[k] -= it->shape[nd - 1] * inner[k];
        for (int d = nd - 2; d >= 0; d--) {
            idx[d]++;
            for (int k = 0; k < nops; k++) ptrs[k] += it->stride[k][d];
            if (idx[d] < it->shape[d]) break;
            idx[d] = 0;
            for (int k = 0; k < nops; k++) ptrs[k] -= it->shape[d] * it->stride[k][d];
        }
    }
}

void as_cpu_iter_run(const as_iter *it, as_cpu_loop loop, void *ctx)
{
    int64_t n = it->numel;
    if (n == 0) return;
    if (n < 2 * AS_CPU_PARALLEL_GRAIN) {
        as_cpu_iter_range(it, 0, n, loop, ctx);
        return;
    }
#pragma omp parallel
    {
#ifdef _OPENMP
        int nt = omp_get_num_threads(), t = omp_get_thread_num();
#else
        int nt = 1, t = 0;
#endif
        int64_t chunk = (n + nt - 1) / nt;
        int64_t b = t * chunk, e = b + chunk < n ? b + chunk : n;
        as_cpu_iter_range(it, b, e, loop, ctx);
    }
}
