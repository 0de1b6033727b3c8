/* Device dispatch for the op front-ends: the kernels of a tensor's device,
 * through its backend table (runtime/base/backend.h).  CPU kernels never
 * fail; CUDA kernels are queued on the device's stream and their launch
 * checked. */
#include "dispatch.h"

#include "attnswap/autograd.h"
#include "attnswap/error.h"
#include "backend.h"
#include "blas_core.h"
#include "cuda_backend.h"

extern const as_backend as_cpu_backend; /* runtime/ops/cpu_backend.c */

void as_init(void)
{
    static int done;
    if (done) return;
    done = 1;
    as_blas_core_init(); /* before any BLAS call: kernels/cpu/blas_core.c */
    as_threads_init();
    as_autograd_init();
    as_backend_register(AS_DEV_CPU, &as_cpu_backend);
    as_cuda_backend_register();
}

/* b = the backend of dev made current, or return -1 */
#define BACKEND(b, fn, dev)                                                                                  \
    const as_backend *b = as_backend_for(fn, dev);                                                           \
    if (!b) return -1

int as_k_copy(as_tensor *dst, const as_tensor *src)
{
    BACKEND(b, "copy_", as_tensor_device(dst));
    return b->copy(dst, src);
}

int as_k_fill(as_tensor *dst, double value)
{
    BACKEND(b, "fill_", as_tensor_device(dst));
    as_kview d = as_kview_of(dst);
    return b->check("fill_", b->fill(&d, value));
}

int as_k_binary(as_binop op, as_tensor *out, const as_tensor *a, const as_tensor *c)
{
    BACKEND(b, as_binop_name(op), as_tensor_device(out));
    as_kview o = as_kview_of(out), x = as_kview_of(a), y = as_kview_of(c);
    return b->check(as_binop_name(op), b->binary(op, &o, &x, &y));
}

int as_k_unary(as_unop op, as_tensor *out, const as_tensor *a)
{
    BACKEND(b, as_unop_name(op), as_tensor_device(out));
    as_kview o = as_kview_of(out), x = as_kview_of(a);
    return b->check(as_unop_name(op), b->unary(op, &o, &x));
}

int as_k_clamp(as_tensor *out, const as_tensor *a, double lo, double hi)
{
    BACKEND(b, "clamp", as_tensor_device(out));
    as_kview o = as_kview_of(out), x = as_kview_of(a);
    return b->check("clamp", b->clamp(&o, &x, lo, hi));
}

int as_k_where(as_tensor *out, const as_tensor *cond, const as_tensor *a, const as_tensor *c)
{
    BACKEND(b, "where", as_tensor_device(out));
    as_kview o = as_kview_of(out), k = as_kview_of(cond), x = as_kview_of(a), y = as_kview_of(c);
    return b->check("where", b->where(&o, &k, &x, &y));
}

int as_k_reduce_rows(as_device dev, as_redop op, const float *x, int64_t rows, int64_t n, int correction,
                     float *out, int64_t *idx)
{
    BACKEND(b, "reduce", dev);
    return b->check("reduce", b->reduce_rows(op, x, rows, n, correction, out, idx));
}

int as_k_reduce_rows_i64(as_device dev, as_redop op, const int64_t *x, int64_t rows, int64_t n, int64_t *out)
{
    BACKEND(b, "reduce", dev);
    return b->check("reduce", b->reduce_rows_i64(op, x, rows, n, out));
}

int as_k_softmax_rows(as_device dev, const float *x, float *y, int64_t rows, int64_t n, int log)
{
    const char *fn = log ? "log_softmax" : "softmax";
    BACKEND(b, fn, dev);
    return b->check(fn, b->softmax_rows(x, y, rows, n, log));
}

int as_k_norm_bwd_rows(as_device dev, const float *x, const float *w, const float *g, float *dx, float *gxh,
                       int64_t rows, int64_t n, double eps, int rms)
{
    const char *fn = rms ? "rms_norm backward" : "layer_norm backward";
    BACKEND(b, fn, dev);
    return b->check(fn, b->norm_bwd_rows(x, w, g, dx, gxh, rows, n, eps, rms));
}

int as_k_softmax_bwd_rows(as_device dev, const float *y, const float *g, float *out, int64_t rows, int64_t n, int log)
{
    const char *fn = log ? "log_softmax backward" : "softmax backward";
    BACKEND(b, fn, dev);
    return b->check(fn, b->softmax_bwd_rows(y, g, out, rows, n, log));
}

int as_k_xent_rows(as_device dev, const void *x, as_dtype dt, const int64_t *target, int64_t ignore, float *loss,
                   float *lse, int64_t rows, int64_t n)
{
    BACKEND(b, "cross_entropy", dev);
    return b->check("cross_entropy", b->xent_rows(x, dt, target, ignore, loss, lse, rows, n));
}

int as_k_xent_bwd_rows(as_device dev, const void *x, as_dtype dt, const int64_t *target, int64_t ignore,
                       const float *lse, const float *g, void *dx, int64_t rows, int64_t n)
{
    BACKEND(b, "cross_entropy backward", dev);
    return b->check("cross_entropy backward", b->xent_bwd_rows(x, dt, target, ignore, lse, g, dx, rows, n));
}

int as_k_layer_norm_rows(as_device dev, const float *x, float *y, int64_t rows, int64_t n, const float *w,
                         const float *bias, double eps)
{
    BACKEND(b, "layer_norm", dev);
    return b->check("layer_norm", b->layer_norm_rows(x, y, rows, n, w, bias, eps));
}

