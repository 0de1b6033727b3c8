/* Device dispatch for the op front-ends: CPU kernels never fail; CUDA
 * kernels are queued on the device's stream and their launch checked. */
#include "dispatch.h"

#include "attnswap/error.h"
#include "backend.h"
#include "cpu_kernels.h"
#include "attnswap/cuda.h"

#ifdef ATTNSWAP_HAVE_CUDA
#include "cuda_kernels.h"
#define ON_DEVICE(fn, dev, cpu_call, cuda_call)                                                              \
    do {                                                                                                     \
        if ((dev).type == AS_DEV_CPU) {                                                                      \
            cpu_call;                                                                                        \
            return 0;                                                                                        \
        }                                                                                                    \
        if (as_cuda_use(fn, (dev).index)) return -1;                                                         \
        return as_cuda_check(fn, cuda_call);                                                                 \
    } while (0)
#else
#define ON_DEVICE(fn, dev, cpu_call, cuda_call)                                                              \
    do {                                                                                                     \
        if ((dev).type == AS_DEV_CPU) {                                                                      \
            cpu_call;                                                                                        \
            return 0;                                                                                        \
        }                                                                                                    \
        return as_cuda_use(fn, (dev).index);                                                                 \
    } while (0)
#endif

int as_k_copy(as_tensor *dst, const as_tensor *src)
{
    as_kview d = as_kview_of(dst), s = as_kview_of(src);
    ON_DEVICE("copy_", as_tensor_device(dst), as_cpu_copy(&d, &s), as_cuda_copy(&d, &s));
}

int as_k_fill(as_tensor *dst, double value)
{
    as_kview d = as_kview_of(dst);
    ON_DEVICE("fill_", as_tensor_device(dst), as_cpu_fill(&d, value), as_cuda_fill(&d, value));
}

int as_k_binary(as_binop op, as_tensor *out, const as_tensor *a, const as_tensor *b)
{
    as_kview o = as_kview_of(out), x = as_kview_of(a), y = as_kview_of(b);
    ON_DEVICE(as_binop_name(op), as_tensor_device(out), as_cpu_binary(op, &o, &x, &y), as_cuda_binary(op, &o, &x, &y));
}

int as_k_unary(as_unop op, as_tensor *out, const as_tensor *a)
{
    as_kview o = as_kview_of(out), x = as_kview_of(a);
    ON_DEVICE(as_unop_name(op), as_tensor_device(out), as_cpu_unary(op, &o, &x), as_cuda_unary(op, &o, &x));
}

int as_k_clamp(as_tensor *out, const as_tensor *a, double lo, double hi)
{
    as_kview o = as_kview_of(out), x = as_kview_of(a);
    ON_DEVICE("clamp", as_tensor_device(out), as_cpu_clamp(&o, &x, lo, hi), as_cuda_clamp(&o, &x, lo, hi));
}

int as_k_where(as_tensor *out, const as_tensor *cond, const as_tensor *a, const as_tensor *b)
{
    as_kview o = as_kview_of(out), c = as_kview_of(cond), x = as_kview_of(a), y = as_kview_of(b);
    ON_DEVICE("where", as_tensor_device(out), as_cpu_where(&o, &c, &x, &y), as_cuda_where(&o, &c, &x, &y));
}

int as_k_reduce_rows(as_device dev, as_redop op, const float *x, int64_t rows, int64_t n, int correction,
                     float *out, int64_t *idx)
{
    ON_DEVICE("reduce", dev, as_cpu_reduce_rows(op, x, rows, n, correction, out, idx),
              as_cuda_reduce_rows(op, x, rows, n, correction, out, idx));
}

int as_k_reduce_rows_i64(as_device dev, as_redop op, const int64_t *x, int64_t rows, int64_t n, int64_t *out)
{
    ON_DEVICE("reduce", dev, as_cpu_reduce_rows_i64(op, x, rows, n, out), as_cuda_reduce_rows_i64(op, x, rows, n, out));
}

int as_k_softmax_rows(as_device dev, const float *x, float *y, int64_t rows, int64_t n, int log)
{
    ON_DEVICE(log ? "log_softmax" : "softmax", dev, as_cpu_softmax_rows(x, y, rows, n, log),
              as_cuda_softmax_rows(x, y, rows, n, log));
}

int as_k_layer_norm_rows(as_device dev, const float *x, float *y, int64_t rows, int64_t n, const float *w,
                         const float *b, double eps)
{
    ON_DEVICE("layer_norm", dev, as_cpu_layer_norm_rows(x, y, rows, n, w, b, eps),
              as_cuda_layer_norm_rows(x, y, rows, n, w, b, eps));
}

int as_k_rms_norm_rows(as_device dev, const float *x, float *y, int64_t rows, int64_t n, const float *w,
                       double eps)
{
    ON_DEVICE("rms_norm", dev, as_cpu_rms_norm_rows(x, y, rows, n, w, eps), as_cuda_rms_norm_rows(x, y, rows, n, w, eps));
}

int as_k_gather_rows(as_device dev, void *dst, const void *src, const int64_t *idx, int64_t outer, int64_t n,
                     int64_t size, int64_t row_bytes)
{
    ON_DEVICE("index_select", dev, as_cpu_gather_rows(dst, src, idx, outer, n, size, row_bytes),
              as_cuda_gather_rows(dst, src, idx, outer, n, size, row_bytes));
}

int as_k_triangle(as_device dev, void *p, int64_t mats, int64_t R, int64_t C, int64_t k, int lower, int64_t es)
{
    ON_DEVICE(lower ? "tril" : "triu", dev, as_cpu_triangle(p, mats, R, C, k, lower, es),
              as_cuda_triangle(p, mats, R, C, k, lower, es));
}
