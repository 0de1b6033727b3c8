/* The CPU's backend table (runtime/base/backend.h): kernels/cpu behind the
 * runtime's one door.  CPU kernels never fail; memory is base/storage.c's. */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "attention_flash.h"
#include "attnswap/error.h"
#include "backend.h"
#include "cpu_kernels.h"
#include "dispatch.h"
#include "optim.h"

static int cpu_check(const char *fn, int status)
{
    (void)fn;
    return status;
}

static int cpu_copy(as_tensor *dst, const as_tensor *src)
{
    as_tensor *s = as_expand(src, dst->ndim, dst->shape);
    if (!s) return -1;
    as_kview d = as_kview_of(dst), v = as_kview_of(s);
    as_cpu_copy(&d, &v);
    as_release(s);
    return 0;
}

static int cpu_fill(const as_kview *dst, double value) { return as_cpu_fill(dst, value), 0; }
static int cpu_binary(as_binop op, const as_kview *out, const as_kview *a, const as_kview *b)
{
    return as_cpu_binary(op, out, a, b), 0;
}
static int cpu_unary(as_unop op, const as_kview *out, const as_kview *a) { return as_cpu_unary(op, out, a), 0; }
static int cpu_clamp(const as_kview *out, const as_kview *a, double lo, double hi)
{
    return as_cpu_clamp(out, a, lo, hi), 0;
}
static int cpu_where(const as_kview *out, const as_kview *cond, const as_kview *a, const as_kview *b)
{
    return as_cpu_where(out, cond, a, b), 0;
}
static int cpu_reduce_rows(as_redop op, const float *x, int64_t rows, int64_t n, int correction, float *out,
                           int64_t *idx)
{
    return as_cpu_reduce_rows(op, x, rows, n, correction, out, idx), 0;
}
static int cpu_reduce_rows_i64(as_redop op, const int64_t *x, int64_t rows, int64_t n, int64_t *out)
{
    return as_cpu_reduce_rows_i64(op, x, rows, n, out), 0;
}
static int cpu_softmax_bwd_rows(const float *y, const float *g, float *out, int64_t rows, int64_t n, int log)
{
    return as_cpu_softmax_bwd_rows(y, g, out, rows, n, log), 0;
}

static int cpu_xent_rows(const void *x, as_dtype dt, const int64_t *target, int64_t ignore, float *loss, float *lse,
                         int64_t rows, int64_t n)
{
    if (as_cpu_xent_rows(x, dt, target, ignore, loss, lse, rows, n) == 0) return 0;
    as_error_set("cross_entropy: a target is out of bounds (classes are 0 to %lld, ignore_index is %lld)",
                 (long long)n - 1, (long long)ignore);
    return -1;
}
static int cpu_xent_bwd_rows(const void *x, as_dtype dt, const int64_t *target, int64_t ignore, const float *lse,
                             const float *g, void *dx, int64_t rows, int64_t n)
{
    return as_cpu_xent_bwd_rows(x, dt, target, ignore, lse, g, dx, rows, n), 0;
}

static int cpu_norm_bwd_rows(const float *x, const float *w, const float *g, float *dx, float *gxh, int64_t rows,
                             int64_t n, double eps, int rms)
{
    return as_cpu_norm_bwd_rows(x, w, g, dx, gxh, rows, n, eps, rms), 0;
}

