/* The one door from the runtime's front-ends (runtime/ops, runtime/attention)
 * to the kernels of a tensor's device, through its backend table
 * (runtime/base/backend.h): the CPU's (kernels/cpu) or CUDA's (kernels/cuda).
 * Same contracts as cpu_kernels.h; each returns 0, or -1 with the error set
 * ("fn: CUDA error: ..." or "fn: device ... is not available"). */
#ifndef AS_DISPATCH_H
#define AS_DISPATCH_H

#include "attnswap/ops.h"
#include "attnswap/tensor.h"
#include "backend.h"

int as_k_copy(as_tensor *dst, const as_tensor *src); /* same device */
int as_k_fill(as_tensor *dst, double value);
int as_k_binary(as_binop op, as_tensor *out, const as_tensor *a, const as_tensor *b);
int as_k_unary(as_unop op, as_tensor *out, const as_tensor *a);
int as_k_clamp(as_tensor *out, const as_tensor *a, double lo, double hi);
int as_k_where(as_tensor *out, const as_tensor *cond, const as_tensor *a, const as_tensor *b);

/* Buffers on dev, as in cpu_kernels.h. */
int as_k_gather_rows(as_device dev, void *dst, const void *src, const int64_t *idx, int64_t outer, int64_t n,
                     int64_t size, int64_t row_bytes, int64_t *bad);
int as_k_triangle(as_device dev, void *p, int64_t mats, int64_t R, int64_t C, int64_t k, int lower, int64_t es);

/* Row kernels: x, y, out, idx are contiguous buffers on dev. */
int as_k_reduce_rows(as_device dev, as_redop op, const float *x, int64_t rows, int64_t n, int correction,
                     float *out, int64_t *idx);
int as_k_reduce_rows_i64(as_device dev, as_redop op, const int64_t *x, int64_t rows, int64_t n, int64_t *out);
int as_k_softmax_rows(as_device dev, const float *x, float *y, int64_t rows, int64_t n, int log);
int as_k_norm_bwd_rows(as_device dev, const float *x, const float *w, const float *g, float *dx, float *gxh,
                       int64_t rows, int64_t n, double eps, int rms);
int as_k_softmax_bwd_rows(as_device dev, const float *y, const float *g, float *out, int64_t rows, int64_t n, int log);
/* cross-entropy rows: x (rows, n) contiguous in dt (F32, F16, BF16), target
 * (rows) int64; loss, lse (rows) float32; dx (rows, n) in dt */
int as_k_xent_rows(as_device dev, const void *x, as_dtype dt, const int64_t *target, int64_t ignore, float *loss,
                   float *lse, int64_t rows, int64_t n);
int as_k_xent_bwd_rows(as_device dev, const void *x, as_dtype dt, const int64_t *target, int64_t ignore,
                       const float *lse, const float *g, void *dx, int64_t rows, int64_t n);
/* entmax along dim n of (outer, n, inner) rows (as_backend.entmax_rows: float32, bfloat16,
 * float16), where the device has the kernel. */
bool as_k_has_entmax_rows(as_device dev);
int as_k_entmax_rows(as_device dev, as_dtype dt, const void *x, void *y, int64_t outer, int64_t n, int64_t inner,
                     double alpha);

/* 16-bit rows without float32 copies (as_backend.norm_rows_16), where the device has the kernel. */
bool as_k_has_norm_rows_16(as_device dev);
int as_k_norm_rows_16(as_device dev, as_dtype dt, const void *x, void *y, int64_t rows, int64_t n, const void *w,
                      const void *bias, double eps, int rms);
int as_k_layer_norm_rows(as_device dev, const float *x, float *y, int64_t rows, int64_t n, const float *w,
                         const float *b, double eps);
int as_k_rms_norm_rows(as_device dev, const float *x, float *y, int64_t rows, int64_t n, const float *w,
                       double eps);

/* The float64 row kernels (the CPU's only: "fn: float64 is CPU-only ..." elsewhere). */
int as_k_reduce_rows_f64(as_device dev, as_redop op, const double *x, int64_t rows, int64_t n, int correction,
                         double *out, int64_t *idx);
int as_k_softmax_rows_f64(as_device dev, const double *x, double *y, int64_t rows, int64_t n, int log);
int as_k_layer_norm_rows_f64(as_device dev, const double *x, double *y, int64_t rows, int64_t n, const double *w,
                             const double *b, double eps);
int as_k_rms_norm_rows_f64(as_device dev, const double *x, double *y, int64_t rows, int64_t n, const double *w,
                           double eps);
int as_k_scatter_add_rows_f64(as_device dev, double *dst, const double *src, const int64_t *idx, int64_t outer,
                              int64_t n, int64_t size, int64_t row);

/* dst[o, idx[i], :] += src[o, i, :]: float32 rows, buffers on dev. */
int as_k_scatter_add_rows(as_device dev, float *dst, const float *src, const int64_t *idx, int64_t outer, int64_t n,
                          int64_t size, int64_t row);
/* matmul's products on dev (backend.h, as_gemm_args). */
int as_k_gemm(as_device dev, as_gemm_args *g);
/* Exact attention on dev; *path: the kernel it took (also for an empty output). */
int as_k_flash(const char *fn, as_device dev, const as_attn_params *p, const char **path);
/* Whether dev's backend has the fused backward; running it (after a forward
 * with p->f.lse set). */
bool as_k_has_flash_bwd(as_device dev);
/* *path: the kernel's name, set only when it ran */
int as_k_flash_bwd(const char *fn, as_device dev, const as_attn_bwd_params *p, const char **path);

#endif
