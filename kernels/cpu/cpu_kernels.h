/* CPU kernels.  A kernel trusts its caller (runtime/ops/) to have checked
 * shapes, dtypes and devices; it never allocates a result and never fails. */
#ifndef AS_CPU_KERNELS_H
#define AS_CPU_KERNELS_H

#include <stdbool.h>

#include "as_scalar.h"
#include "as_types.h"

/* dst and src have the same shape (src expanded); dtypes may differ. */
void as_cpu_copy(const as_kview *dst, const as_kview *src);
void as_cpu_fill(const as_kview *dst, double value);

/* Elementwise: operands expanded to out's shape; a and b share the compute
 * dtype (float32, float64, int64 or int32); comparisons write bool. */
void as_cpu_binary(as_binop op, const as_kview *out, const as_kview *a, const as_kview *b);
/* float32 or float64 in and out, or NEG/ABS/RELU on int64/int32, or LOGICAL_NOT to bool */
void as_cpu_unary(as_unop op, const as_kview *out, const as_kview *a);
void as_cpu_clamp(const as_kview *out, const as_kview *a, double lo, double hi); /* float32 or float64 */
void as_cpu_where(const as_kview *out, const as_kview *cond, const as_kview *a, const as_kview *b);

/* dst[o, i, :] = src[o, idx[i], :] (rows of row_bytes; idx checked in [0, size)). */
void as_cpu_gather_rows(void *dst, const void *src, const int64_t *idx, int64_t outer, int64_t n, int64_t size,
                        int64_t row_bytes);
/* dst[o, idx[i], :] += src[o, i, :], float32 rows of row elements (index_select's
 * and embedding's gradient); idx in [0, size); deterministic. */
void as_cpu_scatter_add_rows(float *dst, const float *src, const int64_t *idx, int64_t outer, int64_t n, int64_t size,
                             int64_t row);
/* Zeroes, in mats contiguous R x C matrices, the entries above (lower) or
 * below (!lower) diagonal k. */
void as_cpu_triangle(void *p, int64_t mats, int64_t R, int64_t C, int64_t k, int lower, int64_t es);

/* Row kernels over contiguous rows of length n (float32). */
void as_cpu_reduce_rows(as_redop op, const float *x, int64_t rows, int64_t n, int correction, float *out,
                        int64_t *idx);
void as_cpu_reduce_rows_i64(as_redop op, const int64_t *x, int64_t rows, int64_t n, int64_t *out);
void as_cpu_softmax_rows(const float *x, float *y, int64_t rows, int64_t n, int log);
/* Cross-entropy rows (kernels/cpu/cross_entropy.c): x (rows, n) contiguous
 * F32, F16 or BF16 logits, target (rows) class ids; loss and lse (rows)
 * float32; a target of ignore gives loss 0.  -1 when a target is out of
 * [0, n) and not ignore (its row then NaN). */
int as_cpu_xent_rows(const void *x, as_dtype dt, const int64_t *target, int64_t ignore, float *loss, float *lse,
                     int64_t rows, int64_t n);
/* dx (rows, n) in x's dtype = g_r (e^(x - lse_r) - onehot(target_r)); zeros on ignored rows */
void as_cpu_xent_bwd_rows(const void *x, as_dtype dt, const int64_t *target, int64_t ignore, const float *lse,
                          const float *g, void *dx, int64_t rows, int64_t n);
/* The gradient of softmax rows from its output y and the incoming g, one
 * pass per row: softmax y (g - sum(g y)); log_softmax g - e^y sum(g). */
/* LayerNorm's (rms = 0) or RMSNorm's (rms = 1) gradient over rows of n, in
 * one row pass: dx = r (dy - mean(dy) - xh mean(dy xh)) (RMSNorm without the
 * mean(dy)), dy = g w, xh the normalised x; and gxh = g xh, the weight's
 * gradient before its sum over rows.  w, dx, gxh may be NULL. */
void as_cpu_norm_bwd_rows(const float *x, const float *w, const float *g, float *dx, float *gxh, int64_t rows,
                          int64_t n, double eps, int rms);
void as_cpu_softmax_bwd_rows(const float *y, const float *g, float *out, int64_t rows, int64_t n, int log);
void as_cpu_layer_norm_rows(const float *x, float *y, int64_t rows, int64_t n, const float *w,
                            const float *b, double eps);
void as_cpu_rms_norm_rows(const float *x, float *y, int64_t rows, int64_t n, const float *w, double eps);

/* cblas_sgemm (row-major; ta/tb: operand transposed) with C split into one
 * slab per OpenMP thread when the product is large enough; one call when
 * already inside a parallel region. */
void as_cpu_sgemm(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                  const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
/* C (M x N, ldc) = op(A) op(B) [+ bias (N,)] [+ resid (M x N, row stride
 * ldr)] [+ C where beta is 1], on the project's AVX-512 kernel
 * (kernels/cpu/sgemm_avx512.c); false, with nothing done, where it does not
 * apply: no AVX-512 path, ATTNSWAP_GEMM=blas, or a product too small to
 * pay.  beta is 0 or 1. */
bool as_cpu_sgemm_own(int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                      const float *B, int64_t ldb, const float *bias, const float *resid, int64_t ldr,
                      float beta, float *C, int64_t ldc);
/* "attnswap-avx512" where as_cpu_sgemm_own runs, else "OpenBLAS". */
const char *as_cpu_sgemm_own_name(void);
/* Tests: let as_cpu_sgemm_own take products of any size, its edge cases small. */
void as_cpu_sgemm_own_any_size(bool on);
/* The same in float64 (cblas_dgemm), C = op(A) op(B). */
void as_cpu_dgemm(int ta, int tb, int64_t M, int64_t N, int64_t K, const double *A, int64_t lda, const double *B,
                  int64_t ldb, double *C, int64_t ldc);

/* float64 (CPU only, kernels/cpu/rows_f64.c): the row kernels above in
 * double, and index_select's scatter-add. */
void as_cpu_reduce_rows_f64(as_redop op, const double *x, int64_t rows, int64_t n, int correction, double *out,
                            int64_t *idx);
void as_cpu_softmax_rows_f64(const double *x, double *y, int64_t rows, int64_t n, int log_);
void as_cpu_layer_norm_rows_f64(const double *x, double *y, int64_t rows, int64_t n, const double *w,
                                const double *b, double eps);
void as_cpu_rms_norm_rows_f64(const double *x, double *y, int64_t rows, int64_t n, const double *w, double eps);
void as_cpu_scatter_add_rows_f64(double *dst, const double *src, const int64_t *idx, int64_t outer, int64_t n,
                                 int64_t size, int64_t row);

#endif