static int cpu_softmax_rows(const float *x, float *y, int64_t rows, int64_t n, int log)
{
    return as_cpu_softmax_rows(x, y, rows, n, log), 0;
}
static int cpu_layer_norm_rows(const float *x, float *y, int64_t rows, int64_t n, const float *w, const float *b,
                               double eps)
{
    return as_cpu_layer_norm_rows(x, y, rows, n, w, b, eps), 0;
}
static int cpu_rms_norm_rows(const float *x, float *y, int64_t rows, int64_t n, const float *w, double eps)
{
    return as_cpu_rms_norm_rows(x, y, rows, n, w, eps), 0;
}
static int cpu_gather_rows(void *dst, const void *src, const int64_t *idx, int64_t outer, int64_t n, int64_t size,
                           int64_t row_bytes, int64_t *bad)
{
    (void)bad; /* the CPU's indices are always checked before (nothing captures CPU work) */
    return as_cpu_gather_rows(dst, src, idx, outer, n, size, row_bytes), 0;
}
static int cpu_triangle(void *p, int64_t mats, int64_t R, int64_t C, int64_t k, int lower, int64_t es)
{
    return as_cpu_triangle(p, mats, R, C, k, lower, es), 0;
}

static int cpu_scatter_add_rows(float *dst, const float *src, const int64_t *idx, int64_t outer, int64_t n,
                                int64_t size, int64_t row)
{
    return as_cpu_scatter_add_rows(dst, src, idx, outer, n, size, row), 0;
}

static int cpu_reduce_rows_f64(as_redop op, const double *x, int64_t rows, int64_t n, int correction,
                               double *out, int64_t *idx)
{
    return as_cpu_reduce_rows_f64(op, x, rows, n, correction, out, idx), 0;
}
static int cpu_softmax_rows_f64(const double *x, double *y, int64_t rows, int64_t n, int log)
{
    return as_cpu_softmax_rows_f64(x, y, rows, n, log), 0;
}
static int cpu_layer_norm_rows_f64(const double *x, double *y, int64_t rows, int64_t n, const double *w,
                                   const double *b, double eps)
{
    return as_cpu_layer_norm_rows_f64(x, y, rows, n, w, b, eps), 0;
}
static int cpu_rms_norm_rows_f64(const double *x, double *y, int64_t rows, int64_t n, const double *w, double eps)
{
    return as_cpu_rms_norm_rows_f64(x, y, rows, n, w, eps), 0;
}
static int cpu_scatter_add_rows_f64(double *dst, const double *src, const int64_t *idx, int64_t outer, int64_t n,
                                    int64_t size, int64_t row)
{
    return as_cpu_scatter_add_rows_f64(dst, src, idx, outer, n, size, row), 0;
}

static const as_backend_f64 cpu_f64 = {
    .reduce_rows = cpu_reduce_rows_f64,
    .softmax_rows = cpu_softmax_rows_f64,
    .layer_norm_rows = cpu_layer_norm_rows_f64,
    .rms_norm_rows = cpu_rms_norm_rows_f64,
    .scatter_add_rows = cpu_scatter_add_rows_f64,
};

/* float64 products (cblas_dgemm), batched as cpu_gemm below does float32's. */
static int cpu_dgemm(as_gemm_args *g)
{
    const as_tensor *a = g->a, *b = g->b;
    const double *pa = as_data(a), *pb = as_data(b);
    double *po = as_data(g->out);
    int64_t M = g->M, N = g->N, K = g->K;
    if (g->fold || g->nbatch == 1) {
        as_cpu_dgemm(g->ta, g->tb, M * g->nbatch, N, K, pa, g->lda, pb, g->ldb, po, N);
        return 0;
    }
    for (int64_t i = 0; i < g->nbatch; i++) {
        int64_t oa = 0, ob = 0, rem = i;
        for (int d = g->nb - 1; d >= 0; d--) {
            int64_t idx = rem % g->batch[d];
            rem /= g->batch[d];
            oa += idx * a->stride[d], ob += idx * b->stride[d];
        }
        as_cpu_dgemm(g->ta, g->tb, M, N, K, pa + oa, g->lda, pb + ob, g->ldb, po + i * M * N, N);
    }
    return 0;
}

/* C's rows (rows x N, contiguous) = resid + bias, either of them alone
 * where the other is NULL (resid: C's shape, contiguous; bias: (N,)). */
