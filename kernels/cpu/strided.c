#include "strided.h"

#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

void as_cpu_iter_init(as_cpu_iter *it, int nops, const as_tensor *const *ops, int ndim,
                      const int64_t *shape)
{
    it->nops = nops;
    it->numel = 1;
    int nd = 0;
    int64_t sh[AS_MAX_DIMS], st[AS_ITER_MAX_OPS][AS_MAX_DIMS];
    /* Drop size-1 dims: they never move a pointer. */
    for (int d = 0; d < ndim; d++) {
        it->numel *= shape[d];
        if (shape[d] == 1) continue;
        sh[nd] = shape[d];
        for (int k = 0; k < nops; k++)
            st[k][nd] = ops[k]->stride[d] * (int64_t)as_dtype_size(ops[k]->dtype);
        nd++;
    }
    for (int k = 0; k < nops; k++) it->base[k] = as_data(ops[k]);
    if (nd == 0) {
        sh[0] = 1;
        for (int k = 0; k < nops; k++) st[k][0] = 0;
        nd = 1;
    }
    /* Merge dim d-1 into d when every operand steps through them as one. */
    int out = 0;
    it->shape[0] = sh[0];
    for (int k = 0; k < nops; k++) it->stride[k][0] = st[k][0];
    for (int d = 1; d < nd; d++) {
        int mergeable = 1;
        for (int k = 0; k < nops; k++)
            if (it->stride[k][out] != st[k][d] * sh[d]) mergeable = 0;
        if (mergeable) {
            it->shape[out] *= sh[d];
            for (int k = 0; k < nops; k++) it->stride[k][out] = st[k][d];
        } else {
            out++;
            it->shape[out] = sh[d];
            for (int k = 0; k < nops; k++) it->stride[k][out] = st[k][d];
        }
    }
    it->ndim = out + 1;
}

void as_cpu_iter_range(const as_cpu_iter *it, int64_t begin, int64_t end, as_cpu_loop loop,
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

void as_cpu_iter_run(const as_cpu_iter *it, as_cpu_loop loop, void *ctx)
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