int as_k_norm_rows_16(as_device dev, as_dtype dt, const void *x, void *y, int64_t rows, int64_t n, const void *w,
                      const void *bias, double eps, int rms)
{
    const char *fn = rms ? "rms_norm" : "layer_norm";
    BACKEND(b, fn, dev);
    return b->check(fn, b->norm_rows_16(dt, x, y, rows, n, w, bias, eps, rms));
}

bool as_k_has_norm_rows_16(as_device dev)
{
    const as_backend *b = as_backend_get(dev.type);
    return b && b->norm_rows_16;
}

int as_k_entmax_rows(as_device dev, as_dtype dt, const void *x, void *y, int64_t outer, int64_t n, int64_t inner,
                     double alpha)
{
    BACKEND(b, "entmax", dev);
    return b->check("entmax", b->entmax_rows(dt, x, y, outer, n, inner, alpha));
}

bool as_k_has_entmax_rows(as_device dev)
{
    const as_backend *b = as_backend_get(dev.type);
    return b && b->entmax_rows;
}

int as_k_rms_norm_rows(as_device dev, const float *x, float *y, int64_t rows, int64_t n, const float *w,
                       double eps)
{
    BACKEND(b, "rms_norm", dev);
    return b->check("rms_norm", b->rms_norm_rows(x, y, rows, n, w, eps));
}

int as_k_gather_rows(as_device dev, void *dst, const void *src, const int64_t *idx, int64_t outer, int64_t n,
                     int64_t size, int64_t row_bytes, int64_t *bad)
{
    BACKEND(b, "index_select", dev);
    return b->check("index_select", b->gather_rows(dst, src, idx, outer, n, size, row_bytes, bad));
}

int as_k_triangle(as_device dev, void *p, int64_t mats, int64_t R, int64_t C, int64_t k, int lower, int64_t es)
{
    const char *fn = lower ? "tril" : "triu";
    BACKEND(b, fn, dev);
    return b->check(fn, b->triangle(p, mats, R, C, k, lower, es));
}

int as_k_gemm(as_device dev, as_gemm_args *g)
{
    BACKEND(b, "matmul", dev);
    return b->gemm(g);
}

int as_k_flash(const char *fn, as_device dev, const as_attn_params *p, const char **path)
{
    BACKEND(b, fn, dev);
    *path = b->flash_path(p);
    return p->B * p->H * p->Lq * p->Dv == 0 ? 0 : b->flash(fn, p);
}

bool as_k_has_flash_bwd(as_device dev)
{
    const as_backend *b = as_backend_get(dev.type);
    return b && b->flash_bwd;
}

int as_k_flash_bwd(const char *fn, as_device dev, const as_attn_bwd_params *p, const char **path)
{
    BACKEND(b, fn, dev);
    if (!b->flash_bwd) {
        as_error_set("%s: no fused backward on %s", fn, as_device_name(dev));
        return -1;
    }
    const char *name = b->flash_bwd_path ? b->flash_bwd_path(p) : "flash-bwd";
    if (b->flash_bwd(fn, p)) return -1;
    *path = name; /* only a backward that ran is named */
    return 0;
}

int as_k_scatter_add_rows(as_device dev, float *dst, const float *src, const int64_t *idx, int64_t outer, int64_t n,
                          int64_t size, int64_t row)
{
    BACKEND(b, "index_select", dev);
    return b->check("index_select", b->scatter_add_rows(dst, src, idx, outer, n, size, row));
}

/* f = the float64 kernels of dev's backend, or return -1: float64 is CPU-only */
#define BACKEND_F64(f, fn, dev)                                                                              \
    BACKEND(b_, fn, dev);                                                                                    \
    const as_backend_f64 *f = b_->f64;                                                                       \
    if (!f) {                                                                                                \
        as_error_set("%s: float64 is CPU-only (no float64 kernels on %s)", fn, as_device_name(dev));          \
        return -1;                                                                                           \
    }

int as_k_reduce_rows_f64(as_device dev, as_redop op, const double *x, int64_t rows, int64_t n, int correction,
                         double *out, int64_t *idx)
{
    BACKEND_F64(f, "reduce", dev);
    return b_->check("reduce", f->reduce_rows(op, x, rows, n, correction, out, idx));
}

int as_k_softmax_rows_f64(as_device dev, const double *x, double *y, int64_t rows, int64_t n, int log)
{
    const char *fn = log ? "log_softmax" : "softmax";
    BACKEND_F64(f, fn, dev);
    return b_->check(fn, f->softmax_rows(x, y, rows, n, log));
}

int as_k_layer_norm_rows_f64(as_device dev, const double *x, double *y, int64_t rows, int64_t n, const double *w,
                             const double *bias, double eps)
{
    BACKEND_F64(f, "layer_norm", dev);
    return b_->check("layer_norm", f->layer_norm_rows(x, y, rows, n, w, bias, eps));
}

int as_k_rms_norm_rows_f64(as_device dev, const double *x, double *y, int64_t rows, int64_t n, const double *w,
                           double eps)
{
    BACKEND_F64(f, "rms_norm", dev);
    return b_->check("rms_norm", f->rms_norm_rows(x, y, rows, n, w, eps));
}

int as_k_scatter_add_rows_f64(as_device dev, double *dst, const double *src, const int64_t *idx, int64_t outer,
                              int64_t n, int64_t size, int64_t row)
{
    BACKEND_F64(f, "index_select", dev);
    return b_->check("index_select", f->scatter_add_rows(dst, src, idx, outer, n, size, row));
}