static void fill_rows(float *c, int64_t rows, int64_t N, const float *bias, const float *resid)
{
#pragma omp parallel for if (rows * N >= 65536)
    for (int64_t r = 0; r < rows; r++) {
        float *o = c + r * N;
        if (!resid)
            memcpy(o, bias, (size_t)N * sizeof *o);
        else if (!bias)
            memcpy(o, resid + r * N, (size_t)N * sizeof *o);
        else
            for (int64_t j = 0; j < N; j++) o[j] = resid[r * N + j] + bias[j];
    }
}

/* float32 products: one folded product or one product on the AVX-512
 * kernel where it applies, which adds a bias or residual as it stores C;
 * else on OpenBLAS: one folded product, one product, or one product per
 * batch entry (a thread each, the big ones not split again).  There a bias
 * or residual rides in the product as in PyTorch's addmm: C starts as them
 * and the product adds into it (beta 1).  That pass replaces OpenBLAS's
 * zeroing of C for beta 0, and saves the add's read and write of C after it. */
static int cpu_gemm(as_gemm_args *g)
{
    if (g->out->dtype == AS_F64) return cpu_dgemm(g);
    const as_tensor *a = g->a, *b = g->b;
    const float *pa = as_data(a), *pb = as_data(b);
    float *po = as_data(g->out);
    int64_t M = g->M, N = g->N, K = g->K;
    if ((g->fold || g->nbatch == 1) &&
        as_cpu_sgemm_own(g->ta, g->tb, M * g->nbatch, N, K, pa, g->lda, pb, g->ldb,
                         g->bias ? as_data(g->bias) : NULL, g->resid ? as_data(g->resid) : NULL, N, 0.0f, po, N)) {
        g->bias_done = g->bias != NULL, g->resid_done = g->resid != NULL;
        return 0;
    }
    float beta = 0.0f;
    if (g->bias || g->resid) {
        fill_rows(po, M * g->nbatch, N, g->bias ? as_data(g->bias) : NULL, g->resid ? as_data(g->resid) : NULL);
        g->bias_done = g->bias != NULL, g->resid_done = g->resid != NULL;
        beta = 1.0f;
    }
    if (g->fold && g->nbatch > 1) {
        as_cpu_sgemm(g->ta, g->tb, M * g->nbatch, N, K, 1.0f, pa, g->lda, pb, g->ldb, beta, po, N);
    } else if (g->nbatch == 1) {
        as_cpu_sgemm(g->ta, g->tb, M, N, K, 1.0f, pa, g->lda, pb, g->ldb, beta, po, N);
    } else {
        const int nb = g->nb;
        const int64_t *batch = g->batch;
#pragma omp parallel for schedule(dynamic, 1) if ((double)M * N * K * g->nbatch >= 262144.0)
        for (int64_t i = 0; i < g->nbatch; i++) {
            int64_t oa = 0, ob = 0, rem = i;
            for (int d = nb - 1; d >= 0; d--) {
                int64_t idx = rem % batch[d];
                rem /= batch[d];
                oa += idx * a->stride[d], ob += idx * b->stride[d];
            }
            as_cpu_sgemm(g->ta, g->tb, M, N, K, 1.0f, pa + oa, g->lda, pb + ob, g->ldb, beta, po + i * M * N, N);
        }
    }
    return 0;
}

/* names[i]: a kernel's name, prefix then the vector path (avx512, avx2, scalar) */
static const char *isa_path(const char *const names[3], size_t prefix)
{
    const char *isa = as_cpu_flash_isa_name();
    for (int i = 0; i < 3; i++)
        if (!strcmp(isa, names[i] + prefix)) return names[i];
    return "?";
}

static const char *cpu_flash_path(const as_attn_params *p)
{
    (void)p;
    static const char *const names[] = {"flash/avx512", "flash/avx2", "flash/scalar"};
    return isa_path(names, 6);
}

static const char *cpu_flash_bwd_path(const as_attn_bwd_params *p)
{
    (void)p;
    static const char *const names[] = {"flash-bwd/avx512", "flash-bwd/avx2", "flash-bwd/scalar"};
    return isa_path(names, 10);
}

static int cpu_flash(const char *fn, const as_attn_params *p)
{
    int nthreads = omp_get_max_threads();
    size_t bytes = as_cpu_flash_workspace_size(p, nthreads);
    void *ws = malloc(bytes);
    if (!ws) {
        as_error_set("%s: out of memory (%zu bytes of scratch)", fn, bytes);
        return -1;
    }
    as_cpu_flash_attention(p, ws, nthreads);
    free(ws);
    return 0;
}

/* The backward's scratch (Di and the dQ partials) is tensor storage, so
 * that memory_stats counts it: its size is a claim of docs/performance.md. */
static int cpu_flash_bwd(const char *fn, const as_attn_bwd_params *p)
{
    if (p->dkv_dtype != AS_F32) {
        as_error_set("%s: the CPU's backward writes dk, dv in float32, asked for %s", fn, as_dtype_name(p->dkv_dtype));
        return -1;
    }
    int nthreads = omp_get_max_threads();
    size_t bytes = as_cpu_flash_bwd_workspace_size(p, nthreads);
    as_tensor *ws = as_empty(1, (int64_t[]){(int64_t)bytes}, AS_BOOL, AS_CPU);
    if (!ws) {
        as_error_set("%s: out of memory (%zu bytes of scratch for the backward)", fn, bytes);
        return -1;
    }
    as_cpu_flash_backward(p, as_data(ws), nthreads);
    as_release(ws);
    return 0;
}

static int cpu_sgd_step(const as_sgd_params *h, int64_t n, void *param, as_dtype pdt, const void *grad,
                        as_dtype gdt, float *buf, float *master, bool first)
{
    return as_cpu_sgd_step(h, n, param, pdt, grad, gdt, buf, master, first), 0;
}

static int cpu_sumsq_list(const as_list_item *it, int n, float *out)
{
    *out = (float)as_cpu_sumsq_list(it, n);
    return 0;
}
static int cpu_scale_list(const as_list_item *it, int n, double s) { return as_cpu_scale_list(it, n, s), 0; }
static int cpu_adamw_step(const as_adamw_params *h, int64_t n, void *param, as_dtype pdt, const void *grad,
                          as_dtype gdt, float *m, float *v, float *vmax, float *master)
{
    return as_cpu_adamw_step(h, n, param, pdt, grad, gdt, m, v, vmax, master), 0;
}

const as_backend as_cpu_backend = {
    .name = "cpu",
    .check = cpu_check,
    .copy = cpu_copy,
    .fill = cpu_fill,
    .binary = cpu_binary,
    .unary = cpu_unary,
    .clamp = cpu_clamp,
    .where = cpu_where,
    .reduce_rows = cpu_reduce_rows,
    .reduce_rows_i64 = cpu_reduce_rows_i64,
    .softmax_rows = cpu_softmax_rows,
    .softmax_bwd_rows = cpu_softmax_bwd_rows,
    .xent_rows = cpu_xent_rows,
    .xent_bwd_rows = cpu_xent_bwd_rows,
    .norm_bwd_rows = cpu_norm_bwd_rows,
    .layer_norm_rows = cpu_layer_norm_rows,
    .rms_norm_rows = cpu_rms_norm_rows,
    .gather_rows = cpu_gather_rows,
    .triangle = cpu_triangle,
    .scatter_add_rows = cpu_scatter_add_rows,
    .f64 = &cpu_f64,
    .gemm = cpu_gemm,
    .flash = cpu_flash,
    .flash_path = cpu_flash_path,
    .flash_bwd_path = cpu_flash_bwd_path,
    .flash_bwd = cpu_flash_bwd,
    .sgd_step = cpu_sgd_step,
    .adamw_step = cpu_adamw_step,
    .sumsq_list = cpu_sumsq_list,
    .scale_list = cpu_scale_list,
};
